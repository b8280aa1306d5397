//! nucleon against python-qpid-proton 0.37 (Debian's `python3-qpid-proton`, run with `/usr/bin/python3`;
//! scripts in `integration-tests/proton/`, see [`nucleon_integration_tests::peers::proton`]).
//!
//! Directions (the second part of each test name):
//!
//! * `client`: our clients against `pybroker.py`, a small queue broker made of Proton's `Container` and
//!   `MessagingHandler` (one per test binary; dynamic sources; an `x-outcome` application property of
//!   `reject` or `release` gets that outcome; 64 KiB frames, so a 5 MiB message is multi-frame both ways);
//!   and over TLS, our rustls client against a `pybroker.py` of its own listening with Proton's OpenSSL.
//! * `our_broker`: Python clients (`echo.py`, `reqrep.py`, `client_send.py`, `broker_send.py`,
//!   `broker_recv.py`, `pyclient.py`) against our in-process `nucleon::broker::Broker`: pre-settled (an
//!   `AtMostOnce` link) and accepted outcomes seen by the Python sender, prefetch 0 with `receiver.flow(n)`,
//!   and `receiver.drain(n)`, whose drained flow must come back with the unused credit and 0 left; over TLS
//!   (Proton's OpenSSL against our rustls listener, `SSLDomain` with a CA made at test time): SASL PLAIN
//!   (offered over TLS only), EXTERNAL with a client certificate, and a plain client refused.
//! * `our_listener`: Python clients (`echo.py`, `pyclient.py`, `reqrep.py`) against a nucleon listener that
//!   sends and receives itself (a `MessagingHandler`, the code path of the `direct_send` / `direct_recv`
//!   examples): accepted, rejected and released by message index, as the Python sender reports them (JSON
//!   lines); 10,000 messages in order and a 5 MiB message (multi-frame: 64 KiB frames) both ways; our
//!   listener as a sender that waits for the Python receiver's `flow`, and that answers a `drain` once it
//!   has sent what it had (the runtime gives back the rest of the credit); SASL PLAIN (right and wrong password)
//!   and ANONYMOUS; a connection quiet for 3x the idle timeout of both ends; request/reply where our listener
//!   names the dynamic source of the Python requester (`reply-N`) and answers on it, as Proton's
//!   `server_direct` example does.
//!
//! Type fidelity goes through Proton's `Message` class (each message is decoded and re-encoded by Proton),
//! which is lossy in ways that [`PROTON_MESSAGE_LOSSY`] names: those corpus messages are left out, each with
//! its reason.
//!
//! Not applicable, so no test pretends otherwise: `pybroker.py` offers only SASL ANONYMOUS (Proton's Python
//! server has no PLAIN without a Cyrus SASL configuration), never answers drain on its own (a
//! `MessagingHandler` queue has nothing to drain with), and advertises no idle timeout; our broker accepts
//! every message it can queue (a Python sender never sees rejected or released from it: those outcomes are
//! checked in `pyproton_our_listener_settlement`).
//!
//! Nothing is skipped: without Proton's Python binding the tests fail and say to run
//! `scripts/install-test-deps.sh`.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use nucleon::broker::Broker;
use nucleon::protocol::engine::PlainAuthenticator;
use nucleon::protocol::frame::{DeliveryState, Error as AmqpError, ErrorCondition};
use nucleon::{
    AttachReply, Body, Connection, ConnectionOptions, ContainerHandle, Delivery, DeliveryMode,
    ListenHandler, ListenOptions, Message, MessagingHandler, Outcome, Receiver, ReceiverOptions,
    Sender, SenderId, SenderOptions, TlsServerConfig, Value,
};
use nucleon_integration_tests::certs::{ServerCert, TestCa};
use nucleon_integration_tests::client::{
    self, bodies, broker as our_broker, numbered, Direct, DirectEvent, ManualCredit, Verdict,
};
use nucleon_integration_tests::corpus;
use nucleon_integration_tests::peers::proton::{
    python_script, receive, send, send_all, Finished, ProtonProcess, PyBroker, TIMEOUT,
};
use tokio::sync::mpsc;

fn container() -> ContainerHandle {
    client::container("proton-python-interop")
}

/// An address no other test of this binary uses.
fn address(test: &str) -> String {
    format!("nucleon-{test}")
}

/// Runs a Python script to its end off the actix thread, so that our in-process listeners keep accepting
/// meanwhile.
async fn script(name: &'static str, args: Vec<String>) -> Finished {
    tokio::task::spawn_blocking(move || {
        ProtonProcess::spawn(python_script(name, &args)).finish(TIMEOUT)
    })
    .await
    .expect("the script's thread")
}

/// By the long body `i`: accepted when `i % 3 == 0`, rejected when 1, released when 2.
fn by_index(m: &Message) -> Verdict {
    match m.body_value().and_then(Value::as_i64).map(|i| i % 3) {
        Some(1) => Verdict::Reject,
        Some(2) => Verdict::Release,
        _ => Verdict::Accept,
    }
}

/// Corpus messages that Proton's `Message` class cannot carry unchanged, by name, with the reason:
///
/// * `value-null`: an `amqp-value` of `null` comes back with no body section at all.
/// * `data-two-sections`: `Message` keeps only the last of several `data` sections.
/// * `full`: `Message` has no footer, so Proton drops it (every other field of `full` is checked by the
///   `header_and_properties` cases, with the footer left out).
const PROTON_MESSAGE_LOSSY: &[&str] = &["value-null", "data-two-sections", "full"];

