//! The container: a supervisor actor plus a pool of worker arbiters, and [`ContainerHandle`], its thread-safe
//! face. Like Proton's `proton::container`, it connects, listens, schedules and stops, from any thread at any
//! time, including while `run` is going on.

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use nucleon_protocol::codec::Symbol;
use nucleon_protocol::engine::{
    self, Authenticator, ConnectionConfig, PlainAuthenticator, SaslClientConfig, SaslServerConfig,
    ScramHash,
};
use nucleon_protocol::frame::Error as AmqpError;
use tokio::sync::Notify;

use crate::connection::{
    ConnectionActor, ConnectionHandle, Origin, Shutdown, Starter, WorkQueue, UNBOUNDED_MAILBOX,
};
use crate::error::Error;
use crate::gate::Gate;
use crate::guard;
use crate::handler::{ListenHandler, MessagingHandler};
use crate::listener::{self, AcceptBackoff, Admission, Slot};
use crate::options::{ConnectionOptions, LoginThrottle, TcpKeepalive};
use crate::tls::{TlsClientConfig, TlsServerConfig};
use crate::transport::{Target, Transport};
use crate::url::Address;

/// Builds a [`Container`].
#[derive(Debug, Clone)]
pub struct ContainerBuilder {
    id: Option<String>,
    threads: Option<usize>,
    auto_stop: bool,
    max_message_size: u64,
}

impl Default for ContainerBuilder {
    fn default() -> Self {
        ContainerBuilder {
            id: None,
            threads: None,
            auto_stop: true,
            max_message_size: engine::DEFAULT_MAX_MESSAGE_SIZE,
        }
    }
}

impl ContainerBuilder {
    /// The container id (default: a random UUID).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// The number of worker threads (default: the available cores).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n.max(1));
        self
    }

    /// Stop when the last connection and listener are gone, once any existed (default true).
    pub fn auto_stop(mut self, auto_stop: bool) -> Self {
        self.auto_stop = auto_stop;
        self
    }

    /// The largest message a receiving link accepts, on every connection unless its options say otherwise
    /// (default 16 MiB; [`UNLIMITED`](nucleon_protocol::engine::UNLIMITED) lifts the limit). A bigger message
    /// detaches its link with `amqp:link:message-size-exceeded` while it arrives.
    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.max_message_size = bytes;
        self
    }

    fn parts(&self) -> (String, usize) {
        let id = self
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        (id, threads)
    }

    /// A stand-alone container, from any thread: this never panics for being called inside an async runtime.
    ///
    /// * Outside a runtime (a plain `fn main`, a plain thread), the container's supervisor will run on the
    ///   thread that calls [`Container::run`], which blocks until the container stops; its workers are
    ///   threads of their own from the start.
    /// * Inside a runtime (`#[tokio::main]`, `#[actix_rt::main]`, a `tokio::runtime::Runtime::block_on`),
    ///   whose thread cannot block on a runtime of its own, the container runs on a thread of its own
    ///   instead, started at once, as [`spawn`](Self::spawn) would; [`Container::run`] then waits for that
    ///   thread. In async code, prefer [`spawn`](Self::spawn), whose end can be awaited without blocking.
    ///
    /// Either way the [`ContainerHandle`] works at once, from any thread. Panics only if the operating
    /// system cannot start a thread, as [`std::thread::spawn`] does.
    pub fn build(self) -> Container {
        if tokio::runtime::Handle::try_current().is_ok() {
            let thread = self
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start the container's thread: {e}"));
            return Container {
                handle: thread.handle.clone(),
                runner: Runner::Thread(thread),
            };
        }
        let system = actix::System::new();
        let (id, threads) = self.parts();
        let (auto_stop, max) = (self.auto_stop, self.max_message_size);
        let handle = system.block_on(async move { start(id, threads, auto_stop, max, true) });
        Container {
            handle,
            runner: Runner::Here(system),
        }
    }

    /// Starts a stand-alone container on threads of its own (a supervisor thread named after the
    /// container, plus its workers), from any thread: a plain `fn main`, a plain thread, or async code
    /// under any runtime (`#[tokio::main]`, actix). It runs at once and until it stops: by
    /// [`ContainerHandle::stop`], or by `auto_stop` once its last connection and listener are gone.
    /// [`ContainerThread::wait`] awaits that end (from any runtime), [`ContainerThread::join`] blocks for it.
    ///
    /// The calling thread waits only for the container's thread to start (well under a millisecond).
    /// The error is the operating system's refusal to start a thread.
    ///
    /// ```no_run
    /// use nucleon::{Container, ConnectionOptions, Message, SenderOptions};
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), nucleon::Error> {
    ///     let container = Container::builder().spawn()?;
    ///     let connection = container
    ///         .handle()
    ///         .connect_async("amqp://127.0.0.1:5672", ConnectionOptions::default())
    ///         .await?;
    ///     let sender = connection.open_sender("examples", SenderOptions::default()).await?;
    ///     sender.send(Message::with_body("hello")).await?;
    ///     container.handle().stop();
    ///     container.wait().await
    /// }
    /// ```
    pub fn spawn(self) -> Result<ContainerThread, Error> {
        let (id, threads) = self.parts();
        let (auto_stop, max) = (self.auto_stop, self.max_message_size);
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("nucleon-{id}"))
            .spawn(move || {
                let system = actix::System::new();
                let handle = system.block_on(async move {
                    let handle = start(id, threads, auto_stop, max, true);
                    (handle, actix::System::current())
                });
                if started_tx.send(handle).is_err() {
                    return;
                }
                let result = system.run().map_err(Error::from);
                // A receiver that went away (the ContainerThread was dropped) does not care.
                let _ = done_tx.send(result);
            })?;
        let (handle, system) = started_rx.recv().map_err(|_| Error::Io {
            kind: std::io::ErrorKind::Other,
            message: "the container's thread ended while starting".into(),
        })?;
        Ok(ContainerThread {
            handle,
            system,
            thread,
            done: done_rx,
        })
    }

    /// Starts the container inside the actix System already running on this thread (e.g. under
    /// actix-web), on that System's arbiter plus its own workers. Must be called from within the System.
    pub fn start(self) -> ContainerHandle {
        let (id, threads) = self.parts();
        start(id, threads, self.auto_stop, self.max_message_size, false)
    }
}

