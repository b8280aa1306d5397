//! [`Performative`] and [`SaslFrame`]: the bodies of AMQP and SASL frames, dispatched by descriptor.

use bytes::BufMut;

use super::*;
use crate::codec::{codes, Decode, DecodeError, DecodeErrorKind, Decoder, Encode};

macro_rules! frame_union {
    ($(#[$meta:meta])* $name:ident, $label:literal { $($variant:ident: $ty:ty),* }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        #[allow(missing_docs, clippy::large_enum_variant)]
        pub enum $name {
            $($variant($ty),)*
        }

        impl $name {
            /// The spec's name for this body, e.g. `open`.
            pub fn name(&self) -> &'static str {
                match self {
                    $($name::$variant(_) => {
                        let s = $variant::SYMBOL;
                        let s = s.strip_prefix("amqp:").unwrap_or(s);
                        s.strip_suffix(":list").unwrap_or(s)
                    })*
                }
            }
        }

        $(impl From<$variant> for $name {
            fn from(v: $variant) -> Self {
                $name::$variant(<$ty>::from(v))
            }
        })*

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
                    return $variant::decode_fields(dec).map(|v| $name::$variant(<$ty>::from(v)));
                })*
                Err(dec.error(DecodeErrorKind::UnexpectedDescriptor {
                    expected: $label,
                    found: descriptor.to_string(),
                }))
            }
        }
    };
}

frame_union!(
    /// The body of an AMQP frame [AMQP 1.0 §2.7]. `open` and `attach`, several times larger than the rest and
    /// rare, are boxed, so that moving a transfer or disposition does not copy their size.
    Performative, "performative" {
        Open: Box<Open>, Begin: Begin, Attach: Box<Attach>, Flow: Flow, Transfer: Transfer,
        Disposition: Disposition, Detach: Detach, End: End, Close: Close
    }
);

frame_union!(
    /// The body of a SASL frame [AMQP 1.0 §5.3.3].
    SaslFrame, "SASL frame" {
        SaslMechanisms: SaslMechanisms, SaslInit: SaslInit, SaslChallenge: SaslChallenge,
        SaslResponse: SaslResponse, SaslOutcome: SaslOutcome
    }
);
