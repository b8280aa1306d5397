//! Store benchmark for the durable broker (#15).
//!
//! Measures, in one run, on the filesystem of `--dir`:
//! 1. raw `fdatasync` latency (4 KiB overwrite in a preallocated file, and 4 KiB append to a growing file);
//! 2. a minimal segment journal: records `[len u32][crc32c u32][payload]`, one `write` + one `fdatasync`
//!    per batch, in zero-filled preallocated segments (Artemis's design) and, for comparison, in segments
//!    that grow with each append;
//! 3. redb: insert the message, remove it on ack, one durable (`Durability::Immediate`) commit per batch.
//!
//! Both stores get the same group commit: N producer threads each submit one message and wait until the
//! batch holding it is on disk; one writer thread takes everything queued, commits it with one sync, and
//! wakes the producers of that batch. Every message also carries the ack of the message its producer sent
//! `LIVE / N` messages earlier (an ack record in the journal, a delete in redb), so about `LIVE` messages
//! are live at any time, as with consumers that keep up with a backlog.
//!
//! Usage: `nucleon-store-bench [--dir DIR] [--secs S] [--only STORE]` (STORE: a substring of a store's name). It makes a fresh directory under DIR (default: the
//! system temp dir), deletes it at the end, and prints markdown tables.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Messages live at any time (acks trail the inserts by this many, shared among the producers).
const LIVE: u64 = 10_000;
/// Most requests one commit takes.
const MAX_BATCH: usize = 4096;
/// Journal segment size.
const SEGMENT: u64 = 16 << 20;
const WARMUP: Duration = Duration::from_millis(500);

const REC_MSG: u8 = 1;
const REC_ACK: u8 = 2;

/// One producer's request: a message to store and, maybe, an earlier message to acknowledge.
struct Req {
    id: u64,
    ack: Option<u64>,
    done: SyncSender<()>,
}

trait Store: Send {
    /// Makes every request of `batch` durable with one sync.
    fn commit(&mut self, batch: &[Req], payload: &[u8]) -> Res<()>;
}

// ---------------------------------------------------------------------------------------------------------
// Segment journal prototype.

struct Journal {
    dir: PathBuf,
    file: File,
    seq: u64,
    pos: u64,
    buf: Vec<u8>,
    /// Ready, zero-filled segments made ahead by a background thread (None: segments grow on append).
    spares: Option<Receiver<(u64, File)>>,
    preallocator: Option<thread::JoinHandle<()>>,
}

impl Drop for Journal {
    fn drop(&mut self) {
        // Close the channel, then wait, so that no segment is being written when the case's directory goes.
        self.spares = None;
        if let Some(h) = self.preallocator.take() {
            let _ = h.join();
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:08}.seg"))
}

fn new_segment(dir: &Path, seq: u64, prealloc: bool) -> io::Result<File> {
    let path = segment_path(dir, seq);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    if prealloc {
        // Real zeros, not fallocate: an fallocated extent is "unwritten", and the first write into it makes
        // fdatasync commit a metadata change, which is what preallocation is meant to avoid.
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..(SEGMENT >> 20) {
            f.write_all(&zeros)?;
        }
        f.sync_all()?;
    }
    sync_dir(dir)?;
    Ok(f)
}

impl Journal {
    fn open(dir: &Path, prealloc: bool) -> Res<Journal> {
        let file = new_segment(dir, 0, prealloc)?;
        let (spares, preallocator) = if prealloc {
            // One spare segment always ready, as Artemis keeps a pool of files.
            let (tx, rx) = mpsc::sync_channel::<(u64, File)>(1);
            let d = dir.to_path_buf();
            let h = thread::spawn(move || {
                let mut seq = 1;
                loop {
                    let Ok(f) = new_segment(&d, seq, true) else {
                        return;
                    };
                    if tx.send((seq, f)).is_err() {
                        let _ = fs::remove_file(segment_path(&d, seq));
                        return;
                    }
                    seq += 1;
                }
            });
            (Some(rx), Some(h))
        } else {
            (None, None)
        };
        let buf = Vec::with_capacity(8 << 20);
        Ok(Journal {
            dir: dir.to_path_buf(),
            file,
            seq: 0,
            pos: 0,
            buf,
            spares,
            preallocator,
        })
    }

    fn record(buf: &mut Vec<u8>, kind: u8, id: u64, body: &[u8]) {
        let len = 1 + 8 + body.len();
        let start = buf.len();
        buf.extend_from_slice(&(len as u32).to_le_bytes());
        buf.extend_from_slice(&[0; 4]);
        buf.push(kind);
        buf.extend_from_slice(&id.to_le_bytes());
        buf.extend_from_slice(body);
        let crc = crc32c::crc32c(&buf[start + 8..]);
        buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    }

