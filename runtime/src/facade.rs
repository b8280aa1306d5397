//! The `async` facade: [`SenderHandle`] and [`ReceiverHandle`] for actix-web handlers and plain async code,
//! delivery into any actix [`Recipient<Received>`](actix::Recipient), and [`AsyncConnectionHandle`], one
//! connection that carries many of them.
//!
//! It is built on the work queue: every operation is a closure queued on the link's connection, and every
//! result comes back through a oneshot channel. Nothing here touches a connection object outside its context.
//! Each facade connection is one actor whose handler (`Facade`, in `facade/handler.rs`) keeps a map of its
//! links; `ContainerHandle::open_sender` and the like open a connection for one link, which closes with it.
//!
//! Lifetimes follow the handles: a link closes when its handle closes it or its last clone is dropped, and a
//! connection when it is closed or the last handle to it (its own and its links') is dropped.
//!
//! Reconnect (`ConnectionOptions::reconnect`): the connection, its links and their handles outlive a lost
//! transport. The runtime attaches every link again under the same id (never a second link); a send waiting
//! for credit goes out on the new link; a receiver's stream goes on (it does not end), and its unused credit
//! is granted again. A send whose transfer went out on the lost transport has no outcome, and is failed
//! with [`transport_lost_error`] rather than resent: the peer may or may not have it, so a caller that
//! sends it again accepts a possible duplicate (at-least-once), and one that does not accepts a possible
//! loss. That is the only duplicate window; the facade itself never sends a message twice. Messages
//! received on the lost transport and not yet settled cannot be settled any more: the peer delivers them
//! again (with a higher delivery-count). The first connect tries the main URL, then each failover URL, as
//! every later one does, and `open_*` waits for it.
//!
//! Time limits: connect and attach wait at most 30 s, sends as long as it takes (see `Limits`).
//!
//! Flow control follows the consumer. A `ReceiverHandle` grants credit only as its stream is consumed, and a
//! recipient gets credit back only as its actor handles each message, so neither a slow task nor a slow actor
//! ever has more than the credit window of messages waiting.

mod handler;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use actix::Recipient;
use futures::future::Either;
use futures::Stream;
use nucleon_protocol::frame::{
    Accepted, DeliveryState, Error as AmqpError, ErrorCondition, MessageId, Modified, Rejected,
    Released,
};
use nucleon_protocol::Message;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};

use self::handler::Facade;
use crate::connection::{ConnectionHandle, WorkQueue};
use crate::container::ContainerHandle;
use crate::error::{Error, Timeout};
use crate::options::{ConnectionOptions, ReceiverOptions, SenderOptions};
use crate::url::Address;
use crate::views::{DeliveryRef, ReceiverId, SenderId};

/// The facade's time limits, per connection; a link's own [`SenderOptions::open_timeout`] /
/// [`ReceiverOptions::open_timeout`] and [`SenderOptions::send_timeout`] win over `open` and `send`:
/// * `connect`: [`ConnectionOptions::connect_timeout`], else 30 s, for `connect_async` (and the connection
///   of a per-link `open_*`) to be open, over every attempt and failover URL of a reconnect policy; then
///   the connection is closed and the call fails with [`Error::Timeout`].
/// * `open`: 30 s for a link to be attached at both ends (counted from the call, so it includes waiting
///   for the connection); a link attached after its caller gave up is closed at once.
/// * `send`: none. A send waits for credit and its outcome as long as its link lives: a broker that
///   withholds credit (a memory alarm, a full queue) is flow control, not a failure, and a reconnecting
///   connection sends it once it is back. With a limit, a send that runs out of time is never transmitted
///   afterwards; one already transmitted may have reached the peer.
#[derive(Clone, Copy, Debug)]
struct Limits {
    connect: Duration,
    open: Duration,
    send: Option<Duration>,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        connect: Duration::from_secs(30),
        open: Duration::from_secs(30),
        send: None,
    };

    /// The limits of a connection made with `options`.
    fn of(options: &ConnectionOptions) -> Limits {
        Limits {
            connect: options.connect_timeout.unwrap_or(Limits::DEFAULT.connect),
            ..Limits::DEFAULT
        }
    }
}

