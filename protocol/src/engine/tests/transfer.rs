//! Transfers [AMQP 1.0 §2.6.12-§2.6.14, §2.7.5]: abort midway through a multi-frame delivery and before its first
//! frame, pre-settled deliveries and the sender settle mode, unsettled deliveries under receiver settle modes
//! first and second, message-format, max-message-size (refused by our sender with
//! `EngineError::MessageTooLarge`, enforced by our receiver with `amqp:link:message-size-exceeded`), transfers
//! beyond link credit (`amqp:link:transfer-limit-exceeded`), and frames that never exceed the peer's
//! max-frame-size. Reassembly of 5 MiB at max-frame 512 is in the parent module.

use super::*;
use crate::frame::{Attach, Performative, ReceiverSettleMode, SenderSettleMode};

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

fn accepted() -> Option<DeliveryState> {
    Some(DeliveryState::Accepted(Accepted {}))
}

#[test]
fn abort_midway_through_a_multi_frame_delivery_discards_it() {
    let (mut p, s, (c, sv)) = sender_with_credit(
        |s| {
            s.max_frame_size = 512;
            s.session_window = 4;
        },
        LinkConfig::sender("l", "q"),
        2,
    );
    let log = tap(&mut p, hold_window_refills);
    let d = p.client_send(c, 1, Bytes::from(vec![7u8; 10_000]));
    p.drive();
    assert_eq!(
        transfers(&log, C2S).len(),
        4,
        "4 of about 20 frames are out"
    );
    p.client.abort(d).unwrap();
    assert_eq!(
        p.client.unsettled_outgoing(s.0),
        Ok(0),
        "aborted is settled"
    );
    p.advance(Duration::from_secs(5));
    let sent = transfers(&log, C2S);
    assert_eq!(sent.len(), 5, "one final frame carries the abort");
    let last = &sent[4];
    assert!(last.aborted && !last.more, "{last:?}");
    assert_eq!(last.delivery_id, None, "not the first frame");
    assert_eq!(
        p.take_server_events(),
        vec![Event::DeliveryAborted(DeliveryId { link: sv, id: 0 })]
    );
    // The aborted delivery used its credit, and the link carries on with the next delivery.
    assert_eq!((p.client.credit(c), p.server.credit(sv)), (Ok(1), Ok(1)));
    p.client_send(c, 2, Bytes::from_static(b"after"));
    p.advance(Duration::from_secs(5));
    let got = deliveries(&p.server_events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, DeliveryId { link: sv, id: 1 });
    assert_eq!(got[0].1, Bytes::from_static(b"after"));
    assert!(!has(&p.server_events, |e| matches!(
        e,
        Event::TransportError(_) | Event::SessionRemoteEnd { .. }
    )));
}

#[test]
fn abort_before_the_first_frame_sends_a_single_aborted_transfer() {
    let (mut p, _, (c, sv)) = sender_with_credit(
        |s| {
            s.max_frame_size = 512;
            s.session_window = 2;
        },
        LinkConfig::sender("l", "q"),
        2,
    );
    let log = tap(&mut p, hold_window_refills);
    // Two frames fill the window of 2, so the second delivery waits before its first frame.
    p.client_send(c, 1, Bytes::from(vec![1u8; 700]));
    let d = p.client_send(c, 2, Bytes::from_static(b"never sent"));
    p.drive();
    assert_eq!(transfers(&log, C2S).len(), 2);
    p.client.abort(d).unwrap();
    p.advance(Duration::from_secs(5));
    let sent = transfers(&log, C2S);
    assert_eq!(sent.len(), 3);
    let t = &sent[2];
    assert_eq!(t.delivery_id, Some(1));
    assert_eq!(t.delivery_tag.as_deref(), Some(&2u64.to_be_bytes()[..]));
    assert!(t.aborted && !t.more, "{t:?}");
    let events = p.take_server_events();
    let got = deliveries(&events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.len(), 700);
    assert_eq!(
        events.last(),
        Some(&Event::DeliveryAborted(DeliveryId { link: sv, id: 1 }))
    );
    assert_eq!((p.client.credit(c), p.server.credit(sv)), (Ok(0), Ok(0)));
}

