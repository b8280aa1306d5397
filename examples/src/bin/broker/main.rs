//! `broker`: an at-least-once AMQP 1.0 broker, a thin command line over `nucleon::broker`.
//!
//! ```text
//! broker [--config FILE] [-a|--address HOST:PORT] [-t|--threads N] [--users FILE] [--user NAME:PASSWORD ...]
//!        [--allow-anonymous] [--allow-insecure-plain] [--max-queue-depth N] [--topic PREFIX ...]
//!        [--tls-cert FILE --tls-key FILE [--require-tls] [--tls-ca FILE]] [--ws-listen HOST:PORT]
//!        [--metrics HOST:PORT] [--data-dir DIR [--sync batch|always|off] [--max-disk BYTES] [--salvage]]
//! broker --print-scram-credential NAME < password
//! ```
//!
//! It listens on 127.0.0.1:5672 by default (port 0 picks a free port) and prints one line,
//! `broker listening on HOST:PORT`, once it accepts connections; with no `[permissions]` in a config file
//! the line goes on to say that the broker is open. SIGINT or SIGTERM stop it: connections
//! are closed and it exits 0. Exit status 1 when it cannot listen, 2 on a bad argument.
//! `--users FILE` (lines `NAME:CREDENTIAL`, the credential as `--print-scram-credential NAME` prints it for the
//! password on stdin: salted keys, never the password) and `--user NAME:PASSWORD` switch authentication from
//! ANONYMOUS to these users, with SASL SCRAM-SHA-256 (or -1, -512 if the file has them) and PLAIN, and
//! require it unless `--allow-anonymous` is given. PLAIN is offered over TLS only, unless
//! `--allow-insecure-plain`; SCRAM does not send the password and is offered everywhere. Addresses starting with a `--topic` prefix are topics (every consumer gets
//! every message; one published with no consumer is dropped); clients may also declare a topic with the
//! `topic` terminus capability. Logs go to stderr at info level (`RUST_LOG` overrides it;
//! `RUST_LOG=nucleon::frame=trace` traces frames).
//!
//! `--tls-cert` and `--tls-key` (PEM) make the listener take TLS clients (`amqps://`, with or without the
//! AMQP TLS header) and, on the same port, plain ones, told apart by their first bytes; `--require-tls`
//! refuses plain clients. `--tls-ca` (PEM) asks clients for a certificate from that CA: a verified
//! certificate's subject is the client's identity (SASL EXTERNAL). `--ws-listen` adds a listener for AMQP over
//! WebSocket (subprotocol `amqp`; `wss` with the TLS flags), announced on a second line,
//! `broker WebSocket listening on HOST:PORT`.
//!
//! `--metrics HOST:PORT` serves Prometheus metrics at `/metrics` and a JSON management API under `/api/`
//! over HTTP (see `metrics.rs`), announced on a line after the others, `broker metrics on HOST:PORT`.
//!
//! `--data-dir DIR` makes the broker durable: its queues, durable topic subscriptions and every message
//! it accepts are kept in a journal in DIR (made if missing), and a restart with the same DIR brings them
//! back. A message is accepted only once it is durable: `--sync batch` (default) waits for the fdatasync
//! its producers share (group commit), `always` syncs each message on its own, `off` only hands it to the
//! operating system (it survives the broker being killed, not the machine losing power). A journal that
//! is damaged stops the start with exit status 1 and one line naming the file and offset; `--salvage`
//! skips the damaged records, keeps the rest and rewrites the journal.
//!
//! `--config FILE` reads listeners, TLS, users (with a SCRAM credential, or a password from an environment
//! variable or a file), per-user permissions and limits from a TOML file (see `examples/broker.toml`);
//! flags given on the command line win over it.

mod config;
mod metrics;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use metrics::Management;
use nucleon::broker::{Broker, BrokerOptions, StoreOptions, SyncPolicy};
use nucleon::protocol::engine::{
    Authenticator, ScramAuthenticator, ScramCredential, ScramHash, SCRAM_DEFAULT_ITERATIONS,
};
use nucleon::protocol::frame::{Error as AmqpError, ErrorCondition};
use nucleon::{Container, ListenOptions, TlsServerConfig};

use config::{Config, Secret};

