//! The `web_gateway` binary over real HTTP on loopback: each test starts it with `--listen 127.0.0.1:0
//! --insecure-no-auth` (with its in-process broker unless said otherwise), waits for its ready line and
//! talks plain HTTP/1.1.

mod support;

use std::time::{Duration, Instant};

use nucleon::protocol::frame::{Error as AmqpError, ErrorCondition};
use nucleon::{Container, Delivery, ListenHandler, Message, MessagingHandler};
use serde_json::{json, Value as Json};
use support::{
    free_port, http_exchange, http_request, run_example, start_open_gateway, EventStream,
    HttpReply, Running, READY_TIMEOUT,
};

const WAIT: Duration = Duration::from_secs(20);

/// A running gateway, killed on drop.
struct Gateway {
    _process: Running,
    /// `127.0.0.1:PORT` of its HTTP listener.
    http: String,
}

impl Gateway {
    fn start(extra: &[&str]) -> Gateway {
        let (process, http) = start_open_gateway(extra);
        Gateway {
            _process: process,
            http,
        }
    }

    fn post(&self, address: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpReply {
        http_request(
            &self.http,
            "POST",
            &format!("/queues/{address}/messages"),
            headers,
            body,
        )
    }

    fn post_json(&self, address: &str, body: &Json) -> HttpReply {
        self.post(
            address,
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    /// `GET /queues/{address}/messages?{query}`: asserts 200 and returns the messages.
    fn get(&self, address: &str, query: &str) -> Vec<Json> {
        let reply = self.get_raw(address, query);
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        match reply.json()["messages"].take() {
            Json::Array(messages) => messages,
            other => panic!("a messages array, got {other}"),
        }
    }

    fn get_raw(&self, address: &str, query: &str) -> HttpReply {
        http_request(
            &self.http,
            "GET",
            &format!("/queues/{address}/messages?{query}"),
            &[],
            b"",
        )
    }
}

fn assert_created(reply: &HttpReply) {
    assert_eq!(
        reply.status,
        201,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert_eq!(reply.json()["outcome"], json!("accepted"));
}

fn assert_error(reply: &HttpReply, status: u16) -> Json {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert!(body["error"].is_string(), "an error message: {body}");
    body
}

#[test]
fn json_posted_comes_back_with_its_values_and_types() {
    let gw = Gateway::start(&[]);
    let value = json!({
        "nested": {"list": [1, "two", [3.5]], "empty": {}},
        "float": 1.25,
        "yes": true,
        "nothing": null,
        "int": -42,
        "big": u64::MAX,
    });
    assert_created(&gw.post_json("orders", &value));
    let messages = gw.get("orders", "");
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["body"], value);
    assert_eq!(messages[0]["content_type"], json!("application/json"));
    // Accepted by the GET: the queue is empty now.
    assert!(gw.get("orders", "timeout_ms=100").is_empty());
}

#[test]
fn text_headers_and_application_properties_round_trip() {
    let gw = Gateway::start(&[]);
    let reply = gw.post(
        "notes",
        &[
            ("Content-Type", "text/plain; charset=utf-8"),
            ("amqp-app-color", "red"),
            ("amqp-app-Size", "XL"),
            ("amqp-subject", "greeting"),
            ("amqp-message-id", "m-1"),
            ("amqp-correlation-id", "c-1"),
            ("amqp-reply-to", "answers"),
            ("amqp-durable", "true"),
            ("amqp-priority", "7"),
            ("amqp-ttl", "60000"),
        ],
        "héllo".as_bytes(),
    );
    assert_created(&reply);
    let messages = gw.get("notes", "");
    assert_eq!(messages.len(), 1, "{messages:?}");
    let m = &messages[0];
    assert_eq!(m["body"], json!("héllo"));
    assert_eq!(m["content_type"], json!("text/plain; charset=utf-8"));
    // HTTP header names are case-insensitive: they arrive lowercase.
    assert_eq!(
        m["application_properties"],
        json!({"color": "red", "size": "XL"})
    );
    assert_eq!(
        m["properties"],
        json!({"subject": "greeting", "message_id": "m-1", "correlation_id": "c-1", "reply_to": "answers"})
    );
    assert_eq!(m["header"]["durable"], json!(true));
    assert_eq!(m["header"]["priority"], json!(7));
    assert_eq!(m["header"]["ttl"], json!(60000));
}

#[test]
fn other_content_types_travel_as_data() {
    let gw = Gateway::start(&[]);
    let reply = gw.post(
        "blobs",
        &[("Content-Type", "application/octet-stream")],
        b"\x00\x01\xfe\xff",
    );
    assert_created(&reply);
    let messages = gw.get("blobs", "");
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["body"], json!("AAH+/w=="));
    assert_eq!(messages[0]["encoding"], json!("base64"));
    assert_eq!(
        messages[0]["content_type"],
        json!("application/octet-stream")
    );
}

#[test]
fn get_takes_at_most_max_and_leaves_the_rest_queued() {
    let gw = Gateway::start(&[]);
    for i in 0..5 {
        assert_created(&gw.post_json("work", &json!(i)));
    }
    let first: Vec<Json> = gw
        .get("work", "max=2&timeout_ms=5000")
        .into_iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(first, vec![json!(0), json!(1)]);
    // The rest is still queued, in order: the first receiver was never given credit beyond `max`.
    let deadline = Instant::now() + WAIT;
    let mut rest = Vec::new();
    while rest.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "only {rest:?} of the rest within {WAIT:?}"
        );
        rest.extend(
            gw.get("work", "max=10&timeout_ms=500")
                .into_iter()
                .map(|m| m["body"].as_i64().expect("an integer body")),
        );
    }
    assert_eq!(rest, vec![2, 3, 4]);
}

