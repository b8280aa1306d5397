//! The sans-IO AMQP 1.0 connection engine: nucleon's counterpart of Proton's `connection_driver`.
//!
//! One [`Connection`] per AMQP connection. It does no IO, reads no clock and starts no threads: bytes and
//! time go in, bytes, timers and events come out, and the same inputs always give the same outputs.
//!
//! # The polling contract
//!
//! * **Inputs** tell the engine what happened outside:
//!   [`handle_input`](Connection::handle_input) (bytes read from the transport; or read them straight into
//!   [`input_buffer`](Connection::input_buffer) and call [`process_input`](Connection::process_input), which
//!   saves a copy),
//!   [`handle_timeout`](Connection::handle_timeout) (the deadline from `poll_timeout` passed),
//!   [`handle_read_closed`](Connection::handle_read_closed) (the peer shut its write side) and
//!   [`handle_disconnected`](Connection::handle_disconnected) (the transport failed).
//! * **Mutators** are what the application does: [`open`](Connection::open), [`close`](Connection::close),
//!   [`begin`](Connection::begin) / [`end`](Connection::end), [`attach`](Connection::attach) /
//!   [`detach`](Connection::detach), [`add_credit`](Connection::add_credit), [`drain`](Connection::drain),
//!   [`send`](Connection::send), [`disposition`](Connection::disposition), [`abort`](Connection::abort).
//!   A mutator that is misused (a stale handle, sending without credit) returns an [`EngineError`] and
//!   changes nothing.
//! * **Outputs** must be polled after every input or mutator, in this order, until each returns `None`:
//!   1. [`poll_event`](Connection::poll_event): what the application must react to (reacting may call
//!      mutators, which may queue more output);
//!   2. [`poll_transmit`](Connection::poll_transmit): the bytes to write, coalesced into one buffer (or
//!      write straight from [`pending_output`](Connection::pending_output) and report what was written with
//!      [`consume_output`](Connection::consume_output));
//!   3. [`poll_timeout`](Connection::poll_timeout): when to call `handle_timeout` next (replace any earlier
//!      deadline).
//!
//! [`Event::TransportClosed`] is always the last event, exactly once. After it, write out what
//! `poll_transmit` still returns, then close the transport; [`is_finished`](Connection::is_finished) says
//! when nothing is left to do.
//!
//! # Buffers
//!
//! An idle engine holds no buffer: the input buffer is given up as soon as it holds no partial frame, the
//! output buffer as soon as everything in it has been taken, so a connection costs buffer memory only while
//! traffic flows ([`buffer_capacity`](Connection::buffer_capacity) says how much it holds). Frames read are
//! split off the input buffer without a copy, so received payloads keep their part of it alive.
//!
//! Every frame in and out is logged on the `log` target `nucleon::frame` at trace level, one line each, like
//! Proton's `PN_TRACE_FRM=1`.

mod config;
mod error;
mod event;
mod fit;
mod link;
pub mod pair;
mod sasl;
mod scram;
mod session;
mod spare;
mod store;

pub use config::{
    Authenticator, ConnectionConfig, PlainAuthenticator, SaslClientConfig, SaslCredentials,
    SaslServerConfig, SaslVerdict, Side, TransportSecurity, DEFAULT_MAX_MESSAGE_SIZE,
    MAX_MAX_FRAME_SIZE, UNLIMITED,
};
pub use error::EngineError;
pub use event::{DeliveryId, Event, LinkId, SessionId};
pub use link::LinkConfig;
pub use scram::{
    ParseScramCredentialError, ScramAuthenticator, ScramCredential, ScramHash,
    SCRAM_DEFAULT_ITERATIONS, SCRAM_MAX_ITERATIONS, SCRAM_MIN_ITERATIONS,
};
pub use store::SeqMap;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::codec::Encode;
use crate::frame::{
    Close, Error, ErrorCondition, Frame, FrameBody, FrameHeader, Open, Performative,
    ProtocolHeader, ProtocolId, SaslFrame,
};
use link::Link;
use sasl::SaslState;
use session::Session;
use store::{IdMap, NumberPool, Slab};

/// The smallest max-frame-size, and the limit before `open` is exchanged [AMQP 1.0 §2.7.1].
pub const MIN_MAX_FRAME_SIZE: u32 = 512;

const TRACE: &str = "nucleon::frame";

/// What an empty output buffer starts with when a frame is written to it, so a burst of frames grows it in a
/// few steps.
const OUT_CHUNK: usize = 16 * 1024;

/// An input buffer larger than this that a read fills at most a quarter of is shrunk to what it holds.
const SHRINK_ABOVE: usize = 16 * 1024;

