//! nucleon's clients against RabbitMQ 3.10 and its AMQP 1.0 plugin, a private server started for this test
//! binary by `scripts/interop/rabbitmq.sh` (see [`RabbitMq`]). One test per case of the interop matrix,
//! `rabbitmq_<case>`.
//!
//! RabbitMQ's address conventions (3.10 plugin): `/queue/NAME` declares (if needed) and uses the queue NAME,
//! for senders and receivers alike; a plain `NAME` names an existing queue through the default exchange;
//! `/exchange/X/KEY` and `/topic/KEY` publish through an exchange (a message no binding routes is still
//! accepted, and dropped); `/amq/queue/NAME` needs an existing queue; anything else is refused with
//! `amqp:invalid-field`, and a refused link ends its whole session.
//!
//! What these tests confirm about RabbitMQ 3.10.8:
//! - Messages are rewritten in three ways ([`as_delivered`]): a message without a header gets one (the
//!   spec's defaults, `first-acquirer` true); `delivery-count` is reset to 0; a message without a
//!   properties section gets one whose `subject` is the routing key (the queue's name). Everything else,
//!   every other header and properties field, annotations, footer, is kept exactly.
//! - Type fidelity: every corpus message comes back equal, types included, except three (see [`EXCLUDED`],
//!   each checked to fail as described): an `amqp-value` body that is a list of two or more elements, or an
//!   array of lists, makes RabbitMQ reset the TCP connection without a `close`; several `data` sections come
//!   back in reverse order. A list inside a map, a described list and an `amqp-sequence` are fine.
//! - Application properties keep every simple type [AMQP 1.0 §3.2.5], `null` and the decimals included.
//! - `user-id` must be the authenticated user's [AMQP 1.0 §3.2.4]: another ends the session with
//!   `amqp:precondition-failed`, no outcome, and the message is not queued.
//! - Our senders only ever see `accepted` (or nothing, pre-settled): RabbitMQ refuses by ending the session,
//!   never with a `rejected` or `released` outcome.
//! - Our receiver's outcomes: `released` puts the message back at the head of the queue, redelivered with
//!   `first-acquirer` false and `delivery-count` still 0; `rejected` drops it (no dead-letter exchange here);
//!   `modified` is not understood: the session ends with `amqp:invalid-field` ("Unrecognised state") and
//!   the message, unsettled, goes back to the queue.
//! - Credit: a receiver opened with credit 0 grants its own; each credit brings one message, in order.
//! - Drain is not supported on a classic queue (the only kind the 1.0 plugin declares): RabbitMQ delivers
//!   what the credit allows, then ends the session with `amqp:internal-error` (a `function_clause` in
//!   `rabbit_classic_queue:handle_event({send_drained, ..})`). No test drains.
//! - Dynamic sources end the session with `amqp:not-implemented` ("Dynamic sources not supported"), so
//!   request/reply uses a reply queue the requester names.
//! - RabbitMQ advertises a max-frame-size of 64 KiB, as we do: a 5 MiB message crosses as 80 and more full
//!   frames each way.
//! - Idle timeout: RabbitMQ advertises none (so we send no heartbeats) and heartbeats at half the timeout we
//!   advertise (half of ours); it counts in whole seconds, so ours should be 2 s or more.
//! - SASL PLAIN (guest) and ANONYMOUS (mapped to guest) both work; a wrong password gets
//!   `amqp:unauthorized-access`. The plugin offers PLAIN, AMQPLAIN and ANONYMOUS, no SCRAM.
//! - TLS: its `listeners.ssl` port (TLS from the first byte, no `AMQP 2 1 0 0` header [AMQP 1.0 §5.2]) serves
//!   the AMQP 1.0 plugin too. With a certificate from a CA made at test time (see [`RabbitMq::shared`]), our
//!   rustls client trusting that CA connects, authenticates with PLAIN inside TLS (no insecure-mechanism
//!   switch needed) and sends and receives; without the CA it is refused by its own certificate check, and a
//!   TLS client to the plain port fails its handshake. Erlang's TLS speaks TLS 1.3 here.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use nucleon::protocol::frame::{
    Accepted, DeliveryState, Error as AmqpError, ErrorCondition, MessageId, Modified, Rejected,
    Released,
};
use nucleon::{
    Body, Connection, ConnectionOptions, ContainerHandle, Delivery, DeliveryMode, DeliveryRef,
    Error, Message, MessagingHandler, Outcome, Receiver, ReceiverId, ReceiverOptions, Sender,
    SenderId, SenderOptions, Session, Value, WorkQueue,
};
use nucleon_integration_tests::client::{self, bodies, numbered, plain_allowed, Clients};
use nucleon_integration_tests::corpus;
use nucleon_integration_tests::peers::RabbitMq;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

const GUEST: Option<(&str, &str)> = Some(("guest", "guest"));
const TIMEOUT: Duration = Duration::from_secs(120);
/// The longest wait for one step of a handler-driven test.
const STEP: Duration = Duration::from_secs(15);

