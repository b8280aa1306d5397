//! [`ScramServer`]: the server's side of one SCRAM exchange [RFC 5802 §5], and [`ScramAuthenticator`], a user
//! table of [`ScramCredential`]s.

use std::collections::HashMap;
use std::fmt;

use subtle::ConstantTimeEq;

use super::{
    attributes, base64, is_printable, text, unbase64, unescape_name, xor, ScramCredential,
    ScramHash, SCRAM_DEFAULT_ITERATIONS,
};
use crate::codec::Symbol;
use crate::engine::config::{Authenticator, SaslCredentials, SaslVerdict};
use crate::frame::SaslCode;

/// The client-first message, parsed [RFC 5802 §7].
pub(crate) struct ClientFirst {
    /// The gs2 header exactly as sent (`n,,`, `y,,`, `n,a=NAME,`): client-final must repeat it in `c=`.
    gs2_header: String,
    authzid: Option<String>,
    username: String,
    nonce: String,
    bare: String,
}

impl ClientFirst {
    pub(crate) fn parse(message: &[u8]) -> Result<ClientFirst, String> {
        let message = text("client-first message", message)?;
        let malformed = || "the client-first message is not n,,n=...,r=...".to_string();
        let (cbind, rest) = message.split_once(',').ok_or_else(malformed)?;
        match cbind {
            "n" | "y" => {}
            c if c.starts_with("p=") => {
                return Err("the client asked for channel binding, which is not supported".into())
            }
            _ => return Err(malformed()),
        }
        let (authzid, bare) = rest.split_once(',').ok_or_else(malformed)?;
        let authzid = match authzid {
            "" => None,
            a => Some(unescape_name(a.strip_prefix("a=").ok_or_else(malformed)?)?),
        };
        let (username, nonce) = match attributes("client-first message", bare)?.as_slice() {
            [(b'n', n), (b'r', r), ..] => (unescape_name(n)?, r.to_string()),
            [(b'm', _), ..] => {
                return Err(
                    "the client-first message has a mandatory extension we do not know".into(),
                )
            }
            _ => return Err(malformed()),
        };
        if username.is_empty() {
            return Err("the user name is empty".into());
        }
        if !is_printable(&nonce) {
            return Err("the client's nonce is empty or not printable".into());
        }
        Ok(ClientFirst {
            gs2_header: message[..message.len() - bare.len()].to_string(),
            authzid,
            username,
            nonce,
            bare: bare.to_string(),
        })
    }

    /// The user name, unescaped.
    pub(crate) fn username(&self) -> &str {
        &self.username
    }
}

/// One SCRAM exchange as a server, after client-first: server-first has been sent and client-final is due.
pub(crate) struct ScramServer {
    first: ClientFirst,
    credential: ScramCredential,
    /// The client's nonce followed by ours.
    nonce: String,
    server_first: String,
}

impl ScramServer {
    /// Answers client-first with a fresh nonce from the OS CSPRNG; returns the server and server-first.
    pub(crate) fn start(
        first: ClientFirst,
        credential: ScramCredential,
    ) -> Result<(ScramServer, Vec<u8>), String> {
        Ok(Self::with_nonce(first, credential, &super::nonce()?))
    }

    /// Answers client-first with the given nonce (tests use the RFC's); returns the server and server-first.
    pub(crate) fn with_nonce(
        first: ClientFirst,
        credential: ScramCredential,
        server_nonce: &str,
    ) -> (ScramServer, Vec<u8>) {
        let nonce = format!("{}{server_nonce}", first.nonce);
        let server_first = format!(
            "r={nonce},s={},i={}",
            base64(credential.salt()),
            credential.iterations()
        );
        let reply = server_first.clone().into_bytes();
        let server = ScramServer {
            first,
            credential,
            nonce,
            server_first,
        };
        (server, reply)
    }

    /// The user name the client gave.
    pub(crate) fn username(&self) -> &str {
        &self.first.username
    }

    /// The identity the client asked to act as, if any.
    pub(crate) fn authzid(&self) -> Option<&str> {
        self.first.authzid.as_deref()
    }

    /// The hash of the exchange.
    pub(crate) fn hash(&self) -> ScramHash {
        self.credential.hash()
    }