/// The state of one direction of an endpoint (connection, session or link).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Half {
    /// Not yet opened / begun / attached.
    Idle,
    /// Opened and not yet closed.
    Open,
    /// Closed (or ended, or detached).
    Closed,
}

/// Where the input stream is.
///
/// ```text
///   Header ──AMQP──▶ Amqp ──close/error──▶ Done
///     │  ▲
///   SASL │ outcome ok (expect the AMQP header next)
///     ▼  │
///    Sasl ──failure──▶ Done
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Header,
    Sasl,
    Amqp,
    Done,
}

/// One AMQP connection, sans IO. See the [module documentation](self) for the polling contract.
pub struct Connection {
    config: ConnectionConfig,
    phase: Phase,
    sasl: SaslState,
    /// Bytes read and not yet decoded: empty (no allocation) between frames once processed.
    input: BytesMut,
    /// How many bytes `input` held when last processed: what is past this is new.
    input_seen: usize,
    input_offset: usize,
    /// Bytes waiting to be written: given up (no allocation) once all are taken.
    out: BytesMut,
    /// AMQP frames produced before our AMQP protocol header went out (e.g. `open` during SASL).
    deferred: BytesMut,
    amqp_header_sent: bool,
    events: VecDeque<Event>,
    closed_emitted: bool,
    local: Half,
    remote: Half,
    open_written: bool,
    remote_open: Option<Open>,
    remote_max_frame: u32,
    remote_channel_max: u16,
    remote_idle_timeout: Option<Duration>,
    now: Instant,
    last_input: Instant,
    last_output: Instant,
    /// When the transport started: the open timeout counts from here.
    created: Instant,
    sessions: Slab<Session>,
    local_channels: IdMap<u16, SessionId>,
    channel_pool: NumberPool,
    remote_channels: IdMap<u16, SessionId>,
    links: Slab<Link>,
    /// The session of each `Delivery` event not yet polled, in order: their frames hold the session's
    /// incoming window until the application takes them.
    unpolled_deliveries: VecDeque<SessionId>,
    /// Whether the peer's too-short idle-time-out has been logged.
    idle_floor_logged: bool,
    /// Bytes held in unfinished multi-frame deliveries, all links together.
    partial_bytes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// What the transport under a server's SASL is (see [`Connection::set_transport_security`]).
    transport: Option<TransportSecurity>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("side", &self.config.side)
            .field("container_id", &self.config.container_id)
            .field("phase", &self.phase)
            .field("local", &self.local)
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Tells a server engine what its transport is, before any input: whether it is encrypted, whether SASL
    /// PLAIN may be offered on it, and the identity a verified client certificate gives. Then PLAIN is offered
    /// only where allowed, and EXTERNAL (first) only with an identity, which it grants [RFC 4422 appendix A]:
    /// the client's authorization identity must be empty or that identity. Without this call the engine
    /// offers what the authenticator offers, without restriction.
    pub fn set_transport_security(&mut self, security: TransportSecurity) {
        self.transport = Some(security);
    }

    /// A new engine. A client writes its protocol header at once (see `poll_transmit`).
    pub fn new(mut config: ConnectionConfig, now: Instant) -> Self {
        config.max_frame_size = config
            .max_frame_size
            .clamp(MIN_MAX_FRAME_SIZE, MAX_MAX_FRAME_SIZE);
        let mut c = Connection {
            sasl: SaslState::new(&config),
            config,
            phase: Phase::Header,
            input: BytesMut::new(),
            input_seen: 0,
            input_offset: 0,
            out: BytesMut::new(),
            deferred: BytesMut::new(),
            amqp_header_sent: false,
            events: VecDeque::new(),
            closed_emitted: false,
            local: Half::Idle,
            remote: Half::Idle,
            open_written: false,
            remote_open: None,
            remote_max_frame: MIN_MAX_FRAME_SIZE,
            remote_channel_max: 0,
            remote_idle_timeout: None,
            now,
            last_input: now,
            last_output: now,
            created: now,
            sessions: Slab::default(),
            local_channels: IdMap::default(),
            channel_pool: NumberPool::default(),
            remote_channels: IdMap::default(),
            links: Slab::default(),
            unpolled_deliveries: VecDeque::new(),
            idle_floor_logged: false,
            partial_bytes: Default::default(),
            transport: None,
        };
        if c.config.side == Side::Client {
            if c.config.sasl_client.is_some() {
                c.write_header(ProtocolHeader::SASL);
            } else {
                c.write_amqp_header();
            }
        }
        c
    }

    /// The configuration this engine was built with.
    pub fn config(&self) -> &ConnectionConfig {
        &self.config
    }

