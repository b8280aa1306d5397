//! A server engine under a hostile peer, in memory: each attack of issue #11 as raw frames, with the engine's
//! heap measured by a counting allocator. Every attack must cost a bounded amount of memory and end with the
//! condition the spec names, on the link, session or connection that broke the rule and nothing more.
//!
//! The tests share one allocator, so they take a lock and run one at a time.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nucleon_protocol::engine::{Connection, ConnectionConfig, Event, LinkConfig, LinkId};
use nucleon_protocol::frame::{
    Attach, Begin, DeliveryState, Disposition, ErrorCondition, Flow, Frame, FrameBody, Open,
    Performative, Received, Role, Source, Target, Transfer,
};
use peak_alloc::PeakAlloc;

#[global_allocator]
static ALLOC: PeakAlloc = PeakAlloc;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Heap growth while `f` runs: (peak above the start, still held at the end).
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let start = ALLOC.current_usage();
    ALLOC.reset_peak_usage();
    let t = f();
    let peak = ALLOC.peak_usage().saturating_sub(start);
    let held = ALLOC.current_usage().saturating_sub(start);
    (t, peak, held)
}

const MIB: usize = 1024 * 1024;

/// A server engine played by an application that answers everything, grants `credit` on links the peer
/// attaches as sender, and settles nothing unless asked.
struct Server {
    engine: Connection,
    now: Instant,
    credit: u32,
    /// Answer attaches with the peer's own terminus, as Proton's default handler (and ours) does.
    mirror: bool,
    events: Vec<Event>,
    out: Vec<u8>,
}

