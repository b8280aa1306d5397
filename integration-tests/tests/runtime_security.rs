//! No silent downgrade: credentials that cannot be used on a connection are an error unless the application
//! asks, by name, to go on as ANONYMOUS. (`amqps://` never connecting in plaintext is shown in `tls.rs`: a
//! TLS client to a plain-only listener fails its handshake.)

use std::sync::mpsc;
use std::time::Duration;

use nucleon::{Connection, ConnectionOptions, Error, MessagingHandler};
use nucleon_integration_tests::client::{container, threaded_server};

const WAIT: Duration = Duration::from_secs(20);

struct Opened(mpsc::Sender<()>);

impl MessagingHandler for Opened {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        let _ = self.0.send(());
        c.close();
    }
}

struct Server;

impl MessagingHandler for Server {}

impl nucleon::ListenHandler for Server {
    type Handler = Server;
    fn on_accept(&self, _: std::net::SocketAddr) -> Server {
        Server
    }
}

fn refusal(result: Result<nucleon::ConnectionHandle<Opened>, Error>) -> String {
    match result {
        Err(Error::InvalidUrl { reason, .. }) => reason,
        other => panic!("expected the connect to be refused, got {other:?}"),
    }
}

#[actix_rt::test]
async fn credentials_that_plain_tcp_would_expose_are_refused_unless_the_fallback_is_asked_for() {
    let (server, port, t) = threaded_server("anonymous-server", "127.0.0.1:0", Server);
    let c = container("security");
    let (tx, rx) = mpsc::channel();
    let url = format!("amqp://alice:secret@127.0.0.1:{port}");
    let reason = refusal(c.connect(&url, ConnectionOptions::default(), Opened(tx.clone())));
    assert!(reason.contains("in clear"), "{reason}");

    // Asked for by name: on as ANONYMOUS, which this server admits.
    let options = ConnectionOptions {
        allow_anonymous_fallback: true,
        ..ConnectionOptions::default()
    };
    c.connect(&url, options, Opened(tx))
        .expect("the fallback was asked for");
    let opened = actix_rt::task::spawn_blocking(move || rx.recv_timeout(WAIT));
    opened
        .await
        .expect("joins")
        .expect("the connection opens as ANONYMOUS");
    c.stop();
    server.stop();
    t.join().expect("server stopped");
}
