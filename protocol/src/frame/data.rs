//! The `data` body section [AMQP 1.0 §3.2.6].

use bytes::Bytes;

described_newtype! {
    /// Opaque binary application data [AMQP 1.0 §3.2.6].
    pub struct Data("amqp:data:binary", 0x75, Bytes);
}
