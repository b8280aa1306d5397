//! The `async` facade: [`SenderHandle`] and [`ReceiverHandle`] for actix-web handlers and plain async code,
//! and delivery into any actix [`Recipient<Received>`](actix::Recipient).
//!
//! It is built on the work queue: every operation is a closure queued on the link's connection, and every
//! result comes back through a oneshot channel. Nothing here touches a connection object outside its context.
//!
//! Flow control follows the consumer. A `ReceiverHandle` grants credit only as its stream is consumed, and a
//! recipient gets credit back only as its actor handles each message, so neither a slow task nor a slow actor
//! ever has more than the credit window of messages waiting.

use std::collections::{HashMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use actix::Recipient;
use futures::Stream;
use nucleon_protocol::frame::{
    Accepted, DeliveryState, Error as AmqpError, Modified, Rejected, Released,
};
use nucleon_protocol::Message;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::connection::WorkQueue;
use crate::container::ContainerHandle;
use crate::error::Error;
use crate::handler::MessagingHandler;
use crate::options::{ConnectionOptions, DeliveryMode, ReceiverOptions, SenderOptions};
use crate::url::Address;
use crate::views::{
    Connection, Delivery, DeliveryRef, Receiver, ReceiverId, Sender, SenderId, Session, Tracker,
};

/// How many sends a `SenderHandle` lets wait for credit or an outcome at once; further sends wait their turn.
const MAX_IN_FLIGHT: usize = 1024;

/// The outcome of a message sent through a [`SenderHandle`] [AMQP 1.0 §3.4].
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The receiver accepted it.
    Accepted,
    /// The receiver rejected it, with this error.
    Rejected(Option<AmqpError>),
    /// The receiver released it (it may be delivered again).
    Released,
    /// The receiver modified it.
    Modified {
        /// Count the transfer as a failed delivery attempt.
        delivery_failed: bool,
        /// Do not deliver it to this receiver again.
        undeliverable_here: bool,
    },
    /// Sent pre-settled (at most once): there is no outcome.
    Settled,
}

impl Outcome {
    fn from_state(state: Option<&DeliveryState>) -> Outcome {
        match state {
            Some(DeliveryState::Accepted(_)) => Outcome::Accepted,
            Some(DeliveryState::Rejected(r)) => Outcome::Rejected(r.error.clone()),
            Some(DeliveryState::Released(_)) => Outcome::Released,
            Some(DeliveryState::Modified(m)) => Outcome::Modified {
                delivery_failed: m.delivery_failed,
                undeliverable_here: m.undeliverable_here,
            },
            _ => Outcome::Settled,
        }
    }
}

type Reply<T> = oneshot::Sender<Result<T, Error>>;

/// Where received messages go.
enum Sink {
    /// A `ReceiverHandle`'s stream.
    Stream(mpsc::UnboundedSender<Received>),
    /// An actix actor.
    Actor(Recipient<Received>),
}

/// The handler behind every facade connection: one link, driven by work items.
pub(crate) struct Facade {
    address: Option<String>,
    role: FacadeRole,
    opened: Option<Reply<()>>,
    /// Its own connection's work queue, for the settlers and credit of what it receives.
    wq: WorkQueue<Facade>,
    error: Option<Error>,
    /// The connection reconnects after a lost transport: its link is attached again by the runtime.
    reconnects: bool,
}

enum FacadeRole {
    Sender {
        options: SenderOptions,
        sender: Option<SenderId>,
        waiting: VecDeque<(Message, Reply<Outcome>)>,
        in_flight: HashMap<DeliveryRef, Reply<Outcome>>,
    },
    Receiver {
        options: ReceiverOptions,
        receiver: Option<ReceiverId>,
        sink: Sink,
    },
}

impl Facade {
    fn fail_all(&mut self, error: Error) {
        if let Some(reply) = self.opened.take() {
            let _ = reply.send(Err(error.clone()));
        }
        if let FacadeRole::Sender {
            waiting, in_flight, ..
        } = &mut self.role
        {
            for (_, reply) in waiting.drain(..) {
                let _ = reply.send(Err(error.clone()));
            }
            for (_, reply) in in_flight.drain() {
                let _ = reply.send(Err(error.clone()));
            }
        }
        self.error.get_or_insert(error);
    }

