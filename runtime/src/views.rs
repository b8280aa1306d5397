//! Borrowed views of a connection's objects, valid only inside a callback or work item of that connection.
//!
//! [`Connection`], [`Session`], [`Sender`], [`Receiver`], [`Delivery`] and [`Tracker`] borrow the connection's
//! state for the duration of one callback and are `!Send`, so using them from another thread, or keeping them
//! past the callback, does not compile. To act on a connection from elsewhere, keep a `Send` id
//! ([`SenderId`], [`ReceiverId`]) and use the connection's `WorkQueue`.
//!
//! Every view is `!Send` (E0277: `*const ()` cannot be sent between threads safely), each checked on
//! its own, with the error code, so a different compile error fails the test. Rustdoc checks the codes
//! only on a nightly toolchain (`cargo +nightly test -p nucleon --doc`); on stable any error passes.
//!
//! ```compile_fail,E0277
//! fn needs_send<T: Send>() {}
//! needs_send::<nucleon::Connection<'static>>(); // a view cannot leave its thread
//! ```
//!
//! ```compile_fail,E0277
//! fn needs_send<T: Send>() {}
//! needs_send::<nucleon::Session<'static>>();
//! ```
//!
//! ```compile_fail,E0277
//! fn needs_send<T: Send>() {}
//! needs_send::<nucleon::Sender<'static>>();
//! ```
//!
//! ```compile_fail,E0277
//! fn needs_send<T: Send>() {}
//! needs_send::<nucleon::Receiver<'static>>();
//! ```
//!
//! ```compile_fail,E0277
//! fn needs_send<T: Send>() {}
//! needs_send::<nucleon::Delivery<'static>>();
//! ```
//!
//! ```compile_fail,E0277
//! fn needs_send<T: Send>() {}
//! needs_send::<nucleon::Tracker<'static>>();
//! ```
//!
//! ```
//! fn needs_send<T: Send + Sync + Clone>() {}
//! struct Handler;
//! impl nucleon::MessagingHandler for Handler {}
//! needs_send::<nucleon::SenderId>();
//! needs_send::<nucleon::ContainerHandle>();
//! needs_send::<nucleon::WorkQueue<Handler>>();
//! needs_send::<nucleon::ConnectionHandle<Handler>>();
//! ```

use rustc_hash::FxHashMap;
use std::marker::PhantomData;

use bytes::{BufMut, Bytes, BytesMut};
use nucleon_protocol::codec::{Map, Symbol};
use nucleon_protocol::engine::{self, DeliveryId, LinkConfig, LinkId, SessionId};
use nucleon_protocol::frame::{
    Accepted, DeliveryState, Error as AmqpError, Modified, ReceiverSettleMode, Rejected, Released,
    Role, SenderSettleMode, Source, Target,
};
use nucleon_protocol::{Message, RawMessage};

use crate::container::ContainerHandle;
use crate::error::Error;
use crate::options::{DeliveryMode, ReceiverOptions, SenderOptions};

/// Identifies a sender of a connection; `Copy + Send`, for use in work items. It stays valid across
/// reconnects: the link attached again on the new transport answers to the same id. It names its
/// connection: used on another one, it is refused with [`Error::OtherConnection`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SenderId {
    pub(crate) conn: u64,
    pub(crate) key: u64,
}

/// Identifies a receiver of a connection; `Copy + Send`, for use in work items. It stays valid across
/// reconnects, and names its connection (as [`SenderId`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReceiverId {
    pub(crate) conn: u64,
    pub(crate) key: u64,
}

/// Identifies a delivery (received) or tracker (sent); `Copy + Send`. It names its connection and the
/// transport it arrived on: after a reconnect the new engine numbers its deliveries afresh, so a ref from
/// the old transport is refused with [`Error::StaleDelivery`] instead of settling another message, and a
/// ref used on another connection with [`Error::OtherConnection`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DeliveryRef {
    conn: u64,
    transport: u64,
    id: DeliveryId,
}

impl DeliveryRef {
    /// The delivery-id its session gave it: deliveries of one link have increasing ids, so what a handler
    /// keeps per delivery of a link can sit in a [`SeqMap`](nucleon_protocol::engine::SeqMap) under it.
    pub fn delivery_id(&self) -> u32 {
        self.id.id
    }
}