fn start(
    id: String,
    threads: usize,
    auto_stop: bool,
    max_message_size: u64,
    standalone: bool,
) -> ContainerHandle {
    let workers: Vec<Arbiter> = (0..threads).map(|_| Arbiter::new()).collect();
    let gate = Arc::new(Gate::default());
    // The mailbox is unbounded from the start: the supervisor only starts (and could raise its capacity)
    // once `run` runs, and before that actix's default capacity of 16 would make `schedule` fail.
    let (tx, rx) = actix::dev::channel::channel(UNBOUNDED_MAILBOX);
    let supervisor = Supervisor {
        gate: gate.clone(),
        connections: HashMap::new(),
        listeners: HashMap::new(),
        next_worker: 0,
        ever: false,
        auto_stop,
        stopping: None,
        standalone,
        workers,
        done: false,
    };
    Context::with_receiver(rx).run(supervisor);
    ContainerHandle {
        inner: Arc::new(Inner {
            id,
            supervisor: Addr::new(tx),
            threads,
            next_id: AtomicU64::new(1),
            gate,
            max_message_size,
        }),
    }
}

/// A stand-alone container, like `proton::container`, from [`ContainerBuilder::build`] or
/// [`Container::new`].
pub struct Container {
    handle: ContainerHandle,
    runner: Runner,
}

/// Where a [`Container`] runs: on the thread that calls `run` (built outside an async runtime), or on a
/// thread of its own (built inside one).
enum Runner {
    Here(actix::SystemRunner),
    Thread(ContainerThread),
}

impl Container {
    /// A container with this id and the default settings.
    pub fn new(id: impl Into<String>) -> Container {
        Container::builder().id(id).build()
    }

    /// A builder.
    pub fn builder() -> ContainerBuilder {
        ContainerBuilder::default()
    }

    /// The thread-safe handle, for use from any thread before and during `run`.
    pub fn handle(&self) -> ContainerHandle {
        self.handle.clone()
    }

    /// Runs the container until it stops (by `stop()`, or by `auto_stop` once the last connection and
    /// listener are gone): on the calling thread, or, for a container built inside an async runtime (see
    /// [`ContainerBuilder::build`]), by waiting for its own thread. Either way the call blocks.
    pub fn run(self) -> Result<(), Error> {
        match self.runner {
            Runner::Here(system) => system.run().map_err(Error::from),
            Runner::Thread(thread) => thread.join(),
        }
    }

    /// [`run`](Self::run), calling `handler.on_container_start` on the container's thread once it runs and
    /// `handler.on_container_stop` after it has stopped (on the thread that called `run_with`).
    pub fn run_with<H: MessagingHandler>(self, mut handler: H) -> Result<(), Error> {
        let handle = self.handle.clone();
        match self.runner {
            Runner::Here(system) => {
                system.block_on(async {
                    let _ =
                        guard::run("on_container_start", || handler.on_container_start(&handle));
                });
                let result = system.run();
                let _ = guard::run("on_container_stop", || handler.on_container_stop(&handle));
                result.map_err(Error::from)
            }
            Runner::Thread(thread) => {
                let shared = Arc::new(std::sync::Mutex::new(handler));
                let (on_thread, started) = (shared.clone(), handle.clone());
                // A container that already stopped never runs it, as it never "runs" for this call.
                thread.system.arbiter().spawn_fn(move || {
                    let mut handler = on_thread.lock().unwrap_or_else(|e| e.into_inner());
                    let _ = guard::run("on_container_start", || {
                        handler.on_container_start(&started)
                    });
                });
                let result = thread.join();
                let mut handler = shared.lock().unwrap_or_else(|e| e.into_inner());
                let _ = guard::run("on_container_stop", || handler.on_container_stop(&handle));
                result
            }
        }
    }
}

