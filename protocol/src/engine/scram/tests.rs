//! The SCRAM computations against the RFC 5802 §5 (SCRAM-SHA-1) and RFC 7677 §3 (SCRAM-SHA-256) examples and a
//! SCRAM-SHA-512 transcript computed with Python's `hashlib` from the same inputs; the credential's text form
//! against RFC 5803's example; and every parser against malformed and hostile messages.

use super::*;
use crate::engine::config::{Authenticator, SaslCredentials, SaslVerdict};
use crate::frame::SaslCode;

/// One exchange for user "user", password "pencil": the four messages, the client's nonce and the part of the
/// server's nonce the server added.
struct Example {
    hash: ScramHash,
    client_nonce: &'static str,
    server_nonce: &'static str,
    salt: &'static str,
    client_first: &'static str,
    server_first: &'static str,
    client_final: &'static str,
    server_final: &'static str,
}

/// RFC 5802 §5.
const RFC_5802: Example = Example {
    hash: ScramHash::Sha1,
    client_nonce: "fyko+d2lbbFgONRv9qkxdawL",
    server_nonce: "3rfcNHYJY1ZVvWVs7j",
    salt: "QSXCR+Q6sek8bf92",
    client_first: "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    server_first: "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    client_final:
        "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    server_final: "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
};

/// RFC 7677 §3.
const RFC_7677: Example = Example {
    hash: ScramHash::Sha256,
    client_nonce: "rOprNGfwEbeRWgbNEkqO",
    server_nonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    salt: "W22ZaJ0SNY7soEsUEjb6gQ==",
    client_first: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    server_first:
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    client_final: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                   p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    server_final: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
};

/// RFC 7677's inputs with SHA-512, computed with Python's `hashlib.pbkdf2_hmac` and `hmac`.
const SHA_512: Example = Example {
    hash: ScramHash::Sha512,
    client_final: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                   p=gMGXRcevScNtxZ6/8lQYpGtnsNAc3mGcmNomv+xnoOMw+3R2xNJdMNnzMlTN8PPC6wdp6dybEmDYXYTxwnYPJQ==",
    server_final: "v=ZQnYEgWQMFmmsM8aQMF0nDDCy/AgCzkwk8CmMZYcMg0vSVlKDanekLtifDSeVGT4+5ZxXnJq199RVG2rR7N7Zw==",
    ..RFC_7677
};

impl Example {
    fn credential(&self) -> ScramCredential {
        let salt = unbase64("salt", self.salt).unwrap();
        ScramCredential::derive(self.hash, "pencil", &salt, 4096)
    }

    /// A client that has sent client-first.
    fn client(&self) -> ScramClient {
        let (client, first) =
            ScramClient::with_nonce(self.hash, "user", "pencil", self.client_nonce.into());
        assert_eq!(String::from_utf8(first).unwrap(), self.client_first);
        client
    }

    /// A client that has sent client-final.
    fn client_after_final(&self) -> ScramClient {
        let mut client = self.client();
        let client_final = client
            .handle_challenge(self.server_first.as_bytes())
            .unwrap();
        assert_eq!(String::from_utf8(client_final).unwrap(), self.client_final);
        client
    }

    /// A server that has sent server-first.
    fn server(&self) -> ScramServer {
        let first = ClientFirst::parse(self.client_first.as_bytes()).unwrap();
        let (server, server_first) =
            ScramServer::with_nonce(first, self.credential(), self.server_nonce);
        assert_eq!(String::from_utf8(server_first).unwrap(), self.server_first);
        server
    }
}

#[test]
fn the_client_computes_the_examples() {
    for example in [RFC_5802, RFC_7677, SHA_512] {
        let client = example.client_after_final();
        client
            .handle_success(Some(example.server_final.as_bytes()))
            .unwrap();
    }
}

#[test]
fn the_server_computes_the_examples() {
    for example in [RFC_5802, RFC_7677, SHA_512] {
        let server = example.server();
        assert_eq!(server.username(), "user");
        assert_eq!(server.authzid(), None);
        let server_final = server
            .handle_client_final(example.client_final.as_bytes())
            .unwrap();
        assert_eq!(
            String::from_utf8(server_final).unwrap(),
            example.server_final
        );
    }
}

