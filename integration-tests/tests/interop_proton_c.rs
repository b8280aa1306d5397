//! nucleon against Qpid Proton 0.37's C examples (`broker`, `send`, `receive`, `direct`, built by
//! `scripts/build-proton-examples.sh`; see [`nucleon_integration_tests::peers::proton`]).
//!
//! Directions (the second part of each test name):
//!
//! * `client`: our clients (the async facade, or a `MessagingHandler`) against Proton's C `broker`, one broker
//!   per test binary, each test on addresses of its own.
//! * `our_broker`: Proton's C `send` and `receive` against our in-process `nucleon::broker::Broker`.
//! * `our_listener`: Proton's C `send` and `receive` against a nucleon listener that receives and sends itself
//!   (what the `direct_recv` / `direct_send` examples do).
//! * `their_direct`: our clients against Proton's C `direct`, which listens and receives or sends.
//!
//! What the C examples cannot do, so no test pretends they do:
//!
//! * The C broker grants 5 credits at a time, sends its deliveries pre-settled, accepts every message (so a
//!   sender never sees rejected or released), ignores `dynamic` (no request/reply with a dynamic address),
//!   never answers a drain, offers only SASL ANONYMOUS (no PLAIN), and advertises no idle timeout.
//! * `send`, `receive` and `direct` have fixed behaviour: they send `{"sequence": n}` maps (message-id n), or
//!   accept whatever they receive and print its body. They take no credentials, no idle timeout, no
//!   settlement mode and no message size; so type fidelity, properties, large messages, settlement other
//!   than accepted, manual credit, drain, request/reply, SASL PLAIN and idle timeouts are not applicable to
//!   them, as clients or as `direct` (with the exception below).
//! * A 5 MiB message to `direct` (`protonc_their_direct_large`) arrives byte for byte (checked against what
//!   `direct` prints), but as a single frame: `direct` advertises no `max-frame-size` (so the default,
//!   4294967295 [AMQP 1.0 §2.7.1]) and we split a transfer only at the peer's limit, so we send one 5 MiB
//!   `transfer`. That is why `direct.c`'s receiving code, which writes each incoming batch at the start of its
//!   buffer (`pn_link_recv(l, m->start, m->size)` after growing it), never shows its flaw here: Proton
//!   reads a whole frame before it reports the delivery. The multi-frame case in this direction is not
//!   applicable to `direct`, and the other direction (`direct` sending) is not either: it only sends
//!   `{"sequence": n}` maps. The C broker has no frame limit either, so against Proton C a 5 MiB message
//!   is multi-frame only towards us (our 64 KiB limit, `protonc_client_large`).
//!
//! Nothing is skipped: without Proton's packages the tests fail and say to run `scripts/install-test-deps.sh`.

use std::time::Duration;

use nucleon::protocol::frame::DeliveryState;
use nucleon::{
    ConnectionOptions, ContainerHandle, DeliveryMode, ListenOptions, Message, Outcome,
    SenderOptions, Value,
};
use nucleon_integration_tests::client::{
    self, bodies, numbered, Direct, DirectEvent, ManualCredit,
};
use nucleon_integration_tests::corpus;
use nucleon_integration_tests::peers::proton::{
    c_direct, receive, run_c_client, send, send_all, CBroker, Finished, TIMEOUT,
};

fn container() -> ContainerHandle {
    client::container("proton-c-interop")
}

/// An address no other test of this binary uses.
fn address(test: &str) -> String {
    format!("nucleon-{test}")
}

/// Runs a C client off the actix thread, so that our in-process listeners keep accepting meanwhile.
async fn c_client(name: &'static str, port: u16, address: &str, count: usize) -> Finished {
    let address = address.to_owned();
    tokio::task::spawn_blocking(move || run_c_client(name, port, &address, count, TIMEOUT))
        .await
        .expect("the C client's thread")
}

