//! AMQP values and messages as JSON, for the web examples.
//!
//! JSON to AMQP ([`value_from_json`]) maps each JSON type to its natural AMQP type [AMQP 1.0 §1.6]: object →
//! map with string keys, array → list, integer → long (ulong above `i64::MAX`), other numbers → double,
//! boolean, null, string.
//!
//! AMQP to JSON ([`value_to_json`]) writes what JSON can say directly as itself: null, booleans, every
//! integer type as a number, finite floats as numbers, strings, lists and arrays as arrays (an array's
//! element type is not kept), maps whose keys are all strings as objects. Everything else becomes an
//! object with a `"$type"` member naming the AMQP type and a `"value"` member:
//!
//! | AMQP | JSON |
//! |---|---|
//! | symbol | `{"$type": "symbol", "value": "name"}` |
//! | binary | `{"$type": "binary", "value": "<base64>"}` (RFC 4648, padded) |
//! | timestamp | `{"$type": "timestamp", "value": <ms since the Unix epoch>}` |
//! | uuid | `{"$type": "uuid", "value": "8-4-4-4-12 lowercase hex"}` |
//! | char | `{"$type": "char", "value": "c"}` |
//! | decimal32/64/128 | `{"$type": "decimal64", "value": "<hex of the big-endian wire bytes>"}` |
//! | float/double NaN or infinite | `{"$type": "double", "value": "NaN" \| "Infinity" \| "-Infinity"}` |
//! | map with a non-string key | `{"$type": "map", "value": [[key, value], ...]}` |
//! | described | `{"$type": "described", "descriptor": <code> \| "symbol", "value": ...}` |
//!
//! The conversion is one way: [`value_from_json`] reads such an object back as a plain map.

use bytes::Bytes;
use nucleon::protocol::codec::{Descriptor, Map, Timestamp};
use nucleon::protocol::frame::{MessageId, Properties};
use nucleon::{Body, Message, Value};
use serde_json::{json, Map as JsonMap, Number, Value as Json};

