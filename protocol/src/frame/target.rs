//! The `target` terminus [AMQP 1.0 §3.5.4].

use super::{TerminusDurability, TerminusExpiryPolicy};
use crate::codec::{Map, Symbol, Value};

composite! {
    /// Where a link's messages go [AMQP 1.0 §3.5.4].
    pub struct Target("amqp:target:list", 0x29) {
        /// The address of the target node, when it is a string or a symbol [AMQP 1.0 §3.5.4].
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
        /// Extension capabilities the receiver supports or desires.
        optional capabilities: Vec<Symbol>,
    }
}

impl Target {
    /// A target with just an address.
    pub fn with_address(address: impl Into<String>) -> Self {
        Target {
            address: Some(address.into()),
            ..Target::default()
        }
    }
}
