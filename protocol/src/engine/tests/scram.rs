//! SCRAM over SASL frames [AMQP 1.0 §5.3, RFC 5802, RFC 7677], client engine against server engine: each of the
//! three mechanisms admits the user (and the server reports who); the client's preference list picks among the
//! server's offer, and an empty list still means PLAIN/ANONYMOUS; a wrong password and an unknown user fail alike
//! on both ends; a server that sends a wrong server signature, none at all, or claims success without the exchange
//! is refused by the client with an error that says so; server-final in a challenge is accepted; a too-low
//! iteration count is refused; and a hostile client (a response before init, malformed messages, an oversized
//! frame, an extra response or init) ends its transport cleanly.

use std::sync::Arc;

use super::sasl::{authenticated, opened, sasl_frames, server_sasl};
use super::*;
use crate::codec::Symbol;
use crate::frame::{SaslChallenge, SaslCode, SaslFrame, SaslInit, SaslOutcome, SaslResponse};

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

const SALT: &[u8] = b"sixteen byte salt";

/// A client that offers `mechanisms` as user/password.
fn scram_client(mechanisms: &[ScramHash], user: &str, password: &str) -> Option<SaslClientConfig> {
    Some(SaslClientConfig {
        mechanisms: mechanisms.iter().map(|h| h.symbol()).collect(),
        username: Some(user.into()),
        password: Some(password.into()),
    })
}

/// An authenticator that knows "user" with password "pencil" for `hashes`, at 5000 iterations.
fn users(hashes: &[ScramHash]) -> ScramAuthenticator {
    ScramAuthenticator::new(
        hashes
            .iter()
            .map(|&h| ("user", ScramCredential::derive(h, "pencil", SALT, 5000))),
    )
}

/// A pair whose client logs in as `user`/`password` with `mechanisms`, against [`users`]`(hashes)`.
fn scram_pair(mechanisms: &[ScramHash], user: &str, password: &str, hashes: &[ScramHash]) -> Pair {
    let (user, password) = (user.to_string(), password.to_string());
    let server = users(hashes);
    pair_with(
        |c| c.sasl_client = scram_client(mechanisms, &user, &password),
        |s| s.sasl_server = server_sasl(server, false),
    )
}

/// The descriptions of the `TransportError` events.
fn error_texts(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::TransportError(err) => Some(err.description.clone().unwrap_or_default()),
            _ => None,
        })
        .collect()
}

/// Asserts that `events` end with one `amqp:unauthorized-access` failure whose text has `needle`, without
/// authenticating or opening.
#[track_caller]
fn assert_refused(events: &[Event], needle: &str) {
    assert_eq!(
        transport_errors(events),
        vec![ErrorCondition::UnauthorizedAccess],
        "{events:?}"
    );
    let texts = error_texts(events);
    assert!(
        texts[0].contains(needle),
        "{texts:?} does not mention {needle:?}"
    );
    assert!(!has(events, |e| matches!(e, Event::Authenticated { .. })));
    assert!(!opened(events));
    assert_closed_once(events);
}

/// Each SASL frame's name and, for an outcome, its code.
fn shape(frames: &[SaslFrame]) -> Vec<String> {
    frames
        .iter()
        .map(|f| match f {
            SaslFrame::SaslOutcome(o) => format!("{} {:?}", f.name(), o.code),
            _ => f.name().to_string(),
        })
        .collect()
}

fn binary(f: &SaslFrame) -> Vec<u8> {
    match f {
        SaslFrame::SaslInit(i) => i.initial_response.as_deref().unwrap_or_default().to_vec(),
        SaslFrame::SaslChallenge(c) => c.challenge.to_vec(),
        SaslFrame::SaslResponse(r) => r.response.to_vec(),
        SaslFrame::SaslOutcome(o) => o.additional_data.as_deref().unwrap_or_default().to_vec(),
        SaslFrame::SaslMechanisms(_) => Vec::new(),
    }
}

fn sasl_frame(f: SaslFrame) -> Frame {
    Frame {
        channel: 0,
        body: FrameBody::Sasl(f),
    }
}

