//! Which `Host` values name a web example's listener: its bound address, the loopback names for a
//! loopback (or unspecified) bind, and the `--public-host` names an operator gives. A request naming any
//! other host is refused before it is served: a page of another site that rebinds its DNS name to this
//! machine (DNS rebinding) still names its own host, and so never reaches the app, though the browser
//! counts it as same-origin.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

/// `name[:port]` split into the name (IPv6 keeps its brackets) and the port, if any; `None` if the port
/// is not a number.
pub fn split_host(s: &str) -> Option<(&str, Option<u16>)> {
    let (name, port) = if s.starts_with('[') {
        let end = s.find(']')?;
        match &s[end + 1..] {
            "" => (&s[..=end], None),
            rest => (&s[..=end], Some(rest.strip_prefix(':')?)),
        }
    } else {
        match s.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (s, None),
        }
    };
    match port {
        None => Some((name, None)),
        Some(p) => p.parse::<u16>().ok().map(|p| (name, Some(p))),
    }
}

/// A `--public-host` value: `HOST` or `HOST:PORT`, lowercased; IPv6 in brackets.
pub fn parse_public_host(s: &str) -> Result<String, String> {
    let lower = s.to_ascii_lowercase();
    match split_host(&lower) {
        Some((name, _)) if !name.is_empty() && !name.contains(['/', '@', ' ']) => Ok(lower),
        _ => Err(format!("expected HOST or HOST:PORT, got {s:?}")),
    }
}

/// The `Host` values that name a listener.
#[derive(Debug, Default)]
pub struct HostSet {
    /// Exact values (`name:port`, and `name` alone for ports 80 and 443).
    exact: HashSet<String>,
    /// Names accepted with any port, or none.
    any_port: HashSet<String>,
}

impl HostSet {
    /// The hosts of a listener bound to `bound`, plus `public` (`--public-host` values: a name alone is
    /// accepted with any port, `name:port` on that port only).
    pub fn for_listener(bound: &[SocketAddr], public: &[String]) -> HostSet {
        let mut hosts = HostSet::default();
        for addr in bound {
            let ip = match addr.ip() {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            };
            hosts.add(&ip, addr.port());
            if addr.ip().is_loopback() || addr.ip().is_unspecified() {
                for name in ["localhost", "127.0.0.1", "[::1]"] {
                    hosts.add(name, addr.port());
                }
            }
        }
        for p in public {
            match split_host(p) {
                Some((name, Some(port))) => hosts.add(name, port),
                Some((name, None)) => {
                    hosts.any_port.insert(name.to_owned());
                }
                None => {}
            }
        }
        hosts
    }

    fn add(&mut self, name: &str, port: u16) {
        self.exact.insert(format!("{name}:{port}"));
        if port == 80 || port == 443 {
            self.exact.insert(name.to_owned());
        }
    }

    /// Whether `host` (a `Host` header's value, any case) names the listener.
    pub fn contains(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.exact.contains(&host)
            || split_host(&host).is_some_and(|(name, _)| self.any_port.contains(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_a_listener() {
        assert_eq!(split_host("a.example:80"), Some(("a.example", Some(80))));
        assert_eq!(split_host("[::1]:8081"), Some(("[::1]", Some(8081))));
        assert_eq!(split_host("[::1]"), Some(("[::1]", None)));
        assert_eq!(split_host("a:x"), None);
        let hosts = HostSet::for_listener(
            &["127.0.0.1:8081".parse().expect("an address")],
            &["any.example".into(), "web.example:443".into()],
        );
        for ok in [
            "127.0.0.1:8081",
            "LOCALHOST:8081",
            "[::1]:8081",
            "any.example",
            "any.example:1",
            "web.example",
            "web.example:443",
        ] {
            assert!(hosts.contains(ok), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "127.0.0.1:8082",
            "localhost",
            "evil.example:8081",
            "web.example:80",
            "any.example.evil",
        ] {
            assert!(!hosts.contains(bad), "{bad}");
        }
        let wide = HostSet::for_listener(&["10.1.2.3:80".parse().expect("an address")], &[]);
        assert!(wide.contains("10.1.2.3") && !wide.contains("localhost"));
    }
}