fn container() -> ContainerHandle {
    client::container("rabbitmq-interop")
}

/// Our facade clients: PLAIN is allowed on loopback (nucleon otherwise falls back to ANONYMOUS, which
/// RabbitMQ maps to guest).
fn clients() -> Clients {
    Clients {
        connection: plain_allowed(),
        timeout: TIMEOUT,
    }
}

/// A queue name no other test uses.
fn queue(test: &str) -> String {
    format!("/queue/nucleon-{test}-{}", std::process::id())
}

async fn send_all(c: &ContainerHandle, url: &str, messages: Vec<Message>) -> Vec<Outcome> {
    clients()
        .send_all(c, url, SenderOptions::default(), messages)
        .await
}

async fn receive(c: &ContainerHandle, url: &str, n: usize, window: u32) -> Vec<Message> {
    clients().receive(c, url, n, window).await
}

#[actix_rt::test]
async fn rabbitmq_volume() {
    const N: i64 = 10_000;
    let rabbit = RabbitMq::shared();
    let c = container();
    let url = rabbit.url(GUEST, &queue("volume"));
    let outcomes = send_all(&c, &url, numbered(N as usize)).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Accepted),
        "{outcomes:?}"
    );
    let got = receive(&c, &url, N as usize, 500).await;
    assert_eq!(bodies(&got), (0..N).collect::<Vec<_>>());
}

#[actix_rt::test]
async fn rabbitmq_large_messages() {
    const SIZE: usize = 5 * 1024 * 1024;
    const MAX_FRAME: u32 = 64 * 1024;
    let rabbit = RabbitMq::shared();
    let c = container();
    let url = rabbit.url(GUEST, &queue("large"));
    let body = client::five_mib();
    assert_eq!(body.len(), SIZE);
    let m = Message::builder()
        .body(Value::Binary(body.clone().into()))
        .build();
    let up = FrameCounter::start(rabbit.port).await;
    assert_eq!(
        send_all(&c, &up.url(rabbit, &url), vec![m]).await,
        vec![Outcome::Accepted]
    );
    let down = FrameCounter::start(rabbit.port).await;
    let got = receive(&c, &down.url(rabbit, &url), 1, 1).await;
    assert_eq!(got[0].body_value(), Some(&Value::Binary(body.into())));
    // Multi-frame both ways: our max-frame-size is 64 KiB, and RabbitMQ advertises the same.
    for (direction, frames) in [
        ("to RabbitMQ", &up.to_rabbit),
        ("from RabbitMQ", &down.from_rabbit),
    ] {
        let sizes = frames.sizes();
        let full = sizes.iter().filter(|s| **s == MAX_FRAME).count();
        assert!(
            full >= SIZE / MAX_FRAME as usize,
            "{direction}: {full} full frames"
        );
        assert!(sizes.iter().all(|s| *s <= MAX_FRAME), "{direction}");
    }
}

#[actix_rt::test]
async fn rabbitmq_sasl_plain_and_anonymous() {
    let rabbit = RabbitMq::shared();
    let c = container();
    let address = queue("sasl");
    let plain = rabbit.url(GUEST, &address);
    assert_eq!(
        send_all(&c, &plain, vec![Message::with_body("plain")]).await,
        vec![Outcome::Accepted]
    );
    // ANONYMOUS maps to the plugin's default user (guest).
    let anonymous = rabbit.url(None, &address);
    let got = receive(&c, &anonymous, 1, 1).await;
    assert_eq!(got[0].body_value(), Some(&Value::from("plain")));
}

#[actix_rt::test]
async fn rabbitmq_sasl_wrong_password() {
    let rabbit = RabbitMq::shared();
    let c = container();
    let url = rabbit.url(Some(("guest", "wrong")), &queue("refused"));
    let err = c
        .open_sender_with(&url, plain_allowed(), SenderOptions::default())
        .await
        .expect_err("a wrong password is refused");
    assert_eq!(
        err.condition(),
        Some(&ErrorCondition::UnauthorizedAccess),
        "{err}"
    );
}

/// Our clients over TLS to RabbitMQ's TLS listener, trusting only its private CA. No
/// `sasl_allow_insecure_mechs`: PLAIN is allowed because it travels inside TLS.
fn tls_clients(rabbit: &RabbitMq) -> Clients {
    Clients {
        connection: ConnectionOptions::new().tls(rabbit.client_tls()),
        timeout: TIMEOUT,
    }
}