/// `full` without its footer, which Proton's `Message` drops.
fn full_without_footer() -> Message {
    let full = corpus::full_message();
    let mut m = Message::builder().body("with every field").build();
    *m.header_mut() = full.header().cloned().unwrap_or_default();
    *m.properties_mut() = full.properties().cloned().unwrap_or_default();
    *m.message_annotations_mut() = full.message_annotations().cloned().unwrap_or_default();
    *m.application_properties_mut() = full.application_properties().cloned().unwrap_or_default();
    m
}

/// Equal as AMQP defines it: every section and field, type included, where an absent header or properties
/// section means its defaults [AMQP 1.0 §3.2.1, §3.2.4] (Proton's `Message` always writes both sections).
fn same(sent: &Message, got: &Message) -> bool {
    sent.header().cloned().unwrap_or_default() == got.header().cloned().unwrap_or_default()
        && sent.properties().cloned().unwrap_or_default()
            == got.properties().cloned().unwrap_or_default()
        && sent.delivery_annotations() == got.delivery_annotations()
        && sent.message_annotations() == got.message_annotations()
        && sent.application_properties() == got.application_properties()
        && sent.body() == got.body()
        && sent.footer() == got.footer()
}

/// The corpus messages each echoed once through Proton: every one must come back equal, type included.
fn assert_same_corpus(sent: &[(String, Message)], got: &[Message]) {
    assert_eq!(sent.len(), got.len());
    let differ: Vec<String> = sent
        .iter()
        .zip(got)
        .filter(|((_, s), g)| !same(s, g))
        .map(|((name, s), g)| format!("{name}:\n  sent {s:?}\n  got  {g:?}"))
        .collect();
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

fn large_body() -> Value {
    Value::Binary(client::five_mib().into())
}

fn with_outcome(body: i64, outcome: &str) -> Message {
    Message::builder()
        .body(body)
        .property("x-outcome", outcome)
        .build()
}

// ---------------------------------------------------------------------------------------------------------------
// client: our clients against pybroker.py
// ---------------------------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn pyproton_client_type_fidelity() {
    let broker = PyBroker::shared();
    let c = container();
    let url = broker.url(None, &address("types"));
    let all = corpus::messages_without(PROTON_MESSAGE_LOSSY);
    let outcomes = send(&c, &url, all.iter().map(|(_, m)| m.clone()).collect()).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Accepted),
        "{outcomes:?}"
    );
    let got = receive(&c, &url, all.len(), 10).await;
    assert_same_corpus(&all, &got);
}

#[actix_rt::test]
async fn pyproton_client_header_and_properties() {
    let broker = PyBroker::shared();
    let c = container();
    let url = broker.url(None, &address("fields"));
    let m = full_without_footer();
    assert_eq!(send(&c, &url, vec![m.clone()]).await, [Outcome::Accepted]);
    let got = receive(&c, &url, 1, 1).await;
    assert_same_corpus(&[("full without footer".to_owned(), m)], &got);
}

#[actix_rt::test]
async fn pyproton_client_volume() {
    const N: usize = 10_000;
    let broker = PyBroker::shared();
    let c = container();
    let url = broker.url(None, &address("volume"));
    assert_eq!(
        send(&c, &url, numbered(N)).await,
        vec![Outcome::Accepted; N]
    );
    let got = receive(&c, &url, N, 500).await;
    assert_eq!(bodies(&got), (0..N as i64).collect::<Vec<_>>());
}

#[actix_rt::test]
async fn pyproton_client_large() {
    let broker = PyBroker::shared();
    let c = container();
    let url = broker.url(None, &address("large"));
    let body = large_body();
    let m = Message::builder().body(body.clone()).build();
    assert_eq!(send(&c, &url, vec![m]).await, [Outcome::Accepted]);
    let got = receive(&c, &url, 1, 1).await;
    assert_eq!(got[0].body_value(), Some(&body));
}

#[actix_rt::test]
async fn pyproton_client_settlement() {
    let broker = PyBroker::shared();
    let c = container();
    let url = broker.url(None, &address("settlement"));
    let presettled = send_all(
        &c,
        &url,
        ConnectionOptions::default(),
        DeliveryMode::AtMostOnce,
        numbered(2),
    )
    .await;
    assert_eq!(presettled, vec![Outcome::Settled; 2]);
    let outcomes = send(
        &c,
        &url,
        vec![
            Message::with_body(2i64),
            with_outcome(3, "reject"),
            with_outcome(4, "release"),
        ],
    )
    .await;
    assert_eq!(outcomes[0], Outcome::Accepted);
    assert!(matches!(outcomes[1], Outcome::Rejected(_)), "{outcomes:?}");
    assert_eq!(outcomes[2], Outcome::Released);
    let got = receive(&c, &url, 3, 3).await;
    assert_eq!(bodies(&got), [0, 1, 2]);
}

#[actix_rt::test]
async fn pyproton_client_sasl_anonymous() {
    let broker = PyBroker::shared();
    let c = container();
    let url = broker.url(None, &address("anonymous"));
    let options = ConnectionOptions::new().sasl_allowed_mechs(vec!["ANONYMOUS".into()]);
    let outcomes = send_all(
        &c,
        &url,
        options,
        DeliveryMode::AtLeastOnce,
        vec![Message::with_body("anonymous")],
    )
    .await;
    assert_eq!(outcomes, [Outcome::Accepted]);
}

