//! A small blocking driver that runs one [`Connection`] over a real TCP socket, with no async runtime.
//!
//! It exists for interop tests: a [`Driver`] owns a [`TcpStream`] (loopback only) and an engine, and turns the
//! engine's [polling contract](nucleon_protocol::engine) into a plain loop:
//!
//! 1. drain the engine's events into a queue, then write everything `poll_transmit` returns;
//! 2. block on a read whose timeout is the earlier of the engine's `poll_timeout` and the driver's deadline;
//! 3. feed what was read to `handle_input` (or call `handle_timeout` when the timer is due, or report EOF and
//!    IO errors), and start again.
//!
//! Events are handed to the test one at a time ([`Driver::next_event`], [`Driver::run_until`],
//! [`Driver::run_for`]); the test reacts by calling the engine's mutators through [`Driver::conn`], and the
//! next turn of the loop writes the result. Every driver has an overall deadline, so a test that waits for
//! something that never comes fails with [`DriverError::Deadline`] (and the recent events) instead of hanging.
//! The only waiting is in socket reads with a bounded timeout: there are no sleeps.
//!
//! ```no_run
//! use std::time::Duration;
//! use nucleon_integration_tests::driver::Driver;
//! use nucleon_protocol::engine::{ConnectionConfig, Event};
//!
//! # fn main() -> Result<(), nucleon_integration_tests::driver::DriverError> {
//! let addr = "127.0.0.1:5672".parse().unwrap();
//! let mut d = Driver::connect(addr, ConnectionConfig::client("me"), Duration::from_secs(10))?;
//! d.conn().open()?;
//! d.run_until("the peer's open", |_, e| matches!(e, Event::ConnectionRemoteOpen(_)).then_some(()))?;
//! d.close()?;
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nucleon_protocol::engine::{
    Connection, ConnectionConfig, EngineError, Event, LinkConfig, LinkId,
};

/// How many recent events a [`DriverError`] reports.
const HISTORY: usize = 40;

/// The read buffer size: one read takes at most this much.
const READ_BUF: usize = 64 * 1024;

/// Why a driver stopped.
#[derive(Debug)]
pub enum DriverError {
    /// The overall deadline passed before what the test was waiting for happened.
    Deadline {
        /// What the test was waiting for.
        waiting_for: String,
        /// The last events seen, oldest first.
        recent: Vec<String>,
    },
    /// The transport closed (the engine emitted [`Event::TransportClosed`], and it was consumed) before what
    /// the test was waiting for happened.
    Closed {
        /// What the test was waiting for.
        waiting_for: String,
        /// The last events seen, oldest first.
        recent: Vec<String>,
    },
    /// Setting up the socket failed, or the driver was misused (e.g. a non-loopback address).
    Io(io::Error),
    /// An engine mutator refused a call.
    Engine(EngineError),
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, waiting_for, recent) = match self {
            DriverError::Io(e) => return write!(f, "socket error: {e}"),
            DriverError::Engine(e) => return write!(f, "engine refused a call: {e}"),
            DriverError::Deadline {
                waiting_for,
                recent,
            } => ("the deadline passed", waiting_for, recent),
            DriverError::Closed {
                waiting_for,
                recent,
            } => ("the transport closed", waiting_for, recent),
        };
        write!(f, "{what} while waiting for {waiting_for}; recent events:")?;
        if recent.is_empty() {
            write!(f, " (none)")?;
        }
        for e in recent {
            write!(f, "\n    {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for DriverError {}

impl From<io::Error> for DriverError {
    fn from(e: io::Error) -> Self {
        DriverError::Io(e)
    }
}

impl From<EngineError> for DriverError {
    fn from(e: EngineError) -> Self {
        DriverError::Engine(e)
    }
}

/// One engine over one TCP connection. See the [module documentation](self).
pub struct Driver {
    stream: TcpStream,
    conn: Connection,
    /// Events polled from the engine and not yet handed to the test.
    events: VecDeque<Event>,
    /// Summaries of the last [`HISTORY`] events handed out, for error reports.
    history: VecDeque<String>,
    deadline: Instant,
    /// The engine has emitted `TransportClosed`.
    transport_closed: bool,
    /// We shut the socket down (after the engine finished).
    socket_closed: bool,
    read_buf: Box<[u8]>,
    bytes_in: u64,
    bytes_out: u64,
}

impl fmt::Debug for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Driver")
            .field("peer", &self.stream.peer_addr().ok())
            .field("conn", &self.conn)
            .field("queued_events", &self.events.len())
            .field("transport_closed", &self.transport_closed)
            .field("bytes_in", &self.bytes_in)
            .field("bytes_out", &self.bytes_out)
            .finish_non_exhaustive()
    }
}