#[test]
fn the_client_takes_server_final_in_a_challenge_and_answers_it_empty() {
    let mut client = RFC_7677.client_after_final();
    let answer = client
        .handle_challenge(RFC_7677.server_final.as_bytes())
        .unwrap();
    assert!(answer.is_empty());
    assert!(client.handle_challenge(b"v=again").is_err());
    client.handle_success(None).unwrap();
    let mut client = RFC_7677.client_after_final();
    client
        .handle_challenge(RFC_7677.server_final.as_bytes())
        .unwrap();
    client
        .handle_success(Some(RFC_7677.server_final.as_bytes()))
        .unwrap();
}

#[track_caller]
fn assert_err_contains<T: std::fmt::Debug>(result: Result<T, String>, needle: &str) {
    match result {
        Err(e) => assert!(e.contains(needle), "{e:?} does not mention {needle:?}"),
        Ok(v) => panic!("expected an error about {needle:?}, got {v:?}"),
    }
}

#[test]
fn the_client_requires_a_right_server_signature() {
    let wrong = "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=";
    assert_err_contains(
        RFC_7677
            .client_after_final()
            .handle_success(Some(wrong.as_bytes())),
        "server signature is wrong",
    );
    assert_err_contains(
        RFC_7677
            .client_after_final()
            .handle_challenge(wrong.as_bytes()),
        "server signature is wrong",
    );
    for missing in [None, Some(&b""[..])] {
        assert_err_contains(
            RFC_7677.client_after_final().handle_success(missing),
            "without its SCRAM server signature",
        );
    }
    assert_err_contains(
        RFC_7677
            .client()
            .handle_success(Some(RFC_7677.server_final.as_bytes())),
        "before the SCRAM exchange",
    );
    let cases = [
        ("e=invalid-proof", "refused the exchange: invalid-proof"),
        ("x=1", "no server signature"),
        ("v=not base64!", "not valid base64"),
        ("v", "malformed attribute"),
    ];
    for (server_final, error) in cases {
        assert_err_contains(
            RFC_7677
                .client_after_final()
                .handle_success(Some(server_final.as_bytes())),
            error,
        );
    }
    assert_err_contains(
        RFC_7677.client_after_final().handle_challenge(b""),
        "malformed attribute",
    );
}

#[test]
fn the_client_refuses_a_bad_server_first() {
    let nonce = "rOprNGfwEbeRWgbNEkqO";
    let salt = "W22ZaJ0SNY7soEsUEjb6gQ==";
    let cases: Vec<(String, &str)> = vec![
        (
            format!("r=someone-else,s={salt},i=4096"),
            "does not extend ours",
        ),
        (format!("r={nonce},s={salt},i=4096"), "does not extend ours"),
        (
            format!("r={nonce}x y,s={salt},i=4096"),
            "does not extend ours",
        ),
        (
            format!("r={nonce}x,s=!!,i=4096"),
            "salt is not valid base64",
        ),
        (format!("r={nonce}x,s=,i=4096"), "salt is empty"),
        (format!("r={nonce}x,s={salt},i=4095"), "iteration count"),
        (format!("r={nonce}x,s={salt},i=1000001"), "iteration count"),
        (
            format!("r={nonce}x,s={salt},i=99999999999"),
            "iteration count",
        ),
        (format!("r={nonce}x,s={salt},i=-1"), "iteration count"),
        (
            format!("r={nonce}x,i=4096,s={salt}"),
            "not r=...,s=...,i=...",
        ),
        (
            format!("m=ext,r={nonce}x,s={salt},i=4096"),
            "mandatory extension",
        ),
        (format!("r={nonce}x,s={salt}"), "not r=...,s=...,i=..."),
        ("r".into(), "malformed attribute"),
        ("=,=".into(), "malformed attribute"),
    ];
    for (server_first, error) in cases {
        assert_err_contains(
            RFC_7677.client().handle_challenge(server_first.as_bytes()),
            error,
        );
    }
    assert_err_contains(
        RFC_7677.client().handle_challenge(&[0xff, 0xfe]),
        "not UTF-8",
    );
    // Extensions after the iteration count are ignored [RFC 5802 §7].
    let extended = format!("{},x=extension", RFC_7677.server_first);
    RFC_7677
        .client()
        .handle_challenge(extended.as_bytes())
        .unwrap();
}

