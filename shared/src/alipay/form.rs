//! The `application/x-www-form-urlencoded` body of an Alipay notification, decoded
//! exactly once, in the charset the notification declares.
//!
//! Alipay percent-encodes the bytes of every value *in the notification's charset*
//! (`utf-8`, sometimes `GBK`) and signs those same bytes. So the body is split and
//! percent-decoded into bytes first (`+` is a space), the `charset` parameter (ASCII)
//! is read, and only then do keys and values become text. The decoded bytes are kept:
//! the signature is checked over them, never over a re-encoding of the text (trap 5),
//! and nothing is ever decoded twice (trap 2: `passback_params` is signed still
//! URL-encoded, and a `+` in `sign` must stay a `+`).

use std::collections::HashSet;

use encoding_rs::{Encoding, GB18030, GBK, UTF_8};

use super::clip;
use crate::error::VerifyError;

/// A charset a notification may declare in its `charset` parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    /// `utf-8`, and the default when the parameter is absent.
    Utf8,
    /// `GBK` or `gb2312` (GBK is a superset of GB2312; encoding_rs decodes both as GBK).
    Gbk,
    /// `gb18030`.
    Gb18030,
}

impl Charset {
    /// The charset a `charset` parameter names (case-insensitive). Anything else is a
    /// [`VerifyError::Charset`]: guessing would verify over the wrong bytes.
    pub fn from_label(label: &str) -> Result<Self, VerifyError> {
        match label.to_ascii_lowercase().as_str() {
            "utf-8" | "utf8" => Ok(Self::Utf8),
            "gbk" | "gb2312" => Ok(Self::Gbk),
            "gb18030" => Ok(Self::Gb18030),
            _ => Err(VerifyError::Charset(clip(label))),
        }
    }

    /// The charset's name as Alipay writes it.
    pub fn label(self) -> &'static str {
        match self {
            Self::Utf8 => "utf-8",
            Self::Gbk => "GBK",
            Self::Gb18030 => "gb18030",
        }
    }

    fn encoding(self) -> &'static Encoding {
        match self {
            Self::Utf8 => UTF_8,
            Self::Gbk => GBK,
            Self::Gb18030 => GB18030,
        }
    }

    /// Decodes bytes in this charset; `None` if they are not valid in it.
    pub fn decode(self, bytes: &[u8]) -> Option<String> {
        self.encoding()
            .decode_without_bom_handling_and_without_replacement(bytes)
            .map(|text| text.into_owned())
    }

    /// Encodes text in this charset; `None` if a character has no encoding in it.
    pub fn encode(self, text: &str) -> Option<Vec<u8>> {
        let (bytes, _, had_unmappable) = self.encoding().encode(text);
        (!had_unmappable).then(|| bytes.into_owned())
    }
}

/// Decodes a notification body into its parameters, in received order.
///
/// Errors: [`VerifyError::Malformed`] for a bad percent escape, an empty parameter
/// name, a duplicate parameter or bytes that are invalid in the declared charset;
/// [`VerifyError::Charset`] for a charset we do not support.
pub fn decode(body: &[u8]) -> Result<Vec<(String, String)>, VerifyError> {
    Ok(Form::parse(body)?.into_pairs())
}

/// A decoded notification body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Form {
    charset: Charset,
    params: Vec<Param>,
}

/// One parameter: its text, and the bytes it was decoded from (the signed bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Param {
    key: String,
    value: String,
    key_bytes: Vec<u8>,
    value_bytes: Vec<u8>,
}

impl Form {
    /// Splits, percent-decodes (once) and charset-decodes a body. See [`decode`].
    pub(crate) fn parse(body: &[u8]) -> Result<Self, VerifyError> {
        let raw = split(body)?;
        let charset = declared(&raw)?;
        Self::decode_as(raw, charset)
    }

    /// The body's parameters decoded as `charset`, whatever it declares (diagnostics:
    /// does the body hold bytes of another charset than it says?).
    pub(crate) fn parse_as(body: &[u8], charset: Charset) -> Result<Self, VerifyError> {
        Self::decode_as(split(body)?, charset)
    }

