//! `web_gateway`: an HTTP gateway to AMQP queues, showing how a service embeds nucleon in actix-web.
//!
//! ```text
//! web_gateway [--listen HOST:PORT] [--broker URL | --broker-config FILE]
//!             (--tokens FILE | --insecure-no-auth) [--public-host HOST[:PORT]]... [--allow-origin ORIGIN]...
//!             [--max-body BYTES]
//! web_gateway --print-token-sha256 < token
//! ```
//!
//! It serves HTTP on 127.0.0.1:8081 by default (port 0 picks a free port). Without `--broker` it runs an
//! in-process broker on a free loopback port and talks to it over AMQP like any other (see `embedded` for
//! its limits, 256 MiB of messages at most by default, and `--broker-config`). Once it accepts requests it
//! prints one line, `web_gateway listening on http://HOST:PORT`, followed by ` (broker amqp://HOST:PORT)`
//! for the in-process broker, then ` (N bearer tokens)`, or ` (open: --insecure-no-auth, anyone who can
//! reach it may send and consume)`. Exit status 1 when it cannot listen, 2 on a bad argument or token file.
//!
//! Security (see `security`): secure by default, it does not start without bearer tokens (`--tokens FILE`
//! or the `WEB_GATEWAY_TOKENS` environment variable, TOML `[[token]]` tables of a name, the token's
//! SHA-256 and the address patterns it may `send` to and `consume` from) unless `--insecure-no-auth` says
//! to serve anyone. Before any handler runs, each request passes, in order: the Host check (the bound
//! address, `localhost` for a loopback bind, or a `--public-host`; else 421, which defeats DNS rebinding),
//! the Origin check (same origin or an `--allow-origin`; a browser's cross-site request is refused with
//! 403, so a cross-site POST or GET has no effect), CORS for the allowed origins (actix-cors), then the
//! token (none or unknown: 401 with `WWW-Authenticate: Bearer`; no right for the address: 403) and the
//! body limit (`--max-body`, 413).
//!
//! The nucleon container runs inside actix-web's own actix System (`ContainerBuilder::start`); handlers
//! reach it through a `ContainerHandle` in the app data and use the async facade.
//!
//! * `POST /queues/{address}/messages`: the body becomes a message on `address` [AMQP 1.0 §3.2]:
//!   JSON (`application/json` or `+json`) as native AMQP values in an `amqp-value` section, `text/*` as a
//!   string `amqp-value`, anything else as a `data` section; the content type is kept. Headers
//!   `amqp-app-NAME` set application properties (strings), and `amqp-subject`, `amqp-message-id`,
//!   `amqp-correlation-id`, `amqp-reply-to`, `amqp-durable` (true/false), `amqp-priority` (0-255) and
//!   `amqp-ttl` (ms) set the header and properties fields. 201 once the broker has accepted the message; 502
//!   when it rejects, releases or modifies it [AMQP 1.0 §3.4] or refuses the link; 503 when it cannot be
//!   reached; 400 on a bad body or header, 413 above 1 MiB.
//! * `GET /queues/{address}/messages?max=N&timeout_ms=T` (N 1-1000, default 1; T 0-60000, default 1000):
//!   up to N messages, waiting at most T ms, accepted, as `{"messages": [...]}` (see
//!   `nucleon_examples::json` for the shape of each).
//! * `GET /queues/{address}/stream`: Server-Sent Events, one `data:` line of JSON per message, accepted once
//!   the next is asked for (a message still unwritten when the client goes is released); a `: keep-alive`
//!   comment every 15 s.
//!
//! Errors are JSON: `{"error": "...", "condition": "amqp:..."}` (condition when there is one).

mod embedded;
mod security;