/// An at-least-once AMQP 1.0 broker.
#[derive(Parser, Debug)]
#[command(name = "broker", after_help = CONFIG_HELP)]
struct Args {
    /// Read listeners, TLS, users, permissions and limits from this TOML file (flags win over it).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The address to listen on (port 0 picks a free port) [default: 127.0.0.1:5672].
    #[arg(short, long)]
    address: Option<String>,
    /// Worker threads (default: the available cores).
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..))]
    threads: Option<u16>,
    /// A user, as NAME:PASSWORD (repeatable; the password shows in `ps`, prefer --users); makes
    /// authentication required.
    #[arg(long, value_parser = parse_user)]
    user: Vec<(String, String)>,
    /// Users from FILE, one `NAME:CREDENTIAL` a line (see --print-scram-credential; # comments); makes
    /// authentication required.
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// With users, also admit ANONYMOUS clients.
    #[arg(long)]
    allow_anonymous: bool,
    /// Offer SASL PLAIN on plain TCP too (it sends the password as it is; by default PLAIN is offered
    /// over TLS only).
    #[arg(long)]
    allow_insecure_plain: bool,
    /// Print a users-file line for NAME, with the password read from stdin, and exit.
    #[arg(long, value_name = "NAME", exclusive = true)]
    print_scram_credential: Option<String>,
    /// The most messages a queue holds before its producers get no more credit.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_queue_depth: Option<u64>,
    /// Addresses starting with PREFIX are topics: every consumer gets every message (repeatable).
    #[arg(long = "topic", value_name = "PREFIX")]
    topics: Vec<String>,
    /// The listener's TLS certificate chain (PEM, leaf first): TLS clients are served, plain ones too.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Refuse clients that do not start TLS.
    #[arg(long, requires = "tls_cert")]
    require_tls: bool,
    /// Ask clients for a certificate issued by a CA in FILE (PEM) and verify it.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca: Option<PathBuf>,
    /// Also listen for AMQP over WebSocket on HOST:PORT (wss with the TLS flags).
    #[arg(long, value_name = "HOST:PORT")]
    ws_listen: Option<String>,
    /// Serve Prometheus metrics (/metrics) and the management API (/api/) over HTTP on HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    metrics: Option<String>,
    /// Keep queues and messages in a journal in DIR (made if missing): durable across restarts.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// When an accepted message is durable: batch (one fdatasync shared by the producers, the default),
    /// always (one fdatasync per message) or off (written to the OS only: survives a crash of the broker,
    /// not of the machine).
    #[arg(long, value_name = "POLICY")]
    sync: Option<SyncPolicy>,
    /// The most bytes the journal may take on disk: past it, producers are refused as on a full disk.
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u64).range(1..))]
    max_disk: Option<u64>,
    /// Start with a damaged journal: skip the damaged records (each logged), keep the rest, and rewrite it.
    #[arg(long)]
    salvage: bool,
}

/// What `--help` says about `--config`.
const CONFIG_HELP: &str = "\
The config file (TOML; every key optional, see examples/broker.toml):
  [listen]       address, websocket (HOST:PORT), threads
  [tls]          cert, key, client_ca, require
  [auth]         users_file, allow_anonymous, allow_insecure_plain
  [[user]]       name, and one of: credential (from --print-scram-credential), password_env, password_file
  [permissions]  USER = { send = [PATTERN, ...], consume = [...], browse = [...], create = [...] }
                 and manage (the management API; on `*` it lists connections too), for each user,
                 `anonymous`, or `*` (everyone); `*` in a pattern stands for any characters.
                 Without [permissions] the broker is open: every client may send, consume and create anywhere.
  [limits]       max_queue_depth, max_queue_bytes, max_memory (default 1 GiB), max_queues (default
                 10000), auto_delete_after_secs (default 300), max_deliveries (default 10),
                 dead_letter_address, max_message_size, max_sessions_per_connection,
                 max_links_per_connection, open_timeout_secs (default 10), idle_timeout_secs (default 60),
                 max_connections (default 10000), max_connections_per_address (default 1000),
                 max_login_failures, login_failure_window_secs, login_lockout_secs (default 10 in 60 s:
                 the address is refused for 60 s)
  [topics]       prefixes
  [storage]      data_dir, sync (batch, always or off), max_disk: a durable broker (see --data-dir)
  [metrics]      address (HOST:PORT): Prometheus metrics at /metrics, and the management API:
                 GET /api/queues, GET /api/connections, POST /api/queues/NAME/purge,
                 DELETE /api/queues/NAME, with HTTP Basic as a user granted `manage` (open to
                 anyone when the broker is open)";

