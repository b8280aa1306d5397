//! Protocol violations [AMQP 1.0 §2.3, §2.4, §2.7, §2.8.15-§2.8.17]: each is mapped to the right condition on the
//! right endpoint. Connection errors close the connection (`close` with the error, then `TransportError` and
//! `TransportClosed` on the engine that found it); session errors end only the session; link errors detach only
//! the link. Violations are injected by rewriting frames in flight with the pair's hook.

use super::*;
use crate::frame::{Attach, Begin, Open, Performative};

const C2S: Direction = Direction::ClientToServer;

/// Asserts that the server found a connection error `condition`: it closed with that error, reported it, and
/// ended its transport; the client heard the close.
#[track_caller]
fn assert_server_closed_with(p: &Pair, condition: ErrorCondition) {
    assert_eq!(transport_errors(&p.server_events), vec![condition.clone()]);
    assert_closed_once(&p.server_events);
    assert_eq!(remote_close_error(&p.client_events), Some(condition));
}

/// Replaces the next frame the client sends with `bytes`.
fn replace_next_client_frame(p: &mut Pair, bytes: Vec<u8>) {
    let mut bytes = Some(bytes);
    tap(p, move |dir, _| match dir {
        C2S => bytes.take().map_or(Verdict::Pass, Verdict::Replace),
        _ => Verdict::Pass,
    });
}

/// Rewrites the next frame the client sends with `f`.
fn rewrite_next_client_frame(p: &mut Pair, mut f: impl FnMut(&Frame) -> Frame + 'static) {
    rewrite_first(p, C2S, move |frame| Some(vec![f(frame)]));
}

fn open_pair() -> Pair {
    let mut p = Pair::default_configs();
    p.open();
    p.client_events.clear();
    p.server_events.clear();
    p
}

#[test]
fn an_oversize_frame_is_a_framing_error() {
    let (mut p, _, (c, _)) =
        sender_with_credit(|s| s.max_frame_size = 512, LinkConfig::sender("l", "q"), 1);
    rewrite_next_client_frame(&mut p, |f| match &f.body {
        FrameBody::Amqp { performative, .. } => Frame {
            channel: f.channel,
            body: FrameBody::Amqp {
                performative: performative.clone(),
                payload: Bytes::from(vec![0u8; 600]),
            },
        },
        _ => f.clone(),
    });
    p.client_send(c, 1, Bytes::from_static(b"small"));
    p.drive();
    assert!(deliveries(&p.server_events).is_empty());
    assert_server_closed_with(&p, ErrorCondition::FramingError);
    // The client answers the close and its transport ends too.
    p.client.close(None).unwrap();
    p.drive();
    assert_closed_once(&p.client_events);
    assert!(transport_errors(&p.client_events).is_empty());
}

#[test]
fn an_oversize_frame_is_refused_from_its_header_alone() {
    let mut p = open_pair();
    // Only the 8-byte header of a 1 MiB frame: the engine must not wait for (or buffer) the rest.
    p.server.handle_input(&[0, 0x10, 0, 0, 2, 0, 0, 0], p.now);
    p.drive();
    assert_server_closed_with(&p, ErrorCondition::FramingError);
}

#[test]
fn an_open_over_512_bytes_is_a_framing_error() {
    let mut p = pair_with(|c| c.container_id = "x".repeat(600), |_| {});
    p.client.open().unwrap();
    p.drive();
    assert!(!has(&p.server_events, |e| matches!(
        e,
        Event::ConnectionRemoteOpen(_)
    )));
    assert_server_closed_with(&p, ErrorCondition::FramingError);
}

