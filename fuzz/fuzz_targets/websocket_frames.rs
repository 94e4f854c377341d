#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::websocket_frames`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::websocket_frames(data));
