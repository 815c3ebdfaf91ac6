//! Alipay certificate SNs: how certificate mode names a certificate.
//!
//! A certificate's SN is `md5_hex(issuer DN + serial number)`, with the issuer DN in
//! the form Java's `X500Principal.getName()` prints (see `dn`) and the serial number
//! in decimal, as Java's `BigInteger.toString()` prints it. The root SN
//! (`alipay_root_cert_sn` of requests) joins the SNs of the root bundle's RSA-signed
//! certificates with `_`; the bundle also holds SM2 and ECDSA certificates, which
//! Alipay's SDKs skip, so they are skipped here rather than refused.

use x509_cert::Certificate;
use x509_cert::der::asn1::ObjectIdentifier;

use super::dn::java_rfc2253;
use crate::crypto::{md5_hex, parse_certificates};
use crate::error::KeyError;

/// PKCS#1 (`1.2.840.113549.1.1`): the arc of every RSA signature algorithm
/// (sha1WithRSAEncryption, sha256WithRSAEncryption, …).
const PKCS1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1");

/// The Alipay SN of a certificate: `md5_hex(issuer DN in Java's RFC 2253 form +
/// decimal serial number)`.
pub fn cert_sn(cert: &Certificate) -> String {
    let tbs = cert.tbs_certificate();
    let issuer = java_rfc2253(tbs.issuer());
    let serial = signed_decimal(tbs.serial_number().as_bytes());
    md5_hex(format!("{issuer}{serial}").as_bytes())
}

/// The Alipay root SN of a PEM bundle (`alipayRootCert.crt`): the SNs of its
/// RSA-signed certificates, in file order, joined with `_`.
pub fn root_cert_sn(bundle_pem: &str) -> Result<String, KeyError> {
    let sns: Vec<String> = parse_certificates(bundle_pem)?
        .iter()
        .filter(|c| is_rsa_signed(c))
        .map(cert_sn)
        .collect();
    if sns.is_empty() {
        return Err(KeyError::Certificate(
            "no RSA-signed certificate in the root bundle".into(),
        ));
    }
    Ok(sns.join("_"))
}

/// Whether the certificate's signature algorithm is one of PKCS#1's (Alipay's SDKs
/// test the OID prefix `1.2.840.113549.1.1`).
fn is_rsa_signed(cert: &Certificate) -> bool {
    cert.signature_algorithm().oid.parent() == Some(PKCS1)
}

/// A DER INTEGER's content bytes (big-endian two's complement) in decimal, as Java's
/// `BigInteger.toString()` prints it. Serial numbers are up to 20 bytes, beyond any
/// machine integer; non-conforming CAs issue negative ones.
fn signed_decimal(bytes: &[u8]) -> String {
    let negative = bytes.first().is_some_and(|b| b & 0x80 != 0);
    if !negative {
        return unsigned_decimal(bytes.to_vec());
    }
    // Magnitude of a negative number: invert and add one.
    let mut magnitude: Vec<u8> = bytes.iter().map(|b| !b).collect();
    for byte in magnitude.iter_mut().rev() {
        let (sum, carry) = byte.overflowing_add(1);
        *byte = sum;
        if !carry {
            break;
        }
    }
    format!("-{}", unsigned_decimal(magnitude))
}

/// Big-endian unsigned bytes in decimal, by repeated division by 10.
fn unsigned_decimal(mut number: Vec<u8>) -> String {
    let mut digits = Vec::new();
    while number.iter().any(|&b| b != 0) {
        let mut remainder = 0u16;
        for byte in &mut number {
            let current = remainder << 8 | u16::from(*byte);
            // current < 10 * 256, so the quotient fits in a byte.
            *byte = (current / 10) as u8;
            remainder = current % 10;
        }
        digits.push(char::from(b'0' + remainder as u8));
    }
    if digits.is_empty() {
        return "0".to_owned();
    }
    digits.iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Vector {
        root_cert_pem: String,
        expected_alipay_root_cert_sn: String,
        alipay_public_cert_pem: String,
        expected_alipay_cert_sn: String,
    }

    fn vector() -> Vector {
        let json = include_str!("vectors/alipay_cert_sn.json");
        serde_json::from_str(json).expect("vector file")
    }

    #[test]
    fn alipay_public_cert_sn_matches_the_sdk_vector() {
        let v = vector();
        let certs = parse_certificates(&v.alipay_public_cert_pem).expect("76-column PEM parses");
        assert_eq!(cert_sn(&certs[0]), v.expected_alipay_cert_sn);
    }

    #[test]
    fn root_cert_sn_joins_the_rsa_signed_certificates_only() {
        let v = vector();
        // The bundle holds SM2, RSA (SHA-256), ECDSA and RSA (SHA-1) certificates.
        assert_eq!(
            parse_certificates(&v.root_cert_pem).expect("parses").len(),
            4
        );
        assert_eq!(
            root_cert_sn(&v.root_cert_pem),
            Ok(v.expected_alipay_root_cert_sn)
        );
    }

    #[test]
    fn a_bundle_without_rsa_certificates_is_refused() {
        let v = vector();
        let sm2_only = &v.root_cert_pem[..v.root_cert_pem.find("\n\n").expect("two blocks")];
        assert!(matches!(
            root_cert_sn(sm2_only),
            Err(KeyError::Certificate(_))
        ));
        assert!(root_cert_sn("not a certificate").is_err());
    }

    #[test]
    fn serial_numbers_print_like_java_biginteger() {
        assert_eq!(signed_decimal(&[]), "0");
        assert_eq!(signed_decimal(&[0x00]), "0");
        assert_eq!(signed_decimal(&[0x01, 0x00]), "256");
        assert_eq!(signed_decimal(&[0x00, 0xFF]), "255");
        assert_eq!(signed_decimal(&[0xFF]), "-1");
        assert_eq!(signed_decimal(&[0x80]), "-128");
        assert_eq!(signed_decimal(&[0xFF, 0x00]), "-256");
        // 2^64 and a 20-byte serial.
        assert_eq!(
            signed_decimal(&[1, 0, 0, 0, 0, 0, 0, 0, 0]),
            "18446744073709551616"
        );
        assert_eq!(
            signed_decimal(&[0x7F; 20]),
            "727885129180488904360266563744972327436484050815"
        );
    }
}
