//! Endpoint lifecycles [AMQP 1.0 §2.4, §2.5, §2.6]: half-closed shutdowns (client first, server first, both at
//! once), no frame after our `close`, session end from either side freeing its links with `LinkClosed`, detach
//! versus close, the transport going away with and without a `close` frame, `TransportClosed` last and exactly
//! once in every scenario, `is_finished`, the same inputs giving the same events, and API misuse answered with an
//! [`EngineError`] that changes nothing and never panics.

use std::time::Instant;

use super::*;
use crate::codec::Symbol;
use crate::frame::{Detach, End, Error, Performative};

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

fn illegal_state<T: std::fmt::Debug>(r: Result<T, EngineError>) -> bool {
    matches!(r, Err(EngineError::IllegalState(_)))
}

#[test]
fn client_closes_first_and_the_transport_ends_when_the_server_answers() {
    let (mut p, _) = Pair::connected();
    p.client.close(None).unwrap();
    p.drive();
    assert_eq!(
        p.take_server_events(),
        vec![Event::ConnectionRemoteClose(None)]
    );
    assert!(p.client_events.is_empty(), "{:?}", p.client_events);
    assert!(!p.client.is_finished() && !p.server.is_finished());
    assert!(illegal_state(p.client.close(None)));
    p.server.close(None).unwrap();
    p.drive();
    assert_eq!(
        p.take_client_events(),
        vec![Event::ConnectionRemoteClose(None), Event::TransportClosed]
    );
    assert_eq!(p.take_server_events(), vec![Event::TransportClosed]);
    assert!(p.client.is_finished() && p.server.is_finished());
}

#[test]
fn server_closes_first_with_an_error() {
    let (mut p, _) = Pair::connected();
    let error = Error::new(ErrorCondition::ConnectionForced, "maintenance");
    p.server.close(Some(error.clone())).unwrap();
    p.drive();
    assert_eq!(
        p.take_client_events(),
        vec![Event::ConnectionRemoteClose(Some(error))]
    );
    assert!(p.server_events.is_empty());
    p.client.close(None).unwrap();
    p.drive();
    assert_eq!(p.take_client_events(), vec![Event::TransportClosed]);
    assert_eq!(
        p.take_server_events(),
        vec![Event::ConnectionRemoteClose(None), Event::TransportClosed]
    );
    assert!(p.client.is_finished() && p.server.is_finished());
}

#[test]
fn both_close_at_once() {
    let (mut p, _) = Pair::connected();
    p.client.close(None).unwrap();
    p.server.close(None).unwrap();
    p.drive();
    for events in [p.take_client_events(), p.take_server_events()] {
        assert_eq!(
            events,
            vec![Event::ConnectionRemoteClose(None), Event::TransportClosed]
        );
    }
    assert!(p.client.is_finished() && p.server.is_finished());
}

#[test]
fn no_frame_follows_our_close() {
    let (mut p, s, (c, sv)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 1);
    let (r, _) = p.attach(s, LinkConfig::receiver("r", "q"));
    // Every flow the server sends from now on asks for an echo.
    let log = tap(&mut p, |dir, f| match (dir, performative(f)) {
        (S2C, Some(Performative::Flow(flow))) => Verdict::Replace(encode(&[Frame::amqp(
            f.channel,
            Flow {
                echo: true,
                ..flow.clone()
            },
        )])),
        _ => Verdict::Pass,
    });
    p.client.close(None).unwrap();
    // New work on a closing connection is refused.
    assert!(illegal_state(
        p.client.attach(s.0, LinkConfig::sender("late", "q"))
    ));
    assert!(illegal_state(p.client.send(
        c,
        Bytes::new(),
        Bytes::new(),
        false
    )));
    assert!(illegal_state(p.client.add_credit(r, 1)));
    assert!(illegal_state(p.client.drain(r)));
    assert!(illegal_state(p.client.set_available(c, 1)));
    assert_eq!(p.client.credit(c), Ok(1));
    // The server, not yet aware, grants credit and asks for an echo.
    p.server.add_credit(sv, 1).unwrap();
    p.drive();
    let ours: Vec<Performative> = sent(&log, C2S, |x| Some(x.clone()));
    assert!(
        matches!(ours.as_slice(), [Performative::Close(_)]),
        "only the close: {ours:?}"
    );
    // Local clean-up after close is allowed but puts nothing on the wire.
    let _ = p.client.detach(c, true, None);
    let _ = p.client.end(s.0, None);
    p.drive();
    assert_eq!(sent(&log, C2S, |x| Some(x.clone())).len(), 1);
    p.server.close(None).unwrap();
    p.drive();
    assert_closed_once(&p.client_events);
    assert!(p.client.is_finished());
}

