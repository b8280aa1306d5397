//! The container is thread safe (ARCHITECTURE §1 rule 2): connect, listen, open senders and receivers (by
//! handlers, and through work queues) and schedule from 8 threads at once while `run` is active on the
//! test thread; `stop()` from a foreign thread ends `run`; `on_transport_close` comes exactly once per
//! connection; after `stop`, new calls fail with `Error::ContainerStopping`. And `auto_stop`: on by
//! default, the container stops by itself once the last connection and listener are gone; off, it runs
//! until `stop()`.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nucleon::{
    Connection, ConnectionHandle, ConnectionOptions, Container, Delivery, Error, ListenHandler,
    Message, MessagingHandler, Receiver, ReceiverOptions, Sender, SenderOptions,
};
use support::{recv, Overlap, StopOnPanic, Watchdog};

const LIMIT: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(20);
const THREADS: usize = 8;

/// One `on_transport_close` counter per connection, labelled by who made it.
#[derive(Default)]
struct Registry(Mutex<Vec<(String, Arc<AtomicUsize>)>>, Mutex<Vec<String>>);

impl Registry {
    fn counter(&self, label: String) -> Arc<AtomicUsize> {
        let c = Arc::new(AtomicUsize::new(0));
        self.0.lock().unwrap().push((label, c.clone()));
        c
    }

    /// (label, count) of every connection whose `on_transport_close` did not run exactly once.
    fn not_closed_once(&self) -> Vec<(String, usize)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(l, c)| (l.clone(), c.load(Ordering::SeqCst)))
            .filter(|(_, n)| *n != 1)
            .collect()
    }

    /// Records something a callback found wrong.
    fn error(&self, what: String) {
        self.1.lock().unwrap().push(what);
    }

    fn errors(&self) -> Vec<String> {
        self.1.lock().unwrap().clone()
    }

    /// Forgets a counter whose connection was never made.
    fn forget(&self, counter: &Arc<AtomicUsize>) {
        self.0
            .lock()
            .unwrap()
            .retain(|(_, c)| !Arc::ptr_eq(c, counter));
    }

    fn count(&self, prefix: &str) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, _)| l.starts_with(prefix))
            .count()
    }
}

/// The accepted side: sends a few messages to receivers that attach, accepts what it receives.
struct Peer {
    registry: Arc<Registry>,
    closes: Arc<AtomicUsize>,
    guard: Arc<Overlap>,
    sent: usize,
}

impl MessagingHandler for Peer {
    fn on_sendable(&mut self, s: &mut Sender<'_>) {
        let _g = self.guard.enter();
        while s.credit() > 0 && self.sent < 3 {
            let credit = s.credit();
            if let Err(e) = s.send(&Message::builder().body("from the peer").build()) {
                self.registry.error(format!(
                    "peer: on_sendable, credit {credit}, send failed: {e}"
                ));
                break;
            }
            self.sent += 1;
        }
    }
    fn on_message(&mut self, _d: &mut Delivery<'_>, _m: Message) {
        let _g = self.guard.enter();
    }
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let _g = self.guard.enter();
        self.closes.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct Peers {
    registry: Arc<Registry>,
    overlaps: Arc<Mutex<Vec<Arc<Overlap>>>>,
    closed: Arc<AtomicUsize>,
}

impl Peers {
    fn new(registry: Arc<Registry>) -> Peers {
        Peers {
            registry,
            overlaps: Arc::default(),
            closed: Arc::default(),
        }
    }
}

impl ListenHandler for Peers {
    type Handler = Peer;
    fn on_accept(&self, peer: SocketAddr) -> Peer {
        let guard = Arc::new(Overlap::default());
        self.overlaps.lock().unwrap().push(guard.clone());
        Peer {
            registry: self.registry.clone(),
            closes: self.registry.counter(format!("accepted from {peer}")),
            guard,
            sent: 0,
        }
    }
    fn on_close(&self) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Debug, PartialEq)]
