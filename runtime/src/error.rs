//! [`Error`]: what the runtime reports to applications.

use nucleon_protocol::engine::EngineError;
use nucleon_protocol::frame::{Error as AmqpError, ErrorCondition};

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
    /// An IO failure (connect, bind, read, write).
    #[error("IO error: {0}")]
    Io(String),
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

impl Error {
    /// The AMQP condition, for errors that carry one.
    pub fn condition(&self) -> Option<&ErrorCondition> {
        match self {
            Error::Amqp(e) => Some(&e.condition),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e.to_string())
    }
}

impl From<AmqpError> for Error {
    fn from(e: AmqpError) -> Self {
        Error::Amqp(e)
    }
}
