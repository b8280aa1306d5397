//! The container's admission gate: the one piece of state that `ContainerHandle` (any thread) and the
//! supervisor actor share. A handle passes the gate before it sends the supervisor a connection or a
//! listener to start; the supervisor finishes the container only through the gate, and only when nothing
//! that passed is still on its way. So a `connect` that returned `Ok` always reaches the supervisor before
//! it can stop the workers, and a `connect` after that fails: there is no third outcome.

use std::sync::Mutex;

use crate::error::Error;

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
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Admits one connection or listener, whose message to the supervisor must follow (or, if it cannot
    /// be sent, [`arrived`](Self::arrived) undo this). [`Error::ContainerStopping`] once closed.
    pub(crate) fn enter(&self) -> Result<(), Error> {
        let mut s = self.state();
        if s.closed {
            return Err(Error::ContainerStopping);
        }
        s.in_flight += 1;
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_admitted_entry_holds_the_finish_until_it_arrives() {
        let g = Gate::default();
        g.enter().expect("open");
        g.close();
        assert_eq!(g.enter(), Err(Error::ContainerStopping));
        assert!(!g.try_finish(), "one admitted entry is on its way");
        g.arrived();
        assert!(g.try_finish());
        assert!(g.is_closed());
    }

    #[test]
    fn finishing_closes_the_gate() {
        let g = Gate::default();
        assert!(g.try_finish());
        assert_eq!(g.enter(), Err(Error::ContainerStopping));
    }
}
