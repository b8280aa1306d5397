//! [`Performative`] and [`SaslFrame`]: the bodies of AMQP and SASL frames, dispatched by descriptor.

use bytes::BufMut;

use super::*;
use crate::codec::{codes, Decode, DecodeError, DecodeErrorKind, Decoder, Encode};

macro_rules! frame_union {
    ($(#[$meta:meta])* $name:ident, $label:literal { $($variant:ident),* }) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        #[allow(missing_docs, clippy::large_enum_variant)]
        pub enum $name {
            $($variant($variant),)*
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
                $name::$variant(v)
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
                    return $variant::decode_fields(dec).map($name::$variant);
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
    /// The body of an AMQP frame [AMQP 1.0 §2.7].
    Performative, "performative" { Open, Begin, Attach, Flow, Transfer, Disposition, Detach, End, Close }
);

frame_union!(
    /// The body of a SASL frame [AMQP 1.0 §5.3.3].
    SaslFrame, "SASL frame" { SaslMechanisms, SaslInit, SaslChallenge, SaslResponse, SaslOutcome }
);