#[actix_rt::test]
async fn rabbitmq_over_tls_with_plain() {
    let rabbit = RabbitMq::shared();
    let c = container();
    let tls = tls_clients(rabbit);
    let url = rabbit.tls_url(GUEST, &queue("tls"));
    let sent = vec![Message::with_body("over TLS"), Message::with_body(2i64)];
    assert_eq!(
        tls.send_all(&c, &url, SenderOptions::default(), sent.clone())
            .await,
        vec![Outcome::Accepted; 2]
    );
    let got = tls.receive(&c, &url, 2, 2).await;
    let bodies: Vec<_> = got.iter().map(|m| m.body_value().cloned()).collect();
    assert_eq!(
        bodies,
        sent.iter()
            .map(|m| m.body_value().cloned())
            .collect::<Vec<_>>()
    );
    // SASL runs inside TLS: a wrong password is still refused by RabbitMQ.
    let wrong = rabbit.tls_url(Some(("guest", "wrong")), &queue("tls"));
    let err = client::within(
        TIMEOUT,
        "our sender is refused",
        c.open_sender_with(&wrong, tls.connection.clone(), SenderOptions::default()),
    )
    .await
    .expect_err("a wrong password is refused");
    assert_eq!(
        err.condition(),
        Some(&ErrorCondition::UnauthorizedAccess),
        "{err}"
    );
}

#[actix_rt::test]
async fn rabbitmq_over_tls_refused_without_the_private_ca() {
    let rabbit = RabbitMq::shared();
    let c = container();
    // The default TLS config trusts the operating system's roots only, which do not include the test CA:
    // refused by our certificate check, before any AMQP byte.
    let url = rabbit.tls_url(GUEST, &queue("tls-untrusted"));
    let err = client::within(
        TIMEOUT,
        "our sender is refused",
        c.open_sender_with(&url, ConnectionOptions::default(), SenderOptions::default()),
    )
    .await
    .expect_err("an untrusted certificate is refused");
    eprintln!("without the private CA: {err}");
    assert!(
        err.to_string()
            .contains("the peer's certificate was refused: it is not issued by a trusted CA"),
        "{err}"
    );
    // A TLS client to the plain AMQP port: the handshake fails, nothing is sent in clear.
    let plain_port = format!("amqps://127.0.0.1:{}/{}", rabbit.port, queue("tls-plain"));
    let err = client::within(
        TIMEOUT,
        "our sender is refused",
        c.open_sender_with(
            &plain_port,
            tls_clients(rabbit).connection,
            SenderOptions::default(),
        ),
    )
    .await
    .expect_err("the plain port does not speak TLS");
    eprintln!("TLS to the plain port: {err}");
    assert!(err.to_string().contains("TLS handshake failed"), "{err}");
}

#[actix_rt::test]
async fn rabbitmq_unknown_address_prefix_refused() {
    let rabbit = RabbitMq::shared();
    let c = container();
    let url = rabbit.url(GUEST, "/nowhere/q");
    let err = c
        .open_sender_with(&url, plain_allowed(), SenderOptions::default())
        .await
        .expect_err("the link is refused");
    assert!(
        matches!(&err, Error::LinkRefused { error: Some(e) } if e.condition == ErrorCondition::InvalidField),
        "{err:?}"
    );
}

/// What RabbitMQ 3.10 delivers for `sent`, put on the queue named `queue_name` (without `/queue/`): a message
/// without a header gets the spec's default header with `first-acquirer` true; `delivery-count` is reset to
/// 0; a message without a properties section gets one whose `subject` is the routing key (the queue's name).
/// Everything else comes back as sent.
fn as_delivered(sent: &Message, queue_name: &str) -> Message {
    let mut m = sent.clone();
    if m.header().is_none() {
        m.header_mut().first_acquirer = true;
    }
    m.header_mut().delivery_count = 0;
    if m.properties().is_none() {
        m.properties_mut().subject = Some(queue_name.to_string());
    }
    m
}

/// How a corpus message RabbitMQ cannot carry fails.
enum Fails {
    /// RabbitMQ resets the TCP connection (no `close` frame) when the transfer arrives.
    Aborts,
    /// The message comes back with its `data` sections in reverse order.
    DataReversed,
}

/// The corpus messages RabbitMQ 3.10 cannot carry, why, and how that shows.
const EXCLUDED: &[(&str, &str, Fails)] = &[
    (
        "value-list-scalars",
        "an amqp-value body that is a list of two or more elements aborts the connection",
        Fails::Aborts,
    ),
    (
        "value-array-list",
        "an amqp-value body that is an array of lists aborts the connection",
        Fails::Aborts,
    ),
    (
        "data-two-sections",
        "several data sections come back in reverse order",
        Fails::DataReversed,
    ),
];

