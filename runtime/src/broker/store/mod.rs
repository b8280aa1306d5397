//! The durable broker's message store: a segment journal, as chosen in `docs/store-benchmark.md`.
//!
//! Everything the broker must find again after a crash is a record appended to the journal: queue
//! declarations and deletions, messages, and what happened to each message (acknowledged, handed to a
//! consumer, released). The journal is a directory of fixed-size segment files, zero-filled when made (by a
//! background thread that keeps one spare ready, as Artemis's file pool does), so that writing a record
//! never grows a file and one `fdatasync` commits it. The formats are in [`record`].
//!
//! * **Appends** ([`Store::append_message`] and the rest) encode the record into a pending buffer under one
//!   mutex, which also decides the record's place (segment and offset) and its [`Ticket`]. A writer thread
//!   takes everything pending, writes it with one `pwrite` per segment and, under [`SyncPolicy::Batch`],
//!   makes it durable with one `fdatasync` per batch (group commit), then wakes the producers whose tickets
//!   it covered ([`Store::when_durable`]). A producer's `accepted` leaves only then.
//! * **Live state** is kept in memory: which messages are live, in which segment and queue, with their
//!   delivery counts, and how much of each segment is live.
//! * **Compaction** keeps the directory near the live data: the oldest segment is deleted once nothing in it
//!   is live; when the segments hold more than twice the live bytes plus two segments, the live records of
//!   the oldest are copied forward (through the same append path) and it is deleted once the copies are
//!   synced. Only the oldest segment is ever deleted, so every record that refers to a message (ack,
//!   delivered, released, queue deletion) comes after that message in what remains, and recovery, which
//!   replays every segment in order, reads about twice the live data at most.
//! * **Recovery** ([`Store::open`]) replays the segments. An invalid record at the end of the last segment
//!   is a torn write (the crash came in the middle of a batch, which no producer was told was accepted): it
//!   is dropped with a warning. Any other invalid record is corruption, reported with its file and offset,
//!   and `salvage` skips it and keeps the rest.
//! * **Disk full** is not an error of the store: a message that does not fit is refused
//!   ([`StoreError::Full`]) while acknowledgements still go in (each segment keeps a reserve for them), and
//!   the store resumes by itself once compaction or the operator makes room.

mod journal;
mod record;
mod recovery;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use self::journal::Inner;

/// When a producer's `accepted` may leave.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Group commit: records are written by one writer thread and made durable with one fdatasync per
    /// batch; a message is durable once its batch is synced. (default)
    #[default]
    Batch,
    /// Each message record is written and fdatasync'd on its own (no batching), inline in
    /// `append_message`: the slowest, for comparison and for disks whose sync is cheap.
    Always,
    /// Records are written to the OS (so they survive kill -9 of the broker) but fdatasync'd only when a
    /// segment fills, once a second, and at close: not power-loss safe.
    Off,
}

impl std::str::FromStr for SyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<SyncPolicy, String> {
        match s {
            "batch" => Ok(SyncPolicy::Batch),
            "always" => Ok(SyncPolicy::Always),
            "off" => Ok(SyncPolicy::Off),
            other => Err(format!(
                "unknown sync policy {other:?}: expected batch, always or off"
            )),
        }
    }
}

/// Where and how the store keeps its journal.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// The data directory (made if missing). One store at a time may use it (a lock file says so).
    pub dir: PathBuf,
    /// When a message counts as durable.
    pub sync: SyncPolicy,
    /// The size of each segment file: 16 MiB by default. Taken as at least 4 KiB and at most 1 GiB,
    /// rounded down to a multiple of 8. A message record must fit in one segment less its header and
    /// reserve (1/16), so this also bounds the size of a message the store takes.
    pub segment_size: u64,
    /// The most bytes of segments (the spare included) the store may have on disk: reaching it behaves
    /// exactly as a full disk does (as Artemis's max-disk-usage). None: only the disk's size limits it.
    pub max_disk: Option<u64>,
    /// On open, skip corrupt records and missing segments instead of failing, keep everything else, and
    /// rewrite the live state into fresh segments so that the next open is clean.
    pub salvage: bool,
}

impl StoreOptions {
    /// Options for `dir` with the defaults: batch sync, 16 MiB segments, no disk limit, no salvage.
    pub fn new(dir: impl Into<PathBuf>) -> StoreOptions {
        StoreOptions {
            dir: dir.into(),
            sync: SyncPolicy::Batch,
            segment_size: 16 << 20,
            max_disk: None,
            salvage: false,
        }
    }
}

