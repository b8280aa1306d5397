//! Entry points for fuzzing the decoders and the connection engine, one per fuzz target in `fuzz/`.
//!
//! They live inside the crate so that the fuzz targets are one-line wrappers and so that the same checks run on
//! stable Rust in the `fuzz_smoke` test, which feeds them the committed seed corpus and mutations of it. The module
//! is hidden from the documentation: it is not part of the API applications use.
//!
//! # Contract of the codec entry points
//!
//! [`decode_value`], [`decode_frames`] and [`decode_message`] accept any bytes at all and
//!
//! * never panic on malformed input: every failure to decode must come back as a [`DecodeError`], which these
//!   functions then ignore;
//! * check every value they do decode: the value is encoded again, [`Encode::encoded_size`] must match the bytes
//!   written, those bytes must decode, and the result must equal the first decoding (`Value` equality compares
//!   floats by their bits, so this holds for NaNs too).
//!
//! A panic from one of these functions is therefore always a codec bug: a decoder that panics, an encoder that
//! writes what the decoder rejects or reads back differently, or a size computation that disagrees with the
//! encoder. The panic message carries the bytes involved.
//!
//! # Contract of the engine entry points
//!
//! [`engine_server`] and [`engine_client`] accept any bytes at all. The first byte is a *selector* (see
//! [`engine_server_config`], [`engine_client_config`] and [`feed`]): it picks the engine's configuration, how the
//! rest is cut into `handle_input` calls and how fast simulated time runs. The rest is what the peer sends: for
//! `engine_server`, a client's byte stream from its first byte; for `engine_client`, the bytes a server sends
//! after a real open/begin/attach handshake with a client ([`engine_client_handshake`]), appended to the real
//! handshake bytes the client has already read.
//!
//! The engine under test is run by a [`Driver`], which reacts to events the way an application would (answers
//! `open`, `begin` and `attach`, grants and refills credit, sends a few messages when it gets credit, accepts and
//! settles deliveries, settles what the peer accepted, detaches, ends and closes when the peer does) and polls in
//! the order the polling contract prescribes. After the input it lets the engine's timers fire, then reports
//! `handle_read_closed`. The driver checks, and panics if any of these fails:
//!
//! * the engine never panics, whatever the peer sends;
//! * `handle_input` consumes every byte it is given;
//! * [`Event::TransportClosed`] comes exactly once (`handle_read_closed` guarantees it comes at all) and is the
//!   last event ever: no event follows it, not even one caused by a reaction to an event polled before it;
//! * once it has been polled and `poll_transmit` has been drained, [`Connection::is_finished`] is true and
//!   `poll_timeout` is `None`; later input, timeouts and transport reports produce nothing;
//! * a round of polling ends: reacting to events does not produce events forever;
//! * everything the engine wrote is a well-formed stream: protocol headers and frames that decode.
//!
//! A panic from these functions is an engine bug (or a codec bug the engine ran into).
//!
//! [`engine_structured`] runs a server engine under the same driver and checks, but its input is not bytes on
//! the wire: [`structured`] reads it as a sequence of performatives (with repeats, raw pieces and time passing)
//! and encodes them. Its fuzz target additionally asserts that the heap stays within
//! [`structured::Script::memory_bound`] while an input runs and returns to where it was afterwards.
//!
//! [`DecodeError`]: crate::DecodeError

