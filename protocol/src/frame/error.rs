//! The `error` composite and every error condition the spec defines [AMQP 1.0 §2.8.14-§2.8.18].

use std::fmt;

use crate::codec::{Decode, DecodeError, Decoder, Encode, Map, Symbol};

composite! {
    /// Details of an error: a condition, a human description and extra info [AMQP 1.0 §2.8.14].
    pub struct Error("amqp:error:list", 0x1d) {
        /// A symbolic value indicating the error condition.
        required condition: ErrorCondition,
        /// Descriptive text about the error condition.
        optional description: String,
        /// Map carrying information about the error condition.
        optional info: Map,
    }
}

impl Error {
    /// An error with a condition and a description.
    pub fn new(condition: ErrorCondition, description: impl Into<String>) -> Self {
        Error {
            condition,
            description: Some(description.into()),
            info: None,
        }
    }
}

impl Error {
    /// This error cut down to encode in at most `max_bytes` bytes, for a `close`, `end` or `detach` that must
    /// fit the peer's max-frame-size [AMQP 1.0 §2.7.1]: the `info` map is dropped first (it cannot be shortened
    /// and keep its meaning), then the description is shortened at a UTF-8 character boundary, down to none.
    /// The condition is always kept whole, so an error whose condition alone exceeds `max_bytes` comes back
    /// with just its condition, still larger than asked.
    pub fn truncated(&self, max_bytes: usize) -> Error {
        let mut e = self.clone();
        if e.encoded_size() <= max_bytes {
            return e;
        }
        e.info = None;
        let Some(description) = e.description.take() else {
            return e;
        };
        // Each pass removes the excess (the encoding shrinks by at least as much as the text does); a pass that
        // lands inside a character backs off to its start.
        let mut keep = description.len();
        loop {
            e.description = Some(truncate_utf8(&description, keep).to_owned());
            let size = e.encoded_size();
            if size <= max_bytes {
                return e;
            }
            if keep == 0 {
                e.description = None;
                return e;
            }
            keep = keep.saturating_sub(size - max_bytes);
        }
    }
}

