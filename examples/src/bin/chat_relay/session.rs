//! One browser's WebSocket: a task on an actix-web worker that reads the browser's frames and writes the
//! frames the hub queues for it.
//!
//! A chat message goes straight from here to the AMQP connection through its `WorkQueue`; joining goes
//! through the hub, which owns the rooms. Frames for the browser wait in a bounded channel: the hub drops a
//! session that lets it fill up, and fires its `kick` so this task closes the socket with the reason.
//!
//! What one browser may cost is bounded: frames of at most [`MAX_FRAME`] bytes, at most [`Limits::rate`]
//! frames a second with bursts of [`Limits::burst`] (a token bucket), and, past that, a second bucket of
//! [`REFUSALS`] refusals (one back a second) each answered with an `error` frame; once that one is empty too
//! the session is closed (close code 1008, policy violation). The number of sessions is capped by a [`Slots`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Addr;
use actix_ws::{CloseCode, CloseReason, Message as WsMessage, MessageStream, Session};
use nucleon::WorkQueue;
use tokio::sync::{mpsc, oneshot};

use crate::hub::{now_ms, Connect, Disconnect, Hub, Join, Kick};
use crate::relay::Relay;
use crate::wire::{check_room, check_text, normalize_name, FromBrowser, ToBrowser, Wire};

/// The frames a session may have waiting before the hub disconnects it.
pub const OUTBOX: usize = 256;
/// The largest WebSocket frame a browser may send.
pub const MAX_FRAME: usize = 16 * 1024;

/// Over-limit frames a session may send (each refused with an `error` frame) before it is disconnected;
/// one more is allowed each second.
pub const REFUSALS: u32 = 20;

/// How long the close frame may wait for a browser that does not read.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What a session needs from the relay.
#[derive(Clone)]
pub struct Context {
    /// This relay's id, stamped on the events it sends.
    pub relay_id: String,
    /// The hub.
    pub hub: Addr<Hub>,
    /// The AMQP connection's work queue.
    pub work: WorkQueue<Relay>,
    /// How many frames a session may send.
    pub limits: Limits,
}

/// How many frames a session may send: `rate` a second on average, `burst` at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Frames a second, on average.
    pub rate: u32,
    /// Frames at once, after a quiet while.
    pub burst: u32,
}

/// A token bucket: `capacity` tokens at most, `per_second` come back each second.
#[derive(Debug)]
pub struct Bucket {
    tokens: f64,
    capacity: f64,
    per_second: f64,
    last: Instant,
}

impl Bucket {
    /// A full bucket.
    pub fn new(capacity: u32, per_second: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(capacity),
            capacity: f64::from(capacity),
            per_second: f64::from(per_second),
            last: now,
        }
    }

    /// Takes a token if there is one.
    pub fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The sessions a relay may hold at once: each holds a [`Slot`] from [`Slots::take`] until it ends.
#[derive(Clone, Debug)]
pub struct Slots {
    max: usize,
    used: Arc<AtomicUsize>,
}