impl Server {
    fn new(config: impl FnOnce(&mut ConnectionConfig), credit: u32) -> Self {
        let mut c = ConnectionConfig::server("server");
        config(&mut c);
        let now = Instant::now();
        Server {
            engine: Connection::new(c, now),
            now,
            credit,
            mirror: false,
            events: Vec::new(),
            out: Vec::new(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) {
        assert_eq!(self.engine.handle_input(bytes, self.now), bytes.len());
        self.react();
    }

    /// Feeds without polling anything: the application is busy.
    fn feed_unpolled(&mut self, bytes: &[u8]) {
        assert_eq!(self.engine.handle_input(bytes, self.now), bytes.len());
    }

    fn react(&mut self) {
        loop {
            while let Some(e) = self.engine.poll_event() {
                match &e {
                    Event::ConnectionRemoteOpen(_) => {
                        let _ = self.engine.open();
                    }
                    Event::SessionRemoteBegin(s) => {
                        let _ = self.engine.begin_reply(*s);
                    }
                    Event::LinkRemoteAttach(l) if !self.engine.is_attached_locally(*l) => {
                        self.answer(*l);
                    }
                    _ => {}
                }
                self.events.push(e);
            }
            match self.engine.poll_transmit(self.now) {
                Some(b) => self.out.extend_from_slice(&b),
                None => break,
            }
        }
    }

    fn answer(&mut self, l: LinkId) {
        let Ok(role) = self.engine.link_config(l).map(|c| c.role) else {
            return;
        };
        let mut config = LinkConfig {
            role,
            source: Some(Source::with_address("q")),
            target: Some(Target::with_address("q")),
            ..LinkConfig::default()
        };
        if self.mirror {
            if let Ok(Some(a)) = self.engine.remote_attach(l) {
                config.source = a.source.clone();
                config.target = a.target.clone();
                config.offered_capabilities = a.offered_capabilities.clone().unwrap_or_default();
            }
        }
        // Answering fails once the session or transport has ended: the application shrugs, as ours do.
        if self.engine.attach_reply(l, config).is_ok() && role == Role::Receiver && self.credit > 0
        {
            let _ = self.engine.add_credit(l, self.credit);
        }
    }

    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.engine.handle_timeout(self.now);
        self.react();
    }

    /// The frames the server wrote, after its protocol header.
    fn frames(&self) -> Vec<Frame> {
        let mut at = 8;
        let mut frames = Vec::new();
        while at + 4 <= self.out.len() {
            let size = u32::from_be_bytes(self.out[at..at + 4].try_into().unwrap()) as usize;
            let bytes = Bytes::copy_from_slice(&self.out[at..at + size]);
            frames.push(Frame::decode(bytes, at).expect("the server writes valid frames"));
            at += size;
        }
        frames
    }

    fn performatives(&self) -> Vec<Performative> {
        self.frames()
            .into_iter()
            .filter_map(|f| match f.body {
                FrameBody::Amqp { performative, .. } => Some(performative),
                _ => None,
            })
            .collect()
    }

    /// The error conditions of the detach, end and close frames the server sent.
    fn conditions(&self) -> Vec<ErrorCondition> {
        self.performatives()
            .into_iter()
            .filter_map(|p| match p {
                Performative::Detach(d) => d.error.map(|e| e.condition),
                Performative::End(e) => e.error.map(|e| e.condition),
                Performative::Close(c) => c.error.map(|e| e.condition),
                _ => None,
            })
            .collect()
    }

    /// The first link the peer attached.
    fn first_link(&self) -> LinkId {
        self.events
            .iter()
            .find_map(|e| match e {
                Event::LinkRemoteAttach(l) => Some(*l),
                _ => None,
            })
            .expect("the peer attached a link")
    }

    /// How many events match `f`.
    fn count(&self, f: impl Fn(&Event) -> bool) -> usize {
        self.events.iter().filter(|e| f(e)).count()
    }

    fn deliveries(&self) -> usize {
        self.events
            .iter()
            .filter(|e| matches!(e, Event::Delivery { .. }))
            .count()
    }
}

fn frame(channel: u16, p: impl Into<Performative>) -> Vec<u8> {
    let mut out = Vec::new();
    Frame::amqp(channel, p).encode(&mut out);
    out
}

fn transfer(channel: u16, t: Transfer, payload: &[u8]) -> Vec<u8> {
    let f = Frame {
        channel,
        body: FrameBody::Amqp {
            performative: Performative::Transfer(t),
            payload: Bytes::copy_from_slice(payload),
        },
    };
    let mut out = Vec::new();
    f.encode(&mut out);
    out
}

fn open(max_frame_size: u32) -> Vec<u8> {
    let mut out = b"AMQP\x00\x01\x00\x00".to_vec();
    out.extend(frame(
        0,
        Open {
            container_id: "attacker".into(),
            max_frame_size,
            ..Open::default()
        },
    ));
    out
}

fn begin(channel: u16) -> Vec<u8> {
    frame(
        channel,
        Begin {
            next_outgoing_id: 0,
            incoming_window: u32::MAX,
            outgoing_window: u32::MAX,
            ..Begin::default()
        },
    )
}

fn attach_sender(channel: u16, handle: u32, name: &str) -> Vec<u8> {
    frame(
        channel,
        Attach {
            name: name.into(),
            handle,
            role: Role::Sender,
            source: Some(Source::default()),
            target: Some(Target::with_address("q")),
            initial_delivery_count: Some(0),
            ..Attach::default()
        },
    )
}

/// The header, open and a begin on channel 0.
fn session_handshake() -> Vec<u8> {
    let mut out = open(u32::MAX);
    out.extend(begin(0));
    out
}

/// The handshake of a peer that sends on handle 0 of channel 0.
fn sender_handshake() -> Vec<u8> {
    let mut out = session_handshake();
    out.extend(attach_sender(0, 0, "attack"));
    out
}

fn first_transfer(delivery_id: u32, settled: bool) -> Transfer {
    Transfer {
        handle: 0,
        delivery_id: Some(delivery_id),
        delivery_tag: Some(Bytes::copy_from_slice(&delivery_id.to_be_bytes())),
        message_format: Some(0),
        settled: Some(settled),
        ..Transfer::default()
    }
}

#[test]
fn gapped_delivery_ids_cost_memory_only_for_the_deliveries_held() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 10_000);
    s.feed(&sender_handshake());
    let (_, peak, held) = measure(|| {
        for chunk in 0..11u32 {
            let mut bytes = Vec::new();
            for i in chunk * 200..(chunk + 1) * 200 {
                bytes.extend(transfer(0, first_transfer(i << 16, false), b"x"));
            }
            s.feed(&bytes);
        }
    });
    assert_eq!(s.deliveries(), 2200);
    assert!(s.conditions().is_empty(), "{:?}", s.conditions());
    // 2,200 held deliveries: their events, tags and bookkeeping, nowhere near 3 GiB.
    assert!(peak < 4 * MIB, "peak heap growth {peak} bytes");
    assert!(held < 4 * MIB, "held {held} bytes");
    // A disposition naming every id in serial range touches the 2,200 held, not the 4 billion ids between.
    let d = Disposition {
        role: Role::Sender,
        first: 0,
        last: Some(2199 << 16),
        settled: false,
        state: Some(DeliveryState::Received(Received {
            section_number: 0,
            section_offset: 0,
        })),
        batchable: false,
    };
    let before = s.events.len();
    s.feed(&frame(0, d));
    let updated = s.events[before..]
        .iter()
        .filter(|e| matches!(e, Event::RemoteDisposition { .. }))
        .count();
    assert_eq!(updated, 2200);
}

#[test]
fn settled_deliveries_give_their_memory_back() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 10_000);
    s.feed(&sender_handshake());
    let mut bytes = Vec::new();
    for i in 0..1000u32 {
        bytes.extend(transfer(0, first_transfer(i << 16, false), b"x"));
    }
    s.feed(&bytes);
    let ids: Vec<_> = s
        .events
        .drain(..)
        .filter_map(|e| match e {
            Event::Delivery { delivery, .. } => Some(delivery),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 1000);
    let ((), _, held) = measure(|| {
        for d in ids {
            s.engine.settle(d).unwrap();
        }
        s.react();
        s.out = Vec::new();
        s.events = Vec::new();
    });
    // Nothing is kept for settled deliveries (the growth is at most the engine's reused buffers).
    assert!(
        held < 64 * 1024,
        "held {held} bytes after settling everything"
    );
}