/// The error of a send whose transfer went out on a transport that was lost before its outcome came
/// back (with reconnect): the peer may or may not have the message.
fn transport_lost_error() -> Error {
    Error::TransportLost {
        kind: None,
        reason: "the transport was lost before the outcome came: the peer may or may not have the message"
            .into(),
    }
}

/// A request the peer did not accept (rejected, released or modified): [`Error::NotAccepted`], whose
/// `condition()` is the rejection's, if it gave one.
fn not_accepted_error(outcome: Outcome) -> Error {
    Error::NotAccepted(outcome)
}

/// A request whose message-id is that of a request still awaiting its reply: replies could not be told
/// apart.
fn request_refused_error(key: &MessageId) -> Error {
    Error::Amqp(AmqpError::new(
        ErrorCondition::NotAllowed,
        format!("a request with message-id {key:?} is already awaiting its reply"),
    ))
}

/// Message-ids for requests that have none.
static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

/// What a receiver's handle learns from the handler: the address its source has (for a dynamic source,
/// the one the peer made) and, once it has ended, why.
struct LinkWatch {
    address: Mutex<Option<String>>,
    ended: watch::Sender<Option<Error>>,
}

impl LinkWatch {
    fn new(address: Option<String>) -> Arc<LinkWatch> {
        Arc::new(LinkWatch {
            address: Mutex::new(address),
            ended: watch::channel(None).0,
        })
    }

    /// The link ended because of `error` (the first reason given is kept).
    fn end(&self, error: Error) {
        self.ended.send_if_modified(|e| {
            let unset = e.is_none();
            if unset {
                *e = Some(error);
            }
            unset
        });
    }

    fn address(&self) -> Option<String> {
        self.address
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn end_reason(&self) -> Option<Error> {
        self.ended.borrow().clone()
    }

    async fn ended(&self) -> Error {
        let mut rx = self.ended.subscribe();
        let _ = rx.wait_for(Option::is_some).await;
        let why = rx.borrow().clone();
        why.unwrap_or(Error::LinkClosed)
    }
}

/// The outcome of a message sent through a [`SenderHandle`] [AMQP 1.0 §3.4]. Only [`Accepted`](Self::Accepted)
/// (and [`Settled`](Self::Settled), for a pre-settled send, which has no outcome) mean the peer took the
/// message; [`into_result`](Self::into_result) turns the rest into an [`Error::NotAccepted`]:
///
/// ```no_run
/// # async fn demo(sender: nucleon::SenderHandle) -> Result<(), nucleon::Error> {
/// sender.send(nucleon::Message::with_body("hello")).await?.into_result()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
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

    /// True when the receiver accepted the message.
    pub fn is_accepted(&self) -> bool {
        matches!(self, Outcome::Accepted)
    }