#[test]
fn abort_after_the_last_frame_is_refused() {
    let (mut p, _, (c, _)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 1);
    let d = p.client_send(c, 1, Bytes::from_static(b"done"));
    p.drive();
    assert_eq!(p.client.abort(d), Err(EngineError::UnknownDelivery));
    p.drive();
    assert_eq!(deliveries(&p.server_events).len(), 1);
    assert!(!has(&p.server_events, |e| matches!(
        e,
        Event::DeliveryAborted(_)
    )));
}

#[test]
fn pre_settled_deliveries_arrive_settled_and_take_no_disposition() {
    let (mut p, s, (c, _)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 1);
    let log = record(&mut p);
    p.client
        .send(
            c,
            Bytes::from_static(b"t"),
            Bytes::from_static(b"fire"),
            true,
        )
        .unwrap();
    assert_eq!(p.client.unsettled_outgoing(s.0), Ok(0));
    p.drive();
    let got = deliveries(&p.server_events);
    assert_eq!(got.len(), 1);
    assert!(got[0].2, "settled");
    assert_eq!(transfers(&log, C2S)[0].settled, Some(true));
    assert_eq!(
        p.server.disposition(got[0].0, accepted(), true),
        Err(EngineError::UnknownDelivery)
    );
    p.drive();
    assert!(dispositions(&log, S2C).is_empty());
}

#[test]
fn the_sender_settle_mode_overrides_the_per_message_choice() {
    let (mut p, s) = Pair::connected();
    let settled = LinkConfig {
        snd_settle_mode: SenderSettleMode::Settled,
        ..LinkConfig::sender("settled", "q")
    };
    let unsettled = LinkConfig {
        snd_settle_mode: SenderSettleMode::Unsettled,
        ..LinkConfig::sender("unsettled", "q")
    };
    let (a, sa) = p.attach(s, settled);
    let (b, sb) = p.attach(s, unsettled);
    p.server.add_credit(sa, 1).unwrap();
    p.server.add_credit(sb, 1).unwrap();
    p.drive();
    p.server_events.clear();
    p.client
        .send(a, Bytes::from_static(b"a"), Bytes::new(), false)
        .unwrap();
    p.client
        .send(b, Bytes::from_static(b"b"), Bytes::new(), true)
        .unwrap();
    assert_eq!(p.client.unsettled_outgoing(s.0), Ok(1));
    p.drive();
    let got = deliveries(&p.server_events);
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].0.link, got[0].2), (sa, true));
    assert_eq!((got[1].0.link, got[1].2), (sb, false));
}

#[test]
fn rcv_settle_mode_first_lets_the_receiver_settle_alone() {
    let (mut p, s, (c, _)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 1);
    let log = record(&mut p);
    let d = p.client_send(c, 1, Bytes::from_static(b"m"));
    p.drive();
    let got = deliveries(&p.server_events);
    assert_eq!(got.len(), 1);
    assert!(!got[0].2);
    assert_eq!(transfers(&log, C2S)[0].settled, Some(false));
    p.server.disposition(got[0].0, accepted(), true).unwrap();
    p.drive();
    assert_eq!(
        p.take_client_events(),
        vec![Event::RemoteDisposition {
            delivery: d,
            state: accepted(),
            settled: true
        }]
    );
    assert_eq!(p.client.unsettled_outgoing(s.0), Ok(0));
    assert_eq!(p.client.settle(d), Err(EngineError::UnknownDelivery));
    let ds = dispositions(&log, S2C);
    assert_eq!(ds.len(), 1);
    assert_eq!(
        (ds[0].role, ds[0].first, ds[0].last, ds[0].settled),
        (Role::Receiver, 0, None, true)
    );
}

