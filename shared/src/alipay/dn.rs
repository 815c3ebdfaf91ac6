//! Distinguished names printed exactly as Java's `X500Principal.getName()` prints them
//! (its RFC 2253 form), because Alipay's certificate SN is the MD5 of that text.
//!
//! RFC 2253 leaves choices open; Java's choices are the ones that count:
//! - RDNs in reverse order of the encoding (most specific first), joined with `,`;
//!   the attributes of a multi-valued RDN in their decoded order, joined with `+`.
//! - Keywords only for CN, C, L, ST, O, OU, STREET, DC and UID. Any other attribute
//!   (emailAddress, serialNumber, …) is printed as its dotted OID followed by
//!   `=#` and the lower-case hex of the value's DER encoding — as is a value that is
//!   not a string type, whatever its attribute.
//! - In string values, each of `, = + < > # ; " \` is preceded by a backslash wherever
//!   it appears, NUL is printed as `\00`, leading and trailing spaces and CRs are
//!   backslash-escaped, and every other character (non-ASCII included) is printed as is.
//! - The value's content bytes are read as UTF-8 whatever the string type; invalid
//!   sequences become U+FFFD, as Java's decoder does.
//!
//! x509-cert's own `Display` follows RFC 4514 with other choices (no `=` or inner `#`
//! escaping, different keywords), so it cannot be used for the SN.

use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::der::asn1::ObjectIdentifier;
use x509_cert::der::{Encode as _, Tag, Tagged as _};
use x509_cert::name::Name;

/// The attribute keywords Java prints in RFC 2253 form.
const KEYWORDS: &[(&str, ObjectIdentifier)] = &[
    ("CN", ObjectIdentifier::new_unwrap("2.5.4.3")),
    ("C", ObjectIdentifier::new_unwrap("2.5.4.6")),
    ("L", ObjectIdentifier::new_unwrap("2.5.4.7")),
    ("ST", ObjectIdentifier::new_unwrap("2.5.4.8")),
    ("STREET", ObjectIdentifier::new_unwrap("2.5.4.9")),
    ("O", ObjectIdentifier::new_unwrap("2.5.4.10")),
    ("OU", ObjectIdentifier::new_unwrap("2.5.4.11")),
    (
        "DC",
        ObjectIdentifier::new_unwrap("0.9.2342.19200300.100.1.25"),
    ),
    (
        "UID",
        ObjectIdentifier::new_unwrap("0.9.2342.19200300.100.1.1"),
    ),
];

/// `name` as Java's `X500Principal.getName()` prints it.
pub(super) fn java_rfc2253(name: &Name) -> String {
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| rdn.iter().map(attribute).collect::<Vec<_>>().join("+"))
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn attribute(atv: &AttributeTypeAndValue) -> String {
    let keyword = KEYWORDS
        .iter()
        .find(|(_, oid)| *oid == atv.oid)
        .map(|(k, _)| *k);
    match keyword {
        Some(keyword) if is_string(atv.value.tag()) => {
            format!(
                "{keyword}={}",
                escape(&String::from_utf8_lossy(atv.value.value()))
            )
        }
        _ => {
            // Re-encoding a value that was just decoded from DER cannot fail (the only
            // encoding error is a length beyond what was decoded).
            let der = atv.value.to_der().expect("a decoded DER value re-encodes");
            let name = keyword.map_or_else(|| atv.oid.to_string(), str::to_owned);
            format!("{name}=#{}", hex::encode(der))
        }
    }
}

/// The string types Java prints as text (Java's `isDerString(value, false)`;
/// UniversalString, which it also accepts, has no tag in `der` and is printed as hex).
fn is_string(tag: Tag) -> bool {
    matches!(
        tag,
        Tag::PrintableString
            | Tag::TeletexString
            | Tag::Ia5String
            | Tag::GeneralString
            | Tag::Utf8String
            | Tag::BmpString
    )
}

