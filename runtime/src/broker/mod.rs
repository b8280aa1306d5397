//! An at-least-once AMQP broker that runs in-process: [`Broker`] is a [`ListenHandler`], so
//! `container.listen(addr, broker.clone())` serves it, and the `broker` example binary is a thin CLI over it.
//!
//! * A queue is made on demand for each address named by an attaching link's source (consumers) or target
//!   (producers). A producer link with no target address (anonymous relay) routes each message by its `to`;
//!   [`Broker::listen`] offers the `ANONYMOUS-RELAY` capability in `open` (a plain `container.listen` with
//!   the broker as handler relays too, but offers only what its [`ListenOptions`] say).
//! * A message from an unsettled producer is accepted only once it is enqueued. Consumers with credit get
//!   messages round robin, header priority 5 and above before 0 to 4 (the default 4; two levels, as the spec
//!   allows [AMQP 1.0 §3.2.1] and RabbitMQ's quorum queues do), in arrival order within a level. A message
//!   leaves the broker when its consumer accepts it; rejected, it is dropped and counted
//!   ([`Broker::rejected`]). Released, it goes back to its place at the head of its level with first-acquirer
//!   cleared and delivery-count unchanged [AMQP 1.0 §3.4.4]; modified, the same, plus one on delivery-count
//!   with delivery-failed, its annotations merged into the message's, and with undeliverable-here it is never
//!   sent to that consumer again (it waits for another) [AMQP 1.0 §3.4.5]. Settled with no outcome, or held
//!   unsettled by a consumer whose link or connection is lost, it goes back as if modified with
//!   delivery-failed (the consumer may have processed it: the redelivery says it may be a duplicate). The
//!   first delivery forwards the header as the producer sent it. Consumers whose link is pre-settled get
//!   at-most-once delivery.
//! * A message given back [`BrokerOptions::max_deliveries`] times (default 10; releases count) is not queued
//!   again, and one that expires (header ttl from its arrival, or absolute-expiry-time) is never delivered:
//!   both go to [`BrokerOptions::dead_letter_address`], or are dropped (default); counted by
//!   [`Broker::max_deliveries_reached`], [`Broker::expired`] and [`Broker::dead_lettered`]. An expired message
//!   is found on arrival or when a consumer would get it.
//! * A dynamic source gets a temporary queue with a unique address, deleted when its link closes. Its
//!   address is not made again: a link attaching to it is refused, and a message sent to it (by its `to` or
//!   through a link attached before) is rejected, with `amqp:not-found`. Distribution mode `copy` browses a
//!   queue (in arrival order) without consuming it. Drain is honoured.
//! * Limits ([`BrokerOptions`]): a queue holds at most `max_queue_depth` messages, waiting or unsettled,
//!   and `max_queue_bytes`; all queues together `max_memory` (1 GiB by default). Producers of a bounded
//!   queue get credit only for the room left (each credit a promise of room), so a producer that keeps to
//!   its credit is never refused; past the bytes or memory limit no credit is given until consumers take
//!   messages (every producer waiting on memory is woken then, as RabbitMQ's memory alarm does). What
//!   comes without credit (the anonymous relay, an overshooting producer, a topic publish) is rejected with
//!   `amqp:resource-limit-exceeded` when there is no room. At most `max_queues` queues exist; queues made
//!   on demand that stay empty and unused for `auto_delete_after` are deleted by the sweep
//!   ([`Broker::sweep`], every 10 s once [`Broker::listen`] ran), which also drops expired messages.
//! * Topics (publish/subscribe, as Artemis and Qpid JMS clients expect): an address is a topic when it starts
//!   with one of [`BrokerOptions::topic_prefixes`], or once a link attaches to it with the [`TOPIC`]
//!   capability on its terminus (the consumer's source, the producer's target) [AMQP 1.0 §3.5.3, §3.5.4],
//!   unless it is a queue: such a link is refused with `amqp:precondition-failed` (answered with no terminus,
//!   then detached [AMQP 1.0 §2.6.3]). From then on the broker remembers it as a topic, so anonymous-relay messages whose `to` names it are
//!   published too. The broker's attach reply carries the `topic` capability for a topic address. Each
//!   consumer of a topic gets its own subscription, a private queue with everything above (round robin,
//!   release and modify, drain, pre-settled delivery; `copy` distribution is an ordinary subscription), which
//!   [`Broker::queue_depth`] does not show and which is deleted with its messages when its link or
//!   connection goes. A message published to a topic is put in every subscription there is at that moment,
//!   then accepted; with no subscriber it is accepted and dropped (topic semantics, counted by
//!   [`Broker::dropped_without_subscribers`]). Subscriptions have the queues' limits: a message goes to all
//!   of them or, if one is full, is rejected (`amqp:resource-limit-exceeded`); producers of a topic get the
//!   normal credit window. Each subscription gets one producer's messages in the order they were published.
//!
//! * Durable subscriptions: a consumer of a topic whose source keeps its state (terminus durability
//!   `configuration` or `unsettled-state`) and never expires (expiry-policy `never`) [AMQP 1.0 §3.5.3,
//!   §3.5.5, §3.5.6] gets the subscription named by its connection's container-id and its link's name, as
//!   JMS durable subscribers do. It keeps collecting messages while its link is detached or its connection
//!   lost, a later attach with the same container-id and link name resumes it, and closing the link (detach
//!   with closed set) deletes it with its messages.
//!
//! * Durability ([`Broker::open`], [`StoreOptions`]): a durable broker keeps its named queues, the
//!   dead-letter queue, durable subscriptions and every message in them in a journal (see the `store`
//!   module: append-only segments of checksummed records, group commit, compaction). A message is accepted
//!   only once it is durable under [`SyncPolicy`]: the producer's `accepted` waits, and is sent from
//!   `on_connection_wake` when the journal wakes the connection. A restart brings back every queue and every
//!   message not settled by a consumer, in order; one a consumer had been sent and not settled comes back
//!   with delivery-count one higher and first-acquirer cleared (the journal records each delivery before
//!   its transfer leaves, and each release). A message's ttl counts again from the restart. Temporary
//!   queues and ordinary subscriptions are not kept. When the journal has no room (a full disk, or
//!   [`StoreOptions::max_disk`]), producers' messages are rejected with `amqp:resource-limit-exceeded`
//!   until it has again; acknowledgements still fit (the journal keeps room for them), so nothing accepted
//!   is lost.
//!
//! * Authorization ([`BrokerOptions::authorization`], [`Authorization`]): each user (SASL's, `anonymous` for
//!   ANONYMOUS or a client that skipped SASL) is granted send, consume, browse and create on address
//!   patterns. A link the user may not attach is refused [AMQP 1.0 §2.6.3] (a null terminus, then a detach)
//!   with `amqp:unauthorized-access`, or `amqp:not-found` where nothing exists and the user may not create
//!   it; each anonymous-relay message is checked against its `to` and rejected the same way. Without it the
//!   broker is open (development). A temporary queue belongs to the connection whose dynamic source made
//!   it: only that connection consumes or browses it, open or not.
//!
//! * Numbers, for metrics and management: [`Broker::stats`] (per named queue: depth, bytes, unsettled,
//!   consumers, and enqueued, delivered, redelivered, expired and dead-lettered counters; broker-wide:
//!   connections, sessions, links, failed logins on the listeners of [`Broker::listen`], memory),
//!   [`Broker::connections`]; [`Broker::purge`] and [`Broker::delete_queue`] (whose links are detached with
//!   `amqp:resource-deleted`).
//!
//! Threading follows Proton's rules: each connection's [`BrokerHandler`] touches only its own connection.
//! Queues are shared behind a mutex; a message for a consumer on another connection is assigned to it under
//! the queue's lock, and that connection is woken to send it from its own `on_connection_wake`.

mod authz;
mod queue;
mod stats;
mod store;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use nucleon_protocol::codec::Symbol;
use nucleon_protocol::engine::{LinkId, SeqMap, SessionId};
use nucleon_protocol::frame::{
    Accepted, DeliveryState, Error as AmqpError, ErrorCondition, Rejected, Role, SenderSettleMode,
    Source, TerminusDurability, TerminusExpiryPolicy,
};
use nucleon_protocol::RawMessage;
use rustc_hash::FxHashMap;

pub use self::authz::{Authorization, Operation, Pattern, ANONYMOUS_USER, EVERY_USER};
use self::queue::{
    ConsumerKey, DeadLetterCounts, DeadLetters, Entry, Journal, Limits, Memory, Queue, Refused,
};
pub use self::stats::{BrokerStats, ConnectionStats, QueueStats};
use self::stats::{ConnectionEntry, Connections};
use self::store::{QueueKind, Recovered, Store, Ticket};
pub use self::store::{StoreError, StoreOptions, StoreStats, SyncPolicy};
use crate::container::{ContainerHandle, ListenOptions, Listener};
use crate::error::Error;
use crate::handler::{ListenHandler, MessagingHandler};
use crate::views::{
    AttachReply, Connection, ConnectionWaker, Core, Delivery, DeliveryRef, Receiver, ReceiverId,
    Sender, SenderId, Session, Tracker,
};

/// The connection capability saying that a link with no target address routes by each message's `to`.
pub const ANONYMOUS_RELAY: &str = "ANONYMOUS-RELAY";

/// The terminus capability saying that an address is a topic (every consumer gets every message): on a
/// consumer's source or a producer's target when attaching, and in the broker's reply for a topic address.
pub const TOPIC: &str = "topic";

