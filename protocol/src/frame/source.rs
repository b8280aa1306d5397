//! The `source` terminus [AMQP 1.0 §3.5.3].

use super::{Outcome, TerminusDurability, TerminusExpiryPolicy};
use crate::codec::{Map, Symbol, Value};

composite! {
    /// Where a link's messages come from [AMQP 1.0 §3.5.3].
    pub struct Source("amqp:source:list", 0x28) {
        /// The address of the source node, when it is a string or a symbol [AMQP 1.0 §3.5.3].
        optional address: String
            | /// An address of another type (the spec allows any type that provides `address`), kept as
              /// received so that re-encoding preserves it. `None` when `address` is set, which takes
              /// precedence when encoding.
              other_address: Value,
        /// What the terminus keeps durably.
        default durable: TerminusDurability = TerminusDurability::None,
        /// When the expiry timer starts.
        default expiry_policy: TerminusExpiryPolicy = TerminusExpiryPolicy::SessionEnd,
        /// Seconds before the terminus expires.
        default timeout: u32 = 0,
        /// Ask the peer to create the node, and tell us its address.
        default dynamic: bool = false,
        /// Properties of the dynamically created node.
        optional dynamic_node_properties: Map,
        /// `move` or `copy`.
        optional distribution_mode: Symbol,
        /// Predicates that filter the messages admitted onto the link.
        optional filter: Map,
        /// The outcome for unsettled transfers on a closed link.
        optional default_outcome: Outcome,
        /// The outcomes the source supports.
        optional outcomes: Vec<Symbol>,
        /// Extension capabilities the sender supports or desires.
        optional capabilities: Vec<Symbol>,
    }
}

impl Source {
    /// A source with just an address.
    pub fn with_address(address: impl Into<String>) -> Self {
        Source {
            address: Some(address.into()),
            ..Source::default()
        }
    }
}
