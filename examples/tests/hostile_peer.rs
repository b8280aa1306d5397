//! Hostile peers against the `broker` binary with its default flags, over real sockets: each test starts a
//! broker, runs one attack from a raw AMQP client, and checks that the broker is still alive, that its
//! memory (peak RSS) and CPU time grew by a bounded amount, that a normal client on another connection still
//! sends and receives, and, where the spec names one, that the attacker got the AMQP error condition it
//! deserves. A watchdog kills the broker if its RSS grows by more than 512 MiB, so an unbounded attack fails
//! the test instead of exhausting the machine.
//!
//! Run with `--nocapture` to see each test's figures (`[hostile] ...` lines).

#[path = "support/hostile.rs"]
mod hostile;
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hostile::*;
use nucleon_protocol::frame::{
    Accepted, DeliveryState, Detach, Disposition, ErrorCondition, Open, Role, Transfer,
};

const MIB: u64 = 1 << 20;

/// RSS growth allowed for an attack of a few MB of input: the broker may buffer a frame or a window's
/// worth per connection, never memory proportional to what the attacker claims or to id gaps.
const RSS_BOUND: u64 = 64 * MIB;
/// CPU time allowed for one attack (the broker parses a few MB; seconds would mean per-id or quadratic work).
const CPU_BOUND: Duration = Duration::from_secs(5);

/// 1. Unsettled transfers whose delivery-ids leap by 65,536: memory must not follow the gaps, and transfers
///    beyond the granted credit end the link with `transfer-limit-exceeded`.
#[test]
fn delivery_id_gaps_stay_bounded() {
    let mut b = Bench::start("delivery-id-gaps");
    let queue = b.queue("q");
    let mut p = Peer::connect(b.port());
    p.open();
    p.begin(0).expect("begin");
    let (_, credit) = p.attach_sender(0, 0, "gaps", &queue).expect("attach");
    b.note(format!("credit granted {credit}"));
    let body = data_section(b"x");
    // 2,200 transfers (~64 KB), written in chunks of 100 so a broker that balloons is caught early.
    let mut sent = 0u32;
    'attack: for chunk in 0..22u32 {
        let mut bytes = Vec::new();
        for i in chunk * 100..(chunk + 1) * 100 {
            bytes.extend(transfer_frame(
                0,
                small_transfer(0, i.wrapping_mul(65_536), false),
                &body,
            ));
        }
        if let Err(e) = p.write(&bytes) {
            b.note(format!("write stopped after {sent} transfers: {e}"));
            break 'attack;
        }
        sent += 100;
        if b.tripped() || !p.errors.is_empty() {
            break;
        }
    }
    b.note(format!("{sent} transfers written"));
    let synced = p.sync(Duration::from_secs(20));
    b.check(
        synced || b.tripped(),
        "the broker did not finish the transfers within 20 s",
    );
    let _ = p.wait_error(Duration::from_millis(200));
    b.expect_condition(
        &p.errors,
        &[ErrorCondition::TransferLimitExceeded],
        "transfers beyond credit",
    );
    b.finish(RSS_BOUND, CPU_BOUND);
}

