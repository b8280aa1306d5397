use bytes::Bytes;

use super::RawMessage;
use crate::codec::{DecodeErrorKind, Encode, Timestamp};
use crate::frame::Header;
use crate::message::tests::full;
use crate::Message;

#[test]
fn reads_what_routing_needs() {
    let raw = RawMessage::parse(full().to_bytes()).unwrap();
    assert!(raw.durable());
    assert!(raw.first_acquirer());
    assert_eq!(raw.priority(), 9);
    assert_eq!(raw.ttl(), Some(1000));
    assert_eq!(raw.delivery_count(), 2);
    assert_eq!(raw.to(), Some("queue"));
    assert_eq!(raw.absolute_expiry_time(), Some(Timestamp(2000)));
    assert_eq!(raw.decode().unwrap(), full());
}

#[test]
fn a_message_without_header_or_properties_has_the_defaults() {
    let raw = RawMessage::parse(Message::with_body(1i32).to_bytes()).unwrap();
    assert!(!raw.durable() && !raw.first_acquirer());
    assert_eq!(raw.priority(), 4);
    assert_eq!((raw.ttl(), raw.delivery_count()), (None, 0));
    assert_eq!((raw.to(), raw.absolute_expiry_time()), (None, None));
    assert_eq!(raw.header(), Header::default());
    let empty = RawMessage::parse(Bytes::new()).unwrap();
    assert!(empty.is_empty());
}

#[test]
fn a_new_header_is_spliced_before_the_other_sections_unchanged() {
    let bytes = full().to_bytes();
    let mut raw = RawMessage::parse(bytes.clone()).unwrap();
    let old_header_len = full().header().unwrap().encoded_size();
    let mut h = raw.header();
    h.first_acquirer = false;
    h.delivery_count += 1;
    h.ttl = None;
    raw.set_header(&h);
    assert_eq!(raw.delivery_count(), 3);
    assert!(!raw.first_acquirer());
    assert_eq!(raw.ttl(), None);
    assert_eq!(raw.priority(), 9, "the other fields are kept");
    assert_eq!(raw.to(), Some("queue"), "found past the new header");
    let rest = &bytes[old_header_len..];
    assert_eq!(&raw.bytes()[raw.len() - rest.len()..], rest);
    let mut want = full();
    *want.header_mut() = h;
    assert_eq!(raw.decode().unwrap(), want);

    // A message without a header gets one.
    let mut raw = RawMessage::parse(Message::with_body(1i32).to_bytes()).unwrap();
    raw.set_header(&Header {
        delivery_count: 1,
        ..Header::default()
    });
    let back = raw.decode().unwrap();
    assert_eq!(back.delivery_count(), 1);
    assert_eq!(back.body_value(), Some(&crate::Value::Int(1)));
}

#[test]
fn header_fields_in_every_form_are_read() {
    // header [durable: true (0x56 01), priority: 7, ttl: uint 300, first-acquirer: false, count: smalluint 4]
    let bytes: &[u8] = &[
        0x00, 0x53, 0x70, 0xc0, 0x0d, 0x05, 0x56, 0x01, 0x50, 0x07, 0x70, 0, 0, 1, 0x2c, 0x42,
        0x52, 0x04, // then an amqp-value
        0x00, 0x53, 0x77, 0x40,
    ];
    let raw = RawMessage::parse(Bytes::from_static(bytes)).unwrap();
    assert!(raw.durable());
    assert_eq!(raw.priority(), 7);
    assert_eq!(raw.ttl(), Some(300));
    assert_eq!(raw.delivery_count(), 4);
}