/// How many delivery tags share one allocation (see `Core::next_tag`).
const TAG_BLOCK: usize = 32;

/// Numbers connections for the ids and refs bound to them (0 is never given).
static NEXT_CONNECTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Wakes one connection from any thread, as [`ConnectionHandle::wake`](crate::ConnectionHandle::wake)
/// does, without naming its handler type: code that only has a view (a callback's [`Connection`]) can
/// hand it to other threads, as a broker hands a consumer's to the producers that fill its queue.
/// `Send + Sync + Clone`.
#[derive(Clone)]
pub struct ConnectionWaker(pub(crate) std::sync::Arc<dyn Fn() + Send + Sync>);

impl ConnectionWaker {
    /// Wakes the connection: `on_connection_wake` follows (coalesced, a no-op once it is finished).
    pub fn wake(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for ConnectionWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConnectionWaker")
    }
}

/// Our answer to a link the peer attached, before it is sent. Proton's default mirrors the peer's terms;
/// [`MessagingHandler::on_link_attach_request`](crate::MessagingHandler::on_link_attach_request) may change
/// it, e.g. to give a dynamic source its address, or to take over a receiver's credit.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AttachReply {
    /// Our role on the link (the opposite of the peer's); changing it has no effect.
    pub role: Role,
    /// Our source terminus (default: the peer's). For a dynamic source, set the address of the node made.
    pub source: Option<Source>,
    /// Our target terminus (default: the peer's).
    pub target: Option<Target>,
    /// For a receiver, the credit window kept open (default 10; 0: the handler grants credit itself).
    pub credit_window: u32,
}

/// Per-link runtime settings.
#[derive(Debug, Clone)]
pub(crate) struct LinkState {
    /// The link's stable id (see [`SenderId`]).
    pub(crate) key: u64,
    pub(crate) auto_settle: bool,
    pub(crate) auto_accept: bool,
    pub(crate) credit_window: u32,
    pub(crate) address: Option<String>,
    /// The application asked for the link to close (so a remote detach is an answer, not news).
    pub(crate) closing: bool,
    /// Our terms, to attach the link again after a reconnect.
    pub(crate) config: Option<LinkConfig>,
}

/// The state of one connection that callbacks may touch, owned by the connection actor.
pub(crate) struct Core {
    pub(crate) engine: engine::Connection,
    pub(crate) links: FxHashMap<LinkId, LinkState>,
    pub(crate) default_session: Option<SessionId>,
    pub(crate) container: ContainerHandle,
    next_tag: u64,
    /// Room for the next delivery tags: each tag is split off it, so tags cost one allocation per
    /// `TAG_BLOCK`, not one each (a tag lives until its transfer is written).
    tags: BytesMut,
    pub(crate) next_name: u64,
    pub(crate) reconnected: bool,
    pub(crate) closing: bool,
    /// The user SASL authenticated (server side), once it has.
    pub(crate) user: Option<String>,
    /// The subject of the peer's verified TLS certificate (server side, with client certificates).
    pub(crate) peer_subject: Option<String>,
    /// Wakes this connection (as `ConnectionHandle::wake`), for code that only has a view.
    pub(crate) waker: ConnectionWaker,
    /// Why the transport is failing, typed, set by the connection actor as it tells the engine; taken by
    /// the engine's `TransportError` event.
    failure: Option<Error>,
    /// The typed error of the current transport's failure, once its `TransportError` event arrived.
    pub(crate) transport_error: Option<Error>,
    /// Stable link ids to the current engine links.
    keys: FxHashMap<u64, LinkId>,
    next_key: u64,
    /// This connection's number, in every id and ref it gives out.
    conn: u64,
    /// Counts transports (reconnects): a delivery ref names the transport it belongs to.
    transport: u64,
}

impl Core {
    pub(crate) fn new(
        engine: engine::Connection,
        container: ContainerHandle,
        waker: ConnectionWaker,
    ) -> Self {
        Core {
            engine,
            links: FxHashMap::default(),
            default_session: None,
            container,
            next_tag: 0,
            tags: BytesMut::new(),
            next_name: 0,
            reconnected: false,
            closing: false,
            user: None,
            peer_subject: None,
            waker,
            failure: None,
            transport_error: None,
            keys: FxHashMap::default(),
            next_key: 0,
            conn: NEXT_CONNECTION.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            transport: 0,
        }
    }

