//! Wake (ARCHITECTURE §1 rule 5): `ConnectionHandle::wake()` from any thread; calls made while a callback
//! runs coalesce into exactly one more `on_connection_wake`, there is always one after the last `wake()`,
//! and a wake after the connection closed is a no-op (no callback after `on_transport_close`, no panic).

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Barrier};
use std::thread;
use std::time::Duration;

use nucleon::{Connection, ConnectionOptions, Container, ListenHandler, MessagingHandler};
use support::{recv, Overlap, StopOnPanic, Watchdog};

const LIMIT: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(20);
const THREADS: usize = 8;

struct Nop;

impl MessagingHandler for Nop {}

impl ListenHandler for Nop {
    type Handler = Nop;
    fn on_accept(&self, _peer: SocketAddr) -> Nop {
        Nop
    }
}

#[derive(Debug, PartialEq)]
enum Event {
    Opened,
    /// A wake callback read this value of the shared counter, higher than any before.
    Observed(u64),
    Closed {
        wakes: u64,
        wakes_after_close: u64,
    },
}

/// Counts wake callbacks and reports each new maximum of the shared counter that they read.
struct Woken {
    guard: Arc<Overlap>,
    latest: Arc<AtomicU64>,
    max_seen: u64,
    wakes: u64,
    closed: bool,
    wakes_after_close: u64,
    events: mpsc::Sender<Event>,
}

impl Woken {
    fn new(latest: Arc<AtomicU64>, events: mpsc::Sender<Event>) -> Woken {
        Woken {
            guard: Arc::default(),
            latest,
            max_seen: 0,
            wakes: 0,
            closed: false,
            wakes_after_close: 0,
            events,
        }
    }
}

impl MessagingHandler for Woken {
    fn on_connection_open(&mut self, _c: &mut Connection<'_>) {
        let _g = self.guard.enter();
        let _ = self.events.send(Event::Opened);
    }
    fn on_connection_wake(&mut self, _c: &mut Connection<'_>) {
        // Read first: a locked instruction before this load (the guard's compare_exchange) would act as a
        // full fence and could hide a missing one in the runtime.
        let v = self.latest.load(Ordering::SeqCst);
        let _g = self.guard.enter();
        self.wakes += 1;
        if self.closed {
            self.wakes_after_close += 1;
        }
        if v > self.max_seen {
            self.max_seen = v;
            let _ = self.events.send(Event::Observed(v));
        }
    }
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let _g = self.guard.enter();
        self.closed = true;
        let _ = self.events.send(Event::Closed {
            wakes: self.wakes,
            wakes_after_close: self.wakes_after_close,
        });
    }
}

/// Waits until a wake callback has read `value` (or more) from the shared counter.
fn wait_observed(events: &mpsc::Receiver<Event>, value: u64) {
    loop {
        match recv(events, WAIT, "a wake callback follows the last wake()") {
            Event::Observed(v) if v >= value => return,
            Event::Observed(_) => {}
            e => panic!("unexpected {e:?}"),
        }
    }
}

