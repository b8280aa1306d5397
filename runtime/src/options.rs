//! Options for connections, senders and receivers, with Proton's defaults.

use std::time::Duration;

use nucleon_protocol::codec::{Described, Descriptor, Map, Symbol, Value};
use nucleon_protocol::frame::{
    Outcome, ReceiverSettleMode, SenderSettleMode, Source, Target, TerminusDurability,
    TerminusExpiryPolicy,
};

use crate::tls::TlsClientConfig;

/// How a connection is opened [AMQP 1.0 §2.7.1, §5.3]. Start from [`ConnectionOptions::new`] (the same as
/// `default()`) and chain the setters:
///
/// ```
/// use std::time::Duration;
/// use nucleon::{ConnectionOptions, ReconnectOptions};
///
/// let options = ConnectionOptions::new()
///     .user("alice")
///     .password("secret")
///     .connect_timeout(Duration::from_secs(5))
///     .reconnect(ReconnectOptions::new().max_attempts(10));
/// assert_eq!(options.user.as_deref(), Some("alice"));
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
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
    /// How long one attempt may take from the start of the TCP connect to the peer's `open` (TCP, TLS and
    /// WebSocket handshakes, SASL included). Default 10 s; [`Duration::MAX`] waits forever. A connect that
    /// does not finish in time fails with [`Error::Timeout`](crate::Error::Timeout) (`Timeout::Connect`),
    /// a peer that connected but did not open in time with `amqp:resource-limit-exceeded`; with
    /// reconnect, both are retried.
    pub connect_timeout: Option<Duration>,
}

impl ConnectionOptions {
    /// The defaults (see each field).
    pub fn new() -> Self {
        Self::default()
    }

    /// Our container id for this connection.
    pub fn container_id(mut self, id: impl Into<String>) -> Self {
        self.container_id = Some(id.into());
        self
    }

    /// The virtual host (`hostname` in `open` and `sasl-init`).
    pub fn virtual_host(mut self, host: impl Into<String>) -> Self {
        self.virtual_host = Some(host.into());
        self
    }

    /// The SASL user.
    pub fn user(mut self, user: impl Into<String>) -> Self {
        self.user = Some(user.into());
        self
    }

    /// The SASL password.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The SASL mechanisms we may use, in order of preference.
    pub fn sasl_allowed_mechs(mut self, mechs: Vec<Symbol>) -> Self {
        self.sasl_allowed_mechs = mechs;
        self
    }

    /// Allow PLAIN over an unencrypted transport.
    pub fn sasl_allow_insecure_mechs(mut self, allow: bool) -> Self {
        self.sasl_allow_insecure_mechs = allow;
        self
    }

    /// With a user, also try ANONYMOUS last.
    pub fn allow_anonymous_fallback(mut self, allow: bool) -> Self {
        self.allow_anonymous_fallback = allow;
        self
    }

    /// Skip SASL entirely.
    pub fn sasl_disabled(mut self, disabled: bool) -> Self {
        self.sasl_disabled = disabled;
        self
    }

    /// Close the connection when the peer is silent this long.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The largest frame we accept.
    pub fn max_frame_size(mut self, bytes: u32) -> Self {
        self.max_frame_size = Some(bytes);
        self
    }

    /// The highest channel number we accept.
    pub fn max_sessions(mut self, channel_max: u16) -> Self {
        self.max_sessions = Some(channel_max);
        self
    }

