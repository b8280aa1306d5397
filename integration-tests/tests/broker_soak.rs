//! The broker's soak test (issue 14's proof): many producers and consumers on several queues for a while,
//! consumers killed at random, one slow consumer holding the broker at its memory limit. At the end every
//! queue is drained and the test checks that
//!
//! * no accepted message is lost: every id a producer saw `accepted` was received at least once;
//! * no message is made up: every id received was sent;
//! * every redelivery says so: each receipt of an id after its first has first-acquirer cleared (producers
//!   set it) and a delivery-count at least the previous receipt's, plus one when the previous consumer did
//!   anything but release it (accepted but was killed before the broker heard, modified with
//!   delivery-failed, or was killed holding it) [AMQP 1.0 §3.2.1, §3.4.4, §3.4.5]. So every duplicate (a
//!   message a consumer may have processed, delivered again) carries delivery-count > 0. A first receipt
//!   with first-acquirer cleared was delivered before to a consumer killed before it saw it: its
//!   delivery-count must be > 0 too;
//! * memory stays within the limit: `Broker::memory_used`, sampled all along, never passes `max_memory`
//!   plus the credit the broker had already given (each producer link holds at most the broker's producer
//!   window of promised room, taken while memory was under the limit: producers × window × the largest
//!   message), and it reaches the limit (the slow consumer really holds the broker there);
//! * once drained, every queue is empty with nothing unsettled and the broker counts 0 bytes.
//!
//! Consumers are killed abruptly, never closed: each connects through a small TCP proxy in this test, and a
//! kill stops the consumer (holding what it has not settled yet) and drops both of the proxy's sockets (with
//! an RST half the time), so the broker sees a lost transport with unsettled messages. A replacement
//! consumer starts after a short random pause.
//!
//! Duration: `NUCLEON_SOAK_SECS` seconds of load (default 15, plus a few seconds to drain); the few-minutes
//! run is `NUCLEON_SOAK_SECS=300 cargo test -p nucleon-integration-tests --test broker_soak --release --
//! --nocapture` (`scripts/soak-broker.sh 300`). Every random choice (body sizes, consumer windows and
//! batches, dispositions, kill times and victims, RST or FIN) comes from one seed, printed at the start and in
//! every failure; `NUCLEON_SOAK_SEED=N` reruns those choices (the interleaving with the broker is the
//! machine's).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use nucleon::broker::{Broker, BrokerOptions};
use nucleon::{
    ContainerBuilder, ContainerHandle, ListenOptions, Message, Outcome, Received, ReceiverHandle,
    ReceiverOptions, SenderHandle, SenderOptions, Value,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The broker's memory limit: small, so that the slow consumer's queue reaches it within a second or two.
const MAX_MEMORY: usize = 2 << 20;
/// The credit the broker keeps open on a producer link of a bounded queue (`PRODUCER_WINDOW` in
/// runtime/src/broker/mod.rs), each credit a promise of room made while memory was under its limit.
const BROKER_PRODUCER_WINDOW: usize = 10;
/// Queues with fast consumers that get killed.
const FAST_QUEUES: usize = 4;
const PRODUCERS_PER_FAST_QUEUE: usize = 2;
const CONSUMERS_PER_FAST_QUEUE: usize = 2;
/// Producers of the slow consumer's queue.
const SLOW_PRODUCERS: usize = 2;
const PRODUCERS: usize = FAST_QUEUES * PRODUCERS_PER_FAST_QUEUE + SLOW_PRODUCERS;
const SLOW_QUEUE: &str = "soak-slow";
/// Sends a producer has waiting for credit or an outcome at once.
const IN_FLIGHT: usize = 16;
/// Message bodies: a binary of this many bytes.
const BODY_MIN: usize = 16;
const BODY_MAX: usize = 1024;
/// The bound on any one wait: opening a link, an outcome, a join. The broker answers in milliseconds on
/// loopback; under the memory alarm a send waits for the slow consumer, still far below this.
const TIMEOUT: Duration = Duration::from_secs(60);
/// The slow consumer: this long slow (one message per `SLOW_PACE`), then this long at full speed, in turn.
const SLOW_PHASE: Duration = Duration::from_secs(3);
const FAST_PHASE: Duration = Duration::from_secs(1);
const SLOW_PACE: Duration = Duration::from_millis(10);
/// Random pauses between kills, and before a killed consumer's replacement starts.
const KILL_EVERY_MS: std::ops::RangeInclusive<u64> = 50..=600;
const REPLACE_AFTER_MS: std::ops::RangeInclusive<u64> = 0..=300;
/// A consumer settles what it holds once it holds its batch, or when nothing came for this long.
const HOLD: Duration = Duration::from_millis(20);
/// Draining a queue ends when nothing came for this long and the broker shows it empty and settled.
const DRAIN_QUIET: Duration = Duration::from_millis(500);
/// A drain gives up on a queue that gives nothing for this long while the broker still shows messages
/// in it (waiting or unsettled), and on any queue after `DRAIN_LIMIT`.
const DRAIN_STALLED: Duration = Duration::from_secs(10);
const DRAIN_LIMIT: Duration = Duration::from_secs(120);

/// A message's id: its producer and its sequence number there.
type Id = (u64, u64);

/// What a consumer decided to do with a message when it received it. Whether it got to do it (a kill may
/// come first) does not matter to the checks: a disposition lost with its link counts as delivery-failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    Accept,
    Release,
    ModifyFailed,
}