    /// The peer's `open`, once it has arrived.
    pub fn remote_open(&self) -> Option<&Open> {
        self.remote_open.as_ref()
    }

    /// The largest frame we send: the peer's max-frame-size.
    pub fn remote_max_frame_size(&self) -> u32 {
        self.remote_max_frame
    }

    // ----- inputs -----

    /// Feeds bytes read from the transport. All of `data` is consumed: bytes that do not yet form a whole
    /// frame are buffered (at most one frame's worth). Returns the number of bytes consumed.
    pub fn handle_input(&mut self, data: &[u8], now: Instant) -> usize {
        if self.phase != Phase::Done {
            self.input.extend_from_slice(data);
        }
        self.process_input(now);
        data.len()
    }

    /// The input buffer, with room for at least `want` more bytes, to read from the transport straight into
    /// (appending, e.g. with [`BufMut`]) before calling [`process_input`](Self::process_input): the same as
    /// [`handle_input`](Self::handle_input) without its copy. Bytes already in it are a partial frame; leave
    /// them as they are.
    pub fn input_buffer(&mut self, want: usize) -> &mut BytesMut {
        if self.input.is_empty() {
            self.input = spare::take(want);
        } else if !self.input.try_reclaim(want) {
            if self.input.len() <= want {
                // A partial frame at the end of a full buffer: it moves to a kept buffer (a copy no larger
                // than the read) rather than making the buffer grow.
                let mut room = spare::take(self.input.len() + want);
                room.extend_from_slice(&self.input);
                spare::give(std::mem::replace(&mut self.input, room));
            } else {
                // A large frame arriving over many reads grows its buffer (doubling), not copied per read.
                self.input.reserve(want);
            }
        }
        &mut self.input
    }

    /// Handles the bytes appended to [`input_buffer`](Self::input_buffer) since the last call (none is fine:
    /// then it only gives back room). Bytes that do not yet form a whole frame stay buffered (at most one
    /// frame's worth); once none do, the buffer is given up.
    pub fn process_input(&mut self, now: Instant) {
        self.now = now;
        if self.phase == Phase::Done || self.input.is_empty() {
            spare::give(std::mem::take(&mut self.input));
            self.input_seen = 0;
            return;
        }
        if self.input.len() > self.input_seen {
            self.last_input = now;
        }
        // A large buffer at most a quarter full (a small read into a big one, or none): give back the room it
        // did not use (the allocator shrinks it in place), since the frames split off it keep the whole
        // allocation alive for as long as they live, and an idle connection should hold no more than its
        // partial frame. Small buffers stay whole, to be used again (see `spare`).
        if self.input.capacity() > SHRINK_ABOVE && self.input.len() <= self.input.capacity() / 4 {
            let mut bytes = Vec::from(std::mem::take(&mut self.input));
            bytes.shrink_to_fit();
            self.input = BytesMut::from(Bytes::from(bytes));
        }
        self.decode_input();
        if self.input.is_empty() {
            spare::give(std::mem::take(&mut self.input));
        }
        self.input_seen = self.input.len();
    }

