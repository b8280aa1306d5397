//! The `message-annotations` message section [AMQP 1.0 §3.2.3].

use crate::codec::Map;

described_newtype! {
    /// Message-specific non-standard properties for the infrastructure [AMQP 1.0 §3.2.3].
    pub struct MessageAnnotations("amqp:message-annotations:map", 0x72, Map);
}
