//! The delivery-state and outcome unions [AMQP 1.0 §2.8.9, §3.4].

use bytes::BufMut;

use super::{check_descriptor_kind, Accepted, Modified, Received, Rejected, Released};
use crate::codec::{codes, Decode, DecodeError, Decoder, Descriptor, Encode};

/// The state of a delivery at one end of a link: progress (`received`) or a terminal outcome
/// [AMQP 1.0 §2.8.9].
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum DeliveryState {
    Received(Received),
    Accepted(Accepted),
    Rejected(Rejected),
    Released(Released),
    Modified(Modified),
}

/// A terminal delivery state [AMQP 1.0 §3.4].
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum Outcome {
    Accepted(Accepted),
    Rejected(Rejected),
    Released(Released),
    Modified(Modified),
}

impl DeliveryState {
    /// The outcome, if this state is terminal.
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            DeliveryState::Received(_) => None,
            DeliveryState::Accepted(a) => Some(Outcome::Accepted(a.clone())),
            DeliveryState::Rejected(r) => Some(Outcome::Rejected(r.clone())),
            DeliveryState::Released(r) => Some(Outcome::Released(r.clone())),
            DeliveryState::Modified(m) => Some(Outcome::Modified(m.clone())),
        }
    }
}

impl From<Outcome> for DeliveryState {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Accepted(a) => DeliveryState::Accepted(a),
            Outcome::Rejected(r) => DeliveryState::Rejected(r),
            Outcome::Released(r) => DeliveryState::Released(r),
            Outcome::Modified(m) => DeliveryState::Modified(m),
        }
    }
}

macro_rules! union_codec {
    ($name:ident, $label:literal { $($variant:ident),* }) => {
        impl Encode for $name {
            fn encoded_size(&self) -> usize {
                match self {
                    $($name::$variant(v) => v.encoded_size(),)*
                }
            }
            fn encode<B: BufMut>(&self, buf: &mut B) {
                match self {
                    $($name::$variant(v) => v.encode(buf),)*
                }
            }
        }

        impl Decode for $name {
            fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
                if code != codes::DESCRIBED {
                    return Err(dec.unexpected($label, code));
                }
                let descriptor = dec.read_descriptor()?;
                $(if check_descriptor_kind(&descriptor, $variant::CODE, $variant::SYMBOL) {
                    return $variant::decode_fields(dec).map($name::$variant);
                })*
                Err(unexpected_descriptor(dec, $label, &descriptor))
            }
        }
    };
}

fn unexpected_descriptor(dec: &Decoder, expected: &'static str, d: &Descriptor) -> DecodeError {
    dec.error(crate::codec::DecodeErrorKind::UnexpectedDescriptor {
        expected,
        found: d.to_string(),
    })
}

union_codec!(DeliveryState, "delivery-state" { Received, Accepted, Rejected, Released, Modified });
union_codec!(Outcome, "outcome" { Accepted, Rejected, Released, Modified });
