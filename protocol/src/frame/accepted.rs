//! The `accepted` outcome [AMQP 1.0 §3.4.2].

composite! {
    /// The receiving application has successfully processed the message [AMQP 1.0 §3.4.2].
    pub struct Accepted("amqp:accepted:list", 0x24) {}
}
