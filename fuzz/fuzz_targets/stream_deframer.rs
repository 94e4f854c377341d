#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::stream_deframer`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::stream_deframer(data));
