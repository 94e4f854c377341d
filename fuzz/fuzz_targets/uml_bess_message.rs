#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::uml_bess_message`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::uml_bess_message(data));