#[test]
fn structure_errors_are_refused_as_by_decode() {
    let cases: [&[u8]; 12] = [
        &[0x40],                                                 // not a section
        &[0x00, 0x53, 0x99, 0x40],                               // unknown section
        &[0x00, 0x53, 0x73, 0x45, 0x00, 0x53, 0x70, 0x45],       // out of order
        &[0x00, 0x53, 0x75, 0xa0, 0, 0x00, 0x53, 0x77, 0x40],    // mixed body kinds
        &[0x00, 0x53, 0x77, 0x40, 0x00, 0x53, 0x77, 0x40],       // two amqp-values
        &[0x00, 0x53, 0x77, 0xa1, 0x05, b'a'],                   // a string longer than the bytes
        &[0x00, 0x53, 0x77, 0xa1, 0x01, 0xff],                   // not UTF-8
        &[0x00, 0x53, 0x77, 0xc1, 0x03, 0x01, 0x40],             // a map with an odd count
        &[0x00, 0x53, 0x70, 0xc0, 0x02, 0x01, 0xa1],             // durable as a string
        &[0x00, 0x53, 0x73, 0xc0, 0x03, 0x03, 0x40, 0x40], // a property list short of its count
        &[0x00, 0x53, 0x73, 0xc0, 0x04, 0x03, 0x40, 0x40, 0x71], // `to` as an int
        &[0x00, 0x53, 0x75, 0xa1, 0x00],                   // data that is not binary
    ];
    for bytes in cases {
        let bytes = Bytes::from_static(bytes);
        assert!(Message::decode(bytes.clone()).is_err(), "{bytes:02x?}");
        assert!(RawMessage::parse(bytes.clone()).is_err(), "{bytes:02x?}");
    }
}

#[test]
fn nesting_is_bounded_as_by_decode() {
    // An amqp-value of lists nested `depth` deep: list8 [size, count 1, the next list], then list0.
    let nested = |depth: usize| {
        let mut v = vec![0x00, 0x53, 0x77];
        for i in 0..depth {
            let inner = (depth - i - 1) * 3 + 1;
            v.extend_from_slice(&[0xc0, (inner + 1) as u8, 0x01]);
        }
        v.push(0x45);
        Bytes::from(v)
    };
    for depth in [10, 63, 64, 65, 80] {
        let bytes = nested(depth);
        assert_eq!(
            RawMessage::parse(bytes.clone()).is_ok(),
            Message::decode(bytes.clone()).is_ok(),
            "depth {depth}"
        );
    }
    assert!(RawMessage::parse(nested(80)).is_err());
}

#[test]
fn only_the_budget_is_not_applied() {
    // An array of 60 000 nulls: zero-width elements within the decoder's allowance, but decoded they take
    // more than a budget of 1 KiB.
    let mut v = vec![0x00, 0x53, 0x77, 0xf0];
    v.extend_from_slice(&5u32.to_be_bytes());
    v.extend_from_slice(&60_000u32.to_be_bytes());
    v.push(0x40);
    let bytes = Bytes::from(v);
    let raw = RawMessage::parse(bytes.clone()).unwrap();
    let err = Message::decode_with_budget(bytes, 1024).unwrap_err();
    assert!(matches!(err.kind, DecodeErrorKind::BudgetExceeded { .. }));
    assert!(raw.decode().is_ok(), "within the default budget");
}

#[test]
fn compact_copies_a_slice_out_of_its_buffer() {
    let payload = full().to_bytes();
    let mut big = vec![0u8; 64 * 1024];
    big[100..100 + payload.len()].copy_from_slice(&payload);
    let buffer = Bytes::from(big);
    let mut raw = RawMessage::parse(buffer.slice(100..100 + payload.len())).unwrap();
    let inside = buffer.as_ptr_range();
    assert!(inside.contains(&raw.bytes().as_ptr()));
    raw.compact();
    assert!(!inside.contains(&raw.bytes().as_ptr()), "a copy of its own");
    assert_eq!(raw.bytes(), &payload);
    // Nothing refers to the read buffer any more: it is this handle's alone.
    assert!(buffer.try_into_mut().is_ok());
}

#[test]
fn raw_message_is_small() {
    assert_eq!(std::mem::size_of::<RawMessage>(), 40);
}
