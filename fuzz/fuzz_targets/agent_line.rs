#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::agent_line`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::agent_line(data));