/// A stand-alone container running on threads of its own, from [`ContainerBuilder::spawn`] (or inside a
/// [`Container`] built inside an async runtime). It runs until it stops; [`wait`](Self::wait) awaits that
/// from async code under any runtime, [`join`](Self::join) blocks for it. Dropping it does not stop the
/// container (as dropping a [`std::thread::JoinHandle`] detaches its thread): call
/// [`ContainerHandle::stop`] for that.
pub struct ContainerThread {
    handle: ContainerHandle,
    system: actix::System,
    thread: std::thread::JoinHandle<()>,
    done: tokio::sync::oneshot::Receiver<Result<(), Error>>,
}

impl std::fmt::Debug for ContainerThread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerThread")
            .field("handle", &self.handle)
            .finish_non_exhaustive()
    }
}

impl ContainerThread {
    /// The thread-safe handle, to connect, listen, schedule and stop.
    pub fn handle(&self) -> ContainerHandle {
        self.handle.clone()
    }

    /// Waits, without blocking a thread, until the container has stopped and its thread ended. Works under
    /// any async runtime (tokio, actix) or executor: it needs no timer and no reactor.
    pub async fn wait(self) -> Result<(), Error> {
        let result = match self.done.await {
            Ok(result) => result,
            Err(_) => Err(Error::Io {
                kind: std::io::ErrorKind::Other,
                message: "the container's thread panicked".into(),
            }),
        };
        // The thread sent its result as its last act: joining it takes no time.
        let _ = self.thread.join();
        result
    }

    /// Blocks the calling thread until the container has stopped and its thread ended.
    pub fn join(self) -> Result<(), Error> {
        let ContainerThread {
            thread, mut done, ..
        } = self;
        match (thread.join(), done.try_recv()) {
            (Ok(()), Ok(result)) => result,
            _ => Err(Error::Io {
                kind: std::io::ErrorKind::Other,
                message: "the container's thread panicked".into(),
            }),
        }
    }
}

struct Inner {
    id: String,
    supervisor: Addr<Supervisor>,
    threads: usize,
    next_id: AtomicU64,
    /// Shared with the supervisor: what it has not closed yet may still be started.
    gate: Arc<Gate>,
    max_message_size: u64,
}

/// The container's thread-safe handle: `Send + Sync + Clone`, usable from any thread at any time.
#[derive(Clone)]
pub struct ContainerHandle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ContainerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerHandle")
            .field("id", &self.inner.id)
            .field("workers", &self.inner.threads)
            .finish()
    }
}

