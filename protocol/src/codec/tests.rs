//! Spec byte vectors for every encoding [AMQP 1.0 §1.6]: what we write, and what we accept.

use bytes::Bytes;

use super::*;

fn enc(v: &Value) -> Vec<u8> {
    let b = v.to_bytes();
    assert_eq!(b.len(), v.encoded_size(), "encoded_size of {v:?}");
    b.to_vec()
}

fn dec(bytes: &[u8]) -> Value {
    Value::decode_from(Bytes::copy_from_slice(bytes))
        .unwrap_or_else(|e| panic!("decoding {bytes:02x?}: {e}"))
}

fn dec_err(bytes: &[u8]) -> DecodeError {
    match Value::decode_from(Bytes::copy_from_slice(bytes)) {
        Ok(v) => panic!("{bytes:02x?} decoded to {v:?}, expected an error"),
        Err(e) => e,
    }
}

/// Encodes `v`, checks the bytes are `expected`, and checks they decode back to `v`.
fn both_ways(v: Value, expected: &[u8]) {
    assert_eq!(enc(&v), expected, "encoding of {v:?}");
    assert_eq!(dec(expected), v, "decoding of {expected:02x?}");
}

fn sym(s: &'static str) -> Value {
    Value::Symbol(Symbol::from_static(s))
}

#[test]
fn null_and_booleans() {
    both_ways(Value::Null, &[0x40]);
    both_ways(Value::Bool(true), &[0x41]);
    both_ways(Value::Bool(false), &[0x42]);
    assert_eq!(dec(&[0x56, 0x01]), Value::Bool(true));
    assert_eq!(dec(&[0x56, 0x00]), Value::Bool(false));
    assert_eq!(
        dec_err(&[0x56, 0x02]).kind,
        DecodeErrorKind::InvalidBoolean(2)
    );
}

