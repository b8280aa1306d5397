//! Third-party peers as child processes: started by the project's own scripts on ports chosen here, on
//! loopback only, and tied to the test process that started them.
//!
//! Every peer process is started with its standard input on a pipe held by the test process and stops when
//! that pipe closes: when the [`PeerProcess`] is dropped, or when the test binary exits (the OS closes the pipe,
//! so a peer held in a `static` never outlives its tests). A peer that cannot be started fails the test with
//! what it printed; nothing here skips.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nucleon::TlsClientConfig;

use crate::certs::{ServerCert, TestCa};

pub mod proton;
pub mod rhea;

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("integration-tests lives in the workspace")
        .to_path_buf()
}

/// A scratch folder for peers' state, under the workspace's `target/`.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = workspace_root()
        .join("target")
        .join("interop")
        .join(format!("{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// A port that was free on 127.0.0.1 a moment ago, for a peer to listen on.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binds a free port")
        .port()
}

/// A running peer process. Dropping it closes its standard input, which stops it, and waits (bounded) for it
/// to exit; a peer that ignores that is killed.
#[derive(Debug)]
pub struct PeerProcess {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
}

impl PeerProcess {
    /// Starts `command` and waits up to `timeout` for a line on its standard output that contains `ready`.
    /// Returns the process and that line, or everything it printed if it exited or timed out first.
    pub fn start(
        name: &str,
        mut command: Command,
        ready: &str,
        timeout: Duration,
    ) -> Result<(PeerProcess, String), String> {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = child.stderr.take().expect("stderr is piped");
        let (etx, erx) = mpsc::channel();
        thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(stderr).read_to_string(&mut text);
            let _ = etx.send(text);
        });
        let mut process = PeerProcess {
            name: name.to_owned(),
            child,
            stdin,
        };
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains(ready) => {
                    // Keep draining its output so that it never blocks on a full pipe.
                    thread::spawn(move || rx.into_iter().for_each(drop));
                    return Ok((process, line));
                }
                Ok(line) => seen.push(line),
                Err(e) => {
                    let why = match e {
                        mpsc::RecvTimeoutError::Timeout => format!("not ready within {timeout:?}"),
                        mpsc::RecvTimeoutError::Disconnected => "exited".to_owned(),
                    };
                    process.stop();
                    let stderr = erx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
                    return Err(format!(
                        "{name} {why}.\n--- stdout\n{}\n--- stderr\n{stderr}",
                        seen.join("\n")
                    ));
                }
            }
        }
    }

    fn stop(&mut self) {
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) => thread::sleep(Duration::from_millis(50)),
            }
        }
        eprintln!("{} did not stop when asked; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private RabbitMQ 3.10 with the AMQP 1.0 plugin (`scripts/interop/rabbitmq.sh`), one per test binary. It
/// serves plain AMQP on [`RabbitMq::port`] and AMQP over TLS on [`RabbitMq::tls_port`], with a server
/// certificate for `localhost` and `127.0.0.1` from a CA made when it starts ([`TestCa`]).
#[derive(Debug)]
pub struct RabbitMq {
    /// Its AMQP port on 127.0.0.1.
    pub port: u16,
    /// Its AMQP-over-TLS port on 127.0.0.1 (TLS from the first byte, as on 5671 [AMQP 1.0 §5.2]).
    pub tls_port: u16,
    /// The private CA that signed its TLS certificate (a PEM file in its scratch folder).
    pub ca_file: PathBuf,
    _process: Mutex<PeerProcess>,
}

impl RabbitMq {
    /// The test binary's RabbitMQ, started on first use (it takes 5–10 s). Fails the test if it cannot start.
    pub fn shared() -> &'static RabbitMq {
        static PEER: OnceLock<Result<RabbitMq, String>> = OnceLock::new();
        let peer = PEER.get_or_init(|| {
            let script = workspace_root().join("scripts/interop/rabbitmq.sh");
            let dir = scratch_dir("rabbitmq");
            // RabbitMQ reads its certificates when it starts: make them now. The script copies them into
            // its folder, so this CA's own temporary folder can go when `ca` is dropped.
            let ca = TestCa::new("rabbitmq");
            let server = ca.server(ServerCert::Loopback);
            let (port, tls_port) = (free_port(), free_port());
            let mut command = Command::new(script);
            command
                .arg(&dir)
                .arg(port.to_string())
                .arg(free_port().to_string())
                .arg(free_port().to_string())
                .arg(tls_port.to_string())
                .arg(ca.ca_file())
                .arg(&server.cert)
                .arg(&server.key);
            let (process, _) =
                PeerProcess::start("RabbitMQ", command, "ready", Duration::from_secs(120))?;
            Ok(RabbitMq {
                port,
                tls_port,
                ca_file: dir.join("tls").join("ca.pem"),
                _process: Mutex::new(process),
            })
        });
        match peer {
            Ok(p) => p,
            Err(e) => {
                panic!("RabbitMQ is required (scripts/install-test-deps.sh installs it): {e}")
            }
        }
    }

    /// An AMQP URL to `address` on this broker as `guest` (`user:password@` left out when `user` is `None`).
    pub fn url(&self, user: Option<(&str, &str)>, address: &str) -> String {
        Self::url_on("amqp", self.port, user, address)
    }

    /// An `amqps://` URL to `address` on the TLS listener, by the address the certificate names.
    pub fn tls_url(&self, user: Option<(&str, &str)>, address: &str) -> String {
        Self::url_on("amqps", self.tls_port, user, address)
    }

    /// A client TLS config that trusts only the CA of this broker's certificate.
    pub fn client_tls(&self) -> TlsClientConfig {
        TlsClientConfig::builder()
            .without_system_roots()
            .ca_file(&self.ca_file)
            .build()
            .expect("a client TLS config")
    }

    fn url_on(scheme: &str, port: u16, user: Option<(&str, &str)>, address: &str) -> String {
        match user {
            Some((u, p)) => format!("{scheme}://{u}:{p}@127.0.0.1:{port}/{address}"),
            None => format!("{scheme}://127.0.0.1:{port}/{address}"),
        }
    }
}
