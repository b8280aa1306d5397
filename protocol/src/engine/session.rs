//! Sessions: begin/end, transfer-id accounting and windows, and the settlement bookkeeping they share
//! [AMQP 1.0 §2.5.5-§2.5.6, §2.7.2, §2.7.4, §2.7.6, §2.7.8].
//!
//! Windows: we grant the peer `session_window` incoming transfer frames. A frame that completes a delivery
//! holds its place in the window until the application has polled the [`Event::Delivery`]; other frames (the
//! earlier frames of a multi-frame delivery, bounded by the link's max-message-size) free theirs at once. The
//! window is refilled with a session `flow` once at least half of it can be granted again, so a peer can never
//! have more than the window's frames waiting for the application; a transfer beyond the window ends the
//! session with `amqp:session:window-violation` [AMQP 1.0 §2.5.6]. The window grows to the credit the
//! application grants on the session's links (plus their overshoot), never shrinking: a window smaller than
//! the credit only makes the sender hold deliveries the application asked for (and Proton C's sender rescans
//! every held delivery on each pass, so such a window costs it time quadratic in the credit). What the peer
//! can make us hold stays bounded by the credit the application chose. The peer's incoming window bounds our
//! outgoing transfer frames; frames beyond it wait in `pending` until a `flow` opens the window.

use std::collections::{HashMap, HashSet, VecDeque};

use bytes::Bytes;

use super::event::{DeliveryId, Event, LinkId, SessionId};
use super::link::MAX_DELIVERY_TAG;
use super::store::{IdMap, NumberPool, SeqMap};
use super::{Connection, EngineError, Half};
use crate::codec::Encode;
use crate::frame::{
    Begin, DeliveryState, Disposition, End, Error, ErrorCondition, Flow, Performative, Role,
    Transfer,
};

/// The most a frame of an outgoing delivery spends on anything but payload, as [`Connection::pump`] writes it:
/// the frame header (8), the transfer's descriptor (3) and largest list header (9), handle, delivery-id and
/// message-format (5 each as uints), the longest delivery-tag we send (2 + [`MAX_DELIVERY_TAG`]), settled and
/// more (1 each). A payload that fits beside it goes in one frame without sizing the transfer first.
pub(super) const TRANSFER_OVERHEAD_MAX: usize =
    8 + 3 + 9 + 5 + 5 + (2 + MAX_DELIVERY_TAG) + 5 + 1 + 1;

/// The first transfer frame of a delivery: the one that carries its delivery-id, tag (moved out of `p`),
/// message-format and settlement.
fn first_transfer(p: &mut PendingTransfer) -> Transfer {
    Transfer {
        handle: p.handle,
        delivery_id: Some(p.delivery_id),
        delivery_tag: Some(std::mem::take(&mut p.tag)),
        message_format: Some(p.message_format),
        settled: Some(p.settled),
        ..Transfer::default()
    }
}

/// The most bytes of delivery state the events of one incoming `disposition` may copy between them.
const DISPOSITION_STATE_BUDGET: usize = 1 << 20;

/// A delivery state reduced to its outcome.
fn lighten(state: &mut DeliveryState) {
    match state {
        DeliveryState::Rejected(r) => {
            if let Some(e) = &mut r.error {
                e.description = None;
                e.info = None;
            }
        }
        DeliveryState::Modified(m) => m.message_annotations = None,
        _ => {}
    }
}

/// A transfer waiting for the peer's incoming window.
#[derive(Debug)]
pub(super) struct PendingTransfer {
    pub(super) link: LinkId,
    pub(super) handle: u32,
    pub(super) delivery_id: u32,
    pub(super) tag: Bytes,
    pub(super) payload: Bytes,
    pub(super) message_format: u32,
    pub(super) settled: bool,
    /// Bytes of `payload` already sent.
    pub(super) offset: usize,
    /// Send one final `aborted` frame instead of the rest of the payload.
    pub(super) aborted: bool,
}

/// A delivery we received and have not settled.
#[derive(Debug)]
pub(super) struct Incoming {
    pub(super) link: LinkId,
    pub(super) remote_settled: bool,
}

