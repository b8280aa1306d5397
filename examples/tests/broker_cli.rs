//! The `broker` binary: the ready line on a free port, exit 2 on a bad argument, `--topic` in its help, a
//! clean exit on SIGTERM.

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
