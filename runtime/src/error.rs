//! [`Error`]: what the runtime reports to applications.
//!
//! Errors keep what their cause said: an IO failure its [`io::ErrorKind`], a peer's refusal or close its AMQP
//! error (condition, description, info). The variants say where a failure came from, so a caller can decide
//! what to do without reading strings:
//!
//! | variant | cause | what a caller usually does |
//! |---|---|---|
//! | [`Error::Io`] | the transport could not be made (connect, TLS, WebSocket handshake), or a bind failed | retry later, or report the address |
//! | [`Error::TransportLost`] | an established transport failed (reset, the peer closed the socket without `close`, no answer to `close`) | make a new connection (or let reconnect do it) |
//! | [`Error::LinkRefused`] | the peer refused a link we attached (null terminus, then `detach`) [AMQP 1.0 §2.6.3] | report the condition (e.g. `amqp:unauthorized-access`, `amqp:not-found`) |
//! | [`Error::Amqp`] | the peer (or our engine) ended an endpoint that was open, with this error | depends on the condition |
//! | [`Error::Timeout`] | an operation given a deadline did not finish in time | retry, or give up |
//! | [`Error::NotAccepted`] | a message was rejected, released or modified ([`Outcome::into_result`](crate::Outcome::into_result)) | depends on the outcome |
//!
//! Over the wire nothing changes: a lost transport never sends anything. Handlers still see a lost
//! transport in `on_transport_error` as the engine's `nucleon:io` condition (Proton's `proton:io`), which
//! [`Error::from_transport`] turns into a typed error; the async facade reports the typed error.

use std::fmt;
use std::io;
use std::time::Duration;

use nucleon_protocol::engine::EngineError;
use nucleon_protocol::frame::{Error as AmqpError, ErrorCondition};

/// The condition the engine reports a failed transport with (`Event::TransportError`), as Proton reports
/// `proton:io`. Never sent to a peer.
pub(crate) const TRANSPORT_CONDITION: &str = "nucleon:io";

/// Errors from the container, connections and the async facade.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The container is stopping (or stopped) and takes no new work.
    #[error("the container is stopping")]
    ContainerStopping,
    /// The connection is finished (its transport closed for good); work can no longer run on it.
    #[error("the connection is closed")]
    ConnectionClosed,
    /// A URL that could not be parsed or used.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it was refused.
        reason: String,
    },
    /// A TLS configuration that could not be used (an unreadable certificate or key, no trusted root).
    #[error("TLS: {0}")]
    Tls(String),
    /// An IO failure that kept the transport from being made: a connect (e.g.
    /// [`io::ErrorKind::ConnectionRefused`] for a closed port), the TLS or WebSocket handshake, a bind.
    #[error("IO error ({kind}): {message}")]
    Io {
        /// The kind of the underlying [`io::Error`] ([`io::ErrorKind::Other`] when the failure was not
        /// an OS error, e.g. a peer that does not speak TLS).
        kind: io::ErrorKind,
        /// What failed, with the OS's message.
        message: String,
    },
    /// An established transport failed: the socket was reset or closed without an AMQP `close`, a read or
    /// write failed, or the peer did not answer our `close` in time. Whatever was in flight on it has no
    /// known outcome. With `ConnectionOptions::reconnect` the runtime connects again.
    #[error("transport lost: {reason}")]
    TransportLost {
        /// The kind of the IO error that ended it, when there was one (none for a peer that closed the
        /// socket cleanly but without `close`, or a timeout).
        kind: Option<io::ErrorKind>,
        /// What happened.
        reason: String,
    },
    /// The peer refused a link we asked for: it answered our `attach` with a null terminus and detached it
    /// [AMQP 1.0 §2.6.3], or ended the session before the link was attached (as RabbitMQ does), with this
    /// error if it gave one (e.g. `amqp:unauthorized-access`, `amqp:not-found`).
    #[error("the peer refused the link{}", refusal(.error))]
    LinkRefused {
        /// The peer's error, if it gave one.
        error: Option<AmqpError>,
    },
    /// An operation did not finish within the time it was given.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        what: Timeout,
        /// The deadline it was given.
        after: Duration,
    },
    /// The peer did not accept a message: it rejected, released or modified it
    /// ([`Outcome::into_result`](crate::Outcome::into_result)).
    #[error("the message was not accepted: {0}")]
    NotAccepted(crate::Outcome),
    /// An engine call was refused (a stale handle, no credit, ...).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The peer (or our engine) ended an endpoint with this AMQP error.
    #[error("{0}")]
    Amqp(AmqpError),
    /// The link or connection closed before the operation completed.
    #[error("the link closed before the operation completed")]
    LinkClosed,
    /// The connection's bounded work queue is full ([`WorkQueue::try_add`](crate::WorkQueue::try_add)).
    #[error("the work queue is full")]
    WorkQueueFull,
    /// An id or delivery ref of another connection was used on this one: it names nothing here.
    #[error("the id belongs to another connection")]
    OtherConnection,
    /// A delivery ref from an earlier transport of this connection (before a reconnect): the delivery it
    /// named is gone with that transport, and the ref never settles a delivery of the new one.
    #[error("the delivery belongs to an earlier transport of this connection")]
    StaleDelivery,
}

fn refusal(error: &Option<AmqpError>) -> String {
    error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
}

