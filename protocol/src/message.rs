//! [`Message`]: the AMQP 1.0 message format as a plain value [AMQP 1.0 §3.2].

mod raw;

pub use raw::RawMessage;

use bytes::{BufMut, Bytes};

use crate::codec::{
    codes, DecodeError, DecodeErrorKind, Decoder, Encode, Map, Symbol, Timestamp, Value,
};
use crate::frame::{
    AmqpSequence, AmqpValue, ApplicationProperties, Data, DeliveryAnnotations, Footer, Header,
    MessageAnnotations, MessageId, Properties,
};

/// The body of a message [AMQP 1.0 §3.2]: data sections, sequence sections, or a single value.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum Body {
    /// No body section. The spec requires one, but Proton sends such messages, so they are accepted.
    #[default]
    Empty,
    /// One or more `data` sections of opaque bytes.
    Data(Vec<Bytes>),
    /// One or more `amqp-sequence` sections.
    Sequence(Vec<Vec<Value>>),
    /// One `amqp-value` section.
    Value(Value),
}

/// An AMQP message: the bare message plus its annotations [AMQP 1.0 §3.2].
///
/// `Message` is `Send + Clone` and independent of any connection, so it can be handed between threads and
/// connections freely. A decoded message remembers the bytes it came from for as long as it is not modified, so
/// forwarding it (a broker, a relay) writes those bytes again instead of re-encoding; any `*_mut` accessor or
/// setter forgets them.
///
/// ```
/// use nucleon_protocol::Message;
/// let m = Message::builder().body("hi").subject("x").property("n", 5i32).build();
/// assert_eq!(m.subject(), Some("x"));
/// let back = Message::decode(m.to_bytes()).unwrap();
/// assert_eq!(back, m);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Message {
    header: Option<Header>,
    delivery_annotations: Option<Map>,
    message_annotations: Option<Map>,
    properties: Option<Properties>,
    application_properties: Option<Map>,
    body: Body,
    footer: Option<Map>,
    encoded: Option<Bytes>,
}

impl PartialEq for Message {
    /// Messages are equal when their sections are; where they came from does not matter.
    fn eq(&self, other: &Self) -> bool {
        self.header == other.header
            && self.delivery_annotations == other.delivery_annotations
            && self.message_annotations == other.message_annotations
            && self.properties == other.properties
            && self.application_properties == other.application_properties
            && self.body == other.body
            && self.footer == other.footer
    }
}