/// What Proton's `receive` and `direct` print for the body of the n-th `{"sequence": n}` message.
fn sequence_line(n: usize) -> String {
    format!("{{\"sequence\"={n}}}")
}

/// The body of the `n`-th message of Proton's `send` and `direct`.
fn sequence_body(n: usize) -> Value {
    let mut map = nucleon::protocol::codec::Map::new();
    map.insert("sequence", Value::Int(n as i32));
    Value::Map(map)
}

fn large_body() -> Value {
    Value::Binary(client::five_mib().into())
}

// ---------------------------------------------------------------------------------------------------------------
// client: our clients against Proton's C broker
// ---------------------------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn protonc_client_type_fidelity() {
    let broker = CBroker::shared();
    let c = container();
    let url = broker.url(&address("types"));
    let all = corpus::messages();
    let messages: Vec<Message> = all.iter().map(|(_, m)| m.clone()).collect();
    let outcomes = send(&c, &url, messages).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Accepted),
        "{outcomes:?}"
    );
    let got = receive(&c, &url, all.len(), 10).await;
    for ((name, sent), got) in all.iter().zip(&got) {
        assert_eq!(got, sent, "{name}");
    }
}

#[actix_rt::test]
async fn protonc_client_application_properties() {
    let broker = CBroker::shared();
    let c = container();
    let url = broker.url(&address("app-props"));
    let mut m = Message::builder().body("props").build();
    if let Some(props) = corpus::full_message().application_properties() {
        *m.application_properties_mut() = props.clone();
    }
    assert!(m.application_properties().is_some_and(|p| p.len() > 5));
    assert_eq!(send(&c, &url, vec![m.clone()]).await, [Outcome::Accepted]);
    let got = receive(&c, &url, 1, 1).await;
    assert_eq!(got[0].application_properties(), m.application_properties());
    assert_eq!(got[0], m);
}

#[actix_rt::test]
async fn protonc_client_header_and_properties() {
    let broker = CBroker::shared();
    let c = container();
    let url = broker.url(&address("fields"));
    let full = corpus::full_message();
    assert_eq!(
        send(&c, &url, vec![full.clone()]).await,
        [Outcome::Accepted]
    );
    let got = receive(&c, &url, 1, 1).await;
    assert_eq!(got[0].header(), full.header());
    assert_eq!(got[0].properties(), full.properties());
    assert_eq!(got[0], full);
}

#[actix_rt::test]
async fn protonc_client_volume() {
    const N: usize = 10_000;
    let broker = CBroker::shared();
    let c = container();
    let url = broker.url(&address("volume"));
    // The broker grants 5 credits at a time; each message must still be accepted, in order.
    let outcomes = send(&c, &url, numbered(N)).await;
    assert_eq!(outcomes, vec![Outcome::Accepted; N]);
    let got = receive(&c, &url, N, 500).await;
    assert_eq!(bodies(&got), (0..N as i64).collect::<Vec<_>>());
}

#[actix_rt::test]
async fn protonc_client_large() {
    let broker = CBroker::shared();
    let c = container();
    let url = broker.url(&address("large"));
    let body = large_body();
    let m = Message::builder().body(body.clone()).build();
    // The broker's max-frame-size is unlimited, so we send it as one frame; ours is 64 KiB, so it comes back
    // in 80-odd frames.
    assert_eq!(send(&c, &url, vec![m]).await, [Outcome::Accepted]);
    let got = receive(&c, &url, 1, 1).await;
    assert_eq!(got[0].body_value(), Some(&body));
}

#[actix_rt::test]
async fn protonc_client_settlement() {
    let broker = CBroker::shared();
    let c = container();
    let url = broker.url(&address("settlement"));
    let presettled = send_all(
        &c,
        &url,
        ConnectionOptions::default(),
        DeliveryMode::AtMostOnce,
        numbered(3),
    )
    .await;
    assert_eq!(presettled, vec![Outcome::Settled; 3]);
    let accepted = send(&c, &url, vec![Message::with_body(3i64)]).await;
    assert_eq!(accepted, [Outcome::Accepted]);
    let got = receive(&c, &url, 4, 4).await;
    assert_eq!(bodies(&got), [0, 1, 2, 3]);
}

