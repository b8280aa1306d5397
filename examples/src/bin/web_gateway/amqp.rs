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
use tokio::sync::Semaphore;

/// The most addresses with a cached sender; a new one beyond that closes the link of one of the others.
const MAX_SENDERS: usize = 64;
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
    /// Places for event streams: one is taken for as long as a stream is open.
    pub streams: Arc<Semaphore>,
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
            senders: Mutex::new(HashMap::new()),
            streams: Arc::new(Semaphore::new(max_streams)),
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
        let made = tokio::time::timeout(
            BROKER_TIMEOUT,
            self.container
                .connect_async(&self.broker, self.options.clone()),
        )
        .await
        .map_err(|_| Error::Timeout {
            what: Timeout::Connect,
            after: BROKER_TIMEOUT,
        })??;
        log::info!("connected to {}", self.broker);
        *shared = Some(made.clone());
        Ok(made)
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
    /// Its receiver link, open for as long as one of its deliveries waits (dropped with the last one, which
    /// gives back to the broker whatever else it held).
    _link: Arc<ReceiverHandle>,
}

/// How a delivery is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Settle {
    Accept,
    Release,
    Reject,
}

/// The deliveries waiting for an acknowledgement, by delivery id, bounded.
pub struct Acks {
    waiting: Mutex<HashMap<String, Unacked>>,
    max: usize,
}

impl Acks {
    fn new(max: usize) -> Acks {
        Acks {
            waiting: Mutex::new(HashMap::new()),
            max,
        }
    }

    fn waiting(&self) -> MutexGuard<'_, HashMap<String, Unacked>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Room for `n` more: the caller gives none out when there is not (the broker keeps the messages).
    pub fn room_for(&self, n: usize) -> bool {
        self.waiting().len() + n <= self.max
    }

    /// Keeps `received` (of `address`, through `link`) until acknowledged or `deadline`; returns its id.
    pub fn hold(
        &self,
        address: &str,
        received: Received,
        link: &Arc<ReceiverHandle>,
        deadline: Instant,
    ) -> String {
        let id = uuid::Uuid::new_v4().simple().to_string();
        self.waiting().insert(
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
                match waiting.get(id) {
                    Some(u) if u.address == address => {
                        taken.extend(waiting.remove(id));
                    }
                    _ => unknown.push(id.clone()),
                }
            }
        }
        for u in taken {
            let _ = match how {
                Settle::Accept => u.received.accept(),
                Settle::Release => u.received.release(),
                Settle::Reject => u.received.reject(None),
            };
        }
        unknown
    }

    /// Releases the deliveries past their deadline (the broker delivers them again).
    pub fn expire(&self, now: Instant) {
        let expired: Vec<Unacked> = {
            let mut waiting = self.waiting();
            let ids: Vec<String> = waiting
                .iter()
                .filter(|(_, u)| u.deadline <= now)
                .map(|(id, _)| id.clone())
                .collect();
            ids.iter().filter_map(|id| waiting.remove(id)).collect()
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
