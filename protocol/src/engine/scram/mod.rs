//! SCRAM-SHA-1, SCRAM-SHA-256 and SCRAM-SHA-512 [RFC 5802, RFC 7677]: the messages, the key computations, the
//! server's stored [`ScramCredential`] and the [`ScramAuthenticator`] that holds them. The engine's SASL layer
//! carries the messages in SASL frames [AMQP 1.0 §5.3.3]:
//!
//! ```text
//! client                                                   server
//!   sasl-init       n,,n=USER,r=CNONCE            ──────▶  looks up USER's credential (or a decoy)
//!                   r=CNONCE+SNONCE,s=SALT,i=N    ◀──────  sasl-challenge
//!   sasl-response   c=biws,r=CNONCE+SNONCE,p=PROOF ─────▶  checks the proof in constant time
//!                   v=SERVER-SIGNATURE            ◀──────  sasl-outcome ok, additional-data
//! ```
//!
//! The client checks the server signature (from the outcome's additional-data, or from a last challenge that it
//! answers with an empty response) and fails the connection if it is missing or wrong: a server that does not
//! know the user's keys cannot pass for one that does.
//!
//! Limits and omissions:
//! * No channel binding (the `-PLUS` mechanisms): the client sends the gs2 header `n,,`; the server accepts
//!   `n` and `y` and refuses `p=` [RFC 5802 §6].
//! * Names and passwords are used as their UTF-8 bytes, without SASLprep [RFC 4013]: the same thing for
//!   printable ASCII; a non-ASCII password may not match a server that normalizes it. User names are escaped
//!   (`=` as `=3D`, `,` as `=2C`) as RFC 5802 §5.1 requires.
//! * A client accepts iteration counts from [`SCRAM_MIN_ITERATIONS`] to [`SCRAM_MAX_ITERATIONS`] only.
//! * Every SCRAM message travels in one SASL frame, which may not exceed 512 bytes before `open`
//!   [AMQP 1.0 §2.4.1]: that bounds what a hostile peer can make us parse.

mod client;
mod credential;
mod server;

pub(crate) use client::ScramClient;
pub use credential::{ParseScramCredentialError, ScramCredential};
pub use server::ScramAuthenticator;
pub(crate) use server::{ClientFirst, ScramServer};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::digest::Digest;
use hmac::{EagerHash, Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha512};

use crate::codec::Symbol;

/// The fewest iterations a SCRAM client accepts from a server [RFC 7677 §4]. A server (or an attacker in the
/// middle) that offers fewer would get a proof that is cheap to attack offline.
pub const SCRAM_MIN_ITERATIONS: u32 = 4096;

/// The most iterations a SCRAM client accepts from a server: about a second of one core for SCRAM-SHA-512 in an
/// optimized build. A server that asks for more could make the client spin for minutes.
pub const SCRAM_MAX_ITERATIONS: u32 = 1_000_000;

/// The iteration count a [`ScramAuthenticator`] gives decoys when it has no credential of that hash to copy
/// from: 4096, RFC 7677's minimum and the usual default.
pub const SCRAM_DEFAULT_ITERATIONS: u32 = 4096;

/// Random bytes in a nonce (24 characters of base64).
const NONCE_BYTES: usize = 18;

/// The hash function of a SCRAM mechanism.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScramHash {
    /// SCRAM-SHA-1 [RFC 5802].
    Sha1,
    /// SCRAM-SHA-256 [RFC 7677].
    Sha256,
    /// SCRAM-SHA-512.
    Sha512,
}

impl ScramHash {
    /// All three, strongest first: the order in which a server offers them.
    pub const ALL: [ScramHash; 3] = [ScramHash::Sha512, ScramHash::Sha256, ScramHash::Sha1];

