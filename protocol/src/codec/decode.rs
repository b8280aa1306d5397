//! Decoding: the [`Decoder`] cursor and the [`Decode`] trait for typed values.
//!
//! Every form of every type is accepted [AMQP 1.0 §1.6]. Nothing panics and nothing is allocated on the word of
//! a size or count field: each claim is checked against the bytes actually present first.

use bytes::{Buf, Bytes};

use super::codes as c;
use super::error::{DecodeError, DecodeErrorKind};
use super::types::{
    Array, Decimal128, Decimal32, Decimal64, Described, Descriptor, Map, Symbol, Timestamp, Type,
    Uuid,
};
use super::value::Value;

/// Elements of zero-width arrays (nulls, `true`, `uint0`, ...) a decoder accepts however short its input is,
/// so an encoder's array of many nulls still decodes; beyond it, one element per input byte.
const ZERO_WIDTH_FLOOR: usize = 1 << 16;

/// How deeply compound values (lists, maps, arrays, described values) may nest by default.
pub const DEFAULT_MAX_DEPTH: usize = 64;

/// Heap bytes of decoded values a decoder allows per input byte by default; see [`default_decode_budget`].
pub const DEFAULT_DECODE_BUDGET_FACTOR: usize = 8;

/// Heap bytes of decoded values a decoder allows on top of [`DEFAULT_DECODE_BUDGET_FACTOR`] per input byte.
pub const DEFAULT_DECODE_BUDGET_FLOOR: usize = 32 << 20;

/// The default decode budget for `input_len` bytes: `8 * input_len + 32 MiB` heap bytes of decoded values.
///
/// Every byte from the network is hostile, and a [`Value`] is 40 bytes: a list of nulls, an array of booleans
/// or a list of empty lists decodes one `Value` per input byte, 40 times the input. The budget caps that at
/// 8 times the input plus a floor, and the decoder refuses with [`DecodeErrorKind::BudgetExceeded`]
/// (`amqp:decode-error`) before allocating past it. The numbers admit realistic data:
///
/// * arrays of 4-byte ints (10 times the input) up to 16 M elements, of 8-byte longs, doubles or timestamps
///   (5 times) of any length, and lists of strings averaging 3 or more bytes;
/// * from the floor, about 800 K one-byte elements in any message, e.g. a 768 Ki-element array of booleans.
///
/// A 16 MiB hostile message costs at most 160 MiB of decoded values instead of 640 MiB. A compact
/// representation of arrays would cost less still, but would change [`Array`]'s slice-of-values API that the
/// runtime, the examples and the encoder use; the budget bounds every shape (lists, maps, described values,
/// strings) with no API change.
pub fn default_decode_budget(input_len: usize) -> usize {
    input_len
        .saturating_mul(DEFAULT_DECODE_BUDGET_FACTOR)
        .saturating_add(DEFAULT_DECODE_BUDGET_FLOOR)
}

/// A cursor over encoded AMQP data.
///
/// Binary values are decoded as [`Bytes`] slices of the input, with no copy.
#[derive(Debug, Clone)]
pub struct Decoder {
    buf: Bytes,
    pos: usize,
    end: usize,
    base: usize,
    depth: usize,
    max_depth: usize,
    /// Elements of zero-width arrays (e.g. an array of nulls) cost no input bytes, so their count is bounded
    /// (the input length, at least [`ZERO_WIDTH_FLOOR`]) before the decode budget is charged for them.
    zero_width_budget: usize,
    /// Heap bytes the decoded values may take: see [`default_decode_budget`].
    budget: usize,
    /// Heap bytes charged so far: element slots, boxes and copied text.
    spent: usize,
}

/// The framing of a list, map or array: where its elements end and how many there are.
#[derive(Debug, Clone, Copy)]
pub struct CompoundHeader {
    /// The element count (for a map, keys plus values).
    pub count: u32,
    /// The offset, within the decoder's buffer, just past the compound value.
    end: usize,
    outer_end: usize,
}

