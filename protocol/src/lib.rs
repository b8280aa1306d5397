//! # nucleon-protocol
//!
//! The sans-IO half of nucleon: everything about AMQP 1.0 that can be expressed as bytes in and bytes out.
//!
//! * [`codec`]: the AMQP 1.0 type system ([AMQP 1.0 §1]) and its encodings, as [`Value`] plus the
//!   [`Encode`] / [`Decode`] traits used by every typed structure.
//! * [`frame`]: one type per structure in the spec (performatives, SASL frames, delivery states, message
//!   sections) and the frame/protocol headers ([AMQP 1.0 §2.3]).
//! * [`Message`]: the bare message as a plain `Send + Clone` value ([AMQP 1.0 §3.2]); [`RawMessage`]: one
//!   kept as its received bytes, checked but decoded only on demand (for brokers and relays).
//! * [`engine`]: the connection engine, Proton's `connection_driver` in sans-IO form: bytes, time and
//!   application calls in; bytes, events and one timer out.
//! * [`fmt`]: one-line and indented text forms of values, frames and messages (`amqp-dump`, frame trace).
//!
//! This crate never does IO, never reads the clock and never spawns threads. It does not depend on tokio or
//! actix; the `nucleon` crate builds the runtime on top of it.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod engine;
pub mod fmt;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod message;

pub use codec::{Decode, DecodeError, Encode, Value};
pub use message::{Body, Message, MessageBuilder, RawMessage};
