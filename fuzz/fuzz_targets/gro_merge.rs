#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::gro_merge`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::gro_merge(data));
