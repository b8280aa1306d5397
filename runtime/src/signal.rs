//! [`Signal`]: the coalescing flag behind `ConnectionHandle::wake` and the work queue's `WorkReady`. Many
//! raises become one zero-payload actor message: only the raise that finds the flag clear sends it. The
//! actor clears the flag before it looks at what the raisers left (state, pending work), so a raise that
//! sends nothing is always seen by the callback of the message already on its way.
//! Model-checked in `tests/loom_state.rs`.

use std::sync::atomic::Ordering;

use crate::sync::AtomicBool;

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Signal(AtomicBool);

impl Signal {
    /// Raises the signal. True when it was clear: the caller must send the one message.
    pub(crate) fn raise(&self) -> bool {
        !self.0.swap(true, Ordering::AcqRel)
    }

    /// Clears the signal, before the consumer looks at what the raisers left. A read-modify-write, not a
    /// store: it reads the `true` written by the latest raise that sent no message, and (Acquire) makes
    /// everything that thread did before raising visible to what follows. A plain store lets the
    /// consumer's reads overtake it (store-load reordering, even on x86), so a raise could find the flag
    /// still set, send nothing, and have its data missed: a lost wake.
    pub(crate) fn clear(&self) {
        self.0.swap(false, Ordering::AcqRel);
    }
}
