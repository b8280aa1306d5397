//! The gateway's side of AMQP: one connection to the broker shared by every request, with a sender per
//! address and a receiver per GET or stream as links on it, and the deliveries waiting for an explicit
//! acknowledgement (`?ack=manual`).
//!
//! The connection is made on first use and made again when it ends (`AsyncConnectionHandle::is_closed`):
//! however many requests run, the broker sees one connection. Requests that find it gone while opening
//! a link or sending retry once on a new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nucleon::{
    AsyncConnectionHandle, ConnectionOptions, ContainerHandle, Error, Message, Outcome, Received,
    ReceiverHandle, ReceiverOptions, SenderHandle, SenderOptions, Timeout,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The most addresses with a cached sender; a new one beyond that closes the link of one of the others.
const MAX_SENDERS: usize = 64;
/// The most receiver links (GETs, streams, manual acknowledgements waiting) open at once on the shared
/// connection: with the senders, below the 256 link handles a session gets [AMQP 1.0 §2.7.2], so no client
/// can take them all and leave the others with refused links.
pub const MAX_RECEIVERS: usize = 180;
/// How long a failed connection attempt is remembered: requests meanwhile fail at once (503) instead of
/// each waiting for an attempt of its own.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How long connecting, opening a link or waiting for an outcome may take before the broker counts as
/// unreachable.
pub const BROKER_TIMEOUT: Duration = Duration::from_secs(30);

/// What every handler shares.
pub struct Gateway {
    container: ContainerHandle,
    /// `amqp://host:port` of the broker.
    broker: String,
    /// How to connect to it (TLS for `amqps://`, the in-process broker's credential).
    options: ConnectionOptions,
    /// The shared connection (`None` before the first request). An async lock: concurrent first requests
    /// wait for one connection instead of each making their own.
    connection: tokio::sync::Mutex<Option<AsyncConnectionHandle>>,
    /// One sender link per address, reused across requests.
    senders: Mutex<HashMap<String, SenderHandle>>,
    /// The last failed connection attempt, while it is recent.
    failed: Mutex<Option<(Instant, Error)>>,
    /// Places for event streams: one is taken for as long as a stream is open.
    pub streams: Arc<Semaphore>,
    /// Places for receiver links: one is taken for as long as a GET, a stream or a manual
    /// acknowledgement's link is open.
    receivers: Arc<Semaphore>,
    /// Deliveries given out with `?ack=manual`, until acknowledged or their deadline.
    pub acks: Acks,
    /// The interval of the event streams' keep-alive comments.
    pub keep_alive: Duration,
}

impl Gateway {
    pub fn new(
        container: ContainerHandle,
        broker: String,
        options: ConnectionOptions,
        max_streams: usize,
        max_unacked: usize,
        keep_alive: Duration,
    ) -> Gateway {
        Gateway {
            container,
            broker,
            options,
            connection: tokio::sync::Mutex::new(None),
            failed: Mutex::new(None),
            senders: Mutex::new(HashMap::new()),
            streams: Arc::new(Semaphore::new(max_streams)),
            receivers: Arc::new(Semaphore::new(MAX_RECEIVERS)),
            acks: Acks::new(max_unacked),
            keep_alive,
        }
    }

    /// The shared connection, made (again) if there is none or it ended.
    async fn connection(&self) -> Result<AsyncConnectionHandle, Error> {
        let mut shared = self.connection.lock().await;
        if let Some(c) = shared.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        if let Some((at, e)) = self.failed().as_ref() {
            if at.elapsed() < RETRY_AFTER {
                return Err(e.clone());
            }
        }
        let made = tokio::time::timeout(
            BROKER_TIMEOUT,
            self.container
                .connect_async(&self.broker, self.options.clone()),
        )
        .await
        .unwrap_or_else(|_| {
            Err(Error::Timeout {
                what: Timeout::Connect,
                after: BROKER_TIMEOUT,
            })
        });
        match made {
            Ok(made) => {
                log::info!("connected to {}", self.broker);
                *self.failed() = None;
                *shared = Some(made.clone());
                Ok(made)
            }
            Err(e) => {
                log::warn!("cannot connect to {}: {e}", self.broker);
                *self.failed() = Some((Instant::now(), e.clone()));
                Err(e)
            }
        }
    }