/// 2. Dispositions whose range spans almost every delivery-id: each must cost time in proportion to the
///    deliveries that exist, not to the range.
#[test]
fn huge_disposition_ranges_cost_little_cpu() {
    let mut b = Bench::start("disposition-ranges");
    // The broker's unsettled deliveries to the attacker, spread out: 16 held unsettled, each followed by
    // 4,000 pre-settled ones on another link of the same session, so the held ones span 64,000 delivery-ids.
    const HELD: u32 = 16;
    const BETWEEN: u32 = 4_000;
    let held_q = b.queue("held");
    let bulk_q = b.queue("bulk");
    feed(b.port(), &held_q, HELD).expect("feeds the held queue");
    feed(b.port(), &bulk_q, HELD * BETWEEN).expect("feeds the bulk queue");
    let mut p = Peer::connect(b.port());
    p.open();
    let theirs = p.begin(0).expect("begin");
    let held = p
        .attach_receiver(0, 0, "held", &held_q, false)
        .expect("attach");
    let bulk = p
        .attach_receiver(0, 1, "bulk", &bulk_q, true)
        .expect("attach");
    let mut counts = [
        held.initial_delivery_count.unwrap_or(0),
        bulk.initial_delivery_count.unwrap_or(0),
    ];
    let mut incoming = theirs.next_outgoing_id;
    let mut held_ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    'spread: for _ in 0..HELD {
        for (link, (theirs_handle, credit)) in [(held.handle, 1), (bulk.handle, BETWEEN)]
            .into_iter()
            .enumerate()
        {
            let mut f = credit_flow(link as u32, counts[link], credit, false, 0);
            f.next_incoming_id = Some(incoming);
            p.send(0, f).expect("flow");
            let mut got = 0;
            while got < credit {
                let Some(f) = p.next_frame(deadline) else {
                    b.fail(format!("the broker stopped sending ({:?})", p.closed));
                    break 'spread;
                };
                if let Some((t, _)) = as_transfer(&f) {
                    incoming = incoming.wrapping_add(1);
                    if t.handle == theirs_handle {
                        got += 1;
                        if link == 0 {
                            held_ids.extend(t.delivery_id);
                        }
                    }
                }
            }
            counts[link] = counts[link].wrapping_add(credit);
        }
    }
    b.note(format!(
        "{} deliveries held unsettled, delivery-ids {:?}..={:?}",
        held_ids.len(),
        held_ids.first(),
        held_ids.last()
    ));
    // Only the dispositions count against the bounds, not filling and spreading the queues.
    b.rebase();
    // 64 KiB of dispositions: half over the widest unambiguous range (2^31 ids) without settling, so every
    // one of them meets all the held deliveries, then half settling first=0..=u32::MAX-1.
    let wide = frame(
        0,
        Disposition {
            role: Role::Receiver,
            first: 0,
            last: Some((1 << 31) - 1),
            settled: false,
            state: None,
            batchable: false,
        },
    );
    let wide_count = (32 * 1024) / wide.len();
    let mut bytes: Vec<u8> = wide
        .iter()
        .copied()
        .cycle()
        .take(wide_count * wide.len())
        .collect();
    // 64 KiB of dispositions, each settling first=0..=u32::MAX-1.
    let one = frame(
        0,
        Disposition {
            role: Role::Receiver,
            first: 0,
            last: Some(u32::MAX - 1),
            settled: true,
            state: Some(DeliveryState::Accepted(Accepted {})),
            batchable: false,
        },
    );
    let count = (32 * 1024) / one.len();
    bytes.extend(one.iter().copied().cycle().take(count * one.len()));
    b.note(format!(
        "{wide_count} dispositions of {} bytes and {count} of {}",
        wide.len(),
        one.len()
    ));
    if let Err(e) = p.write(&bytes) {
        b.note(format!("write stopped: {e}"));
    }
    let synced = p.sync(Duration::from_secs(20));
    b.check(
        synced,
        "the broker did not get through the dispositions within 20 s",
    );
    b.check(
        p.errors.is_empty(),
        format!(
            "a legal (if wide) disposition range drew errors: {:?}",
            p.errors
        ),
    );
    // 2,820 dispositions over 16 live deliveries are milliseconds of work; a second means the broker walks the
    // 60,000-id span (or the range) for each one (2.2 s of CPU in a debug build before the engine fix).
    b.finish(RSS_BOUND, Duration::from_secs(1));
}

