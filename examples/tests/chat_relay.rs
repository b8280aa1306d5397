//! The `chat_relay` binary without a browser: two relays on free ports, B using A's embedded broker, and
//! WebSocket clients (awc) on each. Messages and presence cross between the relays only through AMQP.

mod support;

use std::pin::Pin;
use std::time::Duration;

use awc::error::WsProtocolError;
use awc::ws::{Frame, Message};
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde_json::{json, Value};
use support::{free_port, Running, READY_TIMEOUT};

/// The longest any one expected frame may take.
const WAIT: Duration = Duration::from_secs(20);

/// A running relay and the addresses of its ready line.
struct Relay {
    /// The process, killed when the relay is dropped.
    process: Running,
    http: String,
    amqp: String,
}

impl Relay {
    /// Starts a relay on a free HTTP port with `args`, and waits for its ready line.
    fn start(args: &[&str]) -> Relay {
        let mut all = vec!["--listen", "127.0.0.1:0"];
        all.extend_from_slice(args);
        let mut process = Running::spawn(env!("CARGO_BIN_EXE_chat_relay"), &all);
        let ready = process.wait_for_line("chat_relay ready: ", READY_TIMEOUT);
        let (http, amqp) = ready
            .split_once(' ')
            .unwrap_or_else(|| panic!("two addresses in the ready line: {ready}"));
        assert!(http.starts_with("http://127.0.0.1:"), "{ready}");
        assert!(amqp.starts_with("amqp://127.0.0.1:"), "{ready}");
        Relay {
            http: http.to_owned(),
            amqp: amqp.to_owned(),
            process,
        }
    }

    /// A relay with its own broker on a free port.
    fn embedded() -> Relay {
        Relay::start(&["--amqp-listen", "127.0.0.1:0"])
    }

    /// A relay using the broker at `amqp`.
    fn using(amqp: &str) -> Relay {
        Relay::start(&["--broker", amqp])
    }
}

/// A browser stand-in: one WebSocket to a relay, and every frame it has read.
struct Client {
    rx: Pin<Box<dyn Stream<Item = Result<Frame, WsProtocolError>>>>,
    tx: Pin<Box<dyn Sink<Message, Error = WsProtocolError>>>,
    seen: Vec<Value>,
}

impl Client {
    async fn open(relay: &Relay) -> Client {
        let (_, framed) = awc::Client::new()
            .ws(format!("{}/ws", relay.http))
            .connect()
            .await
            .expect("the WebSocket opens");
        let (tx, rx) = framed.split();
        Client {
            rx: Box::pin(rx),
            tx: Box::pin(tx),
            seen: Vec::new(),
        }
    }

    async fn send(&mut self, frame: Value) {
        self.tx
            .send(Message::Text(frame.to_string().into()))
            .await
            .expect("sends");
    }

    /// Reads frames until one satisfies `wanted` and returns it; panics after `WAIT`.
    async fn until(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        let read = async {
            loop {
                match self.rx.next().await {
                    Some(Ok(Frame::Text(bytes))) => {
                        let v: Value = serde_json::from_slice(&bytes).expect("JSON frames");
                        self.seen.push(v.clone());
                        if wanted(&v) {
                            return v;
                        }
                    }
                    Some(Ok(_)) => {}
                    other => panic!("the WebSocket ended waiting for {what}: {other:?}"),
                }
            }
        };
        match actix_rt::time::timeout(WAIT, read).await {
            Ok(v) => v,
            Err(_) => panic!("no {what} within {WAIT:?}; frames so far: {:?}", self.seen),
        }
    }

    async fn join(&mut self, name: &str, room: &str) {
        self.send(json!({"type": "join", "name": name, "room": room}))
            .await;
        self.until("joined", |v| v["type"] == "joined").await;
    }

    async fn members(&mut self, names: &[&str]) {
        let want: Vec<Value> = names.iter().map(|n| json!(n)).collect();
        self.until(&format!("members {names:?}"), |v| {
            v["type"] == "members" && v["members"].as_array() == Some(&want)
        })
        .await;
    }

    async fn message(&mut self, name: &str, text: &str) -> Value {
        self.until(&format!("message {text:?} from {name}"), |v| {
            v["type"] == "message" && v["name"] == name && v["text"] == text
        })
        .await
    }

    async fn error(&mut self) -> String {
        let v = self.until("an error frame", |v| v["type"] == "error").await;
        v["error"].as_str().unwrap_or_default().to_owned()
    }
}

fn run(test: impl std::future::Future<Output = ()>) {
    actix_rt::System::new().block_on(test);
}

