//! The journal's on-disk formats: the segment header and the records, with their encoding and decoding.
//!
//! A segment is `segment_size` bytes, zero-filled when made. Its first [`HEADER_SIZE`] bytes are the header:
//!
//! | offset | field |
//! |---:|---|
//! | 0 | magic `NUCLJRNL` |
//! | 8 | format version, u32 LE |
//! | 12 | zero |
//! | 16 | the segment's sequence number, u64 LE |
//! | 24 | the next pid when the segment was made, u64 LE |
//! | 32 | the next qid when the segment was made, u64 LE |
//! | 40 | the journal's secret, u64 LE (the same in every segment) |
//! | 48 | CRC32C of bytes 0..48, u32 LE |
//! | 52 | zeros up to 64 |
//!
//! Records follow, each starting at an 8-byte aligned offset: `[len u32 LE][crc u32 LE][body][zeros to 8]`,
//! where `len` is the body's length (never 0, so a zero length marks the end of what was written) and
//! `crc = crc32c(key.to_le_bytes() ++ body)` with `key = secret ^ seq` ([`record_key`]). The segment's
//! sequence number in the key means that a record copied or left over from another segment never validates
//! here. The secret is random, made with the journal and never sent anywhere: a message's payload is
//! written into the journal as it came from the network, and a producer could otherwise put well-formed
//! records in it, which recovery's search for valid records after a damaged one (see
//! [`next_valid`]) would take for real ones. Without the secret, a forged record verifies by chance only
//! (one in 2^32 per try). The body is a kind byte and the kind's fields, little endian; see [`Rec`].

/// The bytes at the start of every segment.
pub(super) const HEADER_SIZE: usize = 64;
/// The segment's magic number.
const MAGIC: &[u8; 8] = b"NUCLJRNL";
/// The format version: a segment of another version is refused as corrupt rather than misread.
const VERSION: u32 = 2;
/// The bytes before a record's body: its length and checksum.
pub(super) const RECORD_HEAD: usize = 8;

const KIND_QUEUE_DECL: u8 = 1;
const KIND_QUEUE_DELETE: u8 = 2;
const KIND_MESSAGE: u8 = 3;
const KIND_ACK: u8 = 4;
const KIND_DELIVERED: u8 = 5;
const KIND_RELEASED: u8 = 6;

const QUEUE_KIND_QUEUE: u8 = 0;
const QUEUE_KIND_SUBSCRIPTION: u8 = 1;

/// What a segment header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Header {
    /// The segment's sequence number (also its file name).
    pub(super) seq: u64,
    /// The next pid to issue when the segment was made: every pid below it was issued before.
    pub(super) next_pid: u64,
    /// The next qid to issue when the segment was made.
    pub(super) next_qid: u64,
    /// The journal's secret, part of every record's checksum key ([`record_key`]).
    pub(super) secret: u64,
}

/// The checksum key of the records of segment `seq` in the journal whose secret is `secret`.
pub(super) fn record_key(secret: u64, seq: u64) -> u64 {
    secret ^ seq
}

impl Header {
    /// The header's bytes.
    pub(super) fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut h = [0u8; HEADER_SIZE];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&VERSION.to_le_bytes());
        h[16..24].copy_from_slice(&self.seq.to_le_bytes());
        h[24..32].copy_from_slice(&self.next_pid.to_le_bytes());
        h[32..40].copy_from_slice(&self.next_qid.to_le_bytes());
        h[40..48].copy_from_slice(&self.secret.to_le_bytes());
        let crc = crc32c::crc32c(&h[0..48]);
        h[48..52].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Reads a header, saying what is wrong with it if it is not one.
    pub(super) fn decode(buf: &[u8]) -> Result<Header, String> {
        if buf.len() < HEADER_SIZE {
            return Err(format!(
                "segment of {} bytes, shorter than its header",
                buf.len()
            ));
        }
        if &buf[0..8] != MAGIC {
            return Err("not a journal segment (bad magic)".into());
        }
        let crc = u32_at(buf, 48);
        if crc != crc32c::crc32c(&buf[0..48]) {
            return Err("segment header checksum mismatch".into());
        }
        let version = u32_at(buf, 8);
        if version != VERSION {
            return Err(format!(
                "segment format version {version}, this build reads {VERSION}"
            ));
        }
        Ok(Header {
            seq: u64_at(buf, 16),
            next_pid: u64_at(buf, 24),
            next_qid: u64_at(buf, 32),
            secret: u64_at(buf, 40),
        })
    }
}

/// What kind of queue a declaration makes. Mirrors the store's public `QueueKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum DeclKind<'a> {
    /// A named queue.
    Queue,
    /// A topic subscription, with its topic's address.
    Subscription(&'a str),
}