#[test]
fn each_mechanism_authenticates_and_the_server_reports_the_user() {
    for hash in ScramHash::ALL {
        let mut p = scram_pair(&[hash], "user", "pencil", &ScramHash::ALL);
        let log = record(&mut p);
        p.open();
        assert_eq!(p.client_events[0], authenticated(hash.mechanism(), None));
        assert_eq!(
            p.server_events[0],
            authenticated(hash.mechanism(), Some("user"))
        );
        assert!(opened(&p.client_events) && opened(&p.server_events));
        let to_server = sasl_frames(&log, C2S);
        let to_client = sasl_frames(&log, S2C);
        assert_eq!(shape(&to_server), ["sasl-init", "sasl-response"]);
        assert_eq!(
            shape(&to_client),
            ["sasl-mechanisms", "sasl-challenge", "sasl-outcome Ok"]
        );
        let SaslFrame::SaslInit(init) = &to_server[0] else {
            unreachable!()
        };
        assert_eq!(init.mechanism, hash.symbol());
        let client_first = String::from_utf8(binary(&to_server[0])).unwrap();
        let server_first = String::from_utf8(binary(&to_client[1])).unwrap();
        let server_final = String::from_utf8(binary(&to_client[2])).unwrap();
        assert!(client_first.starts_with("n,,n=user,r="), "{client_first}");
        let client_nonce = &client_first["n,,n=user,r=".len()..];
        assert!(server_first.starts_with(&format!("r={client_nonce}")));
        assert!(server_first.ends_with(",i=5000"), "{server_first}");
        assert!(server_final.starts_with("v="), "{server_final}");
        p.begin();
    }
}

#[test]
fn nonces_differ_between_connections() {
    let first_messages: Vec<Vec<u8>> = (0..2)
        .map(|_| {
            let mut p = scram_pair(&[ScramHash::Sha256], "user", "pencil", &ScramHash::ALL);
            let log = record(&mut p);
            p.open();
            let c = binary(&sasl_frames(&log, C2S)[0]);
            let s = binary(&sasl_frames(&log, S2C)[1]);
            [c, s].concat()
        })
        .collect();
    assert_ne!(first_messages[0], first_messages[1]);
}

#[test]
fn the_client_takes_its_first_preference_that_the_server_offers() {
    let all = [ScramHash::Sha512, ScramHash::Sha256, ScramHash::Sha1];
    let mut p = scram_pair(
        &all,
        "user",
        "pencil",
        &[ScramHash::Sha1, ScramHash::Sha256],
    );
    p.open();
    assert_eq!(p.client_events[0], authenticated("SCRAM-SHA-256", None));
    let mut p = scram_pair(
        &[ScramHash::Sha1, ScramHash::Sha512],
        "user",
        "pencil",
        &all,
    );
    p.open();
    assert_eq!(p.client_events[0], authenticated("SCRAM-SHA-1", None));
}

#[test]
fn an_empty_preference_list_still_means_plain_or_anonymous() {
    let mut p = pair_with(
        |c| {
            c.sasl_client = Some(SaslClientConfig {
                username: Some("user".into()),
                password: Some("pencil".into()),
                ..SaslClientConfig::default()
            })
        },
        |s| s.sasl_server = server_sasl(users(&ScramHash::ALL), false),
    );
    p.client.open().unwrap();
    p.drive();
    assert_refused(&p.client_events, "no SASL mechanism in common");
}

#[test]
fn scram_without_a_password_fails_the_client_before_sending_anything() {
    let mut p = pair_with(
        |c| {
            c.sasl_client = Some(SaslClientConfig {
                mechanisms: vec![ScramHash::Sha256.symbol()],
                username: Some("user".into()),
                password: None,
            })
        },
        |s| s.sasl_server = server_sasl(users(&ScramHash::ALL), false),
    );
    let log = record(&mut p);
    p.client.open().unwrap();
    p.drive();
    assert_refused(&p.client_events, "a user name and a password are needed");
    assert!(sasl_frames(&log, C2S).is_empty());
}

/// Runs a login that must fail at the proof; returns the SASL frames each way.
fn failed_login(user: &str, password: &str) -> (Vec<SaslFrame>, Vec<SaslFrame>) {
    let mut p = scram_pair(&[ScramHash::Sha256], user, password, &[ScramHash::Sha256]);
    let log = record(&mut p);
    p.client.open().unwrap();
    p.drive();
    assert_refused(&p.client_events, "the server answered Auth");
    assert_refused(&p.server_events, "the client proof is wrong");
    assert!(
        log.borrow().iter().all(|(_, f)| performative(f).is_none()),
        "no AMQP frame after a failed SASL exchange"
    );
    assert!(p.client.is_finished() && p.server.is_finished());
    (sasl_frames(&log, C2S), sasl_frames(&log, S2C))
}

