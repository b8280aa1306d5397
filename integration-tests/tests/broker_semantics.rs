//! The in-process broker's message semantics over loopback, with clients on the async facade (and the raw
//! engine driver where the facade has no way to say it): redelivery marks (delivery-count, first-acquirer)
//! [AMQP 1.0 §3.2.1], `modified` annotations [AMQP 1.0 §3.4.5], a settlement with no outcome (the message goes
//! back), the maximum number of deliveries and the
//! dead-letter queue, ttl and absolute-expiry-time, two priority levels, a queue that a `topic` capability
//! cannot turn into a topic, and the address of a deleted temporary queue, refused with `amqp:not-found`.

use std::time::Duration;

use nucleon::broker::BrokerOptions;
use nucleon::protocol::codec::{Symbol, Timestamp};
use nucleon::protocol::engine::LinkId;
use nucleon::protocol::frame::{Error as AmqpError, ErrorCondition, Source, Target};
use nucleon::{
    Connection, ConnectionOptions, ContainerHandle, Delivery, Message, MessagingHandler, Outcome,
    Receiver, ReceiverHandle, ReceiverOptions, Sender, SenderHandle, SenderOptions, Value,
};
use nucleon_integration_tests::broker::{
    container, number, raw_consumer, receiver, recv, send, sender, serve, topic_capability,
    DynamicClient, TIMEOUT,
};

fn first_acquirer(m: &Message) -> bool {
    m.header().is_some_and(|h| h.first_acquirer)
}

/// A sender with no target address: the anonymous relay.
async fn relay(container: &ContainerHandle, base: &str) -> SenderHandle {
    container
        .open_sender(base, SenderOptions::new().target(Target::default()))
        .await
        .expect("relay sender opens")
}

async fn send_accepted(sender: &SenderHandle, m: Message) {
    assert_eq!(send(sender, m).await, Outcome::Accepted);
}

/// Receives `n` messages, accepts them, and returns their numbers in order.
async fn accept_n(r: &mut ReceiverHandle, n: usize) -> Vec<i64> {
    let mut got = Vec::new();
    for _ in 0..n {
        let m = recv(r).await;
        got.push(number(&m.message));
        m.accept().expect("accepts");
    }
    got
}

/// Waits (bounded) until `done` holds.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: timed out");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn condition_of(outcome: &Outcome) -> Option<&ErrorCondition> {
    match outcome {
        Outcome::Rejected(Some(e)) => Some(&e.condition),
        _ => None,
    }
}

#[actix_rt::test]
async fn a_redelivered_message_says_it_may_be_a_duplicate() {
    let container = container(4);
    let (_broker, base) = serve(&container, BrokerOptions::default());
    let url = format!("{base}/redelivered");
    let s = sender(&container, &url).await;
    let m = Message::builder().first_acquirer(true).body(0i64).build();
    send_accepted(&s, m).await;

    // A consumer gets it first, and its connection is lost with it unsettled.
    let mut a = receiver(&container, &url, 1).await;
    let first = recv(&mut a).await;
    assert_eq!(first.message.delivery_count(), 0);
    assert!(first_acquirer(&first.message), "as the producer sent it");
    let mut b = receiver(&container, &url, 1).await;
    a.close().expect("closes");
    let again = recv(&mut b).await;
    drop(first);
    assert_eq!(
        again.message.delivery_count(),
        1,
        "lost unsettled: a failed attempt, it may have been processed"
    );
    assert!(!first_acquirer(&again.message), "acquired before");

    // Released: not a failed attempt [AMQP 1.0 §3.4.4]; modified with delivery-failed: one more.
    again.release().expect("releases");
    let m = recv(&mut b).await;
    assert_eq!(m.message.delivery_count(), 1, "a release counts nothing");
    m.modify(true, false).expect("modifies");
    let m = recv(&mut b).await;
    assert_eq!(m.message.delivery_count(), 2, "delivery-failed counts");
    m.accept().expect("accepts");

    // A released message was acquired before all the same.
    send_accepted(
        &s,
        Message::builder().first_acquirer(true).body(1i64).build(),
    )
    .await;
    let m = recv(&mut b).await;
    assert!(first_acquirer(&m.message));
    m.release().expect("releases");
    let m = recv(&mut b).await;
    assert_eq!(number(&m.message), 1);
    assert!(!first_acquirer(&m.message), "acquired before");
    assert_eq!(m.message.delivery_count(), 0);
    m.accept().expect("accepts");
    container.stop();
}