#[test]
fn a_bad_protocol_header_is_answered_with_ours_then_the_transport_closes() {
    let bad: [[u8; 8]; 4] = [
        *b"AMQP\x00\x02\x00\x00",
        *b"AMQP\x00\x01\x00\x01",
        *b"AMQP\x09\x01\x00\x00",
        *b"GET / HT",
    ];
    for (header, sasl) in bad.into_iter().flat_map(|h| [(h, false), (h, true)]) {
        let mut p = pair_with(
            |_| {},
            |s| {
                if sasl {
                    s.sasl_server = Some(SaslServerConfig {
                        authenticator: std::sync::Arc::new(PlainAuthenticator::anonymous()),
                        allow_skip: false,
                    });
                }
            },
        );
        let answer = Rc::new(RefCell::new(Vec::new()));
        let seen = answer.clone();
        p.set_hook(move |dir, unit| match dir {
            Direction::ClientToServer => Verdict::Replace(header.to_vec()),
            Direction::ServerToClient => {
                seen.borrow_mut().extend_from_slice(unit);
                Verdict::Pass
            }
        });
        p.drive();
        let ours = if sasl {
            ProtocolHeader::SASL
        } else {
            ProtocolHeader::AMQP
        };
        assert_eq!(*answer.borrow(), ours.to_bytes(), "{header:?} sasl={sasl}");
        assert_eq!(
            transport_errors(&p.server_events),
            vec![ErrorCondition::FramingError],
            "{header:?}"
        );
        assert_closed_once(&p.server_events);
    }
}

#[test]
fn a_tls_header_asks_for_tls_and_the_decrypted_stream_carries_on() {
    let mut p = Pair::default_configs();
    replace_first_header(&mut p, ProtocolHeader::TLS);
    p.drive();
    assert_eq!(p.take_server_events(), vec![Event::TlsRequested]);
    assert_eq!(
        p.server_bytes, 0,
        "the runtime, not the engine, answers TLS"
    );
    assert!(!p.server.is_finished());
    // After the handshake the runtime feeds the decrypted stream: the AMQP header, then frames.
    p.server
        .handle_input(&ProtocolHeader::AMQP.to_bytes(), p.now);
    p.open();
    assert!(has(&p.server_events, |e| matches!(
        e,
        Event::ConnectionRemoteOpen(_)
    )));
    assert!(has(&p.client_events, |e| matches!(
        e,
        Event::ConnectionRemoteOpen(_)
    )));
}

/// Replaces the client's protocol header in flight with `header`.
fn replace_first_header(p: &mut Pair, header: ProtocolHeader) {
    let mut done = false;
    p.set_hook(move |dir, unit| {
        if dir == C2S && !done && unit.starts_with(b"AMQP") {
            done = true;
            Verdict::Replace(header.to_bytes().to_vec())
        } else {
            Verdict::Pass
        }
    });
}

#[test]
fn garbage_in_a_frame_body_is_a_decode_error() {
    let mut p = open_pair();
    replace_next_client_frame(
        &mut p,
        vec![0, 0, 0, 12, 2, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef],
    );
    p.client.begin().unwrap();
    p.drive();
    assert_server_closed_with(&p, ErrorCondition::DecodeError);
}

#[test]
fn a_described_value_that_is_not_a_performative_is_a_decode_error() {
    let mut p = open_pair();
    // accepted (0x24) where a performative belongs.
    replace_next_client_frame(
        &mut p,
        vec![0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x24, 0x45],
    );
    p.client.begin().unwrap();
    p.drive();
    assert_server_closed_with(&p, ErrorCondition::DecodeError);
}

#[test]
fn a_performative_missing_a_mandatory_field_is_an_invalid_field_error() {
    let mut p = open_pair();
    // begin (0x11) with an empty field list: next-outgoing-id and the windows are mandatory.
    replace_next_client_frame(
        &mut p,
        vec![0, 0, 0, 12, 2, 0, 0, 0, 0x00, 0x53, 0x11, 0x45],
    );
    p.client.begin().unwrap();
    p.drive();
    assert_server_closed_with(&p, ErrorCondition::InvalidField);
}

#[test]
fn a_bad_frame_header_is_a_framing_error() {
    for header in [
        [0u8, 0, 0, 8, 2, 7, 0, 0], // unknown frame type
        [0, 0, 0, 8, 1, 0, 0, 0],   // data offset below 2
        [0, 0, 0, 4, 2, 0, 0, 0],   // size below the header
    ] {
        let mut p = open_pair();
        p.server.handle_input(&header, p.now);
        p.drive();
        assert_eq!(
            transport_errors(&p.server_events),
            vec![ErrorCondition::FramingError],
            "{header:?}"
        );
        assert_closed_once(&p.server_events);
        assert_eq!(
            remote_close_error(&p.client_events),
            Some(ErrorCondition::FramingError)
        );
    }
}

