//! One panic guard around every piece of user code (ARCHITECTURE §1, §5): a panic in a `ListenHandler`
//! callback, in the handler factory of `connect_with_queue`, or in a `ContainerHandle::schedule` closure
//! is logged and ends at most its own connection (or listener); the container goes on taking work, and
//! `stop()` (or `auto_stop`) still makes `run()` return.

mod support;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use nucleon::{
    Connection, ConnectionHandle, ConnectionOptions, ContainerBuilder, Error, ListenHandler,
    MessagingHandler,
};
use support::{recv, spawn_container};

const WAIT: Duration = Duration::from_secs(20);

/// Waits (within `WAIT`) for `conn.opened()` to resolve.
fn opened(conn: &ConnectionHandle<Closes>) -> Result<(), Error> {
    let (tx, rx) = mpsc::channel();
    let conn = conn.clone();
    std::thread::spawn(move || {
        let _ = tx.send(futures::executor::block_on(conn.opened()));
    });
    recv(&rx, WAIT, "opened() resolves")
}

/// Reports its transport closing.
struct Closes(mpsc::Sender<()>);

impl MessagingHandler for Closes {
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let _ = self.0.send(());
    }
}

/// A listener whose `on_accept` panics for the first connection, then makes `Closes` handlers.
struct PanicOnFirstAccept {
    accepted: std::sync::atomic::AtomicUsize,
    closes: mpsc::Sender<()>,
}

impl ListenHandler for PanicOnFirstAccept {
    type Handler = Closes;
    fn on_accept(&self, _peer: SocketAddr) -> Closes {
        let n = self
            .accepted
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert!(n > 0, "on_accept was asked to panic");
        Closes(self.closes.clone())
    }
}

#[test]
fn a_panic_in_on_accept_closes_that_connection_and_stop_still_returns() {
    let (server, server_done, _t) = spawn_container(ContainerBuilder::default().auto_stop(false));
    let (server_closes, server_closed) = mpsc::channel();
    let listener = server
        .listen(
            "127.0.0.1:0",
            PanicOnFirstAccept {
                accepted: 0.into(),
                closes: server_closes,
            },
        )
        .expect("listens");
    let (client, client_done, _c) = spawn_container(ContainerBuilder::default().auto_stop(false));
    let url = format!("amqp://127.0.0.1:{}", listener.port());

    // The first client's server side panicked in on_accept: its socket is closed, the client sees that.
    let (first_tx, first_closed) = mpsc::channel();
    client
        .connect(&url, ConnectionOptions::default(), Closes(first_tx))
        .expect("connects");
    recv(&first_closed, WAIT, "the first client's transport closes");

    // The listener goes on: a second client gets a working connection.
    let (second_tx, second_closed) = mpsc::channel();
    let second = client
        .connect(&url, ConnectionOptions::default(), Closes(second_tx))
        .expect("connects");
    opened(&second).expect("the second connection opens");

    server.stop();
    recv(
        &server_done,
        WAIT,
        "the server's run() returns after stop()",
    )
    .expect("server ran");
    recv(&server_closed, WAIT, "the second server connection closes");
    recv(&second_closed, WAIT, "the second client's transport closes");
    client.stop();
    recv(&client_done, WAIT, "the client's run() returns").expect("client ran");
}

#[test]
fn a_panic_in_the_connect_with_queue_factory_finishes_that_connection() {
    let (server, server_done, _t) = spawn_container(ContainerBuilder::default().auto_stop(false));
    let (server_closes, _server_closed) = mpsc::channel();
    let listener = server
        .listen(
            "127.0.0.1:0",
            PanicOnFirstAccept {
                accepted: 1.into(),
                closes: server_closes,
            },
        )
        .expect("listens");
    let url = format!("amqp://127.0.0.1:{}", listener.port());

    // With auto_stop, the container's only connection failing in its factory ends the container.
    let (client, client_done, _c) = spawn_container(ContainerBuilder::default().auto_stop(true));
    let conn = client
        .connect_with_queue(&url, ConnectionOptions::default(), |_| -> Closes {
            panic!("the factory was asked to panic")
        })
        .expect("connect returns before the factory runs");
    assert_eq!(opened(&conn), Err(Error::ConnectionClosed));
    assert!(conn.is_finished());
    assert_eq!(
        conn.work_queue().add(|_, _| {}),
        Err(Error::ConnectionClosed)
    );
    recv(&client_done, WAIT, "auto_stop makes run() return").expect("client ran");

    server.stop();
    recv(&server_done, WAIT, "the server's run() returns").expect("server ran");
}

#[test]
fn a_panic_in_a_scheduled_closure_leaves_the_container_running() {
    let (container, done, _t) = spawn_container(ContainerBuilder::default().auto_stop(false));
    container
        .schedule(Duration::ZERO, || panic!("the closure was asked to panic"))
        .expect("scheduled");
    let (ran_tx, ran) = mpsc::channel();
    // Scheduled after the panicking one with the same delay, so it runs after it.
    container
        .schedule(Duration::ZERO, move || {
            let _ = ran_tx.send(());
        })
        .expect("the container still takes work");
    recv(&ran, WAIT, "the next scheduled closure runs");
    container.stop();
    recv(&done, WAIT, "run() returns after stop()").expect("the container ran");
}
