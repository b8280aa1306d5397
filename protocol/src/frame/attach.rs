//! The `attach` performative [AMQP 1.0 §2.7.3].

use super::{
    check_descriptor, check_descriptor_kind, Alternatives, Coordinator, ReceiverSettleMode, Role,
    SenderSettleMode, Source, Target,
};
use crate::codec::{codes, Decode, DecodeError, Decoder};
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
        optional target: Target
            | /// The target when it is a transaction coordinator [AMQP 1.0 §4.5.1] rather than a
              /// [`Target`]: the link carries `declare` and `discharge` messages. `None` when `target` is set,
              /// which takes precedence when encoding.
              coordinator: Coordinator,
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

/// The target of an attach: a [`Target`], or a [`Coordinator`] for a link to a transaction coordinator
/// [AMQP 1.0 §2.7.3, §4.5.1].
impl Decode for Alternatives<Target, Coordinator> {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        if code != codes::DESCRIBED {
            return Err(dec.unexpected("target or coordinator", code));
        }
        let descriptor = dec.read_descriptor()?;
        if check_descriptor_kind(&descriptor, Coordinator::CODE, Coordinator::SYMBOL) {
            return Coordinator::decode_fields(dec).map(Alternatives::Second);
        }
        check_descriptor(dec, &descriptor, Target::CODE, Target::SYMBOL)?;
        Target::decode_fields(dec).map(Alternatives::First)
    }
}

impl Attach {
    /// True when the attach's target is a transaction coordinator [AMQP 1.0 §4.5.1]: a link a peer opens to
    /// declare and discharge transactions.
    pub fn is_coordinator(&self) -> bool {
        self.coordinator.is_some()
    }
}