    fn flush(&mut self, conn: &mut Connection<'_>) {
        let FacadeRole::Sender {
            options,
            sender: Some(id),
            waiting,
            in_flight,
        } = &mut self.role
        else {
            return;
        };
        let Some(mut sender) = conn.sender(*id) else {
            return;
        };
        while sender.credit() > 0 {
            let Some((message, reply)) = waiting.pop_front() else {
                break;
            };
            match sender.send(&message) {
                Ok(_) if options.delivery_mode == DeliveryMode::AtMostOnce => {
                    let _ = reply.send(Ok(Outcome::Settled));
                }
                Ok(d) => {
                    in_flight.insert(d, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }

    fn outcome(&mut self, tracker: &Tracker<'_>) {
        if let FacadeRole::Sender { in_flight, .. } = &mut self.role {
            if let Some(reply) = in_flight.remove(&tracker.id()) {
                let _ = reply.send(Ok(Outcome::from_state(tracker.state())));
            }
        }
    }

    fn add_credit(&mut self, conn: &mut Connection<'_>, n: u32) {
        if let FacadeRole::Receiver {
            receiver: Some(id), ..
        } = &self.role
        {
            if let Some(mut r) = conn.receiver(*id) {
                let _ = r.add_credit(n);
            }
        }
    }
}

impl MessagingHandler for Facade {
    fn on_connection_open(&mut self, conn: &mut Connection<'_>) {
        // After a reconnect the runtime attaches the link again under the same id: no second link.
        let attached = match &self.role {
            FacadeRole::Sender { sender, .. } => sender.is_some(),
            FacadeRole::Receiver { receiver, .. } => receiver.is_some(),
        };
        if attached {
            return;
        }
        let address = self.address.clone().unwrap_or_default();
        let opened = match &mut self.role {
            FacadeRole::Sender {
                options, sender, ..
            } => conn
                .open_sender(&address, options.clone())
                .map(|s| *sender = Some(s.id())),
            FacadeRole::Receiver {
                options, receiver, ..
            } => {
                let mut o = options.clone();
                // Credit is granted by the consumer, never by the runtime's window.
                o.credit_window = Some(0);
                o.auto_accept = Some(false);
                conn.open_receiver(&address, o).map(|r| {
                    *receiver = Some(r.id());
                })
            }
        };
        if let Err(e) = opened {
            self.fail_all(e);
            conn.close();
        }
    }

    fn on_sender_open(&mut self, s: &mut Sender<'_>) {
        if let Some(reply) = self.opened.take() {
            let _ = reply.send(Ok(()));
        }
        self.flush(&mut s.connection());
    }

    fn on_receiver_open(&mut self, r: &mut Receiver<'_>) {
        if let Some(reply) = self.opened.take() {
            let _ = reply.send(Ok(()));
        }
        if let FacadeRole::Receiver { options, .. } = &self.role {
            let window = options.credit_window.unwrap_or(10).max(1);
            let _ = r.add_credit(window);
        }
    }

    fn on_sendable(&mut self, s: &mut Sender<'_>) {
        self.flush(&mut s.connection());
    }

    fn on_tracker_accept(&mut self, t: &mut Tracker<'_>) {
        self.outcome(t);
    }

    fn on_tracker_reject(&mut self, t: &mut Tracker<'_>) {
        self.outcome(t);
    }

    fn on_tracker_release(&mut self, t: &mut Tracker<'_>) {
        self.outcome(t);
    }

    fn on_message(&mut self, d: &mut Delivery<'_>, message: Message) {
        let FacadeRole::Receiver { sink, options, .. } = &mut self.role else {
            return;
        };
        let wq = self.wq.clone();
        let presettled = d.settled() || options.delivery_mode == DeliveryMode::AtMostOnce;
        d.defer();
        let received = Received {
            message,
            delivery: d.id(),
            settler: (!presettled).then(|| wq.clone()),
        };
        match sink {
            Sink::Stream(tx) => {
                let _ = tx.send(received);
            }
            Sink::Actor(recipient) => {
                let recipient = recipient.clone();
                // Credit comes back only when the actor has handled the message.
                actix_rt::spawn(async move {
                    if recipient.send(received).await.is_ok() {
                        let _ = wq.add(|h, c| h.add_credit(c, 1));
                    }
                });
            }
        }
    }

    fn on_sender_error(&mut self, _s: &mut Sender<'_>, error: &AmqpError) {
        self.fail_all(Error::Amqp(error.clone()));
    }

    fn on_sender_close(&mut self, s: &mut Sender<'_>) {
        self.fail_all(Error::LinkClosed);
        s.connection().close();
    }

    fn on_receiver_error(&mut self, _r: &mut Receiver<'_>, error: &AmqpError) {
        self.fail_all(Error::Amqp(error.clone()));
    }

    fn on_receiver_close(&mut self, r: &mut Receiver<'_>) {
        self.fail_all(Error::LinkClosed);
        r.connection().close();
    }

    fn on_session_error(&mut self, _s: &mut Session<'_>, error: &AmqpError) {
        // Some peers (RabbitMQ) refuse a link by ending its whole session.
        self.fail_all(Error::Amqp(error.clone()));
    }

    fn on_session_close(&mut self, s: &mut Session<'_>) {
        self.fail_all(Error::LinkClosed);
        s.connection().close();
    }

    fn on_connection_error(&mut self, _c: &mut Connection<'_>, error: &AmqpError) {
        self.fail_all(Error::Amqp(error.clone()));
    }

    fn on_transport_error(&mut self, _c: &mut Connection<'_>, error: &AmqpError) {
        if self.reconnects && self.opened.is_none() {
            // Another transport may follow (`on_transport_close` settles what was in flight): the error
            // must not stick, or every send after the reconnect would fail with it.
            log::debug!("a facade's transport failed, reconnecting: {error}");
            return;
        }
        self.fail_all(Error::Amqp(error.clone()));
    }

    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        if self.reconnects && self.opened.is_none() {
            // Another transport may follow: what was in flight has lost its outcome, what waits for credit
            // goes on the link attached again. If none follows, the connection finishes and the handler
            // is dropped, which fails whatever still waits.
            if let FacadeRole::Sender { in_flight, .. } = &mut self.role {
                for (_, reply) in in_flight.drain() {
                    let _ = reply.send(Err(Error::ConnectionClosed));
                }
            }
            return;
        }
        self.fail_all(Error::ConnectionClosed);
        if let FacadeRole::Receiver { sink, .. } = &mut self.role {
            // Ending the stream: drop the sending side.
            *sink = Sink::Stream(mpsc::unbounded_channel().0);
        }
    }
}

async fn open_facade(
    container: &ContainerHandle,
    url: &str,
    options: ConnectionOptions,
    role: FacadeRole,
) -> Result<WorkQueue<Facade>, Error> {
    let address = Address::parse(url)?.address;
    let reconnects = options.reconnect.is_some();
    let (tx, rx) = oneshot::channel();
    // The facade holds its work queue from the start: messages can arrive before this task runs again.
    let handle = container.connect_with_queue(url, options, move |wq| Facade {
        address,
        role,
        opened: Some(tx),
        wq,
        error: None,
        reconnects,
    })?;
    let wq = handle.work_queue();
    rx.await.map_err(|_| Error::ConnectionClosed)??;
    Ok(wq)
}

impl ContainerHandle {
    /// Opens a connection and a sender to `url` (`amqp://host:port/address`) and waits until it is attached.
    pub async fn open_sender(
        &self,
        url: &str,
        options: SenderOptions,
    ) -> Result<SenderHandle, Error> {
        self.open_sender_with(url, ConnectionOptions::default(), options)
            .await
    }

    /// [`open_sender`](Self::open_sender) with connection options.
    pub async fn open_sender_with(
        &self,
        url: &str,
        connection: ConnectionOptions,
        options: SenderOptions,
    ) -> Result<SenderHandle, Error> {
        let role = FacadeRole::Sender {
            options,
            sender: None,
            waiting: VecDeque::new(),
            in_flight: HashMap::new(),
        };
        let wq = open_facade(self, url, connection, role).await?;
        Ok(SenderHandle {
            wq,
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        })
    }

    /// Opens a connection and a receiver from `url` and waits until it is attached. The handle is a
    /// [`Stream`] of [`Received`] messages; credit (the receiver options' window, default 10) is granted as
    /// the stream is consumed.
    pub async fn open_receiver(
        &self,
        url: &str,
        options: ReceiverOptions,
    ) -> Result<ReceiverHandle, Error> {
        self.open_receiver_with(url, ConnectionOptions::default(), options)
            .await
    }

    /// [`open_receiver`](Self::open_receiver) with connection options.
    pub async fn open_receiver_with(
        &self,
        url: &str,
        connection: ConnectionOptions,
        options: ReceiverOptions,
    ) -> Result<ReceiverHandle, Error> {
        let (tx, rx) = mpsc::unbounded_channel();
        let window = options.credit_window.unwrap_or(10).max(1);
        let wq = self
            .open_receiving(url, connection, options, Sink::Stream(tx))
            .await?;
        Ok(ReceiverHandle {
            wq,
            rx,
            consumed: 0,
            window,
            budget: None,
        })
    }

    /// Opens a connection and a receiver from `url` that delivers each message to an actix actor as a
    /// [`Received`] message. The actor gets credit back only as it handles messages, so its mailbox never
    /// holds more than the credit window (the receiver options' window, default 10).
    pub async fn receive_into(
        &self,
        url: &str,
        options: ReceiverOptions,
        recipient: Recipient<Received>,
    ) -> Result<LinkHandle, Error> {
        let wq = self
            .open_receiving(
                url,
                ConnectionOptions::default(),
                options,
                Sink::Actor(recipient),
            )
            .await?;
        Ok(LinkHandle { wq })
    }

    async fn open_receiving(
        &self,
        url: &str,
        connection: ConnectionOptions,
        options: ReceiverOptions,
        sink: Sink,
    ) -> Result<WorkQueue<Facade>, Error> {
        let role = FacadeRole::Receiver {
            options,
            receiver: None,
            sink,
        };
        open_facade(self, url, connection, role).await
    }
}

/// An open sender, usable from any thread and any async context. `Clone + Send + Sync`.
#[derive(Clone)]
pub struct SenderHandle {
    wq: WorkQueue<Facade>,
    permits: Arc<Semaphore>,
}

impl std::fmt::Debug for SenderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderHandle").finish_non_exhaustive()
    }
}

impl SenderHandle {
    /// Sends a message and waits for its outcome. Waits for credit first; at most 1024 sends of one
    /// handle are in flight at once.
    pub async fn send(&self, message: Message) -> Result<Outcome, Error> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::ConnectionClosed)?;
        let (tx, rx) = oneshot::channel();
        self.wq.add(move |h, c| {
            if let Some(e) = &h.error {
                let _ = tx.send(Err(e.clone()));
                return;
            }
            if let FacadeRole::Sender { waiting, .. } = &mut h.role {
                waiting.push_back((message, tx));
            }
            h.flush(c);
        })?;
        rx.await.map_err(|_| Error::ConnectionClosed)?
    }

    /// Closes the sender's connection.
    pub fn close(&self) -> Result<(), Error> {
        self.wq.add(|_, c| c.close())
    }
}