#[derive(Debug)]
pub(super) struct Session {
    pub(super) local: Half,
    pub(super) remote: Half,
    pub(super) local_channel: Option<u16>,
    pub(super) remote_channel: Option<u16>,
    // Transfer-id accounting [AMQP 1.0 §2.5.6].
    pub(super) next_outgoing_id: u32,
    pub(super) next_incoming_id: u32,
    pub(super) incoming_window: u32,
    /// The window granted when refilled: the configured `session_window`, or more once the links' credit is.
    pub(super) window: u32,
    /// The sum of the last credit granted on each receiving link of the session.
    pub(super) granted: u32,
    pub(super) remote_incoming_window: u32,
    pub(super) remote_outgoing_window: u32,
    pub(super) remote_handle_max: u32,
    pub(super) local_handles: IdMap<u32, LinkId>,
    pub(super) handle_pool: NumberPool,
    pub(super) remote_handles: IdMap<u32, LinkId>,
    /// Links we attached that await the peer's `attach`, by name and our role.
    pub(super) awaiting_attach: HashMap<(String, Role), LinkId>,
    /// Every link of the session, whatever its state: freed with it.
    pub(super) links: HashSet<LinkId>,
    /// Delivery-completing transfer frames whose `Delivery` event the application has not polled.
    pub(super) unconsumed: u32,
    /// An error to end the session with as soon as our end is begun (the peer broke a rule before we
    /// answered its `begin`); frames after it are ignored.
    pending_error: Option<Error>,
    pub(super) next_delivery_id: u32,
    pub(super) outgoing_unsettled: SeqMap<LinkId>,
    pub(super) incoming_unsettled: SeqMap<Incoming>,
    pub(super) pending: VecDeque<PendingTransfer>,
    /// Dispositions to write at the next `poll_transmit`, merged as they are queued into runs of consecutive
    /// ids (see `queue_disposition`).
    dispositions: Vec<Disposition>,
}

impl Session {
    fn new(window: u32) -> Self {
        Session {
            local: Half::Idle,
            remote: Half::Idle,
            local_channel: None,
            remote_channel: None,
            next_outgoing_id: 0,
            next_incoming_id: 0,
            incoming_window: window,
            window,
            granted: 0,
            remote_incoming_window: 0,
            remote_outgoing_window: 0,
            remote_handle_max: u32::MAX,
            local_handles: IdMap::default(),
            handle_pool: NumberPool::default(),
            remote_handles: IdMap::default(),
            awaiting_attach: HashMap::new(),
            links: HashSet::new(),
            unconsumed: 0,
            pending_error: None,
            next_delivery_id: 0,
            outgoing_unsettled: SeqMap::default(),
            incoming_unsettled: SeqMap::default(),
            pending: VecDeque::new(),
            dispositions: Vec::new(),
        }
    }

    /// The session part of a `flow` [AMQP 1.0 §2.7.4].
    pub(super) fn flow(&self) -> Flow {
        Flow {
            next_incoming_id: (self.remote != Half::Idle).then_some(self.next_incoming_id),
            incoming_window: self.incoming_window,
            next_outgoing_id: self.next_outgoing_id,
            outgoing_window: u32::MAX,
            ..Flow::default()
        }
    }
}

impl Connection {
    pub(super) fn session(&self, id: SessionId) -> Result<&Session, EngineError> {
        self.sessions.get(id.0).ok_or(EngineError::UnknownSession)
    }

    pub(super) fn session_mut(&mut self, id: SessionId) -> Result<&mut Session, EngineError> {
        self.sessions
            .get_mut(id.0)
            .ok_or(EngineError::UnknownSession)
    }

    /// True while our end of the session is begun and not ended.
    pub fn is_session_open(&self, id: SessionId) -> bool {
        self.session(id).is_ok_and(|s| s.local == Half::Open)
    }

    /// Begins a new session (sends `begin` once the connection is open).
    pub fn begin(&mut self) -> Result<SessionId, EngineError> {
        self.check_live()?;
        let id = SessionId(
            self.sessions
                .insert(Session::new(self.config.session_window)),
        );
        self.begin_local(id, None)?;
        Ok(id)
    }

    /// Answers a session the peer began ([`Event::SessionRemoteBegin`]).
    pub fn begin_reply(&mut self, session: SessionId) -> Result<(), EngineError> {
        let s = self.session(session)?;
        if s.local != Half::Idle {
            return Err(EngineError::IllegalState("the session has already begun"));
        }
        self.check_live()?;
        let remote = s.remote_channel;
        self.begin_local(session, remote)
    }

