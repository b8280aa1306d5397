//! Connection configuration and SASL authentication [AMQP 1.0 §2.7.1, §5.3].

use std::sync::Arc;
use std::time::Duration;

use super::scram::{ScramCredential, ScramHash};
use crate::codec::{Map, Symbol};
use crate::frame::SaslCode;

/// A `max_message_size` of 0: no limit, as in the spec [AMQP 1.0 §2.7.3]. Say it by name.
pub const UNLIMITED: u64 = 0;

/// The default max-message-size of receiving links: 16 MiB (RabbitMQ 4's default too).
pub const DEFAULT_MAX_MESSAGE_SIZE: u64 = 16 * 1024 * 1024;

/// The largest `max_frame_size` a configuration may set: 16 MiB.
pub const MAX_MAX_FRAME_SIZE: u32 = 16 * 1024 * 1024;

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
    /// The largest frame we accept, advertised in `open`; clamped to
    /// [`MIN_MAX_FRAME_SIZE`](super::MIN_MAX_FRAME_SIZE)`..=`[`MAX_MAX_FRAME_SIZE`] [AMQP 1.0 §2.7.1]. A peer can
    /// make us buffer at most one frame of this size per connection.
    pub max_frame_size: u32,
    /// The highest channel number we accept, advertised in `open`: at most `channel_max + 1` sessions. A
    /// `begin` on a higher channel closes the connection with `amqp:connection:framing-error`.
    pub channel_max: u16,
    /// The highest link handle we accept on each session, advertised in `begin`. An `attach` with a higher
    /// handle closes the connection with `amqp:connection:framing-error` [AMQP 1.0 §2.7.2].
    pub handle_max: u32,
    /// The most links the peer may have attached on this connection at once (all sessions together). An
    /// `attach` beyond it is refused: the link is detached with `amqp:resource-limit-exceeded`.
    pub max_links: u32,
    /// The largest message a receiving link accepts when its [`LinkConfig`](super::LinkConfig) does not say:
    /// advertised in `attach` and enforced while the frames of a delivery arrive (the link is detached with
    /// `amqp:link:message-size-exceeded`). [`UNLIMITED`] (0, as in the spec) lifts the limit.
    pub max_message_size: u64,
    /// The most bytes of unfinished multi-frame deliveries held on this connection, all links together (each
    /// is also bounded by its link's max-message-size). A frame past it detaches its link with
    /// `amqp:resource-limit-exceeded`. 0 lifts the limit.
    pub max_reassembly_bytes: usize,
    /// Transfers a peer may send beyond the link credit we granted before the link is detached with
    /// `amqp:link:transfer-limit-exceeded` [AMQP 1.0 §2.6.7]: this many, or the credit of our last grant if
    /// that is more. The count starts again each time we grant credit. RabbitMQ 3.10 takes each flow's credit
    /// as new when flows cross, overshooting by up to one grant; a compliant peer never overshoots.
    pub credit_overshoot: u32,
    /// Close the connection if the peer's `open` has not arrived this long after the transport started
    /// (protocol header and SASL included); `None` waits forever.
    pub open_timeout: Option<Duration>,
    /// Close the connection if the peer sends nothing for this long. Half of it is advertised as `idle-time-out`
    /// in `open`, so the peer sends heartbeats well before it expires [AMQP 1.0 §2.4.5].
    pub idle_timeout: Option<Duration>,
    /// The shortest `idle-time-out` of the peer's we honour. A peer that asks for less gets heartbeats as if it
    /// had asked for this much (half of it apart), so no peer can make us wake more often than that.
    pub min_remote_idle_timeout: Duration,
    /// Capabilities we offer in `open`.
    pub offered_capabilities: Vec<Symbol>,
    /// Capabilities we desire in `open`.
    pub desired_capabilities: Vec<Symbol>,
    /// Connection properties sent in `open`.
    pub properties: Option<Map>,
    /// The incoming window (in transfer frames) each session grants the peer; refilled as transfers arrive.
    /// A session's window grows past it to the credit granted on its receiving links (unless
    /// `session_window_follows_credit` is off), so the window never holds back deliveries the application
    /// asked for.
    pub session_window: u32,
    /// Whether a session's incoming window grows to the credit granted on its links (default true). Off, the
    /// window stays `session_window` frames whatever the credit, as RabbitMQ's does: a sender with more
    /// credit than that waits for each refill.
    pub session_window_follows_credit: bool,
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
            channel_max: 255,
            handle_max: 255,
            max_links: 1024,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_reassembly_bytes: 64 * 1024 * 1024,
            credit_overshoot: 64,
            open_timeout: Some(Duration::from_secs(10)),
            idle_timeout: None,
            min_remote_idle_timeout: Duration::from_millis(100),
            offered_capabilities: Vec::new(),
            desired_capabilities: Vec::new(),
            properties: None,
            session_window: 2048,
            session_window_follows_credit: true,
            sasl_client: None,
            sasl_server: None,
        }
    }
}

