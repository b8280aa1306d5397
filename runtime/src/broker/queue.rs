//! One broker queue: its messages, its consumers (with their credit as last seen and the messages assigned
//! to them), and the producer connections to wake when it has room again.
//!
//! A queue is shared by every connection that uses it, behind one mutex. Connections never touch each
//! other's objects: a message meant for a consumer on another connection is put in that consumer's outbox
//! under the lock, and its connection is woken; it sends the outbox from its own callback.
//!
//! Messages wait in two priority levels, each in arrival order: header priority 5 and above before 0 to 4
//! (the default is 4). With two distinct priorities the spec makes 0–4 one level and 5–255 the other
//! [AMQP 1.0 §3.2.1]; RabbitMQ's quorum queues do the same. A message that expires (header ttl from its
//! arrival here, or properties absolute-expiry-time) is never handed out; one given back too often may not
//! stay either. Both leave through the broker's [`DeadLetters`], after the queue's lock is released.
//!
//! What a queue holds is counted as the broker's limits need it: messages waiting, messages held by consumers
//! (sent or about to be, not yet settled), their bytes, and the credit producers were given and have not
//! used yet (`reserved`). Producers are given credit only for the room left after all of these, so a queue
//! never holds more than its `max_depth`; bytes and the broker-wide [`Memory`] cannot be promised message
//! by message, so credit stops once either is reached (what is already in flight still comes in).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use nucleon_protocol::codec::Map;
use nucleon_protocol::frame::Header;
use nucleon_protocol::RawMessage;

use super::stats::QueueCounters;
use super::store::{Store, Ticket};
use crate::views::{ConnectionWaker, SenderId};

/// The connection id of no connection (the broker numbers them from 1): what the queue does for it wakes
/// every consumer's connection.
const NO_CONNECTION: u64 = 0;

/// The priority levels, highest first.
const LEVELS: usize = 2;

/// A message's level: 0 (high) for header priority 5 and above, 1 for 0 to 4 [AMQP 1.0 §3.2.1].
fn level(m: &RawMessage) -> usize {
    usize::from(m.priority() <= 4)
}

/// A queued message and its place in the queue's order: 56 bytes besides the message's own bytes, which
/// is what a waiting message costs. What few messages need (an expiry time, having been given back) is kept
/// apart, allocated only for them.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// Arrival order in this queue; released messages go back to their place by it. In a queue with a
    /// journal it is the message's id there (acknowledged there when it leaves): the journal numbers
    /// messages in the order they are appended, and a queue appends under its lock, in arrival order.
    pub(crate) seq: u64,
    /// The message as it came (its bytes, checked but not decoded), with its header changed when it
    /// comes back from a consumer.
    pub(crate) message: RawMessage,
    extra: Option<Box<Extra>>,
}

/// What an [`Entry`] holds only for some messages.
#[derive(Clone, Debug, Default)]
struct Extra {
    /// When it expires: it is not handed out from then on.
    expires: Option<Instant>,
    /// How many times a consumer acquired it and gave it back (or was lost with it).
    returns: u32,
    /// Consumers that gave it back as undeliverable-here: it is not sent to them again.
    refused: Vec<ConsumerKey>,
    /// The size counted in the queue's and the broker's bytes, once its encoding has changed since it came.
    counted: Option<usize>,
}

impl Entry {
    fn new(message: RawMessage, now: &mut Now) -> Entry {
        let extra = expiry(&message, now).map(|t| {
            Box::new(Extra {
                expires: Some(t),
                ..Extra::default()
            })
        });
        Entry {
            seq: 0,
            message,
            extra,
        }
    }

    fn extra(&mut self) -> &mut Extra {
        self.extra.get_or_insert_with(Box::default)
    }

    /// Its encoded size when it came, counted in the queue's and the broker's bytes while it is here.
    fn size(&self) -> usize {
        self.extra
            .as_ref()
            .and_then(|x| x.counted)
            .unwrap_or(self.message.len())
    }

    fn expires(&self) -> Option<Instant> {
        self.extra.as_ref().and_then(|x| x.expires)
    }

    fn returns(&self) -> u32 {
        self.extra.as_ref().map_or(0, |x| x.returns)
    }

    /// The consumers that gave it back as undeliverable-here.
    fn refused(&self) -> &[ConsumerKey] {
        self.extra.as_ref().map_or(&[], |x| &x.refused)
    }

    /// A consumer gave it back as undeliverable-here: it is not sent to that consumer again.
    pub(crate) fn refuse(&mut self, consumer: ConsumerKey) {
        self.extra().refused.push(consumer);
    }

    /// Replaces the message's header (only the header is encoded again); its counted size stays the one
    /// it came with.
    fn set_header(&mut self, header: &Header) {
        let size = self.size();
        self.extra().counted.get_or_insert(size);
        self.message.set_header(header);
    }

    /// A consumer that acquired the message gives it back, or is lost with it: first-acquirer is cleared
    /// (it has been acquired), and a `failed` attempt increments delivery-count [AMQP 1.0 §3.2.1]. A
    /// released message is otherwise unchanged [AMQP 1.0 §3.4.4]. The header is encoded again only when
    /// one of its fields changes, and the other sections never are.
    pub(crate) fn returned(&mut self, failed: bool) {
        let x = self.extra();
        x.returns = x.returns.saturating_add(1);
        if failed || self.message.first_acquirer() {
            let mut h = self.message.header();
            h.first_acquirer = false;
            if failed {
                h.delivery_count = h.delivery_count.saturating_add(1);
            }
            self.set_header(&h);
        }
    }

    /// Merges a consumer's `modified` message-annotations into the message's, replacing those with the
    /// same key [AMQP 1.0 §3.4.5]: the message is decoded and encoded again, its counted size unchanged.
    /// One that does not decode (its sections exceed the decode budget) keeps its annotations.
    pub(crate) fn annotate(&mut self, annotations: Map) {
        let mut m = match self.message.decode() {
            Ok(m) => m,
            Err(e) => {
                log::warn!("a modified message does not decode ({e}): its annotations are kept");
                return;
            }
        };
        let ours = m.message_annotations_mut();
        for (k, v) in annotations.into_entries() {
            ours.insert(k, v);
        }
        match RawMessage::from_message(&m) {
            Ok(raw) => {
                let size = self.size();
                self.extra().counted.get_or_insert(size);
                self.message = raw;
            }
            Err(e) => log::warn!("a modified message is refused ({e}): its annotations are kept"),
        }
    }

    fn expired(&self, now: &mut Now) -> bool {
        self.expires().is_some_and(|t| t <= now.get())
    }

