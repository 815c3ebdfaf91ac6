//! Why an envelope was not applied: the apply path's one error, shared by the steps
//! (`facts`, `rows`, `bulk`) so that none of them depends on `apply`.

/// Why an envelope was not applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The database is unreachable, overloaded, or a race was lost: retry later.
    #[error("database unavailable or contended; retry later")]
    Transient(#[source] sqlx::Error),
    /// The envelope can never apply (unknown schema, invalid data): park it.
    #[error("cannot apply: {0}")]
    Permanent(String),
}

impl ApplyError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Transient(_))
    }
}

impl From<sqlx::Error> for ApplyError {
    fn from(err: sqlx::Error) -> Self {
        if super::is_transient(&err) {
            Self::Transient(err)
        } else {
            // A unique violation nothing here expects, a check constraint, bad data:
            // retrying cannot help.
            Self::Permanent(format!("database: {err}"))
        }
    }
}
