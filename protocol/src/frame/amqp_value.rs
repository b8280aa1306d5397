//! The `amqp-value` body section [AMQP 1.0 §3.2.8].

use crate::codec::Value;

described_newtype! {
    /// A single structured value [AMQP 1.0 §3.2.8].
    pub struct AmqpValue("amqp:amqp-value:*", 0x77, Value);
}
