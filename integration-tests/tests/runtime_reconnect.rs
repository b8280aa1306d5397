//! Reconnect: a client with `ReconnectOptions` reaches its server through a failover URL, survives the server
//! being killed and restarted on the same port (its sender attached again, its `SenderId` still valid), and
//! does not retry after `amqp:unauthorized-access`; a wake that arrives between two transports is not lost.

use std::net::TcpListener;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nucleon::protocol::engine::PlainAuthenticator;
use nucleon::{
    Connection, ConnectionHandle, ConnectionOptions, Container, ContainerHandle, Delivery,
    ListenHandler, ListenOptions, Message, MessagingHandler, ReconnectOptions, Sender, SenderId,
    SenderOptions,
};

use nucleon_integration_tests::client::threaded_server;

const WAIT: Duration = Duration::from_secs(20);

/// A server whose handlers report every message body.
#[derive(Clone)]
struct Collect(mpsc::Sender<String>);

struct Collector(mpsc::Sender<String>);

impl MessagingHandler for Collector {
    fn on_message(&mut self, _d: &mut Delivery<'_>, m: Message) {
        let _ = self.0.send(
            m.body_value()
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_string(),
        );
    }
}

impl ListenHandler for Collect {
    type Handler = Collector;
    fn on_accept(&self, _: std::net::SocketAddr) -> Collector {
        Collector(self.0.clone())
    }
}

/// Builds and runs a container on its own thread (a `Container` stays on the thread that built it).
fn spawn_container(
    id: &'static str,
    auto_stop: bool,
) -> (
    ContainerHandle,
    thread::JoinHandle<Result<(), nucleon::Error>>,
) {
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let c = Container::builder()
            .id(id)
            .threads(1)
            .auto_stop(auto_stop)
            .build();
        tx.send(c.handle()).expect("report");
        c.run()
    });
    (rx.recv_timeout(WAIT).expect("container started"), t)
}

/// The client: reports each open (and whether it was a reconnect); sends whatever work asks.
struct Client {
    opened: mpsc::Sender<(bool, Option<SenderId>)>,
    sender: Option<SenderId>,
    closes: mpsc::Sender<()>,
}

impl MessagingHandler for Client {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        if self.sender.is_none() {
            let s = c
                .open_sender("q", SenderOptions::default())
                .expect("sender opens");
            self.sender = Some(s.id());
        }
    }
    fn on_sender_open(&mut self, s: &mut Sender<'_>) {
        let reconnected = s.connection().reconnected();
        let _ = self.opened.send((reconnected, self.sender));
    }
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let _ = self.closes.send(());
    }
}

fn send_text(conn: &ConnectionHandle<Client>, id: SenderId, text: &'static str) {
    conn.work_queue()
        .add(move |_, c| {
            if let Some(mut s) = c.sender(id) {
                if s.credit() > 0 {
                    s.send(&Message::with_body(text)).expect("sends");
                }
            }
        })
        .expect("work queued");
}

fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[test]
fn a_client_fails_over_and_survives_a_server_restart() {
    let (got_tx, got_rx) = mpsc::channel();
    let (server1, port, t1) = threaded_server("server", "127.0.0.1:0", Collect(got_tx.clone()));

    let (handle, runner) = spawn_container("client", false);
    let (opened_tx, opened_rx) = mpsc::channel();
    let (closes_tx, closes_rx) = mpsc::channel();
    let options = ConnectionOptions::new().reconnect(
        ReconnectOptions::new()
            .delay(Duration::from_millis(5))
            .max_delay(Duration::from_millis(100))
            .failover_urls(vec![format!("amqp://127.0.0.1:{port}")]),
    );
    // The main URL has nothing listening: the client must get through the failover URL.
    let conn = handle
        .connect(
            &format!("amqp://127.0.0.1:{}", dead_port()),
            options,
            Client {
                opened: opened_tx,
                sender: None,
                closes: closes_tx,
            },
        )
        .expect("connects");

    let (reconnected, id) = opened_rx.recv_timeout(WAIT).expect("first open");
    let id = id.expect("a sender id");
    assert!(reconnected, "reached only after the main URL failed");
    send_text(&conn, id, "before");
    assert_eq!(got_rx.recv_timeout(WAIT).expect("first message"), "before");

    // Kill the server, and wait until the client has lost it (earlier closes were the failed attempts).
    let _ = closes_rx.try_iter().count();
    server1.stop();
    t1.join().expect("server 1 stopped");
    closes_rx
        .recv_timeout(WAIT)
        .expect("the client saw the transport close");

    // Restart it on the same port: the client comes back, re-attaches, and its old SenderId still works.
    let (server2, port2, t2) =
        threaded_server("server", &format!("127.0.0.1:{port}"), Collect(got_tx));
    assert_eq!(port2, port);
    let (reconnected, same_id) = opened_rx.recv_timeout(WAIT).expect("reopened");
    assert!(reconnected);
    assert_eq!(same_id, Some(id));
    send_text(&conn, id, "after");
    assert_eq!(
        got_rx.recv_timeout(WAIT).expect("message after restart"),
        "after"
    );

    handle.stop();
    runner.join().expect("client thread").expect("client ran");
    server2.stop();
    t2.join().expect("server 2 stopped");
}