#[test]
fn a_delivery_that_never_ends_is_cut_at_the_max_message_size() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|c| c.max_message_size = 4 * MIB as u64, 10);
    s.feed(&sender_handshake());
    let advertised = s.performatives().into_iter().find_map(|p| match p {
        Performative::Attach(a) => a.max_message_size,
        _ => None,
    });
    assert_eq!(advertised, Some(4 * MIB as u64), "advertised in attach");
    let chunk = vec![0u8; 60_000];
    let (_, peak, _) = measure(|| {
        let mut t = first_transfer(0, false);
        t.more = true;
        s.feed(&transfer(0, t, &chunk));
        for _ in 0..5000 {
            let t = Transfer {
                handle: 0,
                more: true,
                ..Transfer::default()
            };
            s.feed(&transfer(0, t, &chunk));
        }
    });
    assert_eq!(
        s.conditions(),
        vec![ErrorCondition::MessageSizeExceeded],
        "only the link is detached"
    );
    assert!(peak < 16 * MIB, "peak heap growth {peak} bytes");
    // The session and connection go on: a new link on the same session still delivers.
    s.feed(&attach_sender(0, 1, "next"));
    s.feed(&transfer(
        0,
        Transfer {
            handle: 1,
            ..first_transfer(1, true)
        },
        b"fine",
    ));
    assert_eq!(s.deliveries(), 1);
}

#[test]
fn the_default_max_message_size_is_advertised_and_enforced() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 10);
    s.feed(&sender_handshake());
    let advertised = s.performatives().into_iter().find_map(|p| match p {
        Performative::Attach(a) => a.max_message_size,
        _ => None,
    });
    assert_eq!(
        advertised,
        Some(nucleon_protocol::engine::DEFAULT_MAX_MESSAGE_SIZE)
    );
}

#[test]
fn transfers_beyond_credit_end_the_link_with_transfer_limit_exceeded() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // No credit at all: the application grants none.
    let mut s = Server::new(|_| {}, 0);
    s.feed(&sender_handshake());
    let mut bytes = Vec::new();
    for i in 0..20_000u32 {
        bytes.extend(transfer(0, first_transfer(i, true), b"x"));
    }
    // In one read, as a flood arrives: fed in 1,000-transfer reads with the application keeping up.
    for chunk in bytes.chunks(bytes.len() / 20) {
        s.feed(chunk);
    }
    let tolerated = ConnectionConfig::server("x").credit_overshoot as usize;
    assert_eq!(
        s.deliveries(),
        tolerated,
        "the tolerated overshoot, no more"
    );
    assert_eq!(s.conditions(), vec![ErrorCondition::TransferLimitExceeded]);
}

#[test]
fn a_grant_of_credit_restarts_the_overshoot_count() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|c| c.credit_overshoot = 3, 2);
    s.feed(&sender_handshake());
    let link = s.first_link();
    let mut id = 0;
    let mut send = |s: &mut Server, n: u32| {
        let mut bytes = Vec::new();
        for _ in 0..n {
            bytes.extend(transfer(0, first_transfer(id, true), b"x"));
            id += 1;
        }
        s.feed(&bytes);
    };
    // 2 within credit and 3 beyond: tolerated, as RabbitMQ's crossing flows need.
    send(&mut s, 5);
    s.engine.add_credit(link, 2).unwrap();
    s.react();
    send(&mut s, 5);
    assert!(s.conditions().is_empty(), "{:?}", s.conditions());
    assert_eq!(s.deliveries(), 10);
    send(&mut s, 1);
    assert_eq!(s.conditions(), vec![ErrorCondition::TransferLimitExceeded]);
}

#[test]
fn a_peer_that_ignores_the_session_window_gets_window_violation() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A fixed window far below the credit (by default the window follows the credit, which then bounds
    // what waits: transfers_beyond_credit_end_the_link_with_transfer_limit_exceeded).
    let mut s = Server::new(
        |c| {
            c.session_window = 100;
            c.session_window_follows_credit = false;
        },
        1_000_000,
    );
    s.feed(&sender_handshake());
    let mut bytes = Vec::new();
    for i in 0..150u32 {
        bytes.extend(transfer(0, first_transfer(i, true), b"x"));
    }
    // The application has not taken a single delivery: the window is not refilled behind its back.
    s.feed_unpolled(&bytes);
    s.react();
    assert_eq!(s.deliveries(), 100);
    assert_eq!(s.conditions(), vec![ErrorCondition::WindowViolation]);
}

#[test]
fn the_window_refills_as_the_application_takes_deliveries() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|c| c.session_window = 100, 1_000_000);
    s.feed(&sender_handshake());
    let mut id = 0;
    for _ in 0..20 {
        let mut bytes = Vec::new();
        for _ in 0..60 {
            bytes.extend(transfer(0, first_transfer(id, true), b"x"));
            id += 1;
        }
        s.feed(&bytes);
    }
    assert_eq!(s.deliveries(), 1200);
    assert!(s.conditions().is_empty(), "{:?}", s.conditions());
}

#[test]
fn handles_beyond_handle_max_close_the_connection_with_framing_error() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 0);
    s.feed(&session_handshake());
    let handle_max = s
        .performatives()
        .into_iter()
        .find_map(|p| match p {
            Performative::Begin(b) => Some(b.handle_max),
            _ => None,
        })
        .unwrap();
    assert_eq!(handle_max, ConnectionConfig::server("x").handle_max);
    assert!(handle_max < 65_536, "advertised handle-max {handle_max}");
    let mut bytes = Vec::new();
    for h in 0..40_000u32 {
        bytes.extend(attach_sender(0, h, &format!("l{h}")));
    }
    s.feed(&bytes);
    assert_eq!(s.conditions(), vec![ErrorCondition::FramingError]);
    let attached = s.count(|e| matches!(e, Event::LinkRemoteAttach(_)));
    assert_eq!(attached, handle_max as usize + 1);
}

