//! Authorization in the in-process broker (issue 14): per-user grants of send, consume, browse and create on
//! address patterns, refused links get `amqp:unauthorized-access` (or `amqp:not-found` where the user may
//! not create), anonymous-relay messages are checked one by one, and a temporary queue is its connection's
//! own even on an open broker.

use std::sync::Arc;

use nucleon::broker::{Authorization, Broker, BrokerOptions, Operation, ANONYMOUS_USER};
use nucleon::protocol::engine::PlainAuthenticator;
use nucleon::protocol::frame::definitions::DISTRIBUTION_MODE_COPY;
use nucleon::protocol::frame::{ErrorCondition, Source, Target};
use nucleon::{
    ConnectionOptions, ContainerHandle, Error, ListenOptions, Message, Outcome, ReceiverOptions,
    SenderOptions,
};
use nucleon_integration_tests::broker::{container, DynamicClient, TIMEOUT};

/// alice sends, consumes and creates under `orders.`; bob only consumes `orders.`, and browses `audit`;
/// anonymous clients may send to `public` (which must exist: no create).
fn grants() -> Authorization {
    Authorization::new()
        .grant("alice", Operation::Send, "orders.*")
        .grant("alice", Operation::Consume, "orders.*")
        .grant("alice", Operation::Create, "orders.*")
        .grant("alice", Operation::Send, "audit")
        .grant("alice", Operation::Create, "audit")
        .grant("alice", Operation::Consume, "known")
        .grant("bob", Operation::Consume, "orders.*")
        .grant("bob", Operation::Browse, "audit")
        .grant(ANONYMOUS_USER, Operation::Send, "public")
}

/// A broker with users alice and bob (PLAIN over loopback, asked for by name), anonymous allowed.
fn broker(container: &ContainerHandle, authorization: Option<Authorization>) -> (Broker, u16) {
    let broker = Broker::new(BrokerOptions {
        authorization,
        ..BrokerOptions::default()
    });
    let authenticator =
        PlainAuthenticator::new([("alice", "a-secret"), ("bob", "b-secret")]).allow_anonymous(true);
    let options = ListenOptions::new()
        .allow_insecure_plain(true)
        .authenticator(Arc::new(authenticator));
    let listener = broker
        .listen(container, "127.0.0.1:0", options)
        .expect("broker listens");
    (broker, listener.port())
}

fn as_user() -> ConnectionOptions {
    ConnectionOptions::new().sasl_allow_insecure_mechs(true)
}

fn url(user: Option<&str>, port: u16, address: &str) -> String {
    match user {
        Some("alice") => format!("amqp://alice:a-secret@127.0.0.1:{port}/{address}"),
        Some("bob") => format!("amqp://bob:b-secret@127.0.0.1:{port}/{address}"),
        _ => format!("amqp://127.0.0.1:{port}/{address}"),
    }
}

/// The AMQP condition an open or send failed with.
fn condition(e: &Error) -> Option<ErrorCondition> {
    e.condition().cloned()
}

async fn send_as(
    container: &ContainerHandle,
    user: Option<&str>,
    port: u16,
    address: &str,
) -> Result<Outcome, Error> {
    let sender = tokio::time::timeout(
        TIMEOUT,
        container.open_sender_with(
            &url(user, port, address),
            as_user(),
            SenderOptions::default(),
        ),
    )
    .await
    .expect("the attach is answered in time")?;
    let outcome = tokio::time::timeout(TIMEOUT, sender.send(Message::with_body(1i64)))
        .await
        .expect("an outcome in time");
    let _ = sender.close();
    outcome
}

async fn consume_as(
    container: &ContainerHandle,
    user: Option<&str>,
    port: u16,
    address: &str,
    browse: bool,
) -> Result<(), Error> {
    let source = browse.then(|| Source {
        address: Some(address.into()),
        distribution_mode: Some(DISTRIBUTION_MODE_COPY),
        ..Source::default()
    });
    let receiver = tokio::time::timeout(
        TIMEOUT,
        container.open_receiver_with(&url(user, port, address), as_user(), {
            let mut o = ReceiverOptions::new();
            o.source = source;
            o
        }),
    )
    .await
    .expect("the attach is answered in time")?;
    let _ = receiver.close();
    Ok(())
}

