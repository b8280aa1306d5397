//! The connection actor: one per AMQP connection, on one worker arbiter. It owns the socket, the sans-IO
//! engine and the user's handler; all of them run on the actor, one at a time: callbacks, wakes and
//! scheduled work come through its mailbox, work items through a pending queue that the actor empties
//! before each event (and signals through the mailbox with one coalesced `WorkReady`).
//!
//! Inside the actor: the socket is read straight into the engine's input buffer (`engine.input_buffer`, then
//! `engine.process_input`), then the actor drains `engine.poll_event()` into the handler and wakes the writer,
//! which writes straight from the engine's output buffer (`engine.pending_output`, all frames of a pass
//! together, then `engine.consume_output`), then re-arms a single timer at `engine.poll_timeout()`. The actor
//! has no buffer of its own, and the engine gives its buffers up whenever they are empty, so an idle
//! connection holds none. Backpressure: the reader stops reading while the output waiting is above a high
//! watermark, and resumes below a low one, so a connection never buffers without bound; AMQP credit and
//! windows do the rest.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, RwLock, RwLockReadGuard};
use std::task::{Context as TaskContext, Poll, Waker};
use std::time::{Duration, Instant};

use actix::prelude::*;
use crossbeam_queue::SegQueue;
use nucleon_protocol::engine::{self, ConnectionConfig, Event};
use nucleon_protocol::frame::{Error as AmqpError, ErrorCondition};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use crate::container::{ContainerHandle, Unregister};
use crate::dispatch;
use crate::error::Error;
use crate::guard;
use crate::handler::MessagingHandler;
use crate::listener::Slot;
use crate::options::ReconnectOptions;
use crate::signal::Signal;
use crate::tls::TlsServerConfig;
use crate::transport::{self, BoxedTransport, Target};
use crate::views::{Connection, ConnectionWaker, Core};

/// Stop reading from the socket while this much output is waiting to be written.
const HIGH_WATERMARK: usize = 1 << 20;
/// Resume reading once the output is below this.
const LOW_WATERMARK: usize = 256 << 10;
/// The most room offered to a socket read (allocated for the read; what it does not fill is given back).
const READ_CHUNK: usize = 64 << 10;
/// The least room offered to a socket read. The room follows what reads find: doubled after a read that
/// fills it, halved after one that fills at most a quarter, so a connection trickling small frames does not
/// allocate (and give back) 64 KiB per read, and one receiving in bulk reads 64 KiB at a time.
const READ_MIN: usize = 4 << 10;
/// How long a closing connection waits for the peer's `close` before dropping the transport.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// The mailbox capacity of our actors: unbounded in effect. This is just below actix's own largest buffer size
/// (`actix::dev::channel::channel` asserts that); anything above it (`usize::MAX` in particular) overflows
/// actix's `max_senders` arithmetic every time an address is cloned, which panics with overflow checks on.
pub(crate) const UNBOUNDED_MAILBOX: usize = (usize::MAX >> 2) - 1;

/// State shared between a connection actor and its handles.
#[derive(Debug)]
pub(crate) struct Shared {
    /// A wake is pending: set by `wake()`, cleared by the actor before `on_connection_wake`.
    wake_pending: Signal,
    /// A [`WorkReady`] is on its way: set by `add`, cleared by the actor before it takes pending work.
    work_signalled: Signal,
    /// Where the connection is, for [`ConnectionHandle::opened`].
    state: tokio::sync::watch::Sender<Lifecycle>,
    /// Room in the bounded work queue: a permit per item queued by `try_add` or `send`, held until the
    /// item has run (or is dropped). Closed once the connection is finished, failing any `send` waiting.
    room: tokio::sync::Semaphore,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            wake_pending: Signal::default(),
            work_signalled: Signal::default(),
            state: tokio::sync::watch::Sender::default(),
            room: tokio::sync::Semaphore::new(BOUNDED_WORK),
        }
    }
}

/// The bound of [`WorkQueue::try_add`] and [`WorkQueue::send`] ([`WorkQueue::CAPACITY`]). Work queued
/// before bytes are read runs before the events they cause, so each read may first run up to this many
/// items: the bound is also how much a flood can delay the connection's I/O, and it makes flooding threads
/// wait (sleeping) instead of competing for the cores. Measured by `benches/work_flood.rs`: at 1024 a
/// `send` flood from 3 threads slowed the stream 3.9x, at 256 2.3x, at 64 1.3x-1.8x while still running
/// over 2 million items a second.
const BOUNDED_WORK: usize = 64;

impl Shared {
    /// Tells the connection's handles it is finished (after its queue has been closed): `send` and
    /// `opened` waiting resolve.
    fn finish(&self) {
        self.room.close();
        self.state.send_replace(Lifecycle::Finished);
    }
}

/// Where a connection is in its life, as its handles see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum Lifecycle {
    /// Not open yet.
    #[default]
    Connecting,
    /// Open at both ends (at least once).
    Open,
    /// Finished without ever opening, or finished after opening.
    Finished,
}

