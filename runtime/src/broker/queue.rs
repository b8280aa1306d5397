//! One broker queue: its messages, its consumers (with their credit as last seen and the messages assigned
//! to them), and the producer connections to wake when it has room again.
//!
//! A queue is shared by every connection that uses it, behind one mutex. Connections never touch each
//! other's objects: a message meant for a consumer on another connection is put in that consumer's outbox
//! under the lock, and its connection is woken; it sends the outbox from its own callback.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use nucleon_protocol::Message;

use crate::views::{ConnectionWaker, SenderId};

/// A queued message and its place in the queue's order.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    /// Arrival order in this queue; released messages go back to their place by it.
    pub(crate) seq: u64,
    pub(crate) message: Message,
    /// Consumers that gave it back as undeliverable-here: it is not sent to them again.
    pub(crate) refused: Vec<ConsumerKey>,
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
    /// COPY distribution: the sequence number of the next message to browse (messages stay in the queue).
    browse: Option<u64>,
}

#[derive(Debug, Default)]
struct State {
    messages: VecDeque<Entry>,
    next_seq: u64,
    consumers: Vec<Consumer>,
    /// Where the round robin over consumers goes on.
    cursor: usize,
    /// Producer connections (by id) to wake when messages leave a bounded queue.
    producers: HashMap<u64, ConnectionWaker>,
}

/// A named queue.
#[derive(Debug)]
pub(crate) struct Queue {
    pub(crate) name: String,
    /// Made for a dynamic source or as a topic subscription: deleted when its link closes.
    pub(crate) temporary: bool,
    max_depth: Option<usize>,
    state: Mutex<State>,
}