#[test]
fn links_beyond_max_links_are_refused_one_by_one() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(
        |c| {
            c.max_links = 3;
            c.handle_max = 100;
        },
        0,
    );
    let mut bytes = session_handshake();
    for h in 0..5u32 {
        bytes.extend(attach_sender(0, h, &format!("l{h}")));
    }
    s.feed(&bytes);
    let attached = s.count(|e| matches!(e, Event::LinkRemoteAttach(_)));
    assert_eq!(attached, 3, "the application hears of 3 links only");
    assert_eq!(
        s.conditions(),
        vec![
            ErrorCondition::ResourceLimitExceeded,
            ErrorCondition::ResourceLimitExceeded
        ]
    );
    // The refusals are answers: an attach (no terminus) and a closing detach per refused link.
    let refused: Vec<_> = s
        .performatives()
        .into_iter()
        .filter_map(|p| match p {
            Performative::Attach(a) if a.name == "l3" || a.name == "l4" => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(refused.len(), 2);
    assert!(refused.iter().all(|a| a.target.is_none()));
    // The peer goes on using refused links: nothing of them reaches the application.
    let before = s.events.len();
    let receiver = Attach {
        name: "r5".into(),
        handle: 5,
        role: Role::Receiver,
        source: Some(Source::with_address("q")),
        ..Attach::default()
    };
    s.feed(&frame(0, receiver));
    assert_eq!(s.conditions().len(), 3, "refused too");
    let credit = Flow {
        next_incoming_id: Some(0),
        incoming_window: 100,
        next_outgoing_id: 0,
        outgoing_window: 100,
        handle: Some(5),
        delivery_count: Some(0),
        link_credit: Some(10),
        drain: true,
        ..Flow::default()
    };
    s.feed(&frame(0, credit));
    let flow = Flow {
        next_incoming_id: Some(0),
        incoming_window: 100,
        next_outgoing_id: 0,
        outgoing_window: 100,
        handle: Some(4),
        delivery_count: Some(0),
        link_credit: Some(10),
        echo: true,
        ..Flow::default()
    };
    let mut bytes = frame(0, flow);
    bytes.extend(transfer(
        0,
        Transfer {
            handle: 4,
            ..first_transfer(0, true)
        },
        b"x",
    ));
    s.feed(&bytes);
    assert_eq!(s.events[before..], [], "nothing about a refused link");
}

#[test]
fn begins_beyond_channel_max_close_the_connection_with_framing_error() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 0);
    s.feed(&open(u32::MAX));
    let channel_max = s
        .performatives()
        .into_iter()
        .find_map(|p| match p {
            Performative::Open(o) => Some(o.channel_max),
            _ => None,
        })
        .unwrap();
    assert_eq!(channel_max, ConnectionConfig::server("x").channel_max);
    assert!(channel_max < u16::MAX);
    let mut bytes = Vec::new();
    for c in 0..=u16::MAX {
        bytes.extend(begin(c));
    }
    s.feed(&bytes);
    assert_eq!(s.conditions(), vec![ErrorCondition::FramingError]);
    let begun = s.count(|e| matches!(e, Event::SessionRemoteBegin(_)));
    assert_eq!(begun, usize::from(channel_max) + 1);
}

#[test]
fn a_frame_header_reserves_nothing_for_bytes_that_have_not_arrived() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|c| c.max_frame_size = u32::MAX, 0);
    s.feed(&open(u32::MAX));
    let advertised = s
        .performatives()
        .into_iter()
        .find_map(|p| match p {
            Performative::Open(o) => Some(o.max_frame_size),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        advertised,
        nucleon_protocol::engine::MAX_MAX_FRAME_SIZE,
        "the configurable max-frame-size is capped"
    );
    let (_, peak, _) = measure(|| {
        // A frame header announcing the largest frame allowed, and nothing after it.
        let mut header = advertised.to_be_bytes().to_vec();
        header.extend([2, 0, 0, 0]);
        s.feed(&header);
    });
    assert!(peak < 64 * 1024, "reserved {peak} bytes for 8");
    assert!(s.conditions().is_empty());
}

#[test]
fn no_frame_we_send_exceeds_the_peers_max_frame_size() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 10);
    s.mirror = true;
    let mut bytes = open(512);
    bytes.extend(begin(0));
    // A link whose terminus is large: the reply mirrors what it can.
    let mut a = Attach {
        name: "l".into(),
        handle: 0,
        role: Role::Sender,
        source: Some(Source {
            address: Some("s".repeat(300)),
            ..Source::default()
        }),
        target: Some(Target::with_address("q")),
        initial_delivery_count: Some(0),
        properties: None,
        ..Attach::default()
    };
    a.offered_capabilities = Some(vec![nucleon_protocol::codec::Symbol::from("c".repeat(400))]);
    bytes.extend(frame(0, a));
    s.feed(&bytes);
    // An error that quotes the peer: a performative with a 3 KB symbolic descriptor we do not know.
    let descriptor = "d".repeat(3000);
    let mut body = vec![0x00, 0xb3];
    body.extend((descriptor.len() as u32).to_be_bytes());
    body.extend(descriptor.as_bytes());
    body.push(0x45);
    let mut bad = ((8 + body.len()) as u32).to_be_bytes().to_vec();
    bad.extend([2, 0, 0, 0]);
    bad.extend(body);
    s.feed(&bad);
    let sizes: Vec<usize> = {
        let mut at = 8;
        let mut v = Vec::new();
        while at + 4 <= s.out.len() {
            let size = u32::from_be_bytes(s.out[at..at + 4].try_into().unwrap()) as usize;
            v.push(size);
            at += size;
        }
        v
    };
    let open_size = sizes[0];
    assert!(
        sizes[1..].iter().all(|&n| n <= 512),
        "frame sizes after our open: {:?}",
        &sizes[1..]
    );
    assert!(open_size <= 512);
    let attach = s.performatives().into_iter().find_map(|p| match p {
        Performative::Attach(a) => Some(a),
        _ => None,
    });
    let source = attach.and_then(|a| a.source).and_then(|s| s.address);
    assert_eq!(source, Some("s".repeat(300)), "the address is kept");
    assert!(s.events.iter().any(|e| matches!(e, Event::TransportClosed)));
}