use std::collections::HashMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use actix_web::http::header::{HeaderMap, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use clap::Parser;
use futures::{Stream, StreamExt};
use nucleon::broker::Broker;
use nucleon::protocol::codec::Symbol;
use nucleon::protocol::frame::{ErrorCondition, MessageId};
use nucleon::{
    Address, ConnectionOptions, ContainerBuilder, ContainerHandle, Error, Message, Outcome,
    Received, ReceiverHandle, ReceiverOptions, SenderHandle, SenderOptions, Value,
};
use nucleon_examples::json::{is_json_type, is_text_type, message_to_json, value_from_json};
use serde::Deserialize;
use serde_json::{json, Value as Json};

/// The largest request body accepted.
const MAX_BODY: usize = 1 << 20;
/// The most addresses with a cached sender; a new one beyond that closes one of the others.
const MAX_SENDERS: usize = 64;
/// How long opening a link or waiting for an outcome may take before the broker counts as unreachable.
const BROKER_TIMEOUT: Duration = Duration::from_secs(30);
/// The interval of the event stream's keep-alive comments.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// The credit window of an event stream's receiver.
const STREAM_WINDOW: u32 = 10;
/// The largest `max` of `GET .../messages`.
const MAX_MAX: u32 = 1000;
/// The largest `timeout_ms` of `GET .../messages`.
const MAX_TIMEOUT_MS: u64 = 60_000;

/// An HTTP gateway to AMQP queues.
#[derive(Parser, Debug)]
#[command(name = "web_gateway")]
struct Args {
    /// The HTTP address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8081", value_parser = parse_listen)]
    listen: String,
    /// The broker to use, as amqp://HOST:PORT or amqps://HOST:PORT (default: an in-process broker on a
    /// free loopback port).
    #[arg(long, value_parser = parse_broker_url)]
    broker: Option<String>,
    #[command(flatten)]
    tls: nucleon_examples::TlsArgs,
    #[command(flatten)]
    security: security::SecurityArgs,
    #[command(flatten)]
    embedded: embedded::EmbeddedArgs,
}

/// `HOST:PORT` with a non-empty host and a port number (the host is resolved when binding).
fn parse_listen(s: &str) -> Result<String, String> {
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => Ok(s.to_owned()),
        _ => Err(format!("expected HOST:PORT, got {s:?}")),
    }
}

/// A broker URL with no address: the gateway appends each queue's address to it.
fn parse_broker_url(s: &str) -> Result<String, String> {
    let url = nucleon_examples::parse_url(s)?;
    match Address::parse(&url) {
        Ok(a) if a.address.is_some() => Err(format!(
            "the broker URL must not name an address, got {s:?}"
        )),
        _ => Ok(url.trim_end_matches('/').to_owned()),
    }
}

/// What every handler shares.
struct Gateway {
    container: ContainerHandle,
    /// `amqp://host:port` of the broker.
    broker: String,
    /// How to connect to it (TLS for `amqps://`).
    connection: ConnectionOptions,
    /// One sender per address, reused across requests.
    senders: Mutex<HashMap<String, SenderHandle>>,
}

impl Gateway {
    fn url(&self, address: &str) -> String {
        format!("{}/{address}", self.broker)
    }

    fn senders(&self) -> std::sync::MutexGuard<'_, HashMap<String, SenderHandle>> {
        self.senders.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached sender for `address`, or a newly opened one (then cached).
    async fn sender(&self, address: &str) -> Result<SenderHandle, Error> {
        if let Some(s) = self.senders().get(address) {
            return Ok(s.clone());
        }
        let opened = tokio::time::timeout(
            BROKER_TIMEOUT,
            self.container.open_sender_with(
                &self.url(address),
                self.connection.clone(),
                SenderOptions::default(),
            ),
        )
        .await
        .map_err(|_| Error::Io("timed out opening a sender".into()))??;
        let mut senders = self.senders();
        if let Some(s) = senders.get(address) {
            // Another request opened one meanwhile: keep that one.
            let _ = opened.close();
            return Ok(s.clone());
        }
        if senders.len() >= MAX_SENDERS {
            if let Some(old) = senders.keys().next().cloned() {
                if let Some(s) = senders.remove(&old) {
                    let _ = s.close();
                }
            }
        }
        senders.insert(address.to_owned(), opened.clone());
        Ok(opened)
    }

