//! The `flow` performative [AMQP 1.0 §2.7.4].

use crate::codec::Map;

composite! {
    /// Updates link and session flow state [AMQP 1.0 §2.7.4].
    pub struct Flow("amqp:flow:list", 0x13) {
        /// The next incoming transfer-id expected by the sender of this flow.
        optional next_incoming_id: u32,
        /// The sender's incoming window.
        required incoming_window: u32,
        /// The next outgoing transfer-id of the sender of this flow.
        required next_outgoing_id: u32,
        /// The sender's outgoing window.
        required outgoing_window: u32,
        /// The link this flow refers to, if any.
        optional handle: u32,
        /// The link's delivery-count at the sender of this flow.
        optional delivery_count: u32,
        /// The link's current credit.
        optional link_credit: u32,
        /// Messages the sender has available to send.
        optional available: u32,
        /// The drain mode of the link.
        default drain: bool = false,
        /// Request the peer's flow state in reply.
        default echo: bool = false,
        /// Link state properties.
        optional properties: Map,
    }
}