impl Queue {
    pub(crate) fn new(name: String, temporary: bool, max_depth: Option<usize>) -> Self {
        Queue {
            name,
            temporary,
            max_depth,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Messages waiting (not assigned to a consumer).
    pub(crate) fn depth(&self) -> usize {
        self.lock().messages.len()
    }

    /// How many more messages a producer may send now: `None` when the queue is unbounded.
    pub(crate) fn room(&self) -> Option<usize> {
        let depth = self.depth();
        self.max_depth.map(|m| m.saturating_sub(depth))
    }

    /// Appends a message and hands it to a consumer if one has credit.
    pub(crate) fn enqueue(&self, message: Message, from_conn: u64) {
        let wake = {
            let mut s = self.lock();
            let seq = s.next_seq;
            s.next_seq += 1;
            s.messages.push_back(Entry {
                seq,
                message,
                refused: Vec::new(),
            });
            self.dispatch(&mut s, from_conn)
        };
        wake_all(wake);
    }

    /// Puts messages back at their place near the head of the queue (in their original order).
    pub(crate) fn requeue(&self, mut entries: Vec<Entry>, from_conn: u64) {
        if entries.is_empty() {
            return;
        }
        // Newest first: each one then lands in front of the ones just put back, which for the usual case
        // (all of them older than everything queued) is an O(1) insert at the head instead of O(k) shifts.
        entries.sort_unstable_by_key(|e| std::cmp::Reverse(e.seq));
        let wake = {
            let mut s = self.lock();
            for e in entries {
                insert_in_order(&mut s.messages, e);
            }
            self.dispatch(&mut s, from_conn)
        };
        wake_all(wake);
    }

    /// Registers a consumer (with no credit yet). `browse`: COPY distribution.
    pub(crate) fn add_consumer(
        &self,
        key: ConsumerKey,
        waker: Option<ConnectionWaker>,
        browse: bool,
    ) {
        self.lock().consumers.push(Consumer {
            key,
            waker,
            credit: 0,
            outbox: VecDeque::new(),
            browse: browse.then_some(0),
        });
    }

    /// Removes a consumer; what it held unsettled or not yet sent goes back to the queue (for a browser it
    /// was only a copy, and is dropped).
    pub(crate) fn remove_consumer(&self, key: ConsumerKey, unsettled: Vec<Entry>) {
        let wake = {
            let mut s = self.lock();
            let Some(i) = s.consumers.iter().position(|c| c.key == key) else {
                return;
            };
            let c = s.consumers.remove(i);
            if c.browse.is_none() {
                for e in c.outbox.into_iter().chain(unsettled) {
                    insert_in_order(&mut s.messages, e);
                }
            }
            self.dispatch(&mut s, key.conn)
        };
        wake_all(wake);
    }

    /// The consumer's link has `credit`: assigns it what it may send now and returns that (the caller sends
    /// it, or requeues what it could not send).
    pub(crate) fn take(&self, key: ConsumerKey, credit: u32) -> Vec<Entry> {
        let (taken, wake) = {
            let mut s = self.lock();
            let Some(c) = s.consumers.iter_mut().find(|c| c.key == key) else {
                return Vec::new();
            };
            let queued = u32::try_from(c.outbox.len()).unwrap_or(u32::MAX);
            c.credit = credit.saturating_sub(queued);
            let wake = self.dispatch(&mut s, key.conn);
            let taken = s
                .consumers
                .iter_mut()
                .find(|c| c.key == key)
                .map(|c| c.outbox.drain(..).collect())
                .unwrap_or_default();
            (taken, wake)
        };
        wake_all(wake);
        taken
    }

    /// Registers a producer connection, woken when a bounded queue has room again.
    pub(crate) fn add_producer(&self, conn: u64, waker: Option<ConnectionWaker>) {
        if let (Some(w), Some(_)) = (waker, self.max_depth) {
            self.lock().producers.insert(conn, w);
        }
    }

    /// Forgets a producer connection.
    pub(crate) fn remove_producer(&self, conn: u64) {
        self.lock().producers.remove(&conn);
    }

    /// Hands waiting messages to consumers with credit, round robin (browsers get copies), and returns the
    /// connections to wake (not `except`, the connection doing this, which sends right after).
    fn dispatch(&self, s: &mut State, except: u64) -> Vec<ConnectionWaker> {
        let State {
            messages,
            consumers,
            cursor,
            producers,
            ..
        } = s;
        let mut woken = vec![false; consumers.len()];
        for (i, c) in consumers.iter_mut().enumerate() {
            let Some(next) = c.browse else {
                continue;
            };
            let start = messages.partition_point(|e| e.seq < next);
            for e in messages.range(start..).take(c.credit as usize) {
                c.outbox.push_back(e.clone());
                c.credit -= 1;
                c.browse = Some(e.seq + 1);
                woken[i] = true;
            }
        }
        let n = consumers.len();
        let mut moved = false;
        while let Some((pos, i)) = next_assignment(messages, consumers, *cursor) {
            let Some(e) = messages.remove(pos) else {
                break;
            };
            let c = &mut consumers[i];
            c.outbox.push_back(e);
            c.credit -= 1;
            woken[i] = true;
            *cursor = (i + 1) % n;
            moved = true;
        }
        let mut wake: Vec<ConnectionWaker> = consumers
            .iter()
            .zip(woken)
            .filter(|(c, w)| *w && c.key.conn != except)
            .filter_map(|(c, _)| c.waker.clone())
            .collect();
        if moved && self.max_depth.is_some_and(|m| messages.len() < m) {
            wake.extend(
                producers
                    .iter()
                    .filter(|(conn, _)| **conn != except)
                    .map(|(_, w)| w.clone()),
            );
        }
        wake
    }
}

/// The next message to hand out and the consumer to get it: the first message, in queue order, that a
/// consumer with credit (round robin from `cursor`) has not refused. Only messages refused as
/// undeliverable-here are ever skipped, so this looks past the head only while such messages wait there.
fn next_assignment(
    messages: &VecDeque<Entry>,
    consumers: &[Consumer],
    cursor: usize,
) -> Option<(usize, usize)> {
    let n = consumers.len();
    for (pos, e) in messages.iter().enumerate() {
        let pick = (0..n).map(|k| (cursor + k) % n).find(|&i| {
            let c = &consumers[i];
            c.browse.is_none() && c.credit > 0 && !e.refused.contains(&c.key)
        });
        if let Some(i) = pick {
            return Some((pos, i));
        }
        if e.refused.is_empty() {
            // No consumer has credit at all.
            return None;
        }
    }
    None
}

/// Inserts `e` where its sequence number belongs (the queue is kept in arrival order).
fn insert_in_order(messages: &mut VecDeque<Entry>, e: Entry) {
    let at = messages.partition_point(|m| m.seq < e.seq);
    messages.insert(at, e);
}

/// Wakes connections, after the queue's lock is released.
fn wake_all(wakers: Vec<ConnectionWaker>) {
    for w in wakers {
        w.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(conn: u64, link: u64) -> ConsumerKey {
        ConsumerKey {
            conn,
            link: SenderId { conn, key: link },
        }
    }

    fn body(e: &Entry) -> i64 {
        match e.message.body_value() {
            Some(nucleon_protocol::Value::Long(n)) => *n,
            _ => -1,
        }
    }

    #[test]
    fn consumers_with_credit_get_messages_round_robin() {
        let q = Queue::new("q".into(), false, None);
        q.add_consumer(key(1, 1), None, false);
        q.add_consumer(key(2, 1), None, false);
        assert!(q.take(key(1, 1), 10).is_empty());
        assert!(q.take(key(2, 1), 10).is_empty());
        for i in 0..4 {
            q.enqueue(Message::with_body(i as i64), 9);
        }
        let a: Vec<_> = q.take(key(1, 1), 10).iter().map(body).collect();
        let b: Vec<_> = q.take(key(2, 1), 10).iter().map(body).collect();
        assert_eq!(a, vec![0, 2]);
        assert_eq!(b, vec![1, 3]);
    }

    #[test]
    fn requeued_messages_go_back_to_the_head_in_order() {
        let q = Queue::new("q".into(), false, None);
        for i in 0..5 {
            q.enqueue(Message::with_body(i as i64), 9);
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
        let q = Queue::new("q".into(), false, None);
        for i in 0..3 {
            q.enqueue(Message::with_body(i as i64), 9);
        }
        q.add_consumer(key(1, 1), None, false);
        let mut first = q.take(key(1, 1), 1);
        assert_eq!(first.iter().map(body).collect::<Vec<_>>(), vec![0]);
        first[0].refused.push(key(1, 1));
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
        let q = Queue::new("q".into(), false, Some(2));
        q.add_consumer(key(1, 1), None, false);
        q.add_consumer(key(3, 1), None, true);
        for i in 0..3 {
            q.enqueue(Message::with_body(i as i64), 9);
        }
        assert_eq!(q.room(), Some(0));
        let browsed: Vec<_> = q.take(key(3, 1), 10).iter().map(body).collect();
        assert_eq!(browsed, vec![0, 1, 2]);
        let held = q.take(key(1, 1), 2);
        assert_eq!(q.depth(), 1);
        q.remove_consumer(key(1, 1), held);
        assert_eq!(q.depth(), 3);
    }
}
