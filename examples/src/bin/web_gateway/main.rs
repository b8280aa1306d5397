//! `web_gateway`: an HTTP gateway to AMQP queues, showing how a service embeds nucleon in actix-web.
//!
//! ```text
//! web_gateway [--listen HOST:PORT] [--broker URL | --broker-config FILE]
//!             (--tokens FILE | --insecure-no-auth) [--public-host HOST[:PORT]]... [--allow-origin ORIGIN]...
//!             [--max-body BYTES] [--max-streams N] [--max-unacked N] [--keep-alive-secs N]
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
//! The nucleon container runs inside actix-web's own actix System (`ContainerBuilder::start`). Every request
//! shares one AMQP connection to the broker (`ContainerHandle::connect_async`, made again if it ends; see
//! `amqp`): a sender link per address (cached, 64 at most) and a receiver link per GET or stream.
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
//!   up to N messages, waiting at most T ms, as `{"messages": [...]}` (see `nucleon_examples::json` for the
//!   shape of each). They are accepted only once the whole response is written; a client that goes away
//!   first gets nothing settled: the messages go back to the queue at once.
//! * `GET ...?ack=manual&ack_timeout_ms=D` (D 1-300000, default 30000): the same, not settled: each message
//!   has a `delivery_id`, and `POST /queues/{address}/ack` with `{"delivery_ids": [...], "outcome":
//!   "accepted"}` (or `released`, `rejected`) settles them, answering `{"settled": N, "unknown": [...]}`
//!   (ids not waiting: unknown, of another address, settled already, or past their deadline). What is not
//!   acknowledged within D is released and delivered again. At most `--max-unacked` (10,000) wait at once;
//!   a GET that could exceed it gets 503.
//! * `GET /queues/{address}/stream`: Server-Sent Events, one `data:` line of JSON per message. Each is
//!   accepted once it is written and something after it is written too (the next event, or a keep-alive
//!   comment a second later), so a client that went away gets nothing more settled, and when the server
//!   finds it gone (its next write fails, at the latest at the next keep-alive, every `--keep-alive-secs`,
//!   default 15) the stream's link closes and everything not settled goes back to the queue at once. At
//!   most `--max-streams` (100) are open at once; more get 503.
//!
//! Errors are JSON: `{"error": "...", "condition": "amqp:..."}` (condition when there is one).

mod amqp;
mod embedded;
mod security;

use std::future::Future as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
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
    Address, ContainerBuilder, Error, Message, Outcome, Received, ReceiverHandle, Value,
};
use tokio::sync::OwnedSemaphorePermit;

use amqp::{Gateway, Settle};
use nucleon_examples::json::{is_json_type, is_text_type, message_to_json, value_from_json};
use serde::Deserialize;
use serde_json::{json, Value as Json};

/// The largest request body accepted.
const MAX_BODY: usize = 1 << 20;
/// How soon after an event with nothing after it the stream writes a keep-alive comment, whose write
/// confirms the event was written.
const CONFIRM: Duration = Duration::from_secs(1);
/// The credit window of an event stream's receiver.
const STREAM_WINDOW: u32 = 10;
/// The largest `max` of `GET .../messages`.
const MAX_MAX: u32 = 1000;
/// The largest `timeout_ms` of `GET .../messages`.
const MAX_TIMEOUT_MS: u64 = 60_000;
/// How long a delivery given out with `ack=manual` waits for its acknowledgement by default.
const DEFAULT_ACK_TIMEOUT_MS: u64 = 30_000;
/// The largest `ack_timeout_ms`.
const MAX_ACK_TIMEOUT_MS: u64 = 300_000;

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
    /// Seconds between an event stream's keep-alive comments (each also finds a client that went away).
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    keep_alive_secs: u64,
    /// The most event streams open at once; more get 503 (at most 180: streams, GETs and manual
    /// acknowledgements share 180 receiver links on the broker connection).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=180))]
    max_streams: u32,
    /// The most deliveries given out with `ack=manual` and not yet acknowledged; a GET that could
    /// exceed it gets 503.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    max_unacked: u32,
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

