//! nucleon against fe2o3-amqp 0.18, the other Rust AMQP 1.0 implementation, run in-process on the test's own
//! tokio runtime (the `actix_rt` test runtime; our container runs on its own arbiters).
//!
//! Two directions:
//! * `client`: fe2o3's client (`Connection`, `Session`, `Sender`, `Receiver`) against our broker
//!   (`nucleon::broker::Broker`, served in-process on 127.0.0.1:0);
//! * `acceptor`: fe2o3's server side (feature `acceptor`: `ConnectionAcceptor`, `SessionAcceptor`,
//!   `LinkAcceptor` on a tokio `TcpListener` at 127.0.0.1:0) with our clients sending to it and receiving
//!   from it.
//!
//! TLS: fe2o3's rustls client against our TLS-only broker (SASL PLAIN inside, offered over TLS only), and our
//! rustls client against fe2o3's acceptor serving TLS (its `rustls` feature, a `tokio_rustls::TlsAcceptor`),
//! SASL PLAIN and SCRAM-SHA-256 inside. fe2o3's acceptor only does TLS after the AMQP TLS protocol header
//! `AMQP 2 1 0 0` [AMQP 1.0 §5.2.1] (our `tls_protocol_header`); a client that starts TLS at once gets that
//! header back, or a reset, instead of a ServerHello, and fails its handshake.
//!
//! SASL both ways: PLAIN, ANONYMOUS and SCRAM-SHA-256 (fe2o3's feature `scram`; its acceptor stores keys our
//! `ScramCredential` derived, so the two implementations agree on the derivation as well as the exchange).
//!
//! Type fidelity is checked by relaying: each corpus message goes through fe2o3, which decodes it into its
//! own raw types (`Message<Body<Value>>`) and encodes it again; what comes back to us must equal the
//! original, type included.
//!
//! What fe2o3 lacks or gets wrong, so no test pretends otherwise:
//! * its `Value` decoder answers `InvalidFormatCode` to an array of lists and to an array with a descriptor
//!   (both well-formed [AMQP 1.0 §1.6.24]): the corpus messages `value-array-list` and
//!   `value-array-described` are left out of the type-fidelity cases;
//! * its `Receiver` reports no drain-finished event and ignores the credit a drained sender gives back, so
//!   the client drain case checks the broker's side (the unused credit is gone);
//! * when a drain's answer reaches its link before the transfers sent ahead of it have been read, its
//!   receiver counts those transfers twice and its next `flow` carries a delivery-count ahead of the
//!   sender's [AMQP 1.0 §2.6.7] (seen here as 13 after 10 deliveries), which our engine takes as no credit;
//!   so credit granted to the same fe2o3 receiver after a drain is not tested (a new receiver is);
//! * a fe2o3 sender does not expose its credit, so in the acceptor's credit cases the flow is observed from
//!   our receiver only.
//!
//! fe2o3 quirk (see `PEERS.md`): a peer that closes right after the last message makes its link close report
//! `RemoteClosed`; closing results of fe2o3 links are therefore not asserted once the data has arrived.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, SaslAnonymousMechanism, SaslPlainMechanism,
    SessionAcceptor,
};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::link::delivery::Sendable;
use fe2o3_amqp::link::receiver::CreditMode;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{
    AmqpValue, Body, Message as FMessage, Outcome as FOutcome, Properties as FProperties,
    Source as FSource,
};
use fe2o3_amqp::types::primitives::{SimpleValue, Value as FValue};
use nucleon::protocol::engine::PlainAuthenticator;
use nucleon::protocol::frame::{ErrorCondition, MessageId};
use nucleon::{
    Connection, ConnectionOptions, ContainerHandle, Delivery, DeliveryMode, ListenOptions, Message,
    MessagingHandler, Outcome, Receiver, ReceiverOptions, Sender, SenderHandle, SenderOptions,
    Value,
};
use nucleon_integration_tests::certs::{CertFiles, ServerCert, TestCa};
use nucleon_integration_tests::client::{self, broker, five_mib, plain_allowed, Clients};
use nucleon_integration_tests::corpus;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const TIMEOUT: Duration = Duration::from_secs(30);
/// fe2o3's raw message: every section kept, the body in fe2o3's own `Value`.
type Raw = FMessage<Body<FValue>>;

fn container() -> ContainerHandle {
    client::container("fe2o3-interop")
}

/// Awaits `f`, failing the test when it takes longer than [`TIMEOUT`].
async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    client::within(TIMEOUT, what, f).await
}

/// Our facade clients (PLAIN allowed on loopback).
fn clients() -> Clients {
    Clients {
        connection: plain_allowed(),
        timeout: TIMEOUT,
    }
}

/// A fe2o3 client connection and session to `url`.
async fn fe2o3_connect(url: &str) -> (ConnectionHandle<()>, SessionHandle<()>) {
    let mut connection = within("fe2o3 connects", fe2o3_amqp::Connection::open("fe2o3", url))
        .await
        .unwrap_or_else(|e| panic!("fe2o3 connection to {url}: {e:?}"));
    let session = within("fe2o3 begins", fe2o3_amqp::Session::begin(&mut connection))
        .await
        .expect("fe2o3 session");
    (connection, session)
}

async fn fe2o3_sender(session: &mut SessionHandle<()>, address: &str) -> fe2o3_amqp::Sender {
    within(
        "fe2o3 sender attaches",
        fe2o3_amqp::Sender::attach(session, format!("fe2o3-sender-{address}"), address),
    )
    .await
    .expect("fe2o3 sender")
}

async fn fe2o3_receiver(
    session: &mut SessionHandle<()>,
    address: &str,
    credit: CreditMode,
) -> fe2o3_amqp::Receiver {
    within(
        "fe2o3 receiver attaches",
        fe2o3_amqp::Receiver::builder()
            .name(format!("fe2o3-receiver-{address}"))
            .source(address)
            .credit_mode(credit)
            .attach(session),
    )
    .await
    .expect("fe2o3 receiver")
}

/// Receives one raw message and accepts it.
async fn fe2o3_take(receiver: &mut fe2o3_amqp::Receiver, what: &str) -> Raw {
    let delivery = within(what, receiver.recv::<Body<FValue>>())
        .await
        .unwrap_or_else(|e| panic!("{what}: fe2o3 cannot decode it: {e:?}"));
    within("fe2o3 accepts", receiver.accept(&delivery))
        .await
        .expect("fe2o3 accepts");
    delivery.into_message()
}

async fn fe2o3_send(sender: &mut fe2o3_amqp::Sender, message: Raw) -> FOutcome {
    within("fe2o3 sends", sender.send(message))
        .await
        .expect("fe2o3 gets an outcome")
}

fn is_accepted(outcome: &FOutcome) -> bool {
    matches!(outcome, FOutcome::Accepted(_))
}

/// A fe2o3 message whose body is the `amqp-value` `v`.
fn raw_value(v: FValue) -> Raw {
    FMessage::builder().body(Body::Value(AmqpValue(v))).build()
}

fn raw_long(m: &Raw) -> i64 {
    match &m.body {
        Body::Value(v) => match &v.0 {
            FValue::Long(n) => *n,
            other => panic!("not a long: {other:?}"),
        },
        other => panic!("not an amqp-value: {other:?}"),
    }
}

fn raw_binary_len(m: &Raw) -> usize {
    match &m.body {
        Body::Value(v) => match &v.0 {
            FValue::Binary(b) => b.len(),
            other => panic!("not a binary: {other:?}"),
        },
        other => panic!("not an amqp-value: {other:?}"),
    }
}

