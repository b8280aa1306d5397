//! The spec's typed structures, one file per structure, and the framing that carries them.
//!
//! * Performatives [AMQP 1.0 §2.7]: [`Open`], [`Begin`], [`Attach`], [`Flow`], [`Transfer`], [`Disposition`],
//!   [`Detach`], [`End`], [`Close`], gathered in [`Performative`].
//! * SASL frames [AMQP 1.0 §5.3.3]: [`SaslMechanisms`], [`SaslInit`], [`SaslChallenge`], [`SaslResponse`],
//!   [`SaslOutcome`], gathered in [`SaslFrame`].
//! * Definitions: [`Error`] and [`ErrorCondition`], [`Source`], [`Target`], the delivery states [`Received`],
//!   [`Accepted`], [`Rejected`], [`Released`], [`Modified`], and the restricted types in [`definitions`].
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
mod data;
pub mod definitions;
mod delivery_annotations;
mod delivery_state;
mod detach;
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
pub use data::Data;
pub use definitions::{
    ReceiverSettleMode, Role, SaslCode, SenderSettleMode, TerminusDurability, TerminusExpiryPolicy,
};
pub use delivery_annotations::DeliveryAnnotations;
pub use delivery_state::{DeliveryState, Outcome};
pub use detach::Detach;
pub use disposition::Disposition;
pub use end::End;
pub use error::{Error, ErrorCondition};
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
pub use transfer::Transfer;

use crate::codec::{DecodeError, DecodeErrorKind, Decoder, Descriptor};

/// True when `d` is the numeric `code` or the symbolic `symbol` descriptor.
pub(crate) fn check_descriptor_kind(d: &Descriptor, code: u64, symbol: &str) -> bool {
    match d {
        Descriptor::Code(c) => *c == code,
        Descriptor::Symbol(s) => s.as_str() == symbol,
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