#[test]
fn user_names_are_escaped_and_unescaped() {
    assert_eq!(escape_name("a=b,c"), "a=3Db=2Cc");
    assert_eq!(unescape_name("a=3Db=2Cc").unwrap(), "a=b,c");
    assert_eq!(unescape_name("plain").unwrap(), "plain");
    for bad in ["=", "a=", "a=2", "a=41", "a=3d", "==3D"] {
        assert!(unescape_name(bad).is_err(), "{bad:?}");
    }
    let (_, first) = ScramClient::with_nonce(ScramHash::Sha256, "a=b,c", "p", "n".into());
    assert_eq!(first, b"n,,n=a=3Db=2Cc,r=n");
    let parsed = ClientFirst::parse(&first).unwrap();
    assert_eq!(parsed.username(), "a=b,c");
}

#[test]
fn the_server_parses_client_first() {
    let first = ClientFirst::parse(b"y,a=ad=2Cmin,n=user,r=abc,x=ext").unwrap();
    assert_eq!(first.username(), "user");
    let credential = RFC_7677.credential();
    let (server, server_first) = ScramServer::with_nonce(first, credential, "xyz");
    assert_eq!(server.authzid(), Some("ad,min"));
    assert!(server_first.starts_with(b"r=abcxyz,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"));
    let cases: [(&[u8], &str); 12] = [
        (b"p=tls-unique,,n=user,r=abc", "channel binding"),
        (b"n,,m=ext,n=user,r=abc", "mandatory extension"),
        (b"n,,n=,r=abc", "user name is empty"),
        (b"n,,n=us=er,r=abc", "'='"),
        (b"n,,n=user,r=", "nonce is empty"),
        (b"n,,n=user,r=a\x7fb", "not printable"),
        (b"x,,n=user,r=abc", "not n,,n=...,r=..."),
        (b"n,n=user,r=abc", "not n,,n=...,r=..."),
        (b"n,,r=abc,n=user", "not n,,n=...,r=..."),
        (b"n,b=x,n=user,r=abc", "not n,,n=...,r=..."),
        (b"", "not n,,n=...,r=..."),
        (b"n,,n=\xff,r=abc", "not UTF-8"),
    ];
    for (client_first, error) in cases {
        assert_err_contains(ClientFirst::parse(client_first).map(|_| ()), error);
    }
}

#[test]
fn the_server_refuses_a_wrong_or_malformed_client_final() {
    let nonce = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
    let proof = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    let wrong_proof = "eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
    let cases: Vec<(String, &str)> = vec![
        (
            format!("c=biws,r={nonce},p={wrong_proof}"),
            "client proof is wrong",
        ),
        (format!("c=biws,r={nonce}x,p={proof}"), "wrong nonce"),
        (
            format!("c=biws,r=rOprNGfwEbeRWgbNEkqO,p={proof}"),
            "wrong nonce",
        ),
        (
            format!("c=eSws,r={nonce},p={proof}"),
            "does not repeat the gs2 header",
        ),
        (format!("c=!,r={nonce},p={proof}"), "not valid base64"),
        (format!("c=biws,r={nonce},p=dHzb"), "wrong length"),
        (format!("c=biws,r={nonce},p=!"), "not valid base64"),
        (format!("c=biws,r={nonce}"), "not c=...,r=...,p=..."),
        (
            format!("r={nonce},c=biws,p={proof}"),
            "not c=...,r=...,p=...",
        ),
        (format!("c=biws,p={proof}"), "not c=...,r=...,p=..."),
        (format!(",p={proof}"), "malformed attribute"),
    ];
    for (client_final, error) in cases {
        assert_err_contains(
            RFC_7677
                .server()
                .handle_client_final(client_final.as_bytes()),
            error,
        );
    }
    assert_err_contains(
        RFC_7677.server().handle_client_final(b"c=biws,\xff"),
        "not UTF-8",
    );
}