/// Sends each message on one of our senders, one at a time, and collects the outcomes.
async fn nucleon_send_all(
    c: &ContainerHandle,
    url: &str,
    options: SenderOptions,
    messages: Vec<Message>,
) -> Vec<Outcome> {
    clients().send_all(c, url, options, messages).await
}

/// One of our senders to `url`, on a connection with default options.
async fn our_sender(c: &ContainerHandle, url: &str) -> SenderHandle {
    let clients = Clients {
        connection: ConnectionOptions::default(),
        timeout: TIMEOUT,
    };
    clients.open_sender(c, url, SenderOptions::default()).await
}

async fn nucleon_receiver(c: &ContainerHandle, url: &str, window: u32) -> nucleon::ReceiverHandle {
    clients().open_receiver(c, url, window).await
}

async fn nucleon_take(receiver: &mut nucleon::ReceiverHandle) -> Message {
    clients().take(receiver).await
}

// ---------------------------------------------------------------------------------------------------------
// The acceptor side: fe2o3 as the server.
// ---------------------------------------------------------------------------------------------------------

/// How the fe2o3 acceptor authenticates.
#[derive(Clone)]
enum Auth {
    Anonymous,
    Plain(&'static str, &'static str),
    /// SCRAM-SHA-256 for this user and password (fe2o3's authenticator, keys derived by ours).
    Scram(&'static str, &'static str),
}

/// One SCRAM-SHA-256 user for fe2o3's SCRAM authenticator, its stored keys derived by our
/// `ScramCredential` (so the two implementations must agree on the key derivation, too).
#[derive(Clone)]
struct Fe2o3Scram {
    user: &'static str,
    credential: nucleon::protocol::engine::ScramCredential,
}

impl Fe2o3Scram {
    fn new(user: &'static str, password: &str) -> Fe2o3Scram {
        let credential = nucleon::protocol::engine::ScramCredential::derive(
            nucleon::protocol::engine::ScramHash::Sha256,
            password,
            b"fe2o3 interop salt",
            4096,
        );
        Fe2o3Scram { user, credential }
    }
}

impl fe2o3_amqp::auth::scram::ScramCredentialProvider for Fe2o3Scram {
    fn scram_version(&self) -> &fe2o3_amqp::auth::scram::ScramVersion {
        &fe2o3_amqp::auth::scram::ScramVersion::Sha256
    }

    fn get_stored_password(
        &self,
        username: &str,
    ) -> Option<fe2o3_amqp::auth::scram::StoredPassword<'_>> {
        (username == self.user).then(|| fe2o3_amqp::auth::scram::StoredPassword {
            salt: self.credential.salt(),
            iterations: self.credential.iterations(),
            stored_key: self.credential.stored_key(),
            server_key: self.credential.server_key(),
        })
    }
}

/// A fe2o3 acceptor listening on loopback. Every link our clients attach arrives on `links`, in attach
/// order; its connection and session are kept by the acceptor's tasks.
struct Fe2o3Server {
    port: u16,
    /// `amqps` when it serves TLS, else `amqp`.
    scheme: &'static str,
    links: mpsc::UnboundedReceiver<LinkEndpoint>,
}

/// fe2o3's `ConnectionAcceptor` for `auth`, from `builder` (with or without TLS: `accept` is an inherent
/// method of each acceptor type, not a trait's), accepting `stream`.
macro_rules! fe2o3_accept {
    ($builder:expr, $auth:expr, $stream:expr) => {
        match $auth {
            Auth::Anonymous => {
                $builder
                    .sasl_acceptor(SaslAnonymousMechanism::new())
                    .build()
                    .accept($stream)
                    .await
            }
            Auth::Plain(user, password) => {
                $builder
                    .sasl_acceptor(SaslPlainMechanism::new(*user, *password))
                    .build()
                    .accept($stream)
                    .await
            }
            Auth::Scram(user, password) => {
                $builder
                    .sasl_acceptor(fe2o3_amqp::auth::scram::ScramAuthenticator::new(
                        Fe2o3Scram::new(user, password),
                    ))
                    .build()
                    .accept($stream)
                    .await
            }
        }
    };
}

impl Fe2o3Server {
    async fn start(auth: Auth, idle_timeout_ms: Option<u32>) -> Fe2o3Server {
        Self::start_with(auth, idle_timeout_ms, None, LinkAcceptor::new()).await
    }

    /// An acceptor that serves TLS with fe2o3's rustls support: the client sends the AMQP TLS header
    /// (`AMQP 2 1 0 0`), fe2o3 answers with the same, then the handshake, then SASL inside TLS
    /// [AMQP 1.0 §5.2.1]. fe2o3 takes no TLS from the first byte.
    async fn start_tls(auth: Auth, tls: tokio_rustls::TlsAcceptor) -> Fe2o3Server {
        Self::start_with(auth, None, Some(tls), LinkAcceptor::new()).await
    }

