//! The work queue (ARCHITECTURE §1 rule 4): work added from foreign threads runs in the connection's
//! context, on its thread, with `&mut` access to the handler and the connection's objects; it runs in
//! order (FIFO per adding thread); work added before an event runs before that event; and once the
//! connection is finished, `add` fails with `Error::ConnectionClosed` instead of dropping work silently.

mod support;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use nucleon::{
    Connection, ConnectionOptions, Container, Delivery, Error, ListenHandler, Message,
    MessagingHandler, ReceiverOptions, Sender, SenderId, SenderOptions,
};
use support::{recv, Overlap, StopOnPanic, Watchdog};

const LIMIT: Duration = Duration::from_secs(60);
const WAIT: Duration = Duration::from_secs(20);

fn body(m: &Message) -> i64 {
    m.body_value()
        .and_then(nucleon::Value::as_i64)
        .expect("a long body")
}

/// Accepts connections; receivers record message bodies, in order, on a channel.
struct Sink(mpsc::Sender<i64>);

impl MessagingHandler for Sink {
    fn on_message(&mut self, _d: &mut Delivery<'_>, m: Message) {
        let _ = self.0.send(body(&m));
    }
}

impl ListenHandler for Sink {
    type Handler = Sink;
    fn on_accept(&self, _peer: SocketAddr) -> Sink {
        Sink(self.0.clone())
    }
}

// ----- work runs in context and can send by SenderId -----

enum ProducerEvent {
    Sendable(SenderId),
    Closed(ProducerReport),
}

#[derive(Debug)]
struct ProducerReport {
    work_ran: usize,
    work_on_other_thread: usize,
    sender_missing: usize,
    backlog_left: usize,
    callbacks_seen_work: bool,
    overlaps: usize,
    other_threads: usize,
}

/// Opens a sender; work items send on it by `SenderId` (queueing while there is no credit).
struct Producer {
    guard: Arc<Overlap>,
    events: mpsc::Sender<ProducerEvent>,
    thread: Option<ThreadId>,
    sender: Option<SenderId>,
    backlog: VecDeque<Message>,
    work_ran: usize,
    work_on_other_thread: usize,
    sender_missing: usize,
    /// Set by `on_tracker_accept` when it sees a count left by work items: their `&mut` access to the handler
    /// is visible to later callbacks.
    callbacks_seen_work: bool,
}

impl Producer {
    fn flush(&mut self, s: &mut Sender<'_>) {
        while s.credit() > 0 {
            let Some(m) = self.backlog.pop_front() else {
                break;
            };
            s.send(&m).expect("send with credit");
        }
    }
}

impl MessagingHandler for Producer {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        let _g = self.guard.enter();
        self.thread = Some(thread::current().id());
        c.open_sender("work", SenderOptions::default())
            .expect("sender opens");
    }
    fn on_sendable(&mut self, s: &mut Sender<'_>) {
        let _g = self.guard.enter();
        if self.sender.is_none() {
            self.sender = Some(s.id());
            let _ = self.events.send(ProducerEvent::Sendable(s.id()));
        }
        self.flush(s);
    }
    fn on_tracker_accept(&mut self, _t: &mut nucleon::Tracker<'_>) {
        let _g = self.guard.enter();
        if self.work_ran > 0 {
            self.callbacks_seen_work = true;
        }
    }
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let _g = self.guard.enter();
        let _ = self.events.send(ProducerEvent::Closed(ProducerReport {
            work_ran: self.work_ran,
            work_on_other_thread: self.work_on_other_thread,
            sender_missing: self.sender_missing,
            backlog_left: self.backlog.len(),
            callbacks_seen_work: self.callbacks_seen_work,
            overlaps: self.guard.violations(),
            other_threads: self.guard.other_threads(),
        }));
    }
}