/// A link opened by [`ContainerHandle::receive_into`]; close it to stop receiving.
#[derive(Clone)]
pub struct LinkHandle {
    wq: WorkQueue<Facade>,
}

impl std::fmt::Debug for LinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHandle").finish_non_exhaustive()
    }
}

impl LinkHandle {
    /// Closes the link's connection.
    pub fn close(&self) -> Result<(), Error> {
        self.wq.add(|_, c| c.close())
    }
}

/// An open receiver: a [`Stream`] of [`Received`] messages. Credit is granted as the stream is consumed.
pub struct ReceiverHandle {
    wq: WorkQueue<Facade>,
    rx: mpsc::UnboundedReceiver<Received>,
    consumed: u32,
    window: u32,
    /// Credit that may still be granted beyond the first window (`None`: no limit).
    budget: Option<u64>,
}

impl std::fmt::Debug for ReceiverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverHandle")
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl ReceiverHandle {
    /// The next message; `None` once the link or connection has closed.
    pub async fn recv(&mut self) -> Option<Received> {
        futures::StreamExt::next(self).await
    }

    /// Closes the receiver's connection.
    pub fn close(&self) -> Result<(), Error> {
        self.wq.add(|_, c| c.close())
    }

    /// Limits the credit this receiver ever grants to `total` messages (counting the first window), so a
    /// consumer that wants exactly `total` messages is never sent more. Call it before consuming.
    pub fn limit(mut self, total: u64) -> Self {
        self.budget = Some(total.saturating_sub(u64::from(self.window)));
        self
    }
}