impl ContainerHandle {
    /// The container id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// The number of worker threads.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    fn check_running(&self) -> Result<(), Error> {
        if self.inner.gate.is_closed() {
            Err(Error::ContainerStopping)
        } else {
            Ok(())
        }
    }

    /// Hands a connection or listener to the supervisor, which starts it (and stops it again if `stop`
    /// came first). Once this returns `Ok` the supervisor will not finish before it has started it; an
    /// `Err` means it never starts, and what `msg` carries (handler factory, socket) is dropped.
    fn admit<M>(&self, msg: M) -> Result<(), Error>
    where
        M: Message<Result = ()> + Send + 'static,
        Supervisor: Handler<M>,
    {
        if !self.inner.gate.enter() {
            return Err(Error::ContainerStopping);
        }
        self.inner.supervisor.try_send(msg).map_err(|_| {
            self.inner.gate.arrived();
            Error::ContainerStopping
        })
    }

    /// Connects to `url` (`amqp://[user:password@]host[:port]`); `handler` gets the connection's callbacks
    /// on its worker thread. Returns at once; the connection's progress arrives as callbacks.
    pub fn connect<H: MessagingHandler>(
        &self,
        url: &str,
        options: ConnectionOptions,
        handler: H,
    ) -> Result<ConnectionHandle<H>, Error> {
        self.connect_with_queue(url, options, move |_| handler)
    }

    /// [`connect`](Self::connect) with a handler made on the connection's worker from the connection's own
    /// [`WorkQueue`], so that it holds it before any callback runs (to schedule work on its own connection,
    /// or to hand out settlers).
    pub fn connect_with_queue<H, F>(
        &self,
        url: &str,
        options: ConnectionOptions,
        make: F,
    ) -> Result<ConnectionHandle<H>, Error>
    where
        H: MessagingHandler,
        F: FnOnce(WorkQueue<H>) -> H + Send + 'static,
    {
        self.check_running()?;
        let mut targets = vec![self.target(url, &options)?];
        let reconnect = options.reconnect.clone();
        for failover in reconnect.iter().flat_map(|r| r.failover_urls.iter()) {
            targets.push(self.target(failover, &options)?);
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (handle, start) = ConnectionActor::prepare(
            id,
            targets[0].config.clone(),
            Origin::Client { targets, reconnect },
            self.clone(),
            make,
        );
        self.admit(Launch(id, start, handle.shutdown_recipient()))?;
        Ok(handle)
    }

    /// Runs a client connection over `stream`, which the application made (a Unix socket, a proxy's
    /// tunnel, one end of an in-memory pipe): the AMQP (or SASL) header goes out at once. The options apply
    /// as to [`connect`](Self::connect), with these differences: the `open` names
    /// [`virtual_host`](ConnectionOptions::virtual_host) as the host (else none), the stream counts as
    /// unencrypted for PLAIN (set `sasl_allow_insecure_mechs` over a stream that is secure), and there is
    /// no reconnect: once the stream ends, the connection is finished.
    pub fn connect_stream<H, S>(
        &self,
        stream: S,
        options: ConnectionOptions,
        handler: H,
    ) -> Result<ConnectionHandle<H>, Error>
    where
        H: MessagingHandler,
        S: Transport,
    {
        self.check_running()?;
        let host = options.virtual_host.clone();
        let config = self.client_config("(a stream)", host.as_deref(), false, &options)?;
        self.launch(config, Origin::Stream(Box::new(stream), false), handler)
    }

    /// Serves one connection over `stream`, as a listener with `options` would serve an accepted socket
    /// (TLS, if `options.tls` is set, is not done on it: wrap the stream first). The stream counts as
    /// unencrypted: PLAIN is offered on it only with `options.allow_insecure_plain`.
    pub fn accept_stream<H, S>(
        &self,
        stream: S,
        options: &ListenOptions,
        handler: H,
    ) -> Result<ConnectionHandle<H>, Error>
    where
        H: MessagingHandler,
        S: Transport,
    {
        self.check_running()?;
        let origin = Origin::Stream(Box::new(stream), options.allow_insecure_plain);
        self.launch(self.server_config(options), origin, handler)
    }

    /// Hands a connection with `handler` to the supervisor to start.
    fn launch<H: MessagingHandler>(
        &self,
        config: ConnectionConfig,
        origin: Origin,
        handler: H,
    ) -> Result<ConnectionHandle<H>, Error> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (handle, start) =
            ConnectionActor::prepare(id, config, origin, self.clone(), move |_| handler);
        self.admit(Launch(id, start, handle.shutdown_recipient()))?;
        Ok(handle)
    }

    /// Where and how to connect for `url`, with TLS for `amqps`.
    fn target(&self, url: &str, options: &ConnectionOptions) -> Result<Target, Error> {
        let address = Address::parse(url)?;
        let config = self.client_config(url, Some(&address.host), address.is_tls(), options)?;
        let tls = if address.is_tls() {
            let tls = match &options.tls {
                Some(tls) => tls.clone(),
                None => TlsClientConfig::system_roots()?,
            };
            let name = tls.name_for(&address.host)?;
            Some((tls, name))
        } else {
            None
        };
        Ok(Target {
            host_port: address.host_port(),
            config,
            tls,
            tls_header: options.tls_protocol_header,
            websocket: address.websocket.clone(),
            keepalive: options.tcp_keepalive,
        })
    }

    /// The engine's configuration for a connection to `host` (`url` as given, for errors) over a transport
    /// that is `encrypted` or not. Refuses credentials that cannot be used on this transport (PLAIN would
    /// send the password in clear), unless `allow_anonymous_fallback` says to go on without them.
    fn client_config(
        &self,
        url: &str,
        host: Option<&str>,
        encrypted: bool,
        o: &ConnectionOptions,
    ) -> Result<ConnectionConfig, Error> {
        let mut c = ConnectionConfig::client(
            o.container_id
                .clone()
                .unwrap_or_else(|| self.inner.id.clone()),
        );
        c.hostname = o.virtual_host.clone().or_else(|| host.map(str::to_string));
        if let Some(m) = o.max_frame_size {
            c.max_frame_size = m;
        }
        if let Some(m) = o.max_sessions {
            c.channel_max = m;
        }
        c.max_message_size = o.max_message_size.unwrap_or(self.inner.max_message_size);
        c.idle_timeout = o.idle_timeout;
        if let Some(t) = o.connect_timeout {
            c.open_timeout = Some(t);
        }
        c.properties = o.properties.clone();
        c.offered_capabilities = o.offered_capabilities.clone();
        c.desired_capabilities = o.desired_capabilities.clone();
        if !o.sasl_disabled {
            let address = Address::parse(url).ok();
            let user = o
                .user
                .clone()
                .or_else(|| address.as_ref().and_then(|a| a.user.clone()));
            let password = o
                .password
                .clone()
                .or_else(|| address.and_then(|a| a.password));
            let mut mechanisms = o.sasl_allowed_mechs.clone();
            if mechanisms.is_empty() {
                mechanisms = default_mechanisms(&user, &password, encrypted, o);
                if mechanisms.is_empty() {
                    return Err(Error::InvalidUrl {
                        url: url.to_string(),
                        reason: "a user was given without a password, and PLAIN would send it in \
                                 clear over plain TCP; use amqps, or set sasl_allow_insecure_mechs to \
                                 send it anyway, or allow_anonymous_fallback to connect as ANONYMOUS"
                            .into(),
                    });
                }
            }
            c.sasl_client = Some(SaslClientConfig {
                mechanisms,
                username: user,
                password,
            });
        }
        Ok(c)
    }

    /// Listens on `addr` (`host:port`; port 0 picks a free port). Each accepted connection gets a handler
    /// from `handler.on_accept`, made on that connection's worker thread.
    pub fn listen<L: ListenHandler>(&self, addr: &str, handler: L) -> Result<Listener, Error> {
        self.listen_with(addr, ListenOptions::default(), handler)
    }

    /// [`listen`](Self::listen) with server options (authentication, limits).
    pub fn listen_with<L: ListenHandler>(
        &self,
        addr: &str,
        options: ListenOptions,
        handler: L,
    ) -> Result<Listener, Error> {
        let std = StdListener::bind(addr)?;
        std.set_nonblocking(true)?;
        let local = std.local_addr()?;
        if options.max_connections == usize::MAX
            || options.max_connections_per_address == usize::MAX
        {
            log::warn!(
                "listener {local}: no limit on its connections (total {}, per address {})",
                options.max_connections,
                options.max_connections_per_address
            );
        }
        if options.login_throttle.is_none() {
            log::warn!("listener {local}: failed logins are not throttled");
        }
        let admission = Admission::new(local, &options);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let stop = Arc::new(Notify::new());
        let listener = Listener {
            addr: local,
            stop: stop.clone(),
            admission: admission.clone(),
        };
        let container = self.clone();
        let handler = Arc::new(handler);
        let notified = stop.clone();
        let task = async move {
            let listener = match tokio::net::TcpListener::from_std(std) {
                Ok(l) => l,
                Err(e) => {
                    log::error!("listener {local}: cannot accept: {e}");
                    let _ = guard::run("ListenHandler::on_error", || handler.on_error(&e.into()));
                    container.inner.supervisor.do_send(ListenerDown(id));
                    return;
                }
            };
            let _ = guard::run("ListenHandler::on_open", || handler.on_open(local));
            let mut backoff = AcceptBackoff::default();
            loop {
                let pause = tokio::select! {
                    _ = notified.notified() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((stream, peer)) => {
                            backoff.succeeded();
                            // Over a limit the socket is closed at once, before a byte is read: see
                            // `ListenOptions::max_connections`.
                            if let Some(slot) = admission.admit(peer) {
                                container.accept(stream, slot, &options, handler.clone());
                            }
                            continue;
                        }
                        Err(e) => {
                            let pause = backoff.failed(local, &e);
                            let _ = guard::run("ListenHandler::on_error", || handler.on_error(&e.into()));
                            pause
                        }
                    },
                };
                tokio::select! {
                    _ = notified.notified() => break,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
            let _ = guard::run("ListenHandler::on_close", || handler.on_close());
            container.inner.supervisor.do_send(ListenerDown(id));
        };
        self.admit(Listen(id, stop, Box::pin(task)))?;
        Ok(listener)
    }

    fn accept<L: ListenHandler>(
        &self,
        stream: tokio::net::TcpStream,
        slot: Slot,
        options: &ListenOptions,
        handler: Arc<L>,
    ) {
        let peer = slot.peer();
        if let Err(e) = listener::set_keepalive(&stream, options.tcp_keepalive) {
            log::warn!("connection from {peer}: setting TCP keepalive failed: {e}");
        }
        let Ok(std) = stream.into_std() else {
            return;
        };
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (handle, start) = ConnectionActor::prepare(
            id,
            self.server_config(options),
            Origin::Server {
                stream: std,
                tls: options.tls.clone(),
                websocket: options.websocket,
                insecure_plain: options.allow_insecure_plain,
                slot,
            },
            self.clone(),
            move |_| handler.on_accept(peer),
        );
        // Refused once the container is stopping: the socket is dropped, `on_accept` never runs.
        let _ = self.admit(Launch(id, start, handle.shutdown_recipient()));
    }

    /// The engine's configuration for a connection a listener with `options` accepted.
    fn server_config(&self, options: &ListenOptions) -> ConnectionConfig {
        let mut config = ConnectionConfig::server(self.inner.id.clone());
        config.idle_timeout = options.idle_timeout;
        config.offered_capabilities = options.offered_capabilities.clone();
        if let Some(m) = options.max_frame_size {
            config.max_frame_size = m;
        }
        config.max_message_size = options
            .max_message_size
            .unwrap_or(self.inner.max_message_size);
        if let Some(m) = options.max_sessions {
            config.channel_max = m;
        }
        if let Some(m) = options.max_links {
            config.max_links = m;
        }
        if let Some(t) = options.open_timeout {
            config.open_timeout = Some(t);
        }
        config.sasl_server = Some(SaslServerConfig {
            authenticator: options
                .authenticator
                .clone()
                .unwrap_or_else(|| Arc::new(PlainAuthenticator::anonymous())),
            allow_skip: options.allow_skip_sasl,
        });
        config
    }

    pub(crate) fn unregister(&self, msg: Unregister) {
        self.inner.supervisor.do_send(msg);
    }

    /// Runs `f` on the container's own thread after `delay`.
    pub fn schedule<F: FnOnce() + Send + 'static>(
        &self,
        delay: Duration,
        f: F,
    ) -> Result<(), Error> {
        self.check_running()?;
        self.inner
            .supervisor
            .try_send(Schedule(delay, Box::new(f)))
            .map_err(|_| Error::ContainerStopping)
    }

    /// Stops the container: every connection is closed (each gets `on_transport_close` exactly once),
    /// listeners stop, and `run` returns. New calls fail with [`Error::ContainerStopping`].
    pub fn stop(&self) {
        self.stop_with(None);
    }

    /// [`stop`](Self::stop), closing connections with `error`.
    pub fn stop_with(&self, error: Option<AmqpError>) {
        self.inner.gate.close();
        self.inner.supervisor.do_send(Stop(error));
    }

    /// True once `stop` was called or the container stopped by itself.
    pub fn is_stopping(&self) -> bool {
        self.inner.gate.is_closed()
    }
}

