//! Helpers shared by the example tests: a broker on a free port, and example binaries run with a bounded wait.
//!
//! Use from a test file with `mod support;`. Every wait here is bounded: a hung process is killed and the
//! test fails with what it printed so far.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a test waits for a ready line, by default.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The workspace's root folder.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("examples lives in the workspace")
}

/// One of Proton's C examples (`broker`, `send`, `receive`, `direct`), all built once per test binary by
/// `scripts/build-proton-examples.sh` into `target/proton-examples/` (or `$PROTON_EXAMPLES_DIR`) when
/// missing. Fails the test loudly without Proton's packages (`scripts/install-test-deps.sh` installs them).
pub fn proton_c_example(name: &str) -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let root = workspace_root();
        let dir = std::env::var_os("PROTON_EXAMPLES_DIR")
            .map_or_else(|| root.join("target/proton-examples"), |d| root.join(d));
        let all_built = ["broker", "send", "receive", "direct"]
            .iter()
            .all(|n| dir.join(n).is_file());
        if !all_built {
            let script = root.join("scripts/build-proton-examples.sh");
            let out = Command::new(&script)
                .current_dir(root)
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if !out.status.success() {
                return Err(format!(
                    "{} failed ({}); run scripts/install-test-deps.sh first.\nstdout:\n{}\nstderr:\n{}",
                    script.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        Ok(dir)
    });
    match dir {
        Ok(d) if d.join(name).is_file() => d.join(name),
        Ok(d) => panic!("Proton's C example {name} is not in {}", d.display()),
        Err(e) => panic!("Proton's C examples are not available: {e}"),
    }
}

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
        Running::spawn_with_env(program, args, &[])
    }

    /// [`Running::spawn`] with these environment variables set for the process.
    pub fn spawn_with_env(program: &str, args: &[&str], env: &[(&str, &str)]) -> Running {
        let mut child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
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
        // The line may go on after the address (an open broker says so).
        let addr = addr.split_whitespace().next().unwrap_or_default();
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

/// An HTTP/1.1 response read by [`http_request`].
pub struct HttpReply {
    /// The status code.
    pub status: u16,
    /// The header fields, names lowercase.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The value of header `name` (lowercase), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics (showing the body) if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: body is not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// How long an HTTP helper waits on its socket before the test fails.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends one HTTP/1.1 request to `host_port` with `Connection: close` and reads the whole response, each
/// socket operation bounded by [`HTTP_TIMEOUT`]. Panics on a socket error or a malformed response.
pub fn http_request(
    host_port: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> HttpReply {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host_port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    http_exchange(host_port, &head, body)
}

/// Writes `head` (a request line and header fields, ending with the blank line) and `body` to
/// `host_port`, and reads the whole response as [`http_request`] does. For requests `http_request` cannot
/// make, e.g. a `Content-Length` the body does not match.
pub fn http_exchange(host_port: &str, head: &str, body: &[u8]) -> HttpReply {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(host_port)
        .unwrap_or_else(|e| panic!("cannot connect to {host_port}: {e}"));
    stream
        .set_read_timeout(Some(HTTP_TIMEOUT))
        .expect("sets a read timeout");
    stream
        .set_write_timeout(Some(HTTP_TIMEOUT))
        .expect("sets a write timeout");
    stream
        .write_all(head.as_bytes())
        .expect("writes the request");
    stream.write_all(body).expect("writes the body");
    let mut reader = BufReader::new(stream);
    let (status, headers) = read_head(&mut reader);
    let mut raw = Vec::new();
    reader
        .read_to_end(&mut raw)
        .expect("reads the response body in time");
    let chunked = headers
        .iter()
        .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(&raw) } else { raw };
    HttpReply {
        status,
        headers,
        body,
    }
}

/// Reads a status line and header fields, up to the blank line.
fn read_head<R: BufRead>(reader: &mut R) -> (u16, Vec<(String, String)>) {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .expect("reads the status line in time");
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line, got {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader
            .read_line(&mut line)
            .expect("reads a header line in time");
        let field = line.trim_end();
        if field.is_empty() {
            break;
        }
        if let Some((name, value)) = field.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    (status, headers)
}

/// The payload of a chunked body [RFC 9112 §7.1].
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_line = String::from_utf8_lossy(&raw[..end]);
        let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("a chunk size, got {size_line:?}"));
        raw = &raw[end + 2..];
        if size == 0 {
            break;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[(size + 2).min(raw.len())..];
    }
    out
}

/// An open Server-Sent Events response, read line by line.
pub struct EventStream {
    reader: BufReader<std::net::TcpStream>,
    /// The response's status code.
    pub status: u16,
    /// The response's header fields, names lowercase.
    pub headers: Vec<(String, String)>,
}

impl EventStream {
    /// Sends `GET path` to `host_port` and reads the response head; the events follow.
    pub fn open(host_port: &str, path: &str) -> EventStream {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(host_port)
            .unwrap_or_else(|e| panic!("cannot connect to {host_port}: {e}"));
        stream
            .set_read_timeout(Some(HTTP_TIMEOUT))
            .expect("sets a read timeout");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_port}\r\nAccept: text/event-stream\r\n\r\n"
        );
        stream
            .write_all(request.as_bytes())
            .expect("writes the request");
        let mut reader = BufReader::new(stream);
        let (status, headers) = read_head(&mut reader);
        EventStream {
            reader,
            status,
            headers,
        }
    }

    /// The payload of the next `data:` line; panics if none comes within `timeout` or the stream ends.
    /// Other lines (chunk sizes, blank lines, comments) are skipped.
    pub fn next_data(&mut self, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut line = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no data event within {timeout:?}");
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .expect("sets a read timeout");
            line.clear();
            let n = self
                .reader
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("no data event within {timeout:?}: {e}"));
            assert!(n > 0, "the event stream ended");
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                return data.to_owned();
            }
        }
    }
}

/// Starts `web_gateway` on a free loopback port in the open mode (`--insecure-no-auth`: the handlers' tests;
/// the security layer has its own) with `extra` arguments, and waits for its ready line. Returns the process
/// (killed on drop) and the `127.0.0.1:PORT` of its HTTP listener.
pub fn start_open_gateway(extra: &[&str]) -> (Running, String) {
    let mut args = vec!["--listen", "127.0.0.1:0", "--insecure-no-auth"];
    args.extend_from_slice(extra);
    let mut process = Running::spawn(env!("CARGO_BIN_EXE_web_gateway"), &args);
    let rest = process.wait_for_line("web_gateway listening on http://", READY_TIMEOUT);
    let http = rest
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("an address in the ready line: {rest}"))
        .to_owned();
    (process, http)
}