#[test]
fn a_close_quoting_a_huge_description_is_cut_to_fit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 10);
    s.feed(&open(512));
    s.engine
        .close(Some(nucleon_protocol::frame::Error::new(
            ErrorCondition::InternalError,
            "é".repeat(2000),
        )))
        .unwrap();
    s.react();
    let close = s.frames().into_iter().last().unwrap();
    let mut encoded = Vec::new();
    close.encode(&mut encoded);
    assert!(encoded.len() <= 512, "{} bytes", encoded.len());
    assert_eq!(s.conditions(), vec![ErrorCondition::InternalError]);
}

#[test]
fn a_tiny_idle_timeout_is_served_at_the_floor() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 0);
    let mut bytes = b"AMQP\x00\x01\x00\x00".to_vec();
    bytes.extend(frame(
        0,
        Open {
            container_id: "attacker".into(),
            idle_time_out: Some(1),
            ..Open::default()
        },
    ));
    s.feed(&bytes);
    let floor = ConnectionConfig::server("x").min_remote_idle_timeout;
    let before = s.out.len();
    let mut wakeups = 0;
    let end = s.now + Duration::from_secs(1);
    while let Some(t) = s.engine.poll_timeout() {
        if t > end {
            break;
        }
        s.now = t;
        s.engine.handle_timeout(t);
        s.react();
        wakeups += 1;
        // The peer keeps its side alive.
        s.feed_unpolled(&[0, 0, 0, 8, 2, 0, 0, 0]);
    }
    let heartbeats = (s.out.len() - before) / 8;
    let most = (Duration::from_secs(1).as_millis() / (floor / 2).as_millis()) as usize;
    assert!(heartbeats <= most, "{heartbeats} heartbeats in 1 s");
    assert!(wakeups <= most + 1, "{wakeups} wake-ups in 1 s");
    assert!(heartbeats > 0, "it is still served");
}

#[test]
fn a_peer_that_never_opens_is_closed_after_the_open_timeout() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 0);
    s.feed(b"AMQP\x00\x01\x00\x00");
    let timeout = ConnectionConfig::server("x").open_timeout.unwrap();
    let deadline = s.engine.poll_timeout().expect("an open deadline");
    assert_eq!(deadline, s.now + timeout);
    s.advance(timeout);
    assert!(s
        .events
        .iter()
        .any(|e| matches!(e, Event::TransportError(e) if e.condition == ErrorCondition::ResourceLimitExceeded)));
    assert_eq!(s.events.last(), Some(&Event::TransportClosed));
}

#[test]
fn session_errors_before_the_application_answers_the_begin_are_sent() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // handle-in-use: two attaches with one handle, in the same read as the begin.
    let mut s = Server::new(|_| {}, 0);
    let mut bytes = session_handshake();
    bytes.extend(attach_sender(0, 7, "a"));
    bytes.extend(attach_sender(0, 7, "b"));
    s.feed(&bytes);
    assert_eq!(s.conditions(), vec![ErrorCondition::HandleInUse]);
    // unattached-handle: a transfer on a handle nobody attached.
    let mut s = Server::new(|_| {}, 0);
    let mut bytes = session_handshake();
    bytes.extend(transfer(0, first_transfer(0, true), b"x"));
    s.feed(&bytes);
    assert_eq!(s.conditions(), vec![ErrorCondition::UnattachedHandle]);
    assert!(
        !s.events
            .iter()
            .any(|e| matches!(e, Event::TransportError(_))),
        "the connection goes on"
    );
}

#[test]
fn a_second_begin_answering_an_answered_channel_is_refused() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut c = Connection::new(ConnectionConfig::client("c"), Instant::now());
    let now = Instant::now();
    let mut server_bytes = b"AMQP\x00\x01\x00\x00".to_vec();
    server_bytes.extend(frame(
        0,
        Open {
            container_id: "s".into(),
            ..Open::default()
        },
    ));
    c.open().unwrap();
    let _session = c.begin().unwrap();
    let answer = Begin {
        remote_channel: Some(0),
        next_outgoing_id: 0,
        incoming_window: 10,
        outgoing_window: 10,
        ..Begin::default()
    };
    server_bytes.extend(frame(0, answer.clone()));
    server_bytes.extend(frame(1, answer));
    c.handle_input(&server_bytes, now);
    let mut errors = Vec::new();
    while let Some(e) = c.poll_event() {
        if let Event::TransportError(e) = e {
            errors.push(e.condition);
        }
    }
    assert_eq!(errors, vec![ErrorCondition::IllegalState]);
}

