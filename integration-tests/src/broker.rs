//! What the in-process broker's tests (`tests/broker*.rs`) share: a container, a broker on a free loopback
//! port, bounded sends and receives through the async facade, numbered messages, and a client that opens a
//! dynamic receiver.

use std::time::Duration;

use nucleon::broker::{Broker, BrokerOptions, TOPIC};
use nucleon::protocol::codec::Symbol;
use nucleon::protocol::engine::{ConnectionConfig, LinkConfig, LinkId, SessionId};
use nucleon::{
    AsyncConnectionHandle, Connection, ConnectionOptions, ContainerBuilder, ContainerHandle,
    ListenOptions, Message, MessagingHandler, Outcome, Received, Receiver, ReceiverHandle,
    ReceiverOptions, SenderHandle, SenderOptions, Value,
};

use crate::driver::Driver;

/// How long any one step of a broker test may take.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// A started container with `threads` workers that stops only when told (logs go to the test's output).
pub fn container(threads: usize) -> ContainerHandle {
    let _ = env_logger::builder().is_test(true).try_init();
    ContainerBuilder::default()
        .threads(threads)
        .auto_stop(false)
        .start()
}

/// A broker on a free port of 127.0.0.1 with `listen` options: its state and its base URL.
pub fn serve_with(
    container: &ContainerHandle,
    options: BrokerOptions,
    listen: ListenOptions,
) -> (Broker, String) {
    let broker = Broker::new(options);
    let listener = broker
        .listen(container, "127.0.0.1:0", listen)
        .expect("broker listens");
    (broker, format!("amqp://127.0.0.1:{}", listener.port()))
}

/// [`serve_with`] with the default listen options.
pub fn serve(container: &ContainerHandle, options: BrokerOptions) -> (Broker, String) {
    serve_with(container, options, ListenOptions::default())
}

/// A message whose body is `i`.
pub fn numbered(i: i64) -> Message {
    Message::builder().body(i).build()
}

/// The body of a [`numbered`] message (-1 for any other).
pub fn number(m: &Message) -> i64 {
    m.body_value().and_then(Value::as_i64).unwrap_or(-1)
}

/// The `topic` capability, for a terminus.
pub fn topic_capability() -> Option<Vec<Symbol>> {
    Some(vec![Symbol::from_static(TOPIC)])
}

/// A sender on `url` (its own connection), opened within [`TIMEOUT`].
pub async fn sender(container: &ContainerHandle, url: &str) -> SenderHandle {
    tokio::time::timeout(
        TIMEOUT,
        container.open_sender(url, SenderOptions::default()),
    )
    .await
    .expect("the sender opens in time")
    .expect("sender opens")
}

/// Sends `m` and waits (bounded) for its outcome.
pub async fn send(s: &SenderHandle, m: Message) -> Outcome {
    tokio::time::timeout(TIMEOUT, s.send(m))
        .await
        .expect("an outcome in time")
        .expect("an outcome")
}

/// One connection to `base` that carries many links ([`ContainerHandle::connect_async`]), open within
/// [`TIMEOUT`].
pub async fn connect(container: &ContainerHandle, base: &str) -> AsyncConnectionHandle {
    tokio::time::timeout(
        TIMEOUT,
        container.connect_async(base, ConnectionOptions::default()),
    )
    .await
    .expect("the connection opens in time")
    .expect("the connection opens")
}

/// A receiver on `url` (its own connection) with a credit window of `window`, opened within [`TIMEOUT`].
pub async fn receiver(container: &ContainerHandle, url: &str, window: u32) -> ReceiverHandle {
    let options = ReceiverOptions::new().credit_window(window);
    tokio::time::timeout(TIMEOUT, container.open_receiver(url, options))
        .await
        .expect("the receiver opens in time")
        .expect("receiver opens")
}

/// The next message, within [`TIMEOUT`].
pub async fn recv(r: &mut ReceiverHandle) -> Received {
    tokio::time::timeout(TIMEOUT, r.recv())
        .await
        .expect("a message in time")
        .expect("the receiver is open")
}

/// A raw consumer of `address` on the broker at `base` (its `amqp://127.0.0.1:PORT` URL), driven by the
/// sans-IO engine over a blocking socket (see [`Driver`]) so that a test controls every frame, or kills the
/// socket without a `close`: connected, open, with a receiving link named `name` that has `credit`.
pub fn raw_consumer(base: &str, name: &str, address: &str, credit: u32) -> Driver {
    let (mut d, s) = raw_connection(base, name);
    let l = d
        .conn()
        .attach(s, LinkConfig::receiver(name, address))
        .expect("attaches");
    d.conn().add_credit(l, credit).expect("grants credit");
    d
}

/// A raw producer of `address` on the broker at `base`, as [`raw_consumer`]: its driver and its sending link
/// named `name`, attached (the broker's credit follows as `Event::LinkCredit`).
pub fn raw_producer(base: &str, name: &str, address: &str) -> (Driver, LinkId) {
    let (mut d, s) = raw_connection(base, name);
    let l = d
        .conn()
        .attach(s, LinkConfig::sender(name, address))
        .expect("attaches");
    (d, l)
}

/// A raw connection to the broker at `base` (its `amqp://127.0.0.1:PORT` URL) with container-id
/// `container_id`: connected, open, with one session begun.
pub fn raw_connection(base: &str, container_id: &str) -> (Driver, SessionId) {
    let port: u16 = base
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the broker's URL");
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut d =
        Driver::connect(addr, ConnectionConfig::client(container_id), TIMEOUT).expect("connects");
    d.conn().open().expect("opens");
    let s = d.conn().begin().expect("begins");
    (d, s)
}

/// Opens a dynamic receiver and reports the address the broker gave it.
pub struct DynamicClient(pub Option<tokio::sync::oneshot::Sender<String>>);

impl MessagingHandler for DynamicClient {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        let opts = ReceiverOptions::new().dynamic(true);
        c.open_receiver("", opts).expect("receiver opens");
    }
    fn on_receiver_open(&mut self, r: &mut Receiver<'_>) {
        if let (Some(tx), Some(address)) = (self.0.take(), r.address()) {
            let _ = tx.send(address);
        }
    }
}
