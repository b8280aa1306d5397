//! The `delivery-annotations` message section [AMQP 1.0 §3.2.2].

use crate::codec::Map;

described_newtype! {
    /// Delivery-specific non-standard properties, for the next hop only [AMQP 1.0 §3.2.2].
    pub struct DeliveryAnnotations("amqp:delivery-annotations:map", 0x71, Map);
}
