//! The `sasl-init` frame [AMQP 1.0 §5.3.3.2].

use bytes::Bytes;

use crate::codec::Symbol;

composite! {
    /// The client's choice of mechanism, with its initial response [AMQP 1.0 §5.3.3.2].
    pub struct SaslInit("amqp:sasl-init:list", 0x41) {
        /// The selected mechanism.
        required mechanism: Symbol,
        /// The initial response, as the mechanism defines it.
        optional initial_response: Bytes,
        /// The name of the target host.
        optional hostname: String,
    }
}
