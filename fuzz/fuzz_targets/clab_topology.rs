#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::clab_topology`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::clab_topology(data));
