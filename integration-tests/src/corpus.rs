//! The interop corpus: messages that together use every AMQP type, every header and properties field and
//! all three body kinds, for the type-fidelity cases against every peer.
//!
//! A peer passes a case when each message comes back equal, type included (`Message`'s equality compares
//! values by type, and floats bit for bit). A peer that cannot carry some message (RabbitMQ aborts on an
//! `amqp-value` list of two or more elements, for instance) documents that in its test, which then leaves
//! that message out by name with the reason; nothing is dropped silently.

use bytes::Bytes;
use nucleon_protocol::codec::{
    Array, Decimal128, Decimal32, Decimal64, Described, Descriptor, Map, Symbol, Timestamp, Type,
    Uuid,
};
use nucleon_protocol::frame::MessageId;
use nucleon_protocol::{Message, Value};

/// One value of every scalar type, each at an edge of its range where it has one.
pub fn scalars() -> Vec<(&'static str, Value)> {
    vec![
        ("null", Value::Null),
        ("true", Value::Bool(true)),
        ("false", Value::Bool(false)),
        ("ubyte", Value::Ubyte(u8::MAX)),
        ("ushort", Value::Ushort(u16::MAX)),
        ("uint-small", Value::Uint(7)),
        ("uint", Value::Uint(u32::MAX)),
        ("ulong-small", Value::Ulong(200)),
        ("ulong", Value::Ulong(u64::MAX)),
        ("byte", Value::Byte(i8::MIN)),
        ("short", Value::Short(i16::MIN)),
        ("int-small", Value::Int(-100)),
        ("int", Value::Int(i32::MIN)),
        ("long-small", Value::Long(-100)),
        ("long", Value::Long(i64::MIN)),
        ("float", Value::Float(1.5)),
        ("double", Value::Double(-2.25e300)),
        (
            "decimal32",
            Value::Decimal32(Decimal32([0x22, 0x50, 0x00, 0x01])),
        ),
        (
            "decimal64",
            Value::Decimal64(Decimal64([0x22, 0x38, 0, 0, 0, 0, 0, 0x2a])),
        ),
        (
            "decimal128",
            Value::Decimal128(Decimal128([
                0x22, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x2a,
            ])),
        ),
        ("char", Value::Char('\u{1F600}')),
        ("timestamp", Value::Timestamp(Timestamp(1_700_000_000_123))),
        ("uuid", Value::Uuid(uuid())),
        (
            "binary",
            Value::Binary(Bytes::from_static(b"\x00\x01\xfe\xff")),
        ),
        ("binary-empty", Value::Binary(Bytes::new())),
        (
            "string",
            Value::String("h\u{e9}llo \u{4e16}\u{754c}".into()),
        ),
        ("string-long", Value::String("x".repeat(300))),
        ("symbol", Value::Symbol(Symbol::from("a-symbol"))),
    ]
}

/// Compound values: lists, maps, arrays (of scalars, of lists, of described values) and described values,
/// nested.
pub fn compounds() -> Vec<(&'static str, Value)> {
    let scalar_list: Vec<Value> = scalars().into_iter().map(|(_, v)| v).collect();
    let mut map = Map::new();
    map.insert("string-key", 1i32);
    map.insert(Value::Symbol(Symbol::from("symbol-key")), "v");
    map.insert(Value::Ulong(9), Value::List(vec![Value::Null, true.into()]));
    let mut nested = Map::new();
    nested.insert("inner", map.clone());
    nested.insert("list", Value::List(scalar_list.clone()));
    let ints = Array::new(Type::Int, vec![1i32.into(), 2i32.into(), 3i32.into()]).expect("ints");
    let strings = Array::new(Type::String, vec!["a".into(), "b".into()]).expect("strings");
    let lists = Array::new(
        Type::List,
        vec![Value::List(vec![1i32.into()]), Value::List(vec![])],
    )
    .expect("lists");
    let described_array = Array::described(
        Descriptor::Symbol(Symbol::from("org.example:point")),
        Type::Long,
        vec![Value::Long(1), Value::Long(2)],
    )
    .expect("described array");
    vec![
        ("list-empty", Value::List(vec![])),
        ("list-scalars", Value::List(scalar_list)),
        ("map", Value::Map(map)),
        ("map-nested", Value::Map(nested)),
        ("array-int", Value::Array(ints)),
        ("array-string", Value::Array(strings)),
        ("array-list", Value::Array(lists)),
        ("array-described", Value::Array(described_array)),
        (
            "described-code",
            described(Descriptor::Code(0x0000_4e55_0000_0001), "coded".into()),
        ),
        (
            "described-symbol-list",
            described(
                Descriptor::Symbol(Symbol::from("org.example:pair")),
                Value::List(vec![1i32.into(), "two".into()]),
            ),
        ),
    ]
}