/// The idle time-out the broker keeps by default: a client that stops sending (a vanished host) is
/// closed after it, and its unsettled messages go back to their queues.
const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The listener's TLS, from the flags or else the file; the error is the line to print.
fn tls_config(args: &Args, file: Option<&config::Tls>) -> Result<Option<TlsServerConfig>, String> {
    let (cert, key, ca, require) = match (&args.tls_cert, &args.tls_key, file) {
        (Some(cert), Some(key), _) => (cert, key, args.tls_ca.as_ref(), args.require_tls),
        (_, _, Some(t)) => (&t.cert, &t.key, t.client_ca.as_ref(), t.require),
        _ => return Ok(None),
    };
    let config = match ca {
        Some(ca) => TlsServerConfig::with_client_ca(cert, key, ca),
        None => TlsServerConfig::from_pem_files(cert, key),
    }
    .map_err(|e| e.to_string())?;
    Ok(Some(config.require_tls(require)))
}

/// A new SCRAM-SHA-256 credential for `password`, with a random salt.
fn new_credential(password: &str) -> Result<ScramCredential, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no random salt: {e}"))?;
    Ok(ScramCredential::derive(
        ScramHash::Sha256,
        password,
        &salt,
        SCRAM_DEFAULT_ITERATIONS,
    ))
}

/// `--print-scram-credential NAME`: the users-file line for the password on stdin.
fn print_credential(name: &str) -> ExitCode {
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_line(&mut password) {
        eprintln!("broker: reading the password from stdin: {e}");
        return ExitCode::from(2);
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if name.is_empty() || name.contains(':') || password.is_empty() {
        eprintln!("broker: expected a NAME without ':' and a password on stdin");
        return ExitCode::from(2);
    }
    match new_credential(password) {
        Ok(credential) => {
            println!("{name}:{credential}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("broker: {e}");
            ExitCode::from(1)
        }
    }
}

/// The users of `--users FILE` (or the file's `users_file`), the file's `[[user]]`s and `--user`, as
/// credentials; the error is the line to print.
fn load_users(args: &Args, file: &Config) -> Result<Vec<(String, ScramCredential)>, String> {
    let mut users = Vec::new();
    if let Some(path) = args.users.as_ref().or(file.auth.users_file.as_ref()) {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--users {}: {e}", path.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let parsed = line.split_once(':').and_then(|(name, credential)| {
                Some((
                    name.to_string(),
                    credential.parse::<ScramCredential>().ok()?,
                ))
            });
            match parsed {
                Some((name, credential)) if !name.is_empty() => users.push((name, credential)),
                _ => {
                    return Err(format!(
                        "--users {}:{}: expected NAME:CREDENTIAL (see --print-scram-credential)",
                        path.display(),
                        n + 1
                    ))
                }
            }
        }
    }
    for user in &file.users {
        let credential = match user.secret()? {
            Secret::Credential(c) => c.parse::<ScramCredential>().map_err(|_| {
                format!(
                    "user {}: credential is not one --print-scram-credential prints",
                    user.name
                )
            })?,
            Secret::Password(p) => new_credential(&p)?,
        };
        users.push((user.name.clone(), credential));
    }
    for (name, password) in &args.user {
        users.push((name.clone(), new_credential(password)?));
    }
    Ok(users)
}