    /// True when the send went as asked: accepted, or sent pre-settled (at most once, so there is no
    /// outcome to wait for).
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Accepted | Outcome::Settled)
    }

    /// The receiver's error, for a rejection that carried one.
    pub fn error(&self) -> Option<&AmqpError> {
        match self {
            Outcome::Rejected(e) => e.as_ref(),
            _ => None,
        }
    }

    /// `Ok(())` when [`is_ok`](Self::is_ok) (accepted or pre-settled), else [`Error::NotAccepted`] with
    /// this outcome, whose [`Error::condition`] is the rejection's condition when it has one.
    pub fn into_result(self) -> Result<(), Error> {
        if self.is_ok() {
            Ok(())
        } else {
            Err(Error::NotAccepted(self))
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Accepted => f.write_str("accepted"),
            Outcome::Rejected(Some(e)) => write!(f, "rejected ({e})"),
            Outcome::Rejected(None) => f.write_str("rejected"),
            Outcome::Released => f.write_str("released"),
            Outcome::Modified {
                delivery_failed,
                undeliverable_here,
            } => write!(
                f,
                "modified (delivery failed: {delivery_failed}, undeliverable here: {undeliverable_here})"
            ),
            Outcome::Settled => f.write_str("settled"),
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
    /// The connection's reply queue, for `request`.
    Replies,
}

/// What every handle of one facade connection shares. When the last of them (the connection's handles
/// and its links' handles) is dropped, the connection closes.
struct Shared {
    handle: ConnectionHandle<Facade>,
    /// `Some(why)` once the connection is over.
    state: watch::Receiver<Option<Error>>,
    limits: Limits,
}

impl Shared {
    /// The error an operation on this connection fails with once it cannot run: why the connection ended.
    fn closed_error(&self) -> Error {
        self.state
            .borrow()
            .clone()
            .unwrap_or(Error::ConnectionClosed)
    }

    fn work_queue(&self) -> WorkQueue<Facade> {
        self.handle.work_queue()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Already finished is not an error here.
        let _ = self.handle.close();
    }
}

/// Starts a facade connection; `opened` is answered once it is open.
fn connect_facade(
    container: &ContainerHandle,
    url: &str,
    options: ConnectionOptions,
    single_link: bool,
    opened: Option<Reply<()>>,
) -> Result<Arc<Shared>, Error> {
    let reconnects = options.reconnect.is_some();
    let limits = Limits::of(&options);
    let (state_tx, state) = watch::channel(None);
    // The facade holds its work queue from the start: messages can arrive before any task runs again.
    let handle = container.connect_with_queue(url, options, move |wq| {
        Facade::new(wq, opened, reconnects, single_link, state_tx)
    })?;
    Ok(Arc::new(Shared {
        handle,
        state,
        limits,
    }))
}

/// Waits for `fut` at most `limit`, then fails with [`Error::Timeout`] (`what` timed out), dropping `fut`.
///
/// The timer is the connection's own (`WorkQueue::schedule`), not tokio's: the facade is used from plain
/// threads too (`futures::executor::block_on`), where no tokio timer runs. A scheduled item also runs
/// when the connection finishes early; `fut` then fails with the connection's error, which is waited for.
async fn within<T>(
    conn: &Shared,
    limit: Duration,
    what: Timeout,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let (tick, ticked) = oneshot::channel::<()>();
    let started = Instant::now();
    let scheduled = conn.work_queue().schedule(limit, move |_, _| {
        let _ = tick.send(());
    });
    if scheduled.is_err() {
        // The connection is finished: `fut` fails at once.
        return fut.await;
    }
    match futures::future::select(std::pin::pin!(fut), ticked).await {
        Either::Left((done, _)) => done,
        Either::Right((_, fut)) if started.elapsed() < limit => fut.await,
        Either::Right(_) => Err(Error::Timeout { what, after: limit }),
    }
}

/// Waits for the answer to an open, at most the link's open timeout (`limit`), else the connection's.
async fn await_open<T>(
    conn: &Shared,
    limit: Option<Duration>,
    rx: oneshot::Receiver<Result<T, Error>>,
) -> Result<T, Error> {
    // Dropping `rx` on a timeout tells the handler: a link attached later is closed at once.
    within(
        conn,
        limit.unwrap_or(conn.limits.open),
        Timeout::Attach,
        async { rx.await.map_err(|_| conn.closed_error())? },
    )
    .await
}

/// Attaches a sender on `conn` and waits until the peer has attached it too.
async fn attach_sender(
    conn: Arc<Shared>,
    address: String,
    options: SenderOptions,
) -> Result<SenderHandle, Error> {
    let (tx, rx) = oneshot::channel();
    let wq = conn.work_queue();
    let window = options.max_in_flight.max(1);
    let (open, send) = (options.open_timeout, options.send_timeout);
    wq.add(move |h, c| h.open_sender(c, address, options, tx))
        .map_err(|_| conn.closed_error())?;
    let id = await_open(&conn, open, rx).await?;
    Ok(SenderHandle {
        link: Arc::new(SenderLink {
            wq,
            id,
            permits: Semaphore::new(window),
            send_timeout: send.or(conn.limits.send),
            conn,
        }),
    })
}

/// Attaches a receiver delivering into `sink` on `conn` and waits until the peer has attached it too.
async fn attach_receiver(
    conn: &Shared,
    address: String,
    options: ReceiverOptions,
    sink: Sink,
    watch: Arc<LinkWatch>,
) -> Result<ReceiverId, Error> {
    let (tx, rx) = oneshot::channel();
    let open = options.open_timeout;
    conn.work_queue()
        .add(move |h, c| h.open_receiver(c, address, options, sink, watch, Some(tx)))
        .map_err(|_| conn.closed_error())?;
    await_open(conn, open, rx).await
}

/// A receiver's watch: its address is the one asked for until the peer names it (a dynamic source).
fn receiver_watch(address: &str, options: &ReceiverOptions) -> Arc<LinkWatch> {
    LinkWatch::new((!options.dynamic && !address.is_empty()).then(|| address.to_owned()))
}

async fn attach_stream(
    conn: Arc<Shared>,
    address: String,
    options: ReceiverOptions,
) -> Result<ReceiverHandle, Error> {
    let (tx, rx) = mpsc::unbounded_channel();
    let window = options.credit_window.unwrap_or(10).max(1);
    let watch = receiver_watch(&address, &options);
    let id = attach_receiver(&conn, address, options, Sink::Stream(tx), watch.clone()).await?;
    Ok(ReceiverHandle {
        wq: conn.work_queue(),
        id,
        conn,
        watch,
        rx,
        consumed: 0,
        window,
        budget: None,
    })
}

async fn attach_actor(
    conn: Arc<Shared>,
    address: String,
    options: ReceiverOptions,
    recipient: Recipient<Received>,
) -> Result<LinkHandle, Error> {
    let watch = receiver_watch(&address, &options);
    let sink = Sink::Actor(recipient);
    let id = attach_receiver(&conn, address, options, sink, watch.clone()).await?;
    Ok(LinkHandle {
        link: Arc::new(ReceiverLink {
            wq: conn.work_queue(),
            id,
            conn,
            watch,
        }),
    })
}

/// The node address in a per-link URL (`amqp://host:port/address`).
fn address_of(url: &str) -> Result<String, Error> {
    Ok(Address::parse(url)?.address.unwrap_or_default())
}

impl ContainerHandle {
    /// Opens one connection to `url` (`amqp[s]://[user:password@]host[:port]`; a path is ignored) that
    /// carries many links, and resolves once it is open at both ends. SASL, TLS, reconnect and every other
    /// [`ConnectionOptions`] apply as to [`connect`](Self::connect). It fails with the error that ended
    /// the attempt: a refusal's condition (e.g. `amqp:unauthorized-access`), an IO failure ([`Error::Io`],
    /// with its kind, e.g. `ConnectionRefused`), [`Error::Timeout`] past the connect timeout, or
    /// [`Error::ConnectionClosed`]. With reconnect, failed attempts are retried until one opens or the
    /// runtime gives up (the main URL, then each failover URL in turn).
    ///
    /// The connection closes with [`AsyncConnectionHandle::close`], or once the last handle to it (the
    /// connection's and its links') is dropped.
    ///
    /// ```no_run
    /// # async fn demo(container: nucleon::ContainerHandle) -> Result<(), nucleon::Error> {
    /// use nucleon::{ConnectionOptions, Message, ReceiverOptions, SenderOptions};
    ///
    /// let connection = container
    ///     .connect_async("amqp://localhost:5672", ConnectionOptions::default())
    ///     .await?;
    /// // Two links on the one connection.
    /// let sender = connection.open_sender("orders", SenderOptions::default()).await?;
    /// let mut receiver = connection.open_receiver("orders", ReceiverOptions::default()).await?;
    /// sender.send(Message::with_body("hello")).await?;
    /// if let Some(received) = receiver.recv().await {
    ///     received.accept()?;
    /// }
    /// // Closes only the sender's link; the receiver goes on.
    /// sender.close()?;
    /// connection.close()?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn connect_async(
        &self,
        url: &str,
        options: ConnectionOptions,
    ) -> Result<AsyncConnectionHandle, Error> {
        let (tx, rx) = oneshot::channel();
        let inner = connect_facade(self, url, options, false, Some(tx))?;
        // On a timeout, dropping `inner` closes the connection: no further attempts.
        within(&inner, inner.limits.connect, Timeout::Connect, async {
            rx.await.map_err(|_| inner.closed_error())?
        })
        .await?;
        Ok(AsyncConnectionHandle { inner })
    }

    /// Opens a connection and a sender to `url` (`amqp://host:port/address`) and waits until it is attached.
    /// The connection is the sender's own: it closes with the link, when the handle's `close` is called or
    /// its last clone is dropped. To put many links on one connection, see
    /// [`connect_async`](Self::connect_async).
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
        let address = address_of(url)?;
        let conn = connect_facade(self, url, connection, true, None)?;
        attach_sender(conn, address, options).await
    }

    /// Opens a connection and a receiver from `url` and waits until it is attached. The handle is a
    /// [`Stream`] of [`Received`] messages; credit (the receiver options' window, default 10) is granted as
    /// the stream is consumed. The connection is the receiver's own: it closes with the link.
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
        let address = address_of(url)?;
        let conn = connect_facade(self, url, connection, true, None)?;
        attach_stream(conn, address, options).await
    }

    /// Opens a connection and a receiver from `url` that delivers each message to an actix actor as a
    /// [`Received`] message. The actor gets credit back only as it handles messages, so its mailbox never
    /// holds more than the credit window (the receiver options' window, default 10). The connection is
    /// the link's own: it closes with it.
    pub async fn receive_into(
        &self,
        url: &str,
        options: ReceiverOptions,
        recipient: Recipient<Received>,
    ) -> Result<LinkHandle, Error> {
        let address = address_of(url)?;
        let conn = connect_facade(self, url, ConnectionOptions::default(), true, None)?;
        attach_actor(conn, address, options, recipient).await
    }
}