#[actix_rt::test]
async fn pyproton_client_over_tls() {
    let ca = TestCa::new("pyproton-server-tls");
    let server = ca.server(ServerCert::Loopback);
    // A Python broker of its own, listening with TLS only (Proton's OpenSSL server).
    let port = nucleon_integration_tests::peers::free_port();
    let args = [
        port.to_string(),
        server.cert.to_string_lossy().into_owned(),
        server.key.to_string_lossy().into_owned(),
    ];
    let mut process = ProtonProcess::spawn(python_script("pybroker.py", &args));
    let ready = format!("listening on {port}");
    process
        .wait_line(TIMEOUT, |l| l == ready)
        .expect("the TLS Python broker starts");
    let c = container();
    let tls = ca.client_tls();
    let options = ConnectionOptions::new()
        .tls(tls)
        .sasl_allowed_mechs(vec!["ANONYMOUS".into()]);
    let outcomes = send_all(
        &c,
        &format!("amqps://localhost:{port}/tls"),
        options,
        DeliveryMode::AtLeastOnce,
        vec![Message::with_body("over TLS")],
    )
    .await;
    assert_eq!(outcomes, [Outcome::Accepted]);
}

#[actix_rt::test]
async fn pyproton_client_idle_timeout() {
    let broker = PyBroker::shared();
    let c = container();
    let url = broker.url(None, &address("idle"));
    // We ask for 1 s (advertising 500 ms): Proton must keep our quiet connection alive with empty frames.
    let options = ConnectionOptions::new().idle_timeout(Duration::from_secs(1));
    let sender = c
        .open_sender_with(&url, options, SenderOptions::default())
        .await
        .expect("a sender");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let outcome = tokio::time::timeout(TIMEOUT, sender.send(Message::with_body("still here")))
        .await
        .expect("an outcome in time")
        .expect("the connection is still up");
    assert_eq!(outcome, Outcome::Accepted);
    let _ = sender.close();
}

#[actix_rt::test]
async fn pyproton_client_credit_manual() {
    let broker = PyBroker::shared();
    let c = container();
    let address = address("credit");
    let url = broker.url(None, &address);
    assert_eq!(
        send(&c, &url, numbered(5)).await,
        vec![Outcome::Accepted; 5]
    );
    let mut receiver =
        ManualCredit::open(&c, &url, ConnectionOptions::default(), &address, TIMEOUT).await;
    receiver.grant(2);
    assert_eq!(receiver.next_long().await, 0);
    assert_eq!(receiver.next_long().await, 1);
    receiver.grant(3);
    for want in 2..5 {
        assert_eq!(receiver.next_long().await, want);
    }
    assert!(!receiver.has_more(), "nothing beyond the credit");
    let _ = receiver.close();
}

/// Our requester: a receiver with a dynamic source, then a sender of requests whose `reply-to` is the
/// address the peer gave that source.
struct Requester {
    requests: String,
    count: usize,
    sent: usize,
    reply_to: Option<String>,
    replies: mpsc::UnboundedSender<Message>,
}

impl MessagingHandler for Requester {
    fn on_connection_open(&mut self, connection: &mut Connection<'_>) {
        let options = ReceiverOptions::new().dynamic(true);
        if let Err(e) = connection.open_receiver("", options) {
            panic!("cannot open the dynamic receiver: {e}");
        }
    }

    fn on_receiver_open(&mut self, receiver: &mut Receiver<'_>) {
        self.reply_to = receiver.address();
        let requests = self.requests.clone();
        if let Err(e) = receiver
            .connection()
            .open_sender(&requests, SenderOptions::default())
        {
            panic!("cannot open the sender: {e}");
        }
    }

    fn on_sendable(&mut self, sender: &mut Sender<'_>) {
        let Some(reply_to) = self.reply_to.clone() else {
            return;
        };
        while sender.credit() > 0 && self.sent < self.count {
            let m = Message::builder()
                .message_id(self.sent as u64)
                .reply_to(reply_to.as_str())
                .body(format!("request {}", self.sent))
                .build();
            sender.send(&m).expect("sends");
            self.sent += 1;
        }
    }

    fn on_message(&mut self, _delivery: &mut Delivery<'_>, message: Message) {
        let _ = self.replies.send(message);
    }
}

