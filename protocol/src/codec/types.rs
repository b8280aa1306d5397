//! The AMQP types that have no direct Rust counterpart ([AMQP 1.0 §1.6]).

use std::fmt;

use bytes::Bytes;

use super::value::Value;

/// A symbolic value from a constrained domain: ASCII text such as `amqp:decode-error` [AMQP 1.0 §1.6.21].
///
/// The text is held in [`Bytes`] that are always valid UTF-8: a `'static` string, a `String` taken over, or,
/// when decoded, a slice of the decoder's input, so decoding a symbol allocates nothing. A decoded symbol keeps
/// the input buffer it came from alive, as a decoded binary value does.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Symbol(Bytes);

impl Symbol {
    /// A symbol borrowed from a `'static` string, with no allocation; usable in constants.
    pub const fn from_static(s: &'static str) -> Self {
        Symbol(Bytes::from_static(s.as_bytes()))
    }

    /// A symbol over `bytes` if they are valid UTF-8, sharing them with no copy.
    pub fn from_utf8(bytes: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Symbol(bytes))
    }

    /// The symbol's text.
    pub fn as_str(&self) -> &str {
        // Every constructor checks the bytes are UTF-8, so this never falls back to "".
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// The symbol's text as bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, ":{:?}", self.as_str())
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<&'static str> for Symbol {
    fn from(s: &'static str) -> Self {
        Symbol::from_static(s)
    }
}

impl From<String> for Symbol {
    fn from(s: String) -> Self {
        Symbol(Bytes::from(s.into_bytes()))
    }
}

impl PartialEq<str> for Symbol {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for Symbol {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

/// An absolute point in time: milliseconds since the Unix epoch [AMQP 1.0 §1.6.17].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The timestamp for a [`std::time::SystemTime`], saturating outside the representable range.
    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        match t.duration_since(std::time::UNIX_EPOCH) {
            Ok(d) => Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => Timestamp(-i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX)),
        }
    }

    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0
    }
}

/// A universally unique identifier as defined by RFC 4122 section 4.1.2 [AMQP 1.0 §1.6.18].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Uuid(pub [u8; 16]);

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Uuid {
    /// The canonical 8-4-4-4-12 lowercase form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

macro_rules! decimal {
    ($(#[$meta:meta])* $name:ident, $n:literal) => {
        $(#[$meta])*
        ///
        /// The bytes are kept exactly as they are on the wire (big-endian IEEE 754 decimal); nucleon does no
        /// decimal arithmetic.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
        pub struct $name(pub [u8; $n]);
    };
}

decimal!(
    /// A 32-bit decimal floating point number (IEEE 754-2008 decimal32) [AMQP 1.0 §1.6.13].
    Decimal32,
    4
);
decimal!(
    /// A 64-bit decimal floating point number (IEEE 754-2008 decimal64) [AMQP 1.0 §1.6.14].
    Decimal64,
    8
);
decimal!(
    /// A 128-bit decimal floating point number (IEEE 754-2008 decimal128) [AMQP 1.0 §1.6.15].
    Decimal128,
    16
);

/// A polymorphic mapping from distinct keys to values [AMQP 1.0 §1.6.23].
///
/// Entries keep the order in which they were inserted or decoded, so a map survives a round trip byte for byte.
/// Lookups are linear, which is faster than hashing for the handful of entries AMQP maps usually hold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Map(Vec<(Value, Value)>);

impl Map {
    /// An empty map.
    pub fn new() -> Self {
        Map(Vec::new())
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when the map has no entries.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value stored under `key`.
    pub fn get(&self, key: &Value) -> Option<&Value> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// The value stored under a string or symbol key equal to `key`.
    pub fn get_str(&self, key: &str) -> Option<&Value> {
        self.0
            .iter()
            .find(|(k, _)| match k {
                Value::String(s) => s == key,
                Value::Symbol(s) => s == key,
                _ => false,
            })
            .map(|(_, v)| v)
    }

    /// Sets `key` to `value`, replacing (in place) an existing entry with the same key, and returns the old value.
    pub fn insert(&mut self, key: impl Into<Value>, value: impl Into<Value>) -> Option<Value> {
        let key = key.into();
        let value = value.into();
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                self.0.push((key, value));
                None
            }
        }
    }

    /// Removes the entry for `key`, keeping the order of the others.
    pub fn remove(&mut self, key: &Value) -> Option<Value> {
        let i = self.0.iter().position(|(k, _)| k == key)?;
        Some(self.0.remove(i).1)
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = &(Value, Value)> {
        self.0.iter()
    }

    /// The entries, by value.
    pub fn into_entries(self) -> Vec<(Value, Value)> {
        self.0
    }

    /// Builds a map from entries, in the given order, as they are (duplicate keys are kept; they come from a
    /// decoded peer map and are the peer's business).
    pub fn from_entries(entries: Vec<(Value, Value)>) -> Self {
        Map(entries)
    }
}

impl<K: Into<Value>, V: Into<Value>> FromIterator<(K, V)> for Map {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut m = Map::new();
        for (k, v) in iter {
            m.insert(k, v);
        }
        m
    }
}

/// The descriptor of a described type: a numeric `domain-id:descriptor-id` code or a symbol [AMQP 1.0 §1.5].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Descriptor {
    /// A numeric descriptor, e.g. `0x0000_0000_0000_0010` for `open`.
    Code(u64),
    /// A symbolic descriptor, e.g. `amqp:open:list`.
    Symbol(Symbol),
}

impl fmt::Display for Descriptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Descriptor::Code(c) => write!(f, "{:#010x}:{:#010x}", c >> 32, c & 0xffff_ffff),
            Descriptor::Symbol(s) => write!(f, "{s}"),
        }
    }
}

