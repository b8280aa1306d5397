//! The `declared` outcome [AMQP 1.0 §4.5.4].

use bytes::Bytes;

composite! {
    /// The outcome of a `declare` message: the transaction was declared [AMQP 1.0 §4.5.4].
    pub struct Declared("amqp:declared:list", 0x33) {
        /// The identifier the coordinator allocated to the transaction (a `transaction-id`).
        required txn_id: Bytes,
    }
}
