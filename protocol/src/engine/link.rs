//! Links: attach/detach, credit and drain, transfers out and in (with multi-frame reassembly and abort), and
//! settlement [AMQP 1.0 §2.6, §2.7.3-§2.7.7].
//!
//! Credit [AMQP 1.0 §2.6.7]: the sender's credit is `delivery-count(receiver) + link-credit(receiver) -
//! delivery-count(sender)`. Each delivery (not each frame) uses one credit and advances the delivery-count.
//! A draining sender with nothing to send advances its delivery-count by its credit and zeroes the credit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::event::{DeliveryId, Event, LinkId, SessionId};
use super::session::{Incoming, PendingTransfer};
use super::{Connection, EngineError, Half};
use crate::codec::{Map, Symbol};
use crate::frame::{
    Attach, DeliveryState, Detach, Error, ErrorCondition, Flow, Performative, ReceiverSettleMode,
    Role, SenderSettleMode, Source, Target, Transfer,
};

fn no_handle_left() -> Error {
    Error::new(
        ErrorCondition::ResourceLimitExceeded,
        "more links attached than the peer's handle-max lets us answer",
    )
}

/// The longest delivery-tag [AMQP 1.0 §2.8.7].
pub const MAX_DELIVERY_TAG: usize = 32;

/// Our terms for a link we attach (or answer) [AMQP 1.0 §2.7.3].
#[derive(Clone, Debug, PartialEq)]
pub struct LinkConfig {
    /// The link name; unique per direction between two containers.
    pub name: String,
    /// Our role: `Sender` or `Receiver`.
    pub role: Role,
    /// The source terminus.
    pub source: Option<Source>,
    /// The target terminus.
    pub target: Option<Target>,
    /// The sender settle mode.
    pub snd_settle_mode: SenderSettleMode,
    /// The receiver settle mode.
    pub rcv_settle_mode: ReceiverSettleMode,
    /// The largest message we accept (receiver), advertised in `attach` and enforced as frames arrive. `None`
    /// takes the connection's [`max_message_size`](super::ConnectionConfig::max_message_size);
    /// `Some(`[`UNLIMITED`](super::UNLIMITED)`)` lifts the limit. On a sender it is only advertised.
    pub max_message_size: Option<u64>,
    /// Capabilities we offer.
    pub offered_capabilities: Vec<Symbol>,
    /// Capabilities we desire.
    pub desired_capabilities: Vec<Symbol>,
    /// Link properties.
    pub properties: Option<Map>,
}

impl Default for LinkConfig {
    /// The spec's defaults [AMQP 1.0 §2.7.3]: sender settle mode `mixed` (so `send`'s `settled` decides) and
    /// receiver settle mode `first`.
    fn default() -> Self {
        LinkConfig {
            name: String::new(),
            role: Role::Sender,
            source: None,
            target: None,
            snd_settle_mode: SenderSettleMode::Mixed,
            rcv_settle_mode: ReceiverSettleMode::First,
            max_message_size: None,
            offered_capabilities: Vec::new(),
            desired_capabilities: Vec::new(),
            properties: None,
        }
    }
}

impl LinkConfig {
    /// A sender named `name` to `target` address.
    pub fn sender(name: impl Into<String>, target: impl Into<String>) -> Self {
        LinkConfig {
            name: name.into(),
            role: Role::Sender,
            source: Some(Source::default()),
            target: Some(Target::with_address(target)),
            ..LinkConfig::default()
        }
    }

    /// A receiver named `name` from `source` address.
    pub fn receiver(name: impl Into<String>, source: impl Into<String>) -> Self {
        LinkConfig {
            name: name.into(),
            role: Role::Receiver,
            source: Some(Source::with_address(source)),
            target: Some(Target::default()),
            ..LinkConfig::default()
        }
    }
}

/// A delivery being reassembled from `more` frames.
#[derive(Debug)]
struct Partial {
    id: u32,
    tag: Bytes,
    settled: bool,
    /// Whether the delivery sits in the session's `incoming_unsettled` (it was unsettled when it began).
    tracked: bool,
    message_format: u32,
    /// The first frame's payload, kept as is so single-frame messages are never copied.
    first: Bytes,
    /// Later frames, once there are any.
    rest: Option<BytesMut>,
    /// The connection's count of bytes held in partial deliveries, and what this one added to it; given back
    /// when the delivery completes or is dropped, whichever way.
    charge: Option<(Arc<AtomicUsize>, usize)>,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if let Some((held, n)) = self.charge.take() {
            held.fetch_sub(n, Ordering::Relaxed);
        }
    }
}

impl Partial {
    fn len(&self) -> usize {
        self.first.len() + self.rest.as_ref().map_or(0, BytesMut::len)
    }

    /// Counts this delivery's bytes in `held` while it waits for more frames.
    fn charge_to(&mut self, held: &Arc<AtomicUsize>) {
        let n = self.len();
        let before = self.charge.as_ref().map_or(0, |c| c.1);
        held.fetch_add(n - before, Ordering::Relaxed);
        self.charge = Some((held.clone(), n));
    }

    fn push(&mut self, chunk: &Bytes) {
        if chunk.is_empty() {
            return;
        }
        let rest = self.rest.get_or_insert_with(|| {
            let mut b = BytesMut::with_capacity((self.first.len() + chunk.len()) * 2);
            b.extend_from_slice(&self.first);
            b
        });
        rest.extend_from_slice(chunk);
    }

    fn into_payload(mut self) -> Bytes {
        let first = std::mem::take(&mut self.first);
        match self.rest.take() {
            Some(b) => b.freeze(),
            None => first,
        }
    }
}

