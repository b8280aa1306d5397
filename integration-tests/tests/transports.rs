//! Transports between our client and our listener, with certificates made at test time: TLS (`amqps://` with
//! a private CA, plain and TLS on one port told apart by the first bytes, a listener that requires TLS, the
//! AMQP TLS protocol header, client certificates, the subject they give and SASL EXTERNAL, and one clear error
//! for each certificate a client must refuse: untrusted, expired, for another host); AMQP over WebSocket
//! (`ws://` and `wss://`, the `amqp` subprotocol required); and a connection over a stream the application
//! made (an in-memory pipe), which is how other transports plug in.

use std::time::Duration;

use nucleon::{
    ConnectionOptions, ContainerHandle, ListenOptions, TlsClientConfig, TlsServerConfig,
};
use nucleon_integration_tests::certs::{ServerCert, TestCa};
use nucleon_integration_tests::client::{
    container, first_seen, within, Identities, Identity, Opener, Seen,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

const WAIT: Duration = Duration::from_secs(10);

type ServerSeen = UnboundedReceiver<Identity>;

fn listen(c: &ContainerHandle, tls: Option<TlsServerConfig>) -> (u16, ServerSeen) {
    let mut options = ListenOptions::new();
    options.tls = tls;
    listen_with(c, options)
}

fn listen_with(c: &ContainerHandle, options: ListenOptions) -> (u16, ServerSeen) {
    let (tx, rx) = unbounded_channel();
    let listener = c
        .listen_with("127.0.0.1:0", options, Identities(tx))
        .expect("listens");
    (listener.port(), rx)
}

fn with_tls(tls: TlsClientConfig) -> ConnectionOptions {
    ConnectionOptions::new().tls(tls)
}

#[actix_rt::test]
async fn amqps_with_a_private_ca_and_plain_on_the_same_port() {
    let ca = TestCa::new("tls-ca");
    let server = ca.server(ServerCert::Loopback);
    let c = container("tls");
    let tls = TlsServerConfig::from_pem_files(&server.cert, &server.key).expect("server TLS");
    let (port, mut server_seen) = listen(&c, Some(tls));

    for host in ["127.0.0.1", "localhost"] {
        let url = format!("amqps://{host}:{port}");
        assert_eq!(
            first_seen(&c, &url, with_tls(ca.client_tls())).await,
            Seen::Opened,
            "{url}"
        );
        let (user, subject) = within(WAIT, "server open", server_seen.recv())
            .await
            .expect("the server saw it");
        assert_eq!(user.as_deref(), Some("anonymous"));
        assert_eq!(subject, None, "no client certificate");
    }
    // The TLS protocol header first, then the handshake [AMQP 1.0 §5.2.1].
    let header = with_tls(ca.client_tls()).tls_protocol_header(true);
    assert_eq!(
        first_seen(&c, &format!("amqps://127.0.0.1:{port}"), header).await,
        Seen::Opened
    );
    // Plain AMQP on the same port.
    assert_eq!(
        first_seen(
            &c,
            &format!("amqp://127.0.0.1:{port}"),
            ConnectionOptions::default()
        )
        .await,
        Seen::Opened
    );
    c.stop();
}

#[actix_rt::test]
async fn a_listener_that_requires_tls_refuses_a_plain_client_with_the_tls_header() {
    let ca = TestCa::new("tls-required");
    let server = ca.server(ServerCert::Loopback);
    let c = container("tls-required");
    let tls = TlsServerConfig::from_pem_files(&server.cert, &server.key)
        .expect("server TLS")
        .require_tls(true);
    let (port, _seen) = listen(&c, Some(tls));
    match first_seen(
        &c,
        &format!("amqp://127.0.0.1:{port}"),
        ConnectionOptions::default(),
    )
    .await
    {
        Seen::Failed(e) => {
            eprintln!("plain client to a TLS-only listener: {e}");
            assert!(e.contains("TLS"), "{e}")
        }
        other => panic!("a plain client got through: {other:?}"),
    }
    assert_eq!(
        first_seen(
            &c,
            &format!("amqps://127.0.0.1:{port}"),
            with_tls(ca.client_tls())
        )
        .await,
        Seen::Opened
    );
    c.stop();
}

#[actix_rt::test]
async fn a_client_refuses_untrusted_expired_and_wrong_host_certificates_with_one_clear_error() {
    let ca = TestCa::new("tls-refused");
    let other_ca = TestCa::new("tls-other");
    let c = container("tls-refused");
    let cases = [
        (
            ca.server(ServerCert::Loopback),
            &other_ca,
            "not issued by a trusted CA",
        ),
        (ca.server(ServerCert::Expired), &ca, "expired"),
        (
            ca.server(ServerCert::OtherHost),
            &ca,
            "not valid for this host name",
        ),
    ];
    for (server, trusted, why) in cases {
        let tls = TlsServerConfig::from_pem_files(&server.cert, &server.key).expect("server TLS");
        let (port, mut server_seen) = listen(&c, Some(tls));
        match first_seen(
            &c,
            &format!("amqps://127.0.0.1:{port}"),
            with_tls(trusted.client_tls()),
        )
        .await
        {
            Seen::Failed(e) => {
                eprintln!("{why}: {e}");
                assert!(e.contains(why), "{why}: {e}")
            }
            other => panic!("{why}: the client accepted it: {other:?}"),
        }
        assert!(server_seen.try_recv().is_err(), "{why}: nothing opened");
    }
    // A TLS client to a plain-only listener: the handshake fails, nothing is sent in clear.
    let (port, _seen) = listen(&c, None);
    match first_seen(
        &c,
        &format!("amqps://127.0.0.1:{port}"),
        with_tls(ca.client_tls()),
    )
    .await
    {
        Seen::Failed(e) => assert!(e.contains("TLS handshake failed"), "{e}"),
        other => panic!("a TLS client opened on a plain listener: {other:?}"),
    }
    c.stop();
}

#[actix_rt::test]
async fn a_verified_client_certificate_gives_its_subject_to_the_server() {
    let ca = TestCa::new("tls-clients");
    let server = ca.server(ServerCert::Loopback);
    let alice = ca.client("alice");
    let c = container("tls-clients");
    let tls = TlsServerConfig::with_client_ca(&server.cert, &server.key, ca.ca_file())
        .expect("server TLS");
    let (port, mut server_seen) = listen(&c, Some(tls));
    let url = format!("amqps://127.0.0.1:{port}");
    let client_tls = ca.client_tls_as(&alice);
    assert_eq!(
        first_seen(&c, &url, with_tls(client_tls)).await,
        Seen::Opened
    );
    let (_, subject) = within(WAIT, "server open", server_seen.recv())
        .await
        .expect("seen");
    assert_eq!(subject.as_deref(), Some("alice"));
    // Without a certificate the client still gets in (other mechanisms decide), with no subject.
    assert_eq!(
        first_seen(&c, &url, with_tls(ca.client_tls())).await,
        Seen::Opened
    );
    let (_, subject) = within(WAIT, "server open", server_seen.recv())
        .await
        .expect("seen");
    assert_eq!(subject, None);
    // A certificate from a CA the server does not trust fails the handshake.
    let stranger_ca = TestCa::new("tls-stranger");
    let stranger = stranger_ca.client("mallory");
    let untrusted = ca.client_tls_as(&stranger);
    assert!(
        matches!(
            first_seen(&c, &url, with_tls(untrusted)).await,
            Seen::Failed(_)
        ),
        "a client certificate from an unknown CA is refused"
    );
    c.stop();
}

#[actix_rt::test]
async fn a_connection_runs_over_a_stream_the_application_made() {
    let c = container("streams");
    let (client_end, server_end) = tokio::io::duplex(64 << 10);
    let (server_tx, mut server_seen) = unbounded_channel();
    c.accept_stream(server_end, &ListenOptions::default(), Identities(server_tx))
        .expect("serves the stream");
    let (tx, mut rx) = unbounded_channel();
    c.connect_stream(client_end, ConnectionOptions::default(), Opener(tx))
        .expect("connects over the stream");
    assert_eq!(within(WAIT, "open", rx.recv()).await, Some(Seen::Opened));
    let (user, _) = within(WAIT, "server open", server_seen.recv())
        .await
        .expect("seen");
    assert_eq!(user.as_deref(), Some("anonymous"));
    c.stop();
}

#[actix_rt::test]
async fn a_client_that_stalls_before_or_during_the_handshake_is_closed_at_the_open_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ca = TestCa::new("tls-stall");
    let server = ca.server(ServerCert::Loopback);
    let c = container("tls-stall");
    let (tx, _seen) = unbounded_channel();
    let listener = c
        .listen_with(
            "127.0.0.1:0",
            ListenOptions::new()
                .tls(TlsServerConfig::from_pem_files(&server.cert, &server.key).expect("TLS"))
                .open_timeout(Duration::from_millis(200)),
            Identities(tx),
        )
        .expect("listens");
    // Nothing at all; the first byte of a TLS record only; half of the AMQP header.
    for sent in [&b""[..], &[0x16][..], &b"AMQP"[..]] {
        let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", listener.port()))
            .await
            .expect("connects");
        socket.write_all(sent).await.expect("writes");
        let mut rest = Vec::new();
        // Closed or reset, either ends the read; `within` fails the test if the socket stays open.
        let _ = within(
            WAIT,
            "the server closes the socket",
            socket.read_to_end(&mut rest),
        )
        .await;
    }
    c.stop();
}