    /// A consumer acquired it before: sending it again is a redelivery.
    pub(crate) fn redelivery(&self) -> bool {
        self.returns() > 0
    }
}

/// The clock, read at most once per queue operation and only for a message that can expire.
#[derive(Default)]
struct Now(Option<Instant>);

impl Now {
    fn get(&mut self) -> Instant {
        *self.0.get_or_insert_with(Instant::now)
    }
}

/// When a message arriving now expires: its header ttl from now, or its properties absolute-expiry-time,
/// whichever comes first [AMQP 1.0 §3.2.1, §3.2.4]. `None`: never (or too far ahead to say).
fn expiry(m: &RawMessage, now: &mut Now) -> Option<Instant> {
    let ttl = m.ttl().map(|ms| Duration::from_millis(u64::from(ms)));
    let absolute = m.absolute_expiry_time().map(|t| {
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Duration::from_millis(u64::try_from(t.0.saturating_sub(wall)).unwrap_or(0))
    });
    let left = match (ttl, absolute) {
        (Some(a), Some(b)) => a.min(b),
        (a, b) => a.or(b)?,
    };
    now.get().checked_add(left)
}

/// A dead letter: the message without its ttl and absolute-expiry-time. Removing the ttl re-encodes only
/// the header; removing the absolute-expiry-time decodes the message. `None` for one that does not decode
/// (its sections exceed the decode budget): it is dropped.
fn undying(mut message: RawMessage) -> Option<RawMessage> {
    if message.ttl().is_some() {
        let mut h = message.header();
        h.ttl = None;
        message.set_header(&h);
    }
    if message.absolute_expiry_time().is_none() {
        return Some(message);
    }
    let undying = message.decode().and_then(|mut m| {
        m.properties_mut().absolute_expiry_time = None;
        RawMessage::from_message(&m)
    });
    match undying {
        Ok(m) => Some(m),
        Err(e) => {
            log::warn!("a dead letter does not decode ({e})");
            None
        }
    }
}

/// Why a message may not stay in its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    Expired,
    MaxDeliveries,
}

/// What a broker's queues do with the messages that may not stay in them (expired, or given back after
/// `max_deliveries` deliveries): move them to the dead-letter queue, or drop them; counted either way.
/// Shared by the queues of one broker. The dead-letter queue's own has no dead-letter queue: what may not
/// stay there is dropped.
#[derive(Debug, Default)]
pub(crate) struct DeadLetters {
    pub(crate) max_deliveries: Option<u32>,
    pub(crate) queue: Option<Arc<Queue>>,
    pub(crate) counts: Arc<DeadLetterCounts>,
}

/// The broker's counts of messages that left a queue undelivered.
#[derive(Debug, Default)]
pub(crate) struct DeadLetterCounts {
    /// Expired in a queue.
    pub(crate) expired: AtomicU64,
    /// Given back after `max_deliveries` deliveries.
    pub(crate) max_deliveries: AtomicU64,
    /// Of those, moved to the dead-letter queue (the others were dropped).
    pub(crate) dead_lettered: AtomicU64,
}

impl DeadLetters {
    /// Moves dead messages of queue `from` to the dead-letter queue if there is one with room, else drops
    /// them. A dead letter no longer expires: its ttl and absolute-expiry-time are removed. Counted here
    /// and in `from`'s counters.
    fn bury(&self, from: &Queue, dead: Vec<(Fate, Entry)>) {
        for (fate, e) in dead {
            let counter = match fate {
                Fate::Expired => {
                    from.counters.expired.fetch_add(1, Ordering::Relaxed);
                    &self.counts.expired
                }
                Fate::MaxDeliveries => &self.counts.max_deliveries,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let moved = match &self.queue {
                Some(q) => match undying(e.message) {
                    Some(message) => q.enqueue(message, NO_CONNECTION, false).is_ok(),
                    None => false,
                },
                None => false,
            };
            if moved {
                self.counts.dead_lettered.fetch_add(1, Ordering::Relaxed);
                from.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
            }
            log::debug!(
                "a message on {} {} and was {}",
                from.name,
                match fate {
                    Fate::Expired => "expired",
                    Fate::MaxDeliveries => "reached the maximum deliveries",
                },
                if moved { "dead-lettered" } else { "dropped" }
            );
        }
    }
}

/// The bytes of the messages all the broker's queues hold (waiting and unsettled), against the broker's
/// memory limit: at or over it, no producer gets credit (as RabbitMQ's memory alarm blocks publishers), and
/// the anonymous relay and topics refuse messages. Producers waiting for credit are woken when it clears.
#[derive(Debug, Default)]
pub(crate) struct Memory {
    used: AtomicUsize,
    pub(crate) limit: Option<usize>,
    /// Producer connections withheld credit: woken once the alarm clears.
    producers: Mutex<HashMap<u64, ConnectionWaker>>,
}

impl Memory {
    /// A broker's memory, with this limit (`None`: no limit).
    pub(crate) fn new(limit: Option<usize>) -> Memory {
        Memory {
            limit,
            ..Memory::default()
        }
    }

    /// The bytes held now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn over(&self) -> bool {
        self.limit.is_some_and(|l| self.used() >= l)
    }

    fn add(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    /// Frees `n` bytes; returns the producers to wake if that cleared the alarm.
    fn sub(&self, n: usize) -> Vec<ConnectionWaker> {
        let before = self.used.fetch_sub(n, Ordering::Relaxed);
        match self.limit {
            Some(l) if before >= l && before - n < l => {
                log::info!("memory below its limit ({l} bytes) again: producers get credit");
                self.producers().values().cloned().collect()
            }
            _ => Vec::new(),
        }
    }

    fn producers(&self) -> MutexGuard<'_, HashMap<u64, ConnectionWaker>> {
        self.producers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets a producer connection (it closed).
    pub(crate) fn forget(&self, conn: u64) {
        self.producers().remove(&conn);
    }
}

/// What one queue may hold, and the memory of the broker it belongs to.
#[derive(Clone, Debug, Default)]
pub(crate) struct Limits {
    /// Messages, waiting or unsettled.
    pub(crate) max_depth: Option<usize>,
    /// Their bytes.
    pub(crate) max_bytes: Option<usize>,
    pub(crate) memory: Arc<Memory>,
}

impl Limits {
    /// Whether anything is limited: then producer credit follows the room (see [`Queue::room`]).
    pub(crate) fn bounded(&self) -> bool {
        self.max_depth.is_some() || self.max_bytes.is_some() || self.memory.limit.is_some()
    }
}

/// Why [`Queue::enqueue`] did not take a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The queue was deleted.
    Deleted,
    /// It is full (messages, bytes or the broker's memory), and the message had no credit reserved.
    Full,
    /// Its journal could not take the message (the data directory is full, or the store failed).
    Journal(String),
}