    /// Records a new link and gives it a stable id.
    pub(crate) fn add_link(&mut self, link: LinkId, mut state: LinkState) {
        self.next_key += 1;
        state.key = self.next_key;
        self.keys.insert(state.key, link);
        self.links.insert(link, state);
    }

    /// Forgets a link that closed.
    pub(crate) fn remove_link(&mut self, link: LinkId) {
        if let Some(state) = self.links.remove(&link) {
            self.keys.remove(&state.key);
        }
    }

    /// The stable id of a current link.
    fn key_of(&self, link: LinkId) -> u64 {
        self.links.get(&link).map_or(0, |l| l.key)
    }

    /// The ref of a delivery of the current transport.
    fn delivery_ref(&self, id: DeliveryId) -> DeliveryRef {
        DeliveryRef {
            conn: self.conn,
            transport: self.transport,
            id,
        }
    }

    /// The engine delivery a ref names, if it is one of this connection's current transport.
    fn delivery(&self, r: DeliveryRef) -> Result<DeliveryId, Error> {
        if r.conn != self.conn {
            Err(Error::OtherConnection)
        } else if r.transport != self.transport {
            Err(Error::StaleDelivery)
        } else {
            Ok(r.id)
        }
    }

    /// A fresh engine for a new transport (reconnect). Links are kept, to be attached again.
    pub(crate) fn reset(&mut self, engine: engine::Connection) {
        self.engine = engine;
        self.failure = None;
        self.transport_error = None;
        self.default_session = None;
        self.reconnected = true;
        self.transport += 1;
    }

    /// The transport failed with `error` (an [`Error::Io`] for a connect that failed, an
    /// [`Error::TransportLost`] for an established transport): the engine is told (handlers see its
    /// `nucleon:io` condition, with the error's text), and `on_transport_error` may read the typed error
    /// through [`Connection::transport_error`].
    pub(crate) fn transport_failed(&mut self, error: Error) {
        let reason = match &error {
            Error::Io { message, .. } => message.clone(),
            Error::TransportLost { reason, .. } => reason.clone(),
            other => other.to_string(),
        };
        self.failure = Some(error);
        self.engine.handle_disconnected(reason);
    }

    /// The peer closed the socket: the engine is told; if it had not closed the connection, that is a lost
    /// transport.
    pub(crate) fn read_closed(&mut self) {
        self.failure = Some(Error::TransportLost {
            kind: None,
            reason: "the peer closed the transport without a close frame".into(),
        });
        self.engine.handle_read_closed();
    }

    /// The typed error for the engine's `TransportError` event `e`, kept for
    /// [`Connection::transport_error`]: what the connection actor recorded when it reported the failure,
    /// else [`Error::from_transport`].
    pub(crate) fn take_transport_error(&mut self, e: &AmqpError) -> Error {
        let failure = self.failure.take();
        let reported = matches!(
            &e.condition,
            nucleon_protocol::frame::ErrorCondition::Custom(s)
                if s.as_str() == crate::error::TRANSPORT_CONDITION
        ) || e.condition == nucleon_protocol::frame::ErrorCondition::FramingError;
        let typed = match failure {
            Some(f) if reported => f,
            _ => Error::from_transport(e),
        };
        self.transport_error = Some(typed.clone());
        typed
    }

    /// Attaches every link of the previous transport again, with the same terms, on a new session. The
    /// application's ids keep working: they are mapped to the new links.
    pub(crate) fn reattach(&mut self) {
        if !self.reconnected {
            return;
        }
        let mut old: Vec<_> = std::mem::take(&mut self.links).into_values().collect();
        old.sort_by_key(|l| l.key);
        self.keys.clear();
        for state in old {
            let Some(config) = state.config.clone().filter(|_| !state.closing) else {
                continue;
            };
            let Ok(session) = self.session() else {
                return;
            };
            let Ok(link) = self.engine.attach(session, config) else {
                continue;
            };
            if state.credit_window > 0 {
                let _ = self.engine.add_credit(link, state.credit_window);
            }
            self.keys.insert(state.key, link);
            self.links.insert(link, state);
        }
    }

