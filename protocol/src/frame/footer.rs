//! The `footer` message section [AMQP 1.0 §3.2.9].

use crate::codec::Map;

described_newtype! {
    /// Transport footers: details about the message or delivery computed at the end, such as hashes
    /// [AMQP 1.0 §3.2.9].
    pub struct Footer("amqp:footer:map", 0x78, Map);
}
