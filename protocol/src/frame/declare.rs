//! The `declare` message body [AMQP 1.0 §4.5.2].

use crate::codec::Value;

composite! {
    /// Asks a coordinator to declare a transaction; the body of a message sent to a coordinator
    /// [AMQP 1.0 §4.5.2].
    pub struct Declare("amqp:declare:list", 0x31) {
        /// The identifier of a global transaction to associate with (none for a local transaction).
        optional global_id: Value,
    }
}