/// One session's place among the [`Slots`], given back on drop.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Slots {
    /// At most `max` sessions.
    pub fn new(max: usize) -> Slots {
        Slots {
            max,
            used: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A slot, or `None` when all `max` are taken.
    pub fn take(&self) -> Option<Slot> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(self.used.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where a session stands.
enum Joined {
    No,
    As { room: String, name: String },
}

/// Runs one WebSocket session until either side closes it; `slot` is given back when it ends.
pub async fn run(cx: Context, mut ws: Session, stream: MessageStream, slot: Slot) {
    let _slot = slot;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut frames_left = Bucket::new(cx.limits.burst, cx.limits.rate, Instant::now());
    let mut refusals_left = Bucket::new(REFUSALS, 1, Instant::now());
    let mut stream = stream.max_frame_size(MAX_FRAME);
    let (outbox, mut frames) = mpsc::channel::<String>(OUTBOX);
    let (kick, mut kicked) = oneshot::channel::<Kick>();
    let state = match cx.hub.send(Connect { id, outbox, kick }).await {
        Ok(state) => state,
        Err(e) => {
            log::error!("session {id}: the hub is gone: {e}");
            let _ = ws.close(None).await;
            return;
        }
    };
    let mut joined = Joined::No;
    let mut close = None;
    if ws.text(ToBrowser::Status { state }.to_text()).await.is_ok() {
        loop {
            tokio::select! {
                biased;
                reason = &mut kicked => {
                    close = Some(kick_reason(reason.ok()));
                    break;
                }
                frame = frames.recv() => {
                    let Some(frame) = frame else { break };
                    // A browser that reads nothing blocks this write; the hub's kick still ends it.
                    tokio::select! {
                        biased;
                        reason = &mut kicked => {
                            close = Some(kick_reason(reason.ok()));
                            break;
                        }
                        sent = ws.text(frame) => if sent.is_err() {
                            break;
                        },
                    }
                }
                incoming = stream.recv() => {
                    let counted = matches!(incoming, Some(Ok(ref m)) if !matches!(m, WsMessage::Close(_)));
                    if counted && !frames_left.take(Instant::now()) {
                        if !refusals_left.take(Instant::now()) {
                            log::warn!("session {id}: disconnected, it kept sending over the rate limit");
                            close = Some(CloseReason {
                                code: CloseCode::Policy,
                                description: Some("too many messages".to_owned()),
                            });
                            break;
                        }
                        let error = format!(
                            "too many messages: at most {} a second (bursts of {}); this one was dropped",
                            cx.limits.rate, cx.limits.burst
                        );
                        if ws.text(ToBrowser::Error { error: &error }.to_text()).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    let reply = match incoming {
                        Some(Ok(WsMessage::Text(text))) => handle(&cx, id, &mut joined, &text).await,
                        Some(Ok(WsMessage::Ping(bytes))) => {
                            if ws.pong(&bytes).await.is_err() {
                                break;
                            }
                            None
                        }
                        Some(Ok(WsMessage::Close(_))) | None => break,
                        Some(Ok(WsMessage::Binary(_))) => Some("binary frames are not supported".to_owned()),
                        Some(Ok(_)) => None,
                        Some(Err(e)) => {
                            log::info!("session {id}: protocol error: {e}");
                            close = Some(CloseCode::Protocol.into());
                            break;
                        }
                    };
                    if let Some(error) = reply {
                        if ws.text(ToBrowser::Error { error: &error }.to_text()).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }
    }
    cx.hub.do_send(Disconnect(id));
    // The close frame queues behind what the browser has not read: give up on it after a while.
    let _ = actix_rt::time::timeout(CLOSE_WAIT, ws.close(close)).await;
}

fn kick_reason(kick: Option<Kick>) -> CloseReason {
    match kick {
        Some(Kick::Stopping) => CloseReason {
            code: CloseCode::Away,
            description: Some("the relay is stopping".to_owned()),
        },
        None => CloseCode::Policy.into(),
        Some(Kick::TooSlow) => CloseReason {
            code: CloseCode::Policy,
            description: Some("too slow: its outgoing buffer is full".to_owned()),
        },
    }
}

/// Handles one text frame; returns the error to show the browser, if any.
async fn handle(cx: &Context, id: u64, joined: &mut Joined, text: &str) -> Option<String> {
    let command = match serde_json::from_str::<FromBrowser>(text) {
        Ok(c) => c,
        Err(e) => return Some(format!("malformed frame: {e}")),
    };
    match (command, &*joined) {
        (FromBrowser::Join { name, room }, Joined::No) => {
            let checked = normalize_name(&name).and_then(|n| check_room(&room).map(|r| (n, r)));
            let (name, room) = match checked {
                Ok((n, r)) => (n, r.to_owned()),
                Err(e) => return Some(e),
            };
            let join = Join {
                id,
                room: room.clone(),
                name: name.clone(),
            };
            match cx.hub.send(join).await {
                Ok(Ok(())) => {
                    *joined = Joined::As { room, name };
                    None
                }
                Ok(Err(e)) => Some(e),
                Err(e) => Some(format!("the hub is gone: {e}")),
            }
        }
        (FromBrowser::Join { .. }, Joined::As { .. }) => {
            Some("this connection has joined a room already".to_owned())
        }
        (FromBrowser::Send { .. }, Joined::No) => Some("join a room first".to_owned()),
        (FromBrowser::Send { text }, Joined::As { room, name }) => {
            if let Err(e) = check_text(&text) {
                return Some(e);
            }
            let event = Wire::Message {
                relay: cx.relay_id.clone(),
                id: uuid::Uuid::new_v4().to_string(),
                name: name.clone(),
                text,
                ts: now_ms(),
            };
            let room = room.clone();
            // The message reaches the AMQP connection through its work queue: this task never touches it.
            cx.work
                .add(move |relay, connection| relay.publish(connection, &room, &event))
                .err()
                .map(|e| format!("the broker connection is gone: {e}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut b = Bucket::new(3, 2, start);
        assert!((0..3).all(|_| b.take(start)));
        assert!(!b.take(start));
        assert!(!b.take(start + Duration::from_millis(400)));
        assert!(b.take(start + Duration::from_millis(500)));
        assert!(!b.take(start + Duration::from_millis(500)));
        // A long quiet while refills it only up to its capacity.
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
    }

    #[test]
    fn slots_are_capped_and_given_back() {
        let slots = Slots::new(2);
        let a = slots.take().expect("a first slot");
        let _b = slots.take().expect("a second slot");
        assert!(slots.take().is_none());
        drop(a);
        assert!(slots.take().is_some());
    }
}