#[actix_rt::test]
async fn modified_annotations_are_merged_into_the_message() {
    use nucleon::protocol::codec::Map;
    use nucleon::protocol::engine::Event;
    use nucleon::protocol::frame::{DeliveryState, Modified};

    let container = container(4);
    let (_broker, base) = serve(&container, BrokerOptions::default());
    let url = format!("{base}/annotated");
    let m = Message::builder()
        .message_annotation("x-opt-kept", 1i64)
        .message_annotation("x-opt-replaced", 1i64)
        .body(0i64)
        .build();
    send_accepted(&sender(&container, &url).await, m).await;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let base = base.clone();
    std::thread::spawn(move || {
        let mut d = raw_consumer(&base, "modifier", "annotated", 1);
        let delivery = d
            .run_until("a delivery", |_, e| match e {
                Event::Delivery { delivery, .. } => Some(*delivery),
                _ => None,
            })
            .expect("a delivery");
        let mut annotations = Map::new();
        annotations.insert(Symbol::from_static("x-opt-replaced"), 2i64);
        annotations.insert(Symbol::from_static("x-opt-added"), 3i64);
        let state = DeliveryState::Modified(Modified {
            delivery_failed: false,
            undeliverable_here: false,
            message_annotations: Some(annotations),
        });
        d.conn()
            .disposition(delivery, Some(state), true)
            .expect("modifies");
        d.close().expect("closes");
        let _ = done_tx.send(());
    });
    tokio::time::timeout(TIMEOUT, done_rx)
        .await
        .expect("in time")
        .expect("the modifier ran");
    let mut r = receiver(&container, &url, 1).await;
    let m = recv(&mut r).await;
    let annotation = |k: &str| {
        m.message
            .message_annotations()
            .and_then(|a| a.get_str(k))
            .and_then(Value::as_i64)
    };
    assert_eq!(annotation("x-opt-kept"), Some(1));
    assert_eq!(annotation("x-opt-replaced"), Some(2), "replaced");
    assert_eq!(annotation("x-opt-added"), Some(3), "added");
    assert_eq!(m.message.delivery_count(), 0, "not delivery-failed");
    m.accept().expect("accepts");
    container.stop();
}

#[actix_rt::test]
async fn a_message_settled_with_no_outcome_goes_back_and_one_accepted_does_not() {
    use nucleon::protocol::engine::Event;
    use nucleon::protocol::frame::{Accepted, DeliveryState};

    let container = container(4);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let url = format!("{base}/unsure");
    let s = sender(&container, &url).await;
    for i in 0..2 {
        send_accepted(&s, Message::with_body(i as i64)).await;
    }
    let (settled_tx, settled_rx) = tokio::sync::oneshot::channel();
    let (close_tx, close_rx) = std::sync::mpsc::channel::<()>();
    let consumer = std::thread::spawn(move || {
        let mut d = raw_consumer(&base, "unsure", "unsure", 2);
        let mut got = Vec::new();
        while got.len() < 2 {
            let delivery = d
                .run_until("a delivery", |_, e| match e {
                    Event::Delivery { delivery, .. } => Some(*delivery),
                    _ => None,
                })
                .expect("a delivery");
            got.push(delivery);
        }
        // The first is settled with no outcome [AMQP 1.0 §3.4]: not consumed. The second is accepted.
        d.conn().disposition(got[0], None, true).expect("settles");
        let accepted = DeliveryState::Accepted(Accepted {});
        d.conn()
            .disposition(got[1], Some(accepted), true)
            .expect("accepts");
        d.run_for(Duration::from_millis(1), |_, _| {})
            .expect("writes them");
        let _ = settled_tx.send(());
        // Connected until the test has looked: a lost link would give back what it held anyway.
        let _ = close_rx.recv_timeout(TIMEOUT);
        d.close().expect("closes");
    });
    tokio::time::timeout(TIMEOUT, settled_rx)
        .await
        .expect("in time")
        .expect("the consumer settled");
    until(
        "the one with no outcome is back, the accepted one gone",
        || broker.queue_depth("unsure") == Some(1) && broker.queue_unsettled("unsure") == Some(0),
    )
    .await;
    let _ = close_tx.send(());
    tokio::task::spawn_blocking(move || consumer.join())
        .await
        .expect("joins")
        .expect("the consumer ran");
    let mut r = receiver(&container, &url, 2).await;
    let m = recv(&mut r).await;
    assert_eq!(number(&m.message), 0);
    assert_eq!(m.message.delivery_count(), 1, "it may have been processed");
    m.accept().expect("accepts");
    container.stop();
}

