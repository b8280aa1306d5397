//! The second half of the client examples, each run as a process against a broker on a free port:
//! multithreaded_client, multithreaded_client_flow_control, scheduled_send, reconnect_client (across a broker
//! restart on the same port, and with failover), queue_browser and flow_control (direct, no broker).

mod support;

use std::time::Duration;

use support::{assert_success, free_port, run_example, stdout_lines, Broker, Running};

const TIMEOUT: Duration = Duration::from_secs(30);

fn last_line(lines: &[String]) -> &str {
    lines.last().map(String::as_str).unwrap_or_default()
}

#[test]
fn multithreaded_client_sends_and_receives_from_user_threads() {
    let broker = Broker::start();
    let out = run_example(
        env!("CARGO_BIN_EXE_multithreaded_client"),
        &["-a", &broker.url("mt"), "-m", "60", "-t", "3"],
        TIMEOUT,
    );
    assert_success(&out);
    let lines = stdout_lines(&out);
    assert_eq!(last_line(&lines), "60 messages sent, 60 received");
    let sent = lines.iter().filter(|l| l.starts_with("sent \"")).count();
    let received = lines
        .iter()
        .filter(|l| l.starts_with("received \""))
        .count();
    assert_eq!((sent, received), (60, 60), "{lines:?}");
    // Every sender thread took part.
    for t in 0..3 {
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with(&format!("from thread {t}\""))),
            "thread {t}: {lines:?}"
        );
    }
}

#[test]
fn multithreaded_client_quiet_prints_only_the_summary() {
    let broker = Broker::start();
    let out = run_example(
        env!("CARGO_BIN_EXE_multithreaded_client"),
        &["-a", &broker.host_port(), "-m", "500", "-q"],
        TIMEOUT,
    );
    assert_success(&out);
    assert_eq!(stdout_lines(&out), ["500 messages sent, 500 received"]);
}

#[test]
fn multithreaded_client_flow_control_grants_credit_from_the_receiving_threads() {
    let broker = Broker::start();
    let out = run_example(
        env!("CARGO_BIN_EXE_multithreaded_client_flow_control"),
        &["-a", &broker.url("mtfc"), "-m", "40", "-t", "2"],
        TIMEOUT,
    );
    assert_success(&out);
    let lines = stdout_lines(&out);
    let summary = last_line(&lines);
    let buffered: usize = summary
        .strip_prefix("40 messages sent, 40 received, at most ")
        .and_then(|r| r.strip_suffix(" buffered"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("summary: {summary}"));
    // One credit per message a receiving thread asked for: never more buffered than threads.
    assert!((1..=2).contains(&buffered), "{summary}");
    let received = lines
        .iter()
        .filter(|l| l.starts_with("received \""))
        .count();
    assert_eq!(received, 40, "{lines:?}");
}

#[test]
fn scheduled_send_sends_at_intervals_until_the_time_runs_out() {
    let broker = Broker::start();
    let out = run_example(
        env!("CARGO_BIN_EXE_scheduled_send"),
        &["-a", &broker.url("sched"), "-t", "0.65", "-i", "0.1"],
        TIMEOUT,
    );
    assert_success(&out);
    let lines = stdout_lines(&out);
    assert!(lines.iter().any(|l| l == "timeout"), "{lines:?}");
    let sent: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("sent message "))
        .collect();
    // About one per 0.1 s over 0.65 s; the scheduler may run a little late, never early.
    assert!((3..=6).contains(&sent.len()), "{lines:?}");
    assert_eq!(
        last_line(&lines),
        format!("{0} messages sent, {0} confirmed", sent.len())
    );
    // They are on the queue: a browser sees them all.
    let out = run_example(
        env!("CARGO_BIN_EXE_queue_browser"),
        &["-a", &broker.url("sched"), "-q"],
        TIMEOUT,
    );
    assert_success(&out);
    assert_eq!(
        stdout_lines(&out),
        [format!("{} messages browsed", sent.len())]
    );
}