    fn begin_local(
        &mut self,
        id: SessionId,
        remote_channel: Option<u16>,
    ) -> Result<(), EngineError> {
        let limit = self.config.channel_max.min(if self.remote_open.is_some() {
            self.remote_channel_max
        } else {
            u16::MAX
        });
        let Some(channel) = self.channel_pool.allocate(limit.into()) else {
            if remote_channel.is_none() {
                self.sessions.remove(id.0);
            }
            return Err(EngineError::Exhausted("channel"));
        };
        let channel = channel as u16;
        self.local_channels.insert(channel, id);
        let handle_max = self.config.handle_max;
        let s = self.session_mut(id)?;
        s.local = Half::Open;
        s.local_channel = Some(channel);
        let begin = Begin {
            remote_channel,
            next_outgoing_id: s.next_outgoing_id,
            incoming_window: s.incoming_window,
            outgoing_window: u32::MAX,
            handle_max,
            ..Begin::default()
        };
        self.write_frame(channel, &Performative::Begin(begin), &[]);
        self.session_begun(id);
        Ok(())
    }

    /// Our end of a session is begun: act on what the peer did before we answered it.
    fn session_begun(&mut self, id: SessionId) {
        let Ok(s) = self.session_mut(id) else { return };
        if let Some(error) = s.pending_error.take() {
            let _ = self.end(id, Some(error));
            return;
        }
        let Ok(s) = self.session(id) else { return };
        let refused: Vec<LinkId> = s
            .remote_handles
            .values()
            .copied()
            .filter(|l| self.links.get(l.0).is_some_and(|l| l.hidden))
            .collect();
        for link in refused {
            self.answer_refusal(link);
        }
    }

    /// Ends a session, with an optional error. Its links are detached with it.
    pub fn end(&mut self, session: SessionId, error: Option<Error>) -> Result<(), EngineError> {
        self.check_transport()?;
        // Dispositions queued before the end go out before it.
        self.flush_dispositions();
        let s = self.session_mut(session)?;
        if s.local != Half::Open {
            return Err(EngineError::IllegalState("the session is not open"));
        }
        s.local = Half::Closed;
        s.pending.clear();
        let channel = s.local_channel;
        if let Some(channel) = channel {
            self.write_frame(channel, &Performative::End(End { error }), &[]);
        }
        self.session_maybe_closed(session);
        Ok(())
    }

    pub(super) fn on_begin(&mut self, channel: u16, begin: Begin) {
        if channel > self.config.channel_max {
            self.fail(Error::new(
                ErrorCondition::FramingError,
                format!(
                    "channel {channel} exceeds channel-max {}",
                    self.config.channel_max
                ),
            ));
            return;
        }
        if self.remote_channels.contains_key(&channel) {
            self.fail(Error::new(
                ErrorCondition::IllegalState,
                format!("begin on channel {channel}, which is already in use"),
            ));
            return;
        }
        let ours = begin
            .remote_channel
            .and_then(|c| self.local_channels.get(&c).copied());
        let answered =
            ours.is_some_and(|id| self.session(id).is_ok_and(|s| s.remote != Half::Idle));
        let id = match (begin.remote_channel, ours) {
            (Some(c), None) => {
                self.fail(Error::new(
                    ErrorCondition::IllegalState,
                    format!("begin answers channel {c}, where we began no session"),
                ));
                return;
            }
            (Some(c), Some(_)) if answered => {
                self.fail(Error::new(
                    ErrorCondition::IllegalState,
                    format!("begin answers channel {c}, whose session was already answered"),
                ));
                return;
            }
            (_, Some(id)) => id,
            (None, None) => {
                // We will need a channel of our own to answer it, within both channel-maxes.
                let limit = self.config.channel_max.min(self.remote_channel_max);
                if self.sessions.len() > usize::from(limit) {
                    self.fail(Error::new(
                        ErrorCondition::ResourceLimitExceeded,
                        format!("begin on channel {channel}: no channel of ours left to answer it"),
                    ));
                    return;
                }
                SessionId(
                    self.sessions
                        .insert(Session::new(self.config.session_window)),
                )
            }
        };
        self.remote_channels.insert(channel, id);
        let Ok(s) = self.session_mut(id) else {
            return;
        };
        s.remote = Half::Open;
        s.remote_channel = Some(channel);
        s.next_incoming_id = begin.next_outgoing_id;
        s.remote_incoming_window = begin.incoming_window;
        s.remote_outgoing_window = begin.outgoing_window;
        s.remote_handle_max = begin.handle_max;
        let reply_expected = s.local == Half::Idle;
        if reply_expected {
            self.events.push_back(Event::SessionRemoteBegin(id));
        } else {
            self.pump(id);
        }
    }