enum ClientEvent {
    Opened(usize),
    /// All its links are open at both ends.
    Ready(usize),
    Closed(usize),
}

/// A client that opens a sender and a receiver when the connection opens; a third link is opened by a work
/// item from a foreign thread. It sends a few messages.
struct Client {
    id: usize,
    registry: Arc<Registry>,
    closes: Arc<AtomicUsize>,
    events: mpsc::Sender<ClientEvent>,
    guard: Arc<Overlap>,
    links_open: usize,
    sent: usize,
}

const LINKS: usize = 3;

impl MessagingHandler for Client {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        let _g = self.guard.enter();
        let _ = self.events.send(ClientEvent::Opened(self.id));
        if let Err(e) = c.open_sender(&format!("q{}", self.id), SenderOptions::default()) {
            self.registry
                .error(format!("client {}: open_sender: {e}", self.id));
        }
        if let Err(e) = c.open_receiver(&format!("r{}", self.id), ReceiverOptions::default()) {
            self.registry
                .error(format!("client {}: open_receiver: {e}", self.id));
        }
    }
    fn on_sender_open(&mut self, _s: &mut Sender<'_>) {
        let _g = self.guard.enter();
        self.link_opened();
    }
    fn on_receiver_open(&mut self, _r: &mut Receiver<'_>) {
        let _g = self.guard.enter();
        self.link_opened();
    }
    fn on_sendable(&mut self, s: &mut Sender<'_>) {
        let _g = self.guard.enter();
        while s.credit() > 0 && self.sent < 5 {
            let credit = s.credit();
            if let Err(e) = s.send(&Message::builder().body(self.id as i64).build()) {
                self.registry.error(format!(
                    "client {}: on_sendable, credit {credit}, send failed: {e}",
                    self.id
                ));
                break;
            }
            self.sent += 1;
        }
    }
    fn on_message(&mut self, _d: &mut Delivery<'_>, _m: Message) {
        let _g = self.guard.enter();
    }
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let _g = self.guard.enter();
        self.closes.fetch_add(1, Ordering::SeqCst);
        let _ = self.events.send(ClientEvent::Closed(self.id));
    }
}

impl Client {
    fn new(id: usize, registry: &Arc<Registry>, events: mpsc::Sender<ClientEvent>) -> Client {
        Client {
            id,
            registry: registry.clone(),
            closes: registry.counter(format!("client {id}")),
            events,
            guard: Arc::default(),
            links_open: 0,
            sent: 0,
        }
    }

    fn link_opened(&mut self) {
        self.links_open += 1;
        if self.links_open == LINKS {
            let _ = self.events.send(ClientEvent::Ready(self.id));
        }
    }
}

/// A work item, added from a foreign thread, that opens a sender on the connection.
fn open_sender_from_work(conn: &ConnectionHandle<Client>, name: String) -> Result<(), Error> {
    conn.work_queue().add(move |h: &mut Client, c| {
        let _g = h.guard.enter();
        if let Err(e) = c.open_sender(&name, SenderOptions::default()) {
            h.registry
                .error(format!("client {}: open_sender from work: {e}", h.id));
        }
    })
}