#[actix_rt::test]
async fn rabbitmq_type_fidelity() {
    let rabbit = RabbitMq::shared();
    let c = container();
    let address = queue("types");
    let url = rabbit.url(GUEST, &address);
    let names: Vec<&str> = EXCLUDED.iter().map(|(n, _, _)| *n).collect();
    let corpus = corpus::messages_without(&names);
    let outcomes = send_all(&c, &url, corpus.iter().map(|(_, m)| m.clone()).collect()).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Accepted),
        "{outcomes:?}"
    );
    let got = receive(&c, &url, corpus.len(), 10).await;
    let queue_name = address.trim_start_matches("/queue/");
    for ((name, sent), back) in corpus.iter().zip(&got) {
        assert_eq!(back, &as_delivered(sent, queue_name), "{name}");
    }

    // Each exclusion really fails, as documented.
    let all = corpus::messages();
    for (name, reason, fails) in EXCLUDED {
        let sent = &all
            .iter()
            .find(|(n, _)| n == name)
            .expect("in the corpus")
            .1;
        let address = queue(&format!("types-{name}"));
        let url = rabbit.url(GUEST, &address);
        let sender = c
            .open_sender_with(&url, plain_allowed(), SenderOptions::default())
            .await
            .expect("sender opens");
        let sent_outcome = tokio::time::timeout(STEP, sender.send(sent.clone()))
            .await
            .expect("an answer in time");
        match fails {
            Fails::Aborts => {
                let err = sent_outcome.expect_err(reason);
                assert!(
                    err.is_transport_lost(),
                    "{name} ({reason}): the transport fails, no close frame: {err:?}"
                );
            }
            Fails::DataReversed => {
                assert_eq!(sent_outcome.expect("an outcome"), Outcome::Accepted);
                sender.close().expect("closes");
                let back = receive(&c, &url, 1, 1).await.remove(0);
                let Body::Data(mut sections) = sent.body().clone() else {
                    panic!("{name} has data sections");
                };
                sections.reverse();
                assert_eq!(back.body(), &Body::Data(sections), "{name}: {reason}");
            }
        }
    }
}

#[actix_rt::test]
async fn rabbitmq_application_properties() {
    let rabbit = RabbitMq::shared();
    let c = container();
    let address = queue("properties");
    let url = rabbit.url(GUEST, &address);
    // Application properties hold simple types only [AMQP 1.0 §3.2.5]: every scalar of the corpus.
    let mut builder = Message::builder().body("application properties");
    for (name, value) in corpus::scalars() {
        builder = builder.property(name, value);
    }
    let sent = builder.build();
    assert_eq!(
        send_all(&c, &url, vec![sent.clone()]).await,
        vec![Outcome::Accepted]
    );
    let back = receive(&c, &url, 1, 1).await.remove(0);
    assert_eq!(back.application_properties(), sent.application_properties());
    assert_eq!(
        back,
        as_delivered(&sent, address.trim_start_matches("/queue/"))
    );
}

#[actix_rt::test]
async fn rabbitmq_header_and_properties_fields() {
    let rabbit = RabbitMq::shared();
    let c = container();
    let address = queue("fields");
    let url = rabbit.url(GUEST, &address);
    // `full` sets every header and properties field; its user-id is `guest`, the authenticated user (RabbitMQ
    // refuses any other: see rabbitmq_settlement_refused).
    let sent = corpus::full_message();
    assert_eq!(
        send_all(&c, &url, vec![sent.clone()]).await,
        vec![Outcome::Accepted]
    );
    let back = receive(&c, &url, 1, 1).await.remove(0);
    assert_eq!(sent.header().map(|h| h.delivery_count), Some(2));
    assert_eq!(back.header().map(|h| h.delivery_count), Some(0));
    let mut expected = sent.clone();
    expected.header_mut().delivery_count = 0;
    assert_eq!(back, expected);
}

#[actix_rt::test]
async fn rabbitmq_settlement_pre_settled() {
    let rabbit = RabbitMq::shared();
    let c = container();
    let url = rabbit.url(GUEST, &queue("presettled"));
    let options = SenderOptions::new().delivery_mode(DeliveryMode::AtMostOnce);
    let sender = c
        .open_sender_with(&url, plain_allowed(), options)
        .await
        .expect("sender opens");
    for i in 0..3i64 {
        let outcome = tokio::time::timeout(STEP, sender.send(Message::with_body(i)))
            .await
            .expect("sent in time");
        assert_eq!(outcome.expect("sent"), Outcome::Settled);
    }
    let got = receive(&c, &url, 3, 3).await;
    let bodies: Vec<_> = got.iter().map(|m| m.body_value().cloned()).collect();
    assert_eq!(
        bodies,
        (0..3i64).map(|i| Some(Value::from(i))).collect::<Vec<_>>()
    );
}

/// Sends `body` to `address` and waits for RabbitMQ to accept it.
async fn put(c: &ContainerHandle, rabbit: &RabbitMq, address: &str, body: &str) {
    let url = rabbit.url(GUEST, address);
    assert_eq!(
        send_all(c, &url, vec![Message::with_body(body)]).await,
        vec![Outcome::Accepted]
    );
}

/// Puts `"A"` on the queue named for `test`, then opens a probed connection with a receiver from that queue
/// that has no credit yet: the queue's address, the probe and the receiver.
async fn a_queued_for_a_probe(
    c: &ContainerHandle,
    rabbit: &RabbitMq,
    test: &str,
) -> (String, Probed, ReceiverId) {
    let address = queue(test);
    put(c, rabbit, &address, "A").await;
    let mut p = Probed::open(c, &rabbit.url(GUEST, ""), plain_allowed()).await;
    let r = p.manual_receiver(&address).await;
    (address, p, r)
}