impl Decoder {
    /// A decoder over `buf`, reporting offsets from its start.
    pub fn new(buf: Bytes) -> Self {
        Self::with_base_offset(buf, 0)
    }

    /// A decoder over `buf` whose error offsets are shifted by `base` (the buffer's position in a larger stream).
    pub fn with_base_offset(buf: Bytes, base: usize) -> Self {
        let end = buf.len();
        Decoder {
            buf,
            pos: 0,
            end,
            base,
            depth: 0,
            max_depth: DEFAULT_MAX_DEPTH,
            zero_width_budget: end.max(ZERO_WIDTH_FLOOR),
            budget: default_decode_budget(end),
            spent: 0,
        }
    }

    /// Changes the nesting limit.
    pub fn set_max_depth(&mut self, max_depth: usize) {
        self.max_depth = max_depth;
    }

    /// Changes the decode budget: the heap bytes the values decoded by this decoder may take in all (the
    /// default is [`default_decode_budget`] of the input length).
    pub fn set_budget(&mut self, bytes: usize) {
        self.budget = bytes;
    }

    /// The heap bytes still allowed before decoding fails with [`DecodeErrorKind::BudgetExceeded`].
    pub fn budget_left(&self) -> usize {
        self.budget.saturating_sub(self.spent)
    }

    /// Charges `bytes` of heap the caller is about to allocate for decoded data against the budget, or fails
    /// with [`DecodeErrorKind::BudgetExceeded`] (charging nothing) when they do not fit.
    pub fn charge(&mut self, bytes: usize) -> Result<(), DecodeError> {
        if bytes > self.budget_left() {
            return Err(self.error(DecodeErrorKind::BudgetExceeded {
                budget: self.budget,
            }));
        }
        self.spent += bytes;
        Ok(())
    }

    /// Charges the slots of `count` elements of type `T` in a vector allocated with that capacity.
    fn charge_slots<T>(&mut self, count: usize) -> Result<(), DecodeError> {
        self.charge(count.saturating_mul(std::mem::size_of::<T>()))
    }

    /// Bytes left before the end of the current region.
    pub fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// True when the current region is exhausted.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    /// The absolute offset of the next byte.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// The undecoded rest of the current region, without consuming it.
    pub fn rest(&self) -> Bytes {
        self.buf.slice(self.pos..self.end)
    }

    /// The bytes left before the end of the current region, as [`rest`](Self::rest) but consuming the decoder:
    /// the input is narrowed in place, with no new reference to it (no atomic increment and decrement).
    pub fn into_rest(self) -> Bytes {
        let mut buf = self.buf;
        buf.truncate(self.end);
        buf.advance(self.pos);
        buf
    }

    /// An error of `kind` at the current position.
    pub fn error(&self, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(self.offset(), kind)
    }

    fn error_at(&self, pos: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(self.base + pos, kind)
    }

    /// An [`DecodeErrorKind::UnexpectedType`] error for a constructor `found` that was just read.
    pub fn unexpected(&self, expected: &'static str, found: u8) -> DecodeError {
        self.error_at(
            self.pos.saturating_sub(1),
            DecodeErrorKind::UnexpectedType { expected, found },
        )
    }