#[derive(Clone, Copy)]
struct Receipt {
    consumer: u64,
    delivery_count: u32,
    first_acquirer: bool,
    action: Action,
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "consumer {} got delivery-count {} first-acquirer {} and chose {:?}",
            self.consumer, self.delivery_count, self.first_acquirer, self.action
        )
    }
}

/// Everything producers and consumers saw.
struct Ledger {
    /// Per producer: how many messages it sent (sequence numbers below this).
    sent: Vec<AtomicU64>,
    accepted: Mutex<Vec<Id>>,
    /// Outcomes other than accepted, and sends that failed or did not finish in time.
    send_failures: Mutex<Vec<String>>,
    /// Every receipt of every id, in the order they happened: a consumer records a message before it
    /// settles it, and a redelivery comes only after that settlement or the loss of its link.
    receipts: Mutex<HashMap<Id, Vec<Receipt>>>,
    /// Messages received without a well-formed id.
    malformed: AtomicUsize,
    /// Consumers whose stream ended without being killed.
    unexpected_ends: AtomicUsize,
    /// Messages consumers held unsettled when killed.
    held_at_kill: AtomicUsize,
    /// The consumers killed (their numbers).
    killed: Mutex<HashSet<u64>>,
    /// The largest encoded message sent.
    largest: AtomicUsize,
}

impl Ledger {
    fn new() -> Ledger {
        Ledger {
            sent: (0..PRODUCERS).map(|_| AtomicU64::new(0)).collect(),
            accepted: Mutex::new(Vec::new()),
            send_failures: Mutex::new(Vec::new()),
            receipts: Mutex::new(HashMap::new()),
            malformed: AtomicUsize::new(0),
            unexpected_ends: AtomicUsize::new(0),
            held_at_kill: AtomicUsize::new(0),
            killed: Mutex::new(HashSet::new()),
            largest: AtomicUsize::new(0),
        }
    }