/// A work item: runs on the connection's thread and sends message `i` on the sender found by id.
fn send_by_id(i: i64, sid: SenderId) -> impl FnOnce(&mut Producer, &mut Connection<'_>) + Send {
    move |h, c| {
        let _g = h.guard.enter();
        h.work_ran += 1;
        if Some(thread::current().id()) != h.thread {
            h.work_on_other_thread += 1;
        }
        let m = Message::builder().body(i).build();
        match c.sender(sid) {
            Some(mut s) => {
                h.backlog.push_back(m);
                h.flush(&mut s);
            }
            None => h.sender_missing += 1,
        }
    }
}

#[test]
fn work_from_a_foreign_thread_runs_in_context_and_sends_by_sender_id() {
    const N: i64 = 200;
    let container = Container::builder().id("wq-context").threads(2).build();
    let handle = container.handle();
    let (got_tx, got_rx) = mpsc::channel();
    let listener = handle.listen("127.0.0.1:0", Sink(got_tx)).expect("listens");
    let (ev_tx, ev_rx) = mpsc::channel();
    let conn = handle
        .connect(
            &format!("amqp://127.0.0.1:{}", listener.port()),
            ConnectionOptions::default(),
            Producer {
                guard: Arc::default(),
                events: ev_tx,
                thread: None,
                sender: None,
                backlog: VecDeque::new(),
                work_ran: 0,
                work_on_other_thread: 0,
                sender_missing: 0,
                callbacks_seen_work: false,
            },
        )
        .expect("connects");
    let wq = conn.work_queue();
    let dog = Watchdog::new(vec![handle.clone()], LIMIT);
    let stop = handle.clone();
    let checker = thread::spawn(move || {
        let _stop = StopOnPanic(vec![stop]);
        let ProducerEvent::Sendable(sid) = recv(&ev_rx, WAIT, "the sender gets credit") else {
            panic!("closed before the sender got credit");
        };
        for i in 0..N {
            wq.add(send_by_id(i, sid))
                .expect("add succeeds while the connection is open");
        }
        let bodies: Vec<i64> = (0..N)
            .map(|_| recv(&got_rx, WAIT, "the listener receives what work items sent"))
            .collect();
        conn.close().expect("close is queued");
        let ProducerEvent::Closed(report) = recv(&ev_rx, WAIT, "the connection closes") else {
            panic!("a second Sendable event");
        };
        listener.stop();
        (bodies, report, wq)
    });
    container.run().expect("the container runs until auto-stop");
    assert!(!dog.disarm(), "the watchdog had to stop the container");
    let (bodies, report, wq) = checker.join().expect("checker thread");
    assert_eq!(
        bodies,
        (0..N).collect::<Vec<_>>(),
        "work items sent in FIFO order"
    );
    assert_eq!(report.work_ran, N as usize, "{report:?}");
    assert_eq!(report.work_on_other_thread, 0, "{report:?}");
    assert_eq!(report.sender_missing, 0, "{report:?}");
    assert_eq!(report.backlog_left, 0, "{report:?}");
    assert!(report.callbacks_seen_work, "{report:?}");
    assert_eq!(report.overlaps, 0, "{report:?}");
    assert_eq!(report.other_threads, 0, "{report:?}");
    // The connection is finished: work is refused, not dropped.
    assert_eq!(wq.add(|_, _| {}), Err(Error::ConnectionClosed));
    assert_eq!(
        wq.schedule(Duration::ZERO, |_, _| {}),
        Err(Error::ConnectionClosed)
    );
}

// ----- FIFO per thread, from 8 threads at once -----

const THREADS: usize = 8;

#[derive(Debug, Default)]
struct FifoReport {
    ran: usize,
    out_of_order: usize,
    overlaps: usize,
    other_threads: usize,
}

/// Records, per adding thread, the sequence numbers of the work items it runs.
struct Fifo {
    guard: Arc<Overlap>,
    last: HashMap<usize, u64>,
    report: FifoReport,
    closed: mpsc::Sender<FifoReport>,
}