/// Where a durable queue's messages are kept: the broker's journal, under the queue's id there.
#[derive(Clone, Debug)]
pub(crate) struct Journal {
    pub(crate) store: Store,
    pub(crate) qid: u64,
}

/// A consumer: a sending link of one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConsumerKey {
    pub(crate) conn: u64,
    pub(crate) link: SenderId,
}

#[derive(Debug)]
struct Consumer {
    key: ConsumerKey,
    waker: Option<ConnectionWaker>,
    /// Credit as last seen by its connection, minus what is in the outbox.
    credit: u32,
    /// Messages assigned to this consumer, to be sent by its connection.
    outbox: VecDeque<Entry>,
    /// Its connection was woken for what was assigned to it and has not taken it yet.
    woken: bool,
    /// COPY distribution: the sequence number of the next message to browse (messages stay in the queue).
    browse: Option<u64>,
}

#[derive(Debug)]
struct State {
    /// The waiting messages by level, highest first, each in arrival (`seq`) order.
    levels: [VecDeque<Entry>; LEVELS],
    next_seq: u64,
    consumers: Vec<Consumer>,
    /// Where the round robin over consumers goes on.
    cursor: usize,
    /// Producer connections (by id) with links here, woken when a bounded queue has room again for one
    /// that asked for more credit than it got.
    producers: HashMap<u64, Producer>,
    /// The queue was deleted: it takes no more messages.
    deleted: bool,
    /// Messages assigned to consumers (not browsers) and not settled yet.
    held: usize,
    /// Bytes of the waiting and held messages.
    bytes: usize,
    /// Credit given to producers and not used yet: room promised to messages on their way.
    reserved: usize,
    /// The size of the last message that came, to turn bytes into credit.
    last_size: usize,
    /// When it was last attached to, or a link of it closed: an unused queue is idle from then.
    last_used: Instant,
}

impl Default for State {
    fn default() -> Self {
        State {
            levels: Default::default(),
            next_seq: 0,
            consumers: Vec::new(),
            cursor: 0,
            producers: HashMap::new(),
            deleted: false,
            held: 0,
            bytes: 0,
            reserved: 0,
            last_size: 0,
            last_used: Instant::now(),
        }
    }
}

impl State {
    fn depth(&self) -> usize {
        self.levels.iter().map(VecDeque::len).sum()
    }
}

/// A connection with producer links to a queue.
#[derive(Debug)]
struct Producer {
    waker: ConnectionWaker,
    links: usize,
    /// Its last [`Queue::reserve`] got less than it asked for: it is woken when there is room again. One that
    /// got all it asked for needs no wake, as it asks again when it has used its credit.
    starved: bool,
}

/// What a queue operation leaves to do once the lock is released.
#[derive(Default)]
struct After {
    wake: Vec<ConnectionWaker>,
    dead: Vec<(Fate, Entry)>,
    /// Journal ids of the messages that left for good, acknowledged once the dead ones are buried (a dead
    /// letter is in the dead-letter queue's journal before it leaves this one's).
    acks: Vec<u64>,
}

/// A named queue.
#[derive(Debug)]
pub(crate) struct Queue {
    pub(crate) name: String,
    /// Made for a dynamic source or as a topic subscription: deleted when its link closes.
    pub(crate) temporary: bool,
    limits: Limits,
    dead_letters: Arc<DeadLetters>,
    /// What went through it, for [`Broker::stats`](super::Broker::stats).
    pub(crate) counters: QueueCounters,
    /// Durable: every message is in the broker's journal while it is here.
    journal: Option<Journal>,
    state: Mutex<State>,
}

impl Queue {
    pub(crate) fn new(
        name: String,
        temporary: bool,
        limits: Limits,
        dead_letters: Arc<DeadLetters>,
    ) -> Self {
        Queue {
            name,
            temporary,
            limits,
            dead_letters,
            counters: QueueCounters::default(),
            journal: None,
            state: Mutex::new(State::default()),
        }
    }

    /// The queue keeps its messages in `journal` (the broker has a data directory).
    pub(crate) fn with_journal(mut self, journal: Option<Journal>) -> Self {
        self.journal = journal;
        self
    }

