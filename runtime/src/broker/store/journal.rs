//! The running journal: placing records, the writer thread (group commit), the maintenance thread (spare
//! segments, deletion, compaction), durability tickets and failure.
//!
//! Locks, always taken in this order: `io` (the files being written), `app` (everything about placing
//! records and what is live), `done` (durability and its waiters). Appends take only `app`, and only for
//! memory work; no file is written or synced under it.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use super::record::{DeclKind, Header, Rec, Slot, HEADER_SIZE};
use super::recovery::{self, install_spare, make_spare};
use super::{
    io_error, is_no_space, segment_name, sync_dir, QueueKind, Recovered, RecoveredMessage,
    RecoveredQueue, StoreError, StoreOptions, StoreStats, SyncPolicy, Ticket, LOCK_NAME,
    SPARE_NAME,
};

/// How long acks, delivered and released records alone may wait in memory before the writer writes them.
const CONTROL_DELAY: Duration = Duration::from_millis(50);
/// How often the spare is retried when there was no room, and how often `Off` syncs.
const RETRY: Duration = Duration::from_secs(1);
/// How often the maintenance thread looks at the segments when nothing wakes it.
const MAINTENANCE_TICK: Duration = Duration::from_millis(100);
/// The longest an append waits for the spare segment being made (a segment's zero-fill takes tens of
/// milliseconds): past it, the disk is taken as full.
const SPARE_WAIT: Duration = Duration::from_secs(5);
/// Records that could not be placed for lack of room (acks and the like only) kept in memory at most:
/// past it one is dropped with a warning. A dropped ack costs a redelivery after a crash (at-least-once
/// holds); a dropped delivered or released, a delivery count off by one.
const MAX_OVERFLOW: usize = 1 << 20;
/// Live records compaction copies per hold of the append lock, so that appends wait little.
const COPY_BATCH: usize = 256;

/// The bytes at the end of each segment that message records and queue declarations may not use, so that
/// acks, delivered and released records still fit when the disk is full: 1/16 of the segment.
pub(super) fn reserve(segment_size: u64) -> u64 {
    (segment_size / 16) & !7
}

/// What a record is, for where it may go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// A message or queue declaration: not into the reserve.
    New,
    /// A compaction copy: anywhere, so that compaction can free a full disk (copying a queue declaration
    /// or a stuck message out of the oldest segment is what lets it and the dead ones after it go).
    Copy,
    /// Ack, delivered, released, queue deletion: into the first half of the reserve, else kept in memory
    /// until there is room (the second half stays for compaction's copies).
    Control,
}

/// Where a record went: its segment, offset and size.
type Placed = (u64, u32, u32);

/// Why a record was not placed.
enum Refusal {
    /// The active segment has no room and the spare is being made: wait for it.
    Wait,
    Full,
    TooLarge(u64, u64),
    Failed(String),
}

impl From<Refusal> for StoreError {
    fn from(r: Refusal) -> StoreError {
        match r {
            Refusal::Full | Refusal::Wait => StoreError::Full,
            Refusal::TooLarge(size, max) => StoreError::TooLarge { size, max },
            Refusal::Failed(why) => StoreError::Failed(why),
        }
    }
}

/// A live message: where its latest record is, its queue, its counts.
struct Live {
    seq: u64,
    off: u32,
    size: u32,
    qid: u64,
    delivered: u32,
    released: u32,
}

/// A live queue: where its latest declaration record is (compaction copies it from there), and its live
/// messages.
struct LiveQueue {
    seq: u64,
    off: u32,
    size: u32,
    pids: HashSet<u64>,
}

/// A segment of the journal.
struct Seg {
    file: Arc<File>,
    path: PathBuf,
    len: u64,
    /// Live records (messages and queue declarations) in it.
    live: u64,
    live_bytes: u64,
    /// The ticket that must be synced before it may be deleted: its last record, or the last copy made
    /// out of it by compaction.
    needs_synced: Ticket,
}

/// The spare segment's state.
enum Spare {
    /// None, and none being made.
    None,
    /// Being zero-filled by the maintenance thread.
    Preparing,
    /// Ready to become the next segment.
    Ready(Arc<File>),
    /// Taken as the next segment; the writer has yet to install it (header, name).
    Taken,
}

/// Placed records not written yet, for one segment, contiguous from `offset`.
struct Chunk {
    seq: u64,
    file: Arc<File>,
    offset: u64,
    buf: Vec<u8>,
    /// For the first chunk of a new segment: make the spare that segment before writing.
    install: Option<Install>,
}

/// What the writer does when it reaches a new segment: sync the one that filled, then give the spare its
/// header and name.
struct Install {
    prev: Option<(u64, Arc<File>, PathBuf)>,
    header: Header,
}

/// A record kept in memory for lack of room.
#[derive(Clone, Copy)]
enum Control {
    Ack(u64),
    Delivered(u64),
    Released(u64),
    QueueDelete(u64),
}