    fn failed(&self) -> MutexGuard<'_, Option<(Instant, Error)>> {
        self.failed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a receiver link, or `None` when [`MAX_RECEIVERS`] are open (the caller answers 503).
    pub fn receiver_place(&self) -> Option<OwnedSemaphorePermit> {
        self.receivers.clone().try_acquire_owned().ok()
    }

    fn senders(&self) -> MutexGuard<'_, HashMap<String, SenderHandle>> {
        self.senders.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached sender for `address` if its connection is still up, or a newly opened one (then cached).
    async fn sender(&self, address: &str) -> Result<SenderHandle, Error> {
        if let Some(s) = self.senders().get(address) {
            if !s.connection().is_closed() {
                return Ok(s.clone());
            }
        }
        let connection = self.connection().await?;
        let opened = tokio::time::timeout(
            BROKER_TIMEOUT,
            connection.open_sender(address, SenderOptions::default()),
        )
        .await
        .map_err(|_| Error::Timeout {
            what: Timeout::Attach,
            after: BROKER_TIMEOUT,
        })??;
        let mut senders = self.senders();
        if let Some(s) = senders.get(address).filter(|s| !s.connection().is_closed()) {
            // Another request opened one meanwhile: keep that one (this one's link closes as it drops).
            return Ok(s.clone());
        }
        if senders.len() >= MAX_SENDERS && !senders.contains_key(address) {
            // Its link closes once the requests using it are done with it.
            if let Some(old) = senders.keys().next().cloned() {
                senders.remove(&old);
            }
        }
        senders.insert(address.to_owned(), opened.clone());
        Ok(opened)
    }

    /// Sends `message` to `address` and waits for its outcome. If the shared connection ended meanwhile,
    /// the message is tried once more on a new one (the broker may then have it twice: at-least-once).
    pub async fn send(&self, address: &str, message: Message) -> Result<Outcome, Error> {
        let mut retried = false;
        loop {
            let sender = self.sender(address).await?;
            let sent = tokio::time::timeout(BROKER_TIMEOUT, sender.send(message.clone()))
                .await
                .unwrap_or_else(|_| {
                    Err(Error::Timeout {
                        what: Timeout::Send,
                        after: BROKER_TIMEOUT,
                    })
                });
            match sent {
                Ok(outcome) => return Ok(outcome),
                Err(e) => {
                    let lost = sender.connection().is_closed();
                    self.senders().remove(address);
                    if retried || !lost {
                        return Err(e);
                    }
                    retried = true;
                }
            }
        }
    }

    /// Opens a receiver link on `address` with a credit window of `window`, on the shared connection.
    pub async fn receiver(&self, address: &str, window: u32) -> Result<ReceiverHandle, Error> {
        let options = ReceiverOptions::new().credit_window(window);
        let mut retried = false;
        loop {
            let connection = self.connection().await?;
            let opened = tokio::time::timeout(
                BROKER_TIMEOUT,
                connection.open_receiver(address, options.clone()),
            )
            .await
            .map_err(|_| Error::Timeout {
                what: Timeout::Attach,
                after: BROKER_TIMEOUT,
            })?;
            match opened {
                Err(_) if !retried && connection.is_closed() => retried = true,
                other => return other,
            }
        }
    }
}

/// A delivery given out with `?ack=manual`: settled by an acknowledgement, or released at its deadline.
struct Unacked {
    address: String,
    received: Received,
    deadline: Instant,
    /// Its receiver link (and the link's place), open for as long as one of its deliveries waits (dropped
    /// with the last one, which gives back to the broker whatever else it held).
    _link: Arc<(ReceiverHandle, OwnedSemaphorePermit)>,
}

