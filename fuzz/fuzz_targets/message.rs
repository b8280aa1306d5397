//! Fuzzes the decoding of a message (a transfer's payload); `nucleon_protocol::fuzzing::decode_message`
//! documents what is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nucleon_protocol::fuzzing::decode_message(data));