    /// The largest message our receiving links accept.
    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.max_message_size = Some(bytes);
        self
    }

    /// Connection properties.
    pub fn properties(mut self, properties: Map) -> Self {
        self.properties = Some(properties);
        self
    }

    /// Offered capabilities.
    pub fn offered_capabilities(mut self, capabilities: Vec<Symbol>) -> Self {
        self.offered_capabilities = capabilities;
        self
    }

    /// Desired capabilities.
    pub fn desired_capabilities(mut self, capabilities: Vec<Symbol>) -> Self {
        self.desired_capabilities = capabilities;
        self
    }

    /// Reconnect after a lost transport.
    pub fn reconnect(mut self, reconnect: ReconnectOptions) -> Self {
        self.reconnect = Some(reconnect);
        self
    }

    /// How `amqps://` URLs do TLS.
    pub fn tls(mut self, tls: TlsClientConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Send the AMQP TLS protocol header before the TLS handshake.
    pub fn tls_protocol_header(mut self, send: bool) -> Self {
        self.tls_protocol_header = send;
        self
    }

    /// TCP keepalive on the socket.
    pub fn tcp_keepalive(mut self, keepalive: TcpKeepalive) -> Self {
        self.tcp_keepalive = keepalive;
        self
    }

    /// Bounds each connect attempt (see the field).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }
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
/// has its connections refused (closed as soon as they are accepted) for `lockout`. Start from
/// [`LoginThrottle::new`] (the defaults) and chain the setters:
///
/// ```
/// use std::time::Duration;
/// use nucleon::{ListenOptions, LoginThrottle};
///
/// let throttle = LoginThrottle::new()
///     .max_failures(3)
///     .lockout(Duration::from_secs(300));
/// let options = ListenOptions::new().login_throttle(Some(throttle));
/// assert_eq!(options.login_throttle.map(|t| t.max_failures), Some(3));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
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

impl LoginThrottle {
    /// The defaults: 10 failed logins within a minute refuse the address for a minute.
    pub fn new() -> Self {
        Self::default()
    }

    /// Failed logins before the address is refused.
    pub fn max_failures(mut self, failures: u32) -> Self {
        self.max_failures = failures;
        self
    }

    /// The window the failures are counted in.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// How long the address is refused.
    pub fn lockout(mut self, lockout: Duration) -> Self {
        self.lockout = lockout;
        self
    }
}

/// Reconnect policy: exponential backoff with jitter over the main URL and failover URLs. Start from
/// [`ReconnectOptions::new`] (the defaults) and chain the setters.
#[derive(Clone, Debug)]
#[non_exhaustive]
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

impl ReconnectOptions {
    /// The defaults: 10 ms, doubling up to 10 s, 20% jitter, never giving up.
    pub fn new() -> Self {
        Self::default()
    }

    /// The first delay.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Each further delay is multiplied by this.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The longest delay.
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Give up after this many attempts in a row.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Randomize each delay by up to this fraction.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Further URLs to try in turn after the main one.
    pub fn failover_urls(mut self, urls: Vec<String>) -> Self {
        self.failover_urls = urls;
        self
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

/// How many sends a [`SenderHandle`](crate::SenderHandle) lets wait for credit or an outcome at once, by
/// default ([`SenderOptions::max_in_flight`]).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// Options for a sender [AMQP 1.0 §2.7.3]: every term of its `attach`, and how the runtime and the async
/// facade drive it. Start from [`SenderOptions::new`] (the same as `default()`) and chain the setters:
///
/// ```
/// use nucleon::SenderOptions;
/// use nucleon::protocol::codec::{Map, Symbol, Value};
///
/// let mut properties = Map::new();
/// properties.insert(Symbol::from("com.microsoft:epoch"), Value::Long(3));
/// let options = SenderOptions::new()
///     .name("orders-sender")
///     .properties(properties)
///     .desired_capabilities(vec![Symbol::from("ANONYMOUS-RELAY")])
///     .max_in_flight(64);
/// assert_eq!(options.name.as_deref(), Some("orders-sender"));
/// ```
///
/// Terms the peer may not honour (capabilities, settle modes, durability) are asked for, not promised: the
/// peer's `attach` says what it agreed to.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SenderOptions {
    /// The link name (default: generated).
    pub name: Option<String>,
    /// The source terminus (default: empty).
    pub source: Option<Source>,
    /// The target terminus (default: one with the address given to `open_sender`). An address it leaves
    /// empty is filled with that address when it is not empty (an empty one keeps the target without an
    /// address: the anonymous relay); the target setters ([`durable`](Self::durable), ...) edit it.
    pub target: Option<Target>,
    /// Settlement.
    pub delivery_mode: DeliveryMode,
    /// The sender settle mode asked for, overriding what `delivery_mode` implies (`settled` for at most
    /// once, else `unsettled`). `mixed` lets each send choose; nucleon's senders send unsettled then.
    pub sender_settle_mode: Option<SenderSettleMode>,
    /// The receiver settle mode asked of the peer (default `first`: it settles as soon as it decides).
    pub receiver_settle_mode: Option<ReceiverSettleMode>,
    /// Settle our deliveries when the peer's outcome arrives (default true, as in Proton).
    pub auto_settle: Option<bool>,
    /// Link properties (e.g. Azure Event Hubs' `com.microsoft:epoch`).
    pub properties: Option<Map>,
    /// Capabilities we offer on the link.
    pub offered_capabilities: Vec<Symbol>,
    /// Capabilities we desire of the peer on the link.
    pub desired_capabilities: Vec<Symbol>,
    /// The largest message we would send, advertised in `attach` (default: none advertised).
    pub max_message_size: Option<u64>,
    /// How long the async facade waits for the peer's `attach` (default: no limit of its own; the link
    /// fails with the connection). Past it: [`Error::Timeout`](crate::Error::Timeout).
    pub open_timeout: Option<Duration>,
    /// How long `SenderHandle::send` waits for credit and the outcome (default: no limit). Past it:
    /// [`Error::Timeout`](crate::Error::Timeout); the message may still arrive.
    pub send_timeout: Option<Duration>,
    /// How many sends one `SenderHandle` lets wait for credit or an outcome at once; further sends wait
    /// their turn (default [`DEFAULT_MAX_IN_FLIGHT`], 1024; at least 1).
    pub max_in_flight: usize,
}

impl Default for SenderOptions {
    fn default() -> Self {
        SenderOptions {
            name: None,
            source: None,
            target: None,
            delivery_mode: DeliveryMode::default(),
            sender_settle_mode: None,
            receiver_settle_mode: None,
            auto_settle: None,
            properties: None,
            offered_capabilities: Vec::new(),
            desired_capabilities: Vec::new(),
            max_message_size: None,
            open_timeout: None,
            send_timeout: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }
    }
}

impl SenderOptions {
    /// The defaults: a generated name, at-least-once, auto-settle, 1024 sends in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the link.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the whole source terminus.
    pub fn source(mut self, source: Source) -> Self {
        self.source = Some(source);
        self
    }

    /// Sets the whole target terminus (an empty address is filled with `open_sender`'s).
    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// At least once (the default) or at most once.
    pub fn delivery_mode(mut self, mode: DeliveryMode) -> Self {
        self.delivery_mode = mode;
        self
    }

    /// Asks for this sender settle mode (see the field).
    pub fn sender_settle_mode(mut self, mode: SenderSettleMode) -> Self {
        self.sender_settle_mode = Some(mode);
        self
    }

    /// Asks the peer for this receiver settle mode.
    pub fn receiver_settle_mode(mut self, mode: ReceiverSettleMode) -> Self {
        self.receiver_settle_mode = Some(mode);
        self
    }

    /// Settle our deliveries when the outcome arrives (default true).
    pub fn auto_settle(mut self, auto_settle: bool) -> Self {
        self.auto_settle = Some(auto_settle);
        self
    }

    /// Sets the link properties.
    pub fn properties(mut self, properties: Map) -> Self {
        self.properties = Some(properties);
        self
    }

    /// Adds one link property.
    pub fn property(mut self, key: impl Into<Symbol>, value: impl Into<Value>) -> Self {
        let key: Symbol = key.into();
        self.properties
            .get_or_insert_with(Map::new)
            .insert(Value::Symbol(key), value);
        self
    }

    /// Sets the capabilities we offer.
    pub fn offered_capabilities(mut self, capabilities: Vec<Symbol>) -> Self {
        self.offered_capabilities = capabilities;
        self
    }

    /// Sets the capabilities we desire.
    pub fn desired_capabilities(mut self, capabilities: Vec<Symbol>) -> Self {
        self.desired_capabilities = capabilities;
        self
    }

    /// Advertises the largest message we would send.
    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.max_message_size = Some(bytes);
        self
    }

    /// Bounds the wait for the peer's `attach` (see the field).
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = Some(timeout);
        self
    }

    /// Bounds each send's wait for its outcome (see the field).
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = Some(timeout);
        self
    }

    /// How many sends may wait at once (see the field).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    fn target_mut(&mut self) -> &mut Target {
        self.target.get_or_insert_with(Target::default)
    }

    /// What the target node keeps durably [AMQP 1.0 §3.5.5].
    pub fn durable(mut self, durable: TerminusDurability) -> Self {
        self.target_mut().durable = durable;
        self
    }

    /// When the target's expiry timer starts [AMQP 1.0 §3.5.6].
    pub fn expiry_policy(mut self, policy: TerminusExpiryPolicy) -> Self {
        self.target_mut().expiry_policy = policy;
        self
    }

    /// Seconds the target terminus outlives its expiry point.
    pub fn expiry_timeout(mut self, seconds: u32) -> Self {
        self.target_mut().timeout = seconds;
        self
    }

    /// Asks the peer to create the target node (its address comes back in the peer's `attach`).
    pub fn dynamic(mut self, dynamic: bool) -> Self {
        self.target_mut().dynamic = dynamic;
        self
    }

    /// Properties of the node a dynamic target asks for [AMQP 1.0 §3.5.9].
    pub fn dynamic_node_properties(mut self, properties: Map) -> Self {
        self.target_mut().dynamic_node_properties = Some(properties);
        self
    }

    /// The target terminus's capabilities (e.g. `queue`, `topic`).
    pub fn target_capabilities(mut self, capabilities: Vec<Symbol>) -> Self {
        self.target_mut().capabilities = Some(capabilities);
        self
    }
}

