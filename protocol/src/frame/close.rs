//! The `close` performative [AMQP 1.0 §2.7.9].

use super::Error;

composite! {
    /// Closes a connection [AMQP 1.0 §2.7.9].
    pub struct Close("amqp:close:list", 0x18) {
        /// Why the connection closed.
        optional error: Error,
    }
}