    /// The current link for a stable id of this connection.
    fn resolve(&self, conn: u64, key: u64) -> Result<LinkId, Error> {
        if conn != self.conn {
            return Err(Error::OtherConnection);
        }
        self.keys.get(&key).copied().ok_or(Error::LinkClosed)
    }

    fn link_name(&mut self, kind: &str) -> String {
        self.next_name += 1;
        format!(
            "{}-{kind}-{}",
            self.engine.config().container_id,
            self.next_name
        )
    }

    fn session(&mut self) -> Result<SessionId, Error> {
        if let Some(s) = self.default_session {
            if self.engine.is_session_open(s) {
                return Ok(s);
            }
        }
        let s = self.engine.begin()?;
        self.default_session = Some(s);
        Ok(s)
    }

    pub(crate) fn open_sender(
        &mut self,
        address: Option<&str>,
        opts: SenderOptions,
    ) -> Result<LinkId, Error> {
        let session = self.session()?;
        let name = opts
            .name
            .clone()
            .unwrap_or_else(|| self.link_name("sender"));
        let target = match opts.target.clone() {
            None => Target {
                address: address.map(str::to_owned),
                ..Target::default()
            },
            Some(mut target) => {
                // A target without an address and an empty address given: the anonymous relay.
                if target.address.is_none() && target.other_address.is_none() {
                    target.address = address.filter(|a| !a.is_empty()).map(str::to_owned);
                }
                target
            }
        };
        let config = LinkConfig {
            name,
            role: Role::Sender,
            source: Some(opts.source.clone().unwrap_or_default()),
            target: Some(target.clone()),
            snd_settle_mode: opts
                .sender_settle_mode
                .unwrap_or_else(|| settle_mode(opts.delivery_mode)),
            rcv_settle_mode: opts
                .receiver_settle_mode
                .unwrap_or(ReceiverSettleMode::First),
            max_message_size: opts.max_message_size,
            offered_capabilities: opts.offered_capabilities,
            desired_capabilities: opts.desired_capabilities,
            properties: opts.properties,
        };
        let link = self.engine.attach(session, config.clone())?;
        self.add_link(
            link,
            LinkState {
                key: 0,
                auto_settle: opts.auto_settle.unwrap_or(true),
                auto_accept: true,
                credit_window: 0,
                address: target.address,
                closing: false,
                config: Some(config),
            },
        );
        Ok(link)
    }

    pub(crate) fn open_receiver(
        &mut self,
        address: Option<&str>,
        opts: ReceiverOptions,
    ) -> Result<LinkId, Error> {
        let session = self.session()?;
        let name = opts
            .name
            .clone()
            .unwrap_or_else(|| self.link_name("receiver"));
        let source = match opts.source.clone() {
            None => Source {
                address: address.filter(|_| !opts.dynamic).map(str::to_owned),
                dynamic: opts.dynamic,
                ..Source::default()
            },
            Some(mut source) => {
                source.dynamic |= opts.dynamic;
                if !source.dynamic && source.address.is_none() && source.other_address.is_none() {
                    source.address = address.filter(|a| !a.is_empty()).map(str::to_owned);
                }
                source
            }
        };
        let config = LinkConfig {
            name,
            role: Role::Receiver,
            source: Some(source.clone()),
            target: Some(opts.target.clone().unwrap_or_default()),
            snd_settle_mode: opts
                .sender_settle_mode
                .unwrap_or_else(|| settle_mode(opts.delivery_mode)),
            rcv_settle_mode: opts
                .receiver_settle_mode
                .unwrap_or(ReceiverSettleMode::First),
            max_message_size: opts.max_message_size,
            offered_capabilities: opts.offered_capabilities,
            desired_capabilities: opts.desired_capabilities,
            properties: opts.properties,
        };
        let link = self.engine.attach(session, config.clone())?;
        let window = opts.credit_window.unwrap_or(10);
        self.add_link(
            link,
            LinkState {
                key: 0,
                auto_settle: true,
                auto_accept: opts.auto_accept.unwrap_or(true),
                credit_window: window,
                address: source.address,
                closing: false,
                config: Some(config),
            },
        );
        if window > 0 {
            self.engine.add_credit(link, window)?;
        }
        Ok(link)
    }

