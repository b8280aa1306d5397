//! The `properties` message section [AMQP 1.0 §3.2.4].

use bytes::{BufMut, Bytes};

use crate::codec::{Decode, DecodeError, Decoder, Encode, Symbol, Timestamp, Uuid, Value};

composite! {
    /// Immutable properties of the bare message [AMQP 1.0 §3.2.4].
    pub struct Properties("amqp:properties:list", 0x73) {
        /// Application message identifier.
        optional message_id: MessageId,
        /// Creating user id.
        optional user_id: Bytes,
        /// The address of the node the message is destined for.
        optional to: String,
        /// The subject of the message.
        optional subject: String,
        /// The node to send replies to.
        optional reply_to: String,
        /// Application correlation identifier.
        optional correlation_id: MessageId,
        /// MIME content type.
        optional content_type: Symbol,
        /// MIME content encoding.
        optional content_encoding: Symbol,
        /// The time when this message is considered expired.
        optional absolute_expiry_time: Timestamp,
        /// The time when this message was created.
        optional creation_time: Timestamp,
        /// The group this message belongs to.
        optional group_id: String,
        /// The relative position of this message within its group.
        optional group_sequence: u32,
        /// The group the reply message belongs to.
        optional reply_to_group_id: String,
    }
}

/// A message-id or correlation-id: ulong, uuid, binary or string [AMQP 1.0 §3.2.11-§3.2.15].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum MessageId {
    Ulong(u64),
    Uuid(Uuid),
    Binary(Bytes),
    String(String),
}

impl MessageId {
    fn as_value(&self) -> Value {
        match self {
            MessageId::Ulong(v) => Value::Ulong(*v),
            MessageId::Uuid(v) => Value::Uuid(*v),
            MessageId::Binary(v) => Value::Binary(v.clone()),
            MessageId::String(v) => Value::String(v.clone()),
        }
    }
}

impl From<MessageId> for Value {
    fn from(id: MessageId) -> Self {
        id.as_value()
    }
}

impl From<u64> for MessageId {
    fn from(v: u64) -> Self {
        MessageId::Ulong(v)
    }
}

impl From<Uuid> for MessageId {
    fn from(v: Uuid) -> Self {
        MessageId::Uuid(v)
    }
}

impl From<Bytes> for MessageId {
    fn from(v: Bytes) -> Self {
        MessageId::Binary(v)
    }
}

impl From<String> for MessageId {
    fn from(v: String) -> Self {
        MessageId::String(v)
    }
}

impl From<&str> for MessageId {
    fn from(v: &str) -> Self {
        MessageId::String(v.to_owned())
    }
}

impl Encode for MessageId {
    fn encoded_size(&self) -> usize {
        match self {
            MessageId::Ulong(v) => v.encoded_size(),
            MessageId::Uuid(v) => v.encoded_size(),
            MessageId::Binary(v) => v.encoded_size(),
            MessageId::String(v) => v.encoded_size(),
        }
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        match self {
            MessageId::Ulong(v) => v.encode(buf),
            MessageId::Uuid(v) => v.encode(buf),
            MessageId::Binary(v) => v.encode(buf),
            MessageId::String(v) => v.encode(buf),
        }
    }
}

impl Decode for MessageId {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        match dec.value_body(code)? {
            Value::Ulong(v) => Ok(MessageId::Ulong(v)),
            Value::Uuid(v) => Ok(MessageId::Uuid(v)),
            Value::Binary(v) => Ok(MessageId::Binary(v)),
            Value::String(v) => Ok(MessageId::String(v)),
            _ => Err(dec.unexpected("message-id (ulong, uuid, binary or string)", code)),
        }
    }
}
