//! `broker`: an at-least-once AMQP 1.0 broker, a thin command line over `nucleon::broker`.
//!
//! ```text
//! broker [-a|--address HOST:PORT] [-t|--threads N] [--users FILE] [--user NAME:PASSWORD ...]
//!        [--allow-anonymous] [--allow-insecure-plain] [--max-queue-depth N] [--topic PREFIX ...]
//!        [--tls-cert FILE --tls-key FILE [--require-tls] [--tls-ca FILE]] [--ws-listen HOST:PORT]
//! broker --print-scram-credential NAME < password
//! ```
//!
//! It listens on 127.0.0.1:5672 by default (port 0 picks a free port) and prints one line,
//! `broker listening on HOST:PORT`, once it accepts connections. SIGINT or SIGTERM stop it: connections
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

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use nucleon::broker::{Broker, BrokerOptions};
use nucleon::protocol::engine::{
    Authenticator, ScramAuthenticator, ScramCredential, ScramHash, SCRAM_DEFAULT_ITERATIONS,
};
use nucleon::{Container, ListenOptions, TlsServerConfig};

/// An at-least-once AMQP 1.0 broker.
#[derive(Parser, Debug)]
#[command(name = "broker")]
struct Args {
    /// The address to listen on (port 0 picks a free port).
    #[arg(short, long, default_value = "127.0.0.1:5672")]
    address: String,
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
}

/// The listener's TLS, from the flags; the error is the line to print.
fn tls_config(args: &Args) -> Result<Option<TlsServerConfig>, String> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        return Ok(None);
    };
    let config = match &args.tls_ca {
        Some(ca) => TlsServerConfig::with_client_ca(cert, key, ca),
        None => TlsServerConfig::from_pem_files(cert, key),
    }
    .map_err(|e| e.to_string())?;
    Ok(Some(config.require_tls(args.require_tls)))
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

/// The users of `--users FILE` and `--user`, as credentials; the error is the line to print.
fn load_users(args: &Args) -> Result<Vec<(String, ScramCredential)>, String> {
    let mut users = Vec::new();
    if let Some(path) = &args.users {
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
    let users = match load_users(&args) {
        Ok(users) => users,
        Err(e) => {
            eprintln!("broker: {e}");
            return ExitCode::from(2);
        }
    };
    let tls = match tls_config(&args) {
        Ok(tls) => tls,
        Err(e) => {
            eprintln!("broker: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = Container::builder().id("broker").auto_stop(false);
    if let Some(n) = args.threads {
        builder = builder.threads(usize::from(n));
    }
    let container = builder.build();
    let handle = container.handle();
    let broker = Broker::new(BrokerOptions {
        max_queue_depth: args
            .max_queue_depth
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
        topic_prefixes: args.topics,
        ..BrokerOptions::default()
    });
    if tls.is_some() {
        log::info!(
            "TLS on the listener ({}{})",
            if args.require_tls {
                "required"
            } else {
                "plain clients too"
            },
            if args.tls_ca.is_some() {
                ", client certificates verified"
            } else {
                ""
            }
        );
    }
    let authenticator = (!users.is_empty()).then(|| {
        Arc::new(
            ScramAuthenticator::new(users)
                .allow_plain(true)
                .allow_anonymous(args.allow_anonymous),
        ) as Arc<dyn Authenticator>
    });
    let options = ListenOptions {
        authenticator,
        tls,
        allow_insecure_plain: args.allow_insecure_plain,
        ..ListenOptions::default()
    };
    let ws_options = ListenOptions {
        websocket: true,
        ..options.clone()
    };
    let listener = match broker.listen(&handle, &args.address, options) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("broker: cannot listen on {}: {e}", args.address);
            return ExitCode::from(1);
        }
    };
    let stopper = handle.clone();
    let addr = listener.local_addr();
    let ws_addr = match &args.ws_listen {
        Some(ws) => match broker.listen(&handle, ws, ws_options) {
            Ok(l) => Some(l.local_addr()),
            Err(e) => {
                eprintln!("broker: cannot listen on {ws}: {e}");
                return ExitCode::from(1);
            }
        },
        None => None,
    };
    // Signal handlers live inside the container's actix System, on its own thread; the ready line is
    // printed only once they are in place, so a signal sent right after it is handled.
    let scheduled = handle.schedule(Duration::ZERO, move || {
        watch_signals(stopper);
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "broker listening on {addr}");
        if let Some(ws) = ws_addr {
            let _ = writeln!(out, "broker WebSocket listening on {ws}");
        }
        let _ = out.flush();
    });
    if let Err(e) = scheduled {
        eprintln!("broker: {e}");
        return ExitCode::from(1);
    }
    match container.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("broker: {e}");
            ExitCode::from(1)
        }
    }
}

/// Stops the container on SIGINT or (on Unix) SIGTERM.
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
                        stopper.stop();
                    }
                });
            }
            Err(e) => log::warn!("cannot watch SIGTERM: {e}"),
        }
    }
    actix_rt::spawn(async move {
        if actix_rt::signal::ctrl_c().await.is_ok() {
            log::info!("SIGINT: stopping");
            container.stop();
        }
    });
}
