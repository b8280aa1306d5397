//! Qpid Proton 0.37 peers as child processes: the C examples (`broker`, `send`, `receive`, `direct`, built by
//! `scripts/build-proton-examples.sh`) and python-qpid-proton scripts (`integration-tests/proton/`), all on
//! 127.0.0.1.
//!
//! Long-running peers (the C `broker` and `direct`, the Python broker) stop when the test process closes
//! their standard input, as every peer of [`super`] does: the C examples never read it, so they run under a
//! small `sh` wrapper that kills the example (by its PID) at end of input; the Python broker reads its input
//! itself. Short-lived clients exit by themselves and are killed by PID if they overrun their time.
//!
//! Our facade clients as both Proton test binaries drive them ([`send_all`], [`send`], [`receive`]) are
//! here too.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nucleon::{ConnectionOptions, ContainerHandle, DeliveryMode, Message, Outcome, SenderOptions};

use super::{free_port, workspace_root};
use crate::client::Clients;
use crate::python::{require_proton, PYTHON};

/// Runs a command until its standard input closes, then kills it by PID; prints `exited N` when the command
/// ends by itself. The command's own input is `/dev/null`.
const UNTIL_STDIN_CLOSES: &str = r#"exec 3<&0
"$@" </dev/null &
pid=$!
{ cat <&3 >/dev/null; kill "$pid" 2>/dev/null; } >/dev/null 2>&1 &
exec 3<&-
wait "$pid"
status=$?
echo "exited $status"
exit $status"#;

/// A running Proton process whose output is collected line by line (standard error lines prefixed with
/// `stderr: `). Dropping it closes its standard input, waits (bounded) and then kills it by PID.
#[derive(Debug)]
pub struct ProtonProcess {
    command: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    text: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

/// How a [`ProtonProcess`] ended and everything it printed.
#[derive(Debug)]
pub struct Finished {
    /// The command line, for messages.
    pub command: String,
    /// Its exit status; `None` when it was killed for running too long.
    pub status: Option<ExitStatus>,
    /// Everything it printed (standard error lines prefixed with `stderr: `).
    pub output: String,
}

impl Finished {
    /// The printed lines.
    pub fn lines(&self) -> Vec<&str> {
        self.output.lines().collect()
    }

    /// Fails the test, showing the output, unless the process exited with status 0.
    pub fn assert_success(&self) {
        assert!(self.status.is_some_and(|s| s.success()), "{self}");
    }
}

impl std::fmt::Display for Finished {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self
            .status
            .map_or_else(|| "killed: did not exit in time".into(), |s| s.to_string());
        write!(f, "`{}` ({status}) printed:\n{}", self.command, self.output)
    }
}

impl ProtonProcess {
    /// Starts `command` with piped standard input, output and error.
    pub fn spawn(mut command: Command) -> ProtonProcess {
        let text = format!("{command:?}");
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {text}: {e}"));
        let stdin = child.stdin.take();
        let collected = Arc::new(Mutex::new(String::new()));
        let (tx, lines) = mpsc::channel();
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        let mut readers = Vec::new();
        for (stream, prefix) in streams.into_iter().zip(["", "stderr: "]) {
            let Some(stream) = stream else { continue };
            let (collected, tx) = (Arc::clone(&collected), tx.clone());
            readers.push(thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { break };
                    let line = format!("{prefix}{line}");
                    if let Ok(mut t) = collected.lock() {
                        t.push_str(&line);
                        t.push('\n');
                    }
                    let _ = tx.send(line);
                }
            }));
        }
        ProtonProcess {
            command: text,
            child,
            stdin,
            lines,
            text: collected,
            readers,
        }
    }

    /// Everything printed so far.
    pub fn output(&self) -> String {
        self.text.lock().map(|t| t.clone()).unwrap_or_default()
    }

    /// Waits up to `timeout` for a line that satisfies `want`, and returns it; an error tells what was
    /// printed instead.
    pub fn wait_line(
        &mut self,
        timeout: Duration,
        want: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if want(&line) => return Ok(line),
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "{}: no expected line ({e}); printed:\n{}",
                        self.command,
                        self.output()
                    ))
                }
            }
        }
    }

    /// Waits up to `timeout` for the process to exit by itself (killing it by PID after that), and returns
    /// how it ended.
    pub fn finish(mut self, timeout: Duration) -> Finished {
        let deadline = Instant::now() + timeout;
        let exited = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break true,
                Err(mpsc::RecvTimeoutError::Timeout) => break false,
            }
        };
        if !exited {
            let _ = self.child.kill();
        }
        let status = self.child.wait().ok().filter(|_| exited);
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        Finished {
            command: self.command.clone(),
            status,
            output: self.output(),
        }
    }
}

