//! Fuzzes the decoding of a peer's byte stream (an optional protocol header, then frames);
//! `nucleon_protocol::fuzzing::decode_frames` documents what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nucleon_protocol::fuzzing::decode_frames(data));
