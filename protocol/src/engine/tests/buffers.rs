//! The engine's buffers: input read straight into `input_buffer` and output written straight from
//! `pending_output`, in pieces of any size (partial frames, large multi-frame messages), with no buffer held
//! once the traffic stops (issue #18: an idle connection costs no buffer memory).

use bytes::BufMut;

use super::*;

/// Room offered to each simulated socket read, as the runtime offers.
const READ_ROOM: usize = 64 * 1024;

/// Moves bytes both ways through the direct buffer API until both engines are quiet: each side's output is
/// taken from `pending_output` `write` bytes at a time (`consume_output`), and the other side reads it
/// `read` bytes at a time into `input_buffer` (`process_input`). After each read a read that found nothing
/// follows, as when the socket has nothing more. Events go to the pair's event lists.
fn exchange(p: &mut Pair, write: usize, read: usize) {
    for _ in 0..1_000_000 {
        let mut progressed = false;
        while let Some(e) = p.client.poll_event() {
            p.client_events.push(e);
            progressed = true;
        }
        while let Some(e) = p.server.poll_event() {
            p.server_events.push(e);
            progressed = true;
        }
        for to_server in [true, false] {
            let (from, to) = if to_server {
                (&mut p.client, &mut p.server)
            } else {
                (&mut p.server, &mut p.client)
            };
            let mut wire = Vec::new();
            loop {
                let out = from.pending_output(p.now);
                if out.is_empty() {
                    break;
                }
                let n = out.len().min(write);
                wire.extend_from_slice(&out[..n]);
                from.consume_output(n, p.now);
            }
            for piece in wire.chunks(read) {
                to.input_buffer(READ_ROOM).put_slice(piece);
                to.process_input(p.now);
                to.input_buffer(READ_ROOM);
                to.process_input(p.now);
                progressed = true;
            }
        }
        if !progressed {
            return;
        }
    }
    panic!("the engines never went quiet");
}

#[test]
fn a_burst_read_and_written_in_pieces_arrives_whole_and_leaves_no_buffer() {
    for (write, read) in [(usize::MAX, 20_000), (1000, 7), (65_536, 65_536), (3, 1)] {
        let (mut p, _, (c, sv)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 100);
        let bodies: Vec<Bytes> = (0..20u8)
            .map(|i| Bytes::from(vec![i; 100 + 997 * usize::from(i)]))
            .collect();
        for (n, body) in bodies.iter().enumerate() {
            p.client_send(c, n as u64, body.clone());
        }
        exchange(&mut p, write, read);
        let got: Vec<Bytes> = deliveries(&p.server_events)
            .into_iter()
            .map(|(d, payload, _)| {
                assert_eq!(d.link, sv);
                payload
            })
            .collect();
        assert_eq!(got, bodies, "writes of {write}, reads of {read}");
        assert_eq!(p.client.buffer_capacity(), 0, "client, reads of {read}");
        assert_eq!(p.server.buffer_capacity(), 0, "server, reads of {read}");
    }
}

#[test]
fn a_large_message_over_many_frames_and_reads_arrives_whole() {
    let (mut p, _, (c, _)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 1);
    let body = Bytes::from((0..300_000u32).map(|i| i as u8).collect::<Vec<u8>>());
    p.client_send(c, 0, body.clone());
    exchange(&mut p, 10_000, 4093);
    let got = deliveries(&p.server_events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, body);
    assert_eq!(p.server.buffer_capacity(), 0);
}

#[test]
fn a_partial_frame_keeps_only_its_own_bytes() {
    let (mut p, _, (c, _)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 1);
    p.client_send(c, 0, Bytes::from(vec![5u8; 1000]));
    let frame = p.client.pending_output(p.now).to_vec();
    let n = frame.len();
    p.client.consume_output(n, p.now);
    assert_eq!(p.client.buffer_capacity(), 0, "all output taken");

    p.server.input_buffer(READ_ROOM).put_slice(&frame[..600]);
    p.server.process_input(p.now);
    assert_eq!(
        p.server.buffer_capacity(),
        600,
        "the room the read did not use is given back"
    );
    p.server.input_buffer(READ_ROOM);
    p.server.process_input(p.now);
    assert_eq!(p.server.buffer_capacity(), 600, "a read that found nothing");
    assert!(deliveries(&p.take_server_events()).is_empty());

    p.server.input_buffer(READ_ROOM).put_slice(&frame[600..]);
    p.server.process_input(p.now);
    p.drive();
    let got = deliveries(&p.server_events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, Bytes::from(vec![5u8; 1000]));
    assert_eq!(p.server.buffer_capacity(), 0);
}