/// Options for a receiver [AMQP 1.0 §2.7.3]: every term of its `attach` (source filters, durable
/// subscriptions, capabilities, ...), and how the runtime and the async facade drive it. Start from
/// [`ReceiverOptions::new`] and chain the setters:
///
/// ```
/// use nucleon::ReceiverOptions;
/// use nucleon::protocol::frame::{TerminusDurability, TerminusExpiryPolicy};
///
/// // A durable subscription that only takes red messages.
/// let options = ReceiverOptions::new()
///     .name("sub-1")
///     .selector("colour = 'red'")
///     .durable(TerminusDurability::UnsettledState)
///     .expiry_policy(TerminusExpiryPolicy::Never)
///     .credit_window(100);
/// assert!(options.source.unwrap().filter.is_some());
/// ```
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct ReceiverOptions {
    /// The link name (default: generated).
    pub name: Option<String>,
    /// The source terminus (default: one with the address given to `open_receiver`). An address it leaves
    /// empty is filled with that address when it is not empty, unless the source is dynamic; the source setters
    /// ([`filter`](Self::filter), [`durable`](Self::durable), ...) edit it.
    pub source: Option<Source>,
    /// The target terminus (default: empty).
    pub target: Option<Target>,
    /// Settlement.
    pub delivery_mode: DeliveryMode,
    /// The sender settle mode asked of the peer, overriding what `delivery_mode` implies.
    pub sender_settle_mode: Option<SenderSettleMode>,
    /// The receiver settle mode we declare (default `first`). The runtime settles each delivery as it
    /// decides, which is `first`'s behaviour; ask for `second` only to tell a peer that insists on it.
    pub receiver_settle_mode: Option<ReceiverSettleMode>,
    /// Credit kept open to the sender, refilled as messages are consumed (default 10; 0 means the application
    /// grants credit itself).
    pub credit_window: Option<u32>,
    /// Accept each message when `on_message` (or `on_raw_message`) returns without settling it (default true).
    pub auto_accept: Option<bool>,
    /// Ask for a dynamic source: the peer creates a node and tells us its address.
    pub dynamic: bool,
    /// The largest message this receiver accepts (default: the connection's; 16 MiB unless configured).
    pub max_message_size: Option<u64>,
    /// Link properties.
    pub properties: Option<Map>,
    /// Capabilities we offer on the link.
    pub offered_capabilities: Vec<Symbol>,
    /// Capabilities we desire of the peer on the link.
    pub desired_capabilities: Vec<Symbol>,
    /// How long the async facade waits for the peer's `attach` (default: no limit of its own). Past it:
    /// [`Error::Timeout`](crate::Error::Timeout).
    pub open_timeout: Option<Duration>,
}

