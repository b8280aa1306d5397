//! Proton's clients against our `direct_recv` and `direct_send` binaries, with no broker in between
//! (issue #7: "their send/receive against ... our direct examples"):
//!
//! * Qpid Proton C's `send` and `receive` examples (built by `scripts/build-proton-examples.sh`);
//! * python-qpid-proton's `client_send.py` and `pyclient.py recv` (`integration-tests/proton/`, run with
//!   Debian's `/usr/bin/python3`), which print the outcome, or the body, of every message.
//!
//! Each test starts our binary with `-a amqp://127.0.0.1:0/examples`, reads the port from its
//! `listening on HOST:PORT` line, runs the Proton client with a bounded wait, and checks both sides' output.

mod support;

use std::time::Duration;

use support::{
    assert_success, proton_c_example, run_example, stdout_lines, workspace_root, Running,
};

const N: u32 = 1000;
const TIMEOUT: Duration = Duration::from_secs(60);
const PYTHON: &str = "/usr/bin/python3";

/// One of our direct examples, listening on a free port; returns it and its `host:port`.
fn direct(program: &str) -> (Running, String) {
    let n = N.to_string();
    let mut ours = Running::spawn(
        program,
        &["-a", "amqp://127.0.0.1:0/examples", "-m", &n, "-q"],
    );
    let host_port = ours.wait_for_line("listening on ", TIMEOUT);
    (ours, host_port)
}

fn python_script(name: &str) -> String {
    workspace_root()
        .join("integration-tests/proton")
        .join(name)
        .to_str()
        .expect("a UTF-8 path")
        .to_owned()
}

fn port_of(host_port: &str) -> &str {
    host_port.rsplit(':').next().expect("host:port")
}

/// Checks that our binary printed `last` as its last line and exited 0.
fn assert_ours(ours: Running, last: &str) {
    let (status, lines, stderr) = ours.finish(TIMEOUT);
    assert!(
        status.success(),
        "{status}; stdout {lines:?}; stderr {stderr}"
    );
    assert_eq!(lines.last().map(String::as_str), Some(last), "{lines:?}");
}

#[test]
fn proton_c_send_to_our_direct_recv() {
    let (ours, host_port) = direct(env!("CARGO_BIN_EXE_direct_recv"));
    let send = proton_c_example("send");
    let out = run_example(
        send.to_str().expect("a UTF-8 path"),
        &["127.0.0.1", port_of(&host_port), "examples", &N.to_string()],
        TIMEOUT,
    );
    assert_success(&out);
    assert_eq!(
        stdout_lines(&out).last().map(String::as_str),
        Some(format!("{N} messages sent and acknowledged").as_str())
    );
    assert_ours(ours, &format!("{N} messages received"));
}

#[test]
fn proton_c_receive_from_our_direct_send() {
    let (ours, host_port) = direct(env!("CARGO_BIN_EXE_direct_send"));
    let receive = proton_c_example("receive");
    let out = run_example(
        receive.to_str().expect("a UTF-8 path"),
        &["127.0.0.1", port_of(&host_port), "examples", &N.to_string()],
        TIMEOUT,
    );
    assert_success(&out);
    assert_eq!(
        stdout_lines(&out).last().map(String::as_str),
        Some(format!("{N} messages received").as_str())
    );
    assert_ours(ours, "all messages confirmed");
}

#[test]
fn python_proton_send_to_our_direct_recv() {
    let (ours, host_port) = direct(env!("CARGO_BIN_EXE_direct_recv"));
    let out = run_example(
        PYTHON,
        &[
            &python_script("client_send.py"),
            &format!("amqp://{host_port}"),
            "examples",
            &N.to_string(),
        ],
        TIMEOUT,
    );
    assert_success(&out);
    let outcomes: Vec<String> = stdout_lines(&out)
        .into_iter()
        .filter(|l| l.starts_with("outcome "))
        .collect();
    let expected: Vec<String> = (0..N).map(|i| format!("outcome {i} ACCEPTED")).collect();
    assert_eq!(outcomes, expected);
    assert_ours(ours, &format!("{N} messages received"));
}

#[test]
fn python_proton_receive_from_our_direct_send() {
    let (ours, host_port) = direct(env!("CARGO_BIN_EXE_direct_send"));
    let out = run_example(
        PYTHON,
        &[
            &python_script("pyclient.py"),
            "recv",
            &format!("amqp://{host_port}"),
            "examples",
            &N.to_string(),
        ],
        TIMEOUT,
    );
    assert_success(&out);
    let received: Vec<String> = stdout_lines(&out)
        .into_iter()
        .filter(|l| l.starts_with("{\"index\""))
        .collect();
    let expected: Vec<String> = (0..N)
        .map(|i| format!("{{\"index\": {i}, \"body\": {{\"sequence\": {}}}}}", i + 1))
        .collect();
    assert_eq!(received, expected);
    assert_ours(ours, "all messages confirmed");
}
