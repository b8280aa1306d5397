//! Who may use the gateway, from where: the `Host` check (against DNS rebinding), the `Origin` check and
//! CORS (against cross-site requests), bearer tokens with per-address rights, and the body limit.
//!
//! Every request goes through, in this order, before any handler runs:
//!
//! 1. **Host** ([`guard_host_and_origin`]): the request's `Host` (or the authority of an absolute-form
//!    target) must name this gateway: one of the bound addresses as `IP:PORT`; for a loopback or
//!    unspecified (`0.0.0.0`, `[::]`) bind also `localhost:PORT`, `127.0.0.1:PORT` and `[::1]:PORT`; or a
//!    `--public-host` (`NAME` matches any port, `NAME:PORT` that port, and the bare `NAME` as well when
//!    PORT is 80 or 443, the ports browsers leave out). Else **421 Misdirected Request**. A page whose DNS
//!    name was rebound to this address sends its own name, so it learns nothing.
//! 2. **Origin**: a request with an `Origin` must come from this gateway's own origin (`http://` or
//!    `https://` and the request's `Host`) or from one listed by `--allow-origin`; one without `Origin` but
//!    with `Sec-Fetch-Site: cross-site` or `same-site` (a browser's cross-site navigation or subresource)
//!    is refused too. Else **403**, so a cross-site form or `text/plain` POST, which needs no preflight,
//!    sends nothing and a cross-site GET consumes nothing. Clients that send neither (curl, services) pass.
//!    A preflight from an allowed origin may ask only for the headers `Authorization`, `Content-Type` and
//!    `amqp-*` (else 403).
//! 3. **CORS** (actix-cors): allowed origins only, methods GET and POST; it answers their preflights and
//!    adds `Access-Control-Allow-Origin` to their responses (errors included).
//! 4. **Token** ([`authorize`]): `Authorization: Bearer TOKEN`. None, or one that is not known: **401**
//!    with `WWW-Authenticate: Bearer`. A known token without the right for the address: **403**.
//!    `POST /queues/{address}/messages` needs `send` on the address; every other request under
//!    `/queues/{address}/` (GET, the event stream, acknowledgements) needs `consume`. Other paths need a
//!    known token only. With `--insecure-no-auth` this step lets everything through.
//! 5. **Body**: a declared `Content-Length` above `--max-body` gets **413**; a chunked body is cut off there.
//!
//! Every refusal is JSON, `{"error": "..."}`, as the handlers' errors are.
//!
//! Tokens are kept as SHA-256 digests and a presented token is hashed and compared with each digest in
//! constant time (`subtle`), so neither the file nor the timing of a refusal tells a token. The token file
//! (`--tokens FILE`) and the `WEB_GATEWAY_TOKENS` environment variable hold the same TOML (both are read):
//!
//! ```toml
//! [[token]]
//! name = "orders-app"          # unique; shown in the log, never the token
//! sha256 = "9f86d0..."         # the token's SHA-256 in hex (web_gateway --print-token-sha256 < token)
//! # or token_env = "ORDERS_TOKEN"   (an environment variable holding the token)
//! # or token_file = "/run/secrets/orders-token"   (a file whose first line is the token)
//! send = ["orders.*"]          # address patterns, `*` any run of characters
//! consume = ["orders.*"]
//! ```
//!
//! A token given in clear (by `token_env` or `token_file`) must be at least 16 characters.

use std::collections::{BTreeSet, HashSet};
use std::io::BufRead as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use actix_cors::Cors;
use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{
    HeaderMap, ACCESS_CONTROL_REQUEST_HEADERS, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HOST,
    ORIGIN, WWW_AUTHENTICATE,
};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, Error, HttpResponse};
use futures::StreamExt as _;
use nucleon::broker::{Authorization, Operation};
use nucleon_examples::hosts::{parse_public_host, split_host, HostSet};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use subtle::{ConditionallySelectable as _, ConstantTimeEq as _};

/// The environment variable that may hold a token file's text.
pub const TOKENS_ENV: &str = "WEB_GATEWAY_TOKENS";
/// The fewest characters of a token given in clear.
const MIN_TOKEN_LEN: usize = 16;
/// The realm of `WWW-Authenticate`.
const REALM: &str = "web_gateway";

