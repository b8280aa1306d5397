//! The `header` message section [AMQP 1.0 §3.2.1].

composite! {
    /// Transport headers for a message [AMQP 1.0 §3.2.1].
    pub struct Header("amqp:header:list", 0x70) {
        /// Durability requirements.
        default durable: bool = false,
        /// Relative message priority.
        default priority: u8 = 4,
        /// Time to live in milliseconds.
        optional ttl: u32,
        /// True if the message has not been acquired by any other link before.
        default first_acquirer: bool = false,
        /// The number of prior unsuccessful delivery attempts.
        default delivery_count: u32 = 0,
    }
}
