//! The broker's numbers, for metrics and management: what went through each queue ([`QueueCounters`], held
//! by the queue), the live connections with their sessions and links ([`Connections`]), and the snapshots
//! that [`Broker::stats`](super::Broker::stats) and [`Broker::connections`](super::Broker::connections)
//! return.
//!
//! Counters only grow (a Prometheus counter's contract); the other numbers are read from the queues and
//! connections as they are at the moment of the snapshot.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::queue::Queue;

/// What went through one queue since it was made.
#[derive(Debug, Default)]
pub(crate) struct QueueCounters {
    /// Messages put in it (expired ones included), given back ones not counted again.
    pub(crate) enqueued: AtomicU64,
    /// Messages sent to its consumers (browsers' copies included).
    pub(crate) delivered: AtomicU64,
    /// Of those, messages a consumer had acquired and given back (or was lost with) before.
    pub(crate) redelivered: AtomicU64,
    /// Messages that expired in it.
    pub(crate) expired: AtomicU64,
    /// Messages it moved to the dead-letter queue (expired, or delivered too often).
    pub(crate) dead_lettered: AtomicU64,
}

/// One live connection, as its handler keeps it up to date.
#[derive(Debug)]
pub(crate) struct ConnectionEntry {
    pub(crate) peer: SocketAddr,
    pub(crate) user: Mutex<String>,
    pub(crate) sessions: AtomicUsize,
    pub(crate) consumers: AtomicUsize,
    pub(crate) producers: AtomicUsize,
}

impl ConnectionEntry {
    pub(crate) fn new(peer: SocketAddr, user: &str) -> Self {
        ConnectionEntry {
            peer,
            user: Mutex::new(user.to_owned()),
            sessions: AtomicUsize::new(0),
            consumers: AtomicUsize::new(0),
            producers: AtomicUsize::new(0),
        }
    }

    pub(crate) fn set_user(&self, user: &str) {
        *self.user.lock().unwrap_or_else(|e| e.into_inner()) = user.to_owned();
    }

    fn stats(&self, id: u64) -> ConnectionStats {
        ConnectionStats {
            id,
            peer: self.peer,
            user: self.user.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            sessions: self.sessions.load(Ordering::Relaxed),
            consumers: self.consumers.load(Ordering::Relaxed),
            producers: self.producers.load(Ordering::Relaxed),
        }
    }
}

/// The broker's live connections by id: each is added when accepted and removed when its handler is
/// dropped (after its last callback), so none is left behind whatever way it ends.
#[derive(Debug, Default)]
pub(crate) struct Connections(Mutex<HashMap<u64, Arc<ConnectionEntry>>>);

impl Connections {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<ConnectionEntry>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn add(&self, id: u64, entry: Arc<ConnectionEntry>) {
        self.lock().insert(id, entry);
    }

    pub(crate) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Every live connection, by id.
    pub(crate) fn snapshot(&self) -> Vec<ConnectionStats> {
        let mut all: Vec<ConnectionStats> =
            self.lock().iter().map(|(id, e)| e.stats(*id)).collect();
        all.sort_unstable_by_key(|c| c.id);
        all
    }
}

/// One named queue at the moment of [`Broker::stats`](super::Broker::stats) (topic subscriptions are not
/// named queues and are not listed; their messages count in [`BrokerStats::memory`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Its address.
    pub name: String,
    /// Messages waiting (not held by a consumer).
    pub depth: usize,
    /// The encoded size of the messages it holds, waiting and held by consumers.
    pub bytes: usize,
    /// Messages held by its consumers: sent and not yet settled, or assigned and not yet sent.
    pub unsettled: usize,
    /// Consumer links (browsers included).
    pub consumers: usize,
    /// Messages put in it since it was made (a message given back is not counted again).
    pub enqueued: u64,
    /// Messages sent to its consumers (browsers' copies included).
    pub delivered: u64,
    /// Of the delivered, those sent again after a consumer had given them back (or was lost with them).
    pub redelivered: u64,
    /// Messages that expired in it (dropped, or dead-lettered).
    pub expired: u64,
    /// Messages it moved to the dead-letter queue.
    pub dead_lettered: u64,
}

/// The whole broker at the moment of [`Broker::stats`](super::Broker::stats).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerStats {
    /// Every named queue, by name.
    pub queues: Vec<QueueStats>,
    /// Connections accepted and not yet closed.
    pub connections: usize,
    /// Sessions of those connections.
    pub sessions: usize,
    /// Consumer links (the broker's senders) attached.
    pub consumers: usize,
    /// Producer links (the broker's receivers) attached.
    pub producers: usize,
    /// Failed logins on the listeners started with [`Broker::listen`](super::Broker::listen).
    pub authentication_failures: u64,
    /// The encoded size of every message the broker holds: waiting in a queue or a topic subscription,
    /// or held by a consumer.
    pub memory: usize,
    /// Messages consumers rejected (dropped).
    pub rejected: u64,
    /// Messages published to a topic with no subscriber (accepted, dropped).
    pub dropped_without_subscribers: u64,
    /// Messages that expired in any queue or subscription.
    pub expired: u64,
    /// Messages given back once more after the maximum number of deliveries.
    pub max_deliveries_reached: u64,
    /// Messages moved to the dead-letter queue.
    pub dead_lettered: u64,
}

impl BrokerStats {
    /// Links attached: consumers and producers.
    pub fn links(&self) -> usize {
        self.consumers + self.producers
    }
}

/// One live connection at the moment of [`Broker::connections`](super::Broker::connections).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// The broker's number for it (as in its log lines).
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// Who it authenticated as (`anonymous` until SASL is over, or for ANONYMOUS).
    pub user: String,
    /// Sessions it has begun.
    pub sessions: usize,
    /// Its consumer links.
    pub consumers: usize,
    /// Its producer links.
    pub producers: usize,
}

impl QueueCounters {
    fn load(&self) -> [u64; 5] {
        [
            &self.enqueued,
            &self.delivered,
            &self.redelivered,
            &self.expired,
            &self.dead_lettered,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    }
}

impl Queue {
    /// This queue's numbers now.
    pub(crate) fn stats(&self) -> QueueStats {
        let [enqueued, delivered, redelivered, expired, dead_lettered] = self.counters.load();
        QueueStats {
            name: self.name.clone(),
            depth: self.depth(),
            bytes: self.bytes(),
            unsettled: self.held(),
            consumers: self.consumers(),
            enqueued,
            delivered,
            redelivered,
            expired,
            dead_lettered,
        }
    }
}