    pub(super) fn on_session_frame(&mut self, id: SessionId, p: Performative, payload: Bytes) {
        let Ok(s) = self.session(id) else { return };
        if s.remote != Half::Open {
            return;
        }
        // Frames that arrive after we ended the session with an error are ignored [AMQP 1.0 §2.7.8].
        let ignoring = s.local == Half::Closed || s.pending_error.is_some();
        // A refill is possible only once the window is down to about half.
        let low_window = s.incoming_window <= s.window / 2 + 1;
        match p {
            Performative::End(end) => self.on_end(id, end.error),
            _ if ignoring => {}
            Performative::Attach(a) => self.on_attach(id, *a),
            Performative::Flow(f) => self.on_flow(id, f),
            Performative::Transfer(t) => {
                self.on_transfer(id, t, payload);
                // After the transfer is counted as held (or not): the window never grants a place it holds.
                if low_window {
                    self.refill_incoming_window(id);
                }
            }
            Performative::Disposition(d) => self.on_disposition(id, d),
            Performative::Detach(d) => self.on_detach(id, d),
            other => self.fail(Error::new(
                ErrorCondition::IllegalState,
                format!("unexpected {} on a session", other.name()),
            )),
        }
    }

    fn on_end(&mut self, id: SessionId, error: Option<Error>) {
        let Ok(s) = self.session_mut(id) else { return };
        s.remote = Half::Closed;
        if let Some(c) = s.remote_channel {
            self.remote_channels.remove(&c);
        }
        self.events
            .push_back(Event::SessionRemoteEnd { session: id, error });
        self.session_maybe_closed(id);
    }

    /// Frees a session whose ends have both closed, and its links.
    fn session_maybe_closed(&mut self, id: SessionId) {
        let Ok(s) = self.session(id) else { return };
        if s.local != Half::Closed || s.remote != Half::Closed {
            return;
        }
        let mut links: Vec<LinkId> = s.links.iter().copied().collect();
        // Hash map order is random: free the links in a fixed order so the same inputs give the same events.
        links.sort_unstable();
        if let Some(c) = s.local_channel {
            self.local_channels.remove(&c);
            self.channel_pool.release(c.into());
        }
        for link in links {
            if self.links.remove(link.0).is_some_and(|l| !l.hidden) {
                self.events.push_back(Event::LinkClosed(link));
            }
        }
        self.sessions.remove(id.0);
        self.events.push_back(Event::SessionClosed(id));
    }

    /// A session-level protocol error: end the session with `error` [AMQP 1.0 §2.7.8]. A session the peer
    /// began and the application has not answered yet is answered first, so the `end` has a channel to go on.
    pub(super) fn session_error(&mut self, id: SessionId, error: Error) {
        let Ok(s) = self.session_mut(id) else { return };
        if s.local == Half::Idle {
            s.pending_error.get_or_insert(error);
            return;
        }
        let _ = self.end(id, Some(error));
    }

    /// Accounts for an incoming transfer frame against our window; false if the peer broke it (the session is
    /// then ended with `amqp:session:window-violation`).
    pub(super) fn count_incoming_transfer(&mut self, id: SessionId) -> bool {
        let Ok(s) = self.session_mut(id) else {
            return false;
        };
        if s.incoming_window == 0 {
            self.session_error(
                id,
                Error::new(
                    ErrorCondition::WindowViolation,
                    "transfer beyond the session's incoming window",
                ),
            );
            return false;
        }
        s.next_incoming_id = s.next_incoming_id.wrapping_add(1);
        s.incoming_window -= 1;
        s.remote_outgoing_window = s.remote_outgoing_window.saturating_sub(1);
        true
    }

    /// A transfer frame that completed a delivery now waits for the application: it holds its place in the
    /// window until the `Delivery` event is polled.
    pub(super) fn delivery_queued(&mut self, id: SessionId) {
        if let Ok(s) = self.session_mut(id) {
            s.unconsumed += 1;
            self.unpolled_deliveries.push_back(id);
        }
    }

