#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::impairment_text`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::impairment_text(data));
