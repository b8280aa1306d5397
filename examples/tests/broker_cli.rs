//! The `broker` binary: the ready line on a free port, exit 2 on a bad argument, `--topic` in its help, a
//! clean exit on SIGTERM, within the close time-out whatever silent peers do, with clients told
//! `amqp:connection:forced` and the messages left counted.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn a_bad_argument_exits_2_with_a_message() {
    let out = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["--user", "nopassword"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("NAME:PASSWORD"), "clear error: {err}");
}

#[test]
fn help_lists_the_topic_prefix_option() {
    let out = Command::new(env!("CARGO_BIN_EXE_broker"))
        .arg("--help")
        .output()
        .expect("runs");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--topic <PREFIX>"), "listed: {help}");
}

#[cfg(unix)]
#[test]
fn prints_one_ready_line_and_stops_cleanly_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_broker"))
        .args(["-a", "127.0.0.1:0", "-t", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("reads");
    let addr = line
        .trim()
        .strip_prefix("broker listening on 127.0.0.1:")
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the ready line");
    assert!(
        addr.parse::<u16>().is_ok_and(|p| p != 0),
        "a real port: {line}"
    );
    std::net::TcpStream::connect(format!("127.0.0.1:{addr}")).expect("accepts connections");
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("waits") {
            assert!(status.success(), "clean exit: {status}");
            break;
        }
        assert!(Instant::now() < deadline, "stopped in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Silent peers (a bare TCP connection, one that sent only the AMQP header, one that sent only the SASL
/// header, one stopped with SIGSTOP after opening a consumer) do not hold SIGTERM up: the broker closes
/// every connection and exits 0 within its close time-out, and says how many messages were still queued.
#[cfg(unix)]
#[test]
fn sigterm_exits_in_bounded_time_whatever_the_peers_do() {
    use std::io::Write as _;

    let mut broker = support::Running::spawn(
        env!("CARGO_BIN_EXE_broker"),
        &["-a", "127.0.0.1:0", "-t", "2"],
    );
    let ready = broker.wait_for_line("broker listening on ", Duration::from_secs(30));
    let addr = ready
        .split_whitespace()
        .next()
        .expect("an address")
        .to_owned();
    let sent = support::run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &format!("amqp://{addr}/held"), "-m", "50", "-q"],
        Duration::from_secs(30),
    );
    support::assert_success(&sent);
    // A consumer that got the one message there is and waits for another: told why it is closed.
    let one = support::run_example(
        env!("CARGO_BIN_EXE_simple_send"),
        &["-a", &format!("amqp://{addr}/one"), "-m", "1", "-q"],
        Duration::from_secs(30),
    );
    support::assert_success(&one);
    let mut waiting = support::Running::spawn(
        env!("CARGO_BIN_EXE_simple_recv"),
        &["-a", &format!("amqp://{addr}/one"), "-m", "2"],
    );
    waiting.wait_for_line("", Duration::from_secs(30));
    let bare = std::net::TcpStream::connect(&addr).expect("connects");
    let mut amqp = std::net::TcpStream::connect(&addr).expect("connects");
    amqp.write_all(b"AMQP\x00\x01\x00\x00").expect("writes");
    let mut sasl = std::net::TcpStream::connect(&addr).expect("connects");
    sasl.write_all(b"AMQP\x03\x01\x00\x00").expect("writes");
    // A consumer that takes 10 of the 50 and then stops answering anything.
    let mut frozen = support::Running::spawn(
        env!("CARGO_BIN_EXE_simple_recv"),
        &["-a", &format!("amqp://{addr}/held"), "-m", "1000"],
    );
    frozen.wait_for_line("", Duration::from_secs(30));
    let stopped = Command::new("kill")
        .args(["-STOP", &frozen.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(stopped.success());
    let status = Command::new("kill")
        .args(["-TERM", &broker.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let (status, _, stderr) = broker.finish(Duration::from_secs(15));
    let _ = Command::new("kill")
        .args(["-CONT", &frozen.id().to_string()])
        .status();
    drop((bare, amqp, sasl));
    assert!(status.success(), "clean exit: {status}; {stderr}");
    let (status, _, told) = waiting.finish(Duration::from_secs(15));
    assert_eq!(status.code(), Some(1), "{told}");
    assert!(told.contains("amqp:connection:forced"), "{told}");
    assert!(
        stderr.contains("messages still queued"),
        "the count is logged: {stderr}"
    );
}