/// 3. A delivery whose transfers all say `more`: once past the max-message-size the broker advertises on
///    its attach, the link is detached with `message-size-exceeded`.
#[test]
fn endless_multi_frame_delivery_hits_the_message_size_limit() {
    let mut b = Bench::start("endless-delivery");
    let queue = b.queue("q");
    let mut p = Peer::connect(b.port());
    p.open();
    p.begin(0).expect("begin");
    let (theirs, _) = p.attach_sender(0, 0, "endless", &queue).expect("attach");
    let advertised = theirs.max_message_size.filter(|&n| n > 0);
    b.check(
        advertised.is_some(),
        format!(
            "the broker's attach advertises no max-message-size ({:?})",
            theirs.max_message_size
        ),
    );
    b.note(format!("max-message-size {:?}", theirs.max_message_size));
    // Past the advertised limit by a few frames; 96 MiB when there is none (more than the RSS bound, so a
    // broker that buffers without limit fails on memory too).
    const CHUNK: usize = 60_000;
    let budget = advertised.map_or(96 * MIB, |n| {
        n.saturating_add(4 * CHUNK as u64).min(256 * MIB)
    });
    let piece = vec![0x5a; CHUNK];
    let mut sent = 0u64;
    let mut first = true;
    while sent < budget && p.errors.is_empty() && !b.tripped() {
        let t = if first {
            Transfer {
                more: true,
                ..small_transfer(0, 0, false)
            }
        } else {
            Transfer {
                handle: 0,
                more: true,
                ..Transfer::default()
            }
        };
        first = false;
        if let Err(e) = p.write(&transfer_frame(0, t, &piece)) {
            b.note(format!("write stopped: {e}"));
            break;
        }
        sent += CHUNK as u64;
        // Take in what the broker sent so far (e.g. the detach) without waiting.
        let _ = p.drain_until(Duration::ZERO, |_| false);
    }
    b.note(format!("{} of payload written", mib(sent)));
    let _ = p.wait_error(Duration::from_secs(5));
    b.expect_condition(
        &p.errors,
        &[ErrorCondition::MessageSizeExceeded],
        "an endless delivery",
    );
    // The broker may hold the partial message and a copy of it while it decides.
    let bound = RSS_BOUND + 2 * advertised.unwrap_or(0).min(256 * MIB);
    b.finish(bound, CPU_BOUND);
}

/// 4. A sender that ignores credit: 20,000 small pre-settled transfers in one write. The link (or session)
///    ends with `transfer-limit-exceeded` (or `window-violation`), and the queue takes far fewer.
#[test]
fn transfers_without_credit_are_refused() {
    let mut b = Bench::start("no-credit");
    let queue = b.queue("q");
    let mut p = Peer::connect(b.port());
    p.open();
    p.begin(0).expect("begin");
    let (_, credit) = p.attach_sender(0, 0, "greedy", &queue).expect("attach");
    b.note(format!("credit granted {credit}"));
    let body = data_section(b"greedy");
    let mut bytes = Vec::new();
    for i in 0..20_000u32 {
        bytes.extend(transfer_frame(0, small_transfer(0, i, true), &body));
    }
    b.note(format!("20000 transfers in {} bytes", bytes.len()));
    if let Err(e) = p.write(&bytes) {
        b.note(format!("write stopped: {e}"));
    }
    let synced = p.sync(Duration::from_secs(20));
    b.check(
        synced,
        "the broker did not get through the transfers within 20 s",
    );
    let _ = p.wait_error(Duration::from_millis(200));
    b.expect_condition(
        &p.errors,
        &[
            ErrorCondition::TransferLimitExceeded,
            ErrorCondition::WindowViolation,
        ],
        "transfers without credit",
    );
    drop(p);
    match count_queue(b.port(), &queue, 30_000) {
        Ok(n) => {
            b.note(format!("{n} messages in the queue"));
            // The credit granted plus a session window's worth of tolerance at most.
            b.check(
                n <= 2_048,
                format!("{n} of 20000 transfers sent without credit were enqueued"),
            );
        }
        Err(e) => b.fail(format!("counting the queue: {e}")),
    }
    b.finish(RSS_BOUND, CPU_BOUND);
}

