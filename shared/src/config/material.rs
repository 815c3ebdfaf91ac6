//! Key material and secrets in the configuration: given inline, as a file path, or as
//! the name of an environment variable. Secrets are never printed.

use std::fmt;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;

/// Text given inline (`key = "…"`), from a file (`key = { file = "/path" }`) or from an
/// environment variable (`key = { env = "NAME" }`).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Material {
    Inline(String),
    File { file: PathBuf },
    Env { env: String },
}

impl Material {
    /// Reads the text. The error names the source, never the content.
    pub fn load(&self) -> Result<String, String> {
        match self {
            Self::Inline(text) => Ok(text.clone()),
            Self::File { file } => std::fs::read_to_string(file)
                .map_err(|e| format!("cannot read file {}: {e}", file.display())),
            Self::Env { env } => std::env::var(env)
                .map_err(|_| format!("environment variable {env} is not set or not UTF-8")),
        }
    }
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(..)"),
            Self::File { file } => write!(f, "File({})", file.display()),
            Self::Env { env } => write!(f, "Env({env})"),
        }
    }
}

/// A secret (API key, private key, broker URL with password): like [`Material`], but
/// loaded into a [`SecretString`] and redacted everywhere.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub Material);

impl Secret {
    pub fn inline(value: impl Into<String>) -> Self {
        Self(Material::Inline(value.into()))
    }

    pub fn load(&self) -> Result<SecretString, String> {
        self.0
            .load()
            .map(|s| SecretString::from(s.trim().to_owned()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Material::Inline(_) => f.write_str("Secret([redacted])"),
            other => write!(f, "Secret({other:?})"),
        }
    }
}