/// Whether an error means the broker's connection (not one link or message) failed.
fn connection_level(e: &Error) -> bool {
    match e {
        Error::Amqp(e) => e
            .condition
            .symbol()
            .as_str()
            .starts_with("amqp:connection:"),
        Error::TransportLost { .. }
        | Error::Io { .. }
        | Error::Timeout { .. }
        | Error::ConnectionClosed
        | Error::ContainerStopping => true,
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
        // A kind of outcome this gateway does not know: not accepted.
        _ => ("not accepted", Some(None)),
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
    ack: Option<String>,
    ack_timeout_ms: Option<u64>,
}

/// What a `GET .../messages` asks for.
#[derive(Debug, PartialEq)]
struct Get {
    max: u32,
    timeout: Duration,
    /// `ack=manual`: the messages are settled by `POST .../ack`, within this long.
    manual: Option<Duration>,
}

/// `max`, `timeout_ms`, `ack` and `ack_timeout_ms` from a query string, within their bounds.
fn get_params(query: &str) -> Result<Get, String> {
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
    let manual = match params.ack.as_deref() {
        None | Some("auto") => {
            if params.ack_timeout_ms.is_some() {
                return Err("ack_timeout_ms goes with ack=manual".to_owned());
            }
            None
        }
        Some("manual") => {
            let ms = params.ack_timeout_ms.unwrap_or(DEFAULT_ACK_TIMEOUT_MS);
            if !(1..=MAX_ACK_TIMEOUT_MS).contains(&ms) {
                return Err(format!(
                    "ack_timeout_ms must be 1-{MAX_ACK_TIMEOUT_MS}, got {ms}"
                ));
            }
            Some(Duration::from_millis(ms))
        }
        Some(other) => return Err(format!("ack must be auto or manual, got {other:?}")),
    };
    Ok(Get {
        max,
        timeout: Duration::from_millis(timeout),
        manual,
    })
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
    let get = match get_params(req.query_string()) {
        Ok(p) => p,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, &e, None),
    };
    let mut reservation = match get.manual {
        Some(_) => match gateway.acks.reserve(get.max as usize) {
            Some(r) => Some(r),
            None => return error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many deliveries wait for an acknowledgement: acknowledge some, or try later",
                None,
            ),
        },
        None => None,
    };
    let Some(place) = gateway.receiver_place() else {
        return too_many_links();
    };
    // A manual GET's link stays open until its deliveries are acknowledged: it asks for one message at a
    // time, so that at most one more arrives after the last one taken and waits there, out of sight.
    let window = if get.manual.is_some() { 1 } else { get.max };
    let mut receiver = match gateway.receiver(&address, window).await {
        // Never more than `max` messages are sent to it, so none wait behind the next reader.
        Ok(r) => r.limit(u64::from(get.max)),
        Err(e) => return broker_error(&e),
    };
    let deadline = tokio::time::Instant::now() + get.timeout;
    let mut taken = Vec::new();
    while taken.len() < get.max as usize {
        match tokio::time::timeout_at(deadline, receiver.recv()).await {
            Ok(Some(r)) => taken.push(r),
            Ok(None) | Err(_) => break,
        }
    }
    match (get.manual, reservation.as_mut()) {
        (Some(ack_timeout), Some(reservation)) => {
            // The link stays open while any of them waits.
            let link = Arc::new((receiver, place));
            let until = std::time::Instant::now() + ack_timeout;
            let messages: Vec<Json> = taken
                .into_iter()
                .map(|r| {
                    let mut m = message_to_json(&r.message);
                    let id = gateway.acks.hold(reservation, &address, r, &link, until);
                    m["delivery_id"] = Json::String(id);
                    m
                })
                .collect();
            HttpResponse::Ok().json(json!({
                "messages": messages,
                "ack_deadline_ms": ack_timeout.as_millis() as u64,
            }))
        }
        _ => {
            let body = json!({
                "messages": taken.iter().map(|r| message_to_json(&r.message)).collect::<Vec<_>>(),
            });
            HttpResponse::Ok()
                .content_type("application/json")
                .streaming(settle_once_written(
                    body.to_string(),
                    taken,
                    (receiver, place),
                ))
        }
    }
}

/// The answer when every receiver link the gateway allows is open.
fn too_many_links() -> HttpResponse {
    error_response(
        StatusCode::SERVICE_UNAVAILABLE,
        "too many GETs, streams and unacknowledged deliveries are open: try later",
        None,
    )
}