#[test]
fn rcv_settle_mode_second_is_negotiated_and_keeps_the_delivery_open() {
    let link = LinkConfig {
        rcv_settle_mode: ReceiverSettleMode::Second,
        ..LinkConfig::sender("l", "q")
    };
    let (mut p, s, (c, sv)) = sender_with_credit(|_| {}, link, 1);
    let mode = |a: Option<&Attach>| a.map(|a| a.rcv_settle_mode);
    assert_eq!(
        mode(p.server.remote_attach(sv).unwrap()),
        Some(ReceiverSettleMode::Second)
    );
    assert_eq!(
        mode(p.client.remote_attach(c).unwrap()),
        Some(ReceiverSettleMode::Second)
    );
    let d = p.client_send(c, 1, Bytes::from_static(b"m"));
    p.drive();
    let got = deliveries(&p.server_events);
    p.server.disposition(got[0].0, accepted(), false).unwrap();
    p.drive();
    assert_eq!(
        p.take_client_events(),
        vec![Event::RemoteDisposition {
            delivery: d,
            state: accepted(),
            settled: false
        }]
    );
    assert_eq!(
        p.client.unsettled_outgoing(s.0),
        Ok(1),
        "still the sender's to settle"
    );
}

#[test]
fn message_format_travels_with_the_first_frame() {
    let (mut p, _, (c, _)) =
        sender_with_credit(|s| s.max_frame_size = 512, LinkConfig::sender("l", "q"), 3);
    let log = record(&mut p);
    p.client_send(c, 0, Bytes::from_static(b"default"));
    p.client
        .send_with_format(
            c,
            Bytes::from_static(b"1"),
            Bytes::from_static(b"x"),
            false,
            0x0102_0304,
        )
        .unwrap();
    p.client
        .send_with_format(
            c,
            Bytes::from_static(b"2"),
            Bytes::from(vec![0u8; 2000]),
            false,
            77,
        )
        .unwrap();
    p.drive();
    let formats: Vec<u32> = p
        .server_events
        .iter()
        .filter_map(|e| match e {
            Event::Delivery { message_format, .. } => Some(*message_format),
            _ => None,
        })
        .collect();
    assert_eq!(formats, vec![0, 0x0102_0304, 77]);
    let sent = transfers(&log, C2S);
    assert!(sent.len() > 3, "the last message spans frames");
    let on_wire: Vec<Option<u32>> = sent.iter().map(|t| t.message_format).collect();
    assert_eq!(&on_wire[..3], &[Some(0), Some(0x0102_0304), Some(77)]);
    assert!(on_wire[3..].iter().all(Option::is_none), "{on_wire:?}");
}

#[test]
fn a_message_over_the_receivers_max_message_size_is_refused_by_the_sender() {
    let link = LinkConfig {
        max_message_size: Some(100),
        ..LinkConfig::sender("l", "q")
    };
    let (mut p, s, (c, _)) = sender_with_credit(|_| {}, link, 2);
    assert_eq!(
        p.client
            .remote_attach(c)
            .unwrap()
            .and_then(|a| a.max_message_size),
        Some(100)
    );
    let log = record(&mut p);
    assert_eq!(
        p.client.send(
            c,
            Bytes::from_static(b"t"),
            Bytes::from(vec![0u8; 101]),
            false
        ),
        Err(EngineError::MessageTooLarge {
            size: 101,
            max: 100
        })
    );
    assert_eq!(p.client.credit(c), Ok(2));
    assert_eq!(p.client.unsettled_outgoing(s.0), Ok(0));
    p.drive();
    assert!(transfers(&log, C2S).is_empty());
    p.client_send(c, 1, Bytes::from(vec![0u8; 100]));
    p.drive();
    assert_eq!(deliveries(&p.server_events).len(), 1);
}

#[test]
fn a_message_over_max_message_size_detaches_the_receiving_link() {
    let (mut p, s) = connected_with(|s| s.max_frame_size = 512);
    // The server's attach loses its max-message-size on the way, so the client does not know the limit.
    rewrite_first(&mut p, S2C, |f| match performative(f) {
        Some(Performative::Attach(a)) => Some(vec![Frame::amqp(
            f.channel,
            Attach {
                max_message_size: None,
                ..(**a).clone()
            },
        )]),
        _ => None,
    });
    let link = LinkConfig {
        max_message_size: Some(1000),
        ..LinkConfig::sender("l", "q")
    };
    let (c, sv) = p.attach(s, link);
    p.server.add_credit(sv, 1).unwrap();
    p.drive();
    p.client_events.clear();
    p.server_events.clear();
    p.client_send(c, 1, Bytes::from(vec![0u8; 3000]));
    p.drive();
    assert!(deliveries(&p.server_events).is_empty());
    assert_eq!(
        link_detach(&p.client_events),
        Some((true, Some(ErrorCondition::MessageSizeExceeded)))
    );
    assert_eq!(session_end_error(&p.client_events), None);
    assert!(transport_errors(&p.server_events).is_empty());
    p.client.detach(c, true, None).unwrap();
    p.drive();
    assert!(has(&p.client_events, |e| *e == Event::LinkClosed(c)));
    assert!(has(&p.server_events, |e| *e == Event::LinkClosed(sv)));
}