#[actix_rt::test]
async fn a_message_given_back_too_often_goes_to_the_dead_letter_queue() {
    let container = container(4);
    let options = BrokerOptions {
        max_deliveries: Some(3),
        dead_letter_address: Some("DLQ".into()),
        ..BrokerOptions::default()
    };
    let (broker, base) = serve(&container, options);
    let url = format!("{base}/poison");
    let s = sender(&container, &url).await;
    send_accepted(&s, Message::with_body(0i64)).await;
    let mut r = receiver(&container, &url, 1).await;
    // Released, modified as failed, lost with its link: each counts as a delivery.
    recv(&mut r).await.release().expect("releases");
    recv(&mut r).await.modify(true, false).expect("modifies");
    let third = recv(&mut r).await;
    r.close().expect("closes");
    until("the third delivery given back", || {
        broker.max_deliveries_reached() == 1
    })
    .await;
    drop(third);
    assert_eq!(broker.dead_lettered(), 1);
    assert_eq!(broker.queue_depth("poison"), Some(0), "not queued again");
    let mut dead = receiver(&container, &format!("{base}/DLQ"), 1).await;
    let m = recv(&mut dead).await;
    assert_eq!(number(&m.message), 0);
    assert_eq!(m.message.delivery_count(), 2, "two failed attempts");
    m.accept().expect("accepts");

    // With the default options a message always released stops after 10 deliveries, dropped and counted.
    let (looping, base) = serve(&container, BrokerOptions::default());
    let url = format!("{base}/loop");
    send_accepted(&sender(&container, &url).await, Message::with_body(1i64)).await;
    let mut r = receiver(&container, &url, 1).await;
    for _ in 0..10 {
        recv(&mut r).await.release().expect("releases");
    }
    until("the tenth release", || {
        looping.max_deliveries_reached() == 1
    })
    .await;
    assert_eq!(looping.dead_lettered(), 0, "no dead-letter queue: dropped");
    assert_eq!(looping.queue_depth("loop"), Some(0));
    container.stop();
}

#[actix_rt::test]
async fn expired_messages_are_never_delivered_and_are_counted() {
    let container = container(4);
    let options = BrokerOptions {
        dead_letter_address: Some("expired".into()),
        ..BrokerOptions::default()
    };
    let (broker, base) = serve(&container, options);
    let url = format!("{base}/perishable");
    let s = sender(&container, &url).await;
    const TTL: u32 = 50;
    let sent = tokio::time::Instant::now();
    for i in 0..3i64 {
        send_accepted(&s, Message::builder().ttl(TTL).body(i).build()).await;
    }
    let past = Message::builder()
        .absolute_expiry_time(Timestamp(1_000))
        .body(3i64)
        .build();
    send_accepted(&s, past).await;
    let future = Message::builder()
        .absolute_expiry_time(Timestamp(i64::MAX))
        .body(4i64)
        .build();
    send_accepted(&s, future).await;
    send_accepted(&s, Message::builder().ttl(600_000).body(5i64).build()).await;
    // Each ttl ran from the message's arrival, which was before its send was accepted.
    tokio::time::sleep_until(sent + Duration::from_millis(u64::from(TTL) + 1)).await;
    let mut r = receiver(&container, &url, 10).await;
    assert_eq!(accept_n(&mut r, 2).await, [4, 5], "only the live ones");
    until("every expiry counted", || broker.expired() == 4).await;
    assert_eq!(broker.queue_depth("perishable"), Some(0));
    assert_eq!(broker.dead_lettered(), 4);
    let mut dead = receiver(&container, &format!("{base}/expired"), 10).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        let m = recv(&mut dead).await;
        assert_eq!(m.message.ttl(), None, "a dead letter does not expire");
        assert_eq!(m.message.absolute_expiry_time(), None);
        got.push(number(&m.message));
        m.accept().expect("accepts");
    }
    got.sort();
    assert_eq!(got, [0, 1, 2, 3]);
    container.stop();
}