fn first_acquirer(m: &Message) -> Option<bool> {
    m.header().map(|h| h.first_acquirer)
}

#[actix_rt::test]
async fn rabbitmq_settlement_refused() {
    let rabbit = RabbitMq::shared();
    let c = container();
    let address = queue("refused-user");
    let mut p = Probed::open(&c, &rabbit.url(GUEST, ""), plain_allowed()).await;
    let target = address.clone();
    p.run(move |c| c.open_sender(&target, SenderOptions::default()).map(|_| ()))
        .await
        .expect("the sender opens");
    let sender = p
        .expect("the sender's attach", |e| match e {
            Event::SenderOpen(id) => Some(*id),
            _ => None,
        })
        .await;
    p.expect("credit", |e| matches!(e, Event::Sendable).then_some(()))
        .await;
    // A user-id other than the authenticated user's is refused [AMQP 1.0 §3.2.4].
    let forged = Message::builder()
        .user_id(bytes::Bytes::from_static(b"mallory"))
        .body("forged")
        .build();
    p.run(move |c| c.sender(sender).map(|mut s| s.send(&forged).map(|_| ())))
        .await
        .expect("the sender is there")
        .expect("sent");
    // No outcome: RabbitMQ ends the whole session with precondition-failed.
    match p.next("the refusal").await {
        Event::SessionError(e) => {
            assert_eq!(e.condition, ErrorCondition::PreconditionFailed, "{e:?}")
        }
        other => panic!("expected the session's end, got {other:?}"),
    }
    // The forged message was not queued: the next message is the one put after it.
    put(&c, rabbit, &address, "B").await;
    let next = receive(&c, &rabbit.url(GUEST, &address), 1, 1)
        .await
        .remove(0);
    assert_eq!(next.body_value(), Some(&Value::from("B")));
}

#[actix_rt::test]
async fn rabbitmq_settlement_released() {
    let rabbit = RabbitMq::shared();
    let c = container();
    let (address, mut p, r) = a_queued_for_a_probe(&c, rabbit, "released").await;
    let (a, d) = p.message_on_credit(r).await;
    assert_eq!(a.body_value(), Some(&Value::from("A")));
    assert_eq!(first_acquirer(&a), Some(true));
    p.settle(d, DeliveryState::Released(Released {})).await;
    put(&c, rabbit, &address, "B").await;
    // Released goes back to the head of the queue, ahead of B, no longer first-acquirer, its delivery-count
    // unchanged.
    let (again, d) = p.message_on_credit(r).await;
    assert_eq!(again.body_value(), Some(&Value::from("A")));
    assert_eq!(first_acquirer(&again), Some(false));
    assert_eq!(again.header().map(|h| h.delivery_count), Some(0));
    p.settle(d, DeliveryState::Accepted(Accepted {})).await;
    let (b, _) = p.message_on_credit(r).await;
    assert_eq!(b.body_value(), Some(&Value::from("B")));
}

#[actix_rt::test]
async fn rabbitmq_settlement_rejected() {
    let rabbit = RabbitMq::shared();
    let c = container();
    let (address, mut p, r) = a_queued_for_a_probe(&c, rabbit, "rejected").await;
    let (a, d) = p.message_on_credit(r).await;
    assert_eq!(a.body_value(), Some(&Value::from("A")));
    p.settle(d, DeliveryState::Rejected(Rejected { error: None }))
        .await;
    put(&c, rabbit, &address, "B").await;
    // Rejected is dropped (no dead-letter exchange is configured): B comes next.
    let (b, _) = p.message_on_credit(r).await;
    assert_eq!(b.body_value(), Some(&Value::from("B")));
    assert_eq!(first_acquirer(&b), Some(true));
}

#[actix_rt::test]
async fn rabbitmq_settlement_modified() {
    let rabbit = RabbitMq::shared();
    let c = container();
    let (address, mut p, r) = a_queued_for_a_probe(&c, rabbit, "modified").await;
    let (_, d) = p.message_on_credit(r).await;
    let modified = Modified {
        delivery_failed: true,
        undeliverable_here: false,
        message_annotations: None,
    };
    p.settle(d, DeliveryState::Modified(modified)).await;
    // RabbitMQ 3.10 does not know the `modified` outcome: it ends the session with invalid-field.
    let error = p
        .expect("the session's end", |e| match e {
            Event::SessionError(e) => Some(e.clone()),
            _ => None,
        })
        .await;
    assert_eq!(error.condition, ErrorCondition::InvalidField, "{error:?}");
    // The message, unsettled on the ended session, goes back to the queue.
    let back = receive(&c, &rabbit.url(GUEST, &address), 1, 1)
        .await
        .remove(0);
    assert_eq!(back.body_value(), Some(&Value::from("A")));
    assert_eq!(first_acquirer(&back), Some(false));
}