/// The AMQP value for a JSON value (see the [module documentation](self) for the mapping).
pub fn value_from_json(json: &Json) -> Value {
    match json {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::Long(i)
            } else if let Some(u) = n.as_u64() {
                Value::Ulong(u)
            } else {
                Value::Double(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::String(s.clone()),
        Json::Array(items) => Value::List(items.iter().map(value_from_json).collect()),
        Json::Object(members) => Value::Map(Map::from_entries(
            members
                .iter()
                .map(|(k, v)| (Value::String(k.clone()), value_from_json(v)))
                .collect(),
        )),
    }
}

/// The JSON for an AMQP value (see the [module documentation](self) for the mapping).
pub fn value_to_json(value: &Value) -> Json {
    match value {
        Value::Null => Json::Null,
        Value::Bool(b) => Json::Bool(*b),
        Value::Ubyte(v) => json!(v),
        Value::Ushort(v) => json!(v),
        Value::Uint(v) => json!(v),
        Value::Ulong(v) => json!(v),
        Value::Byte(v) => json!(v),
        Value::Short(v) => json!(v),
        Value::Int(v) => json!(v),
        Value::Long(v) => json!(v),
        Value::Float(v) => float("float", f64::from(*v)),
        Value::Double(v) => float("double", *v),
        Value::Decimal32(d) => typed("decimal32", Json::String(hex(&d.0))),
        Value::Decimal64(d) => typed("decimal64", Json::String(hex(&d.0))),
        Value::Decimal128(d) => typed("decimal128", Json::String(hex(&d.0))),
        Value::Char(c) => typed("char", Json::String(c.to_string())),
        Value::Timestamp(t) => typed("timestamp", json!(t.millis())),
        Value::Uuid(u) => typed("uuid", Json::String(u.to_string())),
        Value::Binary(b) => typed("binary", Json::String(base64(b))),
        Value::String(s) => Json::String(s.clone()),
        Value::Symbol(s) => typed("symbol", Json::String(s.as_str().to_owned())),
        Value::List(items) => Json::Array(items.iter().map(value_to_json).collect()),
        Value::Array(a) => Json::Array(a.items().iter().map(value_to_json).collect()),
        Value::Map(m) => map_to_json(m),
        Value::Described(d) => {
            let descriptor = match &d.descriptor {
                Descriptor::Code(c) => json!(c),
                Descriptor::Symbol(s) => Json::String(s.as_str().to_owned()),
            };
            json!({"$type": "described", "descriptor": descriptor, "value": value_to_json(&d.value)})
        }
    }
}

/// A map as a JSON object when every key is a string, else as `{"$type": "map", "value": [[k, v], ...]}`.
pub fn map_to_json(map: &Map) -> Json {
    if map.iter().all(|(k, _)| matches!(k, Value::String(_))) {
        let members: JsonMap<String, Json> = map
            .iter()
            .filter_map(|(k, v)| match k {
                Value::String(k) => Some((k.clone(), value_to_json(v))),
                _ => None,
            })
            .collect();
        Json::Object(members)
    } else {
        let pairs = map
            .iter()
            .map(|(k, v)| Json::Array(vec![value_to_json(k), value_to_json(v)]))
            .collect();
        typed("map", Json::Array(pairs))
    }
}

fn typed(name: &str, value: Json) -> Json {
    json!({"$type": name, "value": value})
}

fn float(name: &str, v: f64) -> Json {
    match Number::from_f64(v) {
        Some(n) => Json::Number(n),
        None => {
            let text = if v.is_nan() {
                "NaN"
            } else if v > 0.0 {
                "Infinity"
            } else {
                "-Infinity"
            };
            typed(name, Json::String(text.to_owned()))
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `bytes` in base64 (the RFC 4648 standard alphabet, with padding).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 0x3f) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Whether a MIME content type is JSON: `application/json` or any `+json` type, parameters ignored.
pub fn is_json_type(content_type: &str) -> bool {
    let essence = mime_essence(content_type);
    essence == "application/json" || essence.ends_with("+json")
}

/// Whether a MIME content type is text (`text/*`), parameters ignored.
pub fn is_text_type(content_type: &str) -> bool {
    mime_essence(content_type).starts_with("text/")
}

/// The `type/subtype` of a MIME type, lowercase, without parameters.
fn mime_essence(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// A message as JSON: `body` (and `encoding` when the body is base64), `content_type`, `header`,
/// `properties` and `application_properties`, each only when the message has it.
///
/// The body: an `amqp-value` as [`value_to_json`]; `data` sections (joined) decoded as JSON when the content
/// type is JSON and they parse, as a string when it is text and they are UTF-8, else as base64 with
/// `"encoding": "base64"`; `amqp-sequence` sections as one array of all their values; no body as null.
pub fn message_to_json(message: &Message) -> Json {
    let mut out = JsonMap::new();
    let content_type = message.content_type().map(|s| s.as_str().to_owned());
    match message.body() {
        Body::Value(v) => {
            out.insert("body".into(), value_to_json(v));
        }
        Body::Data(sections) => {
            let bytes: Vec<u8> = sections.iter().flat_map(|s| s.iter().copied()).collect();
            let ct = content_type.as_deref().unwrap_or_default();
            let text = std::str::from_utf8(&bytes).ok();
            let decoded = match text {
                Some(t) if is_json_type(ct) => serde_json::from_str::<Json>(t).ok(),
                Some(t) if is_text_type(ct) => Some(Json::String(t.to_owned())),
                _ => None,
            };
            match decoded {
                Some(body) => {
                    out.insert("body".into(), body);
                }
                None => {
                    out.insert("body".into(), Json::String(base64(&bytes)));
                    out.insert("encoding".into(), Json::String("base64".into()));
                }
            }
        }
        Body::Sequence(sections) => {
            let items = sections.iter().flatten().map(value_to_json).collect();
            out.insert("body".into(), Json::Array(items));
        }
        Body::Empty => {
            out.insert("body".into(), Json::Null);
        }
    }
    if let Some(ct) = content_type {
        out.insert("content_type".into(), Json::String(ct));
    }
    if let Some(h) = message.header() {
        out.insert(
            "header".into(),
            json!({
                "durable": h.durable,
                "priority": h.priority,
                "ttl": h.ttl,
                "first_acquirer": h.first_acquirer,
                "delivery_count": h.delivery_count,
            }),
        );
    }
    if let Some(p) = message.properties() {
        let props = properties_to_json(p);
        if !props.is_empty() {
            out.insert("properties".into(), Json::Object(props));
        }
    }
    if let Some(ap) = message.application_properties() {
        out.insert("application_properties".into(), map_to_json(ap));
    }
    Json::Object(out)
}

/// The properties that are set, by their spec names with `_` for `-` (content-type is left to the caller).
fn properties_to_json(p: &Properties) -> JsonMap<String, Json> {
    let id = |id: &Option<MessageId>| id.clone().map(|id| value_to_json(&Value::from(id)));
    let text = |s: &Option<String>| s.clone().map(Json::String);
    let time = |t: &Option<Timestamp>| t.map(|t| value_to_json(&Value::Timestamp(t)));
    let fields = [
        ("message_id", id(&p.message_id)),
        (
            "user_id",
            p.user_id
                .as_ref()
                .map(|b: &Bytes| value_to_json(&Value::Binary(b.clone()))),
        ),
        ("to", text(&p.to)),
        ("subject", text(&p.subject)),
        ("reply_to", text(&p.reply_to)),
        ("correlation_id", id(&p.correlation_id)),
        (
            "content_encoding",
            p.content_encoding
                .as_ref()
                .map(|s| Json::String(s.as_str().to_owned())),
        ),
        ("absolute_expiry_time", time(&p.absolute_expiry_time)),
        ("creation_time", time(&p.creation_time)),
        ("group_id", text(&p.group_id)),
        ("group_sequence", p.group_sequence.map(|n| json!(n))),
        ("reply_to_group_id", text(&p.reply_to_group_id)),
    ];
    fields
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| (name.to_owned(), v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nucleon::protocol::codec::{Array, Decimal128, Decimal32, Decimal64, Symbol, Type, Uuid};

    #[test]
    fn json_becomes_native_amqp_values() {
        let json = json!({"a": [1, -2, 1.5, true, null, "s"], "big": u64::MAX, "o": {}});
        let mut inner = Map::new();
        inner.insert(
            "a",
            Value::List(vec![
                Value::Long(1),
                Value::Long(-2),
                Value::Double(1.5),
                Value::Bool(true),
                Value::Null,
                Value::String("s".into()),
            ]),
        );
        inner.insert("big", Value::Ulong(u64::MAX));
        inner.insert("o", Value::Map(Map::new()));
        assert_eq!(value_from_json(&json), Value::Map(inner));
    }

    #[test]
    fn natural_json_survives_a_round_trip() {
        let json =
            json!({"n": {"x": [1, 2.25, false, null]}, "i": i64::MIN, "u": u64::MAX, "s": "é"});
        assert_eq!(value_to_json(&value_from_json(&json)), json);
    }

    #[test]
    fn every_integer_type_is_a_number() {
        for v in [
            Value::Ubyte(1),
            Value::Ushort(1),
            Value::Uint(1),
            Value::Ulong(1),
            Value::Byte(1),
            Value::Short(1),
            Value::Int(1),
            Value::Long(1),
        ] {
            assert_eq!(value_to_json(&v), json!(1), "{v:?}");
        }
        assert_eq!(value_to_json(&Value::Float(0.5)), json!(0.5));
    }

    #[test]
    fn types_json_lacks_are_tagged() {
        let uuid = Uuid([
            0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0, 1, 2, 3, 4, 5, 6, 7,
        ]);
        let cases = [
            (
                Value::Symbol(Symbol::from_static("sym")),
                json!({"$type": "symbol", "value": "sym"}),
            ),
            (
                Value::Binary(Bytes::from_static(b"\x00\xffab")),
                json!({"$type": "binary", "value": "AP9hYg=="}),
            ),
            (
                Value::Timestamp(Timestamp(1_700_000_000_123)),
                json!({"$type": "timestamp", "value": 1_700_000_000_123_i64}),
            ),
            (
                Value::Uuid(uuid),
                json!({"$type": "uuid", "value": "12345678-9abc-def0-0001-020304050607"}),
            ),
            (Value::Char('λ'), json!({"$type": "char", "value": "λ"})),
            (
                Value::Decimal32(Decimal32([0x22, 0x50, 0, 1])),
                json!({"$type": "decimal32", "value": "22500001"}),
            ),
            (
                Value::Decimal64(Decimal64([0, 0, 0, 0, 0, 0, 0, 0xff])),
                json!({"$type": "decimal64", "value": "00000000000000ff"}),
            ),
            (
                Value::Decimal128(Decimal128([1; 16])),
                json!({"$type": "decimal128", "value": "01".repeat(16)}),
            ),
            (
                Value::Double(f64::NAN),
                json!({"$type": "double", "value": "NaN"}),
            ),
            (
                Value::Float(f32::NEG_INFINITY),
                json!({"$type": "float", "value": "-Infinity"}),
            ),
            (
                Value::described(Descriptor::Code(0x77), Value::Int(3)),
                json!({"$type": "described", "descriptor": 0x77, "value": 3}),
            ),
            (
                Value::described(Descriptor::Symbol("x:y".into()), Value::Null),
                json!({"$type": "described", "descriptor": "x:y", "value": null}),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(value_to_json(&value), expected, "{value:?}");
        }
    }

    #[test]
    fn a_map_with_a_non_string_key_is_a_list_of_pairs() {
        let mut m = Map::new();
        m.insert("s", 1i32);
        m.insert(Value::Symbol(Symbol::from_static("k")), 2i32);
        m.insert(7i64, Value::Null);
        assert_eq!(
            value_to_json(&Value::Map(m)),
            json!({"$type": "map", "value": [
                ["s", 1],
                [{"$type": "symbol", "value": "k"}, 2],
                [7, null],
            ]})
        );
    }

    #[test]
    fn an_array_is_a_json_array_of_its_elements() {
        let a = Array::new(Type::Int, vec![Value::Int(1), Value::Int(2)]).expect("an int array");
        assert_eq!(value_to_json(&Value::Array(a)), json!([1, 2]));
    }

    #[test]
    fn base64_matches_rfc_4648_test_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }

    #[test]
    fn data_bodies_are_decoded_by_content_type() {
        let json_data = Message::builder()
            .data(Bytes::from_static(br#"{"a":1}"#))
            .content_type(Symbol::from_static("application/json; charset=utf-8"))
            .build();
        assert_eq!(message_to_json(&json_data)["body"], json!({"a": 1}));
        let text = Message::builder()
            .data(Bytes::from_static(b"hi"))
            .content_type(Symbol::from_static("text/plain"))
            .build();
        assert_eq!(message_to_json(&text)["body"], json!("hi"));
        let binary = Message::builder()
            .data(Bytes::from_static(b"\xff"))
            .content_type(Symbol::from_static("text/plain"))
            .build();
        let j = message_to_json(&binary);
        assert_eq!(j["body"], json!("/w=="));
        assert_eq!(j["encoding"], json!("base64"));
        assert_eq!(j["content_type"], json!("text/plain"));
    }

    #[test]
    fn a_message_shows_its_sections_that_are_set() {
        let m = Message::builder()
            .body(Value::Long(5))
            .subject("s")
            .message_id(MessageId::Ulong(9))
            .durable(true)
            .property("k", "v")
            .build();
        let j = message_to_json(&m);
        assert_eq!(j["body"], json!(5));
        assert_eq!(j["properties"], json!({"subject": "s", "message_id": 9}));
        assert_eq!(j["header"]["durable"], json!(true));
        assert_eq!(j["application_properties"], json!({"k": "v"}));
        assert!(j.get("content_type").is_none());
        let seq = Message::builder()
            .sequence(vec![Value::Int(1)])
            .sequence(vec![Value::Int(2)])
            .build();
        assert_eq!(message_to_json(&seq)["body"], json!([1, 2]));
        assert_eq!(message_to_json(&Message::new())["body"], Json::Null);
    }
}
