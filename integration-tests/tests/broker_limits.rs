//! The broker's limits (issue 14): `max_queue_depth` counts unsettled messages and holds for the anonymous
//! relay, `max_queue_bytes` and `max_memory` withhold credit (and the memory alarm clears once consumers take
//! messages), and `max_queues` refuses one queue too many. Every refusal is `amqp:resource-limit-exceeded`.

use std::time::Duration;

use nucleon::broker::{Broker, BrokerOptions};
use nucleon::protocol::engine::{Event, LinkId};
use nucleon::protocol::frame::{DeliveryState, ErrorCondition, Target};
use nucleon::{Error, ListenOptions, Message, Outcome, SenderOptions, Value};
use nucleon_integration_tests::broker::{
    container, numbered, raw_producer, receiver, send, sender, serve, TIMEOUT,
};
use nucleon_integration_tests::driver::Driver;

/// How long a send that must not get credit is given to show it does not (a bound on a negative: the
/// broker answers a send with room in well under a millisecond on loopback).
const NO_CREDIT: Duration = Duration::from_millis(300);

fn sized(i: i64, bytes: usize) -> Message {
    Message::builder()
        .body(Value::Binary(
            vec![u8::try_from(i % 251).unwrap_or(0); bytes].into(),
        ))
        .build()
}

fn is_full(outcome: &Outcome) -> bool {
    matches!(outcome, Outcome::Rejected(Some(e)) if e.condition == ErrorCondition::ResourceLimitExceeded)
}

#[actix_rt::test]
async fn the_anonymous_relay_honours_the_queue_depth() {
    let container = container(2);
    let (broker, base) = serve(
        &container,
        BrokerOptions {
            max_queue_depth: Some(5),
            ..BrokerOptions::default()
        },
    );
    let relay = tokio::time::timeout(
        TIMEOUT,
        container.open_sender(&base, SenderOptions::new().target(Target::default())),
    )
    .await
    .expect("in time")
    .expect("relay opens");
    let mut outcomes = Vec::new();
    for i in 0..20 {
        let m = Message::builder().to("relayed").body(i64::from(i)).build();
        outcomes.push(send(&relay, m).await);
    }
    let accepted = outcomes.iter().filter(|o| **o == Outcome::Accepted).count();
    assert_eq!(accepted, 5, "{outcomes:?}");
    assert!(outcomes[5..].iter().all(is_full), "{outcomes:?}");
    assert_eq!(broker.queue_depth("relayed"), Some(5));
    container.stop();
}

#[actix_rt::test]
async fn unsettled_messages_count_against_the_queue_depth() {
    let container = container(2);
    let (broker, base) = serve(
        &container,
        BrokerOptions {
            max_queue_depth: Some(5),
            ..BrokerOptions::default()
        },
    );
    let url = format!("{base}/held");
    // A consumer with a large window that settles nothing yet.
    let mut holder = receiver(&container, &url, 100).await;
    let producer = sender(&container, &url).await;
    for i in 0..5 {
        assert_eq!(send(&producer, numbered(i)).await, Outcome::Accepted);
    }
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(
            tokio::time::timeout(TIMEOUT, holder.recv())
                .await
                .expect("in time")
                .expect("a message"),
        );
    }
    assert_eq!(broker.queue_depth("held"), Some(0));
    assert_eq!(broker.queue_unsettled("held"), Some(5));
    // Five held: no room, so no credit for a sixth.
    let sixth = producer.send(numbered(5));
    tokio::pin!(sixth);
    assert!(
        tokio::time::timeout(NO_CREDIT, &mut sixth).await.is_err(),
        "no credit while five are held"
    );
    // One settled makes room: the sixth goes.
    held.remove(0).accept().expect("accepts");
    let outcome = tokio::time::timeout(TIMEOUT, sixth)
        .await
        .expect("credit once one was settled")
        .expect("an outcome");
    assert_eq!(outcome, Outcome::Accepted);
    assert_eq!(broker.queue_unsettled("held"), Some(5));
    container.stop();
}