#[actix_rt::test]
async fn higher_priority_messages_are_delivered_first_in_order_within_a_level() {
    let container = container(4);
    let (_broker, base) = serve(&container, BrokerOptions::default());
    let url = format!("{base}/prioritised");
    let s = sender(&container, &url).await;
    // 0..5 at priorities 0 to 4 (one level), 5..10 at 5 to 9 (the other).
    for i in 0..10u8 {
        let m = Message::builder()
            .priority(i % 5 + if i < 5 { 0 } else { 5 })
            .body(i64::from(i))
            .build();
        send_accepted(&s, m).await;
    }
    let mut r = receiver(&container, &url, 10).await;
    assert_eq!(accept_n(&mut r, 10).await, [5, 6, 7, 8, 9, 0, 1, 2, 3, 4]);

    // A released high-priority message goes back into its level, before every normal one.
    for i in 0..10u8 {
        let priority = if i < 5 { 4 } else { 9 };
        let m = Message::builder()
            .priority(priority)
            .body(i64::from(i))
            .build();
        send_accepted(&s, m).await;
    }
    let mut one = receiver(&container, &format!("{base}/prioritised"), 1).await;
    r.close().expect("closes");
    let mut got = Vec::new();
    let mut released = false;
    while got.len() < 10 {
        let m = recv(&mut one).await;
        let n = number(&m.message);
        if n == 5 && !released {
            released = true;
            m.release().expect("releases");
        } else {
            got.push(n);
            m.accept().expect("accepts");
        }
    }
    let (high, normal) = got.split_at(5);
    let mut high = high.to_vec();
    high.sort();
    assert_eq!(high, [5, 6, 7, 8, 9], "the high level first");
    assert_eq!(normal, [0, 1, 2, 3, 4], "then the normal one, in order");
    container.stop();
}

/// Attaches one link and reports the condition the broker detached it with (`None`: it was not refused).
struct Attacher {
    address: String,
    link: Link,
    tx: Option<tokio::sync::oneshot::Sender<Option<ErrorCondition>>>,
}

enum Link {
    Consumer(ReceiverOptions),
    Producer(SenderOptions),
}

impl Attacher {
    fn report(&mut self, condition: Option<ErrorCondition>) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(condition);
        }
    }
}

impl MessagingHandler for Attacher {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        match &self.link {
            Link::Consumer(o) => drop(c.open_receiver(&self.address, o.clone()).expect("opens")),
            Link::Producer(o) => drop(c.open_sender(&self.address, o.clone()).expect("opens")),
        }
    }
    fn on_receiver_error(&mut self, _r: &mut Receiver<'_>, e: &AmqpError) {
        self.report(Some(e.condition.clone()));
    }
    fn on_sender_error(&mut self, _s: &mut Sender<'_>, e: &AmqpError) {
        self.report(Some(e.condition.clone()));
    }
    fn on_receiver_close(&mut self, _r: &mut Receiver<'_>) {
        self.report(None);
    }
    fn on_sender_close(&mut self, _s: &mut Sender<'_>) {
        self.report(None);
    }
    fn on_sendable(&mut self, _s: &mut Sender<'_>) {
        // The broker gave credit: it serves the link.
        self.report(None);
    }
    fn on_message(&mut self, _d: &mut Delivery<'_>, _m: Message) {
        self.report(None);
    }
}

