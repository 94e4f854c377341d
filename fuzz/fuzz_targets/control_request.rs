#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::control_request`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::control_request(data));