#[actix_rt::test]
async fn a_full_queue_in_bytes_withholds_credit_until_it_drains() {
    let container = container(2);
    let (broker, base) = serve(
        &container,
        BrokerOptions {
            max_queue_bytes: Some(10_000),
            ..BrokerOptions::default()
        },
    );
    let url = format!("{base}/bytes");
    let producer = sender(&container, &url).await;
    let mut sent = 0;
    // Messages of about 1 KiB: credit stops at nine or ten of them.
    while let Ok(outcome) = tokio::time::timeout(NO_CREDIT, producer.send(sized(sent, 1000))).await
    {
        assert_eq!(outcome.expect("an outcome"), Outcome::Accepted);
        sent += 1;
        assert!(sent <= 12, "credit went on past the bytes limit");
    }
    let bytes = broker.queue_bytes("bytes").expect("the queue");
    // Credit is promised at the last message's size: the queue fills to within one message of the limit
    // and never past it.
    assert!(
        bytes <= 10_000 && bytes + 1100 > 10_000,
        "{bytes} bytes in {sent} messages"
    );
    let mut r = receiver(&container, &url, 10).await;
    for _ in 0..sent {
        tokio::time::timeout(TIMEOUT, r.recv())
            .await
            .expect("in time")
            .expect("a message")
            .accept()
            .expect("accepts");
    }
    assert_eq!(
        send(&producer, sized(99, 1000)).await,
        Outcome::Accepted,
        "credit again once drained"
    );
    container.stop();
}

#[actix_rt::test]
async fn the_memory_limit_stops_every_producer_until_consumers_take_messages() {
    let container = container(2);
    let (broker, base) = serve(
        &container,
        BrokerOptions {
            max_memory: Some(20_000),
            ..BrokerOptions::default()
        },
    );
    let (a_url, b_url) = (format!("{base}/a"), format!("{base}/b"));
    let a = sender(&container, &a_url).await;
    let b = sender(&container, &b_url).await;
    let mut sent = 0;
    // Fill through `a` until credit stops.
    while let Ok(outcome) = tokio::time::timeout(NO_CREDIT, a.send(sized(sent, 1000))).await {
        assert_eq!(outcome.expect("an outcome"), Outcome::Accepted);
        sent += 1;
        assert!(sent <= 40, "credit went on past the memory limit");
    }
    assert!(broker.memory_used() >= 20_000, "{}", broker.memory_used());
    // `b`'s queue is empty, but memory is over: `b` gets no more credit either (what it had is used up
    // first: at most one window).
    let mut b_sent = 0;
    while tokio::time::timeout(NO_CREDIT, b.send(sized(b_sent, 1000)))
        .await
        .is_ok()
    {
        b_sent += 1;
        assert!(b_sent <= 10, "b's credit went on past the memory alarm");
    }
    // Consumers take from `a`: the alarm clears and `b`'s waiting producer is woken with credit.
    let mut r = receiver(&container, &a_url, 10).await;
    let waiting = b.send(sized(100, 1000));
    tokio::pin!(waiting);
    for _ in 0..sent {
        tokio::time::timeout(TIMEOUT, r.recv())
            .await
            .expect("in time")
            .expect("a message")
            .accept()
            .expect("accepts");
    }
    let outcome = tokio::time::timeout(TIMEOUT, waiting)
        .await
        .expect("b gets credit once memory is below the limit")
        .expect("an outcome");
    assert_eq!(outcome, Outcome::Accepted);
    container.stop();
}