#[derive(Debug)]
pub(super) struct Link {
    pub(super) session: SessionId,
    pub(super) config: LinkConfig,
    pub(super) local: Half,
    pub(super) remote: Half,
    pub(super) local_handle: Option<u32>,
    pub(super) remote_handle: Option<u32>,
    pub(super) remote_attach: Option<Attach>,
    pub(super) delivery_count: u32,
    pub(super) credit: u32,
    pub(super) available: u32,
    pub(super) drain: bool,
    /// Transfers the peer sent beyond our credit since we last granted credit (see `on_transfer`).
    overshoot: u32,
    /// Whether an overshoot was logged for this link.
    overshoot_logged: bool,
    /// The credit our last `flow` granted (receiver): the overshoot tolerated is at least this much.
    last_grant: u32,
    /// Credit we took back (`limit_credit`) that transfers already on their way when the flow left may still
    /// use: taken without counting as overshoot.
    revoked: u32,
    incoming: Option<Partial>,
    /// A link the engine refuses on its own (the application never hears of it): no events are raised for it.
    pub(super) hidden: bool,
    /// An error to detach with as soon as our end is attached (the peer broke a rule before we could answer).
    pub(super) pending_error: Option<Error>,
    /// This link's entries in its session's unsettled maps, so a link with none closes in O(1).
    pub(super) unsettled: u32,
}

impl Link {
    fn new(session: SessionId, config: LinkConfig) -> Self {
        Link {
            session,
            config,
            local: Half::Idle,
            remote: Half::Idle,
            local_handle: None,
            remote_handle: None,
            remote_attach: None,
            delivery_count: 0,
            credit: 0,
            available: 0,
            drain: false,
            overshoot: 0,
            overshoot_logged: false,
            last_grant: 0,
            revoked: 0,
            incoming: None,
            hidden: false,
            pending_error: None,
            unsettled: 0,
        }
    }

    fn is_sender(&self) -> bool {
        self.config.role == Role::Sender
    }
}

impl Connection {
    fn link(&self, id: LinkId) -> Result<&Link, EngineError> {
        self.links.get(id.0).ok_or(EngineError::UnknownLink)
    }

    fn link_mut(&mut self, id: LinkId) -> Result<&mut Link, EngineError> {
        self.links.get_mut(id.0).ok_or(EngineError::UnknownLink)
    }

    /// Our terms for a link (for a link the peer attached, our role and name until we answer).
    pub fn link_config(&self, link: LinkId) -> Result<&LinkConfig, EngineError> {
        Ok(&self.link(link)?.config)
    }

    /// The peer's `attach` for a link, once it has arrived.
    pub fn remote_attach(&self, link: LinkId) -> Result<Option<&Attach>, EngineError> {
        Ok(self.link(link)?.remote_attach.as_ref())
    }

    /// The `unsettled` map of the peer's `attach` (delivery-tag to delivery state), for link recovery
    /// [AMQP 1.0 §2.6.13]; `None` if it sent none or its `attach` has not arrived.
    pub fn remote_unsettled(&self, link: LinkId) -> Result<Option<&Map>, EngineError> {
        Ok(self
            .link(link)?
            .remote_attach
            .as_ref()
            .and_then(|a| a.unsettled.as_ref()))
    }

    /// True while our end of the link is attached (we attached it, or answered the peer's attach).
    pub fn is_attached_locally(&self, link: LinkId) -> bool {
        self.link(link).is_ok_and(|l| l.local == Half::Open)
    }

    /// The session a link belongs to.
    pub fn link_session(&self, link: LinkId) -> Result<SessionId, EngineError> {
        Ok(self.link(link)?.session)
    }

    /// The link's current credit (as the sender sees it, or as the receiver granted it).
    pub fn credit(&self, link: LinkId) -> Result<u32, EngineError> {
        Ok(self.link(link)?.credit)
    }

    /// Whether the receiving peer asked this sender to drain.
    pub fn draining(&self, link: LinkId) -> Result<bool, EngineError> {
        Ok(self.link(link)?.drain)
    }

    /// The number of our sent deliveries on `session` that the peer has not settled.
    pub fn unsettled_outgoing(&self, session: SessionId) -> Result<usize, EngineError> {
        Ok(self.session(session)?.outgoing_unsettled.len())
    }

    /// Attaches a new link on `session` with our terms (sends `attach`).
    pub fn attach(
        &mut self,
        session: SessionId,
        config: LinkConfig,
    ) -> Result<LinkId, EngineError> {
        if self.session(session)?.local != Half::Open {
            return Err(EngineError::IllegalState("links attach on a begun session"));
        }
        let id = LinkId(self.links.insert(Link::new(session, config)));
        if let Err(e) = self.attach_local(id) {
            self.links.remove(id.0);
            return Err(e);
        }
        self.session_mut(session)?.links.insert(id);
        Ok(id)
    }

    /// Answers a link the peer attached ([`Event::LinkRemoteAttach`]) with our terms. Our role must be the
    /// opposite of the peer's, and the name is the peer's.
    pub fn attach_reply(
        &mut self,
        link: LinkId,
        mut config: LinkConfig,
    ) -> Result<(), EngineError> {
        let l = self.link(link)?;
        if l.local != Half::Idle {
            return Err(EngineError::IllegalState("the link is already attached"));
        }
        if l.hidden {
            return Err(EngineError::UnknownLink);
        }
        config.name = l.config.name.clone();
        config.role = l.config.role;
        let session = l.session;
        self.link_mut(link)?.config = config;
        if let Err(e) = self.attach_local(link) {
            if e == EngineError::Exhausted("handle") {
                // The peer attached more links than its own handle-max lets us answer.
                self.session_error(session, no_handle_left());
            }
            return Err(e);
        }
        if let Some(error) = self.link_mut(link)?.pending_error.take() {
            self.detach(link, true, Some(error))?;
        }
        Ok(())
    }