#[test]
fn container_is_thread_safe_while_running_and_stop_from_a_foreign_thread_ends_run() {
    const PER_THREAD: usize = 4;
    let container = Container::builder().id("threadsafe").threads(4).build();
    let handle = container.handle();
    let registry = Arc::new(Registry::default());
    let peers = Peers::new(registry.clone());
    let main_listener = handle
        .listen("127.0.0.1:0", peers.clone())
        .expect("listens");
    let main_port = main_listener.port();
    // Proof that `run` is active: the container runs scheduled work only then.
    let (running_tx, running_rx) = mpsc::channel();
    handle
        .schedule(Duration::ZERO, move || {
            let _ = running_tx.send(());
        })
        .expect("schedules");
    let dog = Watchdog::new(vec![handle.clone()], LIMIT);
    let h = handle.clone();
    let reg = registry.clone();
    let p = peers.clone();
    let coordinator = thread::spawn(move || {
        let _stop = StopOnPanic(vec![h.clone()]);
        recv(&running_rx, WAIT, "run starts");
        let start = Arc::new(Barrier::new(THREADS));
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let (h, reg, p, start) = (h.clone(), reg.clone(), p.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    let own = h.listen("127.0.0.1:0", p).expect("listens from a thread");
                    let (ev_tx, ev_rx) = mpsc::channel();
                    let mut conns = Vec::new();
                    for j in 0..PER_THREAD {
                        let id = t * PER_THREAD + j;
                        let port = if j % 2 == 0 { main_port } else { own.port() };
                        let conn = h
                            .connect(
                                &format!("amqp://127.0.0.1:{port}"),
                                ConnectionOptions::default(),
                                Client::new(id, &reg, ev_tx.clone()),
                            )
                            .expect("connects from a thread");
                        // A third link, opened from this thread right away, through the work queue.
                        open_sender_from_work(&conn, format!("wq{id}"))
                            .expect("work is queued on a connection not yet finished");
                        conns.push(conn);
                    }
                    let (sched_tx, sched_rx) = mpsc::channel();
                    h.schedule(Duration::from_millis(1), move || {
                        let _ = sched_tx.send(thread::current().id());
                    })
                    .expect("schedules from a thread");
                    let mut ready = 0;
                    while ready < PER_THREAD {
                        match recv(&ev_rx, WAIT, "every link opens") {
                            ClientEvent::Ready(_) => ready += 1,
                            ClientEvent::Opened(_) => {}
                            e @ ClientEvent::Closed(_) => panic!("closed before ready: {e:?}"),
                        }
                    }
                    let scheduled_on = recv(&sched_rx, WAIT, "scheduled work runs");
                    assert_ne!(scheduled_on, thread::current().id());
                    (own, conns, ev_rx)
                })
            })
            .collect();
        let results: Vec<_> = workers
            .into_iter()
            .map(|w| w.join().expect("worker thread"))
            .collect();
        // Everything is open and running: stop, from this thread.
        h.stop();
        results
    });
    container.run().expect("run returns after stop");
    assert!(!dog.disarm(), "the watchdog had to stop the container");
    let results = coordinator.join();
    assert_eq!(registry.errors(), Vec::<String>::new());
    let results = results.expect("coordinator thread");

    // Every connection, both ends, got exactly one on_transport_close.
    assert_eq!(registry.count("client"), THREADS * PER_THREAD);
    assert_eq!(registry.count("accepted"), THREADS * PER_THREAD);
    assert_eq!(registry.not_closed_once(), Vec::<(String, usize)>::new());
    assert_eq!(
        peers.closed.load(Ordering::SeqCst),
        THREADS + 1,
        "every listener stopped"
    );
    for g in peers.overlaps.lock().unwrap().iter() {
        assert_eq!(g.violations(), 0);
    }
    for (_own, conns, ev_rx) in &results {
        let closed = ev_rx
            .try_iter()
            .filter(|e| matches!(e, ClientEvent::Closed(_)))
            .count();
        assert_eq!(closed, conns.len(), "every client reported its close");
        for c in conns {
            assert!(c.is_finished());
            assert_eq!(c.work_queue().add(|_, _| {}), Err(Error::ConnectionClosed));
            c.wake(); // a no-op, and no panic
        }
    }
    // After stop, the container takes nothing new.
    assert!(handle.is_stopping());
    let url = format!("amqp://127.0.0.1:{main_port}");
    let (tx, _rx) = mpsc::channel();
    assert_eq!(
        handle
            .connect(
                &url,
                ConnectionOptions::default(),
                Client::new(999, &registry, tx)
            )
            .err(),
        Some(Error::ContainerStopping)
    );
    assert_eq!(
        handle.listen("127.0.0.1:0", peers.clone()).err(),
        Some(Error::ContainerStopping)
    );
    assert_eq!(
        handle.schedule(Duration::ZERO, || {}),
        Err(Error::ContainerStopping)
    );
}