#[test]
fn two_relays_are_one_chat_through_the_broker() {
    let a = Relay::embedded();
    let b = Relay::using(&a.amqp);
    run(async {
        let mut ann = Client::open(&a).await;
        let mut bob = Client::open(&b).await;
        ann.until("connected", |v| {
            v["type"] == "status" && v["state"] == "connected"
        })
        .await;
        bob.until("connected", |v| {
            v["type"] == "status" && v["state"] == "connected"
        })
        .await;
        ann.join("ann", "r1").await;
        bob.join("bob", "r1").await;
        ann.members(&["ann", "bob"]).await;
        bob.members(&["ann", "bob"]).await;

        ann.send(json!({"type": "send", "text": "hello from A"}))
            .await;
        let got = bob.message("ann", "hello from A").await;
        assert!(got["ts"].as_u64().is_some_and(|ts| ts > 0), "{got}");
        // The sender's own copy comes back through the broker as well.
        ann.message("ann", "hello from A").await;
        bob.send(json!({"type": "send", "text": "<script>alert('b')</script>"}))
            .await;
        ann.message("bob", "<script>alert('b')</script>").await;

        // The name is taken in the room, whichever relay holds it, in any case.
        let mut other = Client::open(&b).await;
        other
            .send(json!({"type": "join", "name": "ANN", "room": "r1"}))
            .await;
        assert!(other.error().await.contains("taken"));

        // A message to r2 stays in r2.
        let mut cat = Client::open(&a).await;
        cat.join("cat", "r2").await;
        cat.members(&["cat"]).await;
        cat.send(json!({"type": "send", "text": "only in r2"}))
            .await;
        cat.message("cat", "only in r2").await;
        ann.send(json!({"type": "send", "text": "marker"})).await;
        ann.message("ann", "marker").await;
        bob.message("ann", "marker").await;
        for client in [&ann, &bob] {
            assert!(
                client.seen.iter().all(|v| v["text"] != "only in r2"),
                "r2 leaked into r1: {:?}",
                client.seen
            );
        }

        // Leaving shows on the other relay.
        drop(bob);
        ann.members(&["ann"]).await;
    });
    drop(b);
    drop(a);
}

#[test]
fn invalid_input_gets_an_error_frame_and_the_session_goes_on() {
    let a = Relay::embedded();
    run(async {
        let mut c = Client::open(&a).await;
        c.send(json!({"type": "send", "text": "too early"})).await;
        assert!(c.error().await.contains("join"));
        for (name, room) in [
            ("", "r1"),
            ("   ", "r1"),
            (&*"n".repeat(33), "r1"),
            ("bell\u{7}", "r1"),
            ("dan", "bad room"),
            ("dan", ""),
            ("dan", &*"r".repeat(33)),
            ("dan", "chat/r1"),
        ] {
            c.send(json!({"type": "join", "name": name, "room": room}))
                .await;
            let error = c.error().await;
            assert!(!error.is_empty(), "{name:?} in {room:?}");
        }
        c.tx.send(Message::Text("{not json".into()))
            .await
            .expect("sends");
        assert!(c.error().await.contains("malformed"));
        c.send(json!({"type": "shout", "text": "x"})).await;
        assert!(c.error().await.contains("malformed"));

        c.join(&"é".repeat(32), "r-1_OK").await;
        c.send(json!({"type": "send", "text": "m".repeat(2001)}))
            .await;
        assert!(c.error().await.contains("2000"));
        c.send(json!({"type": "send", "text": "a\u{0}b"})).await;
        assert!(c.error().await.contains("control"));
        c.send(json!({"type": "send", "text": " "})).await;
        assert!(c.error().await.contains("empty"));
        c.send(json!({"type": "join", "name": "again", "room": "r1"}))
            .await;
        assert!(c.error().await.contains("already"));

        let longest = "m".repeat(2000);
        c.send(json!({"type": "send", "text": longest})).await;
        c.message(&"é".repeat(32), &longest).await;
    });
}

#[test]
fn the_page_is_served_with_its_assets() {
    let a = Relay::embedded();
    run(async {
        let client = awc::Client::new();
        for (path, kind, needle) in [
            ("/", "text/html", "id=\"messages\""),
            ("/chat.css", "text/css", ".composer"),
            ("/chat.js", "text/javascript", "textContent"),
        ] {
            let mut response = client
                .get(format!("{}{path}", a.http))
                .send()
                .await
                .expect("answers");
            assert!(response.status().is_success(), "{path}");
            let headers = response.headers();
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            assert!(content_type.starts_with(kind), "{path}: {content_type}");
            assert!(headers.contains_key("content-security-policy"), "{path}");
            let body = response.body().await.expect("a body");
            let body = String::from_utf8_lossy(&body);
            assert!(body.contains(needle), "{path}");
        }
        let js = client
            .get(format!("{}/chat.js", a.http))
            .send()
            .await
            .expect("answers")
            .body()
            .await
            .expect("a body");
        assert!(
            !String::from_utf8_lossy(&js).contains("innerHTML"),
            "user text is never parsed as HTML"
        );
    });
}