#[test]
fn get_on_an_empty_queue_answers_an_empty_list_after_the_timeout() {
    let gw = Gateway::start(&[]);
    let reply = gw.get_raw("nothing-here", "max=3&timeout_ms=200");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.json(), json!({"messages": []}));
}

#[test]
fn the_event_stream_delivers_messages_in_order_as_they_arrive() {
    let gw = Gateway::start(&[]);
    // The head comes once the receiver is attached.
    let mut events = EventStream::open(&gw.http, "/queues/live/stream");
    assert_eq!(events.status, 200);
    let content_type = events
        .headers
        .iter()
        .find(|(n, _)| n == "content-type")
        .map(|(_, v)| v.clone());
    assert_eq!(content_type.as_deref(), Some("text/event-stream"));
    for i in 0..3 {
        assert_created(&gw.post_json("live", &json!({"n": i})));
    }
    for i in 0..3 {
        let data = events.next_data(WAIT);
        let m: Json = serde_json::from_str(&data).expect("each event is JSON");
        assert_eq!(m["body"], json!({"n": i}), "event {i}");
    }
}

#[test]
fn bad_requests_get_400_with_a_json_error() {
    let gw = Gateway::start(&[]);
    let invalid_json = gw.post("q", &[("Content-Type", "application/json")], b"{\"a\": ");
    let body = assert_error(&invalid_json, 400);
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("JSON")),
        "{body}"
    );
    assert_error(
        &gw.post("q", &[("Content-Type", "text/plain")], b"\xff\xfe"),
        400,
    );
    assert_error(
        &gw.post(
            "q",
            &[("Content-Type", "text/plain"), ("amqp-priority", "300")],
            b"x",
        ),
        400,
    );
    assert_error(
        &gw.post(
            "q",
            &[("Content-Type", "text/plain"), ("amqp-durable", "maybe")],
            b"x",
        ),
        400,
    );
    for query in ["max=0", "max=1001", "max=lots", "timeout_ms=60001"] {
        assert_error(&gw.get_raw("q", query), 400);
    }
    assert_error(&gw.get_raw("a%20b", ""), 400);
    let not_found = http_request(&gw.http, "GET", "/nowhere", &[], b"");
    assert_eq!(not_found.status, 404);
    // None of the refused posts reached the queue.
    assert!(gw.get("q", "timeout_ms=100").is_empty());
}