/// The condition the broker refuses a link to `address` with (it is attached, then closed with it).
async fn refusal(
    container: &ContainerHandle,
    base: &str,
    address: &str,
    link: Link,
) -> ErrorCondition {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let attacher = Attacher {
        address: address.to_owned(),
        link,
        tx: Some(tx),
    };
    let handle = container
        .connect(base, ConnectionOptions::default(), attacher)
        .expect("connects");
    let condition = tokio::time::timeout(TIMEOUT, rx)
        .await
        .expect("an answer in time")
        .expect("the attacher ran");
    handle.close().expect("closes");
    condition.unwrap_or_else(|| panic!("the link to {address} was served, not refused"))
}

#[actix_rt::test]
async fn a_queue_cannot_be_turned_into_a_topic() {
    let container = container(4);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let url = format!("{base}/orders");
    let s = sender(&container, &url).await;
    send_accepted(&s, Message::with_body(0i64)).await;

    let subscriber = Link::Consumer(ReceiverOptions::new().source(Source {
        address: Some("orders".into()),
        capabilities: topic_capability(),
        ..Source::default()
    }));
    assert_eq!(
        refusal(&container, &base, "orders", subscriber).await,
        ErrorCondition::PreconditionFailed,
        "a topic consumer of a queue"
    );
    let publisher = Link::Producer(SenderOptions::new().target(Target {
        address: Some("orders".into()),
        capabilities: topic_capability(),
        ..Target::default()
    }));
    assert_eq!(
        refusal(&container, &base, "orders", publisher).await,
        ErrorCondition::PreconditionFailed,
        "a topic producer of a queue"
    );

    assert_eq!(broker.subscriptions("orders"), None, "still not a topic");
    send_accepted(&s, Message::with_body(1i64)).await;
    let mut r = receiver(&container, &url, 10).await;
    assert_eq!(accept_n(&mut r, 2).await, [0, 1], "the queue kept both");
    container.stop();
}

#[actix_rt::test]
async fn replies_to_a_deleted_temporary_queue_are_refused_and_do_not_recreate_it() {
    let container = container(4);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let (tx, rx) = tokio::sync::oneshot::channel();
    let requester = container
        .connect(&base, ConnectionOptions::default(), DynamicClient(Some(tx)))
        .expect("connects");
    let reply_to = tokio::time::timeout(TIMEOUT, rx)
        .await
        .expect("in time")
        .expect("an address");
    // A producer attached while it exists, and the anonymous relay.
    let attached = sender(&container, &format!("{base}/{reply_to}")).await;
    let relay = relay(&container, &base).await;
    send_accepted(&attached, Message::with_body(0i64)).await;
    let reply = || Message::builder().to(reply_to.clone()).body(1i64).build();
    send_accepted(&relay, reply()).await;

    requester.close().expect("closes");
    until("the temporary queue deleted", || {
        broker.queue_depth(&reply_to).is_none()
    })
    .await;
    let outcome = send(&relay, reply()).await;
    assert_eq!(
        condition_of(&outcome),
        Some(&ErrorCondition::NotFound),
        "relayed: {outcome:?}"
    );
    assert_eq!(broker.queue_depth(&reply_to), None, "not made again");
    let outcome = send(&attached, Message::with_body(2i64)).await;
    assert_eq!(
        condition_of(&outcome),
        Some(&ErrorCondition::NotFound),
        "through a link attached before: {outcome:?}"
    );
    let producer = Link::Producer(SenderOptions::default());
    assert_eq!(
        refusal(&container, &base, &reply_to, producer).await,
        ErrorCondition::NotFound,
        "a producer attaching to it"
    );
    let consumer = Link::Consumer(ReceiverOptions::default());
    assert_eq!(
        refusal(&container, &base, &reply_to, consumer).await,
        ErrorCondition::NotFound,
        "a consumer attaching to it"
    );
    assert_eq!(broker.queue_depth(&reply_to), None, "still not made again");
    container.stop();
}