/// Server-side options for a listener. Start from [`ListenOptions::new`] (the same as `default()`) and chain
/// the setters:
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use nucleon::ListenOptions;
/// use nucleon::protocol::engine::PlainAuthenticator;
///
/// let options = ListenOptions::new()
///     .authenticator(Arc::new(PlainAuthenticator::new([("alice", "secret")])))
///     .allow_insecure_plain(true)
///     .idle_timeout(Duration::from_secs(30))
///     .max_connections(500);
/// assert_eq!(options.max_connections, 500);
/// ```
///
/// The fields stay public to be read; a field that is an `Option` can also be assigned directly (to `None`,
/// or from an `Option` in hand).
#[derive(Clone)]
#[non_exhaustive]
pub struct ListenOptions {
    /// Who may connect (default: anyone, with SASL ANONYMOUS).
    pub authenticator: Option<Arc<dyn Authenticator>>,
    /// Accept clients that skip SASL and send the AMQP header directly [AMQP 1.0 §5.3.1] as anonymous,
    /// if the authenticator admits anonymous clients; otherwise they are refused (`amqp:not-allowed`,
    /// logged, and counted as a failed login). On by default, as Proton, RabbitMQ and Qpid Dispatch
    /// accept such clients where anonymous access is allowed; off, every client must do SASL.
    pub allow_skip_sasl: bool,
    /// Close connections that are silent this long.
    pub idle_timeout: Option<Duration>,
    /// The largest frame we accept (default 64 KiB, at most 16 MiB).
    pub max_frame_size: Option<u32>,
    /// The largest message a link a client attaches may carry (default: the container's, 16 MiB).
    pub max_message_size: Option<u64>,
    /// The highest channel number a client may use: at most this many sessions, plus one (default 255).
    pub max_sessions: Option<u16>,
    /// The most links a client may have attached at once on one connection (default 1024).
    pub max_links: Option<u32>,
    /// Close connections whose `open` has not arrived this long after they were accepted (default 10 s;
    /// [`Duration::MAX`] waits forever).
    pub open_timeout: Option<Duration>,
    /// Capabilities offered to each client in the server's `open` (for example `ANONYMOUS-RELAY`).
    pub offered_capabilities: Vec<Symbol>,
    /// TLS on this listener: TLS clients are served with it, plain ones too unless it requires TLS (see
    /// [`TlsServerConfig`]). A client with a certificate the listener verified may authenticate with SASL
    /// EXTERNAL as its subject.
    pub tls: Option<TlsServerConfig>,
    /// Offer SASL PLAIN to clients on plain TCP too. Off by default: PLAIN sends the password as it is, so it
    /// is offered over TLS only (SCRAM is offered everywhere).
    pub allow_insecure_plain: bool,
    /// AMQP over WebSocket (the OASIS binding, subprotocol `amqp`): each connection starts with the
    /// WebSocket handshake, after TLS if `tls` is set (`wss`).
    pub websocket: bool,
    /// The most connections this listener holds at once (default 10,000; `usize::MAX`: no limit, which is
    /// logged). A connection over a limit is closed as soon as it is accepted, before a byte is read: an
    /// AMQP `close` with `amqp:resource-limit-exceeded` [AMQP 1.0 §2.8.15] could only follow the client's
    /// SASL exchange (nearly every client starts with SASL), which would spend on the refused client the
    /// authenticator's work and the time the limit is there to bound. A client sees a lost transport, which
    /// clients retry with backoff (a SASL refusal would stop them). Refusals are logged at most once per
    /// 10 s, with a count.
    pub max_connections: usize,
    /// The most connections from one client address this listener holds at once (default 1,000;
    /// `usize::MAX`: no limit, which is logged). Refused as over `max_connections`.
    pub max_connections_per_address: usize,
    /// Failed logins per client address before its connections are refused for a while (default: 10
    /// within a minute refuse it for a minute; `None`: not throttled, which is logged). Every login is
    /// logged: accepted at info, refused at warn, with the user, the client's address and the mechanism.
    pub login_throttle: Option<LoginThrottle>,
    /// TCP keepalive on accepted sockets (default: probes after 60 s idle).
    pub tcp_keepalive: TcpKeepalive,
}