#[actix_rt::test]
async fn links_are_refused_unless_the_user_is_granted_the_operation() {
    let container = container(2);
    let (broker, port) = broker(&container, Some(grants()));
    let ok = send_as(&container, Some("alice"), port, "orders.eu").await;
    assert_eq!(ok.expect("alice sends to orders.*"), Outcome::Accepted);
    assert_eq!(broker.queue_depth("orders.eu"), Some(1));
    consume_as(&container, Some("bob"), port, "orders.eu", false)
        .await
        .expect("bob consumes orders.*");

    for (who, address) in [
        (Some("bob"), "orders.eu"),
        (None, "orders.eu"),
        (Some("alice"), "elsewhere"),
    ] {
        let refused = send_as(&container, who, port, address)
            .await
            .expect_err("no send grant");
        assert_eq!(
            condition(&refused),
            Some(ErrorCondition::UnauthorizedAccess),
            "{who:?} sending to {address}: {refused}"
        );
    }
    for (who, address, browse) in [
        (None, "orders.eu", false),
        (Some("alice"), "audit", false),
        (Some("bob"), "orders.eu", true),
    ] {
        let refused = consume_as(&container, who, port, address, browse)
            .await
            .expect_err("no consume or browse grant");
        assert_eq!(
            condition(&refused),
            Some(ErrorCondition::UnauthorizedAccess),
            "{who:?} consuming {address} (browse {browse}): {refused}"
        );
    }
    assert_eq!(broker.queue_depth("elsewhere"), None, "nothing made");
    assert_eq!(broker.queue_depth("orders.eu"), Some(1), "nothing taken");
    container.stop();
}

#[actix_rt::test]
async fn a_missing_address_is_not_found_for_users_who_may_not_create_it() {
    let container = container(2);
    let (broker, port) = broker(&container, Some(grants()));
    let refused = consume_as(&container, Some("alice"), port, "known", false)
        .await
        .expect_err("alice may consume `known` but not create it");
    assert_eq!(
        condition(&refused),
        Some(ErrorCondition::NotFound),
        "{refused}"
    );
    let refused = send_as(&container, None, port, "public")
        .await
        .expect_err("anonymous may send to `public` but not create it");
    assert_eq!(
        condition(&refused),
        Some(ErrorCondition::NotFound),
        "{refused}"
    );
    assert_eq!(broker.queue_depth("known"), None);
    assert_eq!(broker.queue_depth("public"), None);
    // Once it exists (alice may create `audit`), a user granted browse reads it without creating.
    send_as(&container, Some("alice"), port, "audit")
        .await
        .expect("alice creates audit");
    consume_as(&container, Some("bob"), port, "audit", true)
        .await
        .expect("bob browses audit");
    container.stop();
}

#[actix_rt::test]
async fn anonymous_relay_checks_each_message_against_its_to() {
    let container = container(2);
    let (broker, port) = broker(&container, Some(grants()));
    let relay = container
        .open_sender_with(
            &url(Some("alice"), port, ""),
            as_user(),
            SenderOptions::new().target(Target::default()),
        )
        .await
        .expect("the relay link opens");
    let to = |address: &str| Message::builder().to(address).body(1i64).build();
    assert_eq!(
        relay.send(to("orders.us")).await.expect("an outcome"),
        Outcome::Accepted
    );
    match relay.send(to("secret")).await.expect("an outcome") {
        Outcome::Rejected(Some(e)) => {
            assert_eq!(e.condition, ErrorCondition::UnauthorizedAccess, "{e:?}")
        }
        other => panic!("a message to an address alice may not send to: {other:?}"),
    }
    assert_eq!(broker.queue_depth("orders.us"), Some(1));
    assert_eq!(broker.queue_depth("secret"), None);
    container.stop();
}

#[actix_rt::test]
async fn a_temporary_queue_is_consumed_only_by_its_own_connection_even_on_an_open_broker() {
    let container = container(2);
    let (_broker, port) = broker(&container, None);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let _owner = container
        .connect(
            &format!("amqp://127.0.0.1:{port}"),
            ConnectionOptions::default(),
            DynamicClient(Some(tx)),
        )
        .expect("connects");
    let address = tokio::time::timeout(TIMEOUT, rx)
        .await
        .expect("in time")
        .expect("an address");
    for browse in [false, true] {
        let refused = consume_as(&container, None, port, &address, browse)
            .await
            .expect_err("another connection's temporary queue");
        assert_eq!(
            condition(&refused),
            Some(ErrorCondition::UnauthorizedAccess),
            "{refused}"
        );
    }
    // Replies to it are fine.
    assert_eq!(
        send_as(&container, None, port, &address)
            .await
            .expect("anyone may reply"),
        Outcome::Accepted
    );
    container.stop();
}