struct Refused(mpsc::Sender<()>);

impl MessagingHandler for Refused {
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let _ = self.0.send(());
    }
}

#[test]
fn no_retry_after_unauthorized_access() {
    let (sh, server_thread) = spawn_container("auth", false);
    let (got_tx, _got_rx) = mpsc::channel();
    let listener = sh
        .listen_with(
            "127.0.0.1:0",
            ListenOptions::new()
                // PLAIN over loopback TCP, offered only when asked for by name.
                .allow_insecure_plain(true)
                .authenticator(Arc::new(PlainAuthenticator::new([("user", "right")]))),
            Collect(got_tx),
        )
        .expect("listens");

    let (client, client_thread) = spawn_container("c", true);
    let (closed_tx, closed_rx) = mpsc::channel();
    let conn = client
        .connect(
            &format!("amqp://user:wrong@127.0.0.1:{}", listener.port()),
            ConnectionOptions::new()
                .sasl_allow_insecure_mechs(true)
                .reconnect(ReconnectOptions::new().delay(Duration::from_millis(1))),
            Refused(closed_tx),
        )
        .expect("connects");
    // auto_stop ends the client container once its only connection is finished: no retry.
    client_thread
        .join()
        .expect("client thread")
        .expect("client stops by itself");
    assert!(conn.is_finished());
    assert_eq!(closed_rx.try_iter().count(), 1, "one transport, no retries");
    sh.stop();
    server_thread
        .join()
        .expect("server thread")
        .expect("server ran");
}

/// A server that accepts messages and reports each link the client attaches ("attach") and each message
/// body.
#[derive(Clone)]
struct Links(mpsc::Sender<String>);

impl MessagingHandler for Links {
    fn on_receiver_open(&mut self, _r: &mut nucleon::Receiver<'_>) {
        let _ = self.0.send("attach".into());
    }
    fn on_message(&mut self, _d: &mut Delivery<'_>, m: Message) {
        let body = m.body_value().and_then(|v| v.as_str()).unwrap_or("");
        let _ = self.0.send(body.to_string());
    }
}

impl ListenHandler for Links {
    type Handler = Links;
    fn on_accept(&self, _: std::net::SocketAddr) -> Links {
        self.clone()
    }
}

