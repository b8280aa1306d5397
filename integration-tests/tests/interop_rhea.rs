//! nucleon against rhea 3.x, the JavaScript AMQP 1.0 library (`integration-tests/peers/rhea/peer.mjs`, one
//! `node` process per test binary, see [`Rhea`]), in two directions:
//!
//! * `rhea_client_*`: rhea clients against our broker (`nucleon::broker::Broker`, served in-process on
//!   127.0.0.1:0), with our clients on the broker's other side where a case needs them; also over TLS
//!   (Node's TLS, SASL PLAIN inside) and over WebSocket (rhea's binding on the `ws` package);
//! * `rhea_listener_*`: our clients against a rhea listener (`container.listen` on 127.0.0.1:0), which
//!   stores what it receives by address and sends it back to a receiver attaching to that address; also over
//!   TLS (Node's TLS server, SASL PLAIN inside) and over WebSocket (rhea's binding on a `ws` server).
//!
//! Type fidelity goes through rhea's own decoding: the peer re-sends each message exactly as rhea decoded it.
//! rhea 3.0.5 decodes values to plain JavaScript values and encodes them again by JavaScript type
//! (`lib/types.js`, `unwrap` and `wrap`), so these AMQP types do not survive a pass through it: ubyte,
//! ushort and char come back as uint; ulong 200 as uint; ulong 2^64-1 and long -2^63 as 8-byte binaries
//! (rhea reads values beyond 2^53 as buffers); byte, short and long -100 as int; int -2^31 as long; float
//! as double; decimal32/64/128 and uuid as binary; symbol as string; arrays as lists; map keys as strings
//! (a map becomes a JavaScript object); an amqp-sequence's int as uint; a binary message-id as a uuid; a
//! described body value loses its descriptor. rhea cannot send back the double -2.25e300 at all (a whole
//! number to JavaScript, so it encodes it as a long and throws), nor any list or map holding it. Null,
//! booleans, uints, small ints, doubles with a fraction, timestamps, binaries, strings, empty lists, data sections, and
//! ulong and uuid message-ids survive. [`RHEA_LOSES`] names every corpus message left out of the
//! type-fidelity cases with its reason, and `rhea_client_type_losses_are_as_documented` checks that each
//! of them really is changed (scalars exactly as said here), so the list cannot hide a message rhea carries.
//!
//! Other rhea 3.0.5 behaviour the tests work around, each said where it applies:
//!
//! * rhea always sends a header and a properties section, empty when no field is set, which means the same
//!   as none [AMQP 1.0 §3.2.1, §3.2.4]; comparisons read an absent one as empty.
//! * rhea writes a footer section before the body (`lib/message.js` registers the footer's encoder first),
//!   against the section order [AMQP 1.0 §3.2]; our broker rejects such a message with `amqp:decode-error`,
//!   so the header-fields cases use the full message without its footer.
//! * rhea merges two consecutive deliveries settled in the same turn into one disposition range carrying
//!   the first one's outcome (`write_dispositions` in `lib/session.js`), so a rejection right after an
//!   acceptance reaches the sender as an acceptance; the settlement cases settle one delivery per turn.
//! * Our broker never releases or rejects a producer's message except when it cannot route it (rejected
//!   `amqp:not-found`), so rhea as a sender sees accepted, rejected and pre-settled there; released is
//!   covered by our sender against the rhea listener.

use std::time::Duration;

