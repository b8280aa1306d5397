//! Fuzzes a client engine, after a real handshake, with what the server sends next;
//! `nucleon_protocol::fuzzing::engine_client` documents the input format and what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nucleon_protocol::fuzzing::engine_client(data));