/// A subscriber of topic `news` on a raw connection of container `client`: a link named `name`, durable
/// (terminus durability unsettled-state, expiry-policy never) or not, with 10 credit, attached.
fn subscriber(
    base: &str,
    client: &str,
    links: &[(&str, bool)],
) -> (nucleon_integration_tests::driver::Driver, Vec<LinkId>) {
    use nucleon::protocol::engine::{Event, LinkConfig};
    use nucleon::protocol::frame::{TerminusDurability, TerminusExpiryPolicy};
    let (mut d, s) = nucleon_integration_tests::broker::raw_connection(base, client);
    let mut ids = Vec::new();
    for &(name, durable) in links {
        let mut config = LinkConfig::receiver(name, "news");
        let source = config.source.as_mut().expect("a source");
        source.capabilities = topic_capability();
        if durable {
            source.durable = TerminusDurability::UnsettledState;
            source.expiry_policy = TerminusExpiryPolicy::Never;
        }
        let l = d.conn().attach(s, config).expect("attaches");
        d.conn().add_credit(l, 10).expect("grants credit");
        d.run_until("the broker's attach", |_, e| {
            matches!(e, Event::LinkRemoteAttach(x) if *x == l).then_some(())
        })
        .expect("attached");
        ids.push(l);
    }
    (d, ids)
}

#[actix_rt::test]
async fn a_durable_subscription_keeps_collecting_while_detached_until_its_link_is_closed() {
    use nucleon::protocol::engine::Event;
    let container = container(4);
    let (broker, base) = serve(&container, BrokerOptions::default());

    // First life: a durable and an ordinary subscriber; the connection is then lost without a close.
    let b = base.clone();
    let first = std::thread::spawn(move || {
        let (d, _) = subscriber(&b, "durable-client", &[("sub", true), ("plain", false)]);
        drop(d);
    });
    tokio::task::spawn_blocking(move || first.join())
        .await
        .expect("joins")
        .expect("the first subscriber ran");
    until("the lost connection is gone", || {
        broker.connections().is_empty()
    })
    .await;
    assert_eq!(
        broker.subscriptions("news"),
        Some(1),
        "the durable subscription stays, the ordinary one goes with its link"
    );

    let s = sender(&container, &format!("{base}/news")).await;
    for i in 0..3 {
        send_accepted(&s, Message::with_body(i as i64)).await;
    }
    assert_eq!(broker.dropped_without_subscribers(), 0, "it kept them");

    // Second life: the same container-id and link name resume it; closing the link deletes it.
    let b = base.clone();
    let second = std::thread::spawn(move || {
        let (mut d, ids) = subscriber(&b, "durable-client", &[("sub", true)]);
        let mut got = Vec::new();
        while got.len() < 3 {
            let (delivery, payload) = d
                .run_until("a delivery", |_, e| match e {
                    Event::Delivery {
                        delivery, payload, ..
                    } => Some((*delivery, payload.clone())),
                    _ => None,
                })
                .expect("a delivery");
            got.push(number(&Message::decode(payload).expect("decodes")));
            d.conn()
                .disposition(
                    delivery,
                    Some(nucleon::protocol::frame::DeliveryState::Accepted(
                        nucleon::protocol::frame::Accepted {},
                    )),
                    true,
                )
                .expect("accepts");
        }
        d.conn()
            .detach(ids[0], true, None)
            .expect("closes the link");
        d.run_until("the broker's detach", |_, e| {
            matches!(e, Event::LinkRemoteDetach { .. }).then_some(())
        })
        .expect("detached");
        got
    });
    let got = tokio::task::spawn_blocking(move || second.join())
        .await
        .expect("joins")
        .expect("the second subscriber ran");
    assert_eq!(
        got,
        [0, 1, 2],
        "what was published while it was away, in order"
    );
    until("the closed subscription is deleted", || {
        broker.subscriptions("news") == Some(0)
    })
    .await;
    container.stop();
}
