//! Money as integer minor units. Alipay sends decimal yuan strings ("88.88"); they are
//! parsed exactly, never through a float.

use thiserror::Error;

/// Why an amount string was refused.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid amount {0:?}: expected a non-negative decimal with at most two fraction digits")]
pub struct AmountError(pub String);

/// Parses a decimal yuan string ("88.88", "0.1", "100") into fen.
///
/// Refuses signs, exponents, more than two fraction digits, empty parts and values
/// that overflow `i64`.
pub fn parse_yuan(text: &str) -> Result<i64, AmountError> {
    let err = || AmountError(text.to_owned());
    let (int_part, frac_part) = match text.split_once('.') {
        Some((i, f)) => (i, f),
        None => (text, ""),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(int_part) || (text.contains('.') && !digits(frac_part)) || frac_part.len() > 2 {
        return Err(err());
    }
    let yuan: i64 = int_part.parse().map_err(|_| err())?;
    let mut fen: i64 = 0;
    for (i, b) in frac_part.bytes().enumerate() {
        let d = i64::from(b - b'0');
        fen += if i == 0 { d * 10 } else { d };
    }
    yuan.checked_mul(100)
        .and_then(|v| v.checked_add(fen))
        .ok_or_else(err)
}

/// Formats fen as a decimal yuan string with two fraction digits ("88.88").
pub fn format_yuan(fen: i64) -> String {
    let sign = if fen < 0 { "-" } else { "" };
    let abs = fen.unsigned_abs();
    format!("{sign}{}.{:02}", abs / 100, abs % 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exact_decimal_yuan() {
        assert_eq!(parse_yuan("88.88"), Ok(8888));
        assert_eq!(parse_yuan("0.10"), Ok(10));
        assert_eq!(parse_yuan("0.1"), Ok(10));
        assert_eq!(parse_yuan("100"), Ok(10000));
        assert_eq!(parse_yuan("0.01"), Ok(1));
        assert_eq!(parse_yuan("0.00"), Ok(0));
    }

    #[test]
    fn refuses_anything_but_plain_decimals() {
        for bad in [
            "",
            ".",
            "1.",
            ".5",
            "-1.00",
            "+1",
            "1.001",
            "1e3",
            "1,00",
            " 1",
            "NaN",
            "99999999999999999999",
        ] {
            assert!(parse_yuan(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn formats_round_trip() {
        for fen in [0, 1, 10, 8888, 100_000_001] {
            assert_eq!(parse_yuan(&format_yuan(fen)), Ok(fen));
        }
    }
}
