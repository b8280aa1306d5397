//! `ContainerHandle::connect_async`: one facade connection carrying many links, against the in-process
//! broker. Forty links opened at once share one connection and each message reaches its own receiver; a
//! dropped receiver gives back what it held at once while the connection and its other links go on; closing
//! one sender leaves the others alone; a connection the broker's side kills fails its links with a typed
//! error and resolves `closed()`; and the per-link `open_sender` closes its connection with its last handle.

use std::time::{Duration, Instant};

use nucleon::broker::{Broker, BrokerOptions};
use nucleon::{
    AsyncConnectionHandle, Error, Outcome, ReceiverHandle, ReceiverOptions, SenderOptions,
};
use nucleon_integration_tests::broker::{
    connect, container, number, numbered, recv, send, serve, TIMEOUT,
};

/// How long a dropped receiver's messages may take to come back: far below any idle timeout (none is
/// set here, so without the link's detach they would stay with the dropped consumer for good).
const GIVEN_BACK: Duration = Duration::from_secs(5);

/// Polls `cond` until it holds, for at most [`TIMEOUT`].
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn open_receiver(conn: &AsyncConnectionHandle, address: &str, window: u32) -> ReceiverHandle {
    let options = ReceiverOptions::new().credit_window(window);
    tokio::time::timeout(TIMEOUT, conn.open_receiver(address, options))
        .await
        .expect("the receiver opens in time")
        .expect("the receiver opens")
}

fn producers(broker: &Broker) -> usize {
    broker.connections().iter().map(|c| c.producers).sum()
}

#[actix_rt::test]
async fn forty_links_opened_at_once_share_one_connection_and_each_gets_its_own_messages() {
    const LINKS: i64 = 20;
    const EACH: i64 = 5;
    let container = container(2);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let conn = connect(&container, &base).await;

    let senders = futures::future::join_all((0..LINKS).map(|i| {
        let conn = conn.clone();
        async move {
            conn.open_sender(&format!("q-{i}"), SenderOptions::default())
                .await
                .expect("sender opens")
        }
    }));
    let receivers = futures::future::join_all((0..LINKS).map(|i| {
        let conn = conn.clone();
        async move { open_receiver(&conn, &format!("q-{i}"), 10).await }
    }));
    let (senders, mut receivers) =
        tokio::time::timeout(TIMEOUT, futures::future::join(senders, receivers))
            .await
            .expect("forty links open in time");

    let listed = broker.connections();
    assert_eq!(listed.len(), 1, "one connection carries every link");
    assert_eq!(
        (listed[0].producers, listed[0].consumers),
        (LINKS as usize, LINKS as usize)
    );

    // Every sender sends its numbers at once; each receiver must get exactly its own.
    let sends = senders.iter().enumerate().flat_map(|(i, s)| {
        (0..EACH).map(move |j| async move { send(s, numbered(i as i64 * 100 + j)).await })
    });
    let outcomes = futures::future::join_all(sends).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Accepted),
        "{outcomes:?}"
    );
    for (i, r) in receivers.iter_mut().enumerate() {
        let mut got = Vec::new();
        for _ in 0..EACH {
            let m = recv(r).await;
            got.push(number(&m.message));
            m.accept().expect("accepts");
        }
        // The sends of one sender were concurrent: their order is not defined.
        got.sort_unstable();
        let want: Vec<i64> = (0..EACH).map(|j| i as i64 * 100 + j).collect();
        assert_eq!(
            got, want,
            "receiver {i} gets exactly the messages sent to q-{i}"
        );
    }
    assert_eq!(broker.connections().len(), 1);
    conn.close().expect("closes");
    container.stop();
}

#[actix_rt::test]
async fn a_dropped_receiver_gives_back_what_it_held_at_once_and_the_connection_goes_on() {
    let container = container(2);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let conn = connect(&container, &base).await;
    let sender = conn
        .open_sender("held", SenderOptions::default())
        .await
        .expect("sender opens");
    let mut first = open_receiver(&conn, "held", 10).await;
    for i in 0..3 {
        assert_eq!(send(&sender, numbered(i)).await, Outcome::Accepted);
    }
    // The broker gives all three to the first consumer; it takes one and keeps it, unsettled, so that only
    // the link's detach can give it back.
    let taken = recv(&mut first).await;
    until("all three held by the consumer", || {
        broker.queue_unsettled("held") == Some(3)
    })
    .await;
    drop(first);

    let mut second = open_receiver(&conn, "held", 10).await;
    let back = tokio::time::timeout(GIVEN_BACK, async {
        let mut back = Vec::new();
        while back.len() < 3 {
            let m = second.recv().await.expect("the second stream goes on");
            back.push(number(&m.message));
            m.accept().expect("accepts");
        }
        back.sort_unstable();
        back
    })
    .await
    .expect("the dropped receiver's messages come back at once");
    assert_eq!(back, vec![0, 1, 2]);
    drop(taken);

    // The connection and its other links are still up.
    assert!(!conn.is_closed());
    assert_eq!(broker.connections().len(), 1);
    assert_eq!(send(&sender, numbered(3)).await, Outcome::Accepted);
    let m = recv(&mut second).await;
    assert_eq!(number(&m.message), 3);
    m.accept().expect("accepts");
    conn.close().expect("closes");
    container.stop();
}

