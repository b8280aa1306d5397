//! AMQP over WebSocket (the OASIS AMQP WebSocket Binding 1.0): the WebSocket subprotocol `amqp`, each
//! binary message carrying AMQP bytes (frames may span messages, and a message may hold several). The
//! handshake runs on a stream we made (TCP, or TLS for `wss`), and the result is a plain byte
//! [`Transport`](crate::Transport) for the connection actor.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
use tokio_tungstenite::WebSocketStream;

use crate::transport::BoxedTransport;

/// The WebSocket subprotocol of the binding.
const SUBPROTOCOL: &str = "amqp";

/// The largest WebSocket message we take: an AMQP frame is at most 16 MiB (our engine's cap on
/// max-frame-size), and a message need not hold more than one. Bounds what a peer makes us buffer.
const MAX_MESSAGE: usize = 16 << 20;

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// The client side of the handshake on `stream` for `url` (`ws://` or `wss://`, path included), asking for
/// the `amqp` subprotocol; a server that does not agree to it is refused.
pub(crate) async fn connect(url: &str, stream: BoxedTransport) -> Result<BoxedTransport, String> {
    let mut request = url
        .into_client_request()
        .map_err(|e| format!("not a WebSocket URL: {e}"))?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let (ws, response) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config()))
            .await
            .map_err(|e| format!("WebSocket handshake failed: {e}"))?;
    let agreed = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok());
    if agreed != Some(SUBPROTOCOL) {
        return Err(format!(
            "WebSocket handshake: the server did not agree to the `amqp` subprotocol (it answered {agreed:?})"
        ));
    }
    Ok(Box::new(WsTransport::new(ws)))
}

/// The server side of the handshake: a client that does not offer the `amqp` subprotocol gets 400.
pub(crate) async fn accept(stream: BoxedTransport) -> Result<BoxedTransport, String> {
    // The shape is tungstenite's `Callback`, large error and all.
    #[allow(clippy::result_large_err)]
    let choose = |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
        let offered = request
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == SUBPROTOCOL);
        if !offered {
            let mut refusal =
                ErrorResponse::new(Some("the `amqp` WebSocket subprotocol is required".into()));
            *refusal.status_mut() = StatusCode::BAD_REQUEST;
            return Err(refusal);
        }
        response.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        Ok(response)
    };
    let ws = tokio_tungstenite::accept_hdr_async_with_config(stream, choose, Some(config()))
        .await
        .map_err(|e| format!("WebSocket handshake failed: {e}"))?;
    Ok(Box::new(WsTransport::new(ws)))
}

/// A WebSocket as a byte stream: binary messages in, binary messages out (one per write). Text messages
/// break the binding and end the stream with an error; pings are answered by tungstenite.
struct WsTransport {
    ws: WebSocketStream<BoxedTransport>,
    /// What is left of the last binary message read.
    pending: Bytes,
}

impl WsTransport {
    fn new(ws: WebSocketStream<BoxedTransport>) -> Self {
        WsTransport {
            ws,
            pending: Bytes::new(),
        }
    }
}

fn io_error(e: tokio_tungstenite::tungstenite::Error) -> io::Error {
    match e {
        tokio_tungstenite::tungstenite::Error::Io(e) => e,
        e => io::Error::other(e),
    }
}

impl AsyncRead for WsTransport {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(buf.remaining());
                buf.put_slice(&self.pending[..n]);
                self.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            match Pin::new(&mut self.ws).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                // The end, or a close: end of stream.
                Poll::Ready(None) | Poll::Ready(Some(Ok(Message::Close(_)))) => {
                    return Poll::Ready(Ok(()))
                }
                Poll::Ready(Some(Ok(Message::Binary(data)))) => self.pending = data,
                Poll::Ready(Some(Ok(Message::Text(_)))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "a text WebSocket message: AMQP travels in binary messages",
                    )))
                }
                Poll::Ready(Some(Ok(_))) => {}
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(io_error(e))),
            }
        }
    }
}

impl AsyncWrite for WsTransport {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match Pin::new(&mut self.ws).poll_ready(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(io_error(e))),
            Poll::Ready(Ok(())) => {}
        }
        let message = Message::Binary(Bytes::copy_from_slice(buf));
        match Pin::new(&mut self.ws).start_send(message) {
            Ok(()) => Poll::Ready(Ok(buf.len())),
            Err(e) => Poll::Ready(Err(io_error(e))),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_flush(cx).map_err(io_error)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.ws).poll_close(cx).map_err(io_error)
    }
}
