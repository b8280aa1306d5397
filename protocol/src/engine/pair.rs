//! [`Pair`]: two engines wired back to back in memory, with a simulated clock and a hook that can drop, delay
//! or alter frames in flight. The engine's own tests are written against it, and it serves any handler test or
//! benchmark that wants a peer without sockets.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{Connection, ConnectionConfig, Event, LinkConfig, LinkId, SessionId};

/// Which way a unit of bytes travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the client engine to the server engine.
    ClientToServer,
    /// From the server engine to the client engine.
    ServerToClient,
}

/// What the in-flight hook does with a protocol header or frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it unchanged.
    Pass,
    /// Lose it.
    Drop,
    /// Deliver these bytes instead.
    Replace(Vec<u8>),
    /// Deliver it after this much simulated time (later units in the same direction wait behind it).
    Delay(Duration),
}

type Hook = Box<dyn FnMut(Direction, &[u8]) -> Verdict>;

/// Splits a byte stream into protocol headers and frames.
#[derive(Default)]
struct Splitter {
    buf: Vec<u8>,
}

impl Splitter {
    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    fn next_unit(&mut self) -> Option<Vec<u8>> {
        let len = if self.buf.starts_with(b"AMQP") {
            8
        } else if self.buf.len() >= 4 {
            u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize
        } else {
            return None;
        };
        if len == 0 || len < 8 && !self.buf.starts_with(b"AMQP") {
            // Not a frame we can delimit: hand over everything as is.
            return (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf));
        }
        (self.buf.len() >= len).then(|| self.buf.drain(..len).collect())
    }
}

#[derive(Default)]
struct Wire {
    splitter: Splitter,
    in_flight: VecDeque<(Instant, Vec<u8>)>,
}

/// A client engine and a server engine connected in memory.
pub struct Pair {
    /// The client engine.
    pub client: Connection,
    /// The server engine.
    pub server: Connection,
    /// The simulated time.
    pub now: Instant,
    /// Events the client produced, oldest first, not yet taken.
    pub client_events: Vec<Event>,
    /// Events the server produced, oldest first, not yet taken.
    pub server_events: Vec<Event>,
    /// Bytes the client wrote in total.
    pub client_bytes: usize,
    /// Bytes the server wrote in total.
    pub server_bytes: usize,
    to_server: Wire,
    to_client: Wire,
    hook: Option<Hook>,
}

impl Pair {
    /// Two engines with these configurations, starting at a fixed simulated time.
    pub fn new(client: ConnectionConfig, server: ConnectionConfig) -> Self {
        let now = Instant::now();
        Pair {
            client: Connection::new(client, now),
            server: Connection::new(server, now),
            now,
            client_events: Vec::new(),
            server_events: Vec::new(),
            client_bytes: 0,
            server_bytes: 0,
            to_server: Wire::default(),
            to_client: Wire::default(),
            hook: None,
        }
    }

    /// Default client and server configurations.
    pub fn default_configs() -> Self {
        Self::new(
            ConnectionConfig::client("client"),
            ConnectionConfig::server("server"),
        )
    }

    /// Installs a hook that sees every protocol header and frame in flight.
    pub fn set_hook(&mut self, hook: impl FnMut(Direction, &[u8]) -> Verdict + 'static) {
        self.hook = Some(Box::new(hook));
    }

    /// Removes the hook.
    pub fn clear_hook(&mut self) {
        self.hook = None;
    }

    /// Exchanges bytes until neither engine has anything to send and nothing due is in flight; events are
    /// collected into `client_events` / `server_events`.
    ///
    /// # Panics
    /// If the engines never go quiet (a livelock): a test failure, not something to recover from.
    pub fn drive(&mut self) {
        for _ in 0..1_000_000 {
            let mut progressed = self.collect();
            progressed |= self.deliver();
            if !progressed {
                return;
            }
        }
        panic!("the engines never went quiet");
    }