#[actix_rt::test]
async fn pyproton_client_request_reply() {
    const N: usize = 10;
    let broker = PyBroker::shared();
    let c = container();
    let requests = address("requests");
    let url = broker.url(None, "");
    let mut server = {
        let args = strings(&["serve", &url, &requests, &N.to_string()]);
        let mut p = ProtonProcess::spawn(python_script("reqrep.py", &args));
        tokio::task::spawn_blocking(move || p.wait_line(TIMEOUT, |l| l == "ready").map(|_| p))
            .await
            .expect("joins")
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let (tx, mut replies) = mpsc::unbounded_channel();
    let handle = c
        .connect(
            &url,
            ConnectionOptions::default(),
            Requester {
                requests,
                count: N,
                sent: 0,
                reply_to: None,
                replies: tx,
            },
        )
        .expect("connects");
    for i in 0..N {
        let reply = tokio::time::timeout(TIMEOUT, replies.recv())
            .await
            .expect("a reply in time")
            .expect("the connection is up");
        assert_eq!(
            reply.body_value(),
            Some(&Value::from(format!("REQUEST {i}")))
        );
        assert_eq!(
            reply.correlation_id(),
            Some(&nucleon::protocol::frame::MessageId::Ulong(i as u64))
        );
    }
    let _ = handle.close();
    let out = tokio::task::spawn_blocking(move || {
        let done = server.wait_line(TIMEOUT, |l| l.starts_with("served "));
        (done, server.finish(TIMEOUT))
    })
    .await
    .expect("joins");
    assert_eq!(out.0, Ok(format!("served {N}")), "{}", out.1);
    out.1.assert_success();
}

// ---------------------------------------------------------------------------------------------------------------
// our_broker: Python clients against our broker
// ---------------------------------------------------------------------------------------------------------------

/// Our broker with the messages `numbered(n)` queued (and accepted) at `address`: the broker, and its URL
/// without an address.
async fn our_broker_holding(c: &ContainerHandle, address: &str, n: usize) -> (Broker, String) {
    let (broker, port) = our_broker(c, ListenOptions::default());
    let url = format!("amqp://127.0.0.1:{port}");
    assert_eq!(
        send(c, &format!("{url}/{address}"), numbered(n)).await,
        vec![Outcome::Accepted; n]
    );
    (broker, url)
}

#[actix_rt::test]
async fn pyproton_our_broker_type_fidelity() {
    let c = container();
    let (_broker, port) = our_broker(&c, ListenOptions::default());
    let url = format!("amqp://127.0.0.1:{port}");
    let all = corpus::messages_without(PROTON_MESSAGE_LOSSY);
    let outcomes = send(
        &c,
        &format!("{url}/in"),
        all.iter().map(|(_, m)| m.clone()).collect(),
    )
    .await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Accepted),
        "{outcomes:?}"
    );
    let n = all.len().to_string();
    let out = script("echo.py", strings(&[&url, "in", "out", &n])).await;
    out.assert_success();
    let got = receive(&c, &format!("{url}/out"), all.len(), 10).await;
    assert_same_corpus(&all, &got);
}

#[actix_rt::test]
async fn pyproton_our_broker_header_and_properties() {
    let c = container();
    let (_broker, port) = our_broker(&c, ListenOptions::default());
    let url = format!("amqp://127.0.0.1:{port}");
    let m = full_without_footer();
    assert_eq!(
        send(&c, &format!("{url}/in"), vec![m.clone()]).await,
        [Outcome::Accepted]
    );
    let out = script("echo.py", strings(&[&url, "in", "out", "1"])).await;
    out.assert_success();
    let got = receive(&c, &format!("{url}/out"), 1, 1).await;
    assert_same_corpus(&[("full without footer".to_owned(), m)], &got);
}

#[actix_rt::test]
async fn pyproton_our_broker_volume() {
    const N: usize = 10_000;
    let c = container();
    let (broker, port) = our_broker(&c, ListenOptions::default());
    let url = format!("amqp://127.0.0.1:{port}");
    let n = N.to_string();
    let sent = script(
        "broker_send.py",
        strings(&[&url, "volume", &n, "--timeout", "100"]),
    )
    .await;
    sent.assert_success();
    let accepted = sent
        .lines()
        .iter()
        .filter(|l| l.ends_with(" ACCEPTED"))
        .count();
    assert_eq!(accepted, N, "{sent}");
    assert_eq!(broker.queue_depth("volume"), Some(N));
    let received = script(
        "broker_recv.py",
        strings(&[&url, "volume", &n, "--credit", "500", "--timeout", "100"]),
    )
    .await;
    received.assert_success();
    let ok: Vec<&str> = received
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("ok ") || l.starts_with("MISMATCH"))
        .collect();
    let expected: Vec<String> = (0..N).map(|i| format!("ok {i}")).collect();
    assert_eq!(ok, expected);
}

#[actix_rt::test]
async fn pyproton_our_broker_request_reply() {
    const N: usize = 10;
    let c = container();
    let (_broker, port) = our_broker(&c, ListenOptions::default());
    let url = format!("amqp://127.0.0.1:{port}");
    let n = N.to_string();
    let server = script("reqrep.py", strings(&["serve", &url, "requests", &n]));
    let client = script("reqrep.py", strings(&["request", &url, "requests", &n]));
    let (server, client) = futures::join!(server, client);
    client.assert_success();
    assert!(
        client.lines().contains(&format!("requested {N}").as_str()),
        "{client}"
    );
    server.assert_success();
    assert!(
        server.lines().contains(&format!("served {N}").as_str()),
        "{server}"
    );
}

fn plain_users() -> ListenOptions {
    ListenOptions::new()
        // PLAIN over loopback TCP, offered only when asked for by name.
        .allow_insecure_plain(true)
        .authenticator(Arc::new(PlainAuthenticator::new([("alice", "secret")])))
}

#[actix_rt::test]
async fn pyproton_our_broker_sasl_plain() {
    let c = container();
    let (_broker, port) = our_broker(&c, plain_users());
    let url = format!("amqp://127.0.0.1:{port}");
    let right = script(
        "client_send.py",
        strings(&[
            &url,
            "sasl",
            "1",
            "--mechs",
            "PLAIN",
            "--user",
            "alice",
            "--password",
            "secret",
        ]),
    )
    .await;
    right.assert_success();
    assert!(right.lines().contains(&"outcome 0 ACCEPTED"), "{right}");
    let wrong = script(
        "client_send.py",
        strings(&[
            &url,
            "sasl",
            "1",
            "--mechs",
            "PLAIN",
            "--user",
            "alice",
            "--password",
            "wrong",
            "--expect-auth-failure",
        ]),
    )
    .await;
    wrong.assert_success();
}

