//! Property tests: encoding then decoding gives back the same value, for arbitrary values, messages and
//! performatives, and `encoded_size` always matches the bytes written.

use bytes::Bytes;
use nucleon_protocol::codec::{
    Array, Decimal128, Decimal32, Decimal64, Decode, Descriptor, Encode, Map, Symbol, Timestamp,
    Type, Uuid, Value,
};
use nucleon_protocol::frame::{
    DeliveryState, Disposition, Flow, Performative, Received, Role, Transfer,
};
use nucleon_protocol::{Body, Message};
use proptest::collection::vec;
use proptest::prelude::*;

const SCALARS: [Type; 21] = [
    Type::Null,
    Type::Boolean,
    Type::Ubyte,
    Type::Ushort,
    Type::Uint,
    Type::Ulong,
    Type::Byte,
    Type::Short,
    Type::Int,
    Type::Long,
    Type::Float,
    Type::Double,
    Type::Decimal32,
    Type::Decimal64,
    Type::Decimal128,
    Type::Char,
    Type::Timestamp,
    Type::Uuid,
    Type::Binary,
    Type::String,
    Type::Symbol,
];

fn symbol() -> impl Strategy<Value = Symbol> {
    prop_oneof![
        "[a-z:.-]{0,12}".prop_map(Symbol::from),
        "[a-z]{250,300}".prop_map(Symbol::from),
    ]
}

/// A value of one scalar type, with integers biased towards the boundaries of the compact encodings.
fn scalar(ty: Type) -> BoxedStrategy<Value> {
    match ty {
        Type::Null => Just(Value::Null).boxed(),
        Type::Boolean => any::<bool>().prop_map(Value::Bool).boxed(),
        Type::Ubyte => any::<u8>().prop_map(Value::Ubyte).boxed(),
        Type::Ushort => any::<u16>().prop_map(Value::Ushort).boxed(),
        Type::Uint => prop_oneof![0u32..=256, any::<u32>()]
            .prop_map(Value::Uint)
            .boxed(),
        Type::Ulong => prop_oneof![0u64..=256, any::<u64>()]
            .prop_map(Value::Ulong)
            .boxed(),
        Type::Byte => any::<i8>().prop_map(Value::Byte).boxed(),
        Type::Short => any::<i16>().prop_map(Value::Short).boxed(),
        Type::Int => prop_oneof![-129i32..=128, any::<i32>()]
            .prop_map(Value::Int)
            .boxed(),
        Type::Long => prop_oneof![-129i64..=128, any::<i64>()]
            .prop_map(Value::Long)
            .boxed(),
        Type::Float => any::<u32>()
            .prop_map(|b| Value::Float(f32::from_bits(b)))
            .boxed(),
        Type::Double => any::<u64>()
            .prop_map(|b| Value::Double(f64::from_bits(b)))
            .boxed(),
        Type::Decimal32 => any::<[u8; 4]>()
            .prop_map(|b| Value::Decimal32(Decimal32(b)))
            .boxed(),
        Type::Decimal64 => any::<[u8; 8]>()
            .prop_map(|b| Value::Decimal64(Decimal64(b)))
            .boxed(),
        Type::Decimal128 => any::<[u8; 16]>()
            .prop_map(|b| Value::Decimal128(Decimal128(b)))
            .boxed(),
        Type::Char => any::<char>().prop_map(Value::Char).boxed(),
        Type::Timestamp => any::<i64>()
            .prop_map(|t| Value::Timestamp(Timestamp(t)))
            .boxed(),
        Type::Uuid => any::<[u8; 16]>().prop_map(|b| Value::Uuid(Uuid(b))).boxed(),
        Type::Binary => prop_oneof![vec(any::<u8>(), 0..20), vec(any::<u8>(), 250..300)]
            .prop_map(|b| Value::Binary(Bytes::from(b)))
            .boxed(),
        Type::String => prop_oneof![".{0,10}", "[a-zé]{250,300}"]
            .prop_map(Value::String)
            .boxed(),
        Type::Symbol => symbol().prop_map(Value::Symbol).boxed(),
        Type::List | Type::Map | Type::Array => unreachable!("not a scalar"),
    }
}

fn any_scalar() -> BoxedStrategy<Value> {
    proptest::sample::select(&SCALARS[..])
        .prop_flat_map(scalar)
        .boxed()
}

fn descriptor() -> impl Strategy<Value = Descriptor> {
    prop_oneof![
        any::<u64>().prop_map(Descriptor::Code),
        (0u64..256).prop_map(Descriptor::Code),
        symbol().prop_map(Descriptor::Symbol),
    ]
}