    async fn start_with<FS, FT>(
        auth: Auth,
        idle_timeout_ms: Option<u32>,
        tls: Option<tokio_rustls::TlsAcceptor>,
        link_acceptor: LinkAcceptor<FS, FT>,
    ) -> Fe2o3Server
    where
        FS: Fn(FSource) -> Option<FSource> + Send + Sync + 'static,
        FT: Fn(fe2o3_amqp::types::messaging::Target) -> Option<fe2o3_amqp::types::messaging::Target>
            + Send
            + Sync
            + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fe2o3 acceptor binds");
        let port = listener.local_addr().expect("bound").port();
        let scheme = if tls.is_some() { "amqps" } else { "amqp" };
        let (tx, links) = mpsc::unbounded_channel();
        let link_acceptor = Arc::new(link_acceptor);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let builder = ConnectionAcceptor::builder().container_id("fe2o3-acceptor");
                let builder = match idle_timeout_ms {
                    Some(ms) => builder.idle_time_out(ms),
                    None => builder,
                };
                let connection = match &tls {
                    None => fe2o3_accept!(builder, &auth, stream),
                    Some(tls) => fe2o3_accept!(builder.tls_acceptor(tls.clone()), &auth, stream),
                };
                // A refused client (wrong password, no TLS header) is an expected outcome for some cases.
                let Ok(mut connection) = connection else {
                    continue;
                };
                let tx = tx.clone();
                let link_acceptor = link_acceptor.clone();
                tokio::spawn(async move {
                    let sessions = SessionAcceptor::new();
                    while let Ok(mut session) = sessions.accept(&mut connection).await {
                        let tx = tx.clone();
                        let link_acceptor = link_acceptor.clone();
                        tokio::spawn(async move {
                            while let Ok(link) = link_acceptor.accept(&mut session).await {
                                if tx.send(link).is_err() {
                                    break;
                                }
                            }
                            let _ = session.end().await;
                        });
                    }
                    let _ = connection.close().await;
                });
            }
        });
        Fe2o3Server {
            port,
            scheme,
            links,
        }
    }

    fn url(&self, address: &str) -> String {
        format!("{}://127.0.0.1:{}/{address}", self.scheme, self.port)
    }

    fn url_as(&self, user: &str, password: &str, address: &str) -> String {
        format!(
            "{}://{user}:{password}@127.0.0.1:{}/{address}",
            self.scheme, self.port
        )
    }

    async fn next_link(&mut self) -> LinkEndpoint {
        within("fe2o3 accepts a link", self.links.recv())
            .await
            .expect("the acceptor runs")
    }

    /// The fe2o3 sender serving the receiver we just attached.
    async fn sender(&mut self) -> fe2o3_amqp::Sender {
        match self.next_link().await {
            LinkEndpoint::Sender(s) => s,
            LinkEndpoint::Receiver(_) => panic!("expected our receiver's link"),
        }
    }

    /// The fe2o3 receiver serving the sender we just attached.
    async fn receiver(&mut self) -> fe2o3_amqp::Receiver {
        match self.next_link().await {
            LinkEndpoint::Receiver(r) => r,
            LinkEndpoint::Sender(_) => panic!("expected our sender's link"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Type fidelity, application properties, header and properties fields.
// ---------------------------------------------------------------------------------------------------------

/// Messages fe2o3 cannot carry: its `Value` decoder answers `InvalidFormatCode` to an array whose elements
/// are lists, and to an array with a descriptor (both well-formed [AMQP 1.0 §1.6.24], and decoded by Proton).
const NOT_RELAYED: &[&str] = &["value-array-list", "value-array-described"];

/// Relays each message through fe2o3 via our broker: our sender → `relay-in` → fe2o3 receiver (raw types) →
/// fe2o3 sender → `relay-out` → our receiver. Returns what fe2o3 decoded and what came back, per message.
async fn relay_through_fe2o3_client(
    messages: Vec<(String, Message)>,
) -> Vec<(String, Raw, Message)> {
    let c = container();
    let (_broker, port) = broker(&c, ListenOptions::default());
    let base = format!("amqp://127.0.0.1:{port}");
    let (mut connection, mut session) = fe2o3_connect(&base).await;
    let mut from = fe2o3_receiver(&mut session, "relay-in", CreditMode::Auto(10)).await;
    let mut to = fe2o3_sender(&mut session, "relay-out").await;
    let sender = our_sender(&c, &format!("{base}/relay-in")).await;
    let mut back = nucleon_receiver(&c, &format!("{base}/relay-out"), 10).await;
    let mut out = Vec::new();
    for (name, m) in messages {
        let outcome = within(&name, sender.send(m)).await.expect("an outcome");
        assert_eq!(outcome, Outcome::Accepted, "{name}");
        let raw = fe2o3_take(&mut from, &name).await;
        let outcome = fe2o3_send(&mut to, raw.clone()).await;
        assert!(is_accepted(&outcome), "{name}: {outcome:?}");
        out.push((name, raw, nucleon_take(&mut back).await));
    }
    sender.close().expect("closes");
    let _ = from.close().await;
    let _ = to.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
    c.stop();
    out
}

/// The same relay with fe2o3 as the server: our sender → fe2o3's receiver link → fe2o3's sender link → our
/// receiver.
async fn relay_through_fe2o3_acceptor(
    messages: Vec<(String, Message)>,
) -> Vec<(String, Raw, Message)> {
    let c = container();
    let mut server = Fe2o3Server::start(Auth::Anonymous, None).await;
    let mut back = nucleon_receiver(&c, &server.url("relay-out"), 10).await;
    let mut to = server.sender().await;
    let sender = our_sender(&c, &server.url("relay-in")).await;
    let mut from = server.receiver().await;
    let mut out = Vec::new();
    for (name, m) in messages {
        // fe2o3's send completes with our receiver's outcome, so all three run together.
        let sending = sender.send(m);
        let relaying = async {
            let raw = fe2o3_take(&mut from, &name).await;
            let outcome = fe2o3_send(&mut to, raw.clone()).await;
            assert!(is_accepted(&outcome), "{name}: {outcome:?}");
            raw
        };
        let (outcome, raw, got) =
            futures::join!(within(&name, sending), relaying, nucleon_take(&mut back));
        assert_eq!(outcome.expect("an outcome"), Outcome::Accepted, "{name}");
        out.push((name, raw, got));
    }
    sender.close().expect("closes");
    back.close().expect("closes");
    c.stop();
    out
}

fn assert_relayed_unchanged(relayed: &[(String, Raw, Message)], expected: &[(String, Message)]) {
    assert_eq!(relayed.len(), expected.len());
    for ((name, _, got), (_, want)) in relayed.iter().zip(expected) {
        assert_eq!(got, want, "{name} came back changed");
    }
}

#[actix_rt::test]
async fn fe2o3_client_type_fidelity() {
    let messages = corpus::messages_without(NOT_RELAYED);
    let relayed = relay_through_fe2o3_client(messages.clone()).await;
    assert_relayed_unchanged(&relayed, &messages);
}

#[actix_rt::test]
async fn fe2o3_acceptor_type_fidelity() {
    let messages = corpus::messages_without(NOT_RELAYED);
    let relayed = relay_through_fe2o3_acceptor(messages.clone()).await;
    assert_relayed_unchanged(&relayed, &messages);
}

/// What fe2o3 must see in the application properties of [`corpus::full_message`], typed.
fn assert_application_properties(raw: &Raw) {
    let props = &raw
        .application_properties
        .as_ref()
        .expect("application properties")
        .0;
    let get = |k: &str| props.get(k).unwrap_or_else(|| panic!("{k} missing"));
    assert_eq!(get("string"), &SimpleValue::String("s".into()));
    assert_eq!(get("int"), &SimpleValue::Int(1));
    assert_eq!(get("long"), &SimpleValue::Long(-2));
    assert_eq!(get("ulong"), &SimpleValue::Ulong(3));
    assert_eq!(get("bool"), &SimpleValue::Bool(true));
    assert_eq!(get("double"), &SimpleValue::Double(0.5.into()));
    assert!(matches!(get("timestamp"), SimpleValue::Timestamp(t) if t.milliseconds() == 1));
    assert!(matches!(get("uuid"), SimpleValue::Uuid(_)));
    assert_eq!(get("null"), &SimpleValue::Null);
    assert_eq!(props.len(), 9);
}

#[actix_rt::test]
async fn fe2o3_client_application_properties() {
    let messages = vec![("full".to_string(), corpus::full_message())];
    let relayed = relay_through_fe2o3_client(messages.clone()).await;
    assert_application_properties(&relayed[0].1);
    assert_eq!(
        relayed[0].2.application_properties(),
        messages[0].1.application_properties()
    );
}

#[actix_rt::test]
async fn fe2o3_acceptor_application_properties() {
    let messages = vec![("full".to_string(), corpus::full_message())];
    let relayed = relay_through_fe2o3_acceptor(messages.clone()).await;
    assert_application_properties(&relayed[0].1);
    assert_eq!(
        relayed[0].2.application_properties(),
        messages[0].1.application_properties()
    );
}

/// What fe2o3 must see in the header and properties of [`corpus::full_message`].
fn assert_header_and_properties(raw: &Raw) {
    let h = raw.header.as_ref().expect("a header");
    assert!(h.durable);
    assert_eq!(h.priority.0, 9);
    assert_eq!(h.ttl, Some(60_000));
    assert!(h.first_acquirer);
    assert_eq!(h.delivery_count, 2);
    let p: &FProperties = raw.properties.as_ref().expect("properties");
    assert_eq!(format!("{:?}", p.message_id), r#"Some(String("id-1"))"#);
    assert_eq!(
        p.user_id.as_ref().map(|b| b.as_slice()),
        Some(&b"guest"[..])
    );
    assert_eq!(p.to.as_deref(), Some("somewhere"));
    assert_eq!(p.subject.as_deref(), Some("a subject"));
    assert_eq!(p.reply_to.as_deref(), Some("replies"));
    assert!(format!("{:?}", p.correlation_id).starts_with("Some(Uuid("));
    assert_eq!(
        p.content_type.as_ref().map(|s| s.as_str()),
        Some("text/plain")
    );
    assert_eq!(
        p.content_encoding.as_ref().map(|s| s.as_str()),
        Some("identity")
    );
    assert_eq!(
        p.absolute_expiry_time.as_ref().map(|t| t.milliseconds()),
        Some(1_900_000_000_000)
    );
    assert_eq!(
        p.creation_time.as_ref().map(|t| t.milliseconds()),
        Some(1_700_000_000_000)
    );
    assert_eq!(p.group_id.as_deref(), Some("group"));
    assert_eq!(p.group_sequence, Some(3));
    assert_eq!(p.reply_to_group_id.as_deref(), Some("reply-group"));
}

fn assert_same_header_and_properties(got: &Message, want: &Message) {
    assert_eq!(got.header(), want.header());
    assert_eq!(got.properties(), want.properties());
    assert_eq!(got.message_annotations(), want.message_annotations());
    assert_eq!(got.footer(), want.footer());
}

#[actix_rt::test]
async fn fe2o3_client_header_and_properties() {
    let messages = vec![("full".to_string(), corpus::full_message())];
    let relayed = relay_through_fe2o3_client(messages.clone()).await;
    assert_header_and_properties(&relayed[0].1);
    assert_same_header_and_properties(&relayed[0].2, &messages[0].1);
}

#[actix_rt::test]
async fn fe2o3_acceptor_header_and_properties() {
    let messages = vec![("full".to_string(), corpus::full_message())];
    let relayed = relay_through_fe2o3_acceptor(messages.clone()).await;
    assert_header_and_properties(&relayed[0].1);
    assert_same_header_and_properties(&relayed[0].2, &messages[0].1);
}

// ---------------------------------------------------------------------------------------------------------
// Volume and large messages.
// ---------------------------------------------------------------------------------------------------------

const VOLUME: i64 = 10_000;

#[actix_rt::test]
async fn fe2o3_client_volume() {
    let c = container();
    let (_broker, port) = broker(&c, ListenOptions::default());
    let (mut connection, mut session) = fe2o3_connect(&format!("amqp://127.0.0.1:{port}")).await;
    let mut sender = fe2o3_sender(&mut session, "volume").await;
    for i in 0..VOLUME {
        let outcome = fe2o3_send(&mut sender, raw_value(FValue::Long(i))).await;
        assert!(is_accepted(&outcome), "message {i}: {outcome:?}");
    }
    let mut receiver = fe2o3_receiver(&mut session, "volume", CreditMode::Auto(500)).await;
    for i in 0..VOLUME {
        let m = fe2o3_take(&mut receiver, "a volume message").await;
        assert_eq!(raw_long(&m), i, "in order");
    }
    let _ = sender.close().await;
    let _ = receiver.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
    c.stop();
}

#[actix_rt::test]
async fn fe2o3_acceptor_volume() {
    let c = container();
    let mut server = Fe2o3Server::start(Auth::Anonymous, None).await;
    // Ours to fe2o3: each outcome is fe2o3's accept.
    let sender = our_sender(&c, &server.url("in")).await;
    let mut from = server.receiver().await;
    let sending = async {
        for i in 0..VOLUME {
            let outcome = within("an outcome", sender.send(Message::with_body(i)))
                .await
                .expect("an outcome");
            assert_eq!(outcome, Outcome::Accepted, "message {i}");
        }
    };
    let receiving = async {
        for i in 0..VOLUME {
            assert_eq!(
                raw_long(&fe2o3_take(&mut from, "from us").await),
                i,
                "in order"
            );
        }
    };
    futures::join!(sending, receiving);
    // fe2o3 to ours: each of fe2o3's outcomes is our receiver's accept.
    let mut back = nucleon_receiver(&c, &server.url("out"), 500).await;
    let mut to = server.sender().await;
    let sending = async {
        for i in 0..VOLUME {
            let outcome = fe2o3_send(&mut to, raw_value(FValue::Long(i))).await;
            assert!(is_accepted(&outcome), "message {i}: {outcome:?}");
        }
    };
    let receiving = async {
        for i in 0..VOLUME {
            let m = nucleon_take(&mut back).await;
            assert_eq!(m.body_value().and_then(Value::as_i64), Some(i), "in order");
        }
    };
    futures::join!(sending, receiving);
    sender.close().expect("closes");
    back.close().expect("closes");
    c.stop();
}

fn large_message() -> Message {
    Message::builder()
        .body(Value::Binary(five_mib().into()))
        .build()
}

fn raw_large() -> Raw {
    raw_value(FValue::Binary(five_mib().into()))
}

#[actix_rt::test]
async fn fe2o3_client_large_message() {
    let c = container();
    let (_broker, port) = broker(&c, ListenOptions::default());
    let base = format!("amqp://127.0.0.1:{port}");
    let (mut connection, mut session) = fe2o3_connect(&base).await;
    // fe2o3 sends 5 MiB; we receive it.
    let mut sender = fe2o3_sender(&mut session, "large-out").await;
    let outcome = fe2o3_send(&mut sender, raw_large()).await;
    assert!(is_accepted(&outcome), "{outcome:?}");
    let mut ours = nucleon_receiver(&c, &format!("{base}/large-out"), 1).await;
    assert_eq!(nucleon_take(&mut ours).await, large_message());
    // We send 5 MiB; fe2o3 receives it.
    let outcomes = nucleon_send_all(
        &c,
        &format!("{base}/large-in"),
        SenderOptions::default(),
        vec![large_message()],
    )
    .await;
    assert_eq!(outcomes, [Outcome::Accepted]);
    let mut receiver = fe2o3_receiver(&mut session, "large-in", CreditMode::Auto(1)).await;
    let m = fe2o3_take(&mut receiver, "5 MiB").await;
    assert_eq!(raw_binary_len(&m), 5 * 1024 * 1024);
    assert_eq!(m.body, raw_large().body);
    let _ = sender.close().await;
    let _ = receiver.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
    c.stop();
}

#[actix_rt::test]
async fn fe2o3_acceptor_large_message() {
    let c = container();
    let mut server = Fe2o3Server::start(Auth::Anonymous, None).await;
    let sender = our_sender(&c, &server.url("in")).await;
    let mut from = server.receiver().await;
    let (outcome, m) = futures::join!(
        within("an outcome", sender.send(large_message())),
        fe2o3_take(&mut from, "5 MiB from us")
    );
    assert_eq!(outcome.expect("an outcome"), Outcome::Accepted);
    assert_eq!(raw_binary_len(&m), 5 * 1024 * 1024);
    assert_eq!(m.body, raw_large().body);
    let mut back = nucleon_receiver(&c, &server.url("out"), 1).await;
    let mut to = server.sender().await;
    let (outcome, got) = futures::join!(fe2o3_send(&mut to, raw_large()), nucleon_take(&mut back));
    assert!(is_accepted(&outcome), "{outcome:?}");
    assert_eq!(got, large_message());
    sender.close().expect("closes");
    back.close().expect("closes");
    c.stop();
}

// ---------------------------------------------------------------------------------------------------------
// Settlement.
// ---------------------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn fe2o3_client_settlement() {
    let c = container();
    let (broker, port) = broker(&c, ListenOptions::default());
    let base = format!("amqp://127.0.0.1:{port}");
    let (mut connection, mut session) = fe2o3_connect(&base).await;
    // Pre-settled from fe2o3: the broker takes it without an outcome.
    let mut sender = fe2o3_sender(&mut session, "presettled").await;
    let sendable = Sendable::builder()
        .message(raw_value(FValue::Long(7)))
        .settled(true)
        .build();
    within("fe2o3 sends pre-settled", sender.send(sendable))
        .await
        .expect("fe2o3 sends pre-settled");
    let mut ours = nucleon_receiver(&c, &format!("{base}/presettled"), 1).await;
    let got = nucleon_take(&mut ours).await;
    assert_eq!(got.body_value().and_then(Value::as_i64), Some(7));
    // fe2o3 accepts, rejects and releases; the broker (the sender of those deliveries) acts on each.
    let outcomes = nucleon_send_all(
        &c,
        &format!("{base}/settle"),
        SenderOptions::default(),
        (0..3i64).map(Message::with_body).collect(),
    )
    .await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Accepted),
        "{outcomes:?}"
    );
    let mut receiver = fe2o3_receiver(&mut session, "settle", CreditMode::Auto(10)).await;
    let mut deliveries = Vec::new();
    for _ in 0..3 {
        let d = within("fe2o3 receives", receiver.recv::<Body<FValue>>())
            .await
            .expect("fe2o3 receives");
        deliveries.push(d);
    }
    let [d0, d1, d2] = <[_; 3]>::try_from(deliveries).expect("three");
    assert_eq!(
        [d0.message(), d1.message(), d2.message()].map(raw_long),
        [0, 1, 2]
    );
    receiver.accept(&d0).await.expect("accepts");
    receiver.reject(&d1, None).await.expect("rejects");
    receiver.release(&d2).await.expect("releases");
    // Released: delivered again, with the credit the receiver still has; rejected: counted and dropped;
    // accepted: gone.
    let again = within("2 again", receiver.recv::<Body<FValue>>())
        .await
        .expect("2 again");
    assert_eq!(raw_long(again.message()), 2);
    receiver.accept(&again).await.expect("accepts");
    assert_eq!(broker.rejected(), 1);
    let _ = sender.close().await;
    let _ = receiver.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
    c.stop();
}

#[actix_rt::test]
async fn fe2o3_acceptor_settlement() {
    let c = container();
    let mut server = Fe2o3Server::start(Auth::Anonymous, None).await;
    // Pre-settled from us: no outcome to wait for, fe2o3 gets it.
    let presettled = SenderOptions::new().delivery_mode(DeliveryMode::AtMostOnce);
    let sender = within(
        "our pre-settled sender opens",
        c.open_sender(&server.url("presettled"), presettled),
    )
    .await
    .expect("our sender");
    let mut from = server.receiver().await;
    let outcome = within("sent", sender.send(Message::with_body(7i64)))
        .await
        .expect("sent");
    assert_eq!(outcome, Outcome::Settled);
    let delivery = within("fe2o3 receives", from.recv::<Body<FValue>>())
        .await
        .expect("fe2o3 receives");
    assert_eq!(raw_long(delivery.message()), 7);
    sender.close().expect("closes");
    // Accepted, rejected and released by fe2o3, each seen by our sender.
    let sender = our_sender(&c, &server.url("settle")).await;
    let mut from = server.receiver().await;
    let sending = async {
        let mut outcomes = Vec::new();
        for i in 0..3i64 {
            outcomes.push(
                within("an outcome", sender.send(Message::with_body(i)))
                    .await
                    .expect("an outcome"),
            );
        }
        outcomes
    };
    let settling = async {
        for i in 0..3i64 {
            let d = within("fe2o3 receives", from.recv::<Body<FValue>>())
                .await
                .expect("fe2o3 receives");
            assert_eq!(raw_long(d.message()), i);
            match i {
                0 => from.accept(&d).await.expect("accepts"),
                1 => from.reject(&d, None).await.expect("rejects"),
                _ => from.release(&d).await.expect("releases"),
            }
        }
    };
    let (outcomes, ()) = futures::join!(sending, settling);
    assert_eq!(
        outcomes,
        [
            Outcome::Accepted,
            Outcome::Rejected(None),
            Outcome::Released
        ]
    );
    sender.close().expect("closes");
    c.stop();
}

// ---------------------------------------------------------------------------------------------------------
// SASL and idle timeout.
// ---------------------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn fe2o3_client_sasl() {
    let c = container();
    let users = ListenOptions::new()
        // PLAIN over loopback TCP, offered only when asked for by name.
        .allow_insecure_plain(true)
        .authenticator(Arc::new(PlainAuthenticator::new([("alice", "secret")])));
    let (_broker, port) = broker(&c, users);
    // PLAIN, right password: the connection opens and carries a message.
    let (mut connection, mut session) =
        fe2o3_connect(&format!("amqp://alice:secret@127.0.0.1:{port}")).await;
    let mut sender = fe2o3_sender(&mut session, "sasl").await;
    let outcome = fe2o3_send(&mut sender, raw_value(FValue::Long(1))).await;
    assert!(is_accepted(&outcome), "{outcome:?}");
    let _ = sender.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
    // PLAIN, wrong password: refused.
    let wrong = within(
        "fe2o3 is refused",
        fe2o3_amqp::Connection::open("fe2o3", &*format!("amqp://alice:wrong@127.0.0.1:{port}")),
    )
    .await;
    let err = wrong.expect_err("a wrong password is refused");
    assert!(format!("{err:?}").contains("Auth"), "{err:?}");
    // ANONYMOUS, against a broker that allows anyone.
    let (_open_broker, open_port) = broker(&c, ListenOptions::default());
    let connection = within(
        "fe2o3 connects anonymously",
        fe2o3_amqp::Connection::builder()
            .container_id("fe2o3-anonymous")
            .sasl_profile(SaslProfile::Anonymous)
            .open(&*format!("amqp://127.0.0.1:{open_port}")),
    )
    .await
    .expect("ANONYMOUS is accepted");
    fe2o3_send_one_and_close(connection, "sasl", 2).await;
    c.stop();
}

