#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::sniff_summary`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::sniff_summary(data));