#[test]
fn no_link_frame_follows_our_end() {
    let (mut p, s, (c, _)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 2);
    let (r, _) = p.attach(s, LinkConfig::receiver("r", "q"));
    let log = record(&mut p);
    p.client.end(s.0, None).unwrap();
    assert!(illegal_state(p.client.send(
        c,
        Bytes::new(),
        Bytes::new(),
        false
    )));
    assert!(illegal_state(p.client.add_credit(r, 1)));
    assert!(illegal_state(p.client.drain(r)));
    assert!(illegal_state(p.client.set_available(c, 1)));
    assert_eq!(p.client.credit(c), Ok(2));
    let _ = p.client.detach(c, true, None);
    p.drive();
    let ours = sent(&log, C2S, |x| Some(x.clone()));
    assert!(
        matches!(ours.as_slice(), [Performative::End(_)]),
        "only the end: {ours:?}"
    );
    assert!(deliveries(&p.server_events).is_empty());
}

/// A connected pair with a sender "a" and a receiver "b" attached from the client.
fn two_links() -> (Pair, (SessionId, SessionId), [(LinkId, LinkId); 2]) {
    let (mut p, s) = Pair::connected();
    let a = p.attach(s, LinkConfig::sender("a", "q"));
    let b = p.attach(s, LinkConfig::receiver("b", "q"));
    p.client_events.clear();
    p.server_events.clear();
    (p, s, [a, b])
}

/// The `LinkClosed` links, sorted, and whether `SessionClosed(session)` is the last event.
fn freed(events: &[Event], session: SessionId) -> (Vec<LinkId>, bool) {
    let mut links: Vec<LinkId> = events
        .iter()
        .filter_map(|e| match e {
            Event::LinkClosed(l) => Some(*l),
            _ => None,
        })
        .collect();
    links.sort();
    (links, events.last() == Some(&Event::SessionClosed(session)))
}

#[test]
fn session_end_from_the_client_frees_its_links() {
    let (mut p, s, [a, b]) = two_links();
    p.client.end(s.0, None).unwrap();
    p.drive();
    assert_eq!(
        p.take_server_events(),
        vec![Event::SessionRemoteEnd {
            session: s.1,
            error: None
        }]
    );
    assert!(
        p.client_events.is_empty(),
        "nothing is freed before the answer"
    );
    assert_eq!(p.client.credit(a.0), Ok(0), "the link still exists");
    p.server.end(s.1, None).unwrap();
    p.drive();
    let mut ours = vec![a.0, b.0];
    ours.sort();
    let mut theirs = vec![a.1, b.1];
    theirs.sort();
    assert_eq!(
        p.client_events[0],
        Event::SessionRemoteEnd {
            session: s.0,
            error: None
        }
    );
    assert_eq!(freed(&p.client_events, s.0), (ours, true));
    assert_eq!(freed(&p.server_events, s.1), (theirs, true));
    assert!(!has(&p.server_events, |e| matches!(
        e,
        Event::LinkRemoteDetach { .. }
    )));
}