#[actix_rt::test]
async fn rabbitmq_credit_zero_manual() {
    let rabbit = RabbitMq::shared();
    let c = container();
    let address = queue("credit");
    let url = rabbit.url(GUEST, &address);
    let outcomes = send_all(&c, &url, numbered(3)).await;
    assert_eq!(outcomes, vec![Outcome::Accepted; 3]);
    let mut p = Probed::open(&c, &rabbit.url(GUEST, ""), plain_allowed()).await;
    let r = p.manual_receiver(&address).await;
    assert_eq!(p.credit(r).await, 0);
    let (m, d) = p.message_on_credit(r).await;
    assert_eq!(m.body_value(), Some(&Value::Long(0)));
    assert_eq!(p.credit(r).await, 0, "one message per credit");
    p.settle(d, DeliveryState::Accepted(Accepted {})).await;
    p.add_credit(r, 2).await;
    for i in 1..3i64 {
        let (m, d) = p.message().await;
        assert_eq!(m.body_value(), Some(&Value::Long(i)));
        p.settle(d, DeliveryState::Accepted(Accepted {})).await;
    }
    assert_eq!(p.credit(r).await, 0);
}

#[actix_rt::test]
async fn rabbitmq_request_reply() {
    const N: i64 = 5;
    let rabbit = RabbitMq::shared();
    let c = container();
    let requests = queue("requests");
    let replies = queue("replies");

    // A dynamic reply address is not implemented: RabbitMQ ends the session.
    let mut p = Probed::open(&c, &rabbit.url(GUEST, ""), plain_allowed()).await;
    p.run(|c| {
        let options = ReceiverOptions::new().dynamic(true);
        c.open_receiver("", options).map(|_| ())
    })
    .await
    .expect("the attach goes out");
    let error = p
        .expect("the session's end", |e| match e {
            Event::SessionError(e) => Some(e.clone()),
            _ => None,
        })
        .await;
    assert_eq!(error.condition, ErrorCondition::NotImplemented, "{error:?}");

    // So the requester names its reply queue. The responder answers each request on its reply-to address.
    let mut incoming = c
        .open_receiver_with(
            &rabbit.url(GUEST, &requests),
            plain_allowed(),
            ReceiverOptions::default(),
        )
        .await
        .expect("the responder's receiver opens")
        .limit(N as u64);
    let responder_container = c.clone();
    let responder = actix_rt::spawn(async move {
        let mut reply_sender = None;
        for _ in 0..N {
            let request = incoming.next().await.expect("a request");
            let reply_to = request.message.reply_to().expect("a reply-to address");
            if reply_sender.is_none() {
                let url = rabbit.url(GUEST, reply_to);
                let sender = responder_container
                    .open_sender_with(&url, plain_allowed(), SenderOptions::default())
                    .await
                    .expect("the responder's sender opens");
                reply_sender = Some(sender);
            }
            let sender = reply_sender.as_ref().expect("opened");
            let n = request.message.body_value().and_then(Value::as_i64);
            let id = request.message.message_id().cloned().expect("an id");
            let reply = Message::builder()
                .correlation_id(id)
                .body(n.map(|n| n * 10).unwrap_or(-1))
                .build();
            assert_eq!(sender.send(reply).await.expect("sent"), Outcome::Accepted);
            request.accept().expect("accepts");
        }
        if let Some(sender) = reply_sender {
            sender.close().expect("closes");
        }
    });

    let mut reply_stream = c
        .open_receiver_with(
            &rabbit.url(GUEST, &replies),
            plain_allowed(),
            ReceiverOptions::default(),
        )
        .await
        .expect("the requester's receiver opens");
    let requests_out: Vec<Message> = (0..N)
        .map(|i| {
            Message::builder()
                .message_id(MessageId::Ulong(i as u64))
                .reply_to(replies.clone())
                .body(i)
                .build()
        })
        .collect();
    let outcomes = send_all(&c, &rabbit.url(GUEST, &requests), requests_out).await;
    assert_eq!(outcomes, vec![Outcome::Accepted; N as usize]);
    let got = tokio::time::timeout(TIMEOUT, async {
        let mut got = Vec::new();
        for _ in 0..N {
            let r = reply_stream.next().await.expect("a reply");
            got.push((
                r.message.correlation_id().cloned(),
                r.message.body_value().and_then(Value::as_i64),
            ));
            r.accept().expect("accepts");
        }
        got
    })
    .await
    .expect("every reply in time");
    let expected: Vec<_> = (0..N)
        .map(|i| (Some(MessageId::Ulong(i as u64)), Some(i * 10)))
        .collect();
    assert_eq!(got, expected);
    tokio::time::timeout(TIMEOUT, responder)
        .await
        .expect("the responder ends in time")
        .expect("the responder succeeds");
}

