//! `broker --metrics HOST:PORT` (#14): Prometheus text at `/metrics` with per-queue and broker-wide numbers,
//! and the JSON management API: open on an open broker, and with `[permissions]` HTTP Basic against the
//! broker's users (401), the `manage` grant (403), purge and delete for an admin.

mod support;

use std::time::Duration;

use base64::Engine as _;
use support::{assert_success, http_request, run_example, HttpReply, Running};

const TIMEOUT: Duration = Duration::from_secs(30);

/// The broker with these arguments and environment, once both ready lines are out: the process, the AMQP
/// port and the metrics `host:port`.
fn start(args: &[&str], env: &[(&str, &str)]) -> (Running, u16, String) {
    let mut broker = Running::spawn_with_env(env!("CARGO_BIN_EXE_broker"), args, env);
    let ready = broker.wait_for_line("broker listening on ", TIMEOUT);
    let port = ready
        .split_whitespace()
        .next()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("a port in the ready line: {ready}"));
    let metrics = broker.wait_for_line("broker metrics on ", TIMEOUT);
    (broker, port, metrics.trim().to_owned())
}

fn send(url: &str, n: usize) {
    let sent = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", url, "-m", &n.to_string(), "-q"],
        TIMEOUT,
    );
    assert_success(&sent);
}

fn scrape(metrics: &str) -> String {
    let reply = http_request(metrics, "GET", "/metrics", &[], b"");
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "Prometheus text: {:?}",
        reply.headers
    );
    String::from_utf8(reply.body).expect("UTF-8")
}

/// The value of the sample `name` (with its labels, as written) in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

fn api(metrics: &str, method: &str, path: &str, auth: Option<&str>) -> HttpReply {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("Authorization", a)).into_iter().collect();
    http_request(metrics, method, path, &headers, b"")
}

fn queue_names(reply: &HttpReply) -> Vec<String> {
    reply
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .filter_map(|q| q["name"].as_str().map(str::to_owned))
        .collect()
}

#[test]
fn metrics_show_each_queue_and_an_open_broker_manages_without_credentials() {
    let (_broker, port, metrics) = start(&["-a", "127.0.0.1:0", "--metrics", "127.0.0.1:0"], &[]);
    send(&format!("amqp://127.0.0.1:{port}/metered"), 3);

    let text = scrape(&metrics);
    let q = |name: &str| sample(&text, &format!("{name}{{queue=\"metered\"}}"));
    assert_eq!(q("nucleon_queue_depth"), Some(3.0), "{text}");
    assert_eq!(q("nucleon_queue_enqueued_total"), Some(3.0), "{text}");
    assert_eq!(q("nucleon_queue_delivered_total"), Some(0.0), "{text}");
    assert_eq!(q("nucleon_queue_unsettled"), Some(0.0), "{text}");
    assert_eq!(q("nucleon_queue_consumers"), Some(0.0), "{text}");
    assert!(q("nucleon_queue_bytes").is_some_and(|b| b > 0.0), "{text}");
    assert!(
        sample(&text, "nucleon_message_memory_bytes").is_some_and(|b| b > 0.0),
        "{text}"
    );
    for name in [
        "nucleon_queue_redelivered_total{queue=\"metered\"}",
        "nucleon_queue_expired_total{queue=\"metered\"}",
        "nucleon_queue_dead_lettered_total{queue=\"metered\"}",
        "nucleon_connections",
        "nucleon_sessions",
        "nucleon_links",
        "nucleon_authentication_failures_total",
        "nucleon_rejected_total",
        "nucleon_dropped_without_subscribers_total",
        "process_resident_memory_bytes",
    ] {
        assert!(sample(&text, name).is_some(), "{name} in {text}");
    }

    // Open: no credentials needed.
    let listed = api(&metrics, "GET", "/api/queues", None);
    assert_eq!(listed.status, 200);
    let metered = listed
        .json()
        .as_array()
        .expect("an array")
        .iter()
        .find(|q| q["name"] == "metered")
        .cloned();
    let metered = metered.expect("metered is listed");
    assert_eq!(
        (metered["depth"].as_u64(), metered["enqueued"].as_u64()),
        (Some(3), Some(3))
    );
    let purged = api(&metrics, "POST", "/api/queues/metered/purge", None);
    assert_eq!(
        (purged.status, purged.json()["purged"].as_u64()),
        (200, Some(3))
    );
    let text = scrape(&metrics);
    assert_eq!(
        sample(&text, "nucleon_queue_depth{queue=\"metered\"}"),
        Some(0.0)
    );
    assert_eq!(
        api(&metrics, "DELETE", "/api/queues/metered", None).status,
        200
    );
    assert!(!queue_names(&api(&metrics, "GET", "/api/queues", None)).contains(&"metered".into()));
    assert_eq!(
        api(&metrics, "DELETE", "/api/queues/metered", None).status,
        404
    );
}