    fn attach_local(&mut self, id: LinkId) -> Result<(), EngineError> {
        self.check_live()?;
        let session = self.link(id)?.session;
        let s = self.session(session)?;
        if s.local != Half::Open {
            return Err(EngineError::IllegalState("links attach on a begun session"));
        }
        let channel = s
            .local_channel
            .ok_or(EngineError::IllegalState("no channel"))?;
        let remote_handle_max = s.remote_handle_max;
        let default_max_message_size = self.config.max_message_size;
        let (name, role, remote) = {
            let l = self.link(id)?;
            (l.config.name.clone(), l.config.role, l.remote)
        };
        let s = self.session_mut(session)?;
        let handle = s
            .handle_pool
            .allocate(remote_handle_max)
            .ok_or(EngineError::Exhausted("handle"))?;
        s.local_handles.insert(handle, id);
        if remote == Half::Idle {
            s.awaiting_attach.insert((name, role), id);
        }
        let l = self.link_mut(id)?;
        l.local = Half::Open;
        l.local_handle = Some(handle);
        let c = &l.config;
        let max_message_size = match (c.role, c.max_message_size) {
            (Role::Receiver, None) => Some(default_max_message_size),
            (_, m) => m,
        };
        let attach = Attach {
            name: c.name.clone(),
            handle,
            role: c.role,
            snd_settle_mode: c.snd_settle_mode,
            rcv_settle_mode: c.rcv_settle_mode,
            source: c.source.clone(),
            target: c.target.clone(),
            initial_delivery_count: (c.role == Role::Sender).then_some(l.delivery_count),
            max_message_size: max_message_size.filter(|&m| m > 0),
            offered_capabilities: super::non_empty(&c.offered_capabilities),
            desired_capabilities: super::non_empty(&c.desired_capabilities),
            properties: c.properties.clone(),
            ..Attach::default()
        };
        self.write_frame(channel, &Performative::from(attach), &[]);
        Ok(())
    }

    /// Detaches our end of a link; `closed` closes it for good. Unsent transfers of the link are dropped.
    pub fn detach(
        &mut self,
        link: LinkId,
        closed: bool,
        error: Option<Error>,
    ) -> Result<(), EngineError> {
        self.check_transport()?;
        // Dispositions queued before the detach go out before it.
        self.flush_dispositions();
        let l = self.link_mut(link)?;
        if l.local == Half::Idle && l.remote == Half::Closed {
            // A link the peer attached and detached before we answered: nothing to send, only to free.
            l.local = Half::Closed;
            self.link_maybe_closed(link);
            return Ok(());
        }
        if l.local != Half::Open {
            return Err(EngineError::IllegalState("the link is not attached"));
        }
        l.local = Half::Closed;
        // A delivery it was reassembling will never complete: its bytes go now.
        l.incoming = None;
        let (session, handle) = (l.session, l.local_handle.take());
        let s = self.session_mut(session)?;
        s.pending.retain(|p| p.link != link);
        let channel = s.local_channel.filter(|_| s.local == Half::Open);
        if let Some(h) = handle {
            s.local_handles.remove(&h);
            s.handle_pool.release(h);
            if let Some(c) = channel {
                let detach = Detach {
                    handle: h,
                    closed,
                    error,
                };
                self.write_frame(c, &Performative::Detach(detach), &[]);
            }
        }
        self.link_maybe_closed(link);
        Ok(())
    }

    fn link_maybe_closed(&mut self, link: LinkId) {
        let Ok(l) = self.link(link) else { return };
        if l.local != Half::Closed || l.remote != Half::Closed {
            return;
        }
        let (session, hidden, unsettled, grant) = (l.session, l.hidden, l.unsettled, l.last_grant);
        let key = (l.config.name.clone(), l.config.role);
        self.links.remove(link.0);
        if let Ok(s) = self.session_mut(session) {
            s.granted = s.granted.saturating_sub(grant);
            if unsettled > 0 {
                s.outgoing_unsettled.retain(|&l| l != link);
                s.incoming_unsettled.retain(|i| i.link != link);
            }
            if s.awaiting_attach.get(&key) == Some(&link) {
                s.awaiting_attach.remove(&key);
            }
            s.links.remove(&link);
        }
        if !hidden {
            self.events.push_back(Event::LinkClosed(link));
        }
    }

    /// A link-level protocol error: detach (closing) the link with `error`. A link the peer attached that we
    /// have not answered yet is detached as soon as we answer (or, for a link the engine refuses on its own,
    /// as soon as its session is begun at our end); until then its frames are ignored.
    fn link_error(&mut self, link: LinkId, error: Error) {
        let Ok(l) = self.link_mut(link) else { return };
        match l.local {
            Half::Open => {
                let _ = self.detach(link, true, Some(error));
            }
            Half::Idle => {
                l.pending_error.get_or_insert(error);
                if l.hidden {
                    self.answer_refusal(link);
                }
            }
            Half::Closed => {}
        }
    }