    /// Forgets (and closes) the cached sender for `address`.
    fn forget(&self, address: &str) {
        if let Some(s) = self.senders().remove(address) {
            let _ = s.close();
        }
    }

    /// Sends `message` to `address` and waits for its outcome. A cached sender whose connection failed is
    /// dropped and the message is tried once more on a fresh one.
    async fn send(&self, address: &str, message: Message) -> Result<Outcome, Error> {
        let mut retried = false;
        loop {
            let sender = self.sender(address).await?;
            let sent = tokio::time::timeout(BROKER_TIMEOUT, sender.send(message.clone()))
                .await
                .unwrap_or_else(|_| Err(Error::Io("timed out waiting for an outcome".into())));
            match sent {
                Ok(outcome) => return Ok(outcome),
                Err(e) => {
                    self.forget(address);
                    if retried || !connection_level(&e) {
                        return Err(e);
                    }
                    retried = true;
                }
            }
        }
    }
}

/// Whether an error means the broker's connection (not one link or message) failed.
fn connection_level(e: &Error) -> bool {
    match e {
        Error::Amqp(e) => {
            let condition = e.condition.symbol();
            condition.as_str() == "nucleon:io" || condition.as_str().starts_with("amqp:connection:")
        }
        Error::Io(_) | Error::ConnectionClosed | Error::ContainerStopping => true,
        _ => false,
    }
}

/// A JSON error response.
fn error_response(
    status: StatusCode,
    error: &str,
    condition: Option<&ErrorCondition>,
) -> HttpResponse {
    let mut body = json!({ "error": error });
    if let Some(c) = condition {
        body["condition"] = Json::String(c.symbol().as_str().to_owned());
    }
    HttpResponse::build(status).json(body)
}

/// The response for a failure to reach or use the broker: 503 for connection-level failures, 502 when
/// the broker refused (a link detached with an error, ...).
fn broker_error(e: &Error) -> HttpResponse {
    if connection_level(e) {
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the broker cannot be reached: {e}"),
            e.condition(),
        )
    } else {
        error_response(
            StatusCode::BAD_GATEWAY,
            &format!("the broker refused: {e}"),
            e.condition(),
        )
    }
}

/// The response for a message's outcome [AMQP 1.0 §3.4]: 201 when accepted (or sent pre-settled), else
/// 502 with the rejection's condition if there is one.
fn outcome_response(address: &str, outcome: &Outcome) -> HttpResponse {
    let (name, error) = match outcome {
        Outcome::Accepted => ("accepted", None),
        Outcome::Settled => ("settled", None),
        Outcome::Rejected(e) => ("rejected", Some(e.as_ref())),
        Outcome::Released => ("released", Some(None)),
        Outcome::Modified { .. } => ("modified", Some(None)),
    };
    match error {
        None => HttpResponse::Created().json(json!({ "address": address, "outcome": name })),
        Some(e) => {
            let mut body = json!({
                "error": match e {
                    Some(e) => format!("the broker {name} the message: {e}"),
                    None => format!("the broker {name} the message"),
                },
                "outcome": name,
            });
            if let Some(e) = e {
                body["condition"] = Json::String(e.condition.symbol().as_str().to_owned());
            }
            HttpResponse::BadGateway().json(body)
        }
    }
}

/// A queue address from the path: non-empty, and in characters that go into an AMQP URL's path unchanged.
fn check_address(address: &str) -> Result<(), String> {
    let plain = |c: char| c.is_ascii_alphanumeric() || "-._~:@".contains(c);
    let ok = !address.is_empty()
        && address
            .split('/')
            .all(|seg| !seg.is_empty() && seg != "." && seg != ".." && seg.chars().all(plain));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "invalid address {address:?}: use letters, digits and - . _ ~ : @, segments separated by /"
        ))
    }
}

