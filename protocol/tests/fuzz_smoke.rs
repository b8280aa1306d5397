//! The fuzz entry points in `nucleon_protocol::fuzzing`, run on stable Rust: every file of the committed seed
//! corpus in `fuzz/corpus/`, deterministic mutations of each (every bit flip, every truncation, and seeded random
//! overwrites and insertions), and hand-made inputs whose size or count fields make huge claims.
//!
//! The seeds are made by [`seeds`] below from the crate's own types, plus a few hand-written encodings in forms
//! the encoder never picks. `committed_corpus_holds_every_seed` checks that the committed files are current; after
//! a deliberate change of encoding, rewrite them with
//! `NUCLEON_BLESS_CORPUS=1 cargo test -p nucleon-protocol --test fuzz_smoke`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nucleon_protocol::codec::{
    Array, Decimal128, Decimal32, Decimal64, DecodeErrorKind, Decoder, Descriptor, Encode, Map,
    Symbol, Timestamp, Type, Uuid, Value, DEFAULT_MAX_DEPTH,
};
use nucleon_protocol::frame::{
    Accepted, AmqpValue, ApplicationProperties, Attach, Begin, Close, DeliveryState, Detach,
    Disposition, End, Error, ErrorCondition, Flow, Frame, FrameBody, Header, Modified, Open,
    Outcome, Performative, Properties, ProtocolHeader, Received, ReceiverSettleMode, Rejected,
    Released, Role, SaslCode, SaslFrame, SaslInit, SaslMechanisms, SaslOutcome, SaslResponse,
    SenderSettleMode, Source, Target, TerminusDurability, TerminusExpiryPolicy, Transfer,
};
use nucleon_protocol::{fuzzing, Message};

/// A fuzz entry point: takes any bytes, panics only on a codec bug.
type EntryPoint = fn(&[u8]);

/// The fuzz targets: corpus directory name and entry point.
const TARGETS: [(&str, EntryPoint); 3] = [
    ("value", fuzzing::decode_value),
    ("frames", fuzzing::decode_frames),
    ("message", fuzzing::decode_message),
];

/// Random mutations made from each seed, of each kind (single and stacked edits).
const RANDOM_MUTATIONS: usize = 3000;

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// Every file in a target's corpus directory, sorted by name so runs are repeatable.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the fuzz corpus {}: {e}", dir.display()));
    let mut files: Vec<_> = entries
        .map(|entry| {
            let path = entry.expect("corpus directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("corpus file"))
        })
        .collect();
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------------------------------
// The seed corpus.

/// The seed files of every target: (target, file name, bytes).
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let mut all = Vec::new();
    for (name, bytes) in value_seeds() {
        all.push(("value", name, bytes));
    }
    for (name, bytes) in frame_seeds() {
        all.push(("frames", name, bytes));
    }
    for (name, bytes) in message_seeds() {
        all.push(("message", name, bytes));
    }
    all
}

fn concat(values: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for v in values {
        v.encode(&mut out);
    }
    out
}