#[test]
fn session_end_from_the_server_with_an_error_frees_its_links_and_handles_go_stale() {
    let (mut p, s, [a, b]) = two_links();
    let error = Error::new(ErrorCondition::ResourceLimitExceeded, "too many");
    p.server.end(s.1, Some(error.clone())).unwrap();
    p.drive();
    assert_eq!(
        p.take_client_events(),
        vec![Event::SessionRemoteEnd {
            session: s.0,
            error: Some(error)
        }]
    );
    p.client.end(s.0, None).unwrap();
    p.drive();
    let mut ours = vec![a.0, b.0];
    ours.sort();
    assert_eq!(freed(&p.client_events, s.0), (ours, true));
    assert!(freed(&p.server_events, s.1).1);
    for link in [a.0, b.0] {
        assert_eq!(p.client.credit(link), Err(EngineError::UnknownLink));
    }
    assert_eq!(p.client.end(s.0, None), Err(EngineError::UnknownSession));
    assert_eq!(
        p.client.attach(s.0, LinkConfig::sender("x", "q")),
        Err(EngineError::UnknownSession)
    );
    assert_eq!(
        p.client.unsettled_outgoing(s.0),
        Err(EngineError::UnknownSession)
    );
    // A new session may reuse the slot but never the identity.
    let again = p.begin();
    assert_ne!(again.0, s.0);
    assert_eq!(p.client.end(s.0, None), Err(EngineError::UnknownSession));
    assert_eq!(p.client.unsettled_outgoing(again.0), Ok(0));
}

#[test]
fn the_same_inputs_give_the_same_events() {
    let run = || {
        let (mut p, s) = Pair::connected();
        for i in 0..16 {
            p.attach(s, LinkConfig::sender(format!("l{i}"), "q"));
        }
        p.client.end(s.0, None).unwrap();
        p.drive();
        p.server.end(s.1, None).unwrap();
        p.drive();
        (p.take_client_events(), p.take_server_events())
    };
    let first = run();
    assert_eq!(
        first
            .0
            .iter()
            .filter(|e| matches!(e, Event::LinkClosed(_)))
            .count(),
        16
    );
    assert_eq!(first, run());
}

#[test]
fn detach_and_close_are_told_apart() {
    let (mut p, s) = Pair::connected();
    for closed in [false, true] {
        let (c, sv) = p.attach(s, LinkConfig::sender(format!("l-{closed}"), "q"));
        p.client_events.clear();
        p.server_events.clear();
        p.client.detach(c, closed, None).unwrap();
        p.drive();
        assert_eq!(
            p.take_server_events(),
            vec![Event::LinkRemoteDetach {
                link: sv,
                closed,
                error: None
            }]
        );
        p.server.detach(sv, closed, None).unwrap();
        p.drive();
        assert_eq!(
            p.take_client_events(),
            vec![
                Event::LinkRemoteDetach {
                    link: c,
                    closed,
                    error: None
                },
                Event::LinkClosed(c)
            ]
        );
        assert_eq!(p.take_server_events(), vec![Event::LinkClosed(sv)]);
    }
}

#[test]
fn read_closed_without_a_close_frame_is_an_error() {
    let (mut p, _) = Pair::connected();
    p.client.handle_read_closed();
    p.drive();
    assert_eq!(
        transport_errors(&p.client_events),
        vec![ErrorCondition::FramingError]
    );
    assert_eq!(p.client_events.len(), 2);
    assert_closed_once(&p.client_events);
}

#[test]
fn read_closed_after_the_peers_close_is_orderly() {
    let (mut p, _) = Pair::connected();
    p.server.close(None).unwrap();
    p.drive();
    p.client.handle_read_closed();
    p.drive();
    assert_eq!(
        p.take_client_events(),
        vec![Event::ConnectionRemoteClose(None), Event::TransportClosed]
    );
}

#[test]
fn disconnection_reports_the_reason_and_ends_the_transport() {
    let (mut p, _) = Pair::connected();
    p.client.handle_disconnected("connection reset by peer");
    p.drive();
    let io = Error::new(
        ErrorCondition::Custom(Symbol::from_static("nucleon:io")),
        "connection reset by peer",
    );
    assert_eq!(
        p.take_client_events(),
        vec![Event::TransportError(io), Event::TransportClosed]
    );
    assert!(p.client.is_finished());
    assert_eq!(p.client.poll_timeout(), None);
}

