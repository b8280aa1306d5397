//! Protocol headers and frames [AMQP 1.0 §2.2, §2.3, §5.2, §5.3.1].

use std::fmt;

use bytes::{Buf, BufMut, Bytes};

use super::{Performative, SaslFrame};
use crate::codec::{Decode, DecodeError, DecodeErrorKind, Decoder, Encode};

/// Which protocol an 8-byte protocol header announces [AMQP 1.0 §2.2, §5.2.1, §5.3.1].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtocolId {
    /// Plain AMQP (id 0).
    Amqp,
    /// TLS negotiation (id 2).
    Tls,
    /// SASL negotiation (id 3).
    Sasl,
    /// An id this version of the spec does not define.
    Unknown(u8),
}

/// An 8-byte protocol header: `AMQP`, protocol id, major, minor, revision [AMQP 1.0 §2.2].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProtocolHeader {
    /// The protocol announced.
    pub id: ProtocolId,
    /// Major, minor and revision version numbers.
    pub version: (u8, u8, u8),
}

impl ProtocolHeader {
    /// The size of every protocol header.
    pub const SIZE: usize = 8;
    /// `AMQP\x00\x01\x00\x00`.
    pub const AMQP: ProtocolHeader = ProtocolHeader::v1_0(ProtocolId::Amqp);
    /// `AMQP\x03\x01\x00\x00`.
    pub const SASL: ProtocolHeader = ProtocolHeader::v1_0(ProtocolId::Sasl);
    /// `AMQP\x02\x01\x00\x00`.
    pub const TLS: ProtocolHeader = ProtocolHeader::v1_0(ProtocolId::Tls);

    const fn v1_0(id: ProtocolId) -> Self {
        ProtocolHeader {
            id,
            version: (1, 0, 0),
        }
    }

    /// Parses a header; `None` when the bytes do not start with `AMQP` (the peer does not speak AMQP at all).
    pub fn parse(bytes: [u8; 8]) -> Option<Self> {
        if &bytes[..4] != b"AMQP" {
            return None;
        }
        let id = match bytes[4] {
            0 => ProtocolId::Amqp,
            2 => ProtocolId::Tls,
            3 => ProtocolId::Sasl,
            other => ProtocolId::Unknown(other),
        };
        Some(ProtocolHeader {
            id,
            version: (bytes[5], bytes[6], bytes[7]),
        })
    }

    /// True for version 1.0.0 of a known protocol id: what nucleon speaks.
    pub fn is_supported(&self) -> bool {
        self.version == (1, 0, 0) && !matches!(self.id, ProtocolId::Unknown(_))
    }

    /// The eight bytes on the wire.
    pub fn to_bytes(&self) -> [u8; 8] {
        let id = match self.id {
            ProtocolId::Amqp => 0,
            ProtocolId::Tls => 2,
            ProtocolId::Sasl => 3,
            ProtocolId::Unknown(other) => other,
        };
        let (major, minor, revision) = self.version;
        [b'A', b'M', b'Q', b'P', id, major, minor, revision]
    }
}

impl fmt::Display for ProtocolHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (major, minor, revision) = self.version;
        let id = match self.id {
            ProtocolId::Amqp => "AMQP".to_string(),
            ProtocolId::Tls => "TLS".to_string(),
            ProtocolId::Sasl => "SASL".to_string(),
            ProtocolId::Unknown(n) => format!("unknown protocol {n}"),
        };
        write!(f, "{id} {major}.{minor}.{revision}")
    }
}

/// The frame type byte [AMQP 1.0 §2.3.1, §5.3.1].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// An AMQP frame (0x00).
    Amqp,
    /// A SASL frame (0x01).
    Sasl,
}

/// The fixed 8-byte frame header: size, data offset, type and channel [AMQP 1.0 §2.3.1].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameHeader {
    /// The total frame size in bytes, header included.
    pub size: u32,
    /// The offset of the frame body, in 4-byte words (at least 2).
    pub doff: u8,
    /// The frame type.
    pub frame_type: FrameType,
    /// The channel (AMQP frames; ignored for SASL frames).
    pub channel: u16,
}

impl FrameHeader {
    /// The size of the fixed frame header.
    pub const SIZE: usize = 8;

