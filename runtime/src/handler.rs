//! [`MessagingHandler`]: the synchronous callbacks of one connection, named as in Proton's
//! `messaging_handler`; and [`ListenHandler`], which makes one handler per accepted connection.
//!
//! Callbacks of one connection never overlap: they run one at a time on that connection's worker thread,
//! serialized with its work items and wakes. Callbacks of different connections run in parallel.
//! A worker thread serves many connections, so a callback must not block: one that waits stalls every
//! connection on its worker. Blocking work goes through
//! [`WorkQueue::run_blocking`](crate::WorkQueue::run_blocking), which runs it off the worker and brings the
//! result back through the work queue.
//!
//! Proton's defaults are applied by the runtime around the callbacks, whatever the handler does:
//! remote-opened endpoints are opened in reply; receivers keep a credit window (default 10) refilled as
//! messages are consumed; messages are accepted when `on_message` (or `on_raw_message`) returns without
//! settling them (unless the receiver's options say otherwise); senders settle a delivery when its outcome arrives.

use std::net::SocketAddr;

use nucleon_protocol::frame::{Error as AmqpError, ErrorCondition};
use nucleon_protocol::{Message, RawMessage};

use crate::container::ContainerHandle;
use crate::error::Error;
use crate::views::{AttachReply, Connection, Delivery, Receiver, Sender, Session, Tracker};

