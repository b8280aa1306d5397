//! # nucleon
//!
//! AMQP 1.0 messaging for Rust with the threading model of Apache Qpid Proton, built on actix.
//!
//! * A [`Container`] (a supervisor actor plus a pool of worker arbiters) connects, listens, schedules and
//!   stops. Its [`ContainerHandle`] is `Send + Sync + Clone` and works from any thread at any time.
//! * Each connection is an actor on one worker. Its [`MessagingHandler`] gets synchronous `on_*` callbacks,
//!   never two at once for one connection; different connections run in parallel.
//! * Connection objects ([`Connection`], [`Sender`], [`Receiver`], [`Delivery`], [`Tracker`]) are borrowed,
//!   `!Send` views that exist only inside a callback. To act on a connection from another thread, use its
//!   [`WorkQueue`] (closures run in the connection's context) or [`ConnectionHandle::wake`].
//! * The async facade, for actix-web handlers and plain async code, is built on the work queue:
//!   [`ContainerHandle::connect_async`] opens one connection ([`AsyncConnectionHandle`]) that carries many
//!   [`SenderHandle`]s and [`ReceiverHandle`]s; [`ContainerHandle::open_sender`] and the like open a
//!   connection for one link, which closes with it.
//!
//! The protocol itself is the sans-IO engine of [`nucleon_protocol`], re-exported as [`protocol`].
//!
//! ## Quick start: a handler (Proton's style)
//!
//! A plain `fn main`: the handler's callbacks run on the container's worker, `run` returns once the
//! connection is gone. This sends one message to the queue `examples` and closes once the broker
//! accepted it (start a broker first, e.g. `cargo run -p nucleon-examples --bin broker`).
//!
//! ```no_run
//! use nucleon::protocol::frame::Error as AmqpError;
//! use nucleon::{
//!     Connection, ConnectionOptions, Container, Message, MessagingHandler, Sender, SenderOptions,
//!     Tracker,
//! };
//!
//! struct HelloWorld {
//!     sent: bool,
//! }
//!
//! impl MessagingHandler for HelloWorld {
//!     fn on_connection_open(&mut self, connection: &mut Connection<'_>) {
//!         if let Err(e) = connection.open_sender("examples", SenderOptions::default()) {
//!             eprintln!("cannot open a sender: {e}");
//!             connection.close();
//!         }
//!     }
//!
//!     fn on_sendable(&mut self, sender: &mut Sender<'_>) {
//!         if !self.sent && sender.send(&Message::with_body("Hello World!")).is_ok() {
//!             self.sent = true;
//!         }
//!     }
//!
//!     fn on_tracker_accept(&mut self, tracker: &mut Tracker<'_>) {
//!         println!("accepted");
//!         tracker.sender().connection().close();
//!     }
//!
//!     // Proton's default error handling ends the program: so does this one.
//!     fn on_connection_error(&mut self, connection: &mut Connection<'_>, error: &AmqpError) {
//!         eprintln!("the connection was closed: {error}");
//!         connection.close();
//!     }
//!
//!     fn on_sender_error(&mut self, sender: &mut Sender<'_>, error: &AmqpError) {
//!         eprintln!("the sender was refused: {error}");
//!         sender.connection().close();
//!     }
//! }
//!
//! fn main() -> Result<(), nucleon::Error> {
//!     let container = Container::new("helloworld");
//!     let url = "amqp://127.0.0.1:5672";
//!     container
//!         .handle()
//!         .connect(url, ConnectionOptions::default(), HelloWorld { sent: false })?;
//!     container.run()
//! }
//! ```
//!
//! ## Quick start: async
//!
//! Under `#[tokio::main]` (or any runtime), [`ContainerBuilder::spawn`] runs the container on threads of its
//! own, and [`ContainerHandle::connect_async`] gives one connection for many links. Inside an actix System
//! (actix-web), use [`ContainerBuilder::start`] instead, which shares that System.
//!
//! ```no_run
//! use nucleon::{Container, ConnectionOptions, Message, Outcome, ReceiverOptions, SenderOptions};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), nucleon::Error> {
//!     let container = Container::builder().spawn()?;
//!     let connection = container
//!         .handle()
//!         .connect_async("amqp://127.0.0.1:5672", ConnectionOptions::default())
//!         .await?;
//!     let sender = connection.open_sender("examples", SenderOptions::default()).await?;
//!     let mut receiver = connection
//!         .open_receiver("examples", ReceiverOptions::default())
//!         .await?;
//!
//!     // `send` resolves with the broker's outcome: at-least-once.
//!     match sender.send(Message::with_body("Hello World!")).await? {
//!         Outcome::Accepted => println!("accepted"),
//!         other => eprintln!("not accepted: {other:?}"),
//!     }
//!     if let Some(received) = receiver.recv().await {
//!         println!("{:?}", received.message.body());
//!         received.accept()?;
//!     }
//!
//!     connection.close()?;
//!     container.handle().stop();
//!     container.wait().await
//! }
//! ```
//!
//! ## Entry points
//!
//! | where your code runs | how to start the container |
//! |---|---|
//! | a plain `fn main` or thread | [`Container::new`] / [`ContainerBuilder::build`], then [`Container::run`] (blocks), or [`ContainerBuilder::spawn`] |
//! | `#[tokio::main]`, any async runtime | [`ContainerBuilder::spawn`], then [`ContainerThread::wait`]; `build` works there too (it runs the container on its own thread), but `run` blocks |
//! | inside an actix System (actix-web) | [`ContainerBuilder::start`], which shares the System |
//!
//! Whichever it is, the [`ContainerHandle`] works from any thread, and the async facade's futures need no
//! particular runtime.
#![warn(missing_docs)]

#[cfg(feature = "broker")]
pub mod broker;
mod connection;
mod container;
mod dispatch;
mod error;
mod facade;
mod gate;
mod guard;
mod handler;
mod listener;
mod options;
mod signal;
mod sync;
mod tls;
mod transport;
mod url;
mod views;
mod ws;

/// The README's Rust snippets, compiled (and, unless marked `no_run`, run) as doctests of this crate, so
/// that the front page cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
mod readme {}

pub use connection::{ConnectionHandle, WorkQueue};
pub use container::{
    Container, ContainerBuilder, ContainerHandle, ContainerThread, ListenOptions, Listener,
};
pub use error::{Error, Timeout};
pub use facade::{
    AsyncConnectionHandle, LinkHandle, Outcome, Received, ReceiverHandle, SenderHandle,
};
pub use handler::{ListenHandler, MessagingHandler};
pub use nucleon_protocol as protocol;
pub use nucleon_protocol::{Body, Message, MessageBuilder, RawMessage, Value};
pub use options::{
    ConnectionOptions, DeliveryMode, LoginThrottle, ReceiverOptions, ReconnectOptions,
    SenderOptions, TcpKeepalive, DEFAULT_MAX_IN_FLIGHT,
};
pub use tls::{TlsClientConfig, TlsClientConfigBuilder, TlsServerConfig};
pub use transport::Transport;
pub use url::Address;
pub use views::{
    AttachReply, Connection, ConnectionWaker, Delivery, DeliveryRef, Receiver, ReceiverId, Sender,
    SenderId, Session, Tracker,
};
