//! The `detach` performative [AMQP 1.0 §2.7.7].

use super::Error;

composite! {
    /// Detaches a link endpoint from its session [AMQP 1.0 §2.7.7].
    pub struct Detach("amqp:detach:list", 0x16) {
        /// The link handle.
        required handle: u32,
        /// True if the link is closed, not merely detached.
        default closed: bool = false,
        /// Why the link was detached.
        optional error: Error,
    }
}