/// A `list32`, `map32` or `array32` header and body: the 32-bit forms the encoder only uses for large values.
fn wide(code: u8, count: u32, body: &[u8]) -> Vec<u8> {
    let mut out = vec![code];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(&count.to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn map(entries: Vec<(Value, Value)>) -> Map {
    Map::from_entries(entries)
}

fn sym(s: &'static str) -> Symbol {
    Symbol::from_static(s)
}

fn value_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let scalars = concat(&[
        Value::Null,
        Value::Bool(true),
        Value::Bool(false),
        Value::Ubyte(0xa5),
        Value::Ushort(0xbeef),
        Value::Uint(0),
        Value::Uint(7),
        Value::Uint(0xdead_beef),
        Value::Ulong(0),
        Value::Ulong(200),
        Value::Ulong(u64::MAX),
        Value::Byte(-3),
        Value::Short(-30_000),
        Value::Int(-100),
        Value::Int(i32::MIN),
        Value::Long(42),
        Value::Long(-1_000_000_000_000),
    ]);
    let floats_and_friends = concat(&[
        Value::Float(1.5),
        Value::Float(f32::NAN),
        Value::Double(-0.0),
        Value::Double(std::f64::consts::PI),
        Value::Decimal32(Decimal32([0x22, 0x50, 0x00, 0x01])),
        Value::Decimal64(Decimal64([0x22, 0x38, 0, 0, 0, 0, 0, 0x0c])),
        Value::Decimal128(Decimal128([
            0x22, 0x08, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01,
        ])),
        Value::Char('é'),
        Value::Char('🦀'),
        Value::Timestamp(Timestamp(1_700_000_000_000)),
        Value::Uuid(Uuid(
            *b"\x12\x34\x56\x78\x9a\xbc\x4d\xef\x81\x23\x45\x67\x89\xab\xcd\xef",
        )),
    ]);
    let text = concat(&[
        Value::from("hello, wörld"),
        Value::from(""),
        Value::Symbol(sym("amqp:decode-error")),
        Value::from(&b"\x00\x01binary\xff"[..]),
        Value::from("x".repeat(300).as_str()),
    ]);
    let list = Value::List(vec![
        Value::Uint(1),
        Value::from("two"),
        Value::Null,
        Value::List(vec![]),
        Value::List(vec![Value::Bool(true), Value::Double(2.5)]),
    ]);
    let map_value = Value::Map(map(vec![
        (Value::from("count"), Value::Int(3)),
        (Value::Symbol(sym("x-opt-key")), Value::from("v")),
        (Value::Ulong(9), Value::Map(Map::new())),
        (Value::from("nested"), Value::List(vec![Value::Long(-1)])),
    ]));
    let arrays = concat(&[
        Value::Array(
            Array::new(
                Type::Int,
                vec![Value::Int(1), Value::Int(-2), Value::Int(3)],
            )
            .unwrap(),
        ),
        Value::Array(Array::of_symbols([sym("PLAIN"), sym("ANONYMOUS")])),
        Value::Array(
            Array::new(Type::Boolean, vec![Value::Bool(true), Value::Bool(false)]).unwrap(),
        ),
        Value::Array(Array::new(Type::String, vec![]).unwrap()),
    ]);
    let array_of_arrays = Value::Array(
        Array::new(
            Type::Array,
            vec![
                Value::Array(
                    Array::new(Type::Ubyte, vec![Value::Ubyte(1), Value::Ubyte(2)]).unwrap(),
                ),
                Value::Array(Array::new(Type::Ushort, vec![Value::Ushort(3)]).unwrap()),
            ],
        )
        .unwrap(),
    );
    let array_of_compounds = concat(&[
        Value::Array(
            Array::new(
                Type::List,
                vec![Value::List(vec![Value::Uint(1)]), Value::List(vec![])],
            )
            .unwrap(),
        ),
        Value::Array(
            Array::new(
                Type::Map,
                vec![Value::Map(map(vec![(Value::from("k"), Value::Null)]))],
            )
            .unwrap(),
        ),
    ]);
    let described = concat(&[
        Value::described(
            Descriptor::Symbol(sym("com.example:point")),
            Value::List(vec![Value::Double(1.0), Value::Double(-2.0)]),
        ),
        Value::described(
            Descriptor::Code(0x0000_0137_0000_0001),
            Value::from("tagged"),
        ),
        Value::Array(
            Array::described(
                Descriptor::Code(0x77),
                Type::String,
                vec![Value::from("a"), Value::from("b")],
            )
            .unwrap(),
        ),
    ]);
    // Forms the encoder never picks: 32-bit sizes for small values, full-width integers, the 0x56 boolean and a
    // full-width descriptor code.
    let list_body: Vec<u8> = [
        &[0x70, 0, 0, 0, 5][..],
        &[0x80, 0, 0, 0, 0, 0, 0, 0, 7],
        &[0x56, 0x01],
        &[0xb1, 0, 0, 0, 2, b'h', b'i'],
        &[0xb3, 0, 0, 0, 1, b'x'],
        &[0xb0, 0, 0, 0, 1, 0xff],
        &[0x00, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x2a, 0x45],
    ]
    .concat();
    let mut wide_forms = wide(0xd0, 7, &list_body);
    wide_forms.extend(wide(0xd1, 2, &[0xa1, 1, b'k', 0x71, 0, 0, 0, 1]));
    wide_forms.extend(wide(0xf0, 2, &[0x71, 0, 0, 0, 1, 0, 0, 0, 2]));
    // Arrays whose elements take no bytes at all: the case the decoder must budget.
    let zero_width = [
        &[0xe0, 0x02, 0x03, 0x40][..], // three nulls
        &[0xe0, 0x02, 0x02, 0x41],     // two trues
        &[0xe0, 0x02, 0x02, 0x43],     // two uint zeros
        &[0xe0, 0x02, 0x02, 0x45],     // two empty lists
    ]
    .concat();
    vec![
        ("scalars.bin", scalars),
        ("floats_decimals_chars.bin", floats_and_friends),
        ("strings_symbols_binary.bin", text),
        ("list.bin", list.to_bytes().to_vec()),
        ("map.bin", map_value.to_bytes().to_vec()),
        ("arrays.bin", arrays),
        ("array_of_arrays.bin", array_of_arrays.to_bytes().to_vec()),
        ("array_of_lists_and_maps.bin", array_of_compounds),
        ("described.bin", described),
        ("wide_forms.bin", wide_forms),
        ("zero_width_arrays.bin", zero_width),
    ]
}

fn amqp_frame(channel: u16, performative: impl Into<Performative>, payload: &[u8]) -> Frame {
    Frame {
        channel,
        body: FrameBody::Amqp {
            performative: performative.into(),
            payload: Bytes::copy_from_slice(payload),
        },
    }
}

fn sasl_frame(body: impl Into<SaslFrame>) -> Frame {
    Frame {
        channel: 0,
        body: FrameBody::Sasl(body.into()),
    }
}

/// A byte stream: an optional protocol header, then the frames.
fn stream(header: Option<ProtocolHeader>, frames: &[Frame]) -> Vec<u8> {
    let mut out = header.map_or(Vec::new(), |h| h.to_bytes().to_vec());
    for f in frames {
        f.encode(&mut out);
    }
    out
}

/// Replaces the numeric descriptor that starts `encoded` (`00 53 xx`) with the symbolic one.
fn with_symbolic_descriptor(encoded: &[u8], symbol: &str) -> Vec<u8> {
    assert_eq!(
        &encoded[..2],
        &[0x00, 0x53],
        "expected a small numeric descriptor"
    );
    let mut out = vec![0x00, 0xa3, symbol.len() as u8];
    out.extend_from_slice(symbol.as_bytes());
    out.extend_from_slice(&encoded[3..]);
    out
}

/// A frame header for `body` on `channel`, with `extended` bytes of extended header.
fn raw_frame(channel: u16, extended: &[u8], body: &[u8]) -> Vec<u8> {
    assert_eq!(extended.len() % 4, 0);
    let size = 8 + extended.len() + body.len();
    let mut out = (size as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&[2 + (extended.len() / 4) as u8, 0]);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(extended);
    out.extend_from_slice(body);
    out
}

fn typical_message() -> Message {
    Message::builder()
        .durable(true)
        .message_id("order-17")
        .to("queue://orders")
        .subject("created")
        .content_type(sym("application/json"))
        .creation_time(Timestamp(1_700_000_000_123))
        .property("tenant", "acme")
        .property("attempt", 2i32)
        .data(&b"{\"id\":17,\"items\":[\"apple\",\"pear\"]}"[..])
        .build()
}

fn frame_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let open = Open {
        container_id: "nucleon-client-1".into(),
        hostname: Some("broker.example".into()),
        max_frame_size: 65_536,
        channel_max: 255,
        idle_time_out: Some(30_000),
        offered_capabilities: Some(vec![sym("ANONYMOUS-RELAY")]),
        properties: Some(map(vec![(
            Value::Symbol(sym("product")),
            Value::from("nucleon"),
        )])),
        ..Open::default()
    };
    let begin = Begin {
        remote_channel: Some(0),
        next_outgoing_id: 1,
        incoming_window: 2048,
        outgoing_window: 2048,
        handle_max: 1023,
        ..Begin::default()
    };
    let sender = Attach {
        name: "sender-1".into(),
        handle: 0,
        role: Role::Sender,
        snd_settle_mode: SenderSettleMode::Unsettled,
        source: Some(Source::with_address("client")),
        target: Some(Target::with_address("queue://orders")),
        initial_delivery_count: Some(0),
        max_message_size: Some(1 << 20),
        ..Attach::default()
    };
    let receiver = Attach {
        name: "receiver-1".into(),
        handle: 1,
        role: Role::Receiver,
        rcv_settle_mode: ReceiverSettleMode::Second,
        source: Some(Source {
            address: Some("topic://prices".into()),
            durable: TerminusDurability::UnsettledState,
            expiry_policy: TerminusExpiryPolicy::Never,
            timeout: 60,
            distribution_mode: Some(sym("copy")),
            filter: Some(map(vec![(
                Value::Symbol(sym("apache.org:selector-filter:string")),
                Value::described(
                    Descriptor::Code(0x0000_468c_0000_0004),
                    Value::from("price > 10"),
                ),
            )])),
            default_outcome: Some(Outcome::Released(Released {})),
            outcomes: Some(vec![sym("amqp:accepted:list"), sym("amqp:released:list")]),
            ..Source::default()
        }),
        target: Some(Target {
            dynamic: true,
            capabilities: Some(vec![sym("temporary-queue")]),
            ..Target::default()
        }),
        unsettled: Some(map(vec![(
            Value::from(&b"tag-1"[..]),
            Value::described(Descriptor::Code(0x24), Value::List(vec![])),
        )])),
        ..Attach::default()
    };
    let flow = Flow {
        next_incoming_id: Some(1),
        incoming_window: 2048,
        next_outgoing_id: 1,
        outgoing_window: 2048,
        handle: Some(1),
        delivery_count: Some(0),
        link_credit: Some(100),
        drain: true,
        ..Flow::default()
    };
    let transfer = Transfer {
        handle: 0,
        delivery_id: Some(0),
        delivery_tag: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 1])),
        message_format: Some(0),
        settled: Some(false),
        ..Transfer::default()
    };
    let message = typical_message().to_bytes();
    let (first_half, second_half) = message.split_at(message.len() / 2);
    let partial_first = Transfer {
        more: true,
        ..transfer.clone()
    };
    let partial_rest = Transfer {
        handle: 0,
        rcv_settle_mode: Some(ReceiverSettleMode::Second),
        state: Some(DeliveryState::Received(Received {
            section_number: 0,
            section_offset: 12,
        })),
        ..Transfer::default()
    };
    let error = Error {
        condition: ErrorCondition::ResourceLimitExceeded,
        description: Some("too many links".into()),
        info: Some(map(vec![(Value::Symbol(sym("limit")), Value::Uint(64))])),
    };
    let dispositions = [
        Disposition {
            role: Role::Receiver,
            first: 0,
            last: Some(9),
            settled: true,
            state: Some(DeliveryState::Accepted(Accepted {})),
            ..Disposition::default()
        },
        Disposition {
            role: Role::Receiver,
            first: 10,
            state: Some(DeliveryState::Rejected(Rejected {
                error: Some(Error::new(ErrorCondition::DecodeError, "bad payload")),
            })),
            ..Disposition::default()
        },
        Disposition {
            role: Role::Receiver,
            first: 11,
            state: Some(DeliveryState::Modified(Modified {
                delivery_failed: true,
                undeliverable_here: true,
                message_annotations: Some(map(vec![(
                    Value::Symbol(sym("x-opt-reason")),
                    Value::from("retry"),
                )])),
            })),
            ..Disposition::default()
        },
        Disposition {
            role: Role::Sender,
            first: 12,
            settled: true,
            state: Some(DeliveryState::Released(Released {})),
            batchable: true,
            ..Disposition::default()
        },
    ];
    let heartbeat = Frame {
        channel: 0,
        body: FrameBody::Empty,
    };
    let begin_bytes = begin.to_bytes();
    let flow_bytes = flow.to_bytes();
    vec![
        (
            "open.bin",
            stream(Some(ProtocolHeader::AMQP), &[amqp_frame(0, open, &[])]),
        ),
        (
            "sasl_server.bin",
            stream(
                Some(ProtocolHeader::SASL),
                &[
                    sasl_frame(SaslMechanisms {
                        sasl_server_mechanisms: vec![sym("PLAIN"), sym("ANONYMOUS")],
                    }),
                    sasl_frame(SaslOutcome {
                        code: SaslCode::Ok,
                        additional_data: Some(Bytes::from_static(b"welcome")),
                    }),
                ],
            ),
        ),
        (
            "sasl_client.bin",
            stream(
                Some(ProtocolHeader::SASL),
                &[
                    sasl_frame(SaslInit {
                        mechanism: sym("PLAIN"),
                        initial_response: Some(Bytes::from_static(b"\0user\0secret")),
                        hostname: Some("broker.example".into()),
                    }),
                    sasl_frame(SaslResponse {
                        response: Bytes::from_static(b"more"),
                    }),
                ],
            ),
        ),
        (
            "begin_attach.bin",
            stream(
                None,
                &[amqp_frame(1, begin, &[]), amqp_frame(1, sender, &[])],
            ),
        ),
        (
            "attach_receiver.bin",
            stream(None, &[amqp_frame(1, receiver, &[])]),
        ),
        (
            "flow_transfer.bin",
            stream(
                None,
                &[amqp_frame(1, flow, &[]), amqp_frame(1, transfer, &message)],
            ),
        ),
        (
            "transfer_in_two_parts.bin",
            stream(
                None,
                &[
                    amqp_frame(1, partial_first, first_half),
                    amqp_frame(1, partial_rest, second_half),
                ],
            ),
        ),
        (
            "dispositions.bin",
            stream(None, &dispositions.map(|d| amqp_frame(1, d, &[]))),
        ),
        (
            "detach_end_close.bin",
            stream(
                None,
                &[
                    amqp_frame(
                        1,
                        Detach {
                            handle: 0,
                            closed: true,
                            error: Some(error.clone()),
                        },
                        &[],
                    ),
                    amqp_frame(1, End { error: None }, &[]),
                    amqp_frame(0, Close { error: Some(error) }, &[]),
                ],
            ),
        ),
        (
            "heartbeats.bin",
            stream(Some(ProtocolHeader::AMQP), &[heartbeat.clone(), heartbeat]),
        ),
        // Forms our encoder never writes: an extended header, and a symbolic performative descriptor.
        (
            "extended_header.bin",
            raw_frame(3, &[0xde, 0xad, 0xbe, 0xef], &begin_bytes),
        ),
        (
            "symbolic_descriptor.bin",
            raw_frame(2, &[], &with_symbolic_descriptor(&flow_bytes, Flow::SYMBOL)),
        ),
    ]
}

