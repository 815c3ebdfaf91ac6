//! Why a notification was refused. Every variant maps to a stable, low-cardinality
//! `reason` used as a metric label and in logs; the display text never contains a
//! secret, a key or a full body.

use thiserror::Error;

/// A notification that cannot be trusted or understood. The receiver answers the
/// provider's failure body for every one of these and publishes nothing.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum VerifyError {
    /// The body or a header is not well-formed for the provider's format.
    #[error("malformed notification: {0}")]
    Malformed(String),
    /// A field needed for verification or normalization is absent or empty.
    #[error("missing field {0}")]
    MissingField(&'static str),
    /// The signature does not verify with the selected key (includes probes).
    #[error("signature does not verify")]
    BadSignature,
    /// The signature text is not decodable (e.g. `WECHATPAY/SIGNTEST/` probes).
    #[error("signature is not valid base64")]
    SignatureEncoding,
    /// No configured key matches the notification's certificate SN / serial.
    #[error("no key for serial/certificate {0:?}")]
    UnknownKey(String),
    /// The sign type / algorithm is not one we accept.
    #[error("unsupported signature or encryption algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The timestamp is outside the accepted window.
    #[error("timestamp outside the accepted window ({skew_secs}s)")]
    StaleTimestamp { skew_secs: i64 },
    /// The encrypted resource could not be decrypted/authenticated with our key.
    #[error("decryption failed")]
    Decrypt,
    /// The notification names another merchant / app than the one configured.
    #[error("notification is for another merchant ({0})")]
    MerchantMismatch(&'static str),
    /// The charset is not one we support.
    #[error("unsupported charset {0:?}")]
    Charset(String),
    /// The XML declares a DOCTYPE or entities (XXE / billion laughs).
    #[error("XML with DOCTYPE or entities refused")]
    XmlDoctype,
    /// A money amount is not an exact decimal / integer.
    #[error("invalid amount in {0}")]
    Amount(&'static str),
    /// The provider itself reports a failed callback (V2 `return_code=FAIL`).
    #[error("provider reported failure in the notification")]
    ProviderFailure,
}

impl VerifyError {
    /// A stable metric label for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "malformed",
            Self::MissingField(_) => "missing_field",
            Self::BadSignature => "bad_signature",
            Self::SignatureEncoding => "signature_encoding",
            Self::UnknownKey(_) => "unknown_key",
            Self::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Self::StaleTimestamp { .. } => "stale_timestamp",
            Self::Decrypt => "decrypt",
            Self::MerchantMismatch(_) => "merchant_mismatch",
            Self::Charset(_) => "charset",
            Self::XmlDoctype => "xml_doctype",
            Self::Amount(_) => "amount",
            Self::ProviderFailure => "provider_failure",
        }
    }

    /// The HTTP status the receiver answers with: 401 when the request is not
    /// authentic (signature, key, timestamp, decryption), 400 when it is not
    /// understood.
    pub fn http_status(&self) -> u16 {
        match self {
            Self::BadSignature
            | Self::SignatureEncoding
            | Self::UnknownKey(_)
            | Self::StaleTimestamp { .. }
            | Self::Decrypt => 401,
            _ => 400,
        }
    }

    /// Every reason label, so metrics can be pre-registered at zero.
    pub const REASONS: &'static [&'static str] = &[
        "malformed",
        "missing_field",
        "bad_signature",
        "signature_encoding",
        "unknown_key",
        "unsupported_algorithm",
        "stale_timestamp",
        "decrypt",
        "merchant_mismatch",
        "charset",
        "xml_doctype",
        "amount",
        "provider_failure",
    ];
}

/// A key or certificate in the configuration that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("not a PEM or base64 DER RSA public key: {0}")]
    PublicKey(String),
    #[error("not a PEM PKCS#8/PKCS#1 RSA private key: {0}")]
    PrivateKey(String),
    #[error("not a usable X.509 certificate: {0}")]
    Certificate(String),
    #[error("invalid key material: {0}")]
    Invalid(String),
}

/// Why a provider's answer to a reconciliation query is not usable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// The answer did not verify (bad or missing signature, malformed): never trusted.
    #[error("answer not verified: {0}")]
    Unverified(#[from] VerifyError),
    /// A verified business or gateway error other than "not created yet".
    #[error("provider error {code} {sub_code}")]
    Provider { code: String, sub_code: String },
}

impl AnswerError {
    /// A short, bounded label for metrics (never a provider-chosen string).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Unverified(_) => "bad_signature",
            Self::Provider { .. } => "provider_error",
        }
    }
}
