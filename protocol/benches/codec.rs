//! Criterion benchmarks of the codec on a typical small transfer: a `transfer` frame carrying a message with a
//! header, properties, three application properties and a 100-byte data body, plus a small map on its own.
//!
//! `message/*` compares what a receiver does with that message's bytes: `decode` (a `Message`), `raw_parse` (a
//! `RawMessage`, checked, not decoded: what a broker does) and `raw_parse_then_decode` (what
//! `MessagingHandler::on_raw_message`'s default does before `on_message`).
//!
//! Run with `cargo bench -p nucleon-protocol --bench codec`. Every benchmark processes one frame (or value) per
//! iteration, so the reported throughput is frames (values) per second.

use std::hint::black_box;

use bytes::{BufMut, Bytes};
use criterion::{Criterion, Throughput};
use nucleon_protocol::codec::{Decode, Encode, Map, Symbol, Timestamp, Value};
use nucleon_protocol::frame::{Frame, FrameBody, FrameHeader, Performative, Transfer};
use nucleon_protocol::{Message, RawMessage};

const CHANNEL: u16 = 1;

fn transfer() -> Transfer {
    Transfer {
        handle: 0,
        delivery_id: Some(4711),
        delivery_tag: Some(Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0x12, 0x67])),
        message_format: Some(0),
        settled: Some(false),
        ..Transfer::default()
    }
}

fn message() -> Message {
    Message::builder()
        .durable(true)
        .message_id("order-4711")
        .to("queue://orders")
        .subject("order.created")
        .content_type(Symbol::from_static("application/json"))
        .creation_time(Timestamp(1_700_000_000_000))
        .property("tenant", "acme")
        .property("priority", 3i32)
        .property("retry", false)
        .data(vec![b'x'; 100])
        .build()
}

/// Writes a complete AMQP frame (header, performative, message) into `buf`, as an engine sending a transfer would:
/// the message is encoded straight into the frame buffer, with no intermediate payload buffer.
fn encode_transfer_frame(buf: &mut Vec<u8>, transfer: &Transfer, message: &Message) {
    let size = FrameHeader::SIZE + transfer.encoded_size() + message.encoded_size();
    buf.put_u32(size as u32);
    buf.put_u8(2); // data offset, in 4-byte words: no extended header
    buf.put_u8(0); // AMQP frame
    buf.put_u16(CHANNEL);
    transfer.encode(buf);
    message.encode(buf);
}

fn decode_transfer_frame(bytes: Bytes) -> (Frame, Message) {
    let frame = Frame::decode(bytes, 0).expect("a valid frame");
    let FrameBody::Amqp { payload, .. } = &frame.body else {
        panic!("not an AMQP frame");
    };
    let message = Message::decode(payload.clone()).expect("a valid message");
    (frame, message)
}

fn small_map() -> Value {
    Value::Map(Map::from_entries(vec![
        (
            Value::Symbol(Symbol::from_static("x-opt-partition")),
            Value::Int(3),
        ),
        (Value::from("tenant"), Value::from("acme")),
        (Value::from("retries"), Value::Uint(2)),
        (Value::from("price"), Value::Double(10.25)),
    ]))
}

fn bench_transfer(c: &mut Criterion) {
    let transfer = transfer();
    let message = message();
    let mut buf = Vec::new();
    encode_transfer_frame(&mut buf, &transfer, &message);
    let bytes = Bytes::from(buf.clone());

    // The frame the benchmarks work on must be what they claim to be.
    let (frame, decoded) = decode_transfer_frame(bytes.clone());
    assert_eq!(frame.channel, CHANNEL);
    assert!(matches!(
        &frame.body,
        FrameBody::Amqp { performative: Performative::Transfer(t), .. } if *t == transfer
    ));
    assert_eq!(decoded, message);
    println!("transfer frame: {} bytes", bytes.len());

    let mut group = c.benchmark_group("encode_transfer_frame");
    group.throughput(Throughput::Elements(1));
    group.bench_function("transfer+message", |b| {
        b.iter(|| {
            buf.clear();
            encode_transfer_frame(&mut buf, black_box(&transfer), black_box(&message));
            black_box(buf.len())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("decode_transfer_frame");
    group.throughput(Throughput::Elements(1));
    group.bench_function("transfer+message", |b| {
        b.iter(|| decode_transfer_frame(black_box(bytes.clone())))
    });
    group.finish();
}

fn bench_message(c: &mut Criterion) {
    let bytes = message().to_bytes();
    let mut group = c.benchmark_group("message");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode", |b| {
        b.iter(|| Message::decode(black_box(bytes.clone())).unwrap())
    });
    group.bench_function("raw_parse", |b| {
        b.iter(|| RawMessage::parse(black_box(bytes.clone())).unwrap())
    });
    group.bench_function("raw_parse_then_decode", |b| {
        b.iter(|| {
            RawMessage::parse(black_box(bytes.clone()))
                .unwrap()
                .decode()
                .unwrap()
        })
    });
    group.finish();
}

fn bench_value(c: &mut Criterion) {
    let map = small_map();
    let encoded = map.to_bytes();
    assert_eq!(Value::decode_from(encoded.clone()).unwrap(), map);
    let mut buf = Vec::with_capacity(encoded.len());

    let mut group = c.benchmark_group("encode_decode_value");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode_small_map", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&map).encode(&mut buf);
            black_box(buf.len())
        })
    });
    group.bench_function("decode_small_map", |b| {
        b.iter(|| Value::decode_from(black_box(encoded.clone())).unwrap())
    });
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_transfer(&mut c);
    bench_message(&mut c);
    bench_value(&mut c);
    c.final_summary();
}