use futures::StreamExt;
use nucleon::protocol::engine::PlainAuthenticator;
use nucleon::protocol::frame::{ErrorCondition, MessageId};
use nucleon::{
    Connection, ConnectionOptions, ContainerHandle, Delivery, DeliveryMode, ListenOptions, Message,
    MessagingHandler, Outcome, Receiver, ReceiverOptions, Sender, SenderOptions, TlsServerConfig,
};
use nucleon_integration_tests::certs::{ServerCert, TestCa};
use nucleon_integration_tests::client::{self, bodies, broker, numbered, plain_allowed, Clients};
use nucleon_integration_tests::corpus;
use nucleon_integration_tests::peers::rhea::Rhea;
use serde_json::{json, Value as Json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(60);

/// Corpus messages that hold an AMQP type rhea does not carry through, with the reason.
const RHEA_LOSES: &[(&str, &str)] = &[
    ("value-ubyte", "ubyte comes back as uint"),
    ("value-ushort", "ushort comes back as uint"),
    ("value-ulong-small", "ulong 200 comes back as uint"),
    ("value-ulong", "ulong 2^64-1 comes back as an 8-byte binary"),
    ("value-byte", "byte comes back as int"),
    ("value-short", "short comes back as int"),
    ("value-int", "int -2^31 comes back as long"),
    ("value-long-small", "long -100 comes back as int"),
    ("value-long", "long -2^63 comes back as an 8-byte binary"),
    ("value-float", "float comes back as double"),
    ("value-double", "rhea encodes the whole-valued double -2.25e300 as a long and throws (out of range)"),
    ("value-decimal32", "decimal32 comes back as binary"),
    ("value-decimal64", "decimal64 comes back as binary"),
    ("value-decimal128", "decimal128 comes back as binary"),
    ("value-char", "char comes back as uint"),
    ("value-uuid", "uuid comes back as binary"),
    ("value-symbol", "symbol comes back as string"),
    ("value-list-scalars", "holds the scalars above, the double among them: rhea cannot send it back"),
    ("value-map", "keys come back as strings (a JavaScript object), the symbol key as a string"),
    (
        "value-map-nested",
        "keys come back as strings, and it holds the scalars above, the double among them: rhea cannot \
         send it back",
    ),
    ("value-array-int", "arrays come back as lists"),
    ("value-array-string", "arrays come back as lists"),
    ("value-array-list", "arrays come back as lists"),
    ("value-array-described", "arrays come back as lists"),
    ("value-described-code", "the descriptor is dropped: the value comes back alone"),
    ("value-described-symbol-list", "the descriptor is dropped, and the list's int comes back as uint"),
    ("sequence", "the amqp-sequence's int 1 comes back as uint"),
    ("id-binary", "a binary message-id is re-encoded as a uuid (rhea's wrap_message_id takes every buffer for one)"),
    (
        "full",
        "rhea writes the footer before the body, a section order our broker refuses (the message is \
         rejected with amqp:decode-error); the application properties long, ulong and uuid come back re-typed",
    ),
];

fn container() -> ContainerHandle {
    client::container("rhea-interop")
}

/// One operation of the rhea peer, over its own control connection.
struct Op {
    lines: Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl Op {
    async fn start(command: Json) -> Op {
        let rhea = Rhea::shared();
        let stream = TcpStream::connect(("127.0.0.1", rhea.control_port))
            .await
            .expect("connects to the rhea peer");
        let (read, writer) = stream.into_split();
        let mut op = Op {
            lines: BufReader::new(read).lines(),
            writer,
        };
        op.instruct(command).await;
        op
    }

    async fn instruct(&mut self, line: Json) {
        let mut text = line.to_string();
        text.push('\n');
        self.writer
            .write_all(text.as_bytes())
            .await
            .expect("writes to the rhea peer");
    }

    /// The next event from the peer.
    async fn next(&mut self) -> Json {
        let line = tokio::time::timeout(TIMEOUT, self.lines.next_line())
            .await
            .expect("the rhea peer answers in time")
            .expect("reads from the rhea peer")
            .expect("the rhea peer keeps the operation open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
    }

    /// Events up to and including the first named `event`; fails on an `error` or `disconnected` event.
    async fn until(&mut self, event: &str) -> Vec<Json> {
        let mut seen = Vec::new();
        loop {
            let e = self.next().await;
            let name = e["event"].as_str().unwrap_or_default().to_owned();
            assert!(
                name == event || (name != "error" && name != "disconnected"),
                "rhea reported {e} while waiting for {event} (after {seen:?})"
            );
            seen.push(e);
            if name == event {
                return seen;
            }
        }
    }
}

/// Our facade clients (PLAIN allowed on loopback).
fn clients() -> Clients {
    Clients {
        connection: plain_allowed(),
        timeout: TIMEOUT,
    }
}

async fn send_all(c: &ContainerHandle, url: &str, messages: Vec<Message>) -> Vec<Outcome> {
    send_all_with(c, url, messages, SenderOptions::default()).await
}

async fn send_all_with(
    c: &ContainerHandle,
    url: &str,
    messages: Vec<Message>,
    options: SenderOptions,
) -> Vec<Outcome> {
    clients().send_all(c, url, options, messages).await
}

async fn receive(c: &ContainerHandle, url: &str, n: usize, window: u32) -> Vec<Message> {
    clients().receive(c, url, n, window).await
}

/// The corpus without what rhea loses.
fn corpus_for_rhea() -> Vec<(String, Message)> {
    let names: Vec<&str> = RHEA_LOSES.iter().map(|(n, _)| *n).collect();
    corpus::messages_without(&names)
}

/// A message's sections, with an absent header or properties section read as the empty one: rhea always
/// sends both sections, empty when no field is set, which means the same [AMQP 1.0 §3.2.1, §3.2.4].
fn sections(m: &Message) -> impl PartialEq + std::fmt::Debug + '_ {
    (
        m.header().cloned().unwrap_or_default(),
        m.delivery_annotations(),
        m.message_annotations(),
        m.properties().cloned().unwrap_or_default(),
        m.application_properties(),
        m.body(),
        m.footer(),
    )
}

fn assert_same(sent: &[(String, Message)], got: &[Message]) {
    assert_eq!(sent.len(), got.len());
    let wrong: Vec<String> = sent
        .iter()
        .zip(got)
        .filter(|((_, a), b)| sections(a) != sections(b))
        .map(|((name, a), b)| format!("{name}:\n  sent {a:?}\n  got  {b:?}"))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The corpus messages holding the double -2.25e300, which rhea fails to encode (it throws).
const RHEA_CANNOT_SEND: &[&str] = &["value-double", "value-list-scalars", "value-map-nested"];

/// Every message in [`RHEA_LOSES`] does come back different from what was sent (so the list cannot hide
/// a message rhea carries), scalars exactly as the module doc says, or cannot be sent back by rhea at all
/// ([`RHEA_CANNOT_SEND`]).
#[actix_rt::test]
async fn rhea_client_type_losses_are_as_documented() {
    let c = container();
    let (_broker, port) = broker(&c, ListenOptions::default());
    let all = corpus::messages();
    let lossy: Vec<(String, Message)> = RHEA_LOSES
        .iter()
        .filter(|(name, _)| !RHEA_CANNOT_SEND.contains(name) && *name != "full")
        .map(|(name, _)| {
            all.iter()
                .find(|(n, _)| n == name)
                .expect("in the corpus")
                .clone()
        })
        .collect();
    let got = through_rhea_client(
        &c,
        port,
        "losses",
        lossy.iter().map(|(_, m)| m.clone()).collect(),
        10,
    )
    .await;
    let mut wrong = Vec::new();
    for ((name, sent), got) in lossy.iter().zip(&got) {
        if sections(sent) == sections(got) {
            wrong.push(format!("{name} came back unchanged"));
        }
        if let Some(expected) = rhea_retyped(name) {
            if got.body_value() != Some(&expected) {
                wrong.push(format!(
                    "{name}: expected {expected:?}, got {:?}",
                    got.body()
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let base = format!("amqp://127.0.0.1:{port}");
    send_all(&c, &format!("{base}/full"), vec![corpus::full_message()]).await;
    let outcomes = rhea_echo(port, "full", "full-back", 1).await;
    assert_eq!(
        outcomes,
        json!({"rejected": 1}),
        "rhea's copy of `full` is refused"
    );
    for name in RHEA_CANNOT_SEND {
        let m = all
            .iter()
            .find(|(n, _)| n == name)
            .expect("in the corpus")
            .1
            .clone();
        send_all(&c, &format!("{base}/{name}"), vec![m]).await;
        let mut op = Op::start(json!({"op": "echo", "port": port, "from": name,
            "to": format!("{name}-back"), "count": 1}))
        .await;
        let refused = op.next().await;
        assert_eq!(refused["event"], json!("error"), "{name}: {refused}");
        assert!(
            refused["description"]
                .as_str()
                .is_some_and(|d| d.contains("out of range")),
            "{name}: {refused}"
        );
    }
}

/// rhea moves `n` messages from `from` to `to` on our broker, each sent back as it decoded it; returns
/// the outcomes rhea saw for its sends.
async fn rhea_echo(port: u16, from: &str, to: &str, n: usize) -> Json {
    let mut op =
        Op::start(json!({"op": "echo", "port": port, "from": from, "to": to, "count": n})).await;
    let done = op.until("done").await;
    done.last().expect("done")["outcomes"].clone()
}

#[actix_rt::test]
async fn rhea_client_type_fidelity() {
    let c = container();
    let (_broker, port) = broker(&c, ListenOptions::default());
    let corpus = corpus_for_rhea();
    let base = format!("amqp://127.0.0.1:{port}");
    let outcomes = send_all(
        &c,
        &format!("{base}/types-in"),
        corpus.iter().map(|(_, m)| m.clone()).collect(),
    )
    .await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Accepted),
        "{outcomes:?}"
    );
    let echoed = rhea_echo(port, "types-in", "types-out", corpus.len()).await;
    assert_eq!(echoed, json!({"accepted": corpus.len()}));
    let got = receive(&c, &format!("{base}/types-out"), corpus.len(), 10).await;
    assert_same(&corpus, &got);
}

/// What rhea sends back for the scalar corpus messages it re-types (all but `value-double`, which it
/// cannot encode at all).
fn rhea_retyped(name: &str) -> Option<nucleon::Value> {
    use nucleon::Value as V;
    let binary = |b: &[u8]| V::Binary(bytes::Bytes::copy_from_slice(b));
    let scalar = |n: &str| {
        corpus::scalars()
            .into_iter()
            .find(|(s, _)| *s == n)
            .map(|(_, v)| v)
            .expect("a corpus scalar")
    };
    Some(match name {
        "value-ubyte" => V::Uint(255),
        "value-ushort" => V::Uint(65_535),
        "value-ulong-small" => V::Uint(200),
        "value-ulong" => binary(&[0xff; 8]),
        "value-byte" => V::Int(-128),
        "value-short" => V::Int(-32_768),
        "value-int" => V::Long(i64::from(i32::MIN)),
        "value-long-small" => V::Int(-100),
        "value-long" => binary(&i64::MIN.to_be_bytes()),
        "value-float" => V::Double(1.5),
        "value-decimal32" | "value-decimal64" | "value-decimal128" | "value-uuid" => {
            let V::Binary(b) = binary(&scalar_bytes(&scalar(&name["value-".len()..]))) else {
                return None;
            };
            V::Binary(b)
        }
        "value-char" => V::Uint(0x1F600),
        "value-symbol" => V::String("a-symbol".into()),
        "value-described-code" => V::String("coded".into()),
        _ => return None,
    })
}

/// The wire bytes of a fixed-width value that rhea reads as a buffer.
fn scalar_bytes(v: &nucleon::Value) -> Vec<u8> {
    use nucleon::Value as V;
    match v {
        V::Decimal32(d) => d.0.to_vec(),
        V::Decimal64(d) => d.0.to_vec(),
        V::Decimal128(d) => d.0.to_vec(),
        V::Uuid(u) => u.0.to_vec(),
        _ => Vec::new(),
    }
}

/// The scalars of the corpus whose type rhea carries, as application properties named after them.
fn typed_properties() -> Message {
    let lost: Vec<&str> = RHEA_LOSES.iter().map(|(n, _)| *n).collect();
    corpus::scalars()
        .into_iter()
        .filter(|(name, _)| !lost.contains(&format!("value-{name}").as_str()))
        .fold(Message::builder(), |b, (name, v)| b.property(name, v))
        .body("properties")
        .build()
}

/// [`corpus::full_message`] without its footer: rhea 3.0.5 writes a footer section before the body
/// (`lib/message.js` registers the footer's encoder first), which breaks the section order [AMQP 1.0 §3.2]
/// and our broker rejects such a message with `amqp:decode-error`.
fn full_without_footer() -> Message {
    let full = corpus::full_message();
    let mut m = Message::new();
    m.set_body(full.body().clone());
    *m.header_mut() = full.header().cloned().expect("a header");
    *m.properties_mut() = full.properties().cloned().expect("properties");
    *m.message_annotations_mut() = full.message_annotations().cloned().expect("annotations");
    *m.application_properties_mut() = full.application_properties().cloned().expect("properties");
    m
}

/// Every header and properties field, message annotations and body of [`corpus::full_message`] arrive
/// equal (its application properties and footer hold types rhea re-types: see `typed_properties`).
fn assert_fields(sent: &Message, got: &Message) {
    assert_eq!(got.header(), sent.header());
    assert_eq!(got.properties(), sent.properties());
    assert_eq!(got.message_annotations(), sent.message_annotations());
    assert_eq!(got.body(), sent.body());
}

fn five_mib() -> Message {
    Message::builder()
        .body(nucleon::Value::Binary(client::five_mib().into()))
        .build()
}

/// Our sender puts `messages` on `A` of our broker, rhea echoes them to `B`, our receiver reads `B`.
async fn through_rhea_client(
    c: &ContainerHandle,
    port: u16,
    test: &str,
    messages: Vec<Message>,
    window: u32,
) -> Vec<Message> {
    let base = format!("amqp://127.0.0.1:{port}");
    let n = messages.len();
    let outcomes = send_all(c, &format!("{base}/{test}-a"), messages).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Accepted),
        "{outcomes:?}"
    );
    let echoed = rhea_echo(port, &format!("{test}-a"), &format!("{test}-b"), n).await;
    assert_eq!(echoed, json!({ "accepted": n }), "rhea's outcomes");
    receive(c, &format!("{base}/{test}-b"), n, window).await
}

#[actix_rt::test]
async fn rhea_client_application_properties() {
    let c = container();
    let (_broker, port) = broker(&c, ListenOptions::default());
    let sent = typed_properties();
    let got = through_rhea_client(&c, port, "props", vec![sent.clone()], 1).await;
    assert_eq!(
        got[0].application_properties(),
        sent.application_properties()
    );
}

#[actix_rt::test]
async fn rhea_client_header_properties() {
    let c = container();
    let (_broker, port) = broker(&c, ListenOptions::default());
    let sent = full_without_footer();
    let got = through_rhea_client(&c, port, "fields", vec![sent.clone()], 1).await;
    assert_fields(&sent, &got[0]);
}

#[actix_rt::test]
async fn rhea_client_volume() {
    const N: i64 = 10_000;
    let c = container();
    let (_broker, port) = broker(&c, ListenOptions::default());
    let got = through_rhea_client(&c, port, "volume", numbered(N as usize), 500).await;
    assert_eq!(bodies(&got), (0..N).collect::<Vec<_>>());
}

#[actix_rt::test]
async fn rhea_client_large_message() {
    let c = container();
    let (_broker, port) = broker(&c, ListenOptions::default());
    let sent = five_mib();
    let got = through_rhea_client(&c, port, "large", vec![sent.clone()], 1).await;
    assert_eq!(got[0].body(), sent.body());
}

#[actix_rt::test]
async fn rhea_client_settlement() {
    let c = container();
    let (broker, port) = broker(&c, ListenOptions::default());
    // rhea sending: accepted when enqueued; rejected (not-found) through the anonymous relay without `to`;
    // pre-settled. Our broker never releases a producer's message.
    let mut op = Op::start(json!({"op": "send", "port": port, "address": "settle",
        "messages": [{"body": 1}]}))
    .await;
    assert_eq!(
        op.until("done").await.last().expect("done")["outcomes"],
        json!(["accepted"])
    );
    let mut op = Op::start(json!({"op": "send", "port": port, "address": null,
        "messages": [{"body": 2, "to": "settle"}, {"body": 3}]}))
    .await;
    assert_eq!(
        op.until("done").await.last().expect("done")["outcomes"],
        json!(["accepted", "rejected"])
    );
    let mut op = Op::start(json!({"op": "send", "port": port, "address": "settle",
        "presettled": true, "messages": [{"body": 4}]}))
    .await;
    assert_eq!(
        op.until("done").await.last().expect("done")["outcomes"],
        json!(["settled"])
    );
    // rhea receiving and settling by index: our broker sees accepted, rejected (dropped and counted) and
    // released (sent again, to rhea, as the fourth delivery). Credit window 1, so that each disposition
    // leaves rhea on its own: rhea 3.0.5 merges two consecutive deliveries settled in the same turn into one
    // disposition range carrying the first one's outcome (`write_dispositions` in `lib/session.js` compares
    // outcomes only once a range holds two deliveries), so with a larger window our broker is told
    // "accepted" for the message rhea rejected.
    let mut op = Op::start(json!({"op": "receive", "port": port, "address": "settle",
        "credit_window": 1, "dispositions": ["accept", "reject", "release", "accept", "accept"]}))
    .await;
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let e = op.next().await;
        if e["event"] == "message" {
            seen.push((e["body"].clone(), e["action"].clone()));
        }
    }
    assert_eq!(
        seen,
        vec![
            (json!(1), json!("accept")),
            (json!(2), json!("reject")),
            (json!(4), json!("release")),
            (json!(4), json!("accept")),
        ]
    );
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while broker.rejected() < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker never saw the rejection"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(broker.rejected(), 1);
}

#[actix_rt::test]
async fn rhea_client_credit_window_zero() {
    let c = container();
    let (_broker, port) = broker(&c, ListenOptions::default());
    let base = format!("amqp://127.0.0.1:{port}");
    send_all(&c, &format!("{base}/credit"), numbered(5)).await;
    let mut op = Op::start(json!({"op": "receive", "port": port, "address": "credit",
        "credit_window": 0}))
    .await;
    assert_eq!(
        op.until("attached").await.last().expect("attached")["credit"],
        json!(0)
    );
    op.instruct(json!({"flow": 2})).await;
    let bodies = |events: &[Json]| -> Vec<Json> {
        events
            .iter()
            .filter(|e| e["event"] == "message")
            .map(|e| e["body"].clone())
            .collect()
    };
    let mut first = op.until("message").await;
    first.extend(op.until("message").await);
    assert_eq!(bodies(&first), vec![json!(0), json!(1)]);
    assert_eq!(first.last().expect("a message")["credit"], json!(0));
    op.instruct(json!({"flow": 3})).await;
    let mut rest = Vec::new();
    for _ in 0..3 {
        rest.extend(op.until("message").await);
    }
    assert_eq!(bodies(&rest), vec![json!(2), json!(3), json!(4)]);
}

#[actix_rt::test]
async fn rhea_client_drain() {
    let c = container();
    let (_broker, port) = broker(&c, ListenOptions::default());
    let base = format!("amqp://127.0.0.1:{port}");
    send_all(&c, &format!("{base}/drain"), numbered(3)).await;
    let mut op = Op::start(json!({"op": "receive", "port": port, "address": "drain",
        "credit_window": 0}))
    .await;
    op.until("attached").await;
    op.instruct(json!({"drain": true, "flow": 10})).await;
    let events = op.until("drained").await;
    let bodies: Vec<Json> = events
        .iter()
        .filter(|e| e["event"] == "message")
        .map(|e| e["body"].clone())
        .collect();
    assert_eq!(bodies, vec![json!(0), json!(1), json!(2)]);
    assert_eq!(events.last().expect("drained")["credit"], json!(0));
}

#[actix_rt::test]
async fn rhea_client_request_reply() {
    let c = container();
    let (_broker, port) = broker(&c, ListenOptions::default());
    let base = format!("amqp://127.0.0.1:{port}");
    // Our responder: answers each request on its reply-to address, with its message-id as correlation-id.
    let mut requests = c
        .open_receiver(&format!("{base}/requests"), ReceiverOptions::default())
        .await
        .expect("the responder's receiver opens");
    let responder = c.clone();
    let reply_base = base.clone();
    actix_rt::spawn(async move {
        while let Some(r) = requests.next().await {
            let (Some(reply_to), Some(id)) = (
                r.message.properties().and_then(|p| p.reply_to.clone()),
                r.message.properties().and_then(|p| p.message_id.clone()),
            ) else {
                r.reject(None).expect("rejects");
                continue;
            };
            let reply = Message::builder()
                .correlation_id(id)
                .body(
                    r.message
                        .body_value()
                        .cloned()
                        .unwrap_or(nucleon::Value::Null),
                )
                .build();
            let sender = responder
                .open_sender(
                    &format!("{reply_base}/{reply_to}"),
                    SenderOptions::default(),
                )
                .await
                .expect("the reply sender opens");
            sender.send(reply).await.expect("the reply is settled");
            r.accept().expect("accepts");
        }
    });
    let mut op = Op::start(json!({"op": "request", "port": port, "address": "requests",
        "body": "ping"}))
    .await;
    let events = op.until("done").await;
    let reply_to = events[0]["address"]
        .as_str()
        .expect("a dynamic address")
        .to_owned();
    assert!(!reply_to.is_empty());
    let done = events.last().expect("done");
    assert_eq!(done["body"], json!("ping"));
    assert_eq!(done["correlation_id"], json!("request-1"));
}

fn plain_broker(c: &ContainerHandle, idle: Option<Duration>) -> u16 {
    let mut options = ListenOptions::new()
        // PLAIN over loopback TCP, offered only when asked for by name.
        .allow_insecure_plain(true)
        .authenticator(std::sync::Arc::new(PlainAuthenticator::new([(
            "alice", "secret",
        )])));
    options.idle_timeout = idle;
    broker(c, options).1
}

#[actix_rt::test]
async fn rhea_client_sasl() {
    let c = container();
    let port = plain_broker(&c, None);
    let mut op = Op::start(json!({"op": "quiet", "port": port, "address": "sasl",
        "username": "alice", "password": "secret"}))
    .await;
    assert_eq!(
        op.until("done").await.last().expect("done")["outcome"],
        json!("accepted")
    );
    let mut op = Op::start(json!({"op": "quiet", "port": port, "address": "sasl",
        "username": "alice", "password": "wrong"}))
    .await;
    let refused = op.next().await;
    assert_eq!(refused["event"], json!("error"), "{refused}");
    assert_eq!(
        refused["condition"],
        json!("amqp:unauthorized-access"),
        "{refused}"
    );
    // ANONYMOUS (rhea uses it for a user without a password) on a broker that lets anyone in.
    let (_broker, open_port) = broker(&c, ListenOptions::default());
    let mut op = Op::start(json!({"op": "quiet", "port": open_port, "address": "sasl",
        "username": "anonymous"}))
    .await;
    assert_eq!(
        op.until("done").await.last().expect("done")["outcome"],
        json!("accepted")
    );
}

#[actix_rt::test]
async fn rhea_client_over_websocket() {
    let c = container();
    let (_broker, port) = broker(&c, ListenOptions::new().websocket(true));
    // rhea's WebSocket binding (on the `ws` package, subprotocol `amqp`) to our WebSocket listener.
    let mut op = Op::start(json!({"op": "send", "port": port, "address": "ws",
        "websocket": format!("ws://127.0.0.1:{port}/"), "messages": [{"body": 1}, {"body": 2}]}))
    .await;
    assert_eq!(
        op.until("done").await.last().expect("done")["outcomes"],
        json!(["accepted", "accepted"])
    );
    let mut op = Op::start(json!({"op": "receive", "port": port, "address": "ws",
        "websocket": format!("ws://127.0.0.1:{port}/"), "credit_window": 10,
        "dispositions": ["accept", "accept"]}))
    .await;
    let mut bodies = Vec::new();
    while bodies.len() < 2 {
        let e = op.next().await;
        if e["event"] == "message" {
            bodies.push(e["body"].clone());
        }
    }
    assert_eq!(bodies, vec![json!(1), json!(2)]);
}

#[actix_rt::test]
async fn rhea_client_over_tls_with_plain() {
    let c = container();
    let ca = TestCa::new("rhea-tls");
    let server = ca.server(ServerCert::Loopback);
    let tls = TlsServerConfig::from_pem_files(&server.cert, &server.key)
        .expect("server TLS")
        .require_tls(true);
    let (_broker, port) = broker(
        &c,
        ListenOptions::new()
            .tls(tls)
            // Offered over TLS only: this is what rhea gets.
            .authenticator(std::sync::Arc::new(PlainAuthenticator::new([(
                "alice", "secret",
            )]))),
    );
    let ca_file = ca.ca_file().to_string_lossy().into_owned();
    // Node's TLS against our rustls listener, SASL PLAIN inside.
    let mut op = Op::start(json!({"op": "quiet", "port": port, "address": "tls",
        "tls_ca": ca_file, "username": "alice", "password": "secret"}))
    .await;
    assert_eq!(
        op.until("done").await.last().expect("done")["outcome"],
        json!("accepted")
    );
    // Without TLS the listener refuses it.
    let mut op = Op::start(json!({"op": "quiet", "port": port, "address": "tls",
        "username": "alice", "password": "secret"}))
    .await;
    let refused = op.next().await;
    assert_ne!(refused["event"], json!("done"), "{refused}");
}

#[actix_rt::test]
async fn rhea_client_idle_timeout() {
    let c = container();
    let port = plain_broker(&c, Some(Duration::from_secs(1)));
    // Both sides ask for heartbeats within 1 s; the connection then stays quiet for 3 s (no application
    // traffic) and must still carry a message afterwards.
    let mut op = Op::start(json!({"op": "quiet", "port": port, "address": "idle",
        "username": "alice", "password": "secret", "idle_time_out": 1000, "quiet_ms": 3000}))
    .await;
    assert_eq!(
        op.until("done").await.last().expect("done")["outcome"],
        json!("accepted")
    );
}

/// A rhea listener (the peer's `listen` operation with `options`), and its port.
async fn rhea_listener(options: Json) -> (Op, u16) {
    let mut command = json!({"op": "listen"});
    if let (Some(c), Some(o)) = (command.as_object_mut(), options.as_object()) {
        c.extend(o.clone());
    }
    let mut op = Op::start(command).await;
    let events = op.until("listening").await;
    let port = events.last().expect("listening")["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .expect("a port");
    (op, port)
}

/// Our sender sends `messages` to `address` on the rhea listener, which stores them; our receiver then
/// takes them back from the same address.
async fn through_rhea_listener(
    c: &ContainerHandle,
    address: &str,
    messages: Vec<Message>,
    window: u32,
) -> (Op, Vec<Message>) {
    let (op, port) = rhea_listener(json!({})).await;
    let url = format!("amqp://127.0.0.1:{port}/{address}");
    let n = messages.len();
    let outcomes = send_all(c, &url, messages).await;
    assert!(
        outcomes.iter().all(|o| *o == Outcome::Accepted),
        "{outcomes:?}"
    );
    let got = receive(c, &url, n, window).await;
    (op, got)
}

#[actix_rt::test]
async fn rhea_listener_type_fidelity() {
    let c = container();
    let corpus = corpus_for_rhea();
    let (_op, got) = through_rhea_listener(
        &c,
        "types",
        corpus.iter().map(|(_, m)| m.clone()).collect(),
        10,
    )
    .await;
    assert_same(&corpus, &got);
}

#[actix_rt::test]
async fn rhea_listener_application_properties() {
    let c = container();
    let sent = typed_properties();
    let (_op, got) = through_rhea_listener(&c, "props", vec![sent.clone()], 1).await;
    assert_eq!(
        got[0].application_properties(),
        sent.application_properties()
    );
}

#[actix_rt::test]
async fn rhea_listener_header_properties() {
    let c = container();
    let sent = full_without_footer();
    let (_op, got) = through_rhea_listener(&c, "fields", vec![sent.clone()], 1).await;
    assert_fields(&sent, &got[0]);
}

#[actix_rt::test]
async fn rhea_listener_volume() {
    const N: i64 = 10_000;
    let c = container();
    let (mut op, got) = through_rhea_listener(&c, "volume", numbered(N as usize), 500).await;
    assert_eq!(bodies(&got), (0..N).collect::<Vec<_>>());
    // rhea saw every one of its sends accepted, in order.
    let mut accepted = Vec::new();
    while accepted.len() < N as usize {
        let e = op.next().await;
        if e["event"] == "outcome" {
            assert_eq!(e["outcome"], json!("accepted"), "{e}");
            accepted.push(e["index"].as_i64().expect("an index"));
        }
    }
    assert_eq!(accepted, (0..N).collect::<Vec<_>>());
}

#[actix_rt::test]
async fn rhea_listener_large_message() {
    let c = container();
    let sent = five_mib();
    let (_op, got) = through_rhea_listener(&c, "large", vec![sent.clone()], 1).await;
    assert_eq!(got[0].body(), sent.body());
}

#[actix_rt::test]
async fn rhea_listener_settlement() {
    let c = container();
    let (mut op, port) = rhea_listener(json!({
        "dispositions": {"settle": ["accept", "reject", "release"]}
    }))
    .await;
    let base = format!("amqp://127.0.0.1:{port}");
    // Our sender sees rhea's outcomes by index.
    let outcomes = send_all(&c, &format!("{base}/settle"), numbered(3)).await;
    assert_eq!(outcomes[0], Outcome::Accepted);
    match &outcomes[1] {
        Outcome::Rejected(Some(e)) => assert_eq!(e.condition.to_string(), "amqp:not-allowed"),
        other => panic!("expected a rejection with an error, got {other:?}"),
    }
    assert_eq!(outcomes[2], Outcome::Released);
    let presettled = SenderOptions::new().delivery_mode(DeliveryMode::AtMostOnce);
    let outcomes = send_all_with(&c, &format!("{base}/presettled"), numbered(1), presettled).await;
    assert_eq!(outcomes, vec![Outcome::Settled]);
    let received = loop {
        let e = op.next().await;
        if e["event"] == "received" && e["address"] == "presettled" {
            break e;
        }
    };
    assert_eq!(received["presettled"], json!(true), "{received}");
    // rhea's sends (the three messages it stored) see our receiver's outcomes.
    let mut receiver = c
        .open_receiver_with(
            &format!("{base}/settle"),
            plain_allowed(),
            ReceiverOptions::default(),
        )
        .await
        .expect("the receiver opens")
        .limit(3);
    for i in 0..3 {
        let r = tokio::time::timeout(TIMEOUT, receiver.next())
            .await
            .expect("in time")
            .expect("a message");
        match i {
            0 => r.accept(),
            1 => r.reject(None),
            _ => r.release(),
        }
        .expect("settles");
    }
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let e = op.next().await;
        if e["event"] == "outcome" {
            seen.push((e["index"].clone(), e["outcome"].clone()));
        }
    }
    assert_eq!(
        seen,
        vec![
            (json!(0), json!("accepted")),
            (json!(1), json!("rejected")),
            (json!(2), json!("released")),
        ]
    );
}

#[actix_rt::test]
async fn rhea_listener_credit_window_zero() {
    let c = container();
    let (mut op, port) = rhea_listener(json!({"credit_window": 0})).await;
    let url = format!("amqp://127.0.0.1:{port}/credit");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let sender_container = c.clone();
    actix_rt::spawn(async move {
        let _ = tx.send(send_all(&sender_container, &url, numbered(2)).await);
    });
    op.until("receiver_open").await;
    for i in 0..2 {
        op.instruct(json!({"flow": 1})).await;
        let received = op.until("received").await;
        assert_eq!(received.last().expect("received")["index"], json!(i));
    }
    let outcomes = tokio::time::timeout(TIMEOUT, rx)
        .await
        .expect("in time")
        .expect("the sends finish");
    assert_eq!(outcomes, vec![Outcome::Accepted, Outcome::Accepted]);
}

/// What our handler-based clients report to the test.
#[derive(Debug, PartialEq)]
enum Seen {
    Message(Box<Message>),
    Drained(u32),
    Address(String),
}

async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(TIMEOUT, rx.recv())
        .await
        .expect("in time")
        .expect("the handler reports")
}

/// Drains a sender: credit window 0, then 10 credits and a drain at once.
struct Drainer {
    address: String,
    tx: tokio::sync::mpsc::UnboundedSender<Seen>,
}

impl MessagingHandler for Drainer {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        let options = ReceiverOptions::new().credit_window(0);
        c.open_receiver(&self.address, options)
            .expect("the receiver opens");
    }
    fn on_receiver_open(&mut self, r: &mut Receiver<'_>) {
        r.add_credit(10).expect("adds credit");
        r.drain().expect("drains");
    }
    fn on_message(&mut self, _d: &mut Delivery<'_>, message: Message) {
        let _ = self.tx.send(Seen::Message(Box::new(message)));
    }
    fn on_receiver_drain_finish(&mut self, r: &mut Receiver<'_>) {
        let _ = self.tx.send(Seen::Drained(r.credit()));
    }
}

#[actix_rt::test]
async fn rhea_listener_drain() {
    let c = container();
    let (_op, port) = rhea_listener(json!({})).await;
    let base = format!("amqp://127.0.0.1:{port}");
    send_all(&c, &format!("{base}/drain"), numbered(2)).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _conn = c
        .connect(
            &base,
            ConnectionOptions::default(),
            Drainer {
                address: "drain".into(),
                tx,
            },
        )
        .expect("connects");
    let mut seen = Vec::new();
    while !matches!(seen.last(), Some(Seen::Drained(_))) {
        seen.push(next(&mut rx).await);
    }
    let bodies: Vec<Option<i64>> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Message(m) => Some(m.body_value().and_then(nucleon::Value::as_i64)),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, vec![Some(0), Some(1)]);
    assert_eq!(seen.last(), Some(&Seen::Drained(0)));
}