/// One connection of the async facade, carrying many links, made by
/// [`ContainerHandle::connect_async`]. `Clone + Send + Sync`, and cheap to clone: every clone names the
/// same connection (an actor on one worker), and every operation is a work item on its work queue.
///
/// Links are attached on the connection's one session, begun on first use (and again if the peer ends
/// it). The connection closes with [`close`](Self::close), when the peer or the network ends it, or once
/// the last handle to it is dropped: its own clones, and the handles of its links, which keep it open.
///
/// When it ends, every operation on its links fails, with the error that ended it (the peer's condition,
/// [`Error::TransportLost`] for a lost transport, else [`Error::ConnectionClosed`]), and
/// [`is_closed`](Self::is_closed) / [`closed`](Self::closed) report it: a caller that shares one connection
/// replaces it then.
#[derive(Clone)]
pub struct AsyncConnectionHandle {
    inner: Arc<Shared>,
}

impl std::fmt::Debug for AsyncConnectionHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncConnectionHandle")
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl AsyncConnectionHandle {
    /// Attaches a sender to `address` on this connection and waits until the peer has attached it too
    /// (or refused it: then [`Error::LinkRefused`] with its condition). Closing the handle, or dropping its last clone, closes only
    /// this link.
    pub async fn open_sender(
        &self,
        address: &str,
        options: SenderOptions,
    ) -> Result<SenderHandle, Error> {
        attach_sender(self.inner.clone(), address.to_owned(), options).await
    }

    /// Attaches a receiver from `address` on this connection and waits until the peer has attached it
    /// too. The handle is a [`Stream`] of [`Received`] messages with credit granted as it is consumed;
    /// closing or dropping it closes only this link, and the peer gets back at once what it held unsettled.
    pub async fn open_receiver(
        &self,
        address: &str,
        options: ReceiverOptions,
    ) -> Result<ReceiverHandle, Error> {
        attach_stream(self.inner.clone(), address.to_owned(), options).await
    }

    /// Attaches a receiver from `address` on this connection that delivers each message to an actix actor,
    /// as [`ContainerHandle::receive_into`] does on a connection of its own.
    pub async fn receive_into(
        &self,
        address: &str,
        options: ReceiverOptions,
        recipient: Recipient<Received>,
    ) -> Result<LinkHandle, Error> {
        attach_actor(self.inner.clone(), address.to_owned(), options, recipient).await
    }

    /// Closes the connection, and with it every link on it (their operations fail with
    /// [`Error::ConnectionClosed`]). Fails only if it is already finished.
    pub fn close(&self) -> Result<(), Error> {
        self.inner.handle.close()
    }

    /// Sends `message` to `address` as a request and waits at most `timeout` for its reply, which it
    /// returns. The replies of every request of this connection come to one reply queue: a receiver with
    /// a dynamic source, made on first use, whose address the message's `reply-to` is set to. The message
    /// keeps its message-id if it has one (it must then differ from those of the requests still awaiting
    /// their replies), else gets a fresh one; the reply is the message on the reply queue whose
    /// correlation-id is that message-id (a responder copies it over). Concurrent requests each get their
    /// own reply; a reply that comes after its request timed out is dropped.
    ///
    /// Fails with [`Error::Timeout`] after `timeout`, leaving nothing behind; with [`Error::NotAccepted`]
    /// if the peer does not accept the request; and, with reconnect, with [`Error::TransportLost`] if the
    /// transport is lost after the request went out (the reply queue goes with it; a new one is made on
    /// the next transport).
    pub async fn request(
        &self,
        address: &str,
        mut message: Message,
        timeout: Duration,
    ) -> Result<Message, Error> {
        let key = match message.properties().and_then(|p| p.message_id.clone()) {
            Some(id) => id,
            None => {
                let id = MessageId::Ulong(NEXT_REQUEST.fetch_add(1, Ordering::Relaxed));
                message.properties_mut().message_id = Some(id.clone());
                id
            }
        };
        let (tx, rx) = oneshot::channel();
        let wq = self.inner.work_queue();
        let (address, k) = (address.to_owned(), key.clone());
        wq.add(move |h, c| h.request(c, address, message, k, tx))
            .map_err(|_| self.inner.closed_error())?;
        let reply = within(&self.inner, timeout, Timeout::Other("the request"), async {
            rx.await.map_err(|_| self.inner.closed_error())?
        })
        .await;
        if reply.is_err() {
            let _ = wq.add(move |h, _| h.forget_request(&key));
        }
        reply
    }

    /// How many [`request`](Self::request)s of this connection await their reply (a gauge, for metrics).
    pub async fn pending_requests(&self) -> Result<usize, Error> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .work_queue()
            .add(move |h, _| {
                let _ = tx.send(h.pending_requests());
            })
            .map_err(|_| self.inner.closed_error())?;
        rx.await.map_err(|_| self.inner.closed_error())
    }

    /// True once the connection is over (closed by either side, or failed, and with reconnect, given up).
    pub fn is_closed(&self) -> bool {
        self.inner.state.borrow().is_some() || self.inner.handle.is_finished()
    }

    /// Resolves once the connection is over, with why: the condition that ended it ([`Error::Amqp`]:
    /// the peer's, or [`Error::TransportLost`] for a lost transport), or [`Error::ConnectionClosed`] for a close
    /// without an error.
    pub async fn closed(&self) -> Error {
        let mut state = self.inner.state.clone();
        let _ = state.wait_for(Option::is_some).await;
        let why = state.borrow().clone();
        why.unwrap_or(Error::ConnectionClosed)
    }
}

