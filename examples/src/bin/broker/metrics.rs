//! `broker --metrics HOST:PORT`: Prometheus metrics at `GET /metrics` and the JSON management API under
//! `/api/`, served by actix-web on a thread of its own, with its own actix System: the container's
//! System and its shutdown never wait on an HTTP client, and a slow scrape never holds an AMQP worker.
//!
//! `/metrics` (Prometheus text format 0.0.4, through the official `prometheus-client` crate) needs no
//! credentials, as RabbitMQ's and Artemis's exporters: bind it where only the scraper reaches. The API
//! does, once the config file has `[permissions]`: HTTP Basic with a broker user's name and password
//! (checked against its SCRAM credential), and the `manage` grant. Without `[permissions]` the broker is
//! open, and so is the API (a log line says so).
//!
//! * `GET /api/queues`: the queues the user may manage, with their numbers (any `manage` grant).
//! * `GET /api/connections`: every connection, with its peer address, user and links (`manage` on `*`).
//! * `POST /api/queues/{name}/purge`: drops the messages waiting in the queue (`manage` on it).
//! * `DELETE /api/queues/{name}`: deletes the queue and its messages; its links are detached (`manage` on it).
//!
//! No or wrong credentials: 401 with `WWW-Authenticate: Basic`; a user without the grant: 403; no such
//! queue: 404.

use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use base64::Engine as _;
use nucleon::broker::{Authorization, Broker, BrokerStats, Operation, QueueStats};
use nucleon::protocol::engine::ScramAuthenticator;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde_json::{json, Value as Json};

/// The realm of the `WWW-Authenticate` challenge.
const REALM: &str = "Basic realm=\"nucleon broker management\", charset=\"UTF-8\"";

/// Most HTTP connections at once: a scraper and an operator or two need few, and each costs memory.
const MAX_HTTP_CONNECTIONS: usize = 64;

/// What the HTTP server needs.
pub struct Management {
    pub broker: Broker,
    /// `None`: the broker is open, and so is the API.
    pub authorization: Option<Authorization>,
    /// The broker's users, to check HTTP Basic passwords (`None`: no users, so nobody logs in).
    pub users: Option<Arc<ScramAuthenticator>>,
}

/// Serves metrics and management on `listener` from a new thread, until the process exits. The error is
/// the one actix-web gives for the listener.
pub fn start(listener: TcpListener, management: Management) -> io::Result<SocketAddr> {
    let addr = listener.local_addr()?;
    if management.authorization.is_none() {
        log::warn!(
            "management API on {addr} is open: no [permissions] configured, anyone who reaches it may \
             purge and delete queues"
        );
    }
    let mut registry = Registry::default();
    registry.register_collector(Box::new(BrokerCollector(management.broker.clone())));
    let state = web::Data::new(State {
        management,
        registry,
    });
    let (ready, started) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("broker-http".into())
        .spawn(move || {
            actix_rt::System::new().block_on(async move {
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(state.clone())
                        .route("/metrics", web::get().to(metrics))
                        .route("/api/queues", web::get().to(queues))
                        .route("/api/connections", web::get().to(connections))
                        .route("/api/queues/{name:.+}/purge", web::post().to(purge))
                        .route("/api/queues/{name:.+}", web::delete().to(delete))
                })
                .workers(1)
                .max_connections(MAX_HTTP_CONNECTIONS)
                .disable_signals()
                .listen(listener);
                match server {
                    Ok(server) => {
                        let _ = ready.send(Ok(()));
                        if let Err(e) = server.run().await {
                            log::error!("metrics and management server on {addr}: {e}");
                        }
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                    }
                }
            })
        })?;
    started
        .recv()
        .map_err(|_| io::Error::other("the HTTP server's thread ended"))??;
    Ok(addr)
}

struct State {
    management: Management,
    registry: Registry,
}

async fn metrics(state: web::Data<State>) -> HttpResponse {
    let mut text = String::new();
    match prometheus_client::encoding::prometheus_text::encode(&mut text, &state.registry) {
        Ok(()) => HttpResponse::Ok()
            .content_type(prometheus_client::encoding::prometheus_text::CONTENT_TYPE)
            .body(text),
        Err(fmt::Error) => HttpResponse::InternalServerError().finish(),
    }
}

async fn queues(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let m = &state.management;
    let user = match authorize(&req, m, |a, u| a.permits_somewhere(u, Operation::Manage)).await {
        Ok(user) => user,
        Err(refused) => return refused,
    };
    let listed: Vec<Json> = m
        .broker
        .stats()
        .queues
        .iter()
        .filter(|q| may_manage(m, user.as_deref(), &q.name))
        .map(queue_json)
        .collect();
    HttpResponse::Ok().json(listed)
}