    /// Checks client-final; returns server-final if the proof is right [RFC 5802 §3]. The proof is compared in
    /// constant time, and a decoy credential costs exactly what a real one does.
    pub(crate) fn handle_client_final(&self, message: &[u8]) -> Result<Vec<u8>, String> {
        let message = text("client-final message", message)?;
        let malformed = || "the client-final message is not c=...,r=...,p=...".to_string();
        let (without_proof, proof) = message.rsplit_once(",p=").ok_or_else(malformed)?;
        let (binding, nonce) = match attributes("client-final message", without_proof)?.as_slice() {
            [(b'c', c), (b'r', r), ..] => (*c, *r),
            _ => return Err(malformed()),
        };
        if unbase64("channel binding", binding)? != self.first.gs2_header.as_bytes() {
            return Err("the client-final message does not repeat the gs2 header".into());
        }
        if nonce != self.nonce {
            return Err("the client-final message has the wrong nonce".into());
        }
        let hash = self.hash();
        let proof = unbase64("client proof", proof)?;
        if proof.len() != hash.output_len() {
            return Err("the client proof has the wrong length".into());
        }
        let auth_message = format!("{},{},{without_proof}", self.first.bare, self.server_first);
        let client_signature = hash.hmac(self.credential.stored_key(), &[auth_message.as_bytes()]);
        let client_key = xor(&proof, &client_signature);
        if !bool::from(hash.hash(&client_key).ct_eq(self.credential.stored_key())) {
            return Err("the client proof is wrong (a wrong password, or no such user)".into());
        }
        let server_signature = hash.hmac(self.credential.server_key(), &[auth_message.as_bytes()]);
        Ok(format!("v={}", base64(&server_signature)).into_bytes())
    }
}

/// An [`Authenticator`] with a fixed table of users' [`ScramCredential`]s: offers the SCRAM mechanisms for which
/// it holds at least one credential, strongest first, and admits a user who proves the password.
///
/// A user it does not know (or knows only for another hash) gets a decoy credential
/// ([`ScramCredential::decoy`]) made from a secret of this authenticator, so the exchange runs to the proof check
/// and fails there exactly as a wrong password does [RFC 5802 §9]. Decoys copy the iteration count that most of
/// the table's credentials of that hash have. The secret is random unless set with
/// [`with_decoy_secret`](Self::with_decoy_secret): set one that survives restarts if a prober must not learn which
/// users exist by seeing a made-up user's salt change.
///
/// It may also offer PLAIN ([`allow_plain`](Self::allow_plain)), checking the password against the stored
/// credential (the password is salted and hashed as SCRAM does, and the result compared in constant time), and
/// ANONYMOUS ([`allow_anonymous`](Self::allow_anonymous)).
#[derive(Clone)]
pub struct ScramAuthenticator {
    users: HashMap<String, Vec<ScramCredential>>,
    decoy_secret: Vec<u8>,
    /// The iteration count of each hash's decoys.
    decoy_iterations: [(ScramHash, u32); 3],
    plain: bool,
    anonymous: bool,
}

impl ScramAuthenticator {
    /// Admits these users, each with one credential per hash it may use (a user may appear once per hash; a
    /// later credential of the same hash replaces an earlier one).
    ///
    /// # Panics
    /// If the OS random number generator fails while making the decoy secret.
    pub fn new<I, U>(users: I) -> Self
    where
        I: IntoIterator<Item = (U, ScramCredential)>,
        U: Into<String>,
    {
        let mut table: HashMap<String, Vec<ScramCredential>> = HashMap::new();
        for (user, credential) in users {
            let entry = table.entry(user.into()).or_default();
            entry.retain(|c| c.hash() != credential.hash());
            entry.push(credential);
        }
        let decoy_iterations = ScramHash::ALL.map(|hash| {
            let mut counts: HashMap<u32, usize> = HashMap::new();
            for c in table.values().flatten().filter(|c| c.hash() == hash) {
                *counts.entry(c.iterations()).or_default() += 1;
            }
            let most_common = counts
                .into_iter()
                .max_by_key(|&(iterations, n)| (n, iterations))
                .map_or(SCRAM_DEFAULT_ITERATIONS, |(iterations, _)| iterations);
            (hash, most_common)
        });
        let mut decoy_secret = vec![0; 32];
        getrandom::fill(&mut decoy_secret).expect("the OS random number generator failed");
        ScramAuthenticator {
            users: table,
            decoy_secret,
            decoy_iterations,
            plain: false,
            anonymous: false,
        }
    }

