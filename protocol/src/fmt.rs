//! Human-readable text forms of AMQP data, for `amqp-dump` and the frame trace (log target `nucleon::frame`).
//!
//! Three types implement [`Display`]:
//!
//! * [`Value`]: `{}` writes one line, `{:#}` writes the indented form (below).
//! * [`Frame`]: `[channel] performative`, plus `(payload N bytes)` for a transfer; a heartbeat is
//!   `[0] (empty frame)`. `{:#}` indents the performative.
//! * [`Message`]: its sections in wire order, each as a described value; separated by a space with `{}`, one
//!   per line (indented) with `{:#}`. A message with no sections is `(no sections)`.
//!
//! # Notation
//!
//! | AMQP type [AMQP 1.0 §1.6]        | Text                                                              |
//! |----------------------------------|-------------------------------------------------------------------|
//! | null, boolean                    | `null`, `true`, `false`                                           |
//! | ubyte, ushort, uint, ulong       | `7u8`, `7u16`, `7u32`, `7u64`                                     |
//! | byte, short, int, long           | `-7i8`, `-7i16`, `-7`, `-7i64`                                    |
//! | float                            | `1.5f32`; `float(NaN)`, `float(inf)`, `float(-inf)`               |
//! | double                           | `1.5`, `1e300`, `NaN`, `inf`, `-inf`                              |
//! | decimal32, decimal64, decimal128 | `decimal32(0x2200000a)`: the raw IEEE 754 bytes in hex            |
//! | char                             | `'a'`                                                             |
//! | timestamp                        | `timestamp(2024-01-01T00:00:00.000Z)`; outside years 0-9999 the milliseconds since the epoch: `timestamp(-62167219200001)` |
//! | uuid                             | `uuid(00112233-4455-6677-8899-aabbccddeeff)`                      |
//! | binary                           | `b"\x00ab"`: printable ASCII as is, `\"`, `\\`, anything else `\xNN` |
//! | string                           | `"text"`: `\"`, `\\`, `\n`, `\r`, `\t`, `\0`, other control characters `\u{1b}` |
//! | symbol                           | `:amqp:not-found`; quoted like a string unless it is non-empty ASCII letters, digits and `-_.:/+*$`: `:"a b"` |
//! | list                             | `[1, "a"]`                                                        |
//! | map                              | `{"k": 1, :sym: true}`                                            |
//! | array                            | `array<int>[1, 2]`; of described values `array<@accepted(0x24) list>[[], []]` |
//! | described, known descriptor      | `@open(0x10) [container-id="a", max-frame-size=512]`; `@open(amqp:open:list) [...]` when the descriptor is the symbol |
//! | described, other descriptor      | `@0x00000137:0x00000001 "v"`, `@com.example:thing "v"`            |
//!
//! A number's type suffix is left out where the context gives the type: the elements of an array, and a field
//! of a known composite whose value has the type the spec gives that field (`handle=0`; a handle sent as a
//! ulong shows as `handle=0u64`).
//!
//! Known descriptors are every one the spec defines: the performatives (0x10-0x18), `error` (0x1d), the
//! delivery states, `source` and `target` (0x23-0x29), the lifetime policies (0x2b-0x2e), the transaction
//! types (0x30-0x34), the SASL frames (0x40-0x44) and the message sections (0x70-0x78). A composite prints
//! its present (non-null) fields as `name=value` with the spec's field names; a field past the ones the spec
//! defines (from a newer peer) prints as `#index=value`, counting from 0.
//!
//! # Indented form
//!
//! The indented form (`{:#}`) uses 2 spaces per level and no separating commas. A composite with any present
//! field puts one field per line. A list, map or array goes on one line when its elements are all flat (scalars,
//! binaries of at most 32 bytes, empty compounds, composites with no present field, described values of those)
//! and that line is at most 64 characters long, and otherwise puts one element per line. A binary longer than
//! 32 bytes is written as a hex dump, 16 bytes per line:
//!
//! ```text
//! @transfer(0x14) [
//!   handle=0
//!   delivery-id=1
//!   delivery-tag=b"\x00\x01"
//!   state=@accepted(0x24) []
//! ]
//! ```

use std::fmt::{self, Display, Formatter, Write};

use crate::codec::{Array, Decoder, Described, Descriptor, Encode, Symbol, Timestamp, Type, Value};
use crate::frame::{
    Accepted, AmqpSequence, AmqpValue, ApplicationProperties, Attach, Begin, Close, Coordinator,
    Data, Declare, Declared, DeliveryAnnotations, Detach, Discharge, Disposition, End, Error, Flow,
    Footer, Frame, FrameBody, Header, MessageAnnotations, Modified, Open, Performative, Properties,
    Received, Rejected, Released, SaslChallenge, SaslInit, SaslMechanisms, SaslOutcome,
    SaslResponse, Source, Target, TransactionalState, Transfer,
};
use crate::message::Message;

/// The longest one-line text the indented form keeps on one line for a list, map or array.
const INLINE_WIDTH: usize = 64;

/// The longest binary the indented form writes as a `b"..."` literal rather than a hex dump.
const INLINE_BINARY: usize = 32;

/// One field of a composite type [AMQP 1.0 §1.4].
struct Field {
    /// The spec's name, e.g. `max-frame-size`.
    name: &'static str,
    /// The field's AMQP type (for a restricted type, its source type), or `None` for `*`, composites and
    /// unions.
    ty: Option<Type>,
}

/// A described type the spec defines.
struct Known {
    /// The spec's name, e.g. `open`.
    name: &'static str,
    /// The numeric descriptor.
    code: u64,
    /// The symbolic descriptor.
    symbol: &'static str,
    /// The fields of a composite (a described list), or `None` for a type that describes a single value.
    fields: Option<&'static [Field]>,
}

const fn f(name: &'static str, ty: Option<Type>) -> Field {
    Field { name, ty }
}

const fn composite(
    name: &'static str,
    code: u64,
    symbol: &'static str,
    fields: &'static [Field],
) -> Known {
    Known {
        name,
        code,
        symbol,
        fields: Some(fields),
    }
}

const fn wrapper(name: &'static str, code: u64, symbol: &'static str) -> Known {
    Known {
        name,
        code,
        symbol,
        fields: None,
    }
}

const ANY: Option<Type> = None;
const BOOL: Option<Type> = Some(Type::Boolean);
const UBYTE: Option<Type> = Some(Type::Ubyte);
const USHORT: Option<Type> = Some(Type::Ushort);
const UINT: Option<Type> = Some(Type::Uint);
const ULONG: Option<Type> = Some(Type::Ulong);
const TIMESTAMP: Option<Type> = Some(Type::Timestamp);
const BINARY: Option<Type> = Some(Type::Binary);
const STRING: Option<Type> = Some(Type::String);
/// A symbol, or for a `multiple="true"` field an array of symbols [AMQP 1.0 §1.3].
const SYMBOL: Option<Type> = Some(Type::Symbol);
const MAP: Option<Type> = Some(Type::Map);