/// 5. 40,000 attaches with increasing handles on one session: the broker advertises a handle-max far below
///    u32::MAX and closes the connection with `framing-error` once a handle exceeds it.
#[test]
fn attaches_past_handle_max_close_the_connection() {
    let mut b = Bench::start("many-attaches");
    let queue = b.queue("q");
    let mut p = Peer::connect(b.port());
    p.open();
    let theirs = p.begin(0).expect("begin");
    b.note(format!("handle-max {}", theirs.handle_max));
    // It must be below the attack's 40,000 handles, or the attack is simply allowed.
    b.check(
        theirs.handle_max < 40_000,
        format!(
            "the broker's begin advertises handle-max {} (u32::MAX is {})",
            theirs.handle_max,
            u32::MAX
        ),
    );
    let mut written = 0;
    for chunk in 0..40u32 {
        let mut bytes = Vec::new();
        for h in chunk * 1000..(chunk + 1) * 1000 {
            bytes.extend(frame(0, attach(&format!("l{h}"), h, Role::Sender, &queue)));
        }
        if let Err(e) = p.write(&bytes) {
            b.note(format!("write stopped: {e}"));
            break;
        }
        written += 1000;
        if b.tripped() || p.closed.is_some() {
            break;
        }
        let _ = p.drain_until(Duration::ZERO, |_| false);
    }
    b.note(format!("{written} attaches written"));
    let synced = p.sync(Duration::from_secs(30));
    b.check(
        synced,
        "the broker did not get through the attaches within 30 s",
    );
    let _ = p.wait_error(Duration::from_millis(200));
    b.note(format!("{} frames back", p.stats.frames));
    b.expect_condition(
        &p.errors,
        &[ErrorCondition::FramingError],
        "handles past handle-max",
    );
    b.finish(RSS_BOUND, CPU_BOUND);
}

/// 6. 65,536 begins on increasing channels: the broker advertises a channel-max well below 65,535 and
///    closes the connection with `framing-error` once a channel exceeds it.
#[test]
fn begins_past_channel_max_close_the_connection() {
    let mut b = Bench::start("many-begins");
    let mut p = Peer::connect(b.port());
    let open = p.open();
    b.note(format!("channel-max {}", open.channel_max));
    b.check(
        open.channel_max < u16::MAX,
        format!(
            "the broker's open advertises channel-max {}",
            open.channel_max
        ),
    );
    let mut written = 0u32;
    for chunk in 0..64u32 {
        let mut bytes = Vec::new();
        for c in chunk * 1024..(chunk + 1) * 1024 {
            bytes.extend(frame(c as u16, our_begin()));
        }
        if let Err(e) = p.write(&bytes) {
            b.note(format!("write stopped: {e}"));
            break;
        }
        written += 1024;
        if b.tripped() || p.closed.is_some() {
            break;
        }
        let _ = p.drain_until(Duration::ZERO, |_| false);
    }
    b.note(format!("{written} begins written"));
    let closed_or_error = p.wait_error(Duration::from_secs(30)).is_some() || p.closed.is_some();
    b.check(closed_or_error, "no close within 30 s of the last begin");
    b.note(format!("{} frames back", p.stats.frames));
    b.expect_condition(
        &p.errors,
        &[ErrorCondition::FramingError],
        "channels past channel-max",
    );
    b.finish(RSS_BOUND, CPU_BOUND);
}

