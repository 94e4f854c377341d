#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::mconsole_reply`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::mconsole_reply(data));
