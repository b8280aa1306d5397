//! Link options reach the peer as sent, and errors keep what their cause said (issue 17).
//!
//! * Every attach term our `SenderOptions` / `ReceiverOptions` set (link properties, capabilities, both settle
//!   modes, max message size, a filter set, terminus durability, expiry, distribution mode, dynamic node
//!   properties) arrives in the `attach` a raw engine peer ([`Driver`]) reads.
//! * A connect to a closed port fails with `Error::Io` of kind `ConnectionRefused`; a link the broker
//!   refuses fails with `Error::LinkRefused` carrying the broker's condition; a peer that drops the socket
//!   under an open connection gives `Error::TransportLost`.

use std::sync::Arc;
use std::thread;
use std::time::Duration;

use nucleon::broker::{Authorization, BrokerOptions, Operation, ANONYMOUS_USER};
use nucleon::protocol::codec::{Described, Descriptor, Map, Symbol, Value};
use nucleon::protocol::engine::{
    ConnectionConfig, Event, LinkConfig, PlainAuthenticator, SaslServerConfig,
};
use nucleon::protocol::frame::{
    Attach, ErrorCondition, ReceiverSettleMode, Role, SenderSettleMode, TerminusDurability,
    TerminusExpiryPolicy,
};
use nucleon::{ConnectionOptions, Error, ReceiverOptions, SenderOptions};
use nucleon_integration_tests::broker::{container, serve, TIMEOUT};
use nucleon_integration_tests::driver::{listen, Driver};

/// A raw server engine that admits SASL ANONYMOUS.
fn server_config() -> ConnectionConfig {
    let mut config = ConnectionConfig::server("raw-peer");
    config.sasl_server = Some(SaslServerConfig {
        authenticator: Arc::new(PlainAuthenticator::anonymous()),
        allow_skip: true,
    });
    config
}

/// Serves one client connection: answers its open, begins and attaches (mirroring its termini), and
/// returns every `attach` it received once the client closes.
fn serve_raw(listener: std::net::TcpListener) -> thread::JoinHandle<Vec<Attach>> {
    thread::spawn(move || {
        let mut d = Driver::accept(&listener, server_config(), Duration::from_secs(20))
            .expect("the client connects");
        let mut attaches = Vec::new();
        d.run_until("the client to close", |conn, e| {
            match e {
                Event::ConnectionRemoteOpen(_) => conn.open().expect("open"),
                Event::SessionRemoteBegin(s) => conn.begin_reply(*s).expect("begin"),
                Event::LinkRemoteAttach(link) => {
                    let remote = conn
                        .remote_attach(*link)
                        .expect("a link")
                        .expect("its attach")
                        .clone();
                    let reply = LinkConfig {
                        source: remote.source.clone(),
                        target: remote.target.clone(),
                        ..LinkConfig::default()
                    };
                    conn.attach_reply(*link, reply).expect("attach");
                    attaches.push(remote);
                }
                Event::ConnectionRemoteClose(_) => {
                    let _ = conn.close(None);
                }
                Event::TransportClosed => return Some(()),
                _ => {}
            }
            None
        })
        .expect("the connection runs to its close");
        attaches
    })
}

