//! Settlement [AMQP 1.0 §2.6.12, §2.7.6]: dispositions go out as ranges split where the state changes, one range
//! may span deliveries of several links, a received range updates exactly the deliveries it names, settlements
//! made between two polls are batched into one frame, remote settlement in receiver settle mode second completes
//! the exchange without a redundant frame, and unsettled deliveries around pre-settled ones are all tracked.

use super::*;
use crate::frame::{ReceiverSettleMode, Rejected, SenderSettleMode};

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

fn accepted() -> Option<DeliveryState> {
    Some(DeliveryState::Accepted(Accepted {}))
}

/// The (delivery, state, settled) of every `RemoteDisposition` event.
fn remote_dispositions(events: &[Event]) -> Vec<(DeliveryId, Option<DeliveryState>, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::RemoteDisposition {
                delivery,
                state,
                settled,
            } => Some((*delivery, state.clone(), *settled)),
            _ => None,
        })
        .collect()
}

#[test]
fn dispositions_are_sent_as_ranges_split_where_the_state_changes() {
    let (mut p, _, (c, _)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 10);
    for i in 0..10 {
        p.client_send(c, i, Bytes::from_static(b"m"));
    }
    p.drive();
    let got = deliveries(&p.server_events);
    assert_eq!(got.len(), 10);
    let rejected = Some(DeliveryState::Rejected(Rejected::default()));
    let log = record(&mut p);
    for (i, (d, _, _)) in got.iter().enumerate() {
        let state = if i == 5 { rejected.clone() } else { accepted() };
        p.server.disposition(*d, state, true).unwrap();
    }
    p.drive();
    let ranges: Vec<_> = dispositions(&log, S2C)
        .into_iter()
        .map(|d| (d.role, d.first, d.last, d.settled, d.state))
        .collect();
    assert_eq!(
        ranges,
        vec![
            (Role::Receiver, 0, Some(4), true, accepted()),
            (Role::Receiver, 5, None, true, rejected.clone()),
            (Role::Receiver, 6, Some(9), true, accepted()),
        ]
    );
    let seen = remote_dispositions(&p.client_events);
    assert_eq!(seen.len(), 10);
    for (i, (d, state, settled)) in seen.into_iter().enumerate() {
        assert_eq!(
            d,
            DeliveryId {
                link: c,
                id: i as u32
            }
        );
        assert!(settled);
        assert_eq!(state, if i == 5 { rejected.clone() } else { accepted() });
    }
}

#[test]
fn one_range_can_span_deliveries_of_two_links() {
    let (mut p, s) = Pair::connected();
    let (a, sa) = p.attach(s, LinkConfig::sender("a", "q"));
    let (b, sb) = p.attach(s, LinkConfig::sender("b", "q"));
    p.server.add_credit(sa, 3).unwrap();
    p.server.add_credit(sb, 3).unwrap();
    p.drive();
    p.server_events.clear();
    p.client_events.clear();
    for i in 0..6 {
        p.client_send(if i % 2 == 0 { a } else { b }, i, Bytes::new());
    }
    p.drive();
    let got = deliveries(&p.server_events);
    assert_eq!(got.len(), 6);
    let log = record(&mut p);
    for (d, _, _) in &got {
        p.server.disposition(*d, accepted(), true).unwrap();
    }
    p.drive();
    let ds = dispositions(&log, S2C);
    assert_eq!(ds.len(), 1, "{ds:?}");
    assert_eq!((ds[0].first, ds[0].last), (0, Some(5)));
    let links: Vec<_> = remote_dispositions(&p.client_events)
        .into_iter()
        .map(|(d, _, _)| (d.link, d.id))
        .collect();
    assert_eq!(links, vec![(a, 0), (b, 1), (a, 2), (b, 3), (a, 4), (b, 5)]);
    assert_eq!(p.client.unsettled_outgoing(s.0), Ok(0));
}

#[test]
fn a_received_range_updates_the_deliveries_it_names_and_ignores_unknown_ids() {
    let (mut p, s, (c, _)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 5);
    for i in 0..5 {
        p.client_send(c, i, Bytes::new());
    }
    p.drive();
    let got = deliveries(&p.server_events);
    // The server settles delivery 0; on the wire its disposition grows to cover 0..=1000.
    rewrite_first(&mut p, S2C, |f| match performative(f) {
        Some(Performative::Disposition(d)) => Some(vec![Frame::amqp(
            f.channel,
            Disposition {
                last: Some(1000),
                ..d.clone()
            },
        )]),
        _ => None,
    });
    p.server.disposition(got[0].0, accepted(), true).unwrap();
    p.drive();
    let seen = remote_dispositions(&p.client_events);
    let ids: Vec<u32> = seen.iter().map(|(d, _, _)| d.id).collect();
    assert_eq!(ids, vec![0, 1, 2, 3, 4]);
    assert!(seen
        .iter()
        .all(|(_, state, settled)| *settled && *state == accepted()));
    assert_eq!(p.client.unsettled_outgoing(s.0), Ok(0));
    assert!(transport_errors(&p.client_events).is_empty());
    assert_eq!(session_end_error(&p.server_events), None);
}

