//! Engine tests over the in-memory [`Pair`](super::pair::Pair), and the helpers the topic files share.
//!
//! This file keeps the first end-to-end checks (open/begin/attach/close, credit and disposition, range
//! coalescing, 5 MiB at max-frame 512, idle timeout); each topic of the engine has its own file below, and every
//! item there is asserted on the events both engines report and, where it matters, on the frames in flight.

mod buffers;
mod errors;
mod flow;
mod lifecycle;
mod sasl;
mod scram;
mod settlement;
mod transfer;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::pair::{Direction, Pair, Verdict};
use super::*;
use crate::frame::{Accepted, DeliveryState, Disposition, Flow, Role, Transfer};

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

/// The conditions of the `TransportError` events, in order.
fn transport_errors(events: &[Event]) -> Vec<ErrorCondition> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::TransportError(err) => Some(err.condition.clone()),
            _ => None,
        })
        .collect()
}

/// Asserts that `TransportClosed` is the last event and occurs exactly once.
#[track_caller]
fn assert_closed_once(events: &[Event]) {
    assert_eq!(events.last(), Some(&Event::TransportClosed), "{events:?}");
    let n = events
        .iter()
        .filter(|e| **e == Event::TransportClosed)
        .count();
    assert_eq!(n, 1, "{events:?}");
}

/// A pair with default configurations except for what `client` and `server` change.
fn pair_with(
    client: impl FnOnce(&mut ConnectionConfig),
    server: impl FnOnce(&mut ConnectionConfig),
) -> Pair {
    let mut c = ConnectionConfig::client("client");
    client(&mut c);
    let mut s = ConnectionConfig::server("server");
    server(&mut s);
    Pair::new(c, s)
}

/// Like [`Pair::connected`], with the server's configuration changed by `server`.
fn connected_with(server: impl FnOnce(&mut ConnectionConfig)) -> (Pair, (SessionId, SessionId)) {
    let mut p = pair_with(|_| {}, server);
    p.open();
    let s = p.begin();
    p.client_events.clear();
    p.server_events.clear();
    (p, s)
}

/// A connected pair with a client sender to "q" that the server granted `credit`; events are cleared.
fn sender_with_credit(
    server: impl FnOnce(&mut ConnectionConfig),
    link: LinkConfig,
    credit: u32,
) -> (Pair, (SessionId, SessionId), (LinkId, LinkId)) {
    let (mut p, s) = connected_with(server);
    let (c, sv) = p.attach(s, link);
    p.server.add_credit(sv, credit).unwrap();
    p.drive();
    p.client_events.clear();
    p.server_events.clear();
    (p, s, (c, sv))
}

/// The frames a [`tap`] saw in flight, with their direction, in order; as sent, before any rewrite.
type FrameLog = Rc<RefCell<Vec<(Direction, Frame)>>>;

/// Decodes one unit the pair's hook sees; `None` for a protocol header.
fn decode(unit: &[u8]) -> Option<Frame> {
    if unit.starts_with(b"AMQP") {
        return None;
    }
    Some(Frame::decode(Bytes::copy_from_slice(unit), 0).expect("the engines write valid frames"))
}

/// The wire bytes of `frames`, back to back.
fn encode(frames: &[Frame]) -> Vec<u8> {
    let mut out = Vec::new();
    for f in frames {
        f.encode(&mut out);
    }
    out
}

/// The performative of an AMQP frame.
fn performative(f: &Frame) -> Option<&Performative> {
    match &f.body {
        FrameBody::Amqp { performative, .. } => Some(performative),
        _ => None,
    }
}

/// Installs a hook that logs every frame in flight and applies `verdict` to it; protocol headers pass.
fn tap(p: &mut Pair, mut verdict: impl FnMut(Direction, &Frame) -> Verdict + 'static) -> FrameLog {
    let log = FrameLog::default();
    let seen = log.clone();
    p.set_hook(move |dir, unit| match decode(unit) {
        Some(frame) => {
            let v = verdict(dir, &frame);
            seen.borrow_mut().push((dir, frame));
            v
        }
        None => Verdict::Pass,
    });
    log
}

