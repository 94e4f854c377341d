#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::image_reference`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::image_reference(data));