#[test]
fn unsigned_integers_use_the_smallest_form() {
    both_ways(Value::Ubyte(0xab), &[0x50, 0xab]);
    both_ways(Value::Ushort(0x1234), &[0x60, 0x12, 0x34]);
    both_ways(Value::Uint(0), &[0x43]);
    both_ways(Value::Uint(255), &[0x52, 0xff]);
    both_ways(Value::Uint(256), &[0x70, 0, 0, 1, 0]);
    both_ways(Value::Ulong(0), &[0x44]);
    both_ways(Value::Ulong(7), &[0x53, 7]);
    both_ways(
        Value::Ulong(u64::MAX),
        &[0x80, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
    );
    // Every form is accepted, however wasteful.
    assert_eq!(dec(&[0x70, 0, 0, 0, 0]), Value::Uint(0));
    assert_eq!(dec(&[0x80, 0, 0, 0, 0, 0, 0, 0, 5]), Value::Ulong(5));
}

#[test]
fn signed_integers_use_the_smallest_form() {
    both_ways(Value::Byte(-2), &[0x51, 0xfe]);
    both_ways(Value::Short(-2), &[0x61, 0xff, 0xfe]);
    both_ways(Value::Int(-128), &[0x54, 0x80]);
    both_ways(Value::Int(127), &[0x54, 0x7f]);
    both_ways(Value::Int(128), &[0x71, 0, 0, 0, 0x80]);
    both_ways(Value::Long(-1), &[0x55, 0xff]);
    both_ways(Value::Long(i64::MIN), &[0x81, 0x80, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(dec(&[0x71, 0xff, 0xff, 0xff, 0xff]), Value::Int(-1));
}

#[test]
fn floats_decimals_char_timestamp_uuid() {
    both_ways(Value::Float(1.5), &[0x72, 0x3f, 0xc0, 0, 0]);
    both_ways(Value::Double(-2.0), &[0x82, 0xc0, 0, 0, 0, 0, 0, 0, 0]);
    both_ways(
        Value::Decimal32(Decimal32([1, 2, 3, 4])),
        &[0x74, 1, 2, 3, 4],
    );
    both_ways(
        Value::Decimal64(Decimal64([1, 2, 3, 4, 5, 6, 7, 8])),
        &[0x84, 1, 2, 3, 4, 5, 6, 7, 8],
    );
    let d128 = [9u8; 16];
    let mut bytes = vec![0x94];
    bytes.extend_from_slice(&d128);
    both_ways(Value::Decimal128(Decimal128(d128)), &bytes);
    both_ways(Value::Char('€'), &[0x73, 0, 0, 0x20, 0xac]);
    assert_eq!(
        dec_err(&[0x73, 0, 0, 0xd8, 0]).kind,
        DecodeErrorKind::InvalidChar(0xd800)
    );
    both_ways(
        Value::Timestamp(Timestamp(1_311_704_463_521)),
        &[0x83, 0, 0, 0x01, 0x31, 0x67, 0xad, 0xb8, 0xa1],
    );
    let id = [0x12u8; 16];
    let mut bytes = vec![0x98];
    bytes.extend_from_slice(&id);
    both_ways(Value::Uuid(Uuid(id)), &bytes);
    assert_eq!(Uuid(id).to_string(), "12121212-1212-1212-1212-121212121212");
    // NaN round-trips bit for bit.
    let nan = Value::Double(f64::from_bits(0x7ff8_0000_0000_0001));
    assert_eq!(dec(&enc(&nan)), nan);
}

#[test]
fn variable_width_types_switch_to_32_bit_sizes_past_255() {
    both_ways(
        Value::Binary(Bytes::from_static(b"ab")),
        &[0xa0, 2, b'a', b'b'],
    );
    both_ways(Value::String("hi".into()), &[0xa1, 2, b'h', b'i']);
    both_ways(sym("ab"), &[0xa3, 2, b'a', b'b']);
    for (v, code) in [
        (Value::Binary(Bytes::from(vec![7u8; 256])), 0xb0),
        (Value::String("x".repeat(256)), 0xb1),
        (Value::Symbol(Symbol::from("y".repeat(256))), 0xb3),
    ] {
        let b = enc(&v);
        assert_eq!(&b[..5], &[code, 0, 0, 1, 0]);
        assert_eq!(b.len(), 5 + 256);
        assert_eq!(dec(&b), v);
    }
    let e = v255("z");
    assert_eq!(enc(&e)[..2], [0xa1, 255]);
    assert_eq!(
        dec_err(&[0xa1, 2, 0xff, 0xfe]).kind,
        DecodeErrorKind::InvalidUtf8
    );
}

fn v255(s: &str) -> Value {
    Value::String(s.repeat(255))
}

#[test]
fn decoded_binary_shares_the_input_buffer() {
    let input = Bytes::from_static(&[0xa0, 3, 1, 2, 3]);
    let v = Value::decode_from(input.clone()).unwrap();
    let b = v.as_binary().unwrap();
    assert_eq!(b.as_ptr(), input[2..].as_ptr(), "no copy was made");
}

#[test]
fn lists_use_list0_list8_and_list32() {
    both_ways(Value::List(vec![]), &[0x45]);
    both_ways(
        Value::List(vec![Value::Uint(1), Value::Null]),
        &[0xc0, 4, 2, 0x52, 1, 0x40],
    );
    let big = Value::List(vec![Value::Ubyte(1); 128]);
    let b = enc(&big);
    assert_eq!(&b[..9], &[0xd0, 0, 0, 1, 4, 0, 0, 0, 128]);
    assert_eq!(dec(&b), big);
    // list8 and list32 are accepted for anything, including an empty list.
    assert_eq!(dec(&[0xc0, 1, 0]), Value::List(vec![]));
    assert_eq!(dec(&[0xd0, 0, 0, 0, 4, 0, 0, 0, 0]), Value::List(vec![]));
}

#[test]
fn maps_keep_key_order_and_switch_forms() {
    let m: Map = [(sym("b"), Value::Int(1)), (sym("a"), Value::Int(2))]
        .into_iter()
        .collect();
    both_ways(
        Value::Map(m.clone()),
        &[0xc1, 11, 4, 0xa3, 1, b'b', 0x54, 1, 0xa3, 1, b'a', 0x54, 2],
    );
    let keys: Vec<_> = m.iter().map(|(k, _)| k.as_str().unwrap()).collect();
    assert_eq!(keys, ["b", "a"]);
    let big: Map = (0..100u32).map(|i| (i, "v")).collect();
    let b = enc(&Value::Map(big.clone()));
    assert_eq!(b[0], 0xd1);
    assert_eq!(dec(&b), Value::Map(big));
    assert_eq!(
        dec_err(&[0xc1, 2, 1, 0x40]).kind,
        DecodeErrorKind::OddMapCount(1)
    );
}

#[test]
fn arrays_share_one_constructor() {
    let ints = Array::new(Type::Int, vec![Value::Int(1), Value::Int(2)]).unwrap();
    both_ways(
        Value::Array(ints),
        &[0xe0, 10, 2, 0x71, 0, 0, 0, 1, 0, 0, 0, 2],
    );
    let syms = Array::of_symbols([Symbol::from_static("a"), Symbol::from_static("bc")]);
    both_ways(
        Value::Array(syms),
        &[0xe0, 7, 2, 0xa3, 1, b'a', 2, b'b', b'c'],
    );
    let empty = Array::new(Type::Ulong, vec![]).unwrap();
    both_ways(Value::Array(empty), &[0xe0, 2, 0, 0x80]);
    let bools = Array::new(Type::Boolean, vec![Value::Bool(true), Value::Bool(false)]).unwrap();
    both_ways(Value::Array(bools), &[0xe0, 4, 2, 0x56, 1, 0]);
    // Arrays using compact element constructors decode too.
    assert_eq!(
        dec(&[0xe0, 4, 2, 0x52, 7, 8]),
        Value::Array(Array::new(Type::Uint, vec![Value::Uint(7), Value::Uint(8)]).unwrap())
    );
    assert_eq!(
        dec(&[0xf0, 0, 0, 0, 5, 0, 0, 0, 2, 0x41]),
        Value::Array(Array::new(Type::Boolean, vec![Value::Bool(true); 2]).unwrap())
    );
    assert!(Array::new(Type::Int, vec![Value::Long(1)]).is_err());
}

#[test]
fn arrays_of_described_values_and_of_arrays() {
    let described = Array::described(
        Descriptor::Code(0x77),
        Type::String,
        vec![Value::String("x".into()), Value::String("yz".into())],
    )
    .unwrap();
    both_ways(
        Value::Array(described),
        &[0xe0, 10, 2, 0x00, 0x53, 0x77, 0xa1, 1, b'x', 2, b'y', b'z'],
    );
    let inner1 = Value::Array(Array::new(Type::Ubyte, vec![Value::Ubyte(1)]).unwrap());
    let inner2 = Value::Array(Array::of_symbols([Symbol::from_static("s")]));
    let outer = Value::Array(Array::new(Type::Array, vec![inner1, inner2]).unwrap());
    both_ways(
        outer,
        &[
            0xe0, 11, 2, 0xe0, // array8 of 2 array8 elements
            3, 1, 0x50, 1, // [ubyte 1]
            4, 1, 0xa3, 1, b's', // [:s]
        ],
    );
    let lists = Array::new(
        Type::List,
        vec![Value::List(vec![]), Value::List(vec![Value::Null])],
    )
    .unwrap();
    let b = enc(&Value::Array(lists.clone()));
    assert_eq!(b, [0xe0, 7, 2, 0xc0, 1, 0, 2, 1, 0x40]);
    assert_eq!(dec(&b), Value::Array(lists));
}

#[test]
fn described_values_with_numeric_and_symbolic_descriptors() {
    both_ways(
        Value::described(Descriptor::Code(0x24), Value::List(vec![])),
        &[0x00, 0x53, 0x24, 0x45],
    );
    both_ways(
        Value::described(Descriptor::Code(0x0000_0468_0000_0001), Value::Null),
        &[0x00, 0x80, 0, 0, 0x04, 0x68, 0, 0, 0, 1, 0x40],
    );
    both_ways(
        Value::described(
            Descriptor::Symbol(Symbol::from_static("x:y")),
            Value::Int(1),
        ),
        &[0x00, 0xa3, 3, b'x', b':', b'y', 0x54, 1],
    );
    assert_eq!(
        dec_err(&[0x00, 0xa1, 1, b'x', 0x40]).kind,
        DecodeErrorKind::InvalidDescriptor
    );
}

#[test]
fn claims_beyond_the_input_fail_before_allocating() {
    // list32 claiming 4 GiB of content.
    let e = dec_err(&[0xd0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1]);
    assert!(matches!(e.kind, DecodeErrorKind::LengthOutOfBounds { .. }));
    assert_eq!(e.offset, 1);
    // A count larger than the size could hold.
    let e = dec_err(&[0xd0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]);
    assert!(matches!(e.kind, DecodeErrorKind::LengthOutOfBounds { .. }));
    // An array of four billion nulls.
    let e = dec_err(&[0xf0, 0, 0, 0, 5, 0xff, 0xff, 0xff, 0xff, 0x40]);
    assert!(matches!(e.kind, DecodeErrorKind::LengthOutOfBounds { .. }));
    // ...but an encoder's array of many nulls still decodes.
    let nulls = Value::Array(Array::new(Type::Null, vec![Value::Null; 1000]).unwrap());
    assert_eq!(dec(&enc(&nulls)), nulls);
    // An array of fixed-width elements that cannot fit.
    let e = dec_err(&[0xe0, 3, 200, 0x71, 0]);
    assert!(matches!(e.kind, DecodeErrorKind::LengthOutOfBounds { .. }));
    // Binary claiming more than is present.
    let e = dec_err(&[0xb0, 0, 0, 1, 0, 1, 2]);
    assert!(matches!(e.kind, DecodeErrorKind::LengthOutOfBounds { .. }));
    // Truncated scalars.
    let e = dec_err(&[0x70, 0, 0]);
    assert!(matches!(e.kind, DecodeErrorKind::UnexpectedEof { .. }));
    assert_eq!(dec_err(&[]).offset, 0);
}

#[test]
fn the_decode_budget_counts_slots_boxes_and_copied_text() {
    let value = std::mem::size_of::<Value>();
    let budget_for = |bytes: &[u8], budget: usize| {
        let mut d = Decoder::new(Bytes::copy_from_slice(bytes));
        d.set_budget(budget);
        d.decode_value().map(|_| d.budget_left())
    };
    // A list of three nulls takes three slots.
    let list = [0xc0, 4, 3, 0x40, 0x40, 0x40];
    assert_eq!(budget_for(&list, 3 * value), Ok(0));
    let e = budget_for(&list, 3 * value - 1).unwrap_err();
    assert_eq!(
        e.kind,
        DecodeErrorKind::BudgetExceeded {
            budget: 3 * value - 1
        }
    );
    assert_eq!(e.offset, 3, "refused before the elements are read");
    // A map of one entry takes a pair of slots; a string its bytes; binary nothing (it is a slice).
    let map = [0xc1, 8, 2, 0xa1, 2, b'h', b'i', 0xa0, 1, 0xff];
    assert_eq!(budget_for(&map, 2 * value + 2), Ok(0));
    assert!(budget_for(&map, 2 * value + 1).is_err());
    // A described value takes its box; a symbol descriptor nothing more (it is a slice, like binary).
    let described = [0x00, 0xa3, 1, b'x', 0x40];
    let boxed = std::mem::size_of::<Described>();
    assert_eq!(budget_for(&described, boxed), Ok(0));
    assert!(budget_for(&described, boxed - 1).is_err());
    // A described array holds its descriptor in a box.
    let array = [0xe0, 4, 2, 0x00, 0x44, 0x41];
    let slots = 2 * value + std::mem::size_of::<Descriptor>();
    assert_eq!(budget_for(&array, slots), Ok(0));
    assert!(budget_for(&array, slots - 1).is_err());
    // The default allows the factor per input byte plus the floor.
    assert_eq!(
        default_decode_budget(1000),
        1000 * DEFAULT_DECODE_BUDGET_FACTOR + DEFAULT_DECODE_BUDGET_FLOOR
    );
    assert_eq!(default_decode_budget(usize::MAX), usize::MAX);
    let e = budget_for(&list, 0).unwrap_err();
    assert_eq!(e.condition(), crate::frame::ErrorCondition::DecodeError);
}

#[test]
fn nesting_depth_is_bounded() {
    let depth = DEFAULT_MAX_DEPTH + 1;
    let mut bytes = Vec::new();
    for _ in 0..depth {
        bytes.extend_from_slice(&[0xd0, 0, 0, 0, 0, 0, 0, 0, 1]);
    }
    bytes.push(0x40);
    // Patch the sizes from the inside out.
    let n = bytes.len();
    for i in 0..depth {
        let size = (n - (i * 9 + 5)) as u32;
        bytes[i * 9 + 1..i * 9 + 5].copy_from_slice(&size.to_be_bytes());
    }
    let e = dec_err(&bytes);
    assert_eq!(
        e.kind,
        DecodeErrorKind::DepthLimitExceeded(DEFAULT_MAX_DEPTH)
    );
    // One level less is fine.
    assert!(Value::decode_from(Bytes::copy_from_slice(&bytes[9..])).is_ok());
}

#[test]
fn invalid_format_codes_and_trailing_bytes_are_errors_with_offsets() {
    let e = dec_err(&[0xc0, 3, 2, 0x40, 0x01]);
    assert_eq!(e.kind, DecodeErrorKind::InvalidFormatCode(0x01));
    assert_eq!(e.offset, 4);
    assert_eq!(e.condition(), crate::frame::ErrorCondition::DecodeError);
    let e = dec_err(&[0x40, 0x40]);
    assert_eq!(e.kind, DecodeErrorKind::TrailingBytes(1));
    assert!(e.to_string().contains("at byte 1"));
}

#[test]
fn typed_decoding_accepts_every_form_and_rejects_other_types() {
    let mut d = Decoder::new(Bytes::from_static(&[
        0x43, 0x52, 9, 0x70, 0, 0, 1, 0, 0xa1, 0,
    ]));
    assert_eq!(u32::decode(&mut d).unwrap(), 0);
    assert_eq!(u32::decode(&mut d).unwrap(), 9);
    assert_eq!(u32::decode(&mut d).unwrap(), 256);
    let e = u32::decode(&mut d).unwrap_err();
    assert_eq!(
        e.kind,
        DecodeErrorKind::UnexpectedType {
            expected: "uint",
            found: 0xa1
        }
    );
    assert_eq!(e.offset, 8);
    // A "multiple" symbol field accepts a lone symbol or an array.
    let one = Vec::<Symbol>::decode_from(Bytes::from_static(&[0xa3, 1, b'a'])).unwrap();
    assert_eq!(one, vec![Symbol::from_static("a")]);
    let many =
        Vec::<Symbol>::decode_from(Bytes::from_static(&[0xe0, 6, 2, 0xa3, 1, b'a', 1, b'b']))
            .unwrap();
    assert_eq!(many.len(), 2);
    assert_eq!(
        Option::<u32>::decode_from(Bytes::from_static(&[0x40])).unwrap(),
        None
    );
}