#[test]
fn scheduled_send_stops_after_n_messages() {
    let broker = Broker::start();
    let out = run_example(
        env!("CARGO_BIN_EXE_scheduled_send"),
        &[
            "-a",
            &broker.url("sched-n"),
            "-m",
            "4",
            "-t",
            "20",
            "-i",
            "0.01",
            "-q",
        ],
        TIMEOUT,
    );
    assert_success(&out);
    assert_eq!(stdout_lines(&out), ["4 messages sent, 4 confirmed"]);
}

#[test]
fn queue_browser_shows_the_queue_without_consuming_it() {
    let broker = Broker::start();
    let url = broker.url("browse");
    let out = run_example(env!("CARGO_BIN_EXE_queue_browser"), &["-a", &url], TIMEOUT);
    assert_success(&out);
    assert_eq!(stdout_lines(&out), ["0 messages browsed"]);

    let out = run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &url, "-m", "3", "-q"],
        TIMEOUT,
    );
    assert_success(&out);
    let expected = [
        r#"{"sequence": 1}"#,
        r#"{"sequence": 2}"#,
        r#"{"sequence": 3}"#,
        "3 messages browsed",
    ];
    for _ in 0..2 {
        let out = run_example(env!("CARGO_BIN_EXE_queue_browser"), &["-a", &url], TIMEOUT);
        assert_success(&out);
        assert_eq!(stdout_lines(&out), expected);
    }
    // -m caps what is browsed.
    let out = run_example(
        env!("CARGO_BIN_EXE_queue_browser"),
        &["-a", &url, "-m", "2", "-q"],
        TIMEOUT,
    );
    assert_success(&out);
    assert_eq!(stdout_lines(&out), ["2 messages browsed"]);
    // Still all there for a consumer.
    let out = run_example(
        env!("CARGO_BIN_EXE_simple_recv"),
        &["-a", &url, "-m", "3", "-q"],
        TIMEOUT,
    );
    assert_success(&out);
    assert_eq!(last_line(&stdout_lines(&out)), "3 messages received");
}

#[test]
fn reconnect_client_survives_a_broker_restart_on_the_same_port() {
    let mut broker = Broker::start();
    let port = broker.port;
    let address = format!("127.0.0.1:{port}");
    let mut client = Running::spawn(
        env!("CARGO_BIN_EXE_reconnect_client"),
        &["-a", &address, "-m", "30", "-d", "0.05"],
    );
    client.wait_for_line("connected", TIMEOUT);
    client.wait_for_line("received 5", TIMEOUT);
    broker.process.kill();
    // A new broker on the same port (an empty one: the client sends again what was lost).
    let mut second = Running::spawn(env!("CARGO_BIN_EXE_broker"), &["-a", &address]);
    let ready = second.wait_for_line("broker listening on ", TIMEOUT);
    assert_eq!(ready.split_whitespace().next(), Some(address.as_str()));
    client.wait_for_line("reconnected", TIMEOUT);
    let (status, lines, stderr) = client.finish(TIMEOUT);
    assert!(status.success(), "{status}; {lines:?}; {stderr}");
    assert_eq!(last_line(&lines), "30 messages received, 1 reconnects");
    let received: Vec<u64> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("received ")?.parse().ok())
        .collect();
    assert_eq!(
        received,
        (1..=30).collect::<Vec<_>>(),
        "in order, no gaps, no duplicates"
    );
}

#[test]
fn reconnect_client_fails_over_to_the_next_url() {
    let broker = Broker::start();
    let dead = format!("127.0.0.1:{}", free_port());
    let out = run_example(
        env!("CARGO_BIN_EXE_reconnect_client"),
        &["-a", &dead, "-f", &broker.url("failover"), "-m", "5"],
        TIMEOUT,
    );
    assert_success(&out);
    let lines = stdout_lines(&out);
    assert_eq!(lines[0], "connected", "{lines:?}");
    assert_eq!(last_line(&lines), "5 messages received, 0 reconnects");
}

