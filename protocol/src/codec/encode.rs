//! Encoding: the [`Encode`] trait and the smallest-form rules.
//!
//! A value is always written in its smallest encoding, as Proton does: `true`/`false`/`0` as one-byte constants
//! (0x41/0x42/0x43/0x44), small integers in one byte (0x52-0x55), 8-bit sizes for short binaries, strings and
//! symbols, `list0` for an empty list and the 8-bit list and map forms when size and count fit
//! [AMQP 1.0 §1.6]. Array elements share one constructor, so they use the fixed full-width encoding of their
//! type, and the 8-bit variable-width form only when every element fits.

use bytes::{BufMut, Bytes};

use super::codes as c;
use super::types::{Array, Descriptor, Map, Symbol, Timestamp, Type, Uuid};
use super::types::{Decimal128, Decimal32, Decimal64};
use super::value::Value;

/// A type that can be encoded as AMQP.
pub trait Encode {
    /// The exact number of bytes [`Encode::encode`] writes.
    fn encoded_size(&self) -> usize;

    /// Writes the value, constructor included.
    fn encode<B: BufMut>(&self, buf: &mut B);

    /// The encoding as a new buffer.
    fn to_bytes(&self) -> Bytes {
        let mut v = Vec::with_capacity(self.encoded_size());
        self.encode(&mut v);
        Bytes::from(v)
    }
}