#[test]
fn stop_racing_with_connects_from_eight_threads_closes_every_connection_once() {
    // Eight threads keep connecting while a ninth calls stop(): each waits only for its latest connection to
    // open (or close) before the next connect, so stop finds connections connecting, mid-handshake and open.
    // Every connect that returned Ok must end with exactly one on_transport_close, and every thread must
    // then be refused with ContainerStopping.
    const MAX_PER_THREAD: usize = 500;
    const OPENED_BEFORE_STOP: usize = 40;
    let container = Container::builder().id("stop-race").threads(4).build();
    let handle = container.handle();
    let registry = Arc::new(Registry::default());
    let peers = Peers::new(registry.clone());
    let listener = handle
        .listen("127.0.0.1:0", peers.clone())
        .expect("listens");
    let url = format!("amqp://127.0.0.1:{}", listener.port());
    let dog = Watchdog::new(vec![handle.clone()], LIMIT);
    let h = handle.clone();
    let reg = registry.clone();
    let coordinator = thread::spawn(move || {
        let _stop = StopOnPanic(vec![h.clone()]);
        let start = Arc::new(Barrier::new(THREADS + 1));
        let (opened_tx, opened_rx) = mpsc::channel();
        let connectors: Vec<_> = (0..THREADS)
            .map(|t| {
                let (h, reg, start, url, opened_tx) = (
                    h.clone(),
                    reg.clone(),
                    start.clone(),
                    url.clone(),
                    opened_tx.clone(),
                );
                thread::spawn(move || {
                    let (ev_tx, ev_rx) = mpsc::channel();
                    let mut events = Vec::new();
                    let mut connected = 0;
                    start.wait();
                    for j in 0..MAX_PER_THREAD {
                        let id = t * MAX_PER_THREAD + j;
                        let client = Client::new(id, &reg, ev_tx.clone());
                        let closes = client.closes.clone();
                        if let Err(e) = h.connect(&url, ConnectionOptions::default(), client) {
                            assert_eq!(e, Error::ContainerStopping);
                            reg.forget(&closes);
                            return (connected, true, events, ev_rx);
                        }
                        connected += 1;
                        loop {
                            let e = recv(&ev_rx, WAIT, "the connection opens or closes");
                            let latest = matches!(e,
                                ClientEvent::Opened(i) | ClientEvent::Closed(i) if i == id);
                            if let ClientEvent::Opened(_) = e {
                                let _ = opened_tx.send(());
                            }
                            events.push(e);
                            if latest {
                                break;
                            }
                        }
                    }
                    (connected, false, events, ev_rx)
                })
            })
            .collect();
        start.wait();
        for _ in 0..OPENED_BEFORE_STOP {
            recv(&opened_rx, WAIT, "connections open");
        }
        h.stop();
        connectors
            .into_iter()
            .map(|c| c.join().expect("connector thread"))
            .collect::<Vec<_>>()
    });
    container.run().expect("run returns after stop");
    assert!(!dog.disarm(), "the watchdog had to stop the container");
    let outcomes = coordinator.join().expect("coordinator thread");
    let connected: usize = outcomes.iter().map(|o| o.0).sum();
    assert!(
        outcomes.iter().all(|o| o.1),
        "every thread was refused with ContainerStopping in the end"
    );
    assert!(connected >= OPENED_BEFORE_STOP);
    assert_eq!(registry.count("client"), connected);
    assert_eq!(registry.not_closed_once(), Vec::<(String, usize)>::new());
    let closed: usize = outcomes
        .into_iter()
        .map(|(_, _, events, rx)| {
            events
                .into_iter()
                .chain(rx.try_iter())
                .filter(|e| matches!(e, ClientEvent::Closed(_)))
                .count()
        })
        .sum();
    assert_eq!(
        closed, connected,
        "every connection that connect returned got closed"
    );
    eprintln!(
        "{connected} connections made, {} accepted, before stop() refused more; {} callbacks found \
         their connection already closing",
        registry.count("accepted"),
        registry.errors().len()
    );
}