/// On a new session of `connection`: one long `body` to `address`, which must be accepted; then the
/// sender, the session and the connection are closed.
async fn fe2o3_send_one_and_close(mut connection: ConnectionHandle<()>, address: &str, body: i64) {
    let mut session = within("begins", fe2o3_amqp::Session::begin(&mut connection))
        .await
        .expect("a session");
    let mut sender = fe2o3_sender(&mut session, address).await;
    let outcome = fe2o3_send(&mut sender, raw_value(FValue::Long(body))).await;
    assert!(is_accepted(&outcome), "{outcome:?}");
    let _ = sender.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
}

/// Sends one message from our side to the fe2o3 server at `url` and checks fe2o3 accepts it.
async fn send_one_to(
    c: &ContainerHandle,
    server: &mut Fe2o3Server,
    url: &str,
    options: ConnectionOptions,
) {
    let sender = within(
        "our sender opens",
        c.open_sender_with(url, options, SenderOptions::default()),
    )
    .await
    .unwrap_or_else(|e| panic!("sender to {url}: {e}"));
    let mut from = server.receiver().await;
    let (outcome, m) = futures::join!(
        within("an outcome", sender.send(Message::with_body(1i64))),
        fe2o3_take(&mut from, "one message")
    );
    assert_eq!(outcome.expect("an outcome"), Outcome::Accepted);
    assert_eq!(raw_long(&m), 1);
    sender.close().expect("closes");
}