fn symbols(names: &[&'static str]) -> Vec<Symbol> {
    names.iter().map(|n| Symbol::from_static(n)).collect()
}

#[actix_rt::test]
async fn every_link_term_we_set_arrives_in_the_peers_attach() {
    let listener = listen().expect("listen");
    let port = listener.local_addr().expect("its address").port();
    let peer = serve_raw(listener);
    let container = container(1);

    let connection = tokio::time::timeout(
        TIMEOUT,
        container.connect_async(
            &format!("amqp://127.0.0.1:{port}"),
            ConnectionOptions::new(),
        ),
    )
    .await
    .expect("connects in time")
    .expect("connects");

    let sender_options = SenderOptions::new()
        .name("epoch-sender")
        .property("com.microsoft:epoch", Value::Long(7))
        .offered_capabilities(symbols(&["ANONYMOUS-RELAY"]))
        .desired_capabilities(symbols(&["DELAYED_DELIVERY"]))
        .sender_settle_mode(SenderSettleMode::Mixed)
        .receiver_settle_mode(ReceiverSettleMode::Second)
        .max_message_size(65_536)
        .durable(TerminusDurability::Configuration)
        .expiry_policy(TerminusExpiryPolicy::Never)
        .expiry_timeout(30)
        .target_capabilities(symbols(&["queue"]));
    let sender = tokio::time::timeout(TIMEOUT, connection.open_sender("orders", sender_options))
        .await
        .expect("the sender opens in time")
        .expect("the sender opens");

    let mut node = Map::new();
    node.insert(
        Symbol::from_static("lifetime-policy"),
        Value::String("delete-on-close".into()),
    );
    let receiver_options = ReceiverOptions::new()
        .name("subscription-1")
        .property("x-opt-owner", "tests")
        .desired_capabilities(symbols(&["SHARED-SUBS"]))
        .sender_settle_mode(SenderSettleMode::Settled)
        .max_message_size(1_000_000)
        .selector("colour = 'red'")
        .filter(
            "apache.org:legacy-amqp-topic-binding:string",
            Described {
                descriptor: Descriptor::Symbol(Symbol::from_static(
                    "apache.org:legacy-amqp-topic-binding:string",
                )),
                value: Value::String("news.#".into()),
            },
        )
        .durable(TerminusDurability::UnsettledState)
        .expiry_policy(TerminusExpiryPolicy::Never)
        .distribution_mode("copy")
        .dynamic_node_properties(node.clone())
        .source_capabilities(symbols(&["topic"]));
    let receiver = tokio::time::timeout(
        TIMEOUT,
        connection.open_receiver("events", receiver_options),
    )
    .await
    .expect("the receiver opens in time")
    .expect("the receiver opens");

    drop(sender);
    drop(receiver);
    connection.close().expect("closes");
    drop(connection);
    let attaches = tokio::task::spawn_blocking(move || peer.join().expect("the peer ran"))
        .await
        .expect("joins");
    container.stop();

    let [sent, received] = &attaches[..] else {
        panic!("two attaches: {attaches:?}");
    };

    // The sender.
    assert_eq!(sent.name, "epoch-sender");
    assert_eq!(sent.role, Role::Sender);
    let properties = sent.properties.as_ref().expect("link properties");
    assert_eq!(
        properties.get(&Value::Symbol(Symbol::from_static("com.microsoft:epoch"))),
        Some(&Value::Long(7))
    );
    assert_eq!(
        sent.offered_capabilities.as_deref(),
        Some(&symbols(&["ANONYMOUS-RELAY"])[..])
    );
    assert_eq!(
        sent.desired_capabilities.as_deref(),
        Some(&symbols(&["DELAYED_DELIVERY"])[..])
    );
    assert_eq!(sent.snd_settle_mode, SenderSettleMode::Mixed);
    assert_eq!(sent.rcv_settle_mode, ReceiverSettleMode::Second);
    assert_eq!(sent.max_message_size, Some(65_536));
    let target = sent.target.as_ref().expect("a target");
    assert_eq!(
        target.address.as_deref(),
        Some("orders"),
        "the address fills the target"
    );
    assert_eq!(target.durable, TerminusDurability::Configuration);
    assert_eq!(target.expiry_policy, TerminusExpiryPolicy::Never);
    assert_eq!(target.timeout, 30);
    assert_eq!(
        target.capabilities.as_deref(),
        Some(&symbols(&["queue"])[..])
    );

    // The receiver.
    assert_eq!(received.name, "subscription-1");
    assert_eq!(received.role, Role::Receiver);
    assert_eq!(
        received
            .properties
            .as_ref()
            .and_then(|p| p.get(&Value::Symbol(Symbol::from_static("x-opt-owner")))),
        Some(&Value::String("tests".into()))
    );
    assert_eq!(
        received.desired_capabilities.as_deref(),
        Some(&symbols(&["SHARED-SUBS"])[..])
    );
    assert_eq!(received.snd_settle_mode, SenderSettleMode::Settled);
    assert_eq!(received.max_message_size, Some(1_000_000));
    let source = received.source.as_ref().expect("a source");
    assert_eq!(
        source.address.as_deref(),
        Some("events"),
        "the address fills the source"
    );
    let filter = source.filter.as_ref().expect("a filter set");
    assert_eq!(filter.len(), 2, "{filter:?}");
    let selector = filter
        .get(&Value::Symbol(Symbol::from_static("jms-selector")))
        .expect("the selector");
    assert_eq!(
        selector,
        &Value::Described(Box::new(Described {
            descriptor: Descriptor::Symbol(Symbol::from_static(
                "apache.org:selector-filter:string"
            )),
            value: Value::String("colour = 'red'".into()),
        }))
    );
    assert!(filter
        .get(&Value::Symbol(Symbol::from_static(
            "apache.org:legacy-amqp-topic-binding:string"
        )))
        .is_some());
    assert_eq!(source.durable, TerminusDurability::UnsettledState);
    assert_eq!(source.expiry_policy, TerminusExpiryPolicy::Never);
    assert_eq!(
        source.distribution_mode.as_ref().map(Symbol::as_str),
        Some("copy")
    );
    assert_eq!(source.dynamic_node_properties.as_ref(), Some(&node));
    assert_eq!(
        source.capabilities.as_deref(),
        Some(&symbols(&["topic"])[..])
    );
}

#[actix_rt::test]
async fn a_connect_to_a_closed_port_keeps_the_io_error_kind() {
    let port = {
        let l = listen().expect("listen");
        l.local_addr().expect("its address").port()
    };
    let container = container(1);
    let err = tokio::time::timeout(
        TIMEOUT,
        container.connect_async(
            &format!("amqp://127.0.0.1:{port}"),
            ConnectionOptions::new(),
        ),
    )
    .await
    .expect("fails in time")
    .expect_err("nothing listens");
    assert!(
        matches!(&err, Error::Io { kind, .. } if *kind == std::io::ErrorKind::ConnectionRefused),
        "{err:?}"
    );
    assert_eq!(err.io_kind(), Some(std::io::ErrorKind::ConnectionRefused));
    assert!(!err.is_transport_lost());
    container.stop();
}

#[actix_rt::test]
async fn a_link_the_broker_refuses_is_link_refused_with_its_condition() {
    let container = container(1);
    let authorization = Authorization::new().grant(ANONYMOUS_USER, Operation::Send, "public");
    let (_broker, base) = serve(
        &container,
        BrokerOptions {
            authorization: Some(authorization),
            ..BrokerOptions::default()
        },
    );
    let connection = container
        .connect_async(&base, ConnectionOptions::new())
        .await
        .expect("connects");

    // No right to send to `secret`.
    let err = tokio::time::timeout(
        TIMEOUT,
        connection.open_sender("secret", SenderOptions::new()),
    )
    .await
    .expect("refused in time")
    .expect_err("refused");
    assert!(err.is_link_refused(), "{err:?}");
    assert!(
        matches!(&err, Error::LinkRefused { error: Some(e) } if e.condition == ErrorCondition::UnauthorizedAccess),
        "{err:?}"
    );
    assert_eq!(err.condition(), Some(&ErrorCondition::UnauthorizedAccess));

    // May send to `public`, but not create it: the broker does not find it.
    let err = tokio::time::timeout(
        TIMEOUT,
        connection.open_sender("public", SenderOptions::new()),
    )
    .await
    .expect("refused in time")
    .expect_err("refused");
    assert_eq!(err.condition(), Some(&ErrorCondition::NotFound), "{err:?}");
    assert!(err.is_link_refused(), "{err:?}");

    // The connection is still fine: a refusal is the link's.
    assert!(!connection.is_closed());
    container.stop();
}

#[actix_rt::test]
async fn a_peer_that_drops_the_socket_is_a_lost_transport() {
    let listener = listen().expect("listen");
    let port = listener.local_addr().expect("its address").port();
    let peer = thread::spawn(move || {
        let mut d = Driver::accept(&listener, server_config(), Duration::from_secs(20))
            .expect("the client connects");
        d.run_until("the client's open", |conn, e| match e {
            Event::ConnectionRemoteOpen(_) => {
                conn.open().expect("open");
                Some(())
            }
            _ => None,
        })
        .expect("opens");
        // Let our open go out, then drop the socket without a close.
        let _ = d.run_for(Duration::from_millis(100), |_, _| {});
    });
    let container = container(1);
    let connection = tokio::time::timeout(
        TIMEOUT,
        container.connect_async(
            &format!("amqp://127.0.0.1:{port}"),
            ConnectionOptions::new(),
        ),
    )
    .await
    .expect("connects in time")
    .expect("connects");
    let why = tokio::time::timeout(TIMEOUT, connection.closed())
        .await
        .expect("ends in time");
    assert!(why.is_transport_lost(), "{why:?}");
    assert_eq!(why.condition(), None);
    peer.join().expect("the peer ran");
    container.stop();
}
