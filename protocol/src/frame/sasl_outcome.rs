//! The `sasl-outcome` frame [AMQP 1.0 §5.3.3.5].

use bytes::Bytes;

use super::SaslCode;

composite! {
    /// The result of the SASL exchange [AMQP 1.0 §5.3.3.5].
    pub struct SaslOutcome("amqp:sasl-outcome:list", 0x44) {
        /// The outcome of the exchange.
        required code: SaslCode,
        /// Additional data for a successful outcome.
        optional additional_data: Bytes,
    }
}