#[actix_rt::test]
async fn fe2o3_acceptor_sasl() {
    let c = container();
    let mut plain = Fe2o3Server::start(Auth::Plain("alice", "secret"), None).await;
    let url = plain.url_as("alice", "secret", "sasl");
    send_one_to(&c, &mut plain, &url, plain_allowed()).await;
    let wrong = within(
        "our sender is refused",
        c.open_sender_with(
            &plain.url_as("alice", "wrong", "sasl"),
            plain_allowed(),
            SenderOptions::default(),
        ),
    )
    .await;
    let err = wrong.expect_err("a wrong password is refused");
    assert_eq!(
        err.condition(),
        Some(&ErrorCondition::UnauthorizedAccess),
        "{err}"
    );
    let mut anonymous = Fe2o3Server::start(Auth::Anonymous, None).await;
    let url = anonymous.url("sasl");
    send_one_to(&c, &mut anonymous, &url, ConnectionOptions::default()).await;
    c.stop();
}

#[actix_rt::test]
async fn fe2o3_acceptor_scram() {
    let c = container();
    let mut server = Fe2o3Server::start(Auth::Scram("alice", "secret"), None).await;
    // Our client prefers SCRAM with credentials, over plain TCP too: the password never travels.
    let url = server.url_as("alice", "secret", "scram");
    send_one_to(&c, &mut server, &url, ConnectionOptions::default()).await;
    let wrong = within(
        "our sender is refused",
        c.open_sender_with(
            &server.url_as("alice", "wrong", "scram"),
            ConnectionOptions::default(),
            SenderOptions::default(),
        ),
    )
    .await;
    let err = wrong.expect_err("a wrong password is refused");
    assert_eq!(
        err.condition(),
        Some(&ErrorCondition::UnauthorizedAccess),
        "{err}"
    );
    c.stop();
}

