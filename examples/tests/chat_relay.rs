//! The `chat_relay` binary without a browser: two relays on free ports, B using A's embedded broker, and
//! WebSocket clients (awc) on each. Messages and presence cross between the relays only through AMQP.
//! Also what issue #16 found open: pages of other origins, an anonymous embedded broker, floods, too many
//! sessions, invisible and look-alike names, and relays that vanished without a leave.

mod support;

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, Instant};

use awc::error::{WsClientError, WsProtocolError};
use awc::http::StatusCode;
use awc::ws::{CloseCode, CloseReason, Frame, Message};
use futures::{Sink, SinkExt, Stream, StreamExt};
use nucleon::{ConnectionOptions, ContainerBuilder, ContainerHandle, SenderOptions};
use serde_json::{json, Value};
use support::{free_port, Running, READY_TIMEOUT};

/// The longest any one expected frame may take.
const WAIT: Duration = Duration::from_secs(20);

/// A scratch folder, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let dir = std::env::temp_dir().join(format!("chat-relay-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir(&dir).expect("a scratch folder");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running relay and the addresses of its ready line.
struct Relay {
    /// The process, killed when the relay is dropped.
    process: Running,
    http: String,
    amqp: String,
    /// The embedded broker's password file (which other relays use), if it has one.
    password_file: Option<PathBuf>,
    _scratch: Option<Scratch>,
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
            password_file: None,
            _scratch: None,
        }
    }

    /// A relay with its own broker on a free port, whose password it writes to a fresh file, with `args`.
    fn embedded_with(args: &[&str]) -> Relay {
        let scratch = Scratch::new();
        let file = scratch.0.join("broker-password");
        let file_arg = file.to_string_lossy().into_owned();
        let mut all = vec![
            "--amqp-listen",
            "127.0.0.1:0",
            "--broker-password-file",
            &file_arg,
        ];
        all.extend_from_slice(args);
        let mut relay = Relay::start(&all);
        relay.password_file = Some(file);
        relay._scratch = Some(scratch);
        relay
    }

    /// A relay with its own broker on a free port.
    fn embedded() -> Relay {
        Relay::embedded_with(&[])
    }

    /// A relay using `other`'s embedded broker, with its password file, and `args`.
    fn joining_with(other: &Relay, args: &[&str]) -> Relay {
        let file = other.password_file().to_string_lossy().into_owned();
        let mut all = vec!["--broker", &other.amqp, "--broker-password-file", &file];
        all.extend_from_slice(args);
        Relay::start(&all)
    }

    /// A relay using `other`'s embedded broker.
    fn joining(other: &Relay) -> Relay {
        Relay::joining_with(other, &[])
    }

    /// A relay using the (open) broker at `amqp`.
    fn using(amqp: &str) -> Relay {
        Relay::start(&["--broker", amqp])
    }

    fn password_file(&self) -> &Path {
        self.password_file
            .as_deref()
            .expect("a relay with an embedded broker")
    }

    /// The embedded broker's password, as another relay reads it.
    fn password(&self) -> String {
        std::fs::read_to_string(self.password_file())
            .expect("the password file was written")
            .trim()
            .to_owned()
    }

    /// This relay's HTTP origin, as its own page has it.
    fn origin(&self) -> &str {
        &self.http
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
        Client::try_open(relay, None)
            .await
            .expect("the WebSocket opens")
    }

    /// Opens a WebSocket as a page of `origin` would (`None`: no `Origin`, as a non-browser client).
    async fn try_open(relay: &Relay, origin: Option<&str>) -> Result<Client, WsClientError> {
        let mut request = awc::Client::new().ws(format!("{}/ws", relay.http));
        if let Some(origin) = origin {
            request = request.origin(origin);
        }
        let (_, framed) = request.connect().await?;
        let (tx, rx) = framed.split();
        Ok(Client {
            rx: Box::pin(rx),
            tx: Box::pin(tx),
            seen: Vec::new(),
        })
    }

    /// Reads frames until the relay closes the WebSocket, within `within`; returns the close reason.
    async fn closed(&mut self, within: Duration) -> Option<CloseReason> {
        let read = async {
            loop {
                match self.rx.next().await {
                    Some(Ok(Frame::Text(bytes))) => {
                        let v: Value = serde_json::from_slice(&bytes).expect("JSON frames");
                        self.seen.push(v);
                    }
                    Some(Ok(Frame::Close(reason))) => return reason,
                    Some(Ok(_)) => {}
                    other => panic!("the WebSocket ended without a close frame: {other:?}"),
                }
            }
        };
        match actix_rt::time::timeout(within, read).await {
            Ok(reason) => reason,
            Err(_) => panic!(
                "not closed within {within:?}; frames so far: {:?}",
                self.seen
            ),
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

    /// [`Client::until`] with a shorter bound than [`WAIT`].
    async fn within(
        &mut self,
        bound: Duration,
        what: &str,
        wanted: impl Fn(&Value) -> bool,
    ) -> Value {
        match actix_rt::time::timeout(bound, self.until(what, wanted)).await {
            Ok(v) => v,
            Err(_) => panic!("no {what} within {bound:?}; frames so far: {:?}", self.seen),
        }
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
    let b = Relay::joining(&a);
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
    // Some twenty frames at once: over the default burst, whose test is another.
    let a = Relay::embedded_with(&["--burst", "100"]);
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
    // Thousands of messages one after the other: far over the default rate limit, which is not tested here.
    let a = Relay::embedded_with(&["--rate", "1000000", "--burst", "1000000"]);
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
    let a = Relay::embedded_with(&["--heartbeat-ms", "100"]);
    let mut b = Relay::joining_with(&a, &["--heartbeat-ms", "100"]);
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
        &["--allow-origin", "evil.example"],
        &["--allow-origin", "https://evil.example/path"],
        &["--max-sessions", "0"],
        &["--rate", "0"],
        &["--broker-user", "u"],
        &["--broker-password-file", "/nonexistent/folder/file"],
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

/// True if `seen` holds a frame that mentions `name` (as a member, a message's author, or a system line).
fn mentions(seen: &[Value], name: &str) -> bool {
    seen.iter().any(|v| {
        v["name"] == name
            || v["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|n| n == name))
            || v["text"].as_str().is_some_and(|t| t.contains(name))
    })
}

/// Sends a marker from `c` and waits for it to come back: every event sent to the room before it has been
/// delivered by then (one topic, one order).
async fn round_trip(c: &mut Client, marker: &str) {
    c.send(json!({"type": "send", "text": marker})).await;
    let name = c
        .seen
        .iter()
        .find(|v| v["type"] == "joined")
        .and_then(|v| v["name"].as_str())
        .expect("joined")
        .to_owned();
    c.message(&name, marker).await;
}

#[test]
fn a_page_of_another_origin_gets_403_and_joins_nothing() {
    let a = Relay::embedded();
    let open = Relay::embedded_with(&["--allow-origin", "http://evil.example"]);
    run(async {
        // Its own page's origin, and no Origin at all (not a browser), are let in.
        let mut ann = Client::try_open(&a, Some(a.origin()))
            .await
            .expect("the relay's own origin may open the WebSocket");
        ann.join("ann", "r1").await;
        let mut tool = Client::try_open(&a, None)
            .await
            .expect("a client without Origin may open the WebSocket");
        tool.join("tool", "r1").await;
        ann.members(&["ann", "tool"]).await;

        for origin in [
            "http://evil.example",
            // Same host, another port: another origin.
            &format!("http://127.0.0.1:{}", free_port()),
            // Same host and port, another scheme.
            &a.origin().replace("http://", "https://"),
            "null",
        ] {
            match Client::try_open(&a, Some(origin)).await {
                Err(WsClientError::InvalidResponseStatus(status)) => {
                    assert_eq!(status, StatusCode::FORBIDDEN, "{origin}");
                }
                Err(e) => panic!("{origin}: expected 403, got {e}"),
                Ok(mut c) => {
                    c.send(json!({"type": "join", "name": "mallory", "room": "r1"}))
                        .await;
                    panic!("{origin}: the WebSocket opened");
                }
            }
        }
        round_trip(&mut ann, "after the forged origins").await;
        assert!(!mentions(&ann.seen, "mallory"), "{:?}", ann.seen);
        let last = ann.seen.iter().rev().find(|v| v["type"] == "members");
        assert_eq!(last.map(|v| &v["members"]), Some(&json!(["ann", "tool"])));

        // Listed with --allow-origin, that origin may.
        let mut eve = Client::try_open(&open, Some("http://evil.example"))
            .await
            .expect("an --allow-origin origin may open the WebSocket");
        eve.join("eve", "r2").await;
        assert!(Client::try_open(&open, Some("http://other.example"))
            .await
            .is_err());
    });
}

#[test]
fn a_flooding_session_gets_errors_then_is_closed_and_the_room_goes_on() {
    let a = Relay::embedded();
    run(async {
        let mut ann = Client::open(&a).await;
        let mut flood = Client::open(&a).await;
        ann.join("ann", "r1").await;
        flood.join("flood", "r1").await;
        ann.members(&["ann", "flood"]).await;
        // Far more than the burst (10) and the refusals (20) allow, faster than the rate (5 a second).
        for n in 0..200 {
            if flood
                .tx
                .send(Message::Text(
                    json!({"type": "send", "text": format!("spam {n}")})
                        .to_string()
                        .into(),
                ))
                .await
                .is_err()
            {
                break;
            }
        }
        let reason = flood.closed(WAIT).await.expect("a close reason");
        assert_eq!(reason.code, CloseCode::Policy, "{reason:?}");
        let refused = flood
            .seen
            .iter()
            .filter(|v| {
                v["type"] == "error" && v["error"].as_str().is_some_and(|e| e.contains("too many"))
            })
            .count();
        assert!(refused >= 10, "{refused} refusals: {:?}", flood.seen);
        let passed = flood
            .seen
            .iter()
            .filter(|v| v["type"] == "message" && v["name"] == "flood")
            .count();
        assert!(passed <= 12, "{passed} of the flood's messages went out");

        // The room goes on without it.
        ann.members(&["ann"]).await;
        round_trip(&mut ann, "still here").await;
        let spam = ann
            .seen
            .iter()
            .filter(|v| v["type"] == "message" && v["name"] == "flood")
            .count();
        assert!(
            spam <= 12,
            "{spam} of the flood's messages reached the room"
        );
    });
}

#[test]
fn sessions_over_max_sessions_get_503() {
    let a = Relay::embedded_with(&["--max-sessions", "2"]);
    run(async {
        let mut one = Client::open(&a).await;
        let two = Client::open(&a).await;
        match Client::try_open(&a, None).await {
            Err(WsClientError::InvalidResponseStatus(status)) => {
                assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            }
            Err(e) => panic!("expected 503, got {e}"),
            Ok(_) => panic!("a third session opened over --max-sessions 2"),
        }
        // A session that ends gives its place back.
        drop(two);
        let deadline = Instant::now() + WAIT;
        let mut three = loop {
            match Client::try_open(&a, None).await {
                Ok(c) => break c,
                Err(WsClientError::InvalidResponseStatus(StatusCode::SERVICE_UNAVAILABLE))
                    if Instant::now() < deadline =>
                {
                    actix_rt::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("no place came back within {WAIT:?}: {e}"),
            }
        };
        one.join("one", "r1").await;
        three.join("three", "r1").await;
        one.members(&["one", "three"]).await;
    });
}

#[test]
fn invisible_and_look_alike_names_are_refused() {
    let a = Relay::embedded();
    run(async {
        let mut ann = Client::open(&a).await;
        ann.join("Ann", "r1").await;
        let mut c = Client::open(&a).await;
        for (name, why) in [
            ("bob\u{202E}nimda", "invisible"),     // right-to-left override
            ("a\u{200D}nn", "invisible"),          // zero-width joiner
            ("\u{2066}eve\u{2069}", "invisible"),  // left-to-right isolate
            ("\u{200B}", "invisible"),             // zero-width space only
            ("\u{FF21}\u{FF4E}\u{FF4E}", "taken"), // fullwidth "Ann"
            ("\u{FF41}NN", "taken"),               // fullwidth "a", then "NN": "aNN"
        ] {
            c.send(json!({"type": "join", "name": name, "room": "r1"}))
                .await;
            let error = c.error().await;
            assert!(error.contains(why), "{name:?}: {error}");
        }
        // A name is kept in its NFKC form: fullwidth letters and extra spaces become plain.
        c.send(json!({"type": "join", "name": "  \u{FF22}ob   Smith ", "room": "r1"}))
            .await;
        let joined = c.until("joined", |v| v["type"] == "joined").await;
        assert_eq!(joined["name"], "Bob Smith");
        ann.members(&["Ann", "Bob Smith"]).await;
    });
}

/// A nucleon client container inside the test's actix System.
fn client_container() -> ContainerHandle {
    ContainerBuilder::default()
        .id(format!("chat-test-{}", uuid::Uuid::new_v4()))
        .threads(1)
        .auto_stop(false)
        .start()
}

/// An event as a relay sends it.
fn event(json: Value) -> nucleon::Message {
    nucleon::Message::with_body(json.to_string())
}

#[test]
fn the_embedded_broker_refuses_anonymous_clients_and_forged_names() {
    let a = Relay::embedded();
    run(async {
        let mut ann = Client::open(&a).await;
        ann.join("ann", "r1").await;
        ann.members(&["ann"]).await;
        let container = client_container();
        let url = format!("{}/chat/r1", a.amqp);
        let attempts = [
            ("ANONYMOUS", ConnectionOptions::default()),
            (
                "no SASL at all",
                ConnectionOptions::new().sasl_disabled(true),
            ),
            (
                "a wrong password",
                ConnectionOptions::new()
                    .user("chat_relay")
                    .password("guess"),
            ),
        ];
        for (how, options) in attempts {
            let opened = actix_rt::time::timeout(
                WAIT,
                container.open_sender_with(&url, options, SenderOptions::default()),
            )
            .await
            .unwrap_or_else(|_| panic!("{how}: no answer within {WAIT:?}"));
            match opened {
                Err(e) => eprintln!("{how}: refused: {e}"),
                Ok(sender) => {
                    let _ = sender
                        .send(event(
                            json!({"kind": "message", "relay": "forger", "id": "f",
                            "name": "mallory", "text": "forged", "ts": 1}),
                        ))
                        .await;
                    panic!("{how}: the embedded broker took a sender");
                }
            }
        }

        // With the password (a relay's credential), events do get in: names are checked as from a browser.
        let sender = container
            .open_sender_with(
                &url,
                ConnectionOptions::new()
                    .user("chat_relay")
                    .password(a.password()),
                SenderOptions::default(),
            )
            .await
            .expect("the relays' credential opens a sender");
        for name in [
            "mal\u{202E}lory",
            "\u{FF4D}allory",
            " mallory",
            "mal\u{200D}lory",
        ] {
            let forged = json!({"kind": "message", "relay": "forger", "id": "f", "name": name,
                "text": "forged", "ts": 1});
            sender.send(event(forged)).await.expect("sent");
            let join = json!({"kind": "join", "relay": "forger", "name": name, "members": [name]});
            sender.send(event(join)).await.expect("sent");
        }
        let fine = json!({"kind": "message", "relay": "forger", "id": "g", "name": "trent",
            "text": "from a relay", "ts": 1});
        sender.send(event(fine)).await.expect("sent");
        ann.message("trent", "from a relay").await;
        assert!(
            ann.seen
                .iter()
                .all(|v| v["text"] != "forged"
                    && v["members"].as_array().is_none_or(|m| m.len() <= 1)),
            "an event with a bad name got through: {:?}",
            ann.seen
        );
        let _ = sender.close();
        container.stop();
    });
}

/// Sends SIGTERM to `process`.
fn sigterm(process: &Running) {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &process.id().to_string()])
        .status()
        .expect("runs kill");
    assert!(status.success(), "kill -TERM failed");
}

#[test]
fn a_relay_stopped_by_sigterm_tells_the_others_its_users_left() {
    // Heartbeats every 5 s (the default): a silent relay's users would stay 15 s.
    let a = Relay::embedded();
    let b = Relay::joining(&a);
    run(async {
        let mut ann = Client::open(&a).await;
        let mut bob = Client::open(&b).await;
        let mut bea = Client::open(&b).await;
        ann.join("ann", "r1").await;
        bob.join("bob", "r1").await;
        bea.join("bea", "r1").await;
        ann.members(&["ann", "bea", "bob"]).await;

        let sent = Instant::now();
        sigterm(&b.process);
        let bound = Duration::from_secs(4);
        ann.within(bound, "members [ann]", |v| {
            v["type"] == "members" && v["members"] == json!(["ann"])
        })
        .await;
        eprintln!("A dropped B's users {:?} after SIGTERM", sent.elapsed());
        for name in ["bob left", "bea left"] {
            assert!(
                ann.seen
                    .iter()
                    .any(|v| v["type"] == "system" && v["text"] == name),
                "no {name:?}: {:?}",
                ann.seen
            );
        }
        let reason = bob.closed(bound).await.expect("a close reason");
        assert_eq!(reason.code, CloseCode::Away, "{reason:?}");
    });
    let (status, _, stderr) = b.process.finish(Duration::from_secs(10));
    assert!(status.success(), "B exited with {status}: {stderr}");
    assert!(stderr.contains("SIGTERM"), "{stderr}");
}

/// Opens the WebSocket naming `host` in `Host` (and the page origin `http://HOST`), as a page whose DNS name
/// was rebound to the relay's address would.
async fn open_as_host(relay: &Relay, host: &str) -> Result<Client, WsClientError> {
    let request = awc::Client::new()
        .ws(format!("{}/ws", relay.http))
        .set_header(awc::http::header::HOST, host)
        .origin(format!("http://{host}"));
    let (_, framed) = request.connect().await?;
    let (tx, rx) = framed.split();
    Ok(Client {
        rx: Box::pin(rx),
        tx: Box::pin(tx),
        seen: Vec::new(),
    })
}

#[test]
fn a_page_whose_dns_name_was_rebound_to_the_relay_gets_421() {
    let a = Relay::embedded();
    let port = a.http.rsplit(':').next().expect("a port").to_owned();
    let proxied = Relay::embedded_with(&["--public-host", "chat.example"]);
    run(async {
        // Same-origin to the browser (its Origin matches its Host), but the Host is not this relay's.
        let rebound = format!("evil.example:{port}");
        match open_as_host(&a, &rebound).await {
            Err(WsClientError::InvalidResponseStatus(status)) => {
                assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
            }
            Err(e) => panic!("expected 421, got {e}"),
            Ok(_) => panic!("a rebound page opened the WebSocket"),
        }
        // Its own names, and a --public-host, are served.
        open_as_host(&a, &format!("localhost:{port}"))
            .await
            .expect("localhost names a loopback relay");
        open_as_host(&proxied, "chat.example")
            .await
            .expect("a --public-host is served");
    });
}
