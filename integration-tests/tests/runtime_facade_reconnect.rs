//! The async facade with `ConnectionOptions::reconnect`, against the in-process broker: across a broker
//! restart on the same port a receiver's stream goes on (no `None`), sends made after it are accepted, the
//! links are attached again once (never a second link), and every send made meanwhile gets an outcome or
//! the transport-lost error (`Error::TransportLost`), none hangs; with a closed port as the main URL,
//! `connect_async` and a per-link `open_sender` get through on the failover URL; and sends in flight when
//! the first of two live brokers dies go on to the second.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nucleon::broker::{Broker, BrokerOptions};
use nucleon::{
    AsyncConnectionHandle, ConnectionOptions, ContainerHandle, ListenOptions, Outcome,
    ReceiverOptions, ReconnectOptions, SenderHandle, SenderOptions,
};
use nucleon_integration_tests::broker::{container, number, numbered, send, serve, TIMEOUT};

/// Polls `cond` until it holds, for at most [`TIMEOUT`].
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn reconnecting(failover_urls: Vec<String>) -> ConnectionOptions {
    ConnectionOptions::new().reconnect(
        ReconnectOptions::new()
            .delay(Duration::from_millis(10))
            .max_delay(Duration::from_millis(200))
            .failover_urls(failover_urls),
    )
}

async fn connect(
    container: &ContainerHandle,
    url: &str,
    options: ConnectionOptions,
) -> AsyncConnectionHandle {
    tokio::time::timeout(TIMEOUT, container.connect_async(url, options))
        .await
        .expect("the connection opens in time")
        .expect("the connection opens")
}

fn port_of(base: &str) -> u16 {
    base.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port in the URL")
}

/// A port nothing listens on.
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// What the concurrent senders saw: every send ends in one of these (a send that hangs fails the test).
#[derive(Default)]
struct Tally {
    accepted: Vec<i64>,
    lost: usize,
    other: Vec<String>,
}

