//! The `end` performative [AMQP 1.0 §2.7.8].

use super::Error;

composite! {
    /// Ends a session [AMQP 1.0 §2.7.8].
    pub struct End("amqp:end:list", 0x17) {
        /// Why the session ended.
        optional error: Error,
    }
}