/// The limits' defaults: 10,000 connections are far more than one process serves well (each holds two
/// 64 KiB buffers, about 1.3 GB in all, and a file descriptor), so a flood is stopped before it takes the
/// host; 1,000 per address lets a busy host or a NAT serve many clients, while one host cannot take the
/// whole listener.
impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            authenticator: None,
            allow_skip_sasl: true,
            idle_timeout: None,
            max_frame_size: None,
            max_message_size: None,
            max_sessions: None,
            max_links: None,
            open_timeout: None,
            offered_capabilities: Vec::new(),
            tls: None,
            allow_insecure_plain: false,
            websocket: false,
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            login_throttle: Some(LoginThrottle::default()),
            tcp_keepalive: TcpKeepalive::default(),
        }
    }
}

impl ListenOptions {
    /// The defaults (see each field).
    pub fn new() -> Self {
        Self::default()
    }

    /// Who may connect.
    pub fn authenticator(mut self, authenticator: Arc<dyn Authenticator>) -> Self {
        self.authenticator = Some(authenticator);
        self
    }

    /// Accept clients that skip SASL as anonymous, if the authenticator admits anonymous clients.
    pub fn allow_skip_sasl(mut self, allow: bool) -> Self {
        self.allow_skip_sasl = allow;
        self
    }

