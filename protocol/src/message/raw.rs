//! [`RawMessage`]: a message kept as the bytes it was received as, checked but not decoded.

use bytes::{BufMut, Bytes};

use crate::codec::skip::{Descriptor, Skipper};
use crate::codec::{codes as c, DecodeError, DecodeErrorKind, Encode, Timestamp};
use crate::frame::{
    AmqpSequence, AmqpValue, Data, DeliveryAnnotations, Header, MessageAnnotations, Properties,
};
use crate::Message;

const DURABLE: u8 = 1;
const FIRST_ACQUIRER: u8 = 1 << 1;
const TTL: u8 = 1 << 2;
const TO: u8 = 1 << 3;
const ABSOLUTE_EXPIRY: u8 = 1 << 4;

/// A message kept as its encoded bytes (a transfer's payload), for code that forwards messages (a broker,
/// a relay) and needs only what routing does: the header's fields, `properties.to` and
/// `properties.absolute-expiry-time`.
///
/// [`RawMessage::parse`] checks the section structure as [`Message::decode`] does (sections in the spec's
/// order, none repeated, one kind of body, each a described value with a section's descriptor, every value
/// in them well formed) without building anything, and remembers where the header ends and a few flags:
/// 40 bytes besides the payload. Other fields are read from the bytes when asked for. The full message is
/// decoded only on demand ([`RawMessage::decode`]), and the header can be changed
/// ([`RawMessage::set_header`]) by encoding only the header and splicing it before the other sections'
/// bytes.
///
/// `parse` accepts exactly the payloads `Message::decode` accepts, except that it applies no decode budget
/// (it allocates nothing): a payload whose decoded sections would exceed the budget parses, and `decode`
/// then fails with [`DecodeErrorKind::BudgetExceeded`]. It also refuses a header section longer than 4 GiB,
/// which `Message::decode` would accept.
///
/// ```
/// use nucleon_protocol::{Message, RawMessage};
/// let m = Message::builder().to("queue").priority(7).ttl(1000).body("hi").build();
/// let mut raw = RawMessage::parse(m.to_bytes()).unwrap();
/// assert_eq!((raw.to(), raw.priority(), raw.ttl()), (Some("queue"), 7, Some(1000)));
/// let mut header = raw.header();
/// header.delivery_count += 1;
/// raw.set_header(&header);
/// assert_eq!(raw.decode().unwrap().delivery_count(), 1);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawMessage {
    bytes: Bytes,
    /// Where the header section ends: 0 when there is none (it is always the first section).
    header_end: u32,
    priority: u8,
    flags: u8,
}

impl RawMessage {
    /// Checks the section structure of a transfer's payload and keeps it (a cheap shared reference).
    pub fn parse(bytes: Bytes) -> Result<RawMessage, DecodeError> {
        let mut sk = Skipper::new(&bytes);
        let mut header = None;
        let mut header_end = 0;
        let mut flags = 0;
        let mut last = 0u64;
        while !sk.is_empty() {
            let at = sk.offset();
            let code = sk.u8()?;
            if code != c::DESCRIBED {
                return Err(sk.unexpected("a message section", code));
            }
            let descriptor = sk.descriptor()?;
            let section = section_code(descriptor).ok_or_else(|| {
                sk.error_at(
                    sk.offset(),
                    DecodeErrorKind::UnexpectedDescriptor {
                        expected: "a message section",
                        found: describe(descriptor),
                    },
                )
            })?;
            super::check_section_order(at, last, section, || describe(descriptor))?;
            last = section;
            match section {
                Header::CODE => {
                    header = Some(header_fields(&mut sk)?);
                    header_end = u32::try_from(sk.offset()).map_err(|_| {
                        DecodeError::new(
                            at,
                            DecodeErrorKind::LengthOutOfBounds {
                                claimed: sk.offset() as u64,
                                available: u32::MAX.into(),
                            },
                        )
                    })?;
                }
                Properties::CODE => {
                    let p = property_fields(&mut sk)?;
                    if p.to.is_some() {
                        flags |= TO;
                    }
                    if p.absolute_expiry_time.is_some() {
                        flags |= ABSOLUTE_EXPIRY;
                    }
                }
                Data::CODE => {
                    let code = sk.u8()?;
                    if !matches!(code, c::VBIN8 | c::VBIN32) {
                        return Err(sk.unexpected("binary", code));
                    }
                    sk.value_body(code)?;
                }
                AmqpSequence::CODE => {
                    let code = sk.u8()?;
                    if !matches!(code, c::LIST0 | c::LIST8 | c::LIST32) {
                        return Err(sk.unexpected("list", code));
                    }
                    sk.value_body(code)?;
                }
                AmqpValue::CODE => sk.value()?,
                // The annotations, application-properties and footer: maps.
                _ => {
                    let code = sk.u8()?;
                    if !matches!(code, c::MAP8 | c::MAP32) {
                        return Err(sk.unexpected("map", code));
                    }
                    sk.value_body(code)?;
                }
            }
        }
        let header = header.unwrap_or_default();
        Ok(RawMessage {
            header_end,
            priority: header.priority,
            flags: flags | header_flags(&header),
            bytes,
        })
    }

