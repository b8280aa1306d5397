//! [`DecodeError`]: what went wrong while decoding, where, and which AMQP condition reports it.

use std::fmt;

use crate::frame::ErrorCondition;

/// A decoding failure: what was wrong and the byte offset where it was found.
///
/// Offsets count from the start of the buffer handed to the decoder (or from the base offset the caller gave,
/// e.g. the position of a frame within a stream).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    /// Where in the input the problem was found.
    pub offset: usize,
    /// What the problem is.
    pub kind: DecodeErrorKind,
}

/// The kinds of [`DecodeError`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The input ended inside a value.
    UnexpectedEof {
        /// Bytes the value needed.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// A byte that is not an AMQP format code [AMQP 1.0 §1.5].
    InvalidFormatCode(u8),
    /// A valid format code where another type was required.
    UnexpectedType {
        /// What the decoder was looking for.
        expected: &'static str,
        /// The format code it found.
        found: u8,
    },
    /// A size or count field that claims more than the bytes present.
    LengthOutOfBounds {
        /// What the field claimed.
        claimed: u64,
        /// What the input can hold.
        available: u64,
    },
    /// A map with an odd number of elements [AMQP 1.0 §1.6.23].
    OddMapCount(u32),
    /// String or symbol bytes that are not valid UTF-8 (or, for a symbol, ASCII).
    InvalidUtf8,
    /// A `char` that is not a Unicode scalar value.
    InvalidChar(u32),
    /// A boolean encoded as 0x56 with a byte other than 0 or 1.
    InvalidBoolean(u8),
    /// A descriptor that is neither a ulong nor a symbol.
    InvalidDescriptor,
    /// Compound values nested deeper than the decoder allows.
    DepthLimitExceeded(usize),
    /// A described type whose descriptor is not the one required here.
    UnexpectedDescriptor {
        /// What the decoder was looking for.
        expected: &'static str,
        /// The descriptor found, as text.
        found: String,
    },
    /// A mandatory field of a composite type was absent or null.
    MissingField {
        /// The composite type, e.g. `open`.
        structure: &'static str,
        /// The field, e.g. `container-id`.
        field: &'static str,
    },
    /// A field value outside its type's allowed set (e.g. a sender-settle-mode of 7).
    InvalidField {
        /// The field.
        field: &'static str,
        /// Why it is invalid.
        reason: String,
    },
    /// Decoded values would take more heap than the decoder's budget allows (see
    /// [`default_decode_budget`](super::default_decode_budget)).
    BudgetExceeded {
        /// The budget in heap bytes.
        budget: usize,
    },
    /// Bytes left over after a value that should have filled its container.
    TrailingBytes(usize),
    /// A frame header that breaks the framing rules [AMQP 1.0 §2.3.1].
    Framing(&'static str),
}

impl DecodeError {
    /// A decode error of `kind` at `offset`.
    pub fn new(offset: usize, kind: DecodeErrorKind) -> Self {
        DecodeError { offset, kind }
    }

    /// The AMQP error condition a connection engine sends to a peer whose bytes failed this way
    /// [AMQP 1.0 §2.8.15]: `amqp:invalid-field` for a well-formed value that breaks a field's rules,
    /// `amqp:connection:framing-error` for a bad frame header, `amqp:decode-error` for everything else.
    pub fn condition(&self) -> ErrorCondition {
        match self.kind {
            DecodeErrorKind::MissingField { .. } | DecodeErrorKind::InvalidField { .. } => {
                ErrorCondition::InvalidField
            }
            DecodeErrorKind::Framing(_) => ErrorCondition::FramingError,
            _ => ErrorCondition::DecodeError,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: ", self.offset)?;
        match &self.kind {
            DecodeErrorKind::UnexpectedEof { needed, available } => write!(
                f,
                "input ended: needed {needed} more bytes, {available} available"
            ),
            DecodeErrorKind::InvalidFormatCode(c) => write!(f, "invalid format code {c:#04x}"),
            DecodeErrorKind::UnexpectedType { expected, found } => {
                write!(f, "expected {expected}, found format code {found:#04x}")
            }
            DecodeErrorKind::LengthOutOfBounds { claimed, available } => write!(
                f,
                "size or count {claimed} exceeds the {available} bytes available"
            ),
            DecodeErrorKind::OddMapCount(n) => write!(f, "map has an odd element count {n}"),
            DecodeErrorKind::InvalidUtf8 => f.write_str("invalid UTF-8 in string or symbol"),
            DecodeErrorKind::InvalidChar(c) => write!(f, "invalid char {c:#x}"),
            DecodeErrorKind::InvalidBoolean(b) => write!(f, "invalid boolean byte {b:#04x}"),
            DecodeErrorKind::InvalidDescriptor => {
                f.write_str("descriptor is neither a ulong nor a symbol")
            }
            DecodeErrorKind::DepthLimitExceeded(d) => {
                write!(f, "values nested deeper than {d} levels")
            }
            DecodeErrorKind::UnexpectedDescriptor { expected, found } => {
                write!(f, "expected {expected}, found descriptor {found}")
            }
            DecodeErrorKind::MissingField { structure, field } => {
                write!(f, "mandatory field {structure}.{field} is absent")
            }
            DecodeErrorKind::InvalidField { field, reason } => {
                write!(f, "invalid field {field}: {reason}")
            }
            DecodeErrorKind::BudgetExceeded { budget } => write!(
                f,
                "decoded values would take more than the {budget} bytes of memory allowed for this input"
            ),
            DecodeErrorKind::TrailingBytes(n) => write!(f, "{n} unexpected trailing bytes"),
            DecodeErrorKind::Framing(why) => write!(f, "framing error: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}