#[actix_rt::test]
async fn sasl_external_authenticates_as_the_certificate_subject() {
    let ca = TestCa::new("tls-external");
    let server = ca.server(ServerCert::Loopback);
    let alice = ca.client("alice");
    let c = container("tls-external");
    let tls = TlsServerConfig::with_client_ca(&server.cert, &server.key, ca.ca_file())
        .expect("server TLS");
    let (port, mut server_seen) = listen(&c, Some(tls));
    let client_tls = ca.client_tls_as(&alice);
    let external = with_tls(client_tls).sasl_allowed_mechs(vec!["EXTERNAL".into()]);
    let url = format!("amqps://127.0.0.1:{port}");
    assert_eq!(first_seen(&c, &url, external.clone()).await, Seen::Opened);
    let (user, subject) = within(WAIT, "server open", server_seen.recv())
        .await
        .expect("seen");
    assert_eq!(user.as_deref(), Some("alice"), "EXTERNAL gives the subject");
    assert_eq!(subject.as_deref(), Some("alice"));
    // Without a client certificate there is no EXTERNAL to use.
    let no_cert = with_tls(ca.client_tls()).sasl_allowed_mechs(vec!["EXTERNAL".into()]);
    match first_seen(&c, &url, no_cert).await {
        Seen::Failed(e) => assert!(e.contains("no SASL mechanism in common"), "{e}"),
        other => panic!("EXTERNAL without a certificate: {other:?}"),
    }
    c.stop();
}