/// A messages with every header and properties field set, annotations, application properties of several
/// types, and a footer.
pub fn full_message() -> Message {
    Message::builder()
        .durable(true)
        .priority(9)
        .ttl(60_000)
        .first_acquirer(true)
        .delivery_count(2)
        .message_id(MessageId::String("id-1".into()))
        .user_id(Bytes::from_static(b"guest"))
        .to("somewhere")
        .subject("a subject")
        .reply_to("replies")
        .correlation_id(MessageId::Uuid(uuid()))
        .content_type(Symbol::from("text/plain"))
        .content_encoding(Symbol::from("identity"))
        .absolute_expiry_time(Timestamp(1_900_000_000_000))
        .creation_time(Timestamp(1_700_000_000_000))
        .group_id("group")
        .group_sequence(3u32)
        .reply_to_group_id("reply-group")
        .message_annotation("x-opt-annotation", "annotated")
        .property("string", "s")
        .property("int", 1i32)
        .property("long", -2i64)
        .property("ulong", 3u64)
        .property("bool", true)
        .property("double", 0.5f64)
        .property("timestamp", Value::Timestamp(Timestamp(1)))
        .property("uuid", Value::Uuid(uuid()))
        .property("null", Value::Null)
        .footer("x-opt-footer", 1i32)
        .body("with every field")
        .build()
}

/// The whole corpus by name: one `amqp-value` message per scalar and compound value, `data` and
/// `amqp-sequence` bodies, message ids of every type, and [`full_message`].
pub fn messages() -> Vec<(String, Message)> {
    let mut out: Vec<(String, Message)> = scalars()
        .into_iter()
        .chain(compounds())
        .map(|(name, v)| (format!("value-{name}"), Message::builder().body(v).build()))
        .collect();
    out.push((
        "data".into(),
        Message::builder()
            .data(Bytes::from_static(b"\x00raw\xff"))
            .build(),
    ));
    out.push((
        "data-two-sections".into(),
        Message::builder()
            .data(Bytes::from_static(b"one"))
            .data(Bytes::from_static(b"two"))
            .build(),
    ));
    out.push((
        "sequence".into(),
        Message::builder()
            .sequence(vec![1i32.into(), "two".into()])
            .build(),
    ));
    for (name, id) in [
        ("id-ulong", MessageId::Ulong(42)),
        ("id-uuid", MessageId::Uuid(uuid())),
        (
            "id-binary",
            MessageId::Binary(Bytes::from_static(b"\x01\x02")),
        ),
    ] {
        out.push((
            name.into(),
            Message::builder()
                .message_id(id.clone())
                .correlation_id(id)
                .body(name)
                .build(),
        ));
    }
    out.push(("full".into(), full_message()));
    out
}

/// The messages of [`messages`] whose names are not in `without`, which must all be names in the corpus
/// (so that a peer's exclusion list cannot go stale silently).
pub fn messages_without(without: &[&str]) -> Vec<(String, Message)> {
    let all = messages();
    for name in without {
        assert!(
            all.iter().any(|(n, _)| n == name),
            "{name} is not in the corpus"
        );
    }
    all.into_iter()
        .filter(|(n, _)| !without.contains(&n.as_str()))
        .collect()
}

fn uuid() -> Uuid {
    Uuid([
        0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0x4d, 0xef, 0x81, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ])
}

fn described(descriptor: Descriptor, value: Value) -> Value {
    Value::Described(Box::new(Described { descriptor, value }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_survives_our_own_encoding() {
        for (name, m) in messages() {
            let back = Message::decode(m.to_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(back, m, "{name}");
        }
    }

    #[test]
    fn names_are_unique_and_exclusions_are_checked() {
        let all = messages();
        let mut names: Vec<&str> = all.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert_eq!(messages_without(&["full"]).len(), all.len() - 1);
        let typo = std::panic::catch_unwind(|| messages_without(&["no-such"]));
        assert!(typo.is_err());
    }
}
