//! Proton's default error handling in every client example (#17): a refused connection, a failed login or a
//! refused link ends the program with exit status 1 and ONE line on stderr naming the AMQP condition, within
//! seconds. Against our broker (a closed port, a wrong password, `[permissions]` that refuse the address)
//! and against RabbitMQ, which refuses an address it does not know (`queue/nb`, where it wants
//! `/queue/nb`) by ending the link's whole session: the examples used to ignore that and hang.

mod support;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nucleon_integration_tests::peers::RabbitMq;
use support::{free_port, run_example, Running, READY_TIMEOUT};

/// How long a refusal may take to end an example: seconds, not the 120 s the hang took. The bound covers
/// a process start on a loaded 2-core machine and our close time-out (5 s) with room to spare.
const PROMPT: Duration = Duration::from_secs(10);
/// The wait after which `run_example` kills a hung example and fails the test.
const HUNG: Duration = Duration::from_secs(30);

/// Every example that connects to a broker as a client, with the arguments that make it do one small job.
const CLIENTS: [(&str, &str, &[&str]); 10] = [
    ("helloworld", env!("CARGO_BIN_EXE_helloworld"), &[]),
    (
        "simple_send",
        env!("CARGO_BIN_EXE_simple_send"),
        &["-m", "2"],
    ),
    (
        "simple_recv",
        env!("CARGO_BIN_EXE_simple_recv"),
        &["-m", "2"],
    ),
    ("client", env!("CARGO_BIN_EXE_client"), &[]),
    ("server", env!("CARGO_BIN_EXE_server"), &[]),
    (
        "multithreaded_client",
        env!("CARGO_BIN_EXE_multithreaded_client"),
        &["-m", "2"],
    ),
    (
        "multithreaded_client_flow_control",
        env!("CARGO_BIN_EXE_multithreaded_client_flow_control"),
        &["-m", "2"],
    ),
    (
        "scheduled_send",
        env!("CARGO_BIN_EXE_scheduled_send"),
        &["-t", "2"],
    ),
    ("queue_browser", env!("CARGO_BIN_EXE_queue_browser"), &[]),
    (
        "reconnect_client",
        env!("CARGO_BIN_EXE_reconnect_client"),
        &["-m", "2", "--max-attempts", "2"],
    ),
];

/// Runs every client example on `url` and checks that each exits 1 promptly with one stderr line that
/// names `condition` (an AMQP condition, or for a refused TCP connection, the OS's word for it).
fn each_client_fails(url: &str, condition: &str) {
    for (name, program, extra) in CLIENTS {
        let mut args = vec!["-a", url];
        args.extend_from_slice(extra);
        let started = Instant::now();
        let out = run_example(program, &args, HUNG);
        let took = started.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(out.status.code(), Some(1), "{name} {args:?}: {stderr}");
        assert_eq!(lines.len(), 1, "{name} {args:?}: one line: {stderr}");
        assert!(
            lines[0].starts_with(&format!("{name}: ")) && lines[0].contains(condition),
            "{name} {args:?}: the line names {condition}: {stderr}"
        );
        assert!(took < PROMPT, "{name} {args:?}: took {took:?}: {stderr}");
    }
}

/// The broker binary with `config` (a TOML file's text), and its port.
fn broker_with_config(name: &str, config: &str) -> (Running, u16, PathBuf) {
    let dir = std::env::temp_dir().join(format!("nucleon-refusals-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    let path = dir.join("broker.toml");
    std::fs::write(&path, config).expect("writes the config");
    let mut broker = Running::spawn_with_env(
        env!("CARGO_BIN_EXE_broker"),
        &["--config", &path.to_string_lossy(), "-a", "127.0.0.1:0"],
        &[("REFUSALS_PASSWORD", "right-password")],
    );
    let ready = broker.wait_for_line("broker listening on ", READY_TIMEOUT);
    let port = ready
        .split_whitespace()
        .next()
        .and_then(|a| a.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("a port in the ready line: {ready}"));
    (broker, port, dir)
}

const USERS: &str = r#"
[[user]]
name = "alice"
password_env = "REFUSALS_PASSWORD"

[permissions]
alice = { send = ["allowed.*"], consume = ["allowed.*"], create = ["allowed.*"] }
"#;

#[test]
fn a_refused_connection_ends_every_client_example() {
    // Nobody listens there: the OS refuses the TCP connection.
    let url = format!("amqp://127.0.0.1:{}/examples", free_port());
    each_client_fails(&url, "refused");
}

#[test]
fn a_failed_login_ends_every_client_example() {
    let (_broker, port, dir) = broker_with_config("login", USERS);
    let url = format!("amqp://alice:wrong-password@127.0.0.1:{port}/allowed.q");
    each_client_fails(&url, "amqp:unauthorized-access");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_refused_link_ends_every_client_example() {
    let (_broker, port, dir) = broker_with_config("link", USERS);
    // The right password, an address alice may not use: the link is refused, the connection is fine.
    let url = format!("amqp://alice:right-password@127.0.0.1:{port}/forbidden");
    each_client_fails(&url, "amqp:unauthorized-access");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn rabbitmq_refusing_an_address_ends_every_client_example() {
    let rabbit = RabbitMq::shared();
    // `queue/nb` (RabbitMQ wants `/queue/nb`): its link is refused by ending the session. ANONYMOUS,
    // which RabbitMQ maps to guest (our clients send no PLAIN password over plain TCP).
    let url = rabbit.url(None, "queue/nb");
    each_client_fails(&url, "amqp:invalid-field");
}