/// `open` [AMQP 1.0 §2.7.1].
const OPEN: &[Field] = &[
    f("container-id", STRING),
    f("hostname", STRING),
    f("max-frame-size", UINT),
    f("channel-max", USHORT),
    f("idle-time-out", UINT),
    f("outgoing-locales", SYMBOL),
    f("incoming-locales", SYMBOL),
    f("offered-capabilities", SYMBOL),
    f("desired-capabilities", SYMBOL),
    f("properties", MAP),
];

/// `begin` [AMQP 1.0 §2.7.2].
const BEGIN: &[Field] = &[
    f("remote-channel", USHORT),
    f("next-outgoing-id", UINT),
    f("incoming-window", UINT),
    f("outgoing-window", UINT),
    f("handle-max", UINT),
    f("offered-capabilities", SYMBOL),
    f("desired-capabilities", SYMBOL),
    f("properties", MAP),
];

/// `attach` [AMQP 1.0 §2.7.3].
const ATTACH: &[Field] = &[
    f("name", STRING),
    f("handle", UINT),
    f("role", BOOL),
    f("snd-settle-mode", UBYTE),
    f("rcv-settle-mode", UBYTE),
    f("source", ANY),
    f("target", ANY),
    f("unsettled", MAP),
    f("incomplete-unsettled", BOOL),
    f("initial-delivery-count", UINT),
    f("max-message-size", ULONG),
    f("offered-capabilities", SYMBOL),
    f("desired-capabilities", SYMBOL),
    f("properties", MAP),
];

/// `flow` [AMQP 1.0 §2.7.4].
const FLOW: &[Field] = &[
    f("next-incoming-id", UINT),
    f("incoming-window", UINT),
    f("next-outgoing-id", UINT),
    f("outgoing-window", UINT),
    f("handle", UINT),
    f("delivery-count", UINT),
    f("link-credit", UINT),
    f("available", UINT),
    f("drain", BOOL),
    f("echo", BOOL),
    f("properties", MAP),
];

/// `transfer` [AMQP 1.0 §2.7.5].
const TRANSFER: &[Field] = &[
    f("handle", UINT),
    f("delivery-id", UINT),
    f("delivery-tag", BINARY),
    f("message-format", UINT),
    f("settled", BOOL),
    f("more", BOOL),
    f("rcv-settle-mode", UBYTE),
    f("state", ANY),
    f("resume", BOOL),
    f("aborted", BOOL),
    f("batchable", BOOL),
];

/// `disposition` [AMQP 1.0 §2.7.6].
const DISPOSITION: &[Field] = &[
    f("role", BOOL),
    f("first", UINT),
    f("last", UINT),
    f("settled", BOOL),
    f("state", ANY),
    f("batchable", BOOL),
];

/// `detach` [AMQP 1.0 §2.7.7].
const DETACH: &[Field] = &[f("handle", UINT), f("closed", BOOL), f("error", ANY)];

/// `end` [AMQP 1.0 §2.7.8], `close` [AMQP 1.0 §2.7.9] and `rejected` [AMQP 1.0 §3.4.3].
const ERROR_ONLY: &[Field] = &[f("error", ANY)];

/// `error` [AMQP 1.0 §2.8.14].
const ERROR: &[Field] = &[
    f("condition", SYMBOL),
    f("description", STRING),
    f("info", MAP),
];

/// `received` [AMQP 1.0 §3.4.1].
const RECEIVED: &[Field] = &[f("section-number", UINT), f("section-offset", ULONG)];

/// `modified` [AMQP 1.0 §3.4.5].
const MODIFIED: &[Field] = &[
    f("delivery-failed", BOOL),
    f("undeliverable-here", BOOL),
    f("message-annotations", MAP),
];

/// `source` [AMQP 1.0 §3.5.3].
const SOURCE: &[Field] = &[
    f("address", ANY),
    f("durable", UINT),
    f("expiry-policy", SYMBOL),
    f("timeout", UINT),
    f("dynamic", BOOL),
    f("dynamic-node-properties", MAP),
    f("distribution-mode", SYMBOL),
    f("filter", MAP),
    f("default-outcome", ANY),
    f("outcomes", SYMBOL),
    f("capabilities", SYMBOL),
];

/// `target` [AMQP 1.0 §3.5.4].
const TARGET: &[Field] = &[
    f("address", ANY),
    f("durable", UINT),
    f("expiry-policy", SYMBOL),
    f("timeout", UINT),
    f("dynamic", BOOL),
    f("dynamic-node-properties", MAP),
    f("capabilities", SYMBOL),
];

/// `coordinator` [AMQP 1.0 §4.5.1].
const COORDINATOR: &[Field] = &[f("capabilities", SYMBOL)];

/// `declare` [AMQP 1.0 §4.5.2].
const DECLARE: &[Field] = &[f("global-id", ANY)];

/// `discharge` [AMQP 1.0 §4.5.3].
const DISCHARGE: &[Field] = &[f("txn-id", BINARY), f("fail", BOOL)];

/// `declared` [AMQP 1.0 §4.5.4].
const DECLARED: &[Field] = &[f("txn-id", BINARY)];

/// `transactional-state` [AMQP 1.0 §4.5.5].
const TRANSACTIONAL_STATE: &[Field] = &[f("txn-id", BINARY), f("outcome", ANY)];

/// `sasl-mechanisms` [AMQP 1.0 §5.3.3.1].
const SASL_MECHANISMS: &[Field] = &[f("sasl-server-mechanisms", SYMBOL)];

/// `sasl-init` [AMQP 1.0 §5.3.3.2].
const SASL_INIT: &[Field] = &[
    f("mechanism", SYMBOL),
    f("initial-response", BINARY),
    f("hostname", STRING),
];

/// `sasl-challenge` [AMQP 1.0 §5.3.3.3].
const SASL_CHALLENGE: &[Field] = &[f("challenge", BINARY)];

/// `sasl-response` [AMQP 1.0 §5.3.3.4].
const SASL_RESPONSE: &[Field] = &[f("response", BINARY)];

/// `sasl-outcome` [AMQP 1.0 §5.3.3.5].
const SASL_OUTCOME: &[Field] = &[f("code", UBYTE), f("additional-data", BINARY)];

/// `header` [AMQP 1.0 §3.2.1].
const HEADER: &[Field] = &[
    f("durable", BOOL),
    f("priority", UBYTE),
    f("ttl", UINT),
    f("first-acquirer", BOOL),
    f("delivery-count", UINT),
];

/// `properties` [AMQP 1.0 §3.2.4].
const PROPERTIES: &[Field] = &[
    f("message-id", ANY),
    f("user-id", BINARY),
    f("to", ANY),
    f("subject", STRING),
    f("reply-to", ANY),
    f("correlation-id", ANY),
    f("content-type", SYMBOL),
    f("content-encoding", SYMBOL),
    f("absolute-expiry-time", TIMESTAMP),
    f("creation-time", TIMESTAMP),
    f("group-id", STRING),
    f("group-sequence", UINT),
    f("reply-to-group-id", STRING),
];

