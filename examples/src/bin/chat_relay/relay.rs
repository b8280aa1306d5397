//! The relay's one AMQP connection: a `MessagingHandler` with a sender and a receiver per room on
//! `chat/<room>`, both declaring the `topic` capability so every relay's receiver gets every event.
//!
//! It runs on a container worker thread; nothing outside reaches it except through its `WorkQueue`
//! ([`RoomCommand`]s from the hub, and each browser session's messages). What it receives goes to the hub as
//! actix messages.

use std::collections::{HashMap, HashSet, VecDeque};

use actix::Addr;
use nucleon::broker::TOPIC;
use nucleon::protocol::codec::Symbol;
use nucleon::protocol::frame::{Error as AmqpError, Source, Target};
use nucleon::{
    Body, Connection, Delivery, Message, MessagingHandler, Receiver, ReceiverId, ReceiverOptions,
    Sender, SenderId, SenderOptions, Value,
};

use tokio::sync::oneshot;

use crate::hub::{FromBroker, Hub, Linked, StatusChanged};
use crate::wire::{LinkState, Wire};

/// The most events waiting for credit (or for the connection) in one room; beyond, the oldest are dropped.
const MAX_PENDING: usize = 1000;

/// The AMQP address of a room.
pub fn address_of(room: &str) -> String {
    format!("chat/{room}")
}