/// The credit a bounded queue's producer link is kept at: what fits this many bytes of messages of the
/// largest size the link has sent, between `PRODUCER_WINDOW_MIN` (also before its first message) and
/// `PRODUCER_WINDOW_MAX` (ActiveMQ Artemis grants 1,000). Each credit is room promised in the queue
/// (`Queue::reserve`, which shares scarce room between producers). Small messages get a wide window, so a
/// producer streams them instead of stopping every few messages for the next flow, and the broker reads,
/// enqueues and answers hundreds per pass, not ten. A link that sends a larger message than before has its
/// credit cut back to the window of that size at once (`Receiver::limit_credit`): from when the flow reaches
/// it, the bytes it may send on credit are what the window of its largest messages allows (10 of them, as
/// before windows widened), plus what it had already sent, which the session window bounds to its frames.
const PRODUCER_WINDOW_BYTES: usize = 16 * 1024;
const PRODUCER_WINDOW_MIN: usize = 10;
const PRODUCER_WINDOW_MAX: usize = 1000;

/// The credit window of a producer link whose largest message so far had `largest` bytes (0: none yet).
fn producer_window(largest: usize) -> usize {
    if largest == 0 {
        return PRODUCER_WINDOW_MIN;
    }
    (PRODUCER_WINDOW_BYTES / largest).clamp(PRODUCER_WINDOW_MIN, PRODUCER_WINDOW_MAX)
}

/// The bytes all queues may hold by default: far below the memory of any machine a broker runs on, and
/// far above what a queue of ordinary messages needs.
const DEFAULT_MAX_MEMORY: usize = 1 << 30;

/// Queues by default: each costs little, but addresses come from clients.
const DEFAULT_MAX_QUEUES: usize = 10_000;

/// How long an unused, empty queue made on demand stays by default.
const DEFAULT_AUTO_DELETE: Duration = Duration::from_secs(300);

/// Broker settings.
#[derive(Clone, Debug)]
pub struct BrokerOptions {
    /// The most messages a queue holds, waiting or held unsettled by consumers (default: no count; the
    /// bytes and memory limits still apply). Producers get credit only for the room left, so a producer
    /// that keeps to its credit is never refused; an anonymous-relay message for a full queue is rejected
    /// with `amqp:resource-limit-exceeded`. A topic's subscriptions have the same limits: a message is
    /// published to all of them or, if one is full, rejected.
    pub max_queue_depth: Option<usize>,
    /// The most bytes (encoded messages, waiting or unsettled) a queue holds; from then on its producers get
    /// no credit (messages already in flight on credit given before still come in). Default: none.
    pub max_queue_bytes: Option<usize>,
    /// The most bytes all queues together hold: at that point every producer's credit is withheld, as
    /// RabbitMQ's memory alarm blocks publishers, until consumers take enough (default 1 GiB).
    pub max_memory: Option<usize>,
    /// The most queues (named and temporary) there may be: an attach or relay message that would make one
    /// more is refused with `amqp:resource-limit-exceeded` (default 10,000).
    pub max_queues: Option<usize>,
    /// A queue the broker made on demand that has been empty, with no consumer and no producer, this long is
    /// deleted (default 5 minutes; `None` keeps them). The dead-letter queue is never deleted.
    pub auto_delete_after: Option<Duration>,
    /// Addresses starting with any of these are topics (default: none; an empty prefix makes every address
    /// a topic). Each consumer of a topic gets every message published after it attached; a message
    /// published with no consumer attached is accepted and dropped.
    pub topic_prefixes: Vec<String>,
    /// Who may send, consume, browse and create where (default `None`: open, everyone may do everything,
    /// for development). Temporary queues (dynamic sources) are always their connection's own: only it may
    /// consume or browse them.
    pub authorization: Option<Authorization>,
    /// How many times a message may be delivered: acquired by a consumer and given back (released,
    /// modified, settled with no outcome, or its consumer lost with it unsettled). Given back once more, it
    /// goes to [`dead_letter_address`](Self::dead_letter_address) instead of its queue. Default 10, ActiveMQ
    /// Artemis's `max-delivery-attempts` (RabbitMQ's quorum queues take 20): a message that makes every
    /// consumer fail, or that a consumer always releases, cannot loop forever. Releases count here though
    /// they do not change the message's delivery-count [AMQP 1.0 §3.4.4]. `None`: no limit.
    pub max_deliveries: Option<u32>,
    /// The queue that gets the messages that may not stay in theirs: expired, or given back after
    /// [`max_deliveries`](Self::max_deliveries) deliveries (without their ttl and absolute-expiry-time, so
    /// they do not expire there). Default `None`: they are dropped (and counted, as they are when the
    /// dead-letter queue is full). It is a queue, made at start, even on a topic prefix.
    pub dead_letter_address: Option<String>,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            max_queue_depth: None,
            max_queue_bytes: None,
            max_memory: Some(DEFAULT_MAX_MEMORY),
            max_queues: Some(DEFAULT_MAX_QUEUES),
            auto_delete_after: Some(DEFAULT_AUTO_DELETE),
            topic_prefixes: Vec::new(),
            authorization: None,
            max_deliveries: Some(10),
            dead_letter_address: None,
        }
    }
}

/// The broker's shared state: its queues by address. `Send + Sync + Clone`; each accepted connection gets
/// a [`BrokerHandler`] over the same queues.
#[derive(Clone, Debug)]
pub struct Broker {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    options: BrokerOptions,
    queues: Mutex<HashMap<String, Arc<Queue>>>,
    /// Every address known as a topic (by prefix, once used, or declared by capability).
    topics: Mutex<HashMap<String, Arc<Topic>>>,
    /// Where every queue puts the messages that may not stay in it, and their counts.
    dead_letters: Arc<DeadLetters>,
    /// The bytes all queues hold, against `max_memory`.
    memory: Arc<Memory>,
    /// The idle sweep was started (by the first `listen`).
    sweeping: AtomicBool,
    next_connection: AtomicU64,
    next_dynamic: AtomicU64,
    /// The connection each temporary queue belongs to, by address.
    owners: Mutex<HashMap<String, u64>>,
    rejected: AtomicU64,
    dropped_without_subscribers: AtomicU64,
    /// The live connections, for [`Broker::connections`] and [`Broker::stats`].
    connections: Connections,
    /// The listeners started by [`Broker::listen`], whose failed logins [`Broker::stats`] counts.
    listeners: Mutex<Vec<Listener>>,
    /// The journal of a durable broker ([`Broker::open`]): named queues, durable subscriptions and their
    /// messages.
    store: Option<Store>,
}

/// A topic: one private queue (subscription) per consumer link, and the durable subscriptions, each a
/// queue named by its client's container-id and link name that stays while its link is detached.
#[derive(Debug)]
struct Topic {
    name: String,
    subscriptions: Mutex<Vec<Arc<Queue>>>,
    /// The durable subscriptions by name (`container-id:link-name`); also in `subscriptions`.
    durable: Mutex<HashMap<String, Arc<Queue>>>,
    next_subscription: AtomicU64,
    dead_letters: Arc<DeadLetters>,
    /// Each subscription's.
    limits: Limits,
    /// The broker's journal, where durable subscriptions are kept.
    store: Option<Store>,
}

/// The queue name of the durable subscription `key` of `topic`.
fn durable_subscription_name(topic: &str, key: &str) -> String {
    format!("{topic}::{key}")
}

impl Topic {
    fn new(
        name: String,
        dead_letters: Arc<DeadLetters>,
        limits: Limits,
        store: Option<Store>,
    ) -> Topic {
        Topic {
            name,
            limits,
            subscriptions: Mutex::new(Vec::new()),
            durable: Mutex::new(HashMap::new()),
            next_subscription: AtomicU64::new(1),
            dead_letters,
            store,
        }
    }

