//! AMQP URLs with Proton's defaults: `amqp[s]://[user[:password]@]host[:port][/address]`.

use crate::error::Error;

/// A parsed AMQP URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Address {
    /// `amqp` or `amqps` (TLS).
    pub scheme: String,
    /// The user name, if given.
    pub user: Option<String>,
    /// The password, if given.
    pub password: Option<String>,
    /// The host name or address.
    pub host: String,
    /// The port: 5672 for `amqp`, 5671 for `amqps` when not given.
    pub port: u16,
    /// The node address (the URL path without its leading `/`), if any.
    pub address: Option<String>,
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
            _ => return Err(invalid("the scheme must be amqp or amqps")),
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
        Ok(Address {
            scheme,
            user,
            password,
            host,
            port: url.port().unwrap_or(default_port),
            address: (!path.is_empty()).then(|| path.to_string()),
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

    /// True for `amqps`.
    pub fn is_tls(&self) -> bool {
        self.scheme == "amqps"
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
        assert!(Address::parse("amqp://").is_err());
    }
}