/// Every described type the spec defines.
static KNOWN: &[Known] = &[
    // Performatives [AMQP 1.0 §2.7].
    composite("open", Open::CODE, Open::SYMBOL, OPEN),
    composite("begin", Begin::CODE, Begin::SYMBOL, BEGIN),
    composite("attach", Attach::CODE, Attach::SYMBOL, ATTACH),
    composite("flow", Flow::CODE, Flow::SYMBOL, FLOW),
    composite("transfer", Transfer::CODE, Transfer::SYMBOL, TRANSFER),
    composite(
        "disposition",
        Disposition::CODE,
        Disposition::SYMBOL,
        DISPOSITION,
    ),
    composite("detach", Detach::CODE, Detach::SYMBOL, DETACH),
    composite("end", End::CODE, End::SYMBOL, ERROR_ONLY),
    composite("close", Close::CODE, Close::SYMBOL, ERROR_ONLY),
    composite("error", Error::CODE, Error::SYMBOL, ERROR),
    // Delivery states [AMQP 1.0 §3.4] and termini [AMQP 1.0 §3.5].
    composite("received", Received::CODE, Received::SYMBOL, RECEIVED),
    composite("accepted", Accepted::CODE, Accepted::SYMBOL, &[]),
    composite("rejected", Rejected::CODE, Rejected::SYMBOL, ERROR_ONLY),
    composite("released", Released::CODE, Released::SYMBOL, &[]),
    composite("modified", Modified::CODE, Modified::SYMBOL, MODIFIED),
    composite("source", Source::CODE, Source::SYMBOL, SOURCE),
    composite("target", Target::CODE, Target::SYMBOL, TARGET),
    // Lifetime policies of dynamic nodes [AMQP 1.0 §3.5.10-§3.5.13].
    composite("delete-on-close", 0x2b, "amqp:delete-on-close:list", &[]),
    composite(
        "delete-on-no-links",
        0x2c,
        "amqp:delete-on-no-links:list",
        &[],
    ),
    composite(
        "delete-on-no-messages",
        0x2d,
        "amqp:delete-on-no-messages:list",
        &[],
    ),
    composite(
        "delete-on-no-links-or-messages",
        0x2e,
        "amqp:delete-on-no-links-or-messages:list",
        &[],
    ),
    // Transactions [AMQP 1.0 §4.5].
    composite(
        "coordinator",
        Coordinator::CODE,
        Coordinator::SYMBOL,
        COORDINATOR,
    ),
    composite("declare", Declare::CODE, Declare::SYMBOL, DECLARE),
    composite("discharge", Discharge::CODE, Discharge::SYMBOL, DISCHARGE),
    composite("declared", Declared::CODE, Declared::SYMBOL, DECLARED),
    composite(
        "transactional-state",
        TransactionalState::CODE,
        TransactionalState::SYMBOL,
        TRANSACTIONAL_STATE,
    ),
    // SASL frames [AMQP 1.0 §5.3.3].
    composite(
        "sasl-mechanisms",
        SaslMechanisms::CODE,
        SaslMechanisms::SYMBOL,
        SASL_MECHANISMS,
    ),
    composite("sasl-init", SaslInit::CODE, SaslInit::SYMBOL, SASL_INIT),
    composite(
        "sasl-challenge",
        SaslChallenge::CODE,
        SaslChallenge::SYMBOL,
        SASL_CHALLENGE,
    ),
    composite(
        "sasl-response",
        SaslResponse::CODE,
        SaslResponse::SYMBOL,
        SASL_RESPONSE,
    ),
    composite(
        "sasl-outcome",
        SaslOutcome::CODE,
        SaslOutcome::SYMBOL,
        SASL_OUTCOME,
    ),
    // Message sections [AMQP 1.0 §3.2].
    composite("header", Header::CODE, Header::SYMBOL, HEADER),
    wrapper(
        "delivery-annotations",
        DeliveryAnnotations::CODE,
        DeliveryAnnotations::SYMBOL,
    ),
    wrapper(
        "message-annotations",
        MessageAnnotations::CODE,
        MessageAnnotations::SYMBOL,
    ),
    composite(
        "properties",
        Properties::CODE,
        Properties::SYMBOL,
        PROPERTIES,
    ),
    wrapper(
        "application-properties",
        ApplicationProperties::CODE,
        ApplicationProperties::SYMBOL,
    ),
    wrapper("data", Data::CODE, Data::SYMBOL),
    wrapper("amqp-sequence", AmqpSequence::CODE, AmqpSequence::SYMBOL),
    wrapper("amqp-value", AmqpValue::CODE, AmqpValue::SYMBOL),
    wrapper("footer", Footer::CODE, Footer::SYMBOL),
];

/// The spec type a descriptor names, if any.
fn known(d: &Descriptor) -> Option<&'static Known> {
    KNOWN.iter().find(|k| match d {
        Descriptor::Code(c) => *c == k.code,
        Descriptor::Symbol(s) => s.as_str() == k.symbol,
    })
}

/// The field list of a composite, when `d` names a known composite and `v` is a list.
fn composite_fields<'v>(d: &Descriptor, v: &'v Value) -> Option<(&'static [Field], &'v [Value])> {
    match (known(d).and_then(|k| k.fields), v) {
        (Some(fields), Value::List(items)) => Some((fields, items)),
        _ => None,
    }
}

/// How a value is being laid out.
#[derive(Clone, Copy)]
enum Layout {
    /// Everything on one line.
    OneLine,
    /// The indented form; the value starts on a line indented this many levels.
    Indented(usize),
}

/// One element of a list, map, array or composite.
enum Entry<'v> {
    /// A list or array element, with the type its context gives it.
    Item(&'v Value, Option<Type>),
    /// A map entry.
    Pair(&'v Value, &'v Value),
    /// A present field of a known composite.
    Field(&'static Field, &'v Value),
    /// A present field past the ones the spec defines, by position.
    Extra(usize, &'v Value),
    /// An element of an array of known composites: its field list.
    Fields(&'static [Field], &'v [Value]),
}

impl Entry<'_> {
    /// True when the entry can share a line with its siblings in the indented form.
    fn is_flat(&self) -> bool {
        match *self {
            Entry::Item(v, _) | Entry::Field(_, v) | Entry::Extra(_, v) => is_flat(v),
            Entry::Pair(k, v) => is_flat(k) && is_flat(v),
            Entry::Fields(_, items) => items.iter().all(Value::is_null),
        }
    }

    fn write(&self, w: &mut dyn Write, layout: Layout) -> fmt::Result {
        match *self {
            Entry::Item(v, hint) => write_value(w, v, hint, layout),
            Entry::Pair(k, v) => {
                write_value(w, k, None, layout)?;
                w.write_str(": ")?;
                write_value(w, v, None, layout)
            }
            Entry::Field(field, v) => {
                write!(w, "{}=", field.name)?;
                write_value(w, v, field.ty, layout)
            }
            Entry::Extra(index, v) => {
                write!(w, "#{index}=")?;
                write_value(w, v, None, layout)
            }
            Entry::Fields(fields, items) => write_fields(w, fields, items, layout),
        }
    }
}

