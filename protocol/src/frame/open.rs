//! The `open` performative [AMQP 1.0 §2.7.1].

use crate::codec::{Map, Symbol};

composite! {
    /// Negotiates connection parameters [AMQP 1.0 §2.7.1].
    pub struct Open("amqp:open:list", 0x10) {
        /// The id of the source container.
        required container_id: String,
        /// The name of the target host.
        optional hostname: String,
        /// The largest frame size the sender can accept.
        default max_frame_size: u32 = u32::MAX,
        /// The highest channel number that can be used on the connection.
        default channel_max: u16 = u16::MAX,
        /// Idle time-out in milliseconds.
        optional idle_time_out: u32,
        /// Locales available for outgoing text.
        optional outgoing_locales: Vec<Symbol>,
        /// Desired locales for incoming text, in order of preference.
        optional incoming_locales: Vec<Symbol>,
        /// Extension capabilities the sender supports.
        optional offered_capabilities: Vec<Symbol>,
        /// Extension capabilities the sender can use if the receiver supports them.
        optional desired_capabilities: Vec<Symbol>,
        /// Connection properties.
        optional properties: Map,
    }
}