/// `threads` threads each call `wake()` `per_thread` times in `rounds` rounds, each time after incrementing
/// the shared counter. At the end of every round, some wake callback must have read the round's final count:
/// a callback followed the last `wake()`. Returns the number of wake callbacks.
fn wake_rounds(id: &str, rounds: u64, per_thread: u64) -> u64 {
    let container = Container::builder().id(id).threads(2).build();
    let handle = container.handle();
    let listener = handle.listen("127.0.0.1:0", Nop).expect("listens");
    let latest = Arc::new(AtomicU64::new(0));
    let (ev_tx, ev_rx) = mpsc::channel();
    let conn = handle
        .connect(
            &format!("amqp://127.0.0.1:{}", listener.port()),
            ConnectionOptions::default(),
            Woken::new(latest.clone(), ev_tx),
        )
        .expect("connects");
    let dog = Watchdog::new(vec![handle.clone()], LIMIT);
    let h = handle.clone();
    let checker = thread::spawn(move || {
        let _stop = StopOnPanic(vec![h]);
        assert_eq!(recv(&ev_rx, WAIT, "the connection opens"), Event::Opened);
        let round_start = Arc::new(Barrier::new(THREADS + 1));
        let round_end = Arc::new(Barrier::new(THREADS + 1));
        let wakers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (conn, latest) = (conn.clone(), latest.clone());
                let (round_start, round_end) = (round_start.clone(), round_end.clone());
                thread::spawn(move || {
                    for _ in 0..rounds {
                        round_start.wait();
                        for _ in 0..per_thread {
                            latest.fetch_add(1, Ordering::SeqCst);
                            conn.wake();
                        }
                        round_end.wait();
                    }
                })
            })
            .collect();
        for r in 1..=rounds {
            round_start.wait();
            round_end.wait();
            // Every thread has made its last wake() of the round.
            wait_observed(&ev_rx, r * per_thread * THREADS as u64);
        }
        for w in wakers {
            w.join().expect("waker thread");
        }
        conn.close().expect("close is queued");
        let closed = loop {
            match recv(&ev_rx, WAIT, "the connection closes") {
                Event::Observed(_) => {}
                e => break e,
            }
        };
        listener.stop();
        closed
    });
    container.run().expect("the container runs until auto-stop");
    assert!(!dog.disarm(), "the watchdog had to stop the container");
    let Event::Closed {
        wakes,
        wakes_after_close,
    } = checker.join().expect("checker thread")
    else {
        unreachable!()
    };
    assert_eq!(wakes_after_close, 0);
    wakes
}

/// Blocks in its first wake callback until told to go on; counts wake callbacks.
struct Blocking {
    opened: mpsc::Sender<()>,
    blocked: mpsc::Sender<()>,
    go: Option<mpsc::Receiver<()>>,
    wakes: u64,
}

impl MessagingHandler for Blocking {
    fn on_connection_open(&mut self, _c: &mut Connection<'_>) {
        let _ = self.opened.send(());
    }
    fn on_connection_wake(&mut self, _c: &mut Connection<'_>) {
        self.wakes += 1;
        if let Some(go) = self.go.take() {
            let _ = self.blocked.send(());
            let _ = go.recv_timeout(WAIT);
        }
    }
}

#[test]
fn wakes_while_the_handler_is_busy_coalesce_into_exactly_one_callback() {
    // The first wake's callback blocks; meanwhile eight threads call wake() 100 000 times. The pending flag
    // is cleared before each callback, so all of them coalesce into one message: once the callback returns,
    // exactly one more follows (a closure scheduled afterwards, whose actor message is handled after any wake
    // message sent before it, counts two callbacks in all), not one per wake, and none is lost.
    const TOTAL: u64 = 100_000;
    let container = Container::builder().id("wake-coalesce").threads(2).build();
    let handle = container.handle();
    let listener = handle.listen("127.0.0.1:0", Nop).expect("listens");
    let (opened_tx, opened) = mpsc::channel();
    let (blocked_tx, blocked) = mpsc::channel();
    let (go, go_rx) = mpsc::channel();
    let conn = handle
        .connect(
            &format!("amqp://127.0.0.1:{}", listener.port()),
            ConnectionOptions::default(),
            Blocking {
                opened: opened_tx,
                blocked: blocked_tx,
                go: Some(go_rx),
                wakes: 0,
            },
        )
        .expect("connects");
    let dog = Watchdog::new(vec![handle.clone()], LIMIT);
    let h = handle.clone();
    let checker = thread::spawn(move || {
        let _stop = StopOnPanic(vec![h]);
        recv(&opened, WAIT, "the connection opens");
        conn.wake();
        recv(&blocked, WAIT, "the first wake callback runs");
        let start = Arc::new(Barrier::new(THREADS));
        let wakers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (conn, start) = (conn.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    for _ in 0..TOTAL / THREADS as u64 {
                        conn.wake();
                    }
                })
            })
            .collect();
        for w in wakers {
            w.join().expect("waker thread");
        }
        go.send(()).expect("the callback waits");
        let (count_tx, count) = mpsc::channel();
        // A scheduled closure is an actor message: it runs after every wake message sent before it.
        conn.work_queue()
            .schedule(Duration::ZERO, move |h: &mut Blocking, _| {
                let _ = count_tx.send(h.wakes);
            })
            .expect("work scheduled");
        let wakes = recv(&count, WAIT, "the work item runs");
        conn.close().expect("close is queued");
        listener.stop();
        wakes
    });
    container.run().expect("the container runs until auto-stop");
    assert!(!dog.disarm(), "the watchdog had to stop the container");
    let wakes = checker.join().expect("checker thread");
    assert_eq!(
        wakes, 2,
        "the blocked callback, then one for the {TOTAL} wakes made meanwhile"
    );
}