    /// Its journal, if it is durable.
    pub(crate) fn journal(&self) -> Option<&Journal> {
        self.journal.as_ref()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes connections and disposes of dead messages, once the lock is released.
    fn finish(&self, after: After) {
        for w in after.wake {
            w.wake();
        }
        if !after.dead.is_empty() {
            self.dead_letters.bury(self, after.dead);
        }
        if let Some(j) = &self.journal {
            for pid in after.acks {
                j.store.ack(pid);
            }
        }
    }

    /// Messages waiting (not assigned to a consumer; expired ones count until a consumer would get them).
    pub(crate) fn depth(&self) -> usize {
        self.lock().depth()
    }

    /// Messages assigned to consumers and not settled yet.
    pub(crate) fn held(&self) -> usize {
        self.lock().held
    }

    /// Bytes of the waiting and unsettled messages.
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The limits this queue was made with.
    pub(crate) fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The messages that may still be promised: what `max_depth` leaves after the waiting, held and
    /// reserved ones, and, with `max_bytes`, what the bytes left take at the size of the last message that
    /// came (promises already made count at that size too). Nothing while the broker's memory is over its limit.
    fn room_in(&self, s: &State) -> usize {
        let l = &self.limits;
        if l.memory.over() {
            return 0;
        }
        let by_depth = l.max_depth.map_or(usize::MAX, |m| {
            m.saturating_sub(s.depth() + s.held + s.reserved)
        });
        let by_bytes = l.max_bytes.map_or(usize::MAX, |m| {
            // Promises are made at the size of the last message (one at a time before the first).
            let left = m.saturating_sub(s.bytes) / s.last_size.max(1);
            let left = if s.last_size == 0 { left.min(1) } else { left };
            left.saturating_sub(s.reserved)
        });
        by_depth.min(by_bytes)
    }

    /// Promises room to `n` messages a producer may now send (its credit). Returns how many it got: at most
    /// the room left, and while the room is shorter than what the producers would take, a share of it
    /// (an even split between the producer connections, at least one message), so that the first to ask
    /// does not take it all. A producer that got less than `n` is woken when there is room again.
    pub(crate) fn reserve(&self, n: usize, producer: u64, waker: &ConnectionWaker) -> usize {
        let mut s = self.lock();
        let room = self.room_in(&s);
        let share = match s.producers.len() {
            0 | 1 => room,
            k => (room / k).max(1),
        };
        let got = n.min(room).min(share);
        s.reserved += got;
        if got < n {
            if let Some(p) = s.producers.get_mut(&producer) {
                p.starved = true;
            }
        }
        if got == 0 && self.limits.memory.over() {
            self.limits
                .memory
                .producers()
                .insert(producer, waker.clone());
        }
        got
    }

    /// Gives back `n` promises a producer will not use (its link is gone).
    pub(crate) fn unreserve(&self, n: usize) {
        let mut s = self.lock();
        s.reserved = s.reserved.saturating_sub(n);
    }

    /// Appends a message to its level and hands it to a consumer if one has credit. `reserved`: it came
    /// with credit this queue promised (see [`reserve`](Self::reserve)), so it is always taken; otherwise
    /// (the anonymous relay, a topic, dead letters) only if there is room. A message already expired is
    /// disposed of at once.
    ///
    /// A durable queue appends the message to its journal first (under the queue's lock, so that no
    /// consumer can settle it before it is there), and returns the ticket the producer's `accepted` waits
    /// for; the journal's refusal (no room on disk) refuses the message.
    pub(crate) fn enqueue(
        &self,
        message: RawMessage,
        from_conn: u64,
        reserved: bool,
    ) -> Result<Option<Ticket>, Refused> {
        let mut now = Now::default();
        let mut e = Entry::new(message, &mut now);
        let mut after = After::default();
        let mut ticket = None;
        {
            let mut s = self.lock();
            if s.deleted {
                return Err(Refused::Deleted);
            }
            if reserved {
                s.reserved = s.reserved.saturating_sub(1);
            } else if self.limits.bounded() && self.room_in(&s) == 0 {
                return Err(Refused::Full);
            }
            s.last_size = e.size();
            if e.expired(&mut now) {
                self.counters.enqueued.fetch_add(1, Ordering::Relaxed);
                after.dead.push((Fate::Expired, e));
            } else {
                if let Some(j) = &self.journal {
                    let (pid, t) = j
                        .store
                        .append_message(j.qid, e.message.bytes())
                        .map_err(|err| Refused::Journal(err.to_string()))?;
                    e.seq = pid;
                    ticket = Some(t);
                } else {
                    e.seq = s.next_seq;
                    s.next_seq += 1;
                }
                self.counters.enqueued.fetch_add(1, Ordering::Relaxed);
                s.bytes += e.size();
                self.limits.memory.add(e.size());
                s.levels[level(&e.message)].push_back(e);
                self.dispatch(&mut s, from_conn, &mut after, &mut now);
            }
        }
        self.finish(after);
        Ok(ticket)
    }

    /// Puts back the messages recovered from the journal, in arrival order, whatever the limits (they
    /// were accepted). `delivered` and `released` are the journal's counts of acquisitions and releases:
    /// a message acquired before (the broker stopped with it unsettled, or it was given back) comes back
    /// with first-acquirer cleared and delivery-count raised by the acquisitions that were not releases
    /// [AMQP 1.0 §3.2.1, §3.4.4], and they count towards `max_deliveries`.
    pub(crate) fn restore(&self, messages: Vec<(u64, RawMessage, u32, u32)>) {
        let mut now = Now::default();
        let mut after = After::default();
        {
            let mut s = self.lock();
            for (pid, mut message, delivered, released) in messages {
                if delivered > 0 {
                    let mut h = message.header();
                    h.first_acquirer = false;
                    h.delivery_count = h
                        .delivery_count
                        .saturating_add(delivered.saturating_sub(released));
                    message.set_header(&h);
                }
                let mut e = Entry::new(message, &mut now);
                e.seq = pid;
                if delivered > 0 {
                    e.extra().returns = delivered;
                }
                if e.expired(&mut now) {
                    after.acks.push(pid);
                    after.dead.push((Fate::Expired, e));
                    continue;
                }
                s.bytes += e.size();
                self.limits.memory.add(e.size());
                s.levels[level(&e.message)].push_back(e);
            }
        }
        self.finish(after);
    }

    /// The message is being sent, unsettled, to a consumer: after a crash it comes back as delivered once
    /// more. Call [`write_through`](Self::write_through) before the transfers leave.
    pub(crate) fn delivering(&self, e: &Entry) {
        if let Some(j) = &self.journal {
            j.store.delivered(e.seq);
        }
    }

    /// Puts what [`delivering`](Self::delivering) recorded into the kernel, so that a broker killed after
    /// the transfers left still knows they did.
    pub(crate) fn write_through(&self) {
        if let Some(j) = &self.journal {
            j.store.write_through();
        }
    }

    /// A consumer released the message without delivery-failed: its delivery does not count for
    /// delivery-count after a restart [AMQP 1.0 §3.4.4].
    pub(crate) fn released(&self, e: &Entry) {
        if let Some(j) = &self.journal {
            j.store.released(e.seq);
        }
    }

    /// Whether a message without reserved credit would be taken now (for a topic, which puts a message in
    /// all its subscriptions or none).
    pub(crate) fn has_room(&self) -> bool {
        let s = self.lock();
        !s.deleted && (!self.limits.bounded() || self.room_in(&s) > 0)
    }

    /// Messages taken by a consumer left the queue for good (accepted, rejected, or sent pre-settled).
    /// Producers are woken when this made room, but not for nothing: a connection that settles nothing
    /// in its own wake callback must not wake itself again, or it would spin.
    pub(crate) fn settled<'a>(&self, entries: impl IntoIterator<Item = &'a Entry>) {
        let mut after = After::default();
        {
            let mut s = self.lock();
            let mut any = false;
            for e in entries {
                any = true;
                s.held = s.held.saturating_sub(1);
                self.forget(&mut s, e, &mut after);
            }
            if any {
                self.wake_producers(&mut s, NO_CONNECTION, &mut after);
            }
        }
        self.finish(after);
    }

    /// A message left: its bytes are no longer counted.
    fn forget(&self, s: &mut State, e: &Entry, after: &mut After) {
        s.bytes = s.bytes.saturating_sub(e.size());
        after.wake.extend(self.limits.memory.sub(e.size()));
        if self.journal.is_some() {
            after.acks.push(e.seq);
        }
    }

    /// Producers of a bounded queue that has room again, and that asked for more credit than they got, are
    /// woken to ask again.
    fn wake_producers(&self, s: &mut State, except: u64, after: &mut After) {
        if !self.limits.bounded()
            || !s.producers.values().any(|p| p.starved)
            || self.room_in(s) == 0
        {
            return;
        }
        for (conn, p) in &mut s.producers {
            if p.starved && *conn != except {
                p.starved = false;
                after.wake.push(p.waker.clone());
            }
        }
    }

