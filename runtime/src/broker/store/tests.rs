//! The store's tests: small segments (64 KiB) in fresh directories under the system temp dir.

use std::collections::BTreeMap;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::record::{self, Slot, HEADER_SIZE};
use super::*;

const SEG: u64 = 64 << 10;

/// A fresh directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "nucleon-store-{name}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options(dir: &Path) -> StoreOptions {
    StoreOptions {
        segment_size: SEG,
        ..StoreOptions::new(dir)
    }
}

/// Waits (through `when_durable`, as the broker does) until `ticket` is durable.
fn wait(store: &Store, ticket: Ticket) {
    let (tx, rx) = mpsc::channel();
    store.when_durable(ticket, move || {
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("woken within 10 s");
    assert!(store.durable(ticket).unwrap());
}

/// What a recovery found, by queue name: (pid, bytes, delivered, released) per message.
type Found = BTreeMap<String, Vec<(u64, Vec<u8>, u32, u32)>>;

fn found(r: &Recovered) -> Found {
    r.queues
        .iter()
        .map(|q| {
            let msgs = q
                .messages
                .iter()
                .map(|m| (m.pid, m.bytes.to_vec(), m.delivered, m.released))
                .collect();
            (q.name.clone(), msgs)
        })
        .collect()
}

fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut v = format!("message {i} ").into_bytes();
    v.resize(len.max(v.len()), b'.');
    v
}

/// The segment files, by sequence number.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            segment_seq(p.file_name()?.to_str()?).map(|_| p)
        })
        .collect();
    v.sort();
    v
}

/// The offsets of the valid records of a segment file.
fn record_offsets(path: &Path) -> Vec<usize> {
    let buf = std::fs::read(path).unwrap();
    let header = record::Header::decode(&buf).unwrap();
    let key = record::record_key(header.secret, header.seq);
    let mut offs = Vec::new();
    let mut off = HEADER_SIZE;
    while let Slot::Valid(_, size) = record::slot(&buf, off, key) {
        offs.push(off);
        off += size;
    }
    offs
}

fn flip(path: &Path, at: usize) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at as u64).unwrap();
    f.write_all_at(&[b[0] ^ 0x40], at as u64).unwrap();
}

#[test]
fn sync_policy_parses() {
    assert_eq!("batch".parse(), Ok(SyncPolicy::Batch));
    assert_eq!("always".parse(), Ok(SyncPolicy::Always));
    assert_eq!("off".parse(), Ok(SyncPolicy::Off));
    let err = "sometimes".parse::<SyncPolicy>().unwrap_err();
    assert!(err.contains("batch, always or off"), "{err}");
}

/// Declares, appends (over several segments), acks some, counts deliveries, deletes a queue; closes and
/// reopens: exactly the live messages with their counts, in order, and ids are not reused.
fn round_trip(sync: SyncPolicy) {
    let dir = TempDir::new("round-trip");
    let opts = StoreOptions {
        sync,
        ..options(&dir.0)
    };
    let (store, rec) = Store::open(opts.clone()).unwrap();
    assert!(rec.queues.is_empty() && rec.skipped.is_empty());
    let q1 = store.declare_queue("q1", &QueueKind::Queue).unwrap();
    let topic = QueueKind::Subscription {
        topic: "news".into(),
    };
    let q2 = store.declare_queue("news/sub", &topic).unwrap();
    let q3 = store.declare_queue("gone", &QueueKind::Queue).unwrap();
    let mut expect: Found = BTreeMap::new();
    let mut last = 0;
    for i in 0..1500u64 {
        let q = [q1, q2, q3][i as usize % 3];
        let bytes = payload(i, 100);
        let (pid, ticket) = store.append_message(q, &bytes).unwrap();
        assert!(ticket > last, "tickets grow");
        last = ticket;
        if sync == SyncPolicy::Always {
            assert!(store.durable(ticket).unwrap(), "Always: durable on return");
        }
        let name = ["q1", "news/sub", "gone"][i as usize % 3];
        if i % 5 == 0 {
            store.ack(pid);
            continue;
        }
        let (mut d, mut r) = (0, 0);
        if i % 7 == 0 {
            store.delivered(pid);
            store.delivered(pid);
            store.released(pid);
            (d, r) = (2, 1);
        }
        if name != "gone" {
            expect
                .entry(name.into())
                .or_default()
                .push((pid, bytes, d, r));
        }
    }
    store.ack(u64::MAX); // unknown: ignored
    store.delete_queue(q3);
    wait(&store, last);
    assert!(
        store.stats().segments > 3,
        "spans segments: {:?}",
        store.stats()
    );
    let live = store.stats().live_messages;
    assert_eq!(live, expect.values().map(Vec::len).sum::<usize>());
    store.close();
    store.close(); // idempotent

    let (store, rec) = Store::open(opts.clone()).unwrap();
    assert_eq!(found(&rec), expect);
    let qids: Vec<u64> = rec.queues.iter().map(|q| q.qid).collect();
    assert_eq!(qids, vec![q1, q2]);
    assert_eq!(rec.queues[1].kind, topic);
    let max_pid = expect.values().flatten().map(|m| m.0).max().unwrap();
    let q4 = store.declare_queue("q4", &QueueKind::Queue).unwrap();
    assert!(q4 > q3, "qids not reused");
    let (pid, t) = store.append_message(q4, b"after").unwrap();
    assert!(pid > max_pid, "pids not reused");
    wait(&store, t);
    drop(store);
    let (_store, rec) = Store::open(opts).unwrap();
    assert_eq!(rec.queues.len(), 3);
    assert_eq!(rec.queues[2].messages[0].bytes.as_ref(), b"after");
}