#[test]
fn reacting_to_events_queued_before_transport_closed_adds_none_after_it() {
    let (mut p, s) = Pair::connected();
    let (c, _) = p.attach(s, LinkConfig::sender("l", "q"));
    // In one read: the server detaches the link and ends the session, then sends garbage.
    let mut bytes = encode(&[
        Frame::amqp(
            0,
            Detach {
                handle: 0,
                closed: true,
                error: None,
            },
        ),
        Frame::amqp(0, End { error: None }),
    ]);
    bytes.extend_from_slice(&[0, 0, 0, 12, 2, 0, 0, 0, 0xde, 0xad, 0xbe, 0xef]);
    p.client.handle_input(&bytes, p.now);
    // The application reacts to each event as it polls it, as the polling contract prescribes.
    let mut events = Vec::new();
    while let Some(e) = p.client.poll_event() {
        match &e {
            Event::LinkRemoteDetach { link, closed, .. } => {
                assert!(illegal_state(p.client.detach(*link, *closed, None)));
            }
            Event::SessionRemoteEnd { session, .. } => {
                assert!(illegal_state(p.client.end(*session, None)));
            }
            _ => {}
        }
        events.push(e);
    }
    assert_eq!(
        &events[..2],
        &[
            Event::LinkRemoteDetach {
                link: c,
                closed: true,
                error: None
            },
            Event::SessionRemoteEnd {
                session: s.0,
                error: None
            }
        ]
    );
    assert_eq!(transport_errors(&events), vec![ErrorCondition::DecodeError]);
    assert_closed_once(&events);
    assert_eq!(events.len(), 4, "{events:?}");
}

