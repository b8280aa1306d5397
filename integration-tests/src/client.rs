//! Our async facade's clients (`nucleon::ContainerHandle::open_sender` / `open_receiver`) as the interop
//! tests drive them against a peer, and our in-process broker for the peers to reach.
//!
//! Every wait is bounded: a peer that does not answer fails the test with what was awaited, it never hangs
//! the run. [`Clients`] holds what the tests of one binary share (their connection options and their
//! longest wait); [`ManualCredit`] is a receiver that grants credit only when the test says so, and
//! [`Direct`] a listener that receives and sends itself, for clients of the peer to reach.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use nucleon::broker::{Broker, BrokerOptions};
use nucleon::protocol::frame::{DeliveryState, Error as AmqpError, ErrorCondition};
use nucleon::{
    Connection, ConnectionHandle, ConnectionOptions, Container, ContainerBuilder, ContainerHandle,
    Delivery, ListenHandler, ListenOptions, Message, MessagingHandler, Outcome, Receiver,
    ReceiverHandle, ReceiverId, ReceiverOptions, Sender, SenderHandle, SenderOptions, Tracker,
    Value,
};
use tokio::sync::mpsc;

/// A container for the tests of one binary, named `id`: two threads, kept running when its last
/// connection closes (each test opens its own). Turns on the tests' logging (`RUST_LOG`) once.
pub fn container(id: &str) -> ContainerHandle {
    let _ = env_logger::builder().is_test(true).try_init();
    ContainerBuilder::default()
        .id(id)
        .threads(2)
        .auto_stop(false)
        .start()
}

/// Connection options for a peer on loopback: SASL PLAIN is allowed without TLS (without this, nucleon
/// refuses to connect with a user over plain TCP, as Proton refuses PLAIN there).
pub fn plain_allowed() -> ConnectionOptions {
    ConnectionOptions::new().sasl_allow_insecure_mechs(true)
}

