//! Keeping what we send within the peer's max-frame-size [AMQP 1.0 §2.7.1].
//!
//! The frames most likely to grow past a small max-frame-size are the ones that echo what a peer gave us: an
//! error whose description quotes it, a reply `attach` that mirrors its terminus. Before such a frame is
//! written, [`fit`] drops or shortens what is optional in it until it fits: an error's `info` and description
//! (cut at a character boundary), then the error itself; an `attach`'s properties, unsettled map,
//! capabilities and terminus extras. What still does not fit is reported to the caller.

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

/// One reduction of an error `over` bytes too large: first [`Error::truncated`] (info dropped, the description
/// cut at a character boundary), then no error at all.
fn reduce_error(e: &mut Option<Error>, step: usize, over: usize) {
    match e {
        Some(error) if step == 0 => {
            let fits = error.encoded_size().saturating_sub(over);
            *error = error.truncated(fits);
        }
        _ => *e = None,
    }
}
