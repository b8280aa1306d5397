//! Byte vectors for the typed structures and the framing.

use bytes::Bytes;

use super::*;
use crate::codec::{Decode, DecodeErrorKind, Encode, Symbol, Value};

fn decode<T: Decode>(bytes: &[u8]) -> Result<T, crate::codec::DecodeError> {
    T::decode_from(Bytes::copy_from_slice(bytes))
}

#[test]
fn open_encodes_present_fields_and_nulls_between_them() {
    let open = Open {
        container_id: "c".into(),
        max_frame_size: 512,
        ..Open::default()
    };
    let bytes = open.to_bytes();
    assert_eq!(
        &bytes[..],
        &[0x00, 0x53, 0x10, 0xc0, 0x0a, 0x03, 0xa1, 1, b'c', 0x40, 0x70, 0, 0, 2, 0]
    );
    assert_eq!(bytes.len(), open.encoded_size());
    assert_eq!(decode::<Open>(&bytes).unwrap(), open);
}

#[test]
fn absent_and_null_fields_take_the_spec_defaults() {
    let open = decode::<Open>(&[0x00, 0x53, 0x10, 0xc0, 0x05, 0x02, 0xa1, 1, b'c', 0x40]).unwrap();
    assert_eq!(open.max_frame_size, u32::MAX);
    assert_eq!(open.channel_max, u16::MAX);
    assert_eq!(open.hostname, None);
    let attach = Attach::default();
    assert_eq!(attach.snd_settle_mode, SenderSettleMode::Mixed);
    assert_eq!(attach.rcv_settle_mode, ReceiverSettleMode::First);
    assert_eq!(Header::default().priority, 4);
    // A default value is written as null, so trailing defaults vanish entirely.
    let header = Header {
        priority: 4,
        ..Header::default()
    };
    assert_eq!(&header.to_bytes()[..], &[0x00, 0x53, 0x70, 0x45]);
}

#[test]
fn missing_mandatory_fields_are_invalid_field_errors() {
    let e = decode::<Open>(&[0x00, 0x53, 0x10, 0x45]).unwrap_err();
    assert!(matches!(
        e.kind,
        DecodeErrorKind::MissingField {
            structure: "amqp:open:list",
            field: "container_id"
        }
    ));
    assert_eq!(e.condition(), ErrorCondition::InvalidField);
    let e = decode::<Open>(&[0x00, 0x53, 0x10, 0xc0, 2, 1, 0x40]).unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::MissingField { .. }));
}

#[test]
fn restricted_values_outside_their_set_are_rejected() {
    let attach = Attach {
        name: "l".into(),
        handle: 0,
        role: Role::Sender,
        snd_settle_mode: SenderSettleMode::Settled,
        ..Attach::default()
    };
    let mut bytes = attach.to_bytes().to_vec();
    let at = bytes.len() - 1;
    assert_eq!(
        &bytes[at - 1..],
        &[0x50, 1],
        "snd-settle-mode is the last field"
    );
    bytes[at] = 7;
    let e = decode::<Attach>(&bytes).unwrap_err();
    assert!(matches!(
        e.kind,
        DecodeErrorKind::InvalidField {
            field: "sender-settle-mode",
            ..
        }
    ));
}

#[test]
fn symbolic_descriptors_and_extra_trailing_fields_are_accepted() {
    let mut bytes = vec![0x00, 0xa3, 15];
    bytes.extend_from_slice(b"amqp:close:list");
    bytes.push(0x45);
    assert_eq!(
        decode::<Performative>(&bytes).unwrap(),
        Performative::Close(Close::default())
    );
    // A newer peer may send more fields than we know; they are skipped.
    let end = decode::<End>(&[0x00, 0x53, 0x17, 0xc0, 4, 2, 0x40, 0x52, 5]).unwrap();
    assert_eq!(end, End::default());
}

