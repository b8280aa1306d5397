//! Turns engine events into handler callbacks, applying Proton's defaults around them.

use nucleon_protocol::engine::{Event, LinkConfig};
use nucleon_protocol::frame::{DeliveryState, Error as AmqpError, ErrorCondition, Rejected, Role};
use nucleon_protocol::{Message, RawMessage};

use crate::handler::MessagingHandler;
use crate::views::{
    AttachReply, Connection, Core, Delivery, LinkState, Receiver, Sender, Session, Tracker,
};

/// Delivers one engine event to the handler.
pub(crate) fn event<H: MessagingHandler>(h: &mut H, core: &mut Core, event: Event) {
    match event {
        Event::TlsRequested => core
            .engine
            .handle_disconnected("the peer asked for TLS, which this listener does not offer"),
        Event::Authenticated { user, .. } => core.user = user,
        Event::SaslSkipped { user } => core.user = Some(user),
        Event::ConnectionRemoteOpen(_) => {
            // Proton's default: a remotely opened connection is opened in reply.
            let _ = core.engine.open();
            h.on_connection_open(&mut Connection::new(core));
        }
        Event::ConnectionRemoteClose(error) => {
            if let Some(e) = &error {
                h.on_connection_error(&mut Connection::new(core), e);
            }
            h.on_connection_close(&mut Connection::new(core));
            let _ = core.engine.close(None);
        }
        Event::SessionRemoteBegin(s) => {
            let _ = core.engine.begin_reply(s);
            h.on_session_open(&mut Session::new(core, s));
        }
        Event::SessionRemoteEnd { session, error } => {
            if let Some(e) = &error {
                h.on_session_error(&mut Session::new(core, session), e);
            }
            h.on_session_close(&mut Session::new(core, session));
            let _ = core.engine.end(session, None);
        }
        Event::LinkRemoteAttach(link) => {
            if !core.links.contains_key(&link) {
                answer_attach(h, core, link);
            } else if refused(core, link) {
                // The peer refused our link [AMQP 1.0 §2.6.3]: not open; its detach, with the reason,
                // follows as `on_*_error` and `on_*_close`.
                return;
            }
            let Ok(config) = core.engine.link_config(link) else {
                return;
            };
            match config.role {
                Role::Sender => h.on_sender_open(&mut Sender::new(core, link)),
                Role::Receiver => h.on_receiver_open(&mut Receiver::new(core, link)),
            }
        }
        Event::LinkRemoteDetach {
            link,
            closed,
            error,
        } => {
            let Ok(role) = core.engine.link_config(link).map(|c| c.role) else {
                return;
            };
            match role {
                Role::Sender => {
                    let s = &mut Sender::new(core, link);
                    if let Some(e) = &error {
                        h.on_sender_error(s, e);
                    }
                    if closed {
                        h.on_sender_close(s);
                    } else {
                        h.on_sender_detach(s);
                    }
                }
                Role::Receiver => {
                    let r = &mut Receiver::new(core, link);
                    if let Some(e) = &error {
                        h.on_receiver_error(r, e);
                    }
                    if closed {
                        h.on_receiver_close(r);
                    } else {
                        h.on_receiver_detach(r);
                    }
                }
            }
            let _ = core.engine.detach(link, closed, None);
        }
        Event::LinkClosed(link) => core.remove_link(link),
        // As Proton: only a link attached at both ends is sendable.
        Event::LinkCredit { link, credit }
            if credit > 0 && core.engine.is_attached_locally(link) =>
        {
            h.on_sendable(&mut Sender::new(core, link));
        }
        Event::DrainRequested(link) => {
            h.on_sender_drain_start(&mut Sender::new(core, link));
            // Whatever the handler had to send is sent: give back what is left.
            let _ = core.engine.drained(link);
        }
        Event::DrainCompleted(link) => h.on_receiver_drain_finish(&mut Receiver::new(core, link)),
        Event::Delivery {
            delivery,
            payload,
            settled,
            ..
        } => {
            let auto_accept = core.links.get(&delivery.link).is_none_or(|l| l.auto_accept);
            // A handler that takes raw messages gets them checked, not decoded; any other gets them decoded
            // in one pass, as before raw messages existed.
            let received = if h.takes_raw_messages() {
                RawMessage::parse(payload).map(|m| {
                    let mut d = Delivery::new(core, delivery, settled);
                    h.on_raw_message(&mut d, m);
                    d.settled
                })
            } else {
                Message::decode(payload).map(|m| {
                    let mut d = Delivery::new(core, delivery, settled);
                    h.on_message(&mut d, m);
                    d.settled
                })
            };
            match received {
                Ok(handled) => {
                    if !handled && auto_accept {
                        Delivery::new(core, delivery, false).accept();
                    }
                }
                Err(e) => {
                    if !settled {
                        let error = AmqpError::new(ErrorCondition::DecodeError, e.to_string());
                        let state = DeliveryState::Rejected(Rejected { error: Some(error) });
                        let _ = core.engine.disposition(delivery, Some(state), true);
                    }
                    h.on_error(&crate::Error::Amqp(AmqpError::new(
                        ErrorCondition::DecodeError,
                        format!("undecodable message: {e}"),
                    )));
                }
            }
            core.refill_credit(delivery.link);
        }
        Event::DeliveryAborted(_) => {}
        Event::RemoteDisposition {
            delivery,
            state,
            settled,
        } => {
            let Ok(role) = core.engine.link_config(delivery.link).map(|c| c.role) else {
                return;
            };
            match role {
                Role::Sender => {
                    let auto_settle = core.links.get(&delivery.link).is_none_or(|l| l.auto_settle);
                    let terminal = state.as_ref().and_then(DeliveryState::outcome).is_some();
                    let outcome: Option<fn(&mut H, &mut Tracker<'_>)> = match &state {
                        Some(DeliveryState::Accepted(_)) => Some(H::on_tracker_accept),
                        Some(DeliveryState::Rejected(_)) => Some(H::on_tracker_reject),
                        Some(DeliveryState::Released(_) | DeliveryState::Modified(_)) => {
                            Some(H::on_tracker_release)
                        }
                        _ => None,
                    };
                    // The state moves into the tracker (it was cloned, per disposition event).
                    let mut t = Tracker::new(core, delivery, state);
                    if let Some(callback) = outcome {
                        callback(h, &mut t);
                    }
                    if terminal && auto_settle && !settled {
                        t.settle();
                    }
                    if settled || (terminal && auto_settle) {
                        h.on_tracker_settle(&mut t);
                    }
                }
                Role::Receiver => {
                    if settled {
                        h.on_delivery_settle(&mut Delivery::new(core, delivery, true));
                    }
                }
            }
        }
        Event::TransportError(e) => {
            core.take_transport_error(&e);
            h.on_transport_error(&mut Connection::new(core), &e)
        }
        Event::TransportClosed => h.on_transport_close(&mut Connection::new(core)),
        _ => {}
    }
}

