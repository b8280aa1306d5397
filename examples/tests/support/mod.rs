//! Helpers shared by the example tests: a broker on a free port, and example binaries run with a bounded wait.
//!
//! Use from a test file with `mod support;`. Every wait here is bounded: a hung process is killed and the
//! test fails with what it printed so far.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a test waits for a ready line, by default.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A port that was free a moment ago (bound on 127.0.0.1 and released), for "nobody listens here" cases.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binds a free port")
        .port()
}

/// A running process whose stdout is read line by line in the background. Killed (by PID) on drop.
pub struct Running {
    child: Child,
    lines: Receiver<String>,
    /// Every stdout line received so far through [`Running::wait_for_line`] / [`Running::next_line`].
    pub seen: Vec<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Running {
    /// Starts `program` with `args`, stdout and stderr piped.
    pub fn spawn(program: &str, args: &[&str]) -> Running {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().map(read_all);
        Running {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The next stdout line, or `None` at end of output or after `timeout`.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        let line = self.lines.recv_timeout(timeout).ok()?;
        self.seen.push(line.clone());
        Some(line)
    }

    /// Waits for a stdout line starting with `prefix` and returns the rest of it; panics (after killing the
    /// process) if it does not come within `timeout`.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return rest.to_owned();
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    self.kill();
                    let stderr = self.take_stderr();
                    panic!(
                        "no line starting with {prefix:?} within {timeout:?}; stdout so far: {:?}; stderr: {}",
                        self.seen, stderr
                    );
                }
            }
        }
    }

    /// Waits up to `timeout` for the process to exit; kills it and panics otherwise. Returns its status and
    /// all of its stdout (lines seen plus the rest) and stderr.
    pub fn finish(mut self, timeout: Duration) -> (ExitStatus, Vec<String>, String) {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waits") {
                break status;
            }
            if Instant::now() >= deadline {
                self.kill();
                while let Ok(line) = self.lines.try_recv() {
                    self.seen.push(line);
                }
                let stderr = self.take_stderr();
                panic!(
                    "still running after {timeout:?}; stdout: {:?}; stderr: {}",
                    self.seen, stderr
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The reader thread ends with the pipe, shortly after the exit.
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        let stderr = self.take_stderr();
        (status, std::mem::take(&mut self.seen), stderr)
    }

    /// Kills the process (SIGKILL, by PID) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn take_stderr(&mut self) -> String {
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

fn read_all<R: Read + Send + 'static>(mut r: R) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

/// The `broker` example binary on 127.0.0.1, on a free port. Killed on drop.
pub struct Broker {
    /// The broker process.
    pub process: Running,
    /// The port it listens on.
    pub port: u16,
}

impl Broker {
    /// Starts the broker on `127.0.0.1:0` and waits for its `broker listening on HOST:PORT` line.
    pub fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// [`Broker::start`] with extra arguments (e.g. `["--max-queue-depth", "10"]`).
    pub fn start_with(extra: &[&str]) -> Broker {
        let mut args = vec!["-a", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut process = Running::spawn(env!("CARGO_BIN_EXE_broker"), &args);
        let addr = process.wait_for_line("broker listening on ", READY_TIMEOUT);
        let port = addr
            .rsplit_once(':')
            .and_then(|(_, p)| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("a port in the ready line: {addr}"));
        Broker { process, port }
    }

    /// `host:port` of the broker.
    pub fn host_port(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The URL of `address` on this broker: `amqp://127.0.0.1:PORT/ADDRESS`.
    pub fn url(&self, address: &str) -> String {
        format!("amqp://127.0.0.1:{}/{address}", self.port)
    }
}

/// Runs `program` (usually `env!("CARGO_BIN_EXE_NAME")`) with `args` to completion, within `timeout`;
/// kills it and panics if it takes longer.
pub fn run_example(program: &str, args: &[&str], timeout: Duration) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let stdout = read_all(child.stdout.take().expect("stdout"));
    let stderr = read_all(child.stderr.take().expect("stderr"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{program} {args:?} still running after {timeout:?}; stdout: {}; stderr: {}",
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap_or_default().into_bytes(),
        stderr: stderr.join().unwrap_or_default().into_bytes(),
    }
}

/// The stdout of `output` as lines.
pub fn stdout_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Asserts `output` exited 0, showing its output otherwise.
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}; stdout: {}; stderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