impl<T: Encode> Encode for &T {
    fn encoded_size(&self) -> usize {
        (**self).encoded_size()
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        (**self).encode(buf)
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encoded_size(&self) -> usize {
        self.as_ref().map_or(1, Encode::encoded_size)
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        match self {
            Some(v) => v.encode(buf),
            None => buf.put_u8(c::NULL),
        }
    }
}

/// The encoded size of a `size`/`count` framed compound whose elements take `content` bytes.
pub(crate) fn compound_fits_small(content: usize, count: usize) -> bool {
    content < u8::MAX as usize && count <= u8::MAX as usize
}

/// Writes a list header for `count` elements of `content` bytes, choosing `list0`, `list8` or `list32`.
pub fn put_list_header<B: BufMut>(buf: &mut B, content: usize, count: usize) {
    if count == 0 {
        buf.put_u8(c::LIST0);
    } else {
        put_compound_header(buf, c::LIST8, c::LIST32, content, count);
    }
}

/// The size of the header written by [`put_list_header`].
pub fn list_header_size(content: usize, count: usize) -> usize {
    if count == 0 {
        1
    } else if compound_fits_small(content, count) {
        3
    } else {
        9
    }
}

fn put_compound_header<B: BufMut>(buf: &mut B, small: u8, large: u8, content: usize, count: usize) {
    if compound_fits_small(content, count) {
        buf.put_u8(small);
        buf.put_u8((content + 1) as u8);
        buf.put_u8(count as u8);
    } else {
        buf.put_u8(large);
        buf.put_u32((content + 4) as u32);
        buf.put_u32(count as u32);
    }
}

fn variable_size(len: usize) -> usize {
    if len <= u8::MAX as usize {
        2 + len
    } else {
        5 + len
    }
}

fn put_variable<B: BufMut>(buf: &mut B, small: u8, large: u8, bytes: &[u8]) {
    if bytes.len() <= u8::MAX as usize {
        buf.put_u8(small);
        buf.put_u8(bytes.len() as u8);
    } else {
        buf.put_u8(large);
        buf.put_u32(bytes.len() as u32);
    }
    buf.put_slice(bytes);
}

impl Encode for Descriptor {
    fn encoded_size(&self) -> usize {
        match self {
            Descriptor::Code(code) => code.encoded_size(),
            Descriptor::Symbol(s) => s.encoded_size(),
        }
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        match self {
            Descriptor::Code(code) => code.encode(buf),
            Descriptor::Symbol(s) => s.encode(buf),
        }
    }
}

impl Encode for bool {
    fn encoded_size(&self) -> usize {
        1
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u8(if *self {
            c::BOOLEAN_TRUE
        } else {
            c::BOOLEAN_FALSE
        });
    }
}

macro_rules! encode_fixed {
    ($($t:ty => $code:path, $put:ident;)*) => {
        $(impl Encode for $t {
            fn encoded_size(&self) -> usize {
                1 + std::mem::size_of::<$t>()
            }
            fn encode<B: BufMut>(&self, buf: &mut B) {
                buf.put_u8($code);
                buf.$put(*self);
            }
        })*
    };
}

encode_fixed! {
    u8 => c::UBYTE, put_u8;
    u16 => c::USHORT, put_u16;
    i8 => c::BYTE, put_i8;
    i16 => c::SHORT, put_i16;
    f32 => c::FLOAT, put_f32;
    f64 => c::DOUBLE, put_f64;
}

impl Encode for u32 {
    fn encoded_size(&self) -> usize {
        match *self {
            0 => 1,
            1..=255 => 2,
            _ => 5,
        }
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        match *self {
            0 => buf.put_u8(c::UINT_0),
            v @ 1..=255 => buf.put_slice(&[c::SMALL_UINT, v as u8]),
            v => {
                buf.put_u8(c::UINT);
                buf.put_u32(v);
            }
        }
    }
}

impl Encode for u64 {
    fn encoded_size(&self) -> usize {
        match *self {
            0 => 1,
            1..=255 => 2,
            _ => 9,
        }
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        match *self {
            0 => buf.put_u8(c::ULONG_0),
            v @ 1..=255 => buf.put_slice(&[c::SMALL_ULONG, v as u8]),
            v => {
                buf.put_u8(c::ULONG);
                buf.put_u64(v);
            }
        }
    }
}

impl Encode for i32 {
    fn encoded_size(&self) -> usize {
        if i8::try_from(*self).is_ok() {
            2
        } else {
            5
        }
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        match i8::try_from(*self) {
            Ok(v) => buf.put_slice(&[c::SMALL_INT, v as u8]),
            Err(_) => {
                buf.put_u8(c::INT);
                buf.put_i32(*self);
            }
        }
    }
}

impl Encode for i64 {
    fn encoded_size(&self) -> usize {
        if i8::try_from(*self).is_ok() {
            2
        } else {
            9
        }
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        match i8::try_from(*self) {
            Ok(v) => buf.put_slice(&[c::SMALL_LONG, v as u8]),
            Err(_) => {
                buf.put_u8(c::LONG);
                buf.put_i64(*self);
            }
        }
    }
}

impl Encode for char {
    fn encoded_size(&self) -> usize {
        5
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u8(c::CHAR);
        buf.put_u32(*self as u32);
    }
}

impl Encode for Timestamp {
    fn encoded_size(&self) -> usize {
        9
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        buf.put_u8(c::TIMESTAMP);
        buf.put_i64(self.0);
    }
}

macro_rules! encode_opaque {
    ($($t:ty => $code:path;)*) => {
        $(impl Encode for $t {
            fn encoded_size(&self) -> usize {
                1 + self.0.len()
            }
            fn encode<B: BufMut>(&self, buf: &mut B) {
                buf.put_u8($code);
                buf.put_slice(&self.0);
            }
        })*
    };
}

encode_opaque! {
    Uuid => c::UUID;
    Decimal32 => c::DECIMAL32;
    Decimal64 => c::DECIMAL64;
    Decimal128 => c::DECIMAL128;
}

impl Encode for Bytes {
    fn encoded_size(&self) -> usize {
        variable_size(self.len())
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        put_variable(buf, c::VBIN8, c::VBIN32, self);
    }
}

impl Encode for String {
    fn encoded_size(&self) -> usize {
        self.as_str().encoded_size()
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        self.as_str().encode(buf)
    }
}

impl Encode for str {
    fn encoded_size(&self) -> usize {
        variable_size(self.len())
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        put_variable(buf, c::STR8, c::STR32, self.as_bytes());
    }
}

impl Encode for Symbol {
    fn encoded_size(&self) -> usize {
        variable_size(self.as_bytes().len())
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        put_variable(buf, c::SYM8, c::SYM32, self.as_bytes());
    }
}

impl Encode for [Value] {
    fn encoded_size(&self) -> usize {
        let content: usize = self.iter().map(Encode::encoded_size).sum();
        list_header_size(content, self.len()) + content
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        let content: usize = self.iter().map(Encode::encoded_size).sum();
        put_list_header(buf, content, self.len());
        for v in self {
            v.encode(buf);
        }
    }
}

impl Encode for Map {
    fn encoded_size(&self) -> usize {
        let content = map_content(self);
        let header = if compound_fits_small(content, self.len() * 2) {
            3
        } else {
            9
        };
        header + content
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        put_compound_header(buf, c::MAP8, c::MAP32, map_content(self), self.len() * 2);
        for (k, v) in self.iter() {
            k.encode(buf);
            v.encode(buf);
        }
    }
}

fn map_content(m: &Map) -> usize {
    m.iter()
        .map(|(k, v)| k.encoded_size() + v.encoded_size())
        .sum()
}

/// A "multiple" symbol field, written as an array of symbols [AMQP 1.0 §1.3].
impl Encode for Vec<Symbol> {
    fn encoded_size(&self) -> usize {
        let (_, content) = symbol_array_layout(self);
        array_size(1, content, self.len())
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        let (code, content) = symbol_array_layout(self);
        put_array_header(buf, 1, content, self.len());
        buf.put_u8(code);
        for s in self {
            put_element_len(buf, code == c::SYM8, s.as_bytes().len());
            buf.put_slice(s.as_bytes());
        }
    }
}

fn symbol_array_layout(symbols: &[Symbol]) -> (u8, usize) {
    let small = symbols
        .iter()
        .all(|s| s.as_bytes().len() <= u8::MAX as usize);
    let per = if small { 1 } else { 4 };
    let content = symbols.iter().map(|s| per + s.as_bytes().len()).sum();
    (if small { c::SYM8 } else { c::SYM32 }, content)
}

fn put_element_len<B: BufMut>(buf: &mut B, small: bool, len: usize) {
    if small {
        buf.put_u8(len as u8);
    } else {
        buf.put_u32(len as u32);
    }
}

/// The size of an array with an element constructor of `ctor` bytes and `content` bytes of elements.
fn array_size(ctor: usize, content: usize, count: usize) -> usize {
    if compound_fits_small(ctor + content, count) {
        3 + ctor + content
    } else {
        9 + ctor + content
    }
}

fn put_array_header<B: BufMut>(buf: &mut B, ctor: usize, content: usize, count: usize) {
    put_compound_header(buf, c::ARRAY8, c::ARRAY32, ctor + content, count);
}

impl Encode for Array {
    fn encoded_size(&self) -> usize {
        let code = element_code(self.element_type(), self.items());
        let content: usize = self.items().iter().map(|v| body_size(v, code)).sum();
        array_size(element_ctor_size(self), content, self.len())
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        let code = element_code(self.element_type(), self.items());
        let content: usize = self.items().iter().map(|v| body_size(v, code)).sum();
        put_array_header(buf, element_ctor_size(self), content, self.len());
        if let Some(d) = self.descriptor() {
            buf.put_u8(c::DESCRIBED);
            d.encode(buf);
        }
        buf.put_u8(code);
        for v in self.items() {
            put_body(v, code, buf);
        }
    }
}

fn element_ctor_size(a: &Array) -> usize {
    1 + a.descriptor().map_or(0, |d| 1 + d.encoded_size())
}

/// The single element constructor for an array's items: the full-width fixed encoding, or the 8-bit variable
/// form when every item fits it.
fn element_code(element: Type, items: &[Value]) -> u8 {
    let all_small = |f: fn(&Value) -> bool| items.iter().all(f);
    match element {
        Type::Null => c::NULL,
        Type::Boolean => c::BOOLEAN,
        Type::Ubyte => c::UBYTE,
        Type::Ushort => c::USHORT,
        Type::Uint => c::UINT,
        Type::Ulong => c::ULONG,
        Type::Byte => c::BYTE,
        Type::Short => c::SHORT,
        Type::Int => c::INT,
        Type::Long => c::LONG,
        Type::Float => c::FLOAT,
        Type::Double => c::DOUBLE,
        Type::Decimal32 => c::DECIMAL32,
        Type::Decimal64 => c::DECIMAL64,
        Type::Decimal128 => c::DECIMAL128,
        Type::Char => c::CHAR,
        Type::Timestamp => c::TIMESTAMP,
        Type::Uuid => c::UUID,
        Type::Binary | Type::String | Type::Symbol => {
            let short = all_small(|v| match v {
                Value::Binary(b) => b.len() <= u8::MAX as usize,
                Value::String(s) => s.len() <= u8::MAX as usize,
                Value::Symbol(s) => s.as_bytes().len() <= u8::MAX as usize,
                _ => true,
            });
            match (element, short) {
                (Type::Binary, true) => c::VBIN8,
                (Type::Binary, false) => c::VBIN32,
                (Type::String, true) => c::STR8,
                (Type::String, false) => c::STR32,
                (_, true) => c::SYM8,
                (_, false) => c::SYM32,
            }
        }
        Type::List => {
            if all_small(|v| body_size(v, c::LIST32) <= 8 + 254 && list_len(v) <= 255) {
                c::LIST8
            } else {
                c::LIST32
            }
        }
        Type::Map => {
            if all_small(|v| body_size(v, c::MAP32) <= 8 + 254 && map_len(v) <= 255) {
                c::MAP8
            } else {
                c::MAP32
            }
        }
        Type::Array => {
            if all_small(|v| body_size(v, c::ARRAY32) <= 8 + 254 && array_len(v) <= 255) {
                c::ARRAY8
            } else {
                c::ARRAY32
            }
        }
    }
}

fn list_len(v: &Value) -> usize {
    v.as_list().map_or(0, <[Value]>::len)
}

fn map_len(v: &Value) -> usize {
    v.as_map().map_or(0, |m| m.len() * 2)
}

fn array_len(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.len(),
        _ => 0,
    }
}