#[actix_rt::test]
async fn protonc_client_sasl_anonymous() {
    let broker = CBroker::shared();
    let c = container();
    let url = broker.url(&address("anonymous"));
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
    let got = receive(&c, &url, 1, 1).await;
    assert_eq!(got[0].body_value(), Some(&Value::from("anonymous")));
}

#[actix_rt::test]
async fn protonc_client_idle_timeout() {
    let broker = CBroker::shared();
    let c = container();
    let url = broker.url(&address("idle"));
    // The C broker advertises no idle timeout; we ask for 1 s (advertising 500 ms), so Proton must keep our
    // quiet connection alive with empty frames, or we close it with resource-limit-exceeded.
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
    sender.close().expect("closes");
}

#[actix_rt::test]
async fn protonc_client_credit_manual() {
    let broker = CBroker::shared();
    let c = container();
    let address = address("credit");
    let url = broker.url(&address);
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
    receiver.close().expect("closes");
}

// ---------------------------------------------------------------------------------------------------------------
// our_broker: Proton's C clients against our broker
// ---------------------------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn protonc_our_broker_volume() {
    const N: usize = 10_000;
    let c = container();
    let (broker, port) = client::broker(&c, ListenOptions::default());
    let sent = c_client("send", port, "c-volume", N).await;
    sent.assert_success();
    assert!(
        sent.lines()
            .contains(&format!("{N} messages sent and acknowledged").as_str()),
        "{sent}"
    );
    assert_eq!(broker.queue_depth("c-volume"), Some(N));
    let received = c_client("receive", port, "c-volume", N).await;
    received.assert_success();
    let mut expected: Vec<String> = (1..=N).map(sequence_line).collect();
    expected.push(format!("{N} messages received"));
    assert_eq!(received.lines(), expected, "{received}");
    assert_eq!(broker.queue_depth("c-volume"), Some(0));
}

