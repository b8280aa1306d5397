//! The first half of Proton's example set, run as binaries: helloworld, simple_send/simple_recv,
//! direct_send/direct_recv, client/server. Each runs against a broker started on port 0 (or against each other),
//! with bounded waits, and its output lines and exit status are checked.

mod support;

use std::time::Duration;

use support::{
    assert_success, free_port, run_example, stdout_lines, Broker, Running, READY_TIMEOUT,
};

const RUN: Duration = Duration::from_secs(30);

fn sequence_lines(n: u32) -> Vec<String> {
    (1..=n).map(|i| format!("{{\"sequence\": {i}}}")).collect()
}

#[test]
fn helloworld_goes_through_the_broker() {
    let broker = Broker::start();
    let out = run_example(
        env!("CARGO_BIN_EXE_helloworld"),
        &["-a", &broker.url("hello")],
        RUN,
    );
    assert_success(&out);
    assert_eq!(stdout_lines(&out), ["Hello World!"]);
}

#[test]
fn simple_send_then_simple_recv() {
    let broker = Broker::start();
    let url = broker.url("examples");
    let out = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &url, "-m", "10"],
        RUN,
    );
    assert_success(&out);
    let mut expected: Vec<String> = (1..=10).map(|i| format!("message {i} confirmed")).collect();
    expected.push("all messages confirmed".into());
    assert_eq!(stdout_lines(&out), expected);

    let out = run_example(
        env!("CARGO_BIN_EXE_simple_recv"),
        &["-a", &url, "-m", "10"],
        RUN,
    );
    assert_success(&out);
    let mut expected = sequence_lines(10);
    expected.push("10 messages received".into());
    assert_eq!(stdout_lines(&out), expected);
}

#[test]
fn simple_recv_waits_for_simple_send_and_quiet_prints_only_the_summary() {
    let broker = Broker::start();
    let url = broker.url("waiting");
    // The receiver first: it waits on the empty queue, then gets every message as it is sent.
    let recv = Running::spawn(env!("CARGO_BIN_EXE_simple_recv"), &["-a", &url, "-m", "50"]);
    let out = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &url, "-m", "50", "-q"],
        RUN,
    );
    assert_success(&out);
    assert_eq!(stdout_lines(&out), ["all messages confirmed"]);
    let (status, lines, stderr) = recv.finish(RUN);
    assert!(status.success(), "simple_recv: {status}; {stderr}");
    let mut expected = sequence_lines(50);
    expected.push("50 messages received".into());
    assert_eq!(lines, expected);

    let out = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &url, "-m", "5", "-q"],
        RUN,
    );
    assert_success(&out);
    let out = run_example(
        env!("CARGO_BIN_EXE_simple_recv"),
        &["-a", &url, "-m", "5", "--quiet"],
        RUN,
    );
    assert_success(&out);
    assert_eq!(stdout_lines(&out), ["5 messages received"]);
}

#[test]
fn simple_recv_accepts_what_it_received() {
    // Three sent, two received by the first simple_recv: the third is still there for the next one, and the
    // first two are gone (accepted, not redelivered).
    let broker = Broker::start();
    let url = broker.url("accepted");
    let out = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &url, "-m", "3", "-q"],
        RUN,
    );
    assert_success(&out);
    let out = run_example(
        env!("CARGO_BIN_EXE_simple_recv"),
        &["-a", &url, "-m", "2"],
        RUN,
    );
    assert_success(&out);
    let out = run_example(
        env!("CARGO_BIN_EXE_simple_recv"),
        &["-a", &url, "-m", "1"],
        RUN,
    );
    assert_success(&out);
    assert_eq!(
        stdout_lines(&out),
        ["{\"sequence\": 3}", "1 messages received"]
    );
}

#[test]
fn direct_send_serves_simple_recv() {
    let mut send = Running::spawn(
        env!("CARGO_BIN_EXE_direct_send"),
        &["-a", "amqp://127.0.0.1:0/examples", "-m", "20"],
    );
    let addr = send.wait_for_line("listening on ", READY_TIMEOUT);
    let out = run_example(
        env!("CARGO_BIN_EXE_simple_recv"),
        &["-a", &format!("amqp://{addr}/examples"), "-m", "20"],
        RUN,
    );
    assert_success(&out);
    let mut expected = sequence_lines(20);
    expected.push("20 messages received".into());
    assert_eq!(stdout_lines(&out), expected);
    let (status, lines, stderr) = send.finish(RUN);
    assert!(status.success(), "direct_send: {status}; {stderr}");
    let mut expected = vec![format!("listening on {addr}")];
    expected.extend((1..=20).map(|i| format!("message {i} confirmed")));
    expected.push("all messages confirmed".into());
    assert_eq!(lines, expected);
}

#[test]
fn direct_recv_receives_from_simple_send() {
    let mut recv = Running::spawn(
        env!("CARGO_BIN_EXE_direct_recv"),
        &["-a", "amqp://127.0.0.1:0/examples", "-m", "20", "-q"],
    );
    let addr = recv.wait_for_line("listening on ", READY_TIMEOUT);
    let out = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &format!("amqp://{addr}/examples"), "-m", "20", "-q"],
        RUN,
    );
    assert_success(&out);
    assert_eq!(stdout_lines(&out), ["all messages confirmed"]);
    let (status, lines, stderr) = recv.finish(RUN);
    assert!(status.success(), "direct_recv: {status}; {stderr}");
    assert_eq!(
        lines,
        [
            format!("listening on {addr}"),
            "20 messages received".into()
        ]
    );
}

