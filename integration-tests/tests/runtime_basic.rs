//! The runtime end to end over loopback: a listener whose handlers receive, a client whose handler sends,
//! outcomes flowing back, and the container stopping by itself when the last connection is gone.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nucleon::{
    Connection, ConnectionOptions, Container, Delivery, ListenHandler, Message, MessagingHandler,
    Receiver, Sender, SenderOptions, Tracker,
};

const N: usize = 1000;

struct Sink {
    got: mpsc::Sender<Message>,
}

impl MessagingHandler for Sink {
    fn on_message(&mut self, _d: &mut Delivery<'_>, m: Message) {
        let _ = self.got.send(m);
    }
    fn on_receiver_open(&mut self, _r: &mut Receiver<'_>) {}
}

struct SinkFactory(mpsc::Sender<Message>);

impl ListenHandler for SinkFactory {
    type Handler = Sink;
    fn on_accept(&self, _peer: std::net::SocketAddr) -> Sink {
        Sink {
            got: self.0.clone(),
        }
    }
}

struct Source {
    sent: usize,
    accepted: usize,
    done: mpsc::Sender<usize>,
}

impl MessagingHandler for Source {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        c.open_sender("queue", SenderOptions::default())
            .expect("sender opens");
    }
    fn on_sendable(&mut self, s: &mut Sender<'_>) {
        while s.credit() > 0 && self.sent < N {
            let m = Message::builder().body(self.sent as i64).build();
            s.send(&m).expect("send with credit");
            self.sent += 1;
        }
    }
    fn on_tracker_accept(&mut self, t: &mut Tracker<'_>) {
        self.accepted += 1;
        if self.accepted == N {
            let _ = self.done.send(self.accepted);
            t.sender().connection().close();
        }
    }
}

#[test]
fn messages_flow_from_a_client_to_a_listener_and_outcomes_flow_back() {
    let container = Container::builder().id("basic").threads(2).build();
    let handle = container.handle();
    let (got_tx, got_rx) = mpsc::channel();
    let listener = handle
        .listen("127.0.0.1:0", SinkFactory(got_tx))
        .expect("listens");
    let (done_tx, done_rx) = mpsc::channel();
    let url = format!("amqp://127.0.0.1:{}", listener.port());
    handle
        .connect(
            &url,
            ConnectionOptions::default(),
            Source {
                sent: 0,
                accepted: 0,
                done: done_tx,
            },
        )
        .expect("connects");
    let runner = thread::spawn(move || {
        let accepted = done_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("all messages accepted in time");
        let bodies: Vec<i64> = (0..N)
            .map(|_| {
                got_rx
                    .recv_timeout(Duration::from_secs(5))
                    .expect("message received")
                    .body_value()
                    .and_then(nucleon::Value::as_i64)
                    .expect("long body")
            })
            .collect();
        listener.stop();
        (accepted, bodies)
    });
    container.run().expect("the container runs until auto-stop");
    let (accepted, bodies) = runner.join().expect("checker thread");
    assert_eq!(accepted, N);
    assert_eq!(bodies, (0..N as i64).collect::<Vec<_>>());
}

/// Counts container callbacks and checks `opened()` from inside the container.
struct Lifecycle {
    events: mpsc::Sender<&'static str>,
    url: String,
}

impl MessagingHandler for Lifecycle {
    fn on_container_start(&mut self, container: &nucleon::ContainerHandle) {
        let _ = self.events.send("start");
        let conn = container
            .connect(&self.url, ConnectionOptions::default(), Quiet)
            .expect("connects");
        let events = self.events.clone();
        let c = container.clone();
        actix_rt::spawn(async move {
            if conn.opened().await.is_ok() {
                let _ = events.send("opened");
            }
            c.stop();
        });
    }
    fn on_container_stop(&mut self, _container: &nucleon::ContainerHandle) {
        let _ = self.events.send("stop");
    }
}

struct Quiet;
impl MessagingHandler for Quiet {}

