//! `chat_relay`: a browser chat whose every message and presence event goes through AMQP.
//!
//! ```text
//! chat_relay [--listen HOST:PORT] [--amqp-listen HOST:PORT | --broker URL] [--heartbeat-ms N]
//! ```
//!
//! An actix-web server (default `127.0.0.1:8080`) serves a one-page chat (HTML, CSS and JavaScript embedded
//! in the binary) and a WebSocket at `/ws`. By default it also serves an in-process `nucleon` broker on
//! `--amqp-listen` (default `127.0.0.1:5672`; port 0 picks a free port), where `chat/` addresses are topics.
//! `--broker amqp://HOST:PORT` uses another broker instead: another relay's, a `broker` example, or any
//! AMQP 1.0 broker that fans a topic out. Relays sharing a broker form one chat. Once it serves, it prints
//! one line, `chat_relay ready: http://HOST:PORT amqp://HOST:PORT` (the HTTP address it is bound to and
//! the broker it uses). Exit status 1 when it cannot listen, 2 on a bad argument. Logs go to stderr
//! (`RUST_LOG`, default `info`).
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
//! Events from the broker are checked like browser input; a malformed one is logged and ignored. A relay
//! ignores presence events stamped with its own id.
//!
//! # Browser protocol
//!
//! JSON text frames tagged by `type`. From the browser: `{"type":"join","name","room"}` (once) and
//! `{"type":"send","text"}`. To the browser: `status` (`connecting`, `connected`, `reconnecting`),
//! `joined`, `members`, `message`, `system` and `error` (a refused frame: the session stays open). A name
//! is 1-32 characters, a room 1-32 of `A-Z a-z 0-9 _ -`, a message at most 2000 characters; none may hold
//! control characters. A name already present in the room (ignoring case) is refused.

mod hub;
mod relay;
mod session;
mod wire;

use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use actix::AsyncContext;
use actix_web::http::header;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use clap::Parser;
use nucleon::broker::{Broker, BrokerOptions};
use nucleon::{ConnectionOptions, ContainerBuilder, ListenOptions, ReconnectOptions};
use nucleon_examples::{parse_url, TlsArgs};

use crate::hub::Hub;
use crate::relay::Relay;

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
    let broker_url = match &args.broker {
        Some(url) => url.clone(),
        None => {
            let broker = Broker::new(BrokerOptions {
                topic_prefixes: vec!["chat/".into()],
                ..BrokerOptions::default()
            });
            match broker.listen(&container, &args.amqp_listen, ListenOptions::default()) {
                Ok(listener) => format!("amqp://{}", listener.local_addr()),
                Err(e) => {
                    eprintln!("chat_relay: cannot listen on {}: {e}", args.amqp_listen);
                    return ExitCode::from(1);
                }
            }
        }
    };

    let relay_id = uuid::Uuid::new_v4().to_string();
    let hub_context = actix::Context::<Hub>::new();
    let options = ConnectionOptions {
        reconnect: Some(ReconnectOptions {
            delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
            ..ReconnectOptions::default()
        }),
        ..tls_options
    };
    let connection =
        match container.connect(&broker_url, options, Relay::new(hub_context.address())) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("chat_relay: cannot connect to {broker_url}: {e}");
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
        hub,
        work: connection.work_queue(),
    };

    let server = HttpServer::new(move || {
        App::new()
            .app_data(web::Data::new(cx.clone()))
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
    .bind(&args.listen);
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            eprintln!("chat_relay: cannot listen on {}: {e}", args.listen);
            container.stop();
            return ExitCode::from(1);
        }
    };
    let http = server
        .addrs()
        .first()
        .map_or_else(|| args.listen.clone(), ToString::to_string);
    let running = server.run();
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

/// Upgrades to a WebSocket and runs the session on this worker.
async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    cx: web::Data<session::Context>,
) -> Result<HttpResponse, actix_web::Error> {
    let (response, ws, stream) = actix_ws::handle(&req, body)?;
    actix_web::rt::spawn(session::run(cx.get_ref().clone(), ws, stream));
    Ok(response)
}
