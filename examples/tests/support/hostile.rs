//! A raw, hostile AMQP 1.0 peer over a real socket, and the measurements the hostile-peer tests make of the
//! `broker` binary: its RSS and CPU time, a watchdog that kills it before it can exhaust the machine, and a
//! "normal client" round trip on a fresh connection.
//!
//! The peer writes frames built from `nucleon_protocol::frame` types (or raw bytes for malformed ones) and
//! reads what the broker sends on a background thread, so a large write never deadlocks against a broker
//! that answers every frame. Every wait is bounded by a deadline.
//!
//! Used from `hostile_peer.rs` as `#[path = "support/hostile.rs"] mod hostile;` next to `mod support;`.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nucleon_protocol::frame::{
    Attach, Begin, Close, Disposition, ErrorCondition, Flow, Frame, FrameBody, Open, Performative,
    Role, SenderSettleMode, Source, Target, Transfer,
};

use crate::support::Broker;

/// The longest a test waits for one expected answer of the broker.
pub const WAIT: Duration = Duration::from_secs(10);
/// A frame bigger than this from the broker is treated as garbage (its max-frame-size is far lower).
const MAX_INCOMING_FRAME: usize = 64 << 20;
/// How long one blocking write may take before the broker is deemed to have stopped reading.
const WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// The incoming and outgoing session windows our sessions announce: large, so the broker never waits on us.
pub const OUR_WINDOW: u32 = 1 << 30;

const MIB: u64 = 1 << 20;

// ----- encoding -----

/// One AMQP frame carrying `p`, encoded.
pub fn frame(channel: u16, p: impl Into<Performative>) -> Vec<u8> {
    let mut buf = Vec::new();
    Frame::amqp(channel, p).encode(&mut buf);
    buf
}

/// One `transfer` frame with its payload, encoded.
pub fn transfer_frame(channel: u16, t: Transfer, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::new();
    Frame {
        channel,
        body: FrameBody::Amqp {
            performative: Performative::Transfer(t),
            payload: Bytes::copy_from_slice(payload),
        },
    }
    .encode(&mut buf);
    buf
}

/// A bare message made of one `data` section holding `body` [AMQP 1.0 §3.2.6].
pub fn data_section(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0x00, 0x53, 0x75, 0xb0];
    v.extend_from_slice(&(body.len() as u32).to_be_bytes());
    v.extend_from_slice(body);
    v
}

/// A raw 8-byte frame header: `size`, doff 2, AMQP frame type, `channel`.
pub fn raw_frame_header(size: u32, channel: u16) -> [u8; 8] {
    let s = size.to_be_bytes();
    let c = channel.to_be_bytes();
    [s[0], s[1], s[2], s[3], 2, 0, c[0], c[1]]
}

/// The `open` the hostile peer sends unless a test says otherwise.
pub fn our_open() -> Open {
    Open {
        container_id: "hostile-peer".into(),
        ..Open::default()
    }
}

/// Our `begin` for a new session.
pub fn our_begin() -> Begin {
    Begin {
        next_outgoing_id: 0,
        incoming_window: OUR_WINDOW,
        outgoing_window: OUR_WINDOW,
        ..Begin::default()
    }
}

/// An attach for a link of `role` (ours) named `name` on our `handle`, to or from `address`.
pub fn attach(name: &str, handle: u32, role: Role, address: &str) -> Attach {
    let mut a = Attach {
        name: name.into(),
        handle,
        role,
        ..Attach::default()
    };
    match role {
        Role::Sender => {
            a.source = Some(Source::default());
            a.target = Some(Target::with_address(address));
            a.initial_delivery_count = Some(0);
        }
        Role::Receiver => {
            a.source = Some(Source::with_address(address));
            a.target = Some(Target::default());
        }
    }
    a
}

/// A link flow from our receiving end: `credit` at `delivery_count`, our session's `next_outgoing_id`.
pub fn credit_flow(
    handle: u32,
    delivery_count: u32,
    credit: u32,
    drain: bool,
    next_outgoing_id: u32,
) -> Flow {
    Flow {
        next_incoming_id: None,
        incoming_window: OUR_WINDOW,
        next_outgoing_id,
        outgoing_window: OUR_WINDOW,
        handle: Some(handle),
        delivery_count: Some(delivery_count),
        link_credit: Some(credit),
        drain,
        ..Flow::default()
    }
}