/// 7. A legitimate peer the limits must not catch: one delivery from the broker held unsettled while 70,000
///    pre-settled ones pass it both ways (sent within credit, received within our credit), then one more
///    unsettled send; no error, every message arrives, and the held one still settles.
#[test]
fn a_legitimate_peer_with_a_held_delivery_is_not_refused() {
    let mut b = Bench::start("legitimate");
    let held_q = b.queue("held");
    let bulk_q = b.queue("bulk");
    const N: u32 = 70_000;
    // One message to hold.
    let mut p = Peer::connect(b.port());
    p.open();
    let theirs = p.begin(0).expect("begin");
    let (held_in, _) = p.attach_sender(0, 0, "held-in", &held_q).expect("attach");
    let _ = held_in;
    let mut next_out = 0u32; // our session's next transfer-id
    let mut delivery_id = 0u32; // our next delivery-id
    p.write(&transfer_frame(
        0,
        small_transfer(0, delivery_id, false),
        &data_section(b"held"),
    ))
    .expect("send");
    next_out += 1;
    delivery_id += 1;
    // Receive it unsettled and keep it.
    let held = p
        .attach_receiver(0, 1, "held-out", &held_q, false)
        .expect("attach");
    let mut f = credit_flow(
        1,
        held.initial_delivery_count.unwrap_or(0),
        1,
        false,
        next_out,
    );
    f.next_incoming_id = Some(theirs.next_outgoing_id);
    p.send(0, f).expect("flow");
    let held_id = p
        .expect(Instant::now() + WAIT, |f| {
            as_transfer(f)
                .filter(|(t, _)| t.handle == held.handle)
                .and_then(|(t, _)| t.delivery_id)
        })
        .expect("the held delivery arrives");
    // A pre-settled consumer of the bulk queue with credit for everything, and a producer into it.
    let out = p
        .attach_receiver(0, 2, "bulk-out", &bulk_q, true)
        .expect("attach");
    let mut f = credit_flow(
        2,
        out.initial_delivery_count.unwrap_or(0),
        N,
        false,
        next_out,
    );
    f.next_incoming_id = Some(theirs.next_outgoing_id);
    p.send(0, f).expect("flow");
    let (inn, credit) = p.attach_sender(0, 3, "bulk-in", &bulk_q).expect("attach");
    // Link credit as the broker states it: its delivery-count + link-credit, minus what we sent.
    let mut limit = credit; // delivery-count starts at our initial 0
    let mut sent = 0u32;
    let mut received = 0u32;
    let body = data_section(b"bulk");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut stalled = false;
    while sent < N || received < N {
        if sent < N && sent < limit {
            let n = (limit - sent).min(N - sent).min(500);
            let mut bytes = Vec::new();
            for _ in 0..n {
                bytes.extend(transfer_frame(
                    0,
                    small_transfer(3, delivery_id, true),
                    &body,
                ));
                delivery_id = delivery_id.wrapping_add(1);
                next_out = next_out.wrapping_add(1);
            }
            if let Err(e) = p.write(&bytes) {
                b.fail(format!("write failed after {sent} messages: {e}"));
                break;
            }
            sent += n;
        }
        let Some(f) = p.next_frame(deadline) else {
            stalled = true;
            break;
        };
        if let Some(fl) = as_flow(&f) {
            if fl.handle == Some(inn.handle) {
                if let (Some(dc), Some(c)) = (fl.delivery_count, fl.link_credit) {
                    limit = limit.max(dc.wrapping_add(c));
                }
            }
        } else if let Some((t, _)) = as_transfer(&f) {
            if t.handle == out.handle && !t.more {
                received += 1;
            }
        }
        if !p.errors.is_empty() {
            break;
        }
    }
    b.note(format!("{sent} sent, {received} received"));
    b.check(
        !stalled,
        format!("stalled after {sent} sent and {received} received (no frame for 60 s)"),
    );
    b.check(
        sent == N && received == N,
        format!("{sent} of {N} sent and {received} of {N} received"),
    );
    // One more unsettled send after the pre-settled run: it must be accepted.
    p.write(&transfer_frame(
        0,
        small_transfer(3, delivery_id, false),
        &data_section(b"last"),
    ))
    .unwrap_or_else(|e| b.fail(format!("the last send: {e}")));
    let last_id = delivery_id;
    let accepted = p.expect(Instant::now() + WAIT, |f| {
        as_disposition(f)
            .filter(|d| d.role == Role::Receiver && covers(d, last_id))
            .map(|d| d.state.clone())
    });
    b.check(
        matches!(accepted, Some(Some(DeliveryState::Accepted(_)))),
        format!("the last unsettled send got {accepted:?}, not accepted"),
    );
    // Settle the held delivery, close its link, and check it left the queue (not redelivered).
    p.send(
        0,
        Disposition {
            role: Role::Receiver,
            first: held_id,
            last: None,
            settled: true,
            state: Some(DeliveryState::Accepted(Accepted {})),
            batchable: false,
        },
    )
    .unwrap_or_else(|e| b.fail(format!("settling the held delivery: {e}")));
    p.send(
        0,
        Detach {
            handle: 1,
            closed: true,
            error: None,
        },
    )
    .unwrap_or_else(|e| b.fail(format!("closing the held link: {e}")));
    b.check(p.sync(WAIT), "the broker did not answer after the settle");
    b.check(
        p.errors.is_empty(),
        format!("a legitimate peer got errors: {:?}", p.errors),
    );
    match count_queue(b.port(), &held_q, 10) {
        Ok(n) => b.check(
            n == 0,
            format!("the held delivery went back to its queue ({n} there) instead of settling"),
        ),
        Err(e) => b.fail(format!("counting the held queue: {e}")),
    }
    p.close();
    b.finish(RSS_BOUND, Duration::from_secs(20));
}