    /// Puts messages back at their place near the head of their level (in their original order); one
    /// given back `max_deliveries` times is disposed of instead.
    pub(crate) fn requeue(&self, mut entries: Vec<Entry>, from_conn: u64) {
        if entries.is_empty() {
            return;
        }
        // Newest first: each one then lands in front of the ones just put back, which for the usual case
        // (all of them older than everything queued) is an O(1) insert at the head instead of O(k) shifts.
        entries.sort_unstable_by_key(|e| std::cmp::Reverse(e.seq));
        let mut after = After::default();
        {
            let mut s = self.lock();
            for e in entries {
                self.put_back(&mut s, e, &mut after);
            }
            self.dispatch(&mut s, from_conn, &mut after, &mut Now::default());
        }
        self.finish(after);
    }

    /// A message a consumer held comes back (released, modified, or its consumer lost).
    fn put_back(&self, s: &mut State, e: Entry, after: &mut After) {
        s.held = s.held.saturating_sub(1);
        let limit = self.dead_letters.max_deliveries;
        if s.deleted {
            // Its queue is gone: so is it.
            self.forget(s, &e, after);
        } else if limit.is_some_and(|m| e.returns() >= m) {
            self.forget(s, &e, after);
            after.dead.push((Fate::MaxDeliveries, e));
        } else {
            insert_in_order(&mut s.levels[level(&e.message)], e);
        }
    }

    /// Registers a consumer (with no credit yet). `browse`: COPY distribution.
    pub(crate) fn add_consumer(
        &self,
        key: ConsumerKey,
        waker: Option<ConnectionWaker>,
        browse: bool,
    ) {
        let mut s = self.lock();
        s.last_used = Instant::now();
        s.consumers.push(Consumer {
            key,
            waker,
            credit: 0,
            outbox: VecDeque::new(),
            woken: false,
            browse: browse.then_some(0),
        });
    }

    /// Removes a consumer; what it held unsettled or not yet sent goes back to the queue (for a browser it
    /// was only a copy, and is dropped).
    pub(crate) fn remove_consumer(&self, key: ConsumerKey, unsettled: Vec<Entry>) {
        let mut after = After::default();
        {
            let mut s = self.lock();
            let Some(i) = s.consumers.iter().position(|c| c.key == key) else {
                return;
            };
            s.last_used = Instant::now();
            let c = s.consumers.remove(i);
            if c.browse.is_none() {
                for e in c.outbox.into_iter().chain(unsettled) {
                    self.put_back(&mut s, e, &mut after);
                }
            }
            self.dispatch(&mut s, key.conn, &mut after, &mut Now::default());
        }
        self.finish(after);
    }

    /// The consumer's link has `credit`: assigns it what it may send now and returns that (the caller sends
    /// it, or requeues what it could not send).
    pub(crate) fn take(&self, key: ConsumerKey, credit: u32) -> Vec<Entry> {
        let mut after = After::default();
        let taken = {
            let mut s = self.lock();
            let Some(c) = s.consumers.iter_mut().find(|c| c.key == key) else {
                return Vec::new();
            };
            let queued = u32::try_from(c.outbox.len()).unwrap_or(u32::MAX);
            c.credit = credit.saturating_sub(queued);
            c.woken = false;
            self.dispatch(&mut s, key.conn, &mut after, &mut Now::default());
            s.consumers
                .iter_mut()
                .find(|c| c.key == key)
                .map(|c| c.outbox.drain(..).collect())
                .unwrap_or_default()
        };
        self.finish(after);
        taken
    }

    /// Deletes the queue: it takes no more messages, and drops those waiting. Returns how many it dropped.
    /// Its consumers' connections are woken to find it deleted.
    pub(crate) fn delete(&self) -> usize {
        let mut after = After::default();
        let dropped = {
            let mut s = self.lock();
            s.deleted = true;
            // The messages held by consumers are counted until settled, or given back (`put_back`).
            after
                .wake
                .extend(s.consumers.iter().filter_map(|c| c.waker.clone()));
            self.drop_waiting(&mut s, &mut after)
        };
        self.finish(after);
        self.forget_journal();
        dropped
    }

    /// A deleted durable queue leaves the journal, with every message of it still there.
    fn forget_journal(&self) {
        if let Some(j) = &self.journal {
            j.store.delete_queue(j.qid);
        }
    }

    /// Whether the queue was deleted.
    pub(crate) fn deleted(&self) -> bool {
        self.lock().deleted
    }

    /// Drops the messages waiting (not those assigned to consumers) and returns how many; producers
    /// waiting for room are woken.
    pub(crate) fn purge(&self) -> usize {
        let mut after = After::default();
        let dropped = {
            let mut s = self.lock();
            let dropped = self.drop_waiting(&mut s, &mut after);
            self.wake_producers(&mut s, NO_CONNECTION, &mut after);
            dropped
        };
        self.finish(after);
        dropped
    }

    /// Drops every waiting message, its bytes no longer counted; returns how many there were.
    fn drop_waiting(&self, s: &mut State, after: &mut After) -> usize {
        let gone: Vec<Entry> = s.levels.iter_mut().flat_map(|l| l.drain(..)).collect();
        for e in &gone {
            self.forget(s, e, after);
        }
        gone.len()
    }

    /// How many consumers (browsers included) it has.
    pub(crate) fn consumers(&self) -> usize {
        self.lock().consumers.len()
    }

    /// Registers a producer link of connection `conn`, woken when a bounded queue has room again.
    pub(crate) fn add_producer(&self, conn: u64, waker: ConnectionWaker) {
        let mut s = self.lock();
        s.last_used = Instant::now();
        s.producers
            .entry(conn)
            .or_insert(Producer {
                waker,
                links: 0,
                starved: false,
            })
            .links += 1;
    }

    /// Forgets a producer link of connection `conn`.
    pub(crate) fn remove_producer(&self, conn: u64) {
        let mut s = self.lock();
        s.last_used = Instant::now();
        if let Some(p) = s.producers.get_mut(&conn) {
            p.links -= 1;
            if p.links == 0 {
                s.producers.remove(&conn);
            }
        }
    }

    /// The queue is about to be used (an attach found it): it is not idle.
    pub(crate) fn touch(&self) {
        self.lock().last_used = Instant::now();
    }