/// Our broker with TLS required and PLAIN users (offered over TLS only), its certificates made by `ca`.
fn tls_broker(c: &ContainerHandle, ca: &TestCa) -> u16 {
    let server = ca.server(ServerCert::Loopback);
    let tls = TlsServerConfig::with_client_ca(&server.cert, &server.key, ca.ca_file())
        .expect("server TLS")
        .require_tls(true);
    let (_broker, port) = our_broker(
        c,
        ListenOptions::new()
            .tls(tls)
            .authenticator(Arc::new(PlainAuthenticator::new([("alice", "secret")]))),
    );
    port
}

#[actix_rt::test]
async fn pyproton_our_broker_tls_with_plain_and_external() {
    let c = container();
    let ca = TestCa::new("pyproton-tls");
    let port = tls_broker(&c, &ca);
    let url = format!("amqps://localhost:{port}");
    let ca_file = ca.ca_file().to_string_lossy().into_owned();
    // PLAIN, which the broker offers over TLS only: Proton's OpenSSL client, our rustls listener.
    let plain = script(
        "client_send.py",
        strings(&[
            &url,
            "tls",
            "1",
            "--mechs",
            "PLAIN",
            "--user",
            "alice",
            "--password",
            "secret",
            "--tls-ca",
            &ca_file,
        ]),
    )
    .await;
    plain.assert_success();
    assert!(plain.lines().contains(&"outcome 0 ACCEPTED"), "{plain}");
    // EXTERNAL with a client certificate the broker verifies.
    let bob = ca.client("bob");
    let external = script(
        "client_send.py",
        strings(&[
            &url,
            "tls",
            "1",
            "--mechs",
            "EXTERNAL",
            "--tls-ca",
            &ca_file,
            "--tls-cert",
            &bob.cert.to_string_lossy(),
            "--tls-key",
            &bob.key.to_string_lossy(),
        ]),
    )
    .await;
    external.assert_success();
    assert!(
        external.lines().contains(&"outcome 0 ACCEPTED"),
        "{external}"
    );
    // Plain AMQP to the TLS-only broker: refused.
    let refused = script(
        "client_send.py",
        strings(&[
            &format!("amqp://127.0.0.1:{port}"),
            "tls",
            "1",
            "--timeout",
            "5",
        ]),
    )
    .await;
    assert!(
        !refused.lines().contains(&"outcome 0 ACCEPTED"),
        "{refused}"
    );
}

#[actix_rt::test]
async fn pyproton_our_broker_sasl_anonymous() {
    let c = container();
    let (_broker, port) = our_broker(&c, ListenOptions::default());
    let url = format!("amqp://127.0.0.1:{port}");
    let out = script(
        "client_send.py",
        strings(&[&url, "anon", "1", "--mechs", "ANONYMOUS"]),
    )
    .await;
    out.assert_success();
    assert!(out.lines().contains(&"outcome 0 ACCEPTED"), "{out}");
}

#[actix_rt::test]
async fn pyproton_our_broker_idle_timeout() {
    let c = container();
    let options = ListenOptions::new().idle_timeout(Duration::from_secs(1));
    let (_broker, port) = our_broker(&c, options);
    let url = format!("amqp://127.0.0.1:{port}");
    // Both ends ask for 1 s; the client stays silent 3 s after the open, then sends.
    let out = script(
        "client_send.py",
        strings(&[&url, "idle", "1", "--idle-timeout", "1", "--quiet", "3"]),
    )
    .await;
    out.assert_success();
    assert!(out.lines().contains(&"outcome 0 ACCEPTED"), "{out}");
}

/// The JSON lines (`pyclient.py`'s reports) among what a script printed; fails on an unparsable one.
fn json_lines(out: &Finished) -> Vec<serde_json::Value> {
    out.lines()
        .into_iter()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{out}")))
        .collect()
}

/// The outcome `pyclient.py send` reported for each message, in index order (`rejected` followed by its
/// condition).
fn py_outcomes(out: &Finished) -> Vec<String> {
    let mut outcomes: Vec<(u64, String)> = json_lines(out)
        .iter()
        .filter_map(|j| {
            let index = j["index"].as_u64()?;
            let outcome = j["outcome"].as_str()?;
            let text = match j["condition"].as_str() {
                Some(condition) => format!("{outcome} {condition}"),
                None => outcome.to_owned(),
            };
            Some((index, text))
        })
        .collect();
    outcomes.sort();
    let indexes: Vec<u64> = outcomes.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        indexes,
        (0..indexes.len() as u64).collect::<Vec<_>>(),
        "one outcome per message: {out}"
    );
    outcomes.into_iter().map(|(_, o)| o).collect()
}