#[actix_rt::test]
async fn rabbitmq_idle_timeout() {
    const IDLE: Duration = Duration::from_secs(2);
    let rabbit = RabbitMq::shared();
    let c = container();
    let url = rabbit.url(GUEST, &queue("idle"));
    let relay = FrameCounter::start(rabbit.port).await;
    let options = plain_allowed().idle_timeout(IDLE);
    let sender = c
        .open_sender_with(&relay.url(rabbit, &url), options, SenderOptions::default())
        .await
        .expect("sender opens");
    // Quiet for three times our idle timeout: only heartbeats cross.
    let before = (
        relay.to_rabbit.sizes().len(),
        relay.from_rabbit.sizes().len(),
    );
    tokio::time::sleep(3 * IDLE).await;
    let heartbeats =
        |f: &Frames, skip: usize| f.sizes()[skip..].iter().filter(|s| **s == 8).count();
    // RabbitMQ heartbeats at half the timeout we advertise (half of ours: 1 s), and advertises none itself,
    // so we send none.
    assert!(heartbeats(&relay.from_rabbit, before.1) > 0);
    assert_eq!(heartbeats(&relay.to_rabbit, before.0), 0);
    let outcome = tokio::time::timeout(STEP, sender.send(Message::with_body("still here")))
        .await
        .expect("an outcome in time");
    assert_eq!(outcome.expect("the connection is up"), Outcome::Accepted);
}

/// What a [`Probe`] connection saw, in order.
#[derive(Debug)]
enum Event {
    Opened,
    ReceiverOpen(ReceiverId),
    SenderOpen(SenderId),
    Sendable,
    Message {
        message: Box<Message>,
        delivery: DeliveryRef,
    },
    SessionError(AmqpError),
    /// A link or the connection failed.
    Failed(AmqpError),
    TransportClosed,
}

/// A handler that reports the callbacks the tests look at as [`Event`]s and does nothing else, so that a test drives the
/// connection step by step through its work queue: for what the facade does not offer (credit 0 with manual
/// credit, drain, dynamic sources, settling with `modified`).
struct Probe {
    events: mpsc::UnboundedSender<Event>,
}

impl Probe {
    fn report(&self, event: Event) {
        let _ = self.events.send(event);
    }
}

impl MessagingHandler for Probe {
    fn on_connection_open(&mut self, _c: &mut Connection<'_>) {
        self.report(Event::Opened);
    }
    fn on_receiver_open(&mut self, r: &mut Receiver<'_>) {
        self.report(Event::ReceiverOpen(r.id()));
    }
    fn on_sender_open(&mut self, s: &mut Sender<'_>) {
        self.report(Event::SenderOpen(s.id()));
    }
    fn on_sendable(&mut self, _s: &mut Sender<'_>) {
        self.report(Event::Sendable);
    }
    fn on_message(&mut self, d: &mut Delivery<'_>, message: Message) {
        d.defer();
        self.report(Event::Message {
            message: Box::new(message),
            delivery: d.id(),
        });
    }
    fn on_session_error(&mut self, _s: &mut Session<'_>, e: &AmqpError) {
        self.report(Event::SessionError(e.clone()));
    }
    fn on_receiver_error(&mut self, _r: &mut Receiver<'_>, e: &AmqpError) {
        self.report(Event::Failed(e.clone()));
    }
    fn on_sender_error(&mut self, _s: &mut Sender<'_>, e: &AmqpError) {
        self.report(Event::Failed(e.clone()));
    }
    fn on_connection_error(&mut self, _c: &mut Connection<'_>, e: &AmqpError) {
        self.report(Event::Failed(e.clone()));
    }
    fn on_transport_error(&mut self, _c: &mut Connection<'_>, e: &AmqpError) {
        self.report(Event::Failed(e.clone()));
    }
    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        self.report(Event::TransportClosed);
    }
}

/// A [`Probe`] connection and its events.
struct Probed {
    wq: WorkQueue<Probe>,
    events: mpsc::UnboundedReceiver<Event>,
}

impl Probed {
    async fn open(c: &ContainerHandle, url: &str, options: ConnectionOptions) -> Probed {
        let (tx, events) = mpsc::unbounded_channel();
        let handle = c
            .connect(url, options, Probe { events: tx })
            .expect("connects");
        let mut p = Probed {
            wq: handle.work_queue(),
            events,
        };
        p.expect("the connection opens", |e| {
            matches!(e, Event::Opened).then_some(())
        })
        .await;
        p
    }