    /// The application polled a `Delivery` event of session `id`.
    pub(super) fn delivery_consumed(&mut self, id: SessionId) {
        if let Ok(s) = self.session_mut(id) {
            s.unconsumed = s.unconsumed.saturating_sub(1);
            if s.incoming_window <= s.window / 2 {
                self.refill_incoming_window(id);
            }
        }
    }

    /// Grants the peer the part of the window the application is not holding, once that is at least half of
    /// the window more than the peer has now.
    fn refill_incoming_window(&mut self, id: SessionId) {
        let Ok(s) = self.session_mut(id) else { return };
        let window = s.window;
        let available = window.saturating_sub(s.unconsumed);
        let grow = available.saturating_sub(s.incoming_window);
        if grow == 0 || grow < (window / 2).max(1) || s.local != Half::Open {
            return;
        }
        s.incoming_window = available;
        let flow = s.flow();
        if let Some(c) = s.local_channel {
            self.write_frame(c, &Performative::Flow(flow), &[]);
        }
    }

    /// The session part of an incoming `flow`: the peer's window for our transfers.
    pub(super) fn on_session_flow(&mut self, id: SessionId, flow: &Flow) {
        let Ok(s) = self.session_mut(id) else { return };
        // remote-incoming-window = next-incoming-id(flow) + incoming-window(flow) - next-outgoing-id(ours)
        let base = flow.next_incoming_id.unwrap_or(0);
        s.remote_incoming_window = base
            .wrapping_add(flow.incoming_window)
            .wrapping_sub(s.next_outgoing_id);
        if s.remote_incoming_window > flow.incoming_window {
            // Never trust more than it granted; below zero (it shrank the window under transfers it has not
            // seen yet) is zero.
            let overrun = (s.remote_incoming_window as i32) < 0;
            s.remote_incoming_window = if overrun { 0 } else { flow.incoming_window };
        }
        s.remote_outgoing_window = flow.outgoing_window;
        if flow.echo && flow.handle.is_none() {
            let reply = s.flow();
            if let Some(c) = s.local_channel {
                self.write_frame(c, &Performative::Flow(reply), &[]);
            }
        }
        self.pump(id);
    }

    /// Writes pending transfer frames while the peer's incoming window allows.
    pub(super) fn pump(&mut self, id: SessionId) {
        let max_frame = self.remote_max_frame as usize;
        loop {
            let Ok(s) = self.session_mut(id) else { return };
            let (Some(channel), true) = (s.local_channel, s.remote_incoming_window > 0) else {
                return;
            };
            let Some(p) = s.pending.front_mut() else {
                return;
            };
            let mut transfer = match p.offset {
                0 => first_transfer(p),
                _ => Transfer {
                    handle: p.handle,
                    ..Transfer::default()
                },
            };
            let left = p.payload.len() - p.offset;
            let (chunk, done) = if p.aborted {
                transfer.aborted = true;
                (Bytes::new(), true)
            } else if left + TRANSFER_OVERHEAD_MAX <= max_frame {
                // The rest fits in this frame whatever the transfer encodes to: no need to size it.
                let chunk = match p.offset {
                    0 => std::mem::take(&mut p.payload),
                    offset => p.payload.slice(offset..),
                };
                (chunk, true)
            } else {
                // Overhead: the frame header plus the performative with `more` set, its largest form.
                transfer.more = true;
                let overhead = 8 + transfer.encoded_size();
                let room = max_frame.saturating_sub(overhead).max(1);
                let end = (p.offset + room).min(p.payload.len());
                let chunk = p.payload.slice(p.offset..end);
                p.offset = end;
                let done = end == p.payload.len();
                transfer.more = !done;
                (chunk, done)
            };
            s.next_outgoing_id = s.next_outgoing_id.wrapping_add(1);
            s.remote_incoming_window -= 1;
            if done {
                s.pending.pop_front();
            }
            self.write_frame(channel, &Performative::Transfer(transfer), &chunk);
        }
    }