/// `tasks` tasks sending numbered messages on `sender` until `stop`, each send bounded by [`TIMEOUT`].
fn send_continuously(
    sender: &SenderHandle,
    tasks: usize,
    stop: &Arc<AtomicBool>,
    next: &Arc<AtomicI64>,
    tally: &Arc<Mutex<Tally>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..tasks)
        .map(|_| {
            let (sender, stop, next, tally) =
                (sender.clone(), stop.clone(), next.clone(), tally.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let result = tokio::time::timeout(TIMEOUT, sender.send(numbered(i)))
                        .await
                        .unwrap_or_else(|_| panic!("send {i} hangs"));
                    {
                        let mut t = tally.lock().unwrap();
                        match result {
                            Ok(Outcome::Accepted) => t.accepted.push(i),
                            // A send in flight at the loss: its outcome is unknown (transport lost).
                            Err(e) if e.is_transport_lost() => t.lost += 1,
                            other => t.other.push(format!("{i}: {other:?}")),
                        }
                    }
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect()
}

async fn join_all(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        tokio::time::timeout(TIMEOUT, t)
            .await
            .expect("a sending task ends in time")
            .expect("a sending task does not panic");
    }
}

#[actix_rt::test]
async fn streams_and_sends_go_on_across_a_broker_restart_on_the_same_port() {
    const SENDERS: usize = 4;
    let client = container(2);
    let first_side = container(1);
    let (first, base) = serve(&first_side, BrokerOptions::default());
    let port = port_of(&base);
    let conn = connect(&client, &base, reconnecting(Vec::new())).await;
    let sender = conn
        .open_sender("restart", SenderOptions::default())
        .await
        .expect("the sender opens");
    let options = ReceiverOptions::new().credit_window(10);
    let mut receiver = conn
        .open_receiver("restart", options)
        .await
        .expect("the receiver opens");
    until("both links at the first broker", || {
        first
            .connections()
            .iter()
            .map(|c| (c.producers, c.consumers))
            .eq([(1, 1)])
    })
    .await;

    // The stream is consumed by a task of its own: it must not end while the broker restarts.
    let received = Arc::new(Mutex::new(BTreeSet::new()));
    let consumer = {
        let received = received.clone();
        tokio::spawn(async move {
            while let Some(m) = receiver.recv().await {
                received.lock().unwrap().insert(number(&m.message));
                // Settling a message of the lost transport fails quietly (the broker keeps it): fine here.
                let _ = m.accept();
            }
            receiver.end_reason()
        })
    };
    let (stop, next, tally): (Arc<AtomicBool>, Arc<AtomicI64>, Arc<Mutex<Tally>>) =
        Default::default();
    let tasks = send_continuously(&sender, SENDERS, &stop, &next, &tally);
    until("traffic before the restart", || {
        received.lock().unwrap().len() >= 50
    })
    .await;

    first_side.stop();
    // The second broker takes the first one's port as soon as it is free.
    let second_side = container(1);
    let second = Broker::new(BrokerOptions::default());
    let deadline = Instant::now() + TIMEOUT;
    let addr = format!("127.0.0.1:{port}");
    let _listener = loop {
        match second.listen(&second_side, &addr, ListenOptions::default()) {
            Ok(l) => break l,
            Err(e) => {
                assert!(Instant::now() < deadline, "the port stays taken: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    let restarted_at = next.load(Ordering::SeqCst);
    until("messages sent after the restart received", || {
        received
            .lock()
            .unwrap()
            .range(restarted_at + 50..)
            .next()
            .is_some()
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    join_all(tasks).await;
    assert!(!consumer.is_finished(), "the stream goes on (no None)");
    assert!(!conn.is_closed(), "the connection's error does not stick");

    // Once the sends stopped, what the second broker accepted is received, and later sends too.
    let last = next.load(Ordering::SeqCst);
    for i in last..last + 10 {
        assert_eq!(send(&sender, numbered(i)).await, Outcome::Accepted);
    }
    until("the last ten received", || {
        received.lock().unwrap().range(last..last + 10).count() == 10
    })
    .await;
    {
        let t = tally.lock().unwrap();
        assert!(t.other.is_empty(), "unexpected results: {:?}", t.other);
        assert!(
            t.accepted.iter().any(|&i| i >= restarted_at + 50),
            "sends after the restart are accepted"
        );
        assert!(
            t.lost <= SENDERS,
            "at most the sends in flight at the loss fail ({} did)",
            t.lost
        );
        let total = t.accepted.len() + t.lost;
        assert_eq!(total as i64, last, "every send got an outcome or an error");
    }
    // One connection at the second broker, with one producer and one consumer: no duplicate links.
    let links: Vec<_> = second
        .connections()
        .iter()
        .map(|c| (c.producers, c.consumers))
        .collect();
    assert_eq!(links, [(1, 1)], "each link attached again exactly once");

    conn.close().expect("closes");
    let why = tokio::time::timeout(TIMEOUT, consumer)
        .await
        .expect("the stream ends with the connection")
        .expect("joins");
    assert!(why.is_some(), "an ended stream says why");
    client.stop();
    second_side.stop();
}

#[actix_rt::test]
async fn with_the_main_url_down_connect_and_open_go_through_the_failover_url() {
    let client = container(1);
    let broker_side = container(1);
    let (broker, base) = serve(&broker_side, BrokerOptions::default());
    let dead = format!("amqp://127.0.0.1:{}", dead_port());

    let conn = connect(&client, &dead, reconnecting(vec![base.clone()])).await;
    let sender = tokio::time::timeout(
        TIMEOUT,
        conn.open_sender("failover", SenderOptions::default()),
    )
    .await
    .expect("opens in time")
    .expect("the sender opens through the failover URL");
    assert_eq!(send(&sender, numbered(1)).await, Outcome::Accepted);

    // A per-link sender: its connection fails over before its open fails.
    let own = tokio::time::timeout(
        TIMEOUT,
        client.open_sender_with(
            &format!("{dead}/failover"),
            reconnecting(vec![base.clone()]),
            SenderOptions::default(),
        ),
    )
    .await
    .expect("opens in time")
    .expect("the per-link sender opens through the failover URL");
    assert_eq!(send(&own, numbered(2)).await, Outcome::Accepted);
    assert_eq!(broker.queue_depth("failover"), Some(2));
    assert_eq!(broker.connections().len(), 2);
    client.stop();
    broker_side.stop();
}

#[actix_rt::test]
async fn sends_in_flight_when_the_first_broker_dies_go_to_the_second() {
    const SENDERS: usize = 4;
    let client = container(2);
    let first_side = container(1);
    let second_side = container(1);
    let (first, base1) = serve(&first_side, BrokerOptions::default());
    let (second, base2) = serve(&second_side, BrokerOptions::default());
    let conn = connect(&client, &base1, reconnecting(vec![base2])).await;
    let sender = conn
        .open_sender("moving", SenderOptions::default())
        .await
        .expect("the sender opens");
    let (stop, next, tally): (Arc<AtomicBool>, Arc<AtomicI64>, Arc<Mutex<Tally>>) =
        Default::default();
    let tasks = send_continuously(&sender, SENDERS, &stop, &next, &tally);
    until("traffic at the first broker", || {
        first.queue_depth("moving").unwrap_or(0) >= 50
    })
    .await;

    first_side.stop();
    until("traffic at the second broker", || {
        second.queue_depth("moving").unwrap_or(0) >= 50
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    join_all(tasks).await;

    let t = tally.lock().unwrap();
    assert!(t.other.is_empty(), "unexpected results: {:?}", t.other);
    assert!(t.lost <= SENDERS, "{} sends lost their outcome", t.lost);
    assert_eq!(
        (t.accepted.len() + t.lost) as i64,
        next.load(Ordering::SeqCst),
        "every send got an outcome or an error"
    );
    assert!(!conn.is_closed());
    let links: Vec<_> = second
        .connections()
        .iter()
        .map(|c| (c.producers, c.consumers))
        .collect();
    assert_eq!(links, [(1, 0)], "the sender attached once at the second");
    client.stop();
    second_side.stop();
}