/// A named way to end a connected pair; it drives until quiet.
type Scenario = (&'static str, fn(&mut Pair));

fn scenarios() -> [Scenario; 6] {
    [
        ("orderly close", |p: &mut Pair| {
            p.client.close(None).unwrap();
            p.drive();
            p.server.close(None).unwrap();
            p.drive();
        }),
        ("close with an error", |p: &mut Pair| {
            let e = Error::new(ErrorCondition::InternalError, "boom");
            p.server.close(Some(e)).unwrap();
            p.drive();
            p.client.close(None).unwrap();
            p.drive();
        }),
        ("protocol violation", |p: &mut Pair| {
            p.server
                .handle_input(&[0, 0, 0, 12, 2, 0, 0, 0, 1, 2, 3, 4], p.now);
            p.drive();
            p.client.handle_read_closed();
            p.drive();
        }),
        ("read closed", |p: &mut Pair| {
            p.client.handle_read_closed();
            p.server.handle_read_closed();
            p.drive();
        }),
        ("disconnected", |p: &mut Pair| {
            p.client.handle_disconnected("gone");
            p.server.handle_disconnected("gone");
            p.drive();
        }),
        ("idle timeout", |p: &mut Pair| {
            p.set_hook(|_, _| Verdict::Drop);
            p.advance(Duration::from_secs(10));
            p.server.handle_read_closed();
            p.drive();
        }),
    ]
}

#[test]
fn transport_closed_is_last_and_exactly_once_in_every_scenario() {
    for (name, end) in scenarios() {
        let mut client = ConnectionConfig::client("client");
        client.idle_timeout = Some(Duration::from_secs(2));
        let mut p = Pair::new(client, ConnectionConfig::server("server"));
        p.open();
        let s = p.begin();
        let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
        p.server.add_credit(sv, 1).unwrap();
        p.drive();
        end(&mut p);
        // Inputs after the end change nothing.
        for engine in [&mut p.client, &mut p.server] {
            engine.handle_input(&ProtocolHeader::AMQP.to_bytes(), p.now);
            engine.handle_timeout(p.now + Duration::from_secs(100));
            engine.handle_read_closed();
            engine.handle_disconnected("again");
        }
        let _ = p.client.send(c, Bytes::new(), Bytes::new(), false);
        p.drive();
        for events in [&p.client_events, &p.server_events] {
            assert_eq!(
                events.last(),
                Some(&Event::TransportClosed),
                "{name}: {events:?}"
            );
            let n = events
                .iter()
                .filter(|e| **e == Event::TransportClosed)
                .count();
            assert_eq!(n, 1, "{name}: {events:?}");
        }
        assert!(p.client.is_finished() && p.server.is_finished(), "{name}");
    }
}

#[test]
fn is_finished_waits_for_the_last_event_and_the_last_byte() {
    let now = Instant::now();
    let mut c = Connection::new(ConnectionConfig::client("c"), now);
    assert!(!c.is_finished());
    c.handle_disconnected("gone");
    assert!(!c.is_finished(), "events are waiting");
    assert!(matches!(c.poll_event(), Some(Event::TransportError(_))));
    assert_eq!(c.poll_event(), Some(Event::TransportClosed));
    assert_eq!(c.poll_event(), None);
    assert!(
        !c.is_finished(),
        "the protocol header is still to be written"
    );
    assert_eq!(
        c.poll_transmit(now).as_deref(),
        Some(&ProtocolHeader::AMQP.to_bytes()[..])
    );
    assert!(c.is_finished());
}

#[test]
fn misuse_before_open_is_refused() {
    let mut p = Pair::default_configs();
    assert!(illegal_state(p.client.begin()));
    p.client.open().unwrap();
    assert!(illegal_state(p.client.open()));
    p.drive();
    // The server has not opened: it cannot begin either.
    assert!(illegal_state(p.server.begin()));
    assert!(p
        .server_events
        .iter()
        .all(|e| matches!(e, Event::ConnectionRemoteOpen(_))));
}

#[test]
fn link_role_misuse_is_refused_and_writes_nothing() {
    let (mut p, s) = Pair::connected();
    let (snd, _) = p.attach(s, LinkConfig::sender("s", "q"));
    let (rcv, _) = p.attach(s, LinkConfig::receiver("r", "q"));
    let log = record(&mut p);
    assert_eq!(
        p.client.send(rcv, Bytes::new(), Bytes::new(), false),
        Err(EngineError::NotASender)
    );
    assert_eq!(p.client.add_credit(snd, 1), Err(EngineError::NotAReceiver));
    assert_eq!(p.client.drain(snd), Err(EngineError::NotAReceiver));
    assert_eq!(p.client.drained(rcv), Err(EngineError::NotASender));
    assert_eq!(p.client.set_available(rcv, 1), Err(EngineError::NotASender));
    assert_eq!(
        p.client
            .disposition(DeliveryId { link: rcv, id: 0 }, None, true),
        Err(EngineError::UnknownDelivery)
    );
    assert_eq!(
        p.client.settle(DeliveryId { link: snd, id: 0 }),
        Err(EngineError::UnknownDelivery)
    );
    assert_eq!(
        p.client.abort(DeliveryId { link: snd, id: 0 }),
        Err(EngineError::UnknownDelivery)
    );
    p.drive();
    assert!(log.borrow().is_empty(), "{:?}", log.borrow());
}

#[test]
fn endpoint_state_misuse_is_refused() {
    let (mut p, s) = Pair::connected();
    assert!(illegal_state(p.client.begin_reply(s.0)), "our own session");
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    assert!(illegal_state(
        p.client.attach_reply(c, LinkConfig::sender("l", "q"))
    ));
    // Sending before the peer has attached.
    let early = p
        .client
        .attach(s.0, LinkConfig::sender("early", "q"))
        .unwrap();
    assert!(illegal_state(p.client.send(
        early,
        Bytes::new(),
        Bytes::new(),
        false
    )));
    // Detaching twice.
    p.server.add_credit(sv, 1).unwrap();
    p.drive();
    p.client.detach(c, true, None).unwrap();
    assert!(illegal_state(p.client.detach(c, true, None)));
    // Ending twice.
    p.client.end(s.0, None).unwrap();
    assert!(illegal_state(p.client.end(s.0, None)));
    assert!(illegal_state(
        p.client.attach(s.0, LinkConfig::sender("x", "q"))
    ));
}

#[test]
fn a_stale_link_id_is_refused_after_close() {
    let (mut p, s) = Pair::connected();
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    p.client.detach(c, true, None).unwrap();
    p.drive();
    p.server.detach(sv, true, None).unwrap();
    p.drive();
    assert!(has(&p.client_events, |e| *e == Event::LinkClosed(c)));
    assert_eq!(p.client.credit(c), Err(EngineError::UnknownLink));
    assert_eq!(
        p.client.send(c, Bytes::new(), Bytes::new(), false),
        Err(EngineError::UnknownLink)
    );
    assert_eq!(
        p.client.detach(c, true, None),
        Err(EngineError::UnknownLink)
    );
    assert_eq!(p.client.set_available(c, 1), Err(EngineError::UnknownLink));
    assert_eq!(
        p.client.settle(DeliveryId { link: c, id: 0 }),
        Err(EngineError::UnknownLink)
    );
    assert!(matches!(
        p.client.link_config(c),
        Err(EngineError::UnknownLink)
    ));
    assert!(matches!(
        p.client.remote_attach(c),
        Err(EngineError::UnknownLink)
    ));
    assert_eq!(p.client.link_session(c), Err(EngineError::UnknownLink));
    // A new link may reuse the slot but never the identity.
    let (again, _) = p.attach(s, LinkConfig::sender("again", "q"));
    assert_ne!(again, c);
    assert_eq!(p.client.credit(c), Err(EngineError::UnknownLink));
    assert_eq!(p.server.credit(sv), Err(EngineError::UnknownLink));
}

#[test]
fn refused_calls_change_nothing() {
    let (mut p, s) = Pair::connected();
    let (rcv, _) = p.attach(s, LinkConfig::receiver("r", "q"));
    let (snd, ssv) = p.attach(s, LinkConfig::sender("s", "q"));
    p.server.add_credit(ssv, 2).unwrap();
    p.drive();
    // Detached at our end only: the links still exist, but they are not attached.
    p.client.detach(rcv, false, None).unwrap();
    p.client.detach(snd, false, None).unwrap();
    let log = record(&mut p);
    assert!(illegal_state(p.client.add_credit(rcv, 5)));
    assert_eq!(p.client.credit(rcv), Ok(0));
    assert!(illegal_state(p.client.drain(rcv)));
    assert_eq!(p.client.draining(rcv), Ok(false));
    assert!(illegal_state(p.client.set_available(snd, 9)));
    assert_eq!(p.client.links.get(snd.0).map(|l| l.available), Some(0));
    assert!(illegal_state(p.client.send(
        snd,
        Bytes::new(),
        Bytes::new(),
        false
    )));
    assert_eq!(p.client.credit(snd), Ok(2));
    p.drive();
    let ours = sent(&log, C2S, |x| Some(x.clone()));
    assert!(
        ours.iter().all(|p| matches!(p, Performative::Detach(_))),
        "{ours:?}"
    );
}

#[test]
fn calls_after_the_transport_closed_are_refused_and_write_nothing() {
    let (mut p, s, (c, _)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 1);
    p.client.handle_disconnected("gone");
    p.drive();
    assert!(p.client.is_finished());
    assert!(illegal_state(p.client.begin()));
    assert!(illegal_state(
        p.client.attach(s.0, LinkConfig::sender("x", "q"))
    ));
    assert!(illegal_state(p.client.send(
        c,
        Bytes::new(),
        Bytes::new(),
        false
    )));
    assert!(illegal_state(p.client.close(None)));
    let _ = p.client.detach(c, true, None);
    let _ = p.client.end(s.0, None);
    assert_eq!(p.client.poll_transmit(p.now), None);
    assert!(p.client.is_finished());
}