    fn record(&self, consumer: u64, m: &Message, action: Action) {
        let Some(id) = id_of(m) else {
            self.malformed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let receipt = Receipt {
            consumer,
            delivery_count: m.delivery_count(),
            first_acquirer: m.header().is_some_and(|h| h.first_acquirer),
            action,
        };
        lock(&self.receipts).entry(id).or_default().push(receipt);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn id_of(m: &Message) -> Option<Id> {
    match (m.property("producer"), m.property("seq")) {
        (Some(Value::Ulong(p)), Some(Value::Ulong(s))) => Some((*p, *s)),
        _ => None,
    }
}

fn message(producer: u64, seq: u64, body: usize) -> Message {
    Message::builder()
        .first_acquirer(true)
        .property("producer", producer)
        .property("seq", seq)
        .body(Value::Binary(vec![0x5a; body].into()))
        .build()
}

struct Settings {
    load: Duration,
    seed: u64,
}

impl Settings {
    fn from_env() -> Settings {
        let secs = std::env::var("NUCLEON_SOAK_SECS")
            .ok()
            .map(|s| {
                s.parse::<u64>()
                    .expect("NUCLEON_SOAK_SECS is a number of seconds")
            })
            .unwrap_or(15);
        let seed = std::env::var("NUCLEON_SOAK_SEED")
            .ok()
            .map(|s| s.parse::<u64>().expect("NUCLEON_SOAK_SEED is a u64"))
            .unwrap_or_else(rand::random);
        Settings {
            load: Duration::from_secs(secs),
            seed,
        }
    }
}

/// A one-connection TCP proxy to the broker, which the test can sever.
struct Proxy {
    port: u16,
    sever: Option<oneshot::Sender<bool>>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(broker: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy listens");
        let port = listener.local_addr().expect("proxy address").port();
        let (sever, severed) = oneshot::channel::<bool>();
        let task = tokio::spawn(async move {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            drop(listener);
            let Ok(mut upstream) = TcpStream::connect(broker).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = upstream.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                rst = severed => {
                    if rst.unwrap_or(false) {
                        // Both peers get a reset instead of an orderly end of stream.
                        let _ = client.set_zero_linger();
                        let _ = upstream.set_zero_linger();
                    }
                }
            }
            // Both sockets drop here: no AMQP close, no disposition gets through any more.
        });
        Proxy {
            port,
            sever: Some(sever),
            task,
        }
    }

    /// Drops both sockets (`rst`: with a reset) and waits until they are gone.
    async fn sever(mut self, rst: bool) {
        if let Some(s) = self.sever.take() {
            let _ = s.send(rst);
        }
        let _ = tokio::time::timeout(TIMEOUT, &mut self.task).await;
    }
}

/// A consumer behind its proxy, running as a task until killed.
struct Consumer {
    number: u64,
    queue: usize,
    kill: oneshot::Sender<()>,
    task: JoinHandle<(ReceiverHandle, Vec<Received>)>,
    proxy: Proxy,
}

impl Consumer {
    /// Stops the consumer where it is, holding what it has not settled, then cuts its transport: the broker
    /// sees a lost connection. Its unsettled messages (and whatever was in flight to it) must come back.
    async fn kill(self, rst: bool, ledger: &Ledger) {
        let _ = self.kill.send(());
        let stopped = tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("a killed consumer stops in time")
            .expect("the consumer task ran");
        self.proxy.sever(rst).await;
        let (handle, held) = stopped;
        ledger.held_at_kill.fetch_add(held.len(), Ordering::Relaxed);
        lock(&ledger.killed).insert(self.number);
        // Dropping them tries to release and close, on a transport that is gone: nothing reaches the broker.
        drop(held);
        drop(handle);
    }
}

async fn open_receiver(container: &ContainerHandle, url: &str, window: u32) -> ReceiverHandle {
    let options = ReceiverOptions::new().credit_window(window);
    tokio::time::timeout(TIMEOUT, container.open_receiver(url, options))
        .await
        .expect("receiver opens in time")
        .expect("receiver opens")
}

fn settle(held: &mut Vec<(Received, Action)>) {
    for (r, action) in held.drain(..) {
        let _ = match action {
            Action::Accept => r.accept(),
            Action::Release => r.release(),
            Action::ModifyFailed => r.modify(true, false),
        };
    }
}

/// Starts a fast consumer of `queue` through a new proxy. It accepts most messages, releases or modifies
/// some, and settles them in batches, so a kill often finds it holding some.
async fn start_consumer(
    container: &ContainerHandle,
    broker: SocketAddr,
    queue: usize,
    consumer: u64,
    seed: u64,
    ledger: Arc<Ledger>,
) -> Consumer {
    let proxy = Proxy::start(broker).await;
    let mut rng = StdRng::seed_from_u64(seed);
    let window = rng.gen_range(1..=50);
    let batch = rng.gen_range(1..=8usize);
    let url = format!("amqp://127.0.0.1:{}/soak-{queue}", proxy.port);
    let mut r = open_receiver(container, &url, window).await;
    let (kill, mut killed) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut held: Vec<(Received, Action)> = Vec::new();
        loop {
            tokio::select! {
                biased;
                _ = &mut killed => break,
                next = tokio::time::timeout(HOLD, r.recv()) => match next {
                    Ok(Some(m)) => {
                        let action = match rng.gen_range(0..100) {
                            0..=3 => Action::Release,
                            4..=7 => Action::ModifyFailed,
                            _ => Action::Accept,
                        };
                        ledger.record(consumer, &m.message, action);
                        held.push((m, action));
                        if held.len() >= batch {
                            settle(&mut held);
                        }
                    }
                    Ok(None) => {
                        ledger.unexpected_ends.fetch_add(1, Ordering::Relaxed);
                        let _ = (&mut killed).await;
                        break;
                    }
                    Err(_) => settle(&mut held),
                },
            }
        }
        (r, held.into_iter().map(|(m, _)| m).collect())
    });
    Consumer {
        number: consumer,
        queue,
        kill,
        task,
        proxy,
    }
}

