//! The `released` outcome [AMQP 1.0 §3.4.4].

composite! {
    /// The message was not and will not be acted upon; it may be redelivered [AMQP 1.0 §3.4.4].
    pub struct Released("amqp:released:list", 0x26) {}
}
