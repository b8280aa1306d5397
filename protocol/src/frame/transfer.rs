//! The `transfer` performative [AMQP 1.0 §2.7.5].

use bytes::Bytes;

use super::{DeliveryState, ReceiverSettleMode};

composite! {
    /// Transfers (part of) a message over a link [AMQP 1.0 §2.7.5]. The payload follows the performative
    /// in the same frame.
    pub struct Transfer("amqp:transfer:list", 0x14) {
        /// The link handle.
        required handle: u32,
        /// The delivery-id; required on the first transfer of a delivery.
        optional delivery_id: u32,
        /// The delivery-tag; required on the first transfer of a delivery.
        optional delivery_tag: Bytes,
        /// The format of the message payload.
        optional message_format: u32,
        /// True if the delivery is settled by the sender.
        optional settled: bool,
        /// True if more transfers follow for this delivery.
        default more: bool = false,
        /// The receiver settle mode for this delivery, overriding the link's.
        optional rcv_settle_mode: ReceiverSettleMode,
        /// The state of the delivery at the sender.
        optional state: DeliveryState,
        /// Whether this is a resumed delivery.
        default resume: bool = false,
        /// True if the delivery is aborted.
        default aborted: bool = false,
        /// The peer may delay acting on this transfer.
        default batchable: bool = false,
    }
}