#[test]
fn a_relay_reconnects_after_a_broker_restart() {
    let address = format!("127.0.0.1:{}", free_port());
    let mut broker = Running::spawn(env!("CARGO_BIN_EXE_broker"), &["-a", &address]);
    broker.wait_for_line("broker listening on ", READY_TIMEOUT);
    let a = Relay::using(&format!("amqp://{address}"));
    let b = Relay::using(&format!("amqp://{address}"));
    run(async {
        let mut ann = Client::open(&a).await;
        let mut bob = Client::open(&b).await;
        ann.join("ann", "r1").await;
        bob.join("bob", "r1").await;
        ann.members(&["ann", "bob"]).await;
        ann.send(json!({"type": "send", "text": "before"})).await;
        bob.message("ann", "before").await;

        broker.kill();
        ann.until("reconnecting", |v| {
            v["type"] == "status" && v["state"] == "reconnecting"
        })
        .await;
        let mut again = Running::spawn(env!("CARGO_BIN_EXE_broker"), &["-a", &address]);
        again.wait_for_line("broker listening on ", READY_TIMEOUT);
        ann.until("connected", |v| {
            v["type"] == "status" && v["state"] == "connected"
        })
        .await;
        bob.until("connected", |v| {
            v["type"] == "status" && v["state"] == "connected"
        })
        .await;
        // Once a room's receiver is attached again, its relay sends the member list again: after that,
        // a message sent to the room reaches it.
        ann.members(&["ann", "bob"]).await;
        bob.members(&["ann", "bob"]).await;
        bob.send(json!({"type": "send", "text": "after"})).await;
        ann.message("bob", "after").await;
    });
}

#[test]
fn a_browser_that_reads_nothing_is_disconnected_and_the_room_goes_on() {
    let a = Relay::embedded();
    run(async {
        let mut fast = Client::open(&a).await;
        let mut slow = Client::open(&a).await;
        fast.join("fast", "r1").await;
        slow.join("slow", "r1").await;
        fast.members(&["fast", "slow"]).await;
        // From here on `slow` reads nothing: its socket buffers, then its session's bounded buffer, fill
        // up. `fast` sends one message at a time and reads each back, until the relay drops `slow`.
        let filler = "x".repeat(1994);
        let mut sent = 0u32;
        loop {
            assert!(
                sent < 20_000,
                "slow was not disconnected after {sent} messages"
            );
            let text = format!("{sent:05} {filler}");
            fast.send(json!({"type": "send", "text": text})).await;
            let got = fast
                .until("my message back, or slow gone", |v| {
                    (v["type"] == "message" && v["text"] == text.as_str())
                        || (v["type"] == "members" && v["members"] == json!(["fast"]))
                })
                .await;
            fast.seen.clear();
            if got["type"] == "members" {
                break;
            }
            sent += 1;
        }
        eprintln!("slow was disconnected after {sent} messages");
        fast.send(json!({"type": "send", "text": "still here"}))
            .await;
        fast.message("fast", "still here").await;
        drop(slow);
    });
}

#[test]
fn the_members_of_a_relay_that_went_silent_expire() {
    let a = Relay::start(&["--amqp-listen", "127.0.0.1:0", "--heartbeat-ms", "100"]);
    let mut b = Relay::start(&["--broker", &a.amqp, "--heartbeat-ms", "100"]);
    run(async {
        let mut ann = Client::open(&a).await;
        let mut bob = Client::open(&b).await;
        ann.join("ann", "r1").await;
        bob.join("bob", "r1").await;
        ann.members(&["ann", "bob"]).await;
        // Killed: B sends no leave, only its heartbeats stop.
        b.process.kill();
        ann.members(&["ann"]).await;
    });
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    for args in [
        &["--listen", "nowhere"][..],
        &["--amqp-listen", "127.0.0.1:99999"],
        &["--broker", "http://x"],
        &[
            "--broker",
            "amqp://127.0.0.1:1",
            "--amqp-listen",
            "127.0.0.1:0",
        ],
        &["--frobnicate"],
        &["--heartbeat-ms", "0"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_chat_relay"))
            .args(args)
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("error"), "{args:?}: {err}");
    }
}