impl Fifo {
    fn record(&mut self, t: usize, seq: u64) {
        let _g = self.guard.enter();
        self.report.ran += 1;
        let expected = self.last.get(&t).map_or(0, |l| l + 1);
        if seq != expected {
            self.report.out_of_order += 1;
        }
        self.last.insert(t, seq);
    }
}

impl MessagingHandler for Fifo {
    fn on_connection_open(&mut self, _c: &mut Connection<'_>) {
        let _g = self.guard.enter();
    }
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let _g = self.guard.enter();
        let mut report = std::mem::take(&mut self.report);
        report.overlaps = self.guard.violations();
        report.other_threads = self.guard.other_threads();
        let _ = self.closed.send(report);
    }
}

struct Nop;

impl MessagingHandler for Nop {}

impl ListenHandler for Nop {
    type Handler = Nop;
    fn on_accept(&self, _peer: SocketAddr) -> Nop {
        Nop
    }
}

#[test]
fn work_from_eight_threads_runs_in_fifo_order_per_thread() {
    const PER_THREAD: u64 = 2000;
    let container = Container::builder().id("wq-fifo").threads(2).build();
    let handle = container.handle();
    let listener = handle.listen("127.0.0.1:0", Nop).expect("listens");
    let (closed_tx, closed_rx) = mpsc::channel();
    let conn = handle
        .connect(
            &format!("amqp://127.0.0.1:{}", listener.port()),
            ConnectionOptions::default(),
            Fifo {
                guard: Arc::default(),
                last: HashMap::new(),
                report: FifoReport::default(),
                closed: closed_tx,
            },
        )
        .expect("connects");
    let dog = Watchdog::new(vec![handle.clone()], LIMIT);
    let stop = handle.clone();
    // The threads start at once, right after `connect` returned: some work is queued before the
    // connection's actor has even started.
    let checker = thread::spawn(move || {
        let _stop = StopOnPanic(vec![stop]);
        let start = Arc::new(Barrier::new(THREADS));
        let adders: Vec<_> = (0..THREADS)
            .map(|t| {
                let wq = conn.work_queue();
                let start = start.clone();
                thread::spawn(move || {
                    start.wait();
                    let mut refused = Vec::new();
                    for seq in 0..PER_THREAD {
                        if let Err(e) = wq.add(move |h: &mut Fifo, _| h.record(t, seq)) {
                            refused.push((seq, e));
                        }
                    }
                    refused
                })
            })
            .collect();
        let refused: Vec<_> = adders
            .into_iter()
            .flat_map(|a| a.join().expect("adder thread"))
            .collect();
        conn.close().expect("close is queued");
        let report = recv(&closed_rx, WAIT, "the connection closes");
        listener.stop();
        (refused, report)
    });
    container.run().expect("the container runs until auto-stop");
    assert!(!dog.disarm(), "the watchdog had to stop the container");
    let (refused, report) = checker.join().expect("checker thread");
    assert!(
        refused.is_empty(),
        "add failed on an open connection {} times, first: {:?}",
        refused.len(),
        refused.first()
    );
    assert_eq!(report.ran, THREADS * PER_THREAD as usize, "{report:?}");
    assert_eq!(report.out_of_order, 0, "{report:?}");
    assert_eq!(report.overlaps, 0, "{report:?}");
    assert_eq!(report.other_threads, 0, "{report:?}");
}

// ----- work added before an event runs before it -----

/// The accepted side: a sender that stamps each message with the number of work items the test thread has
/// added to the other side *and seen `add` return for*, at the moment of sending.
struct Stamper {
    added: Arc<AtomicU64>,
    last: u64,
    done: bool,
    /// Sent in every message (an application property), to make it this big.
    pad: bytes::Bytes,
}