    /// Writes the whole of a delivery's transfer (`d`, with `payload`) now, in one frame, if it may go out now:
    /// nothing waits before it in the session, the peer's window has room, and it fits the peer's frames.
    /// Otherwise hands `d` back, to be queued.
    pub(super) fn write_whole_transfer(
        &mut self,
        id: SessionId,
        mut d: PendingTransfer,
        payload: &[u8],
    ) -> Result<(), PendingTransfer> {
        let fits = payload.len() + TRANSFER_OVERHEAD_MAX <= self.remote_max_frame as usize;
        let Ok(s) = self.session_mut(id) else {
            return Err(d);
        };
        let channel = match s.local_channel {
            Some(c) if fits && s.remote_incoming_window > 0 && s.pending.is_empty() => c,
            _ => return Err(d),
        };
        s.next_outgoing_id = s.next_outgoing_id.wrapping_add(1);
        s.remote_incoming_window -= 1;
        let transfer = first_transfer(&mut d);
        self.write_frame(channel, &Performative::Transfer(transfer), payload);
        Ok(())
    }

    /// Queues a disposition; written (coalesced into ranges) at the next `poll_transmit`.
    pub(super) fn queue_disposition(
        &mut self,
        id: SessionId,
        role: Role,
        delivery: u32,
        state: Option<DeliveryState>,
        settled: bool,
    ) {
        let Ok(s) = self.session_mut(id) else {
            return;
        };
        // Merged as it is queued into the last run, when it extends it: consecutive ids with the same role,
        // state and settlement are one range [AMQP 1.0 §2.7.6].
        if let Some(r) = s.dispositions.last_mut() {
            if r.role == role
                && r.settled == settled
                && r.state == state
                && r.last.unwrap_or(r.first).wrapping_add(1) == delivery
            {
                r.last = Some(delivery);
                return;
            }
        }
        s.dispositions.push(Disposition {
            role,
            first: delivery,
            last: None,
            settled,
            state,
            batchable: false,
        });
    }

    /// Writes the queued dispositions, one frame per run of consecutive ids with the same role, state and
    /// settlement.
    pub(super) fn flush_dispositions(&mut self) {
        for key in self.sessions.keys() {
            let Some(s) = self.sessions.get_mut(key) else {
                continue;
            };
            if s.dispositions.is_empty() {
                continue;
            }
            let runs = std::mem::take(&mut s.dispositions);
            let Some(channel) = s.local_channel.filter(|_| s.local == Half::Open) else {
                continue;
            };
            for r in runs {
                self.write_frame(channel, &Performative::Disposition(r), &[]);
            }
        }
    }

    pub(super) fn on_disposition(&mut self, id: SessionId, mut d: Disposition) {
        let last = d.last.unwrap_or(d.first);
        let Ok(s) = self.session_mut(id) else { return };
        let mut updates = Vec::new();
        let mut gone = Vec::new();
        match d.role {
            // The peer is the receiver: the range names deliveries we sent.
            Role::Receiver => {
                for delivery in s.outgoing_unsettled.ids_in(d.first, last) {
                    let link = if d.settled {
                        let link = s.outgoing_unsettled.remove(delivery);
                        gone.extend(link);
                        link
                    } else {
                        s.outgoing_unsettled.get(delivery).copied()
                    };
                    updates.extend(link.map(|l| (l, delivery)));
                }
            }
            // The peer is the sender: the range names deliveries we received.
            Role::Sender => {
                for delivery in s.incoming_unsettled.ids_in(d.first, last) {
                    if let Some(i) = s.incoming_unsettled.get_mut(delivery) {
                        i.remote_settled |= d.settled;
                        updates.push((i.link, delivery));
                    }
                }
                // The application hears only of deliveries it was given, not of one still arriving.
                updates.retain(|&(link, delivery)| !self.is_arriving(link, delivery));
            }
        }
        for link in gone {
            self.unsettled_gone(link);
        }
        // Each event carries the state: one frame may not make many copies of a large one. Past the budget
        // the copies keep the outcome and drop its details (an error's description and info, annotations).
        let copies =
            |d: &Disposition| d.state.as_ref().map_or(0, Encode::encoded_size) * updates.len();
        if copies(&d) > DISPOSITION_STATE_BUDGET {
            if let Some(state) = &mut d.state {
                lighten(state);
            }
            if copies(&d) > DISPOSITION_STATE_BUDGET {
                log::warn!(
                    "a disposition's state is too large to pass on {} times; dropped",
                    updates.len()
                );
                d.state = None;
            }
        }
        for (link, delivery) in updates {
            self.events.push_back(Event::RemoteDisposition {
                delivery: DeliveryId { link, id: delivery },
                state: d.state.clone(),
                settled: d.settled,
            });
        }
    }
}
