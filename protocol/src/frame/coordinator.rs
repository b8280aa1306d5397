//! The `coordinator` target [AMQP 1.0 §4.5.1].

use crate::codec::Symbol;

composite! {
    /// The target of a link to a transaction coordinator, over which `declare` and `discharge` messages are
    /// sent [AMQP 1.0 §4.5.1]. It takes the place of a [`Target`](super::Target) in an `attach`.
    pub struct Coordinator("amqp:coordinator:list", 0x30) {
        /// The transaction capabilities the coordinator supports or desires [AMQP 1.0 §4.5.7].
        optional capabilities: Vec<Symbol>,
    }
}
