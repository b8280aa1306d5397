//! SASL [AMQP 1.0 §5.3]: ANONYMOUS, PLAIN accepted and refused (the client gets `amqp:unauthorized-access` and
//! `TransportClosed`, and no AMQP frame is exchanged), EXTERNAL through a custom authenticator, no mechanism in
//! common, a mechanism the server did not offer, a server that requires SASL answering a plain AMQP header with
//! its SASL header and closing, a SASL client refused by a server without SASL, and `allow_skip`.

use std::sync::{Arc, Mutex};

use super::*;
use crate::codec::Symbol;
use crate::frame::{SaslCode, SaslFrame, SaslInit, SaslOutcome};

const C2S: Direction = Direction::ClientToServer;
const S2C: Direction = Direction::ServerToClient;

pub(super) fn server_sasl(
    auth: impl Authenticator + 'static,
    allow_skip: bool,
) -> Option<SaslServerConfig> {
    Some(SaslServerConfig {
        authenticator: Arc::new(auth),
        allow_skip,
    })
}

fn plain(user: &str, password: &str) -> Option<SaslClientConfig> {
    Some(SaslClientConfig {
        username: Some(user.into()),
        password: Some(password.into()),
        ..SaslClientConfig::default()
    })
}

pub(super) fn authenticated(mechanism: &'static str, user: Option<&str>) -> Event {
    Event::Authenticated {
        mechanism: Symbol::from_static(mechanism),
        user: user.map(String::from),
    }
}