/// A response body that accepts `taken` only once the server has written the whole body, in two writes:
/// all but its last byte, then the last byte, each handed to the socket before the next is asked for
/// (the stream answers `Pending` in between, so the server flushes). A client that went away is found by
/// the second write at the latest (a socket whose peer is gone answers the first with a reset), and then
/// the body is dropped unfinished: the messages are released, and the link closing gives back anything
/// else it held.
fn settle_once_written(
    body: String,
    taken: Vec<Received>,
    receiver: (ReceiverHandle, OwnedSemaphorePermit),
) -> impl Stream<Item = Result<Bytes, actix_web::Error>> {
    let mut body = Bytes::from(body);
    let last = body.split_off(body.len().saturating_sub(1));
    let mut parts = vec![last, body];
    let mut flushed = true;
    let mut settle = Some((taken, receiver));
    futures::stream::poll_fn(move |cx| {
        if !flushed {
            // Let the server write what it has before the next part.
            flushed = true;
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        }
        if let Some(part) = parts.pop() {
            flushed = false;
            return std::task::Poll::Ready(Some(Ok(part)));
        }
        if let Some((taken, receiver)) = settle.take() {
            for r in taken {
                let _ = r.accept();
            }
            // Its close is queued on the connection after the accepts.
            drop(receiver);
        }
        std::task::Poll::Ready(None)
    })
}

/// The body of `POST .../ack`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    delivery_ids: Vec<String>,
    #[serde(default)]
    outcome: Option<String>,
}

/// `POST /queues/{address}/ack`: settles deliveries given out with `ack=manual`.
async fn ack_messages(
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
    let request: AckRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"delivery_ids\": [...], \"outcome\": \"accepted\"}}: {e}"),
                None,
            )
        }
    };
    let how = match request.outcome.as_deref() {
        None | Some("accepted") => Settle::Accept,
        Some("released") => Settle::Release,
        Some("rejected") => Settle::Reject,
        Some(other) => {
            return error_response(
                StatusCode::BAD_REQUEST,
                &format!("outcome must be accepted, released or rejected, got {other:?}"),
                None,
            )
        }
    };
    let unknown = gateway.acks.settle(&address, &request.delivery_ids, how);
    let settled = request.delivery_ids.len() - unknown.len();
    HttpResponse::Ok().json(json!({ "settled": settled, "unknown": unknown }))
}

/// An event stream: a `Stream` of SSE chunks that settles each event once the server has written it and
/// then written something after it.
///
/// The server asks for the next chunk before it writes the ones it has, and writes them when the stream
/// answers `Pending`: so a chunk counts as written once the stream answered `Pending` after yielding it
/// and is polled again. An event is accepted when a later chunk is written too (the next events, or the
/// keep-alive comment that follows [`CONFIRM`] after it when nothing else comes): a client that went away
/// makes that later write fail (a socket whose peer is gone answers the first write with a reset), the
/// server drops the stream, and the event, unsettled, is released. The keep-alive comment is written in two
/// parts, so that a client that went away while the stream was quiet is found by the keep-alive too. When
/// the stream is dropped its link closes, and the broker gets back at once everything else it held.
struct EventStream {
    receiver: ReceiverHandle,
    /// Events yielded since the server last wrote.
    unwritten: Vec<Received>,
    /// Whether anything (an event or a comment) was yielded since the server last wrote.
    yielded: bool,
    /// Events written, each accepted once something after it is written.
    written: Vec<Received>,
    /// The stream answered `Pending`, so the server wrote what was yielded before.
    paused: bool,
    /// The keep-alive's second part is due, after a pause.
    rest: Option<Bytes>,
    keep_alive: Pin<Box<tokio::time::Sleep>>,
    beat: Duration,
    /// Its places among the streams and the receiver links, given back when the stream ends.
    _places: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

impl EventStream {
    fn new(
        receiver: ReceiverHandle,
        beat: Duration,
        places: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    ) -> EventStream {
        EventStream {
            receiver,
            unwritten: Vec::new(),
            yielded: false,
            written: Vec::new(),
            paused: false,
            rest: None,
            keep_alive: Box::pin(tokio::time::sleep(beat)),
            beat,
            _places: places,
        }
    }