pub mod structured;

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::codec::{Decode, DecodeError, DecodeErrorKind, Decoder, Encode};
use crate::engine::{
    Connection, ConnectionConfig, Event, LinkConfig, LinkId, PlainAuthenticator, SaslClientConfig,
    SaslServerConfig, SessionId,
};
use crate::frame::{
    Accepted, Attach, DeliveryState, Frame, FrameBody, FrameHeader, Performative, ProtocolHeader,
    Role,
};
use crate::message::{Message, RawMessage};

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
    let decoded = Message::decode(bytes.clone());
    check_raw_message(&bytes, decoded.as_ref());
    let Ok(mut first) = decoded else {
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

/// [`RawMessage::parse`] accepts what [`Message::decode`] does, except what only the decode budget refuses;
/// what it reads agrees with the decoded message; and a header it splices in decodes as that header with the
/// other sections unchanged.
fn check_raw_message(bytes: &Bytes, decoded: Result<&Message, &DecodeError>) {
    let raw = match (RawMessage::parse(bytes.clone()), decoded) {
        (Ok(raw), Ok(m)) => (raw, m),
        (Err(_), Err(_)) => return,
        (Ok(_), Err(e)) if matches!(e.kind, DecodeErrorKind::BudgetExceeded { .. }) => return,
        (Ok(_), Err(e)) => panic!(
            "RawMessage::parse accepts a message Message::decode refuses ({e}): {:02x?}",
            &bytes[..]
        ),
        (Err(e), Ok(_)) => panic!(
            "RawMessage::parse refuses a message Message::decode accepts ({e}): {:02x?}",
            &bytes[..]
        ),
    };
    let (mut raw, m) = raw;
    let read = (
        raw.durable(),
        raw.priority(),
        raw.ttl(),
        raw.first_acquirer(),
        raw.delivery_count(),
        raw.to(),
        raw.absolute_expiry_time(),
    );
    let header = m.header().cloned().unwrap_or_default();
    let expected = (
        header.durable,
        header.priority,
        header.ttl,
        header.first_acquirer,
        header.delivery_count,
        m.to(),
        m.absolute_expiry_time(),
    );
    assert_eq!(
        read,
        expected,
        "RawMessage reads {:02x?} differently",
        &bytes[..]
    );
    assert_eq!(raw.header(), header);
    let mut changed = header;
    changed.first_acquirer = !changed.first_acquirer;
    changed.delivery_count = changed.delivery_count.wrapping_add(1);
    raw.set_header(&changed);
    let mut want = m.clone();
    *want.header_mut() = changed.clone();
    let got = Message::decode(raw.bytes().clone()).unwrap_or_else(|e| {
        panic!(
            "{:02x?} with a new header does not decode ({e}): {:02x?}",
            &bytes[..],
            &raw.bytes()[..]
        )
    });
    assert_eq!(got, want, "a new header in {:02x?}", &bytes[..]);
    assert_eq!(raw.header(), changed);
    assert_eq!(raw.delivery_count(), changed.delivery_count);
}

// ---------------------------------------------------------------------------------------------------------------
// The connection engine.

/// Credit a [`Driver`] grants each receiving link, refilled once half of it is used.
const CREDIT_WINDOW: u32 = 16;

/// Messages a [`Driver`] used by the entry points sends on its own when its sending links get credit.
pub const AUTO_SEND: u32 = 8;

/// Bounds a round of polling: a driver that reacts more often than this without going quiet has found a livelock.
const MAX_REACTIONS: usize = 100_000;

/// Bounds the number of `handle_input` calls an input is cut into; the rest goes in one call.
const MAX_CHUNKS: usize = 512;

/// Fuzzes a server engine with a client's byte stream; see the [module documentation](self) for the contract.
///
/// `data[0]` is the selector: [`engine_server_config`] and [`feed`] say what its bits mean. The rest is fed to a
/// server engine as the client's bytes, from the protocol header on.
pub fn engine_server(data: &[u8]) {
    let _ = engine_server_run(data);
}

/// Fuzzes a client engine with what a server sends after the handshake; see the [module documentation](self).
///
/// `data[0]` is the selector: [`engine_client_config`] and [`feed`] say what its bits mean. The client first
/// completes a real handshake with a server engine ([`engine_client_handshake`]); the rest of `data` is then fed
/// to it as what that server sends next.
pub fn engine_client(data: &[u8]) {
    let _ = engine_client_run(data);
}

/// [`engine_server`], returning the driver afterwards so that tests can look at the events and the bytes written.
/// `None` for empty input.
pub fn engine_server_run(data: &[u8]) -> Option<Driver> {
    let (&selector, stream) = data.split_first()?;
    let mut server = Driver::new(engine_server_config(selector), Instant::now());
    server.auto_send = AUTO_SEND;
    feed(&mut server, selector, stream);
    server.check_finished();
    Some(server)
}

/// [`engine_client`], returning the client's driver afterwards. `None` for empty input.
pub fn engine_client_run(data: &[u8]) -> Option<Driver> {
    let (&selector, stream) = data.split_first()?;
    let (mut client, _server) = engine_client_handshake(selector);
    client.auto_send = AUTO_SEND;
    feed(&mut client, selector, stream);
    client.check_finished();
    Some(client)
}

/// Fuzzes a server engine with a client that speaks in whole performatives; see the
/// [module documentation](self) for the contract and [`structured`] for the input format.
///
/// `data` is read as a [`structured::Setup`] (preamble, server configuration, how the stream is cut) and then a
/// sequence of [`structured::Op`]s: open, begin, attach, flow, transfer, disposition, detach, end, close, empty
/// frames, repeats of these with a stepped delivery-id, handle, channel or range, bare frame headers, garbage,
/// protocol headers and time passing. The ops are encoded with the crate's own frame encoders and fed to a
/// server engine run by a [`Driver`], with the same checks as [`engine_server`]. The fuzz target also bounds the
/// heap with [`structured::Script::memory_bound`].
pub fn engine_structured(data: &[u8]) {
    let _ = engine_structured_run(data);
}

/// [`engine_structured`], returning the script it ran and the driver afterwards.
pub fn engine_structured_run(data: &[u8]) -> (structured::Script, Driver) {
    let script = structured::Script::from_fuzz_input(data);
    let driver = script.run();
    (script, driver)
}

/// The user the SASL servers of the engine entry points accept for PLAIN (they also accept ANONYMOUS).
pub const SASL_USER: (&str, &str) = ("user", "pass");

/// The server configuration for a selector byte of [`engine_server`]:
///
/// * bit 0: SASL (PLAIN for [`SASL_USER`], ANONYMOUS, and clients that skip SASL);
/// * bit 1: a 2-second idle timeout;
/// * bit 2: the smallest max-frame-size (512) and a fixed session window of 8 transfers.
pub fn engine_server_config(selector: u8) -> ConnectionConfig {
    let mut config = ConnectionConfig::server("fuzz-server");
    if selector & 1 != 0 {
        config.sasl_server = Some(sasl_server());
    }
    if selector & 2 != 0 {
        config.idle_timeout = Some(Duration::from_secs(2));
    }
    if selector & 4 != 0 {
        config.max_frame_size = crate::engine::MIN_MAX_FRAME_SIZE;
        config.session_window = 8;
        config.session_window_follows_credit = false;
    }
    config
}

/// The client configuration for a selector byte of [`engine_client`]:
///
/// * bits 0-1: 0 no SASL, 1 SASL PLAIN as [`SASL_USER`], 2 SASL ANONYMOUS, 3 no SASL and a 2-second idle
///   timeout;
/// * bit 2: the smallest max-frame-size (512) and a fixed session window of 8 transfers.
pub fn engine_client_config(selector: u8) -> ConnectionConfig {
    let mut config = ConnectionConfig::client("fuzz-client");
    config.hostname = Some("fuzz.example".into());
    match selector & 3 {
        1 => {
            config.sasl_client = Some(SaslClientConfig {
                mechanisms: Vec::new(),
                username: Some(SASL_USER.0.into()),
                password: Some(SASL_USER.1.into()),
            })
        }
        2 => config.sasl_client = Some(SaslClientConfig::default()),
        3 => config.idle_timeout = Some(Duration::from_secs(2)),
        _ => {}
    }
    if selector & 4 != 0 {
        config.max_frame_size = crate::engine::MIN_MAX_FRAME_SIZE;
        config.session_window = 8;
        config.session_window_follows_credit = false;
    }
    config
}

fn sasl_server() -> SaslServerConfig {
    SaslServerConfig {
        authenticator: Arc::new(PlainAuthenticator::new([SASL_USER]).allow_anonymous(true)),
        allow_skip: true,
    }
}

/// The links the client of [`engine_client_handshake`] attaches, by name: a sender and a receiver.
pub const CLIENT_LINKS: [&str; 2] = ["fuzz-sender", "fuzz-receiver"];

/// The client of [`engine_client`] right after its handshake, and the server it shook hands with.
///
/// The client (configured by [`engine_client_config`]) opens, begins a session, attaches a sender and a receiver
/// (named [`CLIENT_LINKS`]) and grants the receiver credit, all at once; a server with SASL (configured like
/// [`engine_server_config`] with bit 0) answers. Each side sends up to two messages when it gets credit, and the
/// other accepts and settles them. The two engines exchange bytes until both are quiet. The client has read
/// everything the server wrote, and all events have been polled and reacted to.
///
/// # Panics
/// If the handshake does not complete: the engines can no longer talk to each other.
pub fn engine_client_handshake(selector: u8) -> (Driver, Driver) {
    let now = Instant::now();
    let mut client = Driver::new(engine_client_config(selector), now);
    let mut server = Driver::new(engine_server_config(1), now);
    client.auto_send = 2;
    server.auto_send = 2;
    let c = &mut client.conn;
    c.open().expect("the client opens");
    let session = c.begin().expect("the client begins");
    c.attach(session, LinkConfig::sender(CLIENT_LINKS[0], "fuzz-queue"))
        .expect("the client attaches a sender");
    let receiver = c
        .attach(session, LinkConfig::receiver(CLIENT_LINKS[1], "fuzz-queue"))
        .expect("the client attaches a receiver");
    c.add_credit(receiver, CREDIT_WINDOW)
        .expect("the client grants credit");
    exchange(&mut client, &mut server);
    let received = |d: &Driver| {
        d.events
            .iter()
            .filter(|e| matches!(e, Event::Delivery { .. }))
            .count()
    };
    assert!(
        received(&client) == 2 && received(&server) == 2 && !client.closed && !server.closed,
        "the handshake failed: client events {:?}, server events {:?}",
        client.events,
        server.events
    );
    (client, server)
}

/// Lets two drivers talk, in memory, until neither has anything to say: each round, each reads all the other
/// wrote in the previous round (in one `handle_input` call) and reacts.
///
/// # Panics
/// If they are still talking after 10 000 rounds.
pub fn exchange(a: &mut Driver, b: &mut Driver) {
    let mut to_b = a.pump();
    let mut to_a = b.pump();
    for _ in 0..10_000 {
        if to_a.is_empty() && to_b.is_empty() {
            return;
        }
        let next_to_a = if to_b.is_empty() {
            Vec::new()
        } else {
            b.input(&to_b)
        };
        let next_to_b = if to_a.is_empty() {
            Vec::new()
        } else {
            a.input(&to_a)
        };
        (to_a, to_b) = (next_to_a, next_to_b);
    }
    panic!("the engines never went quiet");
}

/// Feeds `stream` to a driver the way the engine entry points do, according to bits 3-7 of `selector`.
///
/// The stream is first cut into units where the data says a protocol header or a frame ends (an `AMQP` prefix
/// is a header of 8 bytes; otherwise the first four bytes give the frame size, read as at least 8 bytes). Bits
/// 3-4 then say how units become `handle_input` calls: 0 one unit per call, 1 each unit cut in two at a point
/// derived from its bytes, 2 three units per call, 3 everything in one call. After each call, the driver reacts,
/// simulated time advances by 300 ms times bits 5-7, and the engine's timer fires if it is due. After the last
/// call the driver lets the timer fire up to three more times, then reports `handle_read_closed`.
pub fn feed(driver: &mut Driver, selector: u8, stream: &[u8]) {
    let step = Duration::from_millis(300 * u64::from(selector >> 5));
    for chunk in chunks(selector, stream) {
        driver.input(chunk);
        driver.advance(step);
    }
    finish(driver);
}

/// The end of every engine entry point's input: lets the driver's timer fire up to three more times, then
/// reports `handle_read_closed`.
fn finish(driver: &mut Driver) {
    for _ in 0..3 {
        match driver.conn.poll_timeout() {
            Some(deadline) => {
                driver.advance(deadline.saturating_duration_since(driver.now));
            }
            None => break,
        }
    }
    driver.read_closed();
}

/// Cuts `stream` into `handle_input` calls as [`feed`] describes.
fn chunks(selector: u8, stream: &[u8]) -> Vec<&[u8]> {
    let mut units = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let rest = &stream[at..];
        if units.len() + 1 >= MAX_CHUNKS {
            units.push(rest);
            break;
        }
        let len = if rest.starts_with(b"AMQP") {
            8
        } else if let Some(size) = rest.get(..4) {
            u32::from_be_bytes([size[0], size[1], size[2], size[3]]).max(8) as usize
        } else {
            rest.len()
        };
        let len = len.min(rest.len());
        units.push(&rest[..len]);
        at += len;
    }
    match (selector >> 3) & 3 {
        0 => units,
        1 => units
            .into_iter()
            .flat_map(|u| {
                let cut = if u.len() > 1 {
                    1 + fnv1a(u) as usize % (u.len() - 1)
                } else {
                    u.len()
                };
                let (a, b) = u.split_at(cut);
                [a, b].into_iter().filter(|c| !c.is_empty())
            })
            .collect(),
        2 => {
            // Units are consecutive slices of `stream`: three of them make one slice.
            let mut out = Vec::new();
            let mut start = 0;
            for group in units.chunks(3) {
                let len: usize = group.iter().map(|u| u.len()).sum();
                out.push(&stream[start..start + len]);
                start += len;
            }
            out
        }
        _ => vec![stream].into_iter().filter(|s| !s.is_empty()).collect(),
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A [`Connection`] run the way an application runs it, checking the engine's invariants as it goes (see the
/// [module documentation](self)).
///
/// After every input or mutator, [`pump`](Self::pump) polls events until there are none, reacting to each, and
/// drains `poll_transmit`, repeating until both are empty. The reactions:
///
/// | event                                   | reaction                                                          |
/// |-----------------------------------------|-------------------------------------------------------------------|
/// | `ConnectionRemoteOpen`                  | `open` (refused harmlessly if already open)                       |
/// | `SessionRemoteBegin`                    | `begin_reply`                                                     |
/// | `LinkRemoteAttach`                      | `attach_reply` with the peer's terms mirrored; a receiver grants credit |
/// | `LinkCredit` with credit                | `send` while there is credit and [`auto_send`](Self::auto_send) left |
/// | `DrainRequested`                        | `drained`                                                         |
/// | `Delivery`                              | unless settled, `disposition(accepted, settle)`; refill credit    |
/// | `DeliveryAborted`                       | refill credit                                                     |
/// | `RemoteDisposition`, unsettled          | `settle`                                                          |
/// | `LinkRemoteDetach`                      | `detach` with the peer's `closed`                                 |
/// | `SessionRemoteEnd`                      | `end`                                                             |
/// | `ConnectionRemoteClose`                 | `close`                                                           |
///
/// Mutators the engine refuses are ignored: refusing is how the engine reports misuse, and the reactions do not
/// check first whether a call is allowed.
pub struct Driver {
    /// The engine.
    pub conn: Connection,
    /// The simulated time.
    pub now: Instant,
    /// Messages still to send on this driver's own initiative when a sending link gets credit.
    pub auto_send: u32,
    /// Every event polled so far, in order.
    pub events: Vec<Event>,
    /// Every byte the engine wrote so far.
    pub written: Vec<u8>,
    /// True once `TransportClosed` has been polled.
    pub closed: bool,
    sent: u64,
}

impl Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("conn", &self.conn)
            .field("events", &self.events.len())
            .field("written", &self.written.len())
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Driver {
    /// An engine with this configuration, at simulated time `now`. Nothing is polled yet.
    pub fn new(config: ConnectionConfig, now: Instant) -> Self {
        Driver {
            conn: Connection::new(config, now),
            now,
            auto_send: 0,
            events: Vec::new(),
            written: Vec::new(),
            closed: false,
            sent: 0,
        }
    }

    /// Hands `bytes` to the engine, then [`pump`](Self::pump)s; returns what the engine wrote.
    pub fn input(&mut self, bytes: &[u8]) -> Vec<u8> {
        let consumed = self.conn.handle_input(bytes, self.now);
        assert_eq!(
            consumed,
            bytes.len(),
            "handle_input must consume all its input"
        );
        self.pump()
    }

    /// Moves simulated time on by `by`, fires the engine's timer if it is due, and pumps; returns what the
    /// engine wrote.
    pub fn advance(&mut self, by: Duration) -> Vec<u8> {
        self.now += by;
        if self.conn.poll_timeout().is_some_and(|t| t <= self.now) {
            self.conn.handle_timeout(self.now);
        }
        self.pump()
    }

    /// Reports that the peer shut its write side, and pumps.
    pub fn read_closed(&mut self) -> Vec<u8> {
        self.conn.handle_read_closed();
        self.pump()
    }

    /// Polls events (reacting to each) and transmits until both are exhausted, then asks for the timeout, as the
    /// polling contract prescribes. Returns the bytes written.
    ///
    /// # Panics
    /// If an event follows `TransportClosed`, if the engine is not finished once it has closed and everything
    /// is written, or if the reactions never end.
    pub fn pump(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        for _ in 0..MAX_REACTIONS {
            let mut progressed = false;
            while let Some(event) = self.conn.poll_event() {
                assert!(
                    !self.closed,
                    "{event:?} came after TransportClosed; the events before it: {:?}",
                    self.last_events()
                );
                self.events.push(event.clone());
                self.react(event);
                progressed = true;
            }
            if let Some(bytes) = self.conn.poll_transmit(self.now) {
                assert!(!bytes.is_empty(), "poll_transmit returned an empty buffer");
                out.extend_from_slice(&bytes);
                progressed = true;
            }
            if !progressed {
                let deadline = self.conn.poll_timeout();
                if self.closed {
                    assert!(
                        self.conn.is_finished(),
                        "TransportClosed was polled and everything written, yet the engine is not finished"
                    );
                    assert_eq!(deadline, None, "a finished engine still asks for a timeout");
                }
                self.written.extend_from_slice(&out);
                return out;
            }
        }
        panic!(
            "reacting to events never ends; the last events: {:?}",
            self.last_events()
        );
    }

    /// The last dozen events, for panic messages.
    fn last_events(&self) -> &[Event] {
        &self.events[self.events.len().saturating_sub(12)..]
    }

    fn react(&mut self, event: Event) {
        let c = &mut self.conn;
        match event {
            Event::ConnectionRemoteOpen(_) => {
                let _ = c.open();
            }
            Event::SessionRemoteBegin(session) => {
                let _ = c.begin_reply(session);
            }
            Event::LinkRemoteAttach(link) => {
                let terms = mirrored(c.remote_attach(link).ok().flatten());
                let receiver = terms.role == Role::Receiver;
                if c.attach_reply(link, terms).is_ok() && receiver {
                    let _ = c.add_credit(link, CREDIT_WINDOW);
                }
            }
            Event::LinkCredit { link, credit } => {
                for _ in 0..credit.min(self.auto_send) {
                    let n = self.sent;
                    let settled = n % 3 == 2;
                    let tag = Bytes::copy_from_slice(&n.to_be_bytes());
                    if self.conn.send(link, tag, payload(n), settled).is_err() {
                        break;
                    }
                    self.sent += 1;
                    self.auto_send -= 1;
                }
            }
            Event::DrainRequested(link) => {
                let _ = c.drained(link);
            }
            Event::Delivery {
                delivery, settled, ..
            } => {
                if !settled {
                    let accepted = Some(DeliveryState::Accepted(Accepted {}));
                    let _ = c.disposition(delivery, accepted, true);
                }
                refill(c, delivery.link);
            }
            Event::DeliveryAborted(delivery) => refill(c, delivery.link),
            Event::RemoteDisposition {
                delivery,
                settled: false,
                ..
            } => {
                let _ = c.settle(delivery);
            }
            Event::LinkRemoteDetach { link, closed, .. } => {
                let _ = c.detach(link, closed, None);
            }
            Event::SessionRemoteEnd { session, .. } => {
                let _ = c.end(session, None);
            }
            Event::ConnectionRemoteClose(_) => {
                let _ = c.close(None);
            }
            Event::TransportClosed => self.closed = true,
            _ => {}
        }
    }

    /// The links the peer attached, in order (from `LinkRemoteAttach` events).
    pub fn remote_links(&self) -> Vec<LinkId> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::LinkRemoteAttach(l) => Some(*l),
                _ => None,
            })
            .collect()
    }

    /// The sessions the peer began, in order (from `SessionRemoteBegin` events).
    pub fn remote_sessions(&self) -> Vec<SessionId> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::SessionRemoteBegin(s) => Some(*s),
                _ => None,
            })
            .collect()
    }

    /// The final checks of the engine entry points: the transport has closed, nothing the engine is told
    /// afterwards produces anything, and everything written is a well-formed stream.
    ///
    /// # Panics
    /// If any of that does not hold.
    pub fn check_finished(&mut self) {
        assert!(
            self.closed,
            "handle_read_closed must close the transport; the last events: {:?}",
            self.last_events()
        );
        let later = self.now + Duration::from_secs(3600);
        self.conn
            .handle_input(&ProtocolHeader::AMQP.to_bytes(), later);
        self.conn.handle_timeout(later);
        self.conn.handle_read_closed();
        self.conn.handle_disconnected("fuzz: gone");
        assert_eq!(self.conn.poll_event(), None, "an event after the end");
        assert_eq!(self.conn.poll_transmit(later), None, "output after the end");
        assert_eq!(self.conn.poll_timeout(), None, "a timeout after the end");
        assert!(self.conn.is_finished());
        check_stream(&self.written);
    }
}