    /// Tells the engine that the deadline from [`poll_timeout`](Self::poll_timeout) has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.now = now;
        if self.phase == Phase::Done {
            return;
        }
        if let Some(deadline) = self.open_deadline() {
            if now >= deadline {
                self.fail(Error::new(
                    ErrorCondition::ResourceLimitExceeded,
                    format!(
                        "the peer did not open the connection within {:?}",
                        self.config.open_timeout.unwrap_or_default()
                    ),
                ));
                return;
            }
        }
        if let Some(local) = self.local_idle_timeout() {
            if now.saturating_duration_since(self.last_input) >= local {
                self.fail(Error::new(
                    ErrorCondition::ResourceLimitExceeded,
                    "local-idle-timeout expired",
                ));
                return;
            }
        }
        if let Some(half) = self.heartbeat_interval() {
            if now.saturating_duration_since(self.last_output) >= half && self.out.is_empty() {
                self.write_empty_frame();
            }
        }
    }

    /// The peer shut down its write side: no more input will come.
    pub fn handle_read_closed(&mut self) {
        if self.phase == Phase::Done {
            return;
        }
        if self.remote != Half::Closed {
            self.events.push_back(Event::TransportError(Error::new(
                ErrorCondition::FramingError,
                "connection aborted: the peer closed the transport without a close frame",
            )));
        }
        self.finish();
    }

    /// The transport failed; `reason` says why (e.g. the IO error).
    pub fn handle_disconnected(&mut self, reason: impl Into<String>) {
        if self.phase == Phase::Done {
            return;
        }
        self.events.push_back(Event::TransportError(Error::new(
            ErrorCondition::Custom(crate::codec::Symbol::from_static("nucleon:io")),
            reason,
        )));
        self.finish();
    }

    // ----- outputs -----

    /// The next event, if any. Taking a [`Event::Delivery`] frees its place in the session's incoming window.
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front()?;
        if matches!(event, Event::Delivery { .. }) {
            if let Some(session) = self.unpolled_deliveries.pop_front() {
                self.delivery_consumed(session);
            }
        }
        Some(event)
    }

    /// Everything waiting to be written, as one buffer; `None` when there is nothing. Frames are coalesced:
    /// one call returns all frames produced since the last call.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Bytes> {
        self.now = now;
        self.flush_dispositions();
        if self.out.is_empty() {
            return None;
        }
        self.last_output = now;
        Some(std::mem::take(&mut self.out).freeze())
    }

    /// Writes everything waiting to be written into `buf` (as much as fits); returns the bytes written.
    pub fn poll_transmit_into<B: BufMut>(&mut self, buf: &mut B, now: Instant) -> usize {
        self.now = now;
        self.flush_dispositions();
        let n = self.out.len().min(buf.remaining_mut());
        if n > 0 {
            buf.put_slice(&self.out[..n]);
            self.consume_output(n, now);
        }
        n
    }

    /// Everything waiting to be written, to write straight from (empty when there is nothing); then say how
    /// much was written with [`consume_output`](Self::consume_output). The same as
    /// [`poll_transmit`](Self::poll_transmit) without taking the bytes out: what the transport does not take
    /// at once stays here, and counts in [`output_len`](Self::output_len).
    pub fn pending_output(&mut self, now: Instant) -> &[u8] {
        self.now = now;
        self.flush_dispositions();
        &self.out
    }

    /// The first `n` bytes of [`pending_output`](Self::pending_output) were written. Once all are, the
    /// output buffer is given up.
    pub fn consume_output(&mut self, n: usize, now: Instant) {
        let n = n.min(self.out.len());
        if n == 0 {
            return;
        }
        self.now = now;
        self.last_output = now;
        if n == self.out.len() {
            spare::give(std::mem::take(&mut self.out));
        } else {
            self.out.advance(n);
        }
    }

    /// The bytes waiting to be written.
    pub fn output_len(&self) -> usize {
        self.out.len()
    }

    /// The buffer memory the engine holds for input and output, in bytes (capacity, not just what is used):
    /// zero for an idle connection. Received payloads it handed out may keep more alive (see the
    /// [module documentation](self)).
    pub fn buffer_capacity(&self) -> usize {
        self.input.capacity() + self.out.capacity() + self.deferred.capacity()
    }

    /// When to call [`handle_timeout`](Self::handle_timeout): the earlier of our idle deadline and the next
    /// heartbeat the peer needs.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.phase == Phase::Done {
            return None;
        }
        let idle = self
            .local_idle_timeout()
            .and_then(|t| self.last_input.checked_add(t));
        let beat = self
            .heartbeat_interval()
            .and_then(|t| self.last_output.checked_add(t));
        [idle, beat, self.open_deadline()]
            .into_iter()
            .flatten()
            .min()
    }

    /// When the peer's `open` must have arrived by, while it has not.
    fn open_deadline(&self) -> Option<Instant> {
        match (self.remote_open.is_some(), self.config.open_timeout) {
            (false, Some(t)) => self.created.checked_add(t),
            _ => None,
        }
    }

    /// True once [`Event::TransportClosed`] has been polled and nothing is left to transmit.
    pub fn is_finished(&self) -> bool {
        self.closed_emitted && self.events.is_empty() && self.out.is_empty()
    }

    // ----- connection mutators -----

    /// Opens our end of the connection (sends `open` as soon as the protocol header allows).
    pub fn open(&mut self) -> Result<(), EngineError> {
        if self.local != Half::Idle {
            return Err(EngineError::IllegalState("the connection is already open"));
        }
        if self.phase == Phase::Done {
            return Err(EngineError::IllegalState("the transport is closed"));
        }
        self.local = Half::Open;
        self.write_open();
        Ok(())
    }

    /// Refuses new work (sessions, links, transfers, credit) unless our end of the connection is open and the
    /// transport is not closed.
    fn check_live(&self) -> Result<(), EngineError> {
        self.check_transport()?;
        if self.local != Half::Open {
            return Err(EngineError::IllegalState("the connection is not open"));
        }
        Ok(())
    }

    /// Refuses every change once the transport has closed: nothing may follow `TransportClosed`, not even an
    /// event caused by reacting to an event polled before it.
    fn check_transport(&self) -> Result<(), EngineError> {
        if self.phase == Phase::Done {
            return Err(EngineError::IllegalState("the transport is closed"));
        }
        Ok(())
    }

    /// Closes our end of the connection, with an optional error. The transport closes once the peer's
    /// `close` arrives (or at once if it already has).
    pub fn close(&mut self, error: Option<Error>) -> Result<(), EngineError> {
        if self.local == Half::Closed {
            return Err(EngineError::IllegalState(
                "the connection is already closed",
            ));
        }
        if self.phase == Phase::Done {
            return Err(EngineError::IllegalState("the transport is closed"));
        }
        if !self.open_written {
            self.write_open();
        }
        // Dispositions queued before the close go out before it.
        self.flush_dispositions();
        self.local = Half::Closed;
        self.write_frame(0, &Performative::Close(Close { error }), &[]);
        if self.remote == Half::Closed {
            self.finish();
        }
        Ok(())
    }

    // ----- internals: input -----

    fn decode_input(&mut self) {
        while self.phase != Phase::Done {
            let progressed = match self.phase {
                Phase::Header => self.read_header(),
                Phase::Sasl | Phase::Amqp => self.read_frame(),
                Phase::Done => false,
            };
            if !progressed {
                break;
            }
        }
    }

    fn read_header(&mut self) -> bool {
        if self.input.len() < ProtocolHeader::SIZE {
            return false;
        }
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&self.input.split_to(8));
        self.input_offset += 8;
        let header = ProtocolHeader::parse(raw).filter(ProtocolHeader::is_supported);
        log::trace!(target: TRACE, "<- {}", header.map_or_else(|| format!("bad header {raw:02x?}"), |h| h.to_string()));
        match (self.config.side, header) {
            (Side::Client, Some(h)) => self.client_header(h),
            (Side::Server, Some(h)) => self.server_header(h),
            (_, None) => {
                if self.config.side == Side::Server {
                    self.write_header(self.preferred_header());
                }
                self.fail_transport(Error::new(
                    ErrorCondition::FramingError,
                    format!("unsupported protocol header {raw:02x?}"),
                ));
            }
        }
        true
    }

    fn preferred_header(&self) -> ProtocolHeader {
        match &self.config.sasl_server {
            Some(s) if !self.sasl.done() && !s.allow_skip => ProtocolHeader::SASL,
            _ => ProtocolHeader::AMQP,
        }
    }

    fn client_header(&mut self, h: ProtocolHeader) {
        let expected = if self.config.sasl_client.is_some() && !self.sasl.done() {
            ProtocolId::Sasl
        } else {
            ProtocolId::Amqp
        };
        if h.id != expected {
            let why = if h.id == ProtocolId::Tls {
                " (it requires TLS: use amqps)"
            } else {
                ""
            };
            self.fail_transport(Error::new(
                ErrorCondition::FramingError,
                format!("the server answered with the {h} protocol header{why}"),
            ));
            return;
        }
        self.phase = match expected {
            ProtocolId::Sasl => Phase::Sasl,
            _ => Phase::Amqp,
        };
    }

    fn server_header(&mut self, h: ProtocolHeader) {
        match h.id {
            ProtocolId::Tls => self.events.push_back(Event::TlsRequested),
            ProtocolId::Sasl if self.config.sasl_server.is_some() && !self.sasl.done() => {
                self.write_header(ProtocolHeader::SASL);
                self.phase = Phase::Sasl;
                self.sasl_server_start();
            }
            ProtocolId::Amqp if self.preferred_header().id == ProtocolId::Amqp => {
                match self.skipping_user() {
                    Some(Ok(user)) => self.events.push_back(Event::SaslSkipped { user }),
                    Some(Err(())) => return self.refuse_skip(h),
                    None => {}
                }
                self.write_amqp_header();
                self.phase = Phase::Amqp;
            }
            ProtocolId::Amqp if self.config.sasl_server.is_some() => self.refuse_skip(h),
            _ => {
                self.write_header(self.preferred_header());
                self.fail_transport(Error::new(
                    ErrorCondition::NotAllowed,
                    format!("the client sent the {h} protocol header, which is not accepted here"),
                ));
            }
        }
    }

    /// For a server with SASL whose client skipped it: the user its authenticator accepts ANONYMOUS as,
    /// or `Err` if it refuses anonymous clients (a skipping client is anonymous: it presented nothing).
    /// `None` without SASL, or after it.
    fn skipping_user(&self) -> Option<Result<String, ()>> {
        let server = self
            .config
            .sasl_server
            .as_ref()
            .filter(|_| !self.sasl.done())?;
        let anonymous = SaslCredentials::Anonymous { trace: None };
        Some(match server.authenticator.authenticate(&anonymous, None) {
            SaslVerdict::Accept(user) => Ok(user),
            SaslVerdict::Reject(_) => Err(()),
        })
    }

    /// Refuses a client that skipped SASL [AMQP 1.0 §5.3.1]: the SASL header back, as the spec's header
    /// exchange says [AMQP 1.0 §2.2], then `amqp:not-allowed`.
    fn refuse_skip(&mut self, h: ProtocolHeader) {
        self.events.push_back(Event::AuthenticationFailed {
            mechanism: None,
            user: None,
        });
        self.write_header(ProtocolHeader::SASL);
        self.fail_transport(Error::new(
            ErrorCondition::NotAllowed,
            format!("the client sent the {h} protocol header, skipping SASL, which this server requires"),
        ));
    }

    /// The frame size the peer may send us now: 512 until its `open`, then our max-frame-size.
    fn input_frame_limit(&self) -> u32 {
        if self.remote_open.is_some() {
            self.config.max_frame_size
        } else {
            MIN_MAX_FRAME_SIZE
        }
    }

    fn read_frame(&mut self) -> bool {
        if self.input.len() < FrameHeader::SIZE {
            return false;
        }
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&self.input[..8]);
        let header = match FrameHeader::parse(raw, self.input_offset) {
            Ok(h) => h,
            Err(e) => {
                self.fail(Error::new(e.condition(), e.to_string()));
                return true;
            }
        };
        if header.size > self.input_frame_limit() {
            self.fail(Error::new(
                ErrorCondition::FramingError,
                format!(
                    "frame of {} bytes exceeds the max-frame-size of {}",
                    header.size,
                    self.input_frame_limit()
                ),
            ));
            return true;
        }
        // Nothing is reserved for the rest of the frame: the buffer grows only with bytes that arrived.
        if self.input.len() < header.size as usize {
            return false;
        }
        let mut bytes = self.input.split_to(header.size as usize).freeze();
        if !is_traffic(&bytes, header.doff) {
            // What is decoded from the rare frames (open, begin, attach, ..., SASL) can live as long as the
            // connection or a link, and symbols and binaries decoded from a frame share its bytes: a copy of
            // the frame's own keeps them from holding the whole input buffer alive.
            bytes = Bytes::copy_from_slice(&bytes);
        }
        let offset = self.input_offset;
        self.input_offset += bytes.len();
        match Frame::decode(bytes, offset) {
            Ok(frame) => self.handle_frame(frame),
            Err(e) => self.fail(Error::new(e.condition(), e.to_string())),
        }
        true
    }

    fn handle_frame(&mut self, frame: Frame) {
        if log::log_enabled!(target: TRACE, log::Level::Trace) {
            log::trace!(target: TRACE, "<- {frame}");
        }
        match (self.phase, frame.body) {
            (Phase::Sasl, FrameBody::Sasl(s)) => self.handle_sasl(s),
            (Phase::Amqp, FrameBody::Empty) => {}
            (
                Phase::Amqp,
                FrameBody::Amqp {
                    performative,
                    payload,
                },
            ) => self.handle_performative(frame.channel, performative, payload),
            (_, body) => self.fail(Error::new(
                ErrorCondition::FramingError,
                format!("unexpected {} frame", frame_kind(&body)),
            )),
        }
    }

    fn handle_performative(&mut self, channel: u16, p: Performative, payload: Bytes) {
        match p {
            Performative::Open(open) => self.on_open(channel, *open),
            Performative::Close(close) => self.on_close(close.error),
            _ if self.remote != Half::Open => self.fail(Error::new(
                ErrorCondition::IllegalState,
                format!("{} received before open or after close", p.name()),
            )),
            Performative::Begin(begin) => self.on_begin(channel, begin),
            other => match self.remote_channels.get(&channel).copied() {
                Some(session) => self.on_session_frame(session, other, payload),
                None => self.fail(Error::new(
                    ErrorCondition::NotAllowed,
                    format!(
                        "{} on channel {channel}, which has no session",
                        other.name()
                    ),
                )),
            },
        }
    }

    fn on_open(&mut self, channel: u16, open: Open) {
        if self.remote != Half::Idle || channel != 0 {
            self.fail(Error::new(
                ErrorCondition::IllegalState,
                "a second open, or an open on a channel other than 0",
            ));
            return;
        }
        self.remote = Half::Open;
        self.remote_max_frame = open.max_frame_size.max(MIN_MAX_FRAME_SIZE);
        self.remote_channel_max = open.channel_max;
        self.remote_idle_timeout = open
            .idle_time_out
            .filter(|&ms| ms > 0)
            .map(|ms| Duration::from_millis(ms.into()));
        let floor = self.config.min_remote_idle_timeout;
        if let Some(t) = self.remote_idle_timeout.filter(|&t| t < floor) {
            if !self.idle_floor_logged {
                log::warn!(
                    "the peer asked for an idle-time-out of {t:?}; heartbeating for {floor:?} instead (min_remote_idle_timeout)"
                );
                self.idle_floor_logged = true;
            }
            self.remote_idle_timeout = Some(floor);
        }
        self.remote_open = Some(open.clone());
        self.events
            .push_back(Event::ConnectionRemoteOpen(Box::new(open)));
    }

    fn on_close(&mut self, error: Option<Error>) {
        if self.remote == Half::Closed {
            return;
        }
        self.remote = Half::Closed;
        self.events.push_back(Event::ConnectionRemoteClose(error));
        if self.local == Half::Closed {
            self.finish();
        }
    }

    // ----- internals: output -----

    fn write_header(&mut self, h: ProtocolHeader) {
        log::trace!(target: TRACE, "-> {h}");
        reserve_out(&mut self.out, ProtocolHeader::SIZE);
        self.out.extend_from_slice(&h.to_bytes());
    }

    fn write_amqp_header(&mut self) {
        self.write_header(ProtocolHeader::AMQP);
        self.amqp_header_sent = true;
        let deferred = std::mem::take(&mut self.deferred);
        self.out.unsplit(deferred);
    }

    fn write_open(&mut self) {
        let c = &self.config;
        let open = Open {
            container_id: c.container_id.clone(),
            hostname: c.hostname.clone(),
            max_frame_size: c.max_frame_size,
            channel_max: c.channel_max,
            // Half the threshold we enforce, as AMQP 1.0 §2.4.5 recommends (and Proton does): a peer that
            // heartbeats at half the advertised value then has a 4x margin before we time it out.
            idle_time_out: c
                .idle_timeout
                .map(|d| d.as_millis().div_ceil(2).min(u32::MAX.into()) as u32),
            offered_capabilities: non_empty(&c.offered_capabilities),
            desired_capabilities: non_empty(&c.desired_capabilities),
            properties: c.properties.clone(),
            ..Open::default()
        };
        self.open_written = true;
        self.write_frame(0, &Performative::from(open), &[]);
    }

    /// Encodes one AMQP frame (header, performative, payload) into the output. Nothing follows our `close` or
    /// the end of the transport.
    ///
    /// No frame is larger than the peer's max-frame-size (512 until its `open`), except our own `open`: what is
    /// optional in a frame is shrunk to fit ([`fit`]), and a frame that cannot fit at all ends its session (or,
    /// outside a session, closes the connection) with `amqp:frame-size-too-small` [AMQP 1.0 §2.7.1, §2.8.15].
    fn write_frame(&mut self, channel: u16, p: &Performative, payload: &[u8]) {
        let closed = self.local == Half::Closed && !matches!(p, Performative::Close(_));
        if closed || self.phase == Phase::Done {
            return;
        }
        let limit = self.remote_max_frame as usize;
        // Encoded straight into the output and measured there, so the performative's size is computed once
        // (by its own encoding) and not again to check the limit; a frame over the limit is taken back out.
        let buf = if self.amqp_header_sent {
            &mut self.out
        } else {
            &mut self.deferred
        };
        // Room for the payload and a typical performative up front, so the frame is not grown in pieces (an
        // empty output buffer starts at OUT_CHUNK).
        reserve_out(buf, FrameHeader::SIZE + PERFORMATIVE_ROOM + payload.len());
        let start = buf.len();
        buf.put_u32(0);
        buf.put_u8(2);
        buf.put_u8(0);
        buf.put_u16(channel);
        p.encode(buf);
        let size = buf.len() - start + payload.len();
        if size <= limit || matches!(p, Performative::Open(_)) {
            buf[start..start + 4].copy_from_slice(&(size as u32).to_be_bytes());
            buf.put_slice(payload);
            if log::log_enabled!(target: TRACE, log::Level::Trace) {
                trace_frame(channel, p, payload);
            }
            return;
        }
        buf.truncate(start);
        let mut smaller = p.clone();
        if fit::fit(&mut smaller, payload.len(), limit) {
            return self.write_frame(channel, &smaller, payload);
        }
        if let Performative::Close(_) = p {
            return self.write_frame(channel, &Performative::Close(Close::default()), &[]);
        }
        let error = Error::new(
            ErrorCondition::FrameSizeTooSmall,
            format!(
                "a {} frame of {size} bytes cannot fit the peer's max-frame-size of {limit}",
                p.name()
            ),
        );
        // A frame of a session (an attach mirroring a huge name) ends that session; any other the
        // connection.
        let session = self.local_channels.get(&channel).copied();
        match (p, session) {
            (Performative::Begin(_) | Performative::End(_), _) | (_, None) => self.fail(error),
            (_, Some(session)) => self.session_error(session, error),
        }
    }

    fn write_sasl_frame(&mut self, f: SaslFrame) {
        let frame = Frame {
            channel: 0,
            body: FrameBody::Sasl(f),
        };
        if log::log_enabled!(target: TRACE, log::Level::Trace) {
            log::trace!(target: TRACE, "-> {frame}");
        }
        reserve_out(&mut self.out, frame.encoded_size());
        frame.encode(&mut self.out);
    }

    fn write_empty_frame(&mut self) {
        log::trace!(target: TRACE, "-> [0] (empty frame)");
        reserve_out(&mut self.out, FrameHeader::SIZE);
        self.out.extend_from_slice(&[0, 0, 0, 8, 2, 0, 0, 0]);
    }

    fn local_idle_timeout(&self) -> Option<Duration> {
        match self.phase {
            Phase::Amqp if self.open_written => self.config.idle_timeout,
            _ => None,
        }
    }

    fn heartbeat_interval(&self) -> Option<Duration> {
        match self.phase {
            Phase::Amqp if self.amqp_header_sent && self.local == Half::Open => {
                self.remote_idle_timeout.map(|t| t / 2)
            }
            _ => None,
        }
    }

    // ----- internals: failure and the end -----

    /// A connection-level protocol error: send `close` with the error and end the transport.
    fn fail(&mut self, error: Error) {
        if self.phase == Phase::Done {
            return;
        }
        if self.phase == Phase::Amqp && self.local != Half::Closed {
            if !self.open_written {
                self.write_open();
            }
            self.local = Half::Closed;
            self.write_frame(
                0,
                &Performative::Close(Close {
                    error: Some(error.clone()),
                }),
                &[],
            );
        }
        self.fail_transport(error);
    }

    /// The transport cannot go on: report the error and end.
    fn fail_transport(&mut self, error: Error) {
        self.events.push_back(Event::TransportError(error));
        self.finish();
    }

    fn finish(&mut self) {
        if self.closed_emitted {
            return;
        }
        self.phase = Phase::Done;
        self.input = BytesMut::new();
        self.closed_emitted = true;
        self.events.push_back(Event::TransportClosed);
    }
}

