//! Fuzzes a server engine with a client's byte stream;
//! `nucleon_protocol::fuzzing::engine_server` documents the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nucleon_protocol::fuzzing::engine_server(data));
