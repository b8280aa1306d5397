//! What every listener does for a server built on nucleon (#14): TCP keepalive on accepted and dialled
//! sockets, limits on connections in total and per client address, an accept loop that backs off instead of
//! spinning when it runs out of file descriptors, logins logged and failed logins throttled per address, and
//! clients that skip SASL let in as anonymous exactly where anonymous access is allowed.
//!
//! The log lines are checked through a logger of this test binary that keeps every line; each test looks
//! only at the lines of its own listener (they name its address).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nucleon::protocol::engine::{Authenticator, PlainAuthenticator, ScramAuthenticator};
use nucleon::protocol::engine::{ScramCredential, ScramHash};
use nucleon::{
    ConnectionOptions, ContainerHandle, ListenHandler, ListenOptions, LoginThrottle,
    MessagingHandler, TcpKeepalive,
};
use nucleon_integration_tests::client::{container, first_seen, within, Identities, Opener, Seen};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

const WAIT: Duration = Duration::from_secs(20);
const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";

/// Every log line of this process, at info and above.
fn log_lines() -> &'static Mutex<Vec<(log::Level, String)>> {
    static LINES: OnceLock<Mutex<Vec<(log::Level, String)>>> = OnceLock::new();
    LINES.get_or_init(|| {
        struct Keep;
        impl log::Log for Keep {
            fn enabled(&self, m: &log::Metadata<'_>) -> bool {
                m.level() <= log::Level::Info
            }
            fn log(&self, r: &log::Record<'_>) {
                if self.enabled(r.metadata()) {
                    let line = r.args().to_string();
                    log_lines().lock().unwrap().push((r.level(), line));
                }
            }
            fn flush(&self) {}
        }
        // Before `container()`, whose env_logger then finds a logger set and leaves it.
        let _ = log::set_boxed_logger(Box::new(Keep));
        log::set_max_level(log::LevelFilter::Info);
        Mutex::new(Vec::new())
    })
}

/// The lines so far that contain every one of `parts`.
fn lines_with(parts: &[&str]) -> Vec<(log::Level, String)> {
    log_lines()
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, l)| parts.iter().all(|p| l.contains(p)))
        .cloned()
        .collect()
}

fn test_container(id: &str) -> ContainerHandle {
    log_lines();
    container(id)
}

/// Reports each accepted peer; the connections do nothing.
struct Accepts(UnboundedSender<SocketAddr>);

struct Idle;

impl MessagingHandler for Idle {}

impl ListenHandler for Accepts {
    type Handler = Idle;
    fn on_accept(&self, peer: SocketAddr) -> Idle {
        let _ = self.0.send(peer);
        Idle
    }
}

fn listen(
    c: &ContainerHandle,
    options: ListenOptions,
) -> (SocketAddr, UnboundedReceiver<SocketAddr>) {
    let (tx, rx) = unbounded_channel();
    let listener = c
        .listen_with("127.0.0.1:0", options, Accepts(tx))
        .expect("listens");
    (listener.local_addr(), rx)
}

// ----- TCP keepalive -----

/// The kernel's keepalive timer of the TCP socket from `local` to `remote`, from `/proc/net/tcp`: `Some(time
/// left)` while it runs, `None` if the socket has no timer or another one (retransmit) runs.
#[cfg(target_os = "linux")]
fn keepalive_timer(local: SocketAddr, remote: SocketAddr) -> Option<Duration> {
    fn hex(a: SocketAddr) -> String {
        let IpAddr::V4(ip) = a.ip() else {
            panic!("IPv4 only")
        };
        format!("{:08X}:{:04X}", u32::from_le_bytes(ip.octets()), a.port())
    }
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let (local, remote) = (hex(local), hex(remote));
    let row = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[1] == local && f[2] == remote)
        .unwrap_or_else(|| panic!("no socket {local} -> {remote} in /proc/net/tcp"));
    let (timer, when) = row[5].split_once(':').expect("tr:tm->when");
    // Timer 2 is the keepalive timer; its time left is in USER_HZ ticks (100 a second).
    (timer == "02").then(|| Duration::from_millis(u64::from_str_radix(when, 16).unwrap() * 10))
}

