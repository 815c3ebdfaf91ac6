#![no_main]
//! See [`payhook_fuzz::config_toml`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| payhook_fuzz::config_toml(data));
