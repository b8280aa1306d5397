//! Parallelism (ARCHITECTURE §1 rule 1, second half): callbacks of different connections run at the same
//! time, on different worker threads. Each proof is a barrier that only opens if all its parties are inside
//! callbacks at once; it gives up after a timeout, so a runtime that serialized the connections fails the
//! test instead of hanging it.
//!
//! The listener lives in a second container, so that blocking the client container's workers in a barrier
//! cannot hold up the server side that the clients are waiting on.

mod support;

use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::thread::{self, ThreadId};
use std::time::Duration;

use nucleon::{Connection, ConnectionOptions, Container, ListenHandler, MessagingHandler};
use support::{recv, spawn_container, StopOnPanic, TimedBarrier, Watchdog};

const LIMIT: Duration = Duration::from_secs(90);
const WAIT: Duration = Duration::from_secs(20);
/// How long a barrier waits for the other parties.
const MEET: Duration = Duration::from_secs(10);

struct Nop;

impl MessagingHandler for Nop {}

impl ListenHandler for Nop {
    type Handler = Nop;
    fn on_accept(&self, _peer: SocketAddr) -> Nop {
        Nop
    }
}

/// What a callback saw at the barrier.
#[derive(Debug)]
struct Met {
    connection: usize,
    thread: ThreadId,
    all_there: bool,
}

/// Waits at the barrier inside `on_connection_open`, then closes the connection.
struct MeetOnOpen {
    id: usize,
    barrier: Arc<TimedBarrier>,
    met: mpsc::Sender<Met>,
}

impl MessagingHandler for MeetOnOpen {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        let all_there = self.barrier.wait(MEET);
        let _ = self.met.send(Met {
            connection: self.id,
            thread: thread::current().id(),
            all_there,
        });
        c.close();
    }
}

fn assert_met_in_parallel(met: &[Met], n: usize) {
    assert_eq!(met.len(), n);
    for m in met {
        assert!(
            m.all_there,
            "connection {} waited alone at the barrier: {met:?}",
            m.connection
        );
    }
    let mut threads: Vec<_> = met.iter().map(|m| m.thread).collect();
    threads.sort_by_key(|t| format!("{t:?}"));
    threads.dedup();
    assert_eq!(
        threads.len(),
        n,
        "one worker thread per connection: {met:?}"
    );
}

#[test]
fn events_of_different_connections_run_at_the_same_time_on_different_threads() {
    // Four connections on four workers (connections are spread round robin): all four are inside
    // on_connection_open at once.
    const N: usize = 4;
    let (server, server_done, server_thread) =
        spawn_container(Container::builder().id("parallel-server").threads(1));
    let listener = server.listen("127.0.0.1:0", Nop).expect("listens");
    let container = Container::builder()
        .id("parallel-clients")
        .threads(N)
        .build();
    let handle = container.handle();
    let barrier = Arc::new(TimedBarrier::new(N));
    let (met_tx, met_rx) = mpsc::channel();
    for id in 0..N {
        handle
            .connect(
                &format!("amqp://127.0.0.1:{}", listener.port()),
                ConnectionOptions::default(),
                MeetOnOpen {
                    id,
                    barrier: barrier.clone(),
                    met: met_tx.clone(),
                },
            )
            .expect("connects");
    }
    let dog = Watchdog::new(vec![handle.clone(), server.clone()], LIMIT);
    let stop = vec![handle.clone(), server.clone()];
    let checker = thread::spawn(move || {
        let _stop = StopOnPanic(stop);
        let met: Vec<Met> = (0..N)
            .map(|_| recv(&met_rx, WAIT, "every connection opens"))
            .collect();
        listener.stop();
        met
    });
    container
        .run()
        .expect("the client container runs until auto-stop");
    let met = checker.join().expect("checker thread");
    recv(&server_done, WAIT, "the server container stops by itself").expect("server runs");
    server_thread.join().expect("server thread");
    assert!(!dog.disarm(), "the watchdog had to stop the containers");
    assert_met_in_parallel(&met, N);
}

/// Waits at the barrier in a work item or in `on_connection_wake`.
struct MeetInWork {
    barrier: Arc<TimedBarrier>,
    met: mpsc::Sender<Met>,
    opened: mpsc::Sender<()>,
    id: usize,
}

impl MeetInWork {
    fn meet(&mut self) {
        let all_there = self.barrier.wait(MEET);
        let _ = self.met.send(Met {
            connection: self.id,
            thread: thread::current().id(),
            all_there,
        });
    }
}

impl MessagingHandler for MeetInWork {
    fn on_connection_open(&mut self, _c: &mut Connection<'_>) {
        let _ = self.opened.send(());
    }
    fn on_connection_wake(&mut self, _c: &mut Connection<'_>) {
        self.meet();
    }
}

#[test]
fn a_work_item_and_a_wake_of_different_connections_run_at_the_same_time() {
    let (server, server_done, server_thread) =
        spawn_container(Container::builder().id("parallel-work-server").threads(1));
    let listener = server.listen("127.0.0.1:0", Nop).expect("listens");
    let container = Container::builder().id("parallel-work").threads(2).build();
    let handle = container.handle();
    let barrier = Arc::new(TimedBarrier::new(2));
    let (met_tx, met_rx) = mpsc::channel();
    let (opened_tx, opened_rx) = mpsc::channel();
    let conns: Vec<_> = (0..2)
        .map(|id| {
            handle
                .connect(
                    &format!("amqp://127.0.0.1:{}", listener.port()),
                    ConnectionOptions::default(),
                    MeetInWork {
                        barrier: barrier.clone(),
                        met: met_tx.clone(),
                        opened: opened_tx.clone(),
                        id,
                    },
                )
                .expect("connects")
        })
        .collect();
    let dog = Watchdog::new(vec![handle.clone(), server.clone()], LIMIT);
    let stop = vec![handle.clone(), server.clone()];
    let checker = thread::spawn(move || {
        let _stop = StopOnPanic(stop);
        recv(&opened_rx, WAIT, "the first connection opens");
        recv(&opened_rx, WAIT, "the second connection opens");
        // From this foreign thread: a work item on one connection, a wake on the other.
        conns[0]
            .work_queue()
            .add(|h: &mut MeetInWork, _| h.meet())
            .expect("work is queued");
        conns[1].wake();
        let met: Vec<Met> = (0..2)
            .map(|_| recv(&met_rx, WAIT, "both callbacks reach the barrier"))
            .collect();
        for c in &conns {
            c.close().expect("close is queued");
        }
        listener.stop();
        met
    });
    container
        .run()
        .expect("the client container runs until auto-stop");
    let met = checker.join().expect("checker thread");
    recv(&server_done, WAIT, "the server container stops by itself").expect("server runs");
    server_thread.join().expect("server thread");
    assert!(!dog.disarm(), "the watchdog had to stop the containers");
    assert_met_in_parallel(&met, 2);
}
