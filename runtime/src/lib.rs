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

pub use connection::{ConnectionHandle, WorkQueue};
pub use container::{
    Container, ContainerBuilder, ContainerHandle, ContainerThread, ListenOptions, Listener,
};
pub use error::Error;
pub use facade::{
    AsyncConnectionHandle, LinkHandle, Outcome, Received, ReceiverHandle, SenderHandle,
};
pub use handler::{ListenHandler, MessagingHandler};
pub use nucleon_protocol as protocol;
pub use nucleon_protocol::{Body, Message, MessageBuilder, Value};
pub use options::{
    ConnectionOptions, DeliveryMode, LoginThrottle, ReceiverOptions, ReconnectOptions,
    SenderOptions, TcpKeepalive,
};
pub use tls::{TlsClientConfig, TlsClientConfigBuilder, TlsServerConfig};
pub use transport::Transport;
pub use url::Address;
pub use views::{
    AttachReply, Connection, ConnectionWaker, Delivery, DeliveryRef, Receiver, ReceiverId, Sender,
    SenderId, Session, Tracker,
};
