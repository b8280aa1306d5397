//! Flow control [AMQP 1.0 §2.5.6, §2.6.7, §2.7.4]: link credit granted, used and topped up (also while a transfer
//! is in flight, and cut below the deliveries in flight), drain with nothing to send, after some deliveries and
//! with no credit at all, echo at link and session level, `available`, and the session window: a sender stops at
//! the peer's incoming window (also one cut below the transfers in flight), resumes when it refills, and a
//! transfer beyond it ends the session with `amqp:session:window-violation`. A receiver that limits its credit
//! below what is in flight takes the transfers that crossed its flow, outside the overshoot allowance.

use super::*;
use crate::frame::{Begin, Performative};

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

#[test]
fn credit_is_granted_used_and_topped_up() {
    let (mut p, s) = Pair::connected();
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    p.client_events.clear();
    assert_eq!(p.client.credit(c), Ok(0));
    p.server.add_credit(sv, 3).unwrap();
    p.drive();
    assert_eq!(
        p.take_client_events(),
        vec![Event::LinkCredit { link: c, credit: 3 }]
    );
    for i in 0..2 {
        p.client_send(c, i, Bytes::from_static(b"m"));
    }
    assert_eq!(p.client.credit(c), Ok(1));
    p.drive();
    assert_eq!(deliveries(&p.server_events).len(), 2);
    assert_eq!(p.server.credit(sv), Ok(1));
    // Credit is absolute: 2 more on top of the 1 left is 3, not 5.
    p.server.add_credit(sv, 2).unwrap();
    p.drive();
    assert_eq!(
        p.take_client_events(),
        vec![Event::LinkCredit { link: c, credit: 3 }]
    );
    assert_eq!(p.client.credit(c), Ok(3));
}

#[test]
fn credit_granted_while_a_transfer_is_in_flight_counts_that_transfer() {
    let (mut p, _, (c, sv)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 2);
    p.client_send(c, 0, Bytes::from_static(b"in flight"));
    // The server has not seen the transfer: it grants 3 from delivery-count 0, one of which is already used.
    p.server.add_credit(sv, 1).unwrap();
    assert_eq!(p.server.credit(sv), Ok(3));
    p.drive();
    assert_eq!(deliveries(&p.server_events).len(), 1);
    assert_eq!(p.client.credit(c), Ok(2));
    assert_eq!(p.server.credit(sv), Ok(2));
}

#[test]
fn drain_with_nothing_to_send_returns_all_credit() {
    let (mut p, _, (c, sv)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 5);
    p.server.drain(sv).unwrap();
    p.drive();
    assert_eq!(
        p.take_client_events(),
        vec![
            Event::LinkCredit { link: c, credit: 5 },
            Event::DrainRequested(c)
        ]
    );
    assert_eq!(p.client.draining(c), Ok(true));
    assert!(
        p.server_events.is_empty(),
        "not complete before the sender answers"
    );
    p.client.drained(c).unwrap();
    p.drive();
    assert_eq!(p.take_server_events(), vec![Event::DrainCompleted(sv)]);
    assert_eq!(p.client.credit(c), Ok(0));
    assert_eq!(p.server.credit(sv), Ok(0));
    assert_eq!(
        p.client.send(c, Bytes::new(), Bytes::new(), false),
        Err(EngineError::NoCredit)
    );
    // The delivery-counts still agree: new credit is exactly what is granted, and drain mode is over.
    p.server.add_credit(sv, 1).unwrap();
    p.drive();
    assert_eq!(p.client.credit(c), Ok(1));
    assert_eq!(p.client.draining(c), Ok(false));
}

#[test]
fn drain_after_some_deliveries_returns_the_rest() {
    let (mut p, _, (c, sv)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 5);
    p.client_send(c, 0, Bytes::from_static(b"a"));
    p.client_send(c, 1, Bytes::from_static(b"b"));
    // The drain crosses the two transfers on the wire.
    p.server.drain(sv).unwrap();
    p.drive();
    assert!(has(&p.client_events, |e| *e == Event::DrainRequested(c)));
    assert_eq!(p.client.credit(c), Ok(3));
    p.client.drained(c).unwrap();
    p.drive();
    let events = p.take_server_events();
    assert_eq!(deliveries(&events).len(), 2);
    assert_eq!(events.last(), Some(&Event::DrainCompleted(sv)));
    assert_eq!(p.server.credit(sv), Ok(0));
    assert_eq!(p.client.credit(c), Ok(0));
}

