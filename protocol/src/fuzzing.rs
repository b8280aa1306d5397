//! Entry points for fuzzing the decoders, one per fuzz target in `fuzz/`.
//!
//! They live inside the crate so that the fuzz targets are one-line wrappers and so that the same checks run on
//! stable Rust in the `fuzz_smoke` test, which feeds them the committed seed corpus and mutations of it. The module
//! is hidden from the documentation: it is not part of the API applications use.
//!
//! # Contract
//!
//! Each function accepts any bytes at all and
//!
//! * never panics on malformed input: every failure to decode must come back as a [`DecodeError`], which these
//!   functions then ignore;
//! * checks every value it does decode: the value is encoded again, [`Encode::encoded_size`] must match the bytes
//!   written, those bytes must decode, and the result must equal the first decoding (`Value` equality compares
//!   floats by their bits, so this holds for NaNs too).
//!
//! A panic from one of these functions is therefore always a codec bug: a decoder that panics, an encoder that
//! writes what the decoder rejects or reads back differently, or a size computation that disagrees with the
//! encoder. The panic message carries the bytes involved.
//!
//! [`DecodeError`]: crate::DecodeError

use std::fmt::Debug;

use bytes::Bytes;

use crate::codec::{Decode, Decoder, Encode};
use crate::frame::{Frame, FrameBody, FrameHeader, Performative, ProtocolHeader};
use crate::message::Message;

/// Decodes `data` as a sequence of AMQP values, one after another, until the input ends or a value fails to
/// decode, and checks that each decoded value survives an encode/decode round trip.
pub fn decode_value(data: &[u8]) {
    let mut dec = Decoder::new(Bytes::copy_from_slice(data));
    while !dec.is_empty() {
        match dec.decode_value() {
            Ok(value) => check_round_trip(&value),
            Err(_) => return,
        }
    }
}

/// Decodes `data` as the bytes a peer sends: an optional 8-byte protocol header, then frames.
///
/// Each frame header is parsed and its size checked against the bytes left; the stream ends at the first invalid
/// header or truncated frame. Every frame that decodes is encoded again and must decode to an equal frame, and the
/// payload of a `transfer` frame is also checked as a message (see [`decode_message`]). A frame whose body fails
/// to decode does not end the stream, since its header already says where the next frame starts.
pub fn decode_frames(data: &[u8]) {
    let stream = Bytes::copy_from_slice(data);
    let mut at = 0;
    if let Some(bytes) = first_eight(&stream) {
        if let Some(header) = ProtocolHeader::parse(bytes) {
            assert_eq!(
                header.to_bytes(),
                bytes,
                "protocol header {header:?} does not round-trip"
            );
            at = ProtocolHeader::SIZE;
        }
    }
    while let Some(bytes) = first_eight(&stream[at..]) {
        let Ok(header) = FrameHeader::parse(bytes, at) else {
            return;
        };
        // The header guarantees size >= 8, so the loop always advances.
        let size = header.size as usize;
        if size > stream.len() - at {
            return;
        }
        if let Ok(frame) = Frame::decode(stream.slice(at..at + size), at) {
            check_frame(&frame);
        }
        at += size;
    }
}

/// Decodes `data` as a message (the payload of a transfer) and, if that succeeds, checks that the message
/// forwards its original bytes unchanged and that, once those are forgotten, a fresh encoding decodes to an equal
/// message.
pub fn decode_message(data: &[u8]) {
    check_message(Bytes::copy_from_slice(data));
}

fn first_eight(bytes: &[u8]) -> Option<[u8; 8]> {
    bytes.get(..8)?.try_into().ok()
}

/// Encodes `value`, checking that [`Encode::encoded_size`] predicted the length.
fn encode_checked<T: Encode + Debug>(value: &T) -> Bytes {
    let bytes = value.to_bytes();
    assert_eq!(
        bytes.len(),
        value.encoded_size(),
        "encoded_size disagrees with the encoding of {value:?}"
    );
    bytes
}

fn check_round_trip<T: Encode + Decode + PartialEq + Debug>(first: &T) {
    let bytes = encode_checked(first);
    let second = T::decode_from(bytes.clone()).unwrap_or_else(|e| {
        panic!(
            "the encoding of {first:?} does not decode ({e}): {:02x?}",
            &bytes[..]
        )
    });
    assert_eq!(
        &second,
        first,
        "round trip through {:02x?} changed the value",
        &bytes[..]
    );
}

fn check_frame(first: &Frame) {
    let mut buf = Vec::with_capacity(first.encoded_size());
    first.encode(&mut buf);
    assert_eq!(
        buf.len(),
        first.encoded_size(),
        "Frame::encoded_size disagrees with the encoding of {first:?}"
    );
    let second = Frame::decode(Bytes::from(buf.clone()), 0)
        .unwrap_or_else(|e| panic!("the encoding of {first:?} does not decode ({e}): {buf:02x?}"));
    assert_eq!(
        &second, first,
        "round trip through {buf:02x?} changed the frame"
    );
    if let FrameBody::Amqp {
        performative: Performative::Transfer(_),
        payload,
    } = &first.body
    {
        check_message(payload.clone());
    }
}

fn check_message(bytes: Bytes) {
    let Ok(mut first) = Message::decode(bytes.clone()) else {
        return;
    };
    assert_eq!(
        first.to_bytes(),
        bytes,
        "an unmodified decoded message must encode as the bytes it came from"
    );
    first.forget_encoded();
    let fresh = encode_checked(&first);
    let second = Message::decode(fresh.clone()).unwrap_or_else(|e| {
        panic!(
            "the encoding of {first:?} does not decode ({e}): {:02x?}",
            &fresh[..]
        )
    });
    assert_eq!(
        second,
        first,
        "round trip through {:02x?} changed the message",
        &fresh[..]
    );
}