/// A client that closes its connection as soon as it is open.
struct CloseAtOnce {
    events: mpsc::Sender<ClientEvent>,
}

impl MessagingHandler for CloseAtOnce {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        let _ = self.events.send(ClientEvent::Opened(0));
        c.close();
    }
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let _ = self.events.send(ClientEvent::Closed(0));
    }
}

#[test]
fn the_handle_works_before_run() {
    // Calls made before `run` queue up and take effect once it runs.
    const SCHEDULED: usize = 100;
    let container = Container::builder().id("before-run").threads(2).build();
    let handle = container.handle();
    let peers = Peers::new(Arc::default());
    let listener = handle
        .listen("127.0.0.1:0", peers.clone())
        .expect("listens");
    let (ev_tx, ev_rx) = mpsc::channel();
    handle
        .connect(
            &format!("amqp://127.0.0.1:{}", listener.port()),
            ConnectionOptions::default(),
            CloseAtOnce { events: ev_tx },
        )
        .expect("connects");
    let (sched_tx, sched_rx) = mpsc::channel();
    let refused: Vec<_> = (0..SCHEDULED)
        .filter_map(|i| {
            let tx = sched_tx.clone();
            handle
                .schedule(Duration::ZERO, move || {
                    let _ = tx.send(i);
                })
                .err()
        })
        .collect();
    let dog = Watchdog::new(vec![handle.clone()], LIMIT);
    let h = handle.clone();
    let checker = thread::spawn(move || {
        let _stop = StopOnPanic(vec![h]);
        let ran: Vec<usize> = (0..SCHEDULED - refused.len())
            .map(|_| recv(&sched_rx, WAIT, "scheduled work runs"))
            .collect();
        assert_eq!(recv(&ev_rx, WAIT, "opens"), ClientEvent::Opened(0));
        assert_eq!(recv(&ev_rx, WAIT, "closes"), ClientEvent::Closed(0));
        listener.stop();
        (refused, ran)
    });
    container.run().expect("the container runs until auto-stop");
    assert!(!dog.disarm(), "the watchdog had to stop the container");
    let (refused, ran) = checker.join().expect("checker thread");
    assert_eq!(refused, Vec::new(), "schedule refused before run");
    // Work scheduled with the same delay may run in any order.
    let mut ran = ran;
    ran.sort_unstable();
    assert_eq!(ran, (0..SCHEDULED).collect::<Vec<_>>());
}

#[test]
fn stop_before_run_makes_run_return() {
    let container = Container::builder().id("stop-first").threads(2).build();
    let handle = container.handle();
    let dog = Watchdog::new(vec![handle.clone()], LIMIT);
    handle.stop();
    container.run().expect("run returns");
    assert!(!dog.disarm(), "the watchdog had to stop the container");
    assert_eq!(
        handle
            .listen("127.0.0.1:0", Peers::new(Arc::default()))
            .err(),
        Some(Error::ContainerStopping)
    );
}