/// The slow consumer: slow for `SLOW_PHASE`, then full speed for `FAST_PHASE`, in turn; accepts everything.
async fn start_slow_consumer(
    container: &ContainerHandle,
    broker: SocketAddr,
    consumer: u64,
    ledger: Arc<Ledger>,
) -> Consumer {
    let proxy = Proxy::start(broker).await;
    let url = format!("amqp://127.0.0.1:{}/{SLOW_QUEUE}", proxy.port);
    let mut r = open_receiver(container, &url, 10).await;
    let (kill, mut killed) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let cycle = SLOW_PHASE + FAST_PHASE;
        loop {
            tokio::select! {
                biased;
                _ = &mut killed => break,
                next = r.recv() => match next {
                    Some(m) => {
                        ledger.record(consumer, &m.message, Action::Accept);
                        let in_cycle = started.elapsed().as_nanos() % cycle.as_nanos();
                        if in_cycle < SLOW_PHASE.as_nanos() {
                            tokio::time::sleep(SLOW_PACE).await;
                        }
                        let _ = m.accept();
                    }
                    None => {
                        ledger.unexpected_ends.fetch_add(1, Ordering::Relaxed);
                        let _ = (&mut killed).await;
                        break;
                    }
                },
            }
        }
        (r, Vec::new())
    });
    Consumer {
        number: consumer,
        queue: usize::MAX,
        kill,
        task,
        proxy,
    }
}

/// Sends until `stop`, `IN_FLIGHT` at a time, and records each outcome.
async fn produce(
    s: SenderHandle,
    producer: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
    ledger: Arc<Ledger>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut in_flight = FuturesUnordered::new();
    let mut seq = 0u64;
    loop {
        while !stop.load(Ordering::Relaxed) && in_flight.len() < IN_FLIGHT {
            let m = message(producer, seq, rng.gen_range(BODY_MIN..=BODY_MAX));
            ledger
                .largest
                .fetch_max(m.to_bytes().len(), Ordering::Relaxed);
            ledger.sent[producer as usize].store(seq + 1, Ordering::Relaxed);
            let s = s.clone();
            in_flight.push(async move { (seq, s.send(m).await) });
            seq += 1;
        }
        if in_flight.is_empty() {
            return;
        }
        match tokio::time::timeout(TIMEOUT, in_flight.next()).await {
            Ok(Some((seq, Ok(Outcome::Accepted)))) => lock(&ledger.accepted).push((producer, seq)),
            Ok(Some((seq, other))) => lock(&ledger.send_failures)
                .push(format!("producer {producer} seq {seq}: {other:?}")),
            Ok(None) => return,
            Err(_) => {
                lock(&ledger.send_failures).push(format!(
                    "producer {producer}: no outcome for {} sends within {TIMEOUT:?}",
                    in_flight.len()
                ));
                return;
            }
        }
    }
}

