//! `broker --config FILE` (issue 14): users with a password from the environment or a file, per-user
//! permissions that refuse a client example with one line and exit 1, flags that win over the file, the
//! open mode said in the ready line, a misspelt key that exits 2 naming it, and the example config in
//! `examples/broker.toml` accepted as shipped.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{assert_success, run_example, Running};

const TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the broker with these arguments and environment and returns it with its ready line's rest.
fn start(args: &[&str], env: &[(&str, &str)]) -> (Running, String) {
    let mut broker = Running::spawn_with_env(env!("CARGO_BIN_EXE_broker"), args, env);
    let ready = broker.wait_for_line("broker listening on ", TIMEOUT);
    (broker, ready)
}

fn port(ready: &str) -> u16 {
    ready
        .split_whitespace()
        .next()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("a port in the ready line: {ready}"))
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("writes");
    path.to_string_lossy().into_owned()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nucleon-config-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

#[test]
fn users_and_permissions_come_from_the_file() {
    let dir = scratch("perms");
    let secret = write(&dir, "bob.password", "b-secret\n");
    let config = write(
        &dir,
        "broker.toml",
        &format!(
            r#"
[listen]
address = "127.0.0.1:1"

[[user]]
name = "alice"
password_env = "ALICE_PASSWORD"

[[user]]
name = "bob"
password_file = "{secret}"

[permissions]
alice = {{ send = ["orders.*"], consume = ["orders.*"], create = ["orders.*"] }}
bob = {{ consume = ["orders.*"] }}
"#
        ),
    );
    // The flag wins over the file's address (port 1 would fail to bind).
    let (_broker, ready) = start(
        &["--config", &config, "-a", "127.0.0.1:0"],
        &[("ALICE_PASSWORD", "a-secret")],
    );
    assert!(!ready.contains("open"), "permissions configured: {ready}");
    let port = port(&ready);
    let url =
        |user: &str, password: &str| format!("amqp://{user}:{password}@127.0.0.1:{port}/orders.eu");
    let sent = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &url("alice", "a-secret"), "-m", "3", "-q"],
        TIMEOUT,
    );
    assert_success(&sent);
    let received = run_example(
        env!("CARGO_BIN_EXE_simple_recv"),
        &["-a", &url("bob", "b-secret"), "-m", "3"],
        TIMEOUT,
    );
    assert_success(&received);

    let refused = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &url("bob", "b-secret"), "-m", "1", "-q"],
        TIMEOUT,
    );
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {stderr}");
    assert!(
        lines[0].contains("amqp:unauthorized-access"),
        "the condition: {stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn without_permissions_the_ready_line_says_the_broker_is_open() {
    let (_broker, ready) = start(&["-a", "127.0.0.1:0"], &[]);
    assert!(ready.contains("(open:"), "{ready}");
}

#[test]
fn a_misspelt_key_or_a_missing_secret_exits_2_naming_it() {
    let dir = scratch("bad");
    let cases = [
        ("[limits]\nmax_queue_dept = 5\n", "max_queue_dept"),
        (
            "[[user]]\nname = \"carol\"\npassword_env = \"NUCLEON_TEST_UNSET_VARIABLE\"\n",
            "NUCLEON_TEST_UNSET_VARIABLE",
        ),
        ("[permissions]\nalice = { write = [\"x\"] }\n", "write"),
        ("[[user]]\nname = \"dave\"\n", "exactly one of"),
    ];
    for (i, (text, named)) in cases.into_iter().enumerate() {
        let config = write(&dir, &format!("bad{i}.toml"), text);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
            .args(["--config", &config, "-a", "127.0.0.1:0"])
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2), "{text}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(named), "{text}: names {named}: {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_example_config_is_accepted_as_shipped() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/broker.toml");
    let (_broker, ready) = start(
        &["--config", example, "-a", "127.0.0.1:0"],
        &[
            ("ORDERS_SERVICE_PASSWORD", "o-secret"),
            ("AUDITOR_PASSWORD", "a-secret"),
        ],
    );
    assert!(!ready.contains("open"), "it has permissions: {ready}");
    let port = port(&ready);
    let url = format!("amqp://127.0.0.1:{port}/public.news");
    let sent = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &url, "-m", "1", "-q"],
        TIMEOUT,
    );
    assert_success(&sent);
}

#[test]
fn help_documents_the_config_file() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("--help")
        .output()
        .expect("runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for section in ["--config", "[permissions]", "[limits]", "password_env"] {
        assert!(help.contains(section), "{section}: {help}");
    }
}