#[test]
fn unknown_descriptors_are_reported() {
    let e = decode::<Performative>(&[0x00, 0x53, 0x99, 0x45]).unwrap_err();
    assert!(matches!(
        e.kind,
        DecodeErrorKind::UnexpectedDescriptor { .. }
    ));
    let e = decode::<Open>(&[0x00, 0x53, 0x11, 0x45]).unwrap_err();
    assert!(matches!(
        e.kind,
        DecodeErrorKind::UnexpectedDescriptor { .. }
    ));
}

#[test]
fn every_performative_round_trips() {
    let error = Error::new(ErrorCondition::WindowViolation, "too many");
    let performatives: Vec<Performative> = vec![
        Open {
            container_id: "container".into(),
            hostname: Some("host".into()),
            idle_time_out: Some(30_000),
            offered_capabilities: Some(vec![Symbol::from_static("ANONYMOUS-RELAY")]),
            ..Open::default()
        }
        .into(),
        Begin {
            remote_channel: Some(3),
            next_outgoing_id: 1,
            incoming_window: 2048,
            outgoing_window: u32::MAX,
            handle_max: 1023,
            ..Begin::default()
        }
        .into(),
        Attach {
            name: "sender-1".into(),
            handle: 7,
            role: Role::Receiver,
            rcv_settle_mode: ReceiverSettleMode::Second,
            source: Some(Source {
                address: Some("queue".into()),
                dynamic: true,
                distribution_mode: Some(definitions::DISTRIBUTION_MODE_COPY),
                default_outcome: Some(Outcome::Released(Released {})),
                outcomes: Some(vec![Symbol::from_static("amqp:accepted:list")]),
                expiry_policy: TerminusExpiryPolicy::Never,
                durable: TerminusDurability::UnsettledState,
                ..Source::default()
            }),
            target: Some(Target::with_address("t")),
            initial_delivery_count: Some(0),
            max_message_size: Some(1 << 20),
            ..Attach::default()
        }
        .into(),
        Flow {
            next_incoming_id: Some(10),
            incoming_window: 100,
            next_outgoing_id: 4,
            outgoing_window: 100,
            handle: Some(0),
            delivery_count: Some(5),
            link_credit: Some(10),
            drain: true,
            ..Flow::default()
        }
        .into(),
        Transfer {
            handle: 0,
            delivery_id: Some(1),
            delivery_tag: Some(Bytes::from_static(b"tag")),
            message_format: Some(0),
            settled: Some(false),
            more: true,
            state: Some(DeliveryState::Received(Received {
                section_number: 1,
                section_offset: 300,
            })),
            ..Transfer::default()
        }
        .into(),
        Disposition {
            role: Role::Receiver,
            first: 1,
            last: Some(9),
            settled: true,
            state: Some(DeliveryState::Modified(Modified {
                delivery_failed: true,
                ..Modified::default()
            })),
            ..Disposition::default()
        }
        .into(),
        Detach {
            handle: 2,
            closed: true,
            error: Some(error.clone()),
        }
        .into(),
        End {
            error: Some(error.clone()),
        }
        .into(),
        Close { error: Some(error) }.into(),
    ];
    for p in performatives {
        let bytes = p.to_bytes();
        assert_eq!(bytes.len(), p.encoded_size(), "{}", p.name());
        assert_eq!(decode::<Performative>(&bytes).unwrap(), p, "{}", p.name());
    }
}

#[test]
fn every_delivery_state_round_trips() {
    let states = [
        DeliveryState::Accepted(Accepted {}),
        DeliveryState::Rejected(Rejected {
            error: Some(Error::new(ErrorCondition::DecodeError, "bad")),
        }),
        DeliveryState::Released(Released {}),
        DeliveryState::Modified(Modified {
            delivery_failed: true,
            undeliverable_here: true,
            message_annotations: None,
        }),
        DeliveryState::Received(Received {
            section_number: 0,
            section_offset: 0,
        }),
    ];
    for s in states {
        assert_eq!(decode::<DeliveryState>(&s.to_bytes()).unwrap(), s);
    }
    assert_eq!(&Accepted {}.to_bytes()[..], &[0x00, 0x53, 0x24, 0x45]);
}

