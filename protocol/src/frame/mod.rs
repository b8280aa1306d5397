//! The spec's typed structures, one file per structure, and the framing that carries them.
//!
//! * Performatives [AMQP 1.0 §2.7]: [`Open`], [`Begin`], [`Attach`], [`Flow`], [`Transfer`], [`Disposition`],
//!   [`Detach`], [`End`], [`Close`], gathered in [`Performative`].
//! * SASL frames [AMQP 1.0 §5.3.3]: [`SaslMechanisms`], [`SaslInit`], [`SaslChallenge`], [`SaslResponse`],
//!   [`SaslOutcome`], gathered in [`SaslFrame`].
//! * Definitions: [`Error`] and [`ErrorCondition`], [`Source`], [`Target`], the delivery states [`Received`],
//!   [`Accepted`], [`Rejected`], [`Released`], [`Modified`], and the restricted types in [`definitions`].
//! * Transactions [AMQP 1.0 §4.5]: the [`Coordinator`] target, the [`Declare`] and [`Discharge`] message
//!   bodies, and the [`Declared`] and [`TransactionalState`] delivery states.
//! * Message sections [AMQP 1.0 §3.2]: [`Header`], [`DeliveryAnnotations`], [`MessageAnnotations`],
//!   [`Properties`], [`ApplicationProperties`], [`Data`], [`AmqpSequence`], [`AmqpValue`], [`Footer`].
//! * Framing [AMQP 1.0 §2.2-§2.3]: [`ProtocolHeader`], [`FrameHeader`] and [`Frame`].
//!
//! Every composite has every field in spec order with the spec's defaults; trailing absent fields are left out
//! when encoding.

#[macro_use]
mod macros;

mod accepted;
mod amqp_sequence;
mod amqp_value;
mod application_properties;
mod attach;
mod begin;
mod close;
mod coordinator;
mod data;
mod declare;
mod declared;
pub mod definitions;
mod delivery_annotations;
mod delivery_state;
mod detach;
mod discharge;
mod disposition;
mod end;
mod error;
mod flow;
mod footer;
mod framing;
mod header;
mod message_annotations;
mod modified;
mod open;
mod performative;
mod properties;
mod received;
mod rejected;
mod released;
mod sasl_challenge;
mod sasl_init;
mod sasl_mechanisms;
mod sasl_outcome;
mod sasl_response;
mod source;
mod target;
mod transactional_state;
mod transfer;

#[cfg(test)]
mod tests;

pub use accepted::Accepted;
pub use amqp_sequence::AmqpSequence;
pub use amqp_value::AmqpValue;
pub use application_properties::ApplicationProperties;
pub use attach::Attach;
pub use begin::Begin;
pub use close::Close;
pub use coordinator::Coordinator;
pub use data::Data;
pub use declare::Declare;
pub use declared::Declared;
pub use definitions::{
    ReceiverSettleMode, Role, SaslCode, SenderSettleMode, TerminusDurability, TerminusExpiryPolicy,
};
pub use delivery_annotations::DeliveryAnnotations;
pub use delivery_state::{DeliveryState, Outcome};
pub use detach::Detach;
pub use discharge::Discharge;
pub use disposition::Disposition;
pub use end::End;
pub use error::{truncate_utf8, Error, ErrorCondition};
pub use flow::Flow;
pub use footer::Footer;
pub use framing::{Frame, FrameBody, FrameHeader, FrameType, ProtocolHeader, ProtocolId};
pub use header::Header;
pub use message_annotations::MessageAnnotations;
pub use modified::Modified;
pub use open::Open;
pub use performative::{Performative, SaslFrame};
pub use properties::{MessageId, Properties};
pub use received::Received;
pub use rejected::Rejected;
pub use released::Released;
pub use sasl_challenge::SaslChallenge;
pub use sasl_init::SaslInit;
pub use sasl_mechanisms::SaslMechanisms;
pub use sasl_outcome::SaslOutcome;
pub use sasl_response::SaslResponse;
pub use source::Source;
pub use target::Target;
pub use transactional_state::TransactionalState;
pub use transfer::Transfer;

use crate::codec::{
    codes, Decode, DecodeError, DecodeErrorKind, Decoder, Descriptor, Symbol, Value,
};

/// A field value of one of two types, for a composite field whose wire type admits both (see `composite!`):
/// each pair that is used implements `Decode`, choosing by the value's constructor or descriptor.
pub(crate) enum Alternatives<A, B> {
    First(A),
    Second(B),
}

/// The `address` of a source or target [AMQP 1.0 §3.5.3, §3.5.4]: its type is `*` (any type that provides
/// `address`), so a string or a symbol decodes as the address text and any other value is kept as it is.
impl Decode for Alternatives<String, Value> {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        match code {
            codes::STR8 | codes::STR32 => String::decode_with(dec, code).map(Alternatives::First),
            codes::SYM8 | codes::SYM32 => {
                Symbol::decode_with(dec, code).map(|s| Alternatives::First(s.as_str().to_owned()))
            }
            _ => dec.value_body(code).map(Alternatives::Second),
        }
    }
}

/// True when `d` is the numeric `code` or the symbolic `symbol` descriptor.
pub(crate) fn check_descriptor_kind(d: &Descriptor, code: u64, symbol: &str) -> bool {
    match d {
        Descriptor::Code(c) => *c == code,
        Descriptor::Symbol(s) => s.as_bytes() == symbol.as_bytes(),
    }
}

/// Fails with `UnexpectedDescriptor` unless `d` is the numeric `code` or the symbolic `symbol` descriptor.
pub(crate) fn check_descriptor(
    dec: &Decoder,
    d: &Descriptor,
    code: u64,
    symbol: &'static str,
) -> Result<(), DecodeError> {
    if check_descriptor_kind(d, code, symbol) {
        Ok(())
    } else {
        Err(dec.error(DecodeErrorKind::UnexpectedDescriptor {
            expected: symbol,
            found: d.to_string(),
        }))
    }
}