    /// Close connections that are silent this long.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// The largest frame we accept.
    pub fn max_frame_size(mut self, bytes: u32) -> Self {
        self.max_frame_size = Some(bytes);
        self
    }

    /// The largest message a link a client attaches may carry.
    pub fn max_message_size(mut self, bytes: u64) -> Self {
        self.max_message_size = Some(bytes);
        self
    }

    /// The highest channel number a client may use.
    pub fn max_sessions(mut self, channel_max: u16) -> Self {
        self.max_sessions = Some(channel_max);
        self
    }

    /// The most links a client may have attached at once on one connection.
    pub fn max_links(mut self, links: u32) -> Self {
        self.max_links = Some(links);
        self
    }

    /// Close connections whose `open` has not arrived this long after they were accepted.
    pub fn open_timeout(mut self, timeout: Duration) -> Self {
        self.open_timeout = Some(timeout);
        self
    }

    /// Capabilities offered to each client in the server's `open`.
    pub fn offered_capabilities(mut self, capabilities: Vec<Symbol>) -> Self {
        self.offered_capabilities = capabilities;
        self
    }

    /// TLS on this listener.
    pub fn tls(mut self, tls: TlsServerConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Offer SASL PLAIN to clients on plain TCP too.
    pub fn allow_insecure_plain(mut self, allow: bool) -> Self {
        self.allow_insecure_plain = allow;
        self
    }

    /// AMQP over WebSocket.
    pub fn websocket(mut self, websocket: bool) -> Self {
        self.websocket = websocket;
        self
    }

    /// The most connections this listener holds at once (`usize::MAX`: no limit).
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// The most connections from one client address this listener holds at once (`usize::MAX`: no limit).
    pub fn max_connections_per_address(mut self, connections: usize) -> Self {
        self.max_connections_per_address = connections;
        self
    }

    /// Failed logins per client address before its connections are refused for a while (`None`: not
    /// throttled).
    pub fn login_throttle(mut self, throttle: Option<LoginThrottle>) -> Self {
        self.login_throttle = throttle;
        self
    }

    /// TCP keepalive on accepted sockets.
    pub fn tcp_keepalive(mut self, keepalive: TcpKeepalive) -> Self {
        self.tcp_keepalive = keepalive;
        self
    }
}

impl std::fmt::Debug for ListenOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenOptions")
            .field("allow_skip_sasl", &self.allow_skip_sasl)
            .field("idle_timeout", &self.idle_timeout)
            .field("max_frame_size", &self.max_frame_size)
            .field("offered_capabilities", &self.offered_capabilities)
            .field("max_connections", &self.max_connections)
            .field(
                "max_connections_per_address",
                &self.max_connections_per_address,
            )
            .field("login_throttle", &self.login_throttle)
            .field("tcp_keepalive", &self.tcp_keepalive)
            .finish_non_exhaustive()
    }
}

/// The SASL mechanisms a client tries when the options name none, best first. With a user: SCRAM (the
/// password never leaves) when there is a password, PLAIN where it does not travel in clear (TLS, or
/// `sasl_allow_insecure_mechs`), and ANONYMOUS only if `allow_anonymous_fallback` says so; a server that
/// offers none of them fails the connection with `amqp:unauthorized-access`, never a silent downgrade.
/// Without a user: ANONYMOUS.
fn default_mechanisms(
    user: &Option<String>,
    password: &Option<String>,
    encrypted: bool,
    o: &ConnectionOptions,
) -> Vec<Symbol> {
    if user.is_none() {
        return vec![Symbol::from_static("ANONYMOUS")];
    }
    let mut mechanisms = Vec::new();
    if password.is_some() {
        mechanisms.extend(ScramHash::ALL.map(ScramHash::symbol));
    }
    if encrypted || o.sasl_allow_insecure_mechs {
        mechanisms.push(Symbol::from_static("PLAIN"));
    }
    if o.allow_anonymous_fallback {
        mechanisms.push(Symbol::from_static("ANONYMOUS"));
    }
    mechanisms
}