#[test]
fn drain_completes_when_the_sender_uses_the_credit_up() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 3);
    s.feed(&sender_handshake());
    let link = s.first_link();
    s.engine.drain(link).unwrap();
    s.react();
    let mut bytes = Vec::new();
    for i in 0..3 {
        bytes.extend(transfer(0, first_transfer(i, true), b"x"));
    }
    s.feed(&bytes);
    assert!(s.events.iter().any(|e| *e == Event::DrainCompleted(link)));
    assert_eq!(s.engine.credit(link), Ok(0));
}

#[test]
fn a_senders_delivery_count_past_the_limit_leaves_no_credit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 5);
    s.feed(&sender_handshake());
    let link = s.first_link();
    let flow = Flow {
        next_incoming_id: Some(0),
        incoming_window: 100,
        next_outgoing_id: 0,
        outgoing_window: 100,
        handle: Some(0),
        delivery_count: Some(9),
        link_credit: Some(0),
        ..Flow::default()
    };
    s.feed(&frame(0, flow));
    assert_eq!(s.engine.credit(link), Ok(0));
}

#[test]
fn spec_rules_on_incoming_links_and_transfers() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A sender without initial-delivery-count is refused at link level, unseen by the application.
    let mut s = Server::new(|_| {}, 5);
    let mut bytes = session_handshake();
    bytes.extend(frame(
        0,
        Attach {
            name: "n".into(),
            handle: 0,
            role: Role::Sender,
            target: Some(Target::with_address("q")),
            ..Attach::default()
        },
    ));
    s.feed(&bytes);
    assert_eq!(s.conditions(), vec![ErrorCondition::InvalidField]);
    assert!(!s
        .events
        .iter()
        .any(|e| matches!(e, Event::LinkRemoteAttach(_))));

    // A delivery-tag over 32 bytes ends the link.
    let mut s = Server::new(|_| {}, 5);
    s.feed(&sender_handshake());
    let t = Transfer {
        delivery_tag: Some(Bytes::from(vec![7u8; 33])),
        ..first_transfer(0, true)
    };
    s.feed(&transfer(0, t, b"x"));
    assert_eq!(s.conditions(), vec![ErrorCondition::InvalidField]);
    assert_eq!(s.deliveries(), 0);

    // snd-settle-mode settled: every delivery is settled, whatever the transfer says.
    let mut s = Server::new(|_| {}, 5);
    let mut bytes = session_handshake();
    bytes.extend(frame(
        0,
        Attach {
            name: "s".into(),
            handle: 0,
            role: Role::Sender,
            snd_settle_mode: nucleon_protocol::frame::SenderSettleMode::Settled,
            target: Some(Target::with_address("q")),
            initial_delivery_count: Some(0),
            ..Attach::default()
        },
    ));
    s.feed(&bytes);
    // Once the attach is answered (and credit granted): a compliant sender waits for that.
    s.feed(&transfer(0, first_transfer(0, false), b"x"));
    assert!(s
        .events
        .iter()
        .any(|e| matches!(e, Event::Delivery { settled: true, .. })));
}

#[test]
fn the_unsettled_map_of_an_attach_reaches_the_application() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 5);
    let mut bytes = session_handshake();
    let mut unsettled = nucleon_protocol::codec::Map::new();
    unsettled.insert(
        nucleon_protocol::codec::Value::Binary(Bytes::from_static(b"tag")),
        nucleon_protocol::codec::Value::Null,
    );
    bytes.extend(frame(
        0,
        Attach {
            name: "u".into(),
            handle: 0,
            role: Role::Sender,
            target: Some(Target::with_address("q")),
            initial_delivery_count: Some(0),
            unsettled: Some(unsettled.clone()),
            ..Attach::default()
        },
    ));
    s.feed(&bytes);
    let link = s.first_link();
    assert_eq!(s.engine.remote_unsettled(link), Ok(Some(&unsettled)));
}

#[test]
fn many_pre_settled_deliveries_pass_one_held_without_growing_memory() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, u32::MAX / 2);
    s.feed(&sender_handshake());
    s.feed(&transfer(0, first_transfer(0, false), b"held"));
    s.events.clear();
    s.out.clear();
    let ((), peak, _) = measure(|| {
        for chunk in 0..70u32 {
            let mut bytes = Vec::new();
            for i in 1..=1000u32 {
                bytes.extend(transfer(0, first_transfer(chunk * 1000 + i, true), b"x"));
            }
            s.feed(&bytes);
            s.events.clear();
            s.out.clear();
        }
        // And one more the receiver must settle, 70,001 ids after the one it holds.
        s.feed(&transfer(0, first_transfer(70_001, false), b"last"));
    });
    assert!(s.conditions().is_empty(), "{:?}", s.conditions());
    assert_eq!(s.deliveries(), 1);
    assert!(peak < 4 * MIB, "peak {peak}");
}

#[test]
fn an_attach_with_a_large_name_to_a_small_frame_peer_ends_its_session_with_frame_size_too_small() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 5);
    let mut bytes = open(512);
    bytes.extend(begin(0));
    bytes.extend(attach_sender(0, 0, &"n".repeat(1000)));
    s.feed(&bytes);
    assert_eq!(s.conditions(), vec![ErrorCondition::FrameSizeTooSmall]);
    let ended = s
        .performatives()
        .into_iter()
        .any(|p| matches!(p, Performative::End(_)));
    assert!(ended, "the session ends, not the connection");
    assert!(!s
        .events
        .iter()
        .any(|e| matches!(e, Event::TransportError(_))));
    let mut at = 8;
    while at + 4 <= s.out.len() {
        let size = u32::from_be_bytes(s.out[at..at + 4].try_into().unwrap()) as usize;
        assert!(at == 8 || size <= 512, "a frame of {size} bytes");
        at += size;
    }
}

