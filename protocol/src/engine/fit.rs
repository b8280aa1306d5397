//! Keeping what we send within the peer's max-frame-size [AMQP 1.0 §2.7.1].
//!
//! The frames most likely to grow past a small max-frame-size are the ones that echo what a peer gave us: an
//! error whose description quotes it, a reply `attach` that mirrors its terminus. Before such a frame is
//! written, [`fit`] drops or shortens what is optional in it, largest first, until it fits: an error's `info`,
//! then its description (cut at a character boundary), then the error itself; an `attach`'s properties,
//! capabilities, unsettled map and terminus extras. What still does not fit is reported to the caller.

use crate::codec::Encode;
use crate::frame::{Attach, Close, DeliveryState, Detach, End, Error, FrameHeader, Performative};

/// Shrinks `p` until a frame carrying it and `payload` bytes is at most `limit` bytes. Returns false if even
/// the smallest form is too large.
pub(super) fn fit(p: &mut Performative, payload: usize, limit: usize) -> bool {
    let fits = |p: &Performative| FrameHeader::SIZE + p.encoded_size() + payload <= limit;
    if fits(p) {
        return true;
    }
    shrink(p, payload, limit);
    fits(p)
}

/// Applies the reductions in order, stopping as soon as the frame fits.
fn shrink(p: &mut Performative, payload: usize, limit: usize) {
    for step in 0..4 {
        let size = FrameHeader::SIZE + p.encoded_size() + payload;
        if size <= limit {
            return;
        }
        reduce(p, step, size - limit);
    }
}

/// Reduction number `step` of `p`, which is `over` bytes too large.
fn reduce(p: &mut Performative, step: usize, over: usize) {
    match p {
        Performative::Close(Close { error })
        | Performative::End(End { error })
        | Performative::Detach(Detach { error, .. }) => reduce_error(error, step, over),
        Performative::Disposition(d) => match &mut d.state {
            Some(DeliveryState::Rejected(r)) => reduce_error(&mut r.error, step, over),
            Some(DeliveryState::Modified(m)) => m.message_annotations = None,
            _ => {}
        },
        Performative::Attach(a) => reduce_attach(a, step),
        _ => {}
    }
}

fn reduce_attach(a: &mut Attach, step: usize) {
    match step {
        0 => a.properties = None,
        1 => {
            a.unsettled = None;
            a.incomplete_unsettled = true;
        }
        2 => {
            a.offered_capabilities = None;
            a.desired_capabilities = None;
        }
        _ => {
            if let Some(s) = &mut a.source {
                s.filter = None;
                s.dynamic_node_properties = None;
                s.capabilities = None;
                s.outcomes = None;
                s.default_outcome = None;
            }
            if let Some(t) = &mut a.target {
                t.dynamic_node_properties = None;
                t.capabilities = None;
            }
        }
    }
}

/// One reduction of an error: 0 drops `info`, 1 cuts the description by `over` bytes (and a few more for its
/// shorter length prefix), 2 drops the description, 3 drops the error.
fn reduce_error(e: &mut Option<Error>, step: usize, over: usize) {
    if step >= 3 {
        *e = None;
        return;
    }
    let Some(e) = e else { return };
    match step {
        0 => e.info = None,
        1 => {
            if let Some(d) = &mut e.description {
                let keep = d.len().saturating_sub(over + 8);
                truncate_at_char(d, keep);
            }
        }
        _ => e.description = None,
    }
}

/// Cuts `s` to at most `max` bytes, at a character boundary, marking the cut with an ellipsis when it fits.
pub(super) fn truncate_at_char(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let ellipsis = "…";
    let budget = max.saturating_sub(ellipsis.len());
    let mut cut = budget;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    s.truncate(cut);
    if s.len() + ellipsis.len() <= max {
        s.push_str(ellipsis);
    }
}
