//! Options for connections, senders and receivers, with Proton's defaults.

use std::time::Duration;

use nucleon_protocol::codec::{Map, Symbol};
use nucleon_protocol::frame::{Source, Target};

use crate::tls::TlsClientConfig;

/// How a connection is opened [AMQP 1.0 §2.7.1, §5.3].
#[derive(Clone, Debug, Default)]
pub struct ConnectionOptions {
    /// Our container id for this connection (default: the container's id).
    pub container_id: Option<String>,
    /// The virtual host (sent as `hostname` in `open` and `sasl-init`; default: the URL's host).
    pub virtual_host: Option<String>,
    /// The user for SASL SCRAM or PLAIN (default: the URL's user).
    pub user: Option<String>,
    /// The password for SASL SCRAM or PLAIN (default: the URL's password).
    pub password: Option<String>,
    /// SASL mechanisms we may use, in order of preference. Default: with a user, SCRAM-SHA-512, -256 and
    /// -1 (when there is a password), then PLAIN where it is allowed (over TLS, or with
    /// `sasl_allow_insecure_mechs`), then ANONYMOUS only with `allow_anonymous_fallback`; without a user,
    /// ANONYMOUS. A server that offers none of them fails the connection (`amqp:unauthorized-access`).
    pub sasl_allowed_mechs: Vec<Symbol>,
    /// Allow PLAIN over an unencrypted transport (Proton refuses by default; so does nucleon).
    pub sasl_allow_insecure_mechs: bool,
    /// With a user, also try ANONYMOUS last, when the server offers none of the mechanisms that use the
    /// credentials. Off by default: credentials are never dropped silently.
    pub allow_anonymous_fallback: bool,
    /// Skip SASL entirely and send the AMQP header directly.
    pub sasl_disabled: bool,
    /// Close the connection when the peer is silent this long; heartbeats are sent at half the peer's.
    pub idle_timeout: Option<Duration>,
    /// The largest frame we accept (default 64 KiB).
    pub max_frame_size: Option<u32>,
    /// The highest channel number we accept (the number of sessions, minus one).
    pub max_sessions: Option<u16>,
    /// The largest message our receiving links accept (default: the container's, 16 MiB).
    pub max_message_size: Option<u64>,
    /// Connection properties.
    pub properties: Option<Map>,
    /// Offered capabilities.
    pub offered_capabilities: Vec<Symbol>,
    /// Desired capabilities.
    pub desired_capabilities: Vec<Symbol>,
    /// Reconnect after a lost transport (clients only).
    pub reconnect: Option<ReconnectOptions>,
    /// How `amqps://` URLs do TLS (default: trust the operating system's root certificates).
    pub tls: Option<TlsClientConfig>,
    /// For `amqps://`: send the AMQP TLS protocol header and wait for the server's before the handshake
    /// [AMQP 1.0 §5.2.1], instead of starting TLS at once (the default, as Proton and most brokers expect
    /// on port 5671).
    pub tls_protocol_header: bool,
    /// TCP keepalive on the socket (default: probes after 60 s idle). Ignored for `connect_stream`.
    pub tcp_keepalive: TcpKeepalive,
}

/// TCP keepalive on a connection's socket. Without it, a peer whose host vanished (powered off, cut off by a
/// firewall) holds the connection, and whatever its link held unsettled, until a write fails or an idle
/// timeout fires; many peers never advertise an idle-time-out [AMQP 1.0 §2.4.5].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcpKeepalive {
    /// No keepalive probes.
    Off,
    /// Probe a socket that has been idle this long, then every 10 s (where the system lets the interval be
    /// set); after the system's count of unanswered probes (9 on Linux) the connection fails.
    Idle(Duration),
}

/// 60 s idle: Linux's own default is 2 hours, far too long to notice a vanished consumer that holds
/// unsettled messages; with 10 s probes a dead peer is found in about two and a half minutes.
impl Default for TcpKeepalive {
    fn default() -> Self {
        TcpKeepalive::Idle(Duration::from_secs(60))
    }
}

/// How a listener throttles failed logins: an address with `max_failures` failed logins within `window`
/// has its connections refused (closed as soon as they are accepted) for `lockout`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginThrottle {
    /// Failed logins (refused SASL, or a skipped SASL that is not allowed) before the address is refused.
    pub max_failures: u32,
    /// The window the failures are counted in.
    pub window: Duration,
    /// How long the address is refused.
    pub lockout: Duration,
}

/// 10 failed logins within a minute refuse the address for a minute: far more than a person mistyping a
/// password needs, and it holds a password guesser to about 10 guesses a minute per address.
impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            max_failures: 10,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
        }
    }
}

/// Reconnect policy: exponential backoff with jitter over the main URL and failover URLs.
#[derive(Clone, Debug)]
pub struct ReconnectOptions {
    /// The first delay.
    pub delay: Duration,
    /// Each further delay is multiplied by this.
    pub multiplier: f64,
    /// The longest delay.
    pub max_delay: Duration,
    /// Give up after this many attempts in a row (None: never).
    pub max_attempts: Option<u32>,
    /// Randomize each delay by up to this fraction (0.0 - 1.0).
    pub jitter: f64,
    /// Further URLs to try in turn after the main one.
    pub failover_urls: Vec<String>,
}

impl Default for ReconnectOptions {
    fn default() -> Self {
        ReconnectOptions {
            delay: Duration::from_millis(10),
            multiplier: 2.0,
            max_delay: Duration::from_secs(10),
            max_attempts: None,
            jitter: 0.2,
            failover_urls: Vec::new(),
        }
    }
}

/// How deliveries on a link are settled.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeliveryMode {
    /// The peer decides per link (`mixed`); nucleon senders send unsettled and settle on the outcome.
    #[default]
    AtLeastOnce,
    /// Pre-settled: fire and forget (`snd-settle-mode = settled`).
    AtMostOnce,
}

/// Options for a sender [AMQP 1.0 §2.7.3].
#[derive(Clone, Debug, Default)]
pub struct SenderOptions {
    /// The link name (default: generated).
    pub name: Option<String>,
    /// The source terminus (default: empty).
    pub source: Option<Source>,
    /// The target terminus (default: the address given to `open_sender`).
    pub target: Option<Target>,
    /// Settlement.
    pub delivery_mode: DeliveryMode,
    /// Settle our deliveries when the peer's outcome arrives (default true, as in Proton).
    pub auto_settle: Option<bool>,
}

/// Options for a receiver [AMQP 1.0 §2.7.3].
#[derive(Clone, Debug, Default)]
pub struct ReceiverOptions {
    /// The link name (default: generated).
    pub name: Option<String>,
    /// The source terminus (default: the address given to `open_receiver`).
    pub source: Option<Source>,
    /// The target terminus (default: empty).
    pub target: Option<Target>,
    /// Settlement.
    pub delivery_mode: DeliveryMode,
    /// Credit kept open to the sender, refilled as messages are consumed (default 10; 0 means the application
    /// grants credit itself).
    pub credit_window: Option<u32>,
    /// Accept each message when `on_message` returns without settling it (default true).
    pub auto_accept: Option<bool>,
    /// Ask for a dynamic source: the peer creates a node and tells us its address.
    pub dynamic: bool,
    /// The largest message this receiver accepts (default: the connection's; 16 MiB unless configured).
    pub max_message_size: Option<u64>,
}
