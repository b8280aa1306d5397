//! The `application-properties` message section [AMQP 1.0 §3.2.5].

use crate::codec::Map;

described_newtype! {
    /// Structured application data, keyed by string [AMQP 1.0 §3.2.5].
    pub struct ApplicationProperties("amqp:application-properties:map", 0x74, Map);
}