/// A value annotated with a descriptor that gives it an application meaning [AMQP 1.0 §1.2].
#[derive(Clone, Debug, PartialEq)]
pub struct Described {
    /// What the value means.
    pub descriptor: Descriptor,
    /// The underlying value.
    pub value: Value,
}

/// The primitive and compound types of the AMQP type system, without their encodings [AMQP 1.0 §1.6].
///
/// Used as the element type of an [`Array`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Type {
    Null,
    Boolean,
    Ubyte,
    Ushort,
    Uint,
    Ulong,
    Byte,
    Short,
    Int,
    Long,
    Float,
    Double,
    Decimal32,
    Decimal64,
    Decimal128,
    Char,
    Timestamp,
    Uuid,
    Binary,
    String,
    Symbol,
    List,
    Map,
    Array,
}

impl Type {
    /// The type's name as the spec spells it.
    pub fn name(self) -> &'static str {
        match self {
            Type::Null => "null",
            Type::Boolean => "boolean",
            Type::Ubyte => "ubyte",
            Type::Ushort => "ushort",
            Type::Uint => "uint",
            Type::Ulong => "ulong",
            Type::Byte => "byte",
            Type::Short => "short",
            Type::Int => "int",
            Type::Long => "long",
            Type::Float => "float",
            Type::Double => "double",
            Type::Decimal32 => "decimal32",
            Type::Decimal64 => "decimal64",
            Type::Decimal128 => "decimal128",
            Type::Char => "char",
            Type::Timestamp => "timestamp",
            Type::Uuid => "uuid",
            Type::Binary => "binary",
            Type::String => "string",
            Type::Symbol => "symbol",
            Type::List => "list",
            Type::Map => "map",
            Type::Array => "array",
        }
    }
}

/// Why a set of values cannot form an [`Array`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("array element {index} is not of the array's element type {expected}")]
pub struct ArrayError {
    /// The position of the offending element.
    pub index: usize,
    /// The element type the array was declared with.
    pub expected: &'static str,
}

/// A sequence of values of a single type, encoded with one shared element constructor [AMQP 1.0 §1.6.24].
///
/// The elements are plain values of the element type. For an array of described values, the shared descriptor
/// is held by the array and the elements are the underlying values.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    descriptor: Option<Box<Descriptor>>,
    element: Type,
    items: Vec<Value>,
}

impl Array {
    /// An array of `element`-typed values; fails if any value has another type.
    pub fn new(element: Type, items: Vec<Value>) -> Result<Self, ArrayError> {
        Self::check(element, &items)?;
        Ok(Array {
            descriptor: None,
            element,
            items,
        })
    }

    /// An array of described values that share `descriptor`; `items` are the underlying values.
    pub fn described(
        descriptor: Descriptor,
        element: Type,
        items: Vec<Value>,
    ) -> Result<Self, ArrayError> {
        Self::check(element, &items)?;
        Ok(Array {
            descriptor: Some(Box::new(descriptor)),
            element,
            items,
        })
    }

    fn check(element: Type, items: &[Value]) -> Result<(), ArrayError> {
        match items.iter().position(|v| v.amqp_type() != Some(element)) {
            Some(index) => Err(ArrayError {
                index,
                expected: element.name(),
            }),
            None => Ok(()),
        }
    }

    /// The element type.
    pub fn element_type(&self) -> Type {
        self.element
    }

    /// The shared descriptor, for an array of described values.
    pub fn descriptor(&self) -> Option<&Descriptor> {
        self.descriptor.as_deref()
    }

    /// The elements.
    pub fn items(&self) -> &[Value] {
        &self.items
    }

    /// The elements, by value.
    pub fn into_items(self) -> Vec<Value> {
        self.items
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the array has no elements.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// An array of symbols.
    pub fn of_symbols<I: IntoIterator<Item = Symbol>>(symbols: I) -> Self {
        Array {
            descriptor: None,
            element: Type::Symbol,
            items: symbols.into_iter().map(Value::Symbol).collect(),
        }
    }

    pub(crate) fn from_parts(
        descriptor: Option<Descriptor>,
        element: Type,
        items: Vec<Value>,
    ) -> Self {
        Array {
            descriptor: descriptor.map(Box::new),
            element,
            items,
        }
    }
}