    fn need(&self, n: usize) -> Result<(), DecodeError> {
        if self.remaining() < n {
            Err(self.error(DecodeErrorKind::UnexpectedEof {
                needed: n,
                available: self.remaining(),
            }))
        } else {
            Ok(())
        }
    }

    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&[u8], DecodeError> {
        self.need(n)?;
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..self.pos])
    }

    /// Takes the next `n` bytes as a shared slice of the input.
    pub fn take_bytes(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        self.need(n)?;
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads one byte.
    pub fn read_u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// Reads the next byte without consuming it.
    pub fn peek_u8(&self) -> Result<u8, DecodeError> {
        self.need(1)?;
        Ok(self.buf[self.pos])
    }

    fn read_u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn read_u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn read_u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads a constructor's format code. For a described value this is [`c::DESCRIBED`] and the descriptor
    /// follows; see [`Decoder::read_descriptor`].
    pub fn read_constructor(&mut self) -> Result<u8, DecodeError> {
        self.read_u8()
    }

    /// Reads the descriptor that follows a [`c::DESCRIBED`] constructor.
    pub fn read_descriptor(&mut self) -> Result<Descriptor, DecodeError> {
        let code = self.read_u8()?;
        match code {
            c::ULONG | c::SMALL_ULONG | c::ULONG_0 => {
                Ok(Descriptor::Code(u64::decode_with(self, code)?))
            }
            c::SYM8 | c::SYM32 => Ok(Descriptor::Symbol(Symbol::decode_with(self, code)?)),
            _ => Err(self.error_at(self.pos - 1, DecodeErrorKind::InvalidDescriptor)),
        }
    }

    /// Reads a variable-width size field (1 byte for the `*8` forms, 4 for the `*32` forms) and checks it
    /// against the bytes present.
    fn read_size(&mut self, wide: bool) -> Result<usize, DecodeError> {
        let at = self.pos;
        let size = if wide {
            self.read_u32()? as usize
        } else {
            usize::from(self.read_u8()?)
        };
        if size > self.remaining() {
            return Err(self.error_at(
                at,
                DecodeErrorKind::LengthOutOfBounds {
                    claimed: size as u64,
                    available: self.remaining() as u64,
                },
            ));
        }
        Ok(size)
    }

    fn enter(&mut self) -> Result<(), DecodeError> {
        if self.depth >= self.max_depth {
            return Err(self.error(DecodeErrorKind::DepthLimitExceeded(self.max_depth)));
        }
        self.depth += 1;
        Ok(())
    }

    /// Reads the size and count of a list, map or array whose constructor `code` was just read, and limits the
    /// decoder to its contents until [`Decoder::end_compound`]. `list0` has no contents.
    pub fn begin_compound(&mut self, code: u8) -> Result<CompoundHeader, DecodeError> {
        let wide = matches!(code, c::LIST32 | c::MAP32 | c::ARRAY32);
        let (size, count_at) = match code {
            c::LIST0 => (0, self.pos),
            c::LIST8 | c::LIST32 | c::MAP8 | c::MAP32 | c::ARRAY8 | c::ARRAY32 => {
                (self.read_size(wide)?, self.pos)
            }
            _ => return Err(self.unexpected("list, map or array", code)),
        };
        let end = self.pos + size;
        let outer_end = self.end;
        self.end = end;
        let count = match code {
            c::LIST0 => 0,
            _ if wide => self.read_u32()?,
            _ => u32::from(self.read_u8()?),
        };
        if let Some(kind) = compound_count_error(code, count, self.remaining()) {
            return Err(self.error_at(count_at, kind));
        }
        self.enter()?;
        Ok(CompoundHeader {
            count,
            end,
            outer_end,
        })
    }

    /// Leaves a compound value begun with [`Decoder::begin_compound`], skipping any elements not read.
    pub fn end_compound(&mut self, header: CompoundHeader) {
        self.pos = header.end;
        self.end = header.outer_end;
        self.depth -= 1;
    }

    /// Skips one complete value.
    pub fn skip_value(&mut self) -> Result<(), DecodeError> {
        self.decode_value().map(drop)
    }

    /// Decodes one complete value of any type.
    pub fn decode_value(&mut self) -> Result<Value, DecodeError> {
        let code = self.read_constructor()?;
        self.value_body(code)
    }

    /// Decodes the value whose constructor `code` was just read.
    pub fn value_body(&mut self, code: u8) -> Result<Value, DecodeError> {
        Ok(match code {
            c::DESCRIBED => {
                self.charge(std::mem::size_of::<Described>())?;
                self.enter()?;
                let descriptor = self.read_descriptor();
                let value = descriptor.and_then(|d| Ok((d, self.decode_value()?)));
                self.depth -= 1;
                let (descriptor, value) = value?;
                Value::Described(Box::new(Described { descriptor, value }))
            }
            c::NULL => Value::Null,
            c::BOOLEAN | c::BOOLEAN_TRUE | c::BOOLEAN_FALSE => {
                Value::Bool(bool::decode_with(self, code)?)
            }
            c::UBYTE => Value::Ubyte(self.read_u8()?),
            c::USHORT => Value::Ushort(self.read_u16()?),
            c::UINT | c::SMALL_UINT | c::UINT_0 => Value::Uint(u32::decode_with(self, code)?),
            c::ULONG | c::SMALL_ULONG | c::ULONG_0 => Value::Ulong(u64::decode_with(self, code)?),
            c::BYTE => Value::Byte(i8::decode_with(self, code)?),
            c::SHORT => Value::Short(i16::decode_with(self, code)?),
            c::INT | c::SMALL_INT => Value::Int(i32::decode_with(self, code)?),
            c::LONG | c::SMALL_LONG => Value::Long(i64::decode_with(self, code)?),
            c::FLOAT => Value::Float(f32::from_bits(self.read_u32()?)),
            c::DOUBLE => Value::Double(f64::from_bits(self.read_u64()?)),
            c::DECIMAL32 => Value::Decimal32(Decimal32(self.array()?)),
            c::DECIMAL64 => Value::Decimal64(Decimal64(self.array()?)),
            c::DECIMAL128 => Value::Decimal128(Decimal128(self.array()?)),
            c::CHAR => Value::Char(char::decode_with(self, code)?),
            c::TIMESTAMP => Value::Timestamp(Timestamp(self.read_u64()? as i64)),
            c::UUID => Value::Uuid(Uuid(self.array()?)),
            c::VBIN8 | c::VBIN32 => Value::Binary(Bytes::decode_with(self, code)?),
            c::STR8 | c::STR32 => Value::String(String::decode_with(self, code)?),
            c::SYM8 | c::SYM32 => Value::Symbol(Symbol::decode_with(self, code)?),
            c::LIST0 | c::LIST8 | c::LIST32 => {
                let h = self.begin_compound(code)?;
                let items = self.values(h.count as usize);
                self.end_compound(h);
                Value::List(items?)
            }
            c::MAP8 | c::MAP32 => Value::Map(Map::decode_with(self, code)?),
            c::ARRAY8 | c::ARRAY32 => Value::Array(Array::decode_with(self, code)?),
            _ => return Err(self.error_at(self.pos - 1, DecodeErrorKind::InvalidFormatCode(code))),
        })
    }

    fn values(&mut self, count: usize) -> Result<Vec<Value>, DecodeError> {
        self.charge_slots::<Value>(count)?;
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(self.decode_value()?);
        }
        Ok(items)
    }

    fn array_body(&mut self, count: u32) -> Result<Array, DecodeError> {
        let ctor_at = self.pos;
        let mut code = self.read_constructor()?;
        let descriptor = if code == c::DESCRIBED {
            let d = self.read_descriptor()?;
            self.charge(std::mem::size_of::<Descriptor>())?;
            code = self.read_constructor()?;
            if code == c::DESCRIBED {
                return Err(self.unexpected("an array element constructor", code));
            }
            Some(d)
        } else {
            None
        };
        let element = element_type(code)
            .ok_or_else(|| self.error_at(ctor_at, DecodeErrorKind::InvalidFormatCode(code)))?;
        let width = fixed_width(code);
        let count = count as usize;
        let within = match width {
            Some(0) => {
                let ok = count <= self.zero_width_budget;
                self.zero_width_budget = self.zero_width_budget.saturating_sub(count);
                ok
            }
            Some(w) => count.saturating_mul(w) <= self.remaining(),
            None => count <= self.remaining(),
        };
        if !within {
            return Err(self.error(DecodeErrorKind::LengthOutOfBounds {
                claimed: count as u64,
                available: self.remaining() as u64,
            }));
        }
        self.charge_slots::<Value>(count)?;
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(self.value_body(code)?);
        }
        Ok(Array::from_parts(descriptor, element, items))
    }
}

