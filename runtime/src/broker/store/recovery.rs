//! Recovery: replays the journal's segments in order into the live state, tells a torn tail (dropped with
//! a warning) from corruption (an error naming file and offset), and in salvage mode skips the damage and
//! rewrites what is live into fresh segments.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::record::{self, DeclKind, Header, Rec, Slot, HEADER_SIZE};
use super::{io_error, segment_name, segment_seq, sync_dir, QueueKind, StoreError, SPARE_NAME};

/// A segment found on open.
pub(super) struct ScannedSeg {
    pub(super) seq: u64,
    pub(super) path: PathBuf,
    pub(super) file: File,
    /// The file's length (its segment size, which may differ from the options' if they changed).
    pub(super) len: u64,
    /// The offset after its last valid record: where appends continue, for the last segment.
    pub(super) end: u64,
}

/// A queue as replayed: where its (latest) declaration record is.
pub(super) struct ScannedQueue {
    pub(super) name: String,
    pub(super) kind: QueueKind,
    pub(super) seq: u64,
    pub(super) off: u32,
    pub(super) size: u32,
}

/// A message as replayed: where its latest record is, its counts, and its bytes (own allocation).
pub(super) struct ScannedMessage {
    pub(super) qid: u64,
    pub(super) seq: u64,
    pub(super) off: u32,
    pub(super) size: u32,
    pub(super) delivered: u32,
    pub(super) released: u32,
    pub(super) bytes: Bytes,
}

/// Everything replay found.
pub(super) struct Scanned {
    /// The segments, by ascending sequence number, contiguous.
    pub(super) segs: Vec<ScannedSeg>,
    pub(super) next_pid: u64,
    pub(super) next_qid: u64,
    pub(super) queues: HashMap<u64, ScannedQueue>,
    /// Live messages of live queues.
    pub(super) messages: HashMap<u64, ScannedMessage>,
    /// Salvage: what was skipped.
    pub(super) skipped: Vec<String>,
    /// The journal's secret (see `record::record_key`), from its segments' headers; a new one for a new
    /// journal.
    pub(super) secret: u64,
}

/// Replays the journal in `dir`. In salvage mode with something skipped, the live state is then
/// rewritten into fresh segments (the old ones deleted) and replayed again from those.
pub(super) fn recover(dir: &Path, salvage: bool, segment_size: u64) -> Result<Scanned, StoreError> {
    let scanned = scan(dir, salvage)?;
    if scanned.skipped.is_empty() {
        return Ok(scanned);
    }
    for line in &scanned.skipped {
        log::warn!("salvage: {line}");
    }
    // After every segment file there is, the skipped ones (bad header) included.
    let start = list_segments(dir)?.last().map_or(0, |(seq, _)| seq + 1);
    rewrite(dir, start, segment_size, &scanned)?;
    // Front first, so that a crash part way leaves a contiguous journal whose replay is still right.
    for seg in &scanned.segs {
        fs::remove_file(&seg.path).map_err(io_error(&seg.path))?;
    }
    // Segments skipped whole (bad header) are not in `segs`: remove every old segment file.
    for (seq, path) in list_segments(dir)? {
        if seq < start {
            fs::remove_file(&path).map_err(io_error(&path))?;
        }
    }
    sync_dir(dir).map_err(io_error(dir))?;
    log::warn!(
        "salvage: live state rewritten into fresh segments from {} on",
        segment_name(start)
    );
    let mut again = scan(dir, false)?;
    again.skipped = scanned.skipped;
    Ok(again)
}

/// The segment files in `dir`, by ascending sequence number.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut segs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        if let Some(seq) = entry.file_name().to_str().and_then(segment_seq) {
            segs.push((seq, entry.path()));
        }
    }
    segs.sort_unstable_by_key(|(seq, _)| *seq);
    Ok(segs)
}

