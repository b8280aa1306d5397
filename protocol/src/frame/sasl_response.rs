//! The `sasl-response` frame [AMQP 1.0 §5.3.3.4].

use bytes::Bytes;

composite! {
    /// The client's response to a challenge [AMQP 1.0 §5.3.3.4].
    pub struct SaslResponse("amqp:sasl-response:list", 0x43) {
        /// Response information.
        required response: Bytes,
    }
}
