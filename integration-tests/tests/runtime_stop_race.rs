//! `connect()` racing `stop()` or `auto_stop`, and an accept racing `stop()` (ARCHITECTURE §5, "the
//! container is one actor"): whatever the interleaving, a connection either runs to `on_transport_close`
//! or its `connect` returns an error (an accepted one: or its handler is never made), and `run()` returns.
//! Driven by a barrier over many iterations, each on a fresh container.

mod support;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use nucleon::{
    Connection, ConnectionOptions, ContainerBuilder, ContainerHandle, Error, ListenHandler,
    MessagingHandler,
};
use support::{recv, spawn_container};

const WAIT: Duration = Duration::from_secs(20);
const ITERATIONS: usize = 60;

#[derive(Debug, PartialEq)]
enum Fate {
    TransportClosed,
    DroppedWithoutClose,
}

/// Reports `on_transport_close`, or being dropped without it.
struct Probe {
    closed: bool,
    fate: mpsc::Sender<Fate>,
}

impl MessagingHandler for Probe {
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        self.closed = true;
        let _ = self.fate.send(Fate::TransportClosed);
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        if !self.closed {
            let _ = self.fate.send(Fate::DroppedWithoutClose);
        }
    }
}

/// A loopback port with nothing listening: a connection to it fails at once and closes its transport.
fn dead_url() -> String {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    format!("amqp://127.0.0.1:{port}")
}

/// Connects once `barrier` lets it, and checks the connection's fate: an error from `connect`, or its
/// handler's `on_transport_close`. Returns whether `connect` succeeded.
fn connect_at(container: ContainerHandle, barrier: Arc<Barrier>, url: String) -> bool {
    let (fate_tx, fate) = mpsc::channel();
    barrier.wait();
    let result = container.connect(
        &url,
        ConnectionOptions::default(),
        Probe {
            closed: false,
            fate: fate_tx,
        },
    );
    match result {
        Err(e) => {
            assert_eq!(e, Error::ContainerStopping);
            false
        }
        Ok(conn) => {
            assert_eq!(
                recv(&fate, WAIT, "an accepted connection's fate"),
                Fate::TransportClosed,
                "connect returned Ok, so the connection must run to on_transport_close"
            );
            // The handle sees it finished.
            let (tx, rx) = mpsc::channel();
            thread::spawn(move || {
                let _ = tx.send(futures::executor::block_on(conn.opened()));
            });
            assert_eq!(
                recv(&rx, WAIT, "opened() resolves"),
                Err(Error::ConnectionClosed)
            );
            true
        }
    }
}

#[test]
fn connect_racing_stop_either_fails_or_runs_to_transport_close() {
    let url = dead_url();
    let mut accepted = 0;
    for _ in 0..ITERATIONS {
        let (container, done, _t) =
            spawn_container(ContainerBuilder::default().threads(1).auto_stop(false));
        let barrier = Arc::new(Barrier::new(2));
        let connecting = {
            let (c, b, u) = (container.clone(), barrier.clone(), url.clone());
            thread::spawn(move || connect_at(c, b, u))
        };
        barrier.wait();
        container.stop();
        accepted += usize::from(connecting.join().expect("the connecting thread"));
        recv(&done, WAIT, "run() returns after stop()").expect("the container ran");
    }
    eprintln!("{accepted} of {ITERATIONS} racing connects were accepted");
}

