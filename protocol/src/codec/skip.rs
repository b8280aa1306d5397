//! [`Skipper`]: a cursor that checks encoded values and steps over them without building them.
//!
//! It accepts and refuses what [`Decoder`](super::Decoder) does for the same bytes (format codes, sizes and
//! counts within bounds, even map counts, boolean and char values, UTF-8 text, array element constructors,
//! descriptors, the nesting limit and the zero-width array elements allowed), but allocates nothing: there
//! is no decode budget to exceed. Each byte is looked at once at most, so a walk takes time linear in the
//! input.

use super::codes as c;
use super::decode::{compound_count_error, DEFAULT_MAX_DEPTH};
use super::error::{DecodeError, DecodeErrorKind};

/// Zero-width array elements (nulls, `true`, ...) allowed however short the input, as the decoder does.
const ZERO_WIDTH_FLOOR: usize = 1 << 16;

/// A checking cursor over encoded values in `buf`, with error offsets from its start.
#[derive(Debug)]
pub(crate) struct Skipper<'a> {
    buf: &'a [u8],
    pos: usize,
    end: usize,
    depth: usize,
    zero_width_left: usize,
}

/// The region of a list, map or array entered with [`Skipper::begin_compound`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Compound {
    /// The element count (for a map, keys plus values).
    pub(crate) count: u32,
    end: usize,
    outer_end: usize,
}

impl<'a> Skipper<'a> {
    /// A cursor at the start of `buf`.
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Skipper {
            buf,
            pos: 0,
            end: buf.len(),
            depth: 0,
            zero_width_left: buf.len().max(ZERO_WIDTH_FLOOR),
        }
    }

    /// The offset of the next byte.
    pub(crate) fn offset(&self) -> usize {
        self.pos
    }

    /// True when the current region is exhausted.
    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.end
    }

    fn remaining(&self) -> usize {
        self.end - self.pos
    }

    /// An error of `kind` at `at`.
    pub(crate) fn error_at(&self, at: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError::new(at, kind)
    }

    /// An [`DecodeErrorKind::UnexpectedType`] error for the constructor `found` just read.
    pub(crate) fn unexpected(&self, expected: &'static str, found: u8) -> DecodeError {
        self.error_at(
            self.pos.saturating_sub(1),
            DecodeErrorKind::UnexpectedType { expected, found },
        )
    }

    /// Takes the next `n` bytes.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(self.error_at(
                self.pos,
                DecodeErrorKind::UnexpectedEof {
                    needed: n,
                    available: self.remaining(),
                },
            ));
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..self.pos])
    }

    /// Reads one byte.
    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// Reads a big-endian u32.
    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// Reads a big-endian u64.
    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    /// Reads a size field (1 or 4 bytes) and checks it against the bytes left.
    fn size(&mut self, wide: bool) -> Result<usize, DecodeError> {
        let at = self.pos;
        let size = if wide {
            self.u32()? as usize
        } else {
            usize::from(self.u8()?)
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
        if self.depth >= DEFAULT_MAX_DEPTH {
            return Err(self.error_at(
                self.pos,
                DecodeErrorKind::DepthLimitExceeded(DEFAULT_MAX_DEPTH),
            ));
        }
        self.depth += 1;
        Ok(())
    }

    /// Reads the size and count of the list, map or array whose constructor `code` was just read, and
    /// limits the cursor to its contents until [`Skipper::end_compound`].
    pub(crate) fn begin_compound(&mut self, code: u8) -> Result<Compound, DecodeError> {
        let wide = matches!(code, c::LIST32 | c::MAP32 | c::ARRAY32);
        let (size, count_at) = match code {
            c::LIST0 => (0, self.pos),
            c::LIST8 | c::LIST32 | c::MAP8 | c::MAP32 | c::ARRAY8 | c::ARRAY32 => {
                (self.size(wide)?, self.pos)
            }
            _ => return Err(self.unexpected("list, map or array", code)),
        };
        let end = self.pos + size;
        let outer_end = self.end;
        self.end = end;
        let count = match code {
            c::LIST0 => 0,
            _ if wide => self.u32()?,
            _ => u32::from(self.u8()?),
        };
        if let Some(kind) = compound_count_error(code, count, self.remaining()) {
            return Err(self.error_at(count_at, kind));
        }
        self.enter()?;
        Ok(Compound {
            count,
            end,
            outer_end,
        })
    }

    /// Leaves a compound value, stepping over any elements not read.
    pub(crate) fn end_compound(&mut self, compound: Compound) {
        self.pos = compound.end;
        self.end = compound.outer_end;
        self.depth -= 1;
    }

    /// Checks and steps over the descriptor after a [`c::DESCRIBED`] constructor; returns its numeric code,
    /// or for a symbolic one its text.
    pub(crate) fn descriptor(&mut self) -> Result<Descriptor<'a>, DecodeError> {
        let at = self.pos;
        match self.u8()? {
            c::ULONG => Ok(Descriptor::Code(self.u64()?)),
            c::SMALL_ULONG => Ok(Descriptor::Code(self.u8()?.into())),
            c::ULONG_0 => Ok(Descriptor::Code(0)),
            code @ (c::SYM8 | c::SYM32) => Ok(Descriptor::Symbol(self.text(code)?)),
            _ => Err(self.error_at(at, DecodeErrorKind::InvalidDescriptor)),
        }
    }

    /// Reads the string or symbol whose constructor `code` was just read.
    pub(crate) fn text(&mut self, code: u8) -> Result<&'a str, DecodeError> {
        let n = self.size(matches!(code, c::STR32 | c::SYM32))?;
        let at = self.pos;
        let bytes = self.take(n)?;
        std::str::from_utf8(bytes).map_err(|_| self.error_at(at, DecodeErrorKind::InvalidUtf8))
    }

    /// Checks and steps over one complete value.
    pub(crate) fn value(&mut self) -> Result<(), DecodeError> {
        let code = self.u8()?;
        self.value_body(code)
    }

    /// Checks and steps over the value whose constructor `code` was just read.
    pub(crate) fn value_body(&mut self, code: u8) -> Result<(), DecodeError> {
        match code {
            c::DESCRIBED => {
                self.enter()?;
                let inner = self.descriptor().and_then(|_| self.value());
                self.depth -= 1;
                inner
            }
            c::BOOLEAN => self.boolean().map(drop),
            c::CHAR => self.char().map(drop),
            c::VBIN8 | c::VBIN32 => {
                let n = self.size(code == c::VBIN32)?;
                self.take(n).map(drop)
            }
            c::STR8 | c::STR32 | c::SYM8 | c::SYM32 => self.text(code).map(drop),
            c::LIST0 | c::LIST8 | c::LIST32 | c::MAP8 | c::MAP32 => {
                let h = self.begin_compound(code)?;
                let items = (0..h.count).try_for_each(|_| self.value());
                self.end_compound(h);
                items
            }
            c::ARRAY8 | c::ARRAY32 => {
                let h = self.begin_compound(code)?;
                let items = self.array_body(h.count);
                self.end_compound(h);
                items
            }
            _ => match fixed_width(code) {
                Some(w) => self.take(w).map(drop),
                None => Err(self.error_at(
                    self.pos.saturating_sub(1),
                    DecodeErrorKind::InvalidFormatCode(code),
                )),
            },
        }
    }

    /// Reads the byte of a boolean encoded as [`c::BOOLEAN`].
    pub(crate) fn boolean(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.error_at(self.pos - 1, DecodeErrorKind::InvalidBoolean(b))),
        }
    }

    fn char(&mut self) -> Result<char, DecodeError> {
        let at = self.pos;
        let v = self.u32()?;
        char::from_u32(v).ok_or_else(|| self.error_at(at, DecodeErrorKind::InvalidChar(v)))
    }

    fn array_body(&mut self, count: u32) -> Result<(), DecodeError> {
        let ctor_at = self.pos;
        let mut code = self.u8()?;
        if code == c::DESCRIBED {
            self.descriptor()?;
            code = self.u8()?;
            if code == c::DESCRIBED {
                return Err(self.unexpected("an array element constructor", code));
            }
        }
        if !is_format_code(code) {
            return Err(self.error_at(ctor_at, DecodeErrorKind::InvalidFormatCode(code)));
        }
        let count = count as usize;
        let width = fixed_width(code);
        let within = match width {
            Some(0) => {
                let ok = count <= self.zero_width_left;
                self.zero_width_left = self.zero_width_left.saturating_sub(count);
                ok
            }
            Some(w) => count.saturating_mul(w) <= self.remaining(),
            None => count <= self.remaining(),
        };
        if !within {
            return Err(self.error_at(
                self.pos,
                DecodeErrorKind::LengthOutOfBounds {
                    claimed: count as u64,
                    available: self.remaining() as u64,
                },
            ));
        }
        match (code, width) {
            // Empty lists take no bytes, but each is one nesting level deeper, as for the decoder.
            (c::LIST0, _) if count > 0 => {
                self.enter()?;
                self.depth -= 1;
                Ok(())
            }
            // Elements whose bytes need checking, or whose width varies: one at a time.
            (c::BOOLEAN | c::CHAR, _) | (_, None) => {
                (0..count).try_for_each(|_| self.value_body(code))
            }
            // The rest are any bits of a fixed width, checked to fit above.
            (_, Some(w)) => self.take(count * w).map(drop),
        }
    }
}