/// A listener on `127.0.0.1` with a port chosen by the OS, for [`Driver::accept`].
pub fn listen() -> io::Result<TcpListener> {
    TcpListener::bind(("127.0.0.1", 0))
}

fn require_loopback(addr: SocketAddr) -> io::Result<()> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(io::Error::new(
            ErrorKind::InvalidInput,
            format!("the test driver only talks to loopback addresses, not {addr}"),
        ))
    }
}

impl Driver {
    /// Connects to `addr` (a loopback address) as a client engine with `config`. The driver gives up
    /// `budget` from now (see [`set_deadline`](Self::set_deadline)).
    pub fn connect(
        addr: SocketAddr,
        config: ConnectionConfig,
        budget: Duration,
    ) -> Result<Self, DriverError> {
        require_loopback(addr)?;
        let stream = TcpStream::connect_timeout(&addr, budget)?;
        Self::with_stream(stream, config, budget)
    }

    /// Accepts one connection on `listener` (bound to a loopback address, see [`listen`]) and serves it with
    /// a server engine with `config`. Waits at most `budget` for the client, then fails with
    /// [`DriverError::Deadline`]; the same budget then applies to the connection.
    pub fn accept(
        listener: &TcpListener,
        config: ConnectionConfig,
        budget: Duration,
    ) -> Result<Self, DriverError> {
        let addr = listener.local_addr()?;
        require_loopback(addr)?;
        // `accept` has no timeout. A watchdog thread wakes it by connecting itself once the budget is spent;
        // dropping `done` tells the watchdog that a real client came first.
        let (done, watch) = mpsc::channel::<()>();
        let watchdog = thread::spawn(move || match watch.recv_timeout(budget) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                TcpStream::connect(addr).and_then(|s| s.local_addr()).ok()
            }
            _ => None,
        });
        let accepted = listener.accept();
        drop(done);
        let woke_with = watchdog.join().unwrap_or(None);
        let (stream, peer) = accepted?;
        if Some(peer) == woke_with {
            return Err(DriverError::Deadline {
                waiting_for: format!("a client to connect to {addr}"),
                recent: Vec::new(),
            });
        }
        Self::with_stream(stream, config, budget)
    }

    fn with_stream(
        stream: TcpStream,
        config: ConnectionConfig,
        budget: Duration,
    ) -> Result<Self, DriverError> {
        stream.set_nodelay(true)?;
        let now = Instant::now();
        Ok(Driver {
            stream,
            conn: Connection::new(config, now),
            events: VecDeque::new(),
            history: VecDeque::new(),
            deadline: now + budget,
            transport_closed: false,
            socket_closed: false,
            read_buf: vec![0; READ_BUF].into_boxed_slice(),
            bytes_in: 0,
            bytes_out: 0,
        })
    }

    /// The engine, to call its mutators (`open`, `attach`, `send`, ...). What they produce is written on the
    /// next turn of the loop.
    pub fn conn(&mut self) -> &mut Connection {
        &mut self.conn
    }

    /// The engine, read-only.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Gives the driver `budget` more time from now.
    pub fn set_deadline(&mut self, budget: Duration) {
        self.deadline = Instant::now() + budget;
    }

    /// Bytes read from and written to the socket so far.
    pub fn bytes(&self) -> (u64, u64) {
        (self.bytes_in, self.bytes_out)
    }

    /// True once the engine has emitted [`Event::TransportClosed`].
    pub fn is_closed(&self) -> bool {
        self.transport_closed
    }

    /// The next event, running the IO loop until there is one. Fails on the deadline, or once
    /// [`Event::TransportClosed`] has been handed out and nothing is left. `waiting_for` names the goal in
    /// error reports.
    pub fn next_event(&mut self, waiting_for: &str) -> Result<Event, DriverError> {
        let next = self.next_event_before(self.deadline);
        match self.relabel(next, waiting_for)? {
            Some(e) => Ok(e),
            None => Err(self.deadline_error(waiting_for)),
        }
    }

    /// Runs the loop, handing each event to `f` (which may call the engine's mutators) until `f` returns
    /// `Some`; returns that value. `waiting_for` names the goal in error reports.
    pub fn run_until<T>(
        &mut self,
        waiting_for: &str,
        mut f: impl FnMut(&mut Connection, &Event) -> Option<T>,
    ) -> Result<T, DriverError> {
        loop {
            let event = self.next_event(waiting_for)?;
            if let Some(done) = f(&mut self.conn, &event) {
                return Ok(done);
            }
        }
    }

    /// Runs the loop for `duration`, handing each event to `f`. Fails if the transport closes, or if the
    /// overall deadline comes first.
    pub fn run_for(
        &mut self,
        duration: Duration,
        mut f: impl FnMut(&mut Connection, &Event),
    ) -> Result<(), DriverError> {
        let waiting_for = format!("{duration:?} to pass");
        let until = Instant::now() + duration;
        if until > self.deadline {
            return Err(self.deadline_error(&waiting_for));
        }
        loop {
            let event = self.next_event_before(until);
            match self.relabel(event, &waiting_for)? {
                Some(event) => f(&mut self.conn, &event),
                None => return Ok(()),
            }
        }
    }

    /// Closes the connection cleanly: sends `close` (if not sent yet) and runs until the transport closes.
    pub fn close(&mut self) -> Result<(), DriverError> {
        if self.transport_closed {
            return Ok(());
        }
        // Refused only when we already closed (or the transport ended): then just wait for the end.
        let _ = self.conn.close(None);
        self.run_until("the transport to close", |_, e| {
            matches!(e, Event::TransportClosed).then_some(())
        })
    }

    /// Replaces the generic waiting label in a `Closed`/`Deadline` error with the caller's.
    fn relabel<T>(&self, r: Result<T, DriverError>, waiting_for: &str) -> Result<T, DriverError> {
        r.map_err(|e| match e {
            DriverError::Closed { recent, .. } => DriverError::Closed {
                waiting_for: waiting_for.to_owned(),
                recent,
            },
            DriverError::Deadline { recent, .. } => DriverError::Deadline {
                waiting_for: waiting_for.to_owned(),
                recent,
            },
            other => other,
        })
    }

    fn deadline_error(&self, waiting_for: &str) -> DriverError {
        DriverError::Deadline {
            waiting_for: waiting_for.to_owned(),
            recent: self.history.iter().cloned().collect(),
        }
    }

    /// The next event, or `None` once `until` has passed without one.
    fn next_event_before(&mut self, until: Instant) -> Result<Option<Event>, DriverError> {
        loop {
            self.pump()?;
            if let Some(e) = self.events.pop_front() {
                if self.history.len() == HISTORY {
                    self.history.pop_front();
                }
                self.history.push_back(summarize(&e));
                return Ok(Some(e));
            }
            if self.transport_closed {
                return Err(DriverError::Closed {
                    waiting_for: "an event".into(),
                    recent: self.history.iter().cloned().collect(),
                });
            }
            if Instant::now() >= until {
                return Ok(None);
            }
            self.wait_for_input(until.min(self.deadline))?;
        }
    }

    /// Polls the engine's events into the queue and writes what it has to send, until it has nothing more;
    /// shuts the socket down once the engine is finished.
    fn pump(&mut self) -> Result<(), DriverError> {
        loop {
            while let Some(e) = self.conn.poll_event() {
                self.transport_closed |= e == Event::TransportClosed;
                self.events.push_back(e);
            }
            let Some(bytes) = self.conn.poll_transmit(Instant::now()) else {
                break;
            };
            if self.socket_closed {
                continue;
            }
            // Bounded by the deadline: a peer that stops reading cannot hang the test.
            let left = self.deadline.saturating_duration_since(Instant::now());
            self.stream
                .set_write_timeout(Some(left.max(Duration::from_millis(1))))?;
            match self.stream.write_all(&bytes) {
                Ok(()) => self.bytes_out += bytes.len() as u64,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(self.deadline_error(&format!(
                        "the peer to read {} bytes (it stopped reading)",
                        bytes.len()
                    )));
                }
                Err(e) => self.conn.handle_disconnected(format!("write failed: {e}")),
            }
        }
        if self.transport_closed && !self.socket_closed && self.conn.is_finished() {
            self.socket_closed = true;
            let _ = self.stream.shutdown(Shutdown::Both);
        }
        Ok(())
    }

    /// Blocks until input arrives, the engine's timer is due, or `until`; feeds the engine accordingly.
    fn wait_for_input(&mut self, until: Instant) -> Result<(), DriverError> {
        let now = Instant::now();
        let timer = self.conn.poll_timeout();
        if timer.is_some_and(|t| t <= now) {
            self.conn.handle_timeout(now);
            return Ok(());
        }
        if self.socket_closed {
            return Ok(());
        }
        let wake = timer.map_or(until, |t| t.min(until));
        let wait = wake
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        self.stream.set_read_timeout(Some(wait))?;
        match self.stream.read(&mut self.read_buf) {
            Ok(0) => self.conn.handle_read_closed(),
            Ok(n) => {
                self.bytes_in += n as u64;
                self.conn.handle_input(&self.read_buf[..n], Instant::now());
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                // The timer or `until` is due; the caller's loop checks both.
                let now = Instant::now();
                if self.conn.poll_timeout().is_some_and(|t| t <= now) {
                    self.conn.handle_timeout(now);
                }
            }
            Err(e) => self.conn.handle_disconnected(format!("read failed: {e}")),
        }
        Ok(())
    }
}