/// True for a value the indented form may put on a line with others: a scalar, a short binary, an empty
/// compound, a composite with no present fields, or a described value whose value is flat.
fn is_flat(v: &Value) -> bool {
    match v {
        Value::Binary(b) => b.len() <= INLINE_BINARY,
        Value::List(items) => items.is_empty(),
        Value::Map(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Described(d) => match composite_fields(&d.descriptor, &d.value) {
            Some((_, items)) => items.iter().all(Value::is_null),
            None => is_flat(&d.value),
        },
        _ => true,
    }
}

/// A writer that fails once more than its budget of characters has been written.
struct Budget(usize);

impl Write for Budget {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.0 = self.0.checked_sub(s.chars().count()).ok_or(fmt::Error)?;
        Ok(())
    }
}

fn indent(w: &mut dyn Write, level: usize) -> fmt::Result {
    (0..level).try_for_each(|_| w.write_str("  "))
}

/// Writes `entries` between `open` and `close`. In the indented form, `always_break` puts every entry on its
/// own line; otherwise they share one line when all are flat and the line fits [`INLINE_WIDTH`].
fn write_block(
    w: &mut dyn Write,
    (open, close): (char, char),
    entries: &[Entry<'_>],
    layout: Layout,
    always_break: bool,
) -> fmt::Result {
    let level = match layout {
        _ if entries.is_empty() => None,
        Layout::OneLine => None,
        Layout::Indented(level) => {
            let inline = !always_break
                && entries.iter().all(Entry::is_flat)
                && write_block(
                    &mut Budget(INLINE_WIDTH),
                    (open, close),
                    entries,
                    Layout::OneLine,
                    false,
                )
                .is_ok();
            (!inline).then_some(level)
        }
    };
    w.write_char(open)?;
    for (i, entry) in entries.iter().enumerate() {
        match level {
            Some(level) => {
                w.write_char('\n')?;
                indent(w, level + 1)?;
                entry.write(w, Layout::Indented(level + 1))?;
            }
            None => {
                if i > 0 {
                    w.write_str(", ")?;
                }
                entry.write(w, Layout::OneLine)?;
            }
        }
    }
    if let Some(level) = level {
        w.write_char('\n')?;
        indent(w, level)?;
    }
    w.write_char(close)
}

/// Writes the present fields of a composite as `[name=value, ...]`.
fn write_fields(
    w: &mut dyn Write,
    fields: &'static [Field],
    items: &[Value],
    layout: Layout,
) -> fmt::Result {
    let entries: Vec<Entry<'_>> = items
        .iter()
        .enumerate()
        .filter(|(_, v)| !v.is_null())
        .map(|(i, v)| match fields.get(i) {
            Some(field) => Entry::Field(field, v),
            None => Entry::Extra(i, v),
        })
        .collect();
    write_block(w, ('[', ']'), &entries, layout, true)
}

fn write_value(w: &mut dyn Write, v: &Value, hint: Option<Type>, layout: Layout) -> fmt::Result {
    // A number whose type the context gives is written without its suffix.
    let bare = hint.is_some() && hint == v.amqp_type();
    let suffix = |s: &'static str| if bare { "" } else { s };
    match v {
        Value::Null => w.write_str("null"),
        Value::Bool(b) => write!(w, "{b}"),
        Value::Ubyte(n) => write!(w, "{n}{}", suffix("u8")),
        Value::Ushort(n) => write!(w, "{n}{}", suffix("u16")),
        Value::Uint(n) => write!(w, "{n}{}", suffix("u32")),
        Value::Ulong(n) => write!(w, "{n}{}", suffix("u64")),
        Value::Byte(n) => write!(w, "{n}{}", suffix("i8")),
        Value::Short(n) => write!(w, "{n}{}", suffix("i16")),
        Value::Int(n) => write!(w, "{n}"),
        Value::Long(n) => write!(w, "{n}{}", suffix("i64")),
        Value::Float(x) if x.is_finite() || bare => write!(w, "{x:?}{}", suffix("f32")),
        Value::Float(x) => write!(w, "float({x:?})"),
        Value::Double(x) => write!(w, "{x:?}"),
        Value::Decimal32(d) => write_hex_bytes(w, "decimal32", &d.0),
        Value::Decimal64(d) => write_hex_bytes(w, "decimal64", &d.0),
        Value::Decimal128(d) => write_hex_bytes(w, "decimal128", &d.0),
        Value::Char(c) => write_quoted(w, [*c], '\''),
        Value::Timestamp(t) => write_timestamp(w, *t),
        Value::Uuid(u) => write!(w, "uuid({u})"),
        Value::Binary(b) => match layout {
            Layout::Indented(level) if b.len() > INLINE_BINARY => write_hexdump(w, b, level),
            _ => write_binary(w, b),
        },
        Value::String(s) => write_quoted(w, s.chars(), '"'),
        Value::Symbol(s) => {
            w.write_char(':')?;
            write_symbol_text(w, s)
        }
        Value::List(items) => {
            let entries: Vec<Entry<'_>> = items.iter().map(|v| Entry::Item(v, None)).collect();
            write_block(w, ('[', ']'), &entries, layout, false)
        }
        Value::Map(m) => {
            let entries: Vec<Entry<'_>> = m.iter().map(|(k, v)| Entry::Pair(k, v)).collect();
            write_block(w, ('{', '}'), &entries, layout, false)
        }
        Value::Array(a) => write_array(w, a, layout),
        Value::Described(d) => write_described(w, d, layout),
    }
}

fn write_array(w: &mut dyn Write, a: &Array, layout: Layout) -> fmt::Result {
    w.write_str("array<")?;
    let mut fields = None;
    if let Some(d) = a.descriptor() {
        write_descriptor(w, d)?;
        w.write_char(' ')?;
        fields = known(d).and_then(|k| k.fields);
    }
    write!(w, "{}>", a.element_type().name())?;
    let element = Some(a.element_type());
    let entries: Vec<Entry<'_>> = a
        .items()
        .iter()
        .map(|v| match (fields, v) {
            (Some(fields), Value::List(items)) => Entry::Fields(fields, items),
            _ => Entry::Item(v, element),
        })
        .collect();
    write_block(w, ('[', ']'), &entries, layout, false)
}

fn write_described(w: &mut dyn Write, d: &Described, layout: Layout) -> fmt::Result {
    write_descriptor(w, &d.descriptor)?;
    w.write_char(' ')?;
    match composite_fields(&d.descriptor, &d.value) {
        Some((fields, items)) => write_fields(w, fields, items, layout),
        None => write_value(w, &d.value, None, layout),
    }
}

/// `@open(0x10)`, `@open(amqp:open:list)`, `@0x00000137:0x00000001` or `@com.example:thing`.
fn write_descriptor(w: &mut dyn Write, d: &Descriptor) -> fmt::Result {
    match (known(d), d) {
        (Some(k), Descriptor::Code(code)) => write!(w, "@{}({code:#04x})", k.name),
        (Some(k), Descriptor::Symbol(s)) => write!(w, "@{}({s})", k.name),
        (None, Descriptor::Code(_)) => write!(w, "@{d}"),
        (None, Descriptor::Symbol(s)) => {
            w.write_char('@')?;
            write_symbol_text(w, s)
        }
    }
}

/// A symbol's text, bare when it is made of plain characters, otherwise quoted.
fn write_symbol_text(w: &mut dyn Write, s: &Symbol) -> fmt::Result {
    let s = s.as_str();
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+*$".contains(&b));
    if plain {
        w.write_str(s)
    } else {
        write_quoted(w, s.chars(), '"')
    }
}

fn write_quoted(
    w: &mut dyn Write,
    chars: impl IntoIterator<Item = char>,
    quote: char,
) -> fmt::Result {
    w.write_char(quote)?;
    for c in chars {
        match c {
            '\\' => w.write_str("\\\\")?,
            '\n' => w.write_str("\\n")?,
            '\r' => w.write_str("\\r")?,
            '\t' => w.write_str("\\t")?,
            '\0' => w.write_str("\\0")?,
            c if c == quote => write!(w, "\\{c}")?,
            c if c.is_control() => write!(w, "\\u{{{:x}}}", u32::from(c))?,
            c => w.write_char(c)?,
        }
    }
    w.write_char(quote)
}

fn write_binary(w: &mut dyn Write, b: &[u8]) -> fmt::Result {
    w.write_str("b\"")?;
    for &byte in b {
        match byte {
            b'"' => w.write_str("\\\"")?,
            b'\\' => w.write_str("\\\\")?,
            0x20..=0x7e => w.write_char(char::from(byte))?,
            _ => write!(w, "\\x{byte:02x}")?,
        }
    }
    w.write_char('"')
}

/// `binary(N bytes) [` then lines of offset, 16 bytes in hex and the printable ASCII, then `]`.
fn write_hexdump(w: &mut dyn Write, b: &[u8], level: usize) -> fmt::Result {
    write!(w, "binary({}) [", ByteCount(b.len()))?;
    for (i, chunk) in b.chunks(16).enumerate() {
        w.write_char('\n')?;
        indent(w, level + 1)?;
        write!(w, "{:04x} ", i * 16)?;
        for j in 0..16 {
            match chunk.get(j) {
                Some(byte) => write!(w, " {byte:02x}")?,
                None => w.write_str("   ")?,
            }
        }
        w.write_str("  |")?;
        for &byte in chunk {
            let shown = if (0x20..=0x7e).contains(&byte) {
                char::from(byte)
            } else {
                '.'
            };
            w.write_char(shown)?;
        }
        w.write_char('|')?;
    }
    w.write_char('\n')?;
    indent(w, level)?;
    w.write_char(']')
}

fn write_hex_bytes(w: &mut dyn Write, name: &str, bytes: &[u8]) -> fmt::Result {
    write!(w, "{name}(0x")?;
    bytes.iter().try_for_each(|b| write!(w, "{b:02x}"))?;
    w.write_char(')')
}

/// `timestamp(YYYY-MM-DDThh:mm:ss.mmmZ)` in UTC for years 0-9999, else `timestamp(<milliseconds>)`.
fn write_timestamp(w: &mut dyn Write, t: Timestamp) -> fmt::Result {
    const MS_PER_DAY: i64 = 86_400_000;
    let millis = t.millis();
    match civil_date(millis.div_euclid(MS_PER_DAY)) {
        Some((year, month, day)) => {
            let ms = millis.rem_euclid(MS_PER_DAY);
            let (h, m, s) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60);
            write!(
                w,
                "timestamp({year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z)",
                ms % 1000
            )
        }
        None => write!(w, "timestamp({millis})"),
    }
}

