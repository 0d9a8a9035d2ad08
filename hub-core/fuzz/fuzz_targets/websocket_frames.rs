//! The WebSocket frame decoder and the inflater never panic, whatever a client sends.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| hub_core::fuzzing::websocket_frames(data));