#[actix_rt::test]
async fn one_queue_too_many_is_refused() {
    let container = container(2);
    let (broker, base) = serve(
        &container,
        BrokerOptions {
            max_queues: Some(3),
            ..BrokerOptions::default()
        },
    );
    for q in ["q1", "q2", "q3"] {
        let s = sender(&container, &format!("{base}/{q}")).await;
        assert_eq!(send(&s, numbered(1)).await, Outcome::Accepted);
    }
    let refused = container
        .open_sender(&format!("{base}/q4"), SenderOptions::default())
        .await
        .expect_err("a fourth queue");
    match &refused {
        Error::LinkRefused { error: Some(e) } => {
            assert_eq!(e.condition, ErrorCondition::ResourceLimitExceeded, "{e:?}")
        }
        other => panic!("{other}"),
    }
    assert_eq!(broker.queue_depth("q4"), None);
    // An existing queue is still fine.
    let s = sender(&container, &format!("{base}/q1")).await;
    assert_eq!(send(&s, numbered(2)).await, Outcome::Accepted);
    container.stop();
}

#[actix_rt::test]
async fn the_sweep_deletes_idle_queues_made_on_demand_and_drops_expired_messages() {
    let container = container(2);
    let (broker, base) = serve(
        &container,
        BrokerOptions {
            auto_delete_after: Some(Duration::ZERO),
            ..BrokerOptions::default()
        },
    );
    // `junk`: used once and left empty. `kept`: holds a message. `watched`: has a consumer.
    let junk = sender(&container, &format!("{base}/junk")).await;
    assert_eq!(send(&junk, numbered(1)).await, Outcome::Accepted);
    let mut r = receiver(&container, &format!("{base}/junk"), 10).await;
    r.recv()
        .await
        .expect("a message")
        .accept()
        .expect("accepts");
    let kept = sender(&container, &format!("{base}/kept")).await;
    assert_eq!(send(&kept, numbered(2)).await, Outcome::Accepted);
    let _watcher = receiver(&container, &format!("{base}/watched"), 10).await;
    // `junk`'s producer and consumer are still attached: nothing is idle yet.
    broker.sweep();
    assert_eq!(broker.queue_depth("junk"), Some(0));
    junk.close().expect("closes");
    r.close().expect("closes");
    kept.close().expect("closes");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while broker.queue_depth("junk").is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "junk is deleted once its links are gone"
        );
        broker.sweep();
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        broker.queue_depth("kept"),
        Some(1),
        "a queue with messages stays"
    );
    assert_eq!(
        broker.queue_depth("watched"),
        Some(0),
        "a queue with a consumer stays"
    );

    // An expired message nobody consumes is dropped by the sweep, and counted.
    let s = sender(&container, &format!("{base}/kept")).await;
    let short = Message::builder().ttl(1).body(3i64).build();
    assert_eq!(send(&s, short).await, Outcome::Accepted);
    assert_eq!(broker.queue_depth("kept"), Some(2));
    // The ttl is 1 ms: past it, the next sweep takes it out.
    tokio::time::sleep(Duration::from_millis(20)).await;
    broker.sweep();
    assert_eq!(broker.queue_depth("kept"), Some(1));
    assert_eq!(broker.expired(), 1);
    container.stop();
}

/// A TCP proxy to `target` for one connection; `freeze` stops it forwarding while both sockets stay open,
/// as a host that vanished without closing anything.
async fn freezable_proxy(
    target: std::net::SocketAddr,
) -> (u16, std::sync::Arc<tokio::sync::Notify>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binds");
    let port = listener.local_addr().expect("an address").port();
    let freeze = std::sync::Arc::new(tokio::sync::Notify::new());
    let frozen = freeze.clone();
    actix_rt::spawn(async move {
        let (client, _) = listener.accept().await.expect("accepts");
        let server = tokio::net::TcpStream::connect(target)
            .await
            .expect("connects");
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        tokio::select! {
            _ = tokio::io::copy(&mut cr, &mut sw) => {}
            _ = tokio::io::copy(&mut sr, &mut cw) => {}
            _ = frozen.notified() => {}
        }
        // Nothing more is forwarded, and nothing is closed, until the test ends.
        std::future::pending::<()>().await;
        drop((cr, cw, sr, sw));
    });
    (port, freeze)
}

