//! Request/reply on the async facade, against the in-process broker: twenty concurrent
//! `AsyncConnectionHandle::request`s, answered in reverse order by a responder, each get their own reply; a
//! request nobody answers times out with the timeout error and leaves nothing pending; a dynamic receiver
//! tells the address the broker made; and a receiver whose queue the broker deletes says why its stream
//! ended (`amqp:resource-deleted`).

use std::collections::HashMap;
use std::time::Duration;

use nucleon::broker::BrokerOptions;
use nucleon::protocol::frame::ErrorCondition;
use nucleon::{AsyncConnectionHandle, Error, ReceiverOptions, SenderHandle, SenderOptions};
use nucleon_integration_tests::broker::{
    connect, container, number, numbered, recv, send, serve, TIMEOUT,
};

/// Answers requests on `address`: takes `batch` of them, then replies to each, in reverse order, with
/// its number times ten and its message-id as the correlation-id.
async fn respond(conn: AsyncConnectionHandle, address: &str, batch: usize) {
    let mut requests = conn
        .open_receiver(address, ReceiverOptions::default())
        .await
        .expect("the responder's receiver opens");
    let mut senders: HashMap<String, SenderHandle> = HashMap::new();
    loop {
        let mut taken = Vec::new();
        while taken.len() < batch {
            let Some(m) = requests.recv().await else {
                return;
            };
            taken.push(m);
        }
        for m in taken.into_iter().rev() {
            let p = m.message.properties().expect("a request has properties");
            let reply_to = p.reply_to.clone().expect("a request has a reply-to");
            let mut reply = numbered(number(&m.message) * 10);
            reply.properties_mut().correlation_id = p.message_id.clone();
            if !senders.contains_key(&reply_to) {
                let s = conn
                    .open_sender(&reply_to, SenderOptions::default())
                    .await
                    .expect("a sender to the reply queue opens");
                senders.insert(reply_to.clone(), s);
            }
            send(&senders[&reply_to], reply).await;
            m.accept().expect("accepts");
        }
    }
}

#[actix_rt::test]
async fn concurrent_requests_each_get_their_own_reply() {
    const REQUESTS: i64 = 20;
    let container = container(2);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let responder = tokio::spawn(respond(
        connect(&container, &base).await,
        "service",
        REQUESTS as usize,
    ));
    let conn = connect(&container, &base).await;
    let replies = futures::future::join_all(
        (0..REQUESTS).map(|i| conn.request("service", numbered(i), TIMEOUT)),
    )
    .await;
    for (i, reply) in replies.into_iter().enumerate() {
        let reply = reply.expect("a reply");
        assert_eq!(
            number(&reply),
            i as i64 * 10,
            "request {i} gets its own reply"
        );
    }
    assert_eq!(conn.pending_requests().await, Ok(0));
    // One reply queue (a dynamic consumer) and one sender serve every request of the connection.
    let ours = broker
        .connections()
        .iter()
        .filter(|c| c.consumers == 1 && c.producers == 1)
        .count();
    assert_eq!(
        ours, 2,
        "requester and responder: one consumer, one producer each"
    );
    responder.abort();
    container.stop();
}

#[actix_rt::test]
async fn a_request_nobody_answers_times_out_and_leaves_nothing_pending() {
    let container = container(1);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let conn = connect(&container, &base).await;
    let waited = std::time::Instant::now();
    let err = tokio::time::timeout(
        TIMEOUT,
        conn.request("nobody", numbered(1), Duration::from_millis(300)),
    )
    .await
    .expect("the request ends in time")
    .expect_err("nobody answers");
    assert!(waited.elapsed() >= Duration::from_millis(300));
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(conn.pending_requests().await, Ok(0), "nothing pending");
    assert_eq!(
        broker.queue_depth("nobody"),
        Some(1),
        "the request went out"
    );

    // A reply that comes after its request timed out is dropped; the connection goes on.
    let late = tokio::spawn(respond(connect(&container, &base).await, "nobody", 1));
    let answered = conn
        .request("nobody", numbered(2), TIMEOUT)
        .await
        .expect("a reply");
    assert_eq!(number(&answered), 20);
    assert_eq!(conn.pending_requests().await, Ok(0));
    late.abort();
    container.stop();
}

#[actix_rt::test]
async fn a_dynamic_receiver_tells_its_address() {
    let container = container(1);
    let (_broker, base) = serve(&container, BrokerOptions::default());
    let conn = connect(&container, &base).await;
    let options = ReceiverOptions::new().dynamic(true);
    let mut receiver = conn
        .open_receiver("", options)
        .await
        .expect("the receiver opens");
    let address = receiver.address().expect("the broker named its node");
    assert!(!address.is_empty());
    let sender = conn
        .open_sender(&address, SenderOptions::default())
        .await
        .expect("sender opens");
    send(&sender, numbered(7)).await;
    let m = recv(&mut receiver).await;
    assert_eq!(number(&m.message), 7);
    m.accept().expect("accepts");

    let named = conn
        .open_receiver("named", ReceiverOptions::default())
        .await
        .expect("opens");
    assert_eq!(named.address().as_deref(), Some("named"));
    container.stop();
}

#[actix_rt::test]
async fn a_receiver_whose_queue_is_deleted_says_why_its_stream_ended() {
    let container = container(1);
    let (broker, base) = serve(&container, BrokerOptions::default());
    let conn = connect(&container, &base).await;
    let mut receiver = conn
        .open_receiver("doomed", ReceiverOptions::default())
        .await
        .expect("the receiver opens");
    assert_eq!(receiver.end_reason(), None, "open: no reason yet");
    let sender = conn
        .open_sender("doomed", SenderOptions::default())
        .await
        .expect("sender opens");
    send(&sender, numbered(1)).await;
    recv(&mut receiver).await.accept().expect("accepts");

    assert!(broker.delete_queue("doomed").is_some());
    let ended = tokio::time::timeout(TIMEOUT, receiver.recv())
        .await
        .expect("the stream ends in time");
    assert!(ended.is_none(), "the stream ends");
    let why = receiver.end_reason().expect("a reason once ended");
    assert_eq!(
        why.condition(),
        Some(&ErrorCondition::ResourceDeleted),
        "{why:?}"
    );
    assert_eq!(receiver.closed().await, why);
    assert!(!conn.is_closed(), "only the link ended");

    // A receiver closed by its own handle ends with LinkClosed.
    let mut other = conn
        .open_receiver("kept", ReceiverOptions::default())
        .await
        .expect("opens");
    other.close().expect("closes");
    assert!(tokio::time::timeout(TIMEOUT, other.recv())
        .await
        .expect("ends in time")
        .is_none());
    assert_eq!(other.end_reason(), Some(Error::LinkClosed));
    container.stop();
}