#[actix_rt::test]
async fn closing_one_sender_leaves_another_on_the_same_connection_working() {
    let container = container(2);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let conn = connect(&container, &base).await;
    let closed = conn
        .open_sender("a", SenderOptions::default())
        .await
        .expect("sender opens");
    let open = conn
        .open_sender("b", SenderOptions::default())
        .await
        .expect("sender opens");
    let mut receiver = open_receiver(&conn, "b", 10).await;
    until("two producers", || producers(&broker) == 2).await;

    closed.close().expect("closes");
    until("the closed link gone at the broker", || {
        producers(&broker) == 1
    })
    .await;
    let refused = tokio::time::timeout(TIMEOUT, closed.send(numbered(0)))
        .await
        .expect("an answer in time");
    assert_eq!(refused, Err(Error::LinkClosed));

    assert_eq!(send(&open, numbered(1)).await, Outcome::Accepted);
    let m = recv(&mut receiver).await;
    assert_eq!(number(&m.message), 1);
    m.accept().expect("accepts");
    assert!(!conn.is_closed());
    assert_eq!(broker.connections().len(), 1);
    conn.close().expect("closes");
    container.stop();
}

#[actix_rt::test]
async fn a_connection_the_broker_kills_fails_its_links_with_a_typed_error() {
    // The broker runs in a container of its own, stopped under the client.
    let broker_side = container(1);
    let client = container(1);
    let options = BrokerOptions {
        max_queue_depth: Some(1),
        ..BrokerOptions::default()
    };
    let (_broker, base) = serve(&broker_side, options);
    let conn = connect(&client, &base).await;
    let sender = conn
        .open_sender("bounded", SenderOptions::default())
        .await
        .expect("sender opens");
    let mut receiver = open_receiver(&conn, "elsewhere", 10).await;
    // The queue holds one message: the next send waits for credit that never comes.
    assert_eq!(send(&sender, numbered(0)).await, Outcome::Accepted);
    let waiting = {
        let sender = sender.clone();
        tokio::spawn(async move { sender.send(numbered(1)).await })
    };
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished(), "the second send waits for credit");
    assert!(!conn.is_closed());

    broker_side.stop();
    let why = tokio::time::timeout(TIMEOUT, conn.closed())
        .await
        .expect("closed() resolves in time");
    assert!(
        matches!(
            why,
            Error::ConnectionClosed | Error::Amqp(_) | Error::TransportLost { .. }
        ),
        "why: {why:?}"
    );
    assert!(conn.is_closed());
    let pending = tokio::time::timeout(TIMEOUT, waiting)
        .await
        .expect("the waiting send ends in time")
        .expect("joins");
    assert_eq!(pending, Err(why.clone()), "the waiting send gets why");
    let later = tokio::time::timeout(TIMEOUT, sender.send(numbered(2)))
        .await
        .expect("an answer in time");
    assert_eq!(later, Err(why.clone()), "a later send fails with it too");
    let opened = tokio::time::timeout(TIMEOUT, conn.open_sender("x", SenderOptions::default()))
        .await
        .expect("an answer in time");
    assert_eq!(opened.err(), Some(why), "and so does a new link");
    let ended = tokio::time::timeout(TIMEOUT, receiver.recv())
        .await
        .expect("the stream ends in time");
    assert!(ended.is_none(), "the receiver's stream ends");
    client.stop();
}

#[actix_rt::test]
async fn the_per_link_sender_closes_its_connection_with_its_last_handle() {
    let container = container(2);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let sender = container
        .open_sender(&format!("{base}/own"), SenderOptions::default())
        .await
        .expect("sender opens");
    let clone = sender.clone();
    assert_eq!(send(&sender, numbered(0)).await, Outcome::Accepted);
    until("its connection", || broker.connections().len() == 1).await;
    drop(sender);
    // A clone keeps the link and its connection.
    assert_eq!(send(&clone, numbered(1)).await, Outcome::Accepted);
    assert_eq!(broker.connections().len(), 1);
    drop(clone);
    until("the connection closed", || broker.connections().is_empty()).await;
    container.stop();
}

#[actix_rt::test]
async fn a_shared_connection_closes_once_its_last_handle_and_link_are_dropped() {
    let container = container(2);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let conn = connect(&container, &base).await;
    let sender = conn
        .open_sender("kept", SenderOptions::default())
        .await
        .expect("sender opens");
    drop(conn);
    // The sender's handle keeps its connection open.
    assert_eq!(send(&sender, numbered(0)).await, Outcome::Accepted);
    assert!(!sender.connection().is_closed());
    assert_eq!(broker.connections().len(), 1);
    drop(sender);
    until("the connection closed", || broker.connections().is_empty()).await;
    container.stop();
}