// ---------------------------------------------------------------------------------------------------------------
// our_listener: Proton's C clients against a nucleon listener
// ---------------------------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn protonc_our_listener_volume() {
    const N: usize = 10_000;
    let c = container();
    let (direct, mut events) = Direct::new((0..N as i64).map(Message::with_body).collect());
    let listener = c.listen("127.0.0.1:0", direct).expect("listens");

    // C send -> us: N messages, each accepted by us, in order.
    let sent = c_client("send", listener.port(), "from-c", N).await;
    sent.assert_success();
    assert!(
        sent.lines()
            .contains(&format!("{N} messages sent and acknowledged").as_str()),
        "{sent}"
    );
    for n in 1..=N {
        match events.try_recv() {
            Ok(DirectEvent::Received(m)) => {
                assert_eq!(m.body_value(), Some(&sequence_body(n)), "message {n}")
            }
            other => panic!("message {n}: {other:?}"),
        }
    }

    // us -> C receive: N messages in order, each accepted by Proton.
    let received = c_client("receive", listener.port(), "to-c", N).await;
    received.assert_success();
    let mut expected: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    expected.push(format!("{N} messages received"));
    assert_eq!(received.lines(), expected, "{received}");
    let mut accepted = 0;
    while accepted < N {
        match tokio::time::timeout(TIMEOUT, events.recv()).await {
            Ok(Some(DirectEvent::Outcome(Some(DeliveryState::Accepted(_))))) => accepted += 1,
            other => panic!("after {accepted} accepted: {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// their_direct: our clients against Proton's C direct
// ---------------------------------------------------------------------------------------------------------------

#[actix_rt::test]
async fn protonc_their_direct_volume() {
    const N: usize = 10_000;
    let c = container();

    // us -> direct: it accepts each message and prints its body.
    let (direct, port) = c_direct("to-direct", N);
    let url = format!("amqp://127.0.0.1:{port}/to-direct");
    let outcomes = send(&c, &url, numbered(N)).await;
    assert_eq!(outcomes, vec![Outcome::Accepted; N]);
    let out = tokio::task::spawn_blocking(move || direct.finish(TIMEOUT))
        .await
        .expect("joins");
    let mut expected = vec![format!("listening on {port}")];
    expected.extend((0..N).map(|i| i.to_string()));
    expected.push(format!("{N} messages received"));
    expected.push("exited 0".to_owned());
    assert_eq!(out.lines(), expected, "{out}");

    // direct -> us: N `{"sequence": n}` messages, which we accept.
    let (direct, port) = c_direct("from-direct", N);
    let url = format!("amqp://127.0.0.1:{port}/from-direct");
    let got = receive(&c, &url, N, 500).await;
    for (n, m) in (1..=N).zip(&got) {
        assert_eq!(m.body_value(), Some(&sequence_body(n)), "message {n}");
    }
    let out = tokio::task::spawn_blocking(move || direct.finish(TIMEOUT))
        .await
        .expect("joins");
    assert_eq!(
        out.lines(),
        [
            format!("listening on {port}"),
            format!("{N} messages sent and acknowledged"),
            "exited 0".to_owned()
        ],
        "{out}"
    );
}

#[actix_rt::test]
async fn protonc_their_direct_settlement() {
    const N: usize = 10;
    let c = container();
    // Pre-settled messages count as received for `direct` just as unsettled ones do.
    let (direct, port) = c_direct("presettled", N);
    let url = format!("amqp://127.0.0.1:{port}/presettled");
    let outcomes = send_all(
        &c,
        &url,
        ConnectionOptions::default(),
        DeliveryMode::AtMostOnce,
        numbered(N),
    )
    .await;
    assert_eq!(outcomes, vec![Outcome::Settled; N]);
    let out = tokio::task::spawn_blocking(move || direct.finish(TIMEOUT))
        .await
        .expect("joins");
    out.assert_success();
    assert!(
        out.lines()
            .contains(&format!("{N} messages received").as_str()),
        "{out}"
    );
}

/// How Proton's `pn_inspect` prints a binary: `b"…"`, printable ASCII as itself except `"`, `'` and `\`,
/// every other byte as `\xNN`.
fn inspected_binary(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 4 + 3);
    s.push_str("b\"");
    for &b in bytes {
        if (0x20..0x7f).contains(&b) && !matches!(b, b'"' | b'\'' | b'\\') {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s.push('"');
    s
}

#[actix_rt::test]
async fn protonc_their_direct_large() {
    let c = container();
    let (direct, port) = c_direct("large", 1);
    let url = format!("amqp://127.0.0.1:{port}/large");
    let body = large_body();
    let m = Message::builder().body(body.clone()).build();
    let outcomes = send(&c, &url, vec![m]).await;
    let out = tokio::task::spawn_blocking(move || direct.finish(TIMEOUT))
        .await
        .expect("joins");
    assert_eq!(outcomes, [Outcome::Accepted]);
    let Value::Binary(bytes) = body else {
        unreachable!("large_body is a binary")
    };
    // `direct` prints the body on one line of about 15 MB: compare it without printing it.
    let lines = out.lines();
    let listening = format!("listening on {port}");
    assert_eq!(lines.len(), 4, "{}", short_lines(&lines));
    assert_eq!(lines[0], listening);
    assert!(
        lines[1] == inspected_binary(&bytes),
        "the body differs: {}",
        short_lines(&lines)
    );
    assert_eq!(lines[2..], ["1 messages received", "exited 0"]);
}

/// The lines cut to 200 characters, for failure messages.
fn short_lines(lines: &[&str]) -> String {
    lines
        .iter()
        .map(|l| l.chars().take(200).collect::<String>())
        .collect::<Vec<_>>()
        .join("\n")
}