fn escape(value: &str) -> String {
    let mut chars: Vec<char> = Vec::with_capacity(value.len());
    for c in value.chars() {
        match c {
            ',' | '=' | '+' | '<' | '>' | '#' | ';' | '"' | '\\' => chars.extend(['\\', c]),
            '\0' => chars.extend(['\\', '0', '0']),
            _ => chars.push(c),
        }
    }
    // Java escapes the leading and trailing whitespace of the already-escaped text.
    let is_space = |c: &&char| matches!(c, ' ' | '\r');
    let lead = chars.iter().take_while(is_space).count();
    let trail_from = chars.len() - chars.iter().rev().take_while(is_space).count();
    let mut out = String::with_capacity(chars.len() + 4);
    for (i, c) in chars.into_iter().enumerate() {
        if i < lead || i >= trail_from {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use x509_cert::attr::AttributeTypeAndValue;
    use x509_cert::der::Any;
    use x509_cert::der::asn1::SetOfVec;
    use x509_cert::name::{RdnSequence, RelativeDistinguishedName};

    use super::*;

    fn atv(oid: &str, tag: Tag, value: &[u8]) -> AttributeTypeAndValue {
        AttributeTypeAndValue {
            oid: ObjectIdentifier::new_unwrap(oid),
            value: Any::new(tag, value).expect("valid value"),
        }
    }

    /// A name from RDNs given in encoding order (root first).
    fn name(rdns: Vec<Vec<AttributeTypeAndValue>>) -> Name {
        let mut sequence = RdnSequence::default();
        for rdn in rdns {
            let set = SetOfVec::try_from(rdn).expect("distinct attributes");
            sequence.push(RelativeDistinguishedName::from(set));
        }
        let der = sequence.to_der().expect("encodes");
        <Name as x509_cert::der::Decode>::from_der(&der).expect("decodes")
    }

    fn utf8(oid: &str, value: &str) -> AttributeTypeAndValue {
        atv(oid, Tag::Utf8String, value.as_bytes())
    }

    #[test]
    fn rdns_are_printed_most_specific_first() {
        let n = name(vec![
            vec![atv("2.5.4.6", Tag::PrintableString, b"CN")],
            vec![utf8("2.5.4.10", "Ant Financial")],
            vec![utf8("2.5.4.3", "Ant Financial Certification Authority R1")],
        ]);
        assert_eq!(
            java_rfc2253(&n),
            "CN=Ant Financial Certification Authority R1,O=Ant Financial,C=CN"
        );
    }

    #[test]
    fn special_characters_are_escaped_wherever_they_appear() {
        let n = name(vec![vec![utf8("2.5.4.3", r#"a,b+c"d\e<f>g;h=i#j"#)]]);
        assert_eq!(java_rfc2253(&n), r#"CN=a\,b\+c\"d\\e\<f\>g\;h\=i\#j"#);
    }

    #[test]
    fn leading_hash_and_surrounding_spaces_are_escaped() {
        let n = name(vec![
            vec![utf8("2.5.4.10", "#1")],
            vec![utf8("2.5.4.3", "  x y ")],
        ]);
        assert_eq!(java_rfc2253(&n), r"CN=\ \ x y\ ,O=\#1");
        let nul = name(vec![vec![utf8("2.5.4.3", "a\0b")]]);
        assert_eq!(java_rfc2253(&nul), r"CN=a\00b");
    }

    #[test]
    fn utf8_values_are_printed_as_is() {
        let n = name(vec![vec![utf8(
            "2.5.4.3",
            "支付宝(中国)网络技术有限公司-2088",
        )]]);
        assert_eq!(java_rfc2253(&n), "CN=支付宝(中国)网络技术有限公司-2088");
    }

    #[test]
    fn multi_valued_rdns_join_with_plus_in_decoded_order() {
        let n = name(vec![
            vec![atv("2.5.4.6", Tag::PrintableString, b"CN")],
            vec![utf8("2.5.4.11", "Ops"), utf8("2.5.4.3", "Bob")],
        ]);
        // DER sorts a SET OF by encoding: CN (2.5.4.3) sorts before OU (2.5.4.11).
        assert_eq!(java_rfc2253(&n), "CN=Bob+OU=Ops,C=CN");
    }

    #[test]
    fn attributes_without_an_rfc2253_keyword_are_hex() {
        // emailAddress (IA5String "a@b") and serialNumber (PrintableString "7").
        let n = name(vec![
            vec![atv("1.2.840.113549.1.9.1", Tag::Ia5String, b"a@b")],
            vec![atv("2.5.4.5", Tag::PrintableString, b"7")],
        ]);
        assert_eq!(
            java_rfc2253(&n),
            "2.5.4.5=#130137,1.2.840.113549.1.9.1=#1603614062"
        );
    }

    #[test]
    fn non_string_values_are_hex_even_with_a_keyword() {
        let n = name(vec![vec![atv("2.5.4.3", Tag::OctetString, &[0xAB])]]);
        assert_eq!(java_rfc2253(&n), "CN=#0401ab");
    }

    #[test]
    fn keywords_match_java_for_street_dc_and_uid() {
        let n = name(vec![
            vec![atv("0.9.2342.19200300.100.1.25", Tag::Ia5String, b"com")],
            vec![utf8("2.5.4.9", "1 Main St")],
            vec![utf8("0.9.2342.19200300.100.1.1", "u1")],
            vec![utf8("2.5.4.8", "ZJ")],
        ]);
        assert_eq!(java_rfc2253(&n), "ST=ZJ,UID=u1,STREET=1 Main St,DC=com");
    }
}