#[test]
fn a_frame_on_a_channel_without_a_session_is_a_connection_error() {
    let (mut p, s) = Pair::connected();
    rewrite_next_client_frame(&mut p, |f| Frame {
        channel: 5,
        body: f.body.clone(),
    });
    p.client.attach(s.0, LinkConfig::sender("l", "q")).unwrap();
    p.drive();
    assert!(!has(&p.server_events, |e| matches!(
        e,
        Event::LinkRemoteAttach(_)
    )));
    assert_server_closed_with(&p, ErrorCondition::NotAllowed);
}

#[test]
fn begin_beyond_channel_max_is_a_framing_error() {
    let mut p = pair_with(|_| {}, |s| s.channel_max = 3);
    p.open();
    p.client_events.clear();
    p.server_events.clear();
    rewrite_next_client_frame(&mut p, |f| Frame {
        channel: 10,
        body: f.body.clone(),
    });
    p.client.begin().unwrap();
    p.drive();
    assert_server_closed_with(&p, ErrorCondition::FramingError);
}

#[test]
fn our_sessions_stay_within_the_peers_channel_max() {
    let mut p = pair_with(|_| {}, |s| s.channel_max = 3);
    p.open();
    let log = record(&mut p);
    for _ in 0..4 {
        p.client.begin().unwrap();
    }
    assert_eq!(p.client.begin(), Err(EngineError::Exhausted("channel")));
    p.drive();
    let channels: Vec<u16> = log
        .borrow()
        .iter()
        .filter(|(d, f)| *d == C2S && matches!(performative(f), Some(Performative::Begin(_))))
        .map(|(_, f)| f.channel)
        .collect();
    assert_eq!(channels, vec![0, 1, 2, 3]);
    assert!(transport_errors(&p.server_events).is_empty());
}

#[test]
fn attach_with_a_handle_in_use_ends_the_session_with_handle_in_use() {
    let (mut p, s) = Pair::connected();
    let (a, sa) = p.attach(s, LinkConfig::sender("a", "q"));
    p.server_events.clear();
    rewrite_next_client_frame(&mut p, |f| match performative(f) {
        Some(Performative::Attach(at)) => Frame::amqp(
            f.channel,
            Attach {
                handle: 0,
                ..(**at).clone()
            },
        ),
        _ => f.clone(),
    });
    p.client.attach(s.0, LinkConfig::sender("b", "q")).unwrap();
    p.drive();
    assert_eq!(
        session_end_error(&p.client_events),
        Some(ErrorCondition::HandleInUse)
    );
    assert!(!has(&p.server_events, |e| matches!(
        e,
        Event::LinkRemoteAttach(_)
    )));
    assert!(transport_errors(&p.server_events).is_empty());
    // Answering the end frees the session and its links on both ends.
    p.client.end(s.0, None).unwrap();
    p.drive();
    assert!(has(&p.client_events, |e| *e == Event::LinkClosed(a)));
    assert!(has(&p.server_events, |e| *e == Event::LinkClosed(sa)));
    assert!(has(&p.server_events, |e| *e == Event::SessionClosed(s.1)));
}

#[test]
fn flow_on_an_unattached_handle_ends_the_session() {
    let (mut p, s) = Pair::connected();
    let (c, _) = p.attach(s, LinkConfig::receiver("r", "q"));
    rewrite_next_client_frame(&mut p, |f| match performative(f) {
        Some(Performative::Flow(flow)) => Frame::amqp(
            f.channel,
            Flow {
                handle: Some(7),
                ..flow.clone()
            },
        ),
        _ => f.clone(),
    });
    p.client.add_credit(c, 1).unwrap();
    p.drive();
    assert_eq!(
        session_end_error(&p.client_events),
        Some(ErrorCondition::UnattachedHandle)
    );
    assert!(transport_errors(&p.server_events).is_empty());
}