#[test]
fn frames_round_trip_with_payload_and_channel() {
    let frame = Frame {
        channel: 5,
        body: FrameBody::Amqp {
            performative: Transfer {
                handle: 1,
                delivery_id: Some(0),
                delivery_tag: Some(Bytes::from_static(&[0])),
                ..Transfer::default()
            }
            .into(),
            payload: Bytes::from_static(b"\x00\x53\x77\xa1\x02hi"),
        },
    };
    let mut bytes = Vec::new();
    frame.encode(&mut bytes);
    assert_eq!(bytes.len(), frame.encoded_size());
    assert_eq!(&bytes[..8], &[0, 0, 0, bytes.len() as u8, 2, 0, 0, 5]);
    assert_eq!(Frame::decode(Bytes::from(bytes), 0).unwrap(), frame);
}

#[test]
fn empty_frames_sasl_frames_and_extended_headers() {
    let heartbeat = Frame::decode(Bytes::from_static(&[0, 0, 0, 8, 2, 0, 0, 0]), 0).unwrap();
    assert_eq!(heartbeat.body, FrameBody::Empty);
    // doff = 3: four bytes of extended header are skipped [AMQP 1.0 §2.3.1].
    let extended = Frame::decode(
        Bytes::from_static(&[
            0, 0, 0, 16, 3, 0, 0, 1, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x53, 0x18, 0x45,
        ]),
        0,
    )
    .unwrap();
    assert_eq!(extended, Frame::amqp(1, Close::default()));
    let sasl = Frame {
        channel: 0,
        body: FrameBody::Sasl(SaslFrame::SaslInit(SaslInit {
            mechanism: Symbol::from_static("PLAIN"),
            initial_response: Some(Bytes::from_static(b"\0user\0pass")),
            hostname: None,
        })),
    };
    let mut bytes = Vec::new();
    sasl.encode(&mut bytes);
    assert_eq!(bytes[5], 1, "SASL frame type");
    assert_eq!(Frame::decode(Bytes::from(bytes), 0).unwrap(), sasl);
}

#[test]
fn bad_frame_headers_are_framing_errors() {
    for (head, why) in [
        ([0, 0, 0, 8, 1, 0, 0, 0], "doff < 2"),
        ([0, 0, 0, 4, 2, 0, 0, 0], "size < 8"),
        ([0, 0, 0, 8, 3, 0, 0, 0], "doff past the end"),
        ([0, 0, 0, 8, 2, 9, 0, 0], "unknown type"),
    ] {
        let e = FrameHeader::parse(head, 100).unwrap_err();
        assert_eq!(e.condition(), ErrorCondition::FramingError, "{why}");
        assert_eq!(e.offset, 100);
    }
}

#[test]
fn protocol_headers() {
    assert_eq!(&ProtocolHeader::AMQP.to_bytes(), b"AMQP\x00\x01\x00\x00");
    assert_eq!(&ProtocolHeader::SASL.to_bytes(), b"AMQP\x03\x01\x00\x00");
    assert_eq!(&ProtocolHeader::TLS.to_bytes(), b"AMQP\x02\x01\x00\x00");
    let h = ProtocolHeader::parse(*b"AMQP\x03\x01\x00\x00").unwrap();
    assert_eq!(h, ProtocolHeader::SASL);
    assert!(h.is_supported());
    let old = ProtocolHeader::parse(*b"AMQP\x01\x01\x00\x0a").unwrap();
    assert!(!old.is_supported());
    assert_eq!(ProtocolHeader::parse(*b"HTTP/1.1"), None);
}