impl MessagingHandler for Stamper {
    fn on_sendable(&mut self, s: &mut Sender<'_>) {
        while s.credit() > 0 && !self.done {
            let stamp = self.added.load(Ordering::Acquire);
            let mut m = Message::builder().body(stamp as i64);
            if !self.pad.is_empty() {
                m = m.property("pad", nucleon::Value::Binary(self.pad.clone()));
            }
            s.send(&m.build()).expect("send with credit");
            self.done = stamp == self.last;
        }
    }
}

struct StamperFactory {
    added: Arc<AtomicU64>,
    last: u64,
    pad: bytes::Bytes,
}

impl ListenHandler for StamperFactory {
    type Handler = Stamper;
    fn on_accept(&self, _peer: SocketAddr) -> Stamper {
        Stamper {
            added: self.added.clone(),
            last: self.last,
            done: false,
            pad: self.pad.clone(),
        }
    }
}

#[derive(Debug, Default)]
struct StampReport {
    messages: u64,
    /// Messages stamped `k` that arrived before work item `k` had run: (stamp, work items run).
    early: Vec<(u64, u64)>,
    out_of_order: u64,
    overlaps: usize,
}

/// The connection under test: receives stamped messages; work item `k` records that it ran.
struct Stamped {
    guard: Arc<Overlap>,
    work_ran: u64,
    last: u64,
    max_seen: Option<u64>,
    seen: mpsc::Sender<u64>,
    report: StampReport,
    closed: mpsc::Sender<StampReport>,
}

impl MessagingHandler for Stamped {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        let _g = self.guard.enter();
        c.open_receiver("stamps", ReceiverOptions::default())
            .expect("receiver opens");
    }
    fn on_message(&mut self, d: &mut Delivery<'_>, m: Message) {
        let _g = self.guard.enter();
        let stamp = body(&m) as u64;
        self.report.messages += 1;
        if stamp > self.work_ran {
            self.report.early.push((stamp, self.work_ran));
        }
        if self.max_seen.is_none_or(|s| stamp > s) {
            self.max_seen = Some(stamp);
            let _ = self.seen.send(stamp);
        }
        if stamp == self.last {
            d.receiver().connection().close();
        }
    }
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let _g = self.guard.enter();
        let mut report = std::mem::take(&mut self.report);
        report.overlaps = self.guard.violations();
        let _ = self.closed.send(report);
    }
}

#[test]
fn work_added_before_an_event_runs_before_it() {
    work_before_event(2000, 0, true);
}

#[test]
fn work_added_before_an_event_runs_before_it_whatever_the_read_sizes() {
    // 64 KiB messages: every socket read is full, so a connection that reads several times per turn, or
    // runs only the work it has already taken from its mailbox, delivers a message before earlier work.
    work_before_event(2000, 64 << 10, false);
}

