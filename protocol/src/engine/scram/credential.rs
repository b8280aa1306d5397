//! [`ScramCredential`]: what a SCRAM server keeps of a password, and its text form.

use std::fmt;
use std::str::FromStr;

use super::{base64, unbase64, Keys, ScramHash};

/// What a SCRAM server stores for one user and one hash: the salt, the iteration count, `StoredKey` and
/// `ServerKey` [RFC 5802 §3]. Never the password: these keys let a server check a client's proof and prove
/// itself in turn, but not log in as the user.
///
/// # Text form
///
/// [`Display`](fmt::Display) and [`FromStr`] use the `authPassword` syntax of RFC 5803 §3 (which PostgreSQL also
/// uses for its SCRAM secrets), one credential per line of a user file:
///
/// ```text
/// SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>
/// ```
///
/// For example, the RFC 5802 §5 user (password `pencil`):
///
/// ```
/// # use nucleon_protocol::engine::{ScramCredential, ScramHash};
/// let text = "SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=";
/// let credential: ScramCredential = text.parse().unwrap();
/// assert_eq!(credential.hash(), ScramHash::Sha1);
/// assert_eq!(credential.to_string(), text);
/// ```
///
/// `Debug` shows the salt and iteration count but not the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredential {
    hash: ScramHash,
    salt: Vec<u8>,
    iterations: u32,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl ScramCredential {
    /// Derives the credential of `password` with this salt and iteration count [RFC 5802 §3]. Use a fresh
    /// random salt of at least 16 bytes per user, and at least [`SCRAM_MIN_ITERATIONS`](super::SCRAM_MIN_ITERATIONS)
    /// iterations, or nucleon's own clients will refuse the exchange.
    ///
    /// # Panics
    /// If `iterations` is 0 or `salt` is empty: neither makes a credential.
    pub fn derive(hash: ScramHash, password: &str, salt: &[u8], iterations: u32) -> Self {
        assert!(iterations > 0, "a SCRAM iteration count must be positive");
        assert!(!salt.is_empty(), "a SCRAM salt must not be empty");
        let keys =
            Keys::from_salted_password(hash, &hash.hi(password.as_bytes(), salt, iterations));
        ScramCredential {
            hash,
            salt: salt.to_vec(),
            iterations,
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        }
    }

    /// A made-up credential for a user who does not exist, so that a server can answer as if the user did
    /// [RFC 5802 §9]: salt and keys are derived from `secret` and the user name, so the same name gets the same
    /// salt every time (as a real user would) and nobody without `secret` can tell it from a real one. No proof
    /// matches it short of inverting the hash.
    pub fn decoy(hash: ScramHash, username: &str, secret: &[u8], iterations: u32) -> Self {
        let derive = |label: &[u8]| hash.hmac(secret, &[label, b"\0", username.as_bytes()]);
        let mut salt = derive(b"nucleon SCRAM decoy salt");
        salt.truncate(16);
        ScramCredential {
            hash,
            salt,
            iterations: iterations.max(1),
            stored_key: derive(b"nucleon SCRAM decoy StoredKey"),
            server_key: derive(b"nucleon SCRAM decoy ServerKey"),
        }
    }

    /// The hash (and so the mechanism) this credential is for.
    pub fn hash(&self) -> ScramHash {
        self.hash
    }

    /// The salt.
    pub fn salt(&self) -> &[u8] {
        &self.salt
    }

    /// The iteration count.
    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    /// `StoredKey`, `H(ClientKey)`: checks a client's proof.
    pub fn stored_key(&self) -> &[u8] {
        &self.stored_key
    }

    /// `ServerKey`: signs the server's final message. Whoever has it can pass for the server.
    pub fn server_key(&self) -> &[u8] {
        &self.server_key
    }
}

impl fmt::Debug for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredential")
            .field("hash", &self.hash)
            .field("iterations", &self.iterations)
            .field("salt", &base64(&self.salt))
            .finish_non_exhaustive()
    }
}

impl fmt::Display for ScramCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}${}:{}${}:{}",
            self.hash,
            self.iterations,
            base64(&self.salt),
            base64(&self.stored_key),
            base64(&self.server_key)
        )
    }
}

/// Why a text did not parse as a [`ScramCredential`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a SCRAM credential: {0}")]
pub struct ParseScramCredentialError(String);

impl FromStr for ScramCredential {
    type Err = ParseScramCredentialError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = |why: &str| ParseScramCredentialError(why.into());
        let mut parts = text.trim().split('$');
        let (Some(mechanism), Some(params), Some(keys), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(err(
                "expected MECHANISM$ITERATIONS:SALT$STOREDKEY:SERVERKEY",
            ));
        };
        let hash = ScramHash::from_mechanism(mechanism).ok_or_else(|| {
            err("the mechanism is not SCRAM-SHA-1, SCRAM-SHA-256 or SCRAM-SHA-512")
        })?;
        let (Some((iterations, salt)), Some((stored_key, server_key))) =
            (params.split_once(':'), keys.split_once(':'))
        else {
            return Err(err("expected ITERATIONS:SALT and STOREDKEY:SERVERKEY"));
        };
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .filter(|&i| i > 0)
            .ok_or_else(|| err("the iteration count is not a positive 32-bit number"))?;
        let decode = |what: &str, b64: &str| unbase64(what, b64).map_err(|e| err(&e));
        let salt = decode("salt", salt)?;
        if salt.is_empty() {
            return Err(err("the salt is empty"));
        }
        let stored_key = decode("StoredKey", stored_key)?;
        let server_key = decode("ServerKey", server_key)?;
        if stored_key.len() != hash.output_len() || server_key.len() != hash.output_len() {
            return Err(err("a key's length is not the hash's output length"));
        }
        Ok(ScramCredential {
            hash,
            salt,
            iterations,
            stored_key,
            server_key,
        })
    }
}
