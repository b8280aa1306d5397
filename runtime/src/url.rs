//! AMQP URLs with Proton's defaults: `amqp[s]://[user[:password]@]host[:port][/address]`, and AMQP over
//! WebSocket: `ws[s]://[user[:password]@]host[:port][/path]` (the path is the HTTP endpoint's, not a node's).

use crate::error::Error;

/// A parsed AMQP URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// `amqp`, `amqps` (TLS), `ws` (WebSocket) or `wss` (WebSocket over TLS).
    pub scheme: String,
    /// The user name, if given.
    pub user: Option<String>,
    /// The password, if given.
    pub password: Option<String>,
    /// The host name or address.
    pub host: String,
    /// The port: 5672 for `amqp`, 5671 for `amqps`, 80 for `ws`, 443 for `wss` when not given.
    pub port: u16,
    /// The node address (the URL path without its leading `/`), if any; never for WebSocket URLs.
    pub address: Option<String>,
    /// For WebSocket URLs: the URL to ask for in the handshake (without credentials).
    pub websocket: Option<String>,
}

impl Address {
    /// Parses a URL. A bare `host:port` or `host` is accepted as `amqp://host:port`.
    pub fn parse(input: &str) -> Result<Address, Error> {
        let invalid = |reason: &str| Error::InvalidUrl {
            url: input.to_string(),
            reason: reason.to_string(),
        };
        let with_scheme = if input.contains("://") {
            input.to_string()
        } else {
            format!("amqp://{input}")
        };
        let url = url::Url::parse(&with_scheme).map_err(|e| invalid(&e.to_string()))?;
        let scheme = url.scheme().to_string();
        let default_port = match scheme.as_str() {
            "amqp" => 5672,
            "amqps" => 5671,
            "ws" => 80,
            "wss" => 443,
            _ => return Err(invalid("the scheme must be amqp, amqps, ws or wss")),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| invalid("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let user = (!url.username().is_empty()).then(|| decode(url.username()));
        let password = url.password().map(decode);
        // Only the separator goes: `amqp://host//queue/x` names the address `/queue/x`, as in Proton.
        let path = url.path().strip_prefix('/').unwrap_or(url.path());
        let websocket = scheme.starts_with("ws").then(|| {
            let mut plain = url.clone();
            let _ = plain.set_username("");
            let _ = plain.set_password(None);
            plain.to_string()
        });
        Ok(Address {
            port: url.port().unwrap_or(default_port),
            address: (!path.is_empty() && websocket.is_none()).then(|| path.to_string()),
            scheme,
            user,
            password,
            host,
            websocket,
        })
    }

    /// `host:port`, for connecting.
    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// True for `amqps` and `wss`.
    pub fn is_tls(&self) -> bool {
        self.scheme == "amqps" || self.scheme == "wss"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proton_defaults() {
        let a = Address::parse("amqp://localhost/examples").unwrap();
        assert_eq!((a.host.as_str(), a.port), ("localhost", 5672));
        assert_eq!(a.address.as_deref(), Some("examples"));
        let a = Address::parse("amqps://u:p%40ss@10.0.0.1:1234/a/b").unwrap();
        assert_eq!(a.port, 1234);
        assert!(a.is_tls());
        assert_eq!(a.user.as_deref(), Some("u"));
        assert_eq!(a.password.as_deref(), Some("p@ss"));
        assert_eq!(a.address.as_deref(), Some("a/b"));
        assert_eq!(Address::parse("amqps://h").unwrap().port, 5671);
        let rabbit = Address::parse("amqp://h:5672//queue/q1").unwrap();
        assert_eq!(rabbit.address.as_deref(), Some("/queue/q1"));
        let bare = Address::parse("127.0.0.1:5673").unwrap();
        assert_eq!(
            (bare.host_port().as_str(), bare.address),
            ("127.0.0.1:5673", None)
        );
        assert!(Address::parse("http://x").is_err());
        let ws = Address::parse("wss://u:p@h/$servicebus/websocket").unwrap();
        assert_eq!(
            (ws.port, ws.is_tls(), ws.address.as_deref()),
            (443, true, None)
        );
        assert_eq!(
            ws.websocket.as_deref(),
            Some("wss://h/$servicebus/websocket")
        );
        assert_eq!(Address::parse("ws://h:8080").unwrap().port, 8080);
        assert!(Address::parse("amqp://").is_err());
    }
}
