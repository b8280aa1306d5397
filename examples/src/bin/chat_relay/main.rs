//! `chat_relay`: a browser chat whose every message and presence event goes through AMQP.
//!
//! ```text
//! chat_relay [--listen HOST:PORT] [--amqp-listen HOST:PORT | --broker URL] [--heartbeat-ms N]
//!            [--broker-user NAME] [--broker-password-file FILE] [--allow-origin ORIGIN ...]
//!            [--max-sessions N] [--rate N] [--burst N]
//! ```
//!
//! An actix-web server (default `127.0.0.1:8080`) serves a one-page chat (HTML, CSS and JavaScript embedded
//! in the binary) and a WebSocket at `/ws`. By default it also serves an in-process `nucleon` broker on
//! `--amqp-listen` (default `127.0.0.1:5672`; port 0 picks a free port), where `chat/` addresses are topics.
//! `--broker amqp://HOST:PORT` uses another broker instead: another relay's, a `broker` example, or any
//! AMQP 1.0 broker that fans a topic out. Relays sharing a broker form one chat. Once it serves, it prints
//! one line, `chat_relay ready: http://HOST:PORT amqp://HOST:PORT` (the HTTP address it is bound to and
//! the broker it uses). Exit status 1 when it cannot listen, 2 on a bad argument. Logs go to stderr
//! (`RUST_LOG`, default `info`). On SIGTERM or SIGINT it sends a `leave` for each of its users (so other
//! relays drop them at once), waits up to 2 s for the broker to have taken them, closes every WebSocket
//! (code 1001, going away) and exits 0.
//!
//! # Who may connect
//!
//! * **Web pages.** A WebSocket upgrade whose `Origin` is neither the relay's own page (the scheme and
//!   `Host` of the request) nor one given with `--allow-origin` (repeatable, exact origins such as
//!   `https://chat.example.com`) is refused with HTTP 403 before the upgrade, logged at info: another web
//!   site cannot join a room from its visitors' browsers. A request without `Origin` is let in: every
//!   browser sends it on a WebSocket handshake, so it is a non-browser client, which could send any
//!   `Origin` it liked anyway. Behind a TLS-terminating proxy, list the public `https://` origin (or have
//!   the proxy send `X-Forwarded-Proto`).
//! * **Sessions.** At most `--max-sessions` WebSockets at once (default 1000); one more gets HTTP 503.
//!   Each may send frames of at most 16 KiB, at most `--rate` a second (default 5) with bursts of
//!   `--burst` (default 10); an over-limit frame is dropped with an `error` frame, and a session that
//!   sends 20 of those without slowing down (one more is allowed each second) is closed (1008).
//! * **Relays, on the embedded broker.** It requires SASL SCRAM-SHA-256 as user `chat_relay` (or
//!   `--broker-user`) and refuses ANONYMOUS and clients that skip SASL; PLAIN is not offered (the listener
//!   is plain TCP). The password is 32 random bytes made at start and kept in memory, never printed or
//!   logged. To let other relays in, give `--broker-password-file FILE`: the file's first line is the
//!   password, and if there is no such file a random password is written to it, created with mode 0600.
//!   Another relay then joins with `--broker URL --broker-password-file FILE` (the same file, or a copy).
//!   SCRAM never sends the password, so plain TCP does not expose it. A password file readable by group or
//!   others is refused. With `--broker` and no password file the relay logs in as ANONYMOUS, for an open
//!   broker (such as the `broker` example without users).
//!
//! # Threads
//!
//! The nucleon container runs inside the actix System that actix-web runs in
//! (`ContainerBuilder::start()`), with its own worker thread. The relay's one AMQP connection
//! ([`relay::Relay`], a `MessagingHandler` with reconnect) lives on that worker; nothing else touches it.
//! Each browser session ([`session`]) is a task on an actix-web worker: its chat messages reach the
//! connection through the connection's `WorkQueue`. Everything the connection receives goes to the
//! [`hub::Hub`] actor as actix messages, and from the hub to each session through a bounded channel of
//! [`session::OUTBOX`] frames; a browser that lets it fill up is disconnected (and logged), so it never
//! stalls the room.
//!
//! # On the wire
//!
//! Room `R` is the AMQP address `chat/R`. When the first local session joins `R` the relay attaches a
//! sender and a receiver there, both with the `topic` capability on their terminus (the target and the
//! source) so that every receiver gets every message [AMQP 1.0 §3.5.3, §3.5.4]; it closes them when the
//! last local session leaves. Events wait until the receiver is attached and the sender has credit
//! [AMQP 1.0 §2.6.7]. Every event is one message whose body is an `amqp-value` string of JSON
//! [AMQP 1.0 §3.2.8] tagged by `kind`, stamped with the sending relay's random id:
//!
//! * `{"kind":"message","relay","id","name","text","ts"}`: a chat message. A relay shows its own users'
//!   messages only when they come back from the broker: there is no local shortcut.
//! * `{"kind":"join","relay","name","members"}`: `name` joined on `relay`, whose members are `members`.
//!   Every other relay in the room answers with a `presence`.
//! * `{"kind":"leave","relay","name","members"}`: `name` left; `members` remain.
//! * `{"kind":"presence","relay","members","ask"}`: a relay's members in the room. Sent as an answer,
//!   as a heartbeat (every `--heartbeat-ms`, default 5000), and with `ask: true` whenever the receiver
//!   (re)attaches, which every other relay answers. A relay not heard from for three of its own heartbeats
//!   is dropped with its members (relays sharing a room should use the same heartbeat).
//!
//! Events from the broker are checked like browser input (names included, under the same rules); a
//! malformed one is logged and ignored. A relay
//! ignores presence events stamped with its own id.
//!
//! # Browser protocol
//!
//! JSON text frames tagged by `type`. From the browser: `{"type":"join","name","room"}` (once) and
//! `{"type":"send","text"}`. To the browser: `status` (`connecting`, `connected`, `reconnecting`),
//! `joined`, `members`, `message`, `system` and `error` (a refused frame: the session stays open). A name
//! is NFKC-normalized (fullwidth letters, ligatures and other compatibility forms become the plain ones),
//! trimmed, its runs of spaces made one, and is then 1-32 characters with no control (Cc), format (Cf:
//! bidi overrides and isolates, zero-width spaces and joiners, the BOM), private-use, unassigned or
//! separator character other than U+0020, and none of the few letters that render as nothing (Hangul
//! fillers, the Braille blank); otherwise it is refused with an `error` frame. A name already present in
//! the room (ignoring case, after NFKC) is refused. A room is 1-32 of `A-Z a-z 0-9 _ -`, a message at most
//! 2000 characters without control characters. Names in events from the broker must already be in that
//! normalized form, or the event is ignored.