#[actix_rt::test]
async fn fe2o3_client_over_tls_with_plain() {
    let c = container();
    let ca = TestCa::new("fe2o3-tls");
    let server = ca.server(ServerCert::Loopback);
    let tls = nucleon::TlsServerConfig::from_pem_files(&server.cert, &server.key)
        .expect("server TLS")
        .require_tls(true);
    let users = ListenOptions::new()
        .tls(tls)
        // PLAIN, which the listener offers over TLS only.
        .authenticator(Arc::new(PlainAuthenticator::new([("alice", "secret")])));
    let (_broker, port) = broker(&c, users);
    // fe2o3's rustls client, trusting only the test CA.
    let mut roots = rustls::RootCertStore::empty();
    let ca_pem = std::fs::read(ca.ca_file()).expect("the CA file");
    let ca_der =
        rustls::pki_types::pem::PemObject::from_pem_slice(&ca_pem).expect("a PEM certificate");
    roots.add(ca_der).expect("a CA certificate");
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connection = within(
        "fe2o3 connects over TLS",
        fe2o3_amqp::Connection::builder()
            .container_id("fe2o3-tls")
            .tls_connector(tokio_rustls::TlsConnector::from(Arc::new(config)))
            .open(&*format!("amqps://alice:secret@localhost:{port}")),
    )
    .await
    .expect("TLS and PLAIN are accepted");
    fe2o3_send_one_and_close(connection, "tls", 1).await;
    c.stop();
}

/// A tokio-rustls acceptor presenting `server` (a certificate and key made at test time), for fe2o3's
/// acceptor; no client certificates.
fn fe2o3_tls_acceptor(server: &CertFiles) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let cert_pem = std::fs::read(&server.cert).expect("the server certificate");
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .expect("PEM certificates");
    let key_pem = std::fs::read(&server.key).expect("the server key");
    let key = PrivateKeyDer::from_pem_slice(&key_pem).expect("a PEM key");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .expect("the server certificate and key");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[actix_rt::test]
async fn fe2o3_acceptor_over_tls() {
    let c = container();
    let ca = TestCa::new("fe2o3-acceptor-tls");
    let tls = fe2o3_tls_acceptor(&ca.server(ServerCert::Loopback));
    // fe2o3 serves TLS only after the AMQP TLS header [AMQP 1.0 §5.2.1]; our client sends it when asked.
    let options = ConnectionOptions::new()
        .tls(ca.client_tls())
        .tls_protocol_header(true);
    // SASL PLAIN inside TLS: no insecure-mechanism switch on our side, since it does not travel in clear.
    let mut plain = Fe2o3Server::start_tls(Auth::Plain("alice", "secret"), tls.clone()).await;
    let url = plain.url_as("alice", "secret", "tls");
    send_one_to(&c, &mut plain, &url, options.clone()).await;
    let wrong = within(
        "our sender is refused",
        c.open_sender_with(
            &plain.url_as("alice", "wrong", "tls"),
            options.clone(),
            SenderOptions::default(),
        ),
    )
    .await
    .expect_err("a wrong password is refused");
    assert_eq!(
        wrong.condition(),
        Some(&ErrorCondition::UnauthorizedAccess),
        "{wrong}"
    );
    // SCRAM-SHA-256 inside TLS.
    let mut scram = Fe2o3Server::start_tls(Auth::Scram("alice", "secret"), tls).await;
    let url = scram.url_as("alice", "secret", "tls");
    send_one_to(&c, &mut scram, &url, options.clone()).await;
    // Without the private CA (the operating system's roots only): refused by our certificate check.
    let mut untrusted = options.clone();
    untrusted.tls = None;
    let err = within(
        "our sender is refused",
        c.open_sender_with(&url, untrusted, SenderOptions::default()),
    )
    .await
    .expect_err("an untrusted certificate is refused");
    eprintln!("without the private CA: {err}");
    assert!(
        err.to_string()
            .contains("the peer's certificate was refused: it is not issued by a trusted CA"),
        "{err}"
    );
    // Without the TLS header fe2o3 reads our ClientHello's first 8 bytes as a protocol header, answers with
    // its `AMQP 2 1 0 0` and drops the socket with the rest unread (a reset, here): our handshake fails, and
    // nothing went in clear.
    let no_header = options.tls_protocol_header(false);
    let err = within(
        "our sender is refused",
        c.open_sender_with(&url, no_header, SenderOptions::default()),
    )
    .await
    .expect_err("fe2o3 needs the TLS header");
    eprintln!("without the TLS header: {err}");
    assert!(err.to_string().contains("TLS handshake failed"), "{err}");
    c.stop();
}

#[actix_rt::test]
async fn fe2o3_client_scram() {
    use nucleon::protocol::engine::{ScramAuthenticator, ScramCredential, ScramHash};
    let c = container();
    let credential = ScramCredential::derive(ScramHash::Sha256, "secret", b"a salt of 16 b.", 4096);
    let users = ListenOptions::new()
        .authenticator(Arc::new(ScramAuthenticator::new([("alice", credential)])));
    let (_broker, port) = broker(&c, users);
    let url = format!("amqp://127.0.0.1:{port}");
    let connection = within(
        "fe2o3 connects with SCRAM-SHA-256",
        fe2o3_amqp::Connection::builder()
            .container_id("fe2o3-scram")
            .sasl_profile(fe2o3_amqp::sasl_profile::SaslScramSha256::new(
                "alice", "secret",
            ))
            .open(&*url),
    )
    .await
    .expect("SCRAM is accepted");
    fe2o3_send_one_and_close(connection, "scram", 1).await;
    let wrong = within(
        "fe2o3 is refused",
        fe2o3_amqp::Connection::builder()
            .container_id("fe2o3-scram-wrong")
            .sasl_profile(fe2o3_amqp::sasl_profile::SaslScramSha256::new(
                "alice", "wrong",
            ))
            .open(&*url),
    )
    .await;
    assert!(wrong.is_err(), "a wrong password is refused");
    c.stop();
}

/// Both sides time out after one silent second; the connection stays quiet three times that long.
const IDLE: Duration = Duration::from_secs(1);
const QUIET: Duration = Duration::from_secs(3);