#[test]
fn a_wrong_password_fails_on_both_ends() {
    let (to_server, to_client) = failed_login("user", "wrong");
    assert_eq!(shape(&to_server), ["sasl-init", "sasl-response"]);
    assert_eq!(
        shape(&to_client),
        ["sasl-mechanisms", "sasl-challenge", "sasl-outcome Auth"]
    );
    assert_eq!(
        to_client[2],
        SaslFrame::SaslOutcome(SaslOutcome {
            code: SaslCode::Auth,
            additional_data: None
        })
    );
}

#[test]
fn an_unknown_user_fails_exactly_as_a_wrong_password_does() {
    let (known_c2s, known_s2c) = failed_login("user", "wrong");
    let (unknown_c2s, unknown_s2c) = failed_login("mallory", "wrong");
    assert_eq!(shape(&unknown_c2s), shape(&known_c2s));
    assert_eq!(shape(&unknown_s2c), shape(&known_s2c));
    // The decoy's server-first looks like a real one: a 16-byte salt and the users' iteration count.
    let server_first = String::from_utf8(binary(&unknown_s2c[1])).unwrap();
    let salt = server_first.split(',').nth(1).unwrap();
    assert_eq!(salt.len(), "s=".len() + 24, "{server_first}");
    assert!(server_first.ends_with(",i=5000"), "{server_first}");
    assert_eq!(unknown_s2c[2], known_s2c[2]);
}

/// A pair for RFC 7677's user whose first server-to-client SASL frame for which `rewrite` returns frames is
/// replaced by them; the client's refusal is returned with the frame log.
fn tampered(rewrite: impl FnMut(&Frame) -> Option<Vec<Frame>> + 'static) -> (Pair, FrameLog) {
    let mut p = scram_pair(&[ScramHash::Sha256], "user", "pencil", &[ScramHash::Sha256]);
    let log = rewrite_first(&mut p, S2C, rewrite);
    p.client.open().unwrap();
    p.drive();
    (p, log)
}

/// The server-final in a `sasl-outcome`, if `f` is one.
fn server_final(f: &Frame) -> Option<Bytes> {
    match &f.body {
        FrameBody::Sasl(SaslFrame::SaslOutcome(o)) => o.additional_data.clone(),
        _ => None,
    }
}

#[test]
fn a_wrong_server_signature_fails_the_client() {
    let (p, _) = tampered(|f| {
        let v = server_final(f)?;
        let mut forged = v.to_vec();
        // Change one base64 digit of the signature (not the last, whose low bits are padding).
        forged[5] = if forged[5] == b'A' { b'B' } else { b'A' };
        Some(vec![sasl_frame(SaslFrame::SaslOutcome(SaslOutcome {
            code: SaslCode::Ok,
            additional_data: Some(Bytes::from(forged)),
        }))])
    });
    assert_refused(&p.client_events, "SCRAM server signature is wrong");
    // The server accepted; the client does not go on to AMQP.
    assert_eq!(
        p.server_events[0],
        authenticated("SCRAM-SHA-256", Some("user"))
    );
    assert!(!opened(&p.server_events));
}

#[test]
fn a_missing_server_signature_fails_the_client() {
    let (p, _) = tampered(|f| {
        server_final(f)?;
        Some(vec![sasl_frame(SaslFrame::SaslOutcome(SaslOutcome {
            code: SaslCode::Ok,
            additional_data: None,
        }))])
    });
    assert_refused(&p.client_events, "without its SCRAM server signature");
}

#[test]
fn success_without_the_exchange_fails_the_client() {
    let (p, _) = tampered(|f| match &f.body {
        FrameBody::Sasl(SaslFrame::SaslChallenge(_)) => {
            Some(vec![sasl_frame(SaslFrame::SaslOutcome(SaslOutcome {
                code: SaslCode::Ok,
                additional_data: None,
            }))])
        }
        _ => None,
    });
    assert_refused(
        &p.client_events,
        "the server reported success before the SCRAM exchange took place",
    );
}