/// A listening socket. Dropping it does not stop it; call [`Listener::stop`].
#[derive(Debug, Clone)]
pub struct Listener {
    addr: SocketAddr,
    stop: Arc<Notify>,
    admission: Arc<Admission>,
}

impl Listener {
    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting. Connections already accepted go on.
    pub fn stop(&self) {
        self.stop.notify_one();
    }

    /// How many logins failed on this listener since it started: SASL refused the client, or it skipped
    /// SASL where that is not allowed (each is also logged, and counted against its address by the
    /// [`LoginThrottle`]).
    pub fn login_failures(&self) -> u64 {
        self.admission.login_failures()
    }
}

// ----- the supervisor actor -----

/// Owns the container's life: it starts every connection (on a worker, round robin) and listener, stops
/// them on `stop`, and finishes the container through the [`Gate`] once everything is gone.
struct Supervisor {
    gate: Arc<Gate>,
    connections: HashMap<u64, Recipient<Shutdown>>,
    listeners: HashMap<u64, Arc<Notify>>,
    next_worker: usize,
    ever: bool,
    auto_stop: bool,
    stopping: Option<Option<AmqpError>>,
    standalone: bool,
    workers: Vec<Arbiter>,
    done: bool,
}

impl Actor for Supervisor {
    type Context = Context<Self>;
}

impl Supervisor {
    fn check_done(&mut self) {
        let quiet = self.connections.is_empty() && self.listeners.is_empty();
        let wanted = self.stopping.is_some() || (self.auto_stop && self.ever);
        // Something admitted but not started yet holds the finish; its arrival adds a connection or
        // listener, whose end calls this again.
        if self.done || !quiet || !wanted || !self.gate.try_finish() {
            return;
        }
        self.done = true;
        for w in &self.workers {
            w.stop();
        }
        if self.standalone {
            System::current().stop();
        }
    }
}

/// Start this connection (admitted by the gate).
#[derive(Message)]
#[rtype(result = "()")]
struct Launch(u64, Starter, Recipient<Shutdown>);

/// A connection finished.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Unregister(pub(crate) u64);

type ListenTask = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Start this listener's accept loop (admitted by the gate); the `Notify` stops it.
#[derive(Message)]
#[rtype(result = "()")]
struct Listen(u64, Arc<Notify>, ListenTask);

#[derive(Message)]
#[rtype(result = "()")]
struct ListenerDown(u64);

#[derive(Message)]
#[rtype(result = "()")]
struct Stop(Option<AmqpError>);

type ScheduledFn = Box<dyn FnOnce() + Send>;

#[derive(Message)]
#[rtype(result = "()")]
struct Schedule(Duration, ScheduledFn);

impl Handler<Launch> for Supervisor {
    type Result = ();

    fn handle(&mut self, Launch(id, start, shutdown): Launch, _: &mut Context<Self>) {
        self.gate.arrived();
        self.ever = true;
        // The workers run until `check_done` stops them, which the gate held back for this connection.
        let worker = self.workers[self.next_worker % self.workers.len()].handle();
        self.next_worker = self.next_worker.wrapping_add(1);
        start(&worker);
        // Admitted before `stop`, arrived after it: it runs, and is closed at once (its handler still sees
        // `on_transport_close`). The actor's `Unregister` can only come after this.
        if let Some(error) = &self.stopping {
            let _ = shutdown.try_send(Shutdown(error.clone()));
        }
        self.connections.insert(id, shutdown);
    }
}

impl Handler<Unregister> for Supervisor {
    type Result = ();

    fn handle(&mut self, Unregister(id): Unregister, _: &mut Context<Self>) {
        self.connections.remove(&id);
        self.check_done();
    }
}

impl Handler<Listen> for Supervisor {
    type Result = ();

    fn handle(&mut self, Listen(id, stop, task): Listen, _: &mut Context<Self>) {
        self.gate.arrived();
        self.ever = true;
        if self.stopping.is_some() {
            stop.notify_one();
        }
        self.listeners.insert(id, stop);
        actix::spawn(task);
    }
}

impl Handler<ListenerDown> for Supervisor {
    type Result = ();

    fn handle(&mut self, ListenerDown(id): ListenerDown, _: &mut Context<Self>) {
        self.listeners.remove(&id);
        self.check_done();
    }
}

impl Handler<Stop> for Supervisor {
    type Result = ();

    fn handle(&mut self, Stop(error): Stop, _: &mut Context<Self>) {
        if self.stopping.is_none() {
            for c in self.connections.values() {
                let _ = c.try_send(Shutdown(error.clone()));
            }
            for l in self.listeners.values() {
                l.notify_one();
            }
            self.stopping = Some(error);
        }
        self.check_done();
    }
}

impl Handler<Schedule> for Supervisor {
    type Result = ();

    fn handle(&mut self, Schedule(delay, f): Schedule, ctx: &mut Context<Self>) {
        ctx.run_later(delay, move |_, _| {
            let _ = guard::run("a scheduled closure", f);
        });
    }
}
