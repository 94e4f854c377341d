#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::vde_request`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::vde_request(data));