    /// Deletes the queue if it has been empty and unused (no consumer, no producer, nothing held or
    /// promised) for `idle` since it was last used. The caller holds the broker's queue map, through which
    /// every new use finds the queue (and `touch`es it), so none can begin meanwhile.
    pub(crate) fn delete_if_idle(&self, idle: Duration) -> bool {
        let mut s = self.lock();
        let unused = s.consumers.is_empty()
            && s.producers.is_empty()
            && s.depth() == 0
            && s.held == 0
            && s.reserved == 0;
        if unused && s.last_used.elapsed() >= idle {
            s.deleted = true;
            drop(s);
            self.forget_journal();
            return true;
        }
        false
    }

    /// Takes the expired messages out of the waiting ones (they are otherwise found only when a consumer
    /// would get them): a queue nobody consumes does not keep them.
    pub(crate) fn sweep_expired(&self) {
        let mut after = After::default();
        {
            let mut s = self.lock();
            let mut now = Now::default();
            let mut gone = Vec::new();
            for level in &mut s.levels {
                if level.iter().any(|e| e.expires().is_some()) {
                    let (dead, live) = std::mem::take(level)
                        .into_iter()
                        .partition(|e| e.expired(&mut now));
                    *level = live;
                    gone.extend(dead);
                }
            }
            for e in gone {
                self.forget(&mut s, &e, &mut after);
                after.dead.push((Fate::Expired, e));
            }
        }
        self.finish(after);
    }

    /// Hands waiting messages to consumers with credit, highest level first, round robin (browsers get
    /// copies, in arrival order); expired messages met on the way are taken out as dead. Adds the
    /// connections to wake to `after` (not `except`, the connection doing this, which sends right after).
    fn dispatch(&self, s: &mut State, except: u64, after: &mut After, now: &mut Now) {
        let State {
            levels,
            consumers,
            cursor,
            held,
            bytes,
            ..
        } = s;
        // A consumer is woken once until it takes what it was given: its connection, woken, takes all of it.
        let wake = |c: &mut Consumer, after: &mut After| {
            if !c.woken && c.key.conn != except {
                c.woken = true;
                after.wake.extend(c.waker.clone());
            }
        };
        for c in consumers.iter_mut() {
            let Some(next) = c.browse else {
                continue;
            };
            for e in browsable(levels, next) {
                if c.credit == 0 {
                    break;
                }
                c.browse = Some(e.seq + 1);
                if !e.expired(now) {
                    wake(c, after);
                    c.outbox.push_back(e.clone());
                    c.credit -= 1;
                }
            }
        }
        let n = consumers.len();
        let mut moved = false;
        while let Some((l, pos, i)) = next_assignment(levels, consumers, *cursor) {
            let Some(e) = levels[l].remove(pos) else {
                break;
            };
            moved = true;
            if e.expired(now) {
                *bytes = bytes.saturating_sub(e.size());
                after.wake.extend(self.limits.memory.sub(e.size()));
                if self.journal.is_some() {
                    after.acks.push(e.seq);
                }
                after.dead.push((Fate::Expired, e));
                continue;
            }
            *held += 1;
            let c = &mut consumers[i];
            wake(c, after);
            c.outbox.push_back(e);
            c.credit -= 1;
            *cursor = (i + 1) % n;
        }
        if moved {
            self.wake_producers(s, except, after);
        }
    }
}

/// The waiting messages from sequence number `next` on, in arrival order across the levels (a merge of
/// the sorted levels).
fn browsable(levels: &[VecDeque<Entry>; LEVELS], next: u64) -> impl Iterator<Item = &Entry> {
    let [high, normal] = levels;
    let mut high = high
        .range(high.partition_point(|e| e.seq < next)..)
        .peekable();
    let mut normal = normal
        .range(normal.partition_point(|e| e.seq < next)..)
        .peekable();
    std::iter::from_fn(move || match (high.peek(), normal.peek()) {
        (Some(h), Some(n)) if n.seq < h.seq => normal.next(),
        (Some(_), _) => high.next(),
        (None, _) => normal.next(),
    })
}

/// The next message to hand out and the consumer to get it, as (level, position, consumer): the first
/// message, highest level first and in order within it, that a consumer with credit (round robin from
/// `cursor`) has not refused. Only messages refused as undeliverable-here are ever skipped, so this looks
/// past the head of a level only while such messages wait there.
fn next_assignment(
    levels: &[VecDeque<Entry>; LEVELS],
    consumers: &[Consumer],
    cursor: usize,
) -> Option<(usize, usize, usize)> {
    let n = consumers.len();
    for (l, messages) in levels.iter().enumerate() {
        for (pos, e) in messages.iter().enumerate() {
            let pick = (0..n).map(|k| (cursor + k) % n).find(|&i| {
                let c = &consumers[i];
                c.browse.is_none() && c.credit > 0 && !e.refused().contains(&c.key)
            });
            if let Some(i) = pick {
                return Some((l, pos, i));
            }
            if e.refused().is_empty() {
                // No consumer has credit at all.
                return None;
            }
        }
    }
    None
}

/// Inserts `e` where its sequence number belongs (a level is kept in arrival order).
fn insert_in_order(messages: &mut VecDeque<Entry>, e: Entry) {
    let at = messages.partition_point(|m| m.seq < e.seq);
    messages.insert(at, e);
}

#[cfg(test)]
mod tests {
    use super::*;
    use nucleon_protocol::codec::Timestamp;
    use nucleon_protocol::Message;

    fn raw(m: Message) -> RawMessage {
        RawMessage::from_message(&m).unwrap()
    }

    fn key(conn: u64, link: u64) -> ConsumerKey {
        ConsumerKey {
            conn,
            link: SenderId { conn, key: link },
        }
    }

    fn body(e: &Entry) -> i64 {
        match e.message.decode().unwrap().body_value() {
            Some(nucleon_protocol::Value::Long(n)) => *n,
            _ => -1,
        }
    }

    fn queue(max_depth: Option<usize>) -> Queue {
        let limits = Limits {
            max_depth,
            ..Limits::default()
        };
        Queue::new("q".into(), false, limits, Arc::default())
    }

    fn numbered(i: i64, priority: u8) -> Message {
        Message::builder().priority(priority).body(i).build()
    }

    #[test]
    fn consumers_with_credit_get_messages_round_robin() {
        let q = queue(None);
        q.add_consumer(key(1, 1), None, false);
        q.add_consumer(key(2, 1), None, false);
        assert!(q.take(key(1, 1), 10).is_empty());
        assert!(q.take(key(2, 1), 10).is_empty());
        for i in 0..4 {
            assert!(q
                .enqueue(raw(Message::with_body(i as i64)), 9, false)
                .is_ok());
        }
        let a: Vec<_> = q.take(key(1, 1), 10).iter().map(body).collect();
        let b: Vec<_> = q.take(key(2, 1), 10).iter().map(body).collect();
        assert_eq!(a, vec![0, 2]);
        assert_eq!(b, vec![1, 3]);
    }

