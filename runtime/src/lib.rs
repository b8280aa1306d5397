//! # nucleon
//!
//! AMQP 1.0 messaging for Rust with the threading model of Apache Qpid Proton, built on actix.
//!
//! Today this crate re-exports the sans-IO protocol crate: the complete AMQP 1.0 type system codec, the typed
//! frames and [`Message`]. The actix runtime (container, connection actors, handlers, work queues) builds on it.
#![warn(missing_docs)]

pub use nucleon_protocol as protocol;
pub use nucleon_protocol::{Body, Message, MessageBuilder, Value};