/// One record's body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Rec<'a> {
    /// A queue exists from here on (or, for a compaction copy, still exists).
    QueueDecl {
        /// Its id.
        qid: u64,
        /// Queue or subscription.
        kind: DeclKind<'a>,
        /// Its address.
        name: &'a str,
    },
    /// The queue is gone, and every message of it with it.
    QueueDelete(u64),
    /// A message in a queue, with its delivery counts when written (non-zero in a compaction copy).
    Message {
        /// Its id.
        pid: u64,
        /// Its queue.
        qid: u64,
        /// `delivered` records for it so far.
        delivered: u32,
        /// `released` records for it so far.
        released: u32,
        /// The encoded AMQP message.
        bytes: &'a [u8],
    },
    /// The message left its queue for good.
    Ack(u64),
    /// The message was handed to a consumer.
    Delivered(u64),
    /// A consumer gave the message back undelivered.
    Released(u64),
}

impl Rec<'_> {
    /// The body's length in bytes.
    pub(super) fn body_len(&self) -> usize {
        match self {
            Rec::QueueDecl { kind, name, .. } => {
                let topic = match kind {
                    DeclKind::Queue => 0,
                    DeclKind::Subscription(t) => 4 + t.len(),
                };
                1 + 8 + 1 + 4 + name.len() + topic
            }
            Rec::Message { bytes, .. } => 1 + 8 + 8 + 4 + 4 + bytes.len(),
            Rec::QueueDelete(_) | Rec::Ack(_) | Rec::Delivered(_) | Rec::Released(_) => 1 + 8,
        }
    }

    /// The whole record's size on disk: head, body and padding.
    pub(super) fn size(&self) -> usize {
        record_size(self.body_len())
    }

    /// Appends the record (head, body, padding) to `out`, checksummed with `key` (its segment's
    /// [`record_key`]).
    pub(super) fn encode(&self, key: u64, out: &mut Vec<u8>) {
        let start = out.len();
        let len = self.body_len();
        out.reserve(record_size(len));
        out.extend_from_slice(&[0u8; RECORD_HEAD]);
        match *self {
            Rec::QueueDecl { qid, kind, name } => {
                out.push(KIND_QUEUE_DECL);
                out.extend_from_slice(&qid.to_le_bytes());
                match kind {
                    DeclKind::Queue => out.push(QUEUE_KIND_QUEUE),
                    DeclKind::Subscription(_) => out.push(QUEUE_KIND_SUBSCRIPTION),
                }
                put_str(out, name);
                if let DeclKind::Subscription(topic) = kind {
                    put_str(out, topic);
                }
            }
            Rec::QueueDelete(qid) => put_id(out, KIND_QUEUE_DELETE, qid),
            Rec::Message {
                pid,
                qid,
                delivered,
                released,
                bytes,
            } => {
                out.push(KIND_MESSAGE);
                out.extend_from_slice(&pid.to_le_bytes());
                out.extend_from_slice(&qid.to_le_bytes());
                out.extend_from_slice(&delivered.to_le_bytes());
                out.extend_from_slice(&released.to_le_bytes());
                out.extend_from_slice(bytes);
            }
            Rec::Ack(pid) => put_id(out, KIND_ACK, pid),
            Rec::Delivered(pid) => put_id(out, KIND_DELIVERED, pid),
            Rec::Released(pid) => put_id(out, KIND_RELEASED, pid),
        }
        let body = &out[start + RECORD_HEAD..];
        debug_assert_eq!(body.len(), len);
        let crc = crc32c::crc32c_append(crc32c::crc32c(&key.to_le_bytes()), body);
        out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        out.resize(start + record_size(len), 0);
    }

    /// Reads a body whose checksum verified. An error here means a record that verified but makes no
    /// sense: a bug or a foreign format, reported as corruption.
    pub(super) fn decode(body: &[u8]) -> Result<Rec<'_>, String> {
        let mut r = Reader { buf: body, pos: 0 };
        let kind = r.u8()?;
        let rec = match kind {
            KIND_QUEUE_DECL => {
                let qid = r.u64()?;
                let k = r.u8()?;
                let name = r.str()?;
                let kind = match k {
                    QUEUE_KIND_QUEUE => DeclKind::Queue,
                    QUEUE_KIND_SUBSCRIPTION => DeclKind::Subscription(r.str()?),
                    other => return Err(format!("unknown queue kind {other}")),
                };
                Rec::QueueDecl { qid, kind, name }
            }
            KIND_QUEUE_DELETE => Rec::QueueDelete(r.u64()?),
            KIND_MESSAGE => {
                let pid = r.u64()?;
                let qid = r.u64()?;
                let delivered = r.u32()?;
                let released = r.u32()?;
                let bytes = &body[r.pos..];
                r.pos = body.len();
                Rec::Message {
                    pid,
                    qid,
                    delivered,
                    released,
                    bytes,
                }
            }
            KIND_ACK => Rec::Ack(r.u64()?),
            KIND_DELIVERED => Rec::Delivered(r.u64()?),
            KIND_RELEASED => Rec::Released(r.u64()?),
            other => return Err(format!("unknown record kind {other}")),
        };
        if r.pos != body.len() {
            return Err(format!("{} stray bytes after a record", body.len() - r.pos));
        }
        Ok(rec)
    }
}

