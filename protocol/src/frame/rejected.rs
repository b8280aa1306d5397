//! The `rejected` outcome [AMQP 1.0 §3.4.3].

use super::Error;

composite! {
    /// The message is invalid and therefore unprocessable [AMQP 1.0 §3.4.3].
    pub struct Rejected("amqp:rejected:list", 0x25) {
        /// Why the message was rejected.
        optional error: Error,
    }
}
