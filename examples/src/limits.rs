//! The `[limits]` table of the broker's TOML file, shared by `broker --config` and the in-process broker of
//! `web_gateway --broker-config`, and how it sets a broker's [`BrokerOptions`].

use std::time::Duration;

use nucleon::broker::BrokerOptions;
use serde::Deserialize;

/// The `[limits]` table: what a peer may make the broker hold. Every key is optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Messages a queue holds (waiting or unsettled) before its producers get no more credit.
    pub max_queue_depth: Option<u64>,
    /// Bytes a queue holds before its producers get no more credit.
    pub max_queue_bytes: Option<usize>,
    /// Bytes all queues hold before every producer's credit is withheld (default 1 GiB).
    pub max_memory: Option<usize>,
    /// Queues there may be (default 10,000).
    pub max_queues: Option<usize>,
    /// Seconds an empty, unused queue made on demand stays (default 300; 0 deletes at the next sweep).
    pub auto_delete_after_secs: Option<u64>,
    /// Deliveries of one message before it is dead-lettered or dropped (default 10).
    pub max_deliveries: Option<u32>,
    /// Where expired and undeliverable messages go (default: dropped, and counted).
    pub dead_letter_address: Option<String>,
    /// The largest message a client may send (bytes; advertised on attach).
    pub max_message_size: Option<u64>,
    /// Sessions one connection may begin.
    pub max_sessions_per_connection: Option<u16>,
    /// Links one connection may have attached at once.
    pub max_links_per_connection: Option<u32>,
    /// Seconds a client has to finish opening.
    pub open_timeout_secs: Option<u64>,
    /// Seconds of silence after which a connection is closed (the broker advertises half of it).
    pub idle_timeout_secs: Option<u64>,
    /// Connections at once, in total.
    pub max_connections: Option<usize>,
    /// Connections at once from one client address.
    pub max_connections_per_address: Option<usize>,
    /// Failed logins from one address within `login_failure_window_secs` before that address is refused
    /// for `login_lockout_secs`.
    pub max_login_failures: Option<u32>,
    /// The window of `max_login_failures`, in seconds.
    pub login_failure_window_secs: Option<u64>,
    /// Seconds an address is refused once it failed `max_login_failures` times.
    pub login_lockout_secs: Option<u64>,
}

impl Limits {
    /// `base` with the queue and memory limits this table sets (`max_queue_depth`, `max_queue_bytes`,
    /// `max_memory`, `max_queues`, `auto_delete_after_secs`, `max_deliveries`, `dead_letter_address`);
    /// a key the table leaves out keeps `base`'s value. The connection limits belong to the listener.
    pub fn broker_options(&self, base: BrokerOptions) -> BrokerOptions {
        BrokerOptions {
            max_queue_depth: self
                .max_queue_depth
                .map(|n| usize::try_from(n).unwrap_or(usize::MAX))
                .or(base.max_queue_depth),
            max_queue_bytes: self.max_queue_bytes.or(base.max_queue_bytes),
            max_memory: self.max_memory.or(base.max_memory),
            max_queues: self.max_queues.or(base.max_queues),
            auto_delete_after: self
                .auto_delete_after_secs
                .map(Duration::from_secs)
                .or(base.auto_delete_after),
            max_deliveries: self.max_deliveries.or(base.max_deliveries),
            dead_letter_address: self
                .dead_letter_address
                .clone()
                .or(base.dead_letter_address),
            ..base
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_given_override_the_base_and_the_rest_is_kept() {
        let limits: Limits =
            toml::from_str("max_queue_bytes = 4096\nmax_queues = 3\n").expect("valid");
        let base = BrokerOptions {
            max_memory: Some(1 << 20),
            max_queues: Some(10),
            ..BrokerOptions::default()
        };
        let o = limits.broker_options(base);
        assert_eq!(o.max_queue_bytes, Some(4096));
        assert_eq!(o.max_queues, Some(3));
        assert_eq!(o.max_memory, Some(1 << 20));
        assert!(toml::from_str::<Limits>("max_queue_byte = 1").is_err());
    }
}