    /// Keeps a receiver's credit near its window: top up once half of it is used.
    pub(crate) fn refill_credit(&mut self, link: LinkId) {
        let Some(window) = self.links.get(&link).map(|l| l.credit_window) else {
            return;
        };
        if window == 0 {
            return;
        }
        if let Ok(credit) = self.engine.credit(link) {
            if credit <= window / 2 {
                let _ = self.engine.add_credit(link, window - credit);
            }
        }
    }

    pub(crate) fn send(&mut self, link: LinkId, payload: Bytes) -> Result<DeliveryId, Error> {
        let tag = self.next_tag();
        Ok(self.engine.send(link, tag, payload, false)?)
    }

    /// The next delivery tag: the connection's count of tags, 8 bytes big-endian.
    pub(crate) fn next_tag(&mut self) -> Bytes {
        self.next_tag += 1;
        if self.tags.capacity() < 8 {
            self.tags = BytesMut::with_capacity(8 * TAG_BLOCK);
        }
        self.tags.put_u64(self.next_tag);
        self.tags.split().freeze()
    }

    fn close_link(
        &mut self,
        link: LinkId,
        closed: bool,
        error: Option<AmqpError>,
    ) -> Result<(), Error> {
        if let Some(l) = self.links.get_mut(&link) {
            l.closing = true;
        }
        Ok(self.engine.detach(link, closed, error)?)
    }
}

/// The sender settle mode a delivery mode asks for.
fn settle_mode(mode: DeliveryMode) -> SenderSettleMode {
    match mode {
        DeliveryMode::AtMostOnce => SenderSettleMode::Settled,
        DeliveryMode::AtLeastOnce => SenderSettleMode::Unsettled,
    }
}

/// Marks a view `!Send` (and `!Sync`): it borrows connection state that belongs to one thread.
type NotSend = PhantomData<*const ()>;

/// The connection, inside one of its callbacks or work items.
pub struct Connection<'a> {
    pub(crate) core: &'a mut Core,
    _not_send: NotSend,
}

impl<'a> Connection<'a> {
    pub(crate) fn new(core: &'a mut Core) -> Self {
        Connection {
            core,
            _not_send: PhantomData,
        }
    }

    /// Our container id on this connection.
    pub fn container_id(&self) -> &str {
        &self.core.engine.config().container_id
    }

    /// The peer's container id, once its `open` has arrived.
    pub fn remote_container_id(&self) -> Option<&str> {
        self.core
            .engine
            .remote_open()
            .map(|o| o.container_id.as_str())
    }

    /// The peer's connection properties.
    pub fn remote_properties(&self) -> Option<&Map> {
        self.core
            .engine
            .remote_open()
            .and_then(|o| o.properties.as_ref())
    }

    /// The capabilities the peer offered in its `open` (for example `ANONYMOUS-RELAY` from a broker that
    /// routes messages sent on a link with no target address by their `to`). Empty before the peer's
    /// `open` arrives, or when it offered none.
    pub fn remote_offered_capabilities(&self) -> &[Symbol] {
        self.core
            .engine
            .remote_open()
            .and_then(|o| o.offered_capabilities.as_deref())
            .unwrap_or(&[])
    }

    /// True when this transport is not the connection's first attempt: a reconnect after a lost transport,
    /// or a failover after failed first attempts.
    pub fn reconnected(&self) -> bool {
        self.core.reconnected
    }

    /// On a server: the user the client authenticated as with SASL (`anonymous` for ANONYMOUS, the
    /// certificate's subject for EXTERNAL), once it has; `None` before, on a client, and when the client
    /// skipped SASL.
    pub fn user(&self) -> Option<&str> {
        self.core.user.as_deref()
    }

    /// Why this connection's transport failed, typed, from the moment `on_transport_error` is called until
    /// a reconnect starts another transport: [`Error::Io`] (with its [`std::io::ErrorKind`]) when the
    /// connect failed, [`Error::TransportLost`] when an established transport did, [`Error::Amqp`] when the
    /// connection failed on a protocol error, a refused login or the open timeout. `None` before.
    pub fn transport_error(&self) -> Option<&Error> {
        self.core.transport_error.as_ref()
    }