mod access;
mod hub;
mod relay;
mod session;
mod wire;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use actix::AsyncContext;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use clap::Parser;
use nucleon::broker::{Broker, BrokerOptions};
use nucleon::protocol::engine::{
    Authenticator, ScramAuthenticator, ScramCredential, ScramHash, SCRAM_DEFAULT_ITERATIONS,
};
use nucleon::{ContainerBuilder, ListenOptions, ReconnectOptions};
use nucleon_examples::hosts::{parse_public_host, HostSet};
use nucleon_examples::{parse_url, TlsArgs};

use crate::access::{check_host, check_origin, parse_origin, DEFAULT_BROKER_USER};
use crate::hub::{Hub, Shutdown};
use crate::relay::Relay;
use crate::session::{Limits, Slots};

/// How long a stopping relay waits for the broker to take its last leaves.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

const INDEX_HTML: &str = include_str!("../../../static/chat/index.html");
const CHAT_CSS: &str = include_str!("../../../static/chat/chat.css");
const CHAT_JS: &str = include_str!("../../../static/chat/chat.js");

/// Scripts only from this origin (no inline script), WebSockets back to it.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; \
                   img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// A chat relay: a web chat whose messages go through AMQP.
#[derive(Parser, Debug)]
#[command(name = "chat_relay")]
struct Args {
    /// Where the web server listens (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8080", value_parser = parse_host_port)]
    listen: String,
    /// Where the embedded broker listens (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:5672", value_parser = parse_host_port)]
    amqp_listen: String,
    /// Use this broker (`amqp://HOST:PORT` or `amqps://HOST:PORT`) instead of an embedded one.
    #[arg(long, value_parser = parse_url, conflicts_with = "amqp_listen")]
    broker: Option<String>,
    #[command(flatten)]
    tls: TlsArgs,
    /// Milliseconds between presence heartbeats; a relay silent for three is dropped.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u64).range(50..=600_000))]
    heartbeat_ms: u64,
    /// The user to log in as on the broker (SCRAM); needs --broker-password-file.
    #[arg(long, value_name = "NAME", requires = "broker_password_file")]
    broker_user: Option<String>,
    /// The broker password is this file's first line (mode 0600). With the embedded broker, a missing file
    /// is created with a new random password, for other relays to use.
    #[arg(long, value_name = "FILE")]
    broker_password_file: Option<PathBuf>,
    /// Also accept WebSockets from pages of this origin (`https://HOST[:PORT]`; repeatable).
    #[arg(long, value_name = "ORIGIN", value_parser = parse_origin)]
    allow_origin: Vec<String>,
    /// A host name (`HOST` with any port, or `HOST:PORT`) requests may name besides the bound address (and
    /// `localhost` for a loopback bind), e.g. the name a proxy serves the chat under; repeatable. A
    /// WebSocket upgrade naming another host gets 421, which defeats DNS rebinding.
    #[arg(long, value_name = "HOST[:PORT]", value_parser = parse_public_host)]
    public_host: Vec<String>,
    /// The most browser sessions at once; one more is refused (HTTP 503).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    max_sessions: u32,
    /// Frames a browser session may send a second, on average.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    rate: u32,
    /// Frames a browser session may send at once, after a quiet while.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    burst: u32,
}

