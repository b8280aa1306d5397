//! No silent downgrade of authentication: a client with credentials uses SCRAM (the password never leaves)
//! or PLAIN where PLAIN does not travel in clear, and never drops to ANONYMOUS unless asked by name; a
//! server offers PLAIN over TLS only unless asked by name, and SCRAM everywhere. (`amqps://` never connecting
//! in plaintext is shown in `tls.rs`: a TLS client to a plain-only listener fails its handshake.)

use std::sync::Arc;
use std::time::Duration;

use nucleon::protocol::engine::{
    Authenticator, PlainAuthenticator, ScramAuthenticator, ScramCredential, ScramHash,
};
use nucleon::{ConnectionOptions, ContainerHandle, Error, ListenOptions};
use nucleon_integration_tests::client::{
    container, first_seen, within, Identities, Identity, Opener, Seen,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const WAIT: Duration = Duration::from_secs(20);

fn listen(
    c: &ContainerHandle,
    authenticator: Option<Arc<dyn Authenticator>>,
) -> (u16, UnboundedReceiver<Identity>) {
    let (tx, rx) = unbounded_channel();
    let mut options = ListenOptions::new();
    options.authenticator = authenticator;
    let listener = c
        .listen_with("127.0.0.1:0", options, Identities(tx))
        .expect("listens");
    (listener.port(), rx)
}

fn failure(seen: Seen) -> String {
    match seen {
        Seen::Failed(e) => e,
        Seen::Opened => panic!("the connection opened"),
    }
}

#[actix_rt::test]
async fn credentials_are_never_dropped_for_anonymous_unless_asked() {
    let c = container("security-anonymous");
    let (port, mut users) = listen(&c, None);
    let url = format!("amqp://alice:secret@127.0.0.1:{port}");
    let e = failure(first_seen(&c, &url, ConnectionOptions::default()).await);
    assert!(
        e.contains("unauthorized-access")
            && e.contains("SCRAM-SHA-256")
            && !e.contains("\"PLAIN\""),
        "SCRAM tried, PLAIN not in clear, no ANONYMOUS: {e}"
    );
    assert!(users.try_recv().is_err(), "nothing opened");

    let fallback = ConnectionOptions::new().allow_anonymous_fallback(true);
    assert_eq!(first_seen(&c, &url, fallback).await, Seen::Opened);
    let (user, _) = within(WAIT, "server open", users.recv())
        .await
        .expect("seen");
    assert_eq!(user.as_deref(), Some("anonymous"));

    // A user without a password has nothing to use over plain TCP: refused at once.
    let (tx, _rx) = unbounded_channel();
    match c.connect(
        &format!("amqp://alice@127.0.0.1:{port}"),
        ConnectionOptions::default(),
        Opener(tx),
    ) {
        Err(Error::InvalidUrl { reason, .. }) => assert!(reason.contains("in clear"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    c.stop();
}

#[actix_rt::test]
async fn a_listener_offers_plain_over_plain_tcp_only_when_asked() {
    let c = container("security-plain");
    let plain: Arc<dyn Authenticator> = Arc::new(PlainAuthenticator::new([("alice", "secret")]));
    let (port, _users) = listen(&c, Some(plain.clone()));
    let url = format!("amqp://alice:secret@127.0.0.1:{port}");
    // Even a client that would send it in clear gets no PLAIN offered.
    let insecure = ConnectionOptions::new().sasl_allow_insecure_mechs(true);
    let e = failure(first_seen(&c, &url, insecure.clone()).await);
    assert!(e.contains("no SASL mechanism in common"), "{e}");

    let (tx, mut users) = unbounded_channel();
    let listener = c
        .listen_with(
            "127.0.0.1:0",
            ListenOptions::new()
                .authenticator(plain)
                .allow_insecure_plain(true),
            Identities(tx),
        )
        .expect("listens");
    let url = format!("amqp://alice:secret@127.0.0.1:{}", listener.port());
    assert_eq!(first_seen(&c, &url, insecure).await, Seen::Opened);
    let (user, _) = within(WAIT, "server open", users.recv())
        .await
        .expect("seen");
    assert_eq!(user.as_deref(), Some("alice"));
    c.stop();
}

#[actix_rt::test]
async fn scram_authenticates_over_plain_tcp_without_sending_the_password() {
    let c = container("security-scram");
    let credential = ScramCredential::derive(ScramHash::Sha256, "secret", b"a salt of 16 b.", 4096);
    let scram: Arc<dyn Authenticator> = Arc::new(ScramAuthenticator::new([("alice", credential)]));
    let (port, mut users) = listen(&c, Some(scram));
    let good = format!("amqp://alice:secret@127.0.0.1:{port}");
    assert_eq!(
        first_seen(&c, &good, ConnectionOptions::default()).await,
        Seen::Opened
    );
    let (user, _) = within(WAIT, "server open", users.recv())
        .await
        .expect("seen");
    assert_eq!(user.as_deref(), Some("alice"));
    let wrong = format!("amqp://alice:wrong@127.0.0.1:{port}");
    let e = failure(first_seen(&c, &wrong, ConnectionOptions::default()).await);
    assert!(e.contains("unauthorized-access"), "{e}");
    assert!(
        users.try_recv().is_err(),
        "the wrong password opened nothing"
    );
    c.stop();
}