    /// The message's encoding, for a message made here rather than received. Fails only for a message the
    /// decoder would refuse too (e.g. values nested deeper than it allows).
    pub fn from_message(message: &Message) -> Result<RawMessage, DecodeError> {
        RawMessage::parse(message.to_bytes())
    }

    /// Decodes the whole message, within the default decode budget (see [`Message::decode`]).
    pub fn decode(&self) -> Result<Message, DecodeError> {
        Message::decode(self.bytes.clone())
    }

    /// The encoded message.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The encoded message, given back.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Its encoded size in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// True for a message with no sections.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Copies the bytes into an allocation of their own, exactly their size. A received payload is usually
    /// a slice of a larger read buffer, which it would otherwise keep alive as long as it is kept.
    pub fn compact(&mut self) {
        self.bytes = Bytes::copy_from_slice(&self.bytes);
    }

    /// The header section, or the spec's defaults when there is none.
    pub fn header(&self) -> Header {
        let mut sk = Skipper::new(&self.bytes[..self.header_end as usize]);
        let parsed = (|| {
            if sk.is_empty() {
                return Ok(Header::default());
            }
            sk.u8()?;
            sk.descriptor()?;
            header_fields(&mut sk)
        })();
        // Checked by `parse`: the bytes before `header_end` are a header section.
        parsed.unwrap_or_default()
    }

    /// Replaces the header section (adding one if there was none) by encoding `header` and splicing it
    /// before the bytes of the other sections, which are neither decoded nor changed.
    pub fn set_header(&mut self, header: &Header) {
        let rest = &self.bytes[self.header_end as usize..];
        let size = header.encoded_size();
        let mut buf = Vec::with_capacity(size + rest.len());
        header.encode(&mut buf);
        buf.put_slice(rest);
        // A header is at most a few dozen bytes.
        self.header_end = u32::try_from(size).unwrap_or(u32::MAX);
        self.priority = header.priority;
        self.flags = (self.flags & (TO | ABSOLUTE_EXPIRY)) | header_flags(header);
        self.bytes = Bytes::from(buf);
    }

    /// `header.durable` (default false).
    pub fn durable(&self) -> bool {
        self.flags & DURABLE != 0
    }

    /// `header.priority` (default 4).
    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// `header.first-acquirer` (default false).
    pub fn first_acquirer(&self) -> bool {
        self.flags & FIRST_ACQUIRER != 0
    }

    /// `header.ttl` in milliseconds.
    pub fn ttl(&self) -> Option<u32> {
        if self.flags & TTL == 0 {
            return None;
        }
        self.header().ttl
    }

    /// `header.delivery-count` (default 0).
    pub fn delivery_count(&self) -> u32 {
        if self.header_end == 0 {
            return 0;
        }
        self.header().delivery_count
    }

    /// `properties.to`: the destination address.
    pub fn to(&self) -> Option<&str> {
        if self.flags & TO == 0 {
            return None;
        }
        let (start, end) = self.properties()?.to?;
        std::str::from_utf8(&self.bytes[start..end]).ok()
    }

    /// `properties.absolute-expiry-time`.
    pub fn absolute_expiry_time(&self) -> Option<Timestamp> {
        if self.flags & ABSOLUTE_EXPIRY == 0 {
            return None;
        }
        self.properties()?.absolute_expiry_time
    }

    /// The fields of the properties section read here, found again by stepping over the sections before it.
    fn properties(&self) -> Option<PropertyFields> {
        let mut sk = Skipper::new(&self.bytes);
        sk.take(self.header_end as usize).ok()?;
        while !sk.is_empty() {
            sk.u8().ok()?;
            match section_code(sk.descriptor().ok()?)? {
                Properties::CODE => return property_fields(&mut sk).ok(),
                DeliveryAnnotations::CODE | MessageAnnotations::CODE => sk.value().ok()?,
                _ => return None,
            }
        }
        None
    }
}

fn header_flags(h: &Header) -> u8 {
    let mut flags = 0;
    if h.durable {
        flags |= DURABLE;
    }
    if h.first_acquirer {
        flags |= FIRST_ACQUIRER;
    }
    if h.ttl.is_some() {
        flags |= TTL;
    }
    flags
}

/// The section a descriptor names, by its numeric code.
fn section_code(d: Descriptor<'_>) -> Option<u64> {
    match d {
        Descriptor::Code(c) => super::section_by(Some(c), None),
        Descriptor::Symbol(s) => super::section_by(None, Some(s.as_bytes())),
    }
}

fn describe(d: Descriptor<'_>) -> String {
    match d {
        Descriptor::Code(c) => format!("{c:#x}"),
        Descriptor::Symbol(s) => format!(":{s}"),
    }
}