/// Replaces the server's outcome with server-final in a challenge followed by `then`, and drops the client's
/// empty answer to it.
fn final_in_challenge(then: Vec<SaslFrame>) -> (Pair, FrameLog) {
    let mut p = scram_pair(&[ScramHash::Sha256], "user", "pencil", &[ScramHash::Sha256]);
    let mut then = Some(then);
    let log = tap(&mut p, move |dir, f| match (dir, &f.body) {
        (S2C, FrameBody::Sasl(SaslFrame::SaslOutcome(o))) => {
            let challenge = SaslFrame::SaslChallenge(SaslChallenge {
                challenge: o.additional_data.clone().unwrap_or_default(),
            });
            let frames = std::iter::once(challenge).chain(then.take().unwrap_or_default());
            Verdict::Replace(encode(&frames.map(sasl_frame).collect::<Vec<_>>()))
        }
        (C2S, FrameBody::Sasl(SaslFrame::SaslResponse(r))) if r.response.is_empty() => {
            Verdict::Drop
        }
        _ => Verdict::Pass,
    });
    p.open();
    (p, log)
}

#[test]
fn server_final_in_a_challenge_is_checked_and_answered_empty() {
    let ok = SaslFrame::SaslOutcome(SaslOutcome {
        code: SaslCode::Ok,
        additional_data: None,
    });
    let (p, log) = final_in_challenge(vec![ok]);
    assert_eq!(p.client_events[0], authenticated("SCRAM-SHA-256", None));
    assert!(opened(&p.client_events) && opened(&p.server_events));
    let responses: Vec<Vec<u8>> = sasl_frames(&log, C2S)
        .iter()
        .filter(|f| matches!(f, SaslFrame::SaslResponse(_)))
        .map(binary)
        .collect();
    assert_eq!(responses.len(), 2);
    assert!(responses[1].is_empty());
}

#[test]
fn a_challenge_after_server_final_fails_the_client() {
    let again = SaslFrame::SaslChallenge(SaslChallenge {
        challenge: Bytes::from_static(b"v=again"),
    });
    let (p, _) = final_in_challenge(vec![again]);
    assert_refused(
        &p.client_events,
        "a challenge after the server's final message",
    );
}

#[test]
fn too_few_iterations_fail_the_client() {
    let credential = ScramCredential::derive(ScramHash::Sha256, "pencil", SALT, 1000);
    let mut p = pair_with(
        |c| c.sasl_client = scram_client(&[ScramHash::Sha256], "user", "pencil"),
        |s| s.sasl_server = server_sasl(ScramAuthenticator::new([("user", credential)]), false),
    );
    p.client.open().unwrap();
    p.drive();
    assert_refused(
        &p.client_events,
        "the iteration count is not a number from 4096",
    );
}

/// Offers SCRAM-SHA-256 and answers every lookup with this credential (`None`: the trait's default).
struct Fixed(Option<ScramCredential>);

impl Authenticator for Fixed {
    fn mechanisms(&self) -> Vec<Symbol> {
        vec![ScramHash::Sha256.symbol()]
    }

    fn authenticate(&self, _: &SaslCredentials, _: Option<&str>) -> SaslVerdict {
        SaslVerdict::Accept("anyone".into())
    }

    fn scram_credential(&self, _: ScramHash, _: &str) -> Option<ScramCredential> {
        self.0.clone()
    }
}

#[test]
fn an_authenticator_without_a_credential_of_the_hash_refuses_at_once() {
    let sha1 = ScramCredential::derive(ScramHash::Sha1, "pencil", SALT, 4096);
    for credential in [None, Some(sha1)] {
        let mut p = pair_with(
            |c| c.sasl_client = scram_client(&[ScramHash::Sha256], "user", "pencil"),
            |s| s.sasl_server = server_sasl(Fixed(credential), false),
        );
        let log = record(&mut p);
        p.client.open().unwrap();
        p.drive();
        assert_refused(&p.server_events, "no credential for the user");
        assert_refused(&p.client_events, "the server answered Auth");
        assert_eq!(
            shape(&sasl_frames(&log, S2C)),
            ["sasl-mechanisms", "sasl-outcome Auth"]
        );
    }
}

// ----- a hostile client -----

