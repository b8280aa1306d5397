//! Ids and refs are bound to their connection and transport (ARCHITECTURE §5, "an id from an old transport
//! can never settle a new delivery"): a `DeliveryRef` from before a reconnect, used after it, is refused
//! with `Error::StaleDelivery` (the new engine numbers its deliveries from the same start, so an unbound
//! ref would settle a different message), and a `DeliveryRef`, `SenderId` or `ReceiverId` of connection A
//! used in connection B's work queue is refused with `Error::OtherConnection`, never resolved to B's
//! delivery or link with the same number.

use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nucleon::protocol::frame::{Accepted, DeliveryState, Released};
use nucleon::{
    Connection, ConnectionHandle, ConnectionOptions, Container, ContainerHandle, Delivery,
    DeliveryRef, Error, ListenHandler, Message, MessagingHandler, ReceiverId, ReceiverOptions,
    ReconnectOptions, Sender, SenderId, SenderOptions, Tracker,
};

use nucleon_integration_tests::client::threaded_server;

const WAIT: Duration = Duration::from_secs(20);

/// The outcome a server's sender saw for its one message.
#[derive(Debug, PartialEq)]
enum Outcome {
    Accepted(String),
    Released(String),
}

/// A server whose every connection sends `body` once, unsettled, on each link the client attaches to it,
/// and reports the outcome.
#[derive(Clone)]
struct Offer {
    body: &'static str,
    outcomes: mpsc::Sender<Outcome>,
}

struct Offering {
    offer: Offer,
    sent: bool,
}

impl MessagingHandler for Offering {
    fn on_sendable(&mut self, s: &mut Sender<'_>) {
        if !self.sent && s.credit() > 0 {
            self.sent = true;
            s.send(&Message::with_body(self.offer.body))
                .expect("the server sends");
        }
    }
    fn on_tracker_accept(&mut self, _t: &mut Tracker<'_>) {
        let _ = self
            .offer
            .outcomes
            .send(Outcome::Accepted(self.offer.body.into()));
    }
    fn on_tracker_release(&mut self, _t: &mut Tracker<'_>) {
        let _ = self
            .offer
            .outcomes
            .send(Outcome::Released(self.offer.body.into()));
    }
}

impl ListenHandler for Offer {
    type Handler = Offering;
    fn on_accept(&self, _: std::net::SocketAddr) -> Offering {
        Offering {
            offer: self.clone(),
            sent: false,
        }
    }
}

/// Builds and runs a client container on its own thread.
fn client_container() -> (ContainerHandle, thread::JoinHandle<Result<(), Error>>) {
    let (tx, rx) = mpsc::channel();
    let t = thread::spawn(move || {
        let c = Container::builder()
            .id("client")
            .threads(2)
            .auto_stop(false)
            .build();
        tx.send(c.handle()).expect("report");
        c.run()
    });
    (rx.recv_timeout(WAIT).expect("container started"), t)
}

/// What the client reports: each message with its ref (left unsettled), its link ids, its transport closes.
enum Seen {
    Message(String, DeliveryRef),
    Links(SenderId, ReceiverId),
    TransportClosed,
}

/// Opens a receiver from `q` (deferring every delivery) and a sender to `out`, once.
struct Client {
    seen: mpsc::Sender<Seen>,
    opened: bool,
}

impl MessagingHandler for Client {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        if !self.opened {
            self.opened = true;
            let r = c
                .open_receiver("q", ReceiverOptions::default())
                .expect("receiver opens")
                .id();
            let s = c
                .open_sender("out", SenderOptions::default())
                .expect("sender opens")
                .id();
            let _ = self.seen.send(Seen::Links(s, r));
        }
    }
    fn on_message(&mut self, d: &mut Delivery<'_>, m: Message) {
        d.defer();
        let body = m
            .body_value()
            .and_then(|v| v.as_str())
            .unwrap_or("")
            .to_string();
        let _ = self.seen.send(Seen::Message(body, d.id()));
    }
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let _ = self.seen.send(Seen::TransportClosed);
    }
}

fn connect(
    handle: &ContainerHandle,
    port: u16,
    options: ConnectionOptions,
) -> (ConnectionHandle<Client>, mpsc::Receiver<Seen>) {
    let (tx, rx) = mpsc::channel();
    let conn = handle
        .connect(
            &format!("amqp://127.0.0.1:{port}"),
            options,
            Client {
                seen: tx,
                opened: false,
            },
        )
        .expect("connects");
    (conn, rx)
}

fn next_message(seen: &mpsc::Receiver<Seen>) -> (String, DeliveryRef) {
    loop {
        match seen.recv_timeout(WAIT).expect("a message") {
            Seen::Message(body, r) => return (body, r),
            Seen::Links(..) | Seen::TransportClosed => {}
        }
    }
}

fn links(seen: &mpsc::Receiver<Seen>) -> (SenderId, ReceiverId) {
    loop {
        match seen.recv_timeout(WAIT).expect("links") {
            Seen::Links(s, r) => return (s, r),
            Seen::Message(..) | Seen::TransportClosed => {}
        }
    }
}

