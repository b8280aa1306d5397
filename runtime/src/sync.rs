//! The synchronization primitives of the small shared-state types ([`Signal`](crate::signal::Signal),
//! [`Gate`](crate::gate::Gate)). `tests/loom_state.rs` compiles those same files against a module of this
//! name that re-exports `loom`'s versions instead, to model-check them.

pub(crate) use std::sync::atomic::AtomicBool;
pub(crate) use std::sync::{Mutex, MutexGuard};