/// Whether a frame is a `transfer`, `flow` or `disposition` (or empty): the frames of message traffic, whose
/// decoded parts are dropped once handled. Read from the descriptor at the start of the body (`0x00 0x53 code`,
/// as every peer encodes it); anything else counts as not traffic.
fn is_traffic(frame: &[u8], doff: u8) -> bool {
    let body = usize::from(doff) * 4;
    match frame.get(body..body + 3) {
        None => true,
        Some([0x00, 0x53, code]) => matches!(code, 0x13..=0x15),
        Some(_) => false,
    }
}

/// Room for `size` more bytes in an output buffer; an empty one (given up after its last write) starts at
/// [`OUT_CHUNK`].
fn reserve_out(buf: &mut BytesMut, size: usize) {
    if buf.capacity() == 0 {
        *buf = spare::take(size.max(OUT_CHUNK));
    } else {
        buf.reserve(size);
    }
}

fn non_empty(v: &[crate::codec::Symbol]) -> Option<Vec<crate::codec::Symbol>> {
    (!v.is_empty()).then(|| v.to_vec())
}

fn frame_kind(body: &FrameBody) -> &'static str {
    match body {
        FrameBody::Empty => "empty",
        FrameBody::Amqp { .. } => "AMQP",
        FrameBody::Sasl(_) => "SASL",
    }
}

/// The bytes `write_frame` reserves for a performative before encoding it: more than a transfer, flow or
/// disposition takes; a larger one (an `attach`) grows the buffer as it is encoded.
const PERFORMATIVE_ROOM: usize = 128;

/// Logs an AMQP frame we wrote, at trace level.
fn trace_frame(channel: u16, p: &Performative, payload: &[u8]) {
    let frame = Frame {
        channel,
        body: FrameBody::Amqp {
            performative: p.clone(),
            payload: Bytes::copy_from_slice(payload),
        },
    };
    log::trace!(target: TRACE, "-> {frame}");
}

#[cfg(test)]
mod tests;