fn write_config(name: &str, text: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("nucleon-metrics-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let path = dir.join("broker.toml");
    std::fs::write(&path, text).expect("writes");
    let config = path.to_string_lossy().into_owned();
    (dir, config)
}

const SECURED: &str = r#"
[listen]
address = "127.0.0.1:0"

[metrics]
address = "127.0.0.1:0"

[[user]]
name = "admin"
password_env = "ADMIN_PASSWORD"

[[user]]
name = "alice"
password_env = "ALICE_PASSWORD"

[permissions]
admin = { manage = ["*"] }
alice = { send = ["orders"], create = ["orders"] }
"#;

#[test]
fn management_needs_a_user_granted_manage() {
    let (dir, config) = write_config("secured", SECURED);
    let env = [
        ("ADMIN_PASSWORD", "a-secret"),
        ("ALICE_PASSWORD", "b-secret"),
    ];
    let (_broker, port, metrics) = start(&["--config", &config], &env);
    let _ = std::fs::remove_dir_all(dir);
    send(&format!("amqp://alice:b-secret@127.0.0.1:{port}/orders"), 2);
    let admin = basic("admin", "a-secret");
    let alice = basic("alice", "b-secret");

    for (method, path) in [
        ("GET", "/api/queues"),
        ("GET", "/api/connections"),
        ("POST", "/api/queues/orders/purge"),
        ("DELETE", "/api/queues/orders"),
    ] {
        for auth in [
            None,
            Some(basic("admin", "wrong").as_str()),
            Some(basic("nobody", "a-secret").as_str()),
        ] {
            let reply = api(&metrics, method, path, auth);
            assert_eq!(reply.status, 401, "{method} {path} with {auth:?}");
            assert!(
                reply
                    .header("www-authenticate")
                    .is_some_and(|c| c.starts_with("Basic ")),
                "a challenge: {:?}",
                reply.headers
            );
        }
        assert_eq!(
            api(&metrics, method, path, Some(&alice)).status,
            403,
            "{method} {path} as alice"
        );
    }

    let listed = api(&metrics, "GET", "/api/queues", Some(&admin));
    assert_eq!(listed.status, 200);
    assert!(
        queue_names(&listed).contains(&"orders".into()),
        "{:?}",
        listed.json()
    );
    let connections = api(&metrics, "GET", "/api/connections", Some(&admin));
    assert_eq!(connections.status, 200);
    assert!(connections.json().is_array());

    let purged = api(&metrics, "POST", "/api/queues/orders/purge", Some(&admin));
    assert_eq!(
        (purged.status, purged.json()["purged"].as_u64()),
        (200, Some(2))
    );
    let deleted = api(&metrics, "DELETE", "/api/queues/orders", Some(&admin));
    assert_eq!(deleted.status, 200);
    assert!(
        !queue_names(&api(&metrics, "GET", "/api/queues", Some(&admin))).contains(&"orders".into())
    );
    assert_eq!(
        api(&metrics, "DELETE", "/api/queues/orders", Some(&admin)).status,
        404
    );

    // A failed AMQP login shows in the metrics, which need no credentials.
    let refused = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &[
            "-a",
            &format!("amqp://alice:wrong@127.0.0.1:{port}/orders"),
            "-m",
            "1",
            "-q",
        ],
        TIMEOUT,
    );
    assert!(!refused.status.success());
    let text = scrape(&metrics);
    assert_eq!(
        sample(&text, "nucleon_authentication_failures_total"),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn the_flag_wins_over_the_files_metrics_address() {
    let (dir, config) = write_config("flag", "[metrics]\naddress = \"no-such-host.invalid:1\"\n");
    let (_broker, _port, metrics) = start(
        &[
            "--config",
            &config,
            "-a",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
        ],
        &[],
    );
    let _ = std::fs::remove_dir_all(dir);
    assert!(metrics.starts_with("127.0.0.1:"), "{metrics}");
    scrape(&metrics);
}
