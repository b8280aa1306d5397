//! The `transactional-state` delivery state [AMQP 1.0 §4.5.5].

use bytes::Bytes;

use super::Outcome;

composite! {
    /// The state of a delivery that is part of a transaction: the transaction and the provisional outcome
    /// [AMQP 1.0 §4.5.5].
    pub struct TransactionalState("amqp:transactional-state:list", 0x34) {
        /// The transaction the delivery is part of (a `transaction-id`).
        required txn_id: Bytes,
        /// The outcome the delivery will have when the transaction commits.
        optional outcome: Outcome,
    }
}