/// 8. Frame headers that claim a large size, followed by only 8 bytes, held on 500 connections: the broker
///    keeps what arrived, not what was claimed; a size past its max-frame-size draws `framing-error`.
#[test]
fn frames_claiming_a_large_size_reserve_only_what_arrived() {
    let mut b = Bench::start("claimed-size");
    let mut oversize = Peer::connect(b.port());
    let open = oversize.open();
    let max = open.max_frame_size;
    b.note(format!("max-frame-size {max}"));
    let mut bytes = raw_frame_header(u32::MAX, 0).to_vec();
    bytes.extend([0u8; 8]);
    let _ = oversize.write(&bytes);
    let _ = oversize.wait_error(WAIT);
    b.expect_condition(
        &oversize.errors,
        &[ErrorCondition::FramingError],
        "a frame of u32::MAX bytes",
    );
    // 500 connections claiming the largest frame allowed (capped at 16 MiB), each sending 8 bytes of it.
    let claim = max.min(16 << 20);
    let mut held = Vec::new();
    for i in 0..500 {
        let Ok(mut s) = connect_raw(b.port()) else {
            b.fail(format!("connection {i} refused"));
            break;
        };
        let mut bytes = b"AMQP\x00\x01\x00\x00".to_vec();
        bytes.extend(frame(0, our_open()));
        bytes.extend(raw_frame_header(claim, 0));
        bytes.extend([0u8; 8]);
        if s.write_all(&bytes).is_err() {
            b.fail(format!("connection {i}: write failed"));
        }
        held.push(s);
    }
    // The broker has read every connection once each answered with its open.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answered = 0;
    for s in &held {
        if read_some(s, deadline) {
            answered += 1;
        }
    }
    b.note(format!(
        "{answered} of 500 connections answered, claiming {claim} bytes each"
    ));
    b.finish(32 * MIB, CPU_BOUND);
    drop(held);
}

/// 9. A peer that can take only 512-byte frames and sends a 3 KB link name, a 3 KB address and a message the
///    broker cannot decode (a 3 KB descriptor, which an error description would echo): every frame the broker
///    sends is at most 512 bytes.
#[test]
fn a_small_max_frame_size_is_respected_in_every_reply() {
    let mut b = Bench::start("small-frames");
    let mut p = Peer::connect(b.port());
    p.open_with(Open {
        max_frame_size: 512,
        ..our_open()
    })
    .expect("open");
    p.begin(0).expect("begin");
    let long_name: String = "n".repeat(3000);
    let long_address = format!("{}-{}", b.queue("q"), "a".repeat(3000));
    p.send(0, attach(&long_name, 0, Role::Sender, &long_address))
        .expect("attach");
    // Credit, or whatever the broker says instead.
    let credit = p.expect(Instant::now() + WAIT, |f| {
        as_flow(f).and_then(|fl| fl.link_credit.filter(|&c| c > 0))
    });
    b.note(format!("credit {credit:?}"));
    if credit.is_some() {
        // A described value with a 3 KB symbolic descriptor where a section should be.
        let mut payload = vec![0x00, 0xb3];
        let sym = "x".repeat(3000);
        payload.extend((sym.len() as u32).to_be_bytes());
        payload.extend(sym.as_bytes());
        payload.push(0x40);
        let _ = p.write(&transfer_frame(0, small_transfer(0, 0, false), &payload));
        let _ = p.drain_until(WAIT, |f| as_disposition(f).is_some());
    }
    let _ = p.send(0, nucleon_protocol::frame::Close { error: None });
    p.wait_closed(WAIT);
    b.note(format!(
        "{} frames, largest {} bytes; errors {:?}",
        p.stats.frames,
        p.stats.max_frame,
        p.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()
    ));
    b.check(
        p.stats.max_frame <= 512,
        format!(
            "the broker sent a frame of {} bytes to a peer whose max-frame-size is 512",
            p.stats.max_frame
        ),
    );
    b.finish(RSS_BOUND, CPU_BOUND);
}

