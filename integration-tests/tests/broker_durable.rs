//! The durable broker, end to end: the `broker` binary run with `--data-dir`, killed with SIGKILL, restarted,
//! given damaged journals and a full disk. Every test starts its own broker process (a port picked by the
//! OS, read from the ready line) on its own data directory, and talks to it with the sans-IO engine over
//! blocking sockets ([`Driver`]), so that a test decides every frame: when an accept goes out, when a link
//! detaches without closing, what the broker answered.
//!
//! * `a_broker_killed_at_random_loses_nothing_accepted_and_brings_back_nothing_settled`: 20 rounds (or
//!   `NUCLEON_CRASH_ROUNDS`) of producers and consumers streaming while the broker is SIGKILLed at a random
//!   moment, then restarted on the same directory. The seed is printed; `NUCLEON_CRASH_SEED=N` replays its
//!   choices.
//! * a restart brings back queues and messages in order, delivered-unsettled ones with delivery-count + 1;
//! * a durable topic subscription keeps collecting while detached and across a restart;
//! * a dynamic queue does not come back;
//! * a torn tail is dropped; a flipped byte in the middle and a missing segment stop the broker with exit
//!   status 1 and one line naming the file (and offset), and `--salvage` brings back the rest;
//! * a full disk (a small tmpfs) rejects producers with `amqp:resource-limit-exceeded`, loses nothing
//!   accepted, and recovers once space returns, without a restart.
//!
//! The broker binary is built by `cargo build -p nucleon-examples --bin broker` into this test's own target
//! directory and profile, once per run (`NUCLEON_BROKER_BIN` names another one).

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use nucleon::protocol::codec::Symbol;
use nucleon::protocol::engine::{
    ConnectionConfig, DeliveryId, Event, LinkConfig, LinkId, SessionId,
};
use nucleon::protocol::frame::{
    Accepted, DeliveryState, ErrorCondition, Source, Target, TerminusDurability,
    TerminusExpiryPolicy,
};
use nucleon::{Message, Value};
use nucleon_integration_tests::driver::{Driver, DriverError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How long a broker may take to print its ready line (recovery included) or to exit.
const START: Duration = Duration::from_secs(60);
/// The bound on any one step of a client: attaching, an outcome, a message that must come.
const STEP: Duration = Duration::from_secs(20);
/// How long a queue must stay silent to count as drained (the broker sends what it has within
/// milliseconds on loopback).
const QUIET: Duration = Duration::from_millis(500);

// ---------------------------------------------------------------------------------------------------------
// The broker process.

/// The `broker` binary, built once per test run into this test binary's target directory and profile.
fn broker_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("NUCLEON_BROKER_BIN") {
            return PathBuf::from(bin);
        }
        // This binary is TARGET/PROFILE/deps/broker_durable-HASH.
        let exe = std::env::current_exe().expect("the test binary's path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test binary lives in TARGET/PROFILE/deps");
        let target_dir = profile_dir.parent().expect("TARGET/PROFILE");
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("integration-tests lives in the workspace");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "-p", "nucleon-examples", "--bin", "broker"])
            .env("CARGO_TARGET_DIR", target_dir)
            .current_dir(workspace);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        let status = build.status().expect("cargo runs");
        assert!(
            status.success(),
            "building the broker binary failed: {status}"
        );
        profile_dir.join("broker")
    })
}

/// A data directory under the system's temporary directory, removed when dropped.
struct DataDir(PathBuf);

impl DataDir {
    fn new(test: &str) -> DataDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "nucleon-durable-{test}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("creates the data directory");
        DataDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running broker. Killed (SIGKILL) when dropped.
struct BrokerProcess {
    child: Child,
    port: u16,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

/// How a broker start ended: ready (listening), or exited before its ready line.
enum Started {
    Ready(BrokerProcess),
    Exited { status: ExitStatus, stderr: String },
}

impl Started {
    fn ready(self) -> BrokerProcess {
        match self {
            Started::Ready(b) => b,
            Started::Exited { status, stderr } => {
                panic!("the broker exited ({status}) instead of starting; stderr:\n{stderr}")
            }
        }
    }