async fn connections(req: HttpRequest, state: web::Data<State>) -> HttpResponse {
    let m = &state.management;
    if let Err(refused) =
        authorize(&req, m, |a, u| a.permits_everywhere(u, Operation::Manage)).await
    {
        return refused;
    }
    let listed: Vec<Json> = m
        .broker
        .connections()
        .iter()
        .map(|c| {
            json!({
                "id": c.id,
                "peer": c.peer.to_string(),
                "user": c.user,
                "sessions": c.sessions,
                "consumers": c.consumers,
                "producers": c.producers,
                "links": c.consumers + c.producers,
            })
        })
        .collect();
    HttpResponse::Ok().json(listed)
}

async fn purge(req: HttpRequest, name: web::Path<String>, state: web::Data<State>) -> HttpResponse {
    let m = &state.management;
    let name = name.into_inner();
    if let Err(refused) = authorize(&req, m, |a, u| a.permits(u, Operation::Manage, &name)).await {
        return refused;
    }
    match m.broker.purge(&name) {
        Some(n) => HttpResponse::Ok().json(json!({"queue": name, "purged": n})),
        None => not_found(&name),
    }
}

async fn delete(
    req: HttpRequest,
    name: web::Path<String>,
    state: web::Data<State>,
) -> HttpResponse {
    let m = &state.management;
    let name = name.into_inner();
    if let Err(refused) = authorize(&req, m, |a, u| a.permits(u, Operation::Manage, &name)).await {
        return refused;
    }
    match m.broker.delete_queue(&name) {
        Some(n) => HttpResponse::Ok().json(json!({"queue": name, "deleted": n})),
        None => not_found(&name),
    }
}

fn not_found(name: &str) -> HttpResponse {
    HttpResponse::NotFound().json(json!({"error": format!("no queue {name}")}))
}

fn queue_json(q: &QueueStats) -> Json {
    json!({
        "name": q.name,
        "depth": q.depth,
        "bytes": q.bytes,
        "unsettled": q.unsettled,
        "consumers": q.consumers,
        "enqueued": q.enqueued,
        "delivered": q.delivered,
        "redelivered": q.redelivered,
        "expired": q.expired,
        "dead_lettered": q.dead_lettered,
    })
}

/// Whether the request's user (`None` on an open broker) may manage the queue `name`.
fn may_manage(m: &Management, user: Option<&str>, name: &str) -> bool {
    match (&m.authorization, user) {
        (Some(a), Some(u)) => a.permits(u, Operation::Manage, name),
        _ => true,
    }
}

/// The user the request's HTTP Basic credentials log in as, if `granted` lets it through (`Ok(None)`: the
/// broker is open). Otherwise the response to give: 401 for no or wrong credentials, 403 for a user
/// `granted` refuses.
async fn authorize(
    req: &HttpRequest,
    m: &Management,
    granted: impl Fn(&Authorization, &str) -> bool,
) -> Result<Option<String>, HttpResponse> {
    let Some(authz) = &m.authorization else {
        return Ok(None);
    };
    let peer = req
        .peer_addr()
        .map_or_else(|| "?".into(), |a| a.to_string());
    let Some((user, password)) = basic_credentials(req) else {
        return Err(challenge("credentials required"));
    };
    let users = m.users.clone();
    let name = user.clone();
    // Salting and hashing the password takes the credential's thousands of iterations: off the
    // server's event loop.
    let verified = web::block(move || users.is_some_and(|u| u.check_password(&name, &password)))
        .await
        .unwrap_or(false);
    if !verified {
        log::warn!("management: login of {user} from {peer}: refused");
        return Err(challenge("wrong user name or password"));
    }
    if !granted(authz, &user) {
        log::info!(
            "management: {user} from {peer} may not {} {}",
            req.method(),
            req.path()
        );
        return Err(HttpResponse::Forbidden().json(json!({
            "error": format!("user {user} may not manage this")
        })));
    }
    Ok(Some(user))
}

fn challenge(why: &str) -> HttpResponse {
    HttpResponse::build(StatusCode::UNAUTHORIZED)
        .insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static(REALM)))
        .json(json!({ "error": why }))
}

/// The name and password of an `Authorization: Basic` header [RFC 7617].
fn basic_credentials(req: &HttpRequest) -> Option<(String, String)> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Reads the broker's numbers at each scrape.
#[derive(Debug)]
struct BrokerCollector(Broker);

/// A per-queue metric: its name, help, type, and its value in a queue's numbers.
type QueueMetric = (
    &'static str,
    &'static str,
    MetricType,
    fn(&QueueStats) -> u64,
);

