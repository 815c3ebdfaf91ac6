//! The flat XML dialect of APIv2, read safely and written for answers.
//!
//! WeChat sends `<xml><key>value</key>…</xml>` (and `<root>…</root>` inside a refund's
//! `req_info`): one level of leaf elements whose values are text or CDATA. Anything
//! else is refused rather than interpreted, because every extra feature of XML is an
//! attack surface here:
//!
//! - a DOCTYPE is refused outright ([`VerifyError::XmlDoctype`]), so no DTD is ever
//!   read and no entity is ever declared — XXE and "billion laughs" cannot start;
//! - references to anything but the five predefined entities and numeric character
//!   references are refused (without a DOCTYPE they could only be undeclared anyway);
//! - nested elements, text beside elements and repeated keys are refused
//!   ([`VerifyError::Malformed`]): a repeated `total_fee` must never let the verifier
//!   and the normalizer read two different values.
//!
//! Values are kept exactly as sent (no trimming): the signature covers them verbatim.

use std::collections::HashSet;

use quick_xml::Reader;
use quick_xml::events::{BytesRef, Event};

use crate::error::VerifyError;

/// Root element names WeChat uses: `xml` for notifications, `root` inside `req_info`.
const ROOT_NAMES: [&[u8]; 2] = [b"xml", b"root"];

/// Parses a flat `<xml><k>v</k>…</xml>` (or `<root>…</root>`) document into its
/// `(key, value)` pairs, in document order.
///
/// An empty element (`<k/>` or `<k></k>`) yields an empty value. The caller caps the
/// body size; this function never expands anything, so its output is never larger
/// than its input.
///
/// # Errors
/// [`VerifyError::XmlDoctype`] for a DOCTYPE or a reference to a non-predefined
/// entity; [`VerifyError::Malformed`] for anything that is not well-formed UTF-8 XML
/// of that flat shape (nesting, mixed content, duplicate keys, another root).
pub fn parse_xml(body: &[u8]) -> Result<Vec<(String, String)>, VerifyError> {
    let mut reader = Reader::from_reader(body);
    // Defaults already check end-tag names and refuse a bare `&`; set explicitly
    // because the safety of this parser depends on them.
    let config = reader.config_mut();
    config.check_end_names = true;
    config.allow_dangling_amp = false;
    config.allow_unmatched_ends = false;

    let mut state = State::BeforeRoot;
    let mut fields: Vec<(String, String)> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();

    loop {
        let event = reader.read_event().map_err(|_| {
            // quick-xml's message may quote attacker-controlled names: keep only the offset.
            malformed(format!(
                "XML syntax error near byte {}",
                reader.error_position()
            ))
        })?;
        // A DOCTYPE is refused wherever it appears, before anything else is looked at.
        if matches!(event, Event::DocType(_)) {
            return Err(VerifyError::XmlDoctype);
        }
        state = match (state, event) {
            (State::BeforeRoot, Event::Start(tag)) if ROOT_NAMES.contains(&tag.name().as_ref()) => {
                State::InRoot
            }
            (State::BeforeRoot, Event::Empty(tag)) if ROOT_NAMES.contains(&tag.name().as_ref()) => {
                State::AfterRoot
            }
            (State::BeforeRoot, Event::Decl(_) | Event::PI(_)) => State::BeforeRoot,
            (s @ (State::BeforeRoot | State::InRoot | State::AfterRoot), Event::Comment(_)) => s,
            (s @ (State::BeforeRoot | State::InRoot | State::AfterRoot), Event::Text(text))
                if is_xml_whitespace(&text) =>
            {
                s
            }

            (State::InRoot, Event::Start(tag)) => State::InField {
                key: element_name(tag.name().as_ref())?,
                value: String::new(),
            },
            (State::InRoot, Event::Empty(tag)) => {
                push_field(
                    &mut fields,
                    &mut seen,
                    element_name(tag.name().as_ref())?,
                    String::new(),
                )?;
                State::InRoot
            }
            // quick-xml has already checked that this end tag closes the root.
            (State::InRoot, Event::End(_)) => State::AfterRoot,

            (State::InField { key, mut value }, Event::Text(text)) => {
                value.push_str(&text.xml10_content().map_err(|_| not_utf8())?);
                State::InField { key, value }
            }
            (State::InField { key, mut value }, Event::CData(data)) => {
                value.push_str(&data.xml10_content().map_err(|_| not_utf8())?);
                State::InField { key, value }
            }
            (State::InField { key, mut value }, Event::GeneralRef(reference)) => {
                value.push(resolve_reference(&reference)?);
                State::InField { key, value }
            }
            (State::InField { key, value }, Event::End(_)) => {
                push_field(&mut fields, &mut seen, key, value)?;
                State::InRoot
            }
            (State::InField { .. }, Event::Start(_) | Event::Empty(_)) => {
                return Err(malformed("nested element"));
            }

            (State::AfterRoot, Event::Eof) => return Ok(fields),
            (_, Event::Eof) => {
                return Err(malformed("document ends before its root element closes"));
            }
            (_, Event::GeneralRef(reference)) => {
                // Resolve first so an unknown entity is reported as what it is.
                resolve_reference(&reference)?;
                return Err(malformed("text outside a field"));
            }
            (State::BeforeRoot, Event::Start(_) | Event::Empty(_)) => {
                return Err(malformed("unexpected root element"));
            }
            (_, _) => return Err(malformed("unexpected XML content")),
        };
    }
}