macro_rules! property_getters {
    ($($(#[$meta:meta])* $name:ident -> $t:ty, |$p:ident| $e:expr;)*) => {
        $($(#[$meta])*
        pub fn $name(&self) -> Option<$t> {
            self.properties.as_ref().and_then(|$p| $e)
        })*
    };
}

impl Message {
    /// An empty message (no sections).
    pub fn new() -> Self {
        Message::default()
    }

    /// A message with an `amqp-value` body.
    pub fn with_body(body: impl Into<Value>) -> Self {
        Message {
            body: Body::Value(body.into()),
            ..Message::default()
        }
    }

    /// A builder for a message.
    pub fn builder() -> MessageBuilder {
        MessageBuilder::default()
    }

    /// The header section.
    pub fn header(&self) -> Option<&Header> {
        self.header.as_ref()
    }

    /// The header section, created with the spec's defaults if absent.
    pub fn header_mut(&mut self) -> &mut Header {
        self.encoded = None;
        self.header.get_or_insert_with(Header::default)
    }

    /// The delivery-annotations section.
    pub fn delivery_annotations(&self) -> Option<&Map> {
        self.delivery_annotations.as_ref()
    }

    /// The delivery-annotations section, created empty if absent.
    pub fn delivery_annotations_mut(&mut self) -> &mut Map {
        self.encoded = None;
        self.delivery_annotations.get_or_insert_with(Map::new)
    }

    /// The message-annotations section.
    pub fn message_annotations(&self) -> Option<&Map> {
        self.message_annotations.as_ref()
    }

    /// The message-annotations section, created empty if absent.
    pub fn message_annotations_mut(&mut self) -> &mut Map {
        self.encoded = None;
        self.message_annotations.get_or_insert_with(Map::new)
    }

    /// The properties section.
    pub fn properties(&self) -> Option<&Properties> {
        self.properties.as_ref()
    }

    /// The properties section, created empty if absent.
    pub fn properties_mut(&mut self) -> &mut Properties {
        self.encoded = None;
        self.properties.get_or_insert_with(Properties::default)
    }

    /// The application-properties section.
    pub fn application_properties(&self) -> Option<&Map> {
        self.application_properties.as_ref()
    }

    /// The application-properties section, created empty if absent.
    pub fn application_properties_mut(&mut self) -> &mut Map {
        self.encoded = None;
        self.application_properties.get_or_insert_with(Map::new)
    }

    /// An application property by key.
    pub fn property(&self, key: &str) -> Option<&Value> {
        self.application_properties.as_ref()?.get_str(key)
    }

    /// The body.
    pub fn body(&self) -> &Body {
        &self.body
    }

    /// The body, for changing.
    pub fn body_mut(&mut self) -> &mut Body {
        self.encoded = None;
        &mut self.body
    }

    /// Replaces the body.
    pub fn set_body(&mut self, body: Body) {
        self.encoded = None;
        self.body = body;
    }

    /// The value of an `amqp-value` body.
    pub fn body_value(&self) -> Option<&Value> {
        match &self.body {
            Body::Value(v) => Some(v),
            _ => None,
        }
    }

    /// The footer section.
    pub fn footer(&self) -> Option<&Map> {
        self.footer.as_ref()
    }

    /// The footer section, created empty if absent.
    pub fn footer_mut(&mut self) -> &mut Map {
        self.encoded = None;
        self.footer.get_or_insert_with(Map::new)
    }

    property_getters! {
        /// `properties.message-id`.
        message_id -> &MessageId, |p| p.message_id.as_ref();
        /// `properties.user-id`.
        user_id -> &Bytes, |p| p.user_id.as_ref();
        /// `properties.to`: the destination address.
        to -> &str, |p| p.to.as_deref();
        /// `properties.subject`.
        subject -> &str, |p| p.subject.as_deref();
        /// `properties.reply-to`.
        reply_to -> &str, |p| p.reply_to.as_deref();
        /// `properties.correlation-id`.
        correlation_id -> &MessageId, |p| p.correlation_id.as_ref();
        /// `properties.content-type`.
        content_type -> &Symbol, |p| p.content_type.as_ref();
        /// `properties.content-encoding`.
        content_encoding -> &Symbol, |p| p.content_encoding.as_ref();
        /// `properties.absolute-expiry-time`.
        absolute_expiry_time -> Timestamp, |p| p.absolute_expiry_time;
        /// `properties.creation-time`.
        creation_time -> Timestamp, |p| p.creation_time;
        /// `properties.group-id`.
        group_id -> &str, |p| p.group_id.as_deref();
        /// `properties.group-sequence`.
        group_sequence -> u32, |p| p.group_sequence;
        /// `properties.reply-to-group-id`.
        reply_to_group_id -> &str, |p| p.reply_to_group_id.as_deref();
    }

    /// `header.durable` (default false).
    pub fn durable(&self) -> bool {
        self.header.as_ref().is_some_and(|h| h.durable)
    }

    /// `header.priority` (default 4).
    pub fn priority(&self) -> u8 {
        self.header.as_ref().map_or(4, |h| h.priority)
    }

    /// `header.ttl` in milliseconds.
    pub fn ttl(&self) -> Option<u32> {
        self.header.as_ref().and_then(|h| h.ttl)
    }

    /// `header.delivery-count` (default 0).
    pub fn delivery_count(&self) -> u32 {
        self.header.as_ref().map_or(0, |h| h.delivery_count)
    }

    /// The bytes this message was decoded from, if it has not been modified since.
    pub fn encoded(&self) -> Option<&Bytes> {
        self.encoded.as_ref()
    }

    /// The message's encoding: the bytes it was decoded from if it is unmodified, otherwise a fresh encoding.
    pub fn to_bytes(&self) -> Bytes {
        <Self as Encode>::to_bytes(self)
    }

    /// Forgets the bytes this message was decoded from, so the next encoding is made from its sections.
    pub fn forget_encoded(&mut self) {
        self.encoded = None;
    }

    /// Decodes a message from the bytes of a transfer's payload. The message keeps `bytes` (a cheap shared
    /// reference) so it can be forwarded without re-encoding.
    ///
    /// The decoded sections may take at most [`default_decode_budget`](crate::codec::default_decode_budget)
    /// of the payload's length in heap bytes; a payload that would take more fails with
    /// [`DecodeErrorKind::BudgetExceeded`] (`amqp:decode-error`).
    pub fn decode(bytes: Bytes) -> Result<Message, DecodeError> {
        let budget = crate::codec::default_decode_budget(bytes.len());
        Self::decode_with_budget(bytes, budget)
    }

    /// [`Message::decode`] with a decode budget of `budget` heap bytes instead of the default, for an
    /// application that trusts its peer with larger amplification (e.g. multi-megabyte arrays of booleans).
    pub fn decode_with_budget(bytes: Bytes, budget: usize) -> Result<Message, DecodeError> {
        let mut dec = Decoder::new(bytes.clone());
        dec.set_budget(budget);
        let mut m = Message::default();
        // Sections must come in the spec's order; each non-body section at most once.
        let mut last = 0u64;
        while !dec.is_empty() {
            let at = dec.offset();
            let code = dec.read_constructor()?;
            if code != codes::DESCRIBED {
                return Err(dec.unexpected("a message section", code));
            }
            let descriptor = dec.read_descriptor()?;
            let section = section_code(&descriptor).ok_or_else(|| {
                dec.error(DecodeErrorKind::UnexpectedDescriptor {
                    expected: "a message section",
                    found: descriptor.to_string(),
                })
            })?;
            check_section_order(at, last, section, || descriptor.to_string())?;
            last = section;
            match section {
                Header::CODE => m.header = Some(Header::decode_fields(&mut dec)?),
                DeliveryAnnotations::CODE => {
                    m.delivery_annotations = Some(DeliveryAnnotations::decode_fields(&mut dec)?.0)
                }
                MessageAnnotations::CODE => {
                    m.message_annotations = Some(MessageAnnotations::decode_fields(&mut dec)?.0)
                }
                Properties::CODE => m.properties = Some(Properties::decode_fields(&mut dec)?),
                ApplicationProperties::CODE => {
                    m.application_properties =
                        Some(ApplicationProperties::decode_fields(&mut dec)?.0)
                }
                Data::CODE => {
                    // A growing vector holds at most twice its length.
                    dec.charge(2 * std::mem::size_of::<Bytes>())?;
                    let data = Data::decode_fields(&mut dec)?.0;
                    match &mut m.body {
                        Body::Data(sections) => sections.push(data),
                        body => *body = Body::Data(vec![data]),
                    }
                }
                AmqpSequence::CODE => {
                    dec.charge(2 * std::mem::size_of::<Vec<Value>>())?;
                    let seq = AmqpSequence::decode_fields(&mut dec)?.0;
                    match &mut m.body {
                        Body::Sequence(sections) => sections.push(seq),
                        body => *body = Body::Sequence(vec![seq]),
                    }
                }
                AmqpValue::CODE => m.body = Body::Value(AmqpValue::decode_fields(&mut dec)?.0),
                _ => m.footer = Some(Footer::decode_fields(&mut dec)?.0),
            }
        }
        m.encoded = Some(bytes);
        Ok(m)
    }

    fn for_each_section(&self, mut f: impl FnMut(SectionRef<'_>)) {
        if let Some(h) = &self.header {
            f(SectionRef::Header(h));
        }
        if let Some(m) = &self.delivery_annotations {
            f(SectionRef::Map(DeliveryAnnotations::CODE, m));
        }
        if let Some(m) = &self.message_annotations {
            f(SectionRef::Map(MessageAnnotations::CODE, m));
        }
        if let Some(p) = &self.properties {
            f(SectionRef::Properties(p));
        }
        if let Some(m) = &self.application_properties {
            f(SectionRef::Map(ApplicationProperties::CODE, m));
        }
        match &self.body {
            Body::Empty => {}
            Body::Data(sections) => sections.iter().for_each(|d| f(SectionRef::Data(d))),
            Body::Sequence(sections) => sections.iter().for_each(|s| f(SectionRef::Sequence(s))),
            Body::Value(v) => f(SectionRef::Value(v)),
        }
        if let Some(m) = &self.footer {
            f(SectionRef::Map(Footer::CODE, m));
        }
    }
}

/// The message sections in the spec's order, by descriptor code and symbol [AMQP 1.0 §3.2].
const SECTIONS: [(u64, &str); 9] = [
    (Header::CODE, Header::SYMBOL),
    (DeliveryAnnotations::CODE, DeliveryAnnotations::SYMBOL),
    (MessageAnnotations::CODE, MessageAnnotations::SYMBOL),
    (Properties::CODE, Properties::SYMBOL),
    (ApplicationProperties::CODE, ApplicationProperties::SYMBOL),
    (Data::CODE, Data::SYMBOL),
    (AmqpSequence::CODE, AmqpSequence::SYMBOL),
    (AmqpValue::CODE, AmqpValue::SYMBOL),
    (Footer::CODE, Footer::SYMBOL),
];

/// The section a descriptor names (given as a code or as symbol bytes), by its numeric code.
fn section_by(code: Option<u64>, symbol: Option<&[u8]>) -> Option<u64> {
    SECTIONS
        .iter()
        .find(|(c, s)| code == Some(*c) || symbol == Some(s.as_bytes()))
        .map(|(c, _)| *c)
}

fn section_code(d: &crate::codec::Descriptor) -> Option<u64> {
    use crate::codec::Descriptor;
    match d {
        Descriptor::Code(c) => section_by(Some(*c), None),
        Descriptor::Symbol(s) => section_by(None, Some(s.as_bytes())),
    }
}

/// Whether the section `section`, found at offset `at`, may follow the section `last` (0 at the start): in the
/// spec's order, each section other than `data` and `amqp-sequence` at most once, and body sections all of one
/// kind [AMQP 1.0 §3.2]. `name` names the section in the error.
fn check_section_order(
    at: usize,
    last: u64,
    section: u64,
    name: impl FnOnce() -> String,
) -> Result<(), DecodeError> {
    let repeatable_body = matches!(section, Data::CODE | AmqpSequence::CODE);
    if section < last || (section == last && !repeatable_body) {
        return Err(DecodeError::new(
            at,
            DecodeErrorKind::InvalidField {
                field: "message section",
                reason: format!("section {} is out of order or repeated", name()),
            },
        ));
    }
    if last >= Data::CODE && section <= AmqpValue::CODE && section != last {
        return Err(DecodeError::new(
            at,
            DecodeErrorKind::InvalidField {
                field: "message body",
                reason: "body sections of different kinds".into(),
            },
        ));
    }
    Ok(())
}

/// One section of a message being encoded, borrowed from the message.
enum SectionRef<'a> {
    Header(&'a Header),
    Properties(&'a Properties),
    /// A map section with its descriptor code.
    Map(u64, &'a Map),
    Data(&'a Bytes),
    Sequence(&'a [Value]),
    Value(&'a Value),
}

impl SectionRef<'_> {
    fn described_size(code: u64, inner: usize) -> usize {
        1 + code.encoded_size() + inner
    }

    fn put_descriptor<B: BufMut>(code: u64, buf: &mut B) {
        buf.put_u8(codes::DESCRIBED);
        code.encode(buf);
    }
}

impl Encode for SectionRef<'_> {
    fn encoded_size(&self) -> usize {
        match *self {
            SectionRef::Header(h) => h.encoded_size(),
            SectionRef::Properties(p) => p.encoded_size(),
            SectionRef::Map(code, m) => Self::described_size(code, m.encoded_size()),
            SectionRef::Data(d) => Self::described_size(Data::CODE, d.encoded_size()),
            SectionRef::Sequence(s) => Self::described_size(AmqpSequence::CODE, s.encoded_size()),
            SectionRef::Value(v) => Self::described_size(AmqpValue::CODE, v.encoded_size()),
        }
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        match *self {
            SectionRef::Header(h) => h.encode(buf),
            SectionRef::Properties(p) => p.encode(buf),
            SectionRef::Map(code, m) => {
                Self::put_descriptor(code, buf);
                m.encode(buf);
            }
            SectionRef::Data(d) => {
                Self::put_descriptor(Data::CODE, buf);
                d.encode(buf);
            }
            SectionRef::Sequence(s) => {
                Self::put_descriptor(AmqpSequence::CODE, buf);
                s.encode(buf);
            }
            SectionRef::Value(v) => {
                Self::put_descriptor(AmqpValue::CODE, buf);
                v.encode(buf);
            }
        }
    }
}

impl Encode for Message {
    fn encoded_size(&self) -> usize {
        if let Some(b) = &self.encoded {
            return b.len();
        }
        let mut n = 0;
        self.for_each_section(|s| n += s.encoded_size());
        n
    }

    fn encode<B: BufMut>(&self, buf: &mut B) {
        if let Some(b) = &self.encoded {
            buf.put_slice(b);
            return;
        }
        self.for_each_section(|s| s.encode(buf));
    }

    fn to_bytes(&self) -> Bytes {
        if let Some(b) = &self.encoded {
            return b.clone();
        }
        let mut v = Vec::with_capacity(self.encoded_size());
        self.encode(&mut v);
        Bytes::from(v)
    }
}

/// Builds a [`Message`] field by field.
#[derive(Clone, Debug, Default)]
pub struct MessageBuilder {
    message: Message,
}

macro_rules! property_setters {
    ($($(#[$meta:meta])* $name:ident($t:ty) => $field:ident;)*) => {
        $($(#[$meta])*
        pub fn $name(mut self, v: impl Into<$t>) -> Self {
            self.message.properties_mut().$field = Some(v.into());
            self
        })*
    };
}

impl MessageBuilder {
    /// Sets an `amqp-value` body.
    pub fn body(mut self, v: impl Into<Value>) -> Self {
        self.message.body = Body::Value(v.into());
        self
    }

    /// Appends a `data` section (replacing a body of another kind).
    pub fn data(mut self, bytes: impl Into<Bytes>) -> Self {
        match &mut self.message.body {
            Body::Data(sections) => sections.push(bytes.into()),
            body => *body = Body::Data(vec![bytes.into()]),
        }
        self
    }

    /// Appends an `amqp-sequence` section (replacing a body of another kind).
    pub fn sequence(mut self, items: Vec<Value>) -> Self {
        match &mut self.message.body {
            Body::Sequence(sections) => sections.push(items),
            body => *body = Body::Sequence(vec![items]),
        }
        self
    }

    property_setters! {
        /// Sets `properties.message-id`.
        message_id(MessageId) => message_id;
        /// Sets `properties.user-id`.
        user_id(Bytes) => user_id;
        /// Sets `properties.to`.
        to(String) => to;
        /// Sets `properties.subject`.
        subject(String) => subject;
        /// Sets `properties.reply-to`.
        reply_to(String) => reply_to;
        /// Sets `properties.correlation-id`.
        correlation_id(MessageId) => correlation_id;
        /// Sets `properties.content-type`.
        content_type(Symbol) => content_type;
        /// Sets `properties.content-encoding`.
        content_encoding(Symbol) => content_encoding;
        /// Sets `properties.absolute-expiry-time`.
        absolute_expiry_time(Timestamp) => absolute_expiry_time;
        /// Sets `properties.creation-time`.
        creation_time(Timestamp) => creation_time;
        /// Sets `properties.group-id`.
        group_id(String) => group_id;
        /// Sets `properties.group-sequence`.
        group_sequence(u32) => group_sequence;
        /// Sets `properties.reply-to-group-id`.
        reply_to_group_id(String) => reply_to_group_id;
    }

    /// Sets `header.durable`.
    pub fn durable(mut self, durable: bool) -> Self {
        self.message.header_mut().durable = durable;
        self
    }

    /// Sets `header.priority`.
    pub fn priority(mut self, priority: u8) -> Self {
        self.message.header_mut().priority = priority;
        self
    }

    /// Sets `header.ttl` in milliseconds.
    pub fn ttl(mut self, ttl: u32) -> Self {
        self.message.header_mut().ttl = Some(ttl);
        self
    }

    /// Sets `header.first-acquirer`.
    pub fn first_acquirer(mut self, first: bool) -> Self {
        self.message.header_mut().first_acquirer = first;
        self
    }

    /// Sets `header.delivery-count`.
    pub fn delivery_count(mut self, count: u32) -> Self {
        self.message.header_mut().delivery_count = count;
        self
    }

    /// Sets an application property (the key is a string, as the spec requires).
    pub fn property(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.message
            .application_properties_mut()
            .insert(Value::String(key.into()), value);
        self
    }

    /// Sets a message annotation (the key is a symbol).
    pub fn message_annotation(mut self, key: impl Into<Symbol>, value: impl Into<Value>) -> Self {
        self.message
            .message_annotations_mut()
            .insert(Value::Symbol(key.into()), value);
        self
    }

    /// Sets a delivery annotation (the key is a symbol).
    pub fn delivery_annotation(mut self, key: impl Into<Symbol>, value: impl Into<Value>) -> Self {
        self.message
            .delivery_annotations_mut()
            .insert(Value::Symbol(key.into()), value);
        self
    }

    /// Sets a footer entry (the key is a symbol).
    pub fn footer(mut self, key: impl Into<Symbol>, value: impl Into<Value>) -> Self {
        self.message
            .footer_mut()
            .insert(Value::Symbol(key.into()), value);
        self
    }

    /// The message.
    pub fn build(self) -> Message {
        self.message
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::codec::{Encode, Uuid};

    /// A message with every section and most fields set (also the raw message's tests' sample).
    pub(crate) fn full() -> Message {
        Message::builder()
            .durable(true)
            .priority(9)
            .ttl(1000)
            .first_acquirer(true)
            .delivery_count(2)
            .delivery_annotation("x-opt-da", 1i64)
            .message_annotation("x-opt-ma", "v")
            .message_id(Uuid([7; 16]))
            .user_id(Bytes::from_static(b"me"))
            .to("queue")
            .subject("s")
            .reply_to("replies")
            .correlation_id(42u64)
            .content_type(Symbol::from_static("text/plain"))
            .content_encoding(Symbol::from_static("utf-8"))
            .absolute_expiry_time(Timestamp(2000))
            .creation_time(Timestamp(1000))
            .group_id("g")
            .group_sequence(3u32)
            .reply_to_group_id("rg")
            .property("k", 5i32)
            .body("hello")
            .footer("x-hash", Bytes::from_static(b"\x01"))
            .build()
    }

    #[test]
    fn every_section_round_trips() {
        let m = full();
        let back = Message::decode(m.to_bytes()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.subject(), Some("s"));
        assert_eq!(back.correlation_id(), Some(&MessageId::Ulong(42)));
        assert_eq!(back.property("k"), Some(&Value::Int(5)));
        assert_eq!(back.priority(), 9);
        assert!(back.durable());
        assert_eq!(back.body_value().and_then(Value::as_str), Some("hello"));
    }

    #[test]
    fn all_three_body_kinds_round_trip() {
        let data = Message::builder().data(&b"a"[..]).data(&b"b"[..]).build();
        let seq = Message::builder()
            .sequence(vec![Value::Int(1)])
            .sequence(vec![])
            .build();
        let empty = Message::new();
        for m in [data, seq, empty] {
            assert_eq!(Message::decode(m.to_bytes()).unwrap(), m);
        }
    }

    #[test]
    fn sections_are_written_in_spec_order() {
        let bytes = full().to_bytes();
        let mut dec = Decoder::new(bytes);
        let mut codes = Vec::new();
        while !dec.is_empty() {
            let v = dec.decode_value().unwrap();
            match v {
                Value::Described(d) => match d.descriptor {
                    crate::codec::Descriptor::Code(c) => codes.push(c),
                    other => panic!("symbolic descriptor {other:?}"),
                },
                other => panic!("not a section: {other:?}"),
            }
        }
        assert_eq!(codes, [0x70, 0x71, 0x72, 0x73, 0x74, 0x77, 0x78]);
    }

    #[test]
    fn decoded_messages_forward_their_original_bytes() {
        // Encode with a wasteful form (uint 5 as 0x70) that our encoder would never produce.
        let original = Bytes::from_static(&[0x00, 0x53, 0x77, 0x70, 0, 0, 0, 5]);
        let mut m = Message::decode(original.clone()).unwrap();
        assert_eq!(m.body_value(), Some(&Value::Uint(5)));
        assert_eq!(m.to_bytes().as_ptr(), original.as_ptr(), "no re-encoding");
        assert_eq!(m.encoded_size(), original.len());
        m.properties_mut().subject = Some("changed".into());
        assert_eq!(m.encoded(), None, "a modified message is re-encoded");
        let re = m.to_bytes();
        assert_ne!(re, original);
        assert_eq!(Message::decode(re).unwrap(), m);
    }

    #[test]
    fn malformed_messages_are_errors() {
        let cases: [&[u8]; 5] = [
            &[0x40],                                              // not a section
            &[0x00, 0x53, 0x99, 0x40],                            // unknown section
            &[0x00, 0x53, 0x73, 0x45, 0x00, 0x53, 0x70, 0x45],    // out of order
            &[0x00, 0x53, 0x75, 0xa0, 0, 0x00, 0x53, 0x77, 0x40], // mixed body kinds
            &[0x00, 0x53, 0x77, 0x40, 0x00, 0x53, 0x77, 0x40],    // two amqp-values
        ];
        for bytes in cases {
            assert!(
                Message::decode(Bytes::from_static(bytes)).is_err(),
                "{bytes:02x?}"
            );
        }
    }

    #[test]
    fn message_is_send_and_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Message>();
    }
}
