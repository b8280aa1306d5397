//! Fuzzes the decoding of a sequence of AMQP values; `nucleon_protocol::fuzzing::decode_value` documents what
//! is checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| nucleon_protocol::fuzzing::decode_value(data));