/// A one-line description of an event for error reports (message payloads are summarized by size).
pub fn summarize(e: &Event) -> String {
    let text = match e {
        Event::Delivery {
            delivery,
            tag,
            payload,
            message_format,
            settled,
        } => format!(
            "Delivery {{ delivery: {delivery:?}, tag: {tag:?}, payload: {} bytes, message_format: \
             {message_format}, settled: {settled} }}",
            payload.len()
        ),
        other => format!("{other:?}"),
    };
    const MAX: usize = 400;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}... ({} chars)", &text[..cut], text.len()),
        None => text,
    }
}

/// The usual answers of a server (or of a client that lets the peer attach links): replies to the peer's
/// `open`, `begin` and `attach` with mirrored terms (see [`mirror_link`]). Returns true if it handled `event`.
pub fn answer_peer(conn: &mut Connection, event: &Event) -> Result<bool, EngineError> {
    match event {
        Event::ConnectionRemoteOpen(_) => match conn.open() {
            // Already open (we opened first): nothing to answer.
            Ok(()) | Err(EngineError::IllegalState(_)) => Ok(true),
            Err(e) => Err(e),
        },
        Event::SessionRemoteBegin(session) => conn.begin_reply(*session).map(|()| true),
        Event::LinkRemoteAttach(link) => {
            let config = mirror_link(conn, *link)?;
            conn.attach_reply(*link, config).map(|()| true)
        }
        _ => Ok(false),
    }
}

/// Our terms for a link the peer attached: the opposite role, and the peer's source and target.
pub fn mirror_link(conn: &Connection, link: LinkId) -> Result<LinkConfig, EngineError> {
    let ours = conn.link_config(link)?;
    let theirs = conn.remote_attach(link)?;
    Ok(LinkConfig {
        name: ours.name.clone(),
        role: ours.role,
        source: theirs.and_then(|a| a.source.clone()),
        target: theirs.and_then(|a| a.target.clone()),
        ..LinkConfig::default()
    })
}