impl Drop for ReceiverHandle {
    /// Closes the connection, as [`close`](ReceiverHandle::close) does, so that the peer sees the consumer
    /// go. Messages already delivered to the stream but not taken are released first (each [`Received`]
    /// does so when dropped), so their dispositions go out before the connection's `close`. An already
    /// closed connection is not an error here.
    fn drop(&mut self) {
        self.rx.close();
        while let Ok(pending) = self.rx.try_recv() {
            drop(pending);
        }
        let _ = self.close();
    }
}

impl Stream for ReceiverHandle {
    type Item = Received;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Received>> {
        let item = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(_)) = &item {
            self.consumed += 1;
            // Give credit back in batches of half the window.
            if self.consumed >= (self.window / 2).max(1) {
                let mut n = std::mem::take(&mut self.consumed);
                if let Some(budget) = &mut self.budget {
                    n = n.min(u32::try_from(*budget).unwrap_or(u32::MAX));
                    *budget -= u64::from(n);
                }
                if n > 0 {
                    let _ = self.wq.add(move |h, c| h.add_credit(c, n));
                }
            }
        }
        item
    }
}

/// A received message plus a handle to settle it from any thread. Also an actix message, for
/// [`ContainerHandle::receive_into`]. Dropping it unsettled releases the message (it may be redelivered).
pub struct Received {
    /// The message.
    pub message: Message,
    delivery: DeliveryRef,
    /// `None` when the message arrived pre-settled.
    settler: Option<WorkQueue<Facade>>,
}