fn parse_user(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, password)) if !name.is_empty() => Ok((name.to_owned(), password.to_owned())),
        _ => Err(format!("expected NAME:PASSWORD, got {s:?}")),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(name) = &args.print_scram_credential {
        return print_credential(name);
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let file = match args.config.as_deref().map(Config::load).transpose() {
        Ok(file) => file.unwrap_or_default(),
        Err(e) => {
            eprintln!("broker: {e}");
            return ExitCode::from(2);
        }
    };
    let users = match load_users(&args, &file) {
        Ok(users) => users,
        Err(e) => {
            eprintln!("broker: {e}");
            return ExitCode::from(2);
        }
    };
    let tls = match tls_config(&args, file.tls.as_ref()) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("broker: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = Container::builder().id("broker").auto_stop(false);
    if let Some(n) = args.threads.or(file.listen.threads) {
        builder = builder.threads(usize::from(n));
    }
    let container = builder.build();
    let handle = container.handle();
    let authorization = file
        .authorization()
        .expect("checked when the file was loaded");
    let open = authorization.is_none();
    let management_authorization = authorization.clone();
    let topic_prefixes = if args.topics.is_empty() {
        file.topics.prefixes.clone()
    } else {
        args.topics.clone()
    };
    let store = match store_options(&args, &file.storage) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("broker: {e}");
            return ExitCode::from(2);
        }
    };
    let options = BrokerOptions {
        max_queue_depth: args
            .max_queue_depth
            .or(file.limits.max_queue_depth)
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        topic_prefixes,
        authorization,
        ..broker_limits(&file.limits)
    };
    let broker = match store {
        Some(store) => {
            let dir = store.dir.clone();
            match Broker::open(options, store) {
                Ok(broker) => {
                    log::info!("journal in {}", dir.display());
                    broker
                }
                Err(e) => {
                    eprintln!("broker: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        None => Broker::new(options),
    };
    let allow_anonymous = args.allow_anonymous || file.auth.allow_anonymous;
    let require_tls = if args.tls_cert.is_some() {
        args.require_tls
    } else {
        file.tls.as_ref().is_some_and(|t| t.require)
    };
    if tls.is_some() {
        log::info!(
            "TLS on the listener ({}{})",
            if require_tls {
                "required"
            } else {
                "plain clients too"
            },
            if args.tls_ca.is_some() || file.tls.as_ref().is_some_and(|t| t.client_ca.is_some()) {
                ", client certificates verified"
            } else {
                ""
            }
        );
    }
    let scram = (!users.is_empty()).then(|| {
        Arc::new(
            ScramAuthenticator::new(users)
                .allow_plain(true)
                .allow_anonymous(allow_anonymous),
        )
    });
    let authenticator = scram.clone().map(|a| a as Arc<dyn Authenticator>);
    let limits = &file.limits;
    let defaults = ListenOptions::new();
    let throttle = defaults.login_throttle.map(|t| {
        t.max_failures(limits.max_login_failures.unwrap_or(t.max_failures))
            .window(
                limits
                    .login_failure_window_secs
                    .map_or(t.window, Duration::from_secs),
            )
            .lockout(
                limits
                    .login_lockout_secs
                    .map_or(t.lockout, Duration::from_secs),
            )
    });
    let max_connections = limits.max_connections.unwrap_or(defaults.max_connections);
    let max_connections_per_address = limits
        .max_connections_per_address
        .unwrap_or(defaults.max_connections_per_address);
    let mut options = defaults
        .allow_insecure_plain(args.allow_insecure_plain || file.auth.allow_insecure_plain)
        .idle_timeout(
            limits
                .idle_timeout_secs
                .map_or(DEFAULT_IDLE_TIMEOUT, Duration::from_secs),
        )
        .max_connections(max_connections)
        .max_connections_per_address(max_connections_per_address)
        .login_throttle(throttle);
    // Settings the config may leave unset are assigned as `Option`s: unset is the listener's default.
    options.authenticator = authenticator;
    options.tls = tls;
    options.max_message_size = limits.max_message_size;
    options.max_sessions = limits.max_sessions_per_connection;
    options.max_links = limits.max_links_per_connection;
    options.open_timeout = limits.open_timeout_secs.map(Duration::from_secs);
    let ws_options = options.clone().websocket(true);
    let address = args
        .address
        .clone()
        .or(file.listen.address.clone())
        .unwrap_or_else(|| "127.0.0.1:5672".to_owned());
    let listener = match broker.listen(&handle, &address, options) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("broker: cannot listen on {address}: {e}");
            return ExitCode::from(1);
        }
    };
    let stopper = handle.clone();
    let addr = listener.local_addr();
    let ws_addr = match args.ws_listen.as_ref().or(file.listen.websocket.as_ref()) {
        Some(ws) => match broker.listen(&handle, ws, ws_options) {
            Ok(l) => Some(l.local_addr()),
            Err(e) => {
                eprintln!("broker: cannot listen on {ws}: {e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    let metrics_addr = match args.metrics.as_ref().or(file.metrics.address.as_ref()) {
        Some(address) => {
            let management = Management {
                broker: broker.clone(),
                authorization: management_authorization,
                users: scram,
            };
            match std::net::TcpListener::bind(address).and_then(|l| metrics::start(l, management)) {
                Ok(addr) => Some(addr),
                Err(e) => {
                    eprintln!("broker: cannot serve metrics on {address}: {e}");
                    return ExitCode::from(1);
                }
            }
        }
        None => None,
    };
    // Signal handlers live inside the container's actix System, on its own thread; the ready line is
    // printed only once they are in place, so a signal sent right after it is handled.
    let scheduled = handle.schedule(Duration::ZERO, move || {
        watch_signals(stopper);
        let mut out = std::io::stdout().lock();
        if open {
            let _ = writeln!(
                out,
                "broker listening on {addr} (open: no [permissions] configured, every client may \
                 send, consume and create anywhere)"
            );
        } else {
            let _ = writeln!(out, "broker listening on {addr}");
        }
        if let Some(ws) = ws_addr {
            let _ = writeln!(out, "broker WebSocket listening on {ws}");
        }
        if let Some(m) = metrics_addr {
            let _ = writeln!(out, "broker metrics on {m}");
        }
        let _ = out.flush();
    });
    if let Err(e) = scheduled {
        eprintln!("broker: {e}");
        return ExitCode::from(1);
    }
    let run = container.run();
    let (queued, queues) = broker.queued();
    broker.close();
    log::info!("stopped: {queued} messages still queued in {queues} queues");
    match run {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker: {e}");
            ExitCode::from(1)
        }
    }
}

/// The journal's settings from the flags and the file's `[storage]` (`None`: the broker keeps everything in
/// memory); the error is the line to print.
fn store_options(args: &Args, file: &config::Storage) -> Result<Option<StoreOptions>, String> {
    let Some(dir) = args.data_dir.as_ref().or(file.data_dir.as_ref()) else {
        if args.sync.is_some() || args.max_disk.is_some() || args.salvage {
            return Err("--sync, --max-disk and --salvage need a --data-dir".to_owned());
        }
        return Ok(None);
    };
    let mut store = StoreOptions::new(dir);
    store.sync = match (args.sync, &file.sync) {
        (Some(sync), _) => sync,
        (None, Some(sync)) => sync.parse()?,
        (None, None) => SyncPolicy::default(),
    };
    store.max_disk = args.max_disk.or(file.max_disk);
    store.salvage = args.salvage;
    Ok(Some(store))
}

/// The broker's limits from the file's `[limits]`, each defaulting to `BrokerOptions`'.
fn broker_limits(l: &config::Limits) -> BrokerOptions {
    l.broker_options(BrokerOptions::default())
}

/// What clients are told when a signal stops the broker [AMQP 1.0 §2.8.16].
fn shutting_down() -> AmqpError {
    AmqpError::new(
        ErrorCondition::ConnectionForced,
        "the broker is shutting down",
    )
}

/// Stops the container on SIGINT or (on Unix) SIGTERM: every connection is closed with
/// `amqp:connection:forced`; one that does not answer within the close time-out (5 s) is dropped.
fn watch_signals(container: nucleon::ContainerHandle) {
    #[cfg(unix)]
    {
        use actix_rt::signal::unix::{signal, SignalKind};
        let stopper = container.clone();
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                actix_rt::spawn(async move {
                    if term.recv().await.is_some() {
                        log::info!("SIGTERM: stopping");
                        stopper.stop_with(Some(shutting_down()));
                    }
                });
            }
            Err(e) => log::warn!("cannot watch SIGTERM: {e}"),
        }
    }
    actix_rt::spawn(async move {
        if actix_rt::signal::ctrl_c().await.is_ok() {
            log::info!("SIGINT: stopping");
            container.stop_with(Some(shutting_down()));
        }
    });
}
