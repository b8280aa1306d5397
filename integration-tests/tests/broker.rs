//! The in-process broker (`nucleon::broker`) over loopback, with clients on the async facade: round trip,
//! competing consumers, redelivery after a lost consumer, release to the head, reject, dynamic sources,
//! anonymous relay (and its offered capability), SASL PLAIN, queue-depth backpressure, drain, COPY
//! browsing, pre-settled consumers, a consumer killed while it holds unsettled deliveries, and topics
//! (by prefix and by capability; subscriptions made and deleted with their links; release within one
//! subscription; producers of a topic keep their credit when queues are bounded).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use nucleon::broker::{Broker, BrokerOptions};
use nucleon::protocol::engine::PlainAuthenticator;
use nucleon::protocol::frame::definitions::DISTRIBUTION_MODE_COPY;
use nucleon::protocol::frame::{Source, Target};
use nucleon::{
    Connection, ConnectionOptions, ContainerHandle, Delivery, DeliveryMode, ListenOptions, Message,
    MessagingHandler, Outcome, Receiver, ReceiverHandle, ReceiverOptions, SenderOptions,
};
use nucleon_integration_tests::broker::{
    container, number, numbered, raw_consumer, receiver, recv, serve, topic_capability,
    DynamicClient, TIMEOUT,
};
use tokio::sync::mpsc;

async fn send_all(container: &ContainerHandle, url: &str, range: std::ops::Range<i64>) {
    let sender = container
        .open_sender(url, SenderOptions::default())
        .await
        .expect("sender opens");
    for i in range {
        let outcome = tokio::time::timeout(TIMEOUT, sender.send(numbered(i)))
            .await
            .expect("in time")
            .expect("an outcome");
        assert_eq!(outcome, Outcome::Accepted, "message {i}");
    }
    sender.close().expect("closes");
}

#[actix_rt::test]
async fn messages_sent_to_a_queue_are_received_in_order() {
    let _ = env_logger::builder().is_test(true).try_init();
    let container = container(4);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let url = format!("{base}/orders");
    send_all(&container, &url, 0..100).await;
    assert_eq!(broker.queue_depth("orders"), Some(100));
    let mut r = receiver(&container, &url, 10).await;
    for i in 0..100 {
        let m = recv(&mut r).await;
        assert_eq!(number(&m.message), i);
        m.accept().expect("accepts");
    }
    container.stop();
}

#[actix_rt::test]
async fn competing_consumers_get_every_message_once() {
    let container = container(4);
    let (_broker, base) = serve(&container, BrokerOptions::default());
    let url = format!("{base}/work");
    let mut a = receiver(&container, &url, 10).await;
    let mut b = receiver(&container, &url, 10).await;
    const N: i64 = 1000;
    let sending = send_all(&container, &url, 0..N);
    let receiving = async {
        let mut seen = Vec::new();
        let (mut from_a, mut from_b) = (0, 0);
        while seen.len() < N as usize {
            tokio::select! {
                m = recv(&mut a) => { from_a += 1; seen.push(number(&m.message)); m.accept().expect("accepts"); }
                m = recv(&mut b) => { from_b += 1; seen.push(number(&m.message)); m.accept().expect("accepts"); }
            }
        }
        (seen, from_a, from_b)
    };
    let ((), (seen, from_a, from_b)) = futures::join!(sending, receiving);
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), N as usize, "no duplicates");
    assert_eq!(unique, (0..N).collect(), "no loss");
    assert!(
        from_a > 0 && from_b > 0,
        "both consumers got work: {from_a}/{from_b}"
    );
    container.stop();
}

#[actix_rt::test]
async fn a_lost_consumer_connection_gives_its_unsettled_messages_to_another() {
    let container = container(4);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let url = format!("{base}/jobs");
    send_all(&container, &url, 0..20).await;
    let mut a = receiver(&container, &url, 10).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(recv(&mut a).await);
    }
    // Closing the connection with deliveries unsettled: the broker must put them back.
    a.close().expect("closes");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while broker.queue_depth("jobs") != Some(20) {
        assert!(tokio::time::Instant::now() < deadline, "messages came back");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(held);
    let mut b = receiver(&container, &url, 10).await;
    for i in 0..20 {
        let m = recv(&mut b).await;
        assert_eq!(number(&m.message), i, "nothing lost, original order");
        m.accept().expect("accepts");
    }
    container.stop();
}