#[test]
fn nothing_is_kept_for_a_link_that_is_refused_or_closed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _ = LinkConfig::default();
    let mut s = Server::new(|_| {}, 5);
    s.feed(&sender_handshake());
    for round in 0..2000u32 {
        let d = nucleon_protocol::frame::Detach {
            handle: 0,
            closed: true,
            error: None,
        };
        let mut bytes = frame(0, d);
        bytes.extend(attach_sender(0, 0, &format!("r{round}")));
        s.feed(&bytes);
        s.events.clear();
        s.out.clear();
    }
    let ((), _, held) = measure(|| {
        for round in 0..2000u32 {
            let d = nucleon_protocol::frame::Detach {
                handle: 0,
                closed: true,
                error: None,
            };
            let mut bytes = frame(0, d);
            bytes.extend(attach_sender(0, 0, &format!("s{round}")));
            s.feed(&bytes);
            s.events.clear();
            s.out.clear();
        }
    });
    assert!(
        held < 64 * 1024,
        "held {held} bytes after 2,000 attach/detach cycles"
    );
}

#[test]
fn a_coordinator_link_is_refused_with_not_implemented_at_link_level() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 5);
    let mut bytes = session_handshake();
    bytes.extend(frame(
        0,
        Attach {
            name: "txn".into(),
            handle: 0,
            role: Role::Sender,
            source: Some(Source::default()),
            coordinator: Some(nucleon_protocol::frame::Coordinator {
                capabilities: Some(vec![nucleon_protocol::codec::Symbol::from(
                    "amqp:local-transactions",
                )]),
            }),
            initial_delivery_count: Some(0),
            ..Attach::default()
        },
    ));
    bytes.extend(attach_sender(0, 1, "plain"));
    s.feed(&bytes);
    assert_eq!(s.conditions(), vec![ErrorCondition::NotImplemented]);
    let attached = s.count(|e| matches!(e, Event::LinkRemoteAttach(_)));
    assert_eq!(
        attached, 1,
        "the plain link goes on; the coordinator is never seen"
    );
}

#[test]
fn a_transfer_before_the_attach_is_answered_is_beyond_any_credit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 5);
    let mut bytes = sender_handshake();
    bytes.extend(transfer(0, first_transfer(0, true), b"early"));
    s.feed(&bytes);
    assert_eq!(s.conditions(), vec![ErrorCondition::TransferLimitExceeded]);
    assert_eq!(s.deliveries(), 0);
}

/// The `end`, `detach` and `close` frames the server sent.
fn endings(s: &Server) -> usize {
    s.performatives()
        .into_iter()
        .filter(|p| {
            matches!(
                p,
                Performative::End(_) | Performative::Detach(_) | Performative::Close(_)
            )
        })
        .count()
}

#[test]
fn multi_frame_deliveries_of_two_links_may_interleave() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 5);
    let mut b = sender_handshake();
    b.extend(attach_sender(0, 1, "second"));
    s.feed(&b);
    let mut b = Vec::new();
    let first = Transfer {
        more: true,
        ..first_transfer(0, false)
    };
    b.extend(transfer(0, first, b"aaaa"));
    let other = Transfer {
        handle: 1,
        ..first_transfer(1, false)
    };
    b.extend(transfer(0, other, b"bbbb"));
    b.extend(transfer(0, Transfer::default(), b"cccc"));
    s.feed(&b);
    assert_eq!(s.deliveries(), 2, "both deliveries arrive");
    assert_eq!(endings(&s), 0, "{:?}", s.conditions());
}

#[test]
fn a_drain_completes_only_after_the_delivery_that_used_the_credit() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 1);
    s.feed(&sender_handshake());
    let link = s.first_link();
    s.engine.drain(link).unwrap();
    s.react();
    s.events.clear();
    let first = Transfer {
        more: true,
        ..first_transfer(0, true)
    };
    s.feed(&transfer(0, first, b"aaaa"));
    assert!(
        !s.events
            .iter()
            .any(|e| matches!(e, Event::DrainCompleted(_))),
        "{:?}",
        s.events
    );
    s.feed(&transfer(0, Transfer::default(), b"bbbb"));
    let at = |want: fn(&Event) -> bool| s.events.iter().position(want);
    let delivery = at(|e| matches!(e, Event::Delivery { .. })).expect("the delivery");
    let drained = at(|e| matches!(e, Event::DrainCompleted(_))).expect("the drain completes");
    assert!(delivery < drained);
}