/// The element type selected by an array's element constructor.
fn element_type(code: u8) -> Option<Type> {
    Some(match code {
        c::NULL => Type::Null,
        c::BOOLEAN | c::BOOLEAN_TRUE | c::BOOLEAN_FALSE => Type::Boolean,
        c::UBYTE => Type::Ubyte,
        c::USHORT => Type::Ushort,
        c::UINT | c::SMALL_UINT | c::UINT_0 => Type::Uint,
        c::ULONG | c::SMALL_ULONG | c::ULONG_0 => Type::Ulong,
        c::BYTE => Type::Byte,
        c::SHORT => Type::Short,
        c::INT | c::SMALL_INT => Type::Int,
        c::LONG | c::SMALL_LONG => Type::Long,
        c::FLOAT => Type::Float,
        c::DOUBLE => Type::Double,
        c::DECIMAL32 => Type::Decimal32,
        c::DECIMAL64 => Type::Decimal64,
        c::DECIMAL128 => Type::Decimal128,
        c::CHAR => Type::Char,
        c::TIMESTAMP => Type::Timestamp,
        c::UUID => Type::Uuid,
        c::VBIN8 | c::VBIN32 => Type::Binary,
        c::STR8 | c::STR32 => Type::String,
        c::SYM8 | c::SYM32 => Type::Symbol,
        c::LIST0 | c::LIST8 | c::LIST32 => Type::List,
        c::MAP8 | c::MAP32 => Type::Map,
        c::ARRAY8 | c::ARRAY32 => Type::Array,
        _ => return None,
    })
}

