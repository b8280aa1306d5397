//! [`Value`]: any AMQP 1.0 value, untyped.

use bytes::Bytes;

use super::types::{
    Array, Decimal128, Decimal32, Decimal64, Described, Descriptor, Map, Symbol, Timestamp, Type,
    Uuid,
};

/// Any AMQP 1.0 value [AMQP 1.0 §1.6].
///
/// Equality is structural and exact: floats compare by their bits, so `NaN == NaN` when the bits agree and
/// `0.0 != -0.0`. That is the equality a round trip must preserve.
#[derive(Clone, Debug, Default)]
#[allow(missing_docs)]
pub enum Value {
    /// The absence of a value [AMQP 1.0 §1.6.1].
    #[default]
    Null,
    Bool(bool),
    Ubyte(u8),
    Ushort(u16),
    Uint(u32),
    Ulong(u64),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    Decimal32(Decimal32),
    Decimal64(Decimal64),
    Decimal128(Decimal128),
    Char(char),
    Timestamp(Timestamp),
    Uuid(Uuid),
    /// Opaque bytes, shared with the buffer they were decoded from.
    Binary(Bytes),
    String(String),
    Symbol(Symbol),
    List(Vec<Value>),
    Map(Map),
    Array(Array),
    Described(Box<Described>),
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        use Value::*;
        match (self, other) {
            (Null, Null) => true,
            (Bool(a), Bool(b)) => a == b,
            (Ubyte(a), Ubyte(b)) => a == b,
            (Ushort(a), Ushort(b)) => a == b,
            (Uint(a), Uint(b)) => a == b,
            (Ulong(a), Ulong(b)) => a == b,
            (Byte(a), Byte(b)) => a == b,
            (Short(a), Short(b)) => a == b,
            (Int(a), Int(b)) => a == b,
            (Long(a), Long(b)) => a == b,
            (Float(a), Float(b)) => a.to_bits() == b.to_bits(),
            (Double(a), Double(b)) => a.to_bits() == b.to_bits(),
            (Decimal32(a), Decimal32(b)) => a == b,
            (Decimal64(a), Decimal64(b)) => a == b,
            (Decimal128(a), Decimal128(b)) => a == b,
            (Char(a), Char(b)) => a == b,
            (Timestamp(a), Timestamp(b)) => a == b,
            (Uuid(a), Uuid(b)) => a == b,
            (Binary(a), Binary(b)) => a == b,
            (String(a), String(b)) => a == b,
            (Symbol(a), Symbol(b)) => a == b,
            (List(a), List(b)) => a == b,
            (Map(a), Map(b)) => a == b,
            (Array(a), Array(b)) => a == b,
            (Described(a), Described(b)) => a == b,
            _ => false,
        }
    }
}

impl Value {
    /// The value's AMQP type, or `None` for a described value.
    pub fn amqp_type(&self) -> Option<Type> {
        Some(match self {
            Value::Null => Type::Null,
            Value::Bool(_) => Type::Boolean,
            Value::Ubyte(_) => Type::Ubyte,
            Value::Ushort(_) => Type::Ushort,
            Value::Uint(_) => Type::Uint,
            Value::Ulong(_) => Type::Ulong,
            Value::Byte(_) => Type::Byte,
            Value::Short(_) => Type::Short,
            Value::Int(_) => Type::Int,
            Value::Long(_) => Type::Long,
            Value::Float(_) => Type::Float,
            Value::Double(_) => Type::Double,
            Value::Decimal32(_) => Type::Decimal32,
            Value::Decimal64(_) => Type::Decimal64,
            Value::Decimal128(_) => Type::Decimal128,
            Value::Char(_) => Type::Char,
            Value::Timestamp(_) => Type::Timestamp,
            Value::Uuid(_) => Type::Uuid,
            Value::Binary(_) => Type::Binary,
            Value::String(_) => Type::String,
            Value::Symbol(_) => Type::Symbol,
            Value::List(_) => Type::List,
            Value::Map(_) => Type::Map,
            Value::Array(_) => Type::Array,
            Value::Described(_) => return None,
        })
    }

    /// A described value.
    pub fn described(descriptor: Descriptor, value: impl Into<Value>) -> Self {
        Value::Described(Box::new(Described {
            descriptor,
            value: value.into(),
        }))
    }

    /// True for [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The text of a string or symbol.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            Value::Symbol(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// Any unsigned or non-negative signed integer, widened.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Ubyte(v) => Some(v.into()),
            Value::Ushort(v) => Some(v.into()),
            Value::Uint(v) => Some(v.into()),
            Value::Ulong(v) => Some(v),
            Value::Byte(v) => u64::try_from(v).ok(),
            Value::Short(v) => u64::try_from(v).ok(),
            Value::Int(v) => u64::try_from(v).ok(),
            Value::Long(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer that fits an `i64`, widened.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::Byte(v) => Some(v.into()),
            Value::Short(v) => Some(v.into()),
            Value::Int(v) => Some(v.into()),
            Value::Long(v) => Some(v),
            Value::Ubyte(v) => Some(v.into()),
            Value::Ushort(v) => Some(v.into()),
            Value::Uint(v) => Some(v.into()),
            Value::Ulong(v) => i64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The bytes of a binary value.
    pub fn as_binary(&self) -> Option<&Bytes> {
        match self {
            Value::Binary(b) => Some(b),
            _ => None,
        }
    }

    /// The entries of a map.
    pub fn as_map(&self) -> Option<&Map> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The elements of a list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }
}

macro_rules! from_scalar {
    ($($t:ty => $variant:ident),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Self {
                Value::$variant(v)
            }
        })*
    };
}

from_scalar! {
    bool => Bool, u8 => Ubyte, u16 => Ushort, u32 => Uint, u64 => Ulong, i8 => Byte, i16 => Short,
    i32 => Int, i64 => Long, f32 => Float, f64 => Double, char => Char, Decimal32 => Decimal32,
    Decimal64 => Decimal64, Decimal128 => Decimal128, Timestamp => Timestamp, Uuid => Uuid,
    Bytes => Binary, String => String, Symbol => Symbol, Vec<Value> => List, Map => Map, Array => Array,
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_owned())
    }
}

impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Binary(Bytes::from(b))
    }
}

impl From<&[u8]> for Value {
    fn from(b: &[u8]) -> Self {
        Value::Binary(Bytes::copy_from_slice(b))
    }
}

impl From<Described> for Value {
    fn from(d: Described) -> Self {
        Value::Described(Box::new(d))
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}
