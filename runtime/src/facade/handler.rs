//! [`Facade`]: the handler behind every facade connection. It keeps a map of the connection's links (each
//! sender with its waiting and in-flight sends, each receiver with its sink) and is driven only by work
//! items that the handles queue, so nothing touches the connection outside its context.
//!
//! Who fails what:
//! * A link closed or detached (by its handle, or by the peer, with or without an error) fails what its
//!   sender still had waiting or in flight with the peer's error, else [`Error::LinkClosed`], and ends its
//!   receiver's stream. The link leaves the map, so later operations on it fail with `LinkClosed`.
//! * The connection over (its transport closed for good, or the peer closed it) fails every link, every
//!   link still opening and the connect itself with the error that ended it, which also becomes the
//!   connection's closed state ([`AsyncConnectionHandle::closed`](super::AsyncConnectionHandle::closed)).
//!   With reconnect, a lost transport is not the end: sends in flight fail with `ConnectionClosed` (their
//!   outcome is lost), waiting ones go out on the links the runtime attaches again, and the end is when the
//!   runtime gives up (the handler is dropped), with the last error seen.

use std::collections::{HashMap, VecDeque};

use nucleon_protocol::frame::Error as AmqpError;
use nucleon_protocol::Message;
use tokio::sync::watch;

use super::{Outcome, Received, Reply, Sink};
use crate::connection::WorkQueue;
use crate::error::Error;
use crate::handler::MessagingHandler;
use crate::options::{DeliveryMode, ReceiverOptions, SenderOptions};
use crate::views::{
    Connection, Delivery, DeliveryRef, Receiver, ReceiverId, Sender, SenderId, Session, Tracker,
};

/// A link asked for before the connection was open: attached once it is.
enum PendingOpen {
    Sender(String, SenderOptions, Reply<SenderId>),
    Receiver(String, ReceiverOptions, Sink, Reply<ReceiverId>),
}

impl PendingOpen {
    fn fail(self, error: Error) {
        match self {
            PendingOpen::Sender(.., reply) => {
                let _ = reply.send(Err(error));
            }
            PendingOpen::Receiver(.., reply) => {
                let _ = reply.send(Err(error));
            }
        }
    }
}

/// One sender of the connection.
struct SenderLink {
    mode: DeliveryMode,
    /// Answered when the link is attached at both ends (or refused).
    opened: Option<Reply<SenderId>>,
    waiting: VecDeque<(Message, Reply<Outcome>)>,
    in_flight: HashMap<DeliveryRef, Reply<Outcome>>,
    /// The peer's error, once it detached the link with one.
    error: Option<Error>,
    /// Its handle closed it: no more sends, the peer's detach is awaited.
    closing: bool,
}

