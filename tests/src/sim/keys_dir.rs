//! Keys kept in a directory for the CLI: generated on the first run (TEST ONLY keys,
//! never production material), loaded afterwards, plus the payhook configuration
//! snippet that trusts them.