/// The proleptic Gregorian (year, month, day) of a day counted from 1970-01-01, for years 0-9999.
fn civil_date(days: i64) -> Option<(i64, i64, i64)> {
    // Any 400 consecutive Gregorian years hold exactly 146 097 days, so whole cycles are skipped at once.
    const DAYS_PER_400_YEARS: i64 = 146_097;
    let is_leap = |y: i64| y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let mut year = 1970 + days.div_euclid(DAYS_PER_400_YEARS) * 400;
    let mut day = days.rem_euclid(DAYS_PER_400_YEARS);
    loop {
        let length = if is_leap(year) { 366 } else { 365 };
        if day < length {
            break;
        }
        day -= length;
        year += 1;
    }
    if !(0..=9999).contains(&year) {
        return None;
    }
    let february = if is_leap(year) { 29 } else { 28 };
    let mut month = 1;
    for length in [31, february, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] {
        if day < length {
            break;
        }
        day -= length;
        month += 1;
    }
    Some((year, month, day + 1))
}

/// `1 byte`, `N bytes`.
struct ByteCount(usize);

impl Display for ByteCount {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self.0 {
            1 => f.write_str("1 byte"),
            n => write!(f, "{n} bytes"),
        }
    }
}

fn layout_of(f: &Formatter<'_>) -> Layout {
    if f.alternate() {
        Layout::Indented(0)
    } else {
        Layout::OneLine
    }
}

/// Writes a typed structure by encoding it and printing the generic value.
fn write_encoded(w: &mut dyn Write, item: &impl Encode, layout: Layout) -> fmt::Result {
    match Decoder::new(item.to_bytes()).decode_value() {
        Ok(v) => write_value(w, &v, None, layout),
        Err(e) => write!(w, "<undecodable: {e}>"),
    }
}

impl Display for Value {
    /// The one-line form, or with `{:#}` the indented form; see the [module documentation](crate::fmt).
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let layout = layout_of(f);
        write_value(f, self, None, layout)
    }
}

impl Display for Frame {
    /// `[channel] performative`, and `(payload N bytes)` for a transfer; `{:#}` indents the performative.
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let layout = layout_of(f);
        write!(f, "[{}] ", self.channel)?;
        match &self.body {
            FrameBody::Empty => f.write_str("(empty frame)"),
            FrameBody::Amqp {
                performative,
                payload,
            } => {
                write_encoded(f, performative, layout)?;
                if matches!(performative, Performative::Transfer(_)) || !payload.is_empty() {
                    write!(f, " (payload {})", ByteCount(payload.len()))?;
                }
                Ok(())
            }
            FrameBody::Sasl(sasl) => write_encoded(f, sasl, layout),
        }
    }
}

