//! What a listener decides besides accepting: TCP keepalive on its sockets, how many connections it holds
//! (in total and per client address), which client addresses are refused for a while after failed logins,
//! how its accept loop backs off when accepting fails (out of file descriptors), and the log lines of all
//! of these, throttled, so that a flood of refusals or failures cannot flood the log too.
//!
//! The accept loop (in `container.rs`) asks [`Admission::admit`] about each accepted socket; the
//! [`Slot`] it gets back travels with the connection to its actor, which reports the login through it and
//! gives the place back by dropping it.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::container::ListenOptions;
use crate::options::{LoginThrottle, TcpKeepalive};

/// The first pause of an accept loop after accepting failed; each further failure in a row doubles it.
const ACCEPT_BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// The longest pause of an accept loop.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one line this often about failed accepts (with a count of the failures in between).
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// At most one line this often about connections refused (with a count of those not logged).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// The probe interval once keepalive probing started, where the system lets us set it.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Sets TCP keepalive on `tcp` as `keepalive` says: a peer whose host vanished is then found by the kernel,
/// even on a connection that has nothing to send.
pub(crate) fn set_keepalive(
    tcp: &tokio::net::TcpStream,
    keepalive: TcpKeepalive,
) -> io::Result<()> {
    let socket = socket2::SockRef::from(tcp);
    match keepalive {
        TcpKeepalive::Off => socket.set_keepalive(false),
        TcpKeepalive::Idle(idle) => socket.set_tcp_keepalive(&probes(idle)),
    }
}

#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "windows"
))]
fn probes(idle: Duration) -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(KEEPALIVE_INTERVAL)
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "macos",
    target_os = "ios",
    target_os = "freebsd",
    target_os = "netbsd",
    target_os = "windows"
)))]
fn probes(idle: Duration) -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new().with_time(idle)
}

/// Allows a log line at most once per interval, and counts the lines it held back.
#[derive(Debug)]
pub(crate) struct LogThrottle {
    interval: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl LogThrottle {
    pub(crate) fn new(interval: Duration) -> Self {
        LogThrottle {
            interval,
            last: None,
            held_back: 0,
        }
    }

    /// `Some(lines held back since the last one)` if a line may be logged at `now`.
    pub(crate) fn allow(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|last| now < last + self.interval) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

/// An accept loop's pause after a failed accept: 100 ms, doubling to 1 s while accepting keeps failing.
/// A failed accept leaves the connection in the backlog, so without a pause the loop would fail again at
/// once, on a full core, for as long as the cause (no file descriptors) lasts.
#[derive(Debug)]
pub(crate) struct AcceptBackoff {
    next: Duration,
    log: LogThrottle,
    failures: u64,
}

impl Default for AcceptBackoff {
    fn default() -> Self {
        AcceptBackoff {
            next: ACCEPT_BACKOFF_FIRST,
            log: LogThrottle::new(ACCEPT_LOG_INTERVAL),
            failures: 0,
        }
    }
}

impl AcceptBackoff {
    /// Accepting failed with `error` on the listener at `addr`: logs (at most once a second) and says how
    /// long to pause.
    pub(crate) fn failed(&mut self, addr: SocketAddr, error: &io::Error) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(ACCEPT_BACKOFF_MAX);
        self.failures += 1;
        if self.log.allow(Instant::now()).is_some() {
            let failures = std::mem::take(&mut self.failures);
            log::warn!(
                "listener {addr}: accepting a connection failed ({failures} times since the last line): \
                 {error}; accepting again in {pause:?}"
            );
        }
        pause
    }

    /// A connection was accepted: the next failure pauses briefly again.
    pub(crate) fn succeeded(&mut self) {
        self.next = ACCEPT_BACKOFF_FIRST;
    }
}

/// A listener's connection limits and failed-login throttle, shared by its accept loop and its connections.
#[derive(Debug)]
pub(crate) struct Admission {
    /// The listener's address, for log lines.
    addr: SocketAddr,
    max_connections: usize,
    max_per_address: usize,
    throttle: Option<LoginThrottle>,
    /// Failed logins since the listener started, throttled or not.
    login_failures: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
    /// Failed logins of each address that failed lately; pruned as it grows.
    failures: HashMap<IpAddr, Failures>,
    /// `failures.len()` after the last pruning: the next one is due at twice that (amortized O(1)).
    pruned_at: usize,
    refusals: LogThrottle,
}

#[derive(Debug)]
struct Failures {
    count: u32,
    since: Instant,
    refused_until: Option<Instant>,
}

/// Why a connection was refused.
enum Refusal {
    Full(usize),
    AddressFull(usize),
    LockedOut(Duration),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Full(n) => write!(f, "the listener holds its maximum of {n} connections"),
            Refusal::AddressFull(n) => {
                write!(f, "the address holds its maximum of {n} connections")
            }
            Refusal::LockedOut(left) => write!(
                f,
                "the address failed to log in too often; refused for {}s more",
                left.as_secs() + 1
            ),
        }
    }
}