    /// Also offers PLAIN, checked against the stored credentials. Where PLAIN may travel is the transport's
    /// business: a server offers it over TLS only unless told otherwise.
    pub fn allow_plain(mut self, allow: bool) -> Self {
        self.plain = allow;
        self
    }

    /// Also admits ANONYMOUS clients.
    pub fn allow_anonymous(mut self, allow: bool) -> Self {
        self.anonymous = allow;
        self
    }

    /// True if `password` is `username`'s: salted and hashed with the user's strongest credential (a decoy
    /// for an unknown user, so that the time taken does not tell) and compared in constant time. This is
    /// how PLAIN is checked, and how a server checks a password that came another way (HTTP Basic, say).
    /// It costs the credential's iterations of the hash: throttle whoever may call it at will.
    pub fn check_password(&self, username: &str, password: &str) -> bool {
        let known = ScramHash::ALL
            .into_iter()
            .find_map(|hash| self.credential(hash, username));
        let reference = match known {
            Some(c) => c.clone(),
            None => {
                let hash = ScramHash::Sha256;
                let iterations = self.decoy_iterations_for(hash);
                ScramCredential::decoy(hash, username, &self.decoy_secret, iterations)
            }
        };
        let derived = ScramCredential::derive(
            reference.hash(),
            password,
            reference.salt(),
            reference.iterations(),
        );
        let same: bool = derived.stored_key().ct_eq(reference.stored_key()).into();
        same && known.is_some()
    }

    fn decoy_iterations_for(&self, hash: ScramHash) -> u32 {
        self.decoy_iterations
            .iter()
            .find(|(h, _)| *h == hash)
            .map_or(SCRAM_DEFAULT_ITERATIONS, |&(_, i)| i)
    }

    /// Makes decoys from this secret instead of a random one, so that they stay the same across restarts. Keep
    /// it as secret as the credentials.
    pub fn with_decoy_secret(mut self, secret: impl Into<Vec<u8>>) -> Self {
        self.decoy_secret = secret.into();
        self
    }

    fn credential(&self, hash: ScramHash, username: &str) -> Option<&ScramCredential> {
        self.users.get(username)?.iter().find(|c| c.hash() == hash)
    }
}

impl fmt::Debug for ScramAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramAuthenticator")
            .field("users", &self.users.len())
            .field("mechanisms", &self.mechanisms())
            .finish_non_exhaustive()
    }
}

impl Authenticator for ScramAuthenticator {
    fn mechanisms(&self) -> Vec<Symbol> {
        let mut mechanisms: Vec<Symbol> = ScramHash::ALL
            .into_iter()
            .filter(|&h| self.users.values().flatten().any(|c| c.hash() == h))
            .map(ScramHash::symbol)
            .collect();
        if self.plain {
            mechanisms.push(Symbol::from_static("PLAIN"));
        }
        if self.anonymous {
            mechanisms.push(Symbol::from_static("ANONYMOUS"));
        }
        mechanisms
    }

    fn authenticate(&self, credentials: &SaslCredentials, _hostname: Option<&str>) -> SaslVerdict {
        match credentials {
            SaslCredentials::Scram { hash, username, .. }
                if self.credential(*hash, username).is_some() =>
            {
                SaslVerdict::Accept(username.clone())
            }
            SaslCredentials::Plain {
                username, password, ..
            } if self.plain && self.check_password(username, password) => {
                SaslVerdict::Accept(username.clone())
            }
            SaslCredentials::Anonymous { .. } if self.anonymous => {
                SaslVerdict::Accept("anonymous".into())
            }
            _ => SaslVerdict::Reject(SaslCode::Auth),
        }
    }

    fn scram_credential(&self, hash: ScramHash, username: &str) -> Option<ScramCredential> {
        let iterations = self.decoy_iterations_for(hash);
        // Made for known users too, so that an unknown one takes no less time.
        let decoy = ScramCredential::decoy(hash, username, &self.decoy_secret, iterations);
        Some(self.credential(hash, username).cloned().unwrap_or(decoy))
    }
}
