//! The delivery-state and outcome unions [AMQP 1.0 §2.8.9, §3.4, §4.5].

use bytes::BufMut;

use super::{
    check_descriptor_kind, Accepted, Declared, Modified, Received, Rejected, Released,
    TransactionalState,
};
use crate::codec::{codes, Decode, DecodeError, Decoder, Descriptor, Encode};

/// The state of a delivery at one end of a link: progress (`received`), a terminal outcome, or a state of the
/// transaction layer [AMQP 1.0 §2.8.9, §4.5].
#[derive(Clone, Debug, PartialEq)]
#[allow(missing_docs)]
pub enum DeliveryState {
    Received(Received),
    Accepted(Accepted),
    Rejected(Rejected),
    Released(Released),
    Modified(Modified),
    /// The outcome of a `declare` sent to a transaction coordinator [AMQP 1.0 §4.5.4].
    Declared(Declared),
    /// A delivery's state within a transaction [AMQP 1.0 §4.5.5].
    /// Boxed: twice the size of the other states, and rare.
    TransactionalState(Box<TransactionalState>),
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
    /// The outcome, if this state is one of the messaging layer's terminal outcomes [AMQP 1.0 §3.4].
    /// `declared` and `transactional-state` belong to a transaction coordinator's exchange and have none.
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            DeliveryState::Received(_)
            | DeliveryState::Declared(_)
            | DeliveryState::TransactionalState(_) => None,
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
                    return $variant::decode_fields(dec).map(|v| $name::$variant(v.into()));
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

union_codec!(DeliveryState, "delivery-state" {
    Received, Accepted, Rejected, Released, Modified, Declared, TransactionalState
});
union_codec!(Outcome, "outcome" { Accepted, Rejected, Released, Modified });