/// The encoded width of a fixed-width format code, without its constructor; `None` for variable widths.
fn fixed_width(code: u8) -> Option<usize> {
    Some(match code {
        c::NULL | c::BOOLEAN_TRUE | c::BOOLEAN_FALSE | c::UINT_0 | c::ULONG_0 | c::LIST0 => 0,
        c::BOOLEAN
        | c::UBYTE
        | c::BYTE
        | c::SMALL_UINT
        | c::SMALL_ULONG
        | c::SMALL_INT
        | c::SMALL_LONG => 1,
        c::USHORT | c::SHORT => 2,
        c::UINT | c::INT | c::FLOAT | c::DECIMAL32 | c::CHAR => 4,
        c::ULONG | c::LONG | c::DOUBLE | c::DECIMAL64 | c::TIMESTAMP => 8,
        c::DECIMAL128 | c::UUID => 16,
        _ => return None,
    })
}

/// A type that can be decoded from its AMQP encoding.
///
/// Implementations accept every encoding of their type [AMQP 1.0 §1.6]. `Option<T>` decodes `null` as `None`.
pub trait Decode: Sized {
    /// Decodes the value whose constructor `code` was just read from `dec`.
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError>;

    /// Decodes one value, constructor included.
    fn decode(dec: &mut Decoder) -> Result<Self, DecodeError> {
        let code = dec.read_constructor()?;
        Self::decode_with(dec, code)
    }

    /// Decodes exactly one value that fills `bytes`.
    fn decode_from(bytes: Bytes) -> Result<Self, DecodeError> {
        let mut dec = Decoder::new(bytes);
        let v = Self::decode(&mut dec)?;
        if !dec.is_empty() {
            return Err(dec.error(DecodeErrorKind::TrailingBytes(dec.remaining())));
        }
        Ok(v)
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        match code {
            c::NULL => Ok(None),
            _ => T::decode_with(dec, code).map(Some),
        }
    }
}