/// The first transfer of a one-frame delivery with a small data section.
pub fn small_transfer(handle: u32, delivery_id: u32, settled: bool) -> Transfer {
    Transfer {
        handle,
        delivery_id: Some(delivery_id),
        delivery_tag: Some(Bytes::copy_from_slice(&delivery_id.to_be_bytes())),
        message_format: Some(0),
        settled: Some(settled),
        ..Transfer::default()
    }
}

// ----- what the broker sends -----

/// Something read from the broker's side of the socket.
#[derive(Debug)]
enum Incoming {
    Header([u8; 8]),
    Frame { frame: Box<Frame>, size: usize },
    Garbage(String),
    Closed(String),
}

/// An error the broker sent on a detach, end or close.
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    /// `detach`, `end` or `close`.
    pub kind: &'static str,
    /// The frame's channel.
    pub channel: u16,
    /// The condition.
    pub condition: ErrorCondition,
    /// The description, if any.
    pub description: Option<String>,
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} on channel {}: {}",
            self.kind,
            self.channel,
            self.condition.symbol().as_str()
        )?;
        if let Some(d) = &self.description {
            let short: String = d.chars().take(120).collect();
            write!(f, " ({short})")?;
        }
        Ok(())
    }
}

/// Counts of what the broker sent on one connection.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// Frames received, heartbeats included.
    pub frames: u64,
    /// Empty frames (heartbeats).
    pub empty_frames: u64,
    /// The largest frame received, in bytes, header included.
    pub max_frame: usize,
    /// `transfer` frames received.
    pub transfers: u64,
}

/// A raw AMQP connection to the broker, written by the test and read by a background thread.
pub struct Peer {
    stream: TcpStream,
    rx: Receiver<Incoming>,
    reader: Option<JoinHandle<()>>,
    backlog: VecDeque<Frame>,
    /// The protocol header the broker answered with.
    pub header: Option<[u8; 8]>,
    /// Counts of what came in.
    pub stats: Stats,
    /// Every error condition the broker sent (detach, end, close), in order.
    pub errors: Vec<Seen>,
    /// Why the connection's read side ended (EOF, reset, garbage), once it has.
    pub closed: Option<String>,
    /// The broker's `open`.
    pub remote_open: Option<Open>,
    next_ping_channel: u16,
}

impl Peer {
    /// Connects to the broker at 127.0.0.1:`port`; fails the test if it cannot.
    pub fn connect(port: u16) -> Peer {
        Peer::try_connect(port).unwrap_or_else(|e| panic!("cannot connect to the broker: {e}"))
    }

