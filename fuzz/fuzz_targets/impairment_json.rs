#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::impairment_json`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::impairment_json(data));