fn message_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let full = Message::builder()
        .durable(true)
        .priority(9)
        .ttl(60_000)
        .first_acquirer(true)
        .delivery_count(2)
        .delivery_annotation("x-opt-trace", "hop-1")
        .message_annotation("x-opt-partition", 3i32)
        .message_id(Uuid(
            *b"\x0f\x1e\x2d\x3c\x4b\x5a\x49\x78\x87\x96\xa5\xb4\xc3\xd2\xe1\xf0",
        ))
        .user_id(Bytes::from_static(b"alice"))
        .to("queue://a")
        .subject("s")
        .reply_to("queue://replies")
        .correlation_id(Bytes::from_static(&[1, 2, 3]))
        .content_type(sym("text/plain"))
        .content_encoding(sym("gzip"))
        .absolute_expiry_time(Timestamp(1_700_000_060_000))
        .creation_time(Timestamp(1_700_000_000_000))
        .group_id("g")
        .group_sequence(5u32)
        .reply_to_group_id("rg")
        .property("string", "v")
        .property("long", -5i64)
        .property("double", 0.25f64)
        .property("bool", true)
        .property("binary", Value::from(&b"\x00\xff"[..]))
        .data(&b"payload"[..])
        .footer("x-opt-hash", Value::Ulong(0x0123_4567_89ab_cdef))
        .build();
    let sequence = Message::builder()
        .message_id(7u64)
        .sequence(vec![Value::Int(1), Value::from("two")])
        .sequence(vec![Value::List(vec![Value::Null])])
        .build();
    let multi_data = Message::builder()
        .data(&b"part one "[..])
        .data(&b""[..])
        .data(vec![0xab; 300])
        .build();
    let map_body = Message::builder()
        .property("kind", "snapshot")
        .body(Value::Map(map(vec![
            (Value::from("price"), Value::Double(10.25)),
            (Value::from("ts"), Value::Timestamp(Timestamp(1))),
        ])))
        .build();
    let header_only = Message::builder().durable(true).ttl(1000).build();
    // Sections with symbolic descriptors, as some peers write them.
    let header = Header {
        durable: true,
        ..Header::default()
    };
    let properties = Properties {
        message_id: Some("sym-1".into()),
        to: Some("queue://b".into()),
        ..Properties::default()
    };
    let app = ApplicationProperties(map(vec![(Value::from("k"), Value::Uint(1))]));
    let symbolic = [
        with_symbolic_descriptor(&header.to_bytes(), Header::SYMBOL),
        with_symbolic_descriptor(&properties.to_bytes(), Properties::SYMBOL),
        with_symbolic_descriptor(&app.to_bytes(), ApplicationProperties::SYMBOL),
        with_symbolic_descriptor(&AmqpValue(Value::from("hi")).to_bytes(), AmqpValue::SYMBOL),
    ]
    .concat();
    vec![
        (
            "value_body.bin",
            Message::with_body("hello").to_bytes().to_vec(),
        ),
        ("typical.bin", typical_message().to_bytes().to_vec()),
        ("all_sections.bin", full.to_bytes().to_vec()),
        ("sequence_body.bin", sequence.to_bytes().to_vec()),
        ("multiple_data_sections.bin", multi_data.to_bytes().to_vec()),
        ("map_body.bin", map_body.to_bytes().to_vec()),
        ("header_only.bin", header_only.to_bytes().to_vec()),
        ("symbolic_descriptors.bin", symbolic),
    ]
}