#[test]
fn run_with_reports_start_and_stop_and_opened_resolves() {
    let server = Container::builder()
        .id("lifecycle-server")
        .threads(1)
        .build();
    let (got_tx, _got_rx) = mpsc::channel();
    let listener = server
        .handle()
        .listen("127.0.0.1:0", SinkFactory(got_tx))
        .expect("listens");
    let port = listener.port();
    let server_handle = server.handle();
    let server_thread = thread::spawn(move || {
        let client = Container::builder().id("lifecycle").threads(1).build();
        let (tx, rx) = mpsc::channel();
        client
            .run_with(Lifecycle {
                events: tx,
                url: format!("amqp://127.0.0.1:{port}"),
            })
            .expect("runs");
        server_handle.stop();
        rx.try_iter().collect::<Vec<_>>()
    });
    server.run().expect("server runs");
    let events = server_thread.join().expect("client thread");
    assert_eq!(events, ["start", "opened", "stop"]);
}

/// A server handler that panics on the message "boom".
struct Fragile(mpsc::Sender<String>);

impl MessagingHandler for Fragile {
    fn on_message(&mut self, _d: &mut Delivery<'_>, m: Message) {
        let text = m
            .body_value()
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        assert!(text != "boom", "the handler was asked to panic");
        let _ = self.0.send(text);
    }
}

struct FragileFactory(mpsc::Sender<String>);

impl ListenHandler for FragileFactory {
    type Handler = Fragile;
    fn on_accept(&self, _peer: std::net::SocketAddr) -> Fragile {
        Fragile(self.0.clone())
    }
}

/// Sends one text and reports how its connection ended.
struct OneShot {
    text: &'static str,
    sent: bool,
    ended: mpsc::Sender<(
        &'static str,
        Option<nucleon::protocol::frame::ErrorCondition>,
    )>,
    error: Option<nucleon::protocol::frame::ErrorCondition>,
}

impl MessagingHandler for OneShot {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        c.open_sender("q", SenderOptions::default()).expect("opens");
    }
    fn on_sendable(&mut self, s: &mut Sender<'_>) {
        if !self.sent {
            self.sent = true;
            s.send(&Message::with_body(self.text)).expect("sends");
        }
    }
    fn on_tracker_accept(&mut self, t: &mut Tracker<'_>) {
        t.sender().connection().close();
    }
    fn on_connection_error(
        &mut self,
        _c: &mut Connection<'_>,
        e: &nucleon::protocol::frame::Error,
    ) {
        self.error = Some(e.condition.clone());
    }
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let _ = self.ended.send((self.text, self.error.clone()));
    }
}

#[test]
fn a_panicking_handler_closes_only_its_own_connection() {
    let container = Container::builder().id("fragile").threads(1).build();
    let handle = container.handle();
    let (got_tx, got_rx) = mpsc::channel();
    let listener = handle
        .listen("127.0.0.1:0", FragileFactory(got_tx))
        .expect("listens");
    let url = format!("amqp://127.0.0.1:{}", listener.port());
    let (ended_tx, ended_rx) = mpsc::channel();
    for text in ["boom", "fine"] {
        handle
            .connect(
                &url,
                ConnectionOptions::default(),
                OneShot {
                    text,
                    sent: false,
                    ended: ended_tx.clone(),
                    error: None,
                },
            )
            .expect("connects");
    }
    let checker = thread::spawn(move || {
        let mut ends: Vec<_> = (0..2)
            .map(|_| {
                ended_rx
                    .recv_timeout(Duration::from_secs(20))
                    .expect("both end")
            })
            .collect();
        ends.sort_by_key(|(t, _)| *t);
        let fine = got_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("the other connection's message");
        listener.stop();
        (ends, fine)
    });
    container
        .run()
        .expect("the container carries on and stops by itself");
    let (ends, fine) = checker.join().expect("checker");
    assert_eq!(fine, "fine");
    assert_eq!(
        ends,
        [
            (
                "boom",
                Some(nucleon::protocol::frame::ErrorCondition::InternalError)
            ),
            ("fine", None)
        ]
    );
}