    fn exited(self) -> (ExitStatus, String) {
        match self {
            Started::Exited { status, stderr } => (status, stderr),
            Started::Ready(b) => panic!(
                "the broker started (port {}) where it should have refused to; stderr:\n{}",
                b.port,
                b.stderr()
            ),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts `broker -a 127.0.0.1:0 -t 2 --data-dir DIR EXTRA...` and waits (bounded) for its ready line, or
/// for it to exit.
fn start_broker(dir: &Path, extra: &[&str]) -> Started {
    let mut child = Command::new(broker_binary())
        .args(["-a", "127.0.0.1:0", "-t", "2", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the broker binary runs");
    let stderr = Arc::new(Mutex::new(String::new()));
    let mut err_pipe = child.stderr.take().expect("stderr");
    let collected = stderr.clone();
    let stderr_reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = err_pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            lock(&collected).push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let stdout = child.stdout.take().expect("stdout");
    let (tx, lines) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + START;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                let port = line
                    .strip_prefix("broker listening on 127.0.0.1:")
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|p| p.parse::<u16>().ok());
                if let Some(port) = port {
                    return Started::Ready(BrokerProcess {
                        child,
                        port,
                        stderr,
                        stderr_reader: Some(stderr_reader),
                    });
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                // Its stdout closed: it exited (or is exiting) without a ready line.
                let status =
                    wait_bounded(&mut child).expect("the broker exits after closing stdout");
                let _ = stderr_reader.join();
                let stderr = lock(&stderr).clone();
                return Started::Exited { status, stderr };
            }
            Err(RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no ready line within {START:?}; stderr:\n{}", lock(&stderr));
            }
        }
    }
}

/// The child's exit status, waiting at most [`START`] (`None`: still running).
fn wait_bounded(child: &mut Child) -> Option<ExitStatus> {
    let deadline = Instant::now() + START;
    loop {
        if let Some(status) = child.try_wait().expect("waits for the broker") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

impl BrokerProcess {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// What it printed on stderr so far.
    fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// SIGKILL: no chance to flush, close or say goodbye.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("the killed broker is reaped");
    }

    /// SIGTERM, and a clean exit (status 0) within [`START`]; returns what it printed on stderr.
    fn stop(mut self) -> String {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let exit = wait_bounded(&mut self.child).expect("the broker stops on SIGTERM in time");
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        let stderr = self.stderr();
        assert!(
            exit.success(),
            "a clean exit on SIGTERM: {exit}; stderr:\n{stderr}"
        );
        stderr
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------------------
// Clients: one engine over one blocking socket, one session.

struct Client {
    d: Driver,
    session: SessionId,
}

/// Why an attach did not give a link: the broker's condition, if it gave one.
#[derive(Debug)]
struct Refused(Option<ErrorCondition>);

impl Client {
    fn connect(addr: SocketAddr, container_id: &str) -> Client {
        Client::try_connect(addr, container_id, STEP).expect("connects")
    }

    fn try_connect(
        addr: SocketAddr,
        container_id: &str,
        budget: Duration,
    ) -> Result<Client, DriverError> {
        let mut d = Driver::connect(addr, ConnectionConfig::client(container_id), budget)?;
        d.conn().open()?;
        let session = d.conn().begin()?;
        Ok(Client { d, session })
    }

    /// Attaches `config` and waits for the broker's answer: the link, or the refusal (a null terminus and a
    /// detach).
    fn attach(&mut self, config: LinkConfig) -> Result<LinkId, Refused> {
        let receiving = config.role == nucleon::protocol::frame::Role::Receiver;
        let link = self
            .d
            .conn()
            .attach(self.session, config)
            .expect("attaches");
        self.d
            .run_until("the broker's attach", |_, e| {
                matches!(e, Event::LinkRemoteAttach(l) if *l == link).then_some(())
            })
            .expect("the broker answers the attach");
        let attach = self
            .d
            .connection()
            .remote_attach(link)
            .expect("the link exists")
            .expect("the broker attached");
        let refused = if receiving {
            attach.source.is_none()
        } else {
            attach.target.is_none()
        };
        if !refused {
            return Ok(link);
        }
        let condition = self
            .d
            .run_until("the refusing detach", |_, e| match e {
                Event::LinkRemoteDetach { link: l, error, .. } if *l == link => {
                    Some(error.as_ref().map(|e| e.condition.clone()))
                }
                _ => None,
            })
            .expect("a detach follows a refusal");
        Err(Refused(condition))
    }

    fn sender(&mut self, name: &str, address: &str) -> LinkId {
        self.attach(LinkConfig::sender(name, address))
            .unwrap_or_else(|r| panic!("the sender to {address} was refused: {r:?}"))
    }

    /// A sender to the topic `address` (the `topic` capability on its target).
    fn publisher(&mut self, name: &str, address: &str) -> LinkId {
        let config = LinkConfig {
            target: Some(Target {
                address: Some(address.into()),
                capabilities: Some(vec![Symbol::from_static(nucleon::broker::TOPIC)]),
                ..Target::default()
            }),
            ..LinkConfig::sender(name, address)
        };
        self.attach(config)
            .unwrap_or_else(|r| panic!("the publisher to {address} was refused: {r:?}"))
    }

    fn receiver(&mut self, name: &str, address: &str, credit: u32) -> LinkId {
        self.receiver_with(LinkConfig::receiver(name, address), credit)
            .unwrap_or_else(|r| panic!("the receiver from {address} was refused: {r:?}"))
    }

    fn receiver_with(&mut self, config: LinkConfig, credit: u32) -> Result<LinkId, Refused> {
        let link = self.attach(config)?;
        if credit > 0 {
            self.d
                .conn()
                .add_credit(link, credit)
                .expect("grants credit");
        }
        Ok(link)
    }

    /// Sends `m` unsettled and waits for its outcome (the broker's state; settled here if the broker did
    /// not settle it).
    fn send(&mut self, link: LinkId, m: &Message) -> Option<DeliveryState> {
        while self.d.connection().credit(link).expect("a link") == 0 {
            self.d.next_event("credit to send").expect("credit comes");
        }
        let tag = Bytes::copy_from_slice(&rand::random::<u64>().to_be_bytes());
        let delivery = self
            .d
            .conn()
            .send(link, tag, m.to_bytes(), false)
            .expect("sends");
        let (state, settled) = self
            .d
            .run_until("an outcome", |_, e| match e {
                Event::RemoteDisposition {
                    delivery: d,
                    state,
                    settled,
                } if *d == delivery => Some((state.clone(), *settled)),
                _ => None,
            })
            .expect("an outcome in time");
        if !settled {
            let _ = self.d.conn().settle(delivery);
        }
        state
    }

    fn send_accepted(&mut self, link: LinkId, m: &Message) {
        let state = self.send(link, m);
        assert!(
            matches!(state, Some(DeliveryState::Accepted(_))),
            "expected accepted for {m:?}, got {state:?}"
        );
    }

    /// The next message on any receiving link, or `None` once nothing came for `wait`.
    fn recv_within(&mut self, wait: Duration) -> Option<(DeliveryId, Message)> {
        self.d.set_deadline(wait);
        let got = loop {
            match self.d.next_event("a message") {
                Ok(Event::Delivery {
                    delivery, payload, ..
                }) => {
                    let m = Message::decode(payload).expect("a well-formed message");
                    break Some((delivery, m));
                }
                Ok(_) => {}
                Err(DriverError::Deadline { .. }) => break None,
                Err(e) => panic!("the connection failed while receiving: {e}"),
            }
        };
        self.d.set_deadline(STEP);
        got
    }

    /// The next message, which must come within [`STEP`].
    fn recv(&mut self) -> (DeliveryId, Message) {
        self.recv_within(STEP).expect("a message in time")
    }

    /// Accepts and settles `delivery`, and gives its credit back.
    fn accept(&mut self, delivery: DeliveryId) {
        self.accept_only(delivery);
        self.d.conn().add_credit(delivery.link, 1).expect("credit");
    }

    /// Accepts and settles `delivery`, giving no more credit.
    fn accept_only(&mut self, delivery: DeliveryId) {
        let accepted = DeliveryState::Accepted(Accepted {});
        self.d
            .conn()
            .disposition(delivery, Some(accepted), true)
            .expect("accepts");
    }

    /// Detaches `link` (`closed`: for good) and waits for the broker's detach.
    fn detach(&mut self, link: LinkId, closed: bool) {
        self.d.conn().detach(link, closed, None).expect("detaches");
        self.d
            .run_until("the broker's detach", |_, e| {
                matches!(e, Event::LinkRemoteDetach { link: l, .. } if *l == link).then_some(())
            })
            .expect("the broker detaches too");
    }

    /// Receives until nothing comes for [`QUIET`], accepting everything; the bodies, in order.
    fn drain(&mut self) -> Vec<Message> {
        let mut got = Vec::new();
        while let Some((delivery, m)) = self.recv_within(QUIET) {
            self.accept(delivery);
            got.push(m);
        }
        got
    }

    fn close(mut self) {
        let _ = self.d.close();
    }
}

fn numbered(i: i64) -> Message {
    Message::builder().first_acquirer(true).body(i).build()
}

fn number(m: &Message) -> i64 {
    m.body_value().and_then(Value::as_i64).unwrap_or(-1)
}

fn first_acquirer(m: &Message) -> bool {
    m.header().is_some_and(|h| h.first_acquirer)
}

fn numbers(ms: &[Message]) -> Vec<i64> {
    ms.iter().map(number).collect()
}

// ---------------------------------------------------------------------------------------------------------
// The crash test.

/// Queues the crash test streams through.
const CRASH_QUEUES: usize = 2;
/// Where consumers send their barriers (see [`crash_consumer`]).
const BARRIER_QUEUE: &str = "crash-barrier";
/// Sends a producer keeps waiting for an outcome.
const PRODUCER_WINDOW: usize = 16;
/// The most a producer sends in a round: producers outrun consumers, and what they leave queued is
/// recovered at every start, so this keeps the backlog (and the test's time) bounded.
const ROUND_MESSAGES: u64 = 1000;
/// The random moment of the kill, after the clients are attached.
const KILL_AFTER_MS: std::ops::RangeInclusive<u64> = 300..=1300;
/// A client's budget in one round: far beyond any round, so that only the kill ends it.
const ROUND_BUDGET: Duration = Duration::from_secs(30);

/// A message's id in the crash test: (round, producer) in the high half, the sequence number below.
type Id = u64;

fn crash_message(id: Id) -> Message {
    Message::builder()
        .first_acquirer(true)
        .property("id", id)
        .body(Value::Binary(vec![0x5a; 64 + (id % 256) as usize].into()))
        .build()
}

fn id_of(m: &Message) -> Option<Id> {
    match m.property("id") {
        Some(Value::Ulong(id)) => Some(*id),
        _ => None,
    }
}

#[derive(Clone, Copy)]
struct Receipt {
    round: usize,
    delivery_count: u32,
    first_acquirer: bool,
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "round {}: delivery-count {}, first-acquirer {}",
            self.round, self.delivery_count, self.first_acquirer
        )
    }
}

/// What every client saw, kept in the test process (which is never killed).
#[derive(Default)]
struct Ledger {
    sent: Mutex<HashSet<Id>>,
    /// Ids whose `accepted` a producer saw.
    accepted: Mutex<Vec<Id>>,
    /// Outcomes other than accepted.
    refused: Mutex<Vec<String>>,
    /// Every receipt of every id, in the order they happened (a redelivery comes only after the previous
    /// holder settled it or lost it).
    receipts: Mutex<HashMap<Id, Vec<Receipt>>>,
    /// Ids whose settlement the broker is known to have processed and made durable (see
    /// [`crash_consumer`]).
    settled: Mutex<HashSet<Id>>,
    /// Settled ids that were delivered again: each a failure.
    settled_came_back: Mutex<Vec<String>>,
    malformed: AtomicUsize,
    /// Ids a consumer accepted but had no barrier confirm before the kill.
    unconfirmed_accepts: AtomicUsize,
}

impl Ledger {
    fn receipt(&self, round: usize, m: &Message) -> Option<Id> {
        let Some(id) = id_of(m) else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        let receipt = Receipt {
            round,
            delivery_count: m.delivery_count(),
            first_acquirer: first_acquirer(m),
        };
        if lock(&self.settled).contains(&id) {
            lock(&self.settled_came_back)
                .push(format!("{id:#x} came back in round {round}: {receipt:?}"));
        }
        lock(&self.receipts).entry(id).or_default().push(receipt);
        Some(id)
    }
}

/// A producer: sends numbered messages to `queue`, [`PRODUCER_WINDOW`] outcomes outstanding, until its
/// connection dies with the broker; records each id it saw accepted.
fn crash_producer(addr: SocketAddr, queue: String, first_id: Id, ledger: Arc<Ledger>) {
    let Ok(mut c) = Client::try_connect(addr, &format!("producer-{first_id:x}"), ROUND_BUDGET)
    else {
        return;
    };
    let link = c.d.conn().attach(c.session, LinkConfig::sender("p", queue));
    let Ok(link) = link else { return };
    let mut in_flight: HashMap<DeliveryId, Id> = HashMap::new();
    let mut next = first_id;
    loop {
        while in_flight.len() < PRODUCER_WINDOW
            && next - first_id < ROUND_MESSAGES
            && c.d.connection().credit(link).unwrap_or(0) > 0
        {
            let tag = Bytes::copy_from_slice(&next.to_be_bytes());
            let Ok(delivery) =
                c.d.conn()
                    .send(link, tag, crash_message(next).to_bytes(), false)
            else {
                return;
            };
            lock(&ledger.sent).insert(next);
            in_flight.insert(delivery, next);
            next += 1;
        }
        match c.d.next_event("outcomes") {
            Ok(Event::RemoteDisposition {
                delivery,
                state,
                settled,
            }) => {
                if let Some(id) = in_flight.remove(&delivery) {
                    match state {
                        Some(DeliveryState::Accepted(_)) => lock(&ledger.accepted).push(id),
                        other => lock(&ledger.refused).push(format!("{id:#x}: {other:?}")),
                    }
                    if !settled {
                        let _ = c.d.conn().settle(delivery);
                    }
                }
            }
            Ok(_) => {}
            // The broker was killed (or the budget ran out): what is in flight has no outcome.
            Err(_) => return,
        }
    }
}

/// A consumer of `queue`. It records every message it receives, holds a random batch before accepting
/// (so that a kill often finds it holding some), and then proves its accepts with a barrier.
///
/// What the broker can promise about a consumer's accept when it is killed: an accept still in flight, or
/// read but not yet written to the journal, is lost with the process, and that message comes back (marked
/// as a redelivery). So the test counts an id as settled only once the broker has shown it processed the
/// accept and made it durable: after the accepts are written to the socket, the consumer sends a barrier
/// message on the same session (frames of one connection are handled in order, so the broker handles the
/// accepts first) and waits for the barrier's `accepted`, which the broker sends only once the barrier is
/// on disk, and with it everything the journal took before it. Ids accepted before a barrier that was
/// accepted must never be delivered again; ids accepted after the last confirmed barrier may come back.
fn crash_consumer(
    addr: SocketAddr,
    queue: String,
    name: String,
    round: usize,
    seed: u64,
    ledger: Arc<Ledger>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let credit = rng.gen_range(1..=40u32);
    let batch = rng.gen_range(1..=8usize);
    let Ok(mut c) = Client::try_connect(addr, &name, ROUND_BUDGET) else {
        return;
    };
    let Ok(link) =
        c.d.conn()
            .attach(c.session, LinkConfig::receiver("c", queue))
    else {
        return;
    };
    let Ok(barrier) =
        c.d.conn()
            .attach(c.session, LinkConfig::sender("barrier", BARRIER_QUEUE))
    else {
        return;
    };
    if c.d.conn().add_credit(link, credit).is_err() {
        return;
    }
    let mut held: Vec<(DeliveryId, Id)> = Vec::new();
    // Accepted and written, not yet covered by a barrier.
    let mut pending: Vec<Id> = Vec::new();
    // The barrier in flight and the ids it proves.
    let mut proving: Option<(DeliveryId, Vec<Id>)> = None;
    let mut barriers = 0u64;
    loop {
        let mut idle = true;
        let mut proved = None;
        // `run_for` writes what the engine holds (queued dispositions included) after the last event it
        // hands out: when it returns, every accept made before it is on the socket.
        let ran = c.d.run_for(Duration::from_millis(5), |_, e| match e {
            Event::Delivery {
                delivery, payload, ..
            } => {
                idle = false;
                let Ok(m) = Message::decode(payload.clone()) else {
                    ledger.malformed.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                if let Some(id) = ledger.receipt(round, &m) {
                    held.push((*delivery, id));
                }
            }
            Event::RemoteDisposition {
                delivery, state, ..
            } if proving.as_ref().is_some_and(|(d, _)| d == delivery) => {
                proved = Some(matches!(state, Some(DeliveryState::Accepted(_))));
            }
            _ => {}
        });
        if let Some(accepted) = proved {
            let (_, ids) = proving.take().expect("a barrier in flight");
            if accepted {
                lock(&ledger.settled).extend(ids);
            } else {
                ledger
                    .unconfirmed_accepts
                    .fetch_add(ids.len(), Ordering::Relaxed);
            }
        }
        if ran.is_err() {
            // The broker is gone: what was accepted but not proved may come back.
            let unproved = pending.len() + proving.map_or(0, |(_, ids)| ids.len());
            ledger
                .unconfirmed_accepts
                .fetch_add(unproved, Ordering::Relaxed);
            return;
        }
        // Every accept in `pending` is on the socket now: a barrier sent now follows them.
        if proving.is_none()
            && !pending.is_empty()
            && c.d.connection().credit(barrier).unwrap_or(0) > 0
        {
            let tag = Bytes::copy_from_slice(&barriers.to_be_bytes());
            barriers += 1;
            let m = Message::builder().body(0i64).build();
            if let Ok(d) = c.d.conn().send(barrier, tag, m.to_bytes(), false) {
                proving = Some((d, std::mem::take(&mut pending)));
            }
        }
        if held.len() >= batch || (idle && !held.is_empty()) {
            for (delivery, id) in held.drain(..) {
                let accepted = DeliveryState::Accepted(Accepted {});
                if c.d
                    .conn()
                    .disposition(delivery, Some(accepted), true)
                    .is_err()
                    || c.d.conn().add_credit(link, 1).is_err()
                {
                    return;
                }
                pending.push(id);
            }
        }
    }
}

fn crash_seed() -> u64 {
    std::env::var("NUCLEON_CRASH_SEED")
        .ok()
        .map(|s| s.parse().expect("NUCLEON_CRASH_SEED is a u64"))
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}

#[test]
fn a_broker_killed_at_random_loses_nothing_accepted_and_brings_back_nothing_settled() {
    let rounds: usize = std::env::var("NUCLEON_CRASH_ROUNDS")
        .ok()
        .map(|s| s.parse().expect("NUCLEON_CRASH_ROUNDS is a number"))
        .unwrap_or(20);
    let seed = crash_seed();
    println!("durable broker crash test: {rounds} rounds, seed {seed} (rerun with NUCLEON_CRASH_SEED={seed})");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = DataDir::new("crash");
    let ledger = Arc::new(Ledger::default());
    let started = Instant::now();
    let mut kill_points = Vec::new();
    for round in 0..rounds {
        let broker = start_broker(dir.path(), &[]).ready();
        let addr = broker.addr();
        let mut clients = Vec::new();
        for q in 0..CRASH_QUEUES {
            let queue = format!("crash-{q}");
            let first_id = (((round * CRASH_QUEUES + q) as u64) << 32) + 1;
            let l = ledger.clone();
            let producer_queue = queue.clone();
            clients.push(std::thread::spawn(move || {
                crash_producer(addr, producer_queue, first_id, l)
            }));
            let l = ledger.clone();
            let consumer_seed = rng.gen();
            let name = format!("consumer-{round}-{q}");
            clients.push(std::thread::spawn(move || {
                crash_consumer(addr, queue, name, round, consumer_seed, l)
            }));
        }
        let kill_after = Duration::from_millis(rng.gen_range(KILL_AFTER_MS));
        kill_points.push(kill_after.as_millis());
        std::thread::sleep(kill_after);
        broker.kill();
        for c in clients {
            c.join().expect("a client thread ran");
        }
    }
    let load_time = started.elapsed();

    // The last start: everything left comes out.
    let broker = start_broker(dir.path(), &[]).ready();
    let mut drained = 0;
    for q in 0..CRASH_QUEUES {
        let mut c = Client::connect(broker.addr(), "drain");
        c.receiver("drain", &format!("crash-{q}"), 200);
        for m in c.drain() {
            ledger.receipt(rounds, &m);
            drained += 1;
        }
        c.close();
    }
    broker.stop();

    let accepted = std::mem::take(&mut *lock(&ledger.accepted));
    let sent = std::mem::take(&mut *lock(&ledger.sent));
    let receipts = std::mem::take(&mut *lock(&ledger.receipts));
    let settled = lock(&ledger.settled).len();
    let came_back = std::mem::take(&mut *lock(&ledger.settled_came_back));
    let refused = std::mem::take(&mut *lock(&ledger.refused));
    let lost: Vec<Id> = accepted
        .iter()
        .filter(|id| !receipts.contains_key(id))
        .copied()
        .collect();
    let made_up: Vec<Id> = receipts
        .keys()
        .filter(|id| !sent.contains(id))
        .copied()
        .collect();
    // Every delivery after an id's first is a redelivery: the one before was not settled (or its
    // settlement was lost with the broker), a failed attempt, so delivery-count goes up by at least one
    // and first-acquirer is cleared [AMQP 1.0 §3.2.1]. A first receipt with first-acquirer cleared was
    // delivered before to a consumer that never saw it (in flight at the kill): it is a redelivery too.
    let mut unmarked = Vec::new();
    let mut redeliveries = 0;
    for (id, rs) in &receipts {
        if !rs[0].first_acquirer && rs[0].delivery_count == 0 {
            unmarked.push(format!(
                "{id:#x}: first seen acquired before with delivery-count 0: {rs:?}"
            ));
        }
        for pair in rs.windows(2) {
            redeliveries += 1;
            let (before, again) = (&pair[0], &pair[1]);
            if again.delivery_count == 0
                || again.delivery_count <= before.delivery_count
                || again.first_acquirer
            {
                unmarked.push(format!("{id:#x}: {rs:?}"));
                break;
            }
        }
    }
    let total_receipts: usize = receipts.values().map(Vec::len).sum();
    println!(
        "durable broker crash test, seed {seed}: {rounds} rounds in {load_time:.1?} (kills after {kill_points:?} ms), \
         {} sent, {} accepted, {} refused, {total_receipts} receipts of {} ids ({drained} in the final drain), \
         {redeliveries} redeliveries, {settled} settlements proved by a barrier, {} accepts unproved at a kill",
        sent.len(),
        accepted.len(),
        refused.len(),
        receipts.len(),
        ledger.unconfirmed_accepts.load(Ordering::Relaxed),
    );
    assert!(
        lost.is_empty(),
        "seed {seed}: {} accepted messages never delivered, e.g. {:x?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        came_back.is_empty(),
        "seed {seed}: {} settled messages delivered again, e.g. {:?}",
        came_back.len(),
        &came_back[..came_back.len().min(10)]
    );
    assert!(
        unmarked.is_empty(),
        "seed {seed}: {} redeliveries without delivery-count > the previous (or with first-acquirer), e.g. {:?}",
        unmarked.len(),
        &unmarked[..unmarked.len().min(10)]
    );
    assert!(made_up.is_empty(), "seed {seed}: never sent: {made_up:x?}");
    assert_eq!(
        ledger.malformed.load(Ordering::Relaxed),
        0,
        "seed {seed}: malformed messages"
    );
    assert!(
        refused.is_empty(),
        "seed {seed}: sends refused: {refused:?}"
    );
    // The test did what it says: messages flowed, settlements were proved, kills made redeliveries.
    assert!(
        accepted.len() >= rounds * 10 && settled > 0 && redeliveries > 0,
        "seed {seed}: too little happened to prove anything: {} accepted, {settled} settled, {redeliveries} redeliveries",
        accepted.len()
    );
}

// ---------------------------------------------------------------------------------------------------------
// Restarts.

/// Sends `n` numbered messages from `from` to `address`, each accepted.
fn fill(addr: SocketAddr, address: &str, from: i64, n: i64) {
    let mut c = Client::connect(addr, "filler");
    let s = c.sender("fill", address);
    for i in from..from + n {
        c.send_accepted(s, &numbered(i));
    }
    c.close();
}

#[test]
fn a_restart_brings_back_queues_and_unsettled_messages_in_order() {
    let dir = DataDir::new("restart");
    let broker = start_broker(dir.path(), &[]).ready();
    fill(broker.addr(), "restart-a", 0, 10);
    fill(broker.addr(), "restart-b", 0, 5);

    // A consumer takes 0..6 of restart-a: accepts 0, 1, 2 and holds 3, 4, 5; 6..10 are never delivered.
    let mut c = Client::connect(broker.addr(), "holder");
    c.receiver("r", "restart-a", 6);
    let mut held = Vec::new();
    for i in 0..6 {
        let (delivery, m) = c.recv();
        assert_eq!(number(&m), i);
        assert_eq!(m.delivery_count(), 0);
        if i < 3 {
            // No credit back: 6..10 must stay undelivered.
            c.accept_only(delivery);
        } else {
            held.push(delivery);
        }
    }
    // A barrier on the same connection: once it is accepted, the broker has taken the accepts before it.
    let s = c.sender("barrier", "restart-barrier");
    c.send_accepted(s, &numbered(-1));
    broker.kill();
    drop(c);

    let broker = start_broker(dir.path(), &[]).ready();
    let mut c = Client::connect(broker.addr(), "after");
    c.receiver("a", "restart-a", 100);
    let a = c.drain();
    assert_eq!(
        numbers(&a),
        [3, 4, 5, 6, 7, 8, 9],
        "settled ones gone, the rest in order"
    );
    for m in &a {
        let delivered = number(m) < 6;
        assert_eq!(
            m.delivery_count(),
            u32::from(delivered),
            "{}: delivered and unsettled at the kill counts one failed attempt, never delivered none",
            number(m)
        );
        assert_eq!(
            first_acquirer(m),
            !delivered,
            "{}: first-acquirer",
            number(m)
        );
    }
    c.receiver("b", "restart-b", 100);
    let b = c.drain();
    assert_eq!(numbers(&b), [0, 1, 2, 3, 4], "the other queue, in order");
    assert!(b
        .iter()
        .all(|m| m.delivery_count() == 0 && first_acquirer(m)));
    c.close();

    // What was taken now is gone for good, across a clean stop too.
    broker.stop();
    let broker = start_broker(dir.path(), &[]).ready();
    let mut c = Client::connect(broker.addr(), "last");
    c.receiver("a", "restart-a", 100);
    c.receiver("b", "restart-b", 100);
    assert_eq!(
        numbers(&c.drain()),
        Vec::<i64>::new(),
        "nothing settled comes back"
    );
    c.close();
    broker.stop();
}

/// A durable subscription's source: a topic, keeping its unsettled state, never expiring.
fn durable_subscription(address: &str, name: &str) -> LinkConfig {
    LinkConfig {
        source: Some(Source {
            address: Some(address.into()),
            durable: TerminusDurability::UnsettledState,
            expiry_policy: TerminusExpiryPolicy::Never,
            capabilities: Some(vec![Symbol::from_static(nucleon::broker::TOPIC)]),
            ..Source::default()
        }),
        ..LinkConfig::receiver(name, address)
    }
}

#[test]
fn a_durable_subscription_collects_while_detached_and_across_a_restart() {
    const CONTAINER: &str = "durable-subscriber";
    let dir = DataDir::new("subscription");
    let broker = start_broker(dir.path(), &[]).ready();
    let mut sub = Client::connect(broker.addr(), CONTAINER);
    let link = sub
        .receiver_with(durable_subscription("news", "sub-1"), 10)
        .expect("subscribes");
    let mut publisher = Client::connect(broker.addr(), "publisher");
    let p = publisher.publisher("pub", "news");
    publisher.send_accepted(p, &numbered(0));
    let (d, m) = sub.recv();
    assert_eq!(number(&m), 0);
    sub.accept(d);

    // Detached, not closed: the subscription keeps collecting.
    sub.detach(link, false);
    sub.close();
    publisher.send_accepted(p, &numbered(1));
    publisher.send_accepted(p, &numbered(2));
    publisher.close();
    broker.kill();

    let broker = start_broker(dir.path(), &[]).ready();
    let mut publisher = Client::connect(broker.addr(), "publisher");
    let p = publisher.publisher("pub", "news");
    // The subscription is there before its subscriber comes back.
    publisher.send_accepted(p, &numbered(3));
    let mut sub = Client::connect(broker.addr(), CONTAINER);
    let link = sub
        .receiver_with(durable_subscription("news", "sub-1"), 10)
        .expect("resumes");
    let got = sub.drain();
    assert_eq!(
        numbers(&got),
        [1, 2, 3],
        "what came while it was away, in order"
    );
    assert!(got.iter().all(|m| m.delivery_count() == 0));

    // Closed: the subscription is deleted, and what is published next goes nowhere.
    sub.detach(link, true);
    publisher.send_accepted(p, &numbered(4));
    let link = sub
        .receiver_with(durable_subscription("news", "sub-1"), 10)
        .expect("subscribes anew");
    assert!(
        sub.recv_within(QUIET).is_none(),
        "a new subscription starts empty"
    );
    publisher.send_accepted(p, &numbered(5));
    let (_, m) = sub.recv();
    assert_eq!(number(&m), 5);
    sub.detach(link, true);
    sub.close();
    publisher.close();
    broker.stop();
}

#[test]
fn a_dynamic_queue_does_not_come_back_after_a_restart() {
    let dir = DataDir::new("dynamic");
    let broker = start_broker(dir.path(), &[]).ready();
    let mut owner = Client::connect(broker.addr(), "owner");
    let config = LinkConfig {
        source: Some(Source {
            dynamic: true,
            ..Source::default()
        }),
        ..LinkConfig::receiver("temp", "")
    };
    let link = owner.receiver_with(config, 0).expect("a dynamic receiver");
    let address = owner
        .d
        .connection()
        .remote_attach(link)
        .ok()
        .flatten()
        .and_then(|a| a.source.as_ref())
        .and_then(|s| s.address.clone())
        .expect("the broker names the temporary queue");
    fill(broker.addr(), &address, 0, 3);
    // A durable queue beside it, as the control: it does come back.
    fill(broker.addr(), "dynamic-control", 0, 3);
    broker.kill();
    drop(owner);

    let broker = start_broker(dir.path(), &[]).ready();
    let mut c = Client::connect(broker.addr(), "after");
    c.receiver("control", "dynamic-control", 10);
    assert_eq!(numbers(&c.drain()), [0, 1, 2], "the durable queue is back");
    match c.receiver_with(LinkConfig::receiver("temp", &address), 10) {
        Err(Refused(condition)) => println!("{address} refused after the restart: {condition:?}"),
        Ok(_) => assert_eq!(
            numbers(&c.drain()),
            Vec::<i64>::new(),
            "nothing of the temporary queue {address} survives"
        ),
    }
    c.close();
    broker.stop();
}

// ---------------------------------------------------------------------------------------------------------
// Damaged journals.

/// The journal's segments, in order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("reads the data directory")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs
}

/// The segment whose bytes hold `needle`.
fn segment_with(dir: &Path, needle: &[u8]) -> PathBuf {
    segments(dir)
        .into_iter()
        .find(|s| find(&std::fs::read(s).expect("reads a segment"), needle).is_some())
        .unwrap_or_else(|| panic!("no segment holds {}", String::from_utf8_lossy(needle)))
}

/// A message whose body carries a marker that can be found in the journal's bytes.
fn marked(i: i64) -> Message {
    Message::builder()
        .first_acquirer(true)
        .property("n", i)
        .body(Value::Binary(marker(i).into()))
        .build()
}

fn marker(i: i64) -> Vec<u8> {
    format!("<<nucleon-journal-marker-{i:06}>>").into_bytes()
}

fn marked_number(m: &Message) -> i64 {
    match m.property("n") {
        Some(Value::Long(n)) => *n,
        _ => -1,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The one line the broker printed about itself (`broker: ...`), which must be the only such line.
fn the_broker_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("broker: "))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "one line from the broker; stderr:\n{stderr}"
    );
    lines[0].to_owned()
}

/// Everything in `queue`, by the numbers of [`marked`] messages.
fn take_all(broker: &BrokerProcess, queue: &str) -> Vec<i64> {
    let mut c = Client::connect(broker.addr(), "reader");
    c.receiver("all", queue, 500);
    let got = c.drain().iter().map(marked_number).collect();
    c.close();
    got
}

/// A data directory with `n` marked messages in `queue`, written by a broker that was then killed.
fn journal_with(test: &str, queue: &str, n: i64) -> DataDir {
    let dir = DataDir::new(test);
    let broker = start_broker(dir.path(), &[]).ready();
    let mut c = Client::connect(broker.addr(), "writer");
    let s = c.sender("w", queue);
    for i in 0..n {
        c.send_accepted(s, &marked(i));
    }
    c.close();
    broker.kill();
    dir
}

#[test]
fn a_torn_record_at_the_tail_is_dropped_and_the_rest_comes_back() {
    let dir = journal_with("torn", "torn", 20);
    // The segment written last is the one with the last message (a spare segment prepared ahead may sort
    // after it); its records end at its last byte that is not zero.
    let last = segment_with(dir.path(), &marker(19));
    let mut bytes = std::fs::read(&last).expect("reads the segment");
    let end = bytes
        .iter()
        .rposition(|&b| b != 0)
        .expect("the segment holds records")
        + 1;
    // The last record's last 8 bytes never reached the disk.
    let torn = end.saturating_sub(8);
    bytes[torn..end].fill(0);
    std::fs::write(&last, &bytes).expect("writes the segment");

    let broker = start_broker(dir.path(), &[]).ready();
    let got = take_all(&broker, "torn");
    let stderr = broker.stop();
    assert!(
        got == (0..19).collect::<Vec<_>>() || got == (0..20).collect::<Vec<_>>(),
        "everything before the torn record, in order: {got:?}"
    );
    assert!(
        stderr.lines().any(|l| l.contains("WARN")),
        "the dropped tail is logged as a warning; stderr:\n{stderr}"
    );
}

#[test]
fn a_flipped_byte_in_the_middle_stops_the_broker_and_salvage_keeps_the_rest() {
    let dir = journal_with("flipped", "flipped", 20);
    let segs = segments(dir.path());
    let (seg, pos) = segs
        .iter()
        .find_map(|s| {
            let bytes = std::fs::read(s).expect("reads a segment");
            find(&bytes, &marker(10)).map(|p| (s.clone(), p))
        })
        .expect("message 10's record is in a segment");
    let mut bytes = std::fs::read(&seg).expect("reads the segment");
    bytes[pos + 5] ^= 0x01;
    std::fs::write(&seg, &bytes).expect("writes the segment");

    let (status, stderr) = start_broker(dir.path(), &[]).exited();
    assert_eq!(status.code(), Some(1), "exit status 1; stderr:\n{stderr}");
    let line = the_broker_line(&stderr);
    let prefix = format!("broker: journal corrupt: {} at offset ", seg.display());
    let offset: usize = line
        .strip_prefix(&prefix)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line:?} does not start with {prefix:?} and an offset"));
    assert!(
        offset <= pos && pos - offset < 4096,
        "the offset {offset} is the damaged record's, which holds byte {pos}: {line}"
    );
    assert!(line.contains("--salvage"), "it says what to do: {line}");

    // Salvage rewrites the journal clean: the next start needs no flag and finds the same messages.
    start_broker(dir.path(), &["--salvage"]).ready().stop();
    let broker = start_broker(dir.path(), &[]).ready();
    let got = take_all(&broker, "flipped");
    broker.stop();
    let expected: Vec<i64> = (0..20).filter(|&i| i != 10).collect();
    assert_eq!(got, expected, "all but the damaged record, in order");
}

#[test]
fn a_missing_segment_stops_the_broker_and_salvage_keeps_the_rest() {
    // Three segments or more (16 MiB each by default): 70 messages of 512 KiB.
    const N: i64 = 70;
    let dir = DataDir::new("missing");
    let broker = start_broker(dir.path(), &[]).ready();
    let mut c = Client::connect(broker.addr(), "writer");
    let s = c.sender("w", "missing");
    for i in 0..N {
        let mut body = marker(i);
        body.resize(512 << 10, 0x5a);
        let m = Message::builder()
            .property("n", i)
            .body(Value::Binary(body.into()))
            .build();
        c.send_accepted(s, &m);
    }
    c.close();
    broker.kill();
    // The segments holding messages (not a spare prepared ahead), in order; the middle one goes.
    let segs: Vec<PathBuf> = segments(dir.path())
        .into_iter()
        .filter(|s| {
            let bytes = std::fs::read(s).expect("reads a segment");
            find(&bytes, b"<<nucleon-journal-marker-").is_some()
        })
        .collect();
    assert!(
        segs.len() >= 3,
        "three segments of messages at least: {segs:?}"
    );
    let gone = segs[1].clone();
    std::fs::remove_file(&gone).expect("removes a segment");

    let (status, stderr) = start_broker(dir.path(), &[]).exited();
    assert_eq!(status.code(), Some(1), "exit status 1; stderr:\n{stderr}");
    let line = the_broker_line(&stderr);
    let name = gone
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a file name");
    assert!(
        line.contains(name),
        "the line names the missing segment {name}: {line}"
    );
    assert!(line.contains("--salvage"), "it says what to do: {line}");

    start_broker(dir.path(), &["--salvage"]).ready().stop();
    let broker = start_broker(dir.path(), &[]).ready();
    let got = take_all(&broker, "missing");
    broker.stop();
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order, no duplicates: {got:?}"
    );
    assert!(
        got.first() == Some(&0) && got.last() == Some(&(N - 1)),
        "the first and last segments' messages are back: {got:?}"
    );
    assert!(
        (got.len() as i64) < N,
        "the missing segment's messages cannot be: {got:?}"
    );
}

// ---------------------------------------------------------------------------------------------------------
// A full disk.

/// A tmpfs mounted on a fresh directory, unmounted (and the directory removed) when dropped.
struct Tmpfs(DataDir);

impl Tmpfs {
    /// `None` (with the reason printed) where mounting is not possible.
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = DataDir::new("tmpfs");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Tmpfs(dir)),
            Ok(out) => {
                println!(
                    "skipped: cannot mount a tmpfs ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Free bytes on it.
    fn available(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(self.path())
            .output()
            .expect("df runs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .expect("df prints the free bytes")
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(self.path()).status();
        if !status.is_ok_and(|s| s.success()) {
            let _ = Command::new("umount").arg("-l").arg(self.path()).status();
        }
    }
}

fn condition(state: &Option<DeliveryState>) -> Option<ErrorCondition> {
    match state {
        Some(DeliveryState::Rejected(r)) => r.error.as_ref().map(|e| e.condition.clone()),
        _ => None,
    }
}

#[test]
fn a_full_disk_rejects_producers_loses_nothing_and_recovers_without_a_restart() {
    // 64 MiB, 1100 messages of 64 KiB could not fit; the filler leaves less than one more segment.
    let Some(fs) = Tmpfs::mount("64m") else {
        return;
    };
    let data = fs.path().join("data");
    std::fs::create_dir(&data).expect("creates the data directory");
    let broker = start_broker(&data, &[]).ready();
    // The journal prepares its next segment in the background after the start: wait (bounded) until the
    // free space stops moving, then fill it, leaving LEFT (less than a segment).
    const LEFT: u64 = 1 << 20;
    let settled_by = Instant::now() + STEP;
    let mut room = fs.available();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = fs.available();
        if now == room || Instant::now() >= settled_by {
            break;
        }
        room = now;
    }
    let filler = fs.path().join("filler");
    let mut file = std::fs::File::create(&filler).expect("creates the filler");
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    while written + LEFT < room {
        use std::io::Write as _;
        match file.write_all(&chunk) {
            Ok(()) => written += chunk.len() as u64,
            // The space moved after all: full now, so give LEFT back below.
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
            Err(e) => panic!("writes the filler: {e}"),
        }
    }
    if fs.available() > LEFT {
        // Still more than LEFT: fill to the brim.
        let mut room_left = fs.available() - LEFT;
        while room_left > 0 {
            use std::io::Write as _;
            let n = room_left.min(chunk.len() as u64) as usize;
            match file.write_all(&chunk[..n]) {
                Ok(()) => written += n as u64,
                Err(_) => break,
            }
            room_left -= n as u64;
        }
    } else {
        file.set_len(written.saturating_sub(LEFT))
            .expect("leaves LEFT free");
    }
    drop(file);
    println!(
        "filler of {written} bytes, {} bytes left free",
        fs.available()
    );

    let mut c = Client::connect(broker.addr(), "producer");
    let s = c.sender("p", "full");
    let body = |i: i64| {
        Message::builder()
            .property("n", i)
            .body(Value::Binary(vec![0x5a; 64 << 10].into()))
            .build()
    };
    // The current segment takes what fits; the next one has no room.
    let mut accepted = Vec::new();
    let mut rejected = 0;
    let mut i = 0;
    while rejected < 5 {
        assert!(
            i < 1000,
            "the disk never filled up: {} accepted",
            accepted.len()
        );
        let state = c.send(s, &body(i));
        match &state {
            Some(DeliveryState::Accepted(_)) => {
                assert_eq!(
                    rejected, 0,
                    "accepted after a rejection with the disk still full"
                );
                accepted.push(i);
            }
            _ => {
                assert_eq!(
                    condition(&state),
                    Some(ErrorCondition::ResourceLimitExceeded),
                    "a full disk is a resource limit: {state:?}"
                );
                rejected += 1;
            }
        }
        i += 1;
    }
    println!("disk full after {} accepted messages", accepted.len());

    // Space comes back: producers are accepted again, by the same broker.
    std::fs::remove_file(&filler).expect("removes the filler");
    let deadline = Instant::now() + STEP;
    loop {
        let state = c.send(s, &body(i));
        if matches!(state, Some(DeliveryState::Accepted(_))) {
            accepted.push(i);
            i += 1;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused with room again: {state:?}"
        );
        i += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    for _ in 0..10 {
        c.send_accepted(s, &body(i));
        accepted.push(i);
        i += 1;
    }
    c.close();

    // Nothing accepted was lost, across a crash too; nothing rejected was kept.
    broker.kill();
    let broker = start_broker(&data, &[]).ready();
    assert_eq!(take_all(&broker, "full"), accepted);
    broker.stop();
}
