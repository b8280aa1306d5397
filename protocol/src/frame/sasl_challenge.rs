//! The `sasl-challenge` frame [AMQP 1.0 §5.3.3.3].

use bytes::Bytes;

composite! {
    /// A security challenge from the server [AMQP 1.0 §5.3.3.3].
    pub struct SaslChallenge("amqp:sasl-challenge:list", 0x42) {
        /// Challenge information.
        required challenge: Bytes,
    }
}