/// The filter name a JMS selector goes under, by convention.
const SELECTOR_NAME: &str = "jms-selector";
/// The descriptor of a JMS selector filter (Apache's registered filter type).
const SELECTOR_DESCRIPTOR: &str = "apache.org:selector-filter:string";

impl ReceiverOptions {
    /// The defaults: a generated name, at-least-once, a credit window of 10, auto-accept.
    pub fn new() -> Self {
        Self::default()
    }

    /// Names the link (a durable subscription is found again by its link name and container id).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets the whole source terminus (an empty address is filled with `open_receiver`'s).
    pub fn source(mut self, source: Source) -> Self {
        self.source = Some(source);
        self
    }

    /// Sets the whole target terminus.
    pub fn target(mut self, target: Target) -> Self {
        self.target = Some(target);
        self
    }

    /// At least once (the default) or at most once.
    pub fn delivery_mode(mut self, mode: DeliveryMode) -> Self {
        self.delivery_mode = mode;
        self
    }

    /// Asks the peer for this sender settle mode.
    pub fn sender_settle_mode(mut self, mode: SenderSettleMode) -> Self {
        self.sender_settle_mode = Some(mode);
        self
    }

    /// Declares this receiver settle mode (see the field).
    pub fn receiver_settle_mode(mut self, mode: ReceiverSettleMode) -> Self {
        self.receiver_settle_mode = Some(mode);
        self
    }

    /// The credit window (see the field).
    pub fn credit_window(mut self, window: u32) -> Self {
        self.credit_window = Some(window);
        self
    }