impl Display for Message {
    /// The sections as described values in wire order: on one line, or with `{:#}` one per line, indented.
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let layout = layout_of(f);
        let mut dec = Decoder::new(self.to_bytes());
        if dec.is_empty() {
            return f.write_str("(no sections)");
        }
        let mut first = true;
        while !dec.is_empty() {
            if !first {
                f.write_char(if f.alternate() { '\n' } else { ' ' })?;
            }
            first = false;
            match dec.decode_value() {
                Ok(section) => write_value(f, &section, None, layout)?,
                Err(e) => return write!(f, "<undecodable: {e}>"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::codec::{Decimal32, Map, Uuid};
    use crate::frame::{DeliveryState, ErrorCondition, ReceiverSettleMode, Role, SaslCode};

    /// Decodes one value filling `bytes`.
    fn decode(bytes: &[u8]) -> Value {
        let mut dec = Decoder::new(Bytes::copy_from_slice(bytes));
        let v = dec.decode_value().expect("test vector decodes");
        assert!(dec.is_empty(), "test vector has trailing bytes");
        v
    }

    fn one_line(bytes: &[u8]) -> String {
        decode(bytes).to_string()
    }

    fn indented(bytes: &[u8]) -> String {
        format!("{:#}", decode(bytes))
    }

    #[test]
    fn scalars_from_spec_encodings() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x40], "null"),
            (&[0x41], "true"),
            (&[0x56, 0x00], "false"),
            (&[0x50, 0x07], "7u8"),
            (&[0x60, 0x01, 0x00], "256u16"),
            (&[0x43], "0u32"),
            (&[0x52, 0x07], "7u32"),
            (&[0x70, 0xff, 0xff, 0xff, 0xff], "4294967295u32"),
            (&[0x44], "0u64"),
            (&[0x53, 0x07], "7u64"),
            (&[0x51, 0xf9], "-7i8"),
            (&[0x61, 0xff, 0xf9], "-7i16"),
            (&[0x54, 0xf9], "-7"),
            (&[0x71, 0x00, 0x01, 0x00, 0x00], "65536"),
            (&[0x55, 0xf9], "-7i64"),
            (
                &[0x81, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
                "9223372036854775807i64",
            ),
            (&[0x72, 0x3f, 0xc0, 0x00, 0x00], "1.5f32"),
            (&[0x72, 0x7f, 0xc0, 0x00, 0x00], "float(NaN)"),
            (&[0x72, 0xff, 0x80, 0x00, 0x00], "float(-inf)"),
            (&[0x82, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0], "1.5"),
            (&[0x82, 0x40, 0x59, 0, 0, 0, 0, 0, 0], "100.0"),
            (&[0x82, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0], "inf"),
            (&[0x74, 0x22, 0x00, 0x00, 0x0a], "decimal32(0x2200000a)"),
            (
                &[0x84, 0x22, 0x38, 0, 0, 0, 0, 0, 0x0a],
                "decimal64(0x223800000000000a)",
            ),
            (&[0x73, 0x00, 0x00, 0x00, 0x61], "'a'"),
            (&[0x73, 0x00, 0x00, 0x00, 0x27], r"'\''"),
            (&[0x73, 0x00, 0x01, 0xf6, 0x00], "'😀'"),
            (&[0xa1, 0x05, b'h', b'e', b'l', b'l', b'o'], "\"hello\""),
            (
                &[0xa1, 0x06, b'a', b'"', b'\\', b'\n', 0x1b, b'\''],
                r#""a\"\\\n\u{1b}'""#,
            ),
            (&[0xb1, 0, 0, 0, 0], "\"\""),
            (
                &[0xa0, 0x05, 0x00, b'a', b'b', b'"', 0xff],
                r#"b"\x00ab\"\xff""#,
            ),
            (&[0xa3, 0x05, b'h', b'e', b'l', b'l', b'o'], ":hello"),
            (
                &[
                    0xa3, 0x11, b'a', b'm', b'q', b'p', b':', b'n', b'o', b't', b'-', b'f', b'o',
                    b'u', b'n', b'd', b'/', b'x', b'$',
                ],
                ":amqp:not-found/x$",
            ),
            (&[0xa3, 0x03, b'a', b' ', b'b'], ":\"a b\""),
            (&[0xa3, 0x00], ":\"\""),
        ];
        for (bytes, text) in cases {
            assert_eq!(one_line(bytes), *text, "{bytes:02x?}");
        }
    }

    #[test]
    fn uuid_and_timestamps() {
        let mut uuid = vec![0x98];
        uuid.extend(0x00u8..0x10);
        assert_eq!(
            one_line(&uuid),
            "uuid(00010203-0405-0607-0809-0a0b0c0d0e0f)"
        );
        let ts = |millis: i64| {
            let mut b = vec![0x83];
            b.extend(millis.to_be_bytes());
            one_line(&b)
        };
        assert_eq!(ts(0), "timestamp(1970-01-01T00:00:00.000Z)");
        assert_eq!(ts(1_704_067_200_000), "timestamp(2024-01-01T00:00:00.000Z)");
        assert_eq!(ts(951_825_723_004), "timestamp(2000-02-29T12:02:03.004Z)");
        assert_eq!(ts(-1), "timestamp(1969-12-31T23:59:59.999Z)");
        assert_eq!(
            ts(-62_167_219_200_000),
            "timestamp(0000-01-01T00:00:00.000Z)"
        );
        assert_eq!(ts(-62_167_219_200_001), "timestamp(-62167219200001)");
        assert_eq!(
            ts(253_402_300_799_999),
            "timestamp(9999-12-31T23:59:59.999Z)"
        );
        assert_eq!(ts(253_402_300_800_000), "timestamp(253402300800000)");
        assert_eq!(ts(i64::MIN), format!("timestamp({})", i64::MIN));
        assert_eq!(ts(i64::MAX), format!("timestamp({})", i64::MAX));
    }

    #[test]
    fn compounds() {
        // list8 [1, "a", null], list0, map8 {"k": :v, 1: []}, array8 of int, array8 of symbol.
        assert_eq!(
            one_line(&[0xc0, 0x07, 0x03, 0x54, 0x01, 0xa1, 0x01, b'a', 0x40]),
            "[1, \"a\", null]"
        );
        assert_eq!(one_line(&[0x45]), "[]");
        assert_eq!(
            one_line(&[0xc1, 0x0a, 0x04, 0xa1, 0x01, b'k', 0xa3, 0x01, b'v', 0x54, 0x01, 0x45]),
            "{\"k\": :v, 1: []}"
        );
        assert_eq!(one_line(&[0xc1, 0x01, 0x00]), "{}");
        assert_eq!(
            one_line(&[0xe0, 0x04, 0x02, 0x54, 0x01, 0x02]),
            "array<int>[1, 2]"
        );
        assert_eq!(
            one_line(&[0xe0, 0x0a, 0x02, 0x70, 0, 0, 0, 1, 0, 0, 0, 2]),
            "array<uint>[1, 2]"
        );
        assert_eq!(
            one_line(&[0xe0, 0x06, 0x02, 0xa3, 0x01, b'a', 0x01, b'b']),
            "array<symbol>[:a, :b]"
        );
        assert_eq!(one_line(&[0xe0, 0x02, 0x00, 0x54]), "array<int>[]");
        // An array of two `accepted` outcomes: the shared descriptor, then two empty lists.
        assert_eq!(
            one_line(&[0xf0, 0, 0, 0, 0x08, 0, 0, 0, 0x02, 0x00, 0x53, 0x24, 0x45]),
            "array<@accepted(0x24) list>[[], []]"
        );
    }

