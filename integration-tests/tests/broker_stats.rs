//! The broker's numbers for metrics and management (#14), over loopback with clients on the async facade:
//! `Broker::stats` after sends, receives, releases, settles and expiry; connections, sessions and links as
//! they come and go; failed logins; and `Broker::purge` and `Broker::delete_queue`, whose links are
//! detached with `amqp:resource-deleted`.

use std::sync::Arc;
use std::time::Duration;

use nucleon::broker::{Broker, BrokerOptions, BrokerStats, QueueStats};
use nucleon::protocol::codec::Timestamp;
use nucleon::protocol::engine::{ScramAuthenticator, ScramCredential, ScramHash};
use nucleon::protocol::frame::ErrorCondition;
use nucleon::{ConnectionOptions, ListenOptions, Message, Outcome, SenderOptions};
use nucleon_integration_tests::broker::{
    container, receiver, recv, send, sender, serve_with, TIMEOUT,
};

fn queue(stats: &BrokerStats, name: &str) -> QueueStats {
    stats
        .queues
        .iter()
        .find(|q| q.name == name)
        .cloned()
        .unwrap_or_else(|| panic!("no queue {name} in {stats:?}"))
}

/// Waits (bounded) until the broker's numbers satisfy `done`, and returns them.
async fn until(broker: &Broker, what: &str, done: impl Fn(&BrokerStats) -> bool) -> BrokerStats {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let stats = broker.stats();
        if done(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: timed out at {stats:#?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[actix_rt::test]
async fn queue_numbers_follow_sends_receives_releases_and_settles() {
    let container = container(2);
    let (broker, base) = serve_with(
        &container,
        BrokerOptions::default(),
        ListenOptions::default(),
    );
    let url = format!("{base}/counted");
    let s = sender(&container, &url).await;
    for i in 0..3i64 {
        assert_eq!(send(&s, Message::with_body(i)).await, Outcome::Accepted);
    }
    let stats = broker.stats();
    let q = queue(&stats, "counted");
    assert_eq!(
        (q.depth, q.enqueued, q.delivered, q.unsettled),
        (3, 3, 0, 0)
    );
    assert!(q.bytes > 0, "three messages take room: {q:?}");
    assert_eq!(stats.memory, q.bytes);
    assert_eq!(stats.producers, 1);

    // Received and held unsettled: no longer waiting, still the broker's.
    let mut r = receiver(&container, &url, 3).await;
    let held: Vec<_> = [recv(&mut r).await, recv(&mut r).await, recv(&mut r).await].into();
    let stats = until(&broker, "three held", |s| {
        queue(s, "counted").unsettled == 3
    })
    .await;
    let q = queue(&stats, "counted");
    assert_eq!(
        (q.depth, q.delivered, q.redelivered, q.consumers),
        (0, 3, 0, 1)
    );
    assert!(q.bytes > 0, "held messages still take room: {q:?}");
    assert_eq!((stats.consumers, stats.producers, stats.links()), (1, 1, 2));

    // One released comes back to the same consumer: a redelivery.
    let mut held = held.into_iter();
    held.next().expect("one").release().expect("releases");
    let again = recv(&mut r).await;
    let stats = until(&broker, "redelivered", |s| {
        queue(s, "counted").delivered == 4
    })
    .await;
    assert_eq!(queue(&stats, "counted").redelivered, 1);

    // Accepted, they leave the broker.
    again.accept().expect("accepts");
    for m in held {
        m.accept().expect("accepts");
    }
    let stats = until(&broker, "all settled", |s| {
        queue(s, "counted").unsettled == 0
    })
    .await;
    let q = queue(&stats, "counted");
    assert_eq!((q.depth, q.bytes, q.enqueued, q.delivered), (0, 0, 3, 4));
    assert_eq!(stats.memory, 0);

    // Links and connections go with their clients.
    r.close().expect("closes");
    s.close().expect("closes");
    until(&broker, "links closed", |s| s.links() == 0).await;
    assert_eq!(queue(&broker.stats(), "counted").consumers, 0);
    container.stop();
}

#[actix_rt::test]
async fn connections_and_sessions_are_listed_while_open() {
    let container = container(2);
    let (broker, base) = serve_with(
        &container,
        BrokerOptions::default(),
        ListenOptions::default(),
    );
    assert_eq!(broker.stats().connections, 0);
    let s = sender(&container, &format!("{base}/listed")).await;
    let stats = until(&broker, "one connection", |s| s.connections == 1).await;
    assert_eq!(stats.sessions, 1);
    let listed = broker.connections();
    assert_eq!(listed.len(), 1);
    let c = &listed[0];
    assert_eq!((c.sessions, c.consumers, c.producers), (1, 0, 1));
    assert_eq!(c.user, "anonymous");
    assert!(c.peer.ip().is_loopback(), "{c:?}");
    s.close().expect("closes");
    container.stop();
    until(&broker, "the connection gone", |s| {
        s.connections == 0 && s.sessions == 0
    })
    .await;
    assert!(broker.connections().is_empty());
}

#[actix_rt::test]
async fn expired_and_dead_lettered_messages_are_counted_per_queue() {
    let container = container(2);
    let options = BrokerOptions {
        dead_letter_address: Some("dead".into()),
        ..BrokerOptions::default()
    };
    let (broker, base) = serve_with(&container, options, ListenOptions::default());
    let s = sender(&container, &format!("{base}/expiring")).await;
    let past = Message::builder()
        .absolute_expiry_time(Timestamp(1))
        .body(0i64)
        .build();
    assert_eq!(send(&s, past).await, Outcome::Accepted);
    assert_eq!(send(&s, Message::with_body(1i64)).await, Outcome::Accepted);
    let stats = broker.stats();
    let q = queue(&stats, "expiring");
    assert_eq!(
        (q.enqueued, q.expired, q.dead_lettered, q.depth),
        (2, 1, 1, 1)
    );
    let dead = queue(&stats, "dead");
    assert_eq!((dead.enqueued, dead.depth), (1, 1));
    assert_eq!((stats.expired, stats.dead_lettered), (1, 1));
    container.stop();
}

#[actix_rt::test]
async fn failed_logins_are_counted() {
    let container = container(2);
    let credential = ScramCredential::derive(ScramHash::Sha256, "secret", b"a salt of 16 b.", 4096);
    let listen = ListenOptions::new()
        .authenticator(Arc::new(
            ScramAuthenticator::new([("alice", credential)]).allow_plain(true),
        ))
        .allow_insecure_plain(true);
    let (broker, base) = serve_with(&container, BrokerOptions::default(), listen);
    let login = |password: &str| {
        ConnectionOptions::new()
            .user("alice")
            .password(password)
            .sasl_allowed_mechs(vec!["PLAIN".into()])
            .sasl_allow_insecure_mechs(true)
    };
    let url = format!("{base}/guarded");
    for _ in 0..2 {
        let refused = container
            .open_sender_with(&url, login("wrong"), SenderOptions::default())
            .await;
        assert!(refused.is_err(), "a wrong password opened");
    }
    container
        .open_sender_with(&url, login("secret"), SenderOptions::default())
        .await
        .expect("the right password opens");
    let stats = until(&broker, "two failures", |s| s.authentication_failures == 2).await;
    assert_eq!(stats.connections, 1, "the failed ones are gone: {stats:?}");
    assert_eq!(broker.connections()[0].user, "alice");
    container.stop();
}

#[actix_rt::test]
async fn purge_drops_waiting_messages_and_delete_detaches_the_queues_links() {
    let container = container(2);
    let (broker, base) = serve_with(
        &container,
        BrokerOptions::default(),
        ListenOptions::default(),
    );
    let url = format!("{base}/managed");
    let s = sender(&container, &url).await;
    for i in 0..4i64 {
        assert_eq!(send(&s, Message::with_body(i)).await, Outcome::Accepted);
    }
    assert_eq!(broker.purge("managed"), Some(4));
    assert_eq!(broker.queue_depth("managed"), Some(0));
    assert_eq!(broker.purge("nowhere"), None);
    assert_eq!(send(&s, Message::with_body(5i64)).await, Outcome::Accepted);

    let idle = sender(&container, &format!("{base}/idle")).await;
    for i in 0..2i64 {
        assert_eq!(send(&idle, Message::with_body(i)).await, Outcome::Accepted);
    }
    assert_eq!(broker.delete_queue("idle"), Some(2), "its waiting messages");
    assert_eq!(broker.queue_depth("idle"), None);

    let mut r = receiver(&container, &url, 1).await;
    let first = recv(&mut r).await;
    assert!(broker.delete_queue("managed").is_some());
    assert_eq!(broker.queue_depth("managed"), None);
    assert_eq!(broker.delete_queue("managed"), None);
    // The consumer is detached, and the producer's next message refused, with resource-deleted.
    let end = tokio::time::timeout(TIMEOUT, r.recv())
        .await
        .expect("the consumer ends in time");
    assert!(end.is_none(), "no more messages from a deleted queue");
    drop(first);
    match send(&s, Message::with_body(7i64)).await {
        Outcome::Rejected(Some(e)) => assert_eq!(e.condition, ErrorCondition::ResourceDeleted),
        other => panic!("sent to a deleted queue: {other:?}"),
    }
    until(&broker, "all links but idle's gone", |s| s.links() == 1).await;
    // What the deleted queue's consumer held left with it: the broker holds nothing.
    until(&broker, "memory freed", |s| s.memory == 0).await;
    container.stop();
}