/// Where the parser is in the flat document.
enum State {
    BeforeRoot,
    InRoot,
    InField { key: String, value: String },
    AfterRoot,
}

fn push_field(
    fields: &mut Vec<(String, String)>,
    seen: &mut HashSet<String>,
    key: String,
    value: String,
) -> Result<(), VerifyError> {
    if !seen.insert(key.clone()) {
        return Err(malformed("duplicate field"));
    }
    fields.push((key, value));
    Ok(())
}

/// Resolves `&name;`: the five predefined entities and numeric character references.
/// Anything else would need a DTD to mean something, and DTDs are refused.
fn resolve_reference(reference: &BytesRef<'_>) -> Result<char, VerifyError> {
    if reference.is_char_ref() {
        return match reference.resolve_char_ref() {
            Ok(Some(c)) => Ok(c),
            Ok(None) | Err(_) => Err(malformed("invalid character reference")),
        };
    }
    match &**reference {
        b"lt" => Ok('<'),
        b"gt" => Ok('>'),
        b"amp" => Ok('&'),
        b"apos" => Ok('\''),
        b"quot" => Ok('"'),
        _ => Err(VerifyError::XmlDoctype),
    }
}

fn element_name(name: &[u8]) -> Result<String, VerifyError> {
    std::str::from_utf8(name)
        .map(str::to_owned)
        .map_err(|_| not_utf8())
}