#[test]
fn transactional_delivery_states_decode_in_dispositions_and_transfers() {
    // disposition(role=receiver, first=0, settled, state=declared(txn-id=b"\x01\x02")) [AMQP 1.0 §4.5.4]
    let bytes = [
        0x00, 0x53, 0x15, 0xc0, 0x0f, 0x05, 0x41, 0x43, 0x40,
        0x41, // role, first, last, settled
        0x00, 0x53, 0x33, 0xc0, 0x05, 0x01, 0xa0, 0x02, 0x01, 0x02, // declared
    ];
    let d = decode::<Disposition>(&bytes).unwrap();
    let declared = DeliveryState::Declared(Declared {
        txn_id: Bytes::from_static(&[1, 2]),
    });
    assert_eq!(d.state, Some(declared.clone()));
    assert_eq!(declared.outcome(), None);
    assert_eq!(&d.to_bytes()[..], &bytes[..]);
    // transfer(handle=0, ..., state=transactional-state(txn-id, outcome=accepted)) [AMQP 1.0 §4.5.5]
    let state = DeliveryState::TransactionalState(Box::new(TransactionalState {
        txn_id: Bytes::from_static(b"tx"),
        outcome: Some(Outcome::Accepted(Accepted {})),
    }));
    let transfer = Transfer {
        handle: 0,
        state: Some(state.clone()),
        ..Transfer::default()
    };
    let encoded = transfer.to_bytes();
    let state_at = encoded.len() - state.encoded_size();
    assert_eq!(
        &encoded[state_at..state_at + 3],
        &[0x00, 0x53, 0x34],
        "transactional-state's descriptor"
    );
    assert_eq!(decode::<Transfer>(&encoded).unwrap(), transfer);
    for body in [
        Performative::Transfer(transfer),
        Performative::Disposition(d),
    ] {
        assert_eq!(decode::<Performative>(&body.to_bytes()).unwrap(), body);
    }
}

#[test]
fn declare_and_discharge_bodies_round_trip() {
    let declare = Declare { global_id: None };
    assert_eq!(&declare.to_bytes()[..], &[0x00, 0x53, 0x31, 0x45]);
    assert_eq!(
        decode::<Declare>(&[0x00, 0x53, 0x31, 0x45]).unwrap(),
        declare
    );
    let discharge =
        decode::<Discharge>(&[0x00, 0x53, 0x32, 0xc0, 0x05, 0x02, 0xa0, 0x01, 0x07, 0x41]).unwrap();
    assert_eq!(
        discharge,
        Discharge {
            txn_id: Bytes::from_static(&[7]),
            fail: Some(true),
        }
    );
}

/// An attach of a receiver named "l" on handle 0, with `terminus` bytes as its target (after a null source).
fn attach_with_target(terminus: &[u8]) -> Vec<u8> {
    attach_with_termini(&[0x40], terminus)
}

fn attach_with_termini(source: &[u8], target: &[u8]) -> Vec<u8> {
    // name, handle, role, snd-settle-mode, rcv-settle-mode, then the source and target.
    let fields = [
        &[0xa1, 0x01, b'l', 0x43, 0x41, 0x40, 0x40][..],
        source,
        target,
    ]
    .concat();
    let mut out = vec![0x00, 0x53, 0x12, 0xc0, (fields.len() + 1) as u8, 0x07];
    out.extend_from_slice(&fields);
    out
}

