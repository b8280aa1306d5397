//! The `received` delivery state [AMQP 1.0 §3.4.1].

composite! {
    /// How much of a delivery has been received; used to resume a partial transfer [AMQP 1.0 §3.4.1].
    pub struct Received("amqp:received:list", 0x23) {
        /// The section the receiver has got to.
        required section_number: u32,
        /// The first byte of that section not yet received.
        required section_offset: u64,
    }
}