#[test]
fn a_body_over_one_mebibyte_gets_413() {
    let gw = Gateway::start(&[]);
    // Refused on its declared length, before any of it is read: the body is not even sent, so the
    // gateway's answer cannot race a half-written upload.
    let head = format!(
        "POST /queues/q/messages HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\
         Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        gw.http,
        (1 << 20) + 1
    );
    assert_error(&http_exchange(&gw.http, &head, b""), 413);
}

#[test]
fn an_unreachable_broker_gets_503() {
    let port = free_port();
    let gw = Gateway::start(&["--broker", &format!("amqp://127.0.0.1:{port}")]);
    assert_error(&gw.post_json("q", &json!(1)), 503);
    assert_error(&gw.get_raw("q", ""), 503);
}

/// A peer that rejects every message it is sent.
struct Refuser;

impl MessagingHandler for Refuser {
    fn on_message(&mut self, d: &mut Delivery<'_>, _m: Message) {
        d.reject(Some(AmqpError::new(
            ErrorCondition::NotAllowed,
            "refused by the test",
        )));
    }
}

struct Refusers;

impl ListenHandler for Refusers {
    type Handler = Refuser;
    fn on_accept(&self, _: std::net::SocketAddr) -> Refuser {
        Refuser
    }
}

#[test]
fn a_rejected_message_gets_502_with_its_condition() {
    // The peer's container runs on its own thread (a `Container` stays on the thread that built it).
    let (tx, rx) = std::sync::mpsc::channel();
    let peer = std::thread::spawn(move || {
        let container = Container::builder().threads(1).auto_stop(false).build();
        let handle = container.handle();
        let port = handle
            .listen("127.0.0.1:0", Refusers)
            .expect("the refusing peer listens")
            .port();
        tx.send((handle, port))
            .expect("the test waits for the port");
        container.run()
    });
    let (handle, port) = rx.recv_timeout(WAIT).expect("the peer listens in time");
    let gw = Gateway::start(&["--broker", &format!("amqp://127.0.0.1:{port}")]);
    let body = assert_error(&gw.post_json("q", &json!({"a": 1})), 502);
    assert_eq!(body["condition"], json!("amqp:not-allowed"));
    assert_eq!(body["outcome"], json!("rejected"));
    drop(gw);
    handle.stop();
    peer.join()
        .expect("the peer's thread ends")
        .expect("the peer's container ran");
}

#[test]
fn bad_arguments_exit_2() {
    let bin = env!("CARGO_BIN_EXE_web_gateway");
    for args in [
        &["--bogus"][..],
        &["--listen", "nonsense"],
        &["--listen", "127.0.0.1:99999"],
        &["--broker", "http://127.0.0.1:1"],
        &["--broker", "amqp://127.0.0.1:1/queue"],
    ] {
        let out = run_example(bin, args, WAIT);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: a message on stderr");
    }
}

#[test]
fn a_cached_sender_whose_broker_restarted_is_replaced_and_the_post_succeeds() {
    let first = support::Broker::start();
    let port = first.port;
    let gw = Gateway::start(&["--broker", &format!("amqp://127.0.0.1:{port}")]);
    // This caches a sender on the first broker's connection.
    assert_created(&gw.post_json("again", &json!("before")));
    drop(first);
    let mut second = Running::spawn(
        env!("CARGO_BIN_EXE_broker"),
        &["-a", &format!("127.0.0.1:{port}")],
    );
    second.wait_for_line("broker listening on ", READY_TIMEOUT);
    // The cached sender's connection is gone: the gateway drops it and sends once more on a fresh one.
    assert_created(&gw.post_json("again", &json!("after")));
    let bodies: Vec<Json> = gw
        .get("again", "max=10&timeout_ms=500")
        .into_iter()
        .map(|m| m["body"].clone())
        .collect();
    // The first broker's message went with it.
    assert_eq!(bodies, vec![json!("after")]);
}