    /// Answers a link the engine refuses on its own, if our ends of the connection and session are open: an
    /// `attach` without terminus, then a closing `detach` with the error [AMQP 1.0 §2.6.3].
    pub(super) fn answer_refusal(&mut self, link: LinkId) {
        let Ok(l) = self.link(link) else { return };
        let session = l.session;
        let ready =
            self.local == Half::Open && self.session(session).is_ok_and(|s| s.local == Half::Open);
        if !ready || l.local != Half::Idle {
            return;
        }
        let error = self
            .link_mut(link)
            .ok()
            .and_then(|l| l.pending_error.take());
        match self.attach_local(link) {
            Ok(()) => {
                let _ = self.detach(link, true, error);
                // Only the handle is needed until the peer answers: the name can go.
                if let Ok(l) = self.link_mut(link) {
                    l.config.name = String::new();
                }
            }
            Err(EngineError::Exhausted(_)) => self.session_error(session, no_handle_left()),
            Err(_) => {}
        }
    }

    /// Refuses a link the peer attached without telling the application (see `answer_refusal`).
    fn refuse(&mut self, link: LinkId, error: Error) {
        if let Ok(l) = self.link_mut(link) {
            l.hidden = true;
            l.remote_attach = None;
        }
        self.link_error(link, error);
    }

    pub(super) fn on_attach(&mut self, session: SessionId, attach: Attach) {
        // [AMQP 1.0 §2.7.2]: a handle outside the range we advertised closes the connection.
        if attach.handle > self.config.handle_max {
            self.fail(Error::new(
                ErrorCondition::FramingError,
                format!(
                    "attach with handle {} beyond our handle-max of {}",
                    attach.handle, self.config.handle_max
                ),
            ));
            return;
        }
        let Ok(s) = self.session(session) else { return };
        if s.remote_handles.contains_key(&attach.handle) {
            self.session_error(
                session,
                Error::new(
                    ErrorCondition::HandleInUse,
                    format!("handle {} is already attached", attach.handle),
                ),
            );
            return;
        }
        let our_role = match attach.role {
            Role::Sender => Role::Receiver,
            Role::Receiver => Role::Sender,
        };
        let key = (attach.name.clone(), our_role);
        let existing = s
            .awaiting_attach
            .get(&key)
            .copied()
            .filter(|&id| self.links.get(id.0).is_some_and(|l| l.remote == Half::Idle));
        if existing.is_some() {
            if let Ok(s) = self.session_mut(session) {
                s.awaiting_attach.remove(&key);
            }
        }
        let refusal = match existing {
            Some(_) => None,
            None => self.refusal_of(&attach),
        };
        let id = existing.unwrap_or_else(|| {
            let config = LinkConfig {
                name: attach.name.clone(),
                role: our_role,
                ..LinkConfig::default()
            };
            LinkId(self.links.insert(Link::new(session, config)))
        });
        let handle = attach.handle;
        if let Ok(s) = self.session_mut(session) {
            s.remote_handles.insert(handle, id);
            s.links.insert(id);
        }
        let Ok(l) = self.link_mut(id) else { return };
        l.remote = Half::Open;
        l.remote_handle = Some(handle);
        if our_role == Role::Receiver {
            l.delivery_count = attach.initial_delivery_count.unwrap_or(0);
        }
        if let Some(error) = refusal {
            log::debug!("refusing link {:?}: {error}", attach.name);
            self.refuse(id, error);
            return;
        }
        l.remote_attach = Some(attach);
        self.events.push_back(Event::LinkRemoteAttach(id));
    }

    /// Why the engine refuses a new link the peer attached, before the application hears of it.
    fn refusal_of(&self, attach: &Attach) -> Option<Error> {
        let peer_links = self.links.len() as u64;
        if peer_links >= u64::from(self.config.max_links) {
            return Some(Error::new(
                ErrorCondition::ResourceLimitExceeded,
                format!(
                    "this connection has reached its limit of {} links",
                    self.config.max_links
                ),
            ));
        }
        // Transactions [AMQP 1.0 §4] are not implemented: a coordinator link is refused, not the connection.
        if attach.is_coordinator() {
            return Some(Error::new(
                ErrorCondition::NotImplemented,
                "transactions are not supported: no coordinator here",
            ));
        }
        // [AMQP 1.0 §2.7.3]: initial-delivery-count MUST be set when the role is sender.
        if attach.role == Role::Sender && attach.initial_delivery_count.is_none() {
            return Some(Error::new(
                ErrorCondition::InvalidField,
                "a sender's attach lacks initial-delivery-count",
            ));
        }
        None
    }

    pub(super) fn on_detach(&mut self, session: SessionId, detach: Detach) {
        let Some(id) = self.remote_link(session, detach.handle) else {
            return;
        };
        if let Ok(s) = self.session_mut(session) {
            s.remote_handles.remove(&detach.handle);
        }
        let Ok(l) = self.link_mut(id) else { return };
        l.remote = Half::Closed;
        l.remote_handle = None;
        l.incoming = None;
        if l.hidden {
            // The peer's answer to our refusal, or it gave up first: nothing to tell the application.
            match l.local {
                Half::Open => {
                    let _ = self.detach(id, true, None);
                }
                Half::Idle => l.local = Half::Closed,
                Half::Closed => {}
            }
        } else {
            self.events.push_back(Event::LinkRemoteDetach {
                link: id,
                closed: detach.closed,
                error: detach.error,
            });
        }
        self.link_maybe_closed(id);
    }

    /// The link attached under the peer's `handle`, or an `unattached-handle` session error.
    fn remote_link(&mut self, session: SessionId, handle: u32) -> Option<LinkId> {
        let found = self
            .session(session)
            .ok()
            .and_then(|s| s.remote_handles.get(&handle).copied());
        if found.is_none() {
            self.session_error(
                session,
                Error::new(
                    ErrorCondition::UnattachedHandle,
                    format!("handle {handle} is not attached"),
                ),
            );
        }
        found
    }