#[actix_rt::test]
async fn fe2o3_client_idle_timeout() {
    let c = container();
    let options = ListenOptions::new().idle_timeout(IDLE);
    let (_broker, port) = broker(&c, options);
    let mut connection = within(
        "fe2o3 connects",
        fe2o3_amqp::Connection::builder()
            .container_id("fe2o3-idle")
            .idle_time_out(IDLE.as_millis() as u32)
            .open(&*format!("amqp://127.0.0.1:{port}")),
    )
    .await
    .expect("fe2o3 connects");
    let mut session = within("begins", fe2o3_amqp::Session::begin(&mut connection))
        .await
        .expect("a session");
    let mut sender = fe2o3_sender(&mut session, "idle").await;
    // Only heartbeats cross the connection meanwhile: each side must keep the other's timer from firing.
    tokio::time::sleep(QUIET).await;
    let outcome = fe2o3_send(&mut sender, raw_value(FValue::Long(1))).await;
    assert!(
        is_accepted(&outcome),
        "the connection is still up: {outcome:?}"
    );
    let _ = sender.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
    c.stop();
}

#[actix_rt::test]
async fn fe2o3_acceptor_idle_timeout() {
    let c = container();
    let mut server = Fe2o3Server::start(Auth::Anonymous, Some(IDLE.as_millis() as u32)).await;
    let options = ConnectionOptions::new().idle_timeout(IDLE);
    let sender = within(
        "our sender opens",
        c.open_sender_with(&server.url("idle"), options, SenderOptions::default()),
    )
    .await
    .expect("our sender");
    let mut from = server.receiver().await;
    tokio::time::sleep(QUIET).await;
    let (outcome, m) = futures::join!(
        within("an outcome", sender.send(Message::with_body(1i64))),
        fe2o3_take(&mut from, "after the quiet time")
    );
    assert_eq!(
        outcome.expect("the connection is still up"),
        Outcome::Accepted
    );
    assert_eq!(raw_long(&m), 1);
    sender.close().expect("closes");
    c.stop();
}

// ---------------------------------------------------------------------------------------------------------
// Credit, drain and request/reply.
// ---------------------------------------------------------------------------------------------------------

/// Proves the broker has handled every frame fe2o3 sent before: a message on a second link of the same
/// session is accepted only after them, as one connection's frames are handled in order.
async fn fence(session: &mut SessionHandle<()>) {
    let mut sender = fe2o3_sender(session, "fence").await;
    let outcome = fe2o3_send(&mut sender, raw_value(FValue::Null)).await;
    assert!(is_accepted(&outcome), "{outcome:?}");
    let _ = sender.close().await;
}

async fn fill(c: &ContainerHandle, base: &str, address: &str, range: std::ops::Range<i64>) {
    let outcomes = nucleon_send_all(
        c,
        &format!("{base}/{address}"),
        SenderOptions::default(),
        range.map(Message::with_body).collect(),
    )
    .await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Accepted),
        "{outcomes:?}"
    );
}

#[actix_rt::test]
async fn fe2o3_client_credit() {
    let c = container();
    let (broker, port) = broker(&c, ListenOptions::default());
    let base = format!("amqp://127.0.0.1:{port}");
    fill(&c, &base, "credit", 0..5).await;
    let (mut connection, mut session) = fe2o3_connect(&base).await;
    // Attached with no credit: nothing leaves the queue.
    let mut receiver = fe2o3_receiver(&mut session, "credit", CreditMode::Manual).await;
    fence(&mut session).await;
    assert_eq!(broker.queue_depth("credit"), Some(5));
    receiver.set_credit(2).await.expect("grants 2");
    for i in 0..2 {
        assert_eq!(raw_long(&fe2o3_take(&mut receiver, "credited").await), i);
    }
    fence(&mut session).await;
    assert_eq!(broker.queue_depth("credit"), Some(3), "exactly 2 were sent");
    receiver.set_credit(3).await.expect("grants 3");
    for i in 2..5 {
        assert_eq!(raw_long(&fe2o3_take(&mut receiver, "credited").await), i);
    }
    let _ = receiver.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
    c.stop();
}

#[actix_rt::test]
async fn fe2o3_client_drain() {
    let c = container();
    let (broker, port) = broker(&c, ListenOptions::default());
    let base = format!("amqp://127.0.0.1:{port}");
    fill(&c, &base, "drained", 0..3).await;
    let (mut connection, mut session) = fe2o3_connect(&base).await;
    let mut receiver = fe2o3_receiver(&mut session, "drained", CreditMode::Manual).await;
    receiver.set_credit(10).await.expect("grants 10");
    receiver.drain().await.expect("drains");
    for i in 0..3 {
        assert_eq!(raw_long(&fe2o3_take(&mut receiver, "drained").await), i);
    }
    // The drain used up the 7 credits left: a message queued now stays in the queue...
    fence(&mut session).await;
    fill(&c, &base, "drained", 3..4).await;
    assert_eq!(broker.queue_depth("drained"), Some(1), "no credit was left");
    // ...for the next consumer. (fe2o3's receiver is not asked for more: when the drain's answer overtakes
    // the transfers before it, fe2o3 counts those transfers twice and reports a delivery-count ahead of
    // ours, which our engine reads as no credit; see the module doc.)
    let _ = receiver.close().await;
    let mut next = within(
        "a second fe2o3 receiver attaches",
        fe2o3_amqp::Receiver::builder()
            .name("fe2o3-receiver-after-drain")
            .source("drained")
            .credit_mode(CreditMode::Auto(1))
            .attach(&mut session),
    )
    .await
    .expect("a second receiver");
    assert_eq!(raw_long(&fe2o3_take(&mut next, "after the drain").await), 3);
    let _ = next.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
    c.stop();
}

/// What our [`CreditClient`] saw.
#[derive(Debug, PartialEq)]
enum Seen {
    /// A message's number, and whether it arrived settled.
    Message(i64, bool),
    /// A drain finished, leaving this much credit.
    DrainFinished(u32),
}

/// One receiver with credit window 0: grants `first` credit when attached (and drains it at once with
/// `drain`), then `then` more after `first` messages, or after the drain finished.
struct CreditClient {
    address: String,
    first: u32,
    drain: bool,
    then: u32,
    received: u32,
    tx: mpsc::UnboundedSender<Seen>,
}

impl MessagingHandler for CreditClient {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        let options = ReceiverOptions::new().credit_window(0);
        c.open_receiver(&self.address, options)
            .expect("receiver opens");
    }
    fn on_receiver_open(&mut self, r: &mut Receiver<'_>) {
        r.add_credit(self.first).expect("grants credit");
        if self.drain {
            r.drain().expect("drains");
        }
    }
    fn on_message(&mut self, d: &mut Delivery<'_>, message: Message) {
        let n = message.body_value().and_then(Value::as_i64).unwrap_or(-1);
        let _ = self.tx.send(Seen::Message(n, d.settled()));
        self.received += 1;
        if !self.drain && self.received == self.first {
            d.receiver().add_credit(self.then).expect("grants more");
        }
    }
    fn on_receiver_drain_finish(&mut self, r: &mut Receiver<'_>) {
        let _ = self.tx.send(Seen::DrainFinished(r.credit()));
        r.add_credit(self.then).expect("grants more");
    }
}

/// Our [`CreditClient`] on a connection to `server`: the connection, and what the client reports.
fn credit_client(
    c: &ContainerHandle,
    server: &Fe2o3Server,
    address: &str,
    first: u32,
    drain: bool,
    then: u32,
) -> (
    nucleon::ConnectionHandle<CreditClient>,
    mpsc::UnboundedReceiver<Seen>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = CreditClient {
        address: address.into(),
        first,
        drain,
        then,
        received: 0,
        tx,
    };
    let handle = c
        .connect(&server.url(""), ConnectionOptions::default(), client)
        .expect("connects");
    (handle, rx)
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    within("our receiver reports", rx.recv())
        .await
        .expect("our client runs")
}

