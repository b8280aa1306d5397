//! The `attach` performative [AMQP 1.0 §2.7.3].

use super::{ReceiverSettleMode, Role, SenderSettleMode, Source, Target};
use crate::codec::{Map, Symbol};

composite! {
    /// Attaches a link to a session [AMQP 1.0 §2.7.3].
    pub struct Attach("amqp:attach:list", 0x12) {
        /// The name of the link.
        required name: String,
        /// The handle for the link while attached.
        required handle: u32,
        /// The role of the link endpoint.
        required role: Role,
        /// The settlement policy for the sender.
        default snd_settle_mode: SenderSettleMode = SenderSettleMode::Mixed,
        /// The settlement policy of the receiver.
        default rcv_settle_mode: ReceiverSettleMode = ReceiverSettleMode::First,
        /// The source for messages.
        optional source: Source,
        /// The target for messages.
        optional target: Target,
        /// Unsettled delivery state, keyed by delivery-tag.
        optional unsettled: Map,
        /// True if the unsettled state is not comprehensive.
        default incomplete_unsettled: bool = false,
        /// The sender's initial value for delivery-count.
        optional initial_delivery_count: u32,
        /// The maximum message size supported by the link endpoint.
        optional max_message_size: u64,
        /// Extension capabilities the sender supports.
        optional offered_capabilities: Vec<Symbol>,
        /// Extension capabilities the sender can use if the receiver supports them.
        optional desired_capabilities: Vec<Symbol>,
        /// Link properties.
        optional properties: Map,
    }
}