#[test]
fn committed_corpus_holds_every_seed() {
    let bless = std::env::var_os("NUCLEON_BLESS_CORPUS").is_some();
    for (target, name, bytes) in seeds() {
        let path = corpus_dir(target).join(name);
        if bless {
            std::fs::create_dir_all(corpus_dir(target)).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let committed = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run with NUCLEON_BLESS_CORPUS=1 to write the seeds",
                path.display()
            )
        });
        assert_eq!(
            committed,
            bytes,
            "{} is stale; run with NUCLEON_BLESS_CORPUS=1 to rewrite the seeds",
            path.display()
        );
    }
}

#[test]
fn seeds_decode_as_their_target_expects() {
    for (name, bytes) in value_seeds() {
        let mut dec = Decoder::new(Bytes::from(bytes));
        while !dec.is_empty() {
            dec.decode_value()
                .unwrap_or_else(|e| panic!("value seed {name}: {e}"));
        }
    }
    for (name, bytes) in message_seeds() {
        Message::decode(Bytes::from(bytes)).unwrap_or_else(|e| panic!("message seed {name}: {e}"));
    }
    for (name, bytes) in frame_seeds() {
        let stream = Bytes::from(bytes);
        let mut at = if stream.starts_with(b"AMQP") { 8 } else { 0 };
        let mut frames = 0;
        while at < stream.len() {
            let size = u32::from_be_bytes(stream[at..at + 4].try_into().unwrap()) as usize;
            Frame::decode(stream.slice(at..at + size), at)
                .unwrap_or_else(|e| panic!("frame seed {name}: {e}"));
            at += size;
            frames += 1;
        }
        assert!(frames > 0, "frame seed {name} holds no frame");
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Mutations.

/// Marsaglia's xorshift64: a small, seeded, repeatable source of mutations.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A random byte, or half the time one that means something to the codec: a boundary value or a format code.
    fn byte(&mut self) -> u8 {
        const INTERESTING: [u8; 16] = [
            0x00, 0x01, 0x02, 0x04, 0x40, 0x45, 0x53, 0x7f, 0x80, 0xa1, 0xb0, 0xc0, 0xd0, 0xe0,
            0xf0, 0xff,
        ];
        let r = self.next();
        if r & 1 == 0 {
            INTERESTING[(r >> 8) as usize % INTERESTING.len()]
        } else {
            (r >> 8) as u8
        }
    }
}

/// One random edit of `m`: overwrite 1-4 bytes, insert 1-8 bytes, delete 1-8 bytes, or flip one bit.
fn random_edit(m: &mut Vec<u8>, rng: &mut XorShift) {
    match rng.below(4) {
        0 if !m.is_empty() => {
            for _ in 0..=rng.below(4) {
                let at = rng.below(m.len());
                m[at] = rng.byte();
            }
        }
        1 => {
            let at = rng.below(m.len() + 1);
            let insert: Vec<u8> = (0..=rng.below(8)).map(|_| rng.byte()).collect();
            m.splice(at..at, insert);
        }
        2 if !m.is_empty() => {
            let at = rng.below(m.len());
            let len = (1 + rng.below(8)).min(m.len() - at);
            m.drain(at..at + len);
        }
        _ if !m.is_empty() => {
            let at = rng.below(m.len());
            m[at] ^= 1 << rng.below(8);
        }
        _ => m.push(rng.byte()),
    }
}

/// Every single-bit flip and every truncation of `seed`, then seeded random mutations: `RANDOM_MUTATIONS` with one
/// edit each and as many again with two to five edits stacked.
fn mutations(seed: &[u8], rng: &mut XorShift) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..seed.len() * 8 {
        let mut m = seed.to_vec();
        m[i / 8] ^= 1 << (i % 8);
        out.push(m);
    }
    for len in 0..seed.len() {
        out.push(seed[..len].to_vec());
    }
    for stacked in [false, true] {
        for _ in 0..RANDOM_MUTATIONS {
            let mut m = seed.to_vec();
            let edits = if stacked { 2 + rng.below(4) } else { 1 };
            for _ in 0..edits {
                random_edit(&mut m, rng);
            }
            out.push(m);
        }
    }
    out
}

