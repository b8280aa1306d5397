//! The `disposition` performative [AMQP 1.0 §2.7.6].

use super::{DeliveryState, Role};

composite! {
    /// Informs the peer of delivery state changes for a range of deliveries [AMQP 1.0 §2.7.6].
    pub struct Disposition("amqp:disposition:list", 0x15) {
        /// Which side's deliveries the range refers to.
        required role: Role,
        /// The lower bound of the delivery-id range.
        required first: u32,
        /// The upper bound of the range (defaults to `first`).
        optional last: u32,
        /// True if the deliveries are settled.
        default settled: bool = false,
        /// The new state of the deliveries.
        optional state: DeliveryState,
        /// The peer may delay acting on this disposition.
        default batchable: bool = false,
    }
}