impl SenderLink {
    fn fail(&mut self, error: &Error) {
        if let Some(reply) = self.opened.take() {
            let _ = reply.send(Err(error.clone()));
        }
        for (_, reply) in self.waiting.drain(..) {
            let _ = reply.send(Err(error.clone()));
        }
        for (_, reply) in self.in_flight.drain() {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

/// A link that ended before it was attached at both ends was refused: [`Error::LinkRefused`], with the
/// peer's error if it gave one.
fn refusal_if_opening(error: Error, opening: bool) -> Error {
    if opening {
        error.into_refusal()
    } else {
        error
    }
}

/// One receiver of the connection.
struct ReceiverLink {
    mode: DeliveryMode,
    window: u32,
    opened: Option<Reply<ReceiverId>>,
    sink: Sink,
    error: Option<Error>,
}

impl ReceiverLink {
    fn fail(&mut self, error: &Error) {
        if let Some(reply) = self.opened.take() {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

/// The handler behind a facade connection: many links, driven by work items.
pub(crate) struct Facade {
    /// Its own connection's work queue, for the settlers and credit of what it receives.
    wq: WorkQueue<Facade>,
    /// Answered when the connection first opens (`connect_async`).
    opened: Option<Reply<()>>,
    /// The current transport's connection is open: links may be attached.
    open: bool,
    ever_opened: bool,
    pending: Vec<PendingOpen>,
    senders: HashMap<SenderId, SenderLink>,
    receivers: HashMap<ReceiverId, ReceiverLink>,
    /// Set once the connection is over, to the error that ended it: every later operation fails with it.
    error: Option<Error>,
    /// The last failure seen, reported if the runtime gives up reconnecting.
    last_error: Option<Error>,
    /// The connection reconnects after a lost transport: its links are attached again by the runtime.
    reconnects: bool,
    /// The connection exists for one link (`ContainerHandle::open_sender` and the like): it closes with it.
    single_link: bool,
    /// The connection's closed state, for its handles: `Some(why)` once it is over.
    state: watch::Sender<Option<Error>>,
}

impl Facade {
    pub(crate) fn new(
        wq: WorkQueue<Facade>,
        opened: Option<Reply<()>>,
        reconnects: bool,
        single_link: bool,
        state: watch::Sender<Option<Error>>,
    ) -> Facade {
        Facade {
            wq,
            opened,
            open: false,
            ever_opened: false,
            pending: Vec::new(),
            senders: HashMap::new(),
            receivers: HashMap::new(),
            error: None,
            last_error: None,
            reconnects,
            single_link,
            state,
        }
    }

    /// The connection is over: everything fails with the first error that ended it, and the handles see
    /// it in the closed state (set first, so that a caller woken by a failed send sees it too).
    fn fail_connection(&mut self, error: Error) {
        let error = self.error.get_or_insert(error).clone();
        self.state.send_if_modified(|s| {
            let unset = s.is_none();
            if unset {
                *s = Some(error.clone());
            }
            unset
        });
        if let Some(reply) = self.opened.take() {
            let _ = reply.send(Err(error.clone()));
        }
        for p in self.pending.drain(..) {
            p.fail(error.clone());
        }
        for (_, mut s) in self.senders.drain() {
            s.fail(&error);
        }
        // Dropping a receiver's sink ends its stream.
        for (_, mut r) in self.receivers.drain() {
            r.fail(&error);
        }
    }

    /// A failure of the connection: the end, unless the runtime reconnects.
    fn lost(&mut self, error: Error) {
        self.last_error = Some(error.clone());
        if self.reconnects {
            log::debug!("a facade connection failed, reconnecting: {error}");
        } else {
            self.fail_connection(error);
        }
    }

    /// Attaches a sender now, or once the connection is open.
    pub(crate) fn open_sender(
        &mut self,
        c: &mut Connection<'_>,
        address: String,
        options: SenderOptions,
        reply: Reply<SenderId>,
    ) {
        if let Some(e) = &self.error {
            let _ = reply.send(Err(e.clone()));
            return;
        }
        if !self.open {
            self.pending
                .push(PendingOpen::Sender(address, options, reply));
            return;
        }
        let mode = options.delivery_mode;
        match c.open_sender(&address, options) {
            Ok(s) => {
                self.senders.insert(
                    s.id(),
                    SenderLink {
                        mode,
                        opened: Some(reply),
                        waiting: VecDeque::new(),
                        in_flight: HashMap::new(),
                        error: None,
                        closing: false,
                    },
                );
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Attaches a receiver now, or once the connection is open. Its credit is granted by its consumer,
    /// never by the runtime's window.
    pub(crate) fn open_receiver(
        &mut self,
        c: &mut Connection<'_>,
        address: String,
        options: ReceiverOptions,
        sink: Sink,
        reply: Reply<ReceiverId>,
    ) {
        if let Some(e) = &self.error {
            let _ = reply.send(Err(e.clone()));
            return;
        }
        if !self.open {
            self.pending
                .push(PendingOpen::Receiver(address, options, sink, reply));
            return;
        }
        let window = options.credit_window.unwrap_or(10).max(1);
        let mode = options.delivery_mode;
        let mut o = options;
        o.credit_window = Some(0);
        o.auto_accept = Some(false);
        match c.open_receiver(&address, o) {
            Ok(r) => {
                self.receivers.insert(
                    r.id(),
                    ReceiverLink {
                        mode,
                        window,
                        opened: Some(reply),
                        sink,
                        error: None,
                    },
                );
            }
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Queues a message on a sender and sends what its credit allows.
    pub(crate) fn send(
        &mut self,
        c: &mut Connection<'_>,
        id: SenderId,
        message: Message,
        reply: Reply<Outcome>,
    ) {
        if let Some(e) = &self.error {
            let _ = reply.send(Err(e.clone()));
            return;
        }
        match self.senders.get_mut(&id) {
            Some(link) if !link.closing => link.waiting.push_back((message, reply)),
            _ => {
                let _ = reply.send(Err(Error::LinkClosed));
                return;
            }
        }
        self.flush(c, id);
    }

    fn flush(&mut self, c: &mut Connection<'_>, id: SenderId) {
        let Some(link) = self.senders.get_mut(&id) else {
            return;
        };
        let Some(mut sender) = c.sender(id) else {
            return;
        };
        while sender.credit() > 0 {
            let Some((message, reply)) = link.waiting.pop_front() else {
                break;
            };
            match sender.send(&message) {
                Ok(_) if link.mode == DeliveryMode::AtMostOnce => {
                    let _ = reply.send(Ok(Outcome::Settled));
                }
                Ok(d) => {
                    link.in_flight.insert(d, reply);
                }
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
            }
        }
    }

    fn outcome(&mut self, t: &mut Tracker<'_>) {
        let id = t.sender().id();
        if let Some(link) = self.senders.get_mut(&id) {
            if let Some(reply) = link.in_flight.remove(&t.id()) {
                let _ = reply.send(Ok(Outcome::from_state(t.state())));
            }
        }
    }

    /// Grants a receiver `n` more messages.
    pub(crate) fn add_credit(&mut self, c: &mut Connection<'_>, id: ReceiverId, n: u32) {
        if let Some(mut r) = c.receiver(id) {
            let _ = r.add_credit(n);
        }
    }

    /// Closes a sender's link at its handle's request (the connection too, if it exists for that link).
    /// What waits for credit fails now; what is in flight keeps its chance of an outcome until the peer
    /// answers the detach.
    pub(crate) fn close_sender(&mut self, c: &mut Connection<'_>, id: SenderId) {
        if let Some(link) = self.senders.get_mut(&id) {
            link.closing = true;
            for (_, reply) in link.waiting.drain(..) {
                let _ = reply.send(Err(Error::LinkClosed));
            }
        }
        if let Some(mut s) = c.sender(id) {
            s.close();
        }
        if self.single_link {
            c.close();
        }
    }

    /// Closes a receiver's link at its handle's request: the peer gets back at once what the link held
    /// unsettled. Its stream ends now; what still arrives before the peer's detach is released.
    pub(crate) fn close_receiver(&mut self, c: &mut Connection<'_>, id: ReceiverId) {
        self.receivers.remove(&id);
        if let Some(mut r) = c.receiver(id) {
            r.close();
        }
        if self.single_link {
            c.close();
        }
    }

    fn sender_gone(&mut self, s: &mut Sender<'_>) {
        if let Some(mut link) = self.senders.remove(&s.id()) {
            let error = link.error.take().unwrap_or(Error::LinkClosed);
            link.fail(&refusal_if_opening(error, link.opened.is_some()));
        }
        if self.single_link {
            s.connection().close();
        }
    }

    fn receiver_gone(&mut self, r: &mut Receiver<'_>) {
        if let Some(mut link) = self.receivers.remove(&r.id()) {
            let error = link.error.take().unwrap_or(Error::LinkClosed);
            link.fail(&refusal_if_opening(error, link.opened.is_some()));
        }
        if self.single_link {
            r.connection().close();
        }
    }
}

impl MessagingHandler for Facade {
    fn on_connection_open(&mut self, conn: &mut Connection<'_>) {
        self.open = true;
        self.ever_opened = true;
        if let Some(reply) = self.opened.take() {
            let _ = reply.send(Ok(()));
        }
        // After a reconnect the runtime has attached the links again under the same ids: only what was
        // asked for meanwhile is attached here.
        for p in std::mem::take(&mut self.pending) {
            match p {
                PendingOpen::Sender(address, options, reply) => {
                    self.open_sender(conn, address, options, reply)
                }
                PendingOpen::Receiver(address, options, sink, reply) => {
                    self.open_receiver(conn, address, options, sink, reply)
                }
            }
        }
    }

    fn on_sender_open(&mut self, s: &mut Sender<'_>) {
        let id = s.id();
        let Some(link) = self.senders.get_mut(&id) else {
            return;
        };
        if let Some(reply) = link.opened.take() {
            if reply.send(Ok(id)).is_err() {
                // Nobody waits for it any more (the open was given up): no handle will ever close it.
                self.close_sender(&mut s.connection(), id);
                return;
            }
        }
        self.flush(&mut s.connection(), id);
    }

    fn on_receiver_open(&mut self, r: &mut Receiver<'_>) {
        let id = r.id();
        let Some(link) = self.receivers.get_mut(&id) else {
            return;
        };
        if let Some(reply) = link.opened.take() {
            if reply.send(Ok(id)).is_err() {
                self.close_receiver(&mut r.connection(), id);
                return;
            }
        }
        let _ = r.add_credit(link.window);
    }

    fn on_sendable(&mut self, s: &mut Sender<'_>) {
        let id = s.id();
        self.flush(&mut s.connection(), id);
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
        let id = d.receiver().id();
        let Some(link) = self.receivers.get_mut(&id) else {
            // Its handle is gone and the link is closing: the peer gets it back.
            d.release();
            return;
        };
        let presettled = d.settled() || link.mode == DeliveryMode::AtMostOnce;
        d.defer();
        let wq = self.wq.clone();
        let received = Received {
            message,
            delivery: d.id(),
            settler: (!presettled).then(|| wq.clone()),
        };
        match &link.sink {
            Sink::Stream(tx) => {
                // A stream already dropped: the message, dropped with the error, releases itself.
                let _ = tx.send(received);
            }
            Sink::Actor(recipient) => {
                let recipient = recipient.clone();
                // Credit comes back only when the actor has handled the message.
                actix_rt::spawn(async move {
                    if recipient.send(received).await.is_ok() {
                        let _ = wq.add(move |h, c| h.add_credit(c, id, 1));
                    }
                });
            }
        }
    }

    fn on_sender_error(&mut self, s: &mut Sender<'_>, error: &AmqpError) {
        if let Some(link) = self.senders.get_mut(&s.id()) {
            link.error = Some(Error::Amqp(error.clone()));
        }
    }

    fn on_sender_close(&mut self, s: &mut Sender<'_>) {
        self.sender_gone(s);
    }

    fn on_sender_detach(&mut self, s: &mut Sender<'_>) {
        self.sender_gone(s);
    }

    fn on_receiver_error(&mut self, r: &mut Receiver<'_>, error: &AmqpError) {
        if let Some(link) = self.receivers.get_mut(&r.id()) {
            link.error = Some(Error::Amqp(error.clone()));
        }
    }

    fn on_receiver_close(&mut self, r: &mut Receiver<'_>) {
        self.receiver_gone(r);
    }

    fn on_receiver_detach(&mut self, r: &mut Receiver<'_>) {
        self.receiver_gone(r);
    }

    fn on_session_error(&mut self, _s: &mut Session<'_>, error: &AmqpError) {
        // Some peers (RabbitMQ) refuse a link by ending its whole session.
        let error = Error::Amqp(error.clone());
        for link in self.senders.values_mut() {
            link.error.get_or_insert(error.clone());
        }
        for link in self.receivers.values_mut() {
            link.error.get_or_insert(error.clone());
        }
    }

    fn on_session_close(&mut self, s: &mut Session<'_>) {
        // Every link is on the connection's one session, which is gone: so are they. The next link
        // opened begins a new session.
        for (_, mut link) in self.senders.drain() {
            let error = link.error.take().unwrap_or(Error::LinkClosed);
            link.fail(&refusal_if_opening(error, link.opened.is_some()));
        }
        for (_, mut link) in self.receivers.drain() {
            let error = link.error.take().unwrap_or(Error::LinkClosed);
            link.fail(&refusal_if_opening(error, link.opened.is_some()));
        }
        if self.single_link {
            s.connection().close();
        }
    }

    fn on_connection_error(&mut self, _c: &mut Connection<'_>, error: &AmqpError) {
        self.lost(Error::Amqp(error.clone()));
    }

    fn on_transport_error(&mut self, c: &mut Connection<'_>, error: &AmqpError) {
        let typed = c.transport_error().cloned();
        self.lost(typed.unwrap_or_else(|| Error::from_transport(error)));
    }

    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        self.open = false;
        if !self.reconnects {
            self.fail_connection(Error::ConnectionClosed);
            return;
        }
        // Another transport may follow: what was in flight has lost its outcome, what waits for credit
        // goes on the links attached again. If none follows, the connection finishes and the handler is
        // dropped, which fails whatever still waits.
        for link in self.senders.values_mut() {
            for (_, reply) in link.in_flight.drain() {
                let _ = reply.send(Err(Error::ConnectionClosed));
            }
        }
    }
}

impl Drop for Facade {
    /// The connection is finished (or never started): whatever still waits fails, with the last error
    /// seen, and the handles see the connection closed.
    fn drop(&mut self) {
        let error = self.last_error.take().unwrap_or(Error::ConnectionClosed);
        self.fail_connection(error);
    }
}