impl Control {
    fn rec(self) -> Rec<'static> {
        match self {
            Control::Ack(pid) => Rec::Ack(pid),
            Control::Delivered(pid) => Rec::Delivered(pid),
            Control::Released(pid) => Rec::Released(pid),
            Control::QueueDelete(qid) => Rec::QueueDelete(qid),
        }
    }
}

/// Everything the append lock guards.
struct App {
    segment_size: u64,
    /// The journal's secret, in every record's checksum key (`record::record_key`).
    secret: u64,
    /// A segment found damaged while compacting it (it is not compacted, nor deleted, until a restart).
    damaged: Option<u64>,
    active: u64,
    active_file: Arc<File>,
    active_len: u64,
    /// Where the next record goes in the active segment.
    off: u64,
    /// Tickets issued: records placed so far.
    placed: Ticket,
    pending: VecDeque<Chunk>,
    overflow: VecDeque<Control>,
    next_pid: u64,
    next_qid: u64,
    messages: HashMap<u64, Live>,
    queues: HashMap<u64, LiveQueue>,
    segs: BTreeMap<u64, Seg>,
    live_bytes: u64,
    spare: Spare,
    /// When making the spare last failed for lack of room.
    no_room_since: Option<Instant>,
    /// A segment was deleted since the spare last failed: try again at once.
    room_freed: bool,
    /// A message append waits: the writer should run now.
    urgent: bool,
    closing: bool,
    failed: Option<String>,
    full_logged: bool,
    overflow_logged: bool,
}

/// What the writer lock guards: the files written and not yet synced.
struct Io {
    dirty: HashMap<u64, (Arc<File>, PathBuf)>,
    last_sync: Instant,
}

/// Durability: the highest durable ticket, failure, and the waiters.
struct Done {
    upto: Ticket,
    failed: Option<String>,
    waiters: BTreeMap<Ticket, Vec<Box<dyn FnOnce() + Send>>>,
}

/// How a round of the writer syncs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SyncMode {
    /// Write only.
    None,
    /// Sync after writing, outside the writer lock (group commit: appends and `write_through` go on).
    Outside,
    /// Sync under the writer lock: each `Always` append has its own sync.
    Inline,
}