/// The smallest constructor for a standalone value.
fn smallest_code(v: &Value) -> u8 {
    match v {
        Value::Null => c::NULL,
        Value::Bool(true) => c::BOOLEAN_TRUE,
        Value::Bool(false) => c::BOOLEAN_FALSE,
        Value::Uint(0) => c::UINT_0,
        Value::Uint(1..=255) => c::SMALL_UINT,
        Value::Ulong(0) => c::ULONG_0,
        Value::Ulong(1..=255) => c::SMALL_ULONG,
        Value::Int(i) if i8::try_from(*i).is_ok() => c::SMALL_INT,
        Value::Long(i) if i8::try_from(*i).is_ok() => c::SMALL_LONG,
        Value::List(l) if l.is_empty() => c::LIST0,
        Value::List(l) => {
            let content: usize = l.iter().map(Encode::encoded_size).sum();
            if compound_fits_small(content, l.len()) {
                c::LIST8
            } else {
                c::LIST32
            }
        }
        Value::Map(m) => {
            if compound_fits_small(map_content(m), m.len() * 2) {
                c::MAP8
            } else {
                c::MAP32
            }
        }
        Value::Array(a) => {
            let code = element_code(a.element_type(), a.items());
            let content: usize = a.items().iter().map(|v| body_size(v, code)).sum();
            if compound_fits_small(element_ctor_size(a) + content, a.len()) {
                c::ARRAY8
            } else {
                c::ARRAY32
            }
        }
        Value::Described(_) => c::DESCRIBED,
        other => {
            let ty = other.amqp_type().unwrap_or(Type::Null);
            element_code(ty, std::slice::from_ref(other))
        }
    }
}

