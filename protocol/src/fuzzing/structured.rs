//! The structure-aware engine fuzz target: fuzz input → a [`Setup`] and a sequence of [`Op`]s → frames the crate's
//! own encoders write → a server [`Connection`](crate::engine::Connection) run by a [`Driver`].
//!
//! A byte-level fuzzer rarely gets past the handshake with frames that decode, let alone to "2 000 transfers
//! whose delivery-ids step by 65 536". Here the fuzz input is read with [`arbitrary`] as a [`Setup`] followed by
//! ops until the input ends: every input means *something*, and the ops are performatives with small structured
//! parameters. Numbers are drawn as [`N32`]/[`N16`], which hit small values, values near the maximum, powers of
//! two and anything else equally easily; [`Op::Repeat`] repeats a frame up to [`MAX_REPEAT`] times, stepping its
//! main number (delivery-id, handle, channel, disposition range), so a few bytes can say "many".
//!
//! What the engine is fed is bounded: at most [`MAX_FRAMES`] frames and [`MAX_STREAM`] bytes; ops beyond either
//! are dropped. The [memory bound](Script::memory_bound) is relative to the bytes actually fed
//! ([`Script::stream_len`]), since a tiny input can legitimately expand into megabytes of frames.
//!
//! The types implement [`Emit`], the inverse of their derived `Arbitrary`: [`to_fuzz_input`] turns a chosen
//! setup and op sequence into the bytes that parse back to it, which is how the seed corpus is written.

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use super::{engine_server_config, finish, Driver, AUTO_SEND, SASL_USER};
use crate::codec::Symbol;
use crate::engine::ConnectionConfig;
use crate::frame::{
    Accepted, Attach, Begin, Close, Detach, Disposition, End, Error, ErrorCondition, Flow, Frame,
    FrameBody, Modified, Open, ProtocolHeader, Received, ReceiverSettleMode, Rejected, Released,
    Role, SaslFrame, SaslInit, SenderSettleMode, Source, Target, Transfer,
};
use crate::message::Message;

/// At most this many repetitions in one [`Op::Repeat`] (its `count` is taken modulo this, plus one).
pub const MAX_REPEAT: u16 = 8192;

/// At most this many frames (and raw pieces) are fed per input; the ops after that are dropped.
pub const MAX_FRAMES: usize = 32_768;

/// At most this many bytes are fed per input; the op that would go past it, and all after it, are dropped.
pub const MAX_STREAM: usize = 8 << 20;

/// Heap growth allowed per byte fed to the engine (see [`Script::memory_bound`]).
pub const MEMORY_PER_BYTE: usize = 64;

/// Heap growth allowed on top of [`MEMORY_PER_BYTE`] times the bytes fed (see [`Script::memory_bound`]).
pub const MEMORY_BUDGET: usize = 64 << 20;

/// Writes a value as the bytes its `Arbitrary` implementation reads back as that value.
pub trait Emit {
    /// Appends the bytes to `out`.
    fn emit(&self, out: &mut Vec<u8>);
}

