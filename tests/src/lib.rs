//! test tooling