/// The size of `v`'s encoding under constructor `code`, without the constructor byte.
fn body_size(v: &Value, code: u8) -> usize {
    match (v, code) {
        (Value::Described(d), _) => d.descriptor.encoded_size() + d.value.encoded_size(),
        (_, c::NULL | c::BOOLEAN_TRUE | c::BOOLEAN_FALSE | c::UINT_0 | c::ULONG_0 | c::LIST0) => 0,
        (_, c::BOOLEAN | c::UBYTE | c::BYTE | c::SMALL_UINT | c::SMALL_ULONG | c::SMALL_INT)
        | (_, c::SMALL_LONG) => 1,
        (_, c::USHORT | c::SHORT) => 2,
        (_, c::UINT | c::INT | c::FLOAT | c::DECIMAL32 | c::CHAR) => 4,
        (_, c::ULONG | c::LONG | c::DOUBLE | c::DECIMAL64 | c::TIMESTAMP) => 8,
        (_, c::DECIMAL128 | c::UUID) => 16,
        (Value::Binary(b), _) => len_prefix(code) + b.len(),
        (Value::String(s), _) => len_prefix(code) + s.len(),
        (Value::Symbol(s), _) => len_prefix(code) + s.as_bytes().len(),
        (Value::List(l), _) => {
            len_prefix(code) * 2 + l.iter().map(Encode::encoded_size).sum::<usize>()
        }
        (Value::Map(m), _) => len_prefix(code) * 2 + map_content(m),
        (Value::Array(a), _) => {
            let inner = element_code(a.element_type(), a.items());
            let content: usize = a.items().iter().map(|v| body_size(v, inner)).sum();
            len_prefix(code) * 2 + element_ctor_size(a) + content
        }
        _ => 0,
    }
}