    /// The charset a body declares (UTF-8 when none), if it splits.
    pub(crate) fn declared_charset(body: &[u8]) -> Result<Charset, VerifyError> {
        declared(&split(body)?)
    }

    fn decode_as(raw: Vec<RawParam>, charset: Charset) -> Result<Self, VerifyError> {
        let invalid =
            |what: String| VerifyError::Malformed(format!("{what} is not valid {charset:?} text"));
        let params = raw
            .into_iter()
            .map(|(key_bytes, value_bytes)| {
                let key = charset
                    .decode(&key_bytes)
                    .ok_or_else(|| invalid("a parameter name".into()))?;
                let value = charset
                    .decode(&value_bytes)
                    .ok_or_else(|| invalid(format!("the value of {}", clip(&key))))?;
                Ok(Param {
                    key,
                    value,
                    key_bytes,
                    value_bytes,
                })
            })
            .collect::<Result<_, VerifyError>>()?;
        Ok(Self { charset, params })
    }

    /// The charset the notification declared (UTF-8 when it declared none).
    pub(crate) fn charset(&self) -> Charset {
        self.charset
    }

    /// The value of a parameter, if present (possibly empty).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|p| p.key == key)
            .map(|p| p.value.as_str())
    }

    /// Every parameter as the bytes Alipay encoded it in: what the signature covers.
    pub(crate) fn signed_bytes(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.params
            .iter()
            .map(|p| (p.key_bytes.as_slice(), p.value_bytes.as_slice()))
    }

    /// Every parameter as (name, value text), in received order.
    pub(crate) fn texts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params
            .iter()
            .map(|p| (p.key.as_str(), p.value.as_str()))
    }

    /// The parameters as text, in received order.
    pub(crate) fn into_pairs(self) -> Vec<(String, String)> {
        self.params.into_iter().map(|p| (p.key, p.value)).collect()
    }
}

/// The charset named by the `charset` parameter of split parameters.
fn declared(raw: &[RawParam]) -> Result<Charset, VerifyError> {
    Ok(match raw.iter().find(|(key, _)| key == b"charset") {
        None => Charset::Utf8,
        Some((_, label)) if label.is_empty() => Charset::Utf8,
        Some((_, label)) => match std::str::from_utf8(label) {
            Ok(label) if label.is_ascii() => Charset::from_label(label)?,
            _ => return Err(VerifyError::Charset(clip(&String::from_utf8_lossy(label)))),
        },
    })
}

/// A name and a value, percent-decoded into bytes in the notification's charset.
type RawParam = (Vec<u8>, Vec<u8>);

/// Splits a body on `&` and `=` and percent-decodes every name and value once.
/// Empty segments (`a=1&&b=2`, a trailing `&`) are skipped; a name without `=` has an
/// empty value, as in the WHATWG form parser.
fn split(body: &[u8]) -> Result<Vec<RawParam>, VerifyError> {
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for segment in body.split(|&b| b == b'&').filter(|s| !s.is_empty()) {
        let (key, value) = match segment.iter().position(|&b| b == b'=') {
            Some(at) => (&segment[..at], &segment[at + 1..]),
            None => (segment, &[][..]),
        };
        let key = percent_decode(key)?;
        if key.is_empty() {
            return Err(VerifyError::Malformed("empty parameter name".into()));
        }
        // A repeated name is ambiguous (which value was signed?): refuse it rather than
        // pick one the way some framework would.
        if !seen.insert(key.clone()) {
            let name = clip(&String::from_utf8_lossy(&key));
            return Err(VerifyError::Malformed(format!(
                "duplicate parameter {name}"
            )));
        }
        out.push((key, percent_decode(value)?));
    }
    Ok(out)
}