macro_rules! emit_le {
    ($($t:ty),*) => {$(
        impl Emit for $t {
            fn emit(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
emit_le!(u8, u16, u32, u64);

impl Emit for bool {
    fn emit(&self, out: &mut Vec<u8>) {
        out.push(u8::from(*self));
    }
}

impl<T: Emit> Emit for Option<T> {
    fn emit(&self, out: &mut Vec<u8>) {
        self.is_some().emit(out);
        if let Some(v) = self {
            v.emit(out);
        }
    }
}

impl<T: Emit> Emit for Box<T> {
    fn emit(&self, out: &mut Vec<u8>) {
        (**self).emit(out);
    }
}

/// The discriminant that derived `Arbitrary` maps to variant `index` of `count`: it reads a `u32` `d` and picks
/// `(d * count) >> 32`, so the smallest `d` for `index` is `ceil(index * 2^32 / count)`.
fn emit_variant(index: u64, count: u64, out: &mut Vec<u8>) {
    let d = (index << 32).div_ceil(count);
    (d as u32).emit(out);
}

/// A struct with named fields, deriving `Arbitrary` and implementing [`Emit`] to match.
macro_rules! wire_struct {
    ($(#[$m:meta])* pub struct $name:ident { $($(#[$fm:meta])* pub $f:ident : $t:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Arbitrary, Clone, Debug, PartialEq)]
        pub struct $name { $($(#[$fm])* pub $f: $t),* }

        impl Emit for $name {
            fn emit(&self, out: &mut Vec<u8>) {
                $(self.$f.emit(out);)*
            }
        }
    };
}

/// An enum whose variants are unit or hold one value, deriving `Arbitrary` and implementing [`Emit`] to match.
macro_rules! wire_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $var:ident $(($t:ty))?),* $(,)? }) => {
        $(#[$m])*
        #[derive(Arbitrary, Clone, Debug, PartialEq)]
        pub enum $name { $($(#[$vm])* $var $(($t))?),* }

        impl Emit for $name {
            #[allow(unused_assignments, non_snake_case)]
            fn emit(&self, out: &mut Vec<u8>) {
                const COUNT: u64 = [$(stringify!($var)),*].len() as u64;
                let mut index = 0u64;
                $(
                    wire_enum!(@arm self, out, index, COUNT, $name, $var $(, $t)?);
                    index += 1;
                )*
                unreachable!("every variant is listed")
            }
        }
    };
    (@arm $self:ident, $out:ident, $index:ident, $count:ident, $name:ident, $var:ident, $t:ty) => {
        if let $name::$var(v) = $self {
            emit_variant($index, $count, $out);
            v.emit($out);
            return;
        }
    };
    (@arm $self:ident, $out:ident, $index:ident, $count:ident, $name:ident, $var:ident) => {
        if let $name::$var = $self {
            emit_variant($index, $count, $out);
            return;
        }
    };
}

wire_enum! {
    /// A `u32` drawn so that both ends of the range are as likely as the middle.
    pub enum N32 {
        /// `0..=255`.
        Small(u8),
        /// `u32::MAX` minus `0..=255`.
        NearMax(u8),
        /// `1 << (n % 32)`.
        Pow2(u8),
        /// Anything.
        Any(u32),
    }
}

impl N32 {
    /// The number.
    pub fn get(&self) -> u32 {
        match *self {
            N32::Small(v) => u32::from(v),
            N32::NearMax(v) => u32::MAX - u32::from(v),
            N32::Pow2(n) => 1 << (n % 32),
            N32::Any(v) => v,
        }
    }
}

wire_enum! {
    /// A `u16` drawn like [`N32`].
    pub enum N16 {
        /// `0..=255`.
        Small(u8),
        /// `u16::MAX` minus `0..=255`.
        NearMax(u8),
        /// `1 << (n % 16)`.
        Pow2(u8),
        /// Anything.
        Any(u16),
    }
}

impl N16 {
    /// The number.
    pub fn get(&self) -> u16 {
        match *self {
            N16::Small(v) => u16::from(v),
            N16::NearMax(v) => u16::MAX - u16::from(v),
            N16::Pow2(n) => 1 << (n % 16),
            N16::Any(v) => v,
        }
    }
}

wire_enum! {
    /// What comes before the ops.
    pub enum Preamble {
        /// The AMQP protocol header.
        Amqp,
        /// A SASL header, `sasl-init` for ANONYMOUS, then (without waiting for the outcome) the AMQP header.
        SaslAnonymous,
        /// The same with PLAIN for [`SASL_USER`].
        SaslPlain,
        /// The same with PLAIN and a wrong password.
        SaslWrongPassword,
        /// Nothing: the ops start the stream.
        Nothing,
    }
}

wire_enum! {
    /// How the stream is cut into `handle_input` calls.
    pub enum Cut {
        /// One call per frame (or raw piece).
        PerFrame,
        /// One call per op: all the frames of a repeat at once.
        PerOp,
        /// Each frame cut in two, in the middle.
        Halves,
    }
}

wire_struct! {
    /// The configuration of a run: what is read first from the fuzz input.
    pub struct Setup {
        /// What comes first in the stream.
        pub preamble: Preamble,
        /// The server: bits 0-2 as in [`engine_server_config`] (SASL, 2 s idle timeout, 512-byte frames and a
        /// session window of 8); bit 3 a max-frame-size of `u32::MAX`; bit 4 a session window of `u32::MAX`.
        pub config: u8,
        /// How the stream is cut.
        pub cut: Cut,
    }
}

wire_struct! {
    /// An `open` from container `fuzz-client`.
    pub struct OpenOp {
        /// The channel max.
        pub channel_max: N16,
        /// The max-frame-size.
        pub max_frame_size: N32,
        /// The idle time-out, in milliseconds.
        pub idle_time_out: Option<N32>,
    }
}

wire_struct! {
    /// A `begin`.
    pub struct BeginOp {
        /// The frame's channel; stepped by [`Op::Repeat`].
        pub channel: N16,
        /// Set when answering a begin of ours.
        pub remote_channel: Option<N16>,
        /// The first transfer-id.
        pub next_outgoing_id: N32,
        /// The incoming window.
        pub incoming_window: N32,
        /// The outgoing window.
        pub outgoing_window: N32,
        /// The handle max.
        pub handle_max: N32,
    }
}

wire_struct! {
    /// An `attach` of link `link-<name>` with source and target `fuzz-queue`.
    pub struct AttachOp {
        /// The channel.
        pub channel: N16,
        /// The handle; stepped by [`Op::Repeat`] (as is the name).
        pub handle: N32,
        /// The link name's number.
        pub name: u16,
        /// The role: our (the client's) side is the sender if true.
        pub sender: bool,
        /// The sender settle mode: 0 unsettled, 1 settled, otherwise mixed.
        pub snd_settle_mode: u8,
        /// The receiver settle mode: second if odd.
        pub rcv_settle_mode: u8,
        /// The initial delivery-count (a sender must send one).
        pub initial_delivery_count: Option<N32>,
        /// The max message size.
        pub max_message_size: Option<N32>,
        /// A dynamic source (for a receiver) or target (for a sender).
        pub dynamic: bool,
    }
}

wire_struct! {
    /// The link part of a `flow`.
    pub struct LinkFlow {
        /// The handle; stepped by [`Op::Repeat`].
        pub handle: N32,
        /// The delivery-count.
        pub delivery_count: Option<N32>,
        /// The link credit.
        pub link_credit: Option<N32>,
        /// Messages available.
        pub available: Option<N32>,
        /// Drain.
        pub drain: bool,
    }
}

wire_struct! {
    /// A `flow`.
    pub struct FlowOp {
        /// The channel.
        pub channel: N16,
        /// The next incoming id; stepped by [`Op::Repeat`] when there is no link part.
        pub next_incoming_id: Option<N32>,
        /// The incoming window.
        pub incoming_window: N32,
        /// The next outgoing id.
        pub next_outgoing_id: N32,
        /// The outgoing window.
        pub outgoing_window: N32,
        /// The link part, if any.
        pub link: Option<LinkFlow>,
        /// Ask for the peer's flow state back.
        pub echo: bool,
    }
}

wire_enum! {
    /// What a transfer carries.
    pub enum Payload {
        /// Nothing.
        Nothing,
        /// A message with a `data` body of this many bytes.
        Message(u16),
        /// This many bytes of `0x55`, not a message.
        Raw(u16),
    }
}

wire_struct! {
    /// A `transfer`.
    pub struct TransferOp {
        /// The channel.
        pub channel: N16,
        /// The handle.
        pub handle: N32,
        /// The delivery-id; stepped by [`Op::Repeat`].
        pub delivery_id: Option<N32>,
        /// The delivery-tag: this many bytes (modulo 40), the last ones the repetition number.
        pub tag: Option<u8>,
        /// The settled flag.
        pub settled: Option<bool>,
        /// More transfers follow for this delivery.
        pub more: bool,
        /// The delivery is aborted.
        pub aborted: bool,
        /// The payload.
        pub payload: Payload,
    }
}

wire_enum! {
    /// A delivery state in a disposition.
    pub enum State {
        /// `accepted`.
        Accepted,
        /// `rejected`, with an error.
        Rejected,
        /// `released`.
        Released,
        /// `modified`, delivery failed.
        Modified,
        /// `received` at this section and offset.
        Received(N32),
    }
}

wire_struct! {
    /// A `disposition`.
    pub struct DispositionOp {
        /// The channel.
        pub channel: N16,
        /// The role of the sender of the disposition: receiver if true.
        pub receiver: bool,
        /// The first delivery-id; stepped by [`Op::Repeat`] (as is `last`).
        pub first: N32,
        /// The last delivery-id.
        pub last: Option<N32>,
        /// Settled.
        pub settled: bool,
        /// The state.
        pub state: Option<State>,
    }
}

wire_struct! {
    /// A `detach`.
    pub struct DetachOp {
        /// The channel.
        pub channel: N16,
        /// The handle; stepped by [`Op::Repeat`].
        pub handle: N32,
        /// Closed, not only detached.
        pub closed: bool,
        /// With an error.
        pub error: bool,
    }
}

wire_struct! {
    /// A frame header alone, claiming a frame of `size` bytes: what follows in the stream becomes its body.
    pub struct HeaderOp {
        /// The size it claims.
        pub size: N32,
        /// The data offset, in 4-byte words.
        pub doff: u8,
        /// A SASL frame rather than an AMQP one.
        pub sasl: bool,
        /// The channel.
        pub channel: N16,
    }
}

wire_enum! {
    /// The ops [`Op::Repeat`] can repeat.
    pub enum Repeated {
        /// `begin`s, stepping the channel.
        Begin(BeginOp),
        /// `attach`es, stepping the handle and the name.
        Attach(AttachOp),
        /// `flow`s, stepping the handle (or next-incoming-id).
        Flow(FlowOp),
        /// `transfer`s, stepping the delivery-id.
        Transfer(TransferOp),
        /// `disposition`s, stepping the range.
        Disposition(DispositionOp),
        /// `detach`es, stepping the handle.
        Detach(DetachOp),
        /// Empty frames on a channel, stepping it.
        Empty(N16),
    }
}

wire_enum! {
    /// One step of what the client does.
    pub enum Op {
        /// An `open`.
        Open(OpenOp),
        /// A `begin`.
        Begin(BeginOp),
        /// An `attach`.
        Attach(AttachOp),
        /// A `flow`.
        Flow(FlowOp),
        /// A `transfer`.
        Transfer(TransferOp),
        /// A `disposition`.
        Disposition(DispositionOp),
        /// A `detach`.
        Detach(DetachOp),
        /// An `end` on a channel, with an error if true.
        End(EndOp),
        /// A `close`, with an error if true.
        Close(bool),
        /// An empty frame (a heartbeat) on a channel.
        Empty(N16),
        /// An op repeated.
        Repeat(RepeatOp),
        /// Raw bytes: a frame header alone.
        Header(HeaderOp),
        /// Raw bytes: this many (modulo 64) bytes of garbage, each `0xa5` xor its position.
        Garbage(u8),
        /// Another protocol header: AMQP if true, else SASL.
        ProtocolHeader(bool),
        /// Simulated time passes: this many milliseconds, then the engine's timer fires if it is due.
        Advance(N32),
    }
}

wire_struct! {
    /// An `end`.
    pub struct EndOp {
        /// The channel.
        pub channel: N16,
        /// With an error.
        pub error: bool,
    }
}

wire_struct! {
    /// An op repeated.
    pub struct RepeatOp {
        /// Repetitions: `count % MAX_REPEAT + 1`.
        pub count: u16,
        /// Added (wrapping) to the op's main number at each repetition.
        pub step: N32,
        /// The op.
        pub op: Repeated,
    }
}

/// Reads a fuzz input: a [`Setup`], then [`Op`]s until the input ends. Every input parses (missing bytes read as
/// zeros).
pub fn parse(data: &[u8]) -> (Setup, Vec<Op>) {
    let mut u = Unstructured::new(data);
    let setup = Setup::arbitrary(&mut u).unwrap_or(Setup {
        preamble: Preamble::Amqp,
        config: 0,
        cut: Cut::PerFrame,
    });
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_FRAMES {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    (setup, ops)
}

/// The fuzz input that [`parse`]s as `setup` and `ops`: how the seed corpus is written.
pub fn to_fuzz_input(setup: &Setup, ops: &[Op]) -> Vec<u8> {
    let mut out = Vec::new();
    setup.emit(&mut out);
    for op in ops {
        op.emit(&mut out);
    }
    out
}

/// One step of a [`Script`].
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Bytes for one `handle_input` call.
    Input(Vec<u8>),
    /// Time passing.
    Advance(Duration),
}

/// What a fuzz input becomes: the server's configuration and the steps to feed it.
#[derive(Clone, Debug)]
pub struct Script {
    /// The setup read from the input.
    pub setup: Setup,
    /// The ops read from the input (all of them, including any dropped for the limits).
    pub ops: Vec<Op>,
    /// The steps.
    pub steps: Vec<Step>,
}

impl Script {
    /// Parses a fuzz input and encodes its ops, within [`MAX_FRAMES`] and [`MAX_STREAM`].
    pub fn from_fuzz_input(data: &[u8]) -> Script {
        let (setup, ops) = parse(data);
        let steps = Writer::new(&setup).write(&ops);
        Script { setup, ops, steps }
    }

    /// The server's configuration.
    pub fn config(&self) -> ConnectionConfig {
        let bits = self.setup.config;
        let mut config = engine_server_config(bits & 7);
        if bits & 8 != 0 {
            config.max_frame_size = u32::MAX;
        }
        if bits & 16 != 0 {
            config.session_window = u32::MAX;
        }
        config
    }

    /// The bytes fed to the engine.
    pub fn stream_len(&self) -> usize {
        self.steps
            .iter()
            .map(|s| match s {
                Step::Input(b) => b.len(),
                Step::Advance(_) => 0,
            })
            .sum()
    }

    /// The most the heap may grow while [`run`](Self::run) runs: [`MEMORY_PER_BYTE`] per byte fed plus
    /// [`MEMORY_BUDGET`].
    ///
    /// An engine that holds on to what it was sent is linear in the stream: the driver keeps every event
    /// (delivery payloads included) and everything written, the engine buffers frames and partial deliveries, and
    /// links and sessions cost a bounded amount per frame that made them. 64 bytes per byte covers that with room
    /// for reallocation slack and a debug build's bookkeeping; the fixed 64 MiB covers per-connection buffers
    /// (64 KiB frames, a session window of 2 048 transfers) and a small input's allocations. A heap that
    /// outgrows it is memory the peer can make the engine spend faster than it sends: pre-sized or padded
    /// tables, reservations trusted from a header, amplification.
    pub fn memory_bound(&self) -> usize {
        MEMORY_PER_BYTE
            .saturating_mul(self.stream_len())
            .saturating_add(MEMORY_BUDGET)
    }

    /// Runs the steps against a server engine, as [`engine_structured`](super::engine_structured) does, and
    /// returns the driver.
    pub fn run(&self) -> Driver {
        let mut driver = Driver::new(self.config(), std::time::Instant::now());
        driver.auto_send = AUTO_SEND;
        for step in &self.steps {
            match step {
                Step::Input(bytes) => {
                    driver.input(bytes);
                }
                Step::Advance(by) => {
                    driver.advance(*by);
                }
            }
        }
        finish(&mut driver);
        driver.check_finished();
        driver
    }
}

/// Encodes ops into steps, within the limits.
struct Writer {
    setup_cut: Cut,
    steps: Vec<Step>,
    frames: usize,
    bytes: usize,
    full: bool,
    messages: std::collections::HashMap<u16, Bytes>,
}

impl Writer {
    fn new(setup: &Setup) -> Self {
        let mut w = Writer {
            setup_cut: setup.cut.clone(),
            steps: Vec::new(),
            frames: 0,
            bytes: 0,
            full: false,
            messages: Default::default(),
        };
        let amqp = ProtocolHeader::AMQP.to_bytes().to_vec();
        let sasl = |response: &[u8]| {
            let init = SaslInit {
                mechanism: Symbol::from(if response.is_empty() {
                    "ANONYMOUS"
                } else {
                    "PLAIN"
                }),
                initial_response: Some(Bytes::copy_from_slice(response)),
                hostname: None,
            };
            let frame = Frame {
                channel: 0,
                body: FrameBody::Sasl(SaslFrame::SaslInit(init)),
            };
            let mut b = ProtocolHeader::SASL.to_bytes().to_vec();
            frame.encode(&mut b);
            b
        };
        let plain = |pass: &str| [b"\0", SASL_USER.0.as_bytes(), b"\0", pass.as_bytes()].concat();
        let first = match setup.preamble {
            Preamble::Amqp => vec![amqp],
            Preamble::SaslAnonymous => vec![sasl(b""), amqp],
            Preamble::SaslPlain => vec![sasl(&plain(SASL_USER.1)), amqp],
            Preamble::SaslWrongPassword => vec![sasl(&plain("wrong")), amqp],
            Preamble::Nothing => vec![],
        };
        for piece in first {
            w.push(vec![piece]);
        }
        w
    }

    /// Adds the frames of one op (each already encoded) as steps cut the configured way.
    fn push(&mut self, frames: Vec<Vec<u8>>) {
        let len: usize = frames.iter().map(Vec::len).sum();
        if self.full || self.frames + frames.len() > MAX_FRAMES || self.bytes + len > MAX_STREAM {
            self.full = true;
            return;
        }
        self.frames += frames.len();
        self.bytes += len;
        match self.setup_cut {
            Cut::PerFrame => self.steps.extend(frames.into_iter().map(Step::Input)),
            Cut::PerOp => self.steps.push(Step::Input(frames.concat())),
            Cut::Halves => {
                for f in frames {
                    let (a, b) = f.split_at(f.len() / 2);
                    for half in [a, b] {
                        if !half.is_empty() {
                            self.steps.push(Step::Input(half.to_vec()));
                        }
                    }
                }
            }
        }
    }

    fn write(mut self, ops: &[Op]) -> Vec<Step> {
        for op in ops {
            if self.full {
                break;
            }
            match op {
                Op::Advance(ms) => self
                    .steps
                    .push(Step::Advance(Duration::from_millis(u64::from(ms.get())))),
                Op::Repeat(r) => {
                    let count = u32::from(r.count % MAX_REPEAT) + 1;
                    let step = r.step.get();
                    let mut frames = Vec::new();
                    let mut bytes = 0;
                    for i in 0..count {
                        let f = self.repeated(&r.op, i, step.wrapping_mul(i));
                        if self.frames + frames.len() >= MAX_FRAMES
                            || self.bytes + bytes + f.len() > MAX_STREAM
                        {
                            break;
                        }
                        bytes += f.len();
                        frames.push(f);
                    }
                    self.push(frames);
                }
                op => {
                    let f = self.single(op);
                    self.push(vec![f]);
                }
            }
        }
        self.steps
    }

    fn single(&mut self, op: &Op) -> Vec<u8> {
        match op {
            Op::Open(o) => amqp(
                0,
                Open {
                    container_id: "fuzz-client".into(),
                    hostname: Some("fuzz.example".into()),
                    max_frame_size: o.max_frame_size.get(),
                    channel_max: o.channel_max.get(),
                    idle_time_out: o.idle_time_out.as_ref().map(N32::get),
                    ..Open::default()
                },
                Bytes::new(),
            ),
            Op::Begin(b) => self.repeated(&Repeated::Begin(b.clone()), 0, 0),
            Op::Attach(a) => self.repeated(&Repeated::Attach(a.clone()), 0, 0),
            Op::Flow(f) => self.repeated(&Repeated::Flow(f.clone()), 0, 0),
            Op::Transfer(t) => self.repeated(&Repeated::Transfer(t.clone()), 0, 0),
            Op::Disposition(d) => self.repeated(&Repeated::Disposition(d.clone()), 0, 0),
            Op::Detach(d) => self.repeated(&Repeated::Detach(d.clone()), 0, 0),
            Op::Empty(c) => self.repeated(&Repeated::Empty(c.clone()), 0, 0),
            Op::End(e) => amqp(
                e.channel.get(),
                End {
                    error: e.error.then(|| error(ErrorCondition::InternalError)),
                },
                Bytes::new(),
            ),
            Op::Close(e) => amqp(
                0,
                Close {
                    error: e.then(|| error(ErrorCondition::InternalError)),
                },
                Bytes::new(),
            ),
            Op::Header(h) => {
                let mut b = h.size.get().to_be_bytes().to_vec();
                b.extend_from_slice(&[h.doff, u8::from(h.sasl)]);
                b.extend_from_slice(&h.channel.get().to_be_bytes());
                b
            }
            Op::Garbage(n) => (0..n % 64).map(|i| 0xa5 ^ i).collect(),
            Op::ProtocolHeader(amqp) => {
                let h = if *amqp {
                    ProtocolHeader::AMQP
                } else {
                    ProtocolHeader::SASL
                };
                h.to_bytes().to_vec()
            }
            Op::Advance(_) | Op::Repeat(_) => unreachable!("handled by write"),
        }
    }

    /// The frame of repetition `i` of `op`, its main number moved on by `delta`.
    fn repeated(&mut self, op: &Repeated, i: u32, delta: u32) -> Vec<u8> {
        match op {
            Repeated::Begin(b) => amqp(
                b.channel.get().wrapping_add(delta as u16),
                Begin {
                    remote_channel: b.remote_channel.as_ref().map(N16::get),
                    next_outgoing_id: b.next_outgoing_id.get(),
                    incoming_window: b.incoming_window.get(),
                    outgoing_window: b.outgoing_window.get(),
                    handle_max: b.handle_max.get(),
                    ..Begin::default()
                },
                Bytes::new(),
            ),
            Repeated::Attach(a) => {
                let address = Some("fuzz-queue".to_string());
                let role = if a.sender {
                    Role::Sender
                } else {
                    Role::Receiver
                };
                amqp(
                    a.channel.get(),
                    Attach {
                        name: format!("link-{}", u32::from(a.name).wrapping_add(delta)),
                        handle: a.handle.get().wrapping_add(delta),
                        role,
                        snd_settle_mode: match a.snd_settle_mode {
                            0 => SenderSettleMode::Unsettled,
                            1 => SenderSettleMode::Settled,
                            _ => SenderSettleMode::Mixed,
                        },
                        rcv_settle_mode: if a.rcv_settle_mode % 2 == 1 {
                            ReceiverSettleMode::Second
                        } else {
                            ReceiverSettleMode::First
                        },
                        source: Some(Source {
                            address: (a.sender || !a.dynamic).then(|| address.clone()).flatten(),
                            dynamic: !a.sender && a.dynamic,
                            ..Source::default()
                        }),
                        target: Some(Target {
                            address: (!a.sender || !a.dynamic).then_some(address).flatten(),
                            dynamic: a.sender && a.dynamic,
                            ..Target::default()
                        }),
                        initial_delivery_count: a.initial_delivery_count.as_ref().map(N32::get),
                        max_message_size: a.max_message_size.as_ref().map(|m| u64::from(m.get())),
                        ..Attach::default()
                    },
                    Bytes::new(),
                )
            }
            Repeated::Flow(f) => {
                let link = f.link.as_ref();
                let stepped = |n: u32| {
                    if link.is_none() {
                        n.wrapping_add(delta)
                    } else {
                        n
                    }
                };
                amqp(
                    f.channel.get(),
                    Flow {
                        next_incoming_id: f.next_incoming_id.as_ref().map(|n| stepped(n.get())),
                        incoming_window: f.incoming_window.get(),
                        next_outgoing_id: f.next_outgoing_id.get(),
                        outgoing_window: f.outgoing_window.get(),
                        handle: link.map(|l| l.handle.get().wrapping_add(delta)),
                        delivery_count: link.and_then(|l| l.delivery_count.as_ref().map(N32::get)),
                        link_credit: link.and_then(|l| l.link_credit.as_ref().map(N32::get)),
                        available: link.and_then(|l| l.available.as_ref().map(N32::get)),
                        drain: link.is_some_and(|l| l.drain),
                        echo: f.echo,
                        properties: None,
                    },
                    Bytes::new(),
                )
            }
            Repeated::Transfer(t) => {
                let tag = t.tag.map(|len| {
                    let len = usize::from(len % 40);
                    let mut tag = vec![0x74; len];
                    let n = i.to_be_bytes();
                    let k = len.min(4);
                    tag[len - k..].copy_from_slice(&n[4 - k..]);
                    Bytes::from(tag)
                });
                let payload = match t.payload {
                    Payload::Nothing => Bytes::new(),
                    Payload::Message(len) => self
                        .messages
                        .entry(len)
                        .or_insert_with(|| {
                            Message::builder()
                                .data(vec![b'm'; usize::from(len)])
                                .build()
                                .to_bytes()
                        })
                        .clone(),
                    Payload::Raw(len) => Bytes::from(vec![0x55; usize::from(len)]),
                };
                amqp(
                    t.channel.get(),
                    Transfer {
                        handle: t.handle.get(),
                        delivery_id: t.delivery_id.as_ref().map(|d| d.get().wrapping_add(delta)),
                        delivery_tag: tag,
                        message_format: Some(0),
                        settled: t.settled,
                        more: t.more,
                        aborted: t.aborted,
                        ..Transfer::default()
                    },
                    payload,
                )
            }
            Repeated::Disposition(d) => amqp(
                d.channel.get(),
                Disposition {
                    role: if d.receiver {
                        Role::Receiver
                    } else {
                        Role::Sender
                    },
                    first: d.first.get().wrapping_add(delta),
                    last: d.last.as_ref().map(|l| l.get().wrapping_add(delta)),
                    settled: d.settled,
                    state: d.state.as_ref().map(delivery_state),
                    batchable: false,
                },
                Bytes::new(),
            ),
            Repeated::Detach(d) => amqp(
                d.channel.get(),
                Detach {
                    handle: d.handle.get().wrapping_add(delta),
                    closed: d.closed,
                    error: d.error.then(|| error(ErrorCondition::DetachForced)),
                },
                Bytes::new(),
            ),
            Repeated::Empty(c) => {
                let mut b = Vec::with_capacity(8);
                Frame {
                    channel: c.get().wrapping_add(delta as u16),
                    body: FrameBody::Empty,
                }
                .encode(&mut b);
                b
            }
        }
    }
}

fn amqp(
    channel: u16,
    performative: impl Into<crate::frame::Performative>,
    payload: Bytes,
) -> Vec<u8> {
    let frame = Frame {
        channel,
        body: FrameBody::Amqp {
            performative: performative.into(),
            payload,
        },
    };
    let mut b = Vec::with_capacity(frame.encoded_size());
    frame.encode(&mut b);
    b
}

fn error(condition: ErrorCondition) -> Error {
    Error {
        condition,
        description: Some("fuzz".into()),
        info: None,
    }
}

fn delivery_state(s: &State) -> crate::frame::DeliveryState {
    use crate::frame::DeliveryState as D;
    match s {
        State::Accepted => D::Accepted(Accepted {}),
        State::Rejected => D::Rejected(Rejected {
            error: Some(error(ErrorCondition::InternalError)),
        }),
        State::Released => D::Released(Released {}),
        State::Modified => D::Modified(Modified {
            delivery_failed: true,
            ..Modified::default()
        }),
        State::Received(n) => D::Received(Received {
            section_number: n.get(),
            section_offset: u64::from(n.get()),
        }),
    }
}