#[test]
fn direct_recv_prints_bodies() {
    let mut recv = Running::spawn(
        env!("CARGO_BIN_EXE_direct_recv"),
        &["-a", "127.0.0.1:0", "-m", "3"],
    );
    let addr = recv.wait_for_line("listening on ", READY_TIMEOUT);
    let out = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &format!("amqp://{addr}/examples"), "-m", "3", "-q"],
        RUN,
    );
    assert_success(&out);
    let (status, lines, stderr) = recv.finish(RUN);
    assert!(status.success(), "direct_recv: {status}; {stderr}");
    let mut expected = vec![format!("listening on {addr}")];
    expected.extend(sequence_lines(3));
    expected.push("3 messages received".into());
    assert_eq!(lines, expected);
}

#[test]
fn client_and_server_do_request_reply() {
    let broker = Broker::start();
    let url = broker.url("requests");
    let mut server = Running::spawn(env!("CARGO_BIN_EXE_server"), &["-a", &url]);
    assert_eq!(
        server.wait_for_line("server listening on ", READY_TIMEOUT),
        "requests"
    );
    let out = run_example(env!("CARGO_BIN_EXE_client"), &["-a", &url], RUN);
    assert_success(&out);
    let lines = [
        "Twas brillig, and the slithy toves",
        "Did gire and gymble in the wabe.",
        "All mimsy were the borogroves,",
        "And the mome raths outgrabe.",
    ];
    let mut expected: Vec<String> = lines
        .iter()
        .map(|l| format!("{l} => {}", l.to_uppercase()))
        .collect();
    expected.push("4 replies received".into());
    assert_eq!(stdout_lines(&out), expected);

    // Requests from the command line; a second client gets its own reply queue.
    let out = run_example(
        env!("CARGO_BIN_EXE_client"),
        &["-a", &url, "hello", "a b c"],
        RUN,
    );
    assert_success(&out);
    assert_eq!(
        stdout_lines(&out),
        ["hello => HELLO", "a b c => A B C", "2 replies received"]
    );
    let out = run_example(env!("CARGO_BIN_EXE_client"), &["-a", &url, "-q", "x"], RUN);
    assert_success(&out);
    assert_eq!(stdout_lines(&out), ["1 replies received"]);

    // The server saw every request and is still running.
    for _ in 0..7 {
        assert!(server.next_line(READY_TIMEOUT).is_some(), "server output");
    }
    assert!(server.seen.contains(&"hello => HELLO".to_owned()));
    server.kill();
}

const CLIENTS: [(&str, &str); 5] = [
    ("helloworld", env!("CARGO_BIN_EXE_helloworld")),
    ("simple_send", env!("CARGO_BIN_EXE_simple_send")),
    ("simple_recv", env!("CARGO_BIN_EXE_simple_recv")),
    ("client", env!("CARGO_BIN_EXE_client")),
    ("server", env!("CARGO_BIN_EXE_server")),
];

const ALL: [(&str, &str); 7] = [
    ("helloworld", env!("CARGO_BIN_EXE_helloworld")),
    ("simple_send", env!("CARGO_BIN_EXE_simple_send")),
    ("simple_recv", env!("CARGO_BIN_EXE_simple_recv")),
    ("client", env!("CARGO_BIN_EXE_client")),
    ("server", env!("CARGO_BIN_EXE_server")),
    ("direct_send", env!("CARGO_BIN_EXE_direct_send")),
    ("direct_recv", env!("CARGO_BIN_EXE_direct_recv")),
];

#[test]
fn a_connection_failure_is_one_line_and_exit_1() {
    let url = format!("amqp://127.0.0.1:{}/examples", free_port());
    for (name, program) in CLIENTS {
        let out = run_example(program, &["-a", &url], RUN);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr}");
        assert!(
            stderr.starts_with(&format!("{name}: ")) && stderr.contains("refused"),
            "{name}: a clear error: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert!(out.stdout.is_empty(), "{name}: no output");
    }
}

#[test]
fn a_port_in_use_is_one_line_and_exit_1() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let url = format!("amqp://{}/examples", taken.local_addr().expect("addr"));
    for (name, program) in [
        ("direct_send", env!("CARGO_BIN_EXE_direct_send")),
        ("direct_recv", env!("CARGO_BIN_EXE_direct_recv")),
    ] {
        let out = run_example(program, &["-a", &url], RUN);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr}");
        assert!(stderr.contains("cannot listen"), "{name}: {stderr}");
    }
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    for (name, program) in ALL {
        for args in [
            &["--no-such-option"][..],
            &["-a", "ftp://127.0.0.1/examples"],
        ] {
            let out = run_example(program, args, RUN);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {stderr}");
            assert!(stderr.contains("error:"), "{name} {args:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        }
    }
    for (name, program) in [
        ("simple_send", env!("CARGO_BIN_EXE_simple_send")),
        ("simple_recv", env!("CARGO_BIN_EXE_simple_recv")),
        ("direct_send", env!("CARGO_BIN_EXE_direct_send")),
        ("direct_recv", env!("CARGO_BIN_EXE_direct_recv")),
    ] {
        let out = run_example(program, &["-m", "many"], RUN);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains("--messages"), "{name}: {stderr}");
    }
}
