#![no_main]
//! See [`payhook_fuzz::wechat_bill`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| payhook_fuzz::wechat_bill(data));