/// Sends one request to `requests` with a dynamic receiver's address as its reply-to.
struct Requester {
    tx: tokio::sync::mpsc::UnboundedSender<Seen>,
    request: Option<Message>,
}

impl MessagingHandler for Requester {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        let options = ReceiverOptions::new().dynamic(true);
        c.open_receiver("", options).expect("the receiver opens");
    }
    fn on_receiver_open(&mut self, r: &mut Receiver<'_>) {
        let Some(address) = r.address() else { return };
        let _ = self.tx.send(Seen::Address(address.clone()));
        self.request = Some(
            Message::builder()
                .message_id(MessageId::String("request-1".into()))
                .reply_to(address)
                .body("ping")
                .build(),
        );
        r.connection()
            .open_sender("requests", SenderOptions::default())
            .expect("the sender opens");
    }
    fn on_sendable(&mut self, s: &mut Sender<'_>) {
        if let Some(request) = self.request.take() {
            s.send(&request).expect("sends the request");
        }
    }
    fn on_message(&mut self, _d: &mut Delivery<'_>, message: Message) {
        let _ = self.tx.send(Seen::Message(Box::new(message)));
    }
}

#[actix_rt::test]
async fn rhea_listener_request_reply() {
    let c = container();
    let (_op, port) = rhea_listener(json!({})).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _conn = c
        .connect(
            &format!("amqp://127.0.0.1:{port}"),
            ConnectionOptions::default(),
            Requester { tx, request: None },
        )
        .expect("connects");
    let Seen::Address(address) = next(&mut rx).await else {
        panic!("the dynamic address comes first")
    };
    assert!(address.starts_with("dynamic-"), "{address}");
    let Seen::Message(reply) = next(&mut rx).await else {
        panic!("a reply")
    };
    assert_eq!(reply.body_value(), Some(&nucleon::Value::from("ping")));
    assert_eq!(
        reply.properties().and_then(|p| p.correlation_id.clone()),
        Some(MessageId::String("request-1".into()))
    );
}

