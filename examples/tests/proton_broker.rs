//! Our `simple_send` and `simple_recv` binaries against Apache Qpid Proton's C `broker` example (issue #5,
//! "Proof").
//!
//! The C broker is built by `scripts/build-proton-examples.sh` into `target/proton-examples/` (the script
//! runs when it is missing and fails loudly without Proton's packages; run `scripts/install-test-deps.sh`).
//! Each test starts its own C broker on a free port of 127.0.0.1, waits for its `listening on PORT` line,
//! and kills it by PID when done, even on panic.
//!
//! The C broker grants senders only 5 credits at a time (so `simple_send` must keep sending as credit comes
//! back) and sends to receivers pre-settled (at-most-once; `simple_recv` must cope with settled deliveries).

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use support::{assert_success, proton_c_example, run_example, stdout_lines, Running};

/// How long an example may run before the test kills it and fails.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// A port that was free a moment ago, for the C broker (which cannot pick one itself and report it).
fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Proton's C broker on a free port of 127.0.0.1; killed (by PID) when dropped (`Running` does that).
struct CBroker {
    process: Running,
    port: u16,
}

impl CBroker {
    fn start() -> CBroker {
        let bin = proton_c_example("broker");
        let bin_str = bin.to_str().expect("a UTF-8 path");
        let mut failures = Vec::new();
        // Another process may take the free port before the broker does: then try another one.
        for _ in 0..3 {
            let port = free_port();
            let port_str = port.to_string();
            let mut process = Running::spawn(bin_str, &["127.0.0.1", &port_str]);
            let listening = format!("listening on {port}");
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match process.next_line(left) {
                    // The line proves that the broker (not some other listener) owns the port.
                    Some(line) if line == listening => return CBroker { process, port },
                    Some(line) if line.starts_with("PN_LISTENER_CLOSE") => {
                        failures.push(format!("port {port}: {line}"));
                        break;
                    }
                    Some(_) => {}
                    None => {
                        failures.push(format!(
                            "port {port}: no {listening:?} line within 10 s (or the broker exited); stdout: {:?}",
                            process.seen
                        ));
                        break;
                    }
                }
            }
            process.kill();
        }
        panic!("the C broker did not start:\n{}", failures.join("\n"));
    }

    fn url(&self, address: &str) -> String {
        format!("amqp://127.0.0.1:{}/{address}", self.port)
    }
}

impl Drop for CBroker {
    fn drop(&mut self) {
        self.process.kill();
        if std::thread::panicking() {
            eprintln!("C broker stdout: {:?}", self.process.seen);
        }
    }
}

fn sequence_lines(n: u32) -> Vec<String> {
    (1..=n).map(|i| format!("{{\"sequence\": {i}}}")).collect()
}

fn confirmed_lines(n: u32) -> Vec<String> {
    (1..=n).map(|i| format!("message {i} confirmed")).collect()
}

#[test]
fn simple_send_then_simple_recv_through_the_c_broker() {
    const N: u32 = 100;
    let broker = CBroker::start();
    let url = broker.url("examples");
    let n = N.to_string();

    // 100 messages through the broker's credit of 5 at a time; each must be accepted.
    let sent = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &url, "-m", &n],
        RUN_TIMEOUT,
    );
    assert_success(&sent);
    let mut expected = confirmed_lines(N);
    expected.push("all messages confirmed".to_owned());
    assert_eq!(stdout_lines(&sent), expected, "simple_send's output");

    // The broker keeps them in its queue; it sends them to simple_recv pre-settled.
    let received = run_example(
        env!("CARGO_BIN_EXE_simple_recv"),
        &["-a", &url, "-m", &n],
        RUN_TIMEOUT,
    );
    assert_success(&received);
    let mut expected = sequence_lines(N);
    expected.push(format!("{N} messages received"));
    assert_eq!(stdout_lines(&received), expected, "simple_recv's output");
}

#[test]
fn simple_recv_waiting_on_the_c_broker_gets_what_simple_send_sends() {
    const N: u32 = 50;
    let broker = CBroker::start();
    let url = broker.url("waiting");
    let n = N.to_string();

    // simple_recv connects first and waits on the empty queue; it prints nothing until messages come, so
    // there is no ready line to wait for: the sender may start at once (a message that arrives before the
    // receiver attaches waits in the queue).
    let recv = Running::spawn(
        env!("CARGO_BIN_EXE_simple_recv"),
        &["-a", &url, "-m", &n, "-q"],
    );
    let sent = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &url, "-m", &n, "-q"],
        RUN_TIMEOUT,
    );
    assert_success(&sent);
    assert_eq!(stdout_lines(&sent), ["all messages confirmed"]);
    let (status, lines, stderr) = recv.finish(RUN_TIMEOUT);
    assert!(
        status.success(),
        "simple_recv: {status}; {lines:?}; {stderr}"
    );
    assert_eq!(lines, [format!("{N} messages received")]);
}

/// Proton C's `send` and `receive` skip SASL. Against our broker with users and `--allow-anonymous` they are
/// admitted as `anonymous` (as Proton, RabbitMQ and Qpid Dispatch admit them); without `--allow-anonymous`
/// they are refused (issue #14).
#[test]
fn proton_c_clients_that_skip_sasl_use_a_broker_with_users_only_where_anonymous_is_allowed() {
    let send = proton_c_example("send");
    let receive = proton_c_example("receive");
    let (send, receive) = (
        send.to_str().expect("a UTF-8 path"),
        receive.to_str().expect("a UTF-8 path"),
    );
    let open = support::Broker::start_with(&["--user", "alice:secret", "--allow-anonymous"]);
    let port = open.port.to_string();
    let sent = run_example(send, &["127.0.0.1", &port, "skips", "3"], RUN_TIMEOUT);
    assert_success(&sent);
    let received = run_example(receive, &["127.0.0.1", &port, "skips", "3"], RUN_TIMEOUT);
    assert_success(&received);
    assert_eq!(
        stdout_lines(&received).last().map(String::as_str),
        Some("3 messages received")
    );

    let closed = support::Broker::start_with(&["--user", "alice:secret"]);
    let port = closed.port.to_string();
    let refused = run_example(send, &["127.0.0.1", &port, "skips", "1"], RUN_TIMEOUT);
    assert!(
        !refused.status.success(),
        "refused without --allow-anonymous: {refused:?}"
    );
}
