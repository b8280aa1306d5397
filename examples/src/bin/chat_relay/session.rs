//! One browser's WebSocket: a task on an actix-web worker that reads the browser's frames and writes the
//! frames the hub queues for it.
//!
//! A chat message goes straight from here to the AMQP connection through its `WorkQueue`; joining goes
//! through the hub, which owns the rooms. Frames for the browser wait in a bounded channel: the hub drops a
//! session that lets it fill up, and fires its `kick` so this task closes the socket with the reason.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::Addr;
use actix_ws::{CloseCode, CloseReason, Message as WsMessage, MessageStream, Session};
use nucleon::WorkQueue;
use tokio::sync::{mpsc, oneshot};

use crate::hub::{now_ms, Connect, Disconnect, Hub, Join};
use crate::relay::Relay;
use crate::wire::{check_name, check_room, check_text, FromBrowser, ToBrowser, Wire};

/// The frames a session may have waiting before the hub disconnects it.
pub const OUTBOX: usize = 256;
/// The largest WebSocket frame a browser may send.
pub const MAX_FRAME: usize = 16 * 1024;

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
}

/// Where a session stands.
enum Joined {
    No,
    As { room: String, name: String },
}

/// Runs one WebSocket session until either side closes it.
pub async fn run(cx: Context, mut ws: Session, stream: MessageStream) {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let mut stream = stream.max_frame_size(MAX_FRAME);
    let (outbox, mut frames) = mpsc::channel::<String>(OUTBOX);
    let (kick, mut kicked) = oneshot::channel::<String>();
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

fn kick_reason(reason: Option<String>) -> CloseReason {
    CloseReason {
        code: CloseCode::Policy,
        description: reason,
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
            let checked = check_name(&name).and_then(|n| check_room(&room).map(|r| (n, r)));
            let (name, room) = match checked {
                Ok((n, r)) => (n.to_owned(), r.to_owned()),
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