#[actix_rt::test]
async fn rhea_listener_sasl() {
    let c = container();
    let (_op, port) = rhea_listener(json!({"sasl": {"user": "alice", "password": "secret"}})).await;
    let good = format!("amqp://alice:secret@127.0.0.1:{port}/sasl");
    assert_eq!(
        send_all(&c, &good, numbered(1)).await,
        vec![Outcome::Accepted]
    );
    let bad = format!("amqp://alice:wrong@127.0.0.1:{port}/sasl");
    let err = c
        .open_sender_with(&bad, plain_allowed(), SenderOptions::default())
        .await
        .expect_err("a wrong password is refused");
    assert_eq!(
        err.condition(),
        Some(&ErrorCondition::UnauthorizedAccess),
        "{err}"
    );
    let (_anonymous_op, anonymous_port) = rhea_listener(json!({"sasl": "anonymous"})).await;
    let anonymous = format!("amqp://127.0.0.1:{anonymous_port}/sasl");
    assert_eq!(
        send_all(&c, &anonymous, numbered(1)).await,
        vec![Outcome::Accepted]
    );
}

#[actix_rt::test]
async fn rhea_listener_over_tls_with_plain() {
    let c = container();
    let ca = TestCa::new("rhea-listener-tls");
    let server = ca.server(ServerCert::Loopback);
    let (_op, port) = rhea_listener(json!({"sasl": {"user": "alice", "password": "secret"},
        "tls_cert": server.cert, "tls_key": server.key}))
    .await;
    // Our rustls client against Node's TLS server; PLAIN, as it travels encrypted.
    let tls = ca.client_tls();
    let options = ConnectionOptions::new().tls(tls);
    let url = format!("amqps://alice:secret@localhost:{port}/tls");
    let sender = client::within(
        TIMEOUT,
        "our sender opens over TLS",
        c.open_sender_with(&url, options, SenderOptions::default()),
    )
    .await
    .expect("TLS and PLAIN are accepted");
    assert_eq!(
        client::within(TIMEOUT, "an outcome", sender.send(Message::with_body(1i64)))
            .await
            .expect("an outcome"),
        Outcome::Accepted
    );
    sender.close().expect("closes");
    // Without the private CA, the system's roots do not trust it: refused before any AMQP byte.
    let err = client::within(
        TIMEOUT,
        "our sender is refused",
        c.open_sender(&url, SenderOptions::default()),
    )
    .await
    .expect_err("an untrusted certificate is refused");
    assert!(err.to_string().contains("trusted CA"), "{err}");
}

