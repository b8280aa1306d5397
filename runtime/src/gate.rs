//! The container's admission gate: the one piece of state that `ContainerHandle` (any thread) and the
//! supervisor actor share. A handle passes the gate before it sends the supervisor a connection or a
//! listener to start; the supervisor finishes the container only through the gate, and only when nothing
//! that passed is still on its way. So a `connect` that returned `Ok` always reaches the supervisor before
//! it can stop the workers, and a `connect` after that fails: there is no third outcome.
//! Model-checked in `tests/loom_state.rs`.

use crate::sync::{Mutex, MutexGuard};

#[derive(Debug, Default)]
struct State {
    /// `stop()` was called, or the container finished: nothing new passes.
    closed: bool,
    /// Admitted connections and listeners whose message the supervisor has not handled yet.
    in_flight: usize,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Gate(Mutex<State>);

impl Gate {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one connection or listener, whose message to the supervisor must follow (or, if it cannot
    /// be sent, [`arrived`](Self::arrived) undo this). False once closed.
    pub(crate) fn enter(&self) -> bool {
        let mut s = self.state();
        if s.closed {
            return false;
        }
        s.in_flight += 1;
        true
    }

    /// An admitted message reached the supervisor (or was never sent).
    pub(crate) fn arrived(&self) {
        let mut s = self.state();
        s.in_flight = s.in_flight.saturating_sub(1);
    }

    /// Refuses everything from now on (`stop()`); what passed before still arrives.
    pub(crate) fn close(&self) {
        self.state().closed = true;
    }

    /// The supervisor may finish (and closes the gate for good) only when nothing admitted is on its way.
    pub(crate) fn try_finish(&self) -> bool {
        let mut s = self.state();
        if s.in_flight > 0 {
            return false;
        }
        s.closed = true;
        true
    }

    /// True once closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.state().closed
    }
}