/// `pyclient.py recv`'s reports, each as one line of text: `flow N`, `drain N`, `drained C D` (credit left,
/// credit given back) or `I: BODY`, in the order printed.
fn py_received(out: &Finished) -> Vec<String> {
    json_lines(out)
        .iter()
        .map(|j| match (j["event"].as_str(), j["index"].as_u64()) {
            (Some("drained"), _) => format!("drained {} {}", j["credit"], j["drained"]),
            (Some(event), _) => format!("{event} {}", j["credit"]),
            (None, Some(i)) if j.get("large").is_some() => format!("{i}: large {}", j["large"]),
            (None, Some(i)) => format!("{i}: {}", j["body"]),
            (None, None) => format!("unexpected {j}"),
        })
        .collect()
}

fn py_args(mode: &str, url: &str, address: &str, count: usize, more: &[&str]) -> Vec<String> {
    let count = count.to_string();
    let mut args = strings(&[mode, url, address, &count]);
    args.extend(strings(more));
    args
}

/// Runs `pyclient.py MODE URL ADDRESS COUNT MORE...` to its end; fails the test unless it exits 0.
async fn pyclient(mode: &str, url: &str, address: &str, count: usize, more: &[&str]) -> Finished {
    let out = script("pyclient.py", py_args(mode, url, address, count, more)).await;
    out.assert_success();
    out
}

#[actix_rt::test]
async fn pyproton_our_broker_settlement() {
    const N: usize = 5;
    let c = container();
    let (broker, port) = our_broker(&c, ListenOptions::default());
    let url = format!("amqp://127.0.0.1:{port}");
    // Pre-settled: Proton settles each delivery as it sends it on its `AtMostOnce` link; all of them
    // arrive, in order.
    let out = pyclient("send", &url, "presettled", N, &["--presettled"]).await;
    assert_eq!(py_outcomes(&out), vec!["presettled"; N], "{out}");
    assert_eq!(broker.queue_depth("presettled"), Some(N));
    let got = receive(&c, &format!("{url}/presettled"), N, 10).await;
    assert_eq!(bodies(&got), (0..N as i64).collect::<Vec<_>>());
    // Unsettled: our broker accepts what it queues.
    let out = pyclient("send", &url, "unsettled", N, &[]).await;
    assert_eq!(py_outcomes(&out), vec!["accepted"; N], "{out}");
    assert_eq!(broker.queue_depth("unsettled"), Some(N));
}

#[actix_rt::test]
async fn pyproton_our_broker_credit_manual() {
    let c = container();
    let (broker, url) = our_broker_holding(&c, "credit", 8).await;
    // Prefetch 0, then flow(2) and, once both arrived, flow(3): exactly 5 of the 8 leave the queue.
    let out = pyclient("recv", &url, "credit", 5, &["--flow", "2,3"]).await;
    assert_eq!(
        py_received(&out),
        ["flow 2", "0: 0", "1: 1", "flow 3", "2: 2", "3: 3", "4: 4"],
        "{out}"
    );
    assert_eq!(broker.queue_depth("credit"), Some(3));
}

#[actix_rt::test]
async fn pyproton_our_broker_drain() {
    let c = container();
    let (broker, url) = our_broker_holding(&c, "drain", 3).await;
    // drain(10) with 3 queued: the broker sends the 3, then gives back the 7 credits it cannot use, with
    // drain set and credit 0 [AMQP 1.0 §2.6.7].
    let out = pyclient("recv", &url, "drain", 3, &["--drain", "10"]).await;
    assert_eq!(
        py_received(&out),
        ["drain 10", "0: 0", "1: 1", "2: 2", "drained 0 7"],
        "{out}"
    );
    assert_eq!(broker.queue_depth("drain"), Some(0));
}

// ---------------------------------------------------------------------------------------------------------------
// our_listener: Python clients against a nucleon listener
// ---------------------------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn pyproton_our_listener_type_fidelity() {
    let c = container();
    let all = corpus::messages_without(PROTON_MESSAGE_LOSSY);
    let (direct, mut events) = Direct::new(all.iter().map(|(_, m)| m.clone()).collect());
    let listener = c.listen("127.0.0.1:0", direct).expect("listens");
    let url = format!("amqp://127.0.0.1:{}", listener.port());
    let n = all.len().to_string();
    let out = script("echo.py", strings(&[&url, "from-us", "to-us", &n])).await;
    out.assert_success();
    let mut got = Vec::new();
    let mut accepted = 0;
    while got.len() < all.len() || accepted < all.len() {
        match tokio::time::timeout(TIMEOUT, events.recv()).await {
            Ok(Some(DirectEvent::Received(m))) => got.push(*m),
            Ok(Some(DirectEvent::Outcome(Some(DeliveryState::Accepted(_))))) => accepted += 1,
            other => panic!(
                "after {} echoes and {accepted} accepted: {other:?}",
                got.len()
            ),
        }
    }
    assert_eq!(accepted, all.len(), "every message we sent was accepted");
    assert_same_corpus(&all, &got);
}

/// The next `n` messages our listener received, in order.
async fn received(events: &mut mpsc::UnboundedReceiver<DirectEvent>, n: usize) -> Vec<Message> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(TIMEOUT, events.recv()).await {
            Ok(Some(DirectEvent::Received(m))) => got.push(*m),
            other => panic!("after {} messages: {other:?}", got.len()),
        }
    }
    got
}

/// Waits for the outcomes of `n` messages our listener sent, and checks each was accepted.
async fn all_accepted(events: &mut mpsc::UnboundedReceiver<DirectEvent>, n: usize) {
    for i in 0..n {
        match tokio::time::timeout(TIMEOUT, events.recv()).await {
            Ok(Some(DirectEvent::Outcome(Some(DeliveryState::Accepted(_))))) => {}
            other => panic!("after {i} accepted: {other:?}"),
        }
    }
}