#[test]
fn drain_without_credit_completes_at_once() {
    let (mut p, s) = Pair::connected();
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    p.client_events.clear();
    p.server_events.clear();
    let log = record(&mut p);
    p.server.drain(sv).unwrap();
    p.drive();
    assert_eq!(p.take_server_events(), vec![Event::DrainCompleted(sv)]);
    assert_eq!(p.server.draining(sv), Ok(false));
    let sent = flows(&log, S2C);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].drain);
    assert_eq!(sent[0].link_credit, Some(0));
    assert_eq!(p.client.credit(c), Ok(0));
}

#[test]
fn link_echo_is_answered_with_the_senders_link_state() {
    let (mut p, s) = Pair::connected();
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    p.client.set_available(c, 7).unwrap();
    p.drive();
    let log = rewrite_first(&mut p, S2C, |f| match performative(f) {
        Some(Performative::Flow(flow)) => Some(vec![Frame::amqp(
            f.channel,
            Flow {
                echo: true,
                ..flow.clone()
            },
        )]),
        _ => None,
    });
    p.server.add_credit(sv, 3).unwrap();
    p.drive();
    let replies = flows(&log, C2S);
    assert_eq!(replies.len(), 1, "{replies:?}");
    let r = &replies[0];
    assert_eq!(r.handle, Some(0));
    assert_eq!(
        (r.delivery_count, r.link_credit, r.available, r.echo),
        (Some(0), Some(3), Some(7), false)
    );
}