    fn durable(&self) -> MutexGuard<'_, HashMap<String, Arc<Queue>>> {
        self.durable.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The durable subscription `key` (a client's `container-id:link-name`), made if it does not exist:
    /// kept in the journal, if the broker has one, so that it outlives a restart.
    fn durable_subscription(&self, key: &str) -> Result<Arc<Queue>, AmqpError> {
        let mut durable = self.durable();
        if let Some(q) = durable.get(key) {
            return Ok(q.clone());
        }
        let name = durable_subscription_name(&self.name, key);
        let journal = match &self.store {
            Some(store) => {
                let kind = QueueKind::Subscription {
                    topic: self.name.clone(),
                };
                let qid = store
                    .declare_queue(&name, &kind)
                    .map_err(|e| journal_error(&name, &e.to_string()))?;
                Some(Journal {
                    store: store.clone(),
                    qid,
                })
            }
            None => None,
        };
        let q = Arc::new(
            Queue::new(name, true, self.limits.clone(), self.dead_letters.clone())
                .with_journal(journal),
        );
        log::info!("durable subscription {} created", q.name);
        durable.insert(key.to_owned(), q.clone());
        self.subscriptions().push(q.clone());
        Ok(q)
    }

    /// A durable subscription recovered from the journal.
    fn restore_durable(&self, key: String, q: Arc<Queue>) {
        self.subscriptions().push(q.clone());
        self.durable().insert(key, q);
    }

    /// Deletes the durable subscription `key` (its link was closed) if it is still `q`, with its
    /// messages; a newer subscription of the same name made since is not touched.
    fn delete_durable(&self, key: &str, q: &Arc<Queue>) {
        let q = {
            let mut durable = self.durable();
            match durable.get(key) {
                Some(current) if Arc::ptr_eq(current, q) => durable.remove(key),
                _ => None,
            }
        };
        let Some(q) = q else {
            return;
        };
        self.subscriptions().retain(|s| !Arc::ptr_eq(s, &q));
        let dropped = q.delete();
        log::info!(
            "durable subscription {} deleted ({dropped} messages dropped)",
            q.name
        );
    }

    fn subscriptions(&self) -> MutexGuard<'_, Vec<Arc<Queue>>> {
        self.subscriptions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new subscription: a private queue with the broker's queue limits, not among its named queues.
    fn subscribe(&self) -> Arc<Queue> {
        let n = self.next_subscription.fetch_add(1, Ordering::Relaxed);
        let q = Arc::new(Queue::new(
            format!("{}#{n}", self.name),
            true,
            self.limits.clone(),
            self.dead_letters.clone(),
        ));
        log::info!("subscription {} created", q.name);
        self.subscriptions().push(q.clone());
        q
    }

    /// Deletes a subscription (its messages go with it).
    fn unsubscribe(&self, q: &Arc<Queue>) {
        self.subscriptions().retain(|s| !Arc::ptr_eq(s, q));
        log::info!(
            "subscription {} deleted ({} messages dropped)",
            q.name,
            q.depth()
        );
    }

    /// Puts the message in every subscription there is now and returns how many, with the journal ticket
    /// of the last durable one, or in none if one of them is full: `amqp:resource-limit-exceeded`. The
    /// topic's lock is held throughout, so each subscription gets one producer's messages in publish order
    /// (and only publishing fills them). A durable subscription whose journal refuses the message (no room
    /// on disk) refuses it, though the subscriptions before it have it.
    fn publish(
        &self,
        message: RawMessage,
        from_conn: u64,
    ) -> Result<(usize, Option<Ticket>), AmqpError> {
        let subscriptions = self.subscriptions();
        if let Some(full) = subscriptions.iter().find(|q| !q.has_room()) {
            return Err(full_error(&full.name));
        }
        let (mut n, mut ticket) = (0, None);
        let mut put = |q: &Queue, m: RawMessage| match q.enqueue(m, from_conn, false) {
            Ok(t) => {
                n += 1;
                ticket = ticket.max(t);
                Ok(())
            }
            Err(Refused::Journal(why)) => Err(journal_error(&q.name, &why)),
            Err(_) => Ok(()),
        };
        if let Some((last, others)) = subscriptions.split_last() {
            for q in others {
                // A cheap clone: the subscriptions share the message's bytes.
                put(q, message.clone())?;
            }
            put(last, message)?;
        }
        Ok((n, ticket))
    }
}

/// How often the broker looks for expired messages and idle queues.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Runs [`Broker::sweep`] every `SWEEP_EVERY` in `container` until it stops.
fn sweep_every(container: ContainerHandle, broker: Broker) {
    let next = container.clone();
    let scheduled = container.schedule(SWEEP_EVERY, move || {
        broker.sweep();
        sweep_every(next, broker);
    });
    // Refused only once the container is stopping: then there is nothing left to sweep for.
    drop(scheduled);
}

/// A message (or queue) the journal could not take for the queue `name`: no room on disk, or a failed
/// store [AMQP 1.0 §2.8.15].
fn journal_error(name: &str, why: &str) -> AmqpError {
    AmqpError::new(
        ErrorCondition::ResourceLimitExceeded,
        format!("{name} cannot be stored: {why}"),
    )
}

/// A message the journal failed to make durable [AMQP 1.0 §2.8.15].
fn stored_error(e: &StoreError) -> AmqpError {
    AmqpError::new(
        ErrorCondition::ResourceLimitExceeded,
        format!("the message could not be stored: {e}"),
    )
}

/// A message the queue `name` has no room for [AMQP 1.0 §2.8.15].
fn full_error(name: &str) -> AmqpError {
    AmqpError::new(
        ErrorCondition::ResourceLimitExceeded,
        format!("{name} is full"),
    )
}

/// Where a producer's messages go.
#[derive(Clone, Debug)]
enum Destination {
    Queue(Arc<Queue>),
    Topic(Arc<Topic>),
}

impl Broker {
    /// A broker with no queues yet, keeping everything in memory.
    pub fn new(options: BrokerOptions) -> Broker {
        Broker::build(options, None)
    }

    /// A durable broker: its named queues, durable subscriptions and messages are kept in the journal in
    /// `store.dir`, and what a previous run left there is brought back (see [`StoreOptions`]). A message is
    /// accepted only once it is durable under `store.sync`. Fails when the directory cannot be used (in
    /// use by another broker, unreadable) or its journal is corrupt ([`StoreError::Corrupt`] names the file
    /// and offset; `store.salvage` skips what is damaged and keeps the rest).
    pub fn open(options: BrokerOptions, store: StoreOptions) -> Result<Broker, StoreError> {
        let (store, recovered) = Store::open(store)?;
        for line in &recovered.skipped {
            log::warn!("journal salvage: {line}");
        }
        Ok(Broker::build(options, Some((store, recovered))))
    }

    fn build(options: BrokerOptions, store: Option<(Store, Recovered)>) -> Broker {
        let counts = Arc::new(DeadLetterCounts::default());
        let memory = Arc::new(Memory::new(options.max_memory));
        let limits = Limits {
            max_depth: options.max_queue_depth,
            max_bytes: options.max_queue_bytes,
            memory: memory.clone(),
        };
        let (store, mut recovered) = match store {
            Some((s, r)) => (Some(s), r.queues),
            None => (None, Vec::new()),
        };
        let mut queues = HashMap::new();
        let dead_letter_queue = options.dead_letter_address.as_ref().map(|address| {
            // Its own dead letters are dropped.
            let own = DeadLetters {
                max_deliveries: options.max_deliveries,
                queue: None,
                counts: counts.clone(),
            };
            let found = recovered
                .iter()
                .position(|r| r.kind == QueueKind::Queue && &r.name == address)
                .map(|i| recovered.remove(i));
            let journal = match (&store, &found) {
                (Some(store), Some(r)) => Some(Journal {
                    store: store.clone(),
                    qid: r.qid,
                }),
                (Some(store), None) => match store.declare_queue(address, &QueueKind::Queue) {
                    Ok(qid) => Some(Journal {
                        store: store.clone(),
                        qid,
                    }),
                    Err(e) => {
                        log::error!("dead-letter queue {address} is not durable: {e}");
                        None
                    }
                },
                (None, _) => None,
            };
            let q = Arc::new(
                Queue::new(address.clone(), false, limits.clone(), Arc::new(own))
                    .with_journal(journal),
            );
            if let Some(r) = found {
                restore(&q, r.messages);
            }
            queues.insert(address.clone(), q.clone());
            q
        });
        let dead_letters = Arc::new(DeadLetters {
            max_deliveries: options.max_deliveries,
            queue: dead_letter_queue,
            counts,
        });
        let broker = Broker {
            inner: Arc::new(Inner {
                options,
                queues: Mutex::new(queues),
                topics: Mutex::new(HashMap::new()),
                dead_letters,
                memory,
                sweeping: AtomicBool::new(false),
                next_connection: AtomicU64::new(1),
                next_dynamic: AtomicU64::new(1),
                owners: Mutex::new(HashMap::new()),
                rejected: AtomicU64::new(0),
                dropped_without_subscribers: AtomicU64::new(0),
                connections: Connections::default(),
                listeners: Mutex::new(Vec::new()),
                store,
            }),
        };
        broker.recover(recovered);
        broker
    }

    /// Makes the queues and durable subscriptions recovered from the journal, with their messages.
    fn recover(&self, recovered: Vec<store::RecoveredQueue>) {
        let Some(store) = &self.inner.store else {
            return;
        };
        let (mut queues, mut messages) = (0, 0);
        for r in recovered {
            let journal = Some(Journal {
                store: store.clone(),
                qid: r.qid,
            });
            messages += r.messages.len();
            match r.kind {
                QueueKind::Queue => {
                    let q = Arc::new(
                        Queue::new(
                            r.name.clone(),
                            false,
                            self.limits(),
                            self.inner.dead_letters.clone(),
                        )
                        .with_journal(journal),
                    );
                    restore(&q, r.messages);
                    self.queues().insert(r.name, q);
                }
                QueueKind::Subscription { topic } => {
                    let t = self.topic(&topic);
                    let key = r
                        .name
                        .strip_prefix(&durable_subscription_name(&topic, ""))
                        .unwrap_or(&r.name)
                        .to_owned();
                    let q = Arc::new(
                        Queue::new(r.name, true, self.limits(), self.inner.dead_letters.clone())
                            .with_journal(journal),
                    );
                    restore(&q, r.messages);
                    t.restore_durable(key, q);
                }
            }
            queues += 1;
        }
        if queues > 0 {
            log::info!("recovered {queues} queues and subscriptions with {messages} messages");
        }
    }

    /// Flushes and closes the journal of a durable broker (what is accepted is on disk already; this
    /// writes the acknowledgements still buffered, so fewer messages come back as redeliveries). The
    /// broker must not be used after.
    pub fn close(&self) {
        if let Some(store) = &self.inner.store {
            store.close();
        }
    }

    /// The journal's figures, for a durable broker.
    pub fn store_stats(&self) -> Option<StoreStats> {
        self.inner.store.as_ref().map(Store::stats)
    }

    /// Serves this broker on `addr` (`host:port`; port 0 picks a free port) in `container`. The listener
    /// offers the `ANONYMOUS-RELAY` capability (added to `options.offered_capabilities` if not there).
    pub fn listen(
        &self,
        container: &ContainerHandle,
        addr: &str,
        mut options: ListenOptions,
    ) -> Result<Listener, Error> {
        let relay = Symbol::from_static(ANONYMOUS_RELAY);
        if !options.offered_capabilities.contains(&relay) {
            options.offered_capabilities.push(relay);
        }
        let listener = container.listen_with(addr, options, self.clone())?;
        self.inner
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(listener.clone());
        if !self.inner.sweeping.swap(true, Ordering::Relaxed) {
            sweep_every(container.clone(), self.clone());
        }
        Ok(listener)
    }

