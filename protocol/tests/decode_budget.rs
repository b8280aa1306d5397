//! Decoding hostile input allocates at most the decode budget: a bounded multiple of the input plus a floor.
//!
//! Payloads that amplify past the budget are refused with `amqp:decode-error`; payloads just under it decode,
//! and the heap their values hold (measured by walking them) stays within it.

use bytes::Bytes;
use nucleon_protocol::codec::{Array, Descriptor, Type};
use nucleon_protocol::frame::ErrorCondition;
use nucleon_protocol::{Body, Decode, Message, Value};

/// What the default budget allows for `input_len` bytes.
fn allowed(input_len: usize) -> usize {
    nucleon_protocol::codec::default_decode_budget(input_len)
}

/// The heap bytes a decoded value holds (binary values are slices of the input and hold none of their own).
fn heap(v: &Value) -> usize {
    let value = size_of::<Value>();
    match v {
        Value::String(s) => s.capacity(),
        Value::Symbol(s) => s.as_str().len(),
        Value::List(items) => items.capacity() * value + items.iter().map(heap).sum::<usize>(),
        Value::Map(m) => {
            m.len() * 2 * value + m.iter().map(|(k, v)| heap(k) + heap(v)).sum::<usize>()
        }
        Value::Array(a) => {
            a.len() * value
                + a.descriptor()
                    .map_or(0, |d| size_of_val(d) + descriptor_heap(d))
                + a.items().iter().map(heap).sum::<usize>()
        }
        Value::Described(d) => size_of_val(&**d) + descriptor_heap(&d.descriptor) + heap(&d.value),
        _ => 0,
    }
}

fn descriptor_heap(d: &Descriptor) -> usize {
    match d {
        Descriptor::Code(_) => 0,
        Descriptor::Symbol(s) => s.as_str().len(),
    }
}

fn message_heap(m: &Message) -> usize {
    match m.body() {
        Body::Value(v) => heap(v),
        Body::Data(sections) => sections.capacity() * size_of::<Bytes>(),
        Body::Sequence(sections) => {
            sections.capacity() * size_of::<Vec<Value>>()
                + sections
                    .iter()
                    .map(|s| s.capacity() * size_of::<Value>() + s.iter().map(heap).sum::<usize>())
                    .sum::<usize>()
        }
        Body::Empty => 0,
    }
}

/// An encoded list32 of `count` elements whose bytes are `element` repeated.
fn list32(count: usize, element: &[u8]) -> Vec<u8> {
    let mut out = vec![0xd0];
    let size = 4 + count * element.len();
    out.extend_from_slice(&(size as u32).to_be_bytes());
    out.extend_from_slice(&(count as u32).to_be_bytes());
    for _ in 0..count {
        out.extend_from_slice(element);
    }
    out
}

/// An encoded array32 of `count` elements of constructor `code`, each element's bytes `element`.
fn array32(count: usize, code: u8, element: &[u8]) -> Vec<u8> {
    let mut out = vec![0xf0];
    let size = 4 + 1 + count * element.len();
    out.extend_from_slice(&(size as u32).to_be_bytes());
    out.extend_from_slice(&(count as u32).to_be_bytes());
    out.push(code);
    for _ in 0..count {
        out.extend_from_slice(element);
    }
    out
}

/// `bytes` as the body of a message: an amqp-value section.
fn amqp_value_section(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![0x00, 0x53, 0x77];
    out.extend_from_slice(bytes);
    out
}

const BIG: usize = 4 << 20;

/// A size at which every hostile shape amplifies past the default budget.
const LARGE: usize = 8 << 20;

/// Shapes that amplify most: one value (or more) per input byte. `n` scales the input to about `n` bytes.
fn hostile_payloads(n: usize) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("list of nulls", list32(n, &[0x40])),
        ("array of booleans", array32(n, 0x56, &[0x01])),
        ("array of trues", array32(n, 0x41, &[])),
        ("list of empty lists", list32(n, &[0x45])),
        ("list of empty list8s", list32(n / 3, &[0xc0, 0x01, 0x00])),
        ("map of nulls", {
            let mut m = list32(n, &[0x40]);
            m[0] = 0xd1;
            m
        }),
        (
            "list of described nulls",
            list32(n / 3, &[0x00, 0x44, 0x40]),
        ),
        ("list of empty strings", list32(n / 2, &[0xa1, 0x00])),
        ("list of empty symbols", list32(n / 2, &[0xa3, 0x00])),
    ]
}