/// Reads a composite's field list as the decoder does: a list constructor, then `f` for each of the
/// fields present (their count, at most `known`); fields past `known` (from a newer peer) are stepped over.
fn fields<T>(
    sk: &mut Skipper<'_>,
    what: &'static str,
    known: u32,
    f: impl FnOnce(&mut Skipper<'_>, u32) -> Result<T, DecodeError>,
) -> Result<T, DecodeError> {
    let code = sk.u8()?;
    if !matches!(code, c::LIST0 | c::LIST8 | c::LIST32) {
        return Err(sk.unexpected(what, code));
    }
    let list = sk.begin_compound(code)?;
    let out = f(sk, list.count.min(known));
    sk.end_compound(list);
    out
}

/// The next field's constructor, `None` for null (or an absent field: `present` false).
fn field(sk: &mut Skipper<'_>, present: bool) -> Result<Option<u8>, DecodeError> {
    if !present {
        return Ok(None);
    }
    match sk.u8()? {
        c::NULL => Ok(None),
        code => Ok(Some(code)),
    }
}

fn boolean(sk: &mut Skipper<'_>, code: u8) -> Result<bool, DecodeError> {
    match code {
        c::BOOLEAN_TRUE => Ok(true),
        c::BOOLEAN_FALSE => Ok(false),
        c::BOOLEAN => sk.boolean(),
        _ => Err(sk.unexpected("boolean", code)),
    }
}

fn uint(sk: &mut Skipper<'_>, code: u8) -> Result<u32, DecodeError> {
    match code {
        c::UINT => sk.u32(),
        c::SMALL_UINT => sk.u8().map(u32::from),
        c::UINT_0 => Ok(0),
        _ => Err(sk.unexpected("uint", code)),
    }
}

/// The header's fields (after its descriptor), as `Header`'s decoding reads them.
fn header_fields(sk: &mut Skipper<'_>) -> Result<Header, DecodeError> {
    fields(sk, "amqp:header:list field list", 5, |sk, n| {
        let d = Header::default();
        Ok(Header {
            durable: match field(sk, n > 0)? {
                Some(code) => boolean(sk, code)?,
                None => d.durable,
            },
            priority: match field(sk, n > 1)? {
                Some(c::UBYTE) => sk.u8()?,
                Some(code) => return Err(sk.unexpected("ubyte", code)),
                None => d.priority,
            },
            ttl: match field(sk, n > 2)? {
                Some(code) => Some(uint(sk, code)?),
                None => None,
            },
            first_acquirer: match field(sk, n > 3)? {
                Some(code) => boolean(sk, code)?,
                None => d.first_acquirer,
            },
            delivery_count: match field(sk, n > 4)? {
                Some(code) => uint(sk, code)?,
                None => d.delivery_count,
            },
        })
    })
}

/// What routing reads of the properties section: where `to`'s text is, and the absolute-expiry-time.
struct PropertyFields {
    to: Option<(usize, usize)>,
    absolute_expiry_time: Option<Timestamp>,
}

/// The properties' fields (after the descriptor), checked as `Properties`' decoding checks them.
fn property_fields(sk: &mut Skipper<'_>) -> Result<PropertyFields, DecodeError> {
    fields(sk, "amqp:properties:list field list", 13, |sk, n| {
        let mut p = PropertyFields {
            to: None,
            absolute_expiry_time: None,
        };
        for i in 0..n {
            let Some(code) = field(sk, true)? else {
                continue;
            };
            let (expected, ok) = match i {
                // message-id, correlation-id
                0 | 5 => (
                    "message-id (ulong, uuid, binary or string)",
                    matches!(
                        code,
                        c::ULONG
                            | c::SMALL_ULONG
                            | c::ULONG_0
                            | c::UUID
                            | c::VBIN8
                            | c::VBIN32
                            | c::STR8
                            | c::STR32
                    ),
                ),
                1 => ("binary", matches!(code, c::VBIN8 | c::VBIN32)),
                6 | 7 => ("symbol", matches!(code, c::SYM8 | c::SYM32)),
                8 | 9 => ("timestamp", code == c::TIMESTAMP),
                11 => ("uint", matches!(code, c::UINT | c::SMALL_UINT | c::UINT_0)),
                // to, subject, reply-to, group-id, reply-to-group-id
                _ => ("string", matches!(code, c::STR8 | c::STR32)),
            };
            if !ok {
                return Err(sk.unexpected(expected, code));
            }
            match i {
                2 => {
                    let len = sk.text(code)?.len();
                    p.to = Some((sk.offset() - len, sk.offset()));
                }
                8 => p.absolute_expiry_time = Some(Timestamp(sk.u64()? as i64)),
                _ => sk.value_body(code)?,
            }
        }
        Ok(p)
    })
}

#[cfg(test)]
mod tests;