/// Samples `memory_used` until stopped; returns the peak, the samples, and how many were at the limit.
fn sample_memory(
    broker: Broker,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, u64, u64)> {
    std::thread::spawn(move || {
        let (mut peak, mut samples, mut at_limit) = (0, 0u64, 0u64);
        while !stop.load(Ordering::Relaxed) {
            let used = broker.memory_used();
            peak = peak.max(used);
            samples += 1;
            at_limit += u64::from(used >= MAX_MEMORY);
            std::thread::sleep(Duration::from_micros(250));
        }
        (peak, samples, at_limit)
    })
}

/// Takes everything left in `queue` with a fresh consumer, until it is empty with nothing unsettled.
/// Returns how many it took, and what was wrong if it had to give up.
async fn drain(
    container: &ContainerHandle,
    broker: &Broker,
    url: &str,
    queue: &str,
    consumer: u64,
    ledger: &Ledger,
) -> (usize, Option<String>) {
    let mut r = open_receiver(container, url, 100).await;
    let started = Instant::now();
    let mut last = Instant::now();
    let mut taken = 0;
    loop {
        match tokio::time::timeout(DRAIN_QUIET, r.recv()).await {
            Ok(Some(m)) => {
                ledger.record(consumer, &m.message, Action::Accept);
                m.accept().expect("the drain consumer accepts");
                taken += 1;
                last = Instant::now();
            }
            Ok(None) => {
                return (
                    taken,
                    Some(format!("{queue}: the drain consumer was cut off")),
                )
            }
            Err(_) => {
                let (depth, unsettled) = (broker.queue_depth(queue), broker.queue_unsettled(queue));
                if depth == Some(0) && unsettled == Some(0) {
                    return (taken, None);
                }
                if last.elapsed() >= DRAIN_STALLED || started.elapsed() >= DRAIN_LIMIT {
                    return (
                        taken,
                        Some(format!(
                            "{queue} not drained: depth {depth:?}, unsettled {unsettled:?}, nothing came for {:?}",
                            last.elapsed()
                        )),
                    );
                }
            }
        }
    }
}