#[test]
fn round_trip_batch() {
    round_trip(SyncPolicy::Batch);
}

#[test]
fn round_trip_always() {
    round_trip(SyncPolicy::Always);
}

#[test]
fn round_trip_off() {
    round_trip(SyncPolicy::Off);
}

#[test]
fn group_commit_many_producers() {
    let dir = TempDir::new("group-commit");
    let (store, _) = Store::open(options(&dir.0)).unwrap();
    let q = store.declare_queue("q", &QueueKind::Queue).unwrap();
    const THREADS: usize = 8;
    const EACH: usize = 300;
    let barrier = std::sync::Barrier::new(THREADS);
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (store, barrier) = (store.clone(), &barrier);
            s.spawn(move || {
                barrier.wait();
                let mut last = 0;
                for i in 0..EACH {
                    let (_, ticket) = store
                        .append_message(q, &payload((t * EACH + i) as u64, 64))
                        .unwrap();
                    assert!(ticket > last);
                    last = ticket;
                    wait(&store, ticket);
                }
            });
        }
    });
    drop(store);
    let (_store, rec) = Store::open(options(&dir.0)).unwrap();
    let msgs = &rec.queues[0].messages;
    assert_eq!(msgs.len(), THREADS * EACH);
    assert!(msgs.windows(2).all(|w| w[0].pid < w[1].pid));
}

