#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::http_head`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::http_head(data));