/// The command-line options of this layer.
#[derive(clap::Args, Debug, Default)]
pub struct SecurityArgs {
    /// Bearer tokens and their rights, from this TOML file ([[token]] tables; also read from the
    /// WEB_GATEWAY_TOKENS environment variable).
    #[arg(long, value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Serve without tokens: anyone who can reach the gateway may send and consume (the Host and Origin
    /// checks still apply).
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// Also accept requests whose Host is this NAME or NAME:PORT (repeatable), e.g. the name a reverse
    /// proxy forwards.
    #[arg(long, value_name = "HOST[:PORT]", value_parser = parse_public_host)]
    pub public_host: Vec<String>,
    /// Let pages of this origin (scheme://host[:port]) call the gateway from a browser (repeatable).
    #[arg(long, value_name = "ORIGIN", value_parser = parse_origin)]
    pub allow_origin: Vec<String>,
    /// The largest request body, in bytes (at most the handlers' own 1 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = super::MAX_BODY, value_parser = parse_max_body)]
    pub max_body: usize,
    /// Print the SHA-256 (hex) of the token read from stdin, for a token file's `sha256`, and exit.
    #[arg(long)]
    pub print_token_sha256: bool,
}

/// 1 to the handlers' own limit.
fn parse_max_body(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=super::MAX_BODY).contains(&n) => Ok(n),
        _ => Err(format!("expected 1-{} bytes, got {s:?}", super::MAX_BODY)),
    }
}

/// `scheme://host[:port]` with scheme http or https, lowercased, as browsers send it in `Origin`.
fn parse_origin(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    let authority = lower
        .strip_prefix("http://")
        .or_else(|| lower.strip_prefix("https://"));
    match authority.and_then(split_host) {
        Some((name, _)) if !name.is_empty() && !name.contains(['/', '@', ' ', '?', '#']) => {
            Ok(lower)
        }
        _ => Err(format!(
            "expected an origin such as https://app.example or http://localhost:3000, got {s:?}"
        )),
    }
}

/// The token file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

/// One `[[token]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: Option<String>,
    token_env: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default)]
    send: Vec<String>,
    #[serde(default)]
    consume: Vec<String>,
}

impl TokenEntry {
    /// The token's digest; the error is the line to print.
    fn digest(&self) -> Result<[u8; 32], String> {
        let who = &self.name;
        match (&self.sha256, &self.token_env, &self.token_file) {
            (Some(hex), None, None) => parse_hex(hex)
                .ok_or_else(|| format!("token {who}: sha256 must be 64 hexadecimal digits")),
            (None, Some(var), None) => {
                let token = std::env::var(var)
                    .map_err(|_| format!("token {who}: environment variable {var} is not set"))?;
                clear_digest(&token).map_err(|e| format!("token {who}: {var}: {e}"))
            }
            (None, None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("token {who}: {}: {e}", path.display()))?;
                let token = text.lines().next().unwrap_or_default();
                clear_digest(token).map_err(|e| format!("token {who}: {}: {e}", path.display()))
            }
            _ => Err(format!(
                "token {who}: give exactly one of sha256, token_env and token_file"
            )),
        }
    }
}

/// The digest of a token given in clear, once it is long enough.
fn clear_digest(token: &str) -> Result<[u8; 32], String> {
    if token.chars().count() < MIN_TOKEN_LEN {
        return Err(format!(
            "a token must be at least {MIN_TOKEN_LEN} characters"
        ));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("a token is visible ASCII, without spaces".to_owned());
    }
    Ok(sha256(token.as_bytes()))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `--print-token-sha256`: the digest of the token on stdin's first line; the error is the line to print.
pub fn print_token_sha256() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| format!("reading the token from stdin: {e}"))?;
    let token = line.trim_end_matches(['\r', '\n']);
    clear_digest(token).map(|d| to_hex(&d))
}

