#![no_main]
//! See [`payhook_fuzz::alipay_bill`].

libfuzzer_sys::fuzz_target!(|data: &[u8]| payhook_fuzz::alipay_bill(data));