    /// Wakes this connection from any thread (`on_connection_wake` follows), as its handle's `wake` does.
    pub fn waker(&self) -> ConnectionWaker {
        self.core.waker.clone()
    }

    /// On a server: the subject (common name, else the whole subject) of the client's TLS certificate,
    /// when it presented one that the listener verified.
    pub fn peer_certificate_subject(&self) -> Option<&str> {
        self.core.peer_subject.as_deref()
    }

    /// The container, for cross-connection work (`connect`, `schedule`, ...).
    pub fn container(&self) -> &ContainerHandle {
        &self.core.container
    }

    /// Opens a sender to `address` on the connection's default session.
    pub fn open_sender(&mut self, address: &str, opts: SenderOptions) -> Result<Sender<'_>, Error> {
        let link = self.core.open_sender(Some(address), opts)?;
        Ok(Sender::new(self.core, link))
    }

    /// Opens a receiver from `address` on the connection's default session.
    pub fn open_receiver(
        &mut self,
        address: &str,
        opts: ReceiverOptions,
    ) -> Result<Receiver<'_>, Error> {
        let link = self.core.open_receiver(Some(address), opts)?;
        Ok(Receiver::new(self.core, link))
    }

    /// A sender of this connection by id, if it is still attached (see [`try_sender`](Self::try_sender)).
    pub fn sender(&mut self, id: SenderId) -> Option<Sender<'_>> {
        self.try_sender(id).ok()
    }

    /// A sender of this connection by id: [`Error::LinkClosed`] once it is gone,
    /// [`Error::OtherConnection`] for an id of another connection.
    pub fn try_sender(&mut self, id: SenderId) -> Result<Sender<'_>, Error> {
        let link = self.core.resolve(id.conn, id.key)?;
        Ok(Sender::new(self.core, link))
    }

    /// A receiver of this connection by id: [`Error::LinkClosed`] once it is gone,
    /// [`Error::OtherConnection`] for an id of another connection.
    pub fn try_receiver(&mut self, id: ReceiverId) -> Result<Receiver<'_>, Error> {
        let link = self.core.resolve(id.conn, id.key)?;
        Ok(Receiver::new(self.core, link))
    }

    /// A receiver of this connection by id, if it is still attached (see
    /// [`try_receiver`](Self::try_receiver)).
    pub fn receiver(&mut self, id: ReceiverId) -> Option<Receiver<'_>> {
        self.try_receiver(id).ok()
    }

    /// Closes the connection.
    pub fn close(&mut self) {
        self.close_with(None);
    }

    /// Closes the connection with an error condition.
    pub fn close_with(&mut self, error: Option<AmqpError>) {
        self.core.closing = true;
        let _ = self.core.engine.close(error);
    }
}

/// A session, inside a callback.
pub struct Session<'a> {
    pub(crate) core: &'a mut Core,
    pub(crate) id: SessionId,
    _not_send: NotSend,
}

impl<'a> Session<'a> {
    pub(crate) fn new(core: &'a mut Core, id: SessionId) -> Self {
        Session {
            core,
            id,
            _not_send: PhantomData,
        }
    }

    /// The connection the session belongs to.
    pub fn connection(&mut self) -> Connection<'_> {
        Connection::new(self.core)
    }

    /// Ends the session.
    pub fn close(&mut self) {
        let _ = self.core.engine.end(self.id, None);
    }
}

/// A sending link, inside a callback.
pub struct Sender<'a> {
    pub(crate) core: &'a mut Core,
    pub(crate) link: LinkId,
    _not_send: NotSend,
}

impl<'a> Sender<'a> {
    pub(crate) fn new(core: &'a mut Core, link: LinkId) -> Self {
        Sender {
            core,
            link,
            _not_send: PhantomData,
        }
    }

    /// This sender's id, to find it again from a work item.
    pub fn id(&self) -> SenderId {
        SenderId {
            conn: self.core.conn,
            key: self.core.key_of(self.link),
        }
    }