    /// Accept what `on_message` (or `on_raw_message`) leaves unsettled (default true).
    pub fn auto_accept(mut self, auto_accept: bool) -> Self {
        self.auto_accept = Some(auto_accept);
        self
    }

    /// Asks for a dynamic source (see the field).
    pub fn dynamic(mut self, dynamic: bool) -> Self {
        self.dynamic = dynamic;
        self
    }

    /// The largest message this receiver accepts.
    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.max_message_size = Some(bytes);
        self
    }

    /// Sets the link properties.
    pub fn properties(mut self, properties: Map) -> Self {
        self.properties = Some(properties);
        self
    }

    /// Adds one link property.
    pub fn property(mut self, key: impl Into<Symbol>, value: impl Into<Value>) -> Self {
        let key: Symbol = key.into();
        self.properties
            .get_or_insert_with(Map::new)
            .insert(Value::Symbol(key), value);
        self
    }

    /// Sets the capabilities we offer.
    pub fn offered_capabilities(mut self, capabilities: Vec<Symbol>) -> Self {
        self.offered_capabilities = capabilities;
        self
    }

    /// Sets the capabilities we desire.
    pub fn desired_capabilities(mut self, capabilities: Vec<Symbol>) -> Self {
        self.desired_capabilities = capabilities;
        self
    }

    /// Bounds the wait for the peer's `attach` (see the field).
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = Some(timeout);
        self
    }

    fn source_mut(&mut self) -> &mut Source {
        self.source.get_or_insert_with(Source::default)
    }

    /// Adds a filter to the source's filter-set [AMQP 1.0 §3.5.3, §3.5.8]: `name` maps to `value`,
    /// usually a described value whose descriptor names the filter type.
    pub fn filter(mut self, name: impl Into<Symbol>, value: impl Into<Value>) -> Self {
        let name: Symbol = name.into();
        self.source_mut()
            .filter
            .get_or_insert_with(Map::new)
            .insert(Value::Symbol(name), value);
        self
    }

    /// Sets the source's whole filter-set.
    pub fn filters(mut self, filters: Map) -> Self {
        self.source_mut().filter = Some(filters);
        self
    }

    /// A JMS selector (`apache.org:selector-filter:string`, under the name `jms-selector`), which
    /// ActiveMQ, Artemis, Qpid and Azure Service Bus understand.
    pub fn selector(self, selector: impl Into<String>) -> Self {
        let value = Described {
            descriptor: Descriptor::Symbol(Symbol::from_static(SELECTOR_DESCRIPTOR)),
            value: Value::String(selector.into()),
        };
        self.filter(Symbol::from_static(SELECTOR_NAME), value)
    }

    /// What the source node keeps durably [AMQP 1.0 §3.5.5] (a durable subscription:
    /// `UnsettledState` with expiry `Never`).
    pub fn durable(mut self, durable: TerminusDurability) -> Self {
        self.source_mut().durable = durable;
        self
    }

    /// When the source's expiry timer starts [AMQP 1.0 §3.5.6].
    pub fn expiry_policy(mut self, policy: TerminusExpiryPolicy) -> Self {
        self.source_mut().expiry_policy = policy;
        self
    }

    /// Seconds the source terminus outlives its expiry point.
    pub fn expiry_timeout(mut self, seconds: u32) -> Self {
        self.source_mut().timeout = seconds;
        self
    }

    /// `move` (a queue: each message to one receiver) or `copy` (a topic, a browser) [AMQP 1.0 §3.5.7].
    pub fn distribution_mode(mut self, mode: impl Into<Symbol>) -> Self {
        self.source_mut().distribution_mode = Some(mode.into());
        self
    }

    /// Properties of the node a dynamic source asks for [AMQP 1.0 §3.5.9] (e.g. `lifetime-policy`).
    pub fn dynamic_node_properties(mut self, properties: Map) -> Self {
        self.source_mut().dynamic_node_properties = Some(properties);
        self
    }

    /// The source terminus's capabilities (e.g. `queue`, `topic`).
    pub fn source_capabilities(mut self, capabilities: Vec<Symbol>) -> Self {
        self.source_mut().capabilities = Some(capabilities);
        self
    }

    /// The outcome the source applies to unsettled deliveries of a closed link.
    pub fn default_outcome(mut self, outcome: Outcome) -> Self {
        self.source_mut().default_outcome = Some(outcome);
        self
    }

    /// The outcomes we support.
    pub fn outcomes(mut self, outcomes: Vec<Symbol>) -> Self {
        self.source_mut().outcomes = Some(outcomes);
        self
    }
}