/// The SASL frames logged going `dir`.
pub(super) fn sasl_frames(log: &FrameLog, dir: Direction) -> Vec<SaslFrame> {
    log.borrow()
        .iter()
        .filter(|(d, _)| *d == dir)
        .filter_map(|(_, f)| match &f.body {
            FrameBody::Sasl(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// Every unit a [`raw_units`] hook saw in flight, with its direction, in order.
type Units = Rc<RefCell<Vec<(Direction, Vec<u8>)>>>;

/// Records every unit in flight (protocol headers and frames alike) as raw bytes.
fn raw_units(p: &mut Pair) -> Units {
    let units = Rc::new(RefCell::new(Vec::new()));
    let seen = units.clone();
    p.set_hook(move |dir, unit| {
        seen.borrow_mut().push((dir, unit.to_vec()));
        Verdict::Pass
    });
    units
}

pub(super) fn opened(events: &[Event]) -> bool {
    has(events, |e| matches!(e, Event::ConnectionRemoteOpen(_)))
}

#[test]
fn anonymous_authenticates_and_the_connection_opens() {
    let mut p = pair_with(
        |c| c.sasl_client = Some(SaslClientConfig::default()),
        |s| s.sasl_server = server_sasl(PlainAuthenticator::anonymous(), false),
    );
    let units = raw_units(&mut p);
    p.open();
    assert_eq!(p.client_events[0], authenticated("ANONYMOUS", None));
    assert_eq!(
        p.server_events[0],
        authenticated("ANONYMOUS", Some("anonymous"))
    );
    assert!(opened(&p.client_events) && opened(&p.server_events));
    let headers = |dir| -> Vec<[u8; 8]> {
        units
            .borrow()
            .iter()
            .filter(|(d, u)| *d == dir && u.starts_with(b"AMQP"))
            .map(|(_, u)| u[..].try_into().unwrap())
            .collect()
    };
    let expected = vec![
        ProtocolHeader::SASL.to_bytes(),
        ProtocolHeader::AMQP.to_bytes(),
    ];
    assert_eq!(headers(C2S), expected);
    assert_eq!(headers(S2C), expected);
    p.begin();
}

#[test]
fn plain_with_the_right_password_authenticates_as_the_user() {
    let mut p = pair_with(
        |c| {
            c.sasl_client = plain("user", "secret");
            c.hostname = Some("example.org".into());
        },
        |s| s.sasl_server = server_sasl(PlainAuthenticator::new([("user", "secret")]), false),
    );
    let log = record(&mut p);
    p.open();
    assert_eq!(p.client_events[0], authenticated("PLAIN", None));
    assert_eq!(p.server_events[0], authenticated("PLAIN", Some("user")));
    assert!(opened(&p.client_events) && opened(&p.server_events));
    assert_eq!(
        sasl_frames(&log, C2S),
        vec![SaslFrame::SaslInit(SaslInit {
            mechanism: Symbol::from_static("PLAIN"),
            initial_response: Some(Bytes::from_static(b"\0user\0secret")),
            hostname: Some("example.org".into()),
        })]
    );
}

#[test]
fn plain_with_a_wrong_password_fails_on_both_ends_before_any_amqp_frame() {
    let mut p = pair_with(
        |c| c.sasl_client = plain("user", "wrong"),
        |s| s.sasl_server = server_sasl(PlainAuthenticator::new([("user", "secret")]), false),
    );
    let log = record(&mut p);
    p.client.open().unwrap();
    p.drive();
    for events in [&p.client_events, &p.server_events] {
        assert_eq!(
            transport_errors(events),
            vec![ErrorCondition::UnauthorizedAccess]
        );
        assert_closed_once(events);
    }
    assert_eq!(p.client_events.len(), 2, "{:?}", p.client_events);
    // The server tells its user who failed, for its log and its throttle.
    assert_eq!(
        p.server_events[0],
        Event::AuthenticationFailed {
            mechanism: Some(Symbol::from_static("PLAIN")),
            user: Some("user".into())
        }
    );
    assert_eq!(p.server_events.len(), 3, "{:?}", p.server_events);
    assert_eq!(
        sasl_frames(&log, S2C).last(),
        Some(&SaslFrame::SaslOutcome(SaslOutcome {
            code: SaslCode::Auth,
            additional_data: None
        }))
    );
    assert!(
        log.borrow().iter().all(|(_, f)| performative(f).is_none()),
        "no AMQP frame after a failed SASL exchange"
    );
    assert!(p.client.is_finished() && p.server.is_finished());
}

/// Admits EXTERNAL only, as the identity a TLS layer established, and remembers what it was asked.
#[derive(Default)]
struct CertificateAuthenticator {
    asked: Mutex<Vec<(SaslCredentials, Option<String>)>>,
}

impl Authenticator for CertificateAuthenticator {
    fn mechanisms(&self) -> Vec<Symbol> {
        vec![Symbol::from_static("EXTERNAL")]
    }

    fn authenticate(&self, credentials: &SaslCredentials, hostname: Option<&str>) -> SaslVerdict {
        self.asked
            .lock()
            .unwrap()
            .push((credentials.clone(), hostname.map(String::from)));
        match credentials {
            SaslCredentials::External { .. } => SaslVerdict::Accept("CN=client".into()),
            _ => SaslVerdict::Reject(SaslCode::Auth),
        }
    }
}

#[test]
fn external_is_decided_by_the_authenticator() {
    let auth = Arc::new(CertificateAuthenticator::default());
    let server_auth: Arc<dyn Authenticator> = auth.clone();
    let mut p = pair_with(
        |c| {
            c.sasl_client = Some(SaslClientConfig {
                mechanisms: vec![Symbol::from_static("EXTERNAL")],
                ..SaslClientConfig::default()
            });
            c.hostname = Some("broker".into());
        },
        |s| {
            s.sasl_server = Some(SaslServerConfig {
                authenticator: server_auth,
                allow_skip: false,
            })
        },
    );
    p.open();
    assert_eq!(p.client_events[0], authenticated("EXTERNAL", None));
    assert_eq!(
        p.server_events[0],
        authenticated("EXTERNAL", Some("CN=client"))
    );
    assert!(opened(&p.client_events) && opened(&p.server_events));
    assert_eq!(
        *auth.asked.lock().unwrap(),
        vec![(
            SaslCredentials::External { authzid: None },
            Some("broker".to_string())
        )]
    );
}

#[test]
fn no_mechanism_in_common_fails_the_client() {
    let mut p = pair_with(
        |c| {
            c.sasl_client = Some(SaslClientConfig {
                mechanisms: vec![Symbol::from_static("PLAIN")],
                ..plain("user", "secret").unwrap()
            })
        },
        |s| s.sasl_server = server_sasl(PlainAuthenticator::anonymous(), false),
    );
    let log = record(&mut p);
    p.client.open().unwrap();
    p.drive();
    assert_eq!(
        transport_errors(&p.client_events),
        vec![ErrorCondition::UnauthorizedAccess]
    );
    assert_closed_once(&p.client_events);
    assert!(sasl_frames(&log, C2S).is_empty(), "no sasl-init was sent");
    // The server waits for a sasl-init until the transport goes away.
    assert!(p.server_events.is_empty(), "{:?}", p.server_events);
    p.server.handle_read_closed();
    p.drive();
    assert_eq!(
        transport_errors(&p.server_events),
        vec![ErrorCondition::FramingError]
    );
    assert_closed_once(&p.server_events);
}

#[test]
fn a_server_requiring_sasl_answers_a_plain_amqp_header_with_its_sasl_header_and_closes() {
    let mut p = pair_with(
        |_| {},
        |s| s.sasl_server = server_sasl(PlainAuthenticator::anonymous(), false),
    );
    let units = raw_units(&mut p);
    p.client.open().unwrap();
    p.drive();
    let from_server: Vec<Vec<u8>> = units
        .borrow()
        .iter()
        .filter(|(d, _)| *d == S2C)
        .map(|(_, u)| u.clone())
        .collect();
    assert_eq!(from_server, vec![ProtocolHeader::SASL.to_bytes().to_vec()]);
    assert_eq!(
        transport_errors(&p.server_events),
        vec![ErrorCondition::NotAllowed]
    );
    assert_eq!(
        transport_errors(&p.client_events),
        vec![ErrorCondition::FramingError]
    );
    for events in [&p.client_events, &p.server_events] {
        assert!(!opened(events));
        assert_closed_once(events);
    }
}

#[test]
fn a_sasl_client_is_refused_by_a_server_without_sasl() {
    let mut p = pair_with(
        |c| c.sasl_client = Some(SaslClientConfig::default()),
        |_| {},
    );
    p.client.open().unwrap();
    p.drive();
    assert_eq!(
        transport_errors(&p.server_events),
        vec![ErrorCondition::NotAllowed]
    );
    assert_eq!(
        transport_errors(&p.client_events),
        vec![ErrorCondition::FramingError]
    );
    assert_closed_once(&p.client_events);
    assert_closed_once(&p.server_events);
}

#[test]
fn allow_skip_admits_clients_with_and_without_sasl() {
    let server = |s: &mut ConnectionConfig| {
        s.sasl_server = server_sasl(PlainAuthenticator::anonymous(), true)
    };
    let mut skipping = pair_with(|_| {}, server);
    skipping.open();
    assert!(opened(&skipping.client_events) && opened(&skipping.server_events));
    assert_eq!(
        skipping.server_events[0],
        Event::SaslSkipped {
            user: "anonymous".into()
        }
    );
    skipping.begin();
    let mut negotiating = pair_with(
        |c| c.sasl_client = Some(SaslClientConfig::default()),
        server,
    );
    negotiating.open();
    assert_eq!(
        negotiating.server_events[0],
        authenticated("ANONYMOUS", Some("anonymous"))
    );
    assert!(opened(&negotiating.client_events) && opened(&negotiating.server_events));
}

#[test]
fn allow_skip_refuses_a_skipping_client_when_the_authenticator_refuses_anonymous() {
    // As a broker with users and no anonymous access: skipping SASL must not get round the password.
    let mut p = pair_with(
        |_| {},
        |s| s.sasl_server = server_sasl(PlainAuthenticator::new([("user", "secret")]), true),
    );
    p.client.open().unwrap();
    p.drive();
    assert_eq!(
        p.server_events[0],
        Event::AuthenticationFailed {
            mechanism: None,
            user: None
        }
    );
    assert_eq!(
        transport_errors(&p.server_events),
        vec![ErrorCondition::NotAllowed]
    );
    assert!(!opened(&p.server_events));
    assert_closed_once(&p.server_events);
}

/// Offers PLAIN only, but would admit anyone it is asked about.
struct AdmitsAnyone;

impl Authenticator for AdmitsAnyone {
    fn mechanisms(&self) -> Vec<Symbol> {
        vec![Symbol::from_static("PLAIN")]
    }

    fn authenticate(&self, _: &SaslCredentials, _: Option<&str>) -> SaslVerdict {
        SaslVerdict::Accept("anyone".into())
    }
}

#[test]
fn a_mechanism_the_server_did_not_offer_is_refused() {
    let mut p = pair_with(
        |c| c.sasl_client = plain("user", "secret"),
        |s| s.sasl_server = server_sasl(AdmitsAnyone, false),
    );
    // The client's PLAIN sasl-init becomes ANONYMOUS, which the server never offered.
    rewrite_first(&mut p, C2S, |f| match &f.body {
        FrameBody::Sasl(SaslFrame::SaslInit(init)) => Some(vec![Frame {
            channel: 0,
            body: FrameBody::Sasl(SaslFrame::SaslInit(SaslInit {
                mechanism: Symbol::from_static("ANONYMOUS"),
                initial_response: Some(Bytes::from_static(b"anonymous")),
                ..init.clone()
            })),
        }]),
        _ => None,
    });
    p.client.open().unwrap();
    p.drive();
    for events in [&p.client_events, &p.server_events] {
        assert_eq!(
            transport_errors(events),
            vec![ErrorCondition::UnauthorizedAccess]
        );
        assert!(!has(events, |e| matches!(e, Event::Authenticated { .. })));
        assert_closed_once(events);
    }
}

/// A pair whose server was told its transport, with `client` SASL.
fn pair_over(transport: TransportSecurity, client: Option<SaslClientConfig>) -> Pair {
    let mut p = pair_with(
        |c| c.sasl_client = client,
        |s| s.sasl_server = server_sasl(PlainAuthenticator::new([("user", "secret")]), false),
    );
    p.server.set_transport_security(transport);
    p
}

/// The mechanisms the server offered.
fn offered(log: &FrameLog) -> Vec<Symbol> {
    sasl_frames(log, S2C)
        .into_iter()
        .find_map(|f| match f {
            SaslFrame::SaslMechanisms(m) => Some(m.sasl_server_mechanisms),
            _ => None,
        })
        .expect("sasl-mechanisms")
}

#[test]
fn plain_is_offered_only_where_the_transport_allows_it() {
    let mut p = pair_over(TransportSecurity::default(), plain("user", "secret"));
    let log = record(&mut p);
    p.client.open().unwrap();
    p.drive();
    assert!(
        offered(&log).is_empty(),
        "no PLAIN in clear: {:?}",
        offered(&log)
    );
    assert_eq!(
        transport_errors(&p.client_events),
        vec![ErrorCondition::UnauthorizedAccess]
    );
    assert!(sasl_frames(&log, C2S).is_empty(), "the password never left");

    let mut p = pair_over(
        TransportSecurity {
            encrypted: true,
            plain_allowed: true,
            peer_identity: None,
        },
        plain("user", "secret"),
    );
    p.open();
    assert_eq!(p.server_events[0], authenticated("PLAIN", Some("user")));
}

#[test]
fn external_grants_the_certificate_identity_and_nothing_else() {
    let external = |authzid: Option<&str>| {
        let mut p = pair_over(
            TransportSecurity {
                encrypted: true,
                plain_allowed: true,
                peer_identity: Some("alice".into()),
            },
            Some(SaslClientConfig {
                mechanisms: vec![Symbol::from_static("EXTERNAL")],
                username: authzid.map(String::from),
                ..SaslClientConfig::default()
            }),
        );
        let log = record(&mut p);
        p.client.open().unwrap();
        p.drive();
        assert_eq!(offered(&log)[0].as_str(), "EXTERNAL", "offered first");
        p
    };
    let p = external(None);
    assert_eq!(p.server_events[0], authenticated("EXTERNAL", Some("alice")));
    assert!(opened(&p.server_events));
    let p = external(Some("alice"));
    assert_eq!(p.server_events[0], authenticated("EXTERNAL", Some("alice")));
    // Asking to act as someone else is refused.
    let p = external(Some("mallory"));
    assert_eq!(
        transport_errors(&p.client_events),
        vec![ErrorCondition::UnauthorizedAccess]
    );

    // Without a certificate identity EXTERNAL is not offered, even if the authenticator would.
    let mut p = pair_over(
        TransportSecurity::default(),
        Some(SaslClientConfig {
            mechanisms: vec![Symbol::from_static("EXTERNAL")],
            ..SaslClientConfig::default()
        }),
    );
    p.client.open().unwrap();
    p.drive();
    assert_eq!(
        transport_errors(&p.client_events),
        vec![ErrorCondition::UnauthorizedAccess]
    );
}