/// The message a POST makes: the body by content type, and the `amqp-*` headers.
fn message_from_request(headers: &HeaderMap, body: &[u8]) -> Result<Message, String> {
    let content_type = match headers.get(CONTENT_TYPE) {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| "the Content-Type header is not visible ASCII".to_owned())?
                .to_owned(),
        ),
        None => None,
    };
    let mut builder = Message::builder();
    builder = match content_type.as_deref() {
        Some(ct) if is_json_type(ct) => {
            let parsed: Json = serde_json::from_slice(body)
                .map_err(|e| format!("the body is not valid JSON: {e}"))?;
            builder.body(value_from_json(&parsed))
        }
        Some(ct) if is_text_type(ct) => {
            let text = std::str::from_utf8(body)
                .map_err(|e| format!("the text body is not UTF-8: {e}"))?;
            builder.body(text)
        }
        _ => builder.data(Bytes::copy_from_slice(body)),
    };
    if let Some(ct) = content_type {
        builder = builder.content_type(Symbol::from(ct));
    }
    for (name, value) in headers {
        let name = name.as_str();
        let Some(field) = name.strip_prefix("amqp-") else {
            continue;
        };
        let text = std::str::from_utf8(value.as_bytes())
            .map_err(|_| format!("header {name} is not UTF-8"))?;
        builder = match field {
            "subject" => builder.subject(text),
            "message-id" => builder.message_id(MessageId::String(text.to_owned())),
            "correlation-id" => builder.correlation_id(MessageId::String(text.to_owned())),
            "reply-to" => builder.reply_to(text),
            "durable" => builder.durable(match text {
                "true" => true,
                "false" => false,
                _ => return Err(format!("header {name} must be true or false, got {text:?}")),
            }),
            "priority" => builder.priority(
                text.parse::<u8>()
                    .map_err(|_| format!("header {name} must be 0-255, got {text:?}"))?,
            ),
            "ttl" => builder.ttl(text.parse::<u32>().map_err(|_| {
                format!("header {name} must be milliseconds (a u32), got {text:?}")
            })?),
            _ => match field.strip_prefix("app-") {
                Some(key) if !key.is_empty() => builder.property(key, Value::from(text)),
                _ => return Err(format!("unknown header {name}")),
            },
        };
    }
    Ok(builder.build())
}

/// Reads the request body, up to [`MAX_BODY`].
async fn read_body(req: &HttpRequest, mut payload: web::Payload) -> Result<Vec<u8>, HttpResponse> {
    let too_large = || {
        error_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than {MAX_BODY} bytes"),
            None,
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_BODY) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            error_response(
                StatusCode::BAD_REQUEST,
                &format!("cannot read the body: {e}"),
                None,
            )
        })?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

async fn post_message(
    gateway: web::Data<Gateway>,
    address: web::Path<String>,
    req: HttpRequest,
    payload: web::Payload,
) -> HttpResponse {
    let address = address.into_inner();
    if let Err(e) = check_address(&address) {
        return error_response(StatusCode::BAD_REQUEST, &e, None);
    }
    let body = match read_body(&req, payload).await {
        Ok(b) => b,
        Err(response) => return response,
    };
    let message = match message_from_request(req.headers(), &body) {
        Ok(m) => m,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &e, None),
    };
    match gateway.send(&address, message).await {
        Ok(outcome) => outcome_response(&address, &outcome),
        Err(e) => broker_error(&e),
    }
}

/// The query of `GET .../messages`.
#[derive(Deserialize)]
struct GetParams {
    max: Option<u32>,
    timeout_ms: Option<u64>,
}

/// `max` and `timeout_ms` from a query string, within their bounds.
fn get_params(query: &str) -> Result<(u32, Duration), String> {
    let params = web::Query::<GetParams>::from_query(query)
        .map_err(|e| format!("invalid query: {e}"))?
        .into_inner();
    let max = params.max.unwrap_or(1);
    if !(1..=MAX_MAX).contains(&max) {
        return Err(format!("max must be 1-{MAX_MAX}, got {max}"));
    }
    let timeout = params.timeout_ms.unwrap_or(1000);
    if timeout > MAX_TIMEOUT_MS {
        return Err(format!(
            "timeout_ms must be 0-{MAX_TIMEOUT_MS}, got {timeout}"
        ));
    }
    Ok((max, Duration::from_millis(timeout)))
}

