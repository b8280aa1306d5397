//! Serialization (ARCHITECTURE §1 rule 1, first half): the runtime never runs two callbacks of one
//! connection at the same time. 100 client connections and their 100 accepted peers share 4 workers, messages
//! flow on all of them, and 8 foreign threads add wakes and work items to the clients meanwhile. Every
//! callback and work item of every connection holds that connection's in-callback guard, a busy flag taken
//! with `compare_exchange`: an overlap would find it taken and be counted.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nucleon::protocol::frame::Error as AmqpError;
use nucleon::{
    Connection, ConnectionOptions, Container, Delivery, Error, ListenHandler, ListenOptions,
    Message, MessagingHandler, Receiver, Sender, SenderId, SenderOptions, Session, Tracker,
};
use support::{recv, Overlap, StopOnPanic, Watchdog};

const LIMIT: Duration = Duration::from_secs(120);
const WAIT: Duration = Duration::from_secs(30);
const CONNECTIONS: usize = 100;
const WORKERS: usize = 4;
const FOREIGN_THREADS: usize = 8;
/// The most work items the foreign threads keep waiting on one connection.
const IN_FLIGHT: usize = 16;
/// Messages each client sends from `on_sendable`; work items send more.
const MESSAGES: usize = 200;

/// Totals over all connections.
#[derive(Default, Debug)]
struct Stats {
    callbacks: AtomicUsize,
    sent: AtomicUsize,
    sent_by_work: AtomicUsize,
    accepted: AtomicUsize,
    received: AtomicUsize,
    wakes: AtomicUsize,
    work_ran: AtomicUsize,
    errors: Mutex<Vec<String>>,
}

impl Stats {
    fn callback(&self, guard: &Arc<Overlap>) -> support::InCallback {
        self.callbacks.fetch_add(1, Ordering::Relaxed);
        guard.enter()
    }

    fn error(&self, e: String) {
        self.errors.lock().unwrap().push(e);
    }
}

/// Every guard, to check them all at the end.
type Guards = Arc<Mutex<Vec<(String, Arc<Overlap>)>>>;

/// The accepted side: receives and (by default) accepts.
struct Server {
    guard: Arc<Overlap>,
    stats: Arc<Stats>,
}

impl MessagingHandler for Server {
    fn on_transport_open(&mut self, _c: &mut Connection<'_>) {
        let _g = self.stats.callback(&self.guard);
    }
    fn on_connection_open(&mut self, _c: &mut Connection<'_>) {
        let _g = self.stats.callback(&self.guard);
    }
    fn on_session_open(&mut self, _s: &mut Session<'_>) {
        let _g = self.stats.callback(&self.guard);
    }
    fn on_receiver_open(&mut self, _r: &mut Receiver<'_>) {
        let _g = self.stats.callback(&self.guard);
    }
    fn on_message(&mut self, _d: &mut Delivery<'_>, _m: Message) {
        let _g = self.stats.callback(&self.guard);
        self.stats.received.fetch_add(1, Ordering::SeqCst);
    }
    fn on_connection_close(&mut self, _c: &mut Connection<'_>) {
        let _g = self.stats.callback(&self.guard);
    }
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let _g = self.stats.callback(&self.guard);
    }
    fn on_error(&mut self, e: &Error) {
        let _g = self.stats.callback(&self.guard);
        self.stats.error(format!("server: {e}"));
    }
}

struct Servers {
    stats: Arc<Stats>,
    guards: Guards,
}

impl ListenHandler for Servers {
    type Handler = Server;
    fn on_accept(&self, peer: SocketAddr) -> Server {
        let guard = Arc::new(Overlap::default());
        self.guards
            .lock()
            .unwrap()
            .push((format!("accepted from {peer}"), guard.clone()));
        Server {
            guard,
            stats: self.stats.clone(),
        }
    }
}

#[derive(Debug)]
struct ClientReport {
    id: usize,
    work_ran: usize,
    sent: usize,
}

/// A client: opens a sender and sends `MESSAGES`; work items bump a counter and may send one more.
struct Client {
    id: usize,
    guard: Arc<Overlap>,
    stats: Arc<Stats>,
    sender: Option<SenderId>,
    sent: usize,
    sent_on_sendable: usize,
    accepted: usize,
    work_ran: usize,
    wakes: usize,
    done: mpsc::Sender<usize>,
    closed: mpsc::Sender<ClientReport>,
}

impl Client {
    fn send(&mut self, s: &mut Sender<'_>, what: &str) -> bool {
        match s.send(&Message::builder().body(self.id as i64).build()) {
            Ok(_) => {
                self.sent += 1;
                self.stats.sent.fetch_add(1, Ordering::SeqCst);
                true
            }
            Err(e) => {
                self.stats
                    .error(format!("client {}: send from {what}: {e}", self.id));
                false
            }
        }
    }