    /// Connects to the broker at 127.0.0.1:`port`.
    pub fn try_connect(port: u16) -> Result<Peer, String> {
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let stream = TcpStream::connect_timeout(&addr, WAIT).map_err(|e| e.to_string())?;
        stream.set_nodelay(true).map_err(|e| e.to_string())?;
        stream
            .set_write_timeout(Some(WRITE_TIMEOUT))
            .map_err(|e| e.to_string())?;
        let read_side = stream.try_clone().map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || read_loop(read_side, tx));
        Ok(Peer {
            stream,
            rx,
            reader: Some(reader),
            backlog: VecDeque::new(),
            header: None,
            stats: Stats::default(),
            errors: Vec::new(),
            closed: None,
            remote_open: None,
            next_ping_channel: 1,
        })
    }

    /// Writes `bytes`; an error (the broker closed, or stopped reading for [`WRITE_TIMEOUT`]) is returned as
    /// text, since several attacks expect the broker to give up on them mid-write.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream.write_all(bytes).map_err(|e| match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => {
                format!("the broker stopped reading for {WRITE_TIMEOUT:?}")
            }
            _ => format!("write failed: {e}"),
        })
    }

    /// Writes one frame carrying `p`.
    pub fn send(&mut self, channel: u16, p: impl Into<Performative>) -> Result<(), String> {
        self.write(&frame(channel, p))
    }

    /// Takes what the reader thread has produced, waiting until `deadline` for at least one item. Returns
    /// the next frame, or `None` at the deadline or once the connection is closed.
    fn recv(&mut self, deadline: Instant) -> Option<Frame> {
        loop {
            if self.closed.is_some() {
                // What was read before the end is still delivered.
                match self.rx.try_recv() {
                    Ok(i) => {
                        if let Some(f) = self.take(i) {
                            return Some(f);
                        }
                        continue;
                    }
                    Err(_) => return None,
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(i) => {
                    if let Some(f) = self.take(i) {
                        return Some(f);
                    }
                }
                Err(RecvTimeoutError::Timeout) => return None,
                Err(RecvTimeoutError::Disconnected) => {
                    self.closed.get_or_insert_with(|| "reader ended".into());
                    return None;
                }
            }
        }
    }

    fn take(&mut self, i: Incoming) -> Option<Frame> {
        match i {
            Incoming::Header(h) => {
                self.header = Some(h);
                None
            }
            Incoming::Garbage(why) => {
                self.closed = Some(format!("undecodable input from the broker: {why}"));
                None
            }
            Incoming::Closed(why) => {
                self.closed = Some(why);
                None
            }
            Incoming::Frame { frame, size } => {
                self.stats.frames += 1;
                self.stats.max_frame = self.stats.max_frame.max(size);
                let error = match &frame.body {
                    FrameBody::Empty => {
                        self.stats.empty_frames += 1;
                        None
                    }
                    FrameBody::Amqp { performative, .. } => match performative {
                        Performative::Transfer(_) => {
                            self.stats.transfers += 1;
                            None
                        }
                        Performative::Open(o) => {
                            self.remote_open = Some((**o).clone());
                            None
                        }
                        Performative::Detach(d) => d.error.clone().map(|e| ("detach", e)),
                        Performative::End(e) => e.error.clone().map(|e| ("end", e)),
                        Performative::Close(c) => c.error.clone().map(|e| ("close", e)),
                        _ => None,
                    },
                    FrameBody::Sasl(_) => None,
                };
                if let Some((kind, e)) = error {
                    self.errors.push(Seen {
                        kind,
                        channel: frame.channel,
                        condition: e.condition,
                        description: e.description,
                    });
                }
                Some(*frame)
            }
        }
    }

    /// The next frame (frames set aside by [`expect`](Self::expect) first), or `None` at `deadline` or once
    /// the connection is closed.
    pub fn next_frame(&mut self, deadline: Instant) -> Option<Frame> {
        self.backlog.pop_front().or_else(|| self.recv(deadline))
    }

    /// The first frame for which `pick` gives a value, waiting until `deadline`. Frames that do not match are
    /// set aside for [`next_frame`](Self::next_frame) and later `expect`s.
    pub fn expect<T>(
        &mut self,
        deadline: Instant,
        mut pick: impl FnMut(&Frame) -> Option<T>,
    ) -> Option<T> {
        if let Some(i) = self.backlog.iter().position(|f| pick(f).is_some()) {
            let f = self.backlog.remove(i).expect("in range");
            return pick(&f);
        }
        while let Some(f) = self.recv(deadline) {
            if let Some(t) = pick(&f) {
                return Some(t);
            }
            self.backlog.push_back(f);
        }
        None
    }

    /// Reads and drops frames until an error condition has come (returns the first), the connection is
    /// closed, or `timeout` passes.
    pub fn wait_error(&mut self, timeout: Duration) -> Option<Seen> {
        let deadline = Instant::now() + timeout;
        self.backlog.clear();
        while self.errors.is_empty() && self.recv(deadline).is_some() {}
        self.errors.first().cloned()
    }

    /// Reads and drops frames until one satisfies `stop`, the connection is closed, or `timeout` passes;
    /// true if `stop` matched.
    pub fn drain_until(&mut self, timeout: Duration, mut stop: impl FnMut(&Frame) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        while let Some(f) = self.next_frame(deadline) {
            if stop(&f) {
                return true;
            }
        }
        false
    }

    /// Reads until the connection is closed or `timeout` passes, dropping frames; true if it closed.
    pub fn wait_closed(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.backlog.clear();
        while self.recv(deadline).is_some() {}
        self.closed.is_some()
    }

    /// Sends the AMQP protocol header and `open`, and waits for the broker's header and `open`.
    pub fn open_with(&mut self, open: Open) -> Result<Open, String> {
        let mut bytes = b"AMQP\x00\x01\x00\x00".to_vec();
        bytes.extend(frame(0, open));
        self.write(&bytes)?;
        let deadline = Instant::now() + WAIT;
        let got = self.expect(deadline, |f| match &f.body {
            FrameBody::Amqp {
                performative: Performative::Open(o),
                ..
            } => Some((**o).clone()),
            _ => None,
        });
        match (self.header, got) {
            (Some(h), _) if &h != b"AMQP\x00\x01\x00\x00" => Err(format!(
                "the broker answered with protocol header {h:02x?}; this harness speaks AMQP without SASL"
            )),
            (_, Some(o)) => Ok(o),
            (_, None) => Err(format!(
                "no open from the broker within {WAIT:?} ({})",
                self.closed.as_deref().unwrap_or("still connected")
            )),
        }
    }

    /// [`open_with`](Self::open_with) our default `open`; fails the test if the broker does not answer.
    pub fn open(&mut self) -> Open {
        self.open_with(our_open())
            .unwrap_or_else(|e| panic!("opening: {e}"))
    }

    /// Begins a session on `channel` and waits for the broker's answering `begin`.
    pub fn begin(&mut self, channel: u16) -> Result<Begin, String> {
        self.send(channel, our_begin())?;
        self.expect(Instant::now() + WAIT, |f| match &f.body {
            FrameBody::Amqp {
                performative: Performative::Begin(b),
                ..
            } if b.remote_channel == Some(channel) => Some(b.clone()),
            _ => None,
        })
        .ok_or_else(|| format!("no begin answering channel {channel} within {WAIT:?}"))
    }

    /// Waits for the broker's attach for the link named `name` (its answer to ours).
    pub fn expect_attach(&mut self, name: &str) -> Result<Attach, String> {
        self.expect(Instant::now() + WAIT, |f| match &f.body {
            FrameBody::Amqp {
                performative: Performative::Attach(a),
                ..
            } if a.name == name => Some((**a).clone()),
            _ => None,
        })
        .ok_or_else(|| format!("no attach answering link {name:?} within {WAIT:?}"))
    }

    /// Waits for a flow on the broker's `handle` that gives credit; returns the credit.
    pub fn expect_credit(&mut self, handle: u32) -> Result<u32, String> {
        self.expect(Instant::now() + WAIT, |f| match &f.body {
            FrameBody::Amqp {
                performative: Performative::Flow(fl),
                ..
            } if fl.handle == Some(handle) && fl.link_credit.unwrap_or(0) > 0 => fl.link_credit,
            _ => None,
        })
        .ok_or_else(|| format!("no credit on the broker's handle {handle} within {WAIT:?}"))
    }

    /// Attaches a sending link on `channel` (our `handle`) to `address` and waits for the broker's attach and
    /// first credit. Returns the broker's attach and the credit.
    pub fn attach_sender(
        &mut self,
        channel: u16,
        handle: u32,
        name: &str,
        address: &str,
    ) -> Result<(Attach, u32), String> {
        self.send(channel, attach(name, handle, Role::Sender, address))?;
        let theirs = self.expect_attach(name)?;
        let credit = self.expect_credit(theirs.handle)?;
        Ok((theirs, credit))
    }

    /// Attaches a receiving link on `channel` (our `handle`) from `address` (pre-settled by the broker when
    /// `presettled`) and waits for the broker's attach.
    pub fn attach_receiver(
        &mut self,
        channel: u16,
        handle: u32,
        name: &str,
        address: &str,
        presettled: bool,
    ) -> Result<Attach, String> {
        let mut a = attach(name, handle, Role::Receiver, address);
        if presettled {
            a.snd_settle_mode = SenderSettleMode::Settled;
        }
        self.send(channel, a)?;
        self.expect_attach(name)
    }

    /// Makes sure the broker has processed everything written so far on this connection: begins a session on
    /// a fresh channel and waits (up to `timeout`) for its answer. True if the broker answered, or closed
    /// the connection (then it has processed all it will).
    pub fn sync(&mut self, timeout: Duration) -> bool {
        let channel = self.next_ping_channel;
        self.next_ping_channel += 1;
        if self.send(channel, our_begin()).is_err() {
            return self.wait_closed(timeout);
        }
        let deadline = Instant::now() + timeout;
        while let Some(f) = self.recv(deadline) {
            if let FrameBody::Amqp {
                performative: Performative::Begin(b),
                ..
            } = &f.body
            {
                if b.remote_channel == Some(channel) {
                    return true;
                }
            }
        }
        self.closed.is_some()
    }

    /// Sends `close` (best effort) and shuts the socket down.
    pub fn close(mut self) {
        let _ = self.send(0, Close { error: None });
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn read_loop(mut s: TcpStream, tx: mpsc::Sender<Incoming>) {
    let closed = |e: std::io::Error| {
        Incoming::Closed(if e.kind() == ErrorKind::UnexpectedEof {
            "EOF".to_string()
        } else {
            e.to_string()
        })
    };
    let mut header = [0u8; 8];
    if let Err(e) = s.read_exact(&mut header) {
        let _ = tx.send(closed(e));
        return;
    }
    if tx.send(Incoming::Header(header)).is_err() || &header[..4] != b"AMQP" {
        let _ = tx.send(Incoming::Garbage(format!("protocol header {header:02x?}")));
        return;
    }
    loop {
        let mut head = [0u8; 8];
        if let Err(e) = s.read_exact(&mut head) {
            let _ = tx.send(closed(e));
            return;
        }
        let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if !(8..=MAX_INCOMING_FRAME).contains(&size) {
            let _ = tx.send(Incoming::Garbage(format!("a frame of {size} bytes")));
            return;
        }
        let mut buf = vec![0u8; size];
        buf[..8].copy_from_slice(&head);
        if let Err(e) = s.read_exact(&mut buf[8..]) {
            let _ = tx.send(closed(e));
            return;
        }
        let item = match Frame::decode(Bytes::from(buf), 0) {
            Ok(frame) => Incoming::Frame {
                frame: Box::new(frame),
                size,
            },
            Err(e) => Incoming::Garbage(e.to_string()),
        };
        let stop = matches!(item, Incoming::Garbage(_));
        if tx.send(item).is_err() || stop {
            return;
        }
    }
}

// ----- frame predicates -----

/// The performative of `f`, if it has one.
pub fn performative(f: &Frame) -> Option<&Performative> {
    match &f.body {
        FrameBody::Amqp { performative, .. } => Some(performative),
        _ => None,
    }
}

/// The transfer and payload of `f`, if it is one.
pub fn as_transfer(f: &Frame) -> Option<(&Transfer, &Bytes)> {
    match &f.body {
        FrameBody::Amqp {
            performative: Performative::Transfer(t),
            payload,
        } => Some((t, payload)),
        _ => None,
    }
}

/// The flow of `f`, if it is one.
pub fn as_flow(f: &Frame) -> Option<&Flow> {
    match performative(f) {
        Some(Performative::Flow(fl)) => Some(fl),
        _ => None,
    }
}

/// The disposition of `f`, if it is one.
pub fn as_disposition(f: &Frame) -> Option<&Disposition> {
    match performative(f) {
        Some(Performative::Disposition(d)) => Some(d),
        _ => None,
    }
}

/// True if `d` covers delivery `id`.
pub fn covers(d: &Disposition, id: u32) -> bool {
    let last = d.last.unwrap_or(d.first);
    id.wrapping_sub(d.first) <= last.wrapping_sub(d.first)
}

// ----- the broker process -----

/// The broker's memory and CPU use, from `/proc/<pid>/status` and `/proc/<pid>/stat`.
#[derive(Clone, Copy, Debug)]
pub struct Usage {
    /// Resident set size (VmRSS), bytes.
    pub rss: u64,
    /// Peak resident set size (VmHWM), bytes.
    pub peak_rss: u64,
    /// User plus system CPU time.
    pub cpu: Duration,
}

fn clock_ticks() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .filter(|&t| t > 0)
            .unwrap_or(100)
    })
}