impl Admission {
    pub(crate) fn new(addr: SocketAddr, options: &ListenOptions) -> Arc<Self> {
        Arc::new(Admission {
            addr,
            max_connections: options.max_connections,
            max_per_address: options.max_connections_per_address,
            throttle: options.login_throttle,
            login_failures: AtomicU64::new(0),
            state: Mutex::new(State {
                total: 0,
                per_address: HashMap::new(),
                failures: HashMap::new(),
                pruned_at: 0,
                refusals: LogThrottle::new(REFUSAL_LOG_INTERVAL),
            }),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing here panics while holding the lock; if something did, the counts are still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A place for a connection from `peer`, or `None` (logged, at most once per 10 s) if the listener or
    /// the address is full or the address is refused for failed logins.
    pub(crate) fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<Slot> {
        let ip = peer.ip().to_canonical();
        let now = Instant::now();
        let mut state = self.state();
        let locked = state
            .failures
            .get(&ip)
            .and_then(|f| f.refused_until)
            .filter(|until| *until > now);
        let at_address = state.per_address.get(&ip).copied().unwrap_or(0);
        let refusal = if let Some(until) = locked {
            Some(Refusal::LockedOut(until - now))
        } else if state.total >= self.max_connections {
            Some(Refusal::Full(self.max_connections))
        } else if at_address >= self.max_per_address {
            Some(Refusal::AddressFull(self.max_per_address))
        } else {
            None
        };
        if let Some(why) = refusal {
            if let Some(held_back) = state.refusals.allow(now) {
                log::warn!(
                    "listener {}: refused a connection from {ip}: {why} ({held_back} more refused \
                     since the last line)",
                    self.addr
                );
            }
            return None;
        }
        state.total += 1;
        *state.per_address.entry(ip).or_insert(0) += 1;
        Some(Slot {
            admission: self.clone(),
            ip,
            peer,
        })
    }

    fn release(&self, ip: IpAddr) {
        let mut state = self.state();
        state.total -= 1;
        if let Some(n) = state.per_address.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                state.per_address.remove(&ip);
            }
        }
    }

    /// Failed logins since the listener started.
    pub(crate) fn login_failures(&self) -> u64 {
        self.login_failures.load(Ordering::Relaxed)
    }

    /// Counts a failed login from `ip`; the one that reaches the throttle's maximum refuses the address.
    fn login_failed(&self, ip: IpAddr) {
        self.login_failures.fetch_add(1, Ordering::Relaxed);
        let Some(throttle) = self.throttle else {
            return;
        };
        let now = Instant::now();
        let mut state = self.state();
        let failures = state.failures.entry(ip).or_insert(Failures {
            count: 0,
            since: now,
            refused_until: None,
        });
        if now >= failures.since + throttle.window {
            failures.count = 0;
            failures.since = now;
        }
        failures.count += 1;
        if failures.count >= throttle.max_failures {
            failures.refused_until = Some(now + throttle.lockout);
            failures.count = 0;
            failures.since = now;
            log::warn!(
                "listener {}: {ip} failed to log in {} times within {:?}: its connections are refused \
                 for {:?}",
                self.addr,
                throttle.max_failures,
                throttle.window,
                throttle.lockout
            );
        }
        if state.failures.len() >= (2 * state.pruned_at).max(1024) {
            state.failures.retain(|_, f| {
                f.refused_until.is_some_and(|until| until > now) || now < f.since + throttle.window
            });
            state.pruned_at = state.failures.len();
        }
    }
}

/// A connection's place in its listener's limits, given back when dropped (when the connection actor
/// ends, or with a connection that never starts). Also how the connection reports its login.
#[derive(Debug)]
pub(crate) struct Slot {
    admission: Arc<Admission>,
    ip: IpAddr,
    peer: SocketAddr,
}

impl Slot {
    /// The client's address.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// SASL let the client in as `user` (`mechanism` `None`: it skipped SASL).
    pub(crate) fn logged_in(&self, mechanism: Option<&str>, user: Option<&str>) {
        log::info!(
            "listener {}: login of {} from {} with {}: accepted",
            self.admission.addr,
            user.unwrap_or("(no user)"),
            self.peer,
            mechanism.unwrap_or("no SASL (skipped)")
        );
    }

