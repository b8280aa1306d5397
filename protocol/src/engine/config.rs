//! Connection configuration and SASL authentication [AMQP 1.0 §2.7.1, §5.3].

use std::sync::Arc;
use std::time::Duration;

use crate::codec::{Map, Symbol};
use crate::frame::SaslCode;

/// Which end of the TCP connection this engine is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// We opened the transport: we send the protocol header first.
    Client,
    /// We accepted the transport: we answer the peer's protocol header.
    Server,
}

/// Everything an engine needs to know before the first byte.
#[derive(Clone, Debug)]
pub struct ConnectionConfig {
    /// Client or server.
    pub side: Side,
    /// Our container id, sent in `open`.
    pub container_id: String,
    /// The host we are connecting to (client), sent in `open` and `sasl-init`.
    pub hostname: Option<String>,
    /// The largest frame we accept; at least 512 [AMQP 1.0 §2.7.1].
    pub max_frame_size: u32,
    /// The highest channel number we accept.
    pub channel_max: u16,
    /// Close the connection if the peer sends nothing for this long. Half of it is advertised as `idle-time-out`
    /// in `open`, so the peer sends heartbeats well before it expires [AMQP 1.0 §2.4.5].
    pub idle_timeout: Option<Duration>,
    /// Capabilities we offer in `open`.
    pub offered_capabilities: Vec<Symbol>,
    /// Capabilities we desire in `open`.
    pub desired_capabilities: Vec<Symbol>,
    /// Connection properties sent in `open`.
    pub properties: Option<Map>,
    /// The incoming window (in transfer frames) each session grants the peer; refilled as transfers arrive.
    pub session_window: u32,
    /// SASL as a client: `None` sends the AMQP header directly.
    pub sasl_client: Option<SaslClientConfig>,
    /// SASL as a server: `None` accepts only the plain AMQP header.
    pub sasl_server: Option<SaslServerConfig>,
}

impl ConnectionConfig {
    /// A client configuration with the given container id and defaults elsewhere.
    pub fn client(container_id: impl Into<String>) -> Self {
        Self::new(Side::Client, container_id.into())
    }

    /// A server configuration with the given container id and defaults elsewhere.
    pub fn server(container_id: impl Into<String>) -> Self {
        Self::new(Side::Server, container_id.into())
    }

    fn new(side: Side, container_id: String) -> Self {
        ConnectionConfig {
            side,
            container_id,
            hostname: None,
            max_frame_size: 64 * 1024,
            channel_max: u16::MAX,
            idle_timeout: None,
            offered_capabilities: Vec::new(),
            desired_capabilities: Vec::new(),
            properties: None,
            session_window: 2048,
            sasl_client: None,
            sasl_server: None,
        }
    }
}

/// SASL as a client [AMQP 1.0 §5.3].
#[derive(Clone, Debug, Default)]
pub struct SaslClientConfig {
    /// Mechanisms we may use, in order of preference; empty means "PLAIN if we have a user, then ANONYMOUS".
    pub mechanisms: Vec<Symbol>,
    /// The user name for PLAIN.
    pub username: Option<String>,
    /// The password for PLAIN.
    pub password: Option<String>,
}

impl SaslClientConfig {
    /// The mechanisms to try, in order.
    pub(crate) fn preference(&self) -> Vec<Symbol> {
        if !self.mechanisms.is_empty() {
            return self.mechanisms.clone();
        }
        let mut m = Vec::new();
        if self.username.is_some() {
            m.push(Symbol::from_static("PLAIN"));
        }
        m.push(Symbol::from_static("ANONYMOUS"));
        m
    }
}

/// SASL as a server [AMQP 1.0 §5.3].
#[derive(Clone)]
pub struct SaslServerConfig {
    /// Decides who may connect.
    pub authenticator: Arc<dyn Authenticator>,
    /// Also accept clients that skip SASL and send the AMQP header directly (as anonymous).
    pub allow_skip: bool,
}

impl std::fmt::Debug for SaslServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaslServerConfig")
            .field("mechanisms", &self.authenticator.mechanisms())
            .field("allow_skip", &self.allow_skip)
            .finish()
    }
}

/// What a client presented, decoded from its `sasl-init` [AMQP 1.0 §5.3.3.2].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaslCredentials {
    /// ANONYMOUS (RFC 4505), with the optional trace information.
    Anonymous {
        /// The client's trace string.
        trace: Option<String>,
    },
    /// PLAIN (RFC 4616).
    Plain {
        /// The identity to act as, if different.
        authzid: Option<String>,
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// EXTERNAL (RFC 4422 appendix A): identity established outside SASL, e.g. by a TLS client certificate.
    External {
        /// The identity to act as, if given.
        authzid: Option<String>,
    },
}

/// The verdict of an [`Authenticator`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SaslVerdict {
    /// Authenticated as this user.
    Accept(String),
    /// Refused, with the code to send.
    Reject(SaslCode),
}

/// Decides who may connect to a server engine. Called synchronously from `handle_input`.
pub trait Authenticator: Send + Sync {
    /// The mechanisms offered, in order of preference (e.g. `PLAIN`, `ANONYMOUS`, `EXTERNAL`).
    fn mechanisms(&self) -> Vec<Symbol>;
    /// Checks a client's credentials.
    fn authenticate(&self, credentials: &SaslCredentials, hostname: Option<&str>) -> SaslVerdict;
}

/// An authenticator with a fixed user table for PLAIN, optionally also admitting ANONYMOUS.
#[derive(Clone, Debug, Default)]
pub struct PlainAuthenticator {
    users: Vec<(String, String)>,
    allow_anonymous: bool,
}

impl PlainAuthenticator {
    /// Accepts exactly these user/password pairs.
    pub fn new<I, U, P>(users: I) -> Self
    where
        I: IntoIterator<Item = (U, P)>,
        U: Into<String>,
        P: Into<String>,
    {
        PlainAuthenticator {
            users: users
                .into_iter()
                .map(|(u, p)| (u.into(), p.into()))
                .collect(),
            allow_anonymous: false,
        }
    }

    /// Only ANONYMOUS.
    pub fn anonymous() -> Self {
        PlainAuthenticator {
            users: Vec::new(),
            allow_anonymous: true,
        }
    }

    /// Also admit ANONYMOUS clients.
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.allow_anonymous = allow;
        self
    }
}

impl Authenticator for PlainAuthenticator {
    fn mechanisms(&self) -> Vec<Symbol> {
        let mut m = Vec::new();
        if !self.users.is_empty() {
            m.push(Symbol::from_static("PLAIN"));
        }
        if self.allow_anonymous {
            m.push(Symbol::from_static("ANONYMOUS"));
        }
        m
    }

    fn authenticate(&self, credentials: &SaslCredentials, _hostname: Option<&str>) -> SaslVerdict {
        match credentials {
            SaslCredentials::Anonymous { .. } if self.allow_anonymous => {
                SaslVerdict::Accept("anonymous".into())
            }
            SaslCredentials::Plain {
                username, password, ..
            } if self
                .users
                .iter()
                .any(|(u, p)| u == username && p == password) =>
            {
                SaslVerdict::Accept(username.clone())
            }
            _ => SaslVerdict::Reject(SaslCode::Auth),
        }
    }
}