/// XML's `S` production: space, tab, CR, LF (not Unicode whitespace).
fn is_xml_whitespace(text: &[u8]) -> bool {
    text.iter()
        .all(|b| matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
}

fn malformed(what: impl Into<String>) -> VerifyError {
    VerifyError::Malformed(what.into())
}

fn not_utf8() -> VerifyError {
    malformed("XML is not UTF-8")
}

/// Wraps `text` in CDATA sections so that it reads back verbatim. A `]]>` inside the
/// text would end the section early (and let the rest be parsed as markup), so it is
/// split across two sections: `]]` ends the first, `>` starts the second.
pub(crate) fn cdata(text: &str) -> String {
    format!("<![CDATA[{}]]>", text.replace("]]>", "]]]]><![CDATA[>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    /// XML 1.0 §2.11: a CR LF pair or a lone CR reads as LF, in CDATA too — as every
    /// conforming parser (those of WeChat's SDKs included) reads it, so a signature is
    /// checked over the value they would see. Found by the `wechat_v2_notify` fuzz
    /// target, whose re-signing had assumed byte-for-byte values.
    #[test]
    fn line_ends_read_as_line_feeds_in_text_and_cdata() {
        let body = b"<xml><a><![CDATA[x\r\ny\rz]]></a><b>1\r\n2</b></xml>";
        assert_eq!(
            parse_xml(body),
            Ok(pairs(&[("a", "x\ny\nz"), ("b", "1\n2")]))
        );
    }

    #[test]
    fn reads_text_and_cdata_values_in_document_order() {
        let body = b"<?xml version=\"1.0\"?>\n<xml>\n  <b><![CDATA[x<y]]></b>\n  <a>1 &amp; 2 &#x4e2d;&#25991;</a>\n  <c/>\n  <d></d>\n</xml>\n";
        assert_eq!(
            parse_xml(body),
            Ok(pairs(&[
                ("b", "x<y"),
                ("a", "1 & 2 中文"),
                ("c", ""),
                ("d", "")
            ]))
        );
    }

    #[test]
    fn accepts_root_as_root_name() {
        assert_eq!(
            parse_xml(b"<root><k>v</k></root>"),
            Ok(pairs(&[("k", "v")]))
        );
    }

    #[test]
    fn keeps_values_verbatim() {
        assert_eq!(
            parse_xml(b"<xml><k> v </k></xml>"),
            Ok(pairs(&[("k", " v ")]))
        );
    }

    #[test]
    fn xxe_doctype_is_refused() {
        let body = br#"<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><a>&xxe;</a></xml>"#;
        assert_eq!(parse_xml(body), Err(VerifyError::XmlDoctype));
    }

    #[test]
    fn lower_case_doctype_is_refused() {
        let body = b"<!doctype xml><xml><a>1</a></xml>";
        assert_eq!(parse_xml(body), Err(VerifyError::XmlDoctype));
    }

    #[test]
    fn billion_laughs_is_refused_without_expansion() {
        let body = br#"<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol9 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
]>
<xml><a>&lol9;</a></xml>"#;
        assert_eq!(parse_xml(body), Err(VerifyError::XmlDoctype));
    }

    #[test]
    fn undeclared_entity_reference_is_refused() {
        assert_eq!(
            parse_xml(b"<xml><a>&xxe;</a></xml>"),
            Err(VerifyError::XmlDoctype)
        );
        assert_eq!(
            parse_xml(b"<xml>&xxe;<a>1</a></xml>"),
            Err(VerifyError::XmlDoctype)
        );
    }

    #[test]
    fn nested_element_is_malformed() {
        assert!(matches!(
            parse_xml(b"<xml><a><b>1</b></a></xml>"),
            Err(VerifyError::Malformed(_))
        ));
        assert!(matches!(
            parse_xml(b"<xml><a><b/></a></xml>"),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn duplicate_key_is_malformed() {
        assert!(matches!(
            parse_xml(b"<xml><a>1</a><a>2</a></xml>"),
            Err(VerifyError::Malformed(_))
        ));
    }

    #[test]
    fn non_xml_is_malformed() {
        for body in [
            &b"return_code=SUCCESS"[..],
            b"",
            b"{\"a\":1}",
            b"<xml><a>1</a>",
            b"<xml><a>1</b></xml>",
            b"<other><a>1</a></other>",
            b"<xml>text<a>1</a></xml>",
            b"<xml><a>1</a></xml><xml/>",
            b"<xml><a>\xff</a></xml>",
            b"<xml><a>&#0;</a></xml>",
        ] {
            assert!(
                matches!(parse_xml(body), Err(VerifyError::Malformed(_))),
                "{:?} should be malformed",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn cdata_survives_a_terminator_in_the_text() {
        let text = "a]]><b>x</b>]]>";
        let body = format!("<xml><m>{}</m></xml>", cdata(text));
        assert_eq!(parse_xml(body.as_bytes()), Ok(pairs(&[("m", text)])));
    }
}