    /// A work item, run in the connection's context.
    fn work(&mut self, c: &mut Connection<'_>, send: bool) {
        let _g = self.guard.enter();
        self.work_ran += 1;
        self.stats.work_ran.fetch_add(1, Ordering::SeqCst);
        if !send {
            return;
        }
        let Some(mut s) = self.sender.and_then(|sid| c.sender(sid)) else {
            return;
        };
        if s.credit() > 0 && self.send(&mut s, "work") {
            self.stats.sent_by_work.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl MessagingHandler for Client {
    fn on_transport_open(&mut self, _c: &mut Connection<'_>) {
        let _g = self.stats.callback(&self.guard);
    }
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        let _g = self.stats.callback(&self.guard);
        if let Err(e) = c.open_sender(&format!("serial-{}", self.id), SenderOptions::default()) {
            self.stats
                .error(format!("client {}: open_sender: {e}", self.id));
        }
    }
    fn on_session_open(&mut self, _s: &mut Session<'_>) {
        let _g = self.stats.callback(&self.guard);
    }
    fn on_sender_open(&mut self, s: &mut Sender<'_>) {
        let _g = self.stats.callback(&self.guard);
        self.sender = Some(s.id());
    }
    fn on_sendable(&mut self, s: &mut Sender<'_>) {
        let _g = self.stats.callback(&self.guard);
        while s.credit() > 0 && self.sent_on_sendable < MESSAGES {
            if !self.send(s, "on_sendable") {
                break;
            }
            self.sent_on_sendable += 1;
        }
    }
    fn on_tracker_accept(&mut self, _t: &mut Tracker<'_>) {
        let _g = self.stats.callback(&self.guard);
        self.accepted += 1;
        self.stats.accepted.fetch_add(1, Ordering::SeqCst);
        if self.accepted == MESSAGES {
            let _ = self.done.send(self.id);
        }
    }
    fn on_tracker_settle(&mut self, _t: &mut Tracker<'_>) {
        let _g = self.stats.callback(&self.guard);
    }
    fn on_connection_wake(&mut self, _c: &mut Connection<'_>) {
        let _g = self.stats.callback(&self.guard);
        self.wakes += 1;
        self.stats.wakes.fetch_add(1, Ordering::SeqCst);
    }
    fn on_connection_close(&mut self, _c: &mut Connection<'_>) {
        let _g = self.stats.callback(&self.guard);
    }
    fn on_transport_error(&mut self, _c: &mut Connection<'_>, e: &AmqpError) {
        let _g = self.stats.callback(&self.guard);
        self.stats
            .error(format!("client {}: transport error: {e}", self.id));
    }
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let _g = self.stats.callback(&self.guard);
        let _ = self.closed.send(ClientReport {
            id: self.id,
            work_ran: self.work_ran,
            sent: self.sent,
        });
    }
    fn on_error(&mut self, e: &Error) {
        let _g = self.stats.callback(&self.guard);
        self.stats.error(format!("client {}: {e}", self.id));
    }
}

#[test]
fn callbacks_of_one_connection_never_overlap() {
    let container = Container::builder()
        .id("serialization")
        .threads(WORKERS)
        .build();
    let handle = container.handle();
    let stats = Arc::new(Stats::default());
    let guards: Guards = Arc::default();
    // The open timeout is the watchdog's: with every core busy (stress-ng, a debug build) two hundred
    // connections and eight flooding threads can take longer than the default 10 s to open, and a
    // connection closed for that is not what this test looks for.
    let options = ListenOptions::new().open_timeout(LIMIT);
    let listener = handle
        .listen_with(
            "127.0.0.1:0",
            options,
            Servers {
                stats: stats.clone(),
                guards: guards.clone(),
            },
        )
        .expect("listens");
    let url = format!("amqp://127.0.0.1:{}", listener.port());
    let (done_tx, done_rx) = mpsc::channel();
    let (closed_tx, closed_rx) = mpsc::channel();
    let dog = Watchdog::new(vec![handle.clone()], LIMIT);
    let (h, st, gs) = (handle.clone(), stats.clone(), guards.clone());
    let coordinator = thread::spawn(move || {
        let _stop = StopOnPanic(vec![h.clone()]);
        // The clients are connected from this (foreign) thread while `run` starts.
        let conns: Vec<_> = (0..CONNECTIONS)
            .map(|id| {
                let guard = Arc::new(Overlap::default());
                gs.lock()
                    .unwrap()
                    .push((format!("client {id}"), guard.clone()));
                h.connect(
                    &url,
                    ConnectionOptions::default(),
                    Client {
                        id,
                        guard,
                        stats: st.clone(),
                        sender: None,
                        sent: 0,
                        sent_on_sendable: 0,
                        accepted: 0,
                        work_ran: 0,
                        wakes: 0,
                        done: done_tx.clone(),
                        closed: closed_tx.clone(),
                    },
                )
                .expect("connects")
            })
            .collect();
        // Eight threads add wakes and work while the connections open and their messages flow, until every
        // client has had its messages accepted. They keep at most `IN_FLIGHT` items waiting on each
        // connection, as a well-behaved producer of unbounded work does. Without a bound, on a loaded machine
        // (stress-ng on every core, a debug build, eight threads that never sleep) they outrun the four
        // workers, each read first runs all the work queued before it, and each worker's round over its fifty
        // connections grew until a server had not sent its `open` within the client's 10 s open timeout
        // (measured: 256 waiting items a connection was still too many). Overlap, not throughput, is what
        // this test looks for.
        let flowing = Arc::new(AtomicBool::new(true));
        let waiting: Arc<Vec<AtomicUsize>> =
            Arc::new((0..CONNECTIONS).map(|_| AtomicUsize::new(0)).collect());
        let start = Arc::new(Barrier::new(FOREIGN_THREADS));
        let foreign: Vec<_> = (0..FOREIGN_THREADS)
            .map(|t| {
                let (conns, start, flowing) = (conns.clone(), start.clone(), flowing.clone());
                let (stats, waiting) = (st.clone(), waiting.clone());
                thread::spawn(move || {
                    let deadline = Instant::now() + LIMIT;
                    start.wait();
                    let (mut wakes, mut added) = (0, 0);
                    let mut i = 0;
                    while flowing.load(Ordering::SeqCst) && Instant::now() < deadline {
                        let n = (t * 13 + i * 7) % CONNECTIONS;
                        let c = &conns[n];
                        if i % 2 == 0 {
                            c.wake();
                            wakes += 1;
                        } else if waiting[n].load(Ordering::SeqCst) < IN_FLIGHT {
                            let send = i % 4 == 1;
                            waiting[n].fetch_add(1, Ordering::SeqCst);
                            let waiting = waiting.clone();
                            let work = move |h: &mut Client, c: &mut Connection<'_>| {
                                waiting[n].fetch_sub(1, Ordering::SeqCst);
                                h.work(c, send);
                            };
                            if let Err(e) = c.work_queue().add(work) {
                                let errors = stats.errors.lock().unwrap().clone();
                                panic!(
                                    "work refused by a connection still in use: {e}; {errors:?}"
                                );
                            }
                            added += 1;
                        }
                        i += 1;
                        thread::yield_now();
                    }
                    (wakes, added)
                })
            })
            .collect();
        for _ in 0..CONNECTIONS {
            recv(&done_rx, WAIT, "every client's messages are accepted");
        }
        flowing.store(false, Ordering::SeqCst);
        let (woken, added) = foreign
            .into_iter()
            .map(|f| f.join().expect("foreign thread"))
            .fold((0, 0), |(w, a), (fw, fa)| (w + fw, a + fa));
        for c in &conns {
            c.close().expect("close is queued");
        }
        let reports: Vec<ClientReport> = (0..CONNECTIONS)
            .map(|_| recv(&closed_rx, WAIT, "every client closes"))
            .collect();
        listener.stop();
        (woken, added, reports)
    });
    container.run().expect("the container runs until auto-stop");
    assert!(!dog.disarm(), "the watchdog had to stop the container");
    let (woken, added, reports) = coordinator.join().expect("coordinator thread");

