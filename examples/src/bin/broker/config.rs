//! `broker --config FILE`: the TOML file of listeners, TLS, users, permissions and limits. Every key is
//! optional; a flag given on the command line wins over the file. `examples/broker.toml` shows them all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nucleon::broker::{Authorization, Operation};
/// The `[limits]` table, shared with `web_gateway --broker-config`.
pub use nucleon_examples::limits::Limits;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub listen: Listen,
    pub tls: Option<Tls>,
    #[serde(default)]
    pub auth: Auth,
    /// Users with their credentials (`[[user]]` tables).
    #[serde(default, rename = "user")]
    pub users: Vec<User>,
    /// Grants by user name (`anonymous` and `*` included): `alice = { send = ["orders.*"] }`. With no
    /// `[permissions]` table the broker is open: everyone may do everything.
    pub permissions: Option<BTreeMap<String, Grants>>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub topics: Topics,
    #[serde(default)]
    pub metrics: Metrics,
    #[serde(default)]
    pub storage: Storage,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// HOST:PORT of the AMQP listener.
    pub address: Option<String>,
    /// HOST:PORT of the AMQP over WebSocket listener.
    pub websocket: Option<String>,
    /// Worker threads.
    pub threads: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// The certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// Verify client certificates against this CA (PEM); a verified subject may authenticate with EXTERNAL.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients that do not start TLS.
    #[serde(default)]
    pub require: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// A users file (`NAME:CREDENTIAL` lines, see `--print-scram-credential`).
    pub users_file: Option<PathBuf>,
    /// With users, also admit ANONYMOUS clients (and clients that skip SASL).
    #[serde(default)]
    pub allow_anonymous: bool,
    /// Offer PLAIN on plain TCP too.
    #[serde(default)]
    pub allow_insecure_plain: bool,
}

/// A user and where its secret comes from: exactly one of the three.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// A SCRAM credential as `--print-scram-credential` prints it (salted keys, never the password).
    pub credential: Option<String>,
    /// The name of an environment variable that holds the password.
    pub password_env: Option<String>,
    /// A file whose first line is the password (a secrets mount, say).
    pub password_file: Option<PathBuf>,
}

/// Where a user's secret is, once checked.
#[derive(Debug)]
pub enum Secret {
    Credential(String),
    Password(String),
}

impl User {
    /// The user's credential or password; the error is the line to print.
    pub fn secret(&self) -> Result<Secret, String> {
        let who = &self.name;
        match (&self.credential, &self.password_env, &self.password_file) {
            (Some(c), None, None) => Ok(Secret::Credential(c.clone())),
            (None, Some(var), None) => std::env::var(var)
                .map(Secret::Password)
                .map_err(|_| format!("user {who}: environment variable {var} is not set")),
            (None, None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("user {who}: {}: {e}", path.display()))?;
                let password = text.lines().next().unwrap_or_default().to_owned();
                if password.is_empty() {
                    return Err(format!("user {who}: {} holds no password", path.display()));
                }
                Ok(Secret::Password(password))
            }
            _ => Err(format!(
                "user {who}: give exactly one of credential, password_env and password_file"
            )),
        }
    }
}

/// Address patterns (`*` stands for any run of characters) per operation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    #[serde(default)]
    pub send: Vec<String>,
    #[serde(default)]
    pub consume: Vec<String>,
    #[serde(default)]
    pub browse: Vec<String>,
    #[serde(default)]
    pub create: Vec<String>,
    #[serde(default)]
    pub manage: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topics {
    /// Addresses starting with one of these are topics.
    #[serde(default)]
    pub prefixes: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// HOST:PORT of the HTTP server of metrics and the management API.
    pub address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// The directory of the journal: with it the broker is durable.
    pub data_dir: Option<PathBuf>,
    /// When a message is durable: `batch` (default), `always` or `off`.
    pub sync: Option<String>,
    /// The most bytes the journal may take on disk.
    pub max_disk: Option<u64>,
}

impl Config {
    /// Reads and checks `path`; the error is the line to print.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--config {}: {e}", path.display()))?;
        let config: Config = toml::from_str(&text)
            .map_err(|e| format!("--config {}: {}", path.display(), e.to_string().trim_end()))?;
        config.authorization()?;
        if let Some(sync) = &config.storage.sync {
            sync.parse::<nucleon::broker::SyncPolicy>()
                .map_err(|e| format!("--config {}: storage.sync: {e}", path.display()))?;
        }
        Ok(config)
    }

    /// The `[permissions]` as the broker's authorization (`None`: open).
    pub fn authorization(&self) -> Result<Option<Authorization>, String> {
        let Some(permissions) = &self.permissions else {
            return Ok(None);
        };
        let mut authz = Authorization::new();
        for (user, grants) in permissions {
            for (op, patterns) in [
                (Operation::Send, &grants.send),
                (Operation::Consume, &grants.consume),
                (Operation::Browse, &grants.browse),
                (Operation::Create, &grants.create),
                (Operation::Manage, &grants.manage),
            ] {
                for p in patterns {
                    if p.is_empty() {
                        return Err(format!("permissions of {user}: an empty {op} pattern"));
                    }
                    authz.add(user, op, p);
                }
            }
        }
        Ok(Some(authz))
    }
}
