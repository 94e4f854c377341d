#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::kathara_lab`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::kathara_lab(data));