/// A section or array descriptor read by [`Skipper::descriptor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Descriptor<'a> {
    /// A numeric descriptor.
    Code(u64),
    /// A symbolic descriptor.
    Symbol(&'a str),
}

/// Whether `code` is a format code the decoder knows.
fn is_format_code(code: u8) -> bool {
    fixed_width(code).is_some()
        || matches!(
            code,
            c::BOOLEAN
                | c::VBIN8
                | c::VBIN32
                | c::STR8
                | c::STR32
                | c::SYM8
                | c::SYM32
                | c::LIST8
                | c::LIST32
                | c::MAP8
                | c::MAP32
                | c::ARRAY8
                | c::ARRAY32
        )
}

/// The encoded width of a fixed-width format code, without its constructor; `None` otherwise.
fn fixed_width(code: u8) -> Option<usize> {
    Some(match code {
        c::NULL | c::BOOLEAN_TRUE | c::BOOLEAN_FALSE | c::UINT_0 | c::ULONG_0 | c::LIST0 => 0,
        c::UBYTE | c::BYTE | c::SMALL_UINT | c::SMALL_ULONG | c::SMALL_INT | c::SMALL_LONG => 1,
        c::USHORT | c::SHORT => 2,
        c::UINT | c::INT | c::FLOAT | c::DECIMAL32 | c::CHAR => 4,
        c::ULONG | c::LONG | c::DOUBLE | c::DECIMAL64 | c::TIMESTAMP => 8,
        c::DECIMAL128 | c::UUID => 16,
        _ => return None,
    })
}
