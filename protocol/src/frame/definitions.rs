//! The restricted types of the transport and messaging layers [AMQP 1.0 §2.8, §3.5].

use crate::codec::Symbol;

restricted! {
    /// Which end of a link this is [AMQP 1.0 §2.8.1].
    pub enum Role: bool as "role" {
        /// The sending end.
        Sender = false,
        /// The receiving end.
        Receiver = true,
    }
}

restricted! {
    /// How the sender settles deliveries [AMQP 1.0 §2.8.2].
    pub enum SenderSettleMode: u8 as "sender-settle-mode" {
        /// The sender sends every delivery unsettled.
        Unsettled = 0,
        /// The sender sends every delivery settled.
        Settled = 1,
        /// The sender chooses per delivery.
        Mixed = 2,
    }
}

restricted! {
    /// When the receiver settles deliveries [AMQP 1.0 §2.8.3].
    pub enum ReceiverSettleMode: u8 as "receiver-settle-mode" {
        /// The receiver settles spontaneously, without waiting for the sender.
        First = 0,
        /// The receiver settles only after the sender has settled.
        Second = 1,
    }
}

restricted! {
    /// What a terminus keeps durably [AMQP 1.0 §3.5.5].
    pub enum TerminusDurability: u32 as "terminus-durability" {
        /// No terminus state is retained durably.
        None = 0,
        /// Only the existence and configuration of the terminus is retained.
        Configuration = 1,
        /// The configuration and the unsettled state are retained.
        UnsettledState = 2,
    }
}

restricted! {
    /// When the expiry timer of a terminus starts [AMQP 1.0 §3.5.6].
    pub enum TerminusExpiryPolicy: Symbol as "terminus-expiry-policy" {
        /// When the link is detached.
        LinkDetach = Symbol::from_static("link-detach"),
        /// When the session ends.
        SessionEnd = Symbol::from_static("session-end"),
        /// When the connection closes.
        ConnectionClose = Symbol::from_static("connection-close"),
        /// The terminus never expires.
        Never = Symbol::from_static("never"),
    }
}

restricted! {
    /// The result of a SASL exchange [AMQP 1.0 §5.3.3.6].
    pub enum SaslCode: u8 as "sasl-code" {
        /// Authentication succeeded.
        Ok = 0,
        /// Failed because of bad credentials.
        Auth = 1,
        /// Failed because of a system error.
        Sys = 2,
        /// Failed because of an unrecoverable system error.
        SysPerm = 3,
        /// Failed because of a transient system error.
        SysTemp = 4,
    }
}

/// Distribution mode `move`: a message is given to one consumer and leaves the node [AMQP 1.0 §3.5.7].
pub const DISTRIBUTION_MODE_MOVE: Symbol = Symbol::from_static("move");
/// Distribution mode `copy`: consumers browse; messages stay on the node [AMQP 1.0 §3.5.7].
pub const DISTRIBUTION_MODE_COPY: Symbol = Symbol::from_static("copy");

/// Lifetime policy `delete-on-close` (descriptor `amqp:delete-on-close:list`) [AMQP 1.0 §3.5.10].
pub const DELETE_ON_CLOSE: u64 = 0x2b;
/// Lifetime policy `delete-on-no-links` [AMQP 1.0 §3.5.11].
pub const DELETE_ON_NO_LINKS: u64 = 0x2c;
/// Lifetime policy `delete-on-no-messages` [AMQP 1.0 §3.5.12].
pub const DELETE_ON_NO_MESSAGES: u64 = 0x2d;
/// Lifetime policy `delete-on-no-links-or-messages` [AMQP 1.0 §3.5.13].
pub const DELETE_ON_NO_LINKS_OR_MESSAGES: u64 = 0x2e;

/// The standard message format: an AMQP bare message with its annotations [AMQP 1.0 §2.8.11].
pub const MESSAGE_FORMAT: u32 = 0;