impl Decode for Value {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        dec.value_body(code)
    }
}

impl Decode for bool {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        match code {
            c::BOOLEAN_TRUE => Ok(true),
            c::BOOLEAN_FALSE => Ok(false),
            c::BOOLEAN => match dec.read_u8()? {
                0 => Ok(false),
                1 => Ok(true),
                b => Err(dec.error_at(dec.pos - 1, DecodeErrorKind::InvalidBoolean(b))),
            },
            _ => Err(dec.unexpected("boolean", code)),
        }
    }
}

macro_rules! decode_int {
    ($t:ty, $name:literal, $full:path, $read:ident $(; small $small:path => $st:ty)? $(; zero $zero:path)?) => {
        impl Decode for $t {
            fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
                match code {
                    $full => Ok(dec.$read()? as $t),
                    $($small => Ok(dec.read_u8()? as $st as $t),)?
                    $($zero => Ok(0),)?
                    _ => Err(dec.unexpected($name, code)),
                }
            }
        }
    };
}

decode_int!(u8, "ubyte", c::UBYTE, read_u8);
decode_int!(u16, "ushort", c::USHORT, read_u16);
decode_int!(u32, "uint", c::UINT, read_u32; small c::SMALL_UINT => u8; zero c::UINT_0);
decode_int!(u64, "ulong", c::ULONG, read_u64; small c::SMALL_ULONG => u8; zero c::ULONG_0);
decode_int!(i8, "byte", c::BYTE, read_u8);
decode_int!(i16, "short", c::SHORT, read_u16);
decode_int!(i32, "int", c::INT, read_u32; small c::SMALL_INT => i8);
decode_int!(i64, "long", c::LONG, read_u64; small c::SMALL_LONG => i8);

impl Decode for f32 {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        match code {
            c::FLOAT => Ok(f32::from_bits(dec.read_u32()?)),
            _ => Err(dec.unexpected("float", code)),
        }
    }
}

impl Decode for f64 {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        match code {
            c::DOUBLE => Ok(f64::from_bits(dec.read_u64()?)),
            _ => Err(dec.unexpected("double", code)),
        }
    }
}

impl Decode for char {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        match code {
            c::CHAR => {
                let at = dec.pos;
                let v = dec.read_u32()?;
                char::from_u32(v).ok_or_else(|| dec.error_at(at, DecodeErrorKind::InvalidChar(v)))
            }
            _ => Err(dec.unexpected("char", code)),
        }
    }
}

impl Decode for Timestamp {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        match code {
            c::TIMESTAMP => Ok(Timestamp(dec.read_u64()? as i64)),
            _ => Err(dec.unexpected("timestamp", code)),
        }
    }
}

impl Decode for Uuid {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        match code {
            c::UUID => Ok(Uuid(dec.array()?)),
            _ => Err(dec.unexpected("uuid", code)),
        }
    }
}

impl Decode for Bytes {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        match code {
            c::VBIN8 | c::VBIN32 => {
                let n = dec.read_size(code == c::VBIN32)?;
                dec.take_bytes(n)
            }
            _ => Err(dec.unexpected("binary", code)),
        }
    }
}

impl Decode for String {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        match code {
            c::STR8 | c::STR32 => {
                let n = dec.read_size(code == c::STR32)?;
                dec.charge(n)?;
                let at = dec.pos;
                let s = std::str::from_utf8(dec.take(n)?).map(str::to_owned);
                s.map_err(|_| dec.error_at(at, DecodeErrorKind::InvalidUtf8))
            }
            _ => Err(dec.unexpected("string", code)),
        }
    }
}

