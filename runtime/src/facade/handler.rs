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
//!   With reconnect, a lost transport is not the end: sends in flight fail with
//!   [`transport_lost_error`](super::transport_lost_error) (their outcome is lost; they are never resent
//!   here, so the caller decides whether a duplicate is acceptable), waiting ones go out on the links the
//!   runtime attaches again (same ids, never a second link), receivers keep their sinks and get back the
//!   credit they had, and the end is when the runtime gives up (the handler is dropped), with the last
//!   error seen.
//! * Every receiver's [`LinkWatch`](super::LinkWatch) gets why its link ended before its sink is dropped,
//!   so a stream that yields `None` can always say why.
//!
//! Request/reply (`request`): one receiver with a dynamic source per connection, opened on first use, is
//! the reply queue; each request goes out on a sender per address (kept for the connection's life) with
//! `reply-to` set to the queue's address, and its reply is matched by its correlation-id to the request's
//! message-id. A request waits in `queued` until the reply queue's address is known (and the connection is
//! open); once sent, its reply can only come to that queue, so a lost transport (the peer drops a dynamic
//! node with its connection) fails it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use nucleon_protocol::frame::{Error as AmqpError, MessageId};
use nucleon_protocol::Message;
use tokio::sync::{oneshot, watch};

use super::{
    not_accepted_error, request_refused_error, transport_lost_error, LinkWatch, Outcome, Received,
    Reply, Sink,
};
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
    /// `None`: the connection's own reply queue, which nobody waits for.
    Receiver(
        String,
        ReceiverOptions,
        Sink,
        Arc<LinkWatch>,
        Option<Reply<ReceiverId>>,
    ),
}

impl PendingOpen {
    fn fail(self, error: Error) {
        match self {
            PendingOpen::Sender(.., reply) => {
                let _ = reply.send(Err(error));
            }
            PendingOpen::Receiver(.., watch, reply) => {
                watch.end(error.clone());
                if let Some(reply) = reply {
                    let _ = reply.send(Err(error));
                }
            }
        }
    }

