//! The `web_gateway`'s security layer over real HTTP on loopback (issue #16): the Host check against DNS
//! rebinding, the Origin check and CORS against cross-site requests, bearer tokens with per-address rights,
//! the start-up refusal without tokens, the body limit and the in-process broker's limits. Each test starts
//! the binary on `127.0.0.1:0`, waits for its ready line, and checks what reached the queue with a GET of a
//! token that may consume.

mod support;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value as Json};
use sha2::{Digest as _, Sha256};
use support::{http_exchange, http_request, HttpReply, Running, READY_TIMEOUT};

const WAIT: Duration = Duration::from_secs(20);
const BIN: &str = env!("CARGO_BIN_EXE_web_gateway");

/// May send and consume everywhere.
const ADMIN: &str = "admin-token-0123456789abcdef";
/// May only send, to `orders.*` (given to the gateway through `token_env`).
const SENDER: &str = "sender-token-0123456789abcdef";
/// May send and consume on `other.*` only (given through `token_file`).
const OTHER: &str = "other-token-0123456789abcdef";
/// Known to no gateway.
const STRANGER: &str = "stranger-token-0123456789abcd";

fn sha256_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A file under the temporary directory, unique to this process and call, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "web_gateway_security_{}_{}_{name}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, contents).expect("writes a temporary file");
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().expect("a UTF-8 temporary path")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A running gateway, killed on drop.
struct Gateway {
    _process: Running,
    /// `127.0.0.1:PORT` of its HTTP listener.
    http: String,
    /// The rest of its ready line after the address.
    ready: String,
    _files: Vec<TempFile>,
}

impl Gateway {
    /// A gateway with the three tokens (ADMIN, SENDER, OTHER) from a token file.
    fn with_tokens(extra: &[&str]) -> Gateway {
        let other = TempFile::new("other-token", &format!("{OTHER}\n"));
        let tokens = TempFile::new(
            "tokens.toml",
            &format!(
                r#"
[[token]]
name = "admin"
sha256 = "{admin}"
send = ["*"]
consume = ["*"]

[[token]]
name = "sender"
token_env = "GW_TEST_SENDER_TOKEN"
send = ["orders.*"]

[[token]]
name = "other"
token_file = "{other}"
send = ["other.*"]
consume = ["other.*"]
"#,
                admin = sha256_hex(ADMIN),
                other = other.path().replace('\\', "\\\\"),
            ),
        );
        let mut args = vec!["--tokens", tokens.path()];
        args.extend_from_slice(extra);
        let mut gw = Gateway::start(&args, &[("GW_TEST_SENDER_TOKEN", SENDER)]);
        gw._files = vec![other, tokens];
        gw
    }

    /// A gateway in the open mode.
    fn open(extra: &[&str]) -> Gateway {
        let mut args = vec!["--insecure-no-auth"];
        args.extend_from_slice(extra);
        Gateway::start(&args, &[])
    }

