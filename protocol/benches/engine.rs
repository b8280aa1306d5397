//! Criterion benchmarks of the connection engine alone: a client engine sending small messages to a server engine
//! in memory. The two `Connection`s hand each other the `Bytes` from `poll_transmit` directly (no `Pair`, no
//! splitting into frames, no IO), so what is measured is the engines' own work on both sides: framing and encoding
//! transfers, decoding them, credit and window accounting, and (unsettled) the dispositions flowing back.
//!
//! * `unsettled`: every message is sent unsettled; the server accepts and settles each one, and the engine
//!   coalesces those dispositions into ranges when it writes them.
//! * `presettled`: every message is sent settled; nothing flows back but credit.
//!
//! The server grants a credit window of 1000 messages and tops it up whenever it falls below half. The message is
//! encoded once, up front (about 100 bytes with a header, properties, an application property and a data body),
//! and the 8-byte delivery tags are made up front too, so that the numbers are the engine's and not the
//! allocator's. Each iteration moves one batch of 1000 messages from `send` to the server's `Delivery` event (and,
//! unsettled, back to the client's settled `RemoteDisposition`), so the reported throughput is messages per second.
//!
//! `engine_attack` measures what the attacks of issue #11 cost a server engine now, each as the bytes a hostile peer
//! sends in one go: 64 unsettled transfers with delivery-ids 65,536 apart followed by 64 KiB of dispositions whose
//! range spans them all (14.6 s on the old engine), 40,000 attaches on one session (23.3 s), and 65,536 begins
//! (34.7 s). The last two now end at the advertised handle-max and channel-max with framing-error.
//!
//! Run with `cargo bench -p nucleon-protocol --bench engine`.

use std::hint::black_box;
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use nucleon_protocol::codec::{Symbol, Timestamp};
use nucleon_protocol::engine::{Connection, ConnectionConfig, Event, LinkConfig, LinkId};
use nucleon_protocol::frame::{
    Accepted, Attach, Begin, DeliveryState, Disposition, Frame, FrameBody, Open, Performative,
    Role, Target, Transfer,
};
use nucleon_protocol::Message;

/// Messages per iteration.
const BATCH: usize = 1000;

/// The credit the server grants; it tops the link up once less than half is left.
const CREDIT_WINDOW: u32 = 1000;

/// The message every delivery carries, encoded once.
fn payload() -> Bytes {
    Message::builder()
        .durable(true)
        .message_id(4711u64)
        .to("queue://orders")
        .content_type(Symbol::from_static("text/plain"))
        .creation_time(Timestamp(1_700_000_000_000))
        .property("tenant", "acme")
        .data(vec![b'x'; 24])
        .build()
        .to_bytes()
}

/// A client and a server engine, connected, with one link from the client's sender to the server's receiver.
struct Link {
    client: Connection,
    server: Connection,
    now: Instant,
    sender: LinkId,
    receiver: LinkId,
    payload: Bytes,
    tags: Vec<Bytes>,
}

impl Link {
    fn new() -> Self {
        let now = Instant::now();
        let mut client = Connection::new(ConnectionConfig::client("bench-client"), now);
        let server = Connection::new(ConnectionConfig::server("bench-server"), now);
        client.open().unwrap();
        let session = client.begin().unwrap();
        let sender = client
            .attach(session, LinkConfig::sender("bench", "queue://bench"))
            .unwrap();
        let tags = (0..BATCH as u64)
            .map(|n| Bytes::copy_from_slice(&n.to_be_bytes()))
            .collect();
        let mut link = Link {
            client,
            server,
            now,
            sender,
            receiver: sender,
            payload: payload(),
            tags,
        };
        link.handshake();
        link
    }

    /// Exchanges bytes until both engines are quiet, answering open, begin and attach on the server.
    fn handshake(&mut self) {
        let mut receiver = None;
        loop {
            let mut quiet = true;
            if let Some(bytes) = self.client.poll_transmit(self.now) {
                self.server.handle_input(&bytes, self.now);
                quiet = false;
            }
            while let Some(event) = self.server.poll_event() {
                match event {
                    Event::ConnectionRemoteOpen(_) => self.server.open().unwrap(),
                    Event::SessionRemoteBegin(s) => self.server.begin_reply(s).unwrap(),
                    Event::LinkRemoteAttach(l) => {
                        let terms = LinkConfig::receiver("bench", "queue://bench");
                        self.server.attach_reply(l, terms).unwrap();
                        self.server.add_credit(l, CREDIT_WINDOW).unwrap();
                        receiver = Some(l);
                    }
                    _ => {}
                }
            }
            if let Some(bytes) = self.server.poll_transmit(self.now) {
                self.client.handle_input(&bytes, self.now);
                quiet = false;
            }
            while self.client.poll_event().is_some() {}
            if quiet {
                break;
            }
        }
        self.receiver = receiver.expect("the server saw the attach");
        assert_eq!(self.client.credit(self.sender).unwrap(), CREDIT_WINDOW);
    }