/// Logs every frame in flight, changing nothing.
fn record(p: &mut Pair) -> FrameLog {
    tap(p, |_, _| Verdict::Pass)
}

/// Tells the client, in the server's next `flow`, that it has `credit` (whatever the server granted).
fn overstate_next_grant(p: &mut Pair, credit: u32) {
    rewrite_first(p, Direction::ServerToClient, move |f| {
        match performative(f) {
            Some(Performative::Flow(flow)) => Some(vec![Frame::amqp(
                f.channel,
                Flow {
                    link_credit: Some(credit),
                    ..flow.clone()
                },
            )]),
            _ => None,
        }
    });
}

/// Replaces the first frame going `dir` for which `rewrite` returns frames with those frames; logs everything.
fn rewrite_first(
    p: &mut Pair,
    dir: Direction,
    mut rewrite: impl FnMut(&Frame) -> Option<Vec<Frame>> + 'static,
) -> FrameLog {
    let mut done = false;
    tap(p, move |d, frame| match (done, d == dir) {
        (false, true) => match rewrite(frame) {
            Some(frames) => {
                done = true;
                Verdict::Replace(encode(&frames))
            }
            None => Verdict::Pass,
        },
        _ => Verdict::Pass,
    })
}

/// The performatives logged going `dir` that `pick` selects.
fn sent<T>(log: &FrameLog, dir: Direction, pick: impl Fn(&Performative) -> Option<T>) -> Vec<T> {
    log.borrow()
        .iter()
        .filter(|(d, _)| *d == dir)
        .filter_map(|(_, f)| performative(f).and_then(&pick))
        .collect()
}

fn flows(log: &FrameLog, dir: Direction) -> Vec<Flow> {
    sent(log, dir, |p| match p {
        Performative::Flow(f) => Some(f.clone()),
        _ => None,
    })
}

fn transfers(log: &FrameLog, dir: Direction) -> Vec<Transfer> {
    sent(log, dir, |p| match p {
        Performative::Transfer(t) => Some(t.clone()),
        _ => None,
    })
}

fn dispositions(log: &FrameLog, dir: Direction) -> Vec<Disposition> {
    sent(log, dir, |p| match p {
        Performative::Disposition(d) => Some(d.clone()),
        _ => None,
    })
}

/// A [`tap`] verdict that holds the server's session-only flows (window refills) back for a second of
/// simulated time, so a sender runs into the session window.
fn hold_window_refills(dir: Direction, f: &Frame) -> Verdict {
    match performative(f) {
        Some(Performative::Flow(flow))
            if dir == Direction::ServerToClient && flow.handle.is_none() =>
        {
            Verdict::Delay(Duration::from_secs(1))
        }
        _ => Verdict::Pass,
    }
}

/// The error carried by the first `SessionRemoteEnd` event.
fn session_end_error(events: &[Event]) -> Option<ErrorCondition> {
    events.iter().find_map(|e| match e {
        Event::SessionRemoteEnd { error, .. } => error.as_ref().map(|e| e.condition.clone()),
        _ => None,
    })
}

/// The `closed` flag and error condition of the first `LinkRemoteDetach` event.
fn link_detach(events: &[Event]) -> Option<(bool, Option<ErrorCondition>)> {
    events.iter().find_map(|e| match e {
        Event::LinkRemoteDetach { closed, error, .. } => {
            Some((*closed, error.as_ref().map(|e| e.condition.clone())))
        }
        _ => None,
    })
}

/// The error carried by the first `ConnectionRemoteClose` event.
fn remote_close_error(events: &[Event]) -> Option<ErrorCondition> {
    events.iter().find_map(|e| match e {
        Event::ConnectionRemoteClose(error) => error.as_ref().map(|e| e.condition.clone()),
        _ => None,
    })
}