#[actix_rt::test]
async fn amqp_over_websocket_plain_and_tls() {
    let ca = TestCa::new("websocket");
    let server = ca.server(ServerCert::Loopback);
    let c = container("websocket");
    let (port, mut server_seen) = listen_with(&c, ListenOptions::new().websocket(true));
    assert_eq!(
        first_seen(
            &c,
            &format!("ws://127.0.0.1:{port}/amqp"),
            ConnectionOptions::default()
        )
        .await,
        Seen::Opened
    );
    let (user, _) = within(WAIT, "server open", server_seen.recv())
        .await
        .expect("seen");
    assert_eq!(user.as_deref(), Some("anonymous"));
    // A plain AMQP client is not a WebSocket client: refused.
    assert!(matches!(
        first_seen(
            &c,
            &format!("amqp://127.0.0.1:{port}"),
            ConnectionOptions::default()
        )
        .await,
        Seen::Failed(_)
    ));

    // wss: TLS first, then the WebSocket handshake.
    let tls = TlsServerConfig::from_pem_files(&server.cert, &server.key).expect("server TLS");
    let (port, _seen) = listen_with(&c, ListenOptions::new().tls(tls).websocket(true));
    assert_eq!(
        first_seen(
            &c,
            &format!("wss://localhost:{port}/"),
            with_tls(ca.client_tls())
        )
        .await,
        Seen::Opened
    );
    c.stop();
}

#[actix_rt::test]
async fn a_websocket_client_must_ask_for_the_amqp_subprotocol() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = container("websocket-subprotocol");
    let (port, _seen) = listen_with(&c, ListenOptions::new().websocket(true));
    let mut socket = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connects");
    let handshake = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    socket
        .write_all(handshake.as_bytes())
        .await
        .expect("writes");
    let mut answer = Vec::new();
    let _ = within(WAIT, "the answer", socket.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    c.stop();
}
