//! nucleon's clients against RabbitMQ 3.10 and its AMQP 1.0 plugin, a private server started for this test
//! binary by `scripts/interop/rabbitmq.sh` (see [`RabbitMq`]).
//!
//! RabbitMQ's address conventions (3.10 plugin): `/queue/NAME` declares (if needed) and uses the queue NAME,
//! for senders and receivers alike; a plain `NAME` names an existing queue through the default exchange;
//! `/exchange/X/KEY` and `/topic/KEY` publish through an exchange; `/amq/queue/NAME` needs an existing
//! queue; anything else is refused with `amqp:invalid-field`, and a refused link ends its whole session.

use std::time::Duration;

use futures::StreamExt;
use nucleon::protocol::frame::ErrorCondition;
use nucleon::{
    ConnectionOptions, ContainerBuilder, ContainerHandle, Error, Message, Outcome, ReceiverOptions,
    SenderOptions, Value,
};
use nucleon_integration_tests::peers::RabbitMq;

const GUEST: Option<(&str, &str)> = Some(("guest", "guest"));
const TIMEOUT: Duration = Duration::from_secs(120);

fn container() -> ContainerHandle {
    let _ = env_logger::builder().is_test(true).try_init();
    ContainerBuilder::default()
        .id("rabbitmq-interop")
        .threads(2)
        .auto_stop(false)
        .start()
}

/// Connection options for a broker on loopback: PLAIN is allowed without TLS (as Proton, nucleon otherwise
/// falls back to ANONYMOUS, which RabbitMQ maps to guest).
fn plain_allowed() -> ConnectionOptions {
    ConnectionOptions {
        sasl_allow_insecure_mechs: true,
        ..ConnectionOptions::default()
    }
}

/// A queue name no other test uses.
fn queue(test: &str) -> String {
    format!("/queue/nucleon-{test}-{}", std::process::id())
}

async fn send_all(c: &ContainerHandle, url: &str, messages: Vec<Message>) -> Vec<Outcome> {
    let sender = c
        .open_sender_with(url, plain_allowed(), SenderOptions::default())
        .await
        .unwrap_or_else(|e| panic!("sender to {url}: {e}"));
    // One at a time: concurrent `send` futures have no defined order among themselves.
    let outcomes = tokio::time::timeout(TIMEOUT, async {
        let mut outcomes = Vec::with_capacity(messages.len());
        for m in messages {
            outcomes.push(sender.send(m).await.expect("an outcome"));
        }
        outcomes
    })
    .await
    .expect("every outcome in time");
    sender.close().expect("closes");
    outcomes
}

async fn receive(c: &ContainerHandle, url: &str, n: usize, window: u32) -> Vec<Message> {
    let options = ReceiverOptions {
        credit_window: Some(window),
        ..ReceiverOptions::default()
    };
    let mut receiver = c
        .open_receiver_with(url, plain_allowed(), options)
        .await
        .unwrap_or_else(|e| panic!("receiver from {url}: {e}"));
    tokio::time::timeout(TIMEOUT, async {
        let mut messages = Vec::with_capacity(n);
        while messages.len() < n {
            let r = receiver.next().await.expect("the stream goes on");
            messages.push(r.message.clone());
            r.accept().expect("accepts");
        }
        messages
    })
    .await
    .expect("every message in time")
}

#[actix_rt::test]
async fn ten_thousand_messages_in_order_with_outcomes() {
    const N: i64 = 10_000;
    let rabbit = RabbitMq::shared();
    let c = container();
    let url = rabbit.url(GUEST, &queue("volume"));
    let outcomes = send_all(&c, &url, (0..N).map(Message::with_body).collect()).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Accepted),
        "{outcomes:?}"
    );
    let got = receive(&c, &url, N as usize, 500).await;
    let bodies: Vec<i64> = got
        .iter()
        .map(|m| m.body_value().and_then(Value::as_i64).expect("a long body"))
        .collect();
    assert_eq!(bodies, (0..N).collect::<Vec<_>>());
}

#[actix_rt::test]
async fn a_five_mib_message_both_ways() {
    let rabbit = RabbitMq::shared();
    let c = container();
    let url = rabbit.url(GUEST, &queue("large"));
    let body: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let m = Message::builder()
        .body(Value::Binary(body.clone().into()))
        .build();
    assert_eq!(send_all(&c, &url, vec![m]).await, vec![Outcome::Accepted]);
    let got = receive(&c, &url, 1, 1).await;
    assert_eq!(got[0].body_value(), Some(&Value::Binary(body.into())));
}

#[actix_rt::test]
async fn sasl_plain_and_anonymous_are_accepted() {
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
async fn a_wrong_password_is_refused() {
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

#[actix_rt::test]
async fn an_unknown_address_prefix_is_refused_with_invalid_field() {
    let rabbit = RabbitMq::shared();
    let c = container();
    let url = rabbit.url(GUEST, "/nowhere/q");
    let err = c
        .open_sender(&url, SenderOptions::default())
        .await
        .expect_err("the link is refused");
    assert!(
        matches!(&err, Error::Amqp(e) if e.condition == ErrorCondition::InvalidField),
        "{err:?}"
    );
}