#[test]
fn a_flow_counting_deliveries_we_never_sent_still_follows_the_credit_formula() {
    let (mut p, s) = Pair::connected();
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    // The server says it has seen 3 deliveries (none were sent) and grants 5: 3 + 5 - 0 = 8 [AMQP 1.0 §2.6.7].
    rewrite_first(&mut p, S2C, |f| match performative(f) {
        Some(Performative::Flow(flow)) => Some(vec![Frame::amqp(
            f.channel,
            Flow {
                delivery_count: Some(3),
                ..flow.clone()
            },
        )]),
        _ => None,
    });
    p.server.add_credit(sv, 5).unwrap();
    p.drive();
    assert_eq!(p.client.credit(c), Ok(8));
}

#[test]
fn a_transfer_beyond_credit_is_taken_as_proton_does_and_credit_stays_in_step() {
    let (mut p, s) = Pair::connected();
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    // The server grants 1; the client is told 5.
    overstate_next_grant(&mut p, 5);
    p.server.add_credit(sv, 1).unwrap();
    p.drive();
    assert_eq!(p.client.credit(c), Ok(5));
    p.client_events.clear();
    p.server_events.clear();
    p.client_send(c, 1, Bytes::from_static(b"ok"));
    p.client_send(c, 2, Bytes::from_static(b"over"));
    p.drive();
    let got = deliveries(&p.server_events);
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].1, Bytes::from_static(b"over"));
    assert_eq!(link_detach(&p.client_events), None);
    assert_eq!(p.server.credit(sv), Ok(0));
    // New credit counts from the delivery-count both sides now agree on: one more send, not two.
    p.server.add_credit(sv, 1).unwrap();
    p.drive();
    assert_eq!(p.client.credit(c), Ok(1));
}

#[test]
fn no_frame_exceeds_the_peers_max_frame_size() {
    let (mut p, _, (c, _)) =
        sender_with_credit(|s| s.max_frame_size = 512, LinkConfig::sender("l", "q"), 1);
    let largest = Rc::new(std::cell::Cell::new(0));
    let seen = largest.clone();
    p.set_hook(move |dir, unit| {
        if dir == C2S {
            seen.set(seen.get().max(unit.len()));
        }
        Verdict::Pass
    });
    let big: Vec<u8> = (0..20_000).map(|i| (i % 253) as u8).collect();
    p.client_send(c, 1, Bytes::from(big.clone()));
    p.drive();
    assert!(largest.get() <= 512, "a frame of {} bytes", largest.get());
    assert!(largest.get() > 500, "frames are filled: {}", largest.get());
    assert_eq!(deliveries(&p.server_events)[0].1, Bytes::from(big));
}

/// The engine skips sizing a transfer when its payload fits beside `TRANSFER_OVERHEAD_MAX`: the bound must cover
/// the largest first frame it writes.
#[test]
fn the_transfer_overhead_bound_covers_the_largest_first_frame() {
    let transfer = Transfer {
        handle: u32::MAX,
        delivery_id: Some(u32::MAX),
        delivery_tag: Some(Bytes::from(vec![
            0xab;
            crate::engine::link::MAX_DELIVERY_TAG
        ])),
        message_format: Some(u32::MAX),
        settled: Some(true),
        more: true,
        ..Transfer::default()
    };
    let frame = Frame::amqp(u16::MAX, transfer);
    assert!(frame.encoded_size() <= crate::engine::session::TRANSFER_OVERHEAD_MAX);
}