/// A record's size on disk for a body of `body_len` bytes: head, body, padding to 8.
pub(super) fn record_size(body_len: usize) -> usize {
    (RECORD_HEAD + body_len + 7) & !7
}

/// What is at an aligned offset of a segment buffer.
pub(super) enum Slot<'a> {
    /// Zeros up to the end: nothing was written from here on.
    End,
    /// A record whose checksum verifies: its body and its size on disk.
    Valid(&'a [u8], usize),
    /// Neither: a torn write, or damage.
    Invalid(&'static str),
}

/// Looks at the record starting at `off` (aligned) in the bytes `buf` of the segment whose
/// [`record_key`] is `key`.
pub(super) fn slot(buf: &[u8], off: usize, key: u64) -> Slot<'_> {
    if off + RECORD_HEAD > buf.len() {
        return if buf[off..].iter().all(|b| *b == 0) {
            Slot::End
        } else {
            Slot::Invalid("stray bytes at the end of the segment")
        };
    }
    let len = u32_at(buf, off) as usize;
    if len == 0 {
        return if buf[off..].iter().all(|b| *b == 0) {
            Slot::End
        } else {
            Slot::Invalid("zero record length before data")
        };
    }
    if len > buf.len() - off - RECORD_HEAD {
        return Slot::Invalid("record length past the end of the segment");
    }
    let body = &buf[off + RECORD_HEAD..off + RECORD_HEAD + len];
    let crc = crc32c::crc32c_append(crc32c::crc32c(&key.to_le_bytes()), body);
    if crc != u32_at(buf, off + 4) {
        return Slot::Invalid("record checksum mismatch");
    }
    Slot::Valid(body, record_size(len).min(buf.len() - off))
}

/// The first aligned offset after `off` holding a record that verifies, if any: what tells a torn tail
/// (nothing valid after it) from damage in the middle (valid records after it).
pub(super) fn next_valid(buf: &[u8], off: usize, key: u64) -> Option<usize> {
    let mut at = off + 8;
    while at + RECORD_HEAD <= buf.len() {
        // Most of a segment's unwritten rest is zeros: skip them without a checksum.
        if u32_at(buf, at) != 0 {
            if let Slot::Valid(..) = slot(buf, at, key) {
                return Some(at);
            }
        }
        at += 8;
    }
    None
}

fn put_id(out: &mut Vec<u8>, kind: u8, id: u64) {
    out.push(kind);
    out.extend_from_slice(&id.to_le_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

pub(super) fn u32_at(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// A bounds-checked reader of a record body.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() - self.pos < n {
            return Err("record body too short for its fields".into());
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn str(&mut self) -> Result<&'a str, String> {
        let n = self.u32()? as usize;
        std::str::from_utf8(self.take(n)?).map_err(|_| "queue name not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_are_bound_to_their_segment() {
        let recs = [
            Rec::QueueDecl {
                qid: 7,
                kind: DeclKind::Subscription("news"),
                name: "news/sub-1",
            },
            Rec::QueueDecl {
                qid: 8,
                kind: DeclKind::Queue,
                name: "q",
            },
            Rec::QueueDelete(7),
            Rec::Message {
                pid: 1,
                qid: 8,
                delivered: 2,
                released: 1,
                bytes: b"hello",
            },
            Rec::Ack(1),
            Rec::Delivered(2),
            Rec::Released(3),
        ];
        for rec in recs {
            let mut buf = vec![0u8; 8];
            rec.encode(5, &mut buf);
            assert_eq!(buf.len() - 8, rec.size());
            assert_eq!(buf.len() % 8, 0);
            buf.extend_from_slice(&[0u8; 64]);
            match slot(&buf, 8, 5) {
                Slot::Valid(body, size) => {
                    assert_eq!(size, rec.size());
                    assert_eq!(Rec::decode(body).unwrap(), rec);
                }
                _ => panic!("{rec:?} does not verify"),
            }
            assert!(matches!(slot(&buf, 8, 6), Slot::Invalid(_)));
        }
    }

    #[test]
    fn header_round_trips_and_detects_damage() {
        let h = Header {
            seq: 3,
            next_pid: 10,
            next_qid: 4,
            secret: 0x5eed,
        };
        let mut bytes = h.encode();
        assert_eq!(Header::decode(&bytes).unwrap(), h);
        bytes[20] ^= 1;
        assert!(Header::decode(&bytes).is_err());
    }
}