/// A unit of work for a connection: runs inside the connection's context.
type WorkFn<H> = Box<dyn FnOnce(&mut H, &mut Connection<'_>) + Send>;

/// A connection's pending work, shared by its work queues (which push) and its actor (which takes it
/// before every event).
type Pending<H> = Arc<Queue<H>>;

/// The work items in the order `add` queued them, and whether work is refused (the connection finished).
///
/// Items are pushed while holding `finished` for reading, so pushers never wait for each other; the actor
/// sets it (for writing) once, and takes items without the lock. An item is pushed only while the connection
/// is not finished, and then it runs: the actor runs what is left after setting the flag.
struct Queue<H> {
    items: SegQueue<Work<H>>,
    finished: RwLock<bool>,
}

impl<H> Default for Queue<H> {
    fn default() -> Self {
        Queue {
            items: SegQueue::new(),
            finished: RwLock::new(false),
        }
    }
}

impl<H> Queue<H> {
    /// The finished flag, for pushing under (a panic while it was held left it consistent).
    fn open(&self) -> Option<RwLockReadGuard<'_, bool>> {
        let finished = self.finished.read().unwrap_or_else(|e| e.into_inner());
        (!*finished).then_some(finished)
    }

    fn is_finished(&self) -> bool {
        *self.finished.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Refuses work from now on (work pushed before this returns is in `items`).
    fn finish(&self) {
        *self.finished.write().unwrap_or_else(|e| e.into_inner()) = true;
    }

    /// Drops the items (they need a handler that never was).
    fn clear(&self) {
        while self.items.pop().is_some() {}
    }
}

/// A queued work item, and whether it holds a place in the bounded queue (see [`WorkQueue::CAPACITY`]).
struct Work<H> {
    run: WorkFn<H>,
    bounded: bool,
}

/// Work is pending: the zero-payload message sent (like [`Wake`]) only when `work_signalled` goes from
/// clear to set, so the mailbox never fills with work.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct WorkReady;

/// A work item to run after a delay.
pub(crate) struct Scheduled<H: MessagingHandler>(Duration, WorkFn<H>);

impl<H: MessagingHandler> Message for Scheduled<H> {
    type Result = ();
}

/// The zero-payload wake message.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Wake;

/// Close the connection (from the container, on stop).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Shutdown(pub(crate) Option<AmqpError>);

/// The last message an actor handles: every work item queued before the connection finished precedes it.
#[derive(Message)]
#[rtype(result = "()")]
struct Finish;

/// The thread-safe handle of a connection: wake it, queue work on it, close it. `Send + Sync + Clone`.
pub struct ConnectionHandle<H: MessagingHandler> {
    addr: Addr<ConnectionActor<H>>,
    shared: Arc<Shared>,
    pending: Pending<H>,
}

impl<H: MessagingHandler> Clone for ConnectionHandle<H> {
    fn clone(&self) -> Self {
        ConnectionHandle {
            addr: self.addr.clone(),
            shared: self.shared.clone(),
            pending: self.pending.clone(),
        }
    }
}

impl<H: MessagingHandler> ConnectionHandle<H> {
    /// Wakes the connection: `on_connection_wake` follows. Calls coalesce: an atomic pending flag, and one
    /// zero-payload actor message sent only when the flag goes from clear to set. Spurious wakes are allowed.
    /// After the connection has finished this does nothing.
    pub fn wake(&self) {
        if self.shared.wake_pending.raise() {
            // A closed mailbox means the connection is finished, where a wake is a no-op by definition.
            let _ = self.addr.try_send(Wake);
        }
    }

    /// The connection's work queue.
    pub fn work_queue(&self) -> WorkQueue<H> {
        WorkQueue {
            addr: self.addr.clone(),
            shared: self.shared.clone(),
            pending: self.pending.clone(),
        }
    }

    pub(crate) fn shutdown_recipient(&self) -> Recipient<Shutdown> {
        self.addr.clone().recipient()
    }

    /// Resolves once the connection is open at both ends (`Ok`), or finished without opening
    /// ([`Error::ConnectionClosed`]). Usable from any async context.
    pub async fn opened(&self) -> Result<(), Error> {
        let mut rx = self.shared.state.subscribe();
        let state = rx
            .wait_for(|s| *s != Lifecycle::Connecting)
            .await
            .map(|s| *s)
            .unwrap_or(Lifecycle::Finished);
        match state {
            Lifecycle::Open => Ok(()),
            _ => Err(Error::ConnectionClosed),
        }
    }

    /// True once the connection is finished (its final `on_transport_close` has run).
    pub fn is_finished(&self) -> bool {
        self.pending.is_finished()
    }

    /// Closes the connection (from any thread).
    pub fn close(&self) -> Result<(), Error> {
        self.work_queue().add(|_, c| c.close())
    }
}

/// Runs closures inside a connection's context, from any thread. `Send + Sync + Clone`.
pub struct WorkQueue<H: MessagingHandler> {
    addr: Addr<ConnectionActor<H>>,
    shared: Arc<Shared>,
    pending: Pending<H>,
}

impl<H: MessagingHandler> Clone for WorkQueue<H> {
    fn clone(&self) -> Self {
        WorkQueue {
            addr: self.addr.clone(),
            shared: self.shared.clone(),
            pending: self.pending.clone(),
        }
    }
}

impl<H: MessagingHandler> WorkQueue<H> {
    /// Queues `f` to run serialized with the connection's callbacks, before its next event. Fails with
    /// [`Error::ConnectionClosed`] once the connection is finished: work is never dropped silently.
    ///
    /// Unbounded, as Proton's `work_queue::add`: nothing stops a thread that adds faster than the
    /// connection runs its work from filling memory and crowding out the connection's own I/O. Code that
    /// adds work in a loop, or on behalf of a peer, should use the bounded [`try_add`](Self::try_add)
    /// (fails when full) or [`send`](Self::send) (waits for room) instead.
    pub fn add<F>(&self, f: F) -> Result<(), Error>
    where
        F: FnOnce(&mut H, &mut Connection<'_>) + Send + 'static,
    {
        self.queue(Work {
            run: Box::new(f),
            bounded: false,
        })
    }

    fn queue(&self, work: Work<H>) -> Result<(), Error> {
        let Some(open) = self.pending.open() else {
            return Err(Error::ConnectionClosed);
        };
        // The actor sets `finished` under this lock before it takes the last of the pending work, so work
        // queued here runs. Once this returns, the actor takes the item before its next event.
        self.pending.items.push(work);
        drop(open);
        if self.shared.work_signalled.raise() {
            // A closed mailbox means the actor is gone, after `finished` was set: not reached.
            let _ = self.addr.try_send(WorkReady);
        }
        Ok(())
    }

    /// Queues `f` in the place `room` holds. The actor gives the place back once `f` has run, in one
    /// go for each batch it runs: a thread waiting in `send` is woken once a batch, not once an item.
    /// Items dropped unrun keep theirs, but by then the room is closed.
    fn queue_in(
        &self,
        room: tokio::sync::SemaphorePermit<'_>,
        f: impl FnOnce(&mut H, &mut Connection<'_>) + Send + 'static,
    ) -> Result<(), Error> {
        room.forget();
        self.queue(Work {
            run: Box::new(f),
            bounded: true,
        })
    }

    /// The most work items [`try_add`](Self::try_add) and [`send`](Self::send) keep waiting on one
    /// connection (items from [`add`](Self::add) are not counted). An item frees its room once it has run.
    /// Small on purpose: a read of the connection's socket may have to run this many items first.
    pub const CAPACITY: usize = BOUNDED_WORK;

    /// Queues `f` as [`add`](Self::add) does, unless [`CAPACITY`](Self::CAPACITY) bounded items are
    /// waiting already: then [`Error::WorkQueueFull`], and `f` is dropped.
    pub fn try_add<F>(&self, f: F) -> Result<(), Error>
    where
        F: FnOnce(&mut H, &mut Connection<'_>) + Send + 'static,
    {
        let room = self.shared.room.try_acquire().map_err(|e| match e {
            tokio::sync::TryAcquireError::NoPermits => Error::WorkQueueFull,
            tokio::sync::TryAcquireError::Closed => Error::ConnectionClosed,
        })?;
        self.queue_in(room, f)
    }

    /// Queues `f` as [`add`](Self::add) does, first waiting for room in the bounded queue (see
    /// [`CAPACITY`](Self::CAPACITY)). [`Error::ConnectionClosed`] if the connection is finished, also
    /// while waiting. Usable from any async context; dropping the future before it completes queues nothing.
    pub async fn send<F>(&self, f: F) -> Result<(), Error>
    where
        F: FnOnce(&mut H, &mut Connection<'_>) + Send + 'static,
    {
        let room = self
            .shared
            .room
            .acquire()
            .await
            .map_err(|_| Error::ConnectionClosed)?;
        self.queue_in(room, f)
    }

    /// Runs blocking `job` off the connection's worker, then `then` with its result in the connection's
    /// context (through this queue, like [`add`](Self::add)).
    ///
    /// The rule: callbacks and work items must not block (wait on a lock, a channel, a file, a database, a
    /// `block_on`). They run on a worker thread shared with other connections, and every connection on
    /// that worker stalls while one of them blocks. Blocking work goes here instead: it runs on the
    /// runtime's blocking thread pool (a thread of its own when called outside the runtime), and only its
    /// result comes back to the connection.
    ///
    /// A job still running when the container stops holds up the end of its worker thread until it returns.
    /// [`Error::ConnectionClosed`] if the connection is finished already. If it finishes while `job` runs,
    /// `then` does not run (there is no connection to run it on; this is logged), and a panic in `job` is
    /// logged and skips `then`.
    pub fn run_blocking<T, J, F>(&self, job: J, then: F) -> Result<(), Error>
    where
        T: Send + 'static,
        J: FnOnce() -> T + Send + 'static,
        F: FnOnce(&mut H, &mut Connection<'_>, T) + Send + 'static,
    {
        if self.pending.is_finished() {
            return Err(Error::ConnectionClosed);
        }
        let queue = self.clone();
        let run = move || {
            let Ok(result) = guard::run("a blocking job (its continuation is skipped)", job) else {
                return;
            };
            if queue.add(move |h, c| then(h, c, result)).is_err() {
                log::debug!(
                    "a blocking job finished after its connection: its continuation is skipped"
                );
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(run)),
            Err(_) => {
                std::thread::Builder::new()
                    .name("nucleon-blocking".into())
                    .spawn(run)
                    .map_err(Error::from)?;
            }
        }
        Ok(())
    }

    /// Runs `f` in the connection's context after `delay`. The delay is measured on the connection's
    /// thread; if the connection finishes first, `f` runs then (seeing the connection closed): once this
    /// returned `Ok`, `f` is never dropped unrun.
    pub fn schedule<F>(&self, delay: Duration, f: F) -> Result<(), Error>
    where
        F: FnOnce(&mut H, &mut Connection<'_>) + Send + 'static,
    {
        // Sent under the lock: `Finish` is sent after `finished` is set under it, so this comes first.
        let Some(_open) = self.pending.open() else {
            return Err(Error::ConnectionClosed);
        };
        self.addr
            .try_send(Scheduled(delay, Box::new(f)))
            .map_err(|_| Error::ConnectionClosed)
    }
}

/// Starts a prepared connection actor on the given worker arbiter.
pub(crate) type Starter = Box<dyn FnOnce(&ArbiterHandle) + Send>;

/// Where a connection's transport comes from.
pub(crate) enum Origin {
    /// We connect to the first target; with a reconnect policy, to each in turn after a lost transport.
    Client {
        /// The main URL and each failover URL.
        targets: Vec<Target>,
        reconnect: Option<ReconnectOptions>,
    },
    /// We accepted this socket; with a TLS config, TLS or plain as the client's first bytes say.
    Server {
        stream: std::net::TcpStream,
        tls: Option<TlsServerConfig>,
        /// AMQP over WebSocket: the WebSocket handshake first (after TLS, if any).
        websocket: bool,
        /// SASL PLAIN may be offered on a plain transport (`ListenOptions::allow_insecure_plain`).
        insecure_plain: bool,
        /// Its place in the listener's limits.
        slot: Slot,
    },
    /// The application gave the stream (client or server, as the engine's configuration says); for a
    /// server, whether PLAIN may be offered on it (the stream counts as unencrypted).
    Stream(BoxedTransport, bool),
}

struct Io {
    stream: BoxedTransport,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    /// The room the next read is offered, between [`READ_MIN`] and [`READ_CHUNK`].
    read_size: usize,
}

/// The actor behind one connection.
pub(crate) struct ConnectionActor<H: MessagingHandler> {
    id: u64,
    core: Core,
    handler: Box<H>,
    shared: Arc<Shared>,
    origin: Option<Origin>,
    reconnect: Option<Reconnect>,
    io: Option<Io>,
    timer: Option<(Instant, SpawnHandle)>,
    /// When a closing connection gives up waiting for the peer's `close`.
    close_deadline: Option<Instant>,
    /// `on_transport_close` has run: flush, close the socket, finish.
    transport_closed: bool,
    finished: bool,
    /// Work queued by `add`, in order. `WorkRunner` runs it in batches (so a flood of work cannot starve the
    /// socket), and everything queued so far runs before each event: before input is handled, a timer
    /// fires, a connect completes, a wake or a shutdown is handled.
    pending: Pending<H>,
    work_waker: Option<Waker>,
    /// When the socket last gave input. While it keeps doing so, `WorkRunner` runs at most `WORK_BATCH`
    /// items per `IO_ACTIVE` (work also runs before each read), so a flood of work cannot take the worker
    /// from the I/O: the bounded queue stays full and the flooding threads wait.
    last_input: Option<Instant>,
    /// The runner's budget: when its current window started, and the items it ran in it.
    work_window: (Instant, usize),
    /// Wakes the runner at the end of a window whose budget it used up.
    work_timer: Option<SpawnHandle>,
    /// A wake arrived after the transport closed: delivered once the connection starts reconnecting.
    wake_owed: bool,
    /// Work from `WorkQueue::schedule` waiting for its time, by arrival, with its timer. What is left at
    /// `Finish` runs then: `schedule` said Ok, so the closure is never dropped.
    scheduled: BTreeMap<u64, (SpawnHandle, WorkFn<H>)>,
    next_scheduled: u64,
    /// A listener's connection: its place in the listener's limits (given back when the actor is
    /// dropped), and where its login is logged and failures counted.
    slot: Option<Slot>,
}

impl<H: MessagingHandler> ConnectionActor<H> {
    /// Prepares a connection actor: its handle at once, and the [`Starter`] that the supervisor runs to
    /// start it on a worker arbiter (the handler is made there, by `make`). Dropping the starter instead
    /// drops the handler's factory and the socket: the connection never existed.
    pub(crate) fn prepare<F>(
        id: u64,
        config: ConnectionConfig,
        origin: Origin,
        container: ContainerHandle,
        make: F,
    ) -> (ConnectionHandle<H>, Starter)
    where
        F: FnOnce(WorkQueue<H>) -> H + Send + 'static,
    {
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        // The mailbox is made here, unbounded from the start. With `start_in_arbiter` it would have actix's
        // default capacity (16) until the actor started on its arbiter; past that, actix parks the sending
        // address, and its next `try_send` fails: `add` would report `ConnectionClosed` on an open connection
        // and a `wake` would be lost for good (its pending flag stays set with no message in flight).
        let (tx, rx) = actix::dev::channel::channel(UNBOUNDED_MAILBOX);
        let pending: Pending<H> = Arc::default();
        let me = ConnectionHandle::<H> {
            addr: Addr::new(tx.clone()),
            shared: shared.clone(),
            pending: pending.clone(),
        };
        let p = pending.clone();
        // The handler may hold its own work queue from the start, before any callback can run.
        let own_queue = me.work_queue();
        let start = move || {
            let Ok(handler) = guard::run("a handler factory (its connection never starts)", || {
                make(own_queue)
            }) else {
                // No handler, so no callback can run: the connection is finished before it starts. Its
                // mailbox, any work already queued (which needs the handler) and its socket are dropped
                // here.
                p.finish();
                p.clear();
                s.finish();
                container.unregister(Unregister(id));
                return;
            };
            let engine = engine::Connection::new(config, Instant::now());
            let waker = ConnectionWaker(Arc::new(move || me.wake()));
            let core = Core::new(engine, container, waker);
            let actor = ConnectionActor {
                id,
                core,
                handler: Box::new(handler),
                shared: s,
                origin: Some(origin),
                reconnect: None,
                io: None,
                timer: None,
                close_deadline: None,
                transport_closed: false,
                finished: false,
                pending: p,
                work_waker: None,
                last_input: None,
                work_window: (Instant::now(), 0),
                work_timer: None,
                wake_owed: false,
                scheduled: BTreeMap::new(),
                next_scheduled: 0,
                slot: None,
            };
            Context::with_receiver(rx).run(actor);
        };
        let handle = ConnectionHandle {
            addr: Addr::new(tx),
            shared,
            pending,
        };
        let starter: Starter = Box::new(move |arbiter: &ArbiterHandle| {
            arbiter.spawn_fn(start);
        });
        (handle, starter)
    }

    fn attach_stream(&mut self, stream: BoxedTransport, ctx: &mut Context<Self>) {
        self.io = Some(Io {
            stream,
            read_waker: None,
            write_waker: None,
            read_size: READ_MIN,
        });
        ctx.spawn(IoPass(read_pass::<H>));
        ctx.spawn(IoPass(write_pass::<H>));
        self.guarded(|h, c| h.on_transport_open(&mut Connection::new(c)));
        if self.core.engine.config().side == engine::Side::Client {
            let _ = self.core.engine.open();
            self.core.reattach();
        }
        self.pump(ctx);
    }

    /// Drains events into the handler and wakes the writer for the output they made, then re-arms the timer.
    pub(crate) fn pump(&mut self, ctx: &mut Context<Self>) {
        loop {
            // Output waits in the engine until there is a socket to write it to, and the writer writes it
            // from there. Taking it flushes what the engine holds back (coalesced dispositions), which may
            // fail a session or the connection: so it comes before the events are drained.
            if let Some(io) = self.io.as_mut() {
                if !self.core.engine.pending_output(Instant::now()).is_empty() {
                    if let Some(w) = io.write_waker.take() {
                        w.wake();
                    }
                }
            }
            let mut any = false;
            while let Some(event) = self.core.engine.poll_event() {
                any = true;
                match &event {
                    Event::TransportClosed => self.transport_closed = true,
                    Event::TransportError(e) | Event::ConnectionRemoteClose(Some(e))
                        if e.condition == ErrorCondition::UnauthorizedAccess =>
                    {
                        if let Some(r) = self.reconnect.as_mut() {
                            r.refused = true;
                        }
                    }
                    Event::Authenticated { mechanism, user } => {
                        if let Some(slot) = &self.slot {
                            slot.logged_in(Some(mechanism.as_str()), user.as_deref());
                        }
                    }
                    Event::SaslSkipped { user } => {
                        if let Some(slot) = &self.slot {
                            slot.logged_in(None, Some(user));
                        }
                    }
                    Event::AuthenticationFailed { mechanism, user } => {
                        if let Some(slot) = &self.slot {
                            slot.login_failed(
                                mechanism.as_ref().map(|m| m.as_str()),
                                user.as_deref(),
                            );
                        }
                    }
                    Event::ConnectionRemoteOpen(_) => {
                        if let Some(r) = self.reconnect.as_mut() {
                            r.succeeded();
                        }
                        self.shared.state.send_replace(Lifecycle::Open);
                    }
                    _ => {}
                }
                self.guarded(|h, c| dispatch::event(h, c, event));
            }
            if !any {
                break;
            }
        }
        // The writer shuts the socket down once the transport is closed; it waits for a wake, and a close
        // that produced no bytes (a timeout: the peer never answered) gives it none above.
        if self.transport_closed {
            if let Some(w) = self.io.as_mut().and_then(|io| io.write_waker.take()) {
                w.wake();
            }
        }
        self.rearm(ctx);
        if self.transport_closed && self.io.is_none() && !self.try_reconnect(ctx) {
            self.finish(ctx);
        }
    }

    fn rearm(&mut self, ctx: &mut Context<Self>) {
        if self.core.closing && self.close_deadline.is_none() {
            self.close_deadline = Some(Instant::now() + CLOSE_TIMEOUT);
        }
        let close = self.close_deadline.filter(|_| !self.transport_closed);
        let deadline = match (self.core.engine.poll_timeout(), close) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        // A timer armed for no later than the new deadline stays: firing early is harmless (the engine acts
        // only on deadlines that have passed, and the timer re-arms itself), while replacing it on every
        // pass (the idle deadline moves with each read) cost a cancel, a new timer and clock reads per pass.
        if let Some((armed, _)) = &self.timer {
            if deadline.is_none_or(|d| *armed <= d) {
                return;
            }
        }
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if let Some(at) = deadline {
            let delay = at.saturating_duration_since(Instant::now());
            let handle = ctx.run_later(delay, move |act, ctx| {
                act.timer = None;
                // Work queued before the timer fired runs before what the timeout causes.
                act.run_work(usize::MAX, ctx);
                let now = Instant::now();
                let overdue = act.close_deadline.is_some_and(|d| now >= d);
                if overdue && !act.transport_closed {
                    act.core
                        .engine
                        .handle_disconnected("the peer did not answer close in time");
                }
                act.core.engine.handle_timeout(now);
                act.pump(ctx);
            });
            self.timer = Some((at, handle));
        }
    }

    /// Tells TLS from plain on an accepted socket and does the TLS and WebSocket handshakes, off the
    /// actor's turn. The engine's open timeout, armed here, bounds a client that never finishes.
    fn accept_async(
        &mut self,
        tcp: TcpStream,
        tls: Option<TlsServerConfig>,
        websocket: bool,
        insecure_plain: bool,
        ctx: &mut Context<Self>,
    ) {
        self.rearm(ctx);
        ctx.spawn(
            actix::fut::wrap_future::<_, Self>(transport::serve(tcp, tls, websocket)).map(
                move |result, act, ctx| {
                    if act.transport_closed || act.finished {
                        return;
                    }
                    match result {
                        Ok(accepted) => {
                            act.secure_transport(
                                accepted.encrypted,
                                insecure_plain,
                                accepted.peer_identity,
                            );
                            act.attach_stream(accepted.transport, ctx);
                        }
                        Err(e) => {
                            log::info!("connection {}: {e}", act.id);
                            act.core.engine.handle_disconnected(e);
                            act.pump(ctx);
                        }
                    }
                },
            ),
        );
    }

    /// Tells a server's engine what its transport is (see `engine::TransportSecurity`): PLAIN only over TLS
    /// unless `insecure_plain`, EXTERNAL for a verified client certificate's subject.
    fn secure_transport(&mut self, encrypted: bool, insecure_plain: bool, subject: Option<String>) {
        self.core
            .engine
            .set_transport_security(engine::TransportSecurity {
                encrypted,
                plain_allowed: encrypted || insecure_plain,
                peer_identity: subject.clone(),
            });
        self.core.peer_subject = subject;
    }

    fn connect(&mut self, target: Target, ctx: &mut Context<Self>) {
        ctx.spawn(actix::fut::wrap_future::<_, Self>(dial_within(target)).map(
            |result, act, ctx| {
                // Closed while connecting (the container stopped): `on_transport_close` has run, and no
                // callback may follow it.
                if act.transport_closed || act.finished {
                    return;
                }
                // Work queued before the connect completed runs before what it causes.
                act.run_work(usize::MAX, ctx);
                match result {
                    Ok(s) => act.attach_stream(s, ctx),
                    Err(e) => {
                        act.core.transport_failed(e);
                        act.pump(ctx);
                    }
                }
            },
        ));
    }

    /// After a lost transport: with a reconnect policy that allows it, set up a fresh engine (keeping the
    /// links, to re-attach them) and connect again after the backoff delay. False when the connection is
    /// done for good: closed by the application, the container stopping, authentication refused (never
    /// retried), or attempts exhausted.
    fn try_reconnect(&mut self, ctx: &mut Context<Self>) -> bool {
        let stopping = self.core.closing || self.core.container.is_stopping();
        let Some(r) = self.reconnect.as_mut() else {
            return false;
        };
        if stopping || r.refused || r.options.max_attempts.is_some_and(|m| r.attempts >= m) {
            return false;
        }
        let delay = r.next_delay();
        let target = r.next_target();
        self.core.reset(engine::Connection::new(
            target.config.clone(),
            Instant::now(),
        ));
        self.transport_closed = false;
        self.close_deadline = None;
        if let Some((_, handle)) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        if std::mem::take(&mut self.wake_owed) {
            self.guarded(|h, c| h.on_connection_wake(&mut Connection::new(c)));
        }
        log::info!("reconnecting to {} in {delay:?}", target.host_port);
        ctx.run_later(delay, move |act, ctx| {
            if act.core.container.is_stopping() {
                act.core.transport_failed(Error::ContainerStopping);
                act.pump(ctx);
            } else {
                act.connect(target, ctx);
            }
        });
        true
    }

    /// Runs handler code. A panic stays inside this connection: it is logged and the connection is closed
    /// with `amqp:internal-error`; the worker thread and every other connection carry on.
    fn guarded(&mut self, f: impl FnOnce(&mut H, &mut Core)) {
        let (handler, core) = (&mut *self.handler, &mut self.core);
        let result = guard::run("a handler (its connection is closed)", || f(handler, core));
        if let Err(what) = result {
            self.core.closing = true;
            let _ = self.core.engine.close(Some(AmqpError::new(
                ErrorCondition::InternalError,
                format!("the application's handler panicked: {what}"),
            )));
        }
    }

    /// Runs up to `limit` queued work items, then handles what they produced. Returns how many ran.
    fn run_work(&mut self, limit: usize, ctx: &mut Context<Self>) -> usize {
        // What is queued now, and no more: items added meanwhile wait for the next turn.
        let n = limit.min(self.pending.items.len());
        if n == 0 {
            return 0;
        }
        let mut places = 0;
        let pending = self.pending.clone();
        for work in std::iter::from_fn(|| pending.items.pop()).take(n) {
            places += usize::from(work.bounded);
            self.guarded(|h, c| (work.run)(h, &mut Connection::new(c)));
        }
        self.shared.room.add_permits(places);
        self.pump(ctx);
        n
    }

    fn io_active(&self) -> bool {
        self.last_input.is_some_and(|t| t.elapsed() < IO_ACTIVE)
    }

    fn has_pending_work(&self) -> bool {
        !self.pending.items.is_empty()
    }

    /// Marks the connection finished and queues the final message behind any work already queued.
    fn finish(&mut self, ctx: &mut Context<Self>) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.pending.finish();
        self.shared.finish();
        ctx.address().do_send(Finish);
    }

    /// Closes the socket once the output is flushed (called by the writer).
    fn io_done(&mut self, ctx: &mut Context<Self>) {
        self.io = None;
        if !self.transport_closed {
            self.core.engine.handle_disconnected("the transport closed");
        }
        self.pump(ctx);
    }
}

impl<H: MessagingHandler> Actor for ConnectionActor<H> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.spawn(WorkRunner);
        match self.origin.take() {
            Some(Origin::Server {
                stream,
                tls,
                websocket,
                insecure_plain,
                slot,
            }) => {
                self.slot = Some(slot);
                match TcpStream::from_std(stream) {
                    Ok(s) if tls.is_none() && !websocket => {
                        let _ = s.set_nodelay(true);
                        self.secure_transport(false, insecure_plain, None);
                        self.attach_stream(Box::new(s), ctx);
                    }
                    Ok(s) => self.accept_async(s, tls, websocket, insecure_plain, ctx),
                    Err(e) => {
                        self.core.engine.handle_disconnected(e.to_string());
                        self.pump(ctx);
                    }
                }
            }
            Some(Origin::Client { targets, reconnect }) => {
                let Some(first) = targets.first().cloned() else {
                    return;
                };
                self.reconnect = reconnect.map(|options| Reconnect::new(options, targets));
                // Open at once, as Proton does on connect: work queued before the socket connects may then
                // open sessions and links; the engine holds their frames until the transport is up.
                let _ = self.core.engine.open();
                self.connect(first, ctx);
            }
            Some(Origin::Stream(stream, insecure_plain)) => {
                if self.core.engine.config().side == engine::Side::Client {
                    let _ = self.core.engine.open();
                } else {
                    self.secure_transport(false, insecure_plain, None);
                }
                self.attach_stream(stream, ctx);
            }
            None => {}
        }
    }

    fn stopped(&mut self, _ctx: &mut Context<Self>) {
        self.core.container.unregister(Unregister(self.id));
    }
}

impl<H: MessagingHandler> Handler<WorkReady> for ConnectionActor<H> {
    type Result = ();

    fn handle(&mut self, _: WorkReady, _ctx: &mut Context<Self>) {
        // Cleared before the work is taken (as the wake flag): an `add` that finds it set has pushed its
        // item before this, so the runner woken here takes it.
        self.shared.work_signalled.clear();
        if let Some(w) = self.work_waker.take() {
            w.wake();
        }
    }
}

impl<H: MessagingHandler> Handler<Scheduled<H>> for ConnectionActor<H> {
    type Result = ();

    fn handle(&mut self, Scheduled(delay, work): Scheduled<H>, ctx: &mut Context<Self>) {
        let key = self.next_scheduled;
        self.next_scheduled += 1;
        let timer = ctx.run_later(delay, move |act, ctx| {
            if let Some((_, work)) = act.scheduled.remove(&key) {
                act.guarded(|h, c| work(h, &mut Connection::new(c)));
                act.pump(ctx);
            }
        });
        self.scheduled.insert(key, (timer, work));
    }
}

impl<H: MessagingHandler> Handler<Wake> for ConnectionActor<H> {
    type Result = ();

    fn handle(&mut self, _: Wake, ctx: &mut Context<Self>) {
        self.run_work(usize::MAX, ctx);
        // Cleared before the callback looks at anything (see `Signal::clear`).
        self.shared.wake_pending.clear();
        if self.transport_closed {
            // Between transports: owed to the next one, if the connection reconnects (see `try_reconnect`).
            self.wake_owed = true;
            return;
        }
        self.guarded(|h, c| h.on_connection_wake(&mut Connection::new(c)));
        self.pump(ctx);
    }
}

impl<H: MessagingHandler> Handler<Shutdown> for ConnectionActor<H> {
    type Result = ();

    fn handle(&mut self, msg: Shutdown, ctx: &mut Context<Self>) {
        self.run_work(usize::MAX, ctx);
        if self.transport_closed {
            return;
        }
        if self.io.is_none() {
            self.core.closing = true;
            self.core.transport_failed(Error::ContainerStopping);
        } else {
            Connection::new(&mut self.core).close_with(msg.0);
        }
        self.pump(ctx);
    }
}

impl<H: MessagingHandler> Handler<Finish> for ConnectionActor<H> {
    type Result = ();

    fn handle(&mut self, _: Finish, ctx: &mut Context<Self>) {
        // Work accepted before the connection finished still runs: it sees the connection closed. So does
        // scheduled work whose time has not come.
        self.run_work(usize::MAX, ctx);
        for (_, (timer, work)) in std::mem::take(&mut self.scheduled) {
            ctx.cancel_future(timer);
            self.guarded(|h, c| work(h, &mut Connection::new(c)));
        }
        ctx.stop();
    }
}

/// Drives one side of the socket, [`read_pass`] or [`write_pass`], until that side is over.
struct IoPass<H: MessagingHandler>(PassFn<H>);

type PassFn<H> =
    fn(&mut ConnectionActor<H>, &mut Context<ConnectionActor<H>>, &mut TaskContext<'_>) -> Poll<()>;

impl<H: MessagingHandler> ActorFuture<ConnectionActor<H>> for IoPass<H> {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut ConnectionActor<H>,
        ctx: &mut Context<ConnectionActor<H>>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        (self.0)(act, ctx, task)
    }
}

/// One turn of reading: a few socket reads fed to the engine, while the write side keeps up. `Ready` once reading is over for good.
fn read_pass<H: MessagingHandler>(
    act: &mut ConnectionActor<H>,
    ctx: &mut Context<ConnectionActor<H>>,
    task: &mut TaskContext<'_>,
) -> Poll<()> {
    // Yield after a few reads so one busy connection cannot starve the others on its arbiter, and so
    // the mailbox (work, wakes) is looked at between reads.
    for _ in 0..4 {
        if act.transport_closed {
            return Poll::Ready(());
        }
        let Some(io) = act.io.as_mut() else {
            return Poll::Ready(());
        };
        let engine = &mut act.core.engine;
        if engine.output_len() > HIGH_WATERMARK {
            io.read_waker = Some(task.waker().clone());
            return Poll::Pending;
        }
        let want = io.read_size;
        let read = poll_read_buf(Pin::new(&mut io.stream), task, engine.input_buffer(want));
        match read {
            Poll::Pending => {
                // Nothing to read: give back the room offered (the engine keeps only a partial frame).
                engine.process_input(Instant::now());
                return Poll::Pending;
            }
            Poll::Ready(Ok(n)) => {
                if n == 0 {
                    act.core.read_closed();
                    act.pump(ctx);
                    return Poll::Ready(());
                }
                io.read_size = next_read_size(want, n);
                // Work queued before these bytes were read runs before the events they cause.
                let now = Instant::now();
                act.last_input = Some(now);
                act.run_work(usize::MAX, ctx);
                act.core.engine.process_input(now);
                act.pump(ctx);
            }
            Poll::Ready(Err(e)) => {
                act.core.transport_failed(lost(&e));
                act.pump(ctx);
                return Poll::Ready(());
            }
        }
    }
    task.waker().wake_by_ref();
    Poll::Pending
}

/// The room to offer the read after one offered `want` bytes found `n`.
fn next_read_size(want: usize, n: usize) -> usize {
    if n >= want {
        (want * 2).min(READ_CHUNK)
    } else if n <= want / 4 {
        (want / 2).max(READ_MIN)
    } else {
        want
    }
}

/// An established transport's IO failure.
fn lost(e: &std::io::Error) -> Error {
    Error::TransportLost {
        kind: Some(e.kind()),
        reason: e.to_string(),
    }
}

/// Dials `target` within the engine's open timeout (the connection's `connect_timeout`), so that a dial
/// that hangs (an unanswered TCP connect takes minutes to fail) ends at the deadline that bounds the rest
/// of the opening, with [`Error::Timeout`].
async fn dial_within(target: Target) -> Result<BoxedTransport, Error> {
    match target.config.open_timeout.filter(|t| *t < Duration::MAX) {
        Some(limit) => tokio::time::timeout(limit, transport::dial(target))
            .await
            .unwrap_or(Err(Error::Timeout {
                what: crate::error::Timeout::Connect,
                after: limit,
            })),
        None => transport::dial(target).await,
    }
}

/// One turn of writing: the engine's output to the socket, written from the engine's own buffer; the socket is
/// closed once the transport is done and flushed. `Ready` once the socket is closed.
fn write_pass<H: MessagingHandler>(
    act: &mut ConnectionActor<H>,
    ctx: &mut Context<ConnectionActor<H>>,
    task: &mut TaskContext<'_>,
) -> Poll<()> {
    loop {
        let Some(io) = act.io.as_mut() else {
            return Poll::Ready(());
        };
        let engine = &mut act.core.engine;
        // One clock read per write: what the engine does with it (heartbeat bookkeeping) needs no finer.
        let now = Instant::now();
        let out = engine.pending_output(now);
        if out.is_empty() {
            // What a TLS stream holds back goes out now (a no-op for TCP).
            if let Poll::Ready(Err(e)) = Pin::new(&mut io.stream).poll_flush(task) {
                act.core.transport_failed(lost(&e));
                discard_output(&mut act.core.engine);
                act.pump(ctx);
                act.io_done(ctx);
                return Poll::Ready(());
            }
            if !act.transport_closed {
                io.write_waker = Some(task.waker().clone());
                return Poll::Pending;
            }
            return match Pin::new(&mut io.stream).poll_shutdown(task) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(_) => {
                    act.io_done(ctx);
                    Poll::Ready(())
                }
            };
        }
        match Pin::new(&mut io.stream).poll_write(task, out) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(n)) if n > 0 => {
                engine.consume_output(n, now);
                if engine.output_len() < LOW_WATERMARK {
                    if let Some(w) = io.read_waker.take() {
                        w.wake();
                    }
                }
            }
            Poll::Ready(result) => {
                let failure = match result {
                    Err(e) => lost(&e),
                    Ok(_) => Error::TransportLost {
                        kind: Some(std::io::ErrorKind::WriteZero),
                        reason: "the socket accepted no bytes".to_string(),
                    },
                };
                act.core.transport_failed(failure);
                discard_output(&mut act.core.engine);
                act.pump(ctx);
                act.io_done(ctx);
                return Poll::Ready(());
            }
        }
    }
}

/// Drops the output of an engine whose transport failed: it can never be written.
fn discard_output(engine: &mut engine::Connection) {
    let n = engine.output_len();
    engine.consume_output(n, Instant::now());
}

impl<H: MessagingHandler> std::fmt::Debug for ConnectionHandle<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// A client's reconnect state: the policy, the targets in turn, and the attempts so far.
struct Reconnect {
    options: ReconnectOptions,
    targets: Vec<Target>,
    next: usize,
    attempts: u32,
    /// Authentication was refused: never retry.
    refused: bool,
}

impl Reconnect {
    fn new(options: ReconnectOptions, targets: Vec<Target>) -> Self {
        Reconnect {
            options,
            targets,
            next: 1,
            attempts: 0,
            refused: false,
        }
    }

    /// The connection opened: the next loss starts the backoff from the beginning.
    fn succeeded(&mut self) {
        self.attempts = 0;
    }

    /// `delay * multiplier^attempts`, capped at `max_delay`, randomized by up to `jitter` either way.
    fn next_delay(&mut self) -> Duration {
        let o = &self.options;
        let exp = o.multiplier.max(1.0).powi(self.attempts.min(64) as i32);
        let base = o.delay.as_secs_f64() * exp;
        let capped = base.min(o.max_delay.as_secs_f64());
        let jitter = o.jitter.clamp(0.0, 1.0);
        // A uniform number in [0, 1) from the top 53 bits of a random u64 (0.5, no jitter, should the OS
        // have no randomness to give).
        let unit = getrandom::u64().map_or(0.5, |r| (r >> 11) as f64 / (1u64 << 53) as f64);
        let factor = 1.0 + jitter * (unit * 2.0 - 1.0);
        self.attempts += 1;
        Duration::from_secs_f64((capped * factor).max(0.0))
    }

    /// The main URL first, then each failover URL, round and round.
    fn next_target(&mut self) -> Target {
        let i = self.next % self.targets.len().max(1);
        self.next = self.next.wrapping_add(1);
        self.targets[i].clone()
    }
}

/// Runs queued work items in batches, yielding between batches so the socket gets its turn.
struct WorkRunner;

/// Work items run per batch.
const WORK_BATCH: usize = 64;

/// A socket that gave input this recently is busy; the runner's budget window (see `last_input`).
const IO_ACTIVE: Duration = Duration::from_millis(1);

impl<H: MessagingHandler> ActorFuture<ConnectionActor<H>> for WorkRunner {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut ConnectionActor<H>,
        ctx: &mut Context<ConnectionActor<H>>,
        task: &mut TaskContext<'_>,
    ) -> Poll<()> {
        let now = Instant::now();
        if now.duration_since(act.work_window.0) >= IO_ACTIVE {
            act.work_window = (now, 0);
        }
        let (start, used) = act.work_window;
        if used >= WORK_BATCH && act.io_active() {
            // This window's budget is spent while the socket is busy: the rest waits for the next
            // window (or runs before the next read, as all queued work does).
            let rest = IO_ACTIVE.saturating_sub(now.duration_since(start));
            act.work_waker = Some(task.waker().clone());
            if act.work_timer.is_none() {
                act.work_timer = Some(ctx.run_later(rest, |act, _| {
                    act.work_timer = None;
                    if let Some(w) = act.work_waker.take() {
                        w.wake();
                    }
                }));
            }
            return Poll::Pending;
        }
        act.work_window.1 += act.run_work(WORK_BATCH, ctx);
        if !act.has_pending_work() {
            act.work_waker = Some(task.waker().clone());
        } else {
            yield_to_io(task);
        }
        Poll::Pending
    }
}