/// 10. An `open` asking for a 1 ms idle timeout: the broker refuses it (`resource-limit-exceeded`) or
///     heartbeats no more often than its floor, fewer than 100 empty frames a second.
#[test]
fn a_tiny_idle_timeout_does_not_make_the_broker_spin() {
    let mut b = Bench::start("tiny-idle-timeout");
    let mut p = Peer::connect(b.port());
    p.open_with(Open {
        idle_time_out: Some(1),
        ..our_open()
    })
    .expect("open");
    let start = Instant::now();
    let deadline = start + Duration::from_secs(1);
    while p.next_frame(deadline).is_some() {}
    let refused = p
        .errors
        .iter()
        .any(|e| e.condition == ErrorCondition::ResourceLimitExceeded);
    b.note(format!(
        "{} empty frames in {:.2?}; errors {:?}",
        p.stats.empty_frames,
        start.elapsed(),
        p.errors.iter().map(|e| e.to_string()).collect::<Vec<_>>()
    ));
    b.check(
        refused || p.stats.empty_frames < 100,
        format!(
            "{} heartbeats in 1 s and no resource-limit-exceeded",
            p.stats.empty_frames
        ),
    );
    drop(p);
    b.finish(RSS_BOUND, CPU_BOUND);
}

/// 11a. A begin and two attaches with the same handle in one write: the session ends with `handle-in-use`.
#[test]
fn a_duplicate_handle_in_the_first_write_ends_the_session() {
    let mut b = Bench::start("handle-in-use");
    let queue = b.queue("q");
    let mut p = Peer::connect(b.port());
    p.open();
    let mut bytes = frame(0, our_begin());
    bytes.extend(frame(0, attach("first", 0, Role::Sender, &queue)));
    bytes.extend(frame(0, attach("second", 0, Role::Sender, &queue)));
    expect_session_end(
        b,
        p,
        &bytes,
        ErrorCondition::HandleInUse,
        "a duplicate handle",
    );
}

/// Writes `bytes` (a begin and what breaks a session rule) and expects an `end` with `condition`, nothing more.
fn expect_session_end(
    mut b: Bench,
    mut p: Peer,
    bytes: &[u8],
    condition: ErrorCondition,
    what: &str,
) {
    p.write(bytes).expect("writes");
    let _ = p.wait_error(WAIT);
    b.expect_condition(&p.errors, &[condition], what);
    b.check(
        p.errors.first().is_none_or(|e| e.kind == "end"),
        format!("expected an end, got {:?}", p.errors.first()),
    );
    drop(p);
    b.finish(RSS_BOUND, CPU_BOUND);
}

/// 11b. A begin and a transfer on a handle never attached, in one write: the session ends with
///      `unattached-handle`.
#[test]
fn a_transfer_on_an_unattached_handle_ends_the_session() {
    let b = Bench::start("unattached-handle");
    let mut p = Peer::connect(b.port());
    p.open();
    let mut bytes = frame(0, our_begin());
    bytes.extend(transfer_frame(
        0,
        small_transfer(7, 0, true),
        &data_section(b"?"),
    ));
    expect_session_end(
        b,
        p,
        &bytes,
        ErrorCondition::UnattachedHandle,
        "a transfer on an unattached handle",
    );
}