impl Drop for ProtonProcess {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => thread::sleep(Duration::from_millis(20)),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The folder with Proton's C examples, built (or found up to date) by `scripts/build-proton-examples.sh`
/// once per test binary. Fails the test loudly if they cannot be built.
pub fn c_examples() -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let root = workspace_root();
        let dir = root.join("target").join("proton-examples");
        let script = root.join("scripts/build-proton-examples.sh");
        let out = Command::new(&script)
            .current_dir(&root)
            .env("PROTON_EXAMPLES_DIR", &dir)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if out.status.success() {
            Ok(dir)
        } else {
            Err(format!(
                "{} failed ({}):\n{}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    match dir {
        Ok(d) => d.clone(),
        Err(e) => {
            panic!("Proton's C examples are required (run scripts/install-test-deps.sh): {e}")
        }
    }
}

/// A C example under the wrapper that stops it when our end of its standard input closes.
fn c_example_until_stdin_closes(name: &str, args: &[String]) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(UNTIL_STDIN_CLOSES)
        .arg("sh")
        .arg(c_examples().join(name))
        .args(args);
    command
}

/// Starts a listening C example (`broker` or `direct`, `NAME 127.0.0.1 PORT EXTRA...`) on a free port,
/// retrying on another port if one was taken meanwhile, and waits for its `listening on PORT` line. Returns
/// it and its port; it stops when the returned process is dropped.
pub fn start_c_listener(name: &str, extra: &[String]) -> (ProtonProcess, u16) {
    let mut failures = Vec::new();
    for _ in 0..3 {
        let port = free_port();
        let mut args = vec!["127.0.0.1".to_owned(), port.to_string()];
        args.extend_from_slice(extra);
        let mut process = ProtonProcess::spawn(c_example_until_stdin_closes(name, &args));
        let listening = format!("listening on {port}");
        match process.wait_line(Duration::from_secs(20), |l| {
            l == listening || l.starts_with("exited ")
        }) {
            Ok(line) if line == listening => return (process, port),
            Ok(_) => failures.push(process.output()),
            Err(e) => failures.push(e),
        }
    }
    panic!("Proton's C {name} did not start:\n{}", failures.join("\n"));
}

/// Proton's C `broker` example, one per test binary, on 127.0.0.1.
#[derive(Debug)]
pub struct CBroker {
    /// Its port on 127.0.0.1.
    pub port: u16,
    _process: Mutex<ProtonProcess>,
}

impl CBroker {
    /// The test binary's C broker, started on first use. Its queues live as long as it does, so each test
    /// uses addresses of its own.
    pub fn shared() -> &'static CBroker {
        static PEER: OnceLock<CBroker> = OnceLock::new();
        PEER.get_or_init(|| {
            let (process, port) = start_c_listener("broker", &[]);
            CBroker {
                port,
                _process: Mutex::new(process),
            }
        })
    }

    /// `amqp://127.0.0.1:PORT/ADDRESS`.
    pub fn url(&self, address: &str) -> String {
        format!("amqp://127.0.0.1:{}/{address}", self.port)
    }
}

/// Starts Proton's C `direct` example on a free port: it takes one connection, receives `count` messages on
/// a link we open as sender (accepting each and printing its body) or sends `count` `{"sequence": n}`
/// messages to a link we open as receiver, then exits (`exited 0`). Returns it and its port.
pub fn c_direct(address: &str, count: usize) -> (ProtonProcess, u16) {
    start_c_listener("direct", &[address.to_owned(), count.to_string()])
}

