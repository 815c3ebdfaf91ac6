#![no_main]
//! See [`payhook_fuzz::wechat_v3_notify`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| payhook_fuzz::wechat_v3_notify(data));