/// The callbacks of one connection. Every method has a default: do nothing, or for the `*_error` methods,
/// call [`on_error`](MessagingHandler::on_error).
#[allow(unused_variables)]
pub trait MessagingHandler: Send + 'static {
    /// The container started (called for the handler given to `Container::run_with`).
    fn on_container_start(&mut self, container: &ContainerHandle) {}
    /// The container stopped (called for the handler given to `Container::run_with`).
    fn on_container_stop(&mut self, container: &ContainerHandle) {}

    /// The transport (socket) is connected; the AMQP handshake follows.
    fn on_transport_open(&mut self, connection: &mut Connection<'_>) {}
    /// The transport failed. `on_transport_close` follows.
    fn on_transport_error(&mut self, connection: &mut Connection<'_>, error: &AmqpError) {
        self.on_error(&Error::Amqp(error.clone()));
    }
    /// The transport closed: always the last callback of a connection (or of one attempt, when reconnecting),
    /// exactly once.
    fn on_transport_close(&mut self, connection: &mut Connection<'_>) {}

    /// The connection is open at both ends. [`Connection::reconnected`] tells a reconnect.
    fn on_connection_open(&mut self, connection: &mut Connection<'_>) {}
    /// The peer closed the connection.
    fn on_connection_close(&mut self, connection: &mut Connection<'_>) {}
    /// The peer closed the connection with an error (before `on_connection_close`).
    fn on_connection_error(&mut self, connection: &mut Connection<'_>, error: &AmqpError) {
        self.on_error(&Error::Amqp(error.clone()));
    }
    /// Someone called `ConnectionHandle::wake`. Wakes coalesce, and spurious wakes may happen.
    fn on_connection_wake(&mut self, connection: &mut Connection<'_>) {}

    /// A session is open at both ends.
    fn on_session_open(&mut self, session: &mut Session<'_>) {}
    /// The peer ended a session.
    fn on_session_close(&mut self, session: &mut Session<'_>) {}
    /// The peer ended a session with an error (before `on_session_close`).
    fn on_session_error(&mut self, session: &mut Session<'_>, error: &AmqpError) {
        self.on_error(&Error::Amqp(error.clone()));
    }

    /// The peer attached a link: `reply` is the answer about to be sent, by default mirroring the peer's
    /// terms (Proton's default). Change it here, e.g. set the address of a dynamic source, or a receiver's
    /// credit window to 0 to grant credit yourself. `on_sender_open`/`on_receiver_open` follow.
    fn on_link_attach_request(&mut self, reply: &mut AttachReply) {}

    /// A sender is attached at both ends.
    fn on_sender_open(&mut self, sender: &mut Sender<'_>) {}
    /// The peer closed a sender's link.
    fn on_sender_close(&mut self, sender: &mut Sender<'_>) {}
    /// The peer detached a sender's link without closing it.
    fn on_sender_detach(&mut self, sender: &mut Sender<'_>) {}
    /// The peer closed or detached a sender's link with an error (before the close/detach callback).
    fn on_sender_error(&mut self, sender: &mut Sender<'_>, error: &AmqpError) {
        self.on_error(&Error::Amqp(error.clone()));
    }
    /// The sender has credit: it may send.
    fn on_sendable(&mut self, sender: &mut Sender<'_>) {}
    /// The receiver asked this sender to drain. When the handler has sent what it had, the runtime gives
    /// back the remaining credit.
    fn on_sender_drain_start(&mut self, sender: &mut Sender<'_>) {}

    /// A receiver is attached at both ends.
    fn on_receiver_open(&mut self, receiver: &mut Receiver<'_>) {}
    /// The peer closed a receiver's link.
    fn on_receiver_close(&mut self, receiver: &mut Receiver<'_>) {}
    /// The peer detached a receiver's link without closing it.
    fn on_receiver_detach(&mut self, receiver: &mut Receiver<'_>) {}
    /// The peer closed or detached a receiver's link with an error.
    fn on_receiver_error(&mut self, receiver: &mut Receiver<'_>, error: &AmqpError) {
        self.on_error(&Error::Amqp(error.clone()));
    }
    /// A drain this receiver asked for has completed.
    fn on_receiver_drain_finish(&mut self, receiver: &mut Receiver<'_>) {}

    /// Whether this handler takes messages undecoded, through
    /// [`on_raw_message`](MessagingHandler::on_raw_message) (default false: they are decoded and go to
    /// [`on_message`](MessagingHandler::on_message)). Asked for each message.
    fn takes_raw_messages(&self) -> bool {
        false
    }

    /// A message arrived, as the bytes it came in, to a handler whose
    /// [`takes_raw_messages`](MessagingHandler::takes_raw_messages) is true: checked (its sections are
    /// well formed and in order) but not decoded. Unless the receiver's `auto_accept` is off, it is
    /// accepted when this returns without the delivery having been settled; a message whose sections are
    /// not well formed never gets here (it is rejected with `amqp:decode-error` and
    /// [`on_error`](MessagingHandler::on_error) is called).
    ///
    /// Override it (with `takes_raw_messages`) to forward messages without decoding them (a broker, a
    /// relay): [`RawMessage`] reads the header, `to` and the expiry time from the bytes and decodes on
    /// demand, and [`Sender::send_raw`] sends the bytes as they came. The default decodes the message and
    /// calls [`on_message`](MessagingHandler::on_message); one that fails to decode (its decoded values
    /// would exceed the decode budget) is rejected with `amqp:decode-error`, unless it came settled, and
    /// `on_error` is called. A handler that does not take raw messages has its messages decoded in one
    /// pass instead, with the same outcome: checking and then decoding would cost a third more.
    fn on_raw_message(&mut self, delivery: &mut Delivery<'_>, message: RawMessage) {
        match message.decode() {
            Ok(m) => self.on_message(delivery, m),
            Err(e) => {
                delivery.reject(Some(AmqpError::new(
                    ErrorCondition::DecodeError,
                    e.to_string(),
                )));
                self.on_error(&Error::Amqp(AmqpError::new(
                    ErrorCondition::DecodeError,
                    format!("undecodable message: {e}"),
                )));
            }
        }
    }
    /// A message arrived, decoded (unless [`takes_raw_messages`](MessagingHandler::takes_raw_messages)
    /// is true and [`on_raw_message`](MessagingHandler::on_raw_message) is overridden). Unless the receiver's `auto_accept` is off,
    /// it is accepted when this returns without the delivery having been settled.
    fn on_message(&mut self, delivery: &mut Delivery<'_>, message: Message) {}
    /// The peer settled a delivery we received (e.g. in receiver-settle-mode second).
    fn on_delivery_settle(&mut self, delivery: &mut Delivery<'_>) {}

    /// The peer accepted a message we sent.
    fn on_tracker_accept(&mut self, tracker: &mut Tracker<'_>) {}
    /// The peer rejected a message we sent.
    fn on_tracker_reject(&mut self, tracker: &mut Tracker<'_>) {}
    /// The peer released (or modified) a message we sent.
    fn on_tracker_release(&mut self, tracker: &mut Tracker<'_>) {}
    /// A message we sent is settled at both ends.
    fn on_tracker_settle(&mut self, tracker: &mut Tracker<'_>) {}

    /// Where the default `*_error` callbacks end up. The default logs the error.
    fn on_error(&mut self, error: &Error) {
        log::error!("unhandled AMQP error: {error}");
    }
}

/// Makes one [`MessagingHandler`] per accepted connection, on that connection's worker thread.
#[allow(unused_variables)]
pub trait ListenHandler: Send + Sync + 'static {
    /// The handler type for accepted connections.
    type Handler: MessagingHandler;

    /// A connection was accepted from `peer`: make its handler.
    fn on_accept(&self, peer: SocketAddr) -> Self::Handler;

    /// The listener is bound and accepting.
    fn on_open(&self, addr: SocketAddr) {}

    /// Accepting failed; the listener goes on unless the error is fatal. Called for each failure; the
    /// listener itself logs them (at most one line a second, with a count) and pauses accepting after each
    /// (100 ms, doubling to 1 s while they go on), so that running out of file descriptors does not spin.
    fn on_error(&self, error: &Error) {}

    /// The listener stopped.
    fn on_close(&self) {}
}