#[test]
fn the_credential_text_form_is_rfc_5803s() {
    let text =
        "SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=";
    let parsed: ScramCredential = text.parse().unwrap();
    assert_eq!(parsed, RFC_5802.credential());
    assert_eq!(parsed.to_string(), text);
    assert_eq!(parsed.iterations(), 4096);
    assert_eq!(parsed.salt(), unbase64("salt", "QSXCR+Q6sek8bf92").unwrap());
    for example in [RFC_7677, SHA_512] {
        let credential = example.credential();
        let printed = credential.to_string();
        assert!(printed.starts_with(&format!("{}$4096:{}$", example.hash, example.salt)));
        assert_eq!(printed.parse::<ScramCredential>().unwrap(), credential);
        assert_eq!(
            format!("  {printed}\n").parse::<ScramCredential>().unwrap(),
            credential
        );
    }
    let debug = format!("{parsed:?}");
    assert!(!debug.contains("6dlGYMOdZcOPutkcNY8U2g7vK9Y="), "{debug}");
    assert!(!debug.contains("D+CSWLOshSulAsxiupA+qs2/fTE="), "{debug}");
}

#[test]
fn malformed_credentials_do_not_parse() {
    let keys = "6dlGYMOdZcOPutkcNY8U2g7vK9Y=:D+CSWLOshSulAsxiupA+qs2/fTE=";
    let cases = [
        "".to_string(),
        "SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92".to_string(),
        format!("SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92${keys}$extra"),
        format!("SCRAM-MD5$4096:QSXCR+Q6sek8bf92${keys}"),
        format!("SCRAM-SHA-1-PLUS$4096:QSXCR+Q6sek8bf92${keys}"),
        format!("SCRAM-SHA-1$0:QSXCR+Q6sek8bf92${keys}"),
        format!("SCRAM-SHA-1$x:QSXCR+Q6sek8bf92${keys}"),
        format!("SCRAM-SHA-1$4096QSXCR+Q6sek8bf92${keys}"),
        format!("SCRAM-SHA-1$4096:${keys}"),
        format!("SCRAM-SHA-1$4096:!!${keys}"),
        "SCRAM-SHA-1$4096:QSXCR+Q6sek8bf92$6dlGYMOdZcOPutkcNY8U2g7vK9Y=".to_string(),
        // SHA-1 keys under SHA-256: the wrong length.
        format!("SCRAM-SHA-256$4096:QSXCR+Q6sek8bf92${keys}"),
    ];
    for text in cases {
        let err = text.parse::<ScramCredential>().unwrap_err();
        assert!(
            err.to_string().starts_with("not a SCRAM credential: "),
            "{err}"
        );
    }
}

#[test]
fn decoys_are_stable_per_name_and_secret() {
    let decoy =
        |name: &str, secret: &[u8]| ScramCredential::decoy(ScramHash::Sha256, name, secret, 4096);
    assert_eq!(decoy("mallory", b"s1"), decoy("mallory", b"s1"));
    assert_ne!(decoy("mallory", b"s1").salt(), decoy("eve", b"s1").salt());
    assert_ne!(
        decoy("mallory", b"s1").salt(),
        decoy("mallory", b"s2").salt()
    );
    let d = decoy("mallory", b"s1");
    assert_eq!(d.salt().len(), 16);
    assert_eq!(d.stored_key().len(), 32);
    assert_eq!(d.server_key().len(), 32);
    assert_eq!(d.iterations(), 4096);
    assert_eq!(d.to_string().parse::<ScramCredential>().unwrap(), d);
}

fn authenticator() -> ScramAuthenticator {
    let salt = b"0123456789abcdef";
    ScramAuthenticator::new([
        (
            "alice",
            ScramCredential::derive(ScramHash::Sha256, "a", salt, 4096),
        ),
        (
            "bob",
            ScramCredential::derive(ScramHash::Sha256, "b", salt, 5000),
        ),
        (
            "carol",
            ScramCredential::derive(ScramHash::Sha256, "c", salt, 5000),
        ),
        (
            "carol",
            ScramCredential::derive(ScramHash::Sha1, "c", salt, 4096),
        ),
        // A later credential of the same hash replaces the earlier one.
        (
            "carol",
            ScramCredential::derive(ScramHash::Sha1, "c2", salt, 4096),
        ),
    ])
}

