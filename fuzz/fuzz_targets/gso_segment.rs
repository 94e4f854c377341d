#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::gso_segment`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::gso_segment(data));