    pub(super) fn on_flow(&mut self, session: SessionId, flow: Flow) {
        self.on_session_flow(session, &flow);
        let Some(handle) = flow.handle else { return };
        let Some(id) = self.remote_link(session, handle) else {
            return;
        };
        let Ok(l) = self.link_mut(id) else { return };
        if l.hidden {
            // A link we refuse: its flow state is of no interest to anyone.
            return;
        }
        l.available = flow.available.unwrap_or(l.available);
        if l.is_sender() {
            let their_count = flow.delivery_count.unwrap_or(0);
            let credit = flow.link_credit.unwrap_or(0);
            // [AMQP 1.0 §2.6.7]: credit = their delivery-count + their credit - ours, with delivery-counts
            // as serial numbers. Behind ours: our deliveries in flight used some credit (never below 0).
            // Ahead of ours (a peer that miscounts): the formula still holds.
            let ahead = their_count.wrapping_sub(l.delivery_count) as i32;
            l.credit = if ahead >= 0 {
                credit.saturating_add(ahead.unsigned_abs())
            } else {
                credit.saturating_sub(ahead.unsigned_abs())
            };
            let newly_draining = flow.drain && !l.drain;
            l.drain = flow.drain;
            let credit = l.credit;
            self.events
                .push_back(Event::LinkCredit { link: id, credit });
            if newly_draining || (flow.drain && credit > 0) {
                self.events.push_back(Event::DrainRequested(id));
            }
        } else if let Some(count) = flow.delivery_count {
            // The sender advanced its delivery-count (drain): credit it used up is gone. A count past our
            // limit (serial order) leaves no credit at all.
            let limit = l.delivery_count.wrapping_add(l.credit);
            l.delivery_count = count;
            let left = limit.wrapping_sub(count) as i32;
            l.credit = if left <= 0 {
                0
            } else {
                left.unsigned_abs().min(l.credit)
            };
            if l.drain && l.credit == 0 {
                l.drain = false;
                if !l.hidden {
                    self.events.push_back(Event::DrainCompleted(id));
                }
            }
        }
        if flow.echo {
            let _ = self.write_link_flow(id);
        }
    }

    /// Refuses a change to a link's flow state that could not be sent (the connection is not open, or the link
    /// or its session is not open at our end), before anything changes.
    fn check_can_flow(&self, link: LinkId) -> Result<(), EngineError> {
        self.check_live()?;
        let l = self.link(link)?;
        if l.local != Half::Open || self.session(l.session)?.local != Half::Open {
            return Err(EngineError::IllegalState("the link is not attached"));
        }
        Ok(())
    }

    fn write_link_flow(&mut self, link: LinkId) -> Result<(), EngineError> {
        let l = self.link(link)?;
        let (Some(handle), Half::Open) = (l.local_handle, l.local) else {
            return Err(EngineError::IllegalState("the link is not attached"));
        };
        let s = self.session(l.session)?;
        let channel = s
            .local_channel
            .ok_or(EngineError::IllegalState("no channel"))?;
        let flow = Flow {
            handle: Some(handle),
            delivery_count: Some(l.delivery_count),
            link_credit: Some(l.credit),
            available: l.is_sender().then_some(l.available),
            drain: l.drain,
            ..s.flow()
        };
        self.write_frame(channel, &Performative::Flow(flow), &[]);
        Ok(())
    }

    /// Grants `credit` more deliveries to the sender of a receiving link.
    pub fn add_credit(&mut self, link: LinkId, credit: u32) -> Result<(), EngineError> {
        if self.link(link)?.is_sender() {
            return Err(EngineError::NotAReceiver);
        }
        self.check_can_flow(link)?;
        let l = self.link_mut(link)?;
        l.credit = l.credit.saturating_add(credit);
        // A new grant: transfers that crossed the old one may overshoot again, by as much as it grants.
        l.overshoot = 0;
        let (session, before, now) = (l.session, l.last_grant, l.credit);
        l.last_grant = now;
        self.widen_session_window(session, before, now);
        self.write_link_flow(link)
    }

    /// Lowers a receiving link's credit to at most `max`, telling the sender (a receiver may change the
    /// credit at any time [AMQP 1.0 §2.6.7]). Transfers the sender sent before the flow reached it are still
    /// taken, up to the credit taken back, as they used credit it had.
    pub fn limit_credit(&mut self, link: LinkId, max: u32) -> Result<(), EngineError> {
        if self.link(link)?.is_sender() {
            return Err(EngineError::NotAReceiver);
        }
        self.check_can_flow(link)?;
        let l = self.link_mut(link)?;
        if l.credit <= max {
            return Ok(());
        }
        l.revoked = l.revoked.saturating_add(l.credit - max);
        l.credit = max;
        self.write_link_flow(link)
    }

    /// A receiving link's last grant went from `before` to `now`: the session's sum of grants follows, and
    /// its incoming window grows to that sum, so the window never holds back deliveries the application
    /// asked for; the flow that carries the grant carries the wider window.
    fn widen_session_window(&mut self, session: SessionId, before: u32, now: u32) {
        let follows = self.config.session_window_follows_credit;
        let Ok(s) = self.session_mut(session) else {
            return;
        };
        s.granted = s.granted.saturating_sub(before).saturating_add(now);
        if follows && s.granted > s.window {
            s.window = s.granted;
            s.incoming_window = s.granted.saturating_sub(s.unconsumed);
        }
    }