/// The usage of process `pid`, or `None` if it is gone.
pub fn usage(pid: u32) -> Option<Usage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| n * 1024)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Usage {
        rss: kib("VmRSS:").unwrap_or(0),
        peak_rss: kib("VmHWM:").unwrap_or(0),
        cpu: Duration::from_millis(ticks * 1000 / clock_ticks()),
    })
}

/// True while `pid` is running (not gone, not a zombie waiting to be reaped).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rfind(')')
                .and_then(|i| s[i + 2..].chars().next())
                .map(|state| state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// Kills the broker (SIGKILL, by its PID) once its RSS grows by more than `limit` over `baseline`, so an
/// attack that today makes it allocate gigabytes fails the test instead of exhausting the shared machine.
pub struct Watchdog {
    stop: Arc<AtomicBool>,
    killed_at: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts polling `pid` every 10 ms.
    pub fn start(pid: u32, baseline: u64, limit: u64) -> Watchdog {
        let stop = Arc::new(AtomicBool::new(false));
        let killed_at = Arc::new(AtomicU64::new(0));
        let (s, k) = (stop.clone(), killed_at.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match usage(pid) {
                    Some(u) if u.rss.saturating_sub(baseline) > limit => {
                        k.store(u.rss, Ordering::Relaxed);
                        let _ = Command::new("kill")
                            .args(["-KILL", &pid.to_string()])
                            .status();
                        return;
                    }
                    Some(_) => {}
                    None => return,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Watchdog {
            stop,
            killed_at,
            thread: Some(thread),
        }
    }

    /// The RSS (bytes) at which the watchdog killed the broker, if it did.
    pub fn killed_at(&self) -> Option<u64> {
        match self.killed_at.load(Ordering::Relaxed) {
            0 => None,
            n => Some(n),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// RSS growth at which the watchdog kills the broker: far above every test's bound, far below what would
/// hurt a 2-core machine shared with other builds.
pub const WATCHDOG_LIMIT: u64 = 512 * MIB;

/// Bytes as MiB with one decimal, for messages.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / MIB as f64)
}

/// One hostile-peer test: the broker (default flags), its usage before the attack, the watchdog, and the
/// failures found so far. [`Bench::finish`] checks the common bounds and fails the test listing every
/// failure with the figures measured.
pub struct Bench {
    /// The broker.
    pub broker: Broker,
    /// Its PID.
    pub pid: u32,
    name: &'static str,
    before: Usage,
    started: Instant,
    watchdog: Watchdog,
    failures: Vec<String>,
    notes: Vec<String>,
    queues: u32,
}

impl Bench {
    /// Starts the broker, checks a normal client works, and records the baseline.
    pub fn start(name: &'static str) -> Bench {
        Bench::start_with(name, &[])
    }

    /// [`Bench::start`] with extra broker arguments.
    pub fn start_with(name: &'static str, args: &[&str]) -> Bench {
        let broker = Broker::start_with(args);
        let pid = broker.process.id();
        if let Err(e) = normal_round_trip(broker.port, &format!("{name}-warmup")) {
            panic!("{name}: a normal client fails before any attack: {e}");
        }
        let before = usage(pid).expect("the broker's /proc entry");
        let watchdog = Watchdog::start(pid, before.rss, WATCHDOG_LIMIT);
        Bench {
            broker,
            pid,
            name,
            before,
            started: Instant::now(),
            watchdog,
            failures: Vec::new(),
            notes: Vec::new(),
            queues: 0,
        }
    }

    /// The broker's port.
    pub fn port(&self) -> u16 {
        self.broker.port
    }

    /// True once the watchdog has killed the broker: the attack should stop.
    pub fn tripped(&self) -> bool {
        self.watchdog.killed_at().is_some()
    }

    /// The broker's RSS growth since the baseline, now.
    pub fn rss_growth(&self) -> u64 {
        usage(self.pid).map_or(0, |u| u.rss.saturating_sub(self.before.rss))
    }

    /// Takes the broker's usage now as the baseline, so setup (e.g. filling a queue) is not counted
    /// against the attack that follows.
    pub fn rebase(&mut self) {
        if let Some(u) = usage(self.pid) {
            self.before = u;
        }
    }

    /// Records a failure unless `ok`.
    pub fn check(&mut self, ok: bool, what: impl Into<String>) {
        if !ok {
            self.failures.push(what.into());
        }
    }

    /// Records a failure.
    pub fn fail(&mut self, what: impl Into<String>) {
        self.failures.push(what.into());
    }

    /// Records a figure or observation for the report line.
    pub fn note(&mut self, what: impl Into<String>) {
        self.notes.push(what.into());
    }

    /// Records the failure unless the attacker saw an error whose condition is one of `wanted`.
    pub fn expect_condition(&mut self, seen: &[Seen], wanted: &[ErrorCondition], what: &str) {
        let got = seen.iter().find(|s| wanted.contains(&s.condition));
        match got {
            Some(s) => self.note(format!("{what}: {s}")),
            None => {
                let wanted: Vec<_> = wanted.iter().map(|c| c.symbol().to_string()).collect();
                let seen: Vec<_> = seen.iter().map(|s| s.to_string()).collect();
                self.fail(format!(
                    "{what}: expected {} but the broker sent {}",
                    wanted.join(" or "),
                    if seen.is_empty() {
                        "no error".to_string()
                    } else {
                        seen.join("; ")
                    }
                ));
            }
        }
    }

    /// A fresh queue name for this test.
    pub fn queue(&mut self, what: &str) -> String {
        self.queues += 1;
        format!("{}-{what}-{}", self.name, self.queues)
    }

    /// Checks that the broker is alive, that its peak RSS grew by at most `max_rss_growth` and its CPU time
    /// by at most `max_cpu` since the baseline, and that a normal client still round-trips a message on a
    /// fresh connection; then fails the test with every failure recorded, or prints the figures.
    pub fn finish(mut self, max_rss_growth: u64, max_cpu: Duration) {
        let after = usage(self.pid);
        let killed = self.watchdog.killed_at();
        let mut figures = format!("wall {:.1?}", self.started.elapsed());
        if let Some(rss) = killed {
            self.fail(format!(
                "the broker's RSS grew past {} over its baseline of {} (it reached {}): the watchdog killed it",
                mib(WATCHDOG_LIMIT),
                mib(self.before.rss),
                mib(rss)
            ));
        }
        match after {
            Some(after) if alive(self.pid) => {
                // The peak since the baseline: VmHWM if it rose after the baseline, else RSS now.
                let peak = if after.peak_rss > self.before.peak_rss {
                    after.peak_rss
                } else {
                    after.rss
                };
                let growth = peak.saturating_sub(self.before.rss);
                let cpu = after.cpu.saturating_sub(self.before.cpu);
                figures = format!(
                    "{figures}; RSS {} -> {} (peak {}, growth {}); CPU {:.2?}",
                    mib(self.before.rss),
                    mib(after.rss),
                    mib(after.peak_rss),
                    mib(growth),
                    cpu
                );
                self.check(
                    growth <= max_rss_growth,
                    format!(
                        "peak RSS grew by {} (bound {})",
                        mib(growth),
                        mib(max_rss_growth)
                    ),
                );
                self.check(
                    cpu <= max_cpu,
                    format!("the broker used {cpu:.2?} of CPU (bound {max_cpu:?})"),
                );
                let queue = self.queue("normal");
                if let Err(e) = normal_round_trip(self.port(), &queue) {
                    self.fail(format!("a normal client on a new connection failed: {e}"));
                }
            }
            _ => {
                if killed.is_none() {
                    self.fail("the broker process died");
                }
            }
        }
        let notes = if self.notes.is_empty() {
            String::new()
        } else {
            format!("; {}", self.notes.join("; "))
        };
        eprintln!("[hostile] {}: {figures}{notes}", self.name);
        if !self.failures.is_empty() {
            self.broker.process.kill();
            panic!(
                "{}: {} failure(s):\n  - {}\n({figures}{notes})",
                self.name,
                self.failures.len(),
                self.failures.join("\n  - ")
            );
        }
    }
}

// ----- a normal client -----

/// A well-behaved client on a fresh connection: sends one message to `queue` (unsettled, waiting for
/// `accepted`), then receives it back on a second link and checks its body.
pub fn normal_round_trip(port: u16, queue: &str) -> Result<(), String> {
    let mut p = Peer::try_connect(port)?;
    p.open_with(our_open())?;
    let theirs = p.begin(0)?;
    let marker = format!("normal-client-{queue}-{}", std::process::id());
    let (snd, _) = p.attach_sender(0, 0, "normal-sender", queue)?;
    let _ = snd;
    p.write(&transfer_frame(
        0,
        small_transfer(0, 0, false),
        &data_section(marker.as_bytes()),
    ))?;
    let deadline = Instant::now() + WAIT;
    p.expect(deadline, |f| {
        as_disposition(f)
            .filter(|d| d.role == Role::Receiver && covers(d, 0) && d.state.is_some())
            .map(|_| ())
    })
    .ok_or_else(|| {
        format!(
            "no outcome for the message sent within {WAIT:?} (errors {:?}, {})",
            p.errors,
            p.closed.as_deref().unwrap_or("connected")
        )
    })?;
    let rcv = p.attach_receiver(0, 1, "normal-receiver", queue, true)?;
    let count = rcv.initial_delivery_count.unwrap_or(0);
    p.send(0, {
        let mut f = credit_flow(1, count, 1, false, 1);
        f.next_incoming_id = Some(theirs.next_outgoing_id);
        f
    })?;
    let body = p
        .expect(deadline, |f| {
            as_transfer(f)
                .filter(|(t, _)| t.handle == rcv.handle)
                .map(|(_, payload)| payload.clone())
        })
        .ok_or_else(|| {
            format!(
                "the message did not come back within {WAIT:?} (errors {:?}, {})",
                p.errors,
                p.closed.as_deref().unwrap_or("connected")
            )
        })?;
    if !body.windows(marker.len()).any(|w| w == marker.as_bytes()) {
        return Err(format!("received another message: {body:02x?}"));
    }
    p.close();
    Ok(())
}

/// How many messages `queue` holds: a fresh connection attaches a pre-settled consumer, grants `max` credit
/// with drain, and counts transfers until the broker's flow says the drain is done.
pub fn count_queue(port: u16, queue: &str, max: u32) -> Result<u64, String> {
    let mut p = Peer::try_connect(port)?;
    p.open_with(our_open())?;
    let theirs = p.begin(0)?;
    let rcv = p.attach_receiver(0, 0, "counter", queue, true)?;
    let mut f = credit_flow(0, rcv.initial_delivery_count.unwrap_or(0), max, true, 0);
    f.next_incoming_id = Some(theirs.next_outgoing_id);
    p.send(0, f)?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0u64;
    loop {
        let Some(f) = p.next_frame(deadline) else {
            return Err(format!(
                "the drain did not complete within 30 s ({n} messages so far; {})",
                p.closed.as_deref().unwrap_or("connected")
            ));
        };
        if let Some((t, _)) = as_transfer(&f) {
            if t.handle == rcv.handle && !t.more {
                n += 1;
            }
        } else if let Some(fl) = as_flow(&f) {
            if fl.handle == Some(rcv.handle) && fl.link_credit == Some(0) {
                p.close();
                return Ok(n);
            }
        }
    }
}

/// Makes sure this process may hold `n` file descriptors, raising the soft limit with `prlimit` when it is
/// lower (the broker inherits it when started afterwards).
pub fn ensure_open_files(n: u64) {
    let soft = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|s| s.parse::<u64>().ok());
    if soft.is_some_and(|s| s >= n) {
        return;
    }
    let pid = std::process::id().to_string();
    let status = Command::new("prlimit")
        .args(["--pid", &pid, &format!("--nofile={n}:")])
        .status();
    assert!(
        status.is_ok_and(|s| s.success()),
        "cannot raise the open-file limit to {n} (it is {soft:?}); raise it with ulimit -n"
    );
}

/// Puts `n` small messages into `queue` from a well-behaved producer on a fresh connection: pre-settled,
/// never beyond the credit the broker grants. Returns once the broker has taken them all.
pub fn feed(port: u16, queue: &str, n: u32) -> Result<(), String> {
    let mut p = Peer::try_connect(port)?;
    p.open_with(our_open())?;
    p.begin(0)?;
    let (theirs, credit) = p.attach_sender(0, 0, "feeder", queue)?;
    let mut limit = credit; // our initial delivery-count is 0
    let mut sent = 0u32;
    let body = data_section(b"fed");
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent < n {
        if sent < limit {
            let k = (limit - sent).min(n - sent).min(500);
            let mut bytes = Vec::new();
            for i in sent..sent + k {
                bytes.extend(transfer_frame(0, small_transfer(0, i, true), &body));
            }
            p.write(&bytes)?;
            sent += k;
            continue;
        }
        let f = p
            .next_frame(deadline)
            .ok_or_else(|| format!("no credit after {sent} of {n} messages"))?;
        if let Some(fl) = as_flow(&f).filter(|fl| fl.handle == Some(theirs.handle)) {
            if let (Some(dc), Some(c)) = (fl.delivery_count, fl.link_credit) {
                limit = limit.max(dc.wrapping_add(c));
            }
        }
        if !p.errors.is_empty() {
            return Err(format!("the feeder got errors: {:?}", p.errors));
        }
    }
    if !p.sync(WAIT) {
        return Err("the broker did not take the fed messages".into());
    }
    p.close();
    Ok(())
}