    /// The target address.
    pub fn address(&self) -> Option<&str> {
        self.core
            .links
            .get(&self.link)
            .and_then(|l| l.address.as_deref())
    }

    /// Credit available: how many messages may be sent now.
    pub fn credit(&self) -> u32 {
        self.core.engine.credit(self.link).unwrap_or(0)
    }

    /// Sends a message; fails without credit. The outcome arrives as `on_tracker_*`.
    pub fn send(&mut self, message: &Message) -> Result<DeliveryRef, Error> {
        let id = self.core.send(self.link, message.to_bytes())?;
        Ok(self.core.delivery_ref(id))
    }

    /// Sends a message kept as its encoded bytes ([`RawMessage`]), as they are; as [`send`](Self::send)
    /// otherwise.
    pub fn send_raw(&mut self, message: &RawMessage) -> Result<DeliveryRef, Error> {
        let tag = self.core.next_tag();
        // From the message's bytes, which this keeps no reference to when the transfer goes out at once.
        let id = self
            .core
            .engine
            .send_slice(self.link, tag, message.bytes(), false)?;
        Ok(self.core.delivery_ref(id))
    }

    /// The connection the sender belongs to.
    pub fn connection(&mut self) -> Connection<'_> {
        Connection::new(self.core)
    }

    /// Closes the link.
    pub fn close(&mut self) {
        let _ = self.core.close_link(self.link, true, None);
    }

    /// Detaches the link without closing it.
    pub fn detach(&mut self) {
        let _ = self.core.close_link(self.link, false, None);
    }
}

/// A receiving link, inside a callback.
pub struct Receiver<'a> {
    pub(crate) core: &'a mut Core,
    pub(crate) link: LinkId,
    _not_send: NotSend,
}

impl<'a> Receiver<'a> {
    pub(crate) fn new(core: &'a mut Core, link: LinkId) -> Self {
        Receiver {
            core,
            link,
            _not_send: PhantomData,
        }
    }

    /// This receiver's id, to find it again from a work item.
    pub fn id(&self) -> ReceiverId {
        ReceiverId {
            conn: self.core.conn,
            key: self.core.key_of(self.link),
        }
    }

    /// The source address (for a dynamic source, the address the peer assigned).
    pub fn address(&self) -> Option<String> {
        let remote = self
            .core
            .engine
            .remote_attach(self.link)
            .ok()
            .flatten()
            .and_then(|a| a.source.as_ref())
            .and_then(|s| s.address.clone());
        remote.or_else(|| {
            self.core
                .links
                .get(&self.link)
                .and_then(|l| l.address.clone())
        })
    }

    /// Credit currently granted to the sender.
    pub fn credit(&self) -> u32 {
        self.core.engine.credit(self.link).unwrap_or(0)
    }

    /// Grants `n` more messages to the sender (for receivers with credit window 0).
    pub fn add_credit(&mut self, n: u32) -> Result<(), Error> {
        Ok(self.core.engine.add_credit(self.link, n)?)
    }

    /// Changes the credit window kept open to the sender (refilled as messages are consumed), and tops the
    /// credit up to it now. 0 hands credit over to the application ([`add_credit`](Self::add_credit)).
    pub fn set_credit_window(&mut self, window: u32) -> Result<(), Error> {
        if let Some(l) = self.core.links.get_mut(&self.link) {
            l.credit_window = window;
        }
        let credit = self.core.engine.credit(self.link)?;
        if window > credit {
            self.core.engine.add_credit(self.link, window - credit)?;
        }
        Ok(())
    }

    /// Lowers the credit granted to the sender to at most `max`, telling it. Messages it sent before it heard
    /// are still taken. With a credit window, the window refills it as messages are consumed: set the
    /// window first ([`set_credit_window`](Self::set_credit_window)) to keep it lower.
    pub fn limit_credit(&mut self, max: u32) -> Result<(), Error> {
        Ok(self.core.engine.limit_credit(self.link, max)?)
    }

    /// Asks the sender to use or give back its credit; `on_receiver_drain_finish` follows.
    pub fn drain(&mut self) -> Result<(), Error> {
        Ok(self.core.engine.drain(self.link)?)
    }