/// Replays every segment; see [`recover`].
fn scan(dir: &Path, salvage: bool) -> Result<Scanned, StoreError> {
    let listed = list_segments(dir)?;
    let mut out = Scanned {
        segs: Vec::with_capacity(listed.len()),
        next_pid: 1,
        next_qid: 1,
        queues: HashMap::new(),
        messages: HashMap::new(),
        skipped: Vec::new(),
        secret: getrandom::u64().expect("the OS random number generator failed"),
    };
    let mut secret = None;
    let mut all_messages: HashMap<u64, ScannedMessage> = HashMap::new();
    let mut max_pid = 0;
    let mut max_qid = 0;
    for (i, (seq, path)) in listed.iter().enumerate() {
        let (seq, path) = (*seq, path);
        if i > 0 {
            let prev = listed[i - 1].0;
            for missing in prev + 1..seq {
                if !salvage {
                    return Err(StoreError::MissingSegment {
                        dir: dir.to_path_buf(),
                        seq: missing,
                    });
                }
                out.skipped.push(format!(
                    "{}: missing segment skipped",
                    dir.join(segment_name(missing)).display()
                ));
            }
        }
        let last = i == listed.len() - 1;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io_error(path))?;
        let len = file.metadata().map_err(io_error(path))?.len();
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0).map_err(io_error(path))?;
        let header = Header::decode(&buf).and_then(|h| {
            if h.seq != seq {
                Err(format!("header says segment {}", h.seq))
            } else if secret.is_some_and(|s| s != h.secret) {
                Err("a segment of another journal (its secret differs)".to_owned())
            } else {
                Ok(h)
            }
        });
        let header = match header {
            Ok(h) => h,
            Err(what) if salvage => {
                out.skipped.push(format!(
                    "{}: offset 0: {what}; whole segment skipped ({len} bytes)",
                    path.display()
                ));
                continue;
            }
            Err(what) => {
                return Err(StoreError::Corrupt {
                    file: path.clone(),
                    offset: 0,
                    what,
                })
            }
        };
        secret = Some(header.secret);
        let key = record::record_key(header.secret, seq);
        out.next_pid = out.next_pid.max(header.next_pid);
        out.next_qid = out.next_qid.max(header.next_qid);
        let mut off = HEADER_SIZE;
        let corrupt = |offset: usize, what: String| StoreError::Corrupt {
            file: path.clone(),
            offset: offset as u64,
            what,
        };
        let end = loop {
            if off >= buf.len() {
                break buf.len();
            }
            match record::slot(&buf, off, key) {
                Slot::End => break off,
                Slot::Valid(body, size) => {
                    let rec = match Rec::decode(body) {
                        Ok(rec) => rec,
                        Err(what) if salvage => {
                            out.skipped.push(format!(
                                "{}: offset {off}: {what}; {size} bytes skipped",
                                path.display()
                            ));
                            off += size;
                            continue;
                        }
                        Err(what) => return Err(corrupt(off, what)),
                    };
                    let at = Place {
                        seq,
                        off: off as u32,
                        size: size as u32,
                    };
                    apply(
                        rec,
                        at,
                        &mut out.queues,
                        &mut all_messages,
                        &mut max_pid,
                        &mut max_qid,
                    );
                    off += size;
                }
                Slot::Invalid(why) => match record::next_valid(&buf, off, key) {
                    None if last => {
                        // A torn tail: the crash came in the middle of a batch that was never synced, so
                        // no producer was told it was accepted. Zero it, so that records written from here
                        // on are not followed by its leftovers.
                        let nonzero = buf[off..].iter().rposition(|b| *b != 0).unwrap_or(0) + 1;
                        log::warn!(
                            "journal {}: torn write at offset {off} ({why}): {nonzero} bytes dropped",
                            path.display()
                        );
                        file.write_all_at(&vec![0u8; nonzero], off as u64)
                            .and_then(|()| file.sync_data())
                            .map_err(io_error(path))?;
                        break off;
                    }
                    None if salvage => {
                        out.skipped.push(format!(
                            "{}: offset {off}: {why}; {} bytes to the end of the segment skipped",
                            path.display(),
                            buf.len() - off
                        ));
                        break off;
                    }
                    Some(next) if salvage => {
                        out.skipped.push(format!(
                            "{}: offset {off}: {why}; {} bytes skipped",
                            path.display(),
                            next - off
                        ));
                        off = next;
                    }
                    _ => return Err(corrupt(off, why.to_string())),
                },
            }
        };
        out.segs.push(ScannedSeg {
            seq,
            path: path.clone(),
            file,
            len,
            end: end as u64,
        });
    }
    out.next_pid = out.next_pid.max(max_pid + 1);
    out.next_qid = out.next_qid.max(max_qid + 1);
    // Messages of queues deleted (or never declared) are dead.
    all_messages.retain(|_, m| out.queues.contains_key(&m.qid));
    out.messages = all_messages;
    if let Some(secret) = secret {
        out.secret = secret;
    }
    Ok(out)
}

/// Where a record was found.
#[derive(Clone, Copy)]
struct Place {
    seq: u64,
    off: u32,
    size: u32,
}

