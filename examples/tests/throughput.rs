//! Runs the real `throughput` benchmark binary with small counts and checks its summary line, and that bad
//! arguments are refused with exit status 2.

use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_throughput");

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run the throughput binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The parts of a summary line
/// `throughput: N -> N connections, TOTAL messages of SIZE bytes, MODE: S s, R msg/s, B MB/s`.
#[derive(Debug)]
struct Summary {
    senders: u64,
    receivers: u64,
    total: u64,
    size: u64,
    mode: String,
    seconds: f64,
    rate: f64,
    mbps: f64,
}

fn number<T: std::str::FromStr>(word: Option<&str>, line: &str) -> T {
    word.and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("a number where expected in {line:?}"))
}

fn expect_word(words: &mut std::str::SplitWhitespace<'_>, want: &str, line: &str) {
    assert_eq!(words.next(), Some(want), "in {line:?}");
}

fn summary(stdout: &str) -> Summary {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("throughput: "))
        .unwrap_or_else(|| panic!("no summary line in {stdout:?}"));
    let mut w = line.split_whitespace();
    expect_word(&mut w, "throughput:", line);
    let senders = number(w.next(), line);
    expect_word(&mut w, "->", line);
    let receivers = number(w.next(), line);
    expect_word(&mut w, "connections,", line);
    let total = number(w.next(), line);
    expect_word(&mut w, "messages", line);
    expect_word(&mut w, "of", line);
    let size = number(w.next(), line);
    expect_word(&mut w, "bytes,", line);
    let mode = w
        .next()
        .and_then(|m| m.strip_suffix(':'))
        .unwrap_or_else(|| panic!("a mode in {line:?}"))
        .to_string();
    let seconds = number(w.next(), line);
    expect_word(&mut w, "s,", line);
    let rate = number(w.next(), line);
    expect_word(&mut w, "msg/s,", line);
    let mbps = number(w.next(), line);
    expect_word(&mut w, "MB/s", line);
    assert_eq!(w.next(), None, "nothing after MB/s in {line:?}");
    Summary {
        senders,
        receivers,
        total,
        size,
        mode,
        seconds,
        rate,
        mbps,
    }
}

/// Runs a benchmark that must succeed; returns its summary and its whole output.
fn bench(args: &[&str]) -> (Summary, String) {
    let out = run(args);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "throughput {args:?} failed\nstdout:\n{stdout}\nstderr:\n{}",
        text(&out.stderr)
    );
    (summary(&stdout), stdout)
}

fn check(s: &Summary, connections: u64, total: u64, size: u64, mode: &str) {
    assert_eq!(s.senders, connections);
    assert_eq!(s.receivers, connections);
    assert_eq!(s.total, total);
    assert_eq!(s.size, size);
    assert_eq!(s.mode, mode);
    assert!(s.seconds >= 0.0);
    assert!(s.rate > 0.0, "{s:?}");
    // Both figures are rounded when printed: msg/s to a whole number, MB/s to a tenth.
    let expected_mbps = s.rate * size as f64 / 1e6;
    let slack = 0.05 + 0.5 * size as f64 / 1e6 + expected_mbps * 1e-3;
    assert!(
        (s.mbps - expected_mbps).abs() <= slack,
        "MB/s agrees with msg/s: {s:?}"
    );
}

/// Every message was received, and (unsettled) every outcome arrived, by the `setup:` line.
fn check_counts(stdout: &str, received: u64, accepted: u64) {
    let setup = stdout
        .lines()
        .find(|l| l.starts_with("setup: "))
        .unwrap_or_else(|| panic!("no setup line in {stdout:?}"));
    assert!(
        setup.ends_with(&format!("{received} received, {accepted} accepted")),
        "{setup:?}"
    );
}

#[test]
fn one_to_one_unsettled() {
    let (s, out) = bench(&["--messages", "2000", "--connections", "1"]);
    check(&s, 1, 2000, 100, "unsettled");
    check_counts(&out, 2000, 2000);
    let latency = out
        .lines()
        .find(|l| l.starts_with("latency: p50 "))
        .unwrap_or_else(|| panic!("no latency line in {out:?}"));
    assert!(latency.contains("(2000 samples"), "{latency:?}");
}

#[test]
fn four_to_four_unsettled() {
    let (s, out) = bench(&["--messages", "2000", "--connections", "4"]);
    check(&s, 4, 8000, 100, "unsettled");
    check_counts(&out, 8000, 8000);
}

#[test]
fn one_to_one_presettled() {
    let (s, out) = bench(&["--messages", "2000", "--presettled"]);
    check(&s, 1, 2000, 100, "pre-settled");
    check_counts(&out, 2000, 0);
}

#[test]
fn four_to_four_presettled_with_options() {
    let (s, out) = bench(&[
        "--messages",
        "500",
        "--connections",
        "4",
        "--presettled",
        "--size",
        "1000",
        "--threads",
        "1",
        "--credit",
        "200",
    ]);
    check(&s, 4, 2000, 1000, "pre-settled");
    check_counts(&out, 2000, 0);
}

#[test]
fn client_receivers_with_a_credit_window() {
    let (s, out) = bench(&[
        "--messages",
        "2000",
        "--connections",
        "2",
        "--client-receives",
        "--credit",
        "300",
    ]);
    check(&s, 2, 4000, 100, "unsettled");
    check_counts(&out, 4000, 4000);
    assert!(out.contains("credit window 300 (ReceiverOptions::credit_window)"));
}

#[test]
fn large_messages_span_frames() {
    // Bigger than the default 64 KiB max-frame-size: each message is split into several transfer frames.
    let (s, out) = bench(&["--messages", "20", "--size", "200000"]);
    check(&s, 1, 20, 200_000, "unsettled");
    check_counts(&out, 20, 20);
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    for args in [
        &["--messages", "0"][..],
        &["--messages", "lots"],
        &["--connections", "0"],
        &["--threads", "0"],
        &["--size", "-1"],
        &["--credit", "0"],
        &["--size", "16777216", "--credit", "1000"],
        &["--frobnicate"],
        &["extra"],
    ] {
        let out = run(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn help_exits_0() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    for flag in [
        "--connections",
        "--messages",
        "--size",
        "--threads",
        "--presettled",
        "--credit",
    ] {
        assert!(stdout.contains(flag), "{flag} in --help");
    }
}