fn scalar_array() -> impl Strategy<Value = Array> {
    (
        proptest::sample::select(&SCALARS[..]),
        proptest::option::of(descriptor()),
    )
        .prop_flat_map(|(ty, d)| {
            vec(scalar(ty), 0..8).prop_map(move |items| match d.clone() {
                Some(d) => Array::described(d, ty, items).expect("homogeneous"),
                None => Array::new(ty, items).expect("homogeneous"),
            })
        })
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![any_scalar(), scalar_array().prop_map(Value::Array)];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..8).prop_map(Value::List),
            vec((inner.clone(), inner.clone()), 0..6)
                .prop_map(|e| Value::Map(Map::from_entries(e))),
            (descriptor(), inner.clone()).prop_map(|(d, v)| Value::described(d, v)),
            vec(vec(inner.clone(), 0..4), 0..4).prop_map(|lists| {
                let items = lists.into_iter().map(Value::List).collect();
                Value::Array(Array::new(Type::List, items).expect("lists"))
            }),
            vec(scalar_array(), 0..4).prop_map(|arrays| {
                let items = arrays.into_iter().map(Value::Array).collect();
                Value::Array(Array::new(Type::Array, items).expect("arrays"))
            }),
            // A big list, to cross into the 32-bit forms.
            vec(inner, 40..60).prop_map(Value::List),
        ]
    })
}

fn small_map() -> impl Strategy<Value = Map> {
    vec((symbol().prop_map(Value::Symbol), value()), 0..4).prop_map(Map::from_entries)
}

fn message() -> impl Strategy<Value = Message> {
    let body = prop_oneof![
        Just(Body::Empty),
        vec(vec(any::<u8>(), 0..300).prop_map(Bytes::from), 1..3).prop_map(Body::Data),
        vec(vec(value(), 0..4), 1..3).prop_map(Body::Sequence),
        value().prop_map(Body::Value),
    ];
    (
        (
            any::<bool>(),
            any::<u8>(),
            proptest::option::of(any::<u32>()),
            any::<u32>(),
        ),
        (
            proptest::option::of("[a-z/]{0,20}"),
            proptest::option::of(".{0,10}"),
            proptest::option::of(any::<u64>()),
            proptest::option::of(any::<i64>()),
        ),
        vec((".{0,8}", any_scalar()), 0..5),
        proptest::option::of(small_map()),
        proptest::option::of(small_map()),
        body,
    )
        .prop_map(|(h, p, props, ma, footer, body)| {
            let mut b = Message::builder()
                .durable(h.0)
                .priority(h.1)
                .delivery_count(h.3);
            if let Some(ttl) = h.2 {
                b = b.ttl(ttl);
            }
            if let Some(to) = p.0 {
                b = b.to(to);
            }
            if let Some(s) = p.1 {
                b = b.subject(s);
            }
            if let Some(id) = p.2 {
                b = b.message_id(id).correlation_id(format!("c{id}"));
            }
            if let Some(t) = p.3 {
                b = b.creation_time(Timestamp(t));
            }
            for (k, v) in props {
                b = b.property(k, v);
            }
            let mut m = b.build();
            if let Some(ma) = ma {
                *m.message_annotations_mut() = ma;
            }
            if let Some(f) = footer {
                *m.footer_mut() = f;
            }
            m.set_body(body);
            m
        })
}

fn performative() -> impl Strategy<Value = Performative> {
    prop_oneof![
        (
            any::<u32>(),
            proptest::option::of(any::<u32>()),
            proptest::option::of(vec(any::<u8>(), 0..32)),
            proptest::option::of(any::<bool>()),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(|(handle, id, tag, settled, more, aborted)| {
                Transfer {
                    handle,
                    delivery_id: id,
                    delivery_tag: tag.map(Bytes::from),
                    message_format: Some(0),
                    settled,
                    more,
                    aborted,
                    ..Transfer::default()
                }
                .into()
            }),
        (any::<u32>(), any::<u32>(), any::<bool>(), any::<u32>()).prop_map(
            |(window, credit, drain, count)| {
                Flow {
                    next_incoming_id: Some(window / 2),
                    incoming_window: window,
                    next_outgoing_id: count,
                    outgoing_window: window,
                    handle: Some(count % 7),
                    delivery_count: Some(count),
                    link_credit: Some(credit),
                    drain,
                    ..Flow::default()
                }
                .into()
            }
        ),
        (
            any::<bool>(),
            any::<u32>(),
            proptest::option::of(any::<u32>()),
            any::<u64>()
        )
            .prop_map(|(receiver, first, last, offset)| {
                Disposition {
                    role: if receiver {
                        Role::Receiver
                    } else {
                        Role::Sender
                    },
                    first,
                    last,
                    settled: receiver,
                    state: Some(DeliveryState::Received(Received {
                        section_number: first,
                        section_offset: offset,
                    })),
                    batchable: false,
                }
                .into()
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn values_round_trip(v in value()) {
        let bytes = v.to_bytes();
        prop_assert_eq!(bytes.len(), v.encoded_size());
        prop_assert_eq!(Value::decode_from(bytes).expect("decodes"), v);
    }

    #[test]
    fn messages_round_trip(m in message()) {
        let bytes = m.to_bytes();
        prop_assert_eq!(bytes.len(), m.encoded_size());
        prop_assert_eq!(Message::decode(bytes).expect("decodes"), m);
    }

    #[test]
    fn performatives_round_trip(p in performative()) {
        let bytes = p.to_bytes();
        prop_assert_eq!(bytes.len(), p.encoded_size());
        prop_assert_eq!(Performative::decode_from(bytes).expect("decodes"), p);
    }
}
