//! The exit codes of `payhook-receiver` and `payhook-worker` (README, *Run it*).

/// The configuration (or the command line) is invalid; a TLS setting a backend
/// refuses counts. The message names the setting.
pub const INVALID: u8 = 2;

/// A backend cannot be reached (`check-config --connect`, or the database at start).
pub const UNREACHABLE: u8 = 3;
