//! The hub: one actix actor on the System's arbiter that knows every local browser session, who is in each
//! room (here and on other relays), and the state of the broker connection.
//!
//! Sessions reach it with actix messages; it reaches them through a bounded channel each (a session that
//! cannot keep up is disconnected, so one slow browser never stalls a room). It reaches the AMQP connection
//! only through the connection's `WorkQueue`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::{Actor, AsyncContext, Context, Handler, Message, MessageResult};
use nucleon::WorkQueue;
use tokio::sync::{mpsc, oneshot};

use crate::relay::Relay;
use crate::wire::{name_key, LinkState, ToBrowser, Wire};

/// A relay not heard from in this many heartbeats is gone, with its members.
pub const MISSED_HEARTBEATS: u32 = 3;

/// Frames for one session, as JSON text.
pub type Outbox = mpsc::Sender<String>;

/// A session opened (not in a room yet). Answers the current connection state.
#[derive(Message)]
#[rtype(result = "LinkState")]
pub struct Connect {
    /// The session id.
    pub id: u64,
    /// Where its frames go.
    pub outbox: Outbox,
    /// Fired, with the reason, to make the session close.
    pub kick: oneshot::Sender<Kick>,
}

/// A session asks to join `room` as `name` (both checked already). Answers an error to show, or `Ok`.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
pub struct Join {
    /// The session id.
    pub id: u64,
    /// The room.
    pub room: String,
    /// The name.
    pub name: String,
}

/// The relay is stopping: tell every room that its local members left, close every session, and refuse
/// new ones. Answers once the leaves are queued on the AMQP connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// A session closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect(pub u64);

/// An event received from `chat/<room>`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct FromBroker {
    /// The room.
    pub room: String,
    /// The event.
    pub event: Wire,
}

/// The receiver of a room attached (first time or after a reconnect): ask the other relays who is there,
/// and send the room's member list to its sessions again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Linked(pub String);

/// The broker connection changed state.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StatusChanged(pub LinkState);

/// Why the hub closes a session.
#[derive(Debug)]
pub enum Kick {
    /// Its outgoing buffer is full: the browser does not read.
    TooSlow,
    /// The relay is stopping.
    Stopping,
}

/// A local session.
struct Session {
    outbox: Outbox,
    kick: Option<oneshot::Sender<Kick>>,
    /// `(room, name)` once joined.
    joined: Option<(String, String)>,
}

/// Another relay's members in a room, and when it last spoke.
struct Remote {
    members: Vec<String>,
    seen: Instant,
}

/// A room with at least one local member.
#[derive(Default)]
struct Room {
    /// Local members by session id.
    local: BTreeMap<u64, String>,
    /// Other relays' members by relay id.
    remote: HashMap<String, Remote>,
}

impl Room {
    fn local_names(&self) -> Vec<String> {
        self.local.values().cloned().collect()
    }

    /// Everybody, sorted, without duplicates.
    fn everybody(&self) -> Vec<String> {
        let all: BTreeSet<&String> = self
            .local
            .values()
            .chain(self.remote.values().flat_map(|r| r.members.iter()))
            .collect();
        all.into_iter().cloned().collect()
    }

    /// True if somebody here has `name`, compared as [`name_key`]s (case ignored, after NFKC).
    fn has(&self, name: &str) -> bool {
        let key = name_key(name);
        let same = |n: &String| name_key(n) == key;
        self.local.values().any(same) || self.remote.values().any(|r| r.members.iter().any(same))
    }
}

/// The hub actor.
pub struct Hub {
    relay_id: String,
    heartbeat: Duration,
    work: WorkQueue<Relay>,
    state: LinkState,
    sessions: HashMap<u64, Session>,
    rooms: HashMap<String, Room>,
    /// Sessions to remove: their buffer was full or closed.
    dropped: Vec<u64>,
    /// [`Shutdown`] came: no session may join any more.
    stopping: bool,
}

impl Hub {
    /// A hub for the relay `relay_id`, whose AMQP connection takes work through `work`, announcing its
    /// members every `heartbeat`.
    pub fn new(relay_id: String, work: WorkQueue<Relay>, heartbeat: Duration) -> Hub {
        Hub {
            relay_id,
            heartbeat,
            work,
            state: LinkState::Connecting,
            sessions: HashMap::new(),
            rooms: HashMap::new(),
            dropped: Vec::new(),
            stopping: false,
        }
    }

    /// Queues `event` for `room` on the AMQP connection.
    fn publish(&self, room: &str, event: Wire) {
        let room = room.to_owned();
        if let Err(e) = self
            .work
            .add(move |relay, connection| relay.publish(connection, &room, &event))
        {
            log::error!("cannot reach the broker connection: {e}");
        }
    }

