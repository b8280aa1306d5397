//! Who may do what on which address: per-user grants of [`Operation`]s on address patterns.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// The user name of clients that authenticated with SASL ANONYMOUS or skipped SASL.
pub const ANONYMOUS_USER: &str = "anonymous";

/// A name that grants to every user, `anonymous` included.
pub const EVERY_USER: &str = "*";

/// What a client does with an address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Attach a producer to it, or publish to it through the anonymous relay.
    Send,
    /// Attach a consumer that takes messages (or subscribes, for a topic).
    Consume,
    /// Attach a browser (distribution mode `copy`): messages are read, not taken.
    Browse,
    /// Make the queue or topic, when it does not exist yet (the broker makes them on demand).
    Create,
    /// Manage the queue through the broker's management API: see it listed, purge it, delete it. Granted
    /// on every address (the pattern `*`), it also lists the connections. No AMQP link needs it.
    Manage,
}

impl Operation {
    /// Every operation, in the order the configuration names them.
    pub const ALL: [Operation; 5] = [
        Operation::Send,
        Operation::Consume,
        Operation::Browse,
        Operation::Create,
        Operation::Manage,
    ];

    /// The configuration's name of the operation.
    pub fn name(self) -> &'static str {
        match self {
            Operation::Send => "send",
            Operation::Consume => "consume",
            Operation::Browse => "browse",
            Operation::Create => "create",
            Operation::Manage => "manage",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Operation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Operation::ALL
            .into_iter()
            .find(|o| o.name() == s)
            .ok_or_else(|| {
                format!("unknown operation {s:?} (send, consume, browse, create or manage)")
            })
    }
}

/// An address pattern: `*` stands for any run of characters (none included), everything else for itself.
/// `orders.*` matches `orders.eu` and `orders.`; `*` matches every address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern {
    /// The literal pieces between the stars.
    pieces: Vec<String>,
    starts_with_star: bool,
    ends_with_star: bool,
}

impl Pattern {
    /// The pattern for `text`.
    pub fn new(text: &str) -> Pattern {
        Pattern {
            pieces: text
                .split('*')
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect(),
            starts_with_star: text.starts_with('*'),
            ends_with_star: text.ends_with('*'),
        }
    }

    /// Whether the pattern matches every address (`*`, or only stars).
    pub fn matches_everything(&self) -> bool {
        self.pieces.is_empty() && self.starts_with_star
    }

