//! Macros that generate the spec's composite and restricted types from a field table.

/// Defines a composite type: a described list with fields in spec order [AMQP 1.0 §1.4].
///
/// Each field is one of:
/// * `required name: T`: mandatory; decoding fails with `MissingField` when it is absent or null.
/// * `optional name: T`: held as `Option<T>`.
/// * `default name: T = expr`: the spec's default; null or absent decodes as the default, and a value equal to the
///   default is encoded as null (so trailing defaults are left out).
///
/// An `optional` field may name an alternative: `optional name: T | other: U` is one field on the wire held in
/// two struct fields, `name: Option<T>` and `other: Option<U>`, decoded through `Alternatives<T, U>`
/// (whose `Decode` picks the type) and encoded from `name` when it is set, else from `other`.
///
/// Trailing absent fields are left out when encoding; extra trailing fields from a newer peer are skipped.
macro_rules! composite {
    (
        $(#[$meta:meta])*
        pub struct $name:ident($sym:literal, $code:literal) {
            $(
                $(#[$fmeta:meta])*
                $kind:ident $field:ident : $fty:ty
                    $(| $(#[$ameta:meta])* $alt:ident : $aty:ty)?
                    $(= $default:expr)?
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq)]
        pub struct $name {
            $(
                $(#[$fmeta])*
                pub $field: composite!(@ty $kind $fty),
                $($(#[$ameta])* pub $alt: Option<$aty>,)?
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                $name {
                    $(
                        $field: composite!(@default $kind $(, $default)?),
                        $($alt: None::<$aty>,)?
                    )*
                }
            }
        }

        impl $name {
            /// The numeric descriptor.
            pub const CODE: u64 = $code;
            /// The symbolic descriptor.
            pub const SYMBOL: &'static str = $sym;

            /// (fields to encode, bytes they take): trailing absent fields are dropped and inner absent
            /// fields become one-byte nulls.
            #[allow(unused_mut, unused_assignments, unused_variables)]
            fn layout(&self) -> (usize, usize) {
                let mut count = 0;
                let mut content = 0;
                let mut nulls = 0;
                $(
                    match composite!(@size $kind self.$field $(, $default)? $(; self.$alt)?) {
                        Some(n) => {
                            content += nulls + n;
                            count += nulls + 1;
                            nulls = 0;
                        }
                        None => nulls += 1,
                    }
                )*
                (count, content)
            }

            /// Decodes the field list that follows this type's descriptor.
            #[allow(unused_mut, unused_variables)]
            pub(crate) fn decode_fields(
                dec: &mut $crate::codec::Decoder,
            ) -> Result<Self, $crate::codec::DecodeError> {
                use $crate::codec::codes as c;
                let code = dec.read_constructor()?;
                if !matches!(code, c::LIST0 | c::LIST8 | c::LIST32) {
                    return Err(dec.unexpected(concat!($sym, " field list"), code));
                }
                let header = dec.begin_compound(code)?;
                let mut left = header.count;
                // The closure keeps `end_compound` running when a field fails.
                #[allow(clippy::redundant_closure_call)]
                let fields = (|| {
                    $(
                        let present = left > 0;
                        left = left.saturating_sub(1);
                        composite!(
                            @let $kind $fty, dec, present, $sym, $field $(, $default)? $(; $alt: $aty)?
                        );
                    )*
                    Ok($name { $($field, $($alt,)?)* })
                })();
                dec.end_compound(header);
                fields
            }
        }

        impl $crate::codec::Encode for $name {
            fn encoded_size(&self) -> usize {
                let (count, content) = self.layout();
                1 + $crate::codec::Encode::encoded_size(&($code as u64))
                    + $crate::codec::list_header_size(content, count)
                    + content
            }

            #[allow(unused_mut, unused_variables, unused_assignments)]
            fn encode<B: bytes::BufMut>(&self, buf: &mut B) {
                let (count, content) = self.layout();
                buf.put_u8($crate::codec::codes::DESCRIBED);
                $crate::codec::Encode::encode(&($code as u64), buf);
                $crate::codec::put_list_header(buf, content, count);
                let mut left = count;
                $(
                    if left > 0 {
                        left -= 1;
                        composite!(@encode $kind self.$field, buf $(, $default)? $(; self.$alt)?);
                    }
                )*
            }
        }

        impl $crate::codec::Decode for $name {
            fn decode_with(
                dec: &mut $crate::codec::Decoder,
                code: u8,
            ) -> Result<Self, $crate::codec::DecodeError> {
                if code != $crate::codec::codes::DESCRIBED {
                    return Err(dec.unexpected($sym, code));
                }
                let descriptor = dec.read_descriptor()?;
                $crate::frame::check_descriptor(dec, &descriptor, $code, $sym)?;
                Self::decode_fields(dec)
            }
        }
    };

    (@ty required $t:ty) => { $t };
    (@ty optional $t:ty) => { Option<$t> };
    (@ty default $t:ty) => { $t };

    (@default required) => { Default::default() };
    (@default optional) => { None };
    (@default default, $d:expr) => { $d };

    (@size optional $e:expr; $a:expr) => {
        match &$e {
            Some(v) => Some($crate::codec::Encode::encoded_size(v)),
            None => $a.as_ref().map($crate::codec::Encode::encoded_size),
        }
    };
    (@size required $e:expr) => { Some($crate::codec::Encode::encoded_size(&$e)) };
    (@size optional $e:expr) => { $e.as_ref().map($crate::codec::Encode::encoded_size) };
    (@size default $e:expr, $d:expr) => {
        if $e == $d { None } else { Some($crate::codec::Encode::encoded_size(&$e)) }
    };

    (@encode optional $e:expr, $buf:ident; $a:expr) => {
        match &$e {
            Some(v) => $crate::codec::Encode::encode(v, $buf),
            None => $crate::codec::Encode::encode(&$a, $buf),
        }
    };
    (@encode required $e:expr, $buf:ident) => { $crate::codec::Encode::encode(&$e, $buf) };
    (@encode optional $e:expr, $buf:ident) => { $crate::codec::Encode::encode(&$e, $buf) };
    (@encode default $e:expr, $buf:ident, $d:expr) => {
        if $e == $d {
            $buf.put_u8($crate::codec::codes::NULL)
        } else {
            $crate::codec::Encode::encode(&$e, $buf)
        }
    };

    (@let optional $t:ty, $dec:ident, $present:ident, $sym:literal, $field:ident; $alt:ident: $aty:ty) => {
        let ($field, $alt) = if $present {
            match <Option<$crate::frame::Alternatives<$t, $aty>> as $crate::codec::Decode>::decode($dec)? {
                Some($crate::frame::Alternatives::First(v)) => (Some(v), None),
                Some($crate::frame::Alternatives::Second(v)) => (None, Some(v)),
                None => (None, None),
            }
        } else {
            (None, None)
        };
    };
    (@let $kind:ident $t:ty, $dec:ident, $present:ident, $sym:literal, $field:ident $(, $d:expr)?) => {
        let $field = composite!(@decode $kind $t, $dec, $present, $sym, $field $(, $d)?);
    };

    (@decode required $t:ty, $dec:ident, $present:ident, $sym:literal, $field:ident) => {{
        let value = if $present {
            <Option<$t> as $crate::codec::Decode>::decode($dec)?
        } else {
            None
        };
        match value {
            Some(v) => v,
            None => {
                return Err($dec.error($crate::codec::DecodeErrorKind::MissingField {
                    structure: $sym,
                    field: stringify!($field),
                }))
            }
        }
    }};
    (@decode optional $t:ty, $dec:ident, $present:ident, $sym:literal, $field:ident) => {
        if $present {
            <Option<$t> as $crate::codec::Decode>::decode($dec)?
        } else {
            None
        }
    };
    (@decode default $t:ty, $dec:ident, $present:ident, $sym:literal, $field:ident, $d:expr) => {
        if $present {
            <Option<$t> as $crate::codec::Decode>::decode($dec)?.unwrap_or($d)
        } else {
            $d
        }
    };
}

/// Defines a described type that wraps a single value rather than a field list, such as the `data` and
/// `amqp-value` sections [AMQP 1.0 §3.2].
macro_rules! described_newtype {
    (
        $(#[$meta:meta])*
        pub struct $name:ident($sym:literal, $code:literal, $inner:ty);
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Default)]
        pub struct $name(pub $inner);

        impl $name {
            /// The numeric descriptor.
            pub const CODE: u64 = $code;
            /// The symbolic descriptor.
            pub const SYMBOL: &'static str = $sym;

            /// Decodes the value that follows this type's descriptor.
            pub(crate) fn decode_fields(
                dec: &mut $crate::codec::Decoder,
            ) -> Result<Self, $crate::codec::DecodeError> {
                <$inner as $crate::codec::Decode>::decode(dec).map($name)
            }
        }

        impl $crate::codec::Encode for $name {
            fn encoded_size(&self) -> usize {
                1 + $crate::codec::Encode::encoded_size(&($code as u64))
                    + $crate::codec::Encode::encoded_size(&self.0)
            }

            fn encode<B: bytes::BufMut>(&self, buf: &mut B) {
                buf.put_u8($crate::codec::codes::DESCRIBED);
                $crate::codec::Encode::encode(&($code as u64), buf);
                $crate::codec::Encode::encode(&self.0, buf);
            }
        }

        impl $crate::codec::Decode for $name {
            fn decode_with(
                dec: &mut $crate::codec::Decoder,
                code: u8,
            ) -> Result<Self, $crate::codec::DecodeError> {
                if code != $crate::codec::codes::DESCRIBED {
                    return Err(dec.unexpected($sym, code));
                }
                let descriptor = dec.read_descriptor()?;
                $crate::frame::check_descriptor(dec, &descriptor, $code, $sym)?;
                Self::decode_fields(dec)
            }
        }
    };
}

/// Defines a restricted type: a Rust enum over a fixed set of values of an AMQP source type
/// [AMQP 1.0 §1.3]. Values outside the set fail to decode with `InvalidField`.
macro_rules! restricted {
    (
        $(#[$meta:meta])*
        pub enum $name:ident: $src:ty as $label:literal {
            $($(#[$vmeta:meta])* $variant:ident = $value:expr,)*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl Default for $name {
            /// The first value the spec lists.
            fn default() -> Self {
                [$($name::$variant),*][0]
            }
        }

        impl $name {
            /// The value on the wire.
            pub fn value(self) -> $src {
                match self {
                    $($name::$variant => $value,)*
                }
            }

            /// The variant for a wire value.
            pub fn from_value(v: &$src) -> Option<Self> {
                $(if *v == $value {
                    return Some($name::$variant);
                })*
                None
            }
        }

        impl $crate::codec::Encode for $name {
            fn encoded_size(&self) -> usize {
                $crate::codec::Encode::encoded_size(&self.value())
            }
            fn encode<B: bytes::BufMut>(&self, buf: &mut B) {
                $crate::codec::Encode::encode(&self.value(), buf)
            }
        }

        impl $crate::codec::Decode for $name {
            fn decode_with(
                dec: &mut $crate::codec::Decoder,
                code: u8,
            ) -> Result<Self, $crate::codec::DecodeError> {
                let v = <$src as $crate::codec::Decode>::decode_with(dec, code)?;
                $name::from_value(&v).ok_or_else(|| {
                    dec.error($crate::codec::DecodeErrorKind::InvalidField {
                        field: $label,
                        reason: format!("{v:?} is not a valid {}", $label),
                    })
                })
            }
        }
    };
}