#[actix_rt::test]
async fn the_broker_loses_nothing_marks_every_redelivery_and_keeps_to_its_memory_limit() {
    let _ = env_logger::builder().is_test(true).try_init();
    let settings = Settings::from_env();
    let seed = settings.seed;
    println!(
        "broker soak: {:?} of load, seed {seed} (rerun with NUCLEON_SOAK_SEED={seed})",
        settings.load
    );
    let mut rng = StdRng::seed_from_u64(seed);

    let container = ContainerBuilder::default()
        .threads(2)
        .auto_stop(false)
        .start();
    let broker = Broker::new(BrokerOptions {
        max_memory: Some(MAX_MEMORY),
        // Kills and releases give messages back many times: none may be dropped for it here.
        max_deliveries: None,
        auto_delete_after: None,
        ..BrokerOptions::default()
    });
    let listener = broker
        .listen(&container, "127.0.0.1:0", ListenOptions::default())
        .expect("broker listens");
    let broker_addr: SocketAddr = ([127, 0, 0, 1], listener.port()).into();
    let base = format!("amqp://127.0.0.1:{}", listener.port());
    let ledger = Arc::new(Ledger::new());
    let started = Instant::now();

    let sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_memory(broker.clone(), sampling.clone());

    // Consumers first, so that the fast queues flow from the start.
    let mut next_consumer = 0u64;
    let mut consumers = Vec::new();
    for queue in 0..FAST_QUEUES {
        for _ in 0..CONSUMERS_PER_FAST_QUEUE {
            let c = start_consumer(
                &container,
                broker_addr,
                queue,
                next_consumer,
                rng.gen(),
                ledger.clone(),
            )
            .await;
            next_consumer += 1;
            consumers.push(c);
        }
    }
    let slow = start_slow_consumer(&container, broker_addr, next_consumer, ledger.clone()).await;
    next_consumer += 1;

    let stop = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for producer in 0..PRODUCERS {
        let queue = if producer < FAST_QUEUES * PRODUCERS_PER_FAST_QUEUE {
            format!("soak-{}", producer % FAST_QUEUES)
        } else {
            SLOW_QUEUE.to_owned()
        };
        let s = tokio::time::timeout(
            TIMEOUT,
            container.open_sender(&format!("{base}/{queue}"), SenderOptions::default()),
        )
        .await
        .expect("sender opens in time")
        .expect("sender opens");
        producers.push(tokio::spawn(produce(
            s,
            producer as u64,
            rng.gen(),
            stop.clone(),
            ledger.clone(),
        )));
    }

    // Kill consumers at random until the load phase is over.
    let mut kills = 0usize;
    let mut resets = 0usize;
    let deadline = Instant::now() + settings.load;
    loop {
        let pause = Duration::from_millis(rng.gen_range(KILL_EVERY_MS));
        if Instant::now() + pause >= deadline {
            break;
        }
        tokio::time::sleep(pause).await;
        let victim = consumers.swap_remove(rng.gen_range(0..consumers.len()));
        let queue = victim.queue;
        let rst = rng.gen_bool(0.5);
        victim.kill(rst, &ledger).await;
        kills += 1;
        resets += usize::from(rst);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(REPLACE_AFTER_MS))).await;
        let c = start_consumer(
            &container,
            broker_addr,
            queue,
            next_consumer,
            rng.gen(),
            ledger.clone(),
        )
        .await;
        next_consumer += 1;
        consumers.push(c);
    }
    tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;

    // Producers stop starting sends and wait for the outcomes of the ones they started (consumers still run).
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        tokio::time::timeout(TIMEOUT * 2, p)
            .await
            .expect("producers finish in time")
            .expect("producer task ran");
    }
    let load_time = started.elapsed();
    // Every consumer left is killed too: what they hold goes back for the drain.
    for c in consumers.drain(..) {
        c.kill(false, &ledger).await;
    }
    slow.kill(false, &ledger).await;
    sampling.store(true, Ordering::Relaxed);
    let (peak, samples, at_limit) = sampler.join().expect("the sampler ran");

    let (mut drained, mut undrained) = (0, Vec::new());
    for queue in (0..FAST_QUEUES)
        .map(|q| format!("soak-{q}"))
        .chain([SLOW_QUEUE.to_owned()])
    {
        let url = format!("{base}/{queue}");
        let (taken, problem) =
            drain(&container, &broker, &url, &queue, next_consumer, &ledger).await;
        drained += taken;
        undrained.extend(problem);
        next_consumer += 1;
    }
    // The drain consumers' connections close: nothing may stay counted.
    let settled_by = Instant::now() + TIMEOUT;
    while broker.memory_used() != 0 && Instant::now() < settled_by {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let memory_left = broker.memory_used();

    // The ledger.
    let sent: u64 = ledger.sent.iter().map(|s| s.load(Ordering::Relaxed)).sum();
    let accepted = std::mem::take(&mut *lock(&ledger.accepted));
    let send_failures = std::mem::take(&mut *lock(&ledger.send_failures));
    let receipts = std::mem::take(&mut *lock(&ledger.receipts));
    let total_receipts: usize = receipts.values().map(Vec::len).sum();
    let lost: Vec<Id> = accepted
        .iter()
        .filter(|id| !receipts.contains_key(id))
        .copied()
        .collect();
    let made_up: Vec<Id> = receipts
        .keys()
        .filter(|(p, s)| {
            ledger
                .sent
                .get(*p as usize)
                .is_none_or(|n| *s >= n.load(Ordering::Relaxed))
        })
        .copied()
        .collect();
    let killed = std::mem::take(&mut *lock(&ledger.killed));
    // Receipts after the first, by what became of the one before: accepted (or held) by a consumer that was
    // then killed, so the broker never heard (the duplicates a kill makes), modified with delivery-failed, or
    // released.
    let (mut after_kill, mut after_modify, mut after_release) = (0, 0, 0);
    let mut unseen_redeliveries = 0;
    let mut unmarked = Vec::new();
    for (id, rs) in &receipts {
        let first = &rs[0];
        if !first.first_acquirer {
            unseen_redeliveries += 1;
            if first.delivery_count == 0 {
                unmarked.push(format!(
                    "{id:?} first seen redelivered with delivery-count 0: {rs:?}"
                ));
            }
        }
        for pair in rs.windows(2) {
            let (before, again) = (&pair[0], &pair[1]);
            let failed = before.action != Action::Release;
            match before.action {
                Action::Accept if killed.contains(&before.consumer) => after_kill += 1,
                Action::ModifyFailed => after_modify += 1,
                Action::Release => after_release += 1,
                Action::Accept => unmarked.push(format!(
                    "{id:?} redelivered after a consumer that was never killed accepted it: {rs:?}"
                )),
            }
            if again.first_acquirer
                || again.delivery_count < before.delivery_count + u32::from(failed)
            {
                unmarked.push(format!("{id:?}: {rs:?}"));
                break;
            }
        }
    }
    let largest = ledger.largest.load(Ordering::Relaxed);
    let slack = PRODUCERS * BROKER_PRODUCER_WINDOW * largest;
    println!(
        "broker soak, seed {seed}: {load_time:.1?} of load, {sent} messages sent, {} accepted, {total_receipts} \
         receipts of {} ids ({drained} in the final drain); {kills} consumers killed at random ({resets} with \
         RST), {} messages held unsettled at a kill; redeliveries: {after_kill} after a kill lost the \
         consumer's accept (duplicates), {after_modify} after modified with delivery-failed, {after_release} \
         after a release, {unseen_redeliveries} first seen redelivered (lost in flight at a kill); memory peak {peak} bytes against a limit of {MAX_MEMORY} + slack {slack} \
         ({PRODUCERS} producers × {BROKER_PRODUCER_WINDOW} credit × {largest} bytes), at the limit in \
         {at_limit} of {samples} samples; rejected {}, max deliveries reached {}",
        accepted.len(),
        receipts.len(),
        ledger.held_at_kill.load(Ordering::Relaxed),
        broker.rejected(),
        broker.max_deliveries_reached(),
    );

    assert!(
        send_failures.is_empty(),
        "seed {seed}: sends failed: {send_failures:?}"
    );
    assert_eq!(
        accepted.len() as u64,
        sent,
        "seed {seed}: every send has an outcome"
    );
    assert!(
        lost.is_empty(),
        "seed {seed}: {} accepted messages never received, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert!(
        made_up.is_empty(),
        "seed {seed}: received but never sent: {made_up:?}"
    );
    assert_eq!(
        ledger.malformed.load(Ordering::Relaxed),
        0,
        "seed {seed}: malformed messages"
    );
    assert!(
        unmarked.is_empty(),
        "seed {seed}: {} ids redelivered without the marks (delivery-count, first-acquirer), e.g. {:?}",
        unmarked.len(),
        &unmarked[..unmarked.len().min(10)]
    );
    assert_eq!(
        ledger.unexpected_ends.load(Ordering::Relaxed),
        0,
        "seed {seed}: a consumer's connection ended without a kill"
    );
    assert!(
        peak <= MAX_MEMORY + slack,
        "seed {seed}: memory peaked at {peak} bytes, over the limit {MAX_MEMORY} + slack {slack}"
    );
    assert!(
        peak >= MAX_MEMORY,
        "seed {seed}: memory peaked at {peak} bytes: the slow consumer never held the broker at its limit"
    );
    assert!(undrained.is_empty(), "seed {seed}: {undrained:?}");
    assert_eq!(
        memory_left, 0,
        "seed {seed}: bytes still counted after the drain"
    );
    assert_eq!(
        broker.rejected(),
        0,
        "seed {seed}: nothing is rejected here"
    );
    // The soak did what it says: consumers died holding messages, and some came back as duplicates.
    assert!(
        kills > 0 && after_kill > 0,
        "seed {seed}: {kills} kills, {after_kill} duplicates after a kill"
    );
    container.stop();
}