#[test]
fn open_begin_attach_and_close() {
    let mut p = Pair::default_configs();
    p.open();
    assert!(has(
        &p.server_events,
        |e| matches!(e, Event::ConnectionRemoteOpen(o) if o.container_id == "client")
    ));
    assert!(has(
        &p.client_events,
        |e| matches!(e, Event::ConnectionRemoteOpen(o) if o.container_id == "server")
    ));
    let s = p.begin();
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    assert_eq!(p.server.link_config(sv).unwrap().role, Role::Receiver);
    assert_eq!(
        p.server
            .remote_attach(sv)
            .unwrap()
            .unwrap()
            .target
            .as_ref()
            .unwrap()
            .address
            .as_deref(),
        Some("q")
    );
    p.client.detach(c, true, None).unwrap();
    p.drive();
    assert!(has(&p.server_events, |e| matches!(
        e,
        Event::LinkRemoteDetach { closed: true, .. }
    )));
    p.server.detach(sv, true, None).unwrap();
    p.drive();
    assert!(has(&p.client_events, |e| *e == Event::LinkClosed(c)));
    p.client.close(None).unwrap();
    p.drive();
    assert!(has(&p.server_events, |e| *e
        == Event::ConnectionRemoteClose(None)));
    p.server.close(None).unwrap();
    p.drive();
    for events in [&p.client_events, &p.server_events] {
        assert_eq!(events.last(), Some(&Event::TransportClosed));
        assert_eq!(
            events
                .iter()
                .filter(|e| **e == Event::TransportClosed)
                .count(),
            1
        );
    }
    assert!(p.client.is_finished() && p.server.is_finished());
}

#[test]
fn credit_transfer_and_disposition() {
    let (mut p, s) = Pair::connected();
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    assert_eq!(
        p.client.send(c, Bytes::new(), Bytes::new(), false),
        Err(EngineError::NoCredit)
    );
    p.server.add_credit(sv, 3).unwrap();
    p.drive();
    assert!(has(&p.client_events, |e| *e
        == Event::LinkCredit { link: c, credit: 3 }));
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
        if dir == Direction::ServerToClient && unit.len() > 10 && unit[8..11] == [0x00, 0x53, 0x15]
        {
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
    let errors: Vec<_> = p
        .server_events
        .iter()
        .chain(&p.client_events)
        .filter(|e| {
            matches!(
                e,
                Event::TransportError(_)
                    | Event::SessionRemoteEnd { .. }
                    | Event::LinkRemoteDetach { .. }
            )
        })
        .collect();
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
        assert!(
            !has(events, |e| matches!(e, Event::TransportError(_))),
            "{events:?}"
        );
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
    assert!(!has(&p.client_events, |e| matches!(
        e,
        Event::TransportError(_)
    )));
    p.advance(Duration::from_millis(2));
    assert!(has(&p.client_events, |e| matches!(e,
        Event::TransportError(err) if err.condition == ErrorCondition::ResourceLimitExceeded)));
    assert_eq!(p.client_events.last(), Some(&Event::TransportClosed));
}

#[test]
fn dispositions_queued_before_close_end_or_detach_go_out_first() {
    for ending in ["close", "end", "detach"] {
        let (mut p, s) = Pair::connected();
        let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
        p.server.add_credit(sv, 1).unwrap();
        p.drive();
        let d = p.client_send(c, 1, Bytes::from_static(b"x"));
        p.drive();
        let got = deliveries(&p.server_events);
        p.server
            .disposition(got[0].0, Some(DeliveryState::Accepted(Accepted {})), true)
            .unwrap();
        match ending {
            "close" => p.server.close(None).unwrap(),
            "end" => p.server.end(s.1, None).unwrap(),
            _ => p.server.detach(sv, true, None).unwrap(),
        }
        p.drive();
        assert!(
            has(&p.client_events, |e| matches!(e,
                Event::RemoteDisposition { delivery, settled: true, .. } if *delivery == d)),
            "the accept went out before the {ending}"
        );
    }
}