#[actix_rt::test]
async fn release_puts_a_message_back_at_the_head_and_reject_drops_it() {
    // Where exactly a returned message lands relative to messages already on their way depends on when the
    // consumer's credit reaches the broker, so this checks what is certain over the wire: a released or
    // modified message comes back (delivery-failed counted), a rejected one never does, nothing is lost.
    // The queue's own test checks that returned messages go back to the head in their original order.
    let container = container(4);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let url = format!("{base}/retry");
    send_all(&container, &url, 0..4).await;
    let mut r = receiver(&container, &url, 1).await;
    let mut zero_seen = 0;
    let mut accepted = Vec::new();
    while accepted.len() < 3 || zero_seen < 3 {
        let m = recv(&mut r).await;
        match number(&m.message) {
            0 => {
                zero_seen += 1;
                match zero_seen {
                    1 => m.release().expect("releases"),
                    2 => m.modify(true, false).expect("modifies"),
                    _ => {
                        assert_eq!(m.message.delivery_count(), 1, "delivery-failed counted");
                        m.reject(None).expect("rejects");
                    }
                }
            }
            n => {
                accepted.push(n);
                m.accept().expect("accepts");
            }
        }
    }
    accepted.sort();
    assert_eq!(accepted, [1, 2, 3], "each other message exactly once");
    assert_eq!(
        zero_seen, 3,
        "released and modified came back; rejected did not"
    );
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while broker.rejected() != 1 || broker.queue_depth("retry") != Some(0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the reject counted, the queue empty"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    container.stop();
}

#[actix_rt::test]
async fn anonymous_relay_routes_by_to() {
    let container = container(4);
    let (_broker, base) = serve(&container, BrokerOptions::default());
    let sender = container
        .open_sender(&base, SenderOptions::new().target(Target::default()))
        .await
        .expect("sender opens");
    let m = Message::builder().to("relayed").body(7i64).build();
    assert_eq!(sender.send(m).await.expect("an outcome"), Outcome::Accepted);
    let m = Message::builder().body(8i64).build();
    assert!(
        matches!(
            sender.send(m).await.expect("an outcome"),
            Outcome::Rejected(_)
        ),
        "no target and no `to`: rejected"
    );
    let mut r = receiver(&container, &format!("{base}/relayed"), 10).await;
    let got = recv(&mut r).await;
    assert_eq!(number(&got.message), 7);
    got.accept().expect("accepts");
    container.stop();
}

#[actix_rt::test]
async fn a_dynamic_source_gets_a_unique_temporary_queue() {
    let container = container(4);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let mut addresses = Vec::new();
    let mut handles = Vec::new();
    for _ in 0..2 {
        let (tx, rx) = tokio::sync::oneshot::channel();
        handles.push(
            container
                .connect(&base, ConnectionOptions::default(), DynamicClient(Some(tx)))
                .expect("connects"),
        );
        let address = tokio::time::timeout(TIMEOUT, rx)
            .await
            .expect("in time")
            .expect("an address");
        addresses.push(address);
    }
    assert_ne!(addresses[0], addresses[1], "unique addresses");
    assert_eq!(broker.queue_depth(&addresses[0]), Some(0));
    handles[0].close().expect("closes");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while broker.queue_depth(&addresses[0]).is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "deleted with its link"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(broker.queue_depth(&addresses[1]), Some(0));
    container.stop();
}

#[actix_rt::test]
async fn sasl_plain_is_required_when_users_are_configured() {
    let container = container(4);
    let broker = Broker::new(BrokerOptions::default());
    let options = ListenOptions::new()
        // PLAIN over loopback TCP, offered only when asked for by name.
        .allow_insecure_plain(true)
        .authenticator(Arc::new(PlainAuthenticator::new([("alice", "secret")])));
    let listener = broker
        .listen(&container, "127.0.0.1:0", options)
        .expect("listens");
    let port = listener.port();
    let insecure = || ConnectionOptions::new().sasl_allow_insecure_mechs(true);
    let ok = container
        .open_sender_with(
            &format!("amqp://alice:secret@127.0.0.1:{port}/q"),
            insecure(),
            SenderOptions::default(),
        )
        .await
        .expect("the right password is accepted");
    assert_eq!(
        ok.send(numbered(1)).await.expect("an outcome"),
        Outcome::Accepted
    );
    let wrong = container
        .open_sender_with(
            &format!("amqp://alice:wrong@127.0.0.1:{port}/q"),
            insecure(),
            SenderOptions::default(),
        )
        .await;
    assert!(wrong.is_err(), "a wrong password is refused");
    let anonymous = container
        .open_sender(
            &format!("amqp://127.0.0.1:{port}/q"),
            SenderOptions::default(),
        )
        .await;
    assert!(anonymous.is_err(), "anonymous is refused");
    container.stop();
}

#[actix_rt::test]
async fn a_full_queue_holds_its_producers_back_until_it_drains() {
    let container = container(4);
    let (broker, base) = serve(
        &container,
        BrokerOptions {
            max_queue_depth: Some(5),
            ..BrokerOptions::default()
        },
    );
    let url = format!("{base}/bounded");
    let sender = container
        .open_sender(&url, SenderOptions::default())
        .await
        .expect("sender opens");
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sends: Vec<_> = (0..20)
        .map(|i| {
            let sender = sender.clone();
            let accepted = accepted.clone();
            actix_rt::spawn(async move {
                let outcome = sender.send(numbered(i)).await.expect("an outcome");
                assert_eq!(outcome, Outcome::Accepted);
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        5,
        "the producer is held at the queue's depth"
    );
    assert_eq!(broker.queue_depth("bounded"), Some(5));
    let mut r = receiver(&container, &url, 10).await;
    let mut seen = HashSet::new();
    for _ in 0..20 {
        let m = recv(&mut r).await;
        seen.insert(number(&m.message));
        m.accept().expect("accepts");
    }
    assert_eq!(seen.len(), 20, "the producer resumed as the queue drained");
    for s in sends {
        tokio::time::timeout(TIMEOUT, s)
            .await
            .expect("in time")
            .expect("the send task ends");
    }
    container.stop();
}

/// Reports the capabilities the broker offered in its `open`.
struct CapabilitiesClient(Option<tokio::sync::oneshot::Sender<Vec<String>>>);

impl MessagingHandler for CapabilitiesClient {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        let offered = c
            .remote_offered_capabilities()
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        if let Some(tx) = self.0.take() {
            let _ = tx.send(offered);
        }
        c.close();
    }
}

#[actix_rt::test]
async fn the_broker_offers_anonymous_relay() {
    let container = container(4);
    let (_broker, base) = serve(&container, BrokerOptions::default());
    let (tx, rx) = tokio::sync::oneshot::channel();
    container
        .connect(
            &base,
            ConnectionOptions::default(),
            CapabilitiesClient(Some(tx)),
        )
        .expect("connects");
    let offered = tokio::time::timeout(TIMEOUT, rx)
        .await
        .expect("in time")
        .expect("the capabilities");
    assert!(
        offered.iter().any(|c| c == "ANONYMOUS-RELAY"),
        "offered: {offered:?}"
    );
    container.stop();
}

/// What a [`ReceivingClient`] saw.
#[derive(Debug, PartialEq)]
enum Seen {
    /// A message's number, and whether it arrived settled.
    Message(i64, bool),
    /// The drain finished, leaving this much credit.
    DrainFinished(u32),
}

/// Opens one receiver with the given options; with `drain`, grants that much credit and drains at once.
struct ReceivingClient {
    address: String,
    options: ReceiverOptions,
    drain: Option<u32>,
    tx: mpsc::UnboundedSender<Seen>,
}

impl MessagingHandler for ReceivingClient {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        c.open_receiver(&self.address, self.options.clone())
            .expect("receiver opens");
    }
    fn on_receiver_open(&mut self, r: &mut Receiver<'_>) {
        if let Some(n) = self.drain {
            r.add_credit(n).expect("grants credit");
            r.drain().expect("drains");
        }
    }
    fn on_message(&mut self, d: &mut Delivery<'_>, message: Message) {
        let _ = self.tx.send(Seen::Message(number(&message), d.settled()));
    }
    fn on_receiver_drain_finish(&mut self, r: &mut Receiver<'_>) {
        let _ = self.tx.send(Seen::DrainFinished(r.credit()));
    }
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("an event in time")
        .expect("the client runs")
}

#[actix_rt::test]
async fn drain_sends_what_the_queue_has_and_gives_back_the_rest_of_the_credit() {
    let container = container(4);
    let (broker, base) = serve(&container, BrokerOptions::default());
    send_all(&container, &format!("{base}/drained"), 0..3).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = ReceivingClient {
        address: "drained".into(),
        options: ReceiverOptions::new().credit_window(0),
        drain: Some(10),
        tx,
    };
    let handle = container
        .connect(&base, ConnectionOptions::default(), client)
        .expect("connects");
    for i in 0..3 {
        assert_eq!(next_seen(&mut rx).await, Seen::Message(i, false));
    }
    assert_eq!(
        next_seen(&mut rx).await,
        Seen::DrainFinished(0),
        "the drain finished with no credit left"
    );
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while broker.queue_depth("drained") != Some(0) {
        assert!(tokio::time::Instant::now() < deadline, "the queue emptied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    handle.close().expect("closes");
    container.stop();
}

#[actix_rt::test]
async fn copy_distribution_browses_without_consuming() {
    let container = container(4);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let url = format!("{base}/browsed");
    send_all(&container, &url, 0..5).await;
    let mut browser = container
        .open_receiver(
            &url,
            ReceiverOptions::new()
                .source(Source {
                    address: Some("browsed".into()),
                    distribution_mode: Some(DISTRIBUTION_MODE_COPY),
                    ..Source::default()
                })
                .credit_window(10),
        )
        .await
        .expect("browser opens");
    for i in 0..5 {
        let m = recv(&mut browser).await;
        assert_eq!(number(&m.message), i, "browsed in order");
        m.accept().expect("accepts");
    }
    browser.close().expect("closes");
    assert_eq!(broker.queue_depth("browsed"), Some(5), "nothing consumed");
    let mut r = receiver(&container, &url, 10).await;
    for i in 0..5 {
        let m = recv(&mut r).await;
        assert_eq!(number(&m.message), i, "every message is still there");
        m.accept().expect("accepts");
    }
    container.stop();
}

#[actix_rt::test]
async fn a_pre_settled_consumer_gets_messages_settled_and_they_leave_the_queue() {
    let container = container(4);
    let (broker, base) = serve(&container, BrokerOptions::default());
    send_all(&container, &format!("{base}/fire"), 0..5).await;
    assert_eq!(broker.queue_depth("fire"), Some(5));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = ReceivingClient {
        address: "fire".into(),
        options: ReceiverOptions::new()
            .delivery_mode(DeliveryMode::AtMostOnce)
            .credit_window(10),
        drain: None,
        tx,
    };
    let handle = container
        .connect(&base, ConnectionOptions::default(), client)
        .expect("connects");
    for i in 0..5 {
        assert_eq!(
            next_seen(&mut rx).await,
            Seen::Message(i, true),
            "arrived settled"
        );
    }
    // Nothing unsettled to give back: closing the consumer leaves the queue empty.
    handle.close().expect("closes");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(broker.queue_depth("fire"), Some(0), "at most once: gone");
    container.stop();
}

#[actix_rt::test]
async fn modified_undeliverable_here_is_not_sent_to_the_same_consumer_again() {
    let container = container(4);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let url = format!("{base}/elsewhere");
    send_all(&container, &url, 0..3).await;
    let mut a = receiver(&container, &url, 1).await;
    let first = recv(&mut a).await;
    assert_eq!(number(&first.message), 0);
    first.modify(false, true).expect("modifies");
    for i in 1..3 {
        let m = recv(&mut a).await;
        assert_eq!(number(&m.message), i, "the refused message is skipped");
        m.accept().expect("accepts");
    }
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while broker.queue_depth("elsewhere") != Some(1) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "0 waits in the queue"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut b = receiver(&container, &url, 1).await;
    let again = recv(&mut b).await;
    assert_eq!(number(&again.message), 0, "another consumer gets it");
    assert_eq!(again.message.delivery_count(), 0, "not a delivery failure");
    again.accept().expect("accepts");
    assert!(
        tokio::time::timeout(Duration::from_millis(200), a.recv())
            .await
            .is_err(),
        "nothing more for the consumer that refused it"
    );
    container.stop();
}

/// A consumer whose process dies (its socket just goes away, no `close`) while it holds unsettled
/// deliveries: the broker puts them back and another consumer gets every message, in order.
#[actix_rt::test]
async fn a_killed_consumer_connection_loses_nothing() {
    use nucleon::protocol::engine::Event;

    let container = container(4);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let url = format!("{base}/fragile");
    send_all(&container, &url, 0..20).await;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let base = base.clone();
    std::thread::spawn(move || {
        let mut d = raw_consumer(&base, "doomed", "fragile", 5);
        let mut held = 0;
        d.run_until("five unsettled deliveries", |_, e| {
            if matches!(e, Event::Delivery { settled: false, .. }) {
                held += 1;
            }
            (held == 5).then_some(())
        })
        .expect("five deliveries");
        // The process "dies": the socket goes away with no close frame and nothing settled.
        drop(d);
        let _ = done_tx.send(held);
    });
    let held = tokio::time::timeout(TIMEOUT, done_rx)
        .await
        .expect("in time")
        .expect("the doomed consumer ran");
    assert_eq!(held, 5);
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while broker.queue_depth("fragile") != Some(20) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the held messages came back"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut r = receiver(&container, &url, 10).await;
    for i in 0..20 {
        let m = recv(&mut r).await;
        assert_eq!(number(&m.message), i, "nothing lost, original order");
        m.accept().expect("accepts");
    }
    container.stop();
}

/// Options whose addresses starting with `chat/` are topics (and, with `max_queue_depth`, bounded queues).
fn topic_options(max_queue_depth: Option<usize>) -> BrokerOptions {
    BrokerOptions {
        max_queue_depth,
        topic_prefixes: vec!["chat/".into()],
        ..BrokerOptions::default()
    }
}

/// Waits (bounded) until the topic at `address` has `n` subscriptions.
async fn until_subscriptions(broker: &Broker, address: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while broker.subscriptions(address) != Some(n) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{address} has {n} subscriptions (now {:?})",
            broker.subscriptions(address)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Receives and accepts `range`, in order.
async fn expect_in_order(r: &mut ReceiverHandle, range: std::ops::Range<i64>, who: &str) {
    for i in range {
        let m = recv(r).await;
        assert_eq!(number(&m.message), i, "{who}: every message, in order");
        m.accept().expect("accepts");
    }
}

#[actix_rt::test]
async fn every_subscriber_of_a_topic_gets_every_message_and_a_queue_still_splits_them() {
    let container = container(4);
    let (broker, base) = serve(&container, topic_options(None));
    const N: i64 = 100;
    let topic = format!("{base}/chat/lobby");
    let mut a = receiver(&container, &topic, 10).await;
    let mut b = receiver(&container, &topic, 10).await;
    assert_eq!(broker.subscriptions("chat/lobby"), Some(2));
    send_all(&container, &topic, 0..N).await;
    expect_in_order(&mut a, 0..N, "a").await;
    expect_in_order(&mut b, 0..N, "b").await;
    assert_eq!(
        broker.queue_depth("chat/lobby"),
        None,
        "subscriptions are not queues"
    );
    assert_eq!(broker.dropped_without_subscribers(), 0);
    a.close().expect("closes");
    b.close().expect("closes");

    let queue = format!("{base}/work");
    let mut a = receiver(&container, &queue, 10).await;
    let mut b = receiver(&container, &queue, 10).await;
    assert_eq!(broker.subscriptions("work"), None, "not a topic");
    send_all(&container, &queue, 0..N).await;
    let mut seen = Vec::new();
    let (mut from_a, mut from_b) = (0, 0);
    while seen.len() < N as usize {
        tokio::select! {
            m = recv(&mut a) => { from_a += 1; seen.push(number(&m.message)); m.accept().expect("accepts"); }
            m = recv(&mut b) => { from_b += 1; seen.push(number(&m.message)); m.accept().expect("accepts"); }
        }
    }
    let unique: HashSet<i64> = seen.iter().copied().collect();
    assert_eq!(unique, (0..N).collect(), "each message once");
    assert_eq!(seen.len(), N as usize, "no duplicates");
    assert!(
        from_a > 0 && from_b > 0,
        "a queue's consumers share: {from_a}/{from_b}"
    );
    container.stop();
}

#[actix_rt::test]
async fn a_topic_declared_by_capability_reaches_every_subscriber_also_through_the_anonymous_relay()
{
    let container = container(4);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let url = format!("{base}/news");
    let subscriber = || {
        ReceiverOptions::new()
            .source(Source {
                address: Some("news".into()),
                capabilities: topic_capability(),
                ..Source::default()
            })
            .credit_window(10)
    };
    let mut a = container
        .open_receiver(&url, subscriber())
        .await
        .expect("subscribes");
    let mut b = container
        .open_receiver(&url, subscriber())
        .await
        .expect("subscribes");
    assert_eq!(broker.subscriptions("news"), Some(2));
    // Once declared, the address stays a topic: a consumer without the capability subscribes too.
    let mut c = receiver(&container, &url, 10).await;
    assert_eq!(broker.subscriptions("news"), Some(3));

    let producer = container
        .open_sender(
            &url,
            SenderOptions::new().target(Target {
                address: Some("news".into()),
                capabilities: topic_capability(),
                ..Target::default()
            }),
        )
        .await
        .expect("producer opens");
    for i in 0..10 {
        let outcome = tokio::time::timeout(TIMEOUT, producer.send(numbered(i)))
            .await
            .expect("in time")
            .expect("an outcome");
        assert_eq!(outcome, Outcome::Accepted);
    }
    let relay = container
        .open_sender(&base, SenderOptions::new().target(Target::default()))
        .await
        .expect("relay sender opens");
    let m = Message::builder().to("news").body(10i64).build();
    assert_eq!(relay.send(m).await.expect("an outcome"), Outcome::Accepted);
    for (r, who) in [(&mut a, "a"), (&mut b, "b"), (&mut c, "c")] {
        expect_in_order(r, 0..11, who).await;
    }
    assert_eq!(broker.queue_depth("news"), None, "never a queue");

    // A producer's capability declares a topic too; with no subscriber its message is dropped.
    let alerts = container
        .open_sender(
            &format!("{base}/alerts"),
            SenderOptions::new().target(Target {
                address: Some("alerts".into()),
                capabilities: topic_capability(),
                ..Target::default()
            }),
        )
        .await
        .expect("producer opens");
    assert_eq!(
        alerts.send(numbered(0)).await.expect("an outcome"),
        Outcome::Accepted
    );
    assert_eq!(broker.subscriptions("alerts"), Some(0));
    assert_eq!(broker.queue_depth("alerts"), None);
    assert_eq!(broker.dropped_without_subscribers(), 1);
    container.stop();
}

/// Subscribes to one address and closes its link (not its connection) after the first message, which it
/// reports (messages already on their way when it closed are not).
struct OneShotSubscriber {
    address: String,
    tx: Option<tokio::sync::oneshot::Sender<i64>>,
}

impl MessagingHandler for OneShotSubscriber {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        c.open_receiver(&self.address, ReceiverOptions::default())
            .expect("receiver opens");
    }
    fn on_message(&mut self, d: &mut Delivery<'_>, message: Message) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(number(&message));
            d.accept();
            d.receiver().close();
        }
    }
}

#[actix_rt::test]
async fn a_subscription_goes_with_its_link_or_connection_and_a_new_one_starts_empty() {
    let container = container(4);
    let (broker, base) = serve(&container, topic_options(None));
    let url = format!("{base}/chat/room");
    let mut a = receiver(&container, &url, 10).await;
    let (tx, one_shot) = tokio::sync::oneshot::channel();
    let one_shot_connection = container
        .connect(
            &base,
            ConnectionOptions::default(),
            OneShotSubscriber {
                address: "chat/room".into(),
                tx: Some(tx),
            },
        )
        .expect("connects");
    until_subscriptions(&broker, "chat/room", 2).await;
    send_all(&container, &url, 0..5).await;
    let first = tokio::time::timeout(TIMEOUT, one_shot)
        .await
        .expect("in time")
        .expect("the subscriber got a message");
    assert_eq!(first, 0);
    // Its link closed: its subscription (and what was still in it) is gone, its connection stays.
    until_subscriptions(&broker, "chat/room", 1).await;
    send_all(&container, &url, 5..10).await;
    expect_in_order(&mut a, 0..10, "a").await;

    let mut late = receiver(&container, &url, 10).await;
    assert_eq!(broker.subscriptions("chat/room"), Some(2));
    send_all(&container, &url, 10..15).await;
    expect_in_order(
        &mut late,
        10..15,
        "a later subscriber gets only later messages",
    )
    .await;
    expect_in_order(&mut a, 10..15, "a").await;

    // A lost connection deletes its subscription too.
    a.close().expect("closes");
    until_subscriptions(&broker, "chat/room", 1).await;
    one_shot_connection.close().expect("closes");
    container.stop();
}

#[actix_rt::test]
async fn a_released_message_comes_back_to_its_own_subscriber_only() {
    let container = container(4);
    let (broker, base) = serve(&container, topic_options(None));
    let url = format!("{base}/chat/retry");
    let mut a = receiver(&container, &url, 1).await;
    let mut b = receiver(&container, &url, 1).await;
    assert_eq!(broker.subscriptions("chat/retry"), Some(2));
    send_all(&container, &url, 0..3).await;
    let mut released = false;
    let mut accepted = Vec::new();
    while accepted.len() < 3 {
        let m = recv(&mut a).await;
        let n = number(&m.message);
        if n == 0 && !released {
            released = true;
            m.release().expect("releases");
        } else {
            accepted.push(n);
            m.accept().expect("accepts");
        }
    }
    accepted.sort();
    assert_eq!(accepted, [0, 1, 2], "the released message came back to a");
    expect_in_order(&mut b, 0..3, "b, once each").await;
    // Next for both is the next message published: b got no copy of a's release, a no extra one.
    send_all(&container, &url, 3..4).await;
    expect_in_order(&mut a, 3..4, "a").await;
    expect_in_order(&mut b, 3..4, "b").await;
    container.stop();
}

#[actix_rt::test]
async fn a_topic_producer_keeps_its_credit_and_a_full_subscription_rejects_what_it_cannot_hold() {
    let container = container(4);
    let (broker, base) = serve(&container, topic_options(Some(2)));
    let url = format!("{base}/chat/busy");
    // No subscriber: every message is accepted (send_all fails on a send that gets no credit in time).
    send_all(&container, &url, 0..20).await;
    assert_eq!(broker.dropped_without_subscribers(), 20);
    // A subscriber that reads nothing yet: its subscription holds two messages (one sent to it and not
    // settled, one waiting), and a third publish is rejected, not lost and not held beyond the bound.
    let mut r = receiver(&container, &url, 1).await;
    send_all(&container, &url, 20..22).await;
    let sender = container
        .open_sender(&url, SenderOptions::default())
        .await
        .expect("sender opens");
    match sender.send(numbered(22)).await.expect("an outcome") {
        Outcome::Rejected(Some(e)) => assert_eq!(
            e.condition,
            nucleon::protocol::frame::ErrorCondition::ResourceLimitExceeded,
            "{e:?}"
        ),
        other => panic!("a publish to a full subscription: {other:?}"),
    }
    expect_in_order(&mut r, 20..22, "the subscriber").await;
    // Room again once it took them.
    assert_eq!(
        sender.send(numbered(23)).await.expect("an outcome"),
        Outcome::Accepted
    );
    expect_in_order(&mut r, 23..24, "the subscriber").await;
    container.stop();
}