/// A sender's link, shared by the clones of its handle: the last one dropped closes it.
struct SenderLink {
    wq: WorkQueue<Facade>,
    id: SenderId,
    permits: Semaphore,
    /// How long a send may wait for credit and its outcome (`None`: as long as the link lives).
    send_timeout: Option<Duration>,
    conn: Arc<Shared>,
}

impl Drop for SenderLink {
    fn drop(&mut self) {
        let id = self.id;
        let _ = self.wq.add(move |h, c| h.close_sender(c, id));
    }
}

/// An open sender, usable from any thread and any async context. `Clone + Send + Sync`: the clones share
/// one link, which closes when the last of them is dropped (with its connection, if the connection was
/// opened for it by [`ContainerHandle::open_sender`]).
#[derive(Clone)]
pub struct SenderHandle {
    link: Arc<SenderLink>,
}

impl std::fmt::Debug for SenderHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SenderHandle")
            .field("id", &self.link.id)
            .finish_non_exhaustive()
    }
}

impl SenderHandle {
    /// Sends a message and waits for its outcome. Waits for credit first; at most 1024 sends of one
    /// link are in flight at once. Fails with [`Error::LinkClosed`] (or the peer's condition) once the link
    /// is closed, and with the connection's error once the connection is over.
    ///
    /// With reconnect, a send waiting for credit when the transport is lost goes out on the link attached
    /// again; one whose transfer went out on the lost transport fails with [`Error::TransportLost`]: the
    /// peer may or may not have it, and it is not resent (the caller decides: resending gives at-least-once
    /// with a possible duplicate). A send
    /// future dropped before its transfer went out is never transmitted.
    pub async fn send(&self, message: Message) -> Result<Outcome, Error> {
        let link = &self.link;
        let sent = async {
            let _permit = link
                .permits
                .acquire()
                .await
                .map_err(|_| Error::ConnectionClosed)?;
            let (tx, rx) = oneshot::channel();
            let id = link.id;
            link.wq
                .add(move |h, c| h.send(c, id, message, tx))
                .map_err(|_| link.conn.closed_error())?;
            rx.await.map_err(|_| link.conn.closed_error())?
        };
        match link.send_timeout {
            Some(limit) => within(&link.conn, limit, Timeout::Send, sent).await,
            None => sent.await,
        }
    }

