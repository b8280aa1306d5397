//! The byte streams a connection runs over, and how they are made: dialled (TCP, then TLS for `amqps`),
//! accepted (plain or TLS on one port, told apart by the first bytes), or given by the application.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use nucleon_protocol::engine::ConnectionConfig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use crate::error::Error;
use crate::listener;
use crate::options::TcpKeepalive;
use crate::tls::{self, TlsClientConfig, TlsServerConfig, TLS_HEADER};
use crate::ws;

/// A byte stream a connection can run over: anything that reads and writes asynchronously on tokio and can
/// move to a worker thread (a `TcpStream`, a `UnixStream`, a TLS stream, one end of a `tokio::io::duplex`,
/// a proxy's tunnel). See [`ContainerHandle::connect_stream`](crate::ContainerHandle::connect_stream).
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Transport for T {}

/// A transport, boxed.
pub(crate) type BoxedTransport = Box<dyn Transport>;

/// Where a client connects: the main URL or a failover URL, with the engine's configuration for it.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// `host:port` to dial.
    pub(crate) host_port: String,
    pub(crate) config: ConnectionConfig,
    /// For `amqps`: how to do TLS, and the name the server's certificate must carry.
    pub(crate) tls: Option<(TlsClientConfig, rustls::pki_types::ServerName<'static>)>,
    /// Ask for TLS with the AMQP TLS protocol header first [AMQP 1.0 §5.2.1], instead of starting the
    /// handshake at once.
    pub(crate) tls_header: bool,
    /// AMQP over WebSocket: the URL of the handshake.
    pub(crate) websocket: Option<String>,
    pub(crate) keepalive: TcpKeepalive,
}

/// Connects to `target`, with TLS if it says so. The error is the one line the application sees.
/// Every failure is an [`Error::Io`]; a TCP connect's keeps its [`io::ErrorKind`] (`ConnectionRefused`, ...).
pub(crate) async fn dial(target: Target) -> Result<BoxedTransport, Error> {
    let tcp = TcpStream::connect(&target.host_port)
        .await
        .map_err(|e| Error::Io {
            kind: e.kind(),
            message: format!("connect failed: {e}"),
        })?;
    let _ = tcp.set_nodelay(true);
    if let Err(e) = listener::set_keepalive(&tcp, target.keepalive) {
        log::warn!(
            "connection to {}: setting TCP keepalive failed: {e}",
            target.host_port
        );
    }
    let stream: BoxedTransport = match target.tls {
        None => Box::new(tcp),
        Some((config, name)) => tls_client(tcp, config, name, target.tls_header)
            .await
            .map_err(handshake_failed)?,
    };
    match target.websocket {
        Some(url) => ws::connect(&url, stream).await.map_err(handshake_failed),
        None => Ok(stream),
    }
}

/// A TLS or WebSocket handshake that failed: described in one line, without an OS error kind.
fn handshake_failed(message: String) -> Error {
    Error::Io {
        kind: io::ErrorKind::Other,
        message,
    }
}

async fn tls_client(
    tcp: TcpStream,
    config: TlsClientConfig,
    name: rustls::pki_types::ServerName<'static>,
    tls_header: bool,
) -> Result<BoxedTransport, String> {
    let mut tcp = tcp;
    if tls_header {
        tcp.write_all(&TLS_HEADER)
            .await
            .map_err(|e| format!("sending the TLS protocol header: {e}"))?;
        let mut answer = [0u8; 8];
        tcp.read_exact(&mut answer)
            .await
            .map_err(|e| format!("reading the peer's protocol header: {e}"))?;
        if answer != TLS_HEADER {
            return Err(format!(
                "the peer does not do TLS: it answered the TLS protocol header with {answer:?}"
            ));
        }
    }
    let connector = tokio_rustls::TlsConnector::from(config.config.clone());
    let stream = connector
        .connect(name, tcp)
        .await
        .map_err(|e| tls::describe_handshake_error(&e))?;
    Ok(Box::new(stream))
}

/// Makes an accepted socket a transport: TLS or plain as the first bytes say (with a TLS config), then the
/// WebSocket handshake (for a WebSocket listener).
pub(crate) async fn serve(
    tcp: TcpStream,
    tls: Option<TlsServerConfig>,
    websocket: bool,
) -> Result<Accepted, String> {
    let mut accepted = match tls {
        Some(tls) => accept(tcp, tls).await?,
        None => {
            let _ = tcp.set_nodelay(true);
            Accepted {
                transport: Box::new(tcp),
                encrypted: false,
                peer_identity: None,
            }
        }
    };
    if websocket {
        accepted.transport = ws::accept(accepted.transport).await?;
    }
    Ok(accepted)
}

/// What an accepted socket turned out to be.
pub(crate) struct Accepted {
    pub(crate) transport: BoxedTransport,
    /// TLS, not plain.
    pub(crate) encrypted: bool,
    /// The subject of the client's verified TLS certificate, for SASL EXTERNAL.
    pub(crate) peer_identity: Option<String>,
}

/// Tells TLS from plain AMQP by the first bytes (a TLS record starts with 0x16, the handshake type; AMQP
/// with `AMQP`), and does the TLS handshake: at once, or after answering the AMQP TLS protocol header
/// [AMQP 1.0 §5.2.1]. With `require_tls`, a plain client gets the TLS header back and the socket closes
/// [AMQP 1.0 §2.2]. Bytes read to decide are given back to the engine (plain) or to rustls (TLS).
pub(crate) async fn accept(mut tcp: TcpStream, tls: TlsServerConfig) -> Result<Accepted, String> {
    let _ = tcp.set_nodelay(true);
    let mut first = [0u8; 8];
    tcp.read_exact(&mut first[..1])
        .await
        .map_err(|e| format!("reading the first byte: {e}"))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config.clone());
    let stream = if first[0] == 0x16 {
        acceptor.accept(Rewind::new(first[..1].to_vec(), tcp)).await
    } else {
        tcp.read_exact(&mut first[1..])
            .await
            .map_err(|e| format!("reading the protocol header: {e}"))?;
        if first == TLS_HEADER {
            tcp.write_all(&TLS_HEADER)
                .await
                .map_err(|e| format!("answering the TLS protocol header: {e}"))?;
            acceptor.accept(Rewind::new(Vec::new(), tcp)).await
        } else if tls.require_tls {
            let _ = tcp.write_all(&TLS_HEADER).await;
            let _ = tcp.shutdown().await;
            return Err(format!(
                "a client sent {} instead of starting TLS, which this listener requires",
                describe_header(&first)
            ));
        } else {
            return Ok(Accepted {
                transport: Box::new(Rewind::new(first.to_vec(), tcp)),
                encrypted: false,
                peer_identity: None,
            });
        }
    }
    .map_err(|e| tls::describe_handshake_error(&e))?;
    let peer_identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .and_then(tls::certificate_identity);
    Ok(Accepted {
        transport: Box::new(stream),
        encrypted: true,
        peer_identity,
    })
}

/// `the AMQP header`, `the SASL header`, or the bytes, for a log line.
fn describe_header(header: &[u8; 8]) -> String {
    match header {
        b"AMQP\x00\x01\x00\x00" => "the AMQP protocol header".into(),
        b"AMQP\x03\x01\x00\x00" => "the SASL protocol header".into(),
        other => format!("{other:?}"),
    }
}

/// A stream whose first bytes, read already, are read again: the header bytes looked at to tell TLS from
/// plain AMQP.
pub(crate) struct Rewind<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Rewind {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