/// Awaits `f`, failing the test (naming `what`) when it takes longer than `timeout`.
pub async fn within<T>(timeout: Duration, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(timeout, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: timed out after {timeout:?}"))
}

/// Our broker (`nucleon::broker::Broker`, default options) listening on a free loopback port: its state
/// and the port.
pub fn broker(c: &ContainerHandle, options: ListenOptions) -> (Broker, u16) {
    let broker = Broker::new(BrokerOptions::default());
    let listener = broker
        .listen(c, "127.0.0.1:0", options)
        .expect("the broker listens");
    (broker, listener.port())
}

/// `n` messages whose bodies are the longs `0..n`, in order.
pub fn numbered(n: usize) -> Vec<Message> {
    (0..n as i64).map(Message::with_body).collect()
}

/// The long bodies of `messages`; fails the test on any other body.
pub fn bodies(messages: &[Message]) -> Vec<i64> {
    messages
        .iter()
        .map(|m| m.body_value().and_then(Value::as_i64).expect("a long body"))
        .collect()
}

/// 5 MiB of a byte pattern that repeats only every 251 bytes, so a misplaced frame shows: the body of the
/// large-message cases (multi-frame at a 64 KiB `max-frame-size` [AMQP 1.0 §2.7.1]).
pub fn five_mib() -> Vec<u8> {
    (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect()
}

/// How the facade clients of one test binary connect, and the longest they may wait for one exchange
/// (opening a link, all outcomes of a batch, all messages of a batch).
#[derive(Clone, Debug)]
pub struct Clients {
    /// The options of every connection these clients open.
    pub connection: ConnectionOptions,
    /// The bound on each wait; past it the test fails.
    pub timeout: Duration,
}

impl Clients {
    /// Opens a sender to `url`; fails the test if it is refused or not attached in time.
    pub async fn open_sender(
        &self,
        c: &ContainerHandle,
        url: &str,
        options: SenderOptions,
    ) -> SenderHandle {
        within(
            self.timeout,
            "our sender opens",
            c.open_sender_with(url, self.connection.clone(), options),
        )
        .await
        .unwrap_or_else(|e| panic!("sender to {url}: {e}"))
    }

    /// Sends `messages` on `sender` one at a time (concurrent `send` futures have no defined order among
    /// themselves) and returns their outcomes, in order; fails the test unless all come in time.
    pub async fn send_each(&self, sender: &SenderHandle, messages: Vec<Message>) -> Vec<Outcome> {
        within(self.timeout, "every outcome", async {
            let mut outcomes = Vec::with_capacity(messages.len());
            for m in messages {
                outcomes.push(sender.send(m).await.expect("an outcome"));
            }
            outcomes
        })
        .await
    }

    /// Sends `messages` on a sender of its own to `url` ([`send_each`](Self::send_each)) and closes it,
    /// failing the test if the close fails.
    pub async fn send_all(
        &self,
        c: &ContainerHandle,
        url: &str,
        options: SenderOptions,
        messages: Vec<Message>,
    ) -> Vec<Outcome> {
        let (sender, outcomes) = self.send_on_own_sender(c, url, options, messages).await;
        sender.close().expect("closes");
        outcomes
    }

    /// [`send_all`](Self::send_all) to a peer that may close the connection itself once it has every
    /// message (as Proton's `direct` does): our close may then find the connection gone, which is no failure.
    pub async fn send_all_to_closing_peer(
        &self,
        c: &ContainerHandle,
        url: &str,
        options: SenderOptions,
        messages: Vec<Message>,
    ) -> Vec<Outcome> {
        let (sender, outcomes) = self.send_on_own_sender(c, url, options, messages).await;
        let _ = sender.close();
        outcomes
    }

    async fn send_on_own_sender(
        &self,
        c: &ContainerHandle,
        url: &str,
        options: SenderOptions,
        messages: Vec<Message>,
    ) -> (SenderHandle, Vec<Outcome>) {
        let sender = self.open_sender(c, url, options).await;
        let outcomes = self.send_each(&sender, messages).await;
        (sender, outcomes)
    }

    /// Opens a receiver from `url` that keeps `window` credits out; fails the test if it is refused or not
    /// attached in time.
    pub async fn open_receiver(
        &self,
        c: &ContainerHandle,
        url: &str,
        window: u32,
    ) -> ReceiverHandle {
        let options = ReceiverOptions::new().credit_window(window);
        within(
            self.timeout,
            "our receiver opens",
            c.open_receiver_with(url, self.connection.clone(), options),
        )
        .await
        .unwrap_or_else(|e| panic!("receiver from {url}: {e}"))
    }

    /// The next message of `receiver`, accepted; fails the test unless it comes in time.
    pub async fn take(&self, receiver: &mut ReceiverHandle) -> Message {
        within(
            self.timeout,
            "our receiver gets a message",
            accept_next(receiver),
        )
        .await
    }

    /// Receives `n` messages from `url` with a credit window of `window` (and never credit for more than
    /// `n`), accepting each; fails the test unless all come in time.
    pub async fn receive(
        &self,
        c: &ContainerHandle,
        url: &str,
        n: usize,
        window: u32,
    ) -> Vec<Message> {
        let mut receiver = self.open_receiver(c, url, window).await.limit(n as u64);
        within(self.timeout, "every message", async {
            let mut messages = Vec::with_capacity(n);
            while messages.len() < n {
                messages.push(accept_next(&mut receiver).await);
            }
            messages
        })
        .await
    }
}

/// The next message of `receiver`, accepted.
async fn accept_next(receiver: &mut ReceiverHandle) -> Message {
    let r = receiver.next().await.expect("the stream goes on");
    let m = r.message.clone();
    r.accept().expect("accepts");
    m
}

/// What a [`ManualCredit`] handler reports.
#[derive(Debug)]
enum CreditEvent {
    Opened(ReceiverId),
    Message(Box<Message>),
}

/// A receiver with credit window 0: it grants credit only when the test says so.
struct ManualCreditHandler {
    address: String,
    events: mpsc::UnboundedSender<CreditEvent>,
}

impl MessagingHandler for ManualCreditHandler {
    fn on_connection_open(&mut self, connection: &mut Connection<'_>) {
        let options = ReceiverOptions::new().credit_window(0);
        if let Err(e) = connection.open_receiver(&self.address, options) {
            panic!("cannot open the receiver: {e}");
        }
    }

    fn on_receiver_open(&mut self, receiver: &mut Receiver<'_>) {
        let _ = self.events.send(CreditEvent::Opened(receiver.id()));
    }

    fn on_message(&mut self, _delivery: &mut Delivery<'_>, message: Message) {
        let _ = self.events.send(CreditEvent::Message(Box::new(message)));
    }
}

/// A receiver (a `MessagingHandler` on a connection of its own) that opens with no credit and grants
/// credit only when the test says so [AMQP 1.0 §2.6.7]; it reports each message it gets.
pub struct ManualCredit {
    handle: ConnectionHandle<ManualCreditHandler>,
    id: ReceiverId,
    events: mpsc::UnboundedReceiver<CreditEvent>,
    timeout: Duration,
}

impl ManualCredit {
    /// Connects to `url` and opens a receiver from `address`; fails the test unless it is attached within
    /// `timeout` (also the bound of each later wait).
    pub async fn open(
        c: &ContainerHandle,
        url: &str,
        connection: ConnectionOptions,
        address: &str,
        timeout: Duration,
    ) -> ManualCredit {
        let (tx, mut events) = mpsc::unbounded_channel();
        let handler = ManualCreditHandler {
            address: address.to_owned(),
            events: tx,
        };
        let handle = c.connect(url, connection, handler).expect("connects");
        let id = match tokio::time::timeout(timeout, events.recv()).await {
            Ok(Some(CreditEvent::Opened(id))) => id,
            other => panic!("expected the receiver to open, got {other:?}"),
        };
        ManualCredit {
            handle,
            id,
            events,
            timeout,
        }
    }

    /// Grants `n` more credits.
    pub fn grant(&self, n: u32) {
        let id = self.id;
        self.handle
            .work_queue()
            .add(move |_, c| {
                if let Some(mut r) = c.receiver(id) {
                    r.add_credit(n).expect("adds credit");
                }
            })
            .expect("the connection is up");
    }

    /// The long body of the next message; fails the test unless one comes in time.
    pub async fn next_long(&mut self) -> i64 {
        match tokio::time::timeout(self.timeout, self.events.recv()).await {
            Ok(Some(CreditEvent::Message(m))) => {
                m.body_value().and_then(Value::as_i64).expect("a long")
            }
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Whether a message came that was not yet taken with [`next_long`](Self::next_long).
    pub fn has_more(&mut self) -> bool {
        self.events.try_recv().is_ok()
    }

    /// Closes the connection.
    pub fn close(&self) -> Result<(), nucleon::Error> {
        self.handle.close()
    }
}

/// How [`Direct`] settles a message it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// `accepted` [AMQP 1.0 §3.4.2].
    Accept,
    /// `rejected` with `amqp:precondition-failed` [AMQP 1.0 §3.4.3].
    Reject,
    /// `released` [AMQP 1.0 §3.4.4].
    Release,
}

/// What a [`Direct`] listener reports to the test.
#[derive(Debug)]
pub enum DirectEvent {
    /// A message it received (and settled by its verdict).
    Received(Box<Message>),
    /// The outcome the peer gave one of the messages it sent.
    Outcome(Option<DeliveryState>),
}

/// A nucleon listener that receives whatever is sent to it (accepting it, unless told otherwise with
/// [`with_verdict`](Self::with_verdict)), and sends its queued messages to whoever attaches a receiver, as
/// much as the receiver's credit allows, as the `direct_recv` / `direct_send` examples do.
#[derive(Clone)]
pub struct Direct {
    to_send: Arc<Mutex<VecDeque<Message>>>,
    events: mpsc::UnboundedSender<DirectEvent>,
    verdict: fn(&Message) -> Verdict,
}

impl Direct {
    /// A listener handler with `to_send` queued, and the receiving end of what it reports.
    pub fn new(to_send: Vec<Message>) -> (Direct, mpsc::UnboundedReceiver<DirectEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        let direct = Direct {
            to_send: Arc::new(Mutex::new(to_send.into())),
            events,
            verdict: |_| Verdict::Accept,
        };
        (direct, rx)
    }

    /// Settles each received message as `verdict` says instead of accepting it.
    pub fn with_verdict(mut self, verdict: fn(&Message) -> Verdict) -> Direct {
        self.verdict = verdict;
        self
    }

    /// Messages still waiting to be sent.
    pub fn unsent(&self) -> usize {
        self.to_send.lock().expect("lock").len()
    }

    fn report_outcome(&self, tracker: &Tracker<'_>) {
        let _ = self
            .events
            .send(DirectEvent::Outcome(tracker.state().cloned()));
    }
}

impl ListenHandler for Direct {
    type Handler = Direct;

    fn on_accept(&self, _peer: std::net::SocketAddr) -> Direct {
        self.clone()
    }
}

impl MessagingHandler for Direct {
    fn on_sendable(&mut self, sender: &mut Sender<'_>) {
        while sender.credit() > 0 {
            let Some(m) = self.to_send.lock().expect("lock").pop_front() else {
                break;
            };
            sender.send(&m).expect("sends");
        }
    }

    fn on_message(&mut self, delivery: &mut Delivery<'_>, message: Message) {
        match (self.verdict)(&message) {
            Verdict::Accept => delivery.accept(),
            Verdict::Reject => delivery.reject(Some(AmqpError::new(
                ErrorCondition::PreconditionFailed,
                "rejected by index",
            ))),
            Verdict::Release => delivery.release(),
        }
        let _ = self.events.send(DirectEvent::Received(Box::new(message)));
    }

    fn on_tracker_accept(&mut self, tracker: &mut Tracker<'_>) {
        self.report_outcome(tracker);
    }

    fn on_tracker_reject(&mut self, tracker: &mut Tracker<'_>) {
        self.report_outcome(tracker);
    }

    fn on_tracker_release(&mut self, tracker: &mut Tracker<'_>) {
        self.report_outcome(tracker);
    }
}

/// Runs a stand-alone server container (one worker thread, `id`) on its own thread, listening on `addr` with
/// `handler`: its handle, its port and the thread, which ends when the container is stopped. Restarting a
/// server on the same port (`127.0.0.1:{port}`) is how the reconnect tests take a peer away and back.
pub fn threaded_server<L: ListenHandler>(
    id: &'static str,
    addr: &str,
    handler: L,
) -> (ContainerHandle, u16, std::thread::JoinHandle<()>) {
    let (tx, rx) = std::sync::mpsc::channel();
    let addr = addr.to_string();
    let t = std::thread::spawn(move || {
        let c = Container::builder()
            .id(id)
            .threads(1)
            .auto_stop(false)
            .build();
        let h = c.handle();
        let l = h.listen(&addr, handler).expect("server listens");
        tx.send((h, l.port())).expect("report");
        c.run().expect("server runs");
    });
    let (h, port) = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("server started");
    (h, port, t)
}

/// What a client connection saw first: it opened (and closed at once), or its transport failed.
#[derive(Debug, PartialEq)]
pub enum Seen {
    /// The connection opened.
    Opened,
    /// The transport failed, with this error.
    Failed(String),
}

/// A client handler that reports its open (then closes the connection) or its transport error.
pub struct Opener(pub mpsc::UnboundedSender<Seen>);

impl MessagingHandler for Opener {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        let _ = self.0.send(Seen::Opened);
        c.close();
    }
    fn on_transport_error(&mut self, _c: &mut Connection<'_>, error: &AmqpError) {
        let _ = self.0.send(Seen::Failed(error.to_string()));
    }
}

/// Connects to `url` with `options` and returns the first thing the client sees (within 20 s).
pub async fn first_seen(c: &ContainerHandle, url: &str, options: ConnectionOptions) -> Seen {
    let (tx, mut rx) = mpsc::unbounded_channel();
    c.connect(url, options, Opener(tx)).expect("connects");
    within(
        Duration::from_secs(20),
        "the client opens or fails",
        rx.recv(),
    )
    .await
    .expect("a report")
}

/// The SASL user and the certificate subject of a connection a server opened.
pub type Identity = (Option<String>, Option<String>);

/// A listener handler that reports, for each connection it opens, the SASL user and the client
/// certificate's subject.
#[derive(Clone)]
pub struct Identities(pub mpsc::UnboundedSender<Identity>);

impl MessagingHandler for Identities {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        let _ = self.0.send((
            c.user().map(str::to_string),
            c.peer_certificate_subject().map(str::to_string),
        ));
    }
}

impl ListenHandler for Identities {
    type Handler = Identities;
    fn on_accept(&self, _: std::net::SocketAddr) -> Identities {
        self.clone()
    }
}