    /// Parses and validates a frame header. `offset` is its position in the stream, for errors.
    pub fn parse(bytes: [u8; 8], offset: usize) -> Result<Self, DecodeError> {
        let framing = |why| DecodeError::new(offset, DecodeErrorKind::Framing(why));
        let size = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        let doff = bytes[4];
        let frame_type = match bytes[5] {
            0 => FrameType::Amqp,
            1 => FrameType::Sasl,
            _ => return Err(framing("unknown frame type")),
        };
        if size < 8 {
            return Err(framing("frame size is smaller than the frame header"));
        }
        if doff < 2 {
            return Err(framing("data offset is smaller than 2"));
        }
        if u32::from(doff) * 4 > size {
            return Err(framing("data offset is beyond the end of the frame"));
        }
        Ok(FrameHeader {
            size,
            doff,
            frame_type,
            channel: u16::from_be_bytes([bytes[6], bytes[7]]),
        })
    }
}

/// What a frame carries.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum FrameBody {
    /// An AMQP frame with no body: a heartbeat [AMQP 1.0 §2.4.5].
    Empty,
    /// An AMQP performative, and for `transfer`, the message payload that follows it.
    Amqp {
        /// The performative.
        performative: Performative,
        /// The bytes after the performative (the transfer payload); empty for other performatives.
        payload: Bytes,
    },
    /// A SASL frame.
    Sasl(SaslFrame),
}

/// A complete frame [AMQP 1.0 §2.3].
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    /// The channel (0 for SASL frames).
    pub channel: u16,
    /// The body.
    pub body: FrameBody,
}

impl Frame {
    /// Decodes one frame from `bytes`, which must hold exactly the frame (header included). Extended header
    /// bytes are skipped. `offset` is the frame's position in the stream, for errors.
    pub fn decode(bytes: Bytes, offset: usize) -> Result<Frame, DecodeError> {
        let mut head = [0u8; 8];
        if bytes.len() < 8 {
            return Err(DecodeError::new(
                offset,
                DecodeErrorKind::UnexpectedEof {
                    needed: 8,
                    available: bytes.len(),
                },
            ));
        }
        head.copy_from_slice(&bytes[..8]);
        let header = FrameHeader::parse(head, offset)?;
        if header.size as usize != bytes.len() {
            return Err(DecodeError::new(
                offset,
                DecodeErrorKind::Framing("frame size does not match the bytes given"),
            ));
        }
        let body_at = usize::from(header.doff) * 4;
        let mut bytes = bytes;
        bytes.advance(body_at);
        let mut dec = Decoder::with_base_offset(bytes, offset + body_at);
        let body = match header.frame_type {
            FrameType::Amqp if dec.is_empty() => FrameBody::Empty,
            FrameType::Amqp => {
                let performative = Performative::decode(&mut dec)?;
                FrameBody::Amqp {
                    performative,
                    payload: dec.into_rest(),
                }
            }
            FrameType::Sasl => FrameBody::Sasl(SaslFrame::decode(&mut dec)?),
        };
        Ok(Frame {
            channel: match header.frame_type {
                FrameType::Amqp => header.channel,
                FrameType::Sasl => 0,
            },
            body,
        })
    }

    /// An AMQP frame with a performative and no payload.
    pub fn amqp(channel: u16, performative: impl Into<Performative>) -> Self {
        Frame {
            channel,
            body: FrameBody::Amqp {
                performative: performative.into(),
                payload: Bytes::new(),
            },
        }
    }

    /// The encoded size, header included.
    pub fn encoded_size(&self) -> usize {
        FrameHeader::SIZE
            + match &self.body {
                FrameBody::Empty => 0,
                FrameBody::Amqp {
                    performative,
                    payload,
                } => performative.encoded_size() + payload.len(),
                FrameBody::Sasl(s) => s.encoded_size(),
            }
    }

    /// Writes the frame, header included, with no extended header.
    pub fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u32(self.encoded_size() as u32);
        buf.put_u8(2);
        match &self.body {
            FrameBody::Empty => {
                buf.put_u8(0);
                buf.put_u16(self.channel);
            }
            FrameBody::Amqp {
                performative,
                payload,
            } => {
                buf.put_u8(0);
                buf.put_u16(self.channel);
                performative.encode(buf);
                buf.put_slice(payload);
            }
            FrameBody::Sasl(s) => {
                buf.put_u8(1);
                buf.put_u16(0);
                s.encode(buf);
            }
        }
    }
}