/// The embedded broker's authenticator: SCRAM-SHA-256 for `user` only, no PLAIN, no ANONYMOUS.
fn relay_authenticator(user: &str, password: &str) -> Result<Arc<dyn Authenticator>, String> {
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| format!("no random salt: {e}"))?;
    let credential =
        ScramCredential::derive(ScramHash::Sha256, password, &salt, SCRAM_DEFAULT_ITERATIONS);
    Ok(Arc::new(
        ScramAuthenticator::new([(user.to_owned(), credential)])
            .allow_plain(false)
            .allow_anonymous(false),
    ))
}

/// `HOST:PORT`, for clap.
fn parse_host_port(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(s.to_owned()),
        _ => Err(format!("expected HOST:PORT, got {s:?}")),
    }
}

#[actix_web::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let tls_options = match args.tls.connection_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("chat_relay: {e}");
            return ExitCode::from(2);
        }
    };
    let container = ContainerBuilder::default()
        .id(format!("chat_relay-{}", uuid::Uuid::new_v4()))
        .threads(1)
        .auto_stop(false)
        .start();
    let user = args
        .broker_user
        .clone()
        .unwrap_or_else(|| DEFAULT_BROKER_USER.to_owned());
    let password = match (&args.broker, &args.broker_password_file) {
        (Some(_), None) => Ok(None),
        (Some(_), Some(file)) => access::read_password(file).map(Some),
        (None, Some(file)) => access::read_or_create_password(file).map(Some),
        (None, None) => access::random_password().map(Some),
    };
    let password = match password {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chat_relay: error: {e}");
            container.stop();
            return ExitCode::from(2);
        }
    };
    let broker_url = match &args.broker {
        Some(url) => url.clone(),
        None => {
            let broker = Broker::new(BrokerOptions {
                topic_prefixes: vec!["chat/".into()],
                ..BrokerOptions::default()
            });
            let authenticator =
                match relay_authenticator(&user, password.as_deref().unwrap_or_default()) {
                    Ok(a) => a,
                    Err(e) => {
                        eprintln!("chat_relay: {e}");
                        container.stop();
                        return ExitCode::from(1);
                    }
                };
            let listen = ListenOptions::new()
                .authenticator(authenticator)
                .allow_skip_sasl(false);
            log::info!(
                "the embedded broker requires SASL SCRAM-SHA-256 as {user:?} ({})",
                match &args.broker_password_file {
                    Some(file) => format!("password in {}", file.display()),
                    None => "a random password only this relay knows".to_owned(),
                }
            );
            match broker.listen(&container, &args.amqp_listen, listen) {
                Ok(listener) => format!("amqp://{}", listener.local_addr()),
                Err(e) => {
                    eprintln!("chat_relay: cannot listen on {}: {e}", args.amqp_listen);
                    container.stop();
                    return ExitCode::from(1);
                }
            }
        }
    };

    let relay_id = uuid::Uuid::new_v4().to_string();
    let hub_context = actix::Context::<Hub>::new();
    let options = {
        let mut o = tls_options.reconnect(
            ReconnectOptions::new()
                .delay(Duration::from_millis(100))
                .max_delay(Duration::from_secs(2)),
        );
        o.user = password.is_some().then(|| user.clone());
        o.password = password;
        o
    };
    let connection =
        match container.connect(&broker_url, options, Relay::new(hub_context.address())) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("chat_relay: cannot connect to {broker_url}: {e}");
                container.stop();
                return ExitCode::from(1);
            }
        };
    let hub = hub_context.run(Hub::new(
        relay_id.clone(),
        connection.work_queue(),
        Duration::from_millis(args.heartbeat_ms),
    ));
    let cx = session::Context {
        relay_id,
        hub: hub.clone(),
        work: connection.work_queue(),
        limits: Limits {
            rate: args.rate,
            burst: args.burst,
        },
    };
    let gate = Gate {
        allowed_origins: args.allow_origin.clone(),
        hosts: Arc::new(OnceLock::new()),
        slots: Slots::new(usize::try_from(args.max_sessions).unwrap_or(usize::MAX)),
    };
    let hosts = gate.hosts.clone();

    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(cx.clone()))
            .app_data(web::Data::new(gate.clone()))
            .route("/", web::get().to(|| page("text/html", INDEX_HTML)))
            .route("/chat.css", web::get().to(|| page("text/css", CHAT_CSS)))
            .route(
                "/chat.js",
                web::get().to(|| page("text/javascript", CHAT_JS)),
            )
            .route("/ws", web::get().to(websocket))
    })
    .workers(2)
    .shutdown_timeout(1)
    // SIGTERM and SIGINT are ours (see `watch_signals`): the rooms hear this relay's leaves first.
    .disable_signals()
    .bind(&args.listen);
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chat_relay: cannot listen on {}: {e}", args.listen);
            container.stop();
            return ExitCode::from(1);
        }
    };
    let bound = server.addrs();
    // Set before the server runs, so before any worker serves a request.
    let _ = hosts.set(HostSet::for_listener(&bound, &args.public_host));
    let http = bound
        .first()
        .map_or_else(|| args.listen.clone(), ToString::to_string);
    let running = server.run();
    watch_signals(running.handle(), hub, connection.work_queue());
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "chat_relay ready: http://{http} {broker_url}");
        let _ = out.flush();
    }
    let result = running.await;
    let _ = connection.close();
    container.stop();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat_relay: {e}");
            ExitCode::from(1)
        }
    }
}