#[actix_rt::test]
async fn a_consumer_whose_host_vanishes_is_dropped_at_the_idle_timeout_and_its_messages_return() {
    let container = container(2);
    let broker = Broker::new(BrokerOptions::default());
    let options = ListenOptions::new().idle_timeout(Duration::from_secs(1));
    let listener = broker
        .listen(&container, "127.0.0.1:0", options)
        .expect("broker listens");
    let base = format!("amqp://127.0.0.1:{}", listener.port());
    let producer = sender(&container, &format!("{base}/vanish")).await;
    assert_eq!(send(&producer, numbered(7)).await, Outcome::Accepted);
    let (port, freeze) = freezable_proxy(listener.local_addr()).await;
    let mut doomed = receiver(&container, &format!("amqp://127.0.0.1:{port}/vanish"), 10).await;
    let held = tokio::time::timeout(TIMEOUT, doomed.recv())
        .await
        .expect("in time")
        .expect("a message");
    assert_eq!(broker.queue_unsettled("vanish"), Some(1));
    freeze.notify_one();
    // The broker hears nothing from it for its idle time-out, closes it, and the message goes back.
    let mut next = receiver(&container, &format!("{base}/vanish"), 10).await;
    let again = tokio::time::timeout(TIMEOUT, next.recv())
        .await
        .expect("the message comes back after the idle time-out")
        .expect("a message");
    assert_eq!(again.message.body_value(), Some(&Value::Long(7)));
    assert_eq!(again.message.delivery_count(), 1, "a duplicate says so");
    drop(held);
    container.stop();
}

/// The link's credit once it is `wanted` (now, or after flows from the broker), run within `d`'s deadline.
fn credit_when(d: &mut Driver, link: LinkId, wanted: impl Fn(u32) -> bool) -> u32 {
    let now = d.connection().credit(link).expect("a link");
    if wanted(now) {
        return now;
    }
    d.run_until("a flow", |_, e| match e {
        Event::LinkCredit { link: l, credit } if *l == link && wanted(*credit) => Some(*credit),
        _ => None,
    })
    .expect("the broker's flow")
}

/// Sends `m` unsettled and runs `d` until the broker accepts it.
fn send_raw(d: &mut Driver, link: LinkId, tag: u8, m: &Message) {
    let id = d
        .conn()
        .send(link, vec![tag].into(), m.to_bytes(), false)
        .expect("sends");
    let state = d
        .run_until("the outcome", |_, e| match e {
            Event::RemoteDisposition {
                delivery, state, ..
            } if *delivery == id => Some(state.clone()),
            _ => None,
        })
        .expect("an outcome");
    assert!(
        matches!(state, Some(DeliveryState::Accepted(_))),
        "message {tag}: {state:?}"
    );
}

#[actix_rt::test]
async fn a_producer_of_small_messages_gets_a_wide_window_and_a_larger_message_narrows_it() {
    let container = container(2);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let producer = std::thread::spawn(move || {
        let (mut d, l) = raw_producer(&base, "raw-producer", "window");
        let first = credit_when(&mut d, l, |c| c > 0);
        // Small messages: the window widens to what fits its bytes, for a producer that streams them.
        send_raw(&mut d, l, 0, &sized(0, 40));
        let wide = credit_when(&mut d, l, |c| c > first);
        // A message of 4 KiB: the credit left is cut back to that size's window at once.
        send_raw(&mut d, l, 1, &sized(1, 4096));
        let narrow = credit_when(&mut d, l, |c| c < wide - 1);
        send_raw(&mut d, l, 2, &sized(2, 40));
        (first, wide, narrow)
    });
    let (first, wide, narrow) = tokio::task::spawn_blocking(move || producer.join())
        .await
        .expect("joins")
        .expect("the producer ran");
    assert_eq!(first, 10, "the first window, before any message");
    assert!(wide >= 100, "a wide window for small messages: {wide}");
    assert_eq!(narrow, 10, "the window of a 4 KiB message");
    assert_eq!(broker.queue_depth("window"), Some(3));
    container.stop();
}