#[test]
fn flow_control_drains_a_direct_link_in_rounds() {
    let out = run_example(
        env!("CARGO_BIN_EXE_flow_control"),
        &["-a", "127.0.0.1:0", "-m", "25", "-b", "10"],
        TIMEOUT,
    );
    assert_success(&out);
    let lines = stdout_lines(&out);
    let rounds: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("drain finished: "))
        .collect();
    assert_eq!(
        rounds,
        [
            "drain finished: 10 messages, 0 credits returned, credit now 0",
            "drain finished: 10 messages, 0 credits returned, credit now 0",
            "drain finished: 5 messages, 5 credits returned, credit now 0",
        ],
        "{lines:?}"
    );
    let received = lines
        .iter()
        .filter(|l| l.starts_with("received message "))
        .count();
    assert_eq!(received, 25);
    assert_eq!(
        last_line(&lines),
        "25 messages received in 3 rounds, 5 credits returned by drain"
    );
}

#[test]
fn flow_control_listens_on_the_given_port() {
    let port = free_port().to_string();
    let out = run_example(
        env!("CARGO_BIN_EXE_flow_control"),
        &[
            "-a",
            &format!("amqp://127.0.0.1:{port}/fc"),
            "-m",
            "20",
            "-q",
        ],
        TIMEOUT,
    );
    assert_success(&out);
    // An exact multiple: the last round finds the sender empty and gets all its credit back.
    assert_eq!(
        last_line(&stdout_lines(&out)),
        "20 messages received in 3 rounds, 10 credits returned by drain"
    );
}

#[test]
fn a_connection_failure_is_one_clear_line_and_exit_1() {
    let dead = format!("127.0.0.1:{}", free_port());
    let cases: [(&str, &[&str]); 5] = [
        (env!("CARGO_BIN_EXE_multithreaded_client"), &["-m", "3"]),
        (
            env!("CARGO_BIN_EXE_multithreaded_client_flow_control"),
            &["-m", "3"],
        ),
        (env!("CARGO_BIN_EXE_scheduled_send"), &["-t", "1"]),
        (env!("CARGO_BIN_EXE_queue_browser"), &[]),
        (
            env!("CARGO_BIN_EXE_reconnect_client"),
            &["--max-attempts", "2"],
        ),
    ];
    for (program, extra) in cases {
        let mut args = vec!["-a", dead.as_str()];
        args.extend_from_slice(extra);
        let out = run_example(program, &args, TIMEOUT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{program}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{program}: one line: {stderr}");
        assert!(
            stderr.contains(&dead),
            "{program}: names the address: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{program}: {stderr}");
    }
    // flow_control cannot listen on a port that is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = run_example(env!("CARGO_BIN_EXE_flow_control"), &["-a", &addr], TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bad_arguments_exit_2() {
    let cases: [(&str, &[&str]); 6] = [
        (env!("CARGO_BIN_EXE_multithreaded_client"), &["-t", "0"]),
        (
            env!("CARGO_BIN_EXE_multithreaded_client_flow_control"),
            &["-m", "x"],
        ),
        (env!("CARGO_BIN_EXE_scheduled_send"), &["-t", "soon"]),
        (
            env!("CARGO_BIN_EXE_reconnect_client"),
            &["-f", "http://nope"],
        ),
        (env!("CARGO_BIN_EXE_queue_browser"), &["--bogus"]),
        (env!("CARGO_BIN_EXE_flow_control"), &["-b", "0"]),
    ];
    for (program, args) in cases {
        let out = run_example(program, args, TIMEOUT);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{program} {args:?}: {stderr}");
        assert!(
            stderr.contains("error"),
            "{program}: a clear message: {stderr}"
        );
    }
}