    fn roll(&mut self) -> Res<()> {
        // Sync the full segment once more so that nothing of it is left to the next sync of another file.
        self.file.sync_data()?;
        let (seq, file) = match &self.spares {
            Some(rx) => rx.recv()?,
            None => (self.seq + 1, new_segment(&self.dir, self.seq + 1, false)?),
        };
        self.seq = seq;
        self.file = file;
        self.pos = 0;
        Ok(())
    }
}

impl Store for Journal {
    fn commit(&mut self, batch: &[Req], payload: &[u8]) -> Res<()> {
        self.buf.clear();
        for r in batch {
            Self::record(&mut self.buf, REC_MSG, r.id, payload);
            if let Some(a) = r.ack {
                Self::record(&mut self.buf, REC_ACK, a, &[]);
            }
        }
        if self.pos + self.buf.len() as u64 > SEGMENT {
            self.roll()?;
        }
        self.file.write_all_at(&self.buf, self.pos)?;
        self.pos += self.buf.len() as u64;
        self.file.sync_data()?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------
// redb.

const MESSAGES: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("messages");

struct Redb {
    db: redb::Database,
}

impl Redb {
    fn open(dir: &Path) -> Res<Redb> {
        let db = redb::Database::create(dir.join("store.redb"))?;
        let tx = db.begin_write()?;
        tx.open_table(MESSAGES)?;
        tx.commit()?;
        Ok(Redb { db })
    }
}

impl Store for Redb {
    fn commit(&mut self, batch: &[Req], payload: &[u8]) -> Res<()> {
        let tx = self.db.begin_write()?; // Durability::Immediate is the default: commit returns after fsync.
        {
            let mut t = tx.open_table(MESSAGES)?;
            for r in batch {
                t.insert(r.id, payload)?;
                if let Some(a) = r.ack {
                    t.remove(a)?;
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------------
// Group commit driver.

struct Figures {
    msgs_per_s: f64,
    syncs_per_s: f64,
    mean_batch: f64,
    p50_us: u64,
    p99_us: u64,
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn run(mut store: Box<dyn Store>, producers: usize, size: usize, secs: f64) -> Res<Figures> {
    let payload: Vec<u8> = (0..size as u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let (tx, rx) = mpsc::channel::<Req>();
    let msgs = Arc::new(AtomicU64::new(0));
    let syncs = Arc::new(AtomicU64::new(0));
    let (m, s) = (msgs.clone(), syncs.clone());
    let writer = thread::spawn(move || -> Res<()> {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Ok(r) = rx.recv() {
            batch.push(r);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            store.commit(&batch, &payload)?;
            s.fetch_add(1, Ordering::Relaxed);
            m.fetch_add(batch.len() as u64, Ordering::Relaxed);
            for r in batch.drain(..) {
                let _ = r.done.send(());
            }
        }
        Ok(())
    });

    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let lat = Arc::new(Mutex::new(Vec::<u64>::new()));
    let lag = (LIVE / producers as u64).max(1);
    let mut handles = Vec::new();
    for p in 0..producers as u64 {
        let (tx, stop, measuring, lat) = (tx.clone(), stop.clone(), measuring.clone(), lat.clone());
        handles.push(thread::spawn(move || {
            let (done_tx, done_rx) = mpsc::sync_channel(1);
            let mut mine = Vec::new();
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let id = (p << 40) | k;
                let ack = (k >= lag).then(|| (p << 40) | (k - lag));
                let t0 = Instant::now();
                if tx
                    .send(Req {
                        id,
                        ack,
                        done: done_tx.clone(),
                    })
                    .is_err()
                    || done_rx.recv().is_err()
                {
                    break;
                }
                if measuring.load(Ordering::Relaxed) {
                    mine.push(t0.elapsed().as_micros() as u64);
                }
                k += 1;
            }
            lat.lock().unwrap().extend(mine);
        }));
    }
    drop(tx);

    thread::sleep(WARMUP);
    let (m0, s0, t0) = (
        msgs.load(Ordering::Relaxed),
        syncs.load(Ordering::Relaxed),
        Instant::now(),
    );
    measuring.store(true, Ordering::Relaxed);
    thread::sleep(Duration::from_secs_f64(secs));
    measuring.store(false, Ordering::Relaxed);
    let (m1, s1, el) = (
        msgs.load(Ordering::Relaxed),
        syncs.load(Ordering::Relaxed),
        t0.elapsed(),
    );
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        h.join().unwrap();
    }
    writer.join().unwrap()?;

    let mut lat = std::mem::take(&mut *lat.lock().unwrap());
    lat.sort_unstable();
    let el = el.as_secs_f64();
    Ok(Figures {
        msgs_per_s: (m1 - m0) as f64 / el,
        syncs_per_s: (s1 - s0) as f64 / el,
        mean_batch: (m1 - m0) as f64 / (s1 - s0).max(1) as f64,
        p50_us: pct(&lat, 0.50),
        p99_us: pct(&lat, 0.99),
    })
}

// ---------------------------------------------------------------------------------------------------------
// Raw fdatasync latency.

fn fdatasync_latency(dir: &Path, prealloc: bool, n: usize) -> Res<(u64, u64, u64, f64)> {
    let path = dir.join(if prealloc {
        "fsync-overwrite"
    } else {
        "fsync-append"
    });
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)?;
    let block = vec![0xa5u8; 4096];
    if prealloc {
        let zeros = vec![0u8; n * 4096];
        f.write_all(&zeros)?;
        f.sync_all()?;
        sync_dir(dir)?;
    }
    let mut lat = Vec::with_capacity(n);
    for i in 0..n {
        f.write_all_at(&block, (i * 4096) as u64)?;
        let t = Instant::now();
        f.sync_data()?;
        lat.push(t.elapsed().as_micros() as u64);
    }
    drop(f);
    fs::remove_file(&path)?;
    let mean = lat.iter().sum::<u64>() as f64 / n as f64;
    lat.sort_unstable();
    Ok((pct(&lat, 0.5), pct(&lat, 0.99), *lat.last().unwrap(), mean))
}

// ---------------------------------------------------------------------------------------------------------

fn main() -> Res<()> {
    let mut base = std::env::temp_dir();
    let mut secs = 3.0;
    let mut only = String::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--dir" => base = PathBuf::from(args.next().ok_or("--dir needs a value")?),
            "--secs" => secs = args.next().ok_or("--secs needs a value")?.parse()?,
            "--only" => only = args.next().ok_or("--only needs a value")?,
            _ => {
                return Err(format!(
                    "unknown argument {a}; usage: [--dir DIR] [--secs S] [--only STORE]"
                )
                .into())
            }
        }
    }
    let root = base.join(format!("nucleon-store-bench-{}", std::process::id()));
    fs::create_dir_all(&root)?;
    let result = bench(&root, secs, &only);
    fs::remove_dir_all(&root)?;
    result
}

fn bench(root: &Path, secs: f64, only: &str) -> Res<()> {
    println!(
        "Data directory: {} (removed at the end); {secs} s per case after {WARMUP:?} warm-up.\n",
        root.display()
    );
    println!("### Raw fdatasync latency (4 KiB write, then fdatasync timed alone; 2000 samples)\n");
    println!("| file | p50 µs | p99 µs | max µs | mean µs | syncs/s (1/mean) |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, pre) in [
        ("preallocated, overwrite", true),
        ("growing, append", false),
    ] {
        let (p50, p99, max, mean) = fdatasync_latency(root, pre, 2000)?;
        println!(
            "| {name} | {p50} | {p99} | {max} | {mean:.0} | {:.0} |",
            1e6 / mean
        );
    }

    println!("\n### Group commit: messages/s accepted durably (one writer, N producers each waiting for its sync)\n");
    println!(
        "About {LIVE} messages live (each message carries the ack of one sent {LIVE}/N earlier).\n"
    );
    println!("| store | payload | producers | msgs/s | syncs/s | msgs/sync | accept p50 µs | accept p99 µs |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let kinds = ["journal (preallocated)", "journal (growing)", "redb"];
    for kind in kinds.into_iter().filter(|k| k.contains(only)) {
        for size in [100usize, 1024] {
            for producers in [1usize, 4, 16] {
                let dir = root.join("case");
                fs::create_dir_all(&dir)?;
                let store: Box<dyn Store> = match kind {
                    "redb" => Box::new(Redb::open(&dir)?),
                    "journal (growing)" => Box::new(Journal::open(&dir, false)?),
                    _ => Box::new(Journal::open(&dir, true)?),
                };
                let f = run(store, producers, size, secs)?;
                let used = dir_size(&dir)?;
                fs::remove_dir_all(&dir)?;
                println!(
                    "| {kind} | {size} B | {producers} | {:.0} | {:.0} | {:.1} | {} | {} |",
                    f.msgs_per_s, f.syncs_per_s, f.mean_batch, f.p50_us, f.p99_us
                );
                eprintln!(
                    "  ({kind}, {size} B, {producers}: disk used at the end {:.1} MiB)",
                    used as f64 / 1048576.0
                );
            }
        }
    }
    Ok(())
}

fn dir_size(dir: &Path) -> io::Result<u64> {
    let mut n = 0;
    for e in fs::read_dir(dir)? {
        n += e?.metadata()?.len();
    }
    Ok(n)
}