    /// A snapshot of every named queue (by name) and of the broker's connections, links and counters,
    /// for metrics. Each number is read as it is at that moment; the counters only grow.
    pub fn stats(&self) -> BrokerStats {
        let queues: Vec<Arc<Queue>> = self.queues().values().cloned().collect();
        let mut stats: Vec<QueueStats> = queues.iter().map(|q| q.stats()).collect();
        stats.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        let connections = self.connections();
        let listeners = self
            .inner
            .listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        BrokerStats {
            queues: stats,
            connections: connections.len(),
            sessions: connections.iter().map(|c| c.sessions).sum(),
            consumers: connections.iter().map(|c| c.consumers).sum(),
            producers: connections.iter().map(|c| c.producers).sum(),
            authentication_failures: listeners.iter().map(Listener::login_failures).sum(),
            memory: self.memory_used(),
            rejected: self.rejected(),
            dropped_without_subscribers: self.dropped_without_subscribers(),
            expired: self.expired(),
            max_deliveries_reached: self.max_deliveries_reached(),
            dead_lettered: self.dead_lettered(),
        }
    }

    /// The connections accepted and not yet closed, by id.
    pub fn connections(&self) -> Vec<ConnectionStats> {
        self.inner.connections.snapshot()
    }

    /// Drops the messages waiting in the queue at `address` (not those its consumers hold) and returns
    /// how many, or `None` when there is no such queue. Its producers get credit again.
    pub fn purge(&self, address: &str) -> Option<usize> {
        let q = self.queues().get(address).cloned()?;
        let dropped = q.purge();
        log::info!("queue {address} purged ({dropped} messages dropped)");
        Some(dropped)
    }

    /// Deletes the queue at `address` with the messages waiting in it, and returns how many there were,
    /// or `None` when there is no such queue. Its consumer links are detached, and its producer links
    /// at their next message (rejected), with `amqp:resource-deleted` [AMQP 1.0 §2.8.15]; the address
    /// is free again (a new link or message there makes a new queue, as for any address).
    pub fn delete_queue(&self, address: &str) -> Option<usize> {
        let q = self.queues().remove(address)?;
        self.owners().remove(address);
        let dropped = q.delete();
        log::info!("queue {address} deleted ({dropped} messages dropped)");
        Some(dropped)
    }

    /// The messages waiting in the queue at `address` (not counting those sent and not yet settled), or
    /// `None` when there is no such queue (a topic's subscriptions are not queues by name).
    pub fn queue_depth(&self, address: &str) -> Option<usize> {
        self.queues().get(address).map(|q| q.depth())
    }

    /// The messages of the queue at `address` that consumers hold and have not settled, or `None` when
    /// there is no such queue. They count against `max_queue_depth` with the waiting ones.
    pub fn queue_unsettled(&self, address: &str) -> Option<usize> {
        self.queues().get(address).map(|q| q.held())
    }

    /// The bytes of the waiting and unsettled messages of the queue at `address` (`None`: no such queue).
    pub fn queue_bytes(&self, address: &str) -> Option<usize> {
        self.queues().get(address).map(|q| q.bytes())
    }

    /// The bytes all queues hold (waiting and unsettled), against `max_memory`.
    pub fn memory_used(&self) -> usize {
        self.inner.memory.used()
    }

    /// The messages waiting in all named queues, and how many queues there are (for the count a stopping
    /// broker logs).
    pub fn queued(&self) -> (usize, usize) {
        let queues = self.queues();
        (queues.values().map(|q| q.depth()).sum(), queues.len())
    }

    /// How many messages consumers rejected (and the broker therefore dropped).
    pub fn rejected(&self) -> u64 {
        self.inner.rejected.load(Ordering::Relaxed)
    }

    /// How many messages expired in a queue (and were dead-lettered or dropped, never delivered). An
    /// expired message is found when a consumer or browser would get it, or on arrival; until then
    /// [`queue_depth`](Self::queue_depth) counts it.
    pub fn expired(&self) -> u64 {
        self.inner
            .dead_letters
            .counts
            .expired
            .load(Ordering::Relaxed)
    }

    /// How many messages were given back once more after [`BrokerOptions::max_deliveries`] deliveries (and
    /// were dead-lettered or dropped).
    pub fn max_deliveries_reached(&self) -> u64 {
        self.inner
            .dead_letters
            .counts
            .max_deliveries
            .load(Ordering::Relaxed)
    }

    /// How many expired or too often delivered messages went to [`BrokerOptions::dead_letter_address`]
    /// (the others were dropped).
    pub fn dead_lettered(&self) -> u64 {
        self.inner
            .dead_letters
            .counts
            .dead_lettered
            .load(Ordering::Relaxed)
    }

    /// How many subscriptions (consumer links) the topic at `address` has, or `None` when `address` is not
    /// a topic.
    pub fn subscriptions(&self, address: &str) -> Option<usize> {
        let known = self.topics().get(address).cloned();
        match known {
            Some(t) => Some(t.subscriptions().len()),
            None => self.prefixed(address).then_some(0),
        }
    }

    /// How many messages were published to a topic with no subscriber (accepted, and dropped).
    pub fn dropped_without_subscribers(&self) -> u64 {
        self.inner
            .dropped_without_subscribers
            .load(Ordering::Relaxed)
    }

    fn queues(&self) -> MutexGuard<'_, HashMap<String, Arc<Queue>>> {
        self.inner.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn topics(&self) -> MutexGuard<'_, HashMap<String, Arc<Topic>>> {
        self.inner.topics.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `address` starts with one of the configured topic prefixes.
    fn prefixed(&self, address: &str) -> bool {
        self.inner
            .options
            .topic_prefixes
            .iter()
            .any(|p| address.starts_with(p.as_str()))
    }

    /// `address` is a topic: by prefix, or remembered.
    fn is_topic(&self, address: &str) -> bool {
        self.prefixed(address) || self.topics().contains_key(address)
    }

    /// The topic at `address`, made (and from then on remembered) if it does not exist.
    fn topic(&self, address: &str) -> Arc<Topic> {
        self.topics()
            .entry(address.to_owned())
            .or_insert_with(|| {
                log::info!("topic {address} created");
                Arc::new(Topic::new(
                    address.to_owned(),
                    self.inner.dead_letters.clone(),
                    self.limits(),
                    self.inner.store.clone(),
                ))
            })
            .clone()
    }

    /// Drops expired messages from every queue, and deletes the queues made on demand that have been
    /// empty and unused for `auto_delete_after` (not temporary queues, which go with their link, nor the
    /// dead-letter queue). `Broker::listen` runs it every 10 seconds.
    pub fn sweep(&self) {
        let o = &self.inner.options;
        let queues: Vec<Arc<Queue>> = self.queues().values().cloned().collect();
        for q in &queues {
            q.sweep_expired();
        }
        for t in self.topics().values() {
            for q in t.subscriptions().iter() {
                q.sweep_expired();
            }
        }
        let Some(idle) = o.auto_delete_after else {
            return;
        };
        let mut deleted = Vec::new();
        self.queues().retain(|name, q| {
            let keep = q.temporary
                || o.dead_letter_address.as_deref() == Some(name.as_str())
                || !q.delete_if_idle(idle);
            if !keep {
                deleted.push(name.clone());
            }
            keep
        });
        for name in deleted {
            log::info!("queue {name} deleted: empty and unused for {idle:?}");
        }
    }

    /// The limits of each queue this broker makes.
    fn limits(&self) -> Limits {
        let o = &self.inner.options;
        Limits {
            max_depth: o.max_queue_depth,
            max_bytes: o.max_queue_bytes,
            memory: self.inner.memory.clone(),
        }
    }