#[test]
fn a_facade_sender_survives_a_reconnect_on_its_one_link() {
    let (seen_tx, seen) = mpsc::channel();
    let (server1, port, t1) = threaded_server("links", "127.0.0.1:0", Links(seen_tx.clone()));
    let (handle, runner) = spawn_container("facade-reconnect", false);
    let options = ConnectionOptions::new().reconnect(
        ReconnectOptions::new()
            .delay(Duration::from_millis(5))
            .max_delay(Duration::from_millis(100)),
    );
    let url = format!("amqp://127.0.0.1:{port}/q");
    let sender = futures::executor::block_on(handle.open_sender_with(
        &url,
        options,
        SenderOptions::default(),
    ))
    .expect("the sender opens");
    assert_eq!(seen.recv_timeout(WAIT).expect("attach"), "attach");
    let outcome = futures::executor::block_on(sender.send(Message::with_body("one")));
    assert_eq!(outcome, Ok(nucleon::Outcome::Accepted));
    assert_eq!(seen.recv_timeout(WAIT).expect("one"), "one");

    server1.stop();
    t1.join().expect("server 1 stopped");
    // On the same port, a listener that drops each connection: every reconnect attempt fails there. A
    // send made between two failed attempts waits for the link attached again; the second failure must
    // not fail it, nor stick to the handle (it did: every later send failed with it).
    let dropper = TcpListener::bind(("127.0.0.1", port)).expect("the port is free again");
    drop(dropper.accept().expect("a first reconnect attempt"));
    let mut waiting = Box::pin(sender.send(Message::with_body("while down")));
    let polled = futures::executor::block_on(async { futures::poll!(waiting.as_mut()) });
    assert!(polled.is_pending(), "the send waits: {polled:?}");
    drop(dropper.accept().expect("a further attempt"));
    drop(dropper);
    let (server2, _, t2) = threaded_server("links", &format!("127.0.0.1:{port}"), Links(seen_tx));
    assert_eq!(
        futures::executor::block_on(waiting),
        Ok(nucleon::Outcome::Accepted),
        "the send made while the server was down goes out after the reconnect"
    );
    // After the reconnect the same handle sends again, on its one link attached again (not a second one).
    // A send the client makes before it has noticed the loss goes on the dead transport and fails with
    // TransportLost (its outcome is unknown); a later one waits for the link attached again, also when
    // it is made while a reconnect attempt fails (server 2 not yet listening).
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        match futures::executor::block_on(sender.send(Message::with_body("two"))) {
            Ok(outcome) => {
                assert_eq!(outcome, nucleon::Outcome::Accepted);
                break;
            }
            Err(e) => {
                assert!(e.is_transport_lost(), "{e:?}");
                assert!(std::time::Instant::now() < deadline, "sends keep failing");
            }
        }
    }
    let after: Vec<String> = seen.try_iter().collect();
    assert_eq!(
        after,
        ["attach", "while down", "two"],
        "one attach, then the messages"
    );

    handle.stop();
    runner.join().expect("client thread").expect("client ran");
    server2.stop();
    t2.join().expect("server 2 stopped");
}

/// A server that closes the first connection it opens, at once, and keeps the later ones.
#[derive(Clone)]
struct CloseFirst(Arc<std::sync::atomic::AtomicBool>);

impl MessagingHandler for CloseFirst {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        if !self.0.swap(true, std::sync::atomic::Ordering::SeqCst) {
            c.close();
        }
    }
}

impl ListenHandler for CloseFirst {
    type Handler = CloseFirst;
    fn on_accept(&self, _: std::net::SocketAddr) -> CloseFirst {
        self.clone()
    }
}

/// Wakes its own connection from its first `on_transport_close` (its handle arrives through `me`), the
/// moment the connection holds its old transport while the output flushes; reports each wake and each open.
struct WakeOnLoss {
    me: Option<mpsc::Receiver<ConnectionHandle<WakeOnLoss>>>,
    seen: mpsc::Sender<&'static str>,
}

impl MessagingHandler for WakeOnLoss {
    fn on_connection_open(&mut self, _c: &mut Connection<'_>) {
        let _ = self.seen.send("open");
    }
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        if let Some(me) = self.me.take() {
            let me = me
                .recv_timeout(WAIT)
                .expect("the test hands over the handle");
            me.wake();
            let _ = self.seen.send("lost");
        }
    }
    fn on_connection_wake(&mut self, _c: &mut Connection<'_>) {
        let _ = self.seen.send("wake");
    }
}

#[test]
fn a_wake_while_a_lost_transport_flushes_is_delivered_after_the_reconnect() {
    let (server, port, t) = threaded_server("closer", "127.0.0.1:0", CloseFirst(Arc::default()));
    let (handle, runner) = spawn_container("wake-reconnect", false);
    let (me_tx, me_rx) = mpsc::channel();
    let (seen_tx, seen) = mpsc::channel();
    let conn = handle
        .connect(
            &format!("amqp://127.0.0.1:{port}"),
            ConnectionOptions::new()
                .reconnect(ReconnectOptions::new().delay(Duration::from_millis(5))),
            WakeOnLoss {
                me: Some(me_rx),
                seen: seen_tx,
            },
        )
        .expect("connects");
    me_tx.send(conn.clone()).expect("the handler is alive");
    let mut events = Vec::new();
    while events.iter().filter(|e| **e == "open").count() < 2 || !events.contains(&"wake") {
        match seen.recv_timeout(WAIT) {
            Ok(e) => events.push(e),
            Err(_) => panic!("the wake never came: {events:?}"),
        }
    }
    assert_eq!(events[..2], ["open", "lost"]);
    handle.stop();
    runner.join().expect("client thread").expect("client ran");
    server.stop();
    t.join().expect("server stopped");
}
