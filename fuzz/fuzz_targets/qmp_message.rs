#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::qmp_message`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::qmp_message(data));
