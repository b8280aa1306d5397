//! TLS from the command line: `broker --tls-cert --tls-key [--require-tls]`, and the client examples with
//! `amqps://` and `--tls-ca` for a private CA (certificates made at test time). A plain client refused by a
//! TLS-only broker, and a client that does not trust the broker's CA, each exit 1 with one clear line.

mod support;

use std::time::Duration;

use nucleon_integration_tests::certs::{ServerCert, TestCa};
use support::{assert_success, run_example, stdout_lines, Broker};

const TIMEOUT: Duration = Duration::from_secs(30);

fn tls_broker(ca: &TestCa, require: bool) -> Broker {
    let server = ca.server(ServerCert::Loopback);
    let (cert, key) = (
        server.cert.to_string_lossy().into_owned(),
        server.key.to_string_lossy().into_owned(),
    );
    let mut args = vec!["--tls-cert", cert.as_str(), "--tls-key", key.as_str()];
    if require {
        args.push("--require-tls");
    }
    Broker::start_with(&args)
}

#[test]
fn the_client_examples_send_and_receive_over_amqps_with_a_private_ca() {
    let ca = TestCa::new("cli");
    let broker = tls_broker(&ca, true);
    let ca_file = ca.ca_file().to_string_lossy().into_owned();
    let url = format!("amqps://localhost:{}/tls-queue", broker.port);
    let sent = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &url, "--tls-ca", &ca_file, "-m", "5", "-q"],
        TIMEOUT,
    );
    assert_success(&sent);
    let received = run_example(
        env!("CARGO_BIN_EXE_simple_recv"),
        &["-a", &url, "--tls-ca", &ca_file, "-m", "5"],
        TIMEOUT,
    );
    assert_success(&received);
    assert!(
        stdout_lines(&received).len() >= 5,
        "five messages: {:?}",
        stdout_lines(&received)
    );
}

#[test]
fn refused_transports_exit_1_with_one_line() {
    let ca = TestCa::new("cli-refused");
    let broker = tls_broker(&ca, true);
    // Plain AMQP to a broker that requires TLS.
    let plain = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &broker.url("q"), "-m", "1"],
        TIMEOUT,
    );
    assert_eq!(plain.status.code(), Some(1));
    let err = String::from_utf8_lossy(&plain.stderr);
    assert!(err.contains("TLS"), "says TLS is required: {err}");
    // TLS, but without the private CA: the system's roots do not trust it.
    let untrusted = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &[
            "-a",
            &format!("amqps://localhost:{}/q", broker.port),
            "-m",
            "1",
        ],
        TIMEOUT,
    );
    assert_eq!(untrusted.status.code(), Some(1));
    let err = String::from_utf8_lossy(&untrusted.stderr);
    assert!(err.contains("trusted CA"), "says why: {err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn tls_flags_need_each_other() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--require-tls"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .args([
            "--tls-cert",
            "/nonexistent.pem",
            "--tls-key",
            "/nonexistent.pem",
        ])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent.pem"), "names the file: {err}");
}

#[test]
fn broker_users_from_a_file_of_scram_credentials() {
    use std::io::Write as _;
    let mut print = std::process::Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--print-scram-credential", "alice"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    print
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"s3cret\n")
        .expect("writes the password");
    let printed = print.wait_with_output().expect("prints");
    assert!(printed.status.success());
    let line = String::from_utf8(printed.stdout).expect("text");
    assert!(line.starts_with("alice:SCRAM-SHA-256$4096:"), "{line}");
    assert!(!line.contains("s3cret"), "no password in the file: {line}");
    let ca = TestCa::new("users-file");
    let users = ca.dir().join("users");
    std::fs::write(&users, format!("# test users\n{line}")).expect("writes the users file");
    let broker = Broker::start_with(&["--users", users.to_str().expect("a UTF-8 path")]);

    // SCRAM over plain TCP: the password never travels.
    let url = |password: &str| format!("amqp://alice:{password}@127.0.0.1:{}/q", broker.port);
    let sent = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &url("s3cret"), "-m", "2", "-q"],
        TIMEOUT,
    );
    assert_success(&sent);
    let refused = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &url("wrong"), "-m", "1"],
        TIMEOUT,
    );
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("unauthorized-access"), "{err}");
    // Without credentials: authentication is required.
    let anonymous = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &broker.url("q"), "-m", "1"],
        TIMEOUT,
    );
    assert_eq!(anonymous.status.code(), Some(1));
}