#[test]
fn compaction_bounds_disk_and_keeps_the_stuck_message() {
    let dir = TempDir::new("compaction");
    let (store, _) = Store::open(options(&dir.0)).unwrap();
    let q = store.declare_queue("q", &QueueKind::Queue).unwrap();
    let (stuck, _) = store.append_message(q, b"stuck").unwrap();
    store.delivered(stuck);
    let (copied_then_acked, _) = store.append_message(q, b"acked later").unwrap();
    let mut max_segments = 0;
    let mut window = std::collections::VecDeque::new();
    for i in 0..6000u64 {
        let (pid, ticket) = store.append_message(q, &payload(i, 200)).unwrap();
        window.push_back(pid);
        if window.len() > 10 {
            store.ack(window.pop_front().unwrap());
        }
        wait(&store, ticket);
        let stats = store.stats();
        max_segments = max_segments.max(stats.segments);
        if i == 3000 {
            // Long since copied forward at least once: its ack must win over every copy.
            store.ack(copied_then_acked);
        }
    }
    for pid in window {
        store.ack(pid);
    }
    // 6000 records of ~240 bytes is ~22 segments written; compaction keeps a handful.
    assert!(max_segments <= 6, "segments peaked at {max_segments}");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = store.stats();
        if s.disk_bytes <= 2 * s.live_bytes + 3 * SEG || Instant::now() > deadline {
            assert!(s.disk_bytes <= 2 * s.live_bytes + 3 * SEG, "{s:?}");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(store);
    let (_store, rec) = Store::open(options(&dir.0)).unwrap();
    let msgs = &rec.queues[0].messages;
    assert_eq!(msgs.len(), 1, "only the stuck message");
    assert_eq!(
        (msgs[0].pid, msgs[0].bytes.as_ref()),
        (stuck, &b"stuck"[..])
    );
    assert_eq!(msgs[0].delivered, 1, "its count survives the copies");
    assert!(segments(&dir.0).len() <= 4);
}

#[test]
fn torn_tail_is_dropped_and_the_journal_goes_on() {
    let dir = TempDir::new("torn");
    let (store, _) = Store::open(options(&dir.0)).unwrap();
    let q = store.declare_queue("q", &QueueKind::Queue).unwrap();
    let mut pids = Vec::new();
    for i in 0..20 {
        let (pid, t) = store.append_message(q, &payload(i, 300)).unwrap();
        wait(&store, t);
        pids.push(pid);
    }
    drop(store);
    // The last record's end garbled, as a write cut short would leave it.
    let last = segments(&dir.0).pop().unwrap();
    let off = *record_offsets(&last).last().unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    f.write_all_at(&[0xaa; 16], off as u64 + 100).unwrap();
    drop(f);

    let (store, rec) = Store::open(options(&dir.0)).unwrap();
    let got: Vec<u64> = rec.queues[0].messages.iter().map(|m| m.pid).collect();
    assert_eq!(got, pids[..19], "only the torn record is lost");
    let (pid, t) = store.append_message(q, b"after the tear").unwrap();
    wait(&store, t);
    drop(store);
    let (_store, rec) = Store::open(options(&dir.0)).unwrap();
    let msgs = &rec.queues[0].messages;
    assert_eq!(msgs.len(), 20);
    assert_eq!(
        (msgs[19].pid, msgs[19].bytes.as_ref()),
        (pid, &b"after the tear"[..])
    );
}

/// Writes `n` messages of 300 bytes into a fresh store in `dir`, closed after.
fn fill(dir: &Path, n: u64) -> Vec<u64> {
    let (store, _) = Store::open(options(dir)).unwrap();
    let q = store.declare_queue("q", &QueueKind::Queue).unwrap();
    let mut pids = Vec::new();
    let mut last = 0;
    for i in 0..n {
        let (pid, t) = store.append_message(q, &payload(i, 300)).unwrap();
        pids.push(pid);
        last = t;
    }
    wait(&store, last);
    pids
}

fn corrupt_case(name: &str, n: u64, segment: usize, record: impl Fn(usize) -> usize) {
    let dir = TempDir::new(name);
    let pids = fill(&dir.0, n);
    let segs = segments(&dir.0);
    let path = &segs[segment];
    let offs = record_offsets(path);
    let off = offs[record(offs.len())];
    flip(path, off + 40);
    match Store::open(options(&dir.0)) {
        Err(e @ StoreError::Corrupt { .. }) => {
            let StoreError::Corrupt { file, offset, .. } = &e else {
                unreachable!()
            };
            assert_eq!((file, *offset), (path, off as u64));
            let text = e.to_string();
            assert!(text.contains(&path.display().to_string()) && text.contains("--salvage"));
        }
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
    let salvage = StoreOptions {
        salvage: true,
        ..options(&dir.0)
    };
    let (store, rec) = Store::open(salvage).unwrap();
    assert_eq!(rec.skipped.len(), 1, "{:?}", rec.skipped);
    assert!(
        rec.skipped[0].contains(&format!("offset {off}")),
        "{:?}",
        rec.skipped
    );
    let got: Vec<u64> = rec.queues[0].messages.iter().map(|m| m.pid).collect();
    assert_eq!(got.len(), pids.len() - 1, "all but the damaged one");
    drop(store);
    let (_store, rec) = Store::open(options(&dir.0)).unwrap();
    assert!(rec.skipped.is_empty());
    let again: Vec<u64> = rec.queues[0].messages.iter().map(|m| m.pid).collect();
    assert_eq!(again, got);
}

#[test]
fn flipped_byte_in_the_only_segment_is_corruption() {
    corrupt_case("corrupt-only", 20, 0, |n| n / 2);
}

#[test]
fn flipped_byte_in_a_non_last_segment_is_corruption() {
    // Its last record too: with nothing valid after it in that segment it would pass for a torn tail,
    // but only the last segment can have one.
    corrupt_case("corrupt-middle", 600, 1, |n| n / 2);
    corrupt_case("corrupt-end-of-middle", 600, 1, |n| n - 1);
}

#[test]
fn bad_header_of_the_last_segment() {
    let dir = TempDir::new("bad-header");
    let pids = fill(&dir.0, 600);
    let last = segments(&dir.0).pop().unwrap();
    let lost = record_offsets(&last).len();
    flip(&last, 20);
    match Store::open(options(&dir.0)) {
        Err(StoreError::Corrupt {
            file, offset: 0, ..
        }) => assert_eq!(file, last),
        other => panic!("expected Corrupt, got {:?}", other.map(|_| ())),
    }
    let salvage = StoreOptions {
        salvage: true,
        ..options(&dir.0)
    };
    let (store, rec) = Store::open(salvage).unwrap();
    assert_eq!(rec.skipped.len(), 1, "{:?}", rec.skipped);
    assert_eq!(rec.queues[0].messages.len(), pids.len() - lost);
    let (_, t) = store.append_message(rec.queues[0].qid, b"after").unwrap();
    wait(&store, t);
    drop(store);
    let (_store, rec) = Store::open(options(&dir.0)).unwrap();
    assert_eq!(rec.queues[0].messages.len(), pids.len() - lost + 1);
}

#[test]
fn missing_segment() {
    let dir = TempDir::new("missing");
    let pids = fill(&dir.0, 600);
    let segs = segments(&dir.0);
    assert!(segs.len() >= 3);
    let lost = record_offsets(&segs[1]).len();
    std::fs::remove_file(&segs[1]).unwrap();
    match Store::open(options(&dir.0)) {
        Err(e @ StoreError::MissingSegment { seq: 1, .. }) => {
            assert!(e.to_string().contains(&segment_name(1)), "{e}")
        }
        other => panic!("expected MissingSegment, got {:?}", other.map(|_| ())),
    }
    let salvage = StoreOptions {
        salvage: true,
        ..options(&dir.0)
    };
    let (store, rec) = Store::open(salvage).unwrap();
    assert_eq!(rec.skipped.len(), 1, "{:?}", rec.skipped);
    assert_eq!(rec.queues[0].messages.len(), pids.len() - lost);
    drop(store);
    let (_store, rec) = Store::open(options(&dir.0)).unwrap();
    assert_eq!(rec.queues[0].messages.len(), pids.len() - lost);
}

#[test]
fn write_through_puts_records_in_the_file_at_once() {
    let dir = TempDir::new("write-through");
    let (store, _) = Store::open(options(&dir.0)).unwrap();
    let q = store.declare_queue("q", &QueueKind::Queue).unwrap();
    let (pid, t) = store.append_message(q, b"m").unwrap();
    wait(&store, t);
    let seg = segments(&dir.0).pop().unwrap();
    assert_eq!(record_offsets(&seg).len(), 2, "declaration and message");
    // A delivered record alone waits up to 50 ms for the writer; write_through writes it now, as the
    // broker needs before the transfer leaves (a kill -9 from here on keeps it).
    store.delivered(pid);
    store.write_through();
    assert_eq!(record_offsets(&seg).len(), 3);
    drop(store);
    let (_store, rec) = Store::open(options(&dir.0)).unwrap();
    assert_eq!(rec.queues[0].messages[0].delivered, 1);
}

#[test]
fn second_open_is_locked() {
    let dir = TempDir::new("locked");
    let (store, _) = Store::open(options(&dir.0)).unwrap();
    match Store::open(options(&dir.0)) {
        Err(StoreError::Locked(p)) => assert_eq!(p, dir.0),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    store.close();
    let (_store, _) = Store::open(options(&dir.0)).unwrap();
}

#[test]
fn message_larger_than_a_segment_is_refused() {
    let dir = TempDir::new("too-large");
    let (store, _) = Store::open(options(&dir.0)).unwrap();
    let q = store.declare_queue("q", &QueueKind::Queue).unwrap();
    let big = vec![0u8; SEG as usize];
    assert!(matches!(
        store.append_message(q, &big),
        Err(StoreError::TooLarge { .. })
    ));
    let (_, t) = store.append_message(q, b"small").unwrap();
    wait(&store, t);
}

/// Fills the store until appends are refused as Full, acks all but the last few (acks still go in), then
/// checks that appends resume without a restart and that a reopen finds exactly what was not acked.
fn full_then_room_again(opts: StoreOptions) {
    let (store, _) = Store::open(opts.clone()).unwrap();
    let q = store.declare_queue("q", &QueueKind::Queue).unwrap();
    let mut accepted = Vec::new();
    let mut i = 0;
    loop {
        match store.append_message(q, &payload(i, 1000)) {
            Ok((pid, t)) => {
                wait(&store, t);
                accepted.push(pid);
            }
            Err(StoreError::Full) => break,
            Err(e) => panic!("{e}"),
        }
        i += 1;
        assert!(i < 100_000, "never full");
    }
    assert!(
        accepted.len() > 50,
        "{} accepted before full",
        accepted.len()
    );
    let kept: Vec<u64> = accepted[accepted.len() - 3..].to_vec();
    for pid in &accepted[..accepted.len() - 3] {
        store.ack(*pid);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut more = loop {
        match store.append_message(q, b"room again") {
            Ok((pid, t)) => {
                wait(&store, t);
                break vec![pid];
            }
            Err(StoreError::Full) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("no room after acks: {e} {:?}", store.stats()),
        }
    };
    for _ in 0..20 {
        let (pid, t) = store.append_message(q, b"and more").unwrap();
        wait(&store, t);
        more.push(pid);
    }
    drop(store);
    let (_store, rec) = Store::open(opts).unwrap();
    let got: Vec<u64> = rec.queues[0].messages.iter().map(|m| m.pid).collect();
    assert_eq!(got, [kept, more].concat());
}

#[test]
fn max_disk_behaves_as_a_full_disk() {
    let dir = TempDir::new("max-disk");
    full_then_room_again(StoreOptions {
        max_disk: Some(5 * SEG),
        ..options(&dir.0)
    });
}

#[test]
fn real_enospc_on_a_small_tmpfs() {
    let dir = TempDir::new("tmpfs");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&dir.0)
        .output();
    match mounted {
        Ok(out) if out.status.success() => {}
        Ok(out) => {
            println!(
                "skipped: mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return;
        }
        Err(e) => {
            println!("skipped: cannot run mount: {e}");
            return;
        }
    }
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(&dir.0);
    full_then_room_again(options(&dir.0));
}

#[test]
fn records_forged_in_a_payload_are_never_taken_for_real_ones() {
    let dir = TempDir::new("forged");
    let (store, _) = Store::open(options(&dir.0)).unwrap();
    let q = store.declare_queue("q", &QueueKind::Queue).unwrap();
    let mut last = 0;
    for i in 0..10 {
        last = store.append_message(q, &payload(i, 100)).unwrap().1;
    }
    // A producer's payload full of well-formed QueueDelete(q) records, checksummed with every key it might
    // guess (the segment's number, small numbers), at every alignment the payload may land on.
    let mut evil = Vec::new();
    for pad in 0..8 {
        evil.extend(std::iter::repeat_n(0x11u8, pad));
        for key in 0..64 {
            record::Rec::QueueDelete(q).encode(key, &mut evil);
        }
    }
    evil.extend_from_slice(&[0x22u8; 2000]);
    let (_, t) = store.append_message(q, &evil).unwrap();
    wait(&store, t.max(last));
    drop(store);
    // Its write cut short: the end of the record is zeros, its checksum fails.
    let seg = segments(&dir.0).pop().unwrap();
    let off = *record_offsets(&seg).last().unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.write_all_at(&vec![0u8; 1500], off as u64 + evil.len() as u64 - 1000)
        .unwrap();
    drop(f);
    // A torn tail, not corruption: the forged records do not verify, so nothing valid follows.
    let (_, recovered) = Store::open(options(&dir.0)).expect("a torn tail, not corruption");
    let queues: Vec<_> = recovered
        .queues
        .iter()
        .map(|q| (q.name.clone(), q.messages.len()))
        .collect();
    assert_eq!(queues, [("q".to_owned(), 10)], "no forged delete applied");
}