/// Round k: the test thread adds work item k to connection C and, once `add` has returned, publishes k.
/// C's peer stamps every message it sends (padded to `pad` bytes) with the published value, so a message
/// stamped k was sent (and so arrived at C) after work item k was queued: C must have run work item k
/// before it sees that message. Meanwhile messages keep flowing, so work arrives while C is busy reading.
fn work_before_event(rounds: u64, pad: usize, lockstep: bool) {
    /// Streaming, work item k is added once a message stamped k - STREAM_AHEAD has arrived.
    const STREAM_AHEAD: u64 = 16;
    let container = Container::builder().id("wq-before").threads(2).build();
    let handle = container.handle();
    let added = Arc::new(AtomicU64::new(0));
    let listener = handle
        .listen(
            "127.0.0.1:0",
            StamperFactory {
                added: added.clone(),
                last: rounds,
                pad: bytes::Bytes::from(vec![0u8; pad]),
            },
        )
        .expect("listens");
    let (seen_tx, seen_rx) = mpsc::channel();
    let (closed_tx, closed_rx) = mpsc::channel();
    let conn = handle
        .connect(
            &format!("amqp://127.0.0.1:{}", listener.port()),
            ConnectionOptions::default(),
            Stamped {
                guard: Arc::default(),
                work_ran: 0,
                last: rounds,
                max_seen: None,
                seen: seen_tx,
                report: StampReport::default(),
                closed: closed_tx,
            },
        )
        .expect("connects");
    let dog = Watchdog::new(vec![handle.clone()], LIMIT);
    let stop = handle.clone();
    let checker = thread::spawn(move || {
        let _stop = StopOnPanic(vec![stop]);
        let wq = conn.work_queue();
        let mut seen = recv(&seen_rx, WAIT, "the first message arrives");
        for k in 1..=rounds {
            wq.add(move |h: &mut Stamped, _| {
                if k != h.work_ran + 1 {
                    h.report.out_of_order += 1;
                }
                h.work_ran = k;
            })
            .expect("add succeeds while the connection is open");
            added.store(k, Ordering::Release);
            // In lockstep, each message of the round follows its work item; streaming, work is added while
            // many messages are on their way.
            let wait_for = if lockstep {
                k
            } else {
                k.saturating_sub(STREAM_AHEAD)
            };
            while seen < wait_for {
                seen = recv(&seen_rx, WAIT, "a message with the new stamp arrives");
            }
        }
        let report = recv(&closed_rx, WAIT, "the connection closes");
        listener.stop();
        report
    });
    container.run().expect("the container runs until auto-stop");
    assert!(!dog.disarm(), "the watchdog had to stop the container");
    let report = checker.join().expect("checker thread");
    assert!(
        report.early.is_empty(),
        "{} messages overtook work queued before they were sent, first (stamp, work run): {:?}",
        report.early.len(),
        report.early.first()
    );
    assert_eq!(report.out_of_order, 0, "{report:?}");
    assert_eq!(report.overlaps, 0, "{report:?}");
    // Messages kept flowing: one per round in lockstep, a new stamp every STREAM_AHEAD rounds streaming.
    let least = if lockstep {
        rounds + 1
    } else {
        rounds / STREAM_AHEAD
    };
    assert!(report.messages >= least, "{report:?}");
}

// ----- work is never dropped silently; after finish, add fails -----

/// Counts the work items that ran.
struct Counted {
    closed: mpsc::Sender<()>,
}

impl MessagingHandler for Counted {
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let _ = self.closed.send(());
    }
}