fn listener_url(listener: &nucleon::Listener) -> String {
    format!("amqp://127.0.0.1:{}", listener.port())
}

#[actix_rt::test]
async fn pyproton_our_listener_settlement() {
    const N: usize = 6;
    let c = container();
    let (direct, mut events) = Direct::new(Vec::new());
    let direct = direct.with_verdict(by_index);
    let listener = c.listen("127.0.0.1:0", direct).expect("listens");
    let url = listener_url(&listener);
    let out = pyclient("send", &url, "settle", N, &[]).await;
    let rejected = "rejected amqp:precondition-failed";
    assert_eq!(
        py_outcomes(&out),
        ["accepted", rejected, "released", "accepted", rejected, "released"],
        "{out}"
    );
    assert_eq!(
        bodies(&received(&mut events, N).await),
        (0..N as i64).collect::<Vec<_>>()
    );
}

#[actix_rt::test]
async fn pyproton_our_listener_volume() {
    const N: usize = 10_000;
    let c = container();
    let (direct, mut events) = Direct::new(numbered(N));
    let listener = c.listen("127.0.0.1:0", direct).expect("listens");
    let url = listener_url(&listener);
    // Python -> us, every message accepted and in order.
    let out = pyclient("send", &url, "to-us", N, &["--timeout", "100"]).await;
    assert_eq!(py_outcomes(&out), vec!["accepted"; N], "{out}");
    assert_eq!(
        bodies(&received(&mut events, N).await),
        (0..N as i64).collect::<Vec<_>>()
    );
    // us -> Python, in order, each accepted.
    let out = pyclient(
        "recv",
        &url,
        "from-us",
        N,
        &["--prefetch", "500", "--timeout", "100"],
    )
    .await;
    let expected: Vec<String> = (0..N).map(|i| format!("{i}: {i}")).collect();
    assert_eq!(py_received(&out), expected, "{out}");
    all_accepted(&mut events, N).await;
}

#[actix_rt::test]
async fn pyproton_our_listener_large() {
    const SIZE: &str = "5242880";
    let c = container();
    let Value::Binary(bytes) = large_body() else {
        unreachable!("large_body is a binary")
    };
    let (direct, mut events) = Direct::new(vec![Message::builder().data(bytes.clone()).build()]);
    let listener = c.listen("127.0.0.1:0", direct).expect("listens");
    let url = listener_url(&listener);
    // Python -> us: Proton splits it at our 64 KiB max-frame-size.
    let out = pyclient(
        "send",
        &url,
        "to-us",
        1,
        &["--large", SIZE, "--timeout", "60"],
    )
    .await;
    assert_eq!(py_outcomes(&out), ["accepted"], "{out}");
    let got = received(&mut events, 1).await;
    assert!(
        matches!(got[0].body(), Body::Data(sections) if sections.len() == 1 && sections[0] == bytes),
        "the 5 MiB data section differs"
    );
    assert_eq!(got[0].property("index"), Some(&Value::Long(0)));
    // us -> Python: Python advertises 64 KiB frames, so we split it too.
    let out = pyclient(
        "recv",
        &url,
        "from-us",
        1,
        &["--large", SIZE, "--max-frame", "65536", "--timeout", "60"],
    )
    .await;
    assert_eq!(py_received(&out), ["0: large true"], "{out}");
    all_accepted(&mut events, 1).await;
}

#[actix_rt::test]
async fn pyproton_our_listener_credit_manual() {
    let c = container();
    let (direct, _events) = Direct::new(numbered(8));
    let listener = c.listen("127.0.0.1:0", direct.clone()).expect("listens");
    let url = listener_url(&listener);
    // Our listener sends only on credit: Python's prefetch is 0, then flow(2) and flow(3).
    let out = pyclient("recv", &url, "credit", 5, &["--flow", "2,3"]).await;
    assert_eq!(
        py_received(&out),
        ["flow 2", "0: 0", "1: 1", "flow 3", "2: 2", "3: 3", "4: 4"],
        "{out}"
    );
    assert_eq!(direct.unsent(), 3, "nothing was sent beyond the credit");
}

#[actix_rt::test]
async fn pyproton_our_listener_drain() {
    let c = container();
    let (direct, mut events) = Direct::new(numbered(3));
    let listener = c.listen("127.0.0.1:0", direct.clone()).expect("listens");
    let url = listener_url(&listener);
    // drain(10) with 3 to send: our listener sends them, then the runtime gives back the other 7.
    let out = pyclient("recv", &url, "drain", 3, &["--drain", "10"]).await;
    assert_eq!(
        py_received(&out),
        ["drain 10", "0: 0", "1: 1", "2: 2", "drained 0 7"],
        "{out}"
    );
    all_accepted(&mut events, 3).await;
    assert_eq!(direct.unsent(), 0);
}