#[test]
fn session_echo_is_answered_with_a_session_flow() {
    let (mut p, s) = Pair::connected();
    let (_, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    // The server's link flow is followed by a session-only flow asking for an echo.
    let log = rewrite_first(&mut p, S2C, |f| match performative(f) {
        Some(Performative::Flow(flow)) => {
            let echo = Flow {
                handle: None,
                delivery_count: None,
                link_credit: None,
                available: None,
                echo: true,
                ..flow.clone()
            };
            Some(vec![f.clone(), Frame::amqp(f.channel, echo)])
        }
        _ => None,
    });
    p.server.add_credit(sv, 1).unwrap();
    p.drive();
    let replies = flows(&log, C2S);
    assert_eq!(replies.len(), 1, "{replies:?}");
    let r = &replies[0];
    assert_eq!(r.handle, None);
    assert_eq!(
        (r.next_incoming_id, r.next_outgoing_id, r.incoming_window),
        (Some(0), 0, 2048)
    );
    assert!(!r.echo);
}

#[test]
fn available_is_reported_to_the_receiver() {
    let (mut p, s) = Pair::connected();
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    let log = record(&mut p);
    p.client.set_available(c, 42).unwrap();
    p.drive();
    let sent = flows(&log, C2S);
    assert_eq!(sent.len(), 1);
    assert_eq!(
        (sent[0].available, sent[0].link_credit),
        (Some(42), Some(0))
    );
    assert_eq!(p.server.links.get(sv.0).map(|l| l.available), Some(42));
    // A receiver's flows carry no `available`, and a receiver cannot set it.
    p.server.add_credit(sv, 1).unwrap();
    p.drive();
    assert_eq!(flows(&log, S2C).last().map(|f| f.available), Some(None));
    assert_eq!(p.server.set_available(sv, 1), Err(EngineError::NotASender));
}

/// A server configuration whose sessions keep a window of `frames` whatever the credit (as RabbitMQ's).
fn fixed_window(frames: u32) -> impl FnOnce(&mut ConnectionConfig) {
    move |s| {
        s.session_window = frames;
        s.session_window_follows_credit = false;
    }
}

#[test]
fn the_session_window_grows_to_the_credit_so_the_sender_never_waits_for_a_refill() {
    let (mut p, _, (c, sv)) =
        sender_with_credit(|s| s.session_window = 4, LinkConfig::sender("l", "q"), 10);
    let log = tap(&mut p, hold_window_refills);
    for i in 0..10u8 {
        p.client_send(c, i.into(), Bytes::from(vec![i]));
    }
    p.drive();
    assert_eq!(
        transfers(&log, C2S).len(),
        10,
        "all the credit goes out at once"
    );
    assert_eq!(deliveries(&p.server_events).len(), 10);
    // More credit later widens the window with it.
    p.server_events.clear();
    p.server.add_credit(sv, 30).unwrap();
    // The grant follows the refill held back above.
    p.advance(Duration::from_secs(2));
    let before = transfers(&log, C2S).len();
    for i in 10..40u8 {
        p.client_send(c, i.into(), Bytes::from(vec![i]));
    }
    p.drive();
    assert_eq!(transfers(&log, C2S).len() - before, 30);
    assert_eq!(deliveries(&p.server_events).len(), 30);
    assert_eq!(session_end_error(&p.client_events), None);
}

#[test]
fn a_sender_stops_at_the_session_window_and_resumes_when_it_refills() {
    let (mut p, _, (c, _)) = sender_with_credit(fixed_window(4), LinkConfig::sender("l", "q"), 10);
    let log = tap(&mut p, hold_window_refills);
    for i in 0..10u8 {
        p.client_send(c, i.into(), Bytes::from(vec![i]));
    }
    p.drive();
    assert_eq!(transfers(&log, C2S).len(), 4, "the window is 4 transfers");
    assert_eq!(deliveries(&p.server_events).len(), 4);
    p.advance(Duration::from_secs(10));
    let got: Vec<u8> = deliveries(&p.server_events)
        .iter()
        .map(|d| d.1[0])
        .collect();
    assert_eq!(got, (0..10).collect::<Vec<u8>>());
    assert_eq!(transfers(&log, C2S).len(), 10);
    for events in [&p.client_events, &p.server_events] {
        assert!(
            !has(events, |e| matches!(
                e,
                Event::TransportError(_) | Event::SessionRemoteEnd { .. }
            )),
            "{events:?}"
        );
    }
}

#[test]
fn a_transfer_beyond_the_incoming_window_ends_the_session_with_window_violation() {
    // The server grants no window at all, but the wire tells the client it may send 100 transfers.
    let mut p = pair_with(|_| {}, fixed_window(0));
    let widen = |f: &Frame, p: Performative| Verdict::Replace(encode(&[Frame::amqp(f.channel, p)]));
    tap(&mut p, move |dir, f| match (dir, performative(f)) {
        (S2C, Some(Performative::Begin(b))) => widen(
            f,
            Performative::Begin(Begin {
                incoming_window: 100,
                ..b.clone()
            }),
        ),
        (S2C, Some(Performative::Flow(flow))) => widen(
            f,
            Performative::Flow(Flow {
                incoming_window: 100,
                ..flow.clone()
            }),
        ),
        _ => Verdict::Pass,
    });
    p.open();
    let s = p.begin();
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    p.server.add_credit(sv, 1).unwrap();
    p.drive();
    p.client_events.clear();
    p.server_events.clear();
    p.client_send(c, 0, Bytes::from_static(b"too much"));
    p.drive();
    assert_eq!(
        session_end_error(&p.client_events),
        Some(ErrorCondition::WindowViolation)
    );
    assert!(deliveries(&p.server_events).is_empty());
    assert!(transport_errors(&p.client_events).is_empty());
    assert!(transport_errors(&p.server_events).is_empty());
}

#[test]
fn credit_cut_below_the_deliveries_in_flight_leaves_none() {
    let (mut p, _, (c, _)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 5);
    for i in 0..3 {
        p.client_send(c, i, Bytes::new());
    }
    // Before seeing them, the receiver cuts its credit to 1 from delivery-count 0: the 3 in flight overrun it.
    let cut = Flow {
        next_incoming_id: Some(0),
        incoming_window: 2048,
        next_outgoing_id: 0,
        outgoing_window: u32::MAX,
        handle: Some(0),
        delivery_count: Some(0),
        link_credit: Some(1),
        ..Flow::default()
    };
    p.client
        .handle_input(&encode(&[Frame::amqp(0, cut)]), p.now);
    assert_eq!(p.client.credit(c), Ok(0));
    assert_eq!(
        p.client.send(c, Bytes::new(), Bytes::new(), false),
        Err(EngineError::NoCredit)
    );
}

#[test]
fn a_window_cut_below_the_transfers_in_flight_stops_the_sender() {
    let (mut p, _, (c, _)) = sender_with_credit(fixed_window(10), LinkConfig::sender("l", "q"), 20);
    let log = tap(&mut p, hold_window_refills);
    for i in 0..8 {
        p.client_send(c, i, Bytes::new());
    }
    // Before seeing them, the server shrinks its window to 2 from transfer-id 0: the 8 in flight overrun it.
    let cut = Flow {
        next_incoming_id: Some(0),
        incoming_window: 2,
        next_outgoing_id: 0,
        outgoing_window: u32::MAX,
        ..Flow::default()
    };
    p.client
        .handle_input(&encode(&[Frame::amqp(0, cut)]), p.now);
    p.client_send(c, 8, Bytes::new());
    p.drive();
    assert_eq!(
        transfers(&log, C2S).len(),
        8,
        "the ninth waits for the window"
    );
    p.advance(Duration::from_secs(5));
    assert_eq!(deliveries(&p.server_events).len(), 9);
    assert!(transport_errors(&p.server_events).is_empty());
    assert_eq!(session_end_error(&p.client_events), None);
}

#[test]
fn credit_limited_below_what_is_in_flight_takes_the_transfers_that_crossed_the_flow() {
    let (mut p, _, (c, sv)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 10);
    for i in 0..6 {
        p.client_send(c, i, Bytes::from_static(b"m"));
    }
    // Before the server sees them, it cuts the credit to 2: the sender, told so, may send no more.
    p.server.limit_credit(sv, 2).unwrap();
    assert_eq!(p.server.credit(sv), Ok(2));
    p.drive();
    assert_eq!(deliveries(&p.server_events).len(), 6);
    assert_eq!(link_detach(&p.client_events), None);
    assert_eq!(p.server.credit(sv), Ok(0));
    assert_eq!(p.client.credit(c), Ok(0));
    // Credit granted again counts from the delivery-count both sides agree on.
    p.server.add_credit(sv, 3).unwrap();
    p.drive();
    assert_eq!(p.client.credit(c), Ok(3));
    // Limiting to more than is left changes nothing.
    p.server.limit_credit(sv, 5).unwrap();
    assert_eq!(p.server.credit(sv), Ok(3));
}

#[test]
fn transfers_on_credit_taken_back_do_not_use_up_the_overshoot_allowance() {
    let (mut p, s) = connected_with(|c| c.credit_overshoot = 0);
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    // The server grants 10; the client is told 20, so it overshoots by up to one grant (as RabbitMQ 3.10 can).
    overstate_next_grant(&mut p, 20);
    p.server.add_credit(sv, 10).unwrap();
    p.drive();
    assert_eq!(p.client.credit(c), Ok(20));
    p.server_events.clear();
    p.client_events.clear();
    for i in 0..20 {
        p.client_send(c, i, Bytes::from_static(b"m"));
    }
    // The 10 granted crossed the flow that took them back; the 10 beyond are the tolerated overshoot.
    p.server.limit_credit(sv, 0).unwrap();
    p.drive();
    assert_eq!(deliveries(&p.server_events).len(), 20);
    assert_eq!(link_detach(&p.client_events), None);
}

#[test]
fn a_payload_sent_from_a_slice_waits_for_the_window_as_a_copy_in_order() {
    let (mut p, _, (c, _)) = sender_with_credit(fixed_window(2), LinkConfig::sender("l", "q"), 10);
    let log = tap(&mut p, hold_window_refills);
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for i in 0..6u8 {
        let payload = vec![i; 3];
        // Alternately owned and borrowed: the borrowed ones that wait are copied, and keep their place.
        if i % 2 == 0 {
            p.client
                .send(c, Bytes::from(vec![i]), Bytes::from(payload.clone()), false)
                .unwrap();
        } else {
            p.client
                .send_slice(c, Bytes::from(vec![i]), &payload, false)
                .unwrap();
        }
        kept.push(payload);
    }
    // The caller's buffers may change once the calls return.
    for k in &mut kept {
        k.fill(0xff);
    }
    p.drive();
    assert_eq!(transfers(&log, C2S).len(), 2, "the window is 2 transfers");
    p.advance(Duration::from_secs(10));
    let got: Vec<Bytes> = deliveries(&p.server_events)
        .into_iter()
        .map(|d| d.1)
        .collect();
    let sent: Vec<Bytes> = (0..6u8).map(|i| Bytes::from(vec![i; 3])).collect();
    assert_eq!(got, sent);
    assert_eq!(p.client.credit(c), Ok(4));
}

#[test]
fn a_payload_sent_from_a_slice_larger_than_a_frame_is_split() {
    let (mut p, _, (c, _)) =
        sender_with_credit(|s| s.max_frame_size = 512, LinkConfig::sender("l", "q"), 1);
    let big: Vec<u8> = (0..5_000).map(|i| (i % 251) as u8).collect();
    p.client
        .send_slice(c, Bytes::from_static(b"t"), &big, false)
        .unwrap();
    p.drive();
    assert_eq!(deliveries(&p.server_events)[0].1, Bytes::from(big));
}