#[test]
fn work_is_refused_after_finish_and_never_dropped_silently() {
    // Four threads add work until `add` refuses it, while the connection closes under them. Every item
    // `add` accepted must run; once it refuses one, the connection is finished and it refuses all.
    const ADDERS: usize = 4;
    const MAX_IN_FLIGHT: usize = 512;
    let container = Container::builder().id("wq-finish").threads(2).build();
    let handle = container.handle();
    let listener = handle.listen("127.0.0.1:0", Nop).expect("listens");
    let ran = Arc::new(AtomicUsize::new(0));
    let (closed_tx, closed_rx) = mpsc::channel();
    let conn = handle
        .connect(
            &format!("amqp://127.0.0.1:{}", listener.port()),
            ConnectionOptions::default(),
            Counted { closed: closed_tx },
        )
        .expect("connects");
    let dog = Watchdog::new(vec![handle.clone()], LIMIT);
    let stop = handle.clone();
    let checker = thread::spawn(move || {
        let _stop = StopOnPanic(vec![stop]);
        let accepted = Arc::new(AtomicUsize::new(0));
        let adders: Vec<_> = (0..ADDERS)
            .map(|_| {
                let wq = conn.work_queue();
                let (ran, accepted) = (ran.clone(), accepted.clone());
                thread::spawn(move || {
                    let deadline = Instant::now() + WAIT;
                    loop {
                        assert!(Instant::now() < deadline, "add never refused work");
                        // Keep the mailbox short, so the connection's I/O is not starved by work.
                        if accepted
                            .load(Ordering::SeqCst)
                            .saturating_sub(ran.load(Ordering::SeqCst))
                            > MAX_IN_FLIGHT
                        {
                            thread::yield_now();
                            continue;
                        }
                        let r = ran.clone();
                        match wq.add(move |_: &mut Counted, _| {
                            r.fetch_add(1, Ordering::SeqCst);
                        }) {
                            Ok(()) => {
                                accepted.fetch_add(1, Ordering::SeqCst);
                            }
                            Err(e) => {
                                assert_eq!(e, Error::ConnectionClosed);
                                // Once refused, always refused.
                                for _ in 0..100 {
                                    assert_eq!(wq.add(|_, _| {}), Err(Error::ConnectionClosed));
                                }
                                return;
                            }
                        }
                    }
                })
            })
            .collect();
        // Let some work run first, then close while the adders go on.
        let deadline = Instant::now() + WAIT;
        while ran.load(Ordering::SeqCst) < 5000 {
            assert!(Instant::now() < deadline, "work does not run");
            thread::yield_now();
        }
        conn.close().expect("close is queued");
        recv(&closed_rx, WAIT, "the connection closes");
        for a in adders {
            a.join().expect("adder thread");
        }
        listener.stop();
        (conn, accepted, ran)
    });
    container.run().expect("the container runs until auto-stop");
    assert!(!dog.disarm(), "the watchdog had to stop the container");
    let (conn, accepted, ran) = checker.join().expect("checker thread");
    assert!(conn.is_finished());
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        ran.load(Ordering::SeqCst),
        "every work item that add accepted ran"
    );
    assert_eq!(
        conn.work_queue().add(|_, _| {}),
        Err(Error::ConnectionClosed)
    );
    assert_eq!(conn.close(), Err(Error::ConnectionClosed));
}

#[test]
fn scheduled_work_runs_even_when_the_connection_finishes_first() {
    // `schedule` said Ok, so its closure runs: at its time, or, if the connection finishes first, then
    // (seeing the connection closed), never dropped.
    let container = Container::builder().id("wq-scheduled").threads(2).build();
    let handle = container.handle();
    let listener = handle.listen("127.0.0.1:0", Nop).expect("listens");
    let (closed_tx, closed_rx) = mpsc::channel();
    let conn = handle
        .connect(
            &format!("amqp://127.0.0.1:{}", listener.port()),
            ConnectionOptions::default(),
            Counted { closed: closed_tx },
        )
        .expect("connects");
    let dog = Watchdog::new(vec![handle.clone()], LIMIT);
    let (ran_tx, ran_rx) = mpsc::channel();
    let (soon_tx, soon_rx) = mpsc::channel();
    let wq = conn.work_queue();
    wq.schedule(Duration::from_secs(3600), move |_, _| {
        let _ = ran_tx.send("late");
    })
    .expect("scheduled");
    wq.schedule(Duration::ZERO, move |_, _| {
        let _ = soon_tx.send("soon");
    })
    .expect("scheduled");
    let stop = handle.clone();
    let checker = thread::spawn(move || {
        let _stop = StopOnPanic(vec![stop]);
        assert_eq!(recv(&soon_rx, WAIT, "the due closure runs"), "soon");
        conn.close().expect("close is queued");
        recv(&closed_rx, WAIT, "the connection closes");
        let late = recv(&ran_rx, WAIT, "the closure scheduled an hour ahead runs");
        listener.stop();
        (conn, late)
    });
    container.run().expect("the container runs until auto-stop");
    assert!(!dog.disarm(), "the watchdog had to stop the container");
    let (conn, late) = checker.join().expect("checker thread");
    assert_eq!(late, "late");
    assert!(conn.is_finished());
    assert_eq!(
        conn.work_queue().schedule(Duration::ZERO, |_, _| {}),
        Err(Error::ConnectionClosed)
    );
}
