#![no_main]
//! libFuzzer's driver for `clonet::fuzzing::vxlan_datagram`.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| clonet::fuzzing::vxlan_datagram(data));