/// Per-queue metrics, each with the label `queue`. Counters get `_total` appended.
const QUEUE_METRICS: [QueueMetric; 9] = [
    (
        "nucleon_queue_depth",
        "Messages waiting in the queue.",
        MetricType::Gauge,
        |q| q.depth as u64,
    ),
    (
        "nucleon_queue_bytes",
        "Encoded size of the messages the queue holds, waiting and unsettled.",
        MetricType::Gauge,
        |q| q.bytes as u64,
    ),
    (
        "nucleon_queue_unsettled",
        "Messages held by the queue's consumers, not yet settled.",
        MetricType::Gauge,
        |q| q.unsettled as u64,
    ),
    (
        "nucleon_queue_consumers",
        "Consumer links of the queue (browsers included).",
        MetricType::Gauge,
        |q| q.consumers as u64,
    ),
    (
        "nucleon_queue_enqueued",
        "Messages put in the queue.",
        MetricType::Counter,
        |q| q.enqueued,
    ),
    (
        "nucleon_queue_delivered",
        "Messages sent to the queue's consumers.",
        MetricType::Counter,
        |q| q.delivered,
    ),
    (
        "nucleon_queue_redelivered",
        "Messages sent again after a consumer gave them back.",
        MetricType::Counter,
        |q| q.redelivered,
    ),
    (
        "nucleon_queue_expired",
        "Messages that expired in the queue.",
        MetricType::Counter,
        |q| q.expired,
    ),
    (
        "nucleon_queue_dead_lettered",
        "Messages the queue moved to the dead-letter queue.",
        MetricType::Counter,
        |q| q.dead_lettered,
    ),
];

/// A broker-wide metric: its name, help, type, and its value in the broker's numbers.
type BrokerMetric = (
    &'static str,
    &'static str,
    MetricType,
    fn(&BrokerStats) -> u64,
);

const BROKER_METRICS: [BrokerMetric; 10] = [
    (
        "nucleon_connections",
        "Open AMQP connections.",
        MetricType::Gauge,
        |b| b.connections as u64,
    ),
    (
        "nucleon_sessions",
        "Sessions of the open connections.",
        MetricType::Gauge,
        |b| b.sessions as u64,
    ),
    (
        "nucleon_links",
        "Attached links, consumers and producers.",
        MetricType::Gauge,
        |b| b.links() as u64,
    ),
    (
        "nucleon_authentication_failures",
        "Failed AMQP logins.",
        MetricType::Counter,
        |b| b.authentication_failures,
    ),
    (
        "nucleon_message_memory_bytes",
        "Encoded size of every message the broker holds, queued or unsettled.",
        MetricType::Gauge,
        |b| b.memory as u64,
    ),
    (
        "nucleon_rejected",
        "Messages consumers rejected (dropped).",
        MetricType::Counter,
        |b| b.rejected,
    ),
    (
        "nucleon_dropped_without_subscribers",
        "Messages published to a topic with no subscriber (dropped).",
        MetricType::Counter,
        |b| b.dropped_without_subscribers,
    ),
    (
        "nucleon_expired",
        "Messages that expired in any queue or topic subscription.",
        MetricType::Counter,
        |b| b.expired,
    ),
    (
        "nucleon_dead_lettered",
        "Messages moved to the dead-letter queue.",
        MetricType::Counter,
        |b| b.dead_lettered,
    ),
    (
        "nucleon_max_deliveries_reached",
        "Messages given back once more after the maximum deliveries.",
        MetricType::Counter,
        |b| b.max_deliveries_reached,
    ),
];

impl Collector for BrokerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = self.0.stats();
        for (name, help, kind, value) in QUEUE_METRICS {
            let mut family = encoder.encode_descriptor(name, help, None, kind)?;
            for q in &stats.queues {
                let labels = [("queue", q.name.as_str())];
                encode_value(kind, value(q), family.encode_family(&labels)?)?;
            }
        }
        for (name, help, kind, value) in BROKER_METRICS {
            encode_value(
                kind,
                value(&stats),
                encoder.encode_descriptor(name, help, None, kind)?,
            )?;
        }
        if let Some(journal) = self.0.store_stats() {
            let gauges = [
                (
                    "nucleon_journal_disk_bytes",
                    "Bytes of the journal's segments on disk (the spare included).",
                    journal.disk_bytes,
                ),
                (
                    "nucleon_journal_segments",
                    "The journal's segment files.",
                    journal.segments as u64,
                ),
                (
                    "nucleon_journal_live_messages",
                    "Messages in the journal not yet settled.",
                    journal.live_messages as u64,
                ),
                (
                    "nucleon_journal_live_bytes",
                    "Bytes of the journal's records still live (compaction keeps the disk under twice this, plus slack).",
                    journal.live_bytes,
                ),
            ];
            for (name, help, value) in gauges {
                let kind = MetricType::Gauge;
                encode_value(
                    kind,
                    value,
                    encoder.encode_descriptor(name, help, None, kind)?,
                )?;
            }
        }
        if let Some(rss) = resident_memory() {
            let help = "Resident memory of the broker process.";
            let kind = MetricType::Gauge;
            let metric =
                encoder.encode_descriptor("process_resident_memory_bytes", help, None, kind)?;
            encode_value(kind, rss, metric)?;
        }
        Ok(())
    }
}

fn encode_value(
    kind: MetricType,
    value: u64,
    encoder: prometheus_client::encoding::MetricEncoder<'_>,
) -> Result<(), fmt::Error> {
    match kind {
        MetricType::Counter => ConstCounter::new(value).encode(encoder),
        _ => ConstGauge::new(value).encode(encoder),
    }
}

/// The process's resident set size from `/proc/self/status` (Linux; `None` elsewhere).
fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