#[test]
fn transfer_on_an_unattached_handle_ends_the_session() {
    let (mut p, _, (c, _)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 1);
    rewrite_next_client_frame(&mut p, |f| match &f.body {
        FrameBody::Amqp {
            performative: Performative::Transfer(t),
            payload,
        } => Frame {
            channel: f.channel,
            body: FrameBody::Amqp {
                performative: Performative::Transfer(Transfer {
                    handle: 9,
                    ..t.clone()
                }),
                payload: payload.clone(),
            },
        },
        _ => f.clone(),
    });
    p.client_send(c, 1, Bytes::from_static(b"m"));
    p.drive();
    assert!(deliveries(&p.server_events).is_empty());
    assert_eq!(
        session_end_error(&p.client_events),
        Some(ErrorCondition::UnattachedHandle)
    );
}

#[test]
fn a_transfer_to_a_sending_link_detaches_it() {
    let (mut p, s) = Pair::connected();
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    // The server's credit grant becomes a transfer from the server on the same link.
    rewrite_first(&mut p, Direction::ServerToClient, |f| {
        match performative(f) {
            Some(Performative::Flow(_)) => Some(vec![Frame::amqp(
                f.channel,
                Transfer {
                    handle: 0,
                    delivery_id: Some(0),
                    delivery_tag: Some(Bytes::from_static(b"t")),
                    ..Transfer::default()
                },
            )]),
            _ => None,
        }
    });
    p.server.add_credit(sv, 1).unwrap();
    p.drive();
    assert!(deliveries(&p.client_events).is_empty());
    assert_eq!(
        link_detach(&p.server_events),
        Some((true, Some(ErrorCondition::NotAllowed)))
    );
    assert_eq!(p.client.credit(c), Ok(0));
}

#[test]
fn a_first_transfer_without_delivery_id_is_an_invalid_field_error() {
    let (mut p, _, (c, _)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 1);
    rewrite_next_client_frame(&mut p, |f| match &f.body {
        FrameBody::Amqp {
            performative: Performative::Transfer(t),
            payload,
        } => Frame {
            channel: f.channel,
            body: FrameBody::Amqp {
                performative: Performative::Transfer(Transfer {
                    delivery_id: None,
                    ..t.clone()
                }),
                payload: payload.clone(),
            },
        },
        _ => f.clone(),
    });
    p.client_send(c, 1, Bytes::from_static(b"m"));
    p.drive();
    assert_server_closed_with(&p, ErrorCondition::InvalidField);
}

#[test]
fn a_second_open_is_an_illegal_state() {
    let mut p = open_pair();
    rewrite_next_client_frame(&mut p, |_| {
        Frame::amqp(
            0,
            Open {
                container_id: "again".into(),
                ..Open::default()
            },
        )
    });
    p.client.begin().unwrap();
    p.drive();
    assert_server_closed_with(&p, ErrorCondition::IllegalState);
}

#[test]
fn a_frame_before_open_is_an_illegal_state() {
    let mut p = Pair::default_configs();
    rewrite_next_client_frame(&mut p, |_| {
        Frame::amqp(
            0,
            Begin {
                incoming_window: 10,
                outgoing_window: 10,
                ..Begin::default()
            },
        )
    });
    p.client.open().unwrap();
    p.drive();
    assert!(!has(&p.server_events, |e| matches!(
        e,
        Event::ConnectionRemoteOpen(_)
    )));
    // The server opens before it closes, as a close must follow an open.
    assert!(has(&p.client_events, |e| matches!(
        e,
        Event::ConnectionRemoteOpen(_)
    )));
    assert_server_closed_with(&p, ErrorCondition::IllegalState);
}

#[test]
fn an_amqp_frame_during_sasl_is_a_framing_error() {
    let mut p = pair_with(
        |c| c.sasl_client = Some(SaslClientConfig::default()),
        |s| {
            s.sasl_server = Some(SaslServerConfig {
                authenticator: std::sync::Arc::new(PlainAuthenticator::anonymous()),
                allow_skip: false,
            })
        },
    );
    // The client's sasl-init becomes an open.
    rewrite_next_client_frame(&mut p, |_| {
        Frame::amqp(
            0,
            Open {
                container_id: "early".into(),
                ..Open::default()
            },
        )
    });
    p.client.open().unwrap();
    p.drive();
    assert_eq!(
        transport_errors(&p.server_events),
        vec![ErrorCondition::FramingError]
    );
    assert_closed_once(&p.server_events);
    assert!(!has(&p.server_events, |e| matches!(
        e,
        Event::Authenticated { .. }
    )));
}
