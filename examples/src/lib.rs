//! Helpers shared by the example binaries: URL checking for clap, the queue a URL names, message bodies as
//! text, the slot where a handler leaves the reason its program failed, running one client connection,
//! AMQP values and messages as JSON ([`json`]) for the web examples, and the broker's `[limits]` table
//! ([`limits`]).

pub mod hosts;
pub mod json;
pub mod limits;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use nucleon::{
    Address, Body, ConnectionOptions, Container, Message, MessagingHandler, TlsClientConfig, Value,
};

/// The TLS option of the client examples: `amqps://` URLs trust the operating system's root certificates,
/// or only the CA given here (a private CA).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// For amqps:// URLs, trust only the CA certificates in FILE (PEM) instead of the system's roots.
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// Connection options with this TLS; the error is the line to print before exiting 2.
    pub fn connection_options(&self) -> Result<ConnectionOptions, String> {
        let mut options = ConnectionOptions::default();
        if let Some(ca) = &self.tls_ca {
            let tls = TlsClientConfig::builder()
                .without_system_roots()
                .ca_file(ca)
                .build()
                .map_err(|e| e.to_string())?;
            options.tls = Some(tls);
        }
        Ok(options)
    }
}

/// Checks an AMQP URL for clap (`value_parser`): the URL as given, or why it does not parse.
pub fn parse_url(s: &str) -> Result<String, String> {
    Address::parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| e.to_string())
}

/// A message body as text: a string as is, any other value in AMQP notation.
pub fn body_text(message: &Message) -> String {
    match message.body() {
        Body::Value(Value::String(s)) => s.clone(),
        Body::Value(v) => v.to_string(),
        Body::Data(sections) => sections
            .iter()
            .map(|d| String::from_utf8_lossy(d).into_owned())
            .collect(),
        Body::Sequence(sections) => format!("{sections:?}"),
        Body::Empty => String::new(),
    }
}

/// Where a handler leaves the reason the program failed, for `main`.
pub type Failure = Arc<Mutex<Option<String>>>;

/// The node a URL names (its path), or `examples`.
pub fn queue_of(url: &str) -> String {
    Address::parse(url)
        .ok()
        .and_then(|a| a.address)
        .unwrap_or_else(|| "examples".to_owned())
}

/// Runs one client connection to `url` (with `tls` for `amqps://`) and `handler` on a one-thread container
/// until the container stops, then reports: exit 0, or 1 with one line `program: why` (a connect error, or
/// what the handler left in `failure`); 2 when the TLS option cannot be used.
pub fn run_client<H: MessagingHandler>(
    program: &str,
    url: &str,
    tls: &TlsArgs,
    handler: H,
    failure: &Failure,
) -> ExitCode {
    let options = match tls.connection_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("{program}: {e}");
            return ExitCode::from(2);
        }
    };
    let container = Container::builder().threads(1).build();
    if let Err(e) = container.handle().connect(url, options, handler) {
        eprintln!("{program}: cannot connect to {url}: {e}");
        return ExitCode::from(1);
    }
    if let Err(e) = container.run() {
        eprintln!("{program}: {e}");
        return ExitCode::from(1);
    }
    let why = failure.lock().unwrap_or_else(|e| e.into_inner()).take();
    match why {
        Some(why) => {
            eprintln!("{program}: {why}");
            ExitCode::from(1)
        }
        None => ExitCode::SUCCESS,
    }
}