    fn presence(&self, room: &str, ask: bool) {
        if let Some(r) = self.rooms.get(room) {
            self.publish(
                room,
                Wire::Presence {
                    relay: self.relay_id.clone(),
                    members: r.local_names(),
                    ask,
                },
            );
        }
    }

    /// Queues `frame` for session `id`. A session whose buffer is full is kicked and marked to be removed
    /// by [`Hub::reap`], once the frame in hand has gone to everyone it was for.
    fn send_to(&mut self, id: u64, frame: String) {
        let Some(session) = self.sessions.get_mut(&id) else {
            return;
        };
        match session.outbox.try_send(frame) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                log::warn!("session {id}: disconnected, too slow: its outgoing buffer is full");
                if let Some(kick) = session.kick.take() {
                    let _ = kick.send(Kick::TooSlow);
                }
                self.dropped.push(id);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => self.dropped.push(id),
        }
    }

    /// Removes the sessions [`Hub::send_to`] could not reach (which may drop more).
    fn reap(&mut self) {
        while !self.dropped.is_empty() {
            for id in std::mem::take(&mut self.dropped) {
                self.remove(id);
            }
        }
    }

    /// Sends `frame` to every local member of `room`.
    fn broadcast(&mut self, room: &str, frame: &ToBrowser<'_>) {
        let Some(r) = self.rooms.get(room) else {
            return;
        };
        let ids: Vec<u64> = r.local.keys().copied().collect();
        let text = frame.to_text();
        for id in ids {
            self.send_to(id, text.clone());
        }
        self.reap();
    }

    fn broadcast_members(&mut self, room: &str) {
        if let Some(members) = self.rooms.get(room).map(Room::everybody) {
            self.broadcast(room, &ToBrowser::Members { members: &members });
        }
    }

    /// Forgets session `id`; if it was in a room, tells the room and the other relays.
    fn remove(&mut self, id: u64) {
        let Some(session) = self.sessions.remove(&id) else {
            return;
        };
        let Some((room, name)) = session.joined else {
            return;
        };
        let Some(r) = self.rooms.get_mut(&room) else {
            return;
        };
        r.local.remove(&id);
        let members = r.local_names();
        let empty = members.is_empty();
        self.publish(
            &room,
            Wire::Leave {
                relay: self.relay_id.clone(),
                name: name.clone(),
                members,
            },
        );
        if empty {
            self.rooms.remove(&room);
            let closing = room.clone();
            if let Err(e) = self
                .work
                .add(move |relay, connection| relay.close_room(connection, &closing))
            {
                log::error!("cannot reach the broker connection: {e}");
            }
        } else {
            self.broadcast(
                &room,
                &ToBrowser::System {
                    text: &format!("{name} left"),
                },
            );
            self.broadcast_members(&room);
        }
    }

    /// Records another relay's members in `room`; tells the room if that changes who is there.
    fn update_remote(&mut self, room: &str, relay: &str, members: Vec<String>) {
        let Some(r) = self.rooms.get_mut(room) else {
            return;
        };
        let before = r.everybody();
        if members.is_empty() {
            r.remote.remove(relay);
        } else {
            r.remote.insert(
                relay.to_owned(),
                Remote {
                    members,
                    seen: Instant::now(),
                },
            );
        }
        if r.everybody() != before {
            self.broadcast_members(room);
        }
    }

    /// Heartbeat: announce our members in every room, and drop relays that went silent.
    fn tick(&mut self) {
        let expiry = self.heartbeat * MISSED_HEARTBEATS;
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            self.presence(&room, false);
            let Some(r) = self.rooms.get_mut(&room) else {
                continue;
            };
            let silent: Vec<String> = r
                .remote
                .iter()
                .filter(|(_, remote)| remote.seen.elapsed() > expiry)
                .map(|(id, _)| id.clone())
                .collect();
            for relay in silent {
                log::info!("room {room}: relay {relay} went silent, dropping its members");
                self.update_remote(&room, &relay, Vec::new());
            }
        }
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.heartbeat, |hub, _| hub.tick());
    }
}

impl Handler<Connect> for Hub {
    type Result = MessageResult<Connect>;

    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) -> MessageResult<Connect> {
        if self.stopping {
            let _ = msg.kick.send(Kick::Stopping);
            return MessageResult(self.state);
        }
        self.sessions.insert(
            msg.id,
            Session {
                outbox: msg.outbox,
                kick: Some(msg.kick),
                joined: None,
            },
        );
        MessageResult(self.state)
    }
}