/// What an [`Error::Timeout`] was waiting for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Timeout {
    /// Making the transport and opening the connection ([`ConnectionOptions::connect_timeout`](crate::ConnectionOptions::connect_timeout)).
    Connect,
    /// The peer's `attach` answering ours (`SenderOptions::open_timeout`, `ReceiverOptions::open_timeout`).
    Attach,
    /// A sent message's outcome ([`SenderOptions::send_timeout`](crate::SenderOptions::send_timeout)).
    Send,
    /// Something else, named.
    Other(&'static str),
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Timeout::Connect => f.write_str("connecting"),
            Timeout::Attach => f.write_str("attaching the link"),
            Timeout::Send => f.write_str("waiting for the outcome"),
            Timeout::Other(what) => f.write_str(what),
        }
    }
}

impl Error {
    /// The AMQP condition, for errors that carry one: [`Error::Amqp`], and [`Error::LinkRefused`] and
    /// [`Error::NotAccepted`] (a rejection) when the peer gave an error.
    pub fn condition(&self) -> Option<&ErrorCondition> {
        self.amqp_error().map(|e| &e.condition)
    }

    /// The peer's (or our engine's) whole AMQP error, description and info included, for errors that carry
    /// one (as [`condition`](Self::condition)).
    pub fn amqp_error(&self) -> Option<&AmqpError> {
        match self {
            Error::Amqp(e) | Error::LinkRefused { error: Some(e) } => Some(e),
            Error::NotAccepted(outcome) => outcome.error(),
            _ => None,
        }
    }

    /// The [`io::ErrorKind`] of an IO failure: [`Error::Io`], and [`Error::TransportLost`] when an IO error
    /// ended the transport.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        match self {
            Error::Io { kind, .. } => Some(*kind),
            Error::TransportLost { kind, .. } => *kind,
            _ => None,
        }
    }

    /// True for [`Error::TransportLost`]: the connection's transport failed (not the peer's decision), so
    /// what was in flight has no known outcome and a new connection may succeed.
    pub fn is_transport_lost(&self) -> bool {
        matches!(self, Error::TransportLost { .. })
    }

    /// True for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout { .. })
    }

    /// True for [`Error::LinkRefused`].
    pub fn is_link_refused(&self) -> bool {
        matches!(self, Error::LinkRefused { .. })
    }

    /// The typed error for what a handler's `on_transport_error` receives: the engine's `nucleon:io`
    /// condition (a failed transport) becomes [`Error::TransportLost`], any other error (the connection
    /// failed on a protocol error, a refused login, an open timeout) stays [`Error::Amqp`]. Inside the
    /// callback, `Connection::transport_error` also knows the IO kind.
    pub fn from_transport(error: &AmqpError) -> Error {
        match &error.condition {
            ErrorCondition::Custom(s) if s.as_str() == TRANSPORT_CONDITION => {
                Error::TransportLost {
                    kind: None,
                    reason: error.description.clone().unwrap_or_default(),
                }
            }
            _ => Error::Amqp(error.clone()),
        }
    }

    /// The error a link that ended while it was still being attached reports: the peer refused it.
    pub(crate) fn into_refusal(self) -> Error {
        match self {
            Error::Amqp(e) => Error::LinkRefused { error: Some(e) },
            Error::LinkClosed => Error::LinkRefused { error: None },
            other => other,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Self {
        Error::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}

impl From<AmqpError> for Error {
    fn from(e: AmqpError) -> Self {
        Error::Amqp(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nucleon_protocol::codec::Symbol;

    #[test]
    fn io_errors_keep_their_kind() {
        let e = Error::from(io::Error::new(io::ErrorKind::ConnectionRefused, "refused"));
        assert_eq!(e.io_kind(), Some(io::ErrorKind::ConnectionRefused));
        assert!(!e.is_transport_lost());
        assert!(e.to_string().contains("refused"), "{e}");
    }

    #[test]
    fn a_transport_failure_is_typed() {
        let lost = AmqpError::new(
            ErrorCondition::Custom(Symbol::from_static(TRANSPORT_CONDITION)),
            "connection reset",
        );
        let e = Error::from_transport(&lost);
        assert!(e.is_transport_lost(), "{e:?}");
        assert_eq!(e.condition(), None);
        let refused = AmqpError::new(ErrorCondition::UnauthorizedAccess, "no");
        assert_eq!(
            Error::from_transport(&refused).condition(),
            Some(&ErrorCondition::UnauthorizedAccess)
        );
    }

    #[test]
    fn a_refusal_keeps_the_peers_error() {
        let e = Error::Amqp(AmqpError::new(ErrorCondition::NotFound, "gone")).into_refusal();
        assert!(e.is_link_refused());
        assert_eq!(e.condition(), Some(&ErrorCondition::NotFound));
        assert_eq!(
            e.to_string(),
            "the peer refused the link: amqp:not-found: gone"
        );
        assert_eq!(
            Error::LinkClosed.into_refusal(),
            Error::LinkRefused { error: None }
        );
        assert_eq!(
            Error::ConnectionClosed.into_refusal(),
            Error::ConnectionClosed
        );
    }

    #[test]
    fn timeouts_say_what_timed_out() {
        let e = Error::Timeout {
            what: Timeout::Send,
            after: Duration::from_secs(3),
        };
        assert!(e.is_timeout());
        assert_eq!(e.to_string(), "waiting for the outcome timed out after 3s");
    }
}