/// Asks to be polled again once the worker's I/O driver has looked for ready sockets, as
/// `tokio::task::yield_now` does. A plain self-wake would be polled again at once, for up to 61 turns
/// before tokio looks at the sockets: a stream of work items would starve the connection's I/O.
fn yield_to_io(task: &mut TaskContext<'_>) {
    let yielded = std::pin::pin!(tokio::task::yield_now());
    // `YieldNow` hands the waker to the runtime to wake after the driver's turn, and is then done with it.
    let _ = std::future::Future::poll(yielded, task);
}

#[cfg(test)]
mod tests {
    use super::{next_read_size, READ_CHUNK, READ_MIN};

    #[test]
    fn the_read_size_follows_what_reads_find_within_its_bounds() {
        // Bulk: reads that fill their room double it, up to READ_CHUNK.
        let mut size = READ_MIN;
        for _ in 0..10 {
            size = next_read_size(size, size);
        }
        assert_eq!(size, READ_CHUNK);
        // A read that fills between a quarter and all of it keeps it.
        assert_eq!(next_read_size(READ_CHUNK, READ_CHUNK / 2), READ_CHUNK);
        // A trickle: reads that fill a quarter or less halve it, down to READ_MIN.
        for _ in 0..10 {
            size = next_read_size(size, 100);
        }
        assert_eq!(size, READ_MIN);
    }
}