#[test]
fn a_coordinator_target_decodes_inside_an_attach() {
    // coordinator(capabilities=:"amqp:local-transactions") [AMQP 1.0 §4.5.1]
    let mut coordinator = vec![0x00, 0x53, 0x30, 0xc0, 0x1a, 0x01, 0xa3, 0x17];
    coordinator.extend_from_slice(b"amqp:local-transactions");
    let bytes = attach_with_target(&coordinator);
    let attach = decode::<Attach>(&bytes).unwrap();
    assert!(attach.is_coordinator());
    assert_eq!(attach.target, None);
    assert_eq!(
        attach.coordinator,
        Some(Coordinator {
            capabilities: Some(vec![Symbol::from_static("amqp:local-transactions")]),
        })
    );
    let again = attach.to_bytes();
    assert_eq!(
        &again[14..17],
        &[0x00, 0x53, 0x30],
        "re-encoded as a coordinator"
    );
    assert_eq!(decode::<Attach>(&again).unwrap(), attach);
    // A symbolic descriptor too; and an ordinary target is not a coordinator.
    let mut symbolic = vec![0x00, 0xa3, 0x15];
    symbolic.extend_from_slice(b"amqp:coordinator:list");
    symbolic.push(0x45);
    assert!(decode::<Attach>(&attach_with_target(&symbolic))
        .unwrap()
        .is_coordinator());
    let ordinary = decode::<Attach>(&attach_with_target(&[0x00, 0x53, 0x29, 0x45])).unwrap();
    assert!(!ordinary.is_coordinator());
    assert_eq!(ordinary.target, Some(Target::default()));
    // Any other described type is still refused.
    let e = decode::<Attach>(&attach_with_target(&[0x00, 0x53, 0x28, 0x45])).unwrap_err();
    assert!(matches!(
        e.kind,
        DecodeErrorKind::UnexpectedDescriptor { .. }
    ));
}

#[test]
fn terminus_addresses_of_any_type_decode() {
    // source(address=:"q") [AMQP 1.0 §3.5.3]: a symbol address is the address text.
    let source = [0x00, 0x53, 0x28, 0xc0, 0x04, 0x01, 0xa3, 0x01, b'q'];
    // target(address=42ul) [AMQP 1.0 §3.5.4]: kept as it is.
    let target = [0x00, 0x53, 0x29, 0xc0, 0x03, 0x01, 0x53, 42];
    let bytes = attach_with_termini(&source, &target);
    let attach = decode::<Attach>(&bytes).unwrap();
    let s = attach.source.as_ref().unwrap();
    assert_eq!(s.address.as_deref(), Some("q"));
    assert_eq!(s.other_address, None);
    let t = attach.target.as_ref().unwrap();
    assert_eq!(t.address, None);
    assert_eq!(t.other_address, Some(Value::Ulong(42)));
    // The ulong survives a round trip byte for byte; the symbol comes back as a string.
    let again = attach.to_bytes();
    assert!(again.ends_with(&target));
    assert_eq!(decode::<Attach>(&again).unwrap(), attach);
    // A binary address, and the string address `with_address` builds.
    let binary = [0x00, 0x53, 0x29, 0xc0, 0x04, 0x01, 0xa0, 0x01, 0xff];
    let t = decode::<Target>(&binary).unwrap();
    assert_eq!(
        t.other_address,
        Some(Value::Binary(Bytes::from_static(&[0xff])))
    );
    assert_eq!(&t.to_bytes()[..], &binary[..]);
    let q = Source::with_address("q");
    assert_eq!(decode::<Source>(&q.to_bytes()).unwrap(), q);
}

/// A transfer, flow or disposition is moved for every message: the big, rare bodies (`open`, `attach`) are
/// boxed so the union stays the size of a transfer (whose optional delivery state, with a rejection's error,
/// is most of it).
#[test]
fn performatives_stay_small() {
    use std::mem::size_of;
    assert!(
        size_of::<Performative>() <= 152,
        "{}",
        size_of::<Performative>()
    );
    assert!(size_of::<Performative>() <= size_of::<Transfer>() + 8);
}

#[test]
fn decoded_symbols_share_the_input() {
    let input = Bytes::from_static(b"\xa3\x10amqp:accepted:xy");
    let symbol = Symbol::decode(&mut crate::codec::Decoder::new(input.clone())).unwrap();
    assert_eq!(symbol, "amqp:accepted:xy");
    assert_eq!(symbol.as_bytes().as_ptr(), input[2..].as_ptr());
    assert_eq!(
        decode::<Symbol>(b"\xa3\x02\xff\xfe").unwrap_err().kind,
        DecodeErrorKind::InvalidUtf8
    );
}
