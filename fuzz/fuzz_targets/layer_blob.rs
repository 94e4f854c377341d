#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::layer_blob`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::layer_blob(data));