#[test]
fn auto_stop_stops_after_the_last_connection_and_listener() {
    let container = Container::builder().id("auto-stop").threads(2).build();
    let handle = container.handle();
    let peers = Peers::new(Arc::default());
    let listener = handle
        .listen("127.0.0.1:0", peers.clone())
        .expect("listens");
    let url = format!("amqp://127.0.0.1:{}", listener.port());
    let (ev_tx, ev_rx) = mpsc::channel();
    handle
        .connect(
            &url,
            ConnectionOptions::default(),
            CloseAtOnce {
                events: ev_tx.clone(),
            },
        )
        .expect("connects");
    let dog = Watchdog::new(vec![handle.clone()], LIMIT);
    let h = handle.clone();
    let checker = thread::spawn(move || {
        let _stop = StopOnPanic(vec![h.clone()]);
        assert_eq!(recv(&ev_rx, WAIT, "opens"), ClientEvent::Opened(0));
        assert_eq!(recv(&ev_rx, WAIT, "closes"), ClientEvent::Closed(0));
        // The last connection is gone but the listener is not: the container still runs and connects.
        assert!(!h.is_stopping());
        h.connect(
            &url,
            ConnectionOptions::default(),
            CloseAtOnce { events: ev_tx },
        )
        .expect("connects while the listener lives");
        assert_eq!(recv(&ev_rx, WAIT, "opens again"), ClientEvent::Opened(0));
        assert_eq!(recv(&ev_rx, WAIT, "closes again"), ClientEvent::Closed(0));
        // Now the listener goes too; nobody calls stop().
        listener.stop();
    });
    container.run().expect("run returns by itself");
    assert!(!dog.disarm(), "the container did not stop by itself");
    checker.join().expect("checker thread");
    assert!(handle.is_stopping());
    assert_eq!(peers.closed.load(Ordering::SeqCst), 1);
    assert_eq!(
        handle.schedule(Duration::ZERO, || {}),
        Err(Error::ContainerStopping)
    );
}

#[test]
fn without_auto_stop_the_container_runs_until_stop() {
    let container = Container::builder()
        .id("no-auto-stop")
        .threads(2)
        .auto_stop(false)
        .build();
    let handle = container.handle();
    let peers = Peers::new(Arc::default());
    let listener = handle
        .listen("127.0.0.1:0", peers.clone())
        .expect("listens");
    let url = format!("amqp://127.0.0.1:{}", listener.port());
    let (ev_tx, ev_rx) = mpsc::channel();
    handle
        .connect(
            &url,
            ConnectionOptions::default(),
            CloseAtOnce {
                events: ev_tx.clone(),
            },
        )
        .expect("connects");
    let dog = Watchdog::new(vec![handle.clone()], LIMIT);
    let h = handle.clone();
    let p = peers.clone();
    let checker = thread::spawn(move || {
        let _stop = StopOnPanic(vec![h.clone()]);
        assert_eq!(recv(&ev_rx, WAIT, "opens"), ClientEvent::Opened(0));
        assert_eq!(recv(&ev_rx, WAIT, "closes"), ClientEvent::Closed(0));
        listener.stop();
        let deadline = Instant::now() + WAIT;
        while p.closed.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the listener does not stop");
            thread::yield_now();
        }
        // No connection and no listener left. Where auto_stop would have stopped the container by now, this
        // one still runs scheduled work a while later, and still connects.
        let (tx, rx) = mpsc::channel();
        h.schedule(Duration::from_millis(300), move || {
            let _ = tx.send(());
        })
        .expect("schedules");
        recv(&rx, WAIT, "scheduled work runs later");
        assert!(!h.is_stopping());
        let again = h.listen("127.0.0.1:0", p.clone()).expect("listens again");
        h.connect(
            &format!("amqp://127.0.0.1:{}", again.port()),
            ConnectionOptions::default(),
            CloseAtOnce { events: ev_tx },
        )
        .expect("connects again");
        assert_eq!(recv(&ev_rx, WAIT, "opens again"), ClientEvent::Opened(0));
        assert_eq!(recv(&ev_rx, WAIT, "closes again"), ClientEvent::Closed(0));
        again.stop();
        // Only stop() ends it, here from a foreign thread.
        h.stop();
    });
    container.run().expect("run returns after stop");
    assert!(!dog.disarm(), "the watchdog had to stop the container");
    checker.join().expect("checker thread");
    assert_eq!(peers.closed.load(Ordering::SeqCst), 2);
}