/// Runs `input` through every fuzz entry point; a panic is reported with the input that caused it.
fn run_all(input: &[u8], origin: &str) {
    for (target, entry) in TARGETS {
        if catch_unwind(AssertUnwindSafe(|| entry(input))).is_err() {
            panic!("fuzzing::{target} panicked (see above) on {origin}: {input:02x?}");
        }
    }
}

#[test]
fn corpus_and_its_mutations_decode_without_panics_and_round_trip() {
    let started = Instant::now();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut inputs = 0usize;
    for (target, _) in TARGETS {
        let files = corpus(target);
        assert!(
            files.len() >= 5,
            "the {target} corpus has only {} files",
            files.len()
        );
        for (name, seed) in files {
            run_all(&seed, &format!("{target}/{name}"));
            inputs += 1;
            for (i, m) in mutations(&seed, &mut rng).iter().enumerate() {
                run_all(m, &format!("mutation {i} of {target}/{name}"));
                inputs += 1;
            }
        }
    }
    println!(
        "fuzz smoke: {inputs} inputs through {} entry points in {:.2?}",
        TARGETS.len(),
        started.elapsed()
    );
    assert!(inputs >= 50_000, "only {inputs} inputs were generated");
}

// ---------------------------------------------------------------------------------------------------------------
// Adversarial size and count claims.

