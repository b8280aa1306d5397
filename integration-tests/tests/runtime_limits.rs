//! The max-message-size a receiving link advertises and enforces, set per container and per listener: a sender
//! on the other side learns the limit from the `attach` and refuses a larger message before any of it goes out,
//! and the most specific setting wins.

use std::time::Duration;

use nucleon::broker::{Broker, BrokerOptions};
use nucleon::protocol::engine::EngineError;
use nucleon::{
    ContainerBuilder, ContainerHandle, Error, ListenOptions, Message, Outcome, SenderOptions,
};

const TIMEOUT: Duration = Duration::from_secs(20);

fn container(max_message_size: Option<u64>) -> ContainerHandle {
    let b = ContainerBuilder::default().threads(2).auto_stop(false);
    match max_message_size {
        Some(m) => b.max_message_size(m),
        None => b,
    }
    .start()
}

/// A message whose encoding is a little over `size` bytes.
fn message_of(size: usize) -> Message {
    Message::builder().data(vec![7u8; size]).build()
}

/// Sends one message of `size` bytes to a broker that listens with `options` in `broker_container`.
async fn send_one(
    broker_container: &ContainerHandle,
    options: ListenOptions,
    size: usize,
) -> Result<Outcome, Error> {
    let broker = Broker::new(BrokerOptions::default());
    let listener = broker
        .listen(broker_container, "127.0.0.1:0", options)
        .expect("the broker listens");
    let client = container(None);
    let url = format!("amqp://127.0.0.1:{}/limits", listener.port());
    let sender = tokio::time::timeout(TIMEOUT, client.open_sender(&url, SenderOptions::default()))
        .await
        .expect("in time")
        .expect("the sender opens");
    let outcome = tokio::time::timeout(TIMEOUT, sender.send(message_of(size)))
        .await
        .expect("in time");
    client.stop();
    listener.stop();
    outcome
}

fn too_large(result: &Result<Outcome, Error>, max: u64) -> bool {
    matches!(result, Err(Error::Engine(EngineError::MessageTooLarge { max: m, .. })) if *m == max)
}

#[actix_rt::test]
async fn the_containers_limit_applies_to_every_listener() {
    let c = container(Some(1000));
    let fits = send_one(&c, ListenOptions::default(), 900).await;
    assert_eq!(fits.expect("an outcome"), Outcome::Accepted);
    let over = send_one(&c, ListenOptions::default(), 2000).await;
    assert!(too_large(&over, 1000), "{over:?}");
    c.stop();
}

#[actix_rt::test]
async fn a_listeners_limit_wins_over_the_containers() {
    let c = container(Some(1000));
    let tighter = ListenOptions::new().max_message_size(500);
    let over = send_one(&c, tighter, 700).await;
    assert!(too_large(&over, 500), "{over:?}");
    let looser = ListenOptions::new().max_message_size(nucleon::protocol::engine::UNLIMITED);
    let fits = send_one(&c, looser, 20_000).await;
    assert_eq!(fits.expect("an outcome"), Outcome::Accepted);
    c.stop();
}

#[actix_rt::test]
async fn the_default_is_16_mib() {
    let c = container(None);
    let over = send_one(&c, ListenOptions::default(), 17 * 1024 * 1024).await;
    assert!(
        too_large(&over, nucleon::protocol::engine::DEFAULT_MAX_MESSAGE_SIZE),
        "{over:?}"
    );
    c.stop();
}