/// `+` → space, `%XX` → the byte XX, everything else as is. A `%` not followed by two
/// hex digits is malformed: lenient decoders pass it through, and then two parsers
/// disagree on what was signed.
fn percent_decode(input: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let mut out = Vec::with_capacity(input.len());
    let mut bytes = input.iter().copied();
    while let Some(byte) = bytes.next() {
        match byte {
            b'+' => out.push(b' '),
            b'%' => {
                let high = bytes.next().and_then(hex_digit);
                let low = bytes.next().and_then(hex_digit);
                let (Some(high), Some(low)) = (high, low) else {
                    return Err(VerifyError::Malformed("invalid percent escape".into()));
                };
                out.push(high << 4 | low);
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(body: &str) -> Vec<(String, String)> {
        decode(body.as_bytes()).expect("decodes")
    }

    fn pair(k: &str, v: &str) -> (String, String) {
        (k.to_owned(), v.to_owned())
    }

    #[test]
    fn plus_is_a_space_and_percent_escapes_are_bytes() {
        assert_eq!(
            pairs("a=x+y&b=%E8%AF%AD%e9%9b%80"),
            [pair("a", "x y"), pair("b", "语雀")]
        );
    }

    #[test]
    fn values_are_decoded_exactly_once() {
        // `passback_params` is signed in its URL-encoded form: %25 is a literal %, %2B a
        // literal +; decoding again would turn "%3D" into "=" and "+" into a space.
        assert_eq!(
            pairs("passback_params=a%253Db%2Bc&sign=ab%2Bcd%3D%3D"),
            [pair("passback_params", "a%3Db+c"), pair("sign", "ab+cd==")]
        );
    }

    #[test]
    fn order_is_kept_and_empty_segments_are_skipped() {
        assert_eq!(
            pairs("b=1&&a=&c&"),
            [pair("b", "1"), pair("a", ""), pair("c", "")]
        );
    }

    #[test]
    fn duplicate_parameters_are_malformed() {
        let err = decode(b"a=1&b=2&a=1").expect_err("duplicate");
        assert_eq!(err, VerifyError::Malformed("duplicate parameter a".into()));
        // Also when the duplicate hides behind an escape.
        assert!(matches!(
            decode(b"sign=1&%73ign=2"),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn bad_percent_escapes_and_empty_names_are_malformed() {
        for body in ["a=%", "a=%4", "a=%zz", "a=%%41", "=x", "%=1"] {
            assert!(
                matches!(decode(body.as_bytes()), Err(VerifyError::Malformed(_))),
                "{body:?} should be malformed"
            );
        }
    }

    #[test]
    fn gbk_values_decode_with_the_declared_charset() {
        // "测试" in GBK is B2 E2 CA D4.
        for label in ["GBK", "gbk", "gb2312", "GB18030"] {
            let body = format!("subject=%B2%E2%CA%D4&charset={label}");
            assert_eq!(pairs(&body)[0], pair("subject", "测试"), "{label}");
        }
    }

    #[test]
    fn the_signed_bytes_are_the_bytes_on_the_wire() {
        let form = Form::parse(b"subject=%B2%E2%CA%D4&charset=GBK").expect("decodes");
        assert_eq!(form.charset(), Charset::Gbk);
        let signed: Vec<_> = form.signed_bytes().collect();
        assert_eq!(signed[0], (&b"subject"[..], &[0xB2, 0xE2, 0xCA, 0xD4][..]));
    }

    #[test]
    fn utf8_is_the_default_charset() {
        let form = Form::parse(b"a=%E6%B5%8B").expect("decodes");
        assert_eq!(form.charset(), Charset::Utf8);
        let form = Form::parse(b"a=1&charset=UTF-8").expect("decodes");
        assert_eq!(form.charset(), Charset::Utf8);
    }

    #[test]
    fn bytes_invalid_in_the_charset_are_malformed() {
        assert!(matches!(
            decode(b"subject=%B2%E2"),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            decode(b"subject=%FF&charset=GBK"),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_charsets_are_refused() {
        assert_eq!(
            decode(b"charset=latin1"),
            Err(VerifyError::Charset("latin1".into()))
        );
        assert!(matches!(
            decode(b"charset=%E6%B5%8B"),
            Err(VerifyError::Charset(_))
        ));
    }

    #[test]
    fn charset_round_trips_text() {
        assert_eq!(
            Charset::Gbk.encode("测试"),
            Some(vec![0xB2, 0xE2, 0xCA, 0xD4])
        );
        assert_eq!(Charset::Gbk.encode("😀"), None);
        assert_eq!(
            Charset::Gb18030.decode(&[0xB2, 0xE2]).as_deref(),
            Some("测")
        );
    }
}