/// Who may do what: the known tokens, or open.
enum Access {
    /// `--insecure-no-auth`.
    Open,
    /// Each token's name and digest, and the rights by name.
    Tokens {
        tokens: Vec<(String, [u8; 32])>,
        rights: Authorization,
    },
}

/// The layer's configuration, checked at start before anything listens.
pub struct SecurityConfig {
    access: Access,
    public_hosts: Vec<String>,
    allowed_origins: Vec<String>,
    max_body: usize,
}

impl SecurityConfig {
    /// Reads the tokens (`--tokens`, then `WEB_GATEWAY_TOKENS`); the error is the line to print before
    /// exiting 2. With neither tokens nor `--insecure-no-auth` the gateway does not start.
    pub fn load(args: &SecurityArgs) -> Result<SecurityConfig, String> {
        let mut sources = Vec::new();
        if let Some(path) = &args.tokens {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--tokens {}: {e}", path.display()))?;
            sources.push((format!("--tokens {}", path.display()), text));
        }
        if let Some(text) = std::env::var_os(TOKENS_ENV) {
            let text = text
                .into_string()
                .map_err(|_| format!("{TOKENS_ENV} is not UTF-8"))?;
            sources.push((TOKENS_ENV.to_owned(), text));
        }
        let access = match (sources.is_empty(), args.insecure_no_auth) {
            (true, false) => {
                return Err(format!(
                    "no tokens: give --tokens FILE or {TOKENS_ENV} (see --help), or \
                     --insecure-no-auth to let anyone who can reach the gateway send and consume"
                ))
            }
            (true, true) => Access::Open,
            (false, true) => {
                return Err(format!(
                    "--insecure-no-auth and tokens ({}) contradict each other: give one",
                    sources
                        .iter()
                        .map(|(s, _)| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
            (false, false) => tokens(&sources)?,
        };
        Ok(SecurityConfig {
            access,
            public_hosts: args.public_host.clone(),
            allowed_origins: args.allow_origin.clone(),
            max_body: args.max_body,
        })
    }

    /// Whether anyone may use the gateway (`--insecure-no-auth`).
    pub fn is_open(&self) -> bool {
        matches!(self.access, Access::Open)
    }

    /// How many tokens there are.
    pub fn token_count(&self) -> usize {
        match &self.access {
            Access::Open => 0,
            Access::Tokens { tokens, .. } => tokens.len(),
        }
    }

    /// The layer for a server bound to `bound`.
    pub fn bind(self, bound: &[SocketAddr]) -> Security {
        let hosts = HostSet::for_listener(bound, &self.public_hosts);
        Security {
            access: self.access,
            hosts,
            allowed_origins: self.allowed_origins.into_iter().collect(),
            max_body: self.max_body,
        }
    }
}

/// The tokens of every source, with their rights.
fn tokens(sources: &[(String, String)]) -> Result<Access, String> {
    let mut tokens = Vec::new();
    let mut names = HashSet::new();
    let mut rights = Authorization::new();
    for (source, text) in sources {
        let file: TokenFile =
            toml::from_str(text).map_err(|e| format!("{source}: {}", e.to_string().trim_end()))?;
        if file.token.is_empty() {
            return Err(format!("{source}: no [[token]] tables"));
        }
        for entry in file.token {
            let name = &entry.name;
            if name.is_empty() || !names.insert(name.clone()) {
                return Err(format!(
                    "{source}: token names must be non-empty and unique, got {name:?}"
                ));
            }
            let digest = entry.digest().map_err(|e| format!("{source}: {e}"))?;
            for (op, patterns) in [
                (Operation::Send, &entry.send),
                (Operation::Consume, &entry.consume),
            ] {
                for p in patterns {
                    if p.is_empty() {
                        return Err(format!("{source}: token {name}: an empty {op} pattern"));
                    }
                    rights.add(name, op, p);
                }
            }
            tokens.push((entry.name, digest));
        }
    }
    Ok(Access::Tokens { tokens, rights })
}

/// The layer, once the server is bound: shared by every worker as app data.
pub struct Security {
    access: Access,
    hosts: HostSet,
    allowed_origins: BTreeSet<String>,
    max_body: usize,
}

impl Security {
    /// The CORS middleware for `--allow-origin` (with none, it allows no cross-origin request).
    pub fn cors(&self) -> Cors {
        let mut cors = Cors::default()
            .allowed_methods([Method::GET, Method::POST])
            // The header names are checked in `guard_host_and_origin`: `amqp-*` has no fixed list.
            .allow_any_header()
            .max_age(600);
        for origin in &self.allowed_origins {
            cors = cors.allowed_origin(origin);
        }
        cors
    }

    /// The request's Host (or absolute-form authority), if it names this gateway.
    fn check_host(&self, req: &ServiceRequest) -> Result<String, Refusal> {
        let mut hosts = req.headers().get_all(HOST);
        let header = hosts.next();
        if hosts.next().is_some() {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "more than one Host header",
            ));
        }
        let host = match req.uri().authority() {
            Some(authority) => Some(authority.as_str().to_owned()),
            None => header.and_then(|h| h.to_str().ok()).map(str::to_owned),
        };
        match host {
            Some(h) if self.hosts.contains(&h) => Ok(h.to_ascii_lowercase()),
            Some(h) => Err(Refusal::new(
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this gateway does not serve {h:?} (see --public-host)",
                    h = h.chars().take(100).collect::<String>()
                ),
            )),
            None => Err(Refusal::new(
                StatusCode::MISDIRECTED_REQUEST,
                "the request names no host",
            )),
        }
    }

    /// Refuses a browser's cross-site request unless its origin is allowed.
    fn check_origin(&self, req: &ServiceRequest, host: &str) -> Result<(), Refusal> {
        let headers = req.headers();
        let mut origins = headers.get_all(ORIGIN);
        let origin = origins.next();
        if origins.next().is_some() {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                "more than one Origin header",
            ));
        }
        let Some(origin) = origin else {
            let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok());
            return match site {
                Some(s)
                    if s.eq_ignore_ascii_case("cross-site")
                        || s.eq_ignore_ascii_case("same-site") =>
                {
                    Err(Refusal::new(
                        StatusCode::FORBIDDEN,
                        "a cross-site request without an allowed Origin",
                    ))
                }
                _ => Ok(()),
            };
        };
        let origin = origin.to_str().unwrap_or_default().to_ascii_lowercase();
        let same = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|authority| authority == host);
        if !same && !self.allowed_origins.contains(&origin) {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                format!(
                    "origin {:?} is not allowed (see --allow-origin)",
                    origin.chars().take(100).collect::<String>()
                ),
            ));
        }
        if req.method() == Method::OPTIONS {
            if let Some(asked) = headers.get(ACCESS_CONTROL_REQUEST_HEADERS) {
                let asked = asked.to_str().unwrap_or("\u{0}");
                let ok = asked.split(',').map(str::trim).all(|name| {
                    let name = name.to_ascii_lowercase();
                    name.is_empty()
                        || name == AUTHORIZATION.as_str()
                        || name == CONTENT_TYPE.as_str()
                        || name.starts_with("amqp-")
                });
                if !ok {
                    return Err(Refusal::new(
                        StatusCode::FORBIDDEN,
                        "only Authorization, Content-Type and amqp-* headers may be sent",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The name of the token the request bears, or the 401 to answer.
    fn authenticate(
        &self,
        tokens: &[(String, [u8; 32])],
        headers: &HeaderMap,
    ) -> Result<usize, Refusal> {
        let Some(value) = headers.get(AUTHORIZATION) else {
            return Err(Refusal::unauthorized(None, "a bearer token is required"));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return Err(Refusal::unauthorized(
                Some("invalid_request"),
                "the Authorization header must be `Bearer TOKEN`",
            ));
        };
        let digest = sha256(token.as_bytes());
        // Every digest is compared, whatever matched, and the match is selected without a branch.
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (i, (_, known)) in tokens.iter().enumerate() {
            let eq = known.ct_eq(&digest);
            index.conditional_assign(&u32::try_from(i).unwrap_or(u32::MAX), eq);
            found |= eq;
        }
        if bool::from(found) {
            Ok(index as usize)
        } else {
            Err(Refusal::unauthorized(
                Some("invalid_token"),
                "the token is not known",
            ))
        }
    }
}

/// What a request does, for the token's rights: `POST /queues/{address}/messages` sends to the address,
/// anything else under `/queues/{address}/` consumes from it, other paths touch no address.
fn operation(method: &Method, path: &str) -> Option<(Operation, String)> {
    let rest = path.strip_prefix("/queues/")?;
    let (segment, tail) = rest.split_once('/').unwrap_or((rest, ""));
    // As actix-web's `Path` extractor decodes it, so the handler sees the address checked here.
    let address = percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned();
    let op = if method == Method::POST && tail == "messages" {
        Operation::Send
    } else {
        Operation::Consume
    };
    Some((op, address))
}

/// Why a request is refused before its handler: its status, the JSON error's message, and for 401 and 403
/// of the token step the `WWW-Authenticate` challenge (RFC 6750 §3).
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    error: String,
    challenge: Option<String>,
}

impl Refusal {
    fn new(status: StatusCode, error: impl Into<String>) -> Refusal {
        Refusal {
            status,
            error: error.into(),
            challenge: None,
        }
    }

    /// 401, with `error=code` in the challenge when there was a token (or something like one).
    fn unauthorized(code: Option<&str>, error: impl Into<String>) -> Refusal {
        Refusal {
            challenge: Some(match code {
                Some(code) => format!("Bearer realm=\"{REALM}\", error=\"{code}\""),
                None => format!("Bearer realm=\"{REALM}\""),
            }),
            ..Refusal::new(StatusCode::UNAUTHORIZED, error)
        }
    }

    /// 403 for a known token without the right.
    fn insufficient_scope(error: impl Into<String>) -> Refusal {
        Refusal {
            challenge: Some(format!(
                "Bearer realm=\"{REALM}\", error=\"insufficient_scope\""
            )),
            ..Refusal::new(StatusCode::FORBIDDEN, error)
        }
    }

    fn response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if let Some(challenge) = &self.challenge {
            response.insert_header((WWW_AUTHENTICATE, challenge.as_str()));
        }
        response.json(json!({ "error": self.error }))
    }
}

fn security(req: &ServiceRequest) -> web::Data<Security> {
    req.app_data::<web::Data<Security>>()
        .cloned()
        .expect("the app has the security layer's data")
}

/// The outer middleware: the Host check, then the Origin check (see the module doc).
pub async fn guard_host_and_origin(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let sec = security(&req);
    let checked = sec
        .check_host(&req)
        .and_then(|host| sec.check_origin(&req, &host));
    match checked {
        Ok(()) => Ok(next.call(req).await?.map_into_left_body()),
        Err(refusal) => {
            log::info!(
                "refused {} {}: {} {}",
                req.method(),
                req.path(),
                refusal.status,
                refusal.error
            );
            let response = refusal.response();
            Ok(req.into_response(response).map_into_right_body())
        }
    }
}

/// The inner middleware (inside CORS): the token and its rights, then the body limit.
pub async fn authorize(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let sec = security(&req);
    if let Access::Tokens { tokens, rights } = &sec.access {
        let who = match sec.authenticate(tokens, req.headers()) {
            Ok(i) => &tokens[i].0,
            Err(refusal) => {
                let response = refusal.response();
                return Ok(req.into_response(response).map_into_right_body());
            }
        };
        if let Some((op, address)) = operation(req.method(), req.match_info().as_str()) {
            if !rights.permits(who, op, &address) {
                log::info!("token {who} may not {op} on {address:?}");
                let response =
                    Refusal::insufficient_scope(format!("this token may not {op} on {address}"))
                        .response();
                return Ok(req.into_response(response).map_into_right_body());
            }
        }
    }
    let max = sec.max_body;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        let response = Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is larger than {max} bytes"),
        )
        .response();
        return Ok(req.into_response(response).map_into_right_body());
    }
    let req = if declared.is_none() {
        // A body of unknown length (chunked) ends in an error past `max`.
        let (http, payload) = req.into_parts();
        let mut seen = 0usize;
        let limited = payload.map(move |chunk| {
            let chunk = chunk?;
            seen = seen.saturating_add(chunk.len());
            if seen > max {
                Err(PayloadError::Overflow)
            } else {
                Ok(chunk)
            }
        });
        ServiceRequest::from_parts(
            http,
            Payload::Stream {
                payload: Box::pin(limited),
            },
        )
    } else {
        req
    };
    Ok(next.call(req).await?.map_into_left_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_split_and_matched_as_documented() {
        let config = SecurityConfig {
            access: Access::Open,
            public_hosts: vec!["any.example".into(), "web.example:443".into()],
            allowed_origins: Vec::new(),
            max_body: 10,
        };
        let sec = config.bind(&["127.0.0.1:8081".parse().expect("an address")]);
        for ok in [
            "127.0.0.1:8081",
            "LOCALHOST:8081",
            "[::1]:8081",
            "any.example",
            "any.example:1",
            "web.example",
            "web.example:443",
        ] {
            assert!(sec.hosts.contains(ok), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "127.0.0.1:8082",
            "localhost",
            "evil.example:8081",
            "web.example:80",
            "any.example.evil",
        ] {
            assert!(!sec.hosts.contains(bad), "{bad}");
        }
        let wide = SecurityConfig {
            access: Access::Open,
            public_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_body: 10,
        }
        .bind(&["10.1.2.3:80".parse().expect("an address")]);
        assert!(wide.hosts.contains("10.1.2.3") && !wide.hosts.contains("localhost"));
    }

    #[test]
    fn operations_follow_method_and_path() {
        assert_eq!(
            operation(&Method::POST, "/queues/orders/messages"),
            Some((Operation::Send, "orders".into()))
        );
        for (method, path) in [
            (Method::GET, "/queues/orders/messages"),
            (Method::GET, "/queues/orders/stream"),
            (Method::POST, "/queues/orders/messages/7/ack"),
            (Method::DELETE, "/queues/orders"),
        ] {
            assert_eq!(
                operation(&method, path),
                Some((Operation::Consume, "orders".into())),
                "{method} {path}"
            );
        }
        assert_eq!(
            operation(&Method::GET, "/queues/a%2Fb/messages"),
            Some((Operation::Consume, "a/b".into()))
        );
        assert_eq!(operation(&Method::GET, "/metrics"), None);
    }

    #[test]
    fn origins_and_digests_parse() {
        assert_eq!(
            parse_origin("HTTP://Good.Example:3000").as_deref(),
            Ok("http://good.example:3000")
        );
        for bad in [
            "good.example",
            "ftp://x",
            "http://",
            "http://a/path",
            "*",
            "null",
        ] {
            assert!(parse_origin(bad).is_err(), "{bad}");
        }
        let d = sha256(b"abc");
        assert_eq!(parse_hex(&to_hex(&d)), Some(d));
        assert_eq!(parse_hex("00"), None);
        assert!(clear_digest("short").is_err());
        assert!(clear_digest("long enough but spaced").is_err());
    }

    #[test]
    fn only_a_known_token_is_identified() {
        let tokens = vec![
            ("a".to_owned(), sha256(b"token-a-0123456789")),
            ("b".to_owned(), sha256(b"token-b-0123456789")),
        ];
        let sec = SecurityConfig {
            access: Access::Open,
            public_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            max_body: 10,
        }
        .bind(&[]);
        let headers = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(
                AUTHORIZATION,
                actix_web::http::header::HeaderValue::from_static(v),
            );
            h
        };
        assert_eq!(
            sec.authenticate(&tokens, &headers("Bearer token-b-0123456789"))
                .ok(),
            Some(1)
        );
        assert_eq!(
            sec.authenticate(&tokens, &headers("bearer token-a-0123456789"))
                .ok(),
            Some(0)
        );
        for bad in [
            "Bearer token-c-0123456789",
            "Bearer ",
            "Basic dG9rZW4=",
            "token-a-0123456789",
        ] {
            let refused = sec.authenticate(&tokens, &headers(bad)).expect_err(bad);
            assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
        }
        assert!(sec.authenticate(&tokens, &HeaderMap::new()).is_err());
    }
}