#[actix_rt::test]
async fn fe2o3_acceptor_credit() {
    let c = container();
    let mut server = Fe2o3Server::start(Auth::Anonymous, None).await;
    let (handle, mut rx) = credit_client(&c, &server, "credit", 2, false, 3);
    let mut sender = server.sender().await;
    // fe2o3 sends as far as our credit goes: 2 at first, 3 more once we grant them after the second.
    let sending = async {
        for i in 0..5 {
            let outcome = fe2o3_send(&mut sender, raw_value(FValue::Long(i))).await;
            assert!(is_accepted(&outcome), "message {i}: {outcome:?}");
        }
    };
    let receiving = async {
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(next_seen(&mut rx).await);
        }
        seen
    };
    let ((), seen) = futures::join!(sending, receiving);
    assert_eq!(
        seen,
        (0..5).map(|i| Seen::Message(i, false)).collect::<Vec<_>>()
    );
    handle.close().expect("closes");
    c.stop();
}

#[actix_rt::test]
async fn fe2o3_acceptor_drain() {
    let c = container();
    let mut server = Fe2o3Server::start(Auth::Anonymous, None).await;
    let (handle, mut rx) = credit_client(&c, &server, "drained", 10, true, 1);
    let mut sender = server.sender().await;
    // fe2o3 has nothing to send: it answers the drain at once, giving every credit back.
    assert_eq!(next_seen(&mut rx).await, Seen::DrainFinished(0));
    // The credit granted after the drain lets one message through.
    let (outcome, seen) = futures::join!(
        fe2o3_send(&mut sender, raw_value(FValue::Long(1))),
        next_seen(&mut rx)
    );
    assert!(is_accepted(&outcome), "{outcome:?}");
    assert_eq!(seen, Seen::Message(1, false));
    handle.close().expect("closes");
    c.stop();
}

#[actix_rt::test]
async fn fe2o3_client_request_reply() {
    let c = container();
    let (_broker, port) = broker(&c, ListenOptions::default());
    let base = format!("amqp://127.0.0.1:{port}");
    let (mut connection, mut session) = fe2o3_connect(&base).await;
    // fe2o3 asks our broker for a dynamic reply queue.
    let mut replies = within(
        "fe2o3 dynamic receiver attaches",
        fe2o3_amqp::Receiver::builder()
            .name("fe2o3-replies")
            .source(FSource::builder().dynamic(true).build())
            .attach(&mut session),
    )
    .await
    .expect("a dynamic receiver");
    let reply_to = replies
        .source()
        .as_ref()
        .and_then(|s| s.address.clone())
        .expect("the broker named the dynamic queue");
    let mut requests = fe2o3_sender(&mut session, "requests").await;
    let request = FMessage::builder()
        .properties(
            FProperties::builder()
                .message_id(String::from("req-1"))
                .reply_to(reply_to.clone())
                .build(),
        )
        .body(Body::Value(AmqpValue(FValue::String("ping".into()))))
        .build();
    let outcome = fe2o3_send(&mut requests, request).await;
    assert!(is_accepted(&outcome), "{outcome:?}");
    // Our responder answers to the reply address, correlated.
    let mut served = nucleon_receiver(&c, &format!("{base}/requests"), 1).await;
    let got = nucleon_take(&mut served).await;
    assert_eq!(got.reply_to(), Some(reply_to.as_str()));
    assert_eq!(got.body_value(), Some(&Value::from("ping")));
    let reply = Message::builder()
        .correlation_id(got.message_id().cloned().expect("a message id"))
        .body("pong")
        .build();
    let outcomes = nucleon_send_all(
        &c,
        &format!("{base}/{reply_to}"),
        SenderOptions::default(),
        vec![reply],
    )
    .await;
    assert_eq!(outcomes, [Outcome::Accepted]);
    let answer = fe2o3_take(&mut replies, "the reply").await;
    assert_eq!(
        format!("{:?}", answer.properties.and_then(|p| p.correlation_id)),
        r#"Some(String("req-1"))"#
    );
    assert!(matches!(answer.body, Body::Value(AmqpValue(FValue::String(s))) if s == "pong"));
    let _ = requests.close().await;
    let _ = replies.close().await;
    let _ = session.end().await;
    let _ = connection.close().await;
    c.stop();
}

/// Our requester: a dynamic receiver for replies, then a sender of one request to `requests` that names
/// the reply address it was given; reports that address and the reply.
struct Requester {
    reply_to: Option<String>,
    tx: mpsc::UnboundedSender<(String, Message)>,
}

impl MessagingHandler for Requester {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        let options = ReceiverOptions::new().dynamic(true);
        c.open_receiver("", options).expect("receiver opens");
    }
    fn on_receiver_open(&mut self, r: &mut Receiver<'_>) {
        self.reply_to = r.address();
        r.connection()
            .open_sender("requests", SenderOptions::default())
            .expect("sender opens");
    }
    fn on_sendable(&mut self, s: &mut Sender<'_>) {
        if let Some(reply_to) = self.reply_to.take() {
            let request = Message::builder()
                .message_id(MessageId::String("req-1".into()))
                .reply_to(reply_to.clone())
                .body("ping")
                .build();
            s.send(&request).expect("sends");
            self.reply_to = Some(reply_to);
            s.close();
        }
    }
    fn on_message(&mut self, _d: &mut Delivery<'_>, message: Message) {
        let reply_to = self.reply_to.clone().unwrap_or_default();
        let _ = self.tx.send((reply_to, message));
    }
}

#[actix_rt::test]
async fn fe2o3_acceptor_request_reply() {
    let c = container();
    // fe2o3 names each dynamic source it is asked for.
    let links = LinkAcceptor::builder()
        .on_dynamic_source(|mut source: FSource| {
            source.address = Some("fe2o3-reply-queue".into());
            Some(source)
        })
        .build();
    let mut server = Fe2o3Server::start_with(Auth::Anonymous, None, None, links).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let handle = c
        .connect(
            &server.url(""),
            ConnectionOptions::default(),
            Requester { reply_to: None, tx },
        )
        .expect("connects");
    let mut replies = server.sender().await;
    let reply_address = replies
        .source()
        .as_ref()
        .and_then(|s| s.address.clone())
        .expect("a dynamic address");
    let mut requests = server.receiver().await;
    let request = fe2o3_take(&mut requests, "the request").await;
    let props = request.properties.expect("request properties");
    assert_eq!(props.reply_to.as_deref(), Some(reply_address.as_str()));
    let reply = FMessage::builder()
        .properties(
            FProperties::builder()
                .correlation_id(props.message_id.expect("a message id"))
                .build(),
        )
        .body(Body::Value(AmqpValue(FValue::String("pong".into()))))
        .build();
    let (outcome, (reply_to, answer)) = futures::join!(fe2o3_send(&mut replies, reply), async {
        within("the reply", rx.recv())
            .await
            .expect("our client runs")
    });
    assert!(is_accepted(&outcome), "{outcome:?}");
    assert_eq!(reply_to, reply_address, "we learnt fe2o3's dynamic address");
    assert_eq!(
        answer.correlation_id(),
        Some(&MessageId::String("req-1".into()))
    );
    assert_eq!(answer.body_value(), Some(&Value::from("pong")));
    handle.close().expect("closes");
    c.stop();
}