    /// The server wrote what was yielded: the events written before are accepted, and these wait for
    /// the next write.
    fn wrote(&mut self) {
        if !std::mem::take(&mut self.yielded) {
            return;
        }
        for r in self.written.drain(..) {
            let _ = r.accept();
        }
        self.written = std::mem::take(&mut self.unwritten);
        if !self.written.is_empty() {
            self.beat_in(CONFIRM.min(self.beat));
        }
    }

    fn beat_in(&mut self, after: Duration) {
        self.keep_alive
            .as_mut()
            .reset(tokio::time::Instant::now() + after);
    }

    fn pause(&mut self) -> Poll<Option<Result<Bytes, actix_web::Error>>> {
        self.paused = true;
        Poll::Pending
    }
}

impl Stream for EventStream {
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let s = self.get_mut();
        if std::mem::take(&mut s.paused) {
            s.wrote();
        }
        if let Some(rest) = s.rest.take() {
            if !s.yielded {
                s.yielded = true;
                return Poll::Ready(Some(Ok(rest)));
            }
            // The first part is not written yet: pause (and come back at once) so that it is.
            s.rest = Some(rest);
            cx.waker().wake_by_ref();
            return s.pause();
        }
        match s.receiver.poll_next_unpin(cx) {
            Poll::Ready(Some(r)) => {
                let event = format!("data: {}\n\n", message_to_json(&r.message));
                s.unwritten.push(r);
                s.yielded = true;
                return Poll::Ready(Some(Ok(Bytes::from(event))));
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if !s.unwritten.is_empty() {
            // Come back once the server has written them, to set their confirmation's time.
            cx.waker().wake_by_ref();
            return s.pause();
        }
        if s.keep_alive.as_mut().poll(cx).is_ready() {
            let beat = s.beat;
            s.beat_in(beat);
            s.rest = Some(Bytes::from_static(b"\n"));
            s.yielded = true;
            return Poll::Ready(Some(Ok(Bytes::from_static(b": keep-alive\n"))));
        }
        s.pause()
    }
}

async fn stream_messages(gateway: web::Data<Gateway>, address: web::Path<String>) -> HttpResponse {
    let address = address.into_inner();
    if let Err(e) = check_address(&address) {
        return error_response(StatusCode::BAD_REQUEST, &e, None);
    }
    let Ok(place) = gateway.streams.clone().try_acquire_owned() else {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many event streams are open: try later",
            None,
        );
    };
    let Some(link) = gateway.receiver_place() else {
        return too_many_links();
    };
    match gateway.receiver(&address, STREAM_WINDOW).await {
        // When the client goes, actix drops the stream, and with it the receiver, whose link closes at
        // once: the broker gets back what it held (the event not yet written among them).
        Ok(receiver) => HttpResponse::Ok()
            .content_type("text/event-stream")
            .insert_header((CACHE_CONTROL, "no-cache"))
            .streaming(EventStream::new(
                receiver,
                gateway.keep_alive,
                (place, link),
            )),
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
    let gateway = web::Data::new(Gateway::new(
        container.clone(),
        broker.clone(),
        connection,
        args.max_streams as usize,
        args.max_unacked as usize,
        Duration::from_secs(args.keep_alive_secs),
    ));
    // Deliveries whose acknowledgement did not come in time go back to the broker.
    let expiring = gateway.clone();
    actix_web::rt::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            expiring.acks.expire(std::time::Instant::now());
        }
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
            .route("/queues/{address}/ack", web::post().to(ack_messages))
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
            Get {
                max: 1,
                timeout: Duration::from_millis(1000),
                manual: None
            }
        );
        assert_eq!(
            get_params("max=5&timeout_ms=0&ack=manual").expect("in bounds"),
            Get {
                max: 5,
                timeout: Duration::ZERO,
                manual: Some(Duration::from_millis(DEFAULT_ACK_TIMEOUT_MS))
            }
        );
        assert_eq!(
            get_params("ack=manual&ack_timeout_ms=5").expect("in bounds"),
            Get {
                max: 1,
                timeout: Duration::from_millis(1000),
                manual: Some(Duration::from_millis(5))
            }
        );
        for bad in [
            "max=0",
            "max=1001",
            "max=x",
            "timeout_ms=60001",
            "max=-1",
            "ack=maybe",
            "ack_timeout_ms=5",
            "ack=manual&ack_timeout_ms=0",
            "ack=manual&ack_timeout_ms=300001",
        ] {
            assert!(get_params(bad).is_err(), "{bad}");
        }
    }
}