/// An embedded file.
async fn page(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((
            header::CONTENT_TYPE,
            format!("{content_type}; charset=utf-8"),
        ))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(body)
}

/// What a WebSocket upgrade must pass.
#[derive(Clone)]
struct Gate {
    /// `--allow-origin`, lowercased.
    allowed_origins: Vec<String>,
    /// The hosts requests may name (the bound address and `--public-host`), set once bound.
    hosts: Arc<OnceLock<HostSet>>,
    /// `--max-sessions`.
    slots: Slots,
}

/// Upgrades to a WebSocket and runs the session on this worker: 421 for a request naming another host (a
/// page whose DNS name was rebound to this machine), 403 for a page of another origin, 503 over
/// `--max-sessions`, all before the upgrade.
async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    cx: web::Data<session::Context>,
    gate: web::Data<Gate>,
) -> Result<HttpResponse, actix_web::Error> {
    let peer = req
        .peer_addr()
        .map_or_else(|| "?".to_owned(), |a| a.to_string());
    let named = match gate.hosts.get() {
        Some(hosts) => check_host(&req, hosts),
        None => Err("the relay is not bound yet".to_owned()),
    };
    if let Err(why) = named {
        log::info!("refused a WebSocket from {peer}: {why}");
        return Ok(HttpResponse::MisdirectedRequest()
            .body("this relay does not serve that host (see --public-host)\n"));
    }
    if let Err(why) = check_origin(&req, &gate.allowed_origins) {
        log::info!("refused a WebSocket from {peer}: {why}");
        return Ok(HttpResponse::Forbidden().body("this page's origin may not use this chat\n"));
    }
    let Some(slot) = gate.slots.take() else {
        log::warn!("refused a WebSocket from {peer}: --max-sessions sessions are open already");
        return Ok(HttpResponse::ServiceUnavailable()
            .insert_header((header::RETRY_AFTER, "10"))
            .body("too many sessions\n"));
    };
    let (response, ws, stream) = actix_ws::handle(&req, body)?;
    actix_web::rt::spawn(session::run(cx.get_ref().clone(), ws, stream, slot));
    Ok(response)
}