    #[test]
    fn described_values() {
        // The open performative from a Proton trace, with its numeric descriptor.
        let open = [
            0x00, 0x53, 0x10, 0xc0, 0x0c, 0x03, 0xa1, 0x01, b'a', 0xa1, 0x01, b'h', 0x70, 0x00,
            0x00, 0x02, 0x00,
        ];
        assert_eq!(
            one_line(&open),
            "@open(0x10) [container-id=\"a\", hostname=\"h\", max-frame-size=512]"
        );
        // The same with the symbolic descriptor and a max-frame-size of the wrong type (ulong).
        let mut open_sym = vec![0x00, 0xa3, 14];
        open_sym.extend(b"amqp:open:list");
        open_sym.extend([
            0xc0, 0x0e, 0x03, 0xa1, 0x01, b'a', 0x40, 0x80, 0, 0, 0, 0, 0, 0, 0x02, 0x00,
        ]);
        assert_eq!(
            one_line(&open_sym),
            "@open(amqp:open:list) [container-id=\"a\", max-frame-size=512u64]"
        );
        // A close with fields past the spec's, from a newer peer.
        assert_eq!(
            one_line(&[0x00, 0x53, 0x18, 0xc0, 0x04, 0x03, 0x40, 0x40, 0x41]),
            "@close(0x18) [#2=true]"
        );
        // A known composite whose value is not a list is printed as the value.
        assert_eq!(
            one_line(&[0x00, 0x53, 0x24, 0x54, 0x01]),
            "@accepted(0x24) 1"
        );
        // The message sections.
        assert_eq!(
            one_line(&[0x00, 0x53, 0x77, 0xa1, 0x02, b'h', b'i']),
            "@amqp-value(0x77) \"hi\""
        );
        assert_eq!(
            one_line(&[0x00, 0x53, 0x75, 0xa0, 0x01, 0x00]),
            "@data(0x75) b\"\\x00\""
        );
        assert_eq!(
            one_line(&[0x00, 0x53, 0x70, 0xc0, 0x04, 0x02, 0x41, 0x50, 0x09]),
            "@header(0x70) [durable=true, priority=9]"
        );
        // Lifetime policies, transactions and SASL have names too.
        assert_eq!(
            one_line(&[0x00, 0x53, 0x2b, 0x45]),
            "@delete-on-close(0x2b) []"
        );
        assert_eq!(
            one_line(&[0x00, 0x53, 0x32, 0xc0, 0x05, 0x02, 0xa0, 0x01, 0x07, 0x41]),
            "@discharge(0x32) [txn-id=b\"\\x07\", fail=true]"
        );
        assert_eq!(
            one_line(&[0x00, 0x53, 0x44, 0xc0, 0x03, 0x01, 0x50, 0x00]),
            "@sasl-outcome(0x44) [code=0]"
        );
        // Unknown descriptors.
        assert_eq!(
            one_line(&[0x00, 0x80, 0, 0, 0x01, 0x37, 0, 0, 0, 0x01, 0xa1, 0x01, b'x']),
            "@0x00000137:0x00000001 \"x\""
        );
        assert_eq!(
            one_line(&[0x00, 0x53, 0x19, 0x41]),
            "@0x00000000:0x00000019 true"
        );
        let mut sym = vec![0x00, 0xa3, 17];
        sym.extend(b"com.example:thing");
        sym.push(0x45);
        assert_eq!(one_line(&sym), "@com.example:thing []");
        assert_eq!(
            one_line(&[0x00, 0xa3, 0x03, b'a', b' ', b'b', 0x40]),
            "@\"a b\" null"
        );
    }

    #[test]
    fn performatives_from_typed_structures() {
        let attach = Attach {
            name: "link-1".into(),
            handle: 0,
            role: Role::Receiver,
            source: Some(Source::with_address("queue")),
            target: Some(Target::default()),
            initial_delivery_count: None,
            ..Attach::default()
        };
        assert_eq!(
            Frame::amqp(3, attach).to_string(),
            "[3] @attach(0x12) [name=\"link-1\", handle=0, role=true, \
             source=@source(0x28) [address=\"queue\"], target=@target(0x29) []]"
        );
        let rejected = Disposition {
            role: Role::Receiver,
            first: 4,
            last: Some(6),
            settled: true,
            state: Some(DeliveryState::Rejected(Rejected {
                error: Some(Error::new(ErrorCondition::DecodeError, "bad")),
            })),
            batchable: false,
        };
        assert_eq!(
            Frame::amqp(0, rejected).to_string(),
            "[0] @disposition(0x15) [role=true, first=4, last=6, settled=true, \
             state=@rejected(0x25) [error=@error(0x1d) [condition=:amqp:decode-error, description=\"bad\"]]]"
        );
    }

    #[test]
    fn frames() {
        let transfer = Transfer {
            handle: 0,
            delivery_id: Some(1),
            delivery_tag: Some(Bytes::from_static(b"\x00\x01")),
            message_format: Some(0),
            settled: Some(false),
            rcv_settle_mode: Some(ReceiverSettleMode::Second),
            ..Transfer::default()
        };
        let frame = Frame {
            channel: 1,
            body: FrameBody::Amqp {
                performative: transfer.into(),
                payload: Bytes::from_static(b"abc"),
            },
        };
        assert_eq!(
            frame.to_string(),
            "[1] @transfer(0x14) [handle=0, delivery-id=1, delivery-tag=b\"\\x00\\x01\", message-format=0, \
             settled=false, rcv-settle-mode=1] (payload 3 bytes)"
        );
        assert_eq!(
            format!("{frame:#}"),
            "[1] @transfer(0x14) [\n  handle=0\n  delivery-id=1\n  delivery-tag=b\"\\x00\\x01\"\n  \
             message-format=0\n  settled=false\n  rcv-settle-mode=1\n] (payload 3 bytes)"
        );
        let empty = Frame {
            channel: 0,
            body: FrameBody::Empty,
        };
        assert_eq!(empty.to_string(), "[0] (empty frame)");
        assert_eq!(format!("{empty:#}"), "[0] (empty frame)");
        let close = Frame::amqp(0, Close { error: None });
        assert_eq!(close.to_string(), "[0] @close(0x18) []");
        let outcome = Frame {
            channel: 0,
            body: FrameBody::Sasl(
                SaslOutcome {
                    code: SaslCode::Auth,
                    additional_data: None,
                }
                .into(),
            ),
        };
        assert_eq!(outcome.to_string(), "[0] @sasl-outcome(0x44) [code=1]");
        let mechanisms = Frame {
            channel: 0,
            body: FrameBody::Sasl(
                SaslMechanisms {
                    sasl_server_mechanisms: vec!["PLAIN".into(), "ANONYMOUS".into()],
                }
                .into(),
            ),
        };
        assert_eq!(
            mechanisms.to_string(),
            "[0] @sasl-mechanisms(0x40) [sasl-server-mechanisms=array<symbol>[:PLAIN, :ANONYMOUS]]"
        );
    }