impl Handler<Join> for Hub {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: Join, _: &mut Context<Self>) -> Result<(), String> {
        let Join { id, room, name } = msg;
        if self.stopping {
            return Err("the relay is stopping".to_owned());
        }
        let Some(session) = self.sessions.get_mut(&id) else {
            return Err("the session is closed".to_owned());
        };
        if session.joined.is_some() {
            return Err("this connection has joined a room already".to_owned());
        }
        if self.rooms.get(&room).is_some_and(|r| r.has(&name)) {
            return Err(format!("the name {name:?} is taken in {room}"));
        }
        session.joined = Some((room.clone(), name.clone()));
        let first = !self.rooms.contains_key(&room);
        let r = self.rooms.entry(room.clone()).or_default();
        r.local.insert(id, name.clone());
        let members = r.local_names();
        if first {
            let opening = room.clone();
            if let Err(e) = self
                .work
                .add(move |relay, connection| relay.open_room(connection, &opening))
            {
                log::error!("cannot reach the broker connection: {e}");
            }
        }
        self.publish(
            &room,
            Wire::Join {
                relay: self.relay_id.clone(),
                name: name.clone(),
                members,
            },
        );
        self.send_to(
            id,
            ToBrowser::Joined {
                room: &room,
                name: &name,
            }
            .to_text(),
        );
        self.broadcast(
            &room,
            &ToBrowser::System {
                text: &format!("{name} joined"),
            },
        );
        self.broadcast_members(&room);
        Ok(())
    }
}

impl Handler<Shutdown> for Hub {
    type Result = ();

    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) {
        self.stopping = true;
        // One leave per local member, as if each had closed its page, so that every other relay drops
        // them at once (and shows who left) instead of waiting for this relay's heartbeats to stop.
        for (room, r) in std::mem::take(&mut self.rooms) {
            let mut members: Vec<String> = r.local_names();
            while let Some(name) = members.pop() {
                self.publish(
                    &room,
                    Wire::Leave {
                        relay: self.relay_id.clone(),
                        name,
                        members: members.clone(),
                    },
                );
            }
        }
        for (id, mut session) in self.sessions.drain() {
            if let Some(kick) = session.kick.take() {
                log::debug!("session {id}: closed, the relay is stopping");
                let _ = kick.send(Kick::Stopping);
            }
        }
    }
}

impl Handler<Disconnect> for Hub {
    type Result = ();

    fn handle(&mut self, Disconnect(id): Disconnect, _: &mut Context<Self>) {
        self.remove(id);
    }
}

impl Handler<FromBroker> for Hub {
    type Result = ();

    fn handle(&mut self, FromBroker { room, event }: FromBroker, _: &mut Context<Self>) {
        if !self.rooms.contains_key(&room) {
            return;
        }
        let own = event.relay() == self.relay_id;
        match event {
            Wire::Message {
                id, name, text, ts, ..
            } => self.broadcast(
                &room,
                &ToBrowser::Message {
                    id: &id,
                    name: &name,
                    text: &text,
                    ts,
                },
            ),
            _ if own => {}
            Wire::Join {
                relay,
                name,
                members,
            } => {
                self.broadcast(
                    &room,
                    &ToBrowser::System {
                        text: &format!("{name} joined"),
                    },
                );
                self.update_remote(&room, &relay, members);
                self.presence(&room, false);
            }
            Wire::Leave {
                relay,
                name,
                members,
            } => {
                self.broadcast(
                    &room,
                    &ToBrowser::System {
                        text: &format!("{name} left"),
                    },
                );
                self.update_remote(&room, &relay, members);
            }
            Wire::Presence {
                relay,
                members,
                ask,
            } => {
                self.update_remote(&room, &relay, members);
                if ask {
                    self.presence(&room, false);
                }
            }
        }
    }
}

impl Handler<Linked> for Hub {
    type Result = ();

    fn handle(&mut self, Linked(room): Linked, _: &mut Context<Self>) {
        self.presence(&room, true);
        // After a reconnect the browsers see the room is live again.
        self.broadcast_members(&room);
    }
}

impl Handler<StatusChanged> for Hub {
    type Result = ();

    fn handle(&mut self, StatusChanged(state): StatusChanged, _: &mut Context<Self>) {
        self.state = state;
        let text = ToBrowser::Status { state }.to_text();
        let ids: Vec<u64> = self.sessions.keys().copied().collect();
        for id in ids {
            self.send_to(id, text.clone());
        }
        self.reap();
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