#[test]
fn settlements_between_two_polls_are_batched_into_one_frame() {
    let link = LinkConfig {
        rcv_settle_mode: ReceiverSettleMode::Second,
        ..LinkConfig::sender("l", "q")
    };
    let (mut p, s, (c, _)) = sender_with_credit(|_| {}, link, 5);
    let sent: Vec<DeliveryId> = (0..5).map(|i| p.client_send(c, i, Bytes::new())).collect();
    p.drive();
    for (d, _, _) in deliveries(&p.server_events) {
        p.server.disposition(d, accepted(), false).unwrap();
    }
    p.drive();
    assert_eq!(p.client.unsettled_outgoing(s.0), Ok(5));
    let log = record(&mut p);
    // Three settlements, one poll; then two more, another poll.
    for d in &sent[..3] {
        p.client.settle(*d).unwrap();
    }
    p.drive();
    for d in &sent[3..] {
        p.client.settle(*d).unwrap();
    }
    p.drive();
    let ranges: Vec<_> = dispositions(&log, C2S)
        .into_iter()
        .map(|d| (d.role, d.first, d.last, d.settled, d.state))
        .collect();
    assert_eq!(
        ranges,
        vec![
            (Role::Sender, 0, Some(2), true, None),
            (Role::Sender, 3, Some(4), true, None),
        ]
    );
    assert_eq!(p.client.unsettled_outgoing(s.0), Ok(0));
    let settled_on_server = remote_dispositions(&p.server_events)
        .into_iter()
        .filter(|(_, _, settled)| *settled)
        .count();
    assert_eq!(settled_on_server, 5);
}

#[test]
fn remote_settlement_in_mode_second_completes_the_exchange() {
    let link = LinkConfig {
        rcv_settle_mode: ReceiverSettleMode::Second,
        ..LinkConfig::sender("l", "q")
    };
    let (mut p, s, (c, _)) = sender_with_credit(|_| {}, link, 1);
    let log = record(&mut p);
    let d = p.client_send(c, 1, Bytes::from_static(b"m"));
    p.drive();
    let r = deliveries(&p.server_events)[0].0;
    p.server.disposition(r, accepted(), false).unwrap();
    p.drive();
    assert_eq!(
        remote_dispositions(&p.take_client_events()),
        vec![(d, accepted(), false)]
    );
    p.client.settle(d).unwrap();
    p.drive();
    assert_eq!(
        remote_dispositions(&p.take_server_events()),
        vec![(r, None, true)]
    );
    assert_eq!(p.client.unsettled_outgoing(s.0), Ok(0));
    // Both ends have settled: the receiver's final settle is local, with nothing to say on the wire.
    p.server.settle(r).unwrap();
    p.drive();
    assert_eq!(dispositions(&log, S2C).len(), 1);
    assert_eq!(dispositions(&log, C2S).len(), 1);
    assert!(p.client_events.is_empty(), "{:?}", p.client_events);
    assert_eq!(p.server.settle(r), Err(EngineError::UnknownDelivery));
}

#[test]
fn unsettled_deliveries_around_a_pre_settled_one_are_all_tracked() {
    let link = LinkConfig {
        snd_settle_mode: SenderSettleMode::Mixed,
        ..LinkConfig::sender("l", "q")
    };
    let (mut p, s, (c, _)) = sender_with_credit(|_| {}, link, 3);
    let first = p.client_send(c, 0, Bytes::new());
    p.client
        .send(c, Bytes::from_static(b"p"), Bytes::new(), true)
        .unwrap();
    let third = p.client_send(c, 2, Bytes::new());
    assert_eq!((first.id, third.id), (0, 2));
    assert_eq!(p.client.unsettled_outgoing(s.0), Ok(2));
    p.drive();
    for (d, _, settled) in deliveries(&p.server_events) {
        if !settled {
            p.server.disposition(d, accepted(), true).unwrap();
        }
    }
    p.drive();
    let seen: Vec<DeliveryId> = remote_dispositions(&p.client_events)
        .into_iter()
        .map(|(d, _, _)| d)
        .collect();
    assert_eq!(seen, vec![first, third]);
    assert_eq!(p.client.unsettled_outgoing(s.0), Ok(0));
}

#[test]
fn closing_a_link_forgets_its_unsettled_deliveries() {
    let (mut p, s, (c, sv)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 2);
    let sent: Vec<DeliveryId> = (0..2).map(|i| p.client_send(c, i, Bytes::new())).collect();
    p.drive();
    let got = deliveries(&p.server_events);
    assert_eq!(p.client.unsettled_outgoing(s.0), Ok(2));
    p.client.detach(c, true, None).unwrap();
    p.drive();
    p.server.detach(sv, true, None).unwrap();
    p.drive();
    assert_eq!(p.client.unsettled_outgoing(s.0), Ok(0));
    assert_eq!(p.client.settle(sent[0]), Err(EngineError::UnknownLink));
    assert_eq!(
        p.server.disposition(got[0].0, accepted(), true),
        Err(EngineError::UnknownLink)
    );
}

#[test]
fn many_pre_settled_deliveries_may_pass_one_held_unsettled() {
    const PRE_SETTLED: u64 = 70_000;
    let (mut p, s, (c, sv)) =
        sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), PRE_SETTLED as u32 + 2);
    let held = p.client_send(c, 0, Bytes::new());
    p.drive();
    for i in 1..=PRE_SETTLED {
        let tag = Bytes::copy_from_slice(&i.to_be_bytes());
        p.client.send(c, tag, Bytes::new(), true).unwrap();
        if i % 1000 == 0 {
            p.drive();
            p.server_events.clear();
        }
    }
    let last = p.client_send(c, PRE_SETTLED + 1, Bytes::new());
    p.drive();
    assert!(
        transport_errors(&p.server_events).is_empty(),
        "{:?}",
        transport_errors(&p.server_events)
    );
    assert_eq!(p.client.unsettled_outgoing(s.0), Ok(2));
    // Both are still the receiver's to settle, the held one and the last.
    for id in [held.id, last.id] {
        let d = DeliveryId { link: sv, id };
        p.server.disposition(d, accepted(), true).unwrap();
    }
    p.drive();
    let seen: Vec<DeliveryId> = remote_dispositions(&p.client_events)
        .into_iter()
        .map(|(d, _, _)| d)
        .collect();
    assert_eq!(seen, vec![held, last]);
}