    /// The SASL mechanism name, e.g. `SCRAM-SHA-256`.
    pub fn mechanism(self) -> &'static str {
        match self {
            ScramHash::Sha1 => "SCRAM-SHA-1",
            ScramHash::Sha256 => "SCRAM-SHA-256",
            ScramHash::Sha512 => "SCRAM-SHA-512",
        }
    }

    /// The SASL mechanism name as a symbol.
    pub fn symbol(self) -> Symbol {
        Symbol::from_static(self.mechanism())
    }

    /// The hash of a SCRAM mechanism name; `None` for any other name (including the `-PLUS` ones).
    pub fn from_mechanism(name: &str) -> Option<ScramHash> {
        ScramHash::ALL.into_iter().find(|h| h.mechanism() == name)
    }

    /// The length of the hash's output in bytes, and so of every SCRAM key, proof and signature.
    pub fn output_len(self) -> usize {
        match self {
            ScramHash::Sha1 => 20,
            ScramHash::Sha256 => 32,
            ScramHash::Sha512 => 64,
        }
    }

    /// `H(data)`.
    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => Sha1::digest(data).to_vec(),
            ScramHash::Sha256 => Sha256::digest(data).to_vec(),
            ScramHash::Sha512 => Sha512::digest(data).to_vec(),
        }
    }

    /// `HMAC(key, parts[0] + parts[1] + ...)`.
    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        match self {
            ScramHash::Sha1 => mac::<Sha1>(key, parts),
            ScramHash::Sha256 => mac::<Sha256>(key, parts),
            ScramHash::Sha512 => mac::<Sha512>(key, parts),
        }
    }

    /// `Hi(password, salt, i)`: PBKDF2 with HMAC of this hash, one block [RFC 5802 §2.2].
    fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Vec<u8> {
        let mut out = vec![0; self.output_len()];
        match self {
            ScramHash::Sha1 => pbkdf2::pbkdf2_hmac::<Sha1>(password, salt, iterations, &mut out),
            ScramHash::Sha256 => {
                pbkdf2::pbkdf2_hmac::<Sha256>(password, salt, iterations, &mut out)
            }
            ScramHash::Sha512 => {
                pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut out)
            }
        }
        out
    }
}

impl std::fmt::Display for ScramHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.mechanism())
    }
}

fn mac<D: EagerHash>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut m = <Hmac<D> as KeyInit>::new_from_slice(key).expect("HMAC takes a key of any length");
    for part in parts {
        m.update(part);
    }
    m.finalize().into_bytes().to_vec()
}

/// The keys that follow from a salted password [RFC 5802 §3].
struct Keys {
    client_key: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl Keys {
    fn from_salted_password(hash: ScramHash, salted_password: &[u8]) -> Keys {
        let client_key = hash.hmac(salted_password, &[b"Client Key"]);
        Keys {
            stored_key: hash.hash(&client_key),
            client_key,
            server_key: hash.hmac(salted_password, &[b"Server Key"]),
        }
    }
}

/// Byte-wise XOR of two equally long strings.
fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

fn base64(data: &[u8]) -> String {
    STANDARD.encode(data)
}

fn unbase64(what: &str, text: &str) -> Result<Vec<u8>, String> {
    STANDARD
        .decode(text)
        .map_err(|e| format!("the {what} is not valid base64 ({e})"))
}

/// A fresh nonce from the OS CSPRNG, in base64 (which has no `,`, so it is a valid SCRAM nonce).
fn nonce() -> Result<String, String> {
    let mut bytes = [0u8; NONCE_BYTES];
    getrandom::fill(&mut bytes)
        .map_err(|e| format!("no random bytes for the SCRAM nonce ({e})"))?;
    Ok(base64(&bytes))
}

/// Escapes a user name as a `saslname`: `=` as `=3D`, `,` as `=2C` [RFC 5802 §5.1].
fn escape_name(name: &str) -> String {
    name.replace('=', "=3D").replace(',', "=2C")
}

/// Reverses [`escape_name`]; any other use of `=` is an error [RFC 5802 §5.1].
fn unescape_name(saslname: &str) -> Result<String, String> {
    let mut out = String::with_capacity(saslname.len());
    let mut rest = saslname;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3);
        match escape {
            Some("=3D") => out.push('='),
            Some("=2C") => out.push(','),
            _ => return Err("the user name has a '=' that is not =3D or =2C".into()),
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(out)
}

/// True for a valid nonce: printable ASCII without `,` [RFC 5802 §7].
fn is_printable(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// A SCRAM message as text; SCRAM messages are UTF-8 [RFC 5802 §7].
fn text<'a>(what: &str, data: &'a [u8]) -> Result<&'a str, String> {
    std::str::from_utf8(data).map_err(|_| format!("the {what} is not UTF-8"))
}

/// Splits a SCRAM message into its `a=value` attributes, in order [RFC 5802 §5].
fn attributes<'a>(what: &str, message: &'a str) -> Result<Vec<(u8, &'a str)>, String> {
    message
        .split(',')
        .map(|part| match part.as_bytes() {
            [name, b'=', ..] if name.is_ascii_alphabetic() => Ok((*name, &part[2..])),
            _ => Err(format!("the {what} has a malformed attribute")),
        })
        .collect()
}

#[cfg(test)]
mod tests;