/// 12. 3,000 connections that send a protocol header and nothing else: the broker stays up with bounded
///     memory, serves a normal client meanwhile, and closes them once its open timeout expires.
#[test]
fn silent_connections_are_bounded_and_timed_out() {
    const N: usize = 3_000;
    /// RSS growth allowed for 3,000 idle connections: 64 KiB each, one read buffer's worth (about 38 KiB each
    /// was measured; #18 is to bring an idle connection down to Proton C's 0.9 KB).
    const RSS_FOR_IDLE: u64 = N as u64 * 64 * 1024;
    /// The open timeout is 10 s by default; leave room for a loaded machine.
    const CLOSE_WITHIN: Duration = Duration::from_secs(60);
    ensure_open_files(2 * N as u64 + 1_000);
    // Every connection here comes from 127.0.0.1, and the broker admits 1,000 per client address by default
    // (that limit has its own test, runtime_listener_limits.rs): this one measures what idle connections
    // cost, so the broker admits all of them and the normal client besides.
    let config = std::env::temp_dir().join(format!("nucleon-silent-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        format!("[limits]\nmax_connections_per_address = {}\n", N + 100),
    )
    .expect("writes the config");
    let config_arg = config.to_string_lossy().into_owned();
    let mut b = Bench::start_with("silent-connections", &["--config", &config_arg]);
    let _ = std::fs::remove_file(&config);
    let started = Instant::now();
    let mut held = Vec::with_capacity(N);
    for i in 0..N {
        match connect_raw(b.port()) {
            Ok(mut s) => {
                if s.write_all(b"AMQP\x00\x01\x00\x00").is_err() {
                    b.fail(format!("connection {i}: write failed"));
                }
                held.push(s);
            }
            Err(e) => {
                b.fail(format!("connection {i} refused: {e}"));
                break;
            }
        }
    }
    // Every connection is accepted and read once its header is answered.
    let deadline = Instant::now() + Duration::from_secs(30);
    let answered = held.iter().filter(|s| read_some(s, deadline)).count();
    b.note(format!(
        "{answered} of {} connections answered in {:.1?}",
        held.len(),
        started.elapsed()
    ));
    let peak = usage(b.pid).map_or(0, |u| u.rss);
    b.note(format!("RSS with all held {}", mib(peak)));
    let queue = b.queue("meanwhile");
    if let Err(e) = normal_round_trip(b.port(), &queue) {
        b.fail(format!(
            "a normal client while {N} connections are held: {e}"
        ));
    }
    // The first ten must be closed by the broker: one bounded loop reading them until EOF.
    let deadline = started + CLOSE_WITHIN;
    let mut closed = 0;
    for s in held.iter().take(10) {
        if read_until_eof(s, deadline) {
            closed += 1;
        }
    }
    b.note(format!(
        "{closed} of the first 10 closed by the broker after {:.1?}",
        started.elapsed()
    ));
    b.check(
        closed == 10,
        format!(
            "only {closed} of the first 10 silent connections were closed within {CLOSE_WITHIN:?}"
        ),
    );
    b.finish(RSS_FOR_IDLE, CPU_BOUND);
    drop(held);
}

// ----- raw sockets, for the many-connection attacks (no reader thread each) -----

fn connect_raw(port: u16) -> std::io::Result<TcpStream> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let s = TcpStream::connect_timeout(&addr, WAIT)?;
    s.set_write_timeout(Some(WAIT))?;
    Ok(s)
}

/// Reads at least one byte from `s` before `deadline`; true if some came (or the broker closed it).
fn read_some(mut s: &TcpStream, deadline: Instant) -> bool {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
        return false;
    }
    let mut buf = [0u8; 1024];
    s.read(&mut buf).is_ok()
}

/// Reads `s` until the broker closes it (EOF or reset) or `deadline` passes; true if it closed.
fn read_until_eof(mut s: &TcpStream, deadline: Instant) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || s.set_read_timeout(Some(left)).is_err() {
            return false;
        }
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}