    /// Refuses one more queue beyond `max_queues` [AMQP 1.0 §2.8.15].
    fn room_for_a_queue(&self, queues: &HashMap<String, Arc<Queue>>) -> Result<(), AmqpError> {
        match self.inner.options.max_queues {
            Some(max) if queues.len() >= max => {
                log::warn!("the broker has {max} queues already: no more are made");
                Err(AmqpError::new(
                    ErrorCondition::ResourceLimitExceeded,
                    format!("the broker has {max} queues already"),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Where messages for `address` go, and where its consumers take them from: its queue if it has one,
    /// else its topic if it is one, else a new queue. The address of a temporary queue that is gone is not
    /// made again: refused with `amqp:not-found` [AMQP 1.0 §2.8.15]. The queue map is locked throughout
    /// (before the topics, as in `topic_terminus`), so no address gets both a queue and a topic.
    fn destination(&self, address: &str) -> Result<Destination, AmqpError> {
        let mut queues = self.queues();
        if let Some(q) = queues.get(address) {
            // Found under the map's lock, as the idle sweep deletes: it is not idle now.
            q.touch();
            return Ok(Destination::Queue(q.clone()));
        }
        if self.is_topic(address) {
            return Ok(Destination::Topic(self.topic(address)));
        }
        if is_temporary(address) {
            return Err(gone(address));
        }
        self.room_for_a_queue(&queues)?;
        let journal = match &self.inner.store {
            Some(store) => {
                let qid = store
                    .declare_queue(address, &QueueKind::Queue)
                    .map_err(|e| journal_error(address, &e.to_string()))?;
                Some(Journal {
                    store: store.clone(),
                    qid,
                })
            }
            None => None,
        };
        log::info!("queue {address} created");
        let q = Arc::new(
            Queue::new(
                address.to_owned(),
                false,
                self.limits(),
                self.inner.dead_letters.clone(),
            )
            .with_journal(journal),
        );
        queues.insert(address.to_owned(), q.clone());
        Ok(Destination::Queue(q))
    }

    /// Whether the terminus of an attaching link names a topic. A [`TOPIC`] capability declares it one
    /// (remembered), but a queue cannot become a topic: that link is refused with
    /// `amqp:precondition-failed` [AMQP 1.0 §2.8.15] (its queued messages would be stranded and later
    /// ones published past its consumers). A topic address gets the capability added, so the reply says
    /// so. A temporary queue that is gone is refused with `amqp:not-found`.
    fn topic_terminus(
        &self,
        address: Option<&str>,
        capabilities: &mut Option<Vec<Symbol>>,
    ) -> Result<bool, AmqpError> {
        let Some(address) = address else {
            return Ok(false);
        };
        let declared = capabilities
            .as_ref()
            .is_some_and(|c| c.iter().any(|s| s == TOPIC));
        // Locked before the topics, as in `destination`: no queue is made while this declares a topic.
        let queues = self.queues();
        if queues.contains_key(address) {
            if declared {
                return Err(AmqpError::new(
                    ErrorCondition::PreconditionFailed,
                    format!("{address} is a queue: it cannot be used as a topic"),
                ));
            }
            return Ok(false);
        }
        if declared {
            self.topic(address);
            Ok(true)
        } else if self.is_topic(address) {
            capabilities
                .get_or_insert_with(Vec::new)
                .push(Symbol::from_static(TOPIC));
            Ok(true)
        } else if is_temporary(address) {
            Err(gone(address))
        } else {
            Ok(false)
        }
    }

    /// A new temporary queue with a unique address, for a dynamic source of connection `owner`.
    fn temporary_queue(&self, owner: u64) -> Result<Arc<Queue>, AmqpError> {
        let mut queues = self.queues();
        self.room_for_a_queue(&queues)?;
        let n = self.inner.next_dynamic.fetch_add(1, Ordering::Relaxed);
        let address = format!("{TEMPORARY_PREFIX}{}-{n}", uuid::Uuid::new_v4().simple());
        log::info!("temporary queue {address} created");
        let q = Arc::new(Queue::new(
            address.clone(),
            true,
            self.limits(),
            self.inner.dead_letters.clone(),
        ));
        self.owners().insert(address.clone(), owner);
        queues.insert(address, q.clone());
        Ok(q)
    }

    fn owners(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.inner.owners.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a queue or topic exists at `address`.
    fn exists(&self, address: &str) -> bool {
        self.is_topic(address) || self.queues().contains_key(address)
    }

    /// Deletes a temporary queue (its messages go with it, and it takes no more).
    fn delete(&self, q: &Queue) {
        let mut queues = self.queues();
        if queues.get(&q.name).is_some_and(|x| std::ptr::eq(&**x, q)) {
            queues.remove(&q.name);
            self.owners().remove(&q.name);
            let dropped = q.delete();
            log::info!(
                "temporary queue {} deleted ({dropped} messages dropped)",
                q.name
            );
        }
    }
}

/// Puts the messages recovered from the journal back in `q`, as the bytes they were received as, checked
/// as they were then (one that fails the check, which it passed once already, is logged and dropped).
fn restore(q: &Queue, messages: Vec<store::RecoveredMessage>) {
    let mut back = Vec::with_capacity(messages.len());
    for m in messages {
        match RawMessage::parse(m.bytes) {
            Ok(message) => back.push((m.pid, message, m.delivered, m.released)),
            Err(e) => {
                log::error!(
                    "a message of {} in the journal fails the message check ({e}): dropped",
                    q.name
                );
                if let Some(j) = q.journal() {
                    j.store.ack(m.pid);
                }
            }
        }
    }
    q.restore(back);
}

/// How a temporary queue's address starts: `dynamic-`, a UUID's 32 hex digits, `-`, a number.
const TEMPORARY_PREFIX: &str = "dynamic-";

/// `address` has the form of a temporary queue's (see [`TEMPORARY_PREFIX`]), which nothing else can get.
fn is_temporary(address: &str) -> bool {
    address
        .strip_prefix(TEMPORARY_PREFIX)
        .and_then(|rest| rest.split_once('-'))
        .is_some_and(|(uuid, n)| {
            uuid.len() == 32
                && uuid.bytes().all(|b| b.is_ascii_hexdigit())
                && !n.is_empty()
                && n.bytes().all(|b| b.is_ascii_digit())
        })
}

/// The error for the links of a queue deleted through [`Broker::delete_queue`].
fn deleted(address: &str) -> AmqpError {
    AmqpError::new(
        ErrorCondition::ResourceDeleted,
        format!("queue {address} was deleted"),
    )
}

/// The error for the address of a temporary queue that is gone.
fn gone(address: &str) -> AmqpError {
    AmqpError::new(
        ErrorCondition::NotFound,
        format!("temporary queue {address} no longer exists"),
    )
}

impl ListenHandler for Broker {
    type Handler = BrokerHandler;

    fn on_accept(&self, peer: SocketAddr) -> BrokerHandler {
        let conn = self.inner.next_connection.fetch_add(1, Ordering::Relaxed);
        log::info!("connection {conn} from {peer} accepted");
        let entry = Arc::new(ConnectionEntry::new(peer, ANONYMOUS_USER));
        self.inner.connections.add(conn, entry.clone());
        BrokerHandler {
            broker: self.clone(),
            conn,
            peer,
            user: ANONYMOUS_USER.to_owned(),
            consumers: FxHashMap::default(),
            producers: FxHashMap::default(),
            refusal: None,
            sessions: HashSet::new(),
            entry,
            unstored: VecDeque::new(),
            watching: false,
        }
    }

    fn on_open(&self, addr: SocketAddr) {
        log::info!("broker listening on {addr}");
    }
}

/// A consumer link of this connection.
#[derive(Debug)]
struct ConsumerLink {
    /// Its queue, or its subscription to `topic`.
    queue: Arc<Queue>,
    topic: Option<Arc<Topic>>,
    /// The link is pre-settled (at-most-once) or browses (COPY): nothing to track.
    fire_and_forget: bool,
    /// It browses: what it is sent are copies, which the queue does not count.
    browse: bool,
    /// It consumes the durable subscription of this name (`container-id:link-name`) of `topic`, which
    /// stays when the link is only detached.
    durable: Option<String>,
    /// Sent and not yet settled, by delivery-id: back to the queue if the link is lost. Consumers mostly
    /// settle in the order they were sent, which a `SeqMap` serves from its front.
    unsettled: SeqMap<Entry>,
    /// Accepted or rejected by the consumer, to leave the queue together from `on_connection_wake` (one
    /// lock of the queue per pass instead of one per message; see `flush_consumed`).
    consumed: Vec<Entry>,
}

/// A producer link of this connection.
#[derive(Debug)]
struct Producer {
    /// Where its messages go (`None`: anonymous relay, routed by each message's `to`).
    destination: Option<Destination>,
    /// Its credit, each promised room in a bounded queue.
    reserved: usize,
    /// The size of the largest message it sent, which sets its credit window (`producer_window`).
    largest: usize,
}

/// The broker's handler for one connection (made by [`Broker`] as a [`ListenHandler`]).
#[derive(Debug)]
pub struct BrokerHandler {
    broker: Broker,
    conn: u64,
    peer: SocketAddr,
    /// Who the client authenticated as ([`ANONYMOUS_USER`] for ANONYMOUS or no SASL), for authorization.
    user: String,
    consumers: FxHashMap<SenderId, ConsumerLink>,
    /// Producer links and where their messages go (`None`: anonymous relay, routed by each message's `to`).
    producers: FxHashMap<ReceiverId, Producer>,
    /// Why the link whose attach was just answered is refused: it was answered with no terminus and is
    /// detached with this error as it opens, right after [AMQP 1.0 §2.6.3].
    refusal: Option<AmqpError>,
    /// The sessions the peer began and has not ended.
    sessions: HashSet<SessionId>,
    /// This connection in the broker's registry, kept up to date for [`Broker::connections`].
    entry: Arc<ConnectionEntry>,
    /// Messages received and enqueued, whose `accepted` waits for the journal to make them durable (in
    /// ticket order).
    unstored: VecDeque<(DeliveryRef, Ticket)>,
    /// The journal will wake this connection when the last of `unstored` is durable.
    watching: bool,
}

impl Drop for BrokerHandler {
    fn drop(&mut self) {
        // What consumers settled leaves its queues even if the transport never closed (a handler dropped
        // after a panic): the queues' counts stay true.
        self.flush_consumed();
        self.broker.inner.connections.remove(self.conn);
    }
}

fn waker(core: &Core) -> Option<ConnectionWaker> {
    Some(core.waker.clone())
}

/// Messages went back to a queue from this connection's own callback: the queue woke the other
/// connections' consumers, and this wakes this connection's, which may want them too.
fn wake_self(core: &Core) {
    core.waker.wake();
}

impl BrokerHandler {
    /// Whether this connection may attach a link that does `op` on `address` (or publish to it through
    /// the anonymous relay): its user must be granted `op` there, and `create` too if nothing exists there
    /// yet; a temporary queue is consumed or browsed by its own connection only. The error is the link's
    /// (or the message's) [AMQP 1.0 §2.8.15]: `unauthorized-access`, or `not-found` for an address the user
    /// may use but not create, so that it learns nothing it could not.
    fn may(&self, op: Operation, address: &str) -> Result<(), AmqpError> {
        let refused = |condition, what: String| {
            log::info!(
                "connection {} ({} from {}): {what}",
                self.conn,
                self.user,
                self.peer
            );
            Err(AmqpError::new(condition, what))
        };
        if matches!(op, Operation::Consume | Operation::Browse) {
            let owner = self.broker.owners().get(address).copied();
            if owner.is_some_and(|o| o != self.conn) {
                return refused(
                    ErrorCondition::UnauthorizedAccess,
                    format!("{address} is another connection's temporary queue"),
                );
            }
        }
        let Some(authz) = &self.broker.inner.options.authorization else {
            return Ok(());
        };
        if !authz.permits(&self.user, op, address) {
            return refused(
                ErrorCondition::UnauthorizedAccess,
                format!("user {} may not {op} on {address}", self.user),
            );
        }
        if !self.broker.exists(address) && !authz.permits(&self.user, Operation::Create, address) {
            return refused(
                ErrorCondition::NotFound,
                format!(
                    "no queue or topic {address} (and user {} may not create one)",
                    self.user
                ),
            );
        }
        Ok(())
    }

    /// Detaches (closes) a link the broker will not serve, with `error`.
    fn refuse(&self, core: &mut Core, link: LinkId, error: AmqpError) {
        log::info!(
            "connection {}: link refused: {}",
            self.conn,
            error.description.as_deref().unwrap_or_default()
        );
        let _ = core.engine.detach(link, true, Some(error));
    }

    /// Publishes this connection's link counts (after a link was added or removed).
    fn count_links(&self) {
        let e = &self.entry;
        e.consumers.store(self.consumers.len(), Ordering::Relaxed);
        e.producers.store(self.producers.len(), Ordering::Relaxed);
    }

    fn key(&self, link: SenderId) -> ConsumerKey {
        ConsumerKey {
            conn: self.conn,
            link,
        }
    }

    /// Sends what the consumer's queue has for it, as far as `credit` goes; what cannot be sent goes back.
    fn pull(&mut self, s: &mut Sender<'_>, credit: u32) {
        let key = self.key(s.id());
        let Some(c) = self.consumers.get_mut(&key.link) else {
            return;
        };
        let (mut back, mut gone) = (Vec::new(), Vec::new());
        let (mut delivered, mut redelivered) = (0, 0);
        let mut journaled = false;
        for e in c.queue.take(key, credit) {
            if s.credit() == 0 {
                back.push(e);
                continue;
            }
            let again = e.redelivery();
            let sent = if c.fire_and_forget {
                match send_settled(s, &e.message) {
                    Ok(()) => {
                        gone.push(e);
                        Ok(())
                    }
                    Err(err) => Err((err, e)),
                }
            } else {
                if !c.browse {
                    // In the journal before the transfer leaves (see `write_through` below).
                    c.queue.delivering(&e);
                    journaled = true;
                }
                match s.send_raw(&e.message) {
                    Ok(d) => match c.unsettled.insert(d.delivery_id(), e) {
                        Ok(()) => Ok(()),
                        // Ids grow on the link's session, and the engine refuses to send one 2^31 past the
                        // oldest unsettled, so this never happens; if it did, the message goes back to the
                        // queue (a duplicate, never a loss).
                        Err(e) => {
                            log::error!(
                                "delivery {} out of order on {}",
                                d.delivery_id(),
                                c.queue.name
                            );
                            back.push(e);
                            Ok(())
                        }
                    },
                    Err(err) => Err((err, e)),
                }
            };
            match sent {
                Ok(()) => {
                    delivered += 1;
                    redelivered += u64::from(again);
                }
                Err((err, e)) => {
                    log::warn!("send on {} failed: {err}", c.queue.name);
                    if !c.fire_and_forget {
                        // It never left: its journaled delivery does not count.
                        c.queue.released(&e);
                    }
                    back.push(e);
                }
            }
        }
        if journaled {
            // A broker killed once these transfers are out knows, when it restarts, that they were
            // delivered: their messages come back as redeliveries.
            c.queue.write_through();
        }
        let counters = &c.queue.counters;
        counters.delivered.fetch_add(delivered, Ordering::Relaxed);
        counters
            .redelivered
            .fetch_add(redelivered, Ordering::Relaxed);
        // A browser's are copies: nothing to give back or settle.
        if !c.browse {
            c.queue.settled(&gone);
            c.queue.requeue(back, self.conn);
        }
    }

    /// The consumer link is gone: what it held goes back to its queue; a subscription is deleted, and a
    /// durable subscription too if the link was `closed` (not only detached).
    fn drop_consumer(&mut self, id: SenderId, closed: bool) {
        let key = self.key(id);
        if let Some(mut c) = self.consumers.remove(&id) {
            flush_consumed(&mut c);
            // The source's default outcome for what its lost link held unsettled [AMQP 1.0 §3.5.3]: modified
            // with delivery-failed [AMQP 1.0 §3.4.5], as the consumer may have processed it.
            let unsettled = c
                .unsettled
                .into_values()
                .map(|mut e| {
                    e.returned(true);
                    e
                })
                .collect();
            c.queue.remove_consumer(key, unsettled);
            if let (Some(t), Some(name)) = (&c.topic, &c.durable) {
                if closed {
                    t.delete_durable(name, &c.queue);
                }
            } else if let Some(t) = &c.topic {
                t.unsubscribe(&c.queue);
            } else if c.queue.temporary {
                self.broker.delete(&c.queue);
            }
            self.count_links();
        }
    }

    /// Keeps a bounded queue's producer link at its `producer_window` of credit, each promised room in the
    /// queue (see `Queue::reserve`).
    fn top_up(&mut self, r: &mut Receiver<'_>) {
        let Some(Producer {
            destination: Some(Destination::Queue(q)),
            reserved,
            largest,
        }) = self.producers.get_mut(&r.id())
        else {
            return;
        };
        if !q.limits().bounded() {
            return;
        }
        let want = producer_window(*largest);
        if *reserved < want {
            let got = q.reserve(want - *reserved, self.conn, &r.core.waker);
            if got > 0 && r.add_credit(got as u32).is_ok() {
                *reserved += got;
            } else {
                q.unreserve(got);
            }
        }
    }

    /// A producer link is gone: the room promised to its unused credit is given back.
    fn drop_producer(&mut self, id: ReceiverId) {
        if let Some(Producer {
            destination: Some(Destination::Queue(q)),
            reserved,
            ..
        }) = self.producers.remove(&id)
        {
            q.unreserve(reserved);
            q.remove_producer(self.conn);
        }
        self.count_links();
    }

    /// Accepts a received message once the journal holding it (if any) has it durable: at once if it
    /// has, else later from `on_connection_wake` ([`settle_stored`](Self::settle_stored)), woken by the
    /// journal. A journal that failed to write it rejects it with `amqp:resource-limit-exceeded`.
    fn accept_when_stored(&mut self, d: &mut Delivery<'_>, ticket: Option<Ticket>) {
        let (Some(store), Some(ticket)) = (&self.broker.inner.store, ticket) else {
            d.accept();
            return;
        };
        if d.settled() {
            // Pre-settled by the producer: there is no outcome to send.
            return;
        }
        match store.durable(ticket) {
            Ok(true) => d.accept(),
            Ok(false) => {
                let id = d.id();
                d.defer();
                self.unstored.push_back((id, ticket));
                self.watch(&d.core.waker);
            }
            Err(e) => d.reject(Some(stored_error(&e))),
        }
    }

    /// Asks the journal to wake this connection once the last message waiting for it is durable (one
    /// request at a time: group commit makes a batch durable at once).
    fn watch(&mut self, waker: &ConnectionWaker) {
        let (Some(store), Some(&(_, last))) = (&self.broker.inner.store, self.unstored.back())
        else {
            return;
        };
        if !self.watching {
            self.watching = true;
            let waker = waker.clone();
            store.when_durable(last, move || waker.wake());
        }
    }

    /// Sends `accepted` for the received messages the journal made durable (in order), and
    /// `rejected` (`amqp:resource-limit-exceeded`) for those it failed to write.
    fn settle_stored(&mut self, c: &mut Connection<'_>) {
        let Some(store) = self.broker.inner.store.clone() else {
            return;
        };
        self.watching = false;
        while let Some(&(id, ticket)) = self.unstored.front() {
            let state = match store.durable(ticket) {
                Ok(false) => break,
                Ok(true) => DeliveryState::Accepted(Accepted {}),
                Err(e) => DeliveryState::Rejected(Rejected {
                    error: Some(stored_error(&e)),
                }),
            };
            self.unstored.pop_front();
            // A delivery whose link is gone cannot be settled: its producer resends.
            let _ = c.settle(id, state);
        }
        let waker = c.waker();
        self.watch(&waker);
    }

    /// A consumer settled a message for good (accepted or rejected): it leaves its queue with the others
    /// consumed in this pass, once the pass is over (`flush_consumed`, from `on_connection_wake`).
    /// Returns its queue's name.
    fn consumed(&mut self, t: &mut Tracker<'_>) -> Option<&str> {
        let id = t.id();
        let c = self.consumers.get_mut(&t.sender().id())?;
        let e = take_unsettled(c, id)?;
        if c.consumed.is_empty() {
            wake_self(t.core);
        }
        c.consumed.push(e);
        Some(&c.queue.name)
    }

    /// The messages consumers settled for good leave their queues.
    fn flush_consumed(&mut self) {
        for c in self.consumers.values_mut() {
            flush_consumed(c);
        }
    }

    fn settled_entry(&mut self, t: &mut Tracker<'_>) -> Option<(Arc<Queue>, Entry)> {
        let id = t.id();
        let c = self.consumers.get_mut(&t.sender().id())?;
        let e = take_unsettled(c, id)?;
        Some((c.queue.clone(), e))
    }
}

/// Takes the unsettled message sent as delivery `id` from the consumer (its link's deliveries have ids of
/// their own on its session, and a broker's connection has one transport).
fn take_unsettled(c: &mut ConsumerLink, id: DeliveryRef) -> Option<Entry> {
    c.unsettled.remove(id.delivery_id())
}

/// What the consumer settled for good leaves its queue.
fn flush_consumed(c: &mut ConsumerLink) {
    if !c.consumed.is_empty() {
        c.queue.settled(&c.consumed);
        c.consumed.clear();
    }
}

/// What a consumer with this source does: browse (distribution mode `copy`) or consume.
fn consumer_operation(source: &Source) -> Operation {
    let copy = source
        .distribution_mode
        .as_ref()
        .is_some_and(|m| m.as_str() == "copy");
    if copy {
        Operation::Browse
    } else {
        Operation::Consume
    }
}

/// Sends a message pre-settled (at-most-once), forwarding its encoded bytes.
fn send_settled(s: &mut Sender<'_>, m: &RawMessage) -> Result<(), Error> {
    let tag = s.core.next_tag();
    s.core.engine.send_slice(s.link, tag, m.bytes(), true)?;
    Ok(())
}

impl MessagingHandler for BrokerHandler {
    fn on_link_attach_request(&mut self, reply: &mut AttachReply) {
        match reply.role {
            Role::Sender => {
                let Some(source) = reply.source.as_mut() else {
                    return;
                };
                if source.dynamic {
                    match self.broker.temporary_queue(self.conn) {
                        Ok(q) => source.address = Some(q.name.clone()),
                        Err(e) => {
                            reply.source = None;
                            self.refusal = Some(e);
                        }
                    }
                    return;
                }
                let refused = match source.address.as_deref() {
                    Some(a) => self.may(consumer_operation(source), a).err(),
                    None => None,
                };
                // Refused links declare and make nothing. The queue (or subscription's topic) is made
                // now, so that one the broker cannot make refuses the link here too.
                let refused = refused
                    .or_else(|| {
                        self.broker
                            .topic_terminus(source.address.as_deref(), &mut source.capabilities)
                            .err()
                    })
                    .or_else(|| {
                        let address = source.address.as_deref()?;
                        self.broker.destination(address).err()
                    });
                if let Some(e) = refused {
                    // A null source refuses the link [AMQP 1.0 §2.6.3]; `on_sender_open` detaches it
                    // with the reason.
                    reply.source = None;
                    self.refusal = Some(e);
                }
            }
            Role::Receiver => {
                let Some(target) = reply.target.as_mut() else {
                    return;
                };
                if let Some(Err(e)) = target
                    .address
                    .as_deref()
                    .map(|a| self.may(Operation::Send, a))
                {
                    // A null target refuses the link [AMQP 1.0 §2.6.3], with no credit;
                    // `on_receiver_open` detaches it with the reason.
                    reply.target = None;
                    reply.credit_window = 0;
                    self.refusal = Some(e);
                    return;
                }
                let made = self
                    .broker
                    .topic_terminus(target.address.as_deref(), &mut target.capabilities)
                    .and_then(|topic| match target.address.as_deref() {
                        Some(a) => self.broker.destination(a).map(|d| (topic, Some(d))),
                        None => Ok((topic, None)),
                    });
                match made {
                    Err(e) => {
                        reply.target = None;
                        reply.credit_window = 0;
                        self.refusal = Some(e);
                    }
                    Ok((false, Some(Destination::Queue(q)))) if q.limits().bounded() => {
                        // Credit follows the queue's room (`top_up`); topics keep the normal window.
                        reply.credit_window = 0;
                    }
                    Ok(_) => {}
                }
            }
        }
    }

    fn on_sender_open(&mut self, s: &mut Sender<'_>) {
        if let Some(e) = self.refusal.take() {
            self.refuse(s.core, s.link, e);
            return;
        }
        let Some(address) = s.address().map(str::to_owned) else {
            log::info!(
                "connection {}: consumer with no source address refused",
                self.conn
            );
            let _ = s.core.engine.detach(
                s.link,
                true,
                Some(AmqpError::new(
                    ErrorCondition::NotFound,
                    "a source address (or a dynamic source) is required",
                )),
            );
            return;
        };
        let remote = s.core.engine.remote_attach(s.link).ok().flatten();
        let browse = remote
            .and_then(|a| a.source.as_ref())
            .is_some_and(|src| consumer_operation(src) == Operation::Browse);
        // A durable subscription: a source that keeps its state and never expires [AMQP 1.0 §3.5.3,
        // §3.5.5, §3.5.6], named by the client's container-id and the link's name, as JMS durable
        // subscribers are.
        let durable = remote
            .filter(|a| {
                a.source.as_ref().is_some_and(|src| {
                    src.durable != TerminusDurability::None
                        && src.expiry_policy == TerminusExpiryPolicy::Never
                })
            })
            .map(|a| a.name.clone());
        let durable = durable.map(|link| {
            let container = s
                .connection()
                .remote_container_id()
                .unwrap_or_default()
                .to_owned();
            format!("{container}:{link}")
        });
        let presettled = s
            .core
            .engine
            .link_config(s.link)
            .is_ok_and(|c| c.snd_settle_mode == SenderSettleMode::Settled);
        let destination = self.broker.destination(&address).and_then(|d| match d {
            // Every subscriber gets every message anyway: browsing a subscription is consuming it.
            Destination::Topic(topic) => {
                let q = match &durable {
                    Some(name) => topic.durable_subscription(name)?,
                    None => topic.subscribe(),
                };
                Ok((q, Some(topic), false))
            }
            Destination::Queue(q) => Ok((q, None, browse)),
        });
        let (queue, topic, browse) = match destination {
            Ok(d) => d,
            Err(e) => {
                self.refuse(s.core, s.link, e);
                return;
            }
        };
        // Only a topic has subscriptions.
        let durable = durable.filter(|_| topic.is_some());
        let id = s.id();
        queue.add_consumer(self.key(id), waker(s.core), browse);
        self.consumers.insert(
            id,
            ConsumerLink {
                queue,
                topic,
                fire_and_forget: browse || presettled,
                browse,
                durable,
                unsettled: SeqMap::default(),
                consumed: Vec::new(),
            },
        );
        self.count_links();
        let credit = s.credit();
        self.pull(s, credit);
    }

    fn on_sendable(&mut self, s: &mut Sender<'_>) {
        let credit = s.credit();
        self.pull(s, credit);
    }

    fn on_sender_drain_start(&mut self, s: &mut Sender<'_>) {
        let credit = s.credit();
        self.pull(s, credit);
        // The runtime gives back what is left: the queue must not count on it.
        self.pull(s, 0);
    }

    fn on_sender_close(&mut self, s: &mut Sender<'_>) {
        self.drop_consumer(s.id(), true);
        wake_self(s.core);
    }

    fn on_sender_detach(&mut self, s: &mut Sender<'_>) {
        self.drop_consumer(s.id(), false);
        wake_self(s.core);
    }

    fn on_receiver_open(&mut self, r: &mut Receiver<'_>) {
        if let Some(e) = self.refusal.take() {
            self.refuse(r.core, r.link, e);
            return;
        }
        let address = r
            .core
            .engine
            .remote_attach(r.link)
            .ok()
            .flatten()
            .and_then(|a| a.target.as_ref())
            .and_then(|t| t.address.clone());
        let destination = match address.map(|a| self.broker.destination(&a)).transpose() {
            Ok(d) => d,
            Err(e) => {
                self.refuse(r.core, r.link, e);
                return;
            }
        };
        if let Some(Destination::Queue(q)) = &destination {
            q.add_producer(self.conn, r.core.waker.clone());
        }
        self.producers.insert(
            r.id(),
            Producer {
                destination,
                reserved: 0,
                largest: 0,
            },
        );
        self.top_up(r);
        self.count_links();
    }

    fn on_receiver_close(&mut self, r: &mut Receiver<'_>) {
        self.drop_producer(r.id());
    }

    fn on_receiver_detach(&mut self, r: &mut Receiver<'_>) {
        self.drop_producer(r.id());
    }

    fn takes_raw_messages(&self) -> bool {
        true
    }

    /// A message is routed and queued as the bytes it came as, never decoded: routing needs only `to`, the
    /// queue the header and the expiry time, which `RawMessage` reads from the bytes.
    fn on_raw_message(&mut self, d: &mut Delivery<'_>, mut message: RawMessage) {
        // The payload is a slice of the connection's read buffer: a copy of its own keeps only its bytes
        // alive for as long as it is queued, however large the buffer (once per message, shared by every
        // subscription and consumer it goes to).
        message.compact();
        let rid = d.receiver().id();
        // A message on credit a bounded queue promised room to is always taken.
        let mut reserved = false;
        let destination = match self.producers.get_mut(&rid) {
            Some(Producer {
                destination: Some(dest),
                reserved: r,
                largest,
            }) => {
                reserved = *r > 0;
                *r = r.saturating_sub(1);
                if message.len() > *largest {
                    *largest = message.len();
                    let want = producer_window(*largest);
                    if *r > want {
                        // Larger messages than before: the credit left shrinks to their window.
                        if let Destination::Queue(q) = dest {
                            q.unreserve(*r - want);
                        }
                        *r = want;
                        let _ = d.receiver().limit_credit(want as u32);
                    }
                }
                Ok(dest.clone())
            }
            _ => match message.to() {
                Some(to) => self
                    .may(Operation::Send, to)
                    .and_then(|()| self.broker.destination(to)),
                None => Err(AmqpError::new(
                    ErrorCondition::NotFound,
                    "the link has no target address and the message no `to`",
                )),
            },
        };
        let ticket = match destination {
            Err(e) => {
                d.reject(Some(e));
                return;
            }
            Ok(Destination::Queue(q)) => match q.enqueue(message, self.conn, reserved) {
                Ok(ticket) => ticket,
                Err(Refused::Deleted) if q.temporary => {
                    // A temporary queue deleted since the link attached [AMQP 1.0 §3.4.3].
                    d.reject(Some(gone(&q.name)));
                    return;
                }
                Err(Refused::Deleted) => {
                    // Deleted through the management API: so is the producer's link.
                    let e = deleted(&q.name);
                    d.reject(Some(e.clone()));
                    let link = d.receiver().link;
                    self.drop_producer(rid);
                    self.refuse(d.core, link, e);
                    return;
                }
                Err(Refused::Full) => {
                    d.reject(Some(full_error(&q.name)));
                    return;
                }
                Err(Refused::Journal(why)) => {
                    d.reject(Some(journal_error(&q.name, &why)));
                    // The credit it used is topped up as for a taken message: the producer is refused
                    // message by message while the disk is full, and taken again once it is not.
                    d.core.waker.wake();
                    return;
                }
            },
            Ok(Destination::Topic(t)) => match t.publish(message, self.conn) {
                Err(e) => {
                    d.reject(Some(e));
                    return;
                }
                Ok((0, _)) => {
                    self.broker
                        .inner
                        .dropped_without_subscribers
                        .fetch_add(1, Ordering::Relaxed);
                    log::debug!("a message on topic {} had no subscriber", t.name);
                    None
                }
                Ok((_, ticket)) => ticket,
            },
        };
        // Accepted only now that it is enqueued, and durable if it is in a journal (a no-op for a
        // pre-settled transfer).
        self.accept_when_stored(d, ticket);
        // Wake this connection too (coalesced): `on_connection_wake` sends to its own consumers, which
        // `enqueue` does not wake, and tops up producer credit once every transfer already read is enqueued
        // (the link's credit does not count those yet; topping up now would overfill a bounded queue).
        d.core.waker.wake();
    }

    fn on_tracker_accept(&mut self, t: &mut Tracker<'_>) {
        // The message leaves the broker.
        self.consumed(t);
    }

    fn on_tracker_reject(&mut self, t: &mut Tracker<'_>) {
        let inner = self.broker.inner.clone();
        if let Some(name) = self.consumed(t) {
            let n = inner.rejected.fetch_add(1, Ordering::Relaxed) + 1;
            log::info!("a message on {name} was rejected and dropped ({n} so far)");
        }
    }

    fn on_tracker_release(&mut self, t: &mut Tracker<'_>) {
        let (failed, elsewhere, annotations) = match t.state() {
            Some(DeliveryState::Modified(m)) => (
                m.delivery_failed,
                m.undeliverable_here,
                m.message_annotations.clone(),
            ),
            _ => (false, false, None),
        };
        let key = self.key(t.sender().id());
        if let Some((q, mut e)) = self.settled_entry(t) {
            if !failed {
                q.released(&e);
            }
            e.returned(failed);
            if let Some(annotations) = annotations {
                // Merged into the message's, replacing those with the same key [AMQP 1.0 §3.4.5].
                e.annotate(annotations);
            }
            if elsewhere {
                // Not to this consumer again; it waits for another.
                e.refuse(key);
            }
            q.requeue(vec![e], self.conn);
            // The queue wakes other connections' consumers; this one's may want it back too.
            wake_self(t.core);
        }
    }

    fn on_tracker_settle(&mut self, t: &mut Tracker<'_>) {
        if t.state().and_then(DeliveryState::outcome).is_some() {
            // Its outcome's callback (accept, reject, release) already dealt with it.
            return;
        }
        // Settled by the peer with no outcome: not consumed, so it goes back, as its lost link's would
        // (see `drop_consumer`).
        if let Some((q, mut e)) = self.settled_entry(t) {
            e.returned(true);
            q.requeue(vec![e], self.conn);
            wake_self(t.core);
        }
    }

    fn on_connection_wake(&mut self, c: &mut Connection<'_>) {
        self.flush_consumed();
        self.settle_stored(c);
        let ids: Vec<SenderId> = self.consumers.keys().copied().collect();
        for id in ids {
            let gone = self.consumers.get(&id).filter(|l| l.queue.deleted());
            if let Some(name) = gone.map(|l| l.queue.name.clone()) {
                // Its queue was deleted (`Broker::delete_queue`, which woke this connection).
                self.drop_consumer(id, true);
                if let Some(s) = c.sender(id) {
                    self.refuse(s.core, s.link, deleted(&name));
                }
                continue;
            }
            if let Some(mut s) = c.sender(id) {
                let credit = s.credit();
                self.pull(&mut s, credit);
            }
        }
        let ids: Vec<ReceiverId> = self.producers.keys().copied().collect();
        for id in ids {
            if let Some(mut r) = c.receiver(id) {
                self.top_up(&mut r);
            }
        }
    }

    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        // SASL is over by now: the user is known for every link to come.
        if let Some(user) = c.user() {
            self.user = user.to_owned();
            self.entry.set_user(user);
        }
        log::info!(
            "connection {} from {} opened as {}",
            self.conn,
            self.peer,
            self.user
        );
    }

    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let ids: Vec<SenderId> = self.consumers.keys().copied().collect();
        for id in ids {
            self.drop_consumer(id, false);
        }
        // Their deliveries went with the transport: the producer never saw `accepted` (its messages are
        // queued, and durable soon, all the same).
        self.unstored.clear();
        let ids: Vec<ReceiverId> = self.producers.keys().copied().collect();
        for id in ids {
            self.drop_producer(id);
        }
        self.broker.inner.memory.forget(self.conn);
        self.sessions.clear();
        self.entry.sessions.store(0, Ordering::Relaxed);
        self.count_links();
        log::info!("connection {} from {} closed", self.conn, self.peer);
    }

    fn on_session_open(&mut self, s: &mut Session<'_>) {
        self.sessions.insert(s.id);
        self.entry
            .sessions
            .store(self.sessions.len(), Ordering::Relaxed);
    }

    fn on_session_close(&mut self, s: &mut Session<'_>) {
        self.sessions.remove(&s.id);
        self.entry
            .sessions
            .store(self.sessions.len(), Ordering::Relaxed);
    }

    fn on_error(&mut self, error: &Error) {
        log::info!("connection {} from {}: {error}", self.conn, self.peer);
    }
}

/// Benchmark hooks for `runtime/benches/queue_depth.rs`; not part of the API. Each fills a queue (not timed)
/// and returns the time of the queue operations a consumer's connection drives on it.
#[doc(hidden)]
pub mod bench {
    use std::hint::black_box;
    use std::time::{Duration, Instant};

    use nucleon_protocol::{Message, RawMessage};

    use super::queue::{ConsumerKey, Limits, Queue};
    use crate::views::SenderId;

    /// A queue of `depth` messages and a consumer of it with no credit yet.
    fn filled(depth: usize) -> (Queue, ConsumerKey) {
        let q = Queue::new("bench".into(), false, Limits::default(), Default::default());
        for i in 0..depth {
            let m = RawMessage::from_message(&Message::with_body(i as i64)).expect("a message");
            assert!(q.enqueue(m, 0, false).is_ok());
        }
        let key = ConsumerKey {
            conn: 1,
            link: SenderId { conn: 1, key: 1 },
        };
        q.add_consumer(key, None, false);
        (q, key)
    }

    /// Times the consumer draining a queue of `depth` messages, granted `credit` at a time (`take`, as
    /// `pull` does); each message taken is then dropped, as an accepted one leaves the broker.
    pub fn drain(depth: usize, credit: u32) -> Duration {
        let (q, key) = filled(depth);
        let start = Instant::now();
        loop {
            let taken = q.take(key, credit);
            if taken.is_empty() {
                break;
            }
            drop(black_box(taken));
        }
        start.elapsed()
    }

    /// Times `rounds` times: the consumer takes `held` messages from the head of a queue of `depth`, then
    /// gives them all back in one `requeue` (1: a release, as `on_tracker_release` does; more: a lost
    /// consumer's unsettled messages, as `remove_consumer` gives them back).
    pub fn take_and_requeue(depth: usize, held: u32, rounds: u64) -> Duration {
        let (q, key) = filled(depth);
        // One round not timed: the first costs some 20 µs more at any depth (cold caches and allocator).
        let taken = q.take(key, held);
        q.requeue(taken, 1);
        let start = Instant::now();
        for _ in 0..rounds {
            // The consumer's credit is used up: what goes back stays in the queue.
            let taken = q.take(key, held);
            q.requeue(black_box(taken), 1);
        }
        start.elapsed()
    }

    /// For `runtime/benches/store_recovery.rs`: writes `messages` messages of `size` bytes, spread over four
    /// queues, into a new store in `dir` (batch sync, 16 MiB segments), waits until the last is durable and
    /// closes it; then opens it again. Returns the time of the writes and of the open (the recovery),
    /// after checking that every message came back.
    pub fn store_recovery(
        dir: &std::path::Path,
        messages: usize,
        size: usize,
    ) -> (Duration, Duration) {
        use super::store::{QueueKind, Store, StoreOptions};
        let options = StoreOptions::new(dir);
        let (store, _) = Store::open(options.clone()).expect("open the store");
        let qids: Vec<u64> = (0..4)
            .map(|i| {
                store
                    .declare_queue(&format!("bench-{i}"), &QueueKind::Queue)
                    .expect("declare a queue")
            })
            .collect();
        let payload = vec![0x5a; size];
        let start = Instant::now();
        let mut last = 0;
        for i in 0..messages {
            last = store
                .append_message(qids[i % qids.len()], &payload)
                .expect("append a message")
                .1;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        store.when_durable(last, move || {
            let _ = tx.send(());
        });
        rx.recv()
            .expect("the writer wakes the last message's waiter");
        assert!(store.durable(last).expect("no write error"));
        let write = start.elapsed();
        store.close();
        drop(store);
        let start = Instant::now();
        let (store, recovered) = Store::open(options).expect("reopen the store");
        let recovery = start.elapsed();
        let found: usize = recovered.queues.iter().map(|q| q.messages.len()).sum();
        assert_eq!(found, messages);
        store.close();
        (write, recovery)
    }
}