#[test]
fn a_read_that_found_nothing_does_not_count_as_input() {
    let (mut p, _) = connected_with(|s| s.idle_timeout = Some(Duration::from_secs(10)));
    let deadline = p.server.poll_timeout().expect("an idle deadline");
    let later = p.now + Duration::from_secs(5);
    // A partial frame is waiting, and a read finds nothing more.
    p.server.input_buffer(READ_ROOM).put_slice(&[0, 0, 0]);
    p.server.process_input(p.now);
    p.server.input_buffer(READ_ROOM);
    p.server.process_input(later);
    assert_eq!(p.server.poll_timeout(), Some(deadline));
}

#[test]
fn output_written_in_part_stays_until_written_and_then_is_given_up() {
    let (mut p, _, (c, _)) = sender_with_credit(|_| {}, LinkConfig::sender("l", "q"), 2);
    p.client_send(c, 0, Bytes::from(vec![1u8; 5000]));
    let all = p.client.pending_output(p.now).to_vec();
    assert!(p.client.buffer_capacity() >= all.len());
    p.client.consume_output(1000, p.now);
    assert_eq!(p.client.output_len(), all.len() - 1000);
    assert_eq!(p.client.pending_output(p.now), &all[1000..]);
    // More output queues behind what is left.
    p.client_send(c, 1, Bytes::from(vec![2u8; 10]));
    let rest = p.client.pending_output(p.now).to_vec();
    assert_eq!(&rest[..all.len() - 1000], &all[1000..]);
    p.client.consume_output(rest.len() + 99, p.now);
    assert_eq!((p.client.output_len(), p.client.buffer_capacity()), (0, 0));
    assert!(p.client.pending_output(p.now).is_empty());
}

#[test]
fn what_an_open_leaves_in_the_engine_does_not_hold_the_input_buffer() {
    let mut p = pair_with(
        |c| c.offered_capabilities = vec![crate::codec::Symbol::from_static("x-cap")],
        |_| {},
    );
    p.client.open().unwrap();
    let hello = p.client.pending_output(p.now).to_vec();
    p.client.consume_output(hello.len(), p.now);
    // A read buffer too small to be trimmed after a small read, so it stays where it is while it is read.
    let buf = p.server.input_buffer(8 * 1024);
    let start = buf.as_ptr() as usize;
    let read_buffer = start..start + buf.capacity();
    buf.put_slice(&hello);
    p.server.process_input(p.now);
    let open = p.server.remote_open().expect("the open arrived");
    let capabilities = open.offered_capabilities.as_ref().expect("capabilities");
    assert_eq!(capabilities[0].as_str(), "x-cap");
    // The symbol shares the bytes of the frame it was decoded from: a copy of that frame, not the read buffer
    // (which would stay alive for as long as the connection, however big it is).
    let symbol = capabilities[0].as_bytes().as_ptr() as usize;
    assert!(!read_buffer.contains(&symbol));
}

#[test]
fn a_frame_larger_than_each_read_arrives_whole() {
    let big = |c: &mut ConnectionConfig| c.max_frame_size = 1 << 20;
    let mut p = pair_with(big, big);
    p.open();
    let s = p.begin();
    let (c, sv) = p.attach(s, LinkConfig::sender("l", "q"));
    p.server.add_credit(sv, 1).unwrap();
    p.drive();
    let body: Vec<u8> = (0..500_000u32).map(|i| i as u8).collect();
    p.client_send(c, 0, Bytes::from(body.clone()));
    let wire = p.client.pending_output(p.now).to_vec();
    p.client.consume_output(wire.len(), p.now);
    // One frame of about 500 KB, read 4 KiB at a time: the buffer grows past the read size.
    for piece in wire.chunks(4096) {
        p.server.input_buffer(4096).put_slice(piece);
        p.server.process_input(p.now);
    }
    p.drive();
    let got = deliveries(&p.server_events);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1, Bytes::from(body));
    assert_eq!(p.server.buffer_capacity(), 0);
}