/// The store's shared state; [`super::Store`] and the threads hold it.
pub(super) struct Inner {
    dir: PathBuf,
    policy: SyncPolicy,
    max_disk: Option<u64>,
    io: Mutex<Io>,
    app: Mutex<App>,
    done: Mutex<Done>,
    writer_cv: Condvar,
    maint_cv: Condvar,
    /// Notified when the spare is ready or known to lack room (appends waiting for it).
    spare_cv: Condvar,
    /// Compaction waits for its copies to be synced: the writer wakes the maintenance thread after a sync.
    maint_waits_sync: AtomicBool,
    /// The highest ticket synced (all policies): compaction deletes a segment only once its copies are.
    synced: AtomicU64,
    closed: AtomicBool,
    lock: Mutex<Option<File>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    thread_ids: Mutex<Vec<ThreadId>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind; the store keeps going (its invariants are
    // restored by failing it if a write was in the middle).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// See [`super::Store::open`].
    pub(super) fn open(options: StoreOptions) -> Result<(Arc<Inner>, Recovered), StoreError> {
        let dir = options.dir.clone();
        let segment_size = (options.segment_size.clamp(4096, 1 << 30)) & !7;
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let lock_path = dir.join(LOCK_NAME);
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_error(&lock_path))?;
        // File::try_lock is Rust 1.89, above the workspace's rust-version (1.85); the locked dependency tree
        // needs 1.89 already (uuid 1.29, actix-rt 2.15 need 1.88 and up), so this adds no requirement, and
        // keeps the lock in std rather than a crate (unsafe code being forbidden, there is no flock here).
        #[allow(clippy::incompatible_msrv)]
        let locked = lock_file.try_lock();
        match locked {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir)),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&lock_path)(e)),
        }
        // A spare left by a crash: its zeros may be incomplete, make it again.
        let spare_path = dir.join(SPARE_NAME);
        if spare_path.exists() {
            std::fs::remove_file(&spare_path).map_err(io_error(&spare_path))?;
        }
        let mut scanned = recovery::recover(&dir, options.salvage, segment_size)?;
        if scanned.segs.is_empty() {
            // A new journal: its first segment.
            let file = make_spare(&dir, segment_size, &|| false).map_err(io_error(&dir))?;
            let header = Header {
                seq: 0,
                next_pid: scanned.next_pid,
                next_qid: scanned.next_qid,
                secret: scanned.secret,
            };
            let path = install_spare(&dir, &file, &header).map_err(io_error(&dir))?;
            scanned.segs.push(recovery::ScannedSeg {
                seq: 0,
                path,
                file,
                len: segment_size,
                end: HEADER_SIZE as u64,
            });
        }

        let mut segs = BTreeMap::new();
        let last = scanned.segs.last().expect("one segment at least");
        let (active, active_len, off) = (last.seq, last.len, last.end);
        for s in scanned.segs {
            segs.insert(
                s.seq,
                Seg {
                    file: Arc::new(s.file),
                    path: s.path,
                    len: s.len,
                    live: 0,
                    live_bytes: 0,
                    needs_synced: 0,
                },
            );
        }
        let active_file = segs[&active].file.clone();
        let mut live_bytes = 0;
        let mut queues = HashMap::with_capacity(scanned.queues.len());
        let mut recovered: BTreeMap<u64, RecoveredQueue> = BTreeMap::new();
        for (qid, q) in scanned.queues {
            let seg = segs.get_mut(&q.seq).expect("replayed from a segment");
            seg.live += 1;
            seg.live_bytes += q.size as u64;
            live_bytes += q.size as u64;
            recovered.insert(
                qid,
                RecoveredQueue {
                    qid,
                    name: q.name.clone(),
                    kind: q.kind.clone(),
                    messages: Vec::new(),
                },
            );
            queues.insert(
                qid,
                LiveQueue {
                    seq: q.seq,
                    off: q.off,
                    size: q.size,
                    pids: HashSet::new(),
                },
            );
        }
        let mut messages = HashMap::with_capacity(scanned.messages.len());
        for (pid, m) in scanned.messages {
            let seg = segs.get_mut(&m.seq).expect("replayed from a segment");
            seg.live += 1;
            seg.live_bytes += m.size as u64;
            live_bytes += m.size as u64;
            queues
                .get_mut(&m.qid)
                .expect("messages of live queues only")
                .pids
                .insert(pid);
            recovered
                .get_mut(&m.qid)
                .expect("messages of live queues only")
                .messages
                .push(RecoveredMessage {
                    pid,
                    bytes: m.bytes,
                    delivered: m.delivered,
                    released: m.released,
                });
            messages.insert(
                pid,
                Live {
                    seq: m.seq,
                    off: m.off,
                    size: m.size,
                    qid: m.qid,
                    delivered: m.delivered,
                    released: m.released,
                },
            );
        }
        let mut queues_out: Vec<RecoveredQueue> = recovered.into_values().collect();
        for q in &mut queues_out {
            q.messages.sort_unstable_by_key(|m| m.pid);
        }

        let inner = Arc::new(Inner {
            dir: dir.clone(),
            policy: options.sync,
            max_disk: options.max_disk,
            io: Mutex::new(Io {
                dirty: HashMap::new(),
                last_sync: Instant::now(),
            }),
            app: Mutex::new(App {
                segment_size,
                secret: scanned.secret,
                damaged: None,
                active,
                active_file,
                active_len,
                off,
                placed: 0,
                pending: VecDeque::new(),
                overflow: VecDeque::new(),
                next_pid: scanned.next_pid,
                next_qid: scanned.next_qid,
                messages,
                queues,
                segs,
                live_bytes,
                spare: Spare::None,
                no_room_since: None,
                room_freed: false,
                urgent: false,
                closing: false,
                failed: None,
                full_logged: false,
                overflow_logged: false,
            }),
            done: Mutex::new(Done {
                upto: 0,
                failed: None,
                waiters: BTreeMap::new(),
            }),
            writer_cv: Condvar::new(),
            maint_cv: Condvar::new(),
            spare_cv: Condvar::new(),
            maint_waits_sync: AtomicBool::new(false),
            synced: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            lock: Mutex::new(Some(lock_file)),
            writer: Mutex::new(None),
            thread_ids: Mutex::new(Vec::new()),
        });
        let maint = {
            let inner = inner.clone();
            thread::Builder::new()
                .name("nucleon-store-maint".into())
                .spawn(move || inner.maintain())
                .map_err(io_error(&dir))?
        };
        let writer = {
            let inner = inner.clone();
            thread::Builder::new()
                .name("nucleon-store-writer".into())
                .spawn(move || inner.write_loop(maint))
                .map_err(io_error(&dir))?
        };
        lock(&inner.thread_ids).push(writer.thread().id());
        *lock(&inner.writer) = Some(writer);
        Ok((
            inner,
            Recovered {
                queues: queues_out,
                skipped: scanned.skipped,
            },
        ))
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    // ---------------------------------------------------------------------------------------------------
    // Appends.

    pub(super) fn declare_queue(&self, name: &str, kind: &QueueKind) -> Result<u64, StoreError> {
        let decl = match kind {
            QueueKind::Queue => DeclKind::Queue,
            QueueKind::Subscription { topic } => DeclKind::Subscription(topic),
        };
        let (mut a, placed) = self.place_new(lock(&self.app), |a| Rec::QueueDecl {
            qid: a.next_qid,
            kind: decl,
            name,
        });
        let (seq, off, size) = placed?;
        let qid = a.next_qid;
        a.next_qid += 1;
        a.count_live(seq, size as u64, 1);
        a.queues.insert(
            qid,
            LiveQueue {
                seq,
                off,
                size,
                pids: HashSet::new(),
            },
        );
        Ok(qid)
    }

    pub(super) fn delete_queue(&self, qid: u64) {
        let mut a = lock(&self.app);
        let Some(q) = a.queues.remove(&qid) else {
            return;
        };
        a.count_live(q.seq, q.size as u64, -1);
        for pid in q.pids {
            if let Some(m) = a.messages.remove(&pid) {
                a.count_live(m.seq, m.size as u64, -1);
            }
        }
        self.control(&mut a, Control::QueueDelete(qid));
    }

    pub(super) fn append_message(
        &self,
        qid: u64,
        bytes: &[u8],
    ) -> Result<(u64, Ticket), StoreError> {
        let (mut a, placed) = self.place_new(lock(&self.app), |a| Rec::Message {
            pid: a.next_pid,
            qid,
            delivered: 0,
            released: 0,
            bytes,
        });
        let (seq, off, size) = placed?;
        let pid = a.next_pid;
        a.next_pid += 1;
        let ticket = a.placed;
        a.count_live(seq, size as u64, 1);
        a.messages.insert(
            pid,
            Live {
                seq,
                off,
                size,
                qid,
                delivered: 0,
                released: 0,
            },
        );
        if let Some(q) = a.queues.get_mut(&qid) {
            q.pids.insert(pid);
        }
        match self.policy {
            SyncPolicy::Always => {
                drop(a);
                self.round(SyncMode::Inline);
            }
            SyncPolicy::Batch | SyncPolicy::Off => {
                a.urgent = true;
                drop(a);
                self.writer_cv.notify_one();
            }
        }
        Ok((pid, ticket))
    }

    pub(super) fn ack(&self, pid: u64) {
        let mut a = lock(&self.app);
        let Some(m) = a.messages.remove(&pid) else {
            return;
        };
        if let Some(q) = a.queues.get_mut(&m.qid) {
            q.pids.remove(&pid);
        }
        a.count_live(m.seq, m.size as u64, -1);
        self.control(&mut a, Control::Ack(pid));
        if a.segs.get(&m.seq).is_some_and(|s| s.live == 0) {
            self.maint_cv.notify_one();
        }
    }

    pub(super) fn delivered(&self, pid: u64) {
        let mut a = lock(&self.app);
        let Some(m) = a.messages.get_mut(&pid) else {
            return;
        };
        m.delivered = m.delivered.saturating_add(1);
        self.control(&mut a, Control::Delivered(pid));
    }

    pub(super) fn released(&self, pid: u64) {
        let mut a = lock(&self.app);
        let Some(m) = a.messages.get_mut(&pid) else {
            return;
        };
        m.released = m.released.saturating_add(1);
        self.control(&mut a, Control::Released(pid));
    }

    pub(super) fn write_through(&self) {
        self.round(SyncMode::None);
    }

    /// Places a message or queue declaration, waiting (a bounded time) for the spare segment if it is being
    /// made: a producer that keeps to its credit is not refused because it outran the zero-fill.
    /// `make` builds the record from the state at each attempt (the ids to issue may have changed while
    /// waiting); on success the ids it used are still the next ones, as the lock is held.
    fn place_new<'a, 'r>(
        &'a self,
        mut a: MutexGuard<'a, App>,
        make: impl Fn(&App) -> Rec<'r>,
    ) -> (MutexGuard<'a, App>, Result<Placed, StoreError>) {
        let deadline = Instant::now() + SPARE_WAIT;
        loop {
            let rec = make(&a);
            match self.place(&mut a, &rec, Class::New) {
                Err(Refusal::Wait) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return (a, Err(StoreError::Full));
                    }
                    self.maint_cv.notify_one();
                    a = self
                        .spare_cv
                        .wait_timeout(a, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                }
                other => return (a, other.map_err(StoreError::from)),
            }
        }
    }

    /// Places an ack-like record: in the journal if there is room (the reserve included), else in memory
    /// until there is.
    fn control(&self, a: &mut App, c: Control) {
        if a.closing || a.failed.is_some() {
            return;
        }
        let idle = a.pending.is_empty();
        if a.overflow.is_empty() && self.place(a, &c.rec(), Class::Control).is_ok() {
            if idle {
                // The writer sleeps for up to `RETRY` when nothing is pending: it now has something to
                // write within `CONTROL_DELAY`.
                self.writer_cv.notify_one();
            }
            return;
        }
        if a.overflow.len() >= MAX_OVERFLOW {
            if !a.overflow_logged {
                log::warn!(
                    "data dir {}: full, and {MAX_OVERFLOW} acknowledgements wait for room: further ones are dropped (after a crash their messages would be delivered again)",
                    self.dir.display()
                );
                a.overflow_logged = true;
            }
            return;
        }
        a.overflow.push_back(c);
    }

    /// Decides where `rec` goes (rolling to the spare when the active segment has no room for it) and
    /// encodes it into the pending buffer. Returns its segment, offset and size; its ticket is `a.placed`.
    fn place(&self, a: &mut App, rec: &Rec<'_>, class: Class) -> Result<Placed, Refusal> {
        if let Some(why) = &a.failed {
            return Err(Refusal::Failed(why.clone()));
        }
        if a.closing {
            return Err(Refusal::Failed("the store is closed".into()));
        }
        let size = rec.size() as u64;
        if class == Class::New {
            let max = a.segment_size - HEADER_SIZE as u64 - reserve(a.segment_size);
            if size > max {
                return Err(Refusal::TooLarge(size, max));
            }
        }
        // Records wait in memory for room: nothing may pass them but compaction's copies, which must, to
        // make room (see `compact` for the counts).
        let fits = |a: &App| {
            (a.overflow.is_empty() || class == Class::Copy) && a.off + size <= a.limit(class)
        };
        if !fits(a) {
            if !matches!(a.spare, Spare::Ready(_)) {
                if class == Class::New && a.no_room_since.is_none() && a.failed.is_none() {
                    // The spare is being made (or about to be): room is not known to lack.
                    return Err(Refusal::Wait);
                }
                if class == Class::New {
                    if !a.full_logged {
                        log::warn!(
                            "data dir {}: no room for the next journal segment (disk full{}): new messages are refused until consumers or the operator free space",
                            self.dir.display(),
                            if self.max_disk.is_some() { " or max-disk reached" } else { "" }
                        );
                        a.full_logged = true;
                    }
                    self.maint_cv.notify_one();
                }
                return Err(Refusal::Full);
            }
            self.roll(a);
            if !fits(a) {
                return Err(Refusal::TooLarge(size, a.limit(class) - a.off));
            }
        }
        let (seq, off) = (a.active, a.off);
        let key = super::record::record_key(a.secret, seq);
        let file = a.active_file.clone();
        match a.pending.back_mut() {
            Some(c) if c.seq == seq && c.offset + c.buf.len() as u64 == off => {
                rec.encode(key, &mut c.buf)
            }
            _ => {
                let mut buf = Vec::new();
                rec.encode(key, &mut buf);
                a.pending.push_back(Chunk {
                    seq,
                    file,
                    offset: off,
                    buf,
                    install: None,
                });
            }
        }
        a.off += size;
        a.placed += 1;
        let placed = a.placed;
        if let Some(s) = a.segs.get_mut(&seq) {
            s.needs_synced = placed;
        }
        Ok((seq, off as u32, size as u32))
    }

    /// Makes the spare the active segment (its header and name are given by the writer when it gets to
    /// it), then places what waited in memory for room.
    fn roll(&self, a: &mut App) {
        let Spare::Ready(file) = std::mem::replace(&mut a.spare, Spare::Taken) else {
            unreachable!("roll without a spare");
        };
        let prev = a.active;
        let seq = prev + 1;
        let prev_seg = &a.segs[&prev];
        let install = Install {
            prev: Some((prev, prev_seg.file.clone(), prev_seg.path.clone())),
            header: Header {
                seq,
                next_pid: a.next_pid,
                next_qid: a.next_qid,
                secret: a.secret,
            },
        };
        a.segs.insert(
            seq,
            Seg {
                file: file.clone(),
                path: self.dir.join(segment_name(seq)),
                len: a.segment_size,
                live: 0,
                live_bytes: 0,
                needs_synced: a.placed,
            },
        );
        a.pending.push_back(Chunk {
            seq,
            file: file.clone(),
            offset: HEADER_SIZE as u64,
            buf: Vec::new(),
            install: Some(install),
        });
        a.active = seq;
        a.active_file = file;
        a.active_len = a.segment_size;
        a.off = HEADER_SIZE as u64;
        if a.full_logged {
            log::info!(
                "data dir {}: room for journal segments again, new messages are taken",
                self.dir.display()
            );
            a.full_logged = false;
        }
        let waiting = std::mem::take(&mut a.overflow);
        let n = waiting.len();
        for (i, c) in waiting.iter().enumerate() {
            if self.place(a, &c.rec(), Class::Control).is_err() {
                // No room even in a fresh segment (over a million acks): the rest waits for the next.
                a.overflow = waiting.iter().skip(i).copied().collect();
                break;
            }
        }
        if n > 0 {
            a.urgent = true;
            a.overflow_logged = false;
        }
    }

    // ---------------------------------------------------------------------------------------------------
    // Writing and durability.

    /// Writes everything placed so far, in order; then, as `sync` says, makes it durable and wakes the
    /// waiters it covers.
    fn round(&self, sync: SyncMode) {
        let mut io = lock(&self.io);
        let (chunks, upto) = {
            let mut a = lock(&self.app);
            if a.failed.is_some() {
                return;
            }
            a.urgent = false;
            (std::mem::take(&mut a.pending), a.placed)
        };
        for chunk in chunks {
            if let Err(why) = self.write_chunk(&mut io, chunk) {
                drop(io);
                self.fail(why);
                return;
            }
        }
        if self.policy == SyncPolicy::Off {
            self.publish(upto);
        }
        if sync == SyncMode::None {
            return;
        }
        io.last_sync = Instant::now();
        let files: Vec<_> = io.dirty.drain().map(|(_, f)| f).collect();
        let io = if sync == SyncMode::Inline {
            Some(io)
        } else {
            drop(io);
            None
        };
        for (file, path) in &files {
            if let Err(e) = file.sync_data() {
                // Never retried: after a failed fsync the kernel may have dropped the dirty pages, and a
                // second fsync would report success for data that is gone (fsyncgate).
                drop(io);
                self.fail(format!("fdatasync of {}: {e}", path.display()));
                return;
            }
        }
        drop(io);
        self.synced.fetch_max(upto, Ordering::SeqCst);
        if self.maint_waits_sync.swap(false, Ordering::SeqCst) {
            self.maint_cv.notify_one();
        }
        if self.policy != SyncPolicy::Off {
            self.publish(upto);
        }
    }

    /// Writes one chunk, installing its segment first if it is a new one.
    fn write_chunk(&self, io: &mut Io, chunk: Chunk) -> Result<(), String> {
        if let Some(install) = chunk.install {
            if let Some((seq, file, path)) = install.prev {
                // The segment that filled is synced before the next one exists, so that only the last
                // segment can ever have a torn tail.
                file.sync_data()
                    .map_err(|e| format!("fdatasync of {}: {e}", path.display()))?;
                io.dirty.remove(&seq);
            }
            let path = install_spare(&self.dir, &chunk.file, &install.header).map_err(|e| {
                format!(
                    "making segment {} from {}: {e}",
                    segment_name(install.header.seq),
                    self.dir.join(SPARE_NAME).display()
                )
            })?;
            lock(&self.app).spare = Spare::None;
            self.maint_cv.notify_one();
            io.dirty.insert(chunk.seq, (chunk.file.clone(), path));
        }
        if chunk.buf.is_empty() {
            return Ok(());
        }
        let path = self.dir.join(segment_name(chunk.seq));
        chunk
            .file
            .write_all_at(&chunk.buf, chunk.offset)
            .map_err(|e| format!("write to {}: {e}", path.display()))?;
        io.dirty.entry(chunk.seq).or_insert((chunk.file, path));
        Ok(())
    }

    /// Tickets up to `upto` are durable: wakes their waiters.
    fn publish(&self, upto: Ticket) {
        let ready = {
            let mut d = lock(&self.done);
            if upto <= d.upto {
                return;
            }
            d.upto = upto;
            let rest = d.waiters.split_off(&(upto + 1));
            std::mem::replace(&mut d.waiters, rest)
        };
        for wake in ready.into_values().flatten() {
            wake();
        }
    }

    /// A write or sync failed: the store stops taking messages, and what is not durable never will be.
    fn fail(&self, why: String) {
        log::error!(
            "message store in {} stopped: {why}; new messages are refused until a restart",
            self.dir.display()
        );
        lock(&self.app).failed = Some(why.clone());
        let waiters = {
            let mut d = lock(&self.done);
            d.failed = Some(why);
            std::mem::take(&mut d.waiters)
        };
        for wake in waiters.into_values().flatten() {
            wake();
        }
    }

    pub(super) fn durable(&self, ticket: Ticket) -> Result<bool, StoreError> {
        let d = lock(&self.done);
        if ticket <= d.upto {
            Ok(true)
        } else if let Some(why) = &d.failed {
            Err(StoreError::Failed(why.clone()))
        } else {
            Ok(false)
        }
    }

    pub(super) fn when_durable(&self, ticket: Ticket, wake: Box<dyn FnOnce() + Send>) {
        let mut d = lock(&self.done);
        if ticket <= d.upto || d.failed.is_some() {
            drop(d);
            wake();
        } else {
            d.waiters.entry(ticket).or_default().push(wake);
        }
    }

    /// The writer thread: group commit. Message appends wake it at once; acks and the like alone wait up
    /// to [`CONTROL_DELAY`]. At close it writes and syncs everything, then shuts the store down.
    fn write_loop(self: Arc<Self>, maint: JoinHandle<()>) {
        loop {
            let closing = {
                let mut a = lock(&self.app);
                while !a.urgent && !a.closing {
                    let timeout = if a.pending.is_empty() {
                        RETRY
                    } else {
                        CONTROL_DELAY
                    };
                    let (g, res) = self
                        .writer_cv
                        .wait_timeout(a, timeout)
                        .unwrap_or_else(|e| e.into_inner());
                    a = g;
                    if res.timed_out() {
                        break;
                    }
                }
                a.closing
            };
            let sync = match self.policy {
                SyncPolicy::Batch => SyncMode::Outside,
                SyncPolicy::Always => SyncMode::Inline,
                SyncPolicy::Off if closing || lock(&self.io).last_sync.elapsed() >= RETRY => {
                    SyncMode::Outside
                }
                SyncPolicy::Off => SyncMode::None,
            };
            self.round(sync);
            if closing {
                break;
            }
        }
        let _ = maint.join();
        let lost = lock(&self.app).overflow.len();
        if lost > 0 {
            log::warn!(
                "data dir {}: closed while full: {lost} acknowledgements could not be written (their messages come back on the next start)",
                self.dir.display()
            );
        }
        // A spare is cheap to make again and would have to be checked on open: not kept.
        let spare = self.dir.join(SPARE_NAME);
        if spare.exists() {
            let _ = std::fs::remove_file(&spare);
            let _ = sync_dir(&self.dir);
        }
        // Waiters of records never written (the store failed or was closed with them in memory).
        let waiters = std::mem::take(&mut lock(&self.done).waiters);
        if !waiters.is_empty() {
            lock(&self.done)
                .failed
                .get_or_insert_with(|| "the store is closed".into());
        }
        for wake in waiters.into_values().flatten() {
            wake();
        }
        lock(&self.lock).take();
    }

    pub(super) fn close(&self) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        lock(&self.app).closing = true;
        self.writer_cv.notify_all();
        self.maint_cv.notify_all();
        self.spare_cv.notify_all();
        let me = thread::current().id();
        if lock(&self.thread_ids).contains(&me) {
            // Called from the writer thread (a waker dropped the last Store): it shuts down when it returns.
            return;
        }
        if let Some(writer) = lock(&self.writer).take() {
            let _ = writer.join();
        }
    }

    pub(super) fn stats(&self) -> StoreStats {
        let a = lock(&self.app);
        let spare = matches!(a.spare, Spare::Preparing | Spare::Ready(_));
        StoreStats {
            segments: a.segs.len() + spare as usize,
            disk_bytes: a.disk_bytes(),
            live_messages: a.messages.len(),
            live_bytes: a.live_bytes,
        }
    }

    // ---------------------------------------------------------------------------------------------------
    // Maintenance: the spare, deleting dead segments, compaction.

    /// The maintenance thread.
    fn maintain(self: Arc<Self>) {
        lock(&self.thread_ids).push(thread::current().id());
        loop {
            if lock(&self.app).closing {
                return;
            }
            self.make_spare();
            while self.delete_oldest_dead() {}
            self.compact();
            let a = lock(&self.app);
            if a.closing {
                return;
            }
            let _ = self.maint_cv.wait_timeout(a, MAINTENANCE_TICK);
        }
    }

    /// Makes the spare segment if there is none and there is room for one.
    fn make_spare(&self) {
        let size = {
            let mut a = lock(&self.app);
            if !matches!(a.spare, Spare::None) || a.failed.is_some() {
                return;
            }
            if let Some(since) = a.no_room_since {
                if !a.room_freed && since.elapsed() < RETRY {
                    return;
                }
            }
            a.room_freed = false;
            if let Some(max) = self.max_disk {
                if a.disk_bytes() + a.segment_size > max {
                    a.no_room_since = Some(Instant::now());
                    drop(a);
                    self.spare_cv.notify_all();
                    return;
                }
            }
            a.spare = Spare::Preparing;
            a.segment_size
        };
        let stop = || lock(&self.app).closing;
        let made = make_spare(&self.dir, size, &stop);
        let mut a = lock(&self.app);
        match made {
            Ok(file) => {
                a.spare = Spare::Ready(Arc::new(file));
                a.no_room_since = None;
                if !a.overflow.is_empty() {
                    self.roll(&mut a);
                    drop(a);
                    self.writer_cv.notify_one();
                }
                self.spare_cv.notify_all();
            }
            Err(e) => {
                a.spare = Spare::None;
                a.no_room_since = Some(Instant::now());
                if !is_no_space(&e) && !a.closing {
                    log::warn!(
                        "data dir {}: making the next journal segment: {e}; retrying",
                        self.dir.join(SPARE_NAME).display()
                    );
                }
                drop(a);
                self.spare_cv.notify_all();
            }
        }
    }

    /// Deletes the oldest segment if nothing in it is live and everything copied out of it is synced.
    fn delete_oldest_dead(&self) -> bool {
        let victim = {
            let mut a = lock(&self.app);
            let Some((&seq, seg)) = a.segs.iter().next() else {
                return false;
            };
            if seq == a.active
                || seg.live > 0
                || self.synced.load(Ordering::SeqCst) < seg.needs_synced
                || a.failed.is_some()
            {
                return false;
            }
            a.room_freed = true;
            a.segs.remove(&seq).expect("listed").path
        };
        if let Err(e) = std::fs::remove_file(&victim).and_then(|()| sync_dir(&self.dir)) {
            self.fail(format!("deleting {}: {e}", victim.display()));
            return false;
        }
        log::debug!("journal segment {} deleted", victim.display());
        true
    }

    /// When the segments hold more than twice the live bytes plus two segments, copies the live records
    /// of the oldest forward, so that it can be deleted once the copies are synced.
    fn compact(&self) {
        let (seq, key, file, path) = {
            let a = lock(&self.app);
            let Some((&seq, seg)) = a.segs.iter().next() else {
                return;
            };
            if seq == a.active
                || a.damaged == Some(seq)
                || seg.live == 0
                || a.disk_bytes() <= 2 * a.live_bytes + 2 * a.segment_size
                || self.synced.load(Ordering::SeqCst) < seg.needs_synced
                || a.failed.is_some()
                || a.closing
            {
                return;
            }
            let key = super::record::record_key(a.secret, seq);
            (seq, key, seg.file.clone(), seg.path.clone())
        };
        // Its records are on disk (synced): read it whole, outside the lock.
        let len = match file.metadata() {
            Ok(m) => m.len() as usize,
            Err(e) => return self.fail(format!("reading {}: {e}", path.display())),
        };
        let mut buf = vec![0u8; len];
        if let Err(e) = file.read_exact_at(&mut buf, 0) {
            return self.fail(format!("reading {}: {e}", path.display()));
        }
        let mut records = Vec::new();
        let mut off = HEADER_SIZE;
        while off < buf.len() {
            let (body, size) = match super::record::slot(&buf, off, key) {
                Slot::Valid(body, size) => (body, size),
                Slot::End => break,
                Slot::Invalid(why) => {
                    // Damaged on disk since it was written and synced: its live records past here cannot
                    // be read, so it stays (and so does everything after it) until a restart reports it.
                    log::error!(
                        "journal {}: damaged at offset {off} ({why}): compaction stopped; restart the broker (with --salvage if it reports the damage)",
                        path.display()
                    );
                    lock(&self.app).damaged = Some(seq);
                    return;
                }
            };
            if let Ok(rec @ (Rec::Message { .. } | Rec::QueueDecl { .. })) = Rec::decode(body) {
                records.push((off as u32, rec));
            }
            off += size;
        }
        let mut copied = 0usize;
        for batch in records.chunks(COPY_BATCH) {
            let mut a = lock(&self.app);
            let mut moved = HashSet::new();
            for (off, rec) in batch {
                // Liveness is decided here, under the append lock: an ack either came before (nothing to
                // copy) or comes after the copy.
                match *rec {
                    Rec::Message {
                        pid, qid, bytes, ..
                    } => {
                        let Some(m) = a.messages.get(&pid) else {
                            continue;
                        };
                        if m.seq != seq || m.off != *off {
                            continue;
                        }
                        let copy = Rec::Message {
                            pid,
                            qid,
                            delivered: m.delivered,
                            released: m.released,
                            bytes,
                        };
                        let old = m.size as u64;
                        let Ok((nseq, noff, nsize)) = self.place(&mut a, &copy, Class::Copy) else {
                            return self.copied(a, seq, copied, &moved);
                        };
                        a.count_live(seq, old, -1);
                        a.count_live(nseq, nsize as u64, 1);
                        let m = a.messages.get_mut(&pid).expect("checked");
                        (m.seq, m.off, m.size) = (nseq, noff, nsize);
                        moved.insert(pid);
                    }
                    Rec::QueueDecl { qid, kind, name } => {
                        let Some(q) = a.queues.get(&qid) else {
                            continue;
                        };
                        if q.seq != seq || q.off != *off {
                            continue;
                        }
                        let old = q.size as u64;
                        let copy = Rec::QueueDecl { qid, kind, name };
                        let Ok((nseq, noff, nsize)) = self.place(&mut a, &copy, Class::Copy) else {
                            return self.copied(a, seq, copied, &moved);
                        };
                        a.count_live(seq, old, -1);
                        a.count_live(nseq, nsize as u64, 1);
                        let q = a.queues.get_mut(&qid).expect("checked");
                        (q.seq, q.off, q.size) = (nseq, noff, nsize);
                    }
                    _ => {}
                }
                copied += 1;
            }
            self.copied(a, seq, copied, &moved);
        }
    }

    /// After compaction copied records out of segment `seq`: it may be deleted once they are synced.
    fn copied(&self, mut a: MutexGuard<'_, App>, seq: u64, copied: usize, moved: &HashSet<u64>) {
        if !a.overflow.is_empty() && !moved.is_empty() {
            // A copy passed delivered/released records waiting in memory for room: it carries the counts
            // with them, so they must not count again.
            a.overflow.retain(|c| match c {
                Control::Delivered(pid) | Control::Released(pid) => !moved.contains(pid),
                Control::Ack(_) | Control::QueueDelete(_) => true,
            });
        }
        if copied == 0 {
            return;
        }
        let placed = a.placed;
        if let Some(s) = a.segs.get_mut(&seq) {
            s.needs_synced = s.needs_synced.max(placed);
        }
        self.maint_waits_sync.store(true, Ordering::SeqCst);
        a.urgent = true;
        drop(a);
        self.writer_cv.notify_one();
    }
}

impl App {
    /// How far into the active segment records of `class` may go.
    fn limit(&self, class: Class) -> u64 {
        let reserve = reserve(self.active_len);
        match class {
            Class::New => self.active_len - reserve,
            Class::Control => self.active_len - reserve / 2,
            Class::Copy => self.active_len,
        }
    }

    /// Segment bytes on disk, the spare included.
    fn disk_bytes(&self) -> u64 {
        let spare = match self.spare {
            Spare::Preparing | Spare::Ready(_) => self.segment_size,
            Spare::None | Spare::Taken => 0,
        };
        self.segs.values().map(|s| s.len).sum::<u64>() + spare
    }

    /// A live record of `size` bytes appears in (+1) or leaves (-1) segment `seq`.
    fn count_live(&mut self, seq: u64, size: u64, delta: i64) {
        let seg = self
            .segs
            .get_mut(&seq)
            .expect("a live record's segment exists");
        if delta > 0 {
            seg.live += 1;
            seg.live_bytes += size;
            self.live_bytes += size;
        } else {
            seg.live -= 1;
            seg.live_bytes -= size;
            self.live_bytes -= size;
        }
    }
}