/// A pair whose client's `sasl-init` is replaced by `frames` (built from the real init) on the wire.
fn hostile(frames: impl FnOnce(&SaslInit) -> Vec<SaslFrame> + 'static) -> (Pair, FrameLog) {
    let mut p = scram_pair(&[ScramHash::Sha256], "user", "pencil", &ScramHash::ALL);
    let mut frames = Some(frames);
    let log = rewrite_first(&mut p, C2S, move |f| match &f.body {
        FrameBody::Sasl(SaslFrame::SaslInit(init)) => {
            let make = frames.take()?;
            Some(make(init).into_iter().map(sasl_frame).collect())
        }
        _ => None,
    });
    p.client.open().unwrap();
    p.drive();
    (p, log)
}

fn response(bytes: &'static [u8]) -> SaslFrame {
    SaslFrame::SaslResponse(SaslResponse {
        response: Bytes::from_static(bytes),
    })
}

fn init_with(init: &SaslInit, initial_response: Option<&'static [u8]>) -> SaslFrame {
    SaslFrame::SaslInit(SaslInit {
        initial_response: initial_response.map(Bytes::from_static),
        ..init.clone()
    })
}

/// Asserts the server ended its transport with `condition` and a text containing `needle`, without
/// authenticating anyone.
#[track_caller]
fn assert_server_failed(p: &Pair, condition: ErrorCondition, needle: &str) {
    let events = &p.server_events;
    assert_eq!(transport_errors(events), vec![condition], "{events:?}");
    let texts = error_texts(events);
    assert!(
        texts[0].contains(needle),
        "{texts:?} does not mention {needle:?}"
    );
    assert!(!has(events, |e| matches!(e, Event::Authenticated { .. })));
    assert_closed_once(events);
}

#[test]
fn a_response_before_init_fails_the_transport() {
    let (p, log) = hostile(|_| vec![response(b"c=biws,r=x,p=AAAA")]);
    assert_server_failed(&p, ErrorCondition::NotAllowed, "unexpected sasl-response");
    assert_eq!(shape(&sasl_frames(&log, S2C)), ["sasl-mechanisms"]);
}