/// Runs Proton's C `send` or `receive` example (`NAME 127.0.0.1 PORT ADDRESS COUNT`) to its end, killing it
/// by PID after `timeout`.
pub fn run_c_client(
    name: &str,
    port: u16,
    address: &str,
    count: usize,
    timeout: Duration,
) -> Finished {
    let mut command = Command::new(c_examples().join(name));
    command
        .arg("127.0.0.1")
        .arg(port.to_string())
        .arg(address)
        .arg(count.to_string());
    ProtonProcess::spawn(command).finish(timeout)
}

/// `integration-tests/proton/SCRIPT ARGS...` under Debian's Python (checked to have Proton first).
pub fn python_script(script: &str, args: &[String]) -> Command {
    require_proton();
    let path = workspace_root()
        .join("integration-tests")
        .join("proton")
        .join(script);
    let mut command = Command::new(PYTHON);
    // Not isolated (`-I`): the existing scripts import their neighbours (`interop.py`) from their folder.
    command
        .arg(path)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1");
    command
}

/// The Python test broker (`integration-tests/proton/pybroker.py`, a python-qpid-proton `Container` with
/// queues and dynamic sources), one per test binary, on 127.0.0.1.
#[derive(Debug)]
pub struct PyBroker {
    /// Its port on 127.0.0.1.
    pub port: u16,
    _process: Mutex<ProtonProcess>,
}

impl PyBroker {
    /// The test binary's Python broker, started on first use. Fails the test if it cannot start.
    pub fn shared() -> &'static PyBroker {
        static PEER: OnceLock<Result<PyBroker, String>> = OnceLock::new();
        let peer = PEER.get_or_init(|| {
            let mut failures = Vec::new();
            for _ in 0..3 {
                let port = free_port();
                let mut process =
                    ProtonProcess::spawn(python_script("pybroker.py", &[port.to_string()]));
                let ready = format!("listening on {port}");
                match process.wait_line(Duration::from_secs(20), |l| l == ready) {
                    Ok(_) => {
                        return Ok(PyBroker {
                            port,
                            _process: Mutex::new(process),
                        })
                    }
                    Err(e) => failures.push(e),
                }
            }
            Err(failures.join("\n"))
        });
        match peer {
            Ok(p) => p,
            Err(e) => panic!("the Python test broker did not start: {e}"),
        }
    }

    /// `amqp://[USER:PASSWORD@]127.0.0.1:PORT/ADDRESS`.
    pub fn url(&self, user: Option<(&str, &str)>, address: &str) -> String {
        match user {
            Some((u, p)) => format!("amqp://{u}:{p}@127.0.0.1:{}/{address}", self.port),
            None => format!("amqp://127.0.0.1:{}/{address}", self.port),
        }
    }
}

/// The longest the Proton interop tests wait for one exchange with a peer (each wait fails the test past it).
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// Our facade clients against a Proton peer, connecting with `connection`, each wait bounded by [`TIMEOUT`].
pub fn clients(connection: ConnectionOptions) -> Clients {
    Clients {
        connection,
        timeout: TIMEOUT,
    }
}

/// Sends `messages` one at a time in `mode` on a sender of our own to `url` and returns their outcomes; a
/// Proton peer such as `direct` may close the connection once it has every message, which is no failure.
pub async fn send_all(
    c: &ContainerHandle,
    url: &str,
    connection: ConnectionOptions,
    mode: DeliveryMode,
    messages: Vec<Message>,
) -> Vec<Outcome> {
    let options = SenderOptions::new().delivery_mode(mode);
    clients(connection)
        .send_all_to_closing_peer(c, url, options, messages)
        .await
}

/// [`send_all`] with default connection options, at least once.
pub async fn send(c: &ContainerHandle, url: &str, messages: Vec<Message>) -> Vec<Outcome> {
    send_all(
        c,
        url,
        ConnectionOptions::default(),
        DeliveryMode::AtLeastOnce,
        messages,
    )
    .await
}

/// Receives `n` messages from `url` (credit window `window`, default connection options), accepting each.
pub async fn receive(c: &ContainerHandle, url: &str, n: usize, window: u32) -> Vec<Message> {
    clients(ConnectionOptions::default())
        .receive(c, url, n, window)
        .await
}