    /// Closes the sender's link (and its connection, if it was opened for this link). Sends waiting for
    /// credit fail with [`Error::LinkClosed`]; later ones too.
    pub fn close(&self) -> Result<(), Error> {
        let id = self.link.id;
        self.link.wq.add(move |h, c| h.close_sender(c, id))
    }

    /// The connection the link is on (which this handle keeps open).
    pub fn connection(&self) -> AsyncConnectionHandle {
        AsyncConnectionHandle {
            inner: self.link.conn.clone(),
        }
    }
}

/// A receiver's link delivering to an actor, shared by the clones of its [`LinkHandle`].
struct ReceiverLink {
    wq: WorkQueue<Facade>,
    id: ReceiverId,
    conn: Arc<Shared>,
    watch: Arc<LinkWatch>,
}

impl Drop for ReceiverLink {
    fn drop(&mut self) {
        let id = self.id;
        let _ = self.wq.add(move |h, c| h.close_receiver(c, id));
    }
}

/// A link opened by [`ContainerHandle::receive_into`] or [`AsyncConnectionHandle::receive_into`]. Close
/// it, or drop its last clone, to stop receiving. `Clone + Send + Sync`.
#[derive(Clone)]
pub struct LinkHandle {
    link: Arc<ReceiverLink>,
}