    /// SASL refused the client, which named `user` (`mechanism` `None`: it skipped SASL, which the
    /// listener does not allow): logged, and counted against its address.
    pub(crate) fn login_failed(&self, mechanism: Option<&str>, user: Option<&str>) {
        log::warn!(
            "listener {}: login of {} from {} with {}: refused",
            self.admission.addr,
            user.unwrap_or("(no user)"),
            self.peer,
            mechanism.unwrap_or("no SASL (skipped)")
        );
        self.admission.login_failed(self.ip);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.release(self.ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(
        total: usize,
        per_address: usize,
        throttle: Option<LoginThrottle>,
    ) -> Arc<Admission> {
        let options = ListenOptions {
            max_connections: total,
            max_connections_per_address: per_address,
            login_throttle: throttle,
            ..ListenOptions::default()
        };
        Admission::new("127.0.0.1:5672".parse().unwrap(), &options)
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn slots_count_in_total_and_per_address_and_are_given_back() {
        let a = admission(3, 2, None);
        let one = a.admit(peer("10.0.0.1:1")).unwrap();
        let _two = a.admit(peer("10.0.0.1:2")).unwrap();
        assert!(a.admit(peer("10.0.0.1:3")).is_none(), "per address");
        // The same address, IPv4-mapped, is the same address.
        assert!(a.admit(peer("[::ffff:10.0.0.1]:4")).is_none());
        let _three = a.admit(peer("10.0.0.2:1")).unwrap();
        assert!(a.admit(peer("10.0.0.3:1")).is_none(), "in total");
        drop(one);
        assert!(a.admit(peer("10.0.0.3:1")).is_some());
    }

    #[test]
    fn an_address_is_refused_after_too_many_failed_logins_and_no_other() {
        let throttle = LoginThrottle {
            max_failures: 2,
            window: Duration::from_secs(60),
            lockout: Duration::from_secs(60),
        };
        let a = admission(100, 100, Some(throttle));
        let slot = a.admit(peer("10.0.0.1:1")).unwrap();
        slot.login_failed(Some("PLAIN"), Some("u"));
        assert!(a.admit(peer("10.0.0.1:2")).is_some());
        slot.login_failed(Some("PLAIN"), Some("u"));
        assert!(a.admit(peer("10.0.0.1:3")).is_none());
        assert!(a.admit(peer("10.0.0.2:1")).is_some());
    }

    #[test]
    fn the_log_throttle_allows_one_line_per_interval_and_counts_the_rest() {
        let mut t = LogThrottle::new(Duration::from_secs(1));
        let start = Instant::now();
        assert_eq!(t.allow(start), Some(0));
        assert_eq!(t.allow(start + Duration::from_millis(10)), None);
        assert_eq!(t.allow(start + Duration::from_millis(999)), None);
        assert_eq!(t.allow(start + Duration::from_secs(1)), Some(2));
    }

    #[test]
    fn the_accept_backoff_doubles_to_a_second_and_starts_over_after_a_success() {
        let mut b = AcceptBackoff::default();
        let addr = peer("127.0.0.1:5672");
        let e = io::Error::from_raw_os_error(24);
        let pauses: Vec<_> = (0..6).map(|_| b.failed(addr, &e).as_millis()).collect();
        assert_eq!(pauses, [100, 200, 400, 800, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(addr, &e), ACCEPT_BACKOFF_FIRST);
    }
}