/// On SIGTERM or SIGINT: the hub sends a leave for every local member and closes every session, the AMQP
/// connection sends them and closes its links (waiting up to [`DRAIN_TIMEOUT`] for the broker's answers),
/// then the web server stops and `main` returns. The handlers are in place when this returns, before the
/// ready line.
fn watch_signals(
    server: actix_web::dev::ServerHandle,
    hub: actix::Addr<Hub>,
    work: nucleon::WorkQueue<Relay>,
) {
    let stop = move |signal: &'static str| async move {
        log::info!("{signal}: stopping, sending the rooms this relay's leaves");
        if let Err(e) = hub.send(Shutdown).await {
            log::error!("the hub is gone: {e}");
        }
        let (done, drained) = tokio::sync::oneshot::channel();
        match work.add(move |relay, connection| relay.drain(connection, done)) {
            Ok(()) => {
                if actix_rt::time::timeout(DRAIN_TIMEOUT, drained)
                    .await
                    .is_err()
                {
                    log::warn!("the broker did not take the last events within {DRAIN_TIMEOUT:?}");
                }
            }
            Err(e) => log::warn!("cannot reach the broker connection: {e}"),
        }
        server.stop(true).await;
    };
    #[cfg(unix)]
    {
        use actix_rt::signal::unix::{signal, SignalKind};
        let streams = signal(SignalKind::terminate())
            .and_then(|term| signal(SignalKind::interrupt()).map(|int| (term, int)));
        match streams {
            Ok((mut term, mut int)) => {
                actix_rt::spawn(async move {
                    let name = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                    };
                    stop(name).await;
                });
            }
            Err(e) => log::warn!("cannot watch SIGTERM and SIGINT: {e}"),
        }
    }
    #[cfg(not(unix))]
    actix_rt::spawn(async move {
        if actix_rt::signal::ctrl_c().await.is_ok() {
            stop("Ctrl-C").await;
        }
    });
}