impl Decode for Symbol {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        match code {
            c::SYM8 | c::SYM32 => {
                let n = dec.read_size(code == c::SYM32)?;
                let at = dec.pos;
                Symbol::from_utf8(dec.take_bytes(n)?)
                    .map_err(|_| dec.error_at(at, DecodeErrorKind::InvalidUtf8))
            }
            _ => Err(dec.unexpected("symbol", code)),
        }
    }
}

impl Decode for Map {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        if !matches!(code, c::MAP8 | c::MAP32) {
            return Err(dec.unexpected("map", code));
        }
        let h = dec.begin_compound(code)?;
        let entries = (|| {
            dec.charge_slots::<(Value, Value)>(h.count as usize / 2)?;
            let mut entries = Vec::with_capacity(h.count as usize / 2);
            for _ in 0..h.count / 2 {
                let k = dec.decode_value()?;
                let v = dec.decode_value()?;
                entries.push((k, v));
            }
            Ok(entries)
        })();
        dec.end_compound(h);
        Ok(Map::from_entries(entries?))
    }
}

impl Decode for Array {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        if !matches!(code, c::ARRAY8 | c::ARRAY32) {
            return Err(dec.unexpected("array", code));
        }
        let h = dec.begin_compound(code)?;
        let array = dec.array_body(h.count);
        dec.end_compound(h);
        array
    }
}

impl Decode for Decimal32 {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        match code {
            c::DECIMAL32 => Ok(Decimal32(dec.array()?)),
            _ => Err(dec.unexpected("decimal32", code)),
        }
    }
}

impl Decode for Decimal64 {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        match code {
            c::DECIMAL64 => Ok(Decimal64(dec.array()?)),
            _ => Err(dec.unexpected("decimal64", code)),
        }
    }
}

impl Decode for Decimal128 {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        match code {
            c::DECIMAL128 => Ok(Decimal128(dec.array()?)),
            _ => Err(dec.unexpected("decimal128", code)),
        }
    }
}

/// A "multiple" symbol field: a single symbol or an array of symbols on the wire [AMQP 1.0 §1.3].
impl Decode for Vec<Symbol> {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        match code {
            c::SYM8 | c::SYM32 => Ok(vec![Symbol::decode_with(dec, code)?]),
            c::ARRAY8 | c::ARRAY32 => {
                let at = dec.pos;
                let array = Array::decode_with(dec, code)?;
                if array.element_type() != Type::Symbol || array.descriptor().is_some() {
                    return Err(dec.error_at(
                        at,
                        DecodeErrorKind::UnexpectedType {
                            expected: "symbol array",
                            found: code,
                        },
                    ));
                }
                Ok(array
                    .into_items()
                    .into_iter()
                    .filter_map(|v| match v {
                        Value::Symbol(s) => Some(s),
                        _ => None,
                    })
                    .collect())
            }
            _ => Err(dec.unexpected("symbol or symbol array", code)),
        }
    }
}

impl Decode for Vec<Value> {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        if !matches!(code, c::LIST0 | c::LIST8 | c::LIST32) {
            return Err(dec.unexpected("list", code));
        }
        let h = dec.begin_compound(code)?;
        let items = dec.values(h.count as usize);
        dec.end_compound(h);
        items
    }
}

/// What is wrong with the element count of a list, map or array with constructor `code`, `remaining` bytes
/// from its end, if anything: every list or map element takes at least one byte (array elements are checked
/// as they are sized), and a map holds key-value pairs. Shared by the decoder and the validating walk
/// (`skip`).
pub(crate) fn compound_count_error(
    code: u8,
    count: u32,
    remaining: usize,
) -> Option<DecodeErrorKind> {
    if !matches!(code, c::ARRAY8 | c::ARRAY32) && count as usize > remaining {
        return Some(DecodeErrorKind::LengthOutOfBounds {
            claimed: count.into(),
            available: remaining as u64,
        });
    }
    (matches!(code, c::MAP8 | c::MAP32) && !count.is_multiple_of(2))
        .then_some(DecodeErrorKind::OddMapCount(count))
}