    /// The connection the receiver belongs to.
    pub fn connection(&mut self) -> Connection<'_> {
        Connection::new(self.core)
    }

    /// Closes the link.
    pub fn close(&mut self) {
        let _ = self.core.close_link(self.link, true, None);
    }

    /// Detaches the link without closing it.
    pub fn detach(&mut self) {
        let _ = self.core.close_link(self.link, false, None);
    }
}

/// A received delivery, inside a callback.
pub struct Delivery<'a> {
    pub(crate) core: &'a mut Core,
    pub(crate) id: DeliveryId,
    /// Settled already: by the sender (pre-settled) or by us in this callback.
    pub(crate) settled: bool,
    _not_send: NotSend,
}

impl<'a> Delivery<'a> {
    pub(crate) fn new(core: &'a mut Core, id: DeliveryId, settled: bool) -> Self {
        Delivery {
            core,
            id,
            settled,
            _not_send: PhantomData,
        }
    }

    /// This delivery's id, to settle it later from a work item.
    pub fn id(&self) -> DeliveryRef {
        self.core.delivery_ref(self.id)
    }

    /// True once the delivery is settled (by the sender, or by us).
    pub fn settled(&self) -> bool {
        self.settled
    }

    fn settle_with(&mut self, state: DeliveryState) {
        if !self.settled {
            self.settled = true;
            let _ = self.core.engine.disposition(self.id, Some(state), true);
        }
    }

    /// Accepts and settles the message.
    pub fn accept(&mut self) {
        self.settle_with(DeliveryState::Accepted(Accepted {}));
    }

    /// Rejects and settles the message.
    pub fn reject(&mut self, error: Option<AmqpError>) {
        self.settle_with(DeliveryState::Rejected(Rejected { error }));
    }

    /// Releases and settles the message (it may be redelivered).
    pub fn release(&mut self) {
        self.settle_with(DeliveryState::Released(Released {}));
    }

    /// Modifies and settles the message [AMQP 1.0 §3.4.5].
    pub fn modify(&mut self, delivery_failed: bool, undeliverable_here: bool) {
        self.settle_with(DeliveryState::Modified(Modified {
            delivery_failed,
            undeliverable_here,
            message_annotations: None,
        }));
    }

    /// Leaves the delivery unsettled past the callback (no auto-accept); settle it later through
    /// [`Connection::settle`] from a work item.
    pub fn defer(&mut self) {
        self.settled = true;
    }

    /// The receiver the delivery arrived on.
    pub fn receiver(&mut self) -> Receiver<'_> {
        Receiver::new(self.core, self.id.link)
    }
}

impl Connection<'_> {
    /// Settles a deferred delivery with an outcome. A ref from before a reconnect is refused with
    /// [`Error::StaleDelivery`] (its delivery went with the old transport), a ref of another connection with
    /// [`Error::OtherConnection`].
    pub fn settle(&mut self, delivery: DeliveryRef, state: DeliveryState) -> Result<(), Error> {
        let id = self.core.delivery(delivery)?;
        Ok(self.core.engine.disposition(id, Some(state), true)?)
    }
}

/// A delivery we sent, inside an `on_tracker_*` callback.
pub struct Tracker<'a> {
    pub(crate) core: &'a mut Core,
    pub(crate) id: DeliveryId,
    pub(crate) state: Option<DeliveryState>,
    _not_send: NotSend,
}

impl<'a> Tracker<'a> {
    pub(crate) fn new(core: &'a mut Core, id: DeliveryId, state: Option<DeliveryState>) -> Self {
        Tracker {
            core,
            id,
            state,
            _not_send: PhantomData,
        }
    }

    /// The tracker's id (as returned by `Sender::send`).
    pub fn id(&self) -> DeliveryRef {
        self.core.delivery_ref(self.id)
    }

    /// The peer's delivery state.
    pub fn state(&self) -> Option<&DeliveryState> {
        self.state.as_ref()
    }

    /// Settles the delivery (when the sender's `auto_settle` is off).
    pub fn settle(&mut self) {
        let _ = self.core.engine.settle(self.id);
    }

    /// The sender the delivery was sent on.
    pub fn sender(&mut self) -> Sender<'_> {
        Sender::new(self.core, self.id.link)
    }
}
