#![no_main]
//! See [`payhook_fuzz::wechat_v2_notify`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| payhook_fuzz::wechat_v2_notify(data));
