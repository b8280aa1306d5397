//! [`ScramClient`]: the client's side of one SCRAM exchange [RFC 5802 §5].

use subtle::ConstantTimeEq;

use super::{
    attributes, base64, escape_name, is_printable, text, unbase64, xor, Keys, ScramHash,
    SCRAM_MAX_ITERATIONS, SCRAM_MIN_ITERATIONS,
};

/// The gs2 header of a client without channel binding, and its base64 (the `c=` of client-final).
const GS2_HEADER: &str = "n,,";
const GS2_HEADER_BASE64: &str = "biws";

/// Where the client is in the exchange.
enum Step {
    /// client-first sent; waiting for server-first (a challenge).
    AwaitServerFirst,
    /// client-final sent; waiting for server-final, which must carry this signature.
    AwaitServerFinal { server_signature: Vec<u8> },
    /// The server signature checked out (it came in a challenge); waiting for the outcome.
    Verified { server_signature: Vec<u8> },
}

/// One SCRAM exchange as a client. Feed it the server's challenges and the outcome's additional-data; every
/// error is a reason to fail the connection.
pub(crate) struct ScramClient {
    hash: ScramHash,
    password: String,
    nonce: String,
    client_first_bare: String,
    step: Step,
}

impl ScramClient {
    /// Starts an exchange with a fresh nonce from the OS CSPRNG; returns the client and client-first.
    pub(crate) fn start(
        hash: ScramHash,
        username: &str,
        password: &str,
    ) -> Result<(ScramClient, Vec<u8>), String> {
        Ok(Self::with_nonce(hash, username, password, super::nonce()?))
    }

    /// Starts an exchange with the given nonce (tests use the RFC's); returns the client and client-first.
    pub(crate) fn with_nonce(
        hash: ScramHash,
        username: &str,
        password: &str,
        nonce: String,
    ) -> (ScramClient, Vec<u8>) {
        let client_first_bare = format!("n={},r={nonce}", escape_name(username));
        let client_first = format!("{GS2_HEADER}{client_first_bare}").into_bytes();
        let client = ScramClient {
            hash,
            password: password.into(),
            nonce,
            client_first_bare,
            step: Step::AwaitServerFirst,
        };
        (client, client_first)
    }

    /// The hash of the exchange.
    pub(crate) fn hash(&self) -> ScramHash {
        self.hash
    }

    /// A `sasl-challenge`: server-first (answered with client-final) or, as some servers send it,
    /// server-final (checked, and answered with an empty response).
    pub(crate) fn handle_challenge(&mut self, challenge: &[u8]) -> Result<Vec<u8>, String> {
        match &self.step {
            Step::AwaitServerFirst => self.client_final(challenge),
            Step::AwaitServerFinal { server_signature } => {
                verify_server_final(challenge, server_signature)?;
                self.step = Step::Verified {
                    server_signature: server_signature.clone(),
                };
                Ok(Vec::new())
            }
            Step::Verified { .. } => Err("a challenge after the server's final message".into()),
        }
    }

    /// A `sasl-outcome` with code ok and this additional-data: the exchange succeeded only if the server proved
    /// that it knows the user's keys, here or in an earlier challenge.
    pub(crate) fn handle_success(&self, additional_data: Option<&[u8]>) -> Result<(), String> {
        let data = additional_data.filter(|d| !d.is_empty());
        match (&self.step, data) {
            (Step::AwaitServerFirst, _) => {
                Err("the server reported success before the SCRAM exchange took place".into())
            }
            (
                Step::AwaitServerFinal { server_signature } | Step::Verified { server_signature },
                Some(data),
            ) => verify_server_final(data, server_signature),
            (Step::AwaitServerFinal { .. }, None) => Err(
                "the server reported success without its SCRAM server signature, so it did not prove that it \
                 knows the password"
                    .into(),
            ),
            (Step::Verified { .. }, None) => Ok(()),
        }
    }

    /// Reads server-first, computes the proof, and returns client-final [RFC 5802 §3].
    fn client_final(&mut self, server_first: &[u8]) -> Result<Vec<u8>, String> {
        let server_first = text("server-first message", server_first)?;
        let attrs = attributes("server-first message", server_first)?;
        let (nonce, salt, iterations) = match attrs.as_slice() {
            [(b'r', r), (b's', s), (b'i', i), ..] => (*r, *s, *i),
            [(b'm', _), ..] => {
                return Err(
                    "the server-first message has a mandatory extension we do not know".into(),
                )
            }
            _ => return Err("the server-first message is not r=...,s=...,i=...".into()),
        };
        if !nonce.starts_with(&self.nonce)
            || nonce.len() == self.nonce.len()
            || !is_printable(nonce)
        {
            return Err("the server's nonce does not extend ours".into());
        }
        let salt = unbase64("salt", salt)?;
        if salt.is_empty() {
            return Err("the salt is empty".into());
        }
        let iterations = iterations
            .parse::<u32>()
            .ok()
            .filter(|i| (SCRAM_MIN_ITERATIONS..=SCRAM_MAX_ITERATIONS).contains(i))
            .ok_or_else(|| {
                format!(
                    "the iteration count is not a number from {SCRAM_MIN_ITERATIONS} to {SCRAM_MAX_ITERATIONS}"
                )
            })?;
        let hash = self.hash;
        let salted_password = hash.hi(self.password.as_bytes(), &salt, iterations);
        let keys = Keys::from_salted_password(hash, &salted_password);
        let without_proof = format!("c={GS2_HEADER_BASE64},r={nonce}");
        let auth_message = format!("{},{server_first},{without_proof}", self.client_first_bare);
        let client_signature = hash.hmac(&keys.stored_key, &[auth_message.as_bytes()]);
        let proof = xor(&keys.client_key, &client_signature);
        self.step = Step::AwaitServerFinal {
            server_signature: hash.hmac(&keys.server_key, &[auth_message.as_bytes()]),
        };
        Ok(format!("{without_proof},p={}", base64(&proof)).into_bytes())
    }
}

/// Checks server-final against the signature we expect [RFC 5802 §3].
fn verify_server_final(message: &[u8], expected: &[u8]) -> Result<(), String> {
    let message = text("server-final message", message)?;
    match attributes("server-final message", message)?.first() {
        Some((b'v', v)) => {
            let signature = unbase64("server signature", v)?;
            if bool::from(signature.ct_eq(expected)) {
                Ok(())
            } else {
                Err(
                    "the SCRAM server signature is wrong: the server does not know the password"
                        .into(),
                )
            }
        }
        Some((b'e', e)) => Err(format!("the server refused the exchange: {e}")),
        _ => Err("the server-final message has no server signature".into()),
    }
}
