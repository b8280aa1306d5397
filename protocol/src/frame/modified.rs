//! The `modified` outcome [AMQP 1.0 §3.4.5].

use crate::codec::Map;

composite! {
    /// The message was modified but not processed [AMQP 1.0 §3.4.5].
    pub struct Modified("amqp:modified:list", 0x27) {
        /// Count the transfer as an unsuccessful delivery attempt (increment delivery-count).
        default delivery_failed: bool = false,
        /// Do not redeliver this message to this link's receiver.
        default undeliverable_here: bool = false,
        /// Annotations to merge into the message's message-annotations.
        optional message_annotations: Map,
    }
}
