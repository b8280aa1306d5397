//! The `discharge` message body [AMQP 1.0 §4.5.3].

use bytes::Bytes;

composite! {
    /// Asks a coordinator to commit or roll back a transaction; the body of a message sent to a coordinator
    /// [AMQP 1.0 §4.5.3].
    pub struct Discharge("amqp:discharge:list", 0x32) {
        /// The transaction to discharge: a `transaction-id` [AMQP 1.0 §4.5.4].
        required txn_id: Bytes,
        /// True to roll the transaction back; false (or absent) to commit it.
        optional fail: bool,
    }
}