/// SASL as a client [AMQP 1.0 §5.3].
#[derive(Clone, Debug, Default)]
pub struct SaslClientConfig {
    /// Mechanisms we may use, in order of preference; the first one the server offers is used. Empty means
    /// "PLAIN if we have a user, then ANONYMOUS": list `SCRAM-SHA-512`, `SCRAM-SHA-256` or `SCRAM-SHA-1` here to
    /// use SCRAM, which never sends the password and checks that the server knows it [RFC 5802].
    pub mechanisms: Vec<Symbol>,
    /// The user name for PLAIN and SCRAM.
    pub username: Option<String>,
    /// The password for PLAIN and SCRAM.
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

/// A server connection's transport, for SASL ([`Connection::set_transport_security`](super::Connection::set_transport_security)).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportSecurity {
    /// The transport is encrypted (TLS).
    pub encrypted: bool,
    /// SASL PLAIN may be offered: it sends the password as it is, so only over an encrypted transport,
    /// unless the server allows it by name.
    pub plain_allowed: bool,
    /// The subject of the client's verified certificate: SASL EXTERNAL is offered and grants it.
    pub peer_identity: Option<String>,
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
    /// SCRAM-SHA-1, -256 or -512 (RFC 5802, RFC 7677): the client has already proved that it knows the password
    /// of the credential [`Authenticator::scram_credential`] gave for `username`; the authenticator only
    /// decides whether that user may connect.
    Scram {
        /// The hash of the mechanism.
        hash: ScramHash,
        /// The user name (with SCRAM's `=3D` and `=2C` escapes undone).
        username: String,
        /// The identity to act as, if given.
        authzid: Option<String>,
    },
}

impl SaslCredentials {
    /// The user these credentials name, for a log line: PLAIN's and SCRAM's user name, EXTERNAL's authzid.
    pub fn into_user(self) -> Option<String> {
        match self {
            SaslCredentials::Anonymous { .. } => None,
            SaslCredentials::Plain { username, .. } | SaslCredentials::Scram { username, .. } => {
                Some(username)
            }
            SaslCredentials::External { authzid } => authzid,
        }
    }
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

    /// The stored credential of `username` for a SCRAM mechanism among [`mechanisms`](Self::mechanisms). The
    /// engine checks the client's proof against it and, if the proof is right, asks
    /// [`authenticate`](Self::authenticate) about [`SaslCredentials::Scram`] for the verdict.
    ///
    /// `None` (the default) refuses the client at once, which tells it that the user is unknown. To hide which
    /// users exist, return [`ScramCredential::decoy`] for an unknown one, as
    /// [`ScramAuthenticator`](super::ScramAuthenticator) does: the exchange then fails at the proof, as a wrong
    /// password does [RFC 5802 §9].
    fn scram_credential(&self, _hash: ScramHash, _username: &str) -> Option<ScramCredential> {
        None
    }
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

impl PlainAuthenticator {
    /// True if `username` has `password`. Every entry is compared, and passwords in constant time, so the
    /// time taken does not tell how much of a password was right.
    fn check_password(&self, username: &str, password: &str) -> bool {
        use subtle::ConstantTimeEq;
        let mut ok = subtle::Choice::from(0);
        for (u, p) in &self.users {
            let name = subtle::Choice::from(u8::from(u == username));
            ok |= name & p.as_bytes().ct_eq(password.as_bytes());
        }
        ok.into()
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
            } if self.check_password(username, password) => SaslVerdict::Accept(username.clone()),
            _ => SaslVerdict::Reject(SaslCode::Auth),
        }
    }
}