impl std::fmt::Debug for LinkHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkHandle")
            .field("id", &self.link.id)
            .finish_non_exhaustive()
    }
}

impl LinkHandle {
    /// Closes the link (and its connection, if it was opened for this link).
    pub fn close(&self) -> Result<(), Error> {
        let id = self.link.id;
        self.link.wq.add(move |h, c| h.close_receiver(c, id))
    }

    /// Why the link ended, once it has (see [`ReceiverHandle::end_reason`]); `None` while it is open.
    pub fn end_reason(&self) -> Option<Error> {
        self.link.watch.end_reason()
    }

    /// Resolves once the link has ended, with why (see [`ReceiverHandle::closed`]).
    pub async fn closed(&self) -> Error {
        self.link.watch.ended().await
    }

    /// The connection the link is on (which this handle keeps open).
    pub fn connection(&self) -> AsyncConnectionHandle {
        AsyncConnectionHandle {
            inner: self.link.conn.clone(),
        }
    }
}

/// An open receiver: a [`Stream`] of [`Received`] messages. Credit is granted as the stream is consumed.
/// Not `Clone`: dropping it closes its link at once (see its `Drop`).
pub struct ReceiverHandle {
    wq: WorkQueue<Facade>,
    id: ReceiverId,
    conn: Arc<Shared>,
    watch: Arc<LinkWatch>,
    rx: mpsc::UnboundedReceiver<Received>,
    consumed: u32,
    window: u32,
    /// Credit that may still be granted beyond the first window (`None`: no limit).
    budget: Option<u64>,
}

impl std::fmt::Debug for ReceiverHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReceiverHandle")
            .field("id", &self.id)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

