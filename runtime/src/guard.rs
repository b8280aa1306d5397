//! The one panic guard around user code: handler callbacks and work items, handler factories
//! (`ListenHandler::on_accept`, the factory of `connect_with_queue`), the listener's callbacks and
//! `ContainerHandle::schedule` closures. A panic is caught and logged here; the caller decides what it
//! ends (at most its own connection), so the worker, the supervisor and every other connection go on.

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `f`. A panic is caught, logged as a panic of `what`, and its message returned as the error.
pub(crate) fn run<R>(what: &str, f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".to_string());
        log::error!("{what} panicked ({message})");
        message
    })
}