/// Opens a receiver on `address` with a credit window of `window`.
async fn open_receiver(
    gateway: &Gateway,
    address: &str,
    window: u32,
) -> Result<ReceiverHandle, Error> {
    let options = ReceiverOptions {
        credit_window: Some(window),
        ..ReceiverOptions::default()
    };
    tokio::time::timeout(
        BROKER_TIMEOUT,
        gateway.container.open_receiver_with(
            &gateway.url(address),
            gateway.connection.clone(),
            options,
        ),
    )
    .await
    .map_err(|_| Error::Io("timed out opening a receiver".into()))?
}

async fn get_messages(
    gateway: web::Data<Gateway>,
    address: web::Path<String>,
    req: HttpRequest,
) -> HttpResponse {
    let address = address.into_inner();
    if let Err(e) = check_address(&address) {
        return error_response(StatusCode::BAD_REQUEST, &e, None);
    }
    let (max, timeout) = match get_params(req.query_string()) {
        Ok(p) => p,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &e, None),
    };
    let mut receiver = match open_receiver(&gateway, &address, max).await {
        // Never more than `max` messages are sent to it, so none wait released behind the next reader.
        Ok(r) => r.limit(u64::from(max)),
        Err(e) => return broker_error(&e),
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut messages = Vec::new();
    while messages.len() < max as usize {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(r)) => {
                messages.push(message_to_json(&r.message));
                // The accept goes out before the connection's close (both are queued on it in order).
                let _ = r.accept();
            }
            Ok(None) | Err(_) => break,
        }
    }
    // Dropping the receiver closes its connection (releasing what arrived after the timeout).
    drop(receiver);
    HttpResponse::Ok().json(json!({ "messages": messages }))
}

/// One step of an event stream: the message written last is accepted now that the next is asked for.
struct EventStream {
    receiver: ReceiverHandle,
    written: Option<Received>,
    keep_alive: tokio::time::Interval,
}

fn events(receiver: ReceiverHandle) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let mut keep_alive = tokio::time::interval(KEEP_ALIVE);
    keep_alive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is immediate; a keep-alive is due only after a quiet interval.
    keep_alive.reset();
    let state = EventStream {
        receiver,
        written: None,
        keep_alive,
    };
    futures::stream::unfold(state, |mut s| async move {
        if let Some(r) = s.written.take() {
            let _ = r.accept();
        }
        tokio::select! {
            next = s.receiver.recv() => {
                let r = next?;
                let event = format!("data: {}\n\n", message_to_json(&r.message));
                s.written = Some(r);
                s.keep_alive.reset();
                Some((Ok(Bytes::from(event)), s))
            }
            _ = s.keep_alive.tick() => Some((Ok(Bytes::from_static(b": keep-alive\n\n")), s)),
        }
    })
}