impl ReceiverHandle {
    /// The next message; `None` once the link or connection has closed, and then
    /// [`end_reason`](Self::end_reason) says why. With reconnect, a lost transport does not end it: it goes
    /// on with the link attached again.
    pub async fn recv(&mut self) -> Option<Received> {
        futures::StreamExt::next(self).await
    }

    /// The source address: the one asked for, or for a dynamic source (`ReceiverOptions::dynamic`) the
    /// one the peer made for it (a reply queue's address, to put in `reply-to`). With reconnect, the peer
    /// makes a new dynamic node for the link attached again, and this is its address from then on.
    pub fn address(&self) -> Option<String> {
        self.watch.address()
    }

    /// Why the link ended, once it has (its stream then yields `None`): the peer's detach or close error
    /// ([`Error::Amqp`], e.g. `amqp:resource-deleted` when its queue was deleted), [`Error::LinkClosed`]
    /// for a detach without an error or a close by this handle, or the connection's error (see
    /// [`AsyncConnectionHandle::closed`]). `None` while the link is open.
    pub fn end_reason(&self) -> Option<Error> {
        self.watch.end_reason()
    }

    /// Resolves once the link has ended, with [`end_reason`](Self::end_reason).
    pub async fn closed(&self) -> Error {
        self.watch.ended().await
    }

    /// Closes the receiver's link (and its connection, if it was opened for this link): the stream ends,
    /// and the peer gets back what the link held unsettled.
    pub fn close(&self) -> Result<(), Error> {
        let id = self.id;
        self.wq.add(move |h, c| h.close_receiver(c, id))
    }

    /// Limits the credit this receiver ever grants to `total` messages (counting the first window), so a
    /// consumer that wants exactly `total` messages is never sent more. Call it before consuming.
    pub fn limit(mut self, total: u64) -> Self {
        self.budget = Some(total.saturating_sub(u64::from(self.window)));
        self
    }

    /// The connection the link is on (which this handle keeps open).
    pub fn connection(&self) -> AsyncConnectionHandle {
        AsyncConnectionHandle {
            inner: self.conn.clone(),
        }
    }
}

impl Drop for ReceiverHandle {
    /// Closes the link at once, as [`close`](ReceiverHandle::close) does, so that the peer sees the
    /// consumer go and takes back what it held unsettled (a broker gives it to other consumers) without
    /// waiting for the connection to end. Messages already delivered to the stream but not taken are
    /// released first (each [`Received`] does so when dropped), so their dispositions go out before the
    /// detach. An already closed link or connection is not an error here.
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
                    let id = self.id;
                    let _ = self.wq.add(move |h, c| h.add_credit(c, id, n));
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

#[cfg(test)]
mod outcome_tests {
    use super::*;
    use nucleon_protocol::frame::ErrorCondition;

    #[test]
    fn only_accepted_and_presettled_are_ok() {
        assert!(Outcome::Accepted.is_accepted());
        assert_eq!(Outcome::Accepted.into_result(), Ok(()));
        assert!(!Outcome::Settled.is_accepted());
        assert_eq!(Outcome::Settled.into_result(), Ok(()));
        for outcome in [
            Outcome::Rejected(None),
            Outcome::Released,
            Outcome::Modified {
                delivery_failed: true,
                undeliverable_here: false,
            },
        ] {
            assert!(!outcome.is_accepted());
            assert!(!outcome.is_ok());
            assert_eq!(
                outcome.clone().into_result(),
                Err(Error::NotAccepted(outcome))
            );
        }
    }

    #[test]
    fn a_rejection_keeps_its_condition() {
        let error = AmqpError::new(ErrorCondition::ResourceLimitExceeded, "queue full");
        let err = Outcome::Rejected(Some(error.clone()))
            .into_result()
            .expect_err("a rejection is an error");
        assert_eq!(
            err.condition(),
            Some(&ErrorCondition::ResourceLimitExceeded)
        );
        assert_eq!(err.amqp_error(), Some(&error));
        assert_eq!(
            err.to_string(),
            "the message was not accepted: rejected (amqp:resource-limit-exceeded: queue full)"
        );
        assert_eq!(
            Outcome::Released.into_result().unwrap_err().condition(),
            None
        );
    }
}