/// Waits (bounded) for the keepalive timer of `local -> remote` to run, and returns its time left.
#[cfg(target_os = "linux")]
async fn wait_keepalive(local: SocketAddr, remote: SocketAddr) -> Duration {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(left) = keepalive_timer(local, remote) {
            return left;
        }
        assert!(
            Instant::now() < deadline,
            "no keepalive timer on {local} -> {remote}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(target_os = "linux")]
#[actix_rt::test]
async fn accepted_and_dialled_sockets_have_tcp_keepalive() {
    let c = test_container("keepalive");
    // Accepted, with the default (60 s idle) and with 37 s.
    for (keepalive, idle) in [
        (TcpKeepalive::default(), Duration::from_secs(60)),
        (
            TcpKeepalive::Idle(Duration::from_secs(37)),
            Duration::from_secs(37),
        ),
    ] {
        let (addr, mut accepted) = listen(&c, ListenOptions::new().tcp_keepalive(keepalive));
        let client = TcpStream::connect(addr).await.unwrap();
        let peer = within(WAIT, "accepted", accepted.recv()).await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let left = wait_keepalive(addr, peer).await;
        assert!(
            left <= idle && left > idle - Duration::from_secs(5),
            "{left:?} left of {idle:?}"
        );
    }
    // Accepted, with keepalive off: no timer on the idle socket.
    let (addr, mut accepted) = listen(&c, ListenOptions::new().tcp_keepalive(TcpKeepalive::Off));
    let _client = TcpStream::connect(addr).await.unwrap();
    let peer = within(WAIT, "accepted", accepted.recv()).await.unwrap();
    assert_eq!(keepalive_timer(addr, peer), None);

    // Dialled, with 41 s.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let options =
        ConnectionOptions::new().tcp_keepalive(TcpKeepalive::Idle(Duration::from_secs(41)));
    let (tx, _rx) = unbounded_channel();
    c.connect(&format!("amqp://{server_addr}"), options, Opener(tx))
        .unwrap();
    let (_socket, client) = within(WAIT, "dialled", server.accept()).await.unwrap();
    let left = wait_keepalive(client, server_addr).await;
    assert!(
        left <= Duration::from_secs(41) && left > Duration::from_secs(36),
        "{left:?} left of 41 s"
    );
    c.stop();
}

// ----- connection limits -----

/// A raw client from `from`: `Some(socket)` if the listener serves it (answers the SASL header with its
/// own), `None` if it closes the socket at once.
async fn served(addr: SocketAddr, from: &str) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut stream = within(WAIT, "connect", socket.connect(addr)).await.unwrap();
    let _ = stream.write_all(&SASL_HEADER).await;
    let mut answer = [0u8; 8];
    match within(
        WAIT,
        "the listener answers or closes",
        stream.read_exact(&mut answer),
    )
    .await
    {
        Ok(_) => {
            assert_eq!(answer, SASL_HEADER);
            Some(stream)
        }
        Err(_) => None,
    }
}

#[actix_rt::test]
async fn connections_over_the_total_or_per_address_limit_are_closed_at_once() {
    let c = test_container("connection-limits");
    let (addr, _accepted) = listen(
        &c,
        ListenOptions::new()
            .max_connections(3)
            .max_connections_per_address(2),
    );
    let first = served(addr, "127.0.0.1").await.expect("1st from .1");
    let _second = served(addr, "127.0.0.1").await.expect("2nd from .1");
    assert!(served(addr, "127.0.0.1").await.is_none(), "3rd from .1");
    let _third = served(addr, "127.0.0.2").await.expect("1st from .2");
    assert!(served(addr, "127.0.0.3").await.is_none(), "4th in all");
    let refusals = lines_with(&[&format!("listener {addr}: refused a connection")]);
    assert!(
        refusals[0].1.contains("from 127.0.0.1") && refusals[0].1.contains("maximum of 2"),
        "{refusals:?}"
    );
    // The line is throttled: the second refusal, within 10 s, is only counted.
    assert_eq!(refusals.len(), 1, "{refusals:?}");

    // A connection that ends gives its place back.
    drop(first);
    let deadline = Instant::now() + WAIT;
    while served(addr, "127.0.0.3").await.is_none() {
        assert!(Instant::now() < deadline, "the place is never given back");
    }
    c.stop();
}

#[test]
fn the_default_limits_are_safe_and_unlimited_is_by_name() {
    let o = ListenOptions::default();
    assert_eq!(o.max_connections, 10_000);
    assert_eq!(o.max_connections_per_address, 1_000);
    assert_eq!(o.login_throttle, Some(LoginThrottle::default()));
    assert_eq!(o.tcp_keepalive, TcpKeepalive::Idle(Duration::from_secs(60)));
    assert_eq!(
        ConnectionOptions::default().tcp_keepalive,
        TcpKeepalive::Idle(Duration::from_secs(60))
    );
}

// ----- out of file descriptors -----

#[cfg(target_os = "linux")]
#[test]
fn out_of_file_descriptors_the_accept_loop_backs_off_and_logs_once_a_second() {
    // A child process under a small descriptor limit, so that only it runs out.
    let out = std::process::Command::new("prlimit")
        .arg("--nofile=64:64")
        .arg(env!("CARGO_BIN_EXE_fd_starved_listener"))
        .env("RUST_LOG", "warn")
        .output()
        .expect("runs prlimit (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let field = |name: &str| {
        stdout
            .split_whitespace()
            .find_map(|f| f.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in {stdout:?}"))
            .to_string()
    };
    let failed: usize = field("failed=").parse().unwrap();
    // In the 2 s window: pauses of 100, 200, 400, 800 ms then 1 s: 5 or 6 failed accepts. A loop that
    // spins fails tens of thousands of times.
    assert!((3..=8).contains(&failed), "{failed} failed accepts in 2 s");
    assert_eq!(
        field("accepted="),
        "true",
        "accepts again once descriptors are free"
    );
    let lines = stderr
        .lines()
        .filter(|l| l.contains("accepting a connection failed"))
        .count();
    // One line a second at most: the first failure, then about one a second.
    assert!((1..=3).contains(&lines), "{lines} log lines:\n{stderr}");
}

// ----- logins -----

fn plain_users() -> Arc<dyn Authenticator> {
    Arc::new(PlainAuthenticator::new([("alice", "secret")]))
}

/// A client over a socket bound to `from`: the listener sees that address.
async fn first_seen_from(
    c: &ContainerHandle,
    addr: SocketAddr,
    from: &str,
    options: ConnectionOptions,
) -> Seen {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (tx, mut rx) = unbounded_channel();
    c.connect_stream(stream, options, Opener(tx)).unwrap();
    within(WAIT, "the client opens or fails", rx.recv())
        .await
        .unwrap()
}

fn alice(password: &str) -> ConnectionOptions {
    ConnectionOptions::new()
        .user("alice")
        .password(password)
        .sasl_allowed_mechs(vec!["PLAIN".into()])
        .sasl_allow_insecure_mechs(true)
}

#[actix_rt::test]
async fn logins_are_logged_and_failed_logins_refuse_the_address_for_a_while() {
    let c = test_container("login-throttle");
    let (addr, _accepted) = listen(
        &c,
        ListenOptions::new()
            .authenticator(plain_users())
            .allow_insecure_plain(true)
            .login_throttle(Some(
                LoginThrottle::new()
                    .max_failures(3)
                    .window(Duration::from_secs(60))
                    .lockout(Duration::from_secs(60)),
            )),
    );
    let ok = first_seen_from(&c, addr, "127.0.0.1", alice("secret")).await;
    assert!(matches!(ok, Seen::Opened), "{ok:?}");
    for _ in 0..3 {
        match first_seen_from(&c, addr, "127.0.0.1", alice("wrong")).await {
            Seen::Failed(e) => assert!(e.contains("unauthorized-access"), "{e}"),
            Seen::Opened => panic!("a wrong password opened"),
        }
    }
    // Refused now, even with the right password: the socket closes before SASL.
    match first_seen_from(&c, addr, "127.0.0.1", alice("secret")).await {
        Seen::Failed(e) => assert!(!e.contains("unauthorized-access"), "{e}"),
        Seen::Opened => panic!("a refused address opened"),
    }
    // Another address is not.
    let other = first_seen_from(&c, addr, "127.0.0.2", alice("secret")).await;
    assert!(matches!(other, Seen::Opened), "{other:?}");

    let listener = format!("listener {addr}:");
    let accepted = lines_with(&[
        &listener,
        "login of alice from 127.0.0.",
        "with PLAIN: accepted",
    ]);
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert!(accepted.iter().all(|(level, _)| *level == log::Level::Info));
    let refused = lines_with(&[
        &listener,
        "login of alice from 127.0.0.1:",
        "with PLAIN: refused",
    ]);
    assert_eq!(refused.len(), 3, "{refused:?}");
    assert!(refused.iter().all(|(level, _)| *level == log::Level::Warn));
    assert_eq!(
        lines_with(&[&listener, "127.0.0.1 failed to log in 3 times"]).len(),
        1
    );
    assert_eq!(
        lines_with(&[
            &listener,
            "refused a connection from 127.0.0.1",
            "log in too often"
        ])
        .len(),
        1
    );
    c.stop();
}

// ----- skipping SASL -----

/// As the broker binary with `--user alice:secret` and, or not, `--allow-anonymous`.
fn broker_users(anonymous: bool) -> Arc<dyn Authenticator> {
    let credential = ScramCredential::derive(ScramHash::Sha256, "secret", b"a salt of 16 b.", 4096);
    Arc::new(
        ScramAuthenticator::new([("alice", credential)])
            .allow_plain(true)
            .allow_anonymous(anonymous),
    )
}

fn skipping() -> ConnectionOptions {
    ConnectionOptions::new().sasl_disabled(true)
}

#[actix_rt::test]
async fn a_client_that_skips_sasl_is_anonymous_where_anonymous_is_allowed_and_refused_elsewhere() {
    let c = test_container("skip-sasl");
    let listen_identities = |options: ListenOptions| {
        let (tx, rx) = unbounded_channel();
        let listener = c
            .listen_with("127.0.0.1:0", options, Identities(tx))
            .expect("listens");
        (listener.local_addr(), rx)
    };
    // Users and anonymous allowed: in, as anonymous.
    let (addr, mut users) =
        listen_identities(ListenOptions::new().authenticator(broker_users(true)));
    let seen = first_seen(&c, &format!("amqp://{addr}"), skipping()).await;
    assert!(matches!(seen, Seen::Opened), "{seen:?}");
    let (user, _) = within(WAIT, "server open", users.recv()).await.unwrap();
    assert_eq!(user.as_deref(), Some("anonymous"));
    let accepted = lines_with(&[&format!(
        "listener {addr}: login of anonymous from 127.0.0.1:"
    )]);
    assert!(
        accepted[0].1.contains("no SASL (skipped): accepted") && accepted[0].0 == log::Level::Info,
        "{accepted:?}"
    );

    // Users only: refused, and logged.
    let (addr, mut users) =
        listen_identities(ListenOptions::new().authenticator(broker_users(false)));
    match first_seen(&c, &format!("amqp://{addr}"), skipping()).await {
        Seen::Failed(e) => assert!(e.contains("SASL"), "{e}"),
        Seen::Opened => panic!("a client without credentials got past a password"),
    }
    assert!(users.try_recv().is_err());
    let refused = lines_with(&[&format!(
        "listener {addr}: login of (no user) from 127.0.0.1:"
    )]);
    assert!(
        refused[0].1.contains("no SASL (skipped): refused") && refused[0].0 == log::Level::Warn,
        "{refused:?}"
    );

    // Anonymous allowed but skipping turned off by name: every client must do SASL.
    let (addr, _users) = listen_identities(
        ListenOptions::new()
            .authenticator(broker_users(true))
            .allow_skip_sasl(false),
    );
    let seen = first_seen(&c, &format!("amqp://{addr}"), skipping()).await;
    assert!(matches!(seen, Seen::Failed(_)), "{seen:?}");
    c.stop();
}