    #[test]
    fn requeued_messages_go_back_to_the_head_in_order() {
        let q = queue(None);
        for i in 0..5 {
            assert!(q
                .enqueue(raw(Message::with_body(i as i64)), 9, false)
                .is_ok());
        }
        q.add_consumer(key(1, 1), None, false);
        let mut got = q.take(key(1, 1), 3);
        assert_eq!(q.depth(), 2);
        got.reverse();
        q.requeue(got, 1);
        let all: Vec<_> = q.take(key(1, 1), 10).iter().map(body).collect();
        assert_eq!(all, vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_message_refused_as_undeliverable_here_goes_to_another_consumer() {
        let q = queue(None);
        for i in 0..3 {
            assert!(q
                .enqueue(raw(Message::with_body(i as i64)), 9, false)
                .is_ok());
        }
        q.add_consumer(key(1, 1), None, false);
        let mut first = q.take(key(1, 1), 1);
        assert_eq!(first.iter().map(body).collect::<Vec<_>>(), vec![0]);
        first[0].refuse(key(1, 1));
        q.requeue(first, 1);
        let rest: Vec<_> = q.take(key(1, 1), 10).iter().map(body).collect();
        assert_eq!(
            rest,
            vec![1, 2],
            "not sent back to the consumer that refused it"
        );
        assert_eq!(q.depth(), 1);
        q.add_consumer(key(2, 1), None, false);
        let other: Vec<_> = q.take(key(2, 1), 10).iter().map(body).collect();
        assert_eq!(other, vec![0]);
    }

    #[test]
    fn a_lost_consumer_gives_back_what_it_held_and_a_browser_copies() {
        let q = queue(Some(3));
        q.add_consumer(key(1, 1), None, false);
        q.add_consumer(key(3, 1), None, true);
        for i in 0..3 {
            assert!(q
                .enqueue(raw(Message::with_body(i as i64)), 9, false)
                .is_ok());
        }
        assert_eq!(
            q.enqueue(raw(Message::with_body(3i64)), 9, false),
            Err(Refused::Full)
        );
        let browsed: Vec<_> = q.take(key(3, 1), 10).iter().map(body).collect();
        assert_eq!(browsed, vec![0, 1, 2]);
        let held = q.take(key(1, 1), 2);
        assert_eq!((q.depth(), q.held()), (1, 2));
        assert!(!q.has_room(), "held messages count against the depth");
        q.remove_consumer(key(1, 1), held);
        assert_eq!((q.depth(), q.held()), (3, 0));
        assert_eq!(q.depth(), 3);
    }

    #[test]
    fn high_priority_goes_first_and_a_returned_message_goes_back_to_its_place_in_its_level() {
        let q = queue(None);
        for (i, p) in [(0, 4), (1, 9), (2, 0), (3, 5), (4, 4)] {
            assert!(q.enqueue(raw(numbered(i, p)), 9, false).is_ok());
        }
        q.add_consumer(key(1, 1), None, false);
        let got = q.take(key(1, 1), 3);
        assert_eq!(got.iter().map(body).collect::<Vec<_>>(), vec![1, 3, 0]);
        q.requeue(got, 1);
        let all: Vec<_> = q.take(key(1, 1), 10).iter().map(body).collect();
        assert_eq!(all, vec![1, 3, 0, 2, 4], "5+ first, arrival order within");

        let browsed = queue(None);
        for (i, p) in [(0, 4), (1, 9), (2, 0)] {
            assert!(browsed.enqueue(raw(numbered(i, p)), 9, false).is_ok());
        }
        browsed.add_consumer(key(2, 1), None, true);
        let copies: Vec<_> = browsed.take(key(2, 1), 2).iter().map(body).collect();
        let rest: Vec<_> = browsed.take(key(2, 1), 10).iter().map(body).collect();
        assert_eq!((copies, rest), (vec![0, 1], vec![2]), "browsed by arrival");
    }

    #[test]
    fn an_expired_message_is_never_handed_out_and_is_counted() {
        let q = queue(None);
        let past = Message::builder()
            .absolute_expiry_time(Timestamp(1))
            .body(0i64)
            .build();
        assert!(q.enqueue(raw(past), 9, false).is_ok());
        assert_eq!(q.depth(), 0, "expired on arrival");
        let soon = Message::builder().ttl(1).body(1i64).build();
        assert!(q.enqueue(raw(soon), 9, false).is_ok());
        assert!(q.enqueue(raw(Message::with_body(2i64)), 9, false).is_ok());
        let start = Instant::now();
        while start.elapsed() <= Duration::from_millis(1) {
            std::hint::spin_loop();
        }
        q.add_consumer(key(3, 1), None, true);
        q.add_consumer(key(1, 1), None, false);
        let copies: Vec<_> = q.take(key(3, 1), 10).iter().map(body).collect();
        assert_eq!(copies, vec![2], "a browser skips it");
        let got: Vec<_> = q.take(key(1, 1), 10).iter().map(body).collect();
        assert_eq!(got, vec![2], "a consumer never gets it");
        assert_eq!(q.dead_letters.counts.expired.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn a_message_given_back_max_deliveries_times_is_dead_lettered_with_its_counts() {
        let counts = Arc::new(DeadLetterCounts::default());
        let dlq = Arc::new(Queue::new(
            "dlq".into(),
            false,
            Limits::default(),
            Arc::new(DeadLetters {
                counts: counts.clone(),
                ..DeadLetters::default()
            }),
        ));
        let dead_letters = Arc::new(DeadLetters {
            max_deliveries: Some(2),
            queue: Some(dlq.clone()),
            counts: counts.clone(),
        });
        let q = Queue::new("q".into(), false, Limits::default(), dead_letters);
        let message = Message::builder()
            .first_acquirer(true)
            .ttl(60_000)
            .absolute_expiry_time(Timestamp(4_000_000_000_000))
            .body(0i64)
            .build();
        assert!(q.enqueue(raw(message), 9, false).is_ok());
        q.add_consumer(key(1, 1), None, false);
        let mut got = q.take(key(1, 1), 1);
        got[0].returned(false);
        let header = got[0].message.header();
        assert!(!header.first_acquirer, "acquired before");
        assert_eq!(header.delivery_count, 0, "a release is no failed attempt");
        q.requeue(got, 1);
        let mut got = q.take(key(1, 1), 1);
        got[0].returned(true);
        assert_eq!(got[0].message.delivery_count(), 1, "a failed attempt");
        q.requeue(got, 1);
        assert_eq!(q.depth(), 0);
        assert_eq!(counts.max_deliveries.load(Ordering::Relaxed), 1);
        assert_eq!(counts.dead_lettered.load(Ordering::Relaxed), 1);
        dlq.add_consumer(key(2, 1), None, false);
        let dead = dlq.take(key(2, 1), 10);
        assert_eq!(dead.iter().map(body).collect::<Vec<_>>(), vec![0]);
        assert_eq!(dead[0].message.delivery_count(), 1);
        assert_eq!(dead[0].message.ttl(), None, "a dead letter does not expire");
        assert_eq!(dead[0].message.absolute_expiry_time(), None);
        assert!(!dead[0].message.first_acquirer());
    }

    #[test]
    fn modified_annotations_are_merged_into_the_message() {
        let q = queue(None);
        let m = Message::builder()
            .message_annotation("x-keep", 1i32)
            .message_annotation("x-mine", 2i32)
            .body(5i64)
            .build();
        assert!(q.enqueue(raw(m), 9, false).is_ok());
        q.add_consumer(key(1, 1), None, false);
        let mut got = q.take(key(1, 1), 1);
        let mut theirs = Map::new();
        theirs.insert(nucleon_protocol::Value::Symbol("x-mine".into()), 3i32);
        got[0].annotate(theirs);
        let back = got[0].message.decode().unwrap();
        let ours = back.message_annotations().unwrap();
        assert_eq!(
            ours.get(&nucleon_protocol::Value::Symbol("x-keep".into())),
            Some(&nucleon_protocol::Value::Int(1))
        );
        assert_eq!(
            ours.get(&nucleon_protocol::Value::Symbol("x-mine".into())),
            Some(&nucleon_protocol::Value::Int(3))
        );
        assert_eq!(body(&got[0]), 5);
    }

    #[test]
    fn an_entry_is_56_bytes() {
        assert_eq!(std::mem::size_of::<Entry>(), 56);
    }

    #[test]
    fn a_queued_message_keeps_only_its_own_bytes() {
        let payload = raw(Message::with_body(7i64)).into_bytes();
        let mut buffer = vec![0u8; 64 * 1024];
        buffer[10..10 + payload.len()].copy_from_slice(&payload);
        let buffer = bytes::Bytes::from(buffer);
        let mut m = RawMessage::parse(buffer.slice(10..10 + payload.len())).unwrap();
        m.compact();
        let q = queue(None);
        assert!(q.enqueue(m, 9, false).is_ok());
        assert!(buffer.try_into_mut().is_ok(), "the read buffer is not kept");
        assert_eq!(q.bytes(), payload.len());
    }

    #[test]
    fn a_returned_message_is_counted_at_the_size_it_came_with() {
        let q = queue(None);
        let m = raw(Message::with_body(0i64));
        let size = m.len();
        assert!(q.enqueue(m.clone(), 9, false).is_ok());
        assert!(q.enqueue(m, 9, false).is_ok());
        q.add_consumer(key(1, 1), None, false);
        let mut got = q.take(key(1, 1), 1);
        got[0].returned(true);
        assert!(got[0].message.len() > size, "a header was added");
        assert_eq!(got[0].message.delivery_count(), 1);
        q.requeue(got, 1);
        assert_eq!(q.bytes(), 2 * size);
        let got = q.take(key(1, 1), 1);
        assert_eq!(got[0].message.delivery_count(), 1);
        q.settled(&got);
        assert_eq!(q.bytes(), size, "the other one's");
    }

    #[test]
    fn a_deleted_queue_takes_no_messages() {
        let q = queue(None);
        assert!(q.enqueue(raw(Message::with_body(0i64)), 9, false).is_ok());
        assert_eq!(q.delete(), 1);
        assert_eq!(
            q.enqueue(raw(Message::with_body(1i64)), 9, false),
            Err(Refused::Deleted)
        );
    }

    /// A waker that counts its wakes.
    fn counting() -> (ConnectionWaker, Arc<AtomicUsize>) {
        let n = Arc::new(AtomicUsize::new(0));
        let m = n.clone();
        let w = ConnectionWaker(Arc::new(move || {
            m.fetch_add(1, Ordering::Relaxed);
        }));
        (w, n)
    }

    #[test]
    fn scarce_room_is_shared_and_only_producers_short_of_credit_are_woken() {
        let q = queue(Some(10));
        let (w1, woken1) = counting();
        let (w2, woken2) = counting();
        q.add_producer(1, w1.clone());
        q.add_producer(2, w2.clone());
        // Room for 10 between two producers: the first to ask gets half, not all of it.
        assert_eq!(q.reserve(100, 1, &w1), 5);
        assert_eq!(q.reserve(100, 2, &w2), 2, "half of the 5 left");
        for _ in 0..5 {
            assert!(q.enqueue(raw(Message::with_body(0i64)), 1, true).is_ok());
        }
        q.add_consumer(key(3, 1), None, false);
        let got = q.take(key(3, 1), 2);
        q.settled(&got);
        assert_eq!(
            (
                woken1.load(Ordering::Relaxed),
                woken2.load(Ordering::Relaxed)
            ),
            (1, 1),
            "both asked for more than they got"
        );
        // Woken, they ask again. One that gets all it asks for is not woken: it asks again when it has used
        // its credit.
        assert_eq!(q.reserve(1, 1, &w1), 1);
        assert_eq!(q.reserve(100, 2, &w2), 2);
        let got = q.take(key(3, 1), 2);
        q.settled(&got);
        assert_eq!(woken1.load(Ordering::Relaxed), 1);
        assert_eq!(woken2.load(Ordering::Relaxed), 2, "still short of credit");
    }

    #[test]
    fn a_consumer_is_woken_once_for_what_it_is_given_until_it_takes_it() {
        let q = queue(None);
        let (w, woken) = counting();
        q.add_consumer(key(1, 1), Some(w), false);
        assert!(q.take(key(1, 1), 10).is_empty());
        for i in 0..3 {
            assert!(q.enqueue(raw(Message::with_body(i)), 2, false).is_ok());
        }
        assert_eq!(woken.load(Ordering::Relaxed), 1);
        assert_eq!(q.take(key(1, 1), 10).len(), 3);
        assert!(q.enqueue(raw(Message::with_body(3i64)), 2, false).is_ok());
        assert_eq!(woken.load(Ordering::Relaxed), 2, "woken again once it took");
        // Nor is it woken for what its own connection enqueues: that connection sends right after.
        assert_eq!(q.take(key(1, 1), 10).len(), 1);
        assert!(q.enqueue(raw(Message::with_body(4i64)), 1, false).is_ok());
        assert_eq!(woken.load(Ordering::Relaxed), 2);
    }
}