    let guards = guards.lock().unwrap();
    assert_eq!(guards.len(), 2 * CONNECTIONS);
    let overlapping: Vec<_> = guards
        .iter()
        .filter(|(_, g)| g.violations() > 0)
        .map(|(l, g)| (l.clone(), g.violations()))
        .collect();
    assert_eq!(
        overlapping,
        Vec::new(),
        "callbacks of one connection overlapped"
    );
    let moved: Vec<_> = guards
        .iter()
        .filter(|(_, g)| g.other_threads() > 0)
        .map(|(l, _)| l.clone())
        .collect();
    assert_eq!(moved, Vec::<String>::new(), "a connection changed threads");
    assert!(guards.iter().all(|(_, g)| g.entries() > 0));
    assert_eq!(stats.errors.lock().unwrap().clone(), Vec::<String>::new());

    // Real work happened, and none of it was lost.
    let mut ids: Vec<_> = reports.iter().map(|r| r.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, (0..CONNECTIONS).collect::<Vec<_>>(), "one close each");
    assert!(added > 0 && woken > 0);
    assert_eq!(stats.work_ran.load(Ordering::SeqCst), added);
    assert_eq!(reports.iter().map(|r| r.work_ran).sum::<usize>(), added);
    let wakes = stats.wakes.load(Ordering::SeqCst);
    assert!(wakes > 0 && wakes <= woken);
    // Work ran while messages were flowing: some work items found credit and sent.
    let sent_by_work = stats.sent_by_work.load(Ordering::SeqCst);
    assert!(sent_by_work > 0);
    let sent = stats.sent.load(Ordering::SeqCst);
    assert_eq!(reports.iter().map(|r| r.sent).sum::<usize>(), sent);
    assert!(sent >= CONNECTIONS * MESSAGES);
    assert_eq!(
        stats.received.load(Ordering::SeqCst),
        sent,
        "the servers received every message sent"
    );
    assert!(stats.accepted.load(Ordering::SeqCst) >= CONNECTIONS * MESSAGES);
    eprintln!(
        "{} callbacks and {added} work items on {} connections: {sent} messages ({sent_by_work} sent by \
         work items), {wakes} wake callbacks for {woken} wake() calls",
        stats.callbacks.load(Ordering::SeqCst),
        2 * CONNECTIONS,
    );
}