/// A chat event as an AMQP message: the JSON in an `amqp-value` string body.
pub fn encode(event: &Wire) -> Message {
    match serde_json::to_string(event) {
        Ok(json) => Message::with_body(json),
        Err(e) => Message::with_body(format!(r#"{{"kind":"invalid","error":"{e}"}}"#)),
    }
}

/// The chat event in an AMQP message, checked.
fn decode(message: &Message) -> Result<Wire, String> {
    let json = match message.body() {
        Body::Value(Value::String(s)) => s.as_str(),
        _ => return Err("the body is not a string".to_owned()),
    };
    let event: Wire = serde_json::from_str(json).map_err(|e| e.to_string())?;
    event.check()?;
    Ok(event)
}

/// One room's links and the events waiting to go out on them.
#[derive(Default)]
struct Room {
    sender: Option<SenderId>,
    receiver: Option<ReceiverId>,
    /// The receiver is attached (on the current transport): events sent now come back to us too.
    receiving: bool,
    /// Events waiting for the receiver to attach and the sender to get credit.
    pending: VecDeque<Message>,
    /// The last local member left: close the links once `pending` is out.
    closing: bool,
}

/// The relay connection's handler.
pub struct Relay {
    hub: Addr<Hub>,
    rooms: HashMap<String, Room>,
    /// The connection is open (links may be opened now; after a reconnect the runtime re-attaches the rest).
    open: bool,
    /// Senders we closed whose close the broker has not answered yet.
    closing: HashSet<SenderId>,
    /// Fired once every room's events are out and the broker has answered the close of every sender.
    drained: Option<oneshot::Sender<()>>,
}

impl Relay {
    /// A relay that reports to `hub`.
    pub fn new(hub: Addr<Hub>) -> Relay {
        Relay {
            hub,
            rooms: HashMap::new(),
            open: false,
            closing: HashSet::new(),
            drained: None,
        }
    }

    /// The relay is stopping: send what every room has pending (the hub's last leaves), close every room,
    /// and fire `done` once the broker has answered the close of every sender. The broker handles a link's
    /// frames in order, so by then it has taken every event sent before. Fires at once when the connection
    /// is down (nothing can go out).
    pub fn drain(&mut self, connection: &mut Connection<'_>, done: oneshot::Sender<()>) {
        self.drained = Some(done);
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            if let Some(entry) = self.rooms.get_mut(&room) {
                entry.closing = true;
            }
            self.flush(connection, &room);
        }
        self.check_drained();
    }

    fn check_drained(&mut self) {
        if self.drained.is_some()
            && self.closing.is_empty()
            && (self.rooms.is_empty() || !self.open)
        {
            if let Some(done) = self.drained.take() {
                let _ = done.send(());
            }
        }
    }

    /// A local member joined `room`: make sure its links exist.
    pub fn open_room(&mut self, connection: &mut Connection<'_>, room: &str) {
        let entry = self.rooms.entry(room.to_owned()).or_default();
        entry.closing = false;
        if self.open && entry.sender.is_none() {
            open_links(connection, room, entry);
        }
    }

    /// The last local member left `room`: close its links once what is pending has gone out.
    pub fn close_room(&mut self, connection: &mut Connection<'_>, room: &str) {
        if let Some(entry) = self.rooms.get_mut(room) {
            entry.closing = true;
        }
        self.flush(connection, room);
    }

    /// Sends `event` to `room` (once its links are ready).
    pub fn publish(&mut self, connection: &mut Connection<'_>, room: &str, event: &Wire) {
        let Some(entry) = self.rooms.get_mut(room) else {
            log::warn!("dropped an event for {room}: the room is not open");
            return;
        };
        if matches!(event, Wire::Presence { .. }) && !entry.receiving {
            // Stale by the time the link is back, whose attach sends a fresh one.
            return;
        }
        if entry.pending.len() >= MAX_PENDING {
            entry.pending.pop_front();
            log::warn!("room {room}: more than {MAX_PENDING} events waiting, dropped the oldest");
        }
        entry.pending.push_back(encode(event));
        self.flush(connection, room);
    }

    /// Sends what is pending in `room` while there is credit; closes the links of a closing room once empty.
    fn flush(&mut self, connection: &mut Connection<'_>, room: &str) {
        let Some(entry) = self.rooms.get_mut(room) else {
            return;
        };
        if entry.receiving {
            if let Some(mut sender) = entry.sender.and_then(|id| connection.sender(id)) {
                while sender.credit() > 0 {
                    let Some(message) = entry.pending.pop_front() else {
                        break;
                    };
                    if let Err(e) = sender.send(&message) {
                        log::warn!("room {room}: cannot send: {e}");
                    }
                }
            }
        }
        if entry.closing && (entry.pending.is_empty() || !self.open) {
            let (sender, receiver) = (entry.sender, entry.receiver);
            self.rooms.remove(room);
            if let Some(mut s) = sender.and_then(|id| connection.sender(id)) {
                s.close();
                if self.open {
                    self.closing.insert(s.id());
                }
            }
            if let Some(mut r) = receiver.and_then(|id| connection.receiver(id)) {
                r.close();
            }
        }
    }

    fn room_of_sender(&self, id: SenderId) -> Option<String> {
        self.rooms
            .iter()
            .find(|(_, r)| r.sender == Some(id))
            .map(|(name, _)| name.clone())
    }

    fn room_of_receiver(&self, id: ReceiverId) -> Option<String> {
        self.rooms
            .iter()
            .find(|(_, r)| r.receiver == Some(id))
            .map(|(name, _)| name.clone())
    }
}

/// Opens a room's sender and receiver on `chat/<room>`, both declaring the topic capability.
fn open_links(connection: &mut Connection<'_>, room: &str, entry: &mut Room) {
    let address = address_of(room);
    let topic = || Some(vec![Symbol::from_static(TOPIC)]);
    let sender = connection
        .open_sender(
            &address,
            SenderOptions::new().target(Target {
                address: Some(address.clone()),
                capabilities: topic(),
                ..Target::default()
            }),
        )
        .map(|s| s.id());
    let receiver = connection
        .open_receiver(
            &address,
            ReceiverOptions::new().source(Source {
                address: Some(address.clone()),
                capabilities: topic(),
                ..Source::default()
            }),
        )
        .map(|r| r.id());
    match (sender, receiver) {
        (Ok(s), Ok(r)) => {
            entry.sender = Some(s);
            entry.receiver = Some(r);
        }
        (Err(e), _) | (_, Err(e)) => log::error!("cannot open the links of {address}: {e}"),
    }
}

impl MessagingHandler for Relay {
    fn on_connection_open(&mut self, connection: &mut Connection<'_>) {
        self.open = true;
        // Rooms whose links exist are attached again by the runtime after a reconnect; open the others.
        for (room, entry) in &mut self.rooms {
            if entry.sender.is_none() {
                open_links(connection, room, entry);
            }
        }
        self.hub.do_send(StatusChanged(LinkState::Connected));
    }

    fn on_receiver_open(&mut self, receiver: &mut Receiver<'_>) {
        let Some(room) = self.room_of_receiver(receiver.id()) else {
            return;
        };
        if let Some(entry) = self.rooms.get_mut(&room) {
            entry.receiving = true;
        }
        self.hub.do_send(Linked(room.clone()));
        self.flush(&mut receiver.connection(), &room);
        self.check_drained();
    }

    fn on_sendable(&mut self, sender: &mut Sender<'_>) {
        if let Some(room) = self.room_of_sender(sender.id()) {
            self.flush(&mut sender.connection(), &room);
            self.check_drained();
        }
    }

    fn on_sender_close(&mut self, sender: &mut Sender<'_>) {
        self.closing.remove(&sender.id());
        self.check_drained();
    }

    fn on_message(&mut self, delivery: &mut Delivery<'_>, message: Message) {
        let Some(room) = self.room_of_receiver(delivery.receiver().id()) else {
            return;
        };
        match decode(&message) {
            Ok(event) => self.hub.do_send(FromBroker { room, event }),
            Err(e) => log::warn!("room {room}: ignored a malformed event: {e}"),
        }
    }

    fn on_sender_error(&mut self, sender: &mut Sender<'_>, error: &AmqpError) {
        log::error!("the sender to {:?} was closed: {error}", sender.address());
    }

    fn on_receiver_error(&mut self, receiver: &mut Receiver<'_>, error: &AmqpError) {
        log::error!(
            "the receiver from {:?} was closed: {error}",
            receiver.address()
        );
    }

    fn on_transport_error(&mut self, _connection: &mut Connection<'_>, error: &AmqpError) {
        log::warn!("the broker connection failed: {error}");
    }

    fn on_transport_close(&mut self, _connection: &mut Connection<'_>) {
        self.open = false;
        self.closing.clear();
        self.check_drained();
        for entry in self.rooms.values_mut() {
            entry.receiving = false;
        }
        self.hub.do_send(StatusChanged(LinkState::Reconnecting));
    }
}