#[test]
fn one_disposition_frame_cannot_copy_a_large_state_into_every_event() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    const N: u32 = 1000;
    let mut s = Server::new(|_| {}, N);
    s.feed(&sender_handshake());
    let mut b = Vec::new();
    for i in 0..N {
        b.extend(transfer(0, first_transfer(i, false), b"x"));
    }
    s.feed(&b);
    assert_eq!(s.deliveries(), N as usize);
    s.events.clear();
    let error = nucleon_protocol::frame::Error::new(ErrorCondition::NotFound, "e".repeat(60_000));
    let d = Disposition {
        role: Role::Sender,
        first: 0,
        last: Some(N - 1),
        settled: false,
        state: Some(DeliveryState::Rejected(nucleon_protocol::frame::Rejected {
            error: Some(error),
        })),
        batchable: false,
    };
    let bytes = frame(0, d);
    let ((), peak, _) = measure(|| s.feed_unpolled(&bytes));
    assert!(
        peak < 8 * MIB,
        "one {}-byte frame cost {peak} bytes",
        bytes.len()
    );
    let mut outcomes = 0;
    while let Some(e) = s.engine.poll_event() {
        if let Event::RemoteDisposition {
            state: Some(DeliveryState::Rejected(r)),
            ..
        } = e
        {
            assert_eq!(r.error.map(|e| e.condition), Some(ErrorCondition::NotFound));
            outcomes += 1;
        }
    }
    assert_eq!(outcomes, N, "every delivery still learns its outcome");
}

#[test]
fn links_the_application_could_not_answer_are_freed() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|c| c.max_links = 50, 5);
    let mut b = open(u32::MAX);
    // The peer's handle-max lets us answer one link only.
    b.extend(frame(
        0,
        Begin {
            next_outgoing_id: 0,
            incoming_window: u32::MAX,
            outgoing_window: u32::MAX,
            handle_max: 0,
            ..Begin::default()
        },
    ));
    b.extend(attach_sender(0, 0, "first"));
    s.feed(&b);
    let mut b = attach_sender(0, 1, "second");
    b.extend(frame(
        0,
        nucleon_protocol::frame::Detach {
            handle: 1,
            closed: true,
            error: None,
        },
    ));
    s.feed(&b);
    assert_eq!(
        s.conditions(),
        vec![ErrorCondition::ResourceLimitExceeded],
        "the session is ended: we cannot answer the peer's links"
    );
    // The application closes what it was told of; the peer ends its side; everything is freed.
    for e in s.events.clone() {
        if let Event::LinkRemoteDetach { link, .. } = e {
            let _ = s.engine.detach(link, true, None);
        }
    }
    s.feed(&frame(0, nucleon_protocol::frame::End { error: None }));
    let attached = s.count(|e| matches!(e, Event::LinkRemoteAttach(_)));
    let closed = s.count(|e| matches!(e, Event::LinkClosed(_)));
    assert_eq!(closed, attached, "every link the application saw is closed");
    assert!(s
        .events
        .iter()
        .any(|e| matches!(e, Event::SessionClosed(_))));
}

#[test]
fn a_begin_we_could_not_answer_closes_the_connection_instead_of_vanishing() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|_| {}, 5);
    let mut b = b"AMQP\x00\x01\x00\x00".to_vec();
    b.extend(frame(
        0,
        Open {
            container_id: "attacker".into(),
            channel_max: 0,
            ..Open::default()
        },
    ));
    b.extend(begin(0));
    b.extend(begin(1));
    s.feed(&b);
    assert_eq!(s.conditions(), vec![ErrorCondition::ResourceLimitExceeded]);
    let begun = s.count(|e| matches!(e, Event::SessionRemoteBegin(_)));
    assert_eq!(
        begun, 1,
        "the application hears only of the session it can answer"
    );
}

#[test]
fn the_window_never_grants_a_place_a_waiting_delivery_holds() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(
        |c| {
            c.session_window = 4;
            c.session_window_follows_credit = false;
        },
        100,
    );
    s.feed(&sender_handshake());
    let mut b = transfer(0, first_transfer(0, true), b"x");
    b.extend(transfer(0, first_transfer(1, true), b"x"));
    s.feed_unpolled(&b);
    assert!(matches!(
        s.engine.poll_event(),
        Some(Event::Delivery { .. })
    ));
    let mut b = Vec::new();
    for i in 2..6 {
        b.extend(transfer(0, first_transfer(i, true), b"x"));
    }
    s.feed_unpolled(&b);
    let mut waiting = 0;
    while let Some(e) = s.engine.poll_event() {
        waiting += usize::from(matches!(e, Event::Delivery { .. }));
    }
    s.react();
    assert!(
        waiting <= 4 || s.conditions() == vec![ErrorCondition::WindowViolation],
        "{waiting} deliveries waiting with a window of 4 and no window-violation"
    );
}

#[test]
fn unfinished_deliveries_are_bounded_per_connection() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut s = Server::new(|c| c.max_reassembly_bytes = 1024 * 1024, 5);
    let mut b = sender_handshake();
    for h in 1..3 {
        b.extend(attach_sender(0, h, &format!("l{h}")));
    }
    s.feed(&b);
    let chunk = vec![0u8; 60_000];
    for h in 0..3u32 {
        for i in 0..7 {
            let t = if i == 0 {
                Transfer {
                    handle: h,
                    more: true,
                    ..first_transfer(h, false)
                }
            } else {
                Transfer {
                    handle: h,
                    more: true,
                    ..Transfer::default()
                }
            };
            s.feed(&transfer(0, t, &chunk));
        }
    }
    // 3 links × 420 kB in flight: the third link's fourth frame crosses 1 MiB, and only that link ends.
    assert_eq!(s.conditions(), vec![ErrorCondition::ResourceLimitExceeded]);
}