/// Our terms for a link the peer attached: the mirror role, the peer's name, termini and settle modes.
fn mirrored(attach: Option<&Attach>) -> LinkConfig {
    let Some(a) = attach else {
        return LinkConfig::default();
    };
    LinkConfig {
        name: a.name.clone(),
        role: match a.role {
            Role::Sender => Role::Receiver,
            Role::Receiver => Role::Sender,
        },
        source: a.source.clone(),
        target: a.target.clone(),
        snd_settle_mode: a.snd_settle_mode,
        rcv_settle_mode: a.rcv_settle_mode,
        ..LinkConfig::default()
    }
}

/// Tops a receiving link's credit up to [`CREDIT_WINDOW`] once half of it is used.
fn refill(c: &mut Connection, link: LinkId) {
    if let Ok(credit) = c.credit(link) {
        if credit <= CREDIT_WINDOW / 2 {
            let _ = c.add_credit(link, CREDIT_WINDOW - credit);
        }
    }
}

/// The `n`th message a driver sends: small, except every fourth, which takes several 512-byte frames.
fn payload(n: u64) -> Bytes {
    let body = if n % 4 == 3 { 1500 } else { 16 };
    Message::builder()
        .message_id(n)
        .data(vec![b'm'; body])
        .build()
        .to_bytes()
}

/// Checks that `written` is a sequence of protocol headers and frames that decode.
fn check_stream(written: &[u8]) {
    let stream = Bytes::copy_from_slice(written);
    let mut at = 0;
    while at < stream.len() {
        let rest = &stream[at..];
        if rest.starts_with(b"AMQP") && rest.len() >= ProtocolHeader::SIZE {
            at += ProtocolHeader::SIZE;
            continue;
        }
        let header = first_eight(rest)
            .and_then(|h| FrameHeader::parse(h, at).ok())
            .filter(|h| h.size as usize <= rest.len())
            .unwrap_or_else(|| {
                panic!(
                    "the engine wrote a malformed stream at offset {at}: {:02x?}",
                    &rest[..rest.len().min(64)]
                )
            });
        let size = header.size as usize;
        if let Err(e) = Frame::decode(stream.slice(at..at + size), at) {
            panic!(
                "the engine wrote a frame that does not decode ({e}): {:02x?}",
                &rest[..size]
            );
        }
        at += size;
    }
}