#[actix_rt::test]
async fn rhea_listener_over_websocket() {
    let c = container();
    let (_op, port) = rhea_listener(json!({"websocket": true})).await;
    // Our WebSocket client (subprotocol `amqp`) against rhea's binding on a `ws` server.
    let url = format!("ws://127.0.0.1:{port}/");
    let options = SenderOptions::new().target(nucleon::protocol::frame::Target {
        address: Some("ws".into()),
        ..Default::default()
    });
    let sender = client::within(
        TIMEOUT,
        "our sender opens over WebSocket",
        c.open_sender(&url, options),
    )
    .await
    .expect("a WebSocket connection");
    assert_eq!(
        client::within(TIMEOUT, "an outcome", sender.send(Message::with_body(1i64)))
            .await
            .expect("an outcome"),
        Outcome::Accepted
    );
    sender.close().expect("closes");
}

#[actix_rt::test]
async fn rhea_listener_idle_timeout() {
    let c = container();
    let (_op, port) = rhea_listener(json!({"idle_time_out": 1000})).await;
    let options = ConnectionOptions::new().idle_timeout(Duration::from_secs(1));
    let sender = c
        .open_sender_with(
            &format!("amqp://127.0.0.1:{port}/idle"),
            options,
            SenderOptions::default(),
        )
        .await
        .expect("the sender opens");
    // Both sides ask for heartbeats within 1 s; the connection stays quiet for 3 s (no application
    // traffic), then still carries a message.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let outcome = tokio::time::timeout(TIMEOUT, sender.send(Message::with_body("after-quiet")))
        .await
        .expect("in time")
        .expect("the connection is still up");
    assert_eq!(outcome, Outcome::Accepted);
}