    fn start(extra: &[&str], env: &[(&str, &str)]) -> Gateway {
        let mut args = vec!["--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut process = Running::spawn_with_env(BIN, &args, env);
        let rest = process.wait_for_line("web_gateway listening on http://", READY_TIMEOUT);
        let (http, ready) = rest.split_once(' ').unwrap_or((&rest, ""));
        Gateway {
            http: http.to_owned(),
            ready: ready.to_owned(),
            _process: process,
            _files: Vec::new(),
        }
    }

    fn port(&self) -> &str {
        self.http.rsplit_once(':').expect("HOST:PORT").1
    }

    /// POST of a text body to `address`, with `token` (if any) and more headers.
    fn post(&self, address: &str, token: Option<&str>, headers: &[(&str, &str)]) -> HttpReply {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut all = vec![("Content-Type", "text/plain")];
        if let Some(b) = &bearer {
            all.push(("Authorization", b));
        }
        all.extend_from_slice(headers);
        http_request(
            &self.http,
            "POST",
            &format!("/queues/{address}/messages"),
            &all,
            b"hello",
        )
    }

    /// GET of up to 10 messages of `address` (waiting 300 ms), with `token` (if any) and more headers.
    fn get(&self, address: &str, token: Option<&str>, headers: &[(&str, &str)]) -> HttpReply {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut all = Vec::new();
        if let Some(b) = &bearer {
            all.push(("Authorization", b.as_str()));
        }
        all.extend_from_slice(headers);
        http_request(
            &self.http,
            "GET",
            &format!("/queues/{address}/messages?max=10&timeout_ms=300"),
            &all,
            b"",
        )
    }

    /// The bodies a GET with `token` takes from `address` (asserting 200).
    fn take(&self, address: &str, token: Option<&str>) -> Vec<Json> {
        let reply = self.get(address, token, &[]);
        assert_eq!(reply.status, 200, "{}", body(&reply));
        match reply.json()["messages"].take() {
            Json::Array(m) => m.into_iter().map(|m| m["body"].clone()).collect(),
            other => panic!("a messages array, got {other}"),
        }
    }
}

fn body(reply: &HttpReply) -> String {
    String::from_utf8_lossy(&reply.body).into_owned()
}

/// Asserts the status and a JSON error body.
fn assert_refused(reply: &HttpReply, status: u16) {
    assert_eq!(reply.status, status, "{}", body(reply));
    assert!(reply.json()["error"].is_string(), "{}", body(reply));
}

fn assert_created(reply: &HttpReply) {
    assert_eq!(reply.status, 201, "{}", body(reply));
}

/// Runs the gateway to its exit (within [`WAIT`], else it is killed and the test fails), with `stdin` as
/// its input and without `WEB_GATEWAY_TOKENS` from the test's environment.
fn run(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("WEB_GATEWAY_TOKENS")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts web_gateway");
    let mut input = child.stdin.take().expect("stdin");
    // A gateway that exits at once may not read it: a broken pipe is fine.
    let _ = input.write_all(stdin);
    drop(input);
    let (tx, rx) = mpsc::channel();
    let pid = child.id();
    let waiter = std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(WAIT) {
        Ok(out) => {
            waiter.join().expect("the waiting thread");
            out.expect("web_gateway's output")
        }
        Err(_) => {
            // It listened instead of exiting: end it by its PID, then fail.
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            panic!("web_gateway {args:?} did not exit within {WAIT:?}");
        }
    }
}

#[test]
fn a_forged_origin_post_with_a_valid_token_is_refused_and_sends_nothing() {
    let gw = Gateway::with_tokens(&[]);
    let forged = gw.post(
        "orders.1",
        Some(ADMIN),
        &[("Origin", "http://evil.example")],
    );
    assert_refused(&forged, 403);
    // Same origin (as the page the gateway would serve) is fine.
    let same = format!("http://{}", gw.http);
    assert_created(&gw.post("orders.1", Some(ADMIN), &[("Origin", &same)]));
    assert_eq!(gw.take("orders.1", Some(ADMIN)), vec![json!("hello")]);
}

#[test]
fn cross_site_requests_have_no_effect_even_when_open() {
    let gw = Gateway::open(&[]);
    // A cross-site `text/plain` POST needs no preflight: the browser sends it as is.
    let simple = gw.post(
        "q",
        None,
        &[
            ("Origin", "http://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
            ("Sec-Fetch-Mode", "no-cors"),
        ],
    );
    assert_refused(&simple, 403);
    assert!(gw.take("q", None).is_empty(), "nothing was queued");
    // A cross-site subresource GET (an <img>) carries no Origin, only Sec-Fetch-Site.
    assert_created(&gw.post("q", None, &[]));
    let img = gw.get("q", None, &[("Sec-Fetch-Site", "cross-site")]);
    assert_refused(&img, 403);
    let same_site = gw.get("q", None, &[("Sec-Fetch-Site", "same-site")]);
    assert_refused(&same_site, 403);
    // `null` (a sandboxed frame, a file: page) is no origin to trust.
    assert_refused(&gw.get("q", None, &[("Origin", "null")]), 403);
    assert_eq!(gw.take("q", None), vec![json!("hello")], "still queued");
}

#[test]
fn a_rebinding_host_is_refused_and_consumes_nothing() {
    let gw = Gateway::with_tokens(&["--public-host", "gw.example:8443"]);
    assert_created(&gw.post("orders.2", Some(ADMIN), &[]));
    let port = gw.port();
    for host in [
        "attacker.example".to_owned(),
        format!("attacker.example:{port}"),
        format!("127.0.0.2:{port}"),
        "gw.example".to_owned(),
        "gw.example:9000".to_owned(),
    ] {
        let head = format!(
            "GET /queues/orders.2/messages?max=10&timeout_ms=300 HTTP/1.1\r\nHost: {host}\r\n\
             Authorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n"
        );
        assert_refused(&http_exchange(&gw.http, &head, b""), 421);
    }
    // Two Host fields: refused too (which one names the target?).
    let head = format!(
        "GET /queues/orders.2/messages HTTP/1.1\r\nHost: {}\r\nHost: attacker.example\r\n\
         Authorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n",
        gw.http
    );
    assert!(http_exchange(&gw.http, &head, b"").status >= 400);
    // The loopback names and the public host work; the message is still there for the first of them.
    let via = |host: &str| {
        let head = format!(
            "GET /queues/orders.2/messages?max=10&timeout_ms=300 HTTP/1.1\r\nHost: {host}\r\n\
             Authorization: Bearer {ADMIN}\r\nConnection: close\r\n\r\n"
        );
        http_exchange(&gw.http, &head, b"")
    };
    let reply = via(&format!("localhost:{port}"));
    assert_eq!(reply.status, 200, "{}", body(&reply));
    assert_eq!(reply.json()["messages"][0]["body"], json!("hello"));
    assert_eq!(via("GW.example:8443").status, 200);
    assert_eq!(via(&format!("[::1]:{port}")).status, 200);
}

#[test]
fn tokens_are_required_and_limited_to_their_addresses_and_operations() {
    let gw = Gateway::with_tokens(&[]);
    assert!(gw.ready.contains("(3 bearer tokens)"), "{}", gw.ready);
    // No token, an unknown one, another scheme: 401 with the Bearer challenge, nothing queued.
    let none = gw.post("orders.3", None, &[]);
    assert_refused(&none, 401);
    assert!(
        none.header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer")),
        "{:?}",
        none.headers
    );
    let unknown = gw.post("orders.3", Some(STRANGER), &[]);
    assert_refused(&unknown, 401);
    assert!(unknown
        .header("www-authenticate")
        .is_some_and(|c| c.contains("invalid_token")));
    let basic = gw.post("orders.3", None, &[("Authorization", "Basic YTpi")]);
    assert_refused(&basic, 401);
    assert_refused(&gw.get("orders.3", None, &[]), 401);
    // A token for other addresses: 403.
    assert_refused(&gw.post("orders.3", Some(OTHER), &[]), 403);
    assert!(
        gw.take("orders.3", Some(ADMIN)).is_empty(),
        "nothing queued"
    );
    // The sender may send to orders.*, but not consume, nor send elsewhere.
    assert_created(&gw.post("orders.3", Some(SENDER), &[]));
    let consume = gw.get("orders.3", Some(SENDER), &[]);
    assert_refused(&consume, 403);
    assert!(consume
        .header("www-authenticate")
        .is_some_and(|c| c.contains("insufficient_scope")));
    let stream = http_request(
        &gw.http,
        "GET",
        "/queues/orders.3/stream",
        &[("Authorization", &format!("Bearer {SENDER}"))],
        b"",
    );
    assert_refused(&stream, 403);
    assert_refused(&gw.post("other.3", Some(SENDER), &[]), 403);
    assert_refused(&gw.get("orders.3", Some(OTHER), &[]), 403);
    // The address is checked as the handler decodes it: %2E is a dot, so this is orders.3 too.
    assert_refused(&gw.get("orders%2E3", Some(OTHER), &[]), 403);
    // Nothing was consumed by the refused GETs.
    assert_eq!(gw.take("orders.3", Some(ADMIN)), vec![json!("hello")]);
    // The other token works on its own addresses.
    assert_created(&gw.post("other.3", Some(OTHER), &[]));
    assert_eq!(gw.take("other.3", Some(OTHER)), vec![json!("hello")]);
}

#[test]
fn an_allowed_origin_gets_cors_and_others_do_not() {
    let gw = Gateway::with_tokens(&["--allow-origin", "http://good.example"]);
    let good = [("Origin", "http://good.example")];
    let reply = gw.post("orders.4", Some(ADMIN), &good);
    assert_created(&reply);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("http://good.example")
    );
    // Its refusals carry the header too, so the page can read them.
    let refused = gw.get("orders.4", None, &good);
    assert_refused(&refused, 401);
    assert_eq!(
        refused.header("access-control-allow-origin"),
        Some("http://good.example")
    );
    let preflight = |origin: &str, headers: &str| {
        http_request(
            &gw.http,
            "OPTIONS",
            "/queues/orders.4/messages",
            &[
                ("Origin", origin),
                ("Access-Control-Request-Method", "POST"),
                ("Access-Control-Request-Headers", headers),
            ],
            b"",
        )
    };
    let ok = preflight(
        "http://good.example",
        "authorization, content-type, amqp-subject, amqp-app-color",
    );
    assert_eq!(ok.status, 200, "{}", body(&ok));
    assert_eq!(
        ok.header("access-control-allow-origin"),
        Some("http://good.example")
    );
    assert!(
        ok.header("access-control-allow-methods")
            .is_some_and(|m| m.contains("POST")),
        "{:?}",
        ok.headers
    );
    assert_refused(&preflight("http://good.example", "x-other"), 403);
    assert_refused(&preflight("http://evil.example", "authorization"), 403);
    let evil = gw.post(
        "orders.4",
        Some(ADMIN),
        &[("Origin", "http://evil.example")],
    );
    assert_refused(&evil, 403);
    assert_eq!(evil.header("access-control-allow-origin"), None);
    assert_eq!(gw.take("orders.4", Some(ADMIN)), vec![json!("hello")]);
}

#[test]
fn the_open_mode_says_so_and_nothing_else_starts_without_tokens() {
    let gw = Gateway::open(&[]);
    assert!(
        gw.ready
            .contains("open: --insecure-no-auth, anyone who can reach it may send and consume"),
        "{}",
        gw.ready
    );
    drop(gw);
    let out = run(&["--listen", "127.0.0.1:0"], &[], b"");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no tokens") && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
    let tokens = TempFile::new(
        "bad.toml",
        "[[token]]\nname = \"short\"\ntoken_env = \"GW_TEST_SHORT\"\nsend = [\"*\"]\n",
    );
    let short = run(
        &["--listen", "127.0.0.1:0", "--tokens", tokens.path()],
        &[("GW_TEST_SHORT", "too-short")],
        b"",
    );
    assert_eq!(short.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 16"));
    let both = run(
        &["--listen", "127.0.0.1:0", "--insecure-no-auth"],
        &[(
            "WEB_GATEWAY_TOKENS",
            &format!(
                "[[token]]\nname = \"a\"\nsha256 = \"{}\"\n",
                sha256_hex(ADMIN)
            ),
        )],
        b"",
    );
    assert_eq!(both.status.code(), Some(2));
    let typo = run(
        &["--listen", "127.0.0.1:0"],
        &[(
            "WEB_GATEWAY_TOKENS",
            "[[token]]\nname = \"a\"\nsha265 = \"00\"\n",
        )],
        b"",
    );
    assert_eq!(typo.status.code(), Some(2));
    // The digest helper prints what a token file's sha256 wants.
    let printed = run(
        &["--print-token-sha256"],
        &[],
        format!("{ADMIN}\n").as_bytes(),
    );
    assert_eq!(printed.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        sha256_hex(ADMIN)
    );
}

#[test]
fn tokens_from_the_environment_work() {
    let gw = Gateway::start(
        &[],
        &[(
            "WEB_GATEWAY_TOKENS",
            &format!(
                "[[token]]\nname = \"env\"\nsha256 = \"{}\"\nsend = [\"q\"]\nconsume = [\"q\"]\n",
                sha256_hex(ADMIN)
            ),
        )],
    );
    assert!(gw.ready.contains("(1 bearer tokens)"), "{}", gw.ready);
    assert_created(&gw.post("q", Some(ADMIN), &[]));
    assert_refused(&gw.post("q2", Some(ADMIN), &[]), 403);
    assert_eq!(gw.take("q", Some(ADMIN)), vec![json!("hello")]);
}

#[test]
fn max_body_refuses_larger_bodies_before_they_are_read() {
    let gw = Gateway::with_tokens(&["--max-body", "100"]);
    let big = http_request(
        &gw.http,
        "POST",
        "/queues/orders.5/messages",
        &[
            ("Content-Type", "text/plain"),
            ("Authorization", &format!("Bearer {ADMIN}")),
        ],
        &[b'x'; 101],
    );
    assert_refused(&big, 413);
    // The token comes first: without one, 401, whatever the size.
    let anonymous = http_request(
        &gw.http,
        "POST",
        "/queues/orders.5/messages",
        &[("Content-Type", "text/plain")],
        &[b'x'; 101],
    );
    assert_refused(&anonymous, 401);
    let fits = http_request(
        &gw.http,
        "POST",
        "/queues/orders.5/messages",
        &[
            ("Content-Type", "text/plain"),
            ("Authorization", &format!("Bearer {ADMIN}")),
        ],
        &[b'x'; 100],
    );
    assert_created(&fits);
    assert_eq!(gw.take("orders.5", Some(ADMIN)).len(), 1);
    let out = run(&["--insecure-no-auth", "--max-body", "2000000"], &[], b"");
    assert_eq!(out.status.code(), Some(2), "above the handlers' 1 MiB");
}

#[test]
fn the_in_process_broker_holds_no_more_than_its_queue_bytes() {
    // About 1,100 bytes per message: three fit in 3,500, a fourth gets no credit.
    let config = TempFile::new("limits.toml", "[limits]\nmax_queue_bytes = 3500\n");
    let gw = Gateway::open(&["--broker-config", config.path()]);
    fn post(http: &str) -> HttpReply {
        http_request(
            http,
            "POST",
            "/queues/bounded/messages",
            &[("Content-Type", "application/octet-stream")],
            &[b'k'; 1000],
        )
    }
    for _ in 0..3 {
        assert_created(&post(&gw.http));
    }
    // The fourth waits for room: the broker gives its sender no credit while the queue is full.
    let (tx, rx) = mpsc::channel();
    let http = gw.http.clone();
    let held = std::thread::spawn(move || {
        let _ = tx.send(post(&http).status);
    });
    assert!(
        rx.recv_timeout(Duration::from_secs(2)).is_err(),
        "a fourth message was taken into a full queue"
    );
    // Taking one makes room: the held POST goes through.
    let one = http_request(
        &gw.http,
        "GET",
        "/queues/bounded/messages?max=1&timeout_ms=5000",
        &[],
        b"",
    );
    assert_eq!(one.status, 200, "{}", body(&one));
    assert_eq!(rx.recv_timeout(WAIT).expect("the held POST ends"), 201);
    held.join().expect("the poster's thread");
    assert_eq!(gw.take("bounded", None).len(), 3);
}

#[test]
fn the_in_process_broker_refuses_queues_beyond_max_queues() {
    let config = TempFile::new("limits.toml", "[limits]\nmax_queues = 1\n");
    let gw = Gateway::open(&["--broker-config", config.path()]);
    assert_created(&gw.post("first", None, &[]));
    let second = gw.post("second", None, &[]);
    assert_refused(&second, 502);
    assert_eq!(
        second.json()["condition"],
        json!("amqp:resource-limit-exceeded")
    );
    // A file with more than [limits] (a broker's [permissions], say) is refused, not half-used.
    let broker_file = TempFile::new("broker.toml", "[permissions]\nanonymous = {}\n");
    let out = run(
        &["--insecure-no-auth", "--broker-config", broker_file.path()],
        &[],
        b"",
    );
    assert_eq!(out.status.code(), Some(2));
}
