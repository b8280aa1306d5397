//! [`EngineError`]: API misuse, reported to the caller and never sent to the peer.

/// Why an engine call was refused. The engine's state is unchanged by a refused call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The session handle does not name a live session.
    #[error("unknown or closed session")]
    UnknownSession,
    /// The link handle does not name a live link.
    #[error("unknown or closed link")]
    UnknownLink,
    /// The delivery handle does not name an unsettled delivery.
    #[error("unknown or settled delivery")]
    UnknownDelivery,
    /// The operation needs a sending link.
    #[error("the link is not a sender")]
    NotASender,
    /// The operation needs a receiving link.
    #[error("the link is not a receiver")]
    NotAReceiver,
    /// The sender has no credit.
    #[error("the link has no credit")]
    NoCredit,
    /// The message is larger than the peer's max-message-size for the link.
    #[error("message of {size} bytes exceeds the link's max-message-size of {max}")]
    MessageTooLarge {
        /// The message size.
        size: u64,
        /// The link's limit.
        max: u64,
    },
    /// The endpoint is not in a state that allows the operation (e.g. sending on a detached link,
    /// beginning a session before `open`).
    #[error("not allowed in the current state: {0}")]
    IllegalState(&'static str),
    /// A delivery-tag longer than the spec's 32 bytes [AMQP 1.0 §2.8.7].
    #[error("a delivery-tag of {0} bytes is longer than 32")]
    TagTooLong(usize),
    /// No channel or handle number is left.
    #[error("no free {0} number")]
    Exhausted(&'static str),
}