    /// Asks the sender of a receiving link to use up or return its credit; [`Event::DrainCompleted`] follows.
    pub fn drain(&mut self, link: LinkId) -> Result<(), EngineError> {
        if self.link(link)?.is_sender() {
            return Err(EngineError::NotAReceiver);
        }
        self.check_can_flow(link)?;
        let l = self.link_mut(link)?;
        l.drain = true;
        let credit = l.credit;
        self.write_link_flow(link)?;
        if credit == 0 {
            let l = self.link_mut(link)?;
            l.drain = false;
            self.events.push_back(Event::DrainCompleted(link));
        }
        Ok(())
    }

    /// A draining sender has nothing more to send: give back the remaining credit (advance the
    /// delivery-count, zero the credit, and tell the receiver).
    pub fn drained(&mut self, link: LinkId) -> Result<(), EngineError> {
        if !self.link(link)?.is_sender() {
            return Err(EngineError::NotASender);
        }
        self.check_can_flow(link)?;
        let l = self.link_mut(link)?;
        if !l.drain {
            return Ok(());
        }
        l.delivery_count = l.delivery_count.wrapping_add(l.credit);
        l.credit = 0;
        self.write_link_flow(link)
    }

    /// Tells the receiver how many messages this sender has waiting (`available` in `flow`).
    pub fn set_available(&mut self, link: LinkId, available: u32) -> Result<(), EngineError> {
        if !self.link(link)?.is_sender() {
            return Err(EngineError::NotASender);
        }
        self.check_can_flow(link)?;
        let l = self.link_mut(link)?;
        l.available = available;
        self.write_link_flow(link)
    }

    /// Sends a message (its encoded bytes) on a sending link, using one credit. Large payloads are split into
    /// frames of the peer's max-frame-size; frames beyond the session window wait for it to open.
    pub fn send(
        &mut self,
        link: LinkId,
        tag: Bytes,
        payload: Bytes,
        settled: bool,
    ) -> Result<DeliveryId, EngineError> {
        self.send_with_format(
            link,
            tag,
            payload,
            settled,
            crate::frame::definitions::MESSAGE_FORMAT,
        )
    }

    /// [`send`](Self::send) with an explicit message-format [AMQP 1.0 §2.8.11].
    pub fn send_with_format(
        &mut self,
        link: LinkId,
        tag: Bytes,
        payload: Bytes,
        settled: bool,
        message_format: u32,
    ) -> Result<DeliveryId, EngineError> {
        let (session, d) =
            self.begin_delivery(link, tag, payload.len(), settled, message_format)?;
        let id = d.delivery_id;
        self.queue_transfer(session, d, payload);
        Ok(DeliveryId { link, id })
    }

    /// [`send`](Self::send) for a payload the caller keeps (a message it stores, say): when the transfer can
    /// go out now in one frame, the payload is written into the output from the slice, with no reference to
    /// it kept; otherwise it is copied, to wait for the session window.
    pub fn send_slice(
        &mut self,
        link: LinkId,
        tag: Bytes,
        payload: &[u8],
        settled: bool,
    ) -> Result<DeliveryId, EngineError> {
        let format = crate::frame::definitions::MESSAGE_FORMAT;
        let (session, d) = self.begin_delivery(link, tag, payload.len(), settled, format)?;
        let id = d.delivery_id;
        if let Err(d) = self.write_whole_transfer(session, d, payload) {
            self.queue_transfer(session, d, Bytes::copy_from_slice(payload));
        }
        Ok(DeliveryId { link, id })
    }

    /// Checks that a delivery of `size` bytes may be sent on `link`, and takes its delivery-id and one credit:
    /// its session and the transfer to send, with no payload yet.
    fn begin_delivery(
        &mut self,
        link: LinkId,
        tag: Bytes,
        size: usize,
        settled: bool,
        message_format: u32,
    ) -> Result<(SessionId, PendingTransfer), EngineError> {
        let l = self.link(link)?;
        if !l.is_sender() {
            return Err(EngineError::NotASender);
        }
        if l.local != Half::Open || l.remote != Half::Open {
            return Err(EngineError::IllegalState(
                "the link is not attached at both ends",
            ));
        }
        self.check_can_flow(link)?;
        let max = l
            .remote_attach
            .as_ref()
            .and_then(|a| a.max_message_size)
            .filter(|&m| m > 0);
        if let Some(max) = max.filter(|&m| size as u64 > m) {
            return Err(EngineError::MessageTooLarge {
                size: size as u64,
                max,
            });
        }
        if l.credit == 0 {
            return Err(EngineError::NoCredit);
        }
        if tag.len() > MAX_DELIVERY_TAG {
            return Err(EngineError::TagTooLong(tag.len()));
        }
        let settled = match l.config.snd_settle_mode {
            SenderSettleMode::Settled => true,
            SenderSettleMode::Unsettled => false,
            SenderSettleMode::Mixed => settled,
        };
        let (session, handle) = (l.session, l.local_handle.unwrap_or(0));
        let s = self.session_mut(session)?;
        let id = s.next_delivery_id;
        if !settled && s.outgoing_unsettled.insert(id, link).is_err() {
            // The oldest delivery the peer has not settled is 2^31 deliveries behind: serial order would no
            // longer tell them apart.
            return Err(EngineError::Exhausted("delivery-id"));
        }
        s.next_delivery_id = id.wrapping_add(1);
        let l = self.link_mut(link)?;
        l.credit -= 1;
        l.delivery_count = l.delivery_count.wrapping_add(1);
        l.unsettled += u32::from(!settled);
        let transfer = PendingTransfer {
            link,
            handle,
            delivery_id: id,
            tag,
            payload: Bytes::new(),
            message_format,
            settled,
            offset: 0,
            aborted: false,
        };
        Ok((session, transfer))
    }