#[test]
fn malformed_client_first_messages_are_refused() {
    let cases: [(Option<&'static [u8]>, &str); 5] = [
        (None, "not n,,n=...,r=..."),
        (Some(b"garbage"), "not n,,n=...,r=..."),
        (Some(b"p=tls-unique,,n=user,r=abc"), "channel binding"),
        (Some(b"n,,n=user,r=a,b"), "malformed attribute"),
        (Some(b"n,,n=\xc3\x28,r=abc"), "not UTF-8"),
    ];
    for (client_first, needle) in cases {
        let (p, log) = hostile(move |init| vec![init_with(init, client_first)]);
        assert_server_failed(&p, ErrorCondition::UnauthorizedAccess, needle);
        assert_eq!(
            shape(&sasl_frames(&log, S2C)),
            ["sasl-mechanisms", "sasl-outcome Auth"]
        );
    }
}

#[test]
fn a_malformed_client_final_is_refused() {
    for client_final in [&b"c=biws"[..], b"", b"\xff\xff", b"c=biws,r=x,p=AAAA"] {
        let (p, log) = hostile(move |init| {
            vec![
                init_with(init, Some(b"n,,n=user,r=abc")),
                response(client_final),
            ]
        });
        assert_server_failed(&p, ErrorCondition::UnauthorizedAccess, "client-final");
        assert_eq!(
            shape(&sasl_frames(&log, S2C)),
            ["sasl-mechanisms", "sasl-challenge", "sasl-outcome Auth"]
        );
    }
}

#[test]
fn an_oversized_response_fails_the_transport() {
    let (p, _) = hostile(|init| {
        vec![
            init_with(init, Some(b"n,,n=user,r=abc")),
            response(&[b'x'; 600]),
        ]
    });
    assert_server_failed(
        &p,
        ErrorCondition::FramingError,
        "exceeds the max-frame-size of 512",
    );
}

#[test]
fn a_second_init_during_the_exchange_fails_the_transport() {
    let (p, _) = hostile(|init| {
        vec![
            init_with(init, Some(b"n,,n=user,r=abc")),
            init_with(init, Some(b"n,,n=user,r=abc")),
        ]
    });
    assert_server_failed(&p, ErrorCondition::NotAllowed, "unexpected sasl-init");
}

#[test]
fn an_extra_response_after_success_fails_the_transport() {
    let mut p = scram_pair(&[ScramHash::Sha256], "user", "pencil", &ScramHash::ALL);
    // The client's (right) client-final goes out twice.
    tap(&mut p, |dir, f| match (dir, &f.body) {
        (C2S, FrameBody::Sasl(SaslFrame::SaslResponse(_))) => {
            Verdict::Replace(encode(&[f.clone(), f.clone()]))
        }
        _ => Verdict::Pass,
    });
    p.client.open().unwrap();
    p.drive();
    let events = &p.server_events;
    assert_eq!(events[0], authenticated("SCRAM-SHA-256", Some("user")));
    assert_eq!(transport_errors(events), vec![ErrorCondition::FramingError]);
    assert!(error_texts(events)[0].contains("unsupported protocol header"));
    assert_closed_once(events);
}

#[test]
fn the_hostname_of_sasl_init_reaches_the_authenticator() {
    /// Admits "user" for SCRAM, and remembers the hostname it was asked with.
    struct Recording(ScramAuthenticator, std::sync::Mutex<Vec<Option<String>>>);
    impl Authenticator for Recording {
        fn mechanisms(&self) -> Vec<Symbol> {
            self.0.mechanisms()
        }
        fn authenticate(&self, c: &SaslCredentials, hostname: Option<&str>) -> SaslVerdict {
            self.1.lock().unwrap().push(hostname.map(String::from));
            self.0.authenticate(c, hostname)
        }
        fn scram_credential(&self, hash: ScramHash, username: &str) -> Option<ScramCredential> {
            self.0.scram_credential(hash, username)
        }
    }
    let auth = Arc::new(Recording(users(&[ScramHash::Sha1]), Default::default()));
    let server: Arc<dyn Authenticator> = auth.clone();
    let mut p = pair_with(
        |c| {
            c.sasl_client = scram_client(&[ScramHash::Sha1], "user", "pencil");
            c.hostname = Some("vhost".into());
        },
        |s| {
            s.sasl_server = Some(SaslServerConfig {
                authenticator: server,
                allow_skip: false,
            })
        },
    );
    p.open();
    assert_eq!(
        p.server_events[0],
        authenticated("SCRAM-SHA-1", Some("user"))
    );
    assert_eq!(*auth.1.lock().unwrap(), vec![Some("vhost".to_string())]);
}

/// A pair whose client uses PLAIN (or ANONYMOUS without a user) against `auth`.
fn plain_pair(auth: ScramAuthenticator, user: Option<(&str, &str)>) -> Pair {
    let mut p = pair_with(
        |c| {
            c.sasl_client = Some(SaslClientConfig {
                mechanisms: vec![Symbol::from_static(if user.is_some() {
                    "PLAIN"
                } else {
                    "ANONYMOUS"
                })],
                username: user.map(|(u, _)| u.to_string()),
                password: user.map(|(_, p)| p.to_string()),
            })
        },
        |s| s.sasl_server = server_sasl(auth, false),
    );
    p.client.open().unwrap();
    p.drive();
    p
}

#[test]
fn plain_and_anonymous_are_offered_only_when_allowed_and_plain_checks_the_stored_keys() {
    let offered = |a: &ScramAuthenticator| -> Vec<String> {
        a.mechanisms()
            .iter()
            .map(|m| m.as_str().to_string())
            .collect()
    };
    let auth = users(&[ScramHash::Sha256]);
    assert_eq!(offered(&auth), ["SCRAM-SHA-256"]);
    let auth = auth.allow_plain(true).allow_anonymous(true);
    assert_eq!(offered(&auth), ["SCRAM-SHA-256", "PLAIN", "ANONYMOUS"]);

    let p = plain_pair(auth.clone(), Some(("user", "pencil")));
    assert_eq!(p.server_events[0], authenticated("PLAIN", Some("user")));
    for (user, password) in [("user", "wrong"), ("nobody", "pencil")] {
        let p = plain_pair(auth.clone(), Some((user, password)));
        assert!(
            !opened(&p.server_events),
            "{user}/{password}: {:?}",
            p.server_events
        );
    }
    let p = plain_pair(auth, None);
    assert_eq!(
        p.server_events[0],
        authenticated("ANONYMOUS", Some("anonymous"))
    );
    let p = plain_pair(users(&[ScramHash::Sha256]), Some(("user", "pencil")));
    assert!(!opened(&p.server_events), "PLAIN not offered by default");
}
