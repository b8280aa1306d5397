//! Blocking (issue 12 item 8): a callback that blocks stalls every connection on its worker, so blocking
//! work goes through `WorkQueue::run_blocking`, which runs it off the worker and brings its result back
//! through the work queue. Here every connection shares one worker: while one connection's blocking job
//! waits, another connection's work still runs; then the job's result reaches its own connection.

mod support;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use nucleon::{
    Connection, ConnectionHandle, ConnectionOptions, ContainerBuilder, ContainerHandle,
    ListenHandler, MessagingHandler,
};
use support::{recv, spawn_container};

const WAIT: Duration = Duration::from_secs(20);

/// Remembers the result its blocking job brought back.
#[derive(Default)]
struct Client {
    result: Option<u32>,
}

impl MessagingHandler for Client {}

struct Nop;

impl MessagingHandler for Nop {}

impl ListenHandler for Nop {
    type Handler = Nop;
    fn on_accept(&self, _peer: SocketAddr) -> Nop {
        Nop
    }
}

fn connect(container: &ContainerHandle, port: u16) -> ConnectionHandle<Client> {
    container
        .connect(
            &format!("amqp://127.0.0.1:{port}"),
            ConnectionOptions::default(),
            Client::default(),
        )
        .expect("connects")
}

#[test]
fn a_blocking_job_leaves_its_worker_to_the_other_connections() {
    // One worker thread: both connections (and the server's) live on it.
    let (container, done, _t) =
        spawn_container(ContainerBuilder::default().threads(1).auto_stop(false));
    let listener = container.listen("127.0.0.1:0", Nop).expect("listens");
    let a = connect(&container, listener.port());
    let b = connect(&container, listener.port());

    let (started_tx, started) = mpsc::channel();
    let (release, release_rx) = mpsc::channel::<u32>();
    let (back_tx, back) = mpsc::channel();
    // Started from A's own context, as a callback would (on the worker's runtime).
    let queue = a.work_queue();
    a.work_queue()
        .add(move |_, _| {
            queue
                .run_blocking(
                    move || {
                        let _ = started_tx.send(());
                        release_rx.recv_timeout(WAIT).unwrap_or(0)
                    },
                    move |h: &mut Client, _c: &mut Connection<'_>, n| {
                        h.result = Some(n);
                        let _ = back_tx.send(n);
                    },
                )
                .expect("the job starts");
        })
        .expect("queued");
    recv(&started, WAIT, "the blocking job starts");

    // While A's job blocks, B's work runs on the shared worker.
    let (b_ran_tx, b_ran) = mpsc::channel();
    b.work_queue()
        .add(move |_, _| {
            let _ = b_ran_tx.send(());
        })
        .expect("queued");
    recv(
        &b_ran,
        WAIT,
        "another connection's work runs while the job blocks",
    );

    // The job's result comes back to A, in A's context.
    release.send(7).expect("the job waits");
    assert_eq!(recv(&back, WAIT, "the result comes back"), 7);
    let (seen_tx, seen) = mpsc::channel();
    a.work_queue()
        .add(move |h, _| {
            let _ = seen_tx.send(h.result);
        })
        .expect("queued");
    assert_eq!(recv(&seen, WAIT, "A's handler kept it"), Some(7));

    container.stop();
    recv(&done, WAIT, "run() returns").expect("the container ran");
}