    /// Moves one batch from the client's `send` to the server's `Delivery`; unless `settled`, the server accepts
    /// and settles each, and the batch ends when the client has seen all of them settled.
    fn batch(&mut self, settled: bool) {
        let (mut sent, mut received, mut acknowledged) = (0, 0, 0);
        let now = self.now;
        while received < BATCH || (!settled && acknowledged < BATCH) {
            let credit = self.client.credit(self.sender).unwrap() as usize;
            for _ in 0..credit.min(BATCH - sent) {
                let tag = self.tags[sent].clone();
                self.client
                    .send(self.sender, tag, self.payload.clone(), settled)
                    .unwrap();
                sent += 1;
            }
            if let Some(bytes) = self.client.poll_transmit(now) {
                self.server.handle_input(&bytes, now);
            }
            while let Some(event) = self.server.poll_event() {
                if let Event::Delivery {
                    delivery,
                    settled: presettled,
                    ..
                } = event
                {
                    received += 1;
                    if !presettled {
                        let accepted = Some(DeliveryState::Accepted(Accepted {}));
                        self.server.disposition(delivery, accepted, true).unwrap();
                    }
                }
            }
            let credit = self.server.credit(self.receiver).unwrap();
            if credit < CREDIT_WINDOW / 2 {
                self.server
                    .add_credit(self.receiver, CREDIT_WINDOW - credit)
                    .unwrap();
            }
            if let Some(bytes) = self.server.poll_transmit(now) {
                self.client.handle_input(&bytes, now);
            }
            while let Some(event) = self.client.poll_event() {
                if let Event::RemoteDisposition { settled: true, .. } = event {
                    acknowledged += 1;
                }
            }
        }
        black_box((sent, received, acknowledged));
    }
}

fn bench_transfers(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_transfer");
    group.throughput(Throughput::Elements(BATCH as u64));
    for (name, settled) in [("unsettled", false), ("presettled", true)] {
        let mut link = Link::new();
        // The batch must do what it claims: every message delivered and, unsettled, settled by the server.
        link.batch(settled);
        assert_eq!(
            link.client
                .unsettled_outgoing(link.client.link_session(link.sender).unwrap())
                .unwrap(),
            0
        );
        println!("message payload: {} bytes", link.payload.len());
        group.bench_function(name, |b| b.iter(|| link.batch(settled)));
    }
    group.finish();
}

/// The bytes of a peer's AMQP header, open and begin on channel 0, and `rest` after them.
fn attack(rest: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut out = b"AMQP\x00\x01\x00\x00".to_vec();
    let open = Open {
        container_id: "attacker".into(),
        ..Open::default()
    };
    Frame::amqp(0, open).encode(&mut out);
    let begin = Begin {
        next_outgoing_id: 0,
        incoming_window: u32::MAX,
        outgoing_window: u32::MAX,
        ..Begin::default()
    };
    Frame::amqp(0, begin).encode(&mut out);
    rest(&mut out);
    out
}

fn attach(out: &mut Vec<u8>, handle: u32) {
    let attach = Attach {
        name: format!("l{handle}"),
        handle,
        role: Role::Sender,
        target: Some(Target::with_address("q")),
        initial_delivery_count: Some(0),
        ..Attach::default()
    };
    Frame::amqp(0, attach).encode(out);
}

/// Feeds `bytes` to a fresh server engine that answers everything and grants plenty of credit.
fn run_server(bytes: &[u8]) -> usize {
    let now = Instant::now();
    let mut server = Connection::new(ConnectionConfig::server("bench"), now);
    server.handle_input(bytes, now);
    let mut events = 0;
    while let Some(event) = server.poll_event() {
        events += 1;
        match event {
            Event::ConnectionRemoteOpen(_) => {
                let _ = server.open();
            }
            Event::SessionRemoteBegin(s) => {
                let _ = server.begin_reply(s);
            }
            Event::LinkRemoteAttach(l)
                if server
                    .attach_reply(l, LinkConfig::receiver("x", "q"))
                    .is_ok() =>
            {
                let _ = server.add_credit(l, 100_000);
            }
            _ => {}
        }
    }
    black_box(server.poll_transmit(now));
    events
}

fn bench_attacks(c: &mut Criterion) {
    let mut group = c.benchmark_group("engine_attack");
    group.sample_size(10);
    let gapped = attack(|out| {
        attach(out, 0);
        for i in 0..64u32 {
            let t = Transfer {
                handle: 0,
                delivery_id: Some(i << 16),
                delivery_tag: Some(Bytes::copy_from_slice(&i.to_be_bytes())),
                message_format: Some(0),
                settled: Some(false),
                ..Transfer::default()
            };
            Frame {
                channel: 0,
                body: FrameBody::Amqp {
                    performative: Performative::Transfer(t),
                    payload: Bytes::from_static(b"x"),
                },
            }
            .encode(out);
        }
        let start = out.len();
        while out.len() - start < 64 * 1024 {
            let d = Disposition {
                role: Role::Sender,
                first: 0,
                last: Some(64 << 16),
                settled: false,
                state: None,
                batchable: false,
            };
            Frame::amqp(0, d).encode(out);
        }
    });
    group.bench_function("disposition_ranges_over_gapped_ids", |b| {
        b.iter(|| run_server(&gapped))
    });
    let attaches = attack(|out| (0..40_000).for_each(|h| attach(out, h)));
    group.bench_function("attach_40000", |b| b.iter(|| run_server(&attaches)));
    let begins = attack(|out| {
        for channel in 1..=u16::MAX {
            let begin = Begin {
                next_outgoing_id: 0,
                incoming_window: 10,
                outgoing_window: 10,
                ..Begin::default()
            };
            Frame::amqp(channel, begin).encode(out);
        }
    });
    group.bench_function("begin_65536", |b| b.iter(|| run_server(&begins)));
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench_transfers(&mut c);
    bench_attacks(&mut c);
    c.final_summary();
}