    /// Queues the transfer of a delivery begun with `begin_delivery`, with its payload, and sends what the
    /// session window allows.
    fn queue_transfer(&mut self, session: SessionId, mut d: PendingTransfer, payload: Bytes) {
        d.payload = payload;
        if let Ok(s) = self.session_mut(session) {
            s.pending.push_back(d);
        }
        self.pump(session);
    }

    /// Aborts a delivery whose frames have not all been sent: the peer discards what it got
    /// [AMQP 1.0 §2.6.14]. An aborted delivery is settled.
    pub fn abort(&mut self, delivery: DeliveryId) -> Result<(), EngineError> {
        let session = self.link(delivery.link)?.session;
        let s = self.session_mut(session)?;
        let p = s
            .pending
            .iter_mut()
            .find(|p| p.link == delivery.link && p.delivery_id == delivery.id)
            .ok_or(EngineError::UnknownDelivery)?;
        p.aborted = true;
        if s.outgoing_unsettled.remove(delivery.id).is_some() {
            self.unsettled_gone(delivery.link);
        }
        self.pump(session);
        Ok(())
    }

    /// Updates our state of a delivery and optionally settles it. For a received delivery this is the outcome
    /// (accept, reject, ...); for a sent one, settling it after the peer's outcome. Dispositions are
    /// coalesced into ranges when written.
    pub fn disposition(
        &mut self,
        delivery: DeliveryId,
        state: Option<DeliveryState>,
        settle: bool,
    ) -> Result<(), EngineError> {
        let l = self.link(delivery.link)?;
        let (session, role) = (l.session, l.config.role);
        let s = self.session_mut(session)?;
        let write = match role {
            Role::Receiver => {
                let i = s
                    .incoming_unsettled
                    .get(delivery.id)
                    .filter(|i| i.link == delivery.link)
                    .ok_or(EngineError::UnknownDelivery)?;
                let remote_settled = i.remote_settled;
                if settle {
                    s.incoming_unsettled.remove(delivery.id);
                }
                let write = !(settle && remote_settled && state.is_none());
                if settle {
                    self.unsettled_gone(delivery.link);
                }
                write
            }
            Role::Sender => {
                if s.outgoing_unsettled.get(delivery.id) != Some(&delivery.link) {
                    return Err(EngineError::UnknownDelivery);
                }
                if settle {
                    s.outgoing_unsettled.remove(delivery.id);
                    self.unsettled_gone(delivery.link);
                }
                true
            }
        };
        if write {
            self.queue_disposition(session, role, delivery.id, state, settle);
        }
        Ok(())
    }

    /// Settles a delivery without changing its state.
    pub fn settle(&mut self, delivery: DeliveryId) -> Result<(), EngineError> {
        self.disposition(delivery, None, true)
    }

    pub(super) fn on_transfer(&mut self, session: SessionId, mut t: Transfer, payload: Bytes) {
        let Some(id) = self.remote_link(session, t.handle) else {
            return;
        };
        if !self.count_incoming_transfer(session) {
            return;
        }
        let default_max = self.config.max_message_size;
        let overshoot_limit = self.config.credit_overshoot;
        let reassembly_limit = self.config.max_reassembly_bytes;
        let Ok(l) = self.link_mut(id) else { return };
        if l.is_sender() {
            self.link_error(
                id,
                Error::new(
                    ErrorCondition::NotAllowed,
                    "transfer received on a sending link",
                ),
            );
            return;
        }
        // A link we detached, or will detach as soon as we answer it: its frames are dropped.
        if l.local == Half::Closed || l.pending_error.is_some() || l.hidden {
            return;
        }
        if l.local == Half::Idle {
            // Not answered, so no credit was ever granted: not even an overshoot is plausible.
            let error = Error::new(
                ErrorCondition::TransferLimitExceeded,
                "transfer on a link that was not yet attached at our end",
            );
            self.link_error(id, error);
            return;
        }
        let max = match l.config.max_message_size {
            None => default_max,
            Some(m) => m,
        };
        let partial = match l.incoming.take() {
            Some(mut p) => {
                if t.delivery_id.is_some_and(|d| d != p.id) {
                    self.fail(Error::new(
                        ErrorCondition::NotAllowed,
                        "a new delivery began before the previous one was complete",
                    ));
                    return;
                }
                if max > 0 && (p.len() + payload.len()) as u64 > max {
                    self.drop_partial(session, p);
                    self.message_too_large(id, max);
                    return;
                }
                p.settled |= t.settled.unwrap_or(false);
                p.push(&payload);
                p
            }
            None => {
                let (Some(delivery_id), Some(tag)) = (t.delivery_id, t.delivery_tag.take()) else {
                    self.fail(Error::new(
                        ErrorCondition::InvalidField,
                        "the first transfer of a delivery lacks delivery-id or delivery-tag",
                    ));
                    return;
                };
                if tag.len() > MAX_DELIVERY_TAG {
                    let error = Error::new(
                        ErrorCondition::InvalidField,
                        format!("a delivery-tag of {} bytes is longer than 32", tag.len()),
                    );
                    self.link_error(id, error);
                    return;
                }
                if l.credit == 0 && l.revoked > 0 {
                    // Sent on credit `limit_credit` took back, before the sender heard.
                    l.revoked -= 1;
                } else if l.credit == 0 {
                    // [AMQP 1.0 §2.6.7]: beyond credit the link ends with transfer-limit-exceeded. Some
                    // transfers are taken first, for peers that overshoot when flows cross: RabbitMQ 3.10 takes
                    // each flow's credit as new, not counting what it has in flight, so it may send up to one
                    // more grant's worth.
                    let overshoot_limit = overshoot_limit.max(l.last_grant);
                    if l.overshoot >= overshoot_limit {
                        let error = Error::new(
                            ErrorCondition::TransferLimitExceeded,
                            format!(
                                "more than {overshoot_limit} transfers beyond the link credit granted"
                            ),
                        );
                        self.link_error(id, error);
                        return;
                    }
                    if !l.overshoot_logged {
                        log::warn!(
                            "link {:?}: the peer sent a transfer without link credit; {} such transfers are tolerated",
                            l.config.name,
                            overshoot_limit
                        );
                        l.overshoot_logged = true;
                    }
                    l.overshoot += 1;
                } else {
                    l.credit -= 1;
                }
                l.delivery_count = l.delivery_count.wrapping_add(1);
                if max > 0 && payload.len() as u64 > max {
                    self.message_too_large(id, max);
                    return;
                }
                // The sender's settle mode decides over the transfer's flag [AMQP 1.0 §2.7.3].
                let settled = match l.remote_attach.as_ref().map(|a| a.snd_settle_mode) {
                    Some(SenderSettleMode::Settled) => true,
                    Some(SenderSettleMode::Unsettled) => false,
                    _ => t.settled.unwrap_or(false),
                };
                if !settled {
                    l.unsettled += 1;
                }
                let partial = Partial {
                    id: delivery_id,
                    tag,
                    settled,
                    tracked: !settled,
                    message_format: t.message_format.unwrap_or(0),
                    first: payload,
                    rest: None,
                    charge: None,
                };
                // An unsettled delivery is tracked from its first frame, so deliveries of other links may
                // complete while its frames arrive [AMQP 1.0 §2.6.12].
                if !settled && !self.track_incoming(session, id, delivery_id) {
                    return;
                }
                partial
            }
        };
        let delivery = DeliveryId {
            link: id,
            id: partial.id,
        };
        if t.more && !t.aborted {
            let mut partial = partial;
            let reassembly = self.partial_bytes.clone();
            partial.charge_to(&reassembly);
            if reassembly_limit > 0 && reassembly.load(Ordering::Relaxed) > reassembly_limit {
                self.drop_partial(session, partial);
                let error = Error::new(
                    ErrorCondition::ResourceLimitExceeded,
                    format!(
                        "more than {reassembly_limit} bytes of unfinished deliveries on this connection"
                    ),
                );
                self.link_error(id, error);
                return;
            }
            if let Ok(l) = self.link_mut(id) {
                l.incoming = Some(partial);
            }
            return;
        }
        // The delivery is complete (or aborted): a drain whose credit it used up is complete after it.
        let drained = self
            .link_mut(id)
            .map(|l| {
                let done = l.drain && l.credit == 0;
                l.drain &= !done;
                done
            })
            .unwrap_or(false);
        if t.aborted {
            self.drop_partial(session, partial);
            self.events.push_back(Event::DeliveryAborted(delivery));
        } else {
            self.delivery_complete(session, partial, delivery);
        }
        if drained {
            self.events.push_back(Event::DrainCompleted(id));
        }
    }