/// Proton's default for a link the peer attached: attach in reply, mirroring its terms; a receiver gets the
/// default credit window. The handler may change the reply first (`on_link_attach_request`).
/// Whether the peer's attach answering ours has a null terminus where ours named one: a refusal.
fn refused(core: &Core, link: nucleon_protocol::engine::LinkId) -> bool {
    let (Ok(Some(remote)), Ok(ours)) = (
        core.engine.remote_attach(link),
        core.engine.link_config(link),
    ) else {
        return false;
    };
    match ours.role {
        Role::Sender => remote.target.is_none(),
        Role::Receiver => remote.source.is_none(),
    }
}

fn answer_attach<H: MessagingHandler>(
    h: &mut H,
    core: &mut Core,
    link: nucleon_protocol::engine::LinkId,
) {
    let Ok(Some(remote)) = core.engine.remote_attach(link) else {
        return;
    };
    let Ok(ours) = core.engine.link_config(link) else {
        return;
    };
    let role = ours.role;
    let mut reply = AttachReply {
        role,
        source: remote.source.clone(),
        target: remote.target.clone(),
        credit_window: if role == Role::Receiver { 10 } else { 0 },
    };
    let config = LinkConfig {
        name: remote.name.clone(),
        role,
        snd_settle_mode: remote.snd_settle_mode,
        rcv_settle_mode: remote.rcv_settle_mode,
        ..LinkConfig::default()
    };
    h.on_link_attach_request(&mut reply);
    let address = match role {
        Role::Sender => reply.source.as_ref().and_then(|s| s.address.clone()),
        Role::Receiver => reply.target.as_ref().and_then(|t| t.address.clone()),
    };
    let window = if role == Role::Receiver {
        reply.credit_window
    } else {
        0
    };
    let config = LinkConfig {
        source: reply.source,
        target: reply.target,
        ..config
    };
    core.add_link(
        link,
        LinkState {
            key: 0,
            auto_settle: true,
            auto_accept: true,
            credit_window: window,
            address,
            closing: false,
            config: None,
        },
    );
    if core.engine.attach_reply(link, config).is_ok() && window > 0 {
        let _ = core.engine.add_credit(link, window);
    }
}