/// A position in the journal: the number of records placed up to and including one, in append order, so
/// monotonic across segments. A ticket is durable once every record up to it is (see [`Store::durable`]).
pub(crate) type Ticket = u64;

/// What a queue declaration makes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum QueueKind {
    /// A named queue.
    Queue,
    /// A topic's subscription (a private queue of one consumer of `topic`).
    Subscription {
        /// The topic's address.
        topic: String,
    },
}

/// A message found on open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecoveredMessage {
    /// Its id, as [`Store::append_message`] gave it.
    pub(crate) pid: u64,
    /// Its encoded AMQP bytes, in their own allocation (not a slice of a segment buffer).
    pub(crate) bytes: Bytes,
    /// How many times it was handed to a consumer ([`Store::delivered`]).
    pub(crate) delivered: u32,
    /// How many of those deliveries were released without delivery-failed ([`Store::released`]).
    pub(crate) released: u32,
}

/// A queue found on open, with its messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecoveredQueue {
    /// Its id, as [`Store::declare_queue`] gave it.
    pub(crate) qid: u64,
    /// Its address.
    pub(crate) name: String,
    /// Queue or subscription.
    pub(crate) kind: QueueKind,
    /// Its live messages, by ascending pid (arrival order).
    pub(crate) messages: Vec<RecoveredMessage>,
}

/// Everything found on open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Recovered {
    /// The live queues, by ascending qid.
    pub(crate) queues: Vec<RecoveredQueue>,
    /// Salvage mode: one line per region or segment skipped (file, offset, bytes, why). Empty otherwise.
    pub(crate) skipped: Vec<String>,
}

/// Why the store could not do something.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file of the data directory could not be read, written or made.
    #[error("data dir {}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A record or segment header that is neither valid nor a torn tail.
    #[error(
        "journal corrupt: {} at offset {offset}: {what}; start with --salvage to skip the damaged records and keep the rest",
        file.display()
    )]
    Corrupt {
        /// The segment file.
        file: PathBuf,
        /// The byte offset of the damage in it.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A segment between the first and the last is not there.
    #[error(
        "journal segment {} is missing; start with --salvage to skip it and keep the rest",
        dir.join(segment_name(*seq)).display()
    )]
    MissingSegment {
        /// The data directory.
        dir: PathBuf,
        /// The missing segment's sequence number.
        seq: u64,
    },
    /// No room for the next segment on the disk, or `max_disk` reached: the message is refused, and the
    /// store takes messages again once room is made (by consumers or the operator).
    #[error("the data directory is full")]
    Full,
    /// A message record larger than a segment allows (segment size less header and reserve): refused, as
    /// the broker refuses a message over its size limit (`amqp:resource-limit-exceeded`).
    #[error("a message of {size} bytes does not fit in a journal segment (at most {max}); raise the segment size")]
    TooLarge {
        /// The record's size.
        size: u64,
        /// The largest message record a segment takes.
        max: u64,
    },
    /// The store stopped after a write or sync error (named here), or was closed: new messages are refused
    /// until a restart, and messages not yet durable never will be.
    #[error("the message store stopped: {0}")]
    Failed(String),
    /// Another process holds the data directory's lock.
    #[error("data dir {} is in use by another broker (its lock file is held)", .0.display())]
    Locked(PathBuf),
}

/// What the store holds, for metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Segment files on disk, the spare (ready or being made) included.
    pub segments: usize,
    /// Their bytes.
    pub disk_bytes: u64,
    /// Live messages.
    pub live_messages: usize,
    /// Bytes of live records (messages and queue declarations) in the journal.
    pub live_bytes: u64,
}

/// The message store: cheap to clone, `Send + Sync`. The last clone dropped closes it.
#[derive(Clone)]
pub(crate) struct Store {
    handle: Arc<Handle>,
}

