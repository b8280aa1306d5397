//! Bounded work (issue 12 item 5): `WorkQueue::try_add` reports `WorkQueueFull` once `CAPACITY` items
//! wait, `WorkQueue::send` waits for room (pending while the queue is full, done once the connection has
//! run some), both free their room as items run, and both fail with `ConnectionClosed` once the connection
//! is finished. The unbounded `add` is not counted against the bound.

mod support;

use std::sync::mpsc;
use std::time::Duration;

use futures::FutureExt;
use nucleon::{
    Connection, ConnectionHandle, ConnectionOptions, ContainerBuilder, ContainerHandle, Error,
    MessagingHandler, WorkQueue,
};
use support::{recv, spawn_container};

const WAIT: Duration = Duration::from_secs(20);

struct Idle;

impl MessagingHandler for Idle {}

impl nucleon::ListenHandler for Idle {
    type Handler = Idle;
    fn on_accept(&self, _: std::net::SocketAddr) -> Idle {
        Idle
    }
}

/// A client connection to a listener of the same container.
fn connection(container: &ContainerHandle) -> ConnectionHandle<Idle> {
    let listener = container.listen("127.0.0.1:0", Idle).expect("listens");
    container
        .connect(
            &format!("amqp://127.0.0.1:{}", listener.port()),
            ConnectionOptions::default(),
            Idle,
        )
        .expect("connects")
}

/// Blocks the connection's thread in a work item (added unbounded) until the returned sender says go;
/// returns once the item is running.
fn block(queue: &WorkQueue<Idle>) -> mpsc::Sender<()> {
    let (running_tx, running) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    queue
        .add(move |_, _| {
            let _ = running_tx.send(());
            let _ = go_rx.recv_timeout(WAIT);
        })
        .expect("queued");
    recv(&running, WAIT, "the blocking item runs");
    go
}

/// Fills the bounded queue of a blocked connection: every `try_add` up to `CAPACITY` is taken.
fn fill(queue: &WorkQueue<Idle>, ran: &mpsc::Sender<()>) {
    for i in 0..WorkQueue::<Idle>::CAPACITY {
        let ran = ran.clone();
        queue
            .try_add(move |_, _: &mut Connection<'_>| {
                let _ = ran.send(());
            })
            .unwrap_or_else(|e| panic!("item {i} fits: {e}"));
    }
}

#[test]
fn try_add_reports_full_and_frees_room_as_work_runs() {
    let (container, done, _t) = spawn_container(ContainerBuilder::default().auto_stop(false));
    let conn = connection(&container);
    let queue = conn.work_queue();
    let go = block(&queue);
    let (ran_tx, ran) = mpsc::channel();
    fill(&queue, &ran_tx);
    assert_eq!(queue.try_add(|_, _| {}), Err(Error::WorkQueueFull));
    // The unbounded add still takes work.
    queue.add(|_, _| {}).expect("add is unbounded");

    go.send(()).expect("unblock");
    for _ in 0..WorkQueue::<Idle>::CAPACITY {
        recv(&ran, WAIT, "the queued items run");
    }
    // Every item that ran gave its room back (once it returned: an unbounded item behind them says so).
    let (after_tx, after) = mpsc::channel();
    queue
        .add(move |_, _| {
            let _ = after_tx.send(());
        })
        .expect("queued");
    recv(&after, WAIT, "the items before it have returned");
    fill(&queue, &ran_tx);
    container.stop();
    recv(&done, WAIT, "run() returns").expect("the container ran");
}

#[test]
fn send_waits_for_room() {
    let (container, done, _t) = spawn_container(ContainerBuilder::default().auto_stop(false));
    let conn = connection(&container);
    let queue = conn.work_queue();
    let go = block(&queue);
    let (ran_tx, ran) = mpsc::channel();
    fill(&queue, &ran_tx);
    // Full: a send cannot complete now (polled once, then dropped without queueing anything).
    assert!(queue.send(|_, _| {}).now_or_never().is_none());

    // Once the connection runs, there is room again and the send completes; its item runs after the rest.
    let waiter = {
        let (queue, ran_tx) = (queue.clone(), ran_tx.clone());
        std::thread::spawn(move || {
            futures::executor::block_on(queue.send(move |_, _| {
                let _ = ran_tx.send(());
            }))
        })
    };
    go.send(()).expect("unblock");
    assert_eq!(waiter.join().expect("the waiting thread"), Ok(()));
    for _ in 0..=WorkQueue::<Idle>::CAPACITY {
        recv(&ran, WAIT, "the queued items and the sent one run");
    }

    container.stop();
    recv(&done, WAIT, "run() returns").expect("the container ran");
    let finished = futures::executor::block_on(queue.send(|_, _| {}));
    assert_eq!(finished, Err(Error::ConnectionClosed));
    assert_eq!(queue.try_add(|_, _| {}), Err(Error::ConnectionClosed));
}