/// How a delivery is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    Accept,
    Release,
    Reject,
}

/// The deliveries waiting for an acknowledgement, by delivery id, bounded: a GET reserves room for all it
/// may take before it takes anything ([`Acks::reserve`]), so concurrent GETs cannot overshoot the bound.
pub struct Acks {
    waiting: Mutex<Waiting>,
    max: usize,
}

#[derive(Default)]
struct Waiting {
    by_id: HashMap<String, Unacked>,
    /// Room promised to GETs still taking messages.
    reserved: usize,
}

/// Room for deliveries a GET may give out, promised by [`Acks::reserve`] and given back when dropped.
pub struct Reservation<'a> {
    acks: &'a Acks,
    left: usize,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut w = self.acks.waiting();
        w.reserved = w.reserved.saturating_sub(self.left);
    }
}

impl Acks {
    fn new(max: usize) -> Acks {
        Acks {
            waiting: Mutex::new(Waiting::default()),
            max,
        }
    }

    fn waiting(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Promises room for `n` deliveries, or `None` when there is not that much (the caller gives none out:
    /// the broker keeps the messages).
    pub fn reserve(&self, n: usize) -> Option<Reservation<'_>> {
        let mut w = self.waiting();
        if w.by_id.len() + w.reserved + n > self.max {
            return None;
        }
        w.reserved += n;
        Some(Reservation {
            acks: self,
            left: n,
        })
    }

    /// Keeps `received` (of `address`, through `link`) until acknowledged or `deadline`, in room
    /// `reservation` promised; returns its id.
    pub fn hold(
        &self,
        reservation: &mut Reservation<'_>,
        address: &str,
        received: Received,
        link: &Arc<(ReceiverHandle, OwnedSemaphorePermit)>,
        deadline: Instant,
    ) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut w = self.waiting();
        if reservation.left > 0 {
            reservation.left -= 1;
            w.reserved = w.reserved.saturating_sub(1);
        }
        w.by_id.insert(
            id.clone(),
            Unacked {
                address: address.to_owned(),
                received,
                deadline,
                _link: link.clone(),
            },
        );
        id
    }

    /// Settles the deliveries `ids` of `address` as `how`; returns the ids that are not waiting (unknown,
    /// of another address, already settled, or past their deadline and released).
    pub fn settle(&self, address: &str, ids: &[String], how: Settle) -> Vec<String> {
        let mut unknown = Vec::new();
        let mut taken = Vec::new();
        {
            let mut waiting = self.waiting();
            for id in ids {
                match waiting.by_id.get(id) {
                    Some(u) if u.address == address => {
                        taken.extend(waiting.by_id.remove(id).map(|u| (id, u)));
                    }
                    _ => unknown.push(id.clone()),
                }
            }
        }
        for (id, u) in taken {
            let settled = match how {
                Settle::Accept => u.received.accept(),
                Settle::Release => u.received.release(),
                Settle::Reject => u.received.reject(None),
            };
            if settled.is_err() {
                // Its connection is gone, and the broker has released it already.
                unknown.push(id.clone());
            }
        }
        unknown
    }

    /// Releases the deliveries past their deadline (the broker delivers them again).
    pub fn expire(&self, now: Instant) {
        let expired: Vec<Unacked> = {
            let mut waiting = self.waiting();
            let ids: Vec<String> = waiting
                .by_id
                .iter()
                .filter(|(_, u)| u.deadline <= now)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter()
                .filter_map(|id| waiting.by_id.remove(id))
                .collect()
        };
        if !expired.is_empty() {
            log::info!(
                "{} unacknowledged deliveries released at their deadline",
                expired.len()
            );
        }
        for u in expired {
            let _ = u.received.release();
        }
    }
}