    fn collect(&mut self) -> bool {
        let mut progressed = false;
        while let Some(e) = self.client.poll_event() {
            self.client_events.push(e);
            progressed = true;
        }
        while let Some(e) = self.server.poll_event() {
            self.server_events.push(e);
            progressed = true;
        }
        if let Some(b) = self.client.poll_transmit(self.now) {
            self.client_bytes += b.len();
            self.to_server.splitter.push(&b);
            progressed = true;
        }
        if let Some(b) = self.server.poll_transmit(self.now) {
            self.server_bytes += b.len();
            self.to_client.splitter.push(&b);
            progressed = true;
        }
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            let wire = match dir {
                Direction::ClientToServer => &mut self.to_server,
                Direction::ServerToClient => &mut self.to_client,
            };
            while let Some(unit) = wire.splitter.next_unit() {
                let verdict = match &mut self.hook {
                    Some(h) => h(dir, &unit),
                    None => Verdict::Pass,
                };
                match verdict {
                    Verdict::Pass => wire.in_flight.push_back((self.now, unit)),
                    Verdict::Drop => {}
                    Verdict::Replace(bytes) => wire.in_flight.push_back((self.now, bytes)),
                    Verdict::Delay(d) => wire.in_flight.push_back((self.now + d, unit)),
                }
                progressed = true;
            }
        }
        progressed
    }

    fn deliver(&mut self) -> bool {
        let mut progressed = false;
        while self
            .to_server
            .in_flight
            .front()
            .is_some_and(|(at, _)| *at <= self.now)
        {
            if let Some((_, bytes)) = self.to_server.in_flight.pop_front() {
                self.server.handle_input(&bytes, self.now);
                progressed = true;
            }
        }
        while self
            .to_client
            .in_flight
            .front()
            .is_some_and(|(at, _)| *at <= self.now)
        {
            if let Some((_, bytes)) = self.to_client.in_flight.pop_front() {
                self.client.handle_input(&bytes, self.now);
                progressed = true;
            }
        }
        progressed
    }

    /// Moves the simulated clock forward by `by`, firing each engine's timer when due, and drives.
    pub fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let next = [
                self.client.poll_timeout(),
                self.server.poll_timeout(),
                self.to_server.in_flight.front().map(|(t, _)| *t),
                self.to_client.in_flight.front().map(|(t, _)| *t),
            ]
            .into_iter()
            .flatten()
            .filter(|&t| t > self.now)
            .min();
            match next {
                Some(t) if t <= end => self.now = t,
                _ => {
                    self.now = end;
                    self.tick();
                    return;
                }
            }
            self.tick();
        }
    }

    fn tick(&mut self) {
        if self.client.poll_timeout().is_some_and(|t| t <= self.now) {
            self.client.handle_timeout(self.now);
        }
        if self.server.poll_timeout().is_some_and(|t| t <= self.now) {
            self.server.handle_timeout(self.now);
        }
        self.drive();
    }

    /// Takes the client's collected events.
    pub fn take_client_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.client_events)
    }

    /// Takes the server's collected events.
    pub fn take_server_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.server_events)
    }

    /// Opens both ends (the server answers the client's open) and drives until quiet.
    ///
    /// # Panics
    /// This and the other handshake helpers panic if the engines refuse: they are for tests.
    pub fn open(&mut self) {
        self.client.open().expect("client opens");
        self.drive();
        self.server.open().expect("server opens");
        self.drive();
    }

    /// Begins a session from the client, answered by the server; returns (client, server) handles.
    pub fn begin(&mut self) -> (SessionId, SessionId) {
        let c = self.client.begin().expect("client begins");
        self.drive();
        let s = self
            .server_events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::SessionRemoteBegin(s) => Some(*s),
                _ => None,
            })
            .expect("the server saw the begin");
        self.server.begin_reply(s).expect("server answers begin");
        self.drive();
        (c, s)
    }

    /// Attaches a link from the client with `config`; the server answers with the mirror role and the same
    /// terms. Returns (client link, server link).
    pub fn attach(
        &mut self,
        session: (SessionId, SessionId),
        config: LinkConfig,
    ) -> (LinkId, LinkId) {
        let c = self
            .client
            .attach(session.0, config.clone())
            .expect("client attaches");
        self.drive();
        let s = self
            .server_events
            .iter()
            .rev()
            .find_map(|e| match e {
                Event::LinkRemoteAttach(l) => Some(*l),
                _ => None,
            })
            .expect("the server saw the attach");
        self.server
            .attach_reply(s, config)
            .expect("server answers attach");
        self.drive();
        (c, s)
    }

    /// A pair that is open with one session: (pair, client session, server session).
    pub fn connected() -> (Pair, (SessionId, SessionId)) {
        let mut p = Pair::default_configs();
        p.open();
        let s = p.begin();
        p.client_events.clear();
        p.server_events.clear();
        (p, s)
    }

    /// Sends one unsettled message from `link` on the client with a numeric tag.
    pub fn client_send(&mut self, link: LinkId, n: u64, payload: Bytes) -> super::DeliveryId {
        self.client
            .send(
                link,
                Bytes::copy_from_slice(&n.to_be_bytes()),
                payload,
                false,
            )
            .unwrap_or_else(|e| panic!("client sends: {e:?}"))
    }
}