#[test]
fn the_authenticator_offers_what_it_holds_and_answers_strangers_with_decoys() {
    let auth = authenticator().with_decoy_secret(*b"a fixed secret");
    assert_eq!(
        auth.mechanisms(),
        vec![ScramHash::Sha256.symbol(), ScramHash::Sha1.symbol()]
    );
    let alice = auth.scram_credential(ScramHash::Sha256, "alice").unwrap();
    assert_eq!(
        alice,
        ScramCredential::derive(ScramHash::Sha256, "a", b"0123456789abcdef", 4096)
    );
    let carol = auth.scram_credential(ScramHash::Sha1, "carol").unwrap();
    assert_eq!(
        carol,
        ScramCredential::derive(ScramHash::Sha1, "c2", b"0123456789abcdef", 4096)
    );
    // A stranger gets a decoy with the iteration count most users of that hash have, the same every time.
    let stranger = auth.scram_credential(ScramHash::Sha256, "mallory").unwrap();
    assert_eq!(stranger.iterations(), 5000);
    assert_eq!(
        stranger,
        ScramCredential::decoy(ScramHash::Sha256, "mallory", b"a fixed secret", 5000)
    );
    assert_eq!(
        auth.scram_credential(ScramHash::Sha256, "mallory").unwrap(),
        stranger
    );
    // So does a known user asking for a hash it has no credential of.
    let alice_512 = auth.scram_credential(ScramHash::Sha512, "alice").unwrap();
    assert_eq!(alice_512.iterations(), SCRAM_DEFAULT_ITERATIONS);
    assert_eq!(alice_512.hash(), ScramHash::Sha512);
    // Two authenticators with random secrets make different decoys.
    assert_ne!(
        authenticator().scram_credential(ScramHash::Sha256, "mallory"),
        authenticator().scram_credential(ScramHash::Sha256, "mallory")
    );
    let scram = |hash, username: &str| SaslCredentials::Scram {
        hash,
        username: username.into(),
        authzid: None,
    };
    assert_eq!(
        auth.authenticate(&scram(ScramHash::Sha256, "alice"), None),
        SaslVerdict::Accept("alice".into())
    );
    for refused in [
        scram(ScramHash::Sha256, "mallory"),
        scram(ScramHash::Sha512, "alice"),
        SaslCredentials::Plain {
            authzid: None,
            username: "alice".into(),
            password: "a".into(),
        },
    ] {
        assert_eq!(
            auth.authenticate(&refused, None),
            SaslVerdict::Reject(SaslCode::Auth)
        );
    }
    let debug = format!("{auth:?}");
    assert!(debug.contains("users: 3"), "{debug}");
}

/// `message` with byte `at` replaced by each of `bytes` (where that changes it).
fn mutations<'a>(message: &'a str, bytes: &'a [u8]) -> impl Iterator<Item = Vec<u8>> + 'a {
    (0..message.len()).flat_map(move |at| {
        bytes
            .iter()
            .filter(move |&&b| message.as_bytes()[at] != b)
            .map(move |&b| {
                let mut m = message.as_bytes().to_vec();
                m[at] = b;
                m
            })
    })
}

#[test]
fn no_changed_byte_passes_a_check_or_panics_a_parser() {
    let bytes = [0x00, b',', b'=', b'a', b'~', 0xff];
    for example in [RFC_5802, RFC_7677] {
        let server = example.server();
        for m in mutations(example.client_final, &bytes) {
            assert!(server.handle_client_final(&m).is_err(), "{m:?}");
        }
        let client = example.client_after_final();
        for m in mutations(example.server_final, &bytes) {
            assert!(client.handle_success(Some(&m)).is_err(), "{m:?}");
        }
        for m in mutations(example.client_first, &bytes) {
            let _ = ClientFirst::parse(&m);
        }
        // Few of these get as far as the (slow) key derivation.
        for m in mutations(example.server_first, &[b',', b'=', 0xff]) {
            let _ = example.client().handle_challenge(&m);
        }
    }
}