/// Replays one record. A record about an unknown pid is ignored: its message is gone (acked, or its queue
/// deleted) in a segment deleted since, or it precedes the compaction copy that brings the message back
/// with the counts it had.
fn apply(
    rec: Rec<'_>,
    at: Place,
    queues: &mut HashMap<u64, ScannedQueue>,
    messages: &mut HashMap<u64, ScannedMessage>,
    max_pid: &mut u64,
    max_qid: &mut u64,
) {
    match rec {
        Rec::QueueDecl { qid, kind, name } => {
            *max_qid = (*max_qid).max(qid);
            let kind = match kind {
                DeclKind::Queue => QueueKind::Queue,
                DeclKind::Subscription(topic) => QueueKind::Subscription {
                    topic: topic.to_string(),
                },
            };
            queues.insert(
                qid,
                ScannedQueue {
                    name: name.to_string(),
                    kind,
                    seq: at.seq,
                    off: at.off,
                    size: at.size,
                },
            );
        }
        Rec::QueueDelete(qid) => {
            *max_qid = (*max_qid).max(qid);
            queues.remove(&qid);
        }
        Rec::Message {
            pid,
            qid,
            delivered,
            released,
            bytes,
        } => {
            *max_pid = (*max_pid).max(pid);
            *max_qid = (*max_qid).max(qid);
            messages.insert(
                pid,
                ScannedMessage {
                    qid,
                    seq: at.seq,
                    off: at.off,
                    size: at.size,
                    delivered,
                    released,
                    bytes: Bytes::copy_from_slice(bytes),
                },
            );
        }
        Rec::Ack(pid) => {
            *max_pid = (*max_pid).max(pid);
            messages.remove(&pid);
        }
        Rec::Delivered(pid) => {
            *max_pid = (*max_pid).max(pid);
            if let Some(m) = messages.get_mut(&pid) {
                m.delivered = m.delivered.saturating_add(1);
            }
        }
        Rec::Released(pid) => {
            *max_pid = (*max_pid).max(pid);
            if let Some(m) = messages.get_mut(&pid) {
                m.released = m.released.saturating_add(1);
            }
        }
    }
}

/// Makes a segment file: `spare.tmp`, `size` zero bytes written for real (so that writing records never
/// allocates blocks and one `fdatasync` commits them), synced. The caller names it.
pub(super) fn make_spare(dir: &Path, size: u64, stop: &dyn Fn() -> bool) -> std::io::Result<File> {
    let path = dir.join(SPARE_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)?;
    let zeros = vec![0u8; (1 << 20).min(size as usize)];
    let mut at = 0;
    let made = (|| {
        while at < size {
            if stop() {
                return Err(std::io::Error::other("store closing"));
            }
            let n = zeros.len().min((size - at) as usize);
            file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        file.sync_data()
    })();
    match made {
        Ok(()) => Ok(file),
        Err(e) => {
            drop(file);
            let _ = fs::remove_file(&path);
            Err(e)
        }
    }
}

/// Gives the spare its header and its segment name, durably: header synced, renamed, directory synced.
/// After this the segment is part of the journal.
pub(super) fn install_spare(dir: &Path, file: &File, header: &Header) -> std::io::Result<PathBuf> {
    let path = dir.join(segment_name(header.seq));
    file.write_all_at(&header.encode(), 0)?;
    file.sync_data()?;
    fs::rename(dir.join(SPARE_NAME), &path)?;
    sync_dir(dir)?;
    Ok(path)
}

/// Salvage: writes every live queue and message of `scanned` into fresh segments from `start` on.
fn rewrite(dir: &Path, start: u64, segment_size: u64, scanned: &Scanned) -> Result<(), StoreError> {
    let limit = segment_size - super::journal::reserve(segment_size);
    let mut qids: Vec<_> = scanned.queues.keys().copied().collect();
    qids.sort_unstable();
    let mut pids: Vec<_> = scanned.messages.keys().copied().collect();
    pids.sort_unstable();
    let mut seq = start;
    let mut buf = Vec::with_capacity(segment_size as usize);
    let flush = |seq: u64, buf: &mut Vec<u8>| -> Result<(), StoreError> {
        let file = make_spare(dir, segment_size, &|| false).map_err(io_error(dir))?;
        file.write_all_at(buf, HEADER_SIZE as u64)
            .map_err(io_error(dir))?;
        let header = Header {
            seq,
            next_pid: scanned.next_pid,
            next_qid: scanned.next_qid,
            secret: scanned.secret,
        };
        install_spare(dir, &file, &header).map_err(io_error(dir))?;
        buf.clear();
        Ok(())
    };
    let decls = qids.iter().map(|qid| {
        let q = &scanned.queues[qid];
        let kind = match &q.kind {
            QueueKind::Queue => DeclKind::Queue,
            QueueKind::Subscription { topic } => DeclKind::Subscription(topic),
        };
        Rec::QueueDecl {
            qid: *qid,
            kind,
            name: &q.name,
        }
    });
    let messages = pids.iter().map(|pid| {
        let m = &scanned.messages[pid];
        Rec::Message {
            pid: *pid,
            qid: m.qid,
            delivered: m.delivered,
            released: m.released,
            bytes: &m.bytes,
        }
    });
    for rec in decls.chain(messages) {
        if (HEADER_SIZE + buf.len() + rec.size()) as u64 > limit {
            flush(seq, &mut buf)?;
            seq += 1;
        }
        rec.encode(record::record_key(scanned.secret, seq), &mut buf);
    }
    flush(seq, &mut buf)
}