/// The sizes tried for each hostile shape: the smallest decodes, the others may be refused.
const SCALES: [usize; 3] = [BIG / 64, BIG / 8, BIG];

#[test]
fn hostile_values_are_refused_or_within_the_budget() {
    for scale in SCALES {
        for (name, bytes) in hostile_payloads(scale) {
            let len = bytes.len();
            match Value::decode_from(Bytes::from(bytes)) {
                Ok(v) => assert!(
                    heap(&v) <= allowed(len),
                    "{name}: {len} bytes decoded to {} heap bytes (allowed {})",
                    heap(&v),
                    allowed(len)
                ),
                Err(e) => assert_eq!(e.condition(), ErrorCondition::DecodeError, "{name}: {e}"),
            }
        }
    }
}

#[test]
fn large_hostile_values_are_refused() {
    for (name, bytes) in hostile_payloads(LARGE) {
        let e = Value::decode_from(Bytes::from(bytes))
            .map(drop)
            .expect_err(name);
        assert_eq!(e.condition(), ErrorCondition::DecodeError, "{name}: {e}");
    }
}

#[test]
fn hostile_messages_are_refused_or_within_the_budget() {
    for scale in SCALES {
        for (name, bytes) in hostile_payloads(scale) {
            let input = amqp_value_section(&bytes);
            let len = input.len();
            match Message::decode(Bytes::from(input)) {
                Ok(m) => assert!(
                    message_heap(&m) <= allowed(len),
                    "{name}: a {len}-byte message decoded to {} heap bytes (allowed {})",
                    message_heap(&m),
                    allowed(len)
                ),
                Err(e) => {
                    assert!(scale > BIG / 64, "{name}: a small message is refused: {e}");
                    assert_eq!(e.condition(), ErrorCondition::DecodeError, "{name}: {e}")
                }
            }
        }
        let data = Bytes::from([0x00, 0x53, 0x75, 0xa0, 0x00].repeat(scale / 5));
        let len = data.len();
        if let Ok(m) = Message::decode(data) {
            assert!(
                message_heap(&m) <= allowed(len),
                "data sections: {len} bytes"
            );
        }
        let mut seq = Vec::new();
        for _ in 0..scale / 4 {
            seq.extend_from_slice(&[0x00, 0x53, 0x76, 0x45]);
        }
        let len = seq.len();
        if let Ok(m) = Message::decode(Bytes::from(seq)) {
            assert!(
                message_heap(&m) <= allowed(len),
                "sequence sections: {len} bytes"
            );
        }
    }
}

#[test]
fn large_hostile_messages_are_refused() {
    for (name, bytes) in hostile_payloads(LARGE) {
        let e = Message::decode(Bytes::from(amqp_value_section(&bytes)))
            .map(drop)
            .expect_err(name);
        assert_eq!(e.condition(), ErrorCondition::DecodeError, "{name}: {e}");
    }
}

#[test]
fn realistic_arrays_decode_under_the_default_budget() {
    // A few MB of ints and longs and three quarters of a million booleans, in the full-width array encodings.
    let ints = Array::new(Type::Int, (0..1i32 << 20).map(Value::Int).collect());
    let longs = Array::new(Type::Long, (0..1i64 << 19).map(Value::Long).collect());
    let bools = Array::new(
        Type::Boolean,
        (0..3 << 18).map(|i| Value::Bool(i % 3 == 0)).collect(),
    );
    for array in [ints, longs, bools] {
        let m = Message::with_body(Value::Array(array.unwrap()));
        let back = Message::decode(m.to_bytes()).expect("a realistic message decodes");
        assert_eq!(back, m);
    }
}
