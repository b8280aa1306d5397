//! The `amqp-sequence` body section [AMQP 1.0 §3.2.7].

use crate::codec::Value;

described_newtype! {
    /// A sequence of structured values [AMQP 1.0 §3.2.7].
    pub struct AmqpSequence("amqp:amqp-sequence:list", 0x76, Vec<Value>);
}