#[test]
fn connect_racing_auto_stop_either_fails_or_runs_to_transport_close() {
    let url = dead_url();
    let mut accepted = 0;
    for _ in 0..ITERATIONS {
        let (container, done, _t) =
            spawn_container(ContainerBuilder::default().threads(1).auto_stop(true));
        // Two connections fail at once; once both are gone auto_stop ends the container, which races the
        // second thread connecting again.
        let barrier = Arc::new(Barrier::new(2));
        let first = {
            let (c, b, u) = (container.clone(), barrier.clone(), url.clone());
            thread::spawn(move || connect_at(c, b, u))
        };
        let second = {
            let (c, b, u) = (container.clone(), barrier, url.clone());
            thread::spawn(move || {
                connect_at(c.clone(), b.clone(), u.clone());
                // Connect again right as the first ones finish.
                let again = Arc::new(Barrier::new(1));
                connect_at(c, again, u)
            })
        };
        accepted += usize::from(first.join().expect("the first connecting thread"));
        accepted += usize::from(second.join().expect("the racing thread"));
        recv(&done, WAIT, "auto_stop makes run() return").expect("the container ran");
    }
    eprintln!(
        "{accepted} of {} connects racing auto_stop were accepted",
        2 * ITERATIONS
    );
}

/// Makes a `Probe` per accepted connection, counting them (and telling `accepted`).
struct Probes {
    made: Arc<AtomicUsize>,
    accepted: mpsc::Sender<()>,
    fate: mpsc::Sender<Fate>,
}

impl ListenHandler for Probes {
    type Handler = Probe;
    fn on_accept(&self, _peer: SocketAddr) -> Probe {
        self.made.fetch_add(1, Ordering::SeqCst);
        let _ = self.accepted.send(());
        Probe {
            closed: false,
            fate: self.fate.clone(),
        }
    }
}

#[test]
fn an_accept_racing_stop_runs_its_handler_to_transport_close() {
    let mut made_total = 0;
    for _ in 0..ITERATIONS {
        let (container, done, _t) =
            spawn_container(ContainerBuilder::default().threads(1).auto_stop(false));
        let made = Arc::new(AtomicUsize::new(0));
        let (fate_tx, fate) = mpsc::channel();
        let listener = container
            .listen(
                "127.0.0.1:0",
                Probes {
                    made: made.clone(),
                    accepted: mpsc::channel().0,
                    fate: fate_tx,
                },
            )
            .expect("listens");
        let barrier = Arc::new(Barrier::new(2));
        let stopper = {
            let (c, b) = (container.clone(), barrier.clone());
            thread::spawn(move || {
                b.wait();
                c.stop();
            })
        };
        // The listener accepts these while the stop is on its way. Each client hangs up at once (refused
        // once the listener has stopped), so its server connection ends without waiting for a `close`.
        for i in 0..3 {
            if i == 1 {
                barrier.wait();
            }
            drop(TcpStream::connect(("127.0.0.1", listener.port())));
        }
        stopper.join().expect("the stopping thread");
        recv(&done, WAIT, "run() returns after stop()").expect("the container ran");
        // Every handler that was made saw its transport close; none was dropped without it.
        for _ in 0..made.load(Ordering::SeqCst) {
            assert_eq!(
                recv(&fate, WAIT, "an accepted connection's fate"),
                Fate::TransportClosed
            );
        }
        made_total += made.load(Ordering::SeqCst);
    }
    eprintln!("{made_total} of {ITERATIONS} racing accepts made a handler");
}

#[test]
fn stop_returns_when_a_peer_never_answers_close() {
    let (container, done, _t) = spawn_container(ContainerBuilder::default().auto_stop(false));
    let (accepted_tx, accepted) = mpsc::channel();
    let (fate_tx, fate) = mpsc::channel();
    let listener = container
        .listen(
            "127.0.0.1:0",
            Probes {
                made: Arc::new(AtomicUsize::new(0)),
                accepted: accepted_tx,
                fate: fate_tx,
            },
        )
        .expect("listens");
    // A peer that connects and then says nothing, and never closes its socket.
    let _silent = TcpStream::connect(("127.0.0.1", listener.port())).expect("connects");
    recv(&accepted, WAIT, "the connection is accepted");
    // stop() closes it; the peer never answers, so the close times out (5 s) and the transport closes.
    container.stop();
    assert_eq!(
        recv(&fate, WAIT, "the connection's fate"),
        Fate::TransportClosed
    );
    recv(&done, WAIT, "run() returns after stop()").expect("the container ran");
}
