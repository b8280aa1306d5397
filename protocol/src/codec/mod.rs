//! The AMQP 1.0 type system and its encodings [AMQP 1.0 §1].
//!
//! * [`Value`] holds any value; [`Encode`] and [`Decode`] convert values and typed structures to and from bytes.
//! * Encoding always picks the smallest form (see [`encode`](self::Encode)); decoding accepts every form.
//! * [`Decoder`] checks every size and count against the bytes present before it allocates, bounds nesting
//!   depth, bounds the memory decoded values take to a budget relative to the input
//!   ([`default_decode_budget`]), and reports failures as a typed [`DecodeError`] with the byte offset and
//!   the AMQP condition to send.

pub mod codes;
mod decode;
mod encode;
mod error;
pub(crate) mod skip;
mod types;
mod value;

#[cfg(test)]
mod tests;

pub use decode::{
    default_decode_budget, CompoundHeader, Decode, Decoder, DEFAULT_DECODE_BUDGET_FACTOR,
    DEFAULT_DECODE_BUDGET_FLOOR, DEFAULT_MAX_DEPTH,
};
pub use encode::{list_header_size, put_list_header, Encode};
pub use error::{DecodeError, DecodeErrorKind};
pub use types::{
    Array, ArrayError, Decimal128, Decimal32, Decimal64, Described, Descriptor, Map, Symbol,
    Timestamp, Type, Uuid,
};
pub use value::Value;