impl actix::Message for Received {
    type Result = ();
}

impl std::fmt::Debug for Received {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("message", &self.message)
            .field("settled", &self.settler.is_none())
            .finish()
    }
}

impl Received {
    fn settle(&mut self, state: DeliveryState) -> Result<(), Error> {
        let Some(wq) = self.settler.take() else {
            return Ok(());
        };
        let delivery = self.delivery;
        wq.add(move |_, c| {
            let _ = c.settle(delivery, state);
        })
    }

    /// Accepts the message.
    pub fn accept(mut self) -> Result<(), Error> {
        self.settle(DeliveryState::Accepted(Accepted {}))
    }

    /// Rejects the message with an optional error.
    pub fn reject(mut self, error: Option<AmqpError>) -> Result<(), Error> {
        self.settle(DeliveryState::Rejected(Rejected { error }))
    }

    /// Releases the message: it may be delivered again.
    pub fn release(mut self) -> Result<(), Error> {
        self.settle(DeliveryState::Released(Released {}))
    }

    /// Modifies the message [AMQP 1.0 §3.4.5].
    pub fn modify(mut self, delivery_failed: bool, undeliverable_here: bool) -> Result<(), Error> {
        self.settle(DeliveryState::Modified(Modified {
            delivery_failed,
            undeliverable_here,
            message_annotations: None,
        }))
    }
}

impl Drop for Received {
    fn drop(&mut self) {
        let _ = self.settle(DeliveryState::Released(Released {}));
    }
}