/// Runs `f` on `conn`'s thread, in its context, and returns what it returns.
fn on<T: Send + 'static>(
    conn: &ConnectionHandle<Client>,
    f: impl FnOnce(&mut Connection<'_>) -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    conn.work_queue()
        .add(move |_, c| {
            let _ = tx.send(f(c));
        })
        .expect("work queued");
    rx.recv_timeout(WAIT).expect("the work ran")
}

fn accepted() -> DeliveryState {
    DeliveryState::Accepted(Accepted {})
}

#[test]
fn a_delivery_ref_from_before_a_reconnect_settles_nothing_after_it() {
    let (out1, outcomes1) = mpsc::channel();
    let (server1, port, t1) = threaded_server(
        "server",
        "127.0.0.1:0",
        Offer {
            body: "first",
            outcomes: out1,
        },
    );
    let (handle, runner) = client_container();
    let options = ConnectionOptions::new().reconnect(
        ReconnectOptions::new()
            .delay(Duration::from_millis(5))
            .max_delay(Duration::from_millis(100)),
    );
    let (conn, seen) = connect(&handle, port, options);
    let (body, old) = next_message(&seen);
    assert_eq!(body, "first");

    // The server goes away with "first" unsettled, and the client sees its transport close.
    server1.stop();
    t1.join().expect("server 1 stopped");
    loop {
        if let Seen::TransportClosed = seen.recv_timeout(WAIT).expect("the transport closes") {
            break;
        }
    }
    assert!(outcomes1.try_recv().is_err(), "nothing settled \"first\"");

    // A new server on the same port: the reconnected client gets "second", numbered like "first" was.
    let (out2, outcomes2) = mpsc::channel();
    let (server2, port2, t2) = threaded_server(
        "server",
        &format!("127.0.0.1:{port}"),
        Offer {
            body: "second",
            outcomes: out2,
        },
    );
    assert_eq!(port2, port);
    let (body, new) = next_message(&seen);
    assert_eq!(body, "second");
    assert_ne!(old, new, "refs of two transports differ");

    // Accepting the old ref is refused, and does not accept "second" ...
    let stale = on(&conn, move |c| c.settle(old, accepted()));
    assert_eq!(stale, Err(Error::StaleDelivery));
    // ... which the new ref still settles, with the outcome it names: the server's first outcome is ours.
    let fresh = on(&conn, move |c| {
        c.settle(new, DeliveryState::Released(Released {}))
    });
    assert_eq!(fresh, Ok(()));
    assert_eq!(
        outcomes2.recv_timeout(WAIT).expect("an outcome"),
        Outcome::Released("second".into())
    );

    handle.stop();
    runner.join().expect("client thread").expect("client ran");
    server2.stop();
    t2.join().expect("server 2 stopped");
}

#[test]
fn ids_and_refs_of_one_connection_are_refused_by_another() {
    let (out, outcomes) = mpsc::channel();
    let (server, port, t) = threaded_server(
        "server",
        "127.0.0.1:0",
        Offer {
            body: "x",
            outcomes: out,
        },
    );
    let (handle, runner) = client_container();
    let (a, seen_a) = connect(&handle, port, ConnectionOptions::default());
    let (b, seen_b) = connect(&handle, port, ConnectionOptions::default());
    let (a_sender, a_receiver) = links(&seen_a);
    let (b_sender, b_receiver) = links(&seen_b);
    let (_, a_ref) = next_message(&seen_a);
    let (_, b_ref) = next_message(&seen_b);

    // A's ids, used in B's work queue, name nothing there, though B has links and a delivery numbered alike.
    let foreign = on(&b, move |c| {
        (
            c.try_sender(a_sender).err(),
            c.try_receiver(a_receiver).err(),
            c.sender(a_sender).is_none(),
            c.receiver(a_receiver).is_none(),
            c.settle(a_ref, accepted()),
        )
    });
    assert_eq!(
        foreign,
        (
            Some(Error::OtherConnection),
            Some(Error::OtherConnection),
            true,
            true,
            Err(Error::OtherConnection)
        )
    );
    // B's own ids work there; B's delivery is released, not accepted by A's ref.
    let own = on(&b, move |c| {
        (
            c.try_sender(b_sender).is_ok(),
            c.try_receiver(b_receiver).is_ok(),
            c.settle(b_ref, DeliveryState::Released(Released {})),
        )
    });
    assert_eq!(own, (true, true, Ok(())));
    assert_eq!(
        outcomes.recv_timeout(WAIT).expect("an outcome"),
        Outcome::Released("x".into())
    );
    // And A's ref still settles A's delivery.
    assert_eq!(on(&a, move |c| c.settle(a_ref, accepted())), Ok(()));
    assert_eq!(
        outcomes.recv_timeout(WAIT).expect("an outcome"),
        Outcome::Accepted("x".into())
    );

    handle.stop();
    runner.join().expect("client thread").expect("client ran");
    server.stop();
    t.join().expect("server stopped");
}