#[actix_rt::test]
async fn pyproton_our_listener_sasl_plain() {
    let c = container();
    let (direct, mut events) = Direct::new(Vec::new());
    let listener = c
        .listen_with("127.0.0.1:0", plain_users(), direct)
        .expect("listens");
    let url = listener_url(&listener);
    let plain = |password: &str, more: &[&str]| {
        let mut args = vec!["--mechs", "PLAIN", "--user", "alice", "--password"];
        args.push(password);
        args.extend_from_slice(more);
        py_args("send", &url, "sasl", 1, &args)
    };
    let right = script("pyclient.py", plain("secret", &[])).await;
    right.assert_success();
    assert_eq!(py_outcomes(&right), ["accepted"], "{right}");
    assert_eq!(bodies(&received(&mut events, 1).await), [0]);
    let wrong = script("pyclient.py", plain("wrong", &["--expect-auth-failure"])).await;
    wrong.assert_success();
    assert!(
        wrong
            .lines()
            .iter()
            .any(|l| l.starts_with("auth-failed amqp:unauthorized-access")),
        "{wrong}"
    );
    assert!(
        events.try_recv().is_err(),
        "nothing arrived unauthenticated"
    );
}

#[actix_rt::test]
async fn pyproton_our_listener_sasl_anonymous() {
    let c = container();
    let (direct, mut events) = Direct::new(Vec::new());
    let listener = c.listen("127.0.0.1:0", direct).expect("listens");
    let url = listener_url(&listener);
    let out = pyclient("send", &url, "anonymous", 1, &["--mechs", "ANONYMOUS"]).await;
    assert_eq!(py_outcomes(&out), ["accepted"], "{out}");
    assert_eq!(bodies(&received(&mut events, 1).await), [0]);
}

#[actix_rt::test]
async fn pyproton_our_listener_idle_timeout() {
    let c = container();
    let (direct, mut events) = Direct::new(Vec::new());
    let options = ListenOptions::new().idle_timeout(Duration::from_secs(1));
    let listener = c
        .listen_with("127.0.0.1:0", options, direct)
        .expect("listens");
    let url = listener_url(&listener);
    // Python asks for 1 s and we for 1 s (advertised as 0.5 s); the connection stays quiet for 3 s after
    // the open, then sends: only the heartbeats of both ends kept it up.
    let out = pyclient(
        "send",
        &url,
        "idle",
        1,
        &["--idle-timeout", "1", "--quiet", "3"],
    )
    .await;
    assert!(
        out.lines().contains(&"opened remote-idle-timeout=0.5"),
        "{out}"
    );
    assert_eq!(py_outcomes(&out), ["accepted"], "{out}");
    assert_eq!(bodies(&received(&mut events, 1).await), [0]);
}

/// A broker-less responder, as Proton's `server_direct` example: it gives each dynamic source the peer
/// asks for an address of its own (`reply-N`), and answers each request on the link whose source has the
/// request's `reply-to` address, with the body upper-cased and `correlation-id` set to the request's
/// `message-id`.
#[derive(Default)]
struct Responder {
    made: usize,
    links: HashMap<String, SenderId>,
    pending: HashMap<String, VecDeque<Message>>,
}

/// Makes a [`Responder`] per connection.
struct Responders;

impl ListenHandler for Responders {
    type Handler = Responder;

    fn on_accept(&self, _peer: std::net::SocketAddr) -> Responder {
        Responder::default()
    }
}

impl Responder {
    fn flush(&mut self, sender: &mut Sender<'_>) {
        let Some(address) = sender.address().map(str::to_owned) else {
            return;
        };
        let Some(queue) = self.pending.get_mut(&address) else {
            return;
        };
        while sender.credit() > 0 {
            let Some(reply) = queue.pop_front() else {
                break;
            };
            sender.send(&reply).expect("sends");
        }
    }
}

impl MessagingHandler for Responder {
    fn on_link_attach_request(&mut self, reply: &mut AttachReply) {
        if let Some(source) = reply.source.as_mut().filter(|s| s.dynamic) {
            source.address = Some(format!("reply-{}", self.made));
            self.made += 1;
        }
    }

    fn on_sender_open(&mut self, sender: &mut Sender<'_>) {
        if let Some(address) = sender.address() {
            self.links.insert(address.to_owned(), sender.id());
        }
    }

    fn on_sendable(&mut self, sender: &mut Sender<'_>) {
        self.flush(sender);
    }

    fn on_message(&mut self, delivery: &mut Delivery<'_>, message: Message) {
        let (Some(reply_to), Some(Value::String(body))) =
            (message.reply_to(), message.body_value())
        else {
            delivery.reject(Some(AmqpError::new(
                ErrorCondition::InvalidField,
                "a request needs reply-to and a string body",
            )));
            return;
        };
        let mut reply = Message::builder().body(body.to_uppercase());
        if let Some(id) = message.message_id() {
            reply = reply.correlation_id(id.clone());
        }
        self.pending
            .entry(reply_to.to_owned())
            .or_default()
            .push_back(reply.build());
        let Some(&id) = self.links.get(reply_to) else {
            return;
        };
        if let Some(mut sender) = delivery.receiver().connection().sender(id) {
            self.flush(&mut sender);
        }
    }
}

#[actix_rt::test]
async fn pyproton_our_listener_request_reply() {
    const N: usize = 10;
    let c = container();
    let listener = c.listen("127.0.0.1:0", Responders).expect("listens");
    let url = listener_url(&listener);
    let n = N.to_string();
    let out = script("reqrep.py", strings(&["request", &url, "requests", &n])).await;
    out.assert_success();
    assert!(out.lines().contains(&"reply address reply-0"), "{out}");
    assert!(
        out.lines().contains(&format!("requested {N}").as_str()),
        "{out}"
    );
}