async fn stream_messages(gateway: web::Data<Gateway>, address: web::Path<String>) -> HttpResponse {
    let address = address.into_inner();
    if let Err(e) = check_address(&address) {
        return error_response(StatusCode::BAD_REQUEST, &e, None);
    }
    match open_receiver(&gateway, &address, STREAM_WINDOW).await {
        // When the client goes, actix drops the stream, and with it the receiver, which closes its connection.
        Ok(receiver) => HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header((CACHE_CONTROL, "no-cache"))
            .streaming(events(receiver)),
        Err(e) => broker_error(&e),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    if args.security.print_token_sha256 {
        return match security::print_token_sha256() {
            Ok(hex) => {
                println!("{hex}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("web_gateway: {e}");
                ExitCode::from(2)
            }
        };
    }
    // Checked before anything listens: a gateway that would be open by mistake does not start.
    let checked = security::SecurityConfig::load(&args.security).and_then(|s| {
        let embedded = match args.broker {
            Some(_) => None,
            None => Some(embedded::Embedded::new(&args.embedded)?),
        };
        Ok((s, embedded))
    });
    let (security, embedded) = match checked {
        Ok(checked) => checked,
        Err(e) => {
            eprintln!("web_gateway: {e}");
            return ExitCode::from(2);
        }
    };
    actix_web::rt::System::new().block_on(serve(args, security, embedded))
}

async fn serve(
    args: Args,
    security: security::SecurityConfig,
    embedded_options: Option<embedded::Embedded>,
) -> ExitCode {
    let connection = match args.tls.connection_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("web_gateway: {e}");
            return ExitCode::from(2);
        }
    };
    // Inside actix-web's System: the container's home arbiter is this one.
    let container = ContainerBuilder::default()
        .id("web_gateway")
        .auto_stop(false)
        .start();
    let (broker, embedded, connection) = match (args.broker, embedded_options) {
        (Some(url), _) => (url, None, connection),
        (None, None) => unreachable!("main makes the in-process broker's options without --broker"),
        (None, Some(options)) => {
            let broker = Broker::new(options.broker.clone());
            match broker.listen(&container, "127.0.0.1:0", options.listen.clone()) {
                Ok(l) => (
                    format!("amqp://{}", l.local_addr()),
                    Some(l),
                    options.connection(connection),
                ),
                Err(e) => {
                    eprintln!("web_gateway: cannot start the in-process broker: {e}");
                    container.stop();
                    return ExitCode::from(1);
                }
            }
        }
    };
    let gateway = web::Data::new(Gateway {
        container: container.clone(),
        broker: broker.clone(),
        connection,
        senders: Mutex::new(HashMap::new()),
    });
    // The security layer needs the bound addresses (for the Host check); the workers build their apps
    // only once the server runs, after it is set.
    let layer: Arc<OnceLock<web::Data<security::Security>>> = Arc::new(OnceLock::new());
    let layer_of_workers = layer.clone();
    let server = HttpServer::new(move || {
        let layer = layer_of_workers
            .get()
            .expect("the security layer is set before the server runs")
            .clone();
        let cors = layer.cors();
        // The last `wrap` runs first: Host and Origin, then CORS, then the token, then the routes.
        App::new()
            .app_data(gateway.clone())
            .app_data(layer)
            .route("/queues/{address}/messages", web::post().to(post_message))
            .route("/queues/{address}/messages", web::get().to(get_messages))
            .route("/queues/{address}/stream", web::get().to(stream_messages))
            .wrap(from_fn(security::authorize))
            .wrap(cors)
            .wrap(from_fn(security::guard_host_and_origin))
    })
    .workers(2)
    .bind(&args.listen);
    let server = match server {
        Ok(s) => s,
        Err(e) => {
            eprintln!("web_gateway: cannot listen on {}: {e}", args.listen);
            container.stop();
            return ExitCode::from(1);
        }
    };
    let addrs: Vec<SocketAddr> = server.addrs();
    let access_note = if security.is_open() {
        " (open: --insecure-no-auth, anyone who can reach it may send and consume)".to_owned()
    } else {
        format!(" ({} bearer tokens)", security.token_count())
    };
    if layer.set(web::Data::new(security.bind(&addrs))).is_err() {
        unreachable!("the security layer is set once");
    }
    let server = server.run();
    let http = addrs
        .iter()
        .map(|a| format!("http://{a}"))
        .collect::<Vec<_>>()
        .join(", ");
    let broker_note = match &embedded {
        Some(_) => format!(" (broker {broker})"),
        None => String::new(),
    };
    {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "web_gateway listening on {http}{broker_note}{access_note}"
        );
        let _ = out.flush();
    }
    let result = server.await;
    if let Some(l) = embedded {
        l.stop();
    }
    container.stop();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("web_gateway: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};
    use nucleon::protocol::frame::Error as AmqpError;
    use nucleon::Body;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_static(k),
                HeaderValue::from_str(v).expect("a header value"),
            );
        }
        h
    }

    #[test]
    fn outcomes_map_to_http_statuses() {
        assert_eq!(
            outcome_response("q", &Outcome::Accepted).status(),
            StatusCode::CREATED
        );
        let rejected = Outcome::Rejected(Some(AmqpError::new(ErrorCondition::NotAllowed, "no")));
        assert_eq!(
            outcome_response("q", &rejected).status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            outcome_response("q", &Outcome::Released).status(),
            StatusCode::BAD_GATEWAY
        );
        let modified = Outcome::Modified {
            delivery_failed: true,
            undeliverable_here: false,
        };
        assert_eq!(
            outcome_response("q", &modified).status(),
            StatusCode::BAD_GATEWAY
        );
    }

    #[test]
    fn link_refusals_are_502_and_connection_failures_503() {
        let refused = Error::Amqp(AmqpError::new(ErrorCondition::NotFound, "no such node"));
        assert_eq!(broker_error(&refused).status(), StatusCode::BAD_GATEWAY);
        let forced = Error::Amqp(AmqpError::new(ErrorCondition::ConnectionForced, "bye"));
        assert_eq!(
            broker_error(&forced).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            broker_error(&Error::ConnectionClosed).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn headers_set_the_message_fields() {
        let h = headers(&[
            ("content-type", "text/plain"),
            ("amqp-app-color", "red"),
            ("amqp-subject", "s"),
            ("amqp-message-id", "m1"),
            ("amqp-correlation-id", "c1"),
            ("amqp-reply-to", "back"),
            ("amqp-durable", "true"),
            ("amqp-priority", "9"),
            ("amqp-ttl", "5000"),
        ]);
        let m = message_from_request(&h, b"hello").expect("a message");
        assert_eq!(m.body(), &Body::Value(Value::from("hello")));
        assert_eq!(m.content_type().map(|s| s.as_str()), Some("text/plain"));
        assert_eq!(m.property("color"), Some(&Value::from("red")));
        assert_eq!(m.subject(), Some("s"));
        assert_eq!(m.reply_to(), Some("back"));
        assert!(m.durable());
        assert_eq!(m.priority(), 9);
        assert_eq!(m.ttl(), Some(5000));
        let p = m.properties().expect("properties");
        assert_eq!(p.message_id, Some(MessageId::String("m1".into())));
        assert_eq!(p.correlation_id, Some(MessageId::String("c1".into())));
    }

    #[test]
    fn bad_bodies_and_headers_are_refused() {
        let json = headers(&[("content-type", "application/json")]);
        assert!(message_from_request(&json, b"{nope").is_err());
        let text = headers(&[("content-type", "text/plain")]);
        assert!(message_from_request(&text, b"\xff").is_err());
        for (name, value) in [
            ("amqp-priority", "256"),
            ("amqp-durable", "yes"),
            ("amqp-ttl", "-1"),
            ("amqp-app-", "x"),
            ("amqp-what", "x"),
        ] {
            assert!(
                message_from_request(&headers(&[(name, value)]), b"").is_err(),
                "{name}: {value}"
            );
        }
    }

    #[test]
    fn other_types_are_data_with_their_content_type() {
        let h = headers(&[("content-type", "application/octet-stream")]);
        let m = message_from_request(&h, b"\x00\x01").expect("a message");
        assert_eq!(m.body(), &Body::Data(vec![Bytes::from_static(b"\x00\x01")]));
        assert_eq!(
            m.content_type().map(|s| s.as_str()),
            Some("application/octet-stream")
        );
    }

    #[test]
    fn addresses_and_queries_are_checked() {
        assert!(check_address("orders").is_ok());
        assert!(check_address("a/b-c.d").is_ok());
        for bad in ["", "/a", "a//b", "a/../b", "a b", "a?b"] {
            assert!(check_address(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            get_params("").expect("defaults"),
            (1, Duration::from_millis(1000))
        );
        assert_eq!(
            get_params("max=5&timeout_ms=0").expect("in bounds"),
            (5, Duration::ZERO)
        );
        for bad in ["max=0", "max=1001", "max=x", "timeout_ms=60001", "max=-1"] {
            assert!(get_params(bad).is_err(), "{bad}");
        }
    }
}
