//! The `sasl-mechanisms` frame [AMQP 1.0 §5.3.3.1].

use crate::codec::Symbol;

composite! {
    /// The server's advertisement of its SASL mechanisms [AMQP 1.0 §5.3.3.1].
    pub struct SaslMechanisms("amqp:sasl-mechanisms:list", 0x40) {
        /// Supported SASL mechanisms, in the server's order of preference.
        required sasl_server_mechanisms: Vec<Symbol>,
    }
}