/// Closes the store when the last [`Store`] goes; the threads hold only the [`Inner`].
struct Handle {
    inner: Arc<Inner>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.inner.close();
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.handle.inner.dir())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or makes) the data directory, takes its lock, recovers what the journal holds, and starts
    /// the writer and maintenance threads.
    pub(crate) fn open(options: StoreOptions) -> Result<(Store, Recovered), StoreError> {
        let (inner, recovered) = Inner::open(options)?;
        Ok((
            Store {
                handle: Arc::new(Handle { inner }),
            },
            recovered,
        ))
    }

    /// Appends a queue declaration; returns its new qid (never reused). Err(Full/Failed) if it cannot be
    /// written.
    pub(crate) fn declare_queue(&self, name: &str, kind: &QueueKind) -> Result<u64, StoreError> {
        self.handle.inner.declare_queue(name, kind)
    }

    /// The queue is gone; its messages still live are dead from now on (their acks may or may not follow).
    pub(crate) fn delete_queue(&self, qid: u64) {
        self.handle.inner.delete_queue(qid)
    }

    /// Appends a message (its encoded AMQP bytes) for queue qid; returns its pid (never reused) and the
    /// ticket to wait for before the producer's `accepted` leaves. Err(Full) when the journal has no room
    /// for it, Err(TooLarge) for a message larger than a segment takes (both map to
    /// `amqp:resource-limit-exceeded`), Err(Failed) after a write/sync error.
    pub(crate) fn append_message(
        &self,
        qid: u64,
        bytes: &[u8],
    ) -> Result<(u64, Ticket), StoreError> {
        self.handle.inner.append_message(qid, bytes)
    }

    /// The message left its queue for good (consumer accepted/rejected, expired, purged...). Never waits;
    /// never fails: on a full disk the record goes into the segment's reserve or, past that, waits in
    /// memory (bounded) for room. An unknown pid is ignored.
    pub(crate) fn ack(&self, pid: u64) {
        self.handle.inner.ack(pid)
    }

    /// A consumer acquired the message (it is being sent unsettled): after a crash it comes back with
    /// delivery-count + 1 and first-acquirer false.
    pub(crate) fn delivered(&self, pid: u64) {
        self.handle.inner.delivered(pid)
    }

    /// The consumer released it without delivery-failed: cancels one `delivered` for the count (not for
    /// the "was acquired" fact).
    pub(crate) fn released(&self, pid: u64) {
        self.handle.inner.released(pid)
    }

    /// Puts every record appended so far into the kernel now (one write syscall, no sync; when a segment
    /// filled since the last write, also the finished segment's sync and the next one's set-up): the broker
    /// calls it after `delivered` records and before the transfers leave, so that a kill -9 cannot lose a
    /// `delivered` for a message a consumer saw.
    pub(crate) fn write_through(&self) {
        self.handle.inner.write_through()
    }

    /// Whether the ticket is durable under the policy (Batch/Always: synced; Off: written to the OS).
    /// Ok(true) durable, Ok(false) not yet, Err(..) its batch failed (the producer gets
    /// resource-limit-exceeded).
    pub(crate) fn durable(&self, ticket: Ticket) -> Result<bool, StoreError> {
        self.handle.inner.durable(ticket)
    }

    /// Calls `wake` once (from the writer thread) when the ticket is durable or failed; at once if it
    /// already is. `wake` must be cheap and non-blocking (a connection waker).
    pub(crate) fn when_durable(&self, ticket: Ticket, wake: impl FnOnce() + Send + 'static) {
        self.handle.inner.when_durable(ticket, Box::new(wake))
    }

    /// Flushes, syncs, stops the threads, releases the lock. Idempotent. Also done on drop of the last
    /// clone.
    pub(crate) fn close(&self) {
        self.handle.inner.close()
    }

    /// For metrics and tests: segments on disk (spare included), their bytes, live messages, live bytes.
    pub(crate) fn stats(&self) -> StoreStats {
        self.handle.inner.stats()
    }
}

/// A segment's file name: its sequence number in 16 hex digits, so names sort as numbers do.
fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.seg")
}

/// The sequence number of a segment file name, if it is one.
fn segment_seq(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 16 {
        return None;
    }
    u64::from_str_radix(stem, 16).ok()
}

/// The name of the spare segment while it is being made.
const SPARE_NAME: &str = "spare.tmp";
/// The lock file's name.
const LOCK_NAME: &str = "lock";

/// Maps an I/O error on `path` to [`StoreError::Io`] (or [`StoreError::Full`] for a full disk).
fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| {
        if is_no_space(&source) {
            StoreError::Full
        } else {
            StoreError::Io {
                path: path.to_path_buf(),
                source,
            }
        }
    }
}

/// Whether an I/O error says the disk (or the user's quota) is full.
fn is_no_space(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// Makes a directory's entries (files made, renamed or deleted in it) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}