fn len_prefix(code: u8) -> usize {
    match code {
        c::VBIN8 | c::STR8 | c::SYM8 | c::LIST8 | c::MAP8 | c::ARRAY8 => 1,
        _ => 4,
    }
}

/// Writes `v`'s encoding under constructor `code`, without the constructor byte.
fn put_body<B: BufMut>(v: &Value, code: u8, buf: &mut B) {
    let small = len_prefix(code) == 1;
    match v {
        Value::Described(d) => {
            d.descriptor.encode(buf);
            d.value.encode(buf);
        }
        Value::Null => {}
        Value::Bool(b) => {
            if code == c::BOOLEAN {
                buf.put_u8(u8::from(*b));
            }
        }
        Value::Ubyte(x) => buf.put_u8(*x),
        Value::Ushort(x) => buf.put_u16(*x),
        Value::Uint(x) => match code {
            c::UINT => buf.put_u32(*x),
            c::SMALL_UINT => buf.put_u8(*x as u8),
            _ => {}
        },
        Value::Ulong(x) => match code {
            c::ULONG => buf.put_u64(*x),
            c::SMALL_ULONG => buf.put_u8(*x as u8),
            _ => {}
        },
        Value::Byte(x) => buf.put_i8(*x),
        Value::Short(x) => buf.put_i16(*x),
        Value::Int(x) => match code {
            c::INT => buf.put_i32(*x),
            _ => buf.put_i8(*x as i8),
        },
        Value::Long(x) => match code {
            c::LONG => buf.put_i64(*x),
            _ => buf.put_i8(*x as i8),
        },
        Value::Float(x) => buf.put_f32(*x),
        Value::Double(x) => buf.put_f64(*x),
        Value::Decimal32(x) => buf.put_slice(&x.0),
        Value::Decimal64(x) => buf.put_slice(&x.0),
        Value::Decimal128(x) => buf.put_slice(&x.0),
        Value::Char(x) => buf.put_u32(*x as u32),
        Value::Timestamp(x) => buf.put_i64(x.0),
        Value::Uuid(x) => buf.put_slice(&x.0),
        Value::Binary(b) => {
            put_element_len(buf, small, b.len());
            buf.put_slice(b);
        }
        Value::String(s) => {
            put_element_len(buf, small, s.len());
            buf.put_slice(s.as_bytes());
        }
        Value::Symbol(s) => {
            put_element_len(buf, small, s.as_bytes().len());
            buf.put_slice(s.as_bytes());
        }
        Value::List(l) => {
            if code != c::LIST0 {
                let content: usize = l.iter().map(Encode::encoded_size).sum();
                put_element_len(buf, small, content + len_prefix(code));
                put_element_len(buf, small, l.len());
                for item in l {
                    item.encode(buf);
                }
            }
        }
        Value::Map(m) => {
            put_element_len(buf, small, map_content(m) + len_prefix(code));
            put_element_len(buf, small, m.len() * 2);
            for (k, v) in m.iter() {
                k.encode(buf);
                v.encode(buf);
            }
        }
        Value::Array(a) => {
            let inner = element_code(a.element_type(), a.items());
            let content: usize = a.items().iter().map(|v| body_size(v, inner)).sum();
            put_element_len(
                buf,
                small,
                len_prefix(code) + element_ctor_size(a) + content,
            );
            put_element_len(buf, small, a.len());
            if let Some(d) = a.descriptor() {
                buf.put_u8(c::DESCRIBED);
                d.encode(buf);
            }
            buf.put_u8(inner);
            for item in a.items() {
                put_body(item, inner, buf);
            }
        }
    }
}

impl Encode for Value {
    fn encoded_size(&self) -> usize {
        let code = smallest_code(self);
        1 + body_size(self, code)
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        let code = smallest_code(self);
        buf.put_u8(code);
        put_body(self, code, buf);
    }
}

impl Encode for Vec<Value> {
    fn encoded_size(&self) -> usize {
        self.as_slice().encoded_size()
    }
    fn encode<B: BufMut>(&self, buf: &mut B) {
        self.as_slice().encode(buf)
    }
}