    /// Runs `f` on the connection and returns its result.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection<'_>) -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = oneshot::channel();
        self.wq
            .add(move |_, c| {
                let _ = tx.send(f(c));
            })
            .expect("the connection takes work");
        tokio::time::timeout(STEP, rx)
            .await
            .expect("the work runs in time")
            .expect("the work runs")
    }

    /// Opens a receiver from `address` that grants no credit and settles nothing by itself.
    async fn manual_receiver(&mut self, address: &str) -> ReceiverId {
        let address = address.to_string();
        self.run(move |c| {
            let options = ReceiverOptions::new().credit_window(0).auto_accept(false);
            c.open_receiver(&address, options).map(|_| ())
        })
        .await
        .expect("the receiver opens");
        self.expect("the receiver's attach", |e| match e {
            Event::ReceiverOpen(id) => Some(*id),
            _ => None,
        })
        .await
    }

    async fn add_credit(&self, id: ReceiverId, n: u32) {
        self.run(move |c| c.receiver(id).map(|mut r| r.add_credit(n)))
            .await
            .expect("the receiver is there")
            .expect("credit is granted");
    }

    async fn credit(&self, id: ReceiverId) -> u32 {
        self.run(move |c| c.receiver(id).map(|r| r.credit()))
            .await
            .expect("the receiver is there")
    }

    /// The next message (skipping other events), with its delivery.
    async fn message(&mut self) -> (Message, DeliveryRef) {
        self.expect("a message", |e| match e {
            Event::Message {
                message, delivery, ..
            } => Some((Message::clone(message), *delivery)),
            _ => None,
        })
        .await
    }

    /// Grants `id` one credit and returns the message it brings, with its delivery.
    async fn message_on_credit(&mut self, id: ReceiverId) -> (Message, DeliveryRef) {
        self.add_credit(id, 1).await;
        self.message().await
    }

    async fn settle(&self, delivery: DeliveryRef, state: DeliveryState) {
        self.run(move |c| c.settle(delivery, state))
            .await
            .expect("settles");
    }

    /// The next event, within [`STEP`]: none is a failure.
    async fn next(&mut self, what: &str) -> Event {
        tokio::time::timeout(STEP, self.events.recv())
            .await
            .unwrap_or_else(|_| panic!("waiting for {what}: nothing within {STEP:?}"))
            .unwrap_or_else(|| panic!("waiting for {what}: the connection is gone"))
    }

    /// Skips events until `f` takes one.
    async fn expect<T>(&mut self, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
        loop {
            let e = self.next(what).await;
            if let Some(t) = f(&e) {
                return t;
            }
            match e {
                Event::Failed(e) => panic!("waiting for {what}: failed with {e}"),
                Event::TransportClosed => panic!("waiting for {what}: the connection closed"),
                _ => {}
            }
        }
    }
}

/// The sizes of the AMQP frames that crossed a [`FrameCounter`] in one direction.
#[derive(Default)]
struct Frames(Mutex<Vec<u32>>);

impl Frames {
    fn sizes(&self) -> Vec<u32> {
        self.0.lock().expect("not poisoned").clone()
    }
}

/// A loopback TCP relay between our client and RabbitMQ that records the size of every frame in each
/// direction, so that a test can see how a message was framed, and the heartbeats (empty frames, 8 bytes)
/// each side sent [AMQP 1.0 §2.3, §2.4.5].
struct FrameCounter {
    port: u16,
    to_rabbit: Arc<Frames>,
    from_rabbit: Arc<Frames>,
}

impl FrameCounter {
    /// Relays one connection to RabbitMQ's port.
    async fn start(rabbit_port: u16) -> FrameCounter {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let port = listener.local_addr().expect("bound").port();
        let to_rabbit = Arc::new(Frames::default());
        let from_rabbit = Arc::new(Frames::default());
        let (up, down) = (to_rabbit.clone(), from_rabbit.clone());
        actix_rt::spawn(async move {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            let Ok(server) = TcpStream::connect(("127.0.0.1", rabbit_port)).await else {
                return;
            };
            let (client_r, client_w) = client.into_split();
            let (server_r, server_w) = server.into_split();
            actix_rt::spawn(relay(client_r, server_w, up));
            actix_rt::spawn(relay(server_r, client_w, down));
        });
        FrameCounter {
            port,
            to_rabbit,
            from_rabbit,
        }
    }

    /// `url` with RabbitMQ's port replaced by the relay's.
    fn url(&self, rabbit: &RabbitMq, url: &str) -> String {
        url.replace(&format!(":{}/", rabbit.port), &format!(":{}/", self.port))
    }
}

/// Copies `from` to `to`, recording frame sizes: a protocol header (`AMQP` and 4 bytes) is skipped, anything
/// else starts with a frame's 4-byte size.
async fn relay(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, frames: Arc<Frames>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        pending.extend_from_slice(&buf[..n]);
        loop {
            if pending.len() >= 8 && pending.starts_with(b"AMQP") {
                pending.drain(..8);
                continue;
            }
            let Some(size) = pending
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            else {
                break;
            };
            let len = size as usize;
            if len < 8 || pending.len() < len {
                break;
            }
            pending.drain(..len);
            frames.0.lock().expect("not poisoned").push(size);
        }
    }
    let _ = to.shutdown().await;
}
