//! Reading typed values out of a parsed APIv2 parameter list.

use crate::error::VerifyError;
use crate::event::{Kind, Normalized, Status};

/// The currency APIv2 means when `fee_type` is absent.
pub(crate) const DEFAULT_CURRENCY: &str = "CNY";

/// A borrowed view of the `(key, value)` pairs from [`super::parse_xml`], where an
/// empty value counts as absent — the same rule the signature uses.
pub(crate) struct Fields<'a>(&'a [(String, String)]);

impl<'a> Fields<'a> {
    pub(crate) fn new(params: &'a [(String, String)]) -> Self {
        Self(params)
    }

    /// The non-empty value of `name`. Keys are unique ([`super::parse_xml`] refuses
    /// duplicates), so the first match is the only one.
    pub(crate) fn get(&self, name: &str) -> Option<&'a str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }

    /// The non-empty value of `name`, or [`VerifyError::MissingField`].
    pub(crate) fn require(&self, name: &'static str) -> Result<&'a str, VerifyError> {
        self.get(name).ok_or(VerifyError::MissingField(name))
    }
}

/// An optional amount in fen: ASCII digits only (no sign, no decimals, no spaces),
/// within `i64`.
///
/// # Errors
/// [`VerifyError::Amount`] naming the field when present but not such an integer.
pub(crate) fn parse_fen(
    fields: &Fields<'_>,
    name: &'static str,
) -> Result<Option<i64>, VerifyError> {
    let Some(text) = fields.get(name) else {
        return Ok(None);
    };
    // `str::parse::<i64>` alone would accept a leading `+`.
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(VerifyError::Amount(name));
    }
    text.parse()
        .map(Some)
        .map_err(|_| VerifyError::Amount(name))
}

/// What an authenticated notification asserts, before it is wrapped with its raw body.
pub(crate) struct Normalization {
    pub(crate) notification_id: String,
    pub(crate) kind: Kind,
    pub(crate) status: Status,
    pub(crate) fields: Normalized,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(value: &str) -> Vec<(String, String)> {
        vec![("total_fee".to_owned(), value.to_owned())]
    }

    #[test]
    fn fen_are_plain_integers() {
        assert_eq!(parse_fen(&Fields::new(&one("0")), "total_fee"), Ok(Some(0)));
        assert_eq!(
            parse_fen(&Fields::new(&one("8888")), "total_fee"),
            Ok(Some(8888))
        );
        assert_eq!(parse_fen(&Fields::new(&one("")), "total_fee"), Ok(None));
        assert_eq!(parse_fen(&Fields::new(&[]), "total_fee"), Ok(None));
    }

    #[test]
    fn anything_else_is_an_amount_error() {
        for bad in [
            "+1",
            "-1",
            "1.00",
            " 1",
            "1e3",
            "99999999999999999999",
            "１",
        ] {
            assert_eq!(
                parse_fen(&Fields::new(&one(bad)), "total_fee"),
                Err(VerifyError::Amount("total_fee")),
                "{bad:?}"
            );
        }
    }
}