    /// Whether `address` matches: the pieces in order, anchored at the ends that have no star. Linear in
    /// the address's length for each piece, so a hostile address cannot make it backtrack.
    pub fn matches(&self, address: &str) -> bool {
        let mut rest = address;
        let n = self.pieces.len();
        if n == 0 {
            return self.starts_with_star || address.is_empty();
        }
        for (i, piece) in self.pieces.iter().enumerate() {
            let first = i == 0;
            let last = i + 1 == n;
            if first && !self.starts_with_star {
                let Some(r) = rest.strip_prefix(piece.as_str()) else {
                    return false;
                };
                rest = r;
                if last && !self.ends_with_star {
                    return rest.is_empty();
                }
                continue;
            }
            if last && !self.ends_with_star {
                return rest.ends_with(piece.as_str());
            }
            match rest.find(piece.as_str()) {
                Some(at) => rest = &rest[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

/// Per-user grants: a client may do an operation on an address only if a grant to its user (or to
/// [`EVERY_USER`]) names the operation with a pattern the address matches. Nothing is granted by default.
///
/// ```
/// use nucleon::broker::{Authorization, Operation};
/// let authz = Authorization::new()
///     .grant("alice", Operation::Send, "orders.*")
///     .grant("*", Operation::Consume, "public.*");
/// assert!(authz.permits("alice", Operation::Send, "orders.eu"));
/// assert!(authz.permits("anonymous", Operation::Consume, "public.news"));
/// assert!(!authz.permits("bob", Operation::Send, "orders.eu"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Authorization {
    grants: HashMap<String, HashMap<Operation, Vec<Pattern>>>,
}

impl Authorization {
    /// No grants: every operation is refused.
    pub fn new() -> Authorization {
        Authorization::default()
    }

    /// Grants `user` (a SASL user name, [`ANONYMOUS_USER`] or [`EVERY_USER`]) `operation` on the addresses
    /// `pattern` matches (see [`Pattern`]).
    pub fn grant(mut self, user: &str, operation: Operation, pattern: &str) -> Authorization {
        self.add(user, operation, pattern);
        self
    }

    /// As [`grant`](Self::grant), in place.
    pub fn add(&mut self, user: &str, operation: Operation, pattern: &str) {
        self.grants
            .entry(user.to_owned())
            .or_default()
            .entry(operation)
            .or_default()
            .push(Pattern::new(pattern));
    }

    /// Whether `user` may do `operation` on `address`.
    pub fn permits(&self, user: &str, operation: Operation, address: &str) -> bool {
        self.patterns(user, operation).any(|p| p.matches(address))
    }

    /// Whether `user` may do `operation` on some address.
    pub fn permits_somewhere(&self, user: &str, operation: Operation) -> bool {
        self.patterns(user, operation).next().is_some()
    }

    /// Whether `user` may do `operation` on every address: granted with a pattern that matches them all.
    pub fn permits_everywhere(&self, user: &str, operation: Operation) -> bool {
        self.patterns(user, operation)
            .any(Pattern::matches_everything)
    }

    /// The patterns `operation` is granted on to `user`, directly or through [`EVERY_USER`].
    fn patterns<'a>(
        &'a self,
        user: &'a str,
        operation: Operation,
    ) -> impl Iterator<Item = &'a Pattern> {
        [user, EVERY_USER]
            .into_iter()
            .filter_map(move |u| self.grants.get(u)?.get(&operation))
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_literally_except_for_stars() {
        let cases = [
            ("orders", "orders", true),
            ("orders", "orders2", false),
            ("orders", "my-orders", false),
            ("orders.*", "orders.eu", true),
            ("orders.*", "orders.", true),
            ("orders.*", "orders", false),
            ("*.eu", "orders.eu", true),
            ("*.eu", "orders.us", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "a-b-c", true),
            ("a*b*c", "a-c-b", false),
            ("a*b*c", "abcx", false),
            ("*", "", true),
            ("*", "anything", true),
            ("", "", true),
            ("", "x", false),
            ("ab*ba", "aba", false),
            ("ab*ba", "abba", true),
        ];
        for (pattern, address, expected) in cases {
            assert_eq!(
                Pattern::new(pattern).matches(address),
                expected,
                "{pattern:?} against {address:?}"
            );
        }
    }

    #[test]
    fn grants_are_per_user_and_operation() {
        let a = Authorization::new()
            .grant("alice", Operation::Send, "q.*")
            .grant(EVERY_USER, Operation::Browse, "pub");
        assert!(a.permits("alice", Operation::Send, "q.1"));
        assert!(!a.permits("alice", Operation::Consume, "q.1"));
        assert!(!a.permits("bob", Operation::Send, "q.1"));
        assert!(a.permits("bob", Operation::Browse, "pub"));
        assert!(a.permits(ANONYMOUS_USER, Operation::Browse, "pub"));
        assert!(!Authorization::new().permits("alice", Operation::Send, "q.1"));
    }

    #[test]
    fn manage_is_granted_somewhere_or_everywhere() {
        let a = Authorization::new()
            .grant("admin", Operation::Manage, "*")
            .grant("ops", Operation::Manage, "orders.*")
            .grant("alice", Operation::Send, "*");
        assert!(a.permits_everywhere("admin", Operation::Manage));
        assert!(a.permits("ops", Operation::Manage, "orders.eu"));
        assert!(a.permits_somewhere("ops", Operation::Manage));
        assert!(!a.permits_everywhere("ops", Operation::Manage));
        assert!(!a.permits_somewhere("alice", Operation::Manage));
        assert!(Pattern::new("**").matches_everything());
        assert!(!Pattern::new("").matches_everything());
    }

    #[test]
    fn operations_parse_from_their_names() {
        for o in Operation::ALL {
            assert_eq!(o.name().parse::<Operation>(), Ok(o));
        }
        assert!("write".parse::<Operation>().is_err());
    }
}
