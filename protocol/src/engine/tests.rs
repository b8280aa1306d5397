//! Engine tests over the in-memory [`Pair`](super::pair::Pair).

use std::time::Duration;

use bytes::Bytes;

use super::pair::{Direction, Pair, Verdict};
use super::*;
use crate::frame::{Accepted, DeliveryState, Role};

fn has(events: &[Event], f: impl Fn(&Event) -> bool) -> bool {
    events.iter().any(f)
}

fn deliveries(events: &[Event]) -> Vec<(DeliveryId, Bytes, bool)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Delivery {
                delivery,
                payload,
                settled,
                ..
            } => Some((*delivery, payload.clone(), *settled)),
            _ => None,
        })
        .collect()
}

#[test]
fn open_begin_attach_and_close() {
    let mut p = Pair::default_configs();
    p.open();
    assert!(has(&p.server_events, |e| matches!(e, Event::ConnectionRemoteOpen(o) if o.container_id == "client")));
    assert!(has(&p.client_events, |e| matches!(e, Event::ConnectionRemoteOpen(o) if o.container_id == "server")));
    let s = p.begin();
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    assert_eq!(p.server.link_config(sv).unwrap().role, Role::Receiver);
    assert_eq!(
        p.server.remote_attach(sv).unwrap().unwrap().target.as_ref().unwrap().address.as_deref(),
        Some("q")
    );
    p.client.detach(c, true, None).unwrap();
    p.drive();
    assert!(has(&p.server_events, |e| matches!(e, Event::LinkRemoteDetach { closed: true, .. })));
    p.server.detach(sv, true, None).unwrap();
    p.drive();
    assert!(has(&p.client_events, |e| *e == Event::LinkClosed(c)));
    p.client.close(None).unwrap();
    p.drive();
    assert!(has(&p.server_events, |e| *e == Event::ConnectionRemoteClose(None)));
    p.server.close(None).unwrap();
    p.drive();
    for events in [&p.client_events, &p.server_events] {
        assert_eq!(events.last(), Some(&Event::TransportClosed));
        assert_eq!(events.iter().filter(|e| **e == Event::TransportClosed).count(), 1);
    }
    assert!(p.client.is_finished() && p.server.is_finished());
}

#[test]
fn credit_transfer_and_disposition() {
    let (mut p, s) = Pair::connected();
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    assert_eq!(p.client.send(c, Bytes::new(), Bytes::new(), false), Err(EngineError::NoCredit));
    p.server.add_credit(sv, 3).unwrap();
    p.drive();
    assert!(has(&p.client_events, |e| *e == Event::LinkCredit { link: c, credit: 3 }));
    let d = p.client_send(c, 1, Bytes::from_static(b"hello"));
    p.drive();
    let got = deliveries(&p.server_events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, Bytes::from_static(b"hello"));
    assert!(!got[0].2);
    p.server
        .disposition(got[0].0, Some(DeliveryState::Accepted(Accepted {})), true)
        .unwrap();
    p.drive();
    assert!(has(&p.client_events, |e| matches!(e,
        Event::RemoteDisposition { delivery, state: Some(DeliveryState::Accepted(_)), settled: true } if *delivery == d)));
    assert_eq!(p.client.credit(c).unwrap(), 2);
    assert_eq!(p.client.unsettled_outgoing(s.0).unwrap(), 0);
}

#[test]
fn dispositions_are_coalesced_into_ranges() {
    let (mut p, s) = Pair::connected();
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    p.server.add_credit(sv, 100).unwrap();
    p.drive();
    for i in 0..100 {
        p.client_send(c, i, Bytes::from_static(b"x"));
    }
    p.drive();
    let got = deliveries(&p.server_events);
    assert_eq!(got.len(), 100);
    let count = std::rc::Rc::new(std::cell::Cell::new(0));
    let seen = count.clone();
    p.set_hook(move |dir, unit| {
        // Performative descriptor 0x15 = disposition, right after the 8-byte frame header.
        if dir == Direction::ServerToClient && unit.len() > 10 && unit[8..11] == [0x00, 0x53, 0x15] {
            seen.set(seen.get() + 1);
        }
        Verdict::Pass
    });
    for (d, _, _) in &got {
        p.server
            .disposition(*d, Some(DeliveryState::Accepted(Accepted {})), true)
            .unwrap();
    }
    p.drive();
    assert_eq!(count.get(), 1, "one disposition frame covers all 100");
    let settled = p
        .client_events
        .iter()
        .filter(|e| matches!(e, Event::RemoteDisposition { settled: true, .. }))
        .count();
    assert_eq!(settled, 100);
}

#[test]
fn large_messages_are_split_and_reassembled() {
    let mut cfg = ConnectionConfig::server("server");
    cfg.max_frame_size = 512;
    let mut p = Pair::new(ConnectionConfig::client("client"), cfg);
    p.open();
    let s = p.begin();
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    p.server.add_credit(sv, 1).unwrap();
    p.drive();
    let big: Vec<u8> = (0..5 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    p.client_send(c, 1, Bytes::from(big.clone()));
    p.drive();
    let errors: Vec<_> = p.server_events.iter().chain(&p.client_events).filter(|e| matches!(e, Event::TransportError(_) | Event::SessionRemoteEnd { .. } | Event::LinkRemoteDetach { .. })).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let got = deliveries(&p.server_events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1.len(), big.len());
    assert!(got[0].1[..] == big[..]);
}

#[test]
fn idle_timeout_heartbeats_keep_a_quiet_connection_alive() {
    let mut client = ConnectionConfig::client("client");
    client.idle_timeout = Some(Duration::from_secs(2));
    let mut server = ConnectionConfig::server("server");
    server.idle_timeout = Some(Duration::from_secs(2));
    let mut p = Pair::new(client, server);
    p.open();
    p.advance(Duration::from_secs(60));
    for events in [&p.client_events, &p.server_events] {
        assert!(!has(events, |e| matches!(e, Event::TransportError(_))), "{events:?}");
    }
}

#[test]
fn idle_timeout_expires_with_resource_limit_exceeded() {
    let mut client = ConnectionConfig::client("client");
    client.idle_timeout = Some(Duration::from_secs(2));
    let mut p = Pair::new(client, ConnectionConfig::server("server"));
    p.open();
    // The server stops talking entirely.
    p.set_hook(|dir, _| match dir {
        Direction::ServerToClient => Verdict::Drop,
        Direction::ClientToServer => Verdict::Pass,
    });
    p.advance(Duration::from_millis(1999));
    assert!(!has(&p.client_events, |e| matches!(e, Event::TransportError(_))));
    p.advance(Duration::from_millis(2));
    assert!(has(&p.client_events, |e| matches!(e,
        Event::TransportError(err) if err.condition == ErrorCondition::ResourceLimitExceeded)));
    assert_eq!(p.client_events.last(), Some(&Event::TransportClosed));
}