/// The longest prefix of `s` of at most `max_bytes` bytes that ends on a character boundary.
pub fn truncate_utf8(s: &str, max_bytes: usize) -> &str {
    if s.len() <= max_bytes {
        return s;
    }
    let end = (0..=max_bytes)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0);
    &s[..end]
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.condition)?;
        if let Some(d) = &self.description {
            write!(f, ": {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

macro_rules! conditions {
    ($($(#[$meta:meta])* $variant:ident = $sym:literal,)*) => {
        /// An error condition symbol [AMQP 1.0 §2.8.15-§2.8.18, §4.5.8]. Conditions the spec does not define
        /// are kept as [`ErrorCondition::Custom`].
        #[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
        pub enum ErrorCondition {
            $($(#[$meta])* $variant,)*
            /// A condition outside the spec, e.g. a broker-specific one.
            Custom(Symbol),
        }

        impl ErrorCondition {
            /// The condition's symbol.
            pub fn symbol(&self) -> Symbol {
                match self {
                    $(ErrorCondition::$variant => Symbol::from_static($sym),)*
                    ErrorCondition::Custom(s) => s.clone(),
                }
            }

            /// The condition for a symbol.
            pub fn from_symbol(s: Symbol) -> Self {
                match s.as_str() {
                    $($sym => ErrorCondition::$variant,)*
                    _ => ErrorCondition::Custom(s),
                }
            }
        }
    };
}

conditions! {
    /// `amqp:internal-error`: an internal error occurred.
    #[default]
    InternalError = "amqp:internal-error",
    /// `amqp:not-found`: a peer attempted to work with a remote entity that does not exist.
    NotFound = "amqp:not-found",
    /// `amqp:unauthorized-access`: a peer attempted to work with a remote entity it has no access to.
    UnauthorizedAccess = "amqp:unauthorized-access",
    /// `amqp:decode-error`: data could not be decoded.
    DecodeError = "amqp:decode-error",
    /// `amqp:resource-limit-exceeded`: a peer exceeded its resource allocation.
    ResourceLimitExceeded = "amqp:resource-limit-exceeded",
    /// `amqp:not-allowed`: the peer tried to use a frame in a manner that is inconsistent with the spec.
    NotAllowed = "amqp:not-allowed",
    /// `amqp:invalid-field`: an invalid field was passed in a frame body.
    InvalidField = "amqp:invalid-field",
    /// `amqp:not-implemented`: the peer tried to use functionality that is not implemented.
    NotImplemented = "amqp:not-implemented",
    /// `amqp:resource-locked`: the client attempted to work with a locked server object.
    ResourceLocked = "amqp:resource-locked",
    /// `amqp:precondition-failed`: the client made a request that was not allowed because a precondition failed.
    PreconditionFailed = "amqp:precondition-failed",
    /// `amqp:resource-deleted`: a server entity the client is working with has been deleted.
    ResourceDeleted = "amqp:resource-deleted",
    /// `amqp:illegal-state`: the peer sent a frame that is not permitted in the current state.
    IllegalState = "amqp:illegal-state",
    /// `amqp:frame-size-too-small`: the peer cannot send a frame because the smallest encoding is too big.
    FrameSizeTooSmall = "amqp:frame-size-too-small",
    /// `amqp:connection:forced`: an operator intervened to close the connection.
    ConnectionForced = "amqp:connection:forced",
    /// `amqp:connection:framing-error`: a valid frame header cannot be formed from the incoming byte stream.
    FramingError = "amqp:connection:framing-error",
    /// `amqp:connection:redirect`: the container is no longer available on the current connection.
    ConnectionRedirect = "amqp:connection:redirect",
    /// `amqp:session:window-violation`: the peer violated incoming window for the session.
    WindowViolation = "amqp:session:window-violation",
    /// `amqp:session:errant-link`: input was received for a link that was detached with an error.
    ErrantLink = "amqp:session:errant-link",
    /// `amqp:session:handle-in-use`: an attach was received using a handle that is already in use.
    HandleInUse = "amqp:session:handle-in-use",
    /// `amqp:session:unattached-handle`: a frame (other than attach) referred to an unattached handle.
    UnattachedHandle = "amqp:session:unattached-handle",
    /// `amqp:link:detach-forced`: an operator intervened to detach for some reason.
    DetachForced = "amqp:link:detach-forced",
    /// `amqp:link:transfer-limit-exceeded`: the peer sent more message transfers than currently allowed.
    TransferLimitExceeded = "amqp:link:transfer-limit-exceeded",
    /// `amqp:link:message-size-exceeded`: the peer sent a larger message than is supported on the link.
    MessageSizeExceeded = "amqp:link:message-size-exceeded",
    /// `amqp:link:redirect`: the address provided cannot be resolved to a terminus at the current container.
    LinkRedirect = "amqp:link:redirect",
    /// `amqp:link:stolen`: the link has been attached elsewhere, causing the existing attachment to be detached.
    Stolen = "amqp:link:stolen",
    /// `amqp:transaction:unknown-id`: the specified txn-id does not exist [AMQP 1.0 §4.5.8].
    TransactionUnknownId = "amqp:transaction:unknown-id",
    /// `amqp:transaction:rollback`: the transaction was rolled back for an unspecified reason.
    TransactionRollback = "amqp:transaction:rollback",
    /// `amqp:transaction:timeout`: the work represented by this transaction took too long.
    TransactionTimeout = "amqp:transaction:timeout",
}

impl fmt::Display for ErrorCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol().as_str())
    }
}

impl Encode for ErrorCondition {
    fn encoded_size(&self) -> usize {
        self.symbol().encoded_size()
    }
    fn encode<B: bytes::BufMut>(&self, buf: &mut B) {
        self.symbol().encode(buf)
    }
}

impl Decode for ErrorCondition {
    fn decode_with(dec: &mut Decoder, code: u8) -> Result<Self, DecodeError> {
        Symbol::decode_with(dec, code).map(ErrorCondition::from_symbol)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_condition_round_trips_through_its_symbol() {
        for c in [
            ErrorCondition::DecodeError,
            ErrorCondition::FramingError,
            ErrorCondition::WindowViolation,
            ErrorCondition::MessageSizeExceeded,
            ErrorCondition::TransactionTimeout,
        ] {
            assert_eq!(ErrorCondition::from_symbol(c.symbol()), c);
        }
        let custom = ErrorCondition::from_symbol(Symbol::from_static("x:custom"));
        assert_eq!(
            custom,
            ErrorCondition::Custom(Symbol::from_static("x:custom"))
        );
    }

    #[test]
    fn truncate_utf8_never_splits_a_character() {
        // "é" is 2 bytes, "€" 3, "𝄞" 4.
        let s = "aé€𝄞";
        let prefixes: Vec<&str> = (0..=11).map(|n| truncate_utf8(s, n)).collect();
        assert_eq!(
            prefixes,
            [
                "",
                "a",
                "a",
                "aé",
                "aé",
                "aé",
                "aé€",
                "aé€",
                "aé€",
                "aé€",
                "aé€𝄞",
                "aé€𝄞"
            ]
        );
        assert_eq!(truncate_utf8("", 0), "");
    }

    #[test]
    fn truncated_errors_fit_and_stay_valid() {
        let info: Map = [("k", "v".repeat(100))].into_iter().collect();
        for description in [
            "x".repeat(1000),
            "é".repeat(500),
            "€𝄞".repeat(200),
            "ab€".into(),
        ] {
            let e = Error {
                condition: ErrorCondition::ResourceLimitExceeded,
                description: Some(description.clone()),
                info: Some(info.clone()),
            };
            let minimal = Error {
                condition: e.condition.clone(),
                description: None,
                info: None,
            }
            .encoded_size();
            for max in (0..e.encoded_size() + 2)
                .step_by(7)
                .chain([minimal, minimal + 2])
            {
                let t = e.truncated(max);
                assert_eq!(t.condition, e.condition);
                if max >= minimal {
                    assert!(t.encoded_size() <= max, "{max}: {}", t.encoded_size());
                }
                if max >= e.encoded_size() {
                    assert_eq!(t, e, "an error that fits is unchanged");
                    continue;
                }
                assert_eq!(t.info, None);
                let kept = t.description.as_deref().unwrap_or("");
                assert!(description.starts_with(kept));
                // Valid UTF-8 on the wire: the truncated error decodes.
                assert_eq!(Error::decode_from(t.to_bytes()).unwrap(), t);
            }
        }
        // A description just over a character boundary loses the whole character.
        let e = Error::new(ErrorCondition::NotFound, "a€");
        let t = e.truncated(e.encoded_size() - 1);
        assert_eq!(t.description.as_deref(), Some("a"));
    }

    #[test]
    fn error_encodes_as_described_list_and_drops_trailing_nulls() {
        let e = Error {
            condition: ErrorCondition::NotFound,
            description: None,
            info: None,
        };
        let b = e.to_bytes();
        assert_eq!(&b[..5], &[0x00, 0x53, 0x1d, 0xc0, 0x11]);
        assert_eq!(b[5], 1, "only the condition is encoded");
        assert_eq!(Error::decode_from(b).unwrap(), e);
    }
}
