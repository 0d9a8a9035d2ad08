//! The Protobuf client-protocol codec never panics, whatever a client sends.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hub_core::fuzzing::protocol_protobuf(data));
