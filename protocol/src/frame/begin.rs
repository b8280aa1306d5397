//! The `begin` performative [AMQP 1.0 §2.7.2].

use crate::codec::{Map, Symbol};

composite! {
    /// Begins a session on a channel [AMQP 1.0 §2.7.2].
    pub struct Begin("amqp:begin:list", 0x11) {
        /// The remote channel for this session, when answering a peer's begin.
        optional remote_channel: u16,
        /// The transfer-id of the first transfer id the sender will send.
        required next_outgoing_id: u32,
        /// The initial incoming-window of the sender.
        required incoming_window: u32,
        /// The initial outgoing-window of the sender.
        required outgoing_window: u32,
        /// The maximum handle value that can be used on the session.
        default handle_max: u32 = u32::MAX,
        /// Extension capabilities the sender supports.
        optional offered_capabilities: Vec<Symbol>,
        /// Extension capabilities the sender can use if the receiver supports them.
        optional desired_capabilities: Vec<Symbol>,
        /// Session properties.
        optional properties: Map,
    }
}
