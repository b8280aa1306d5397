//! The in-process broker that `web_gateway` runs without `--broker`: bounded by default, its `[limits]` from
//! `--broker-config FILE`, and reachable by the gateway alone.
//!
//! Defaults, for a broker that lives inside an HTTP service (each key of the file's `[limits]` overrides
//! one): `max_memory` 256 MiB for all queues together, `max_queue_bytes` 64 MiB and `max_queue_depth`
//! 100,000 messages per queue, `max_queues` 1,000; the rest as `BrokerOptions::default()` (idle queues go
//! after 5 minutes, 10 deliveries before a message is dropped). A full queue gives its producer no credit:
//! a POST to it waits (at most the gateway's broker time-out, then 503) until a consumer takes messages. A
//! POST that would make one queue too many gets 502 `amqp:resource-limit-exceeded`.
//!
//! The broker listens on a free loopback port, which any local process could reach; so it admits one
//! SCRAM-SHA-256 user, `web_gateway`, whose password is 32 random bytes made at start and known only to
//! this process. The gateway's bearer tokens are thus the only way in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use nucleon::broker::BrokerOptions;
use nucleon::protocol::engine::{Authenticator, ScramAuthenticator, ScramCredential, ScramHash};
use nucleon::{ConnectionOptions, ListenOptions};
use nucleon_examples::limits::Limits;
use serde::Deserialize;

/// Bytes all queues of the in-process broker hold at most.
pub const DEFAULT_MAX_MEMORY: usize = 256 << 20;
/// Bytes one queue holds at most.
pub const DEFAULT_MAX_QUEUE_BYTES: usize = 64 << 20;
/// Messages one queue holds at most.
pub const DEFAULT_MAX_QUEUE_DEPTH: usize = 100_000;
/// Queues there may be.
pub const DEFAULT_MAX_QUEUES: usize = 1_000;
/// The in-process broker's one user.
const USER: &str = "web_gateway";

/// The options of the in-process broker.
#[derive(clap::Args, Debug, Default)]
pub struct EmbeddedArgs {
    /// For the in-process broker: read the `[limits]` table of the broker's TOML file (max_memory,
    /// max_queue_bytes, max_queue_depth, max_queues, ...) from FILE; no other table is read.
    #[arg(long, value_name = "FILE", conflicts_with = "broker")]
    pub broker_config: Option<PathBuf>,
}

/// The file of `--broker-config`: only `[limits]`, so that a `[permissions]` or `[[user]]` there is an error
/// rather than silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    limits: Limits,
}

/// How to make and reach the in-process broker.
pub struct Embedded {
    /// Its queues' limits.
    pub broker: BrokerOptions,
    /// Its listener, with the one SCRAM user.
    pub listen: ListenOptions,
    /// The password of that user.
    password: String,
}

impl Embedded {
    /// The defaults, then `--broker-config`'s `[limits]`; the error is the line to print before exiting 2.
    pub fn new(args: &EmbeddedArgs) -> Result<Embedded, String> {
        let file = match &args.broker_config {
            Some(path) => load(path)?,
            None => File::default(),
        };
        let broker = file.limits.broker_options(default_options());
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| format!("no random password: {e}"))?;
        let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| format!("no random salt: {e}"))?;
        // The fewest iterations clients accept (RFC 7677's 4096): the password is 256 random bits, so there
        // is no dictionary to slow down, and each of the gateway's connections pays the derivation.
        let credential = ScramCredential::derive(ScramHash::Sha256, &password, &salt, 4096);
        let authenticator = ScramAuthenticator::new([(USER, credential)]);
        let limits = &file.limits;
        let defaults = ListenOptions::new();
        let max_connections = limits.max_connections.unwrap_or(defaults.max_connections);
        let mut listen = defaults
            .authenticator(Arc::new(authenticator) as Arc<dyn Authenticator>)
            .max_connections(max_connections);
        listen.max_message_size = limits.max_message_size;
        listen.max_sessions = limits.max_sessions_per_connection;
        listen.max_links = limits.max_links_per_connection;
        Ok(Embedded {
            broker,
            listen,
            password,
        })
    }

    /// `base` with the credentials of the broker's one user.
    pub fn connection(&self, base: ConnectionOptions) -> ConnectionOptions {
        base.user(USER.to_owned()).password(self.password.clone())
    }
}

/// The in-process broker's limits when no file sets them.
pub fn default_options() -> BrokerOptions {
    BrokerOptions {
        max_memory: Some(DEFAULT_MAX_MEMORY),
        max_queue_bytes: Some(DEFAULT_MAX_QUEUE_BYTES),
        max_queue_depth: Some(DEFAULT_MAX_QUEUE_DEPTH),
        max_queues: Some(DEFAULT_MAX_QUEUES),
        ..BrokerOptions::default()
    }
}

fn load(path: &Path) -> Result<File, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("--broker-config {}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| {
        format!(
            "--broker-config {}: {}",
            path.display(),
            e.to_string().trim_end()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_bounded_and_the_file_overrides_them() {
        let d = Embedded::new(&EmbeddedArgs::default()).expect("defaults");
        assert_eq!(d.broker.max_memory, Some(DEFAULT_MAX_MEMORY));
        assert_eq!(d.broker.max_queue_bytes, Some(DEFAULT_MAX_QUEUE_BYTES));
        assert_eq!(d.broker.max_queue_depth, Some(DEFAULT_MAX_QUEUE_DEPTH));
        assert_eq!(d.broker.max_queues, Some(DEFAULT_MAX_QUEUES));
        let file: File = toml::from_str("[limits]\nmax_queue_bytes = 1000\n").expect("valid");
        let o = file.limits.broker_options(default_options());
        assert_eq!(o.max_queue_bytes, Some(1000));
        assert_eq!(o.max_memory, Some(DEFAULT_MAX_MEMORY));
        assert!(toml::from_str::<File>("[permissions]\nx = {}\n").is_err());
    }

    #[test]
    fn each_start_has_its_own_password() {
        let a = Embedded::new(&EmbeddedArgs::default()).expect("a");
        let b = Embedded::new(&EmbeddedArgs::default()).expect("b");
        assert_ne!(a.password, b.password);
        assert_eq!(a.password.len(), 43);
        let c = a.connection(ConnectionOptions::default());
        assert_eq!(c.user.as_deref(), Some(USER));
    }
}