#[test]
fn a_wake_callback_follows_the_last_wake_of_every_burst() {
    // Many short bursts: the last wake() of a burst often lands just as the connection is clearing the
    // pending flag of an earlier one, which is where a lost wake would hide.
    const ROUNDS: u64 = 20_000;
    const PER_THREAD: u64 = 1;
    let wakes = wake_rounds("wake-bursts", ROUNDS, PER_THREAD);
    let total = ROUNDS * PER_THREAD * THREADS as u64;
    eprintln!("{total} wake() calls in {ROUNDS} bursts gave {wakes} callbacks");
    assert!((ROUNDS..=total).contains(&wakes));
}

#[test]
fn wake_after_close_is_a_no_op() {
    let container = Container::builder().id("wake-closed").threads(2).build();
    let handle = container.handle();
    let listener = handle.listen("127.0.0.1:0", Nop).expect("listens");
    let latest = Arc::new(AtomicU64::new(0));
    let (ev_tx, ev_rx) = mpsc::channel();
    let conn = handle
        .connect(
            &format!("amqp://127.0.0.1:{}", listener.port()),
            ConnectionOptions::default(),
            Woken::new(latest.clone(), ev_tx),
        )
        .expect("connects");
    // A connection that never connects: nothing listens on this port any more.
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binds")
        .port();
    let (refused_tx, refused_rx) = mpsc::channel();
    let refused = handle
        .connect(
            &format!("amqp://127.0.0.1:{free_port}"),
            ConnectionOptions::default(),
            Woken::new(latest.clone(), refused_tx),
        )
        .expect("connect returns at once");
    let dog = Watchdog::new(vec![handle.clone()], LIMIT);
    let h = handle.clone();
    let (c, r) = (conn.clone(), refused.clone());
    let checker = thread::spawn(move || {
        let _stop = StopOnPanic(vec![h]);
        assert_eq!(recv(&ev_rx, WAIT, "the connection opens"), Event::Opened);
        c.close().expect("close is queued");
        let closed = loop {
            match recv(&ev_rx, WAIT, "the connection closes") {
                Event::Observed(_) => {}
                e => break e,
            }
        };
        let refused_closed = recv(&refused_rx, WAIT, "the refused connection closes");
        // Wakes between on_transport_close and the end of the actor, from several threads.
        let wakers: Vec<_> = (0..THREADS)
            .map(|_| {
                let (c, r) = (c.clone(), r.clone());
                thread::spawn(move || {
                    for _ in 0..1000 {
                        c.wake();
                        r.wake();
                    }
                })
            })
            .collect();
        for w in wakers {
            w.join().expect("waker thread");
        }
        listener.stop();
        (closed, refused_closed)
    });
    container.run().expect("the container runs until auto-stop");
    assert!(!dog.disarm(), "the watchdog had to stop the container");
    let (closed, refused_closed) = checker.join().expect("checker thread");
    assert!(
        matches!(
            closed,
            Event::Closed {
                wakes_after_close: 0,
                ..
            }
        ),
        "{closed:?}"
    );
    assert!(
        matches!(
            refused_closed,
            Event::Closed {
                wakes_after_close: 0,
                ..
            }
        ),
        "{refused_closed:?}"
    );
    // Both actors are gone now; wake stays a harmless no-op.
    assert!(conn.is_finished() && refused.is_finished());
    for _ in 0..1000 {
        conn.wake();
        refused.wake();
    }
}