    #[test]
    fn indented_composites_put_one_field_per_line() {
        let open = [
            0x00, 0x53, 0x10, 0xc0, 0x0c, 0x03, 0xa1, 0x01, b'a', 0xa1, 0x01, b'h', 0x70, 0x00,
            0x00, 0x02, 0x00,
        ];
        assert_eq!(
            indented(&open),
            "@open(0x10) [\n  container-id=\"a\"\n  hostname=\"h\"\n  max-frame-size=512\n]"
        );
        // Nested composites indent further; empty ones stay on their line.
        let attach = Attach {
            name: "l".into(),
            handle: 7,
            role: Role::Sender,
            source: Some(Source {
                address: Some("q".into()),
                default_outcome: Some(crate::frame::Outcome::Accepted(Accepted {})),
                outcomes: Some(vec!["amqp:accepted:list".into()]),
                ..Source::default()
            }),
            target: Some(Target::default()),
            ..Attach::default()
        };
        assert_eq!(
            format!("{:#}", Frame::amqp(0, attach)),
            "[0] @attach(0x12) [
  name=\"l\"
  handle=7
  role=false
  source=@source(0x28) [
    address=\"q\"
    default-outcome=@accepted(0x24) []
    outcomes=array<symbol>[:amqp:accepted:list]
  ]
  target=@target(0x29) []
]"
        );
    }

    #[test]
    fn indented_compounds_break_when_not_tiny() {
        let mut map = Map::new();
        map.insert("short", Value::List(vec![1.into(), 2.into()]));
        map.insert("n", 5u64);
        let long: Vec<Value> = (0..20).map(|i: i32| Value::Int(i * 1000)).collect();
        map.insert(Value::Symbol("long".into()), Value::List(long));
        map.insert("empty", Value::List(vec![]));
        assert_eq!(
            format!("{:#}", Value::Map(map)),
            "{
  \"short\": [1, 2]
  \"n\": 5u64
  :long: [
    0
    1000
    2000
    3000
    4000
    5000
    6000
    7000
    8000
    9000
    10000
    11000
    12000
    13000
    14000
    15000
    16000
    17000
    18000
    19000
  ]
  \"empty\": []
}"
        );
        // A list that holds a compound puts one element per line even when short.
        let nested = Value::List(vec![Value::List(vec![1.into()]), 2.into()]);
        assert_eq!(format!("{nested:#}"), "[\n  [1]\n  2\n]");
        assert_eq!(nested.to_string(), "[[1], 2]");
    }

    #[test]
    fn indented_long_binary_is_a_hex_dump() {
        let b: Vec<u8> = b"Hello, world! This binary is 40 bytes.\x00\xff".to_vec();
        assert_eq!(
            format!("{:#}", Value::List(vec![Value::from(b.clone())])),
            "[
  binary(40 bytes) [
    0000  48 65 6c 6c 6f 2c 20 77 6f 72 6c 64 21 20 54 68  |Hello, world! Th|
    0010  69 73 20 62 69 6e 61 72 79 20 69 73 20 34 30 20  |is binary is 40 |
    0020  62 79 74 65 73 2e 00 ff                          |bytes...|
  ]
]"
        );
        let one_line = Value::from(b).to_string();
        assert_eq!(
            one_line,
            r#"b"Hello, world! This binary is 40 bytes.\x00\xff""#
        );
        let short = Value::from(&b"\x01\x02"[..]);
        assert_eq!(format!("{short:#}"), r#"b"\x01\x02""#);
    }

    #[test]
    fn messages_section_by_section() {
        let m = Message::builder()
            .durable(true)
            .message_id("id-1")
            .to("queue")
            .content_type(Symbol::from_static("text/plain"))
            .creation_time(Timestamp(1_704_067_200_000))
            .message_annotation("x-opt-a", 1i64)
            .property("count", 3i32)
            .body("hello")
            .footer("x-sig", Value::from(&b"\x01"[..]))
            .build();
        assert_eq!(
            format!("{m:#}"),
            "@header(0x70) [
  durable=true
]
@message-annotations(0x72) {:x-opt-a: 1i64}
@properties(0x73) [
  message-id=\"id-1\"
  to=\"queue\"
  content-type=:text/plain
  creation-time=timestamp(2024-01-01T00:00:00.000Z)
]
@application-properties(0x74) {\"count\": 3}
@amqp-value(0x77) \"hello\"
@footer(0x78) {:x-sig: b\"\\x01\"}"
        );
        let data = Message::builder().data(&b"ab"[..]).data(&b"c"[..]).build();
        assert_eq!(data.to_string(), "@data(0x75) b\"ab\" @data(0x75) b\"c\"");
        let seq = Message::builder().sequence(vec![1u8.into()]).build();
        assert_eq!(seq.to_string(), "@amqp-sequence(0x76) [1u8]");
        assert_eq!(Message::new().to_string(), "(no sections)");
        // A decoded message prints from the bytes it came from.
        let decoded = Message::decode(m.to_bytes()).unwrap();
        assert_eq!(decoded.to_string(), m.to_string());
    }

    #[test]
    fn every_spec_descriptor_is_known_by_code_and_symbol() {
        let codes: Vec<u64> = (0x10..=0x18)
            .chain([0x1d])
            .chain(0x23..=0x29)
            .chain(0x2b..=0x2e)
            .chain(0x30..=0x34)
            .chain(0x40..=0x44)
            .chain(0x70..=0x78)
            .collect();
        assert_eq!(KNOWN.len(), codes.len());
        for (k, code) in KNOWN.iter().zip(codes) {
            assert_eq!(k.code, code, "{}", k.name);
            assert!(
                k.symbol.starts_with(&format!("amqp:{}:", k.name)),
                "{}",
                k.symbol
            );
            let by_symbol = known(&Descriptor::Symbol(Symbol::from_static(k.symbol)));
            assert_eq!(by_symbol.map(|k| k.code), Some(code));
        }
    }

    #[test]
    fn decimals_and_floats_in_context() {
        let d = Value::Decimal32(Decimal32([0, 0, 0, 1]));
        assert_eq!(d.to_string(), "decimal32(0x00000001)");
        let floats =
            Array::new(Type::Float, vec![Value::Float(0.5), Value::Float(f32::NAN)]).unwrap();
        assert_eq!(Value::Array(floats).to_string(), "array<float>[0.5, NaN]");
        let uuids = Value::Uuid(Uuid([0xab; 16]));
        assert_eq!(
            uuids.to_string(),
            "uuid(abababab-abab-abab-abab-abababababab)"
        );
    }
}
