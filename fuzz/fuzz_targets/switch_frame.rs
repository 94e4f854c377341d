#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::switch_frame`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::switch_frame(data));
