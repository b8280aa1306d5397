//! What the engine tells its user: [`Event`] and the handles it refers to.

use bytes::Bytes;

use super::store::Key;
use crate::codec::Symbol;
use crate::frame::{DeliveryState, Error, Open};

/// A session of this connection. Small and `Copy`; stale handles are detected, never confused with new ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub(crate) Key);

/// A link of this connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub(crate) Key);

/// A delivery on a link: the link plus the session's delivery-id [AMQP 1.0 §2.6.12].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId {
    /// The link the delivery travels on.
    pub link: LinkId,
    /// The delivery-id the sending session assigned.
    pub id: u32,
}

/// Something that happened, to be drained with `Connection::poll_event`.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// The peer sent a TLS protocol header [AMQP 1.0 §5.2.1]. The runtime must run a TLS handshake and feed the
    /// decrypted bytes back; the engine then expects the next protocol header. Without TLS, close the transport.
    TlsRequested,
    /// SASL finished successfully. On a server, `user` is who the authenticator accepted.
    Authenticated {
        /// The mechanism used.
        mechanism: Symbol,
        /// The authenticated user (server side); `None` on a client.
        user: Option<String>,
    },
    /// Server: the client skipped SASL and sent the AMQP header at once [AMQP 1.0 §5.3.1]. The server's
    /// `allow_skip` let it in as `user`: who its authenticator accepts ANONYMOUS as.
    SaslSkipped {
        /// The user the client acts as.
        user: String,
    },
    /// Server: the client's login was refused. `TransportError` follows: `amqp:unauthorized-access`, or
    /// `amqp:not-allowed` for a client that skipped SASL where that is not allowed.
    AuthenticationFailed {
        /// The mechanism the client chose; `None` if it skipped SASL.
        mechanism: Option<Symbol>,
        /// The user the client named, if the mechanism names one (PLAIN, SCRAM, EXTERNAL).
        user: Option<String>,
    },
    /// The peer's `open` arrived. A server replies with `Connection::open` if it has not opened yet.
    ConnectionRemoteOpen(Box<Open>),
    /// The peer closed the connection.
    ConnectionRemoteClose(Option<Error>),
    /// The peer began a session. If we did not begin it, reply with `Connection::begin_reply` or end it.
    SessionRemoteBegin(SessionId),
    /// The peer ended a session.
    SessionRemoteEnd {
        /// The session.
        session: SessionId,
        /// Why.
        error: Option<Error>,
    },
    /// Both ends of the session have ended; its handle is no longer valid.
    SessionClosed(SessionId),
    /// The peer attached a link: either its answer to our `attach`, or a new link. For a new one
    /// (`Connection::is_attached_locally` is false), reply with `Connection::attach_reply` or detach it.
    LinkRemoteAttach(LinkId),
    /// The peer detached (or closed) a link.
    LinkRemoteDetach {
        /// The link.
        link: LinkId,
        /// True if the peer closed the link rather than merely detaching it.
        closed: bool,
        /// Why.
        error: Option<Error>,
    },
    /// Both ends of the link have detached; its handle is no longer valid.
    LinkClosed(LinkId),
    /// A sender's credit changed; `credit > 0` means it may send.
    LinkCredit {
        /// The sending link.
        link: LinkId,
        /// Credit now available.
        credit: u32,
    },
    /// The receiving peer asked us (the sender) to drain: use up or give back all credit. Answer with
    /// `Connection::drained` once there is nothing more to send.
    DrainRequested(LinkId),
    /// Our drain request (as receiver) has completed: the sender used or returned all credit.
    DrainCompleted(LinkId),
    /// A complete message arrived on a receiving link (all frames reassembled).
    Delivery {
        /// The delivery.
        delivery: DeliveryId,
        /// The delivery-tag.
        tag: Bytes,
        /// The message bytes (the transfer payload).
        payload: Bytes,
        /// The message format [AMQP 1.0 §2.8.11].
        message_format: u32,
        /// True if the sender settled it (at-most-once); nothing more to do.
        settled: bool,
    },
    /// The sender aborted a delivery partway; its frames were discarded.
    DeliveryAborted(DeliveryId),
    /// The peer updated the state of one of our deliveries (or settled it).
    RemoteDisposition {
        /// The delivery.
        delivery: DeliveryId,
        /// The new state, if it sent one.
        state: Option<DeliveryState>,
        /// True if the peer settled it.
        settled: bool,
    },
    /// The transport failed: a protocol error (ours or the peer's), a lost socket, an idle timeout.
    TransportError(Error),
    /// The transport is done. Always the last event, exactly once.
    TransportClosed,
}