    /// Starts tracking an unsettled incoming delivery (the link has counted it already); false (and the
    /// session ended) if its id is out of sequence.
    fn track_incoming(&mut self, session: SessionId, link: LinkId, id: u32) -> bool {
        let Ok(s) = self.session_mut(session) else {
            return false;
        };
        let incoming = Incoming {
            link,
            remote_settled: false,
        };
        if s.incoming_unsettled.insert(id, incoming).is_err() {
            self.session_error(
                session,
                Error::new(
                    ErrorCondition::NotAllowed,
                    format!("delivery-id {id} is out of sequence"),
                ),
            );
            return false;
        }
        true
    }

    /// Forgets a delivery that will not complete (aborted, or cut off by a limit).
    fn drop_partial(&mut self, session: SessionId, partial: Partial) {
        if partial.tracked {
            if let Ok(s) = self.session_mut(session) {
                if let Some(i) = s.incoming_unsettled.remove(partial.id) {
                    self.unsettled_gone(i.link);
                }
            }
        }
    }

    /// Whether `delivery` is the one `link` is still reassembling.
    pub(super) fn is_arriving(&self, link: LinkId, delivery: u32) -> bool {
        self.link(link)
            .is_ok_and(|l| l.incoming.as_ref().is_some_and(|p| p.id == delivery))
    }

    /// One of a link's entries in the unsettled maps is gone.
    pub(super) fn unsettled_gone(&mut self, link: LinkId) {
        if let Ok(l) = self.link_mut(link) {
            l.unsettled = l.unsettled.saturating_sub(1);
        }
    }

    fn message_too_large(&mut self, link: LinkId, max: u64) {
        let error = Error::new(
            ErrorCondition::MessageSizeExceeded,
            format!("message exceeds the link's max-message-size of {max}"),
        );
        self.link_error(link, error);
    }

    /// The last frame of a delivery arrived: hand it to the application. A delivery that began unsettled and
    /// was settled by a later frame is no longer tracked. (Until now it was its link's `incoming`, which is how
    /// dispositions tell deliveries the application has not been given.)
    fn delivery_complete(
        &mut self,
        session: SessionId,
        mut partial: Partial,
        delivery: DeliveryId,
    ) {
        let settled = partial.settled;
        if partial.tracked && settled {
            let Ok(s) = self.session_mut(session) else {
                return;
            };
            if s.incoming_unsettled.remove(partial.id).is_some() {
                self.unsettled_gone(delivery.link);
            }
        }
        self.events.push_back(Event::Delivery {
            delivery,
            tag: std::mem::take(&mut partial.tag),
            message_format: partial.message_format,
            settled,
            payload: partial.into_payload(),
        });
        self.delivery_queued(session);
    }
}