/// A value nested `depth` levels deep in `list32`s, each holding the next: every size field is honest.
fn nested_lists(depth: usize) -> Vec<u8> {
    let mut v = vec![0x45];
    for _ in 0..depth {
        v = wide(0xd0, 1, &v);
    }
    v
}

/// `depth` described values, each describing the next, around a null.
fn nested_described(depth: usize) -> Vec<u8> {
    let mut v = [0x00, 0x53, 0x01].repeat(depth);
    v.push(0x40);
    v
}

/// An `array32` of `count` `array8`s, each claiming 255 nulls in three bytes.
fn array_of_null_arrays(count: u32) -> Vec<u8> {
    let mut body = vec![0xe0];
    for _ in 0..count {
        body.extend_from_slice(&[0x02, 0xff, 0x40]);
    }
    wide(0xf0, count, &body)
}

#[test]
fn huge_size_and_count_claims_fail_fast_without_allocating() {
    let out_of_bounds =
        |kind: &DecodeErrorKind| matches!(kind, DecodeErrorKind::LengthOutOfBounds { .. });
    let odd_map = |kind: &DecodeErrorKind| matches!(kind, DecodeErrorKind::OddMapCount(_));
    let too_deep =
        |kind: &DecodeErrorKind| *kind == DecodeErrorKind::DepthLimitExceeded(DEFAULT_MAX_DEPTH);
    type Check = fn(&DecodeErrorKind) -> bool;
    let cases: Vec<(&str, Vec<u8>, Check)> = vec![
        (
            "list32 claiming 0xffffffff elements",
            wide(0xd0, u32::MAX, &[0x40; 16]),
            out_of_bounds,
        ),
        (
            "list32 claiming a 4 GiB size",
            [&[0xd0, 0xff, 0xff, 0xff, 0xff][..], &[0xff; 8]].concat(),
            out_of_bounds,
        ),
        (
            "array32 of 0xffffffff nulls",
            wide(0xf0, u32::MAX, &[0x40]),
            out_of_bounds,
        ),
        (
            "array32 of 0xffffffff empty lists",
            wide(0xf0, u32::MAX, &[0x45]),
            out_of_bounds,
        ),
        (
            "array32 of 0xffffffff uints",
            wide(0xf0, u32::MAX, &[0x70, 0, 0, 0, 1]),
            out_of_bounds,
        ),
        (
            "map32 claiming 0xffffffff elements",
            wide(0xd1, u32::MAX, &[0x40; 16]),
            out_of_bounds,
        ),
        (
            "map8 with an odd count",
            vec![0xc1, 0x04, 0x03, 0x40, 0x40, 0x40],
            odd_map,
        ),
        (
            "map32 with an odd count",
            wide(0xd1, 3, &[0x40; 3]),
            odd_map,
        ),
        (
            "vbin32 claiming 0xffffffff bytes",
            vec![0xb0, 0xff, 0xff, 0xff, 0xff, 0x00],
            out_of_bounds,
        ),
        ("lists nested 10 000 deep", nested_lists(10_000), too_deep),
        (
            "described values nested 10 000 deep",
            nested_described(10_000),
            too_deep,
        ),
        (
            "20 000 arrays of 255 nulls in 3 bytes each",
            array_of_null_arrays(20_000),
            out_of_bounds,
        ),
    ];
    for (what, bytes, expected) in cases {
        let started = Instant::now();
        let err = Decoder::new(Bytes::from(bytes.clone()))
            .decode_value()
            .expect_err(what);
        assert!(expected(&err.kind), "{what}: unexpected error {err}");
        // The same bytes as the body of a message, and as the whole input of every fuzz entry point.
        let section = [&[0x00, 0x53, 0x77][..], &bytes].concat();
        let err = Message::decode(Bytes::from(section)).expect_err(what);
        assert!(
            expected(&err.kind),
            "{what} in a message: unexpected error {err}"
        );
        run_all(&bytes, what);
        // Generous: each of these takes microseconds; a decoder that trusted the claim would allocate gigabytes
        // (or abort) and a quadratic one would take far longer.
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{what} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn frame_stream_with_a_huge_frame_size_ends_cleanly() {
    let huge_frame_header = [0xff, 0xff, 0xff, 0xff, 0x02, 0x00, 0x00, 0x01];
    let input = [
        &ProtocolHeader::AMQP.to_bytes()[..],
        &huge_frame_header,
        &[0x40; 32],
    ]
    .concat();
    let err = Frame::decode(Bytes::copy_from_slice(&input[8..]), 8).expect_err("size mismatch");
    assert!(matches!(err.kind, DecodeErrorKind::Framing(_)), "{err}");
    run_all(&input, "a frame header claiming 4 GiB");
}