    /// Nobody waits for it any more (its open timed out or was given up).
    fn abandoned(&self) -> bool {
        match self {
            PendingOpen::Sender(.., reply) => reply.is_closed(),
            PendingOpen::Receiver(.., reply) => reply.as_ref().is_some_and(|r| r.is_closed()),
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
    /// Credit its consumer has granted that no message has used yet: granted again on the link the
    /// runtime attaches after a reconnect (whose credit starts at 0), so the window holds across it.
    credit_out: u32,
    /// The peer has attached the current transport's link: credit can go to it now.
    attached: bool,
    opened: Option<Reply<ReceiverId>>,
    sink: Sink,
    error: Option<Error>,
    /// Its address and why it ended, for its handle.
    watch: Arc<LinkWatch>,
}

impl ReceiverLink {
    fn fail(&mut self, error: &Error) {
        // Before the sink goes (with `self`), so that a stream that ends can say why.
        self.watch.end(error.clone());
        if let Some(reply) = self.opened.take() {
            let _ = reply.send(Err(error.clone()));
        }
    }
}

impl Drop for ReceiverLink {
    /// However it left the map (closed by its handle, or failed), its handle learns that it ended.
    fn drop(&mut self) {
        self.watch.end(Error::LinkClosed);
    }
}

/// The connection's request/reply state (see the module doc).
#[derive(Default)]
struct Requests {
    /// The reply queue has been asked for (and not lost since).
    opening: bool,
    /// The reply queue's address, once the peer has attached it.
    address: Option<String>,
    /// Requests waiting for the reply queue (or the connection) to be open: address, message, key.
    queued: Vec<(String, Message, MessageId)>,
    /// Every request awaiting its reply, by the message-id its reply correlates to; `true` once sent.
    pending: HashMap<MessageId, (Reply<Message>, bool)>,
    /// The sender kept for each address requests went to.
    senders: HashMap<String, SenderId>,
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
    requests: Requests,
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
            requests: Requests::default(),
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
        self.requests.queued.clear();
        for (_, (reply, _)) in self.requests.pending.drain() {
            let _ = reply.send(Err(error.clone()));
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
        if let Err(e) = self.attach_sender(c, &address, options, Some(reply)) {
            log::debug!("a facade sender to {address} was not attached: {e}");
        }
    }

    /// Attaches a sender on the open connection; `opened` is answered once the peer has attached it.
    fn attach_sender(
        &mut self,
        c: &mut Connection<'_>,
        address: &str,
        options: SenderOptions,
        opened: Option<Reply<SenderId>>,
    ) -> Result<SenderId, Error> {
        let mode = options.delivery_mode;
        match c.open_sender(address, options) {
            Ok(s) => {
                let id = s.id();
                self.senders.insert(
                    id,
                    SenderLink {
                        mode,
                        opened,
                        waiting: VecDeque::new(),
                        in_flight: HashMap::new(),
                        error: None,
                        closing: false,
                    },
                );
                Ok(id)
            }
            Err(e) => {
                if let Some(reply) = opened {
                    let _ = reply.send(Err(e.clone()));
                }
                Err(e)
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
        watch: Arc<LinkWatch>,
        reply: Option<Reply<ReceiverId>>,
    ) {
        if let Some(e) = self.error.clone() {
            PendingOpen::Receiver(address, options, sink, watch, reply).fail(e);
            return;
        }
        if !self.open {
            self.pending
                .push(PendingOpen::Receiver(address, options, sink, watch, reply));
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
                        credit_out: window,
                        attached: false,
                        opened: reply,
                        sink,
                        error: None,
                        watch,
                    },
                );
            }
            Err(e) => {
                watch.end(e.clone());
                if let Some(reply) = reply {
                    let _ = reply.send(Err(e));
                }
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
            if reply.is_closed() {
                // Its caller gave up (a send timeout, or the future dropped): it must not go out later.
                continue;
            }
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

    /// Grants a receiver `n` more messages: now if its link is attached, else once it is (after a
    /// reconnect), through `credit_out`.
    pub(crate) fn add_credit(&mut self, c: &mut Connection<'_>, id: ReceiverId, n: u32) {
        let Some(link) = self.receivers.get_mut(&id) else {
            return;
        };
        link.credit_out = link.credit_out.saturating_add(n);
        if link.attached {
            if let Some(mut r) = c.receiver(id) {
                let _ = r.add_credit(n);
            }
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
        if let Some(link) = self.receivers.remove(&r.id()) {
            self.receiver_ended(link);
        }
        if self.single_link {
            r.connection().close();
        }
    }

    /// A receiver left the map because the peer ended it (or its session): it fails with the peer's error.
    fn receiver_ended(&mut self, mut link: ReceiverLink) {
        let error = link.error.take().unwrap_or(Error::LinkClosed);
        let error = refusal_if_opening(error, link.opened.is_some());
        link.fail(&error);
        if matches!(link.sink, Sink::Replies) {
            // The reply queue is gone: replies to requests already sent can no longer come. The next
            // request opens another queue.
            self.requests.opening = false;
            self.requests.address = None;
            self.fail_sent_requests(&error);
            if !self.requests.queued.is_empty() {
                self.reopen_reply_queue_later();
            }
        }
    }

    /// Opens the reply queue again from a work item (we are inside a link callback here).
    fn reopen_reply_queue_later(&mut self) {
        let _ = self.wq.add(|h, c| h.ensure_reply_queue(c));
    }

    /// Fails every request already sent (its reply could only come to a queue now gone).
    fn fail_sent_requests(&mut self, error: &Error) {
        let sent: Vec<MessageId> = (self.requests.pending.iter())
            .filter(|(_, (_, sent))| *sent)
            .map(|(key, _)| key.clone())
            .collect();
        for key in sent {
            self.request_failed(&key, error.clone());
        }
    }

    /// Sends `message` to `address` as a request whose reply correlates to `key`, and answers `reply`
    /// with that reply. Fails at once if a request with the same message-id is still awaited.
    pub(crate) fn request(
        &mut self,
        c: &mut Connection<'_>,
        address: String,
        message: Message,
        key: MessageId,
        reply: Reply<Message>,
    ) {
        if let Some(e) = &self.error {
            let _ = reply.send(Err(e.clone()));
            return;
        }
        // Requests whose callers went away (a dropped future) leave no entry behind.
        self.requests
            .pending
            .retain(|_, (reply, _)| !reply.is_closed());
        if self.requests.pending.contains_key(&key) {
            let _ = reply.send(Err(request_refused_error(&key)));
            return;
        }
        self.requests.pending.insert(key.clone(), (reply, false));
        self.requests.queued.push((address, message, key));
        self.ensure_reply_queue(c);
        self.send_requests(c);
    }

    /// A request given up by its caller (its timeout): nothing about it stays.
    pub(crate) fn forget_request(&mut self, key: &MessageId) {
        self.requests.pending.remove(key);
        self.requests.queued.retain(|(_, _, k)| k != key);
    }

    /// Requests awaiting their reply.
    pub(crate) fn pending_requests(&self) -> usize {
        self.requests.pending.len()
    }

    /// Opens the reply queue, a receiver with a dynamic source, unless it is open or opening.
    fn ensure_reply_queue(&mut self, c: &mut Connection<'_>) {
        if self.requests.opening || self.error.is_some() {
            return;
        }
        self.requests.opening = true;
        let options = ReceiverOptions {
            dynamic: true,
            credit_window: Some(REPLY_WINDOW),
            ..ReceiverOptions::default()
        };
        let watch = LinkWatch::new(None);
        self.open_receiver(c, String::new(), options, Sink::Replies, watch, None);
    }

    /// Sends the queued requests, once the reply queue's address is known and the connection is open.
    fn send_requests(&mut self, c: &mut Connection<'_>) {
        let Some(reply_to) = self.requests.address.clone() else {
            return;
        };
        if !self.open {
            return;
        }
        for (address, mut message, key) in std::mem::take(&mut self.requests.queued) {
            let Some((_, sent)) = self.requests.pending.get_mut(&key) else {
                continue;
            };
            *sent = true;
            message.properties_mut().reply_to = Some(reply_to.clone());
            let id = match self.requests.senders.get(&address) {
                Some(id) if self.senders.contains_key(id) => *id,
                _ => match self.attach_sender(c, &address, SenderOptions::default(), None) {
                    Ok(id) => {
                        self.requests.senders.insert(address, id);
                        id
                    }
                    Err(e) => {
                        self.request_failed(&key, e);
                        continue;
                    }
                },
            };
            // The outcome is watched apart: a request the peer does not accept fails at once.
            let (tx, rx) = oneshot::channel();
            self.send(c, id, message, tx);
            let wq = self.wq.clone();
            actix_rt::spawn(async move {
                let error = match rx.await {
                    Ok(Ok(Outcome::Accepted | Outcome::Settled)) => return,
                    Ok(Ok(outcome)) => not_accepted_error(outcome),
                    Ok(Err(e)) => e,
                    Err(_) => Error::ConnectionClosed,
                };
                let _ = wq.add(move |h, _| h.request_failed(&key, error));
            });
        }
    }

    fn request_failed(&mut self, key: &MessageId, error: Error) {
        if let Some((reply, _)) = self.requests.pending.remove(key) {
            let _ = reply.send(Err(error));
        }
    }

    /// A message on the reply queue: the reply to the request its correlation-id names, if still awaited.
    fn reply_arrived(&mut self, d: &mut Delivery<'_>, message: Message) {
        d.accept();
        let id = d.receiver().id();
        if let Some(link) = self.receivers.get_mut(&id) {
            link.credit_out = link.credit_out.saturating_add(1);
        }
        let _ = d.receiver().add_credit(1);
        let key = message.properties().and_then(|p| p.correlation_id.clone());
        match key.and_then(|k| self.requests.pending.remove(&k)) {
            Some((reply, _)) => {
                let _ = reply.send(Ok(message));
            }
            None => log::debug!("a reply that no request awaits (late, or not ours) was dropped"),
        }
    }
}

/// The reply queue's credit window: replies are taken as they arrive, so this bounds only a burst.
const REPLY_WINDOW: u32 = 100;

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
            if p.abandoned() {
                continue;
            }
            match p {
                PendingOpen::Sender(address, options, reply) => {
                    self.open_sender(conn, address, options, reply)
                }
                PendingOpen::Receiver(address, options, sink, watch, reply) => {
                    self.open_receiver(conn, address, options, sink, watch, reply)
                }
            }
        }
        // Requests made while the connection was down go out once their reply queue is attached again.
        self.send_requests(conn);
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
        // For a dynamic source, the address the peer made (again, after a reconnect: a new one).
        let address = r.address();
        *link.watch.address.lock().unwrap_or_else(|e| e.into_inner()) = address.clone();
        if let Some(reply) = link.opened.take() {
            if reply.send(Ok(id)).is_err() {
                self.close_receiver(&mut r.connection(), id);
                return;
            }
        }
        // The first window, or after a reconnect what the consumer had granted and not yet used.
        link.attached = true;
        if link.credit_out > 0 {
            let _ = r.add_credit(link.credit_out);
        }
        if matches!(link.sink, Sink::Replies) {
            self.requests.address = address;
            self.send_requests(&mut r.connection());
        }
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
        link.credit_out = link.credit_out.saturating_sub(1);
        if matches!(link.sink, Sink::Replies) {
            self.reply_arrived(d, message);
            return;
        }
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
            Sink::Replies => {}
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
        let receivers: Vec<_> = self.receivers.drain().map(|(_, l)| l).collect();
        for link in receivers {
            self.receiver_ended(link);
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
        // Another transport may follow: what was in flight has lost its outcome (it is not resent: the
        // caller decides whether a possible duplicate is acceptable), what waits for credit goes on the
        // links attached again. Receivers keep their sinks; their unused credit is granted again. The
        // reply queue is a dynamic node, gone with the transport: requests sent to it fail now, queued
        // ones go out once it is attached again. If no transport follows, the connection finishes and
        // the handler is dropped, which fails whatever still waits.
        for link in self.senders.values_mut() {
            for (_, reply) in link.in_flight.drain() {
                let _ = reply.send(Err(transport_lost_error()));
            }
        }
        for link in self.receivers.values_mut() {
            link.attached = false;
        }
        self.requests.address = None;
        self.fail_sent_requests(&transport_lost_error());
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
