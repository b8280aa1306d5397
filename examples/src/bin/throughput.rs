//! `throughput`: a loopback benchmark of the nucleon runtime.
//!
//! One container listens on 127.0.0.1 and opens N client connections to itself. On each connection one
//! link carries M messages (a `data` body of BYTES bytes, plus an application property `ts` with the
//! creation time for the latency histogram) as fast as credit allows. By default the client connections
//! send and the listener's connections receive; `--client-receives` turns the links around (the clients
//! open receivers, the listener's connections send), which lets the receivers' credit window be set through
//! `ReceiverOptions::credit_window`.
//!
//! Unsettled (the default), the run ends when the senders have seen every outcome (auto-accepted by the
//! receivers); `--presettled`, when the receivers have seen every message. The time is measured from the
//! first send to that moment, and printed as one summary line:
//!
//! ```text
//! throughput: 1 -> 1 connections, 1000000 messages of 100 bytes, unsettled: 2.31 s, 432900 msg/s, 43.3 MB/s
//! ```
//!
//! followed by a `latency:` line (creation to receipt, over all messages) and a `setup:` line.
//! Exit status: 0 on success, 1 when the run fails or stalls, 2 on bad usage.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{CommandFactory, Parser};
use hdrhistogram::Histogram;
use nucleon::{
    Connection, ConnectionOptions, Container, Delivery, DeliveryMode, Error, ListenHandler,
    Message, MessagingHandler, Receiver, ReceiverOptions, Sender, SenderOptions, Tracker,
};

/// The address the links use.
const ADDRESS: &str = "throughput";
/// The application property carrying a message's creation time (microseconds since the run's clock origin).
const TIMESTAMP: &str = "ts";
/// The runtime's default receiver credit window (`ReceiverOptions::credit_window`, and the window of
/// receivers the runtime attaches in reply to a peer's sender).
const RUNTIME_WINDOW: u32 = 10;
/// The run fails when no message moved for this long.
const STALL: Duration = Duration::from_secs(10);
/// How long the container may take to stop once the run is over.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The most message bytes all links' credit windows may put in flight at once.
const MAX_IN_FLIGHT: u64 = 2 << 30;
/// The largest latency the histogram tracks, in microseconds (larger values are clamped).
const LATENCY_MAX_US: u64 = 600_000_000;

const AFTER_HELP: &str = "\
The summary line reads, for example:
  throughput: 1 -> 1 connections, 1000000 messages of 100 bytes, unsettled: 2.31 s, 432900 msg/s, 43.3 MB/s
where the message count is the total over all connections, the time runs from the first send to the last
outcome (unsettled) or the last receipt (--presettled), and MB/s counts body bytes (10^6 bytes).

Exit status: 0 on success, 1 when the run fails or stalls (no progress for 10 s), 2 on bad usage.";

/// Loopback benchmark: N client connections to a listener in the same container, one link each.
#[derive(Parser, Debug, Clone)]
#[command(name = "throughput", version, after_help = AFTER_HELP)]
struct Args {
    /// Client connections, each with one link to the listener
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=1000))]
    connections: u64,

    /// Messages sent on each connection's link
    #[arg(long, default_value_t = 100_000, value_name = "M",
          value_parser = clap::value_parser!(u64).range(1..=1_000_000_000_000))]
    messages: u64,

    /// Body size of each message in bytes (a binary `data` section)
    #[arg(long, default_value_t = 100, value_name = "BYTES",
          value_parser = clap::value_parser!(u64).range(0..=16 << 20))]
    size: u64,

    /// Worker threads of the container
    #[arg(long, default_value_t = 2, value_name = "T",
          value_parser = clap::value_parser!(u64).range(1..=256))]
    threads: u64,

    /// Send pre-settled (at-most-once): no outcomes; the run ends at the last receipt
    #[arg(long)]
    presettled: bool,

    /// Receiver credit window [default: the runtime's, 10]. With the listener receiving (the default),
    /// the listener's handlers top the credit up to W themselves, since the runtime attaches those
    /// receivers with its default window; with --client-receives it is the receivers' credit_window
    #[arg(long, value_name = "W", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    credit: Option<u32>,

    /// Turn the links around: the client connections open receivers, the listener's connections send
    #[arg(long)]
    client_receives: bool,
    /// Run over TLS: the listener's certificate chain (PEM, for `localhost`; needs --tls-key and --tls-ca).
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    tls_cert: Option<std::path::PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// The CA the clients trust for --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_ca: Option<std::path::PathBuf>,
}

/// What the handlers report to the monitoring thread.
enum Note {
    /// Every message arrived (pre-settled) or every outcome did (unsettled), at this instant.
    Done(Instant),
    /// One receiving link got all its messages; its latency histogram, if it had timestamps.
    LinkDone(Option<Box<Histogram<u64>>>),
    /// Something went wrong.
    Failed(String),
}

/// State shared by all handlers and the monitoring thread.
struct Shared {
    /// The clock origin of the `ts` property.
    origin: Instant,
    /// The first send.
    start: OnceLock<Instant>,
    /// The moment the run finished (set once, by whoever finishes it).
    end: OnceLock<Instant>,
    received: AtomicU64,
    accepted: AtomicU64,
    /// Set once the run is over (done or failed): later connection errors are the shutdown, not news.
    over: AtomicBool,
    /// Messages per link.
    per_link: u64,
    total: u64,
    presettled: bool,
    body: Bytes,
    notes: mpsc::Sender<Note>,
    /// The worker threads each client connection's two ends run on, by the client's container id.
    placement: Mutex<HashMap<String, Vec<ThreadId>>>,
}

impl Shared {
    fn fail(&self, what: String) {
        if !self.over.swap(true, Ordering::AcqRel) {
            let _ = self.notes.send(Note::Failed(what));
        }
    }

    fn finish(&self, at: Instant) {
        if self.end.set(at).is_ok() {
            let _ = self.notes.send(Note::Done(at));
        }
    }

    fn micros_since_origin(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// The link a client connection opens.
#[derive(Clone, Copy)]
enum Open {
    Sender,
    Receiver,
}

/// One connection's handler, on either side. Its sending half is used when it has a sender (on
/// `on_sendable`), its receiving half when it has a receiver (on `on_message`).
struct Bench {
    shared: Arc<Shared>,
    /// Set on client connections: the link to open once the connection is open.
    open: Option<Open>,
    /// The credit window the handler keeps up itself on its receiver (None: the runtime's window).
    topup: Option<u32>,
    /// The receiver's credit window for a client-opened receiver.
    window: Option<u32>,
    sent: u64,
    received: u64,
    latency: Option<Box<Histogram<u64>>>,
}

impl Bench {
    fn new(
        shared: Arc<Shared>,
        open: Option<Open>,
        topup: Option<u32>,
        window: Option<u32>,
    ) -> Self {
        Bench {
            shared,
            open,
            topup,
            window,
            sent: 0,
            received: 0,
            latency: None,
        }
    }

    fn mode(&self) -> DeliveryMode {
        if self.shared.presettled {
            DeliveryMode::AtMostOnce
        } else {
            DeliveryMode::AtLeastOnce
        }
    }

    fn outcome_failed(&mut self, what: &str) {
        self.shared
            .fail(format!("a message was {what} by the receiver"));
    }
}

impl MessagingHandler for Bench {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        // Where each end of a client connection runs: the clients' container ids name the pairs.
        let pair = if self.open.is_some() {
            Some(c.container_id())
        } else {
            c.remote_container_id()
        };
        if let Some(pair) = pair {
            let thread = thread::current().id();
            let mut placement = self
                .shared
                .placement
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            placement.entry(pair.to_string()).or_default().push(thread);
        }
        let opened = match self.open {
            None => return,
            Some(Open::Sender) => c
                .open_sender(ADDRESS, SenderOptions::new().delivery_mode(self.mode()))
                .map(drop),
            Some(Open::Receiver) => c
                .open_receiver(ADDRESS, {
                    let mut o = ReceiverOptions::new().delivery_mode(self.mode());
                    o.credit_window = self.window;
                    o
                })
                .map(drop),
        };
        if let Err(e) = opened {
            self.shared.fail(format!("cannot open a link: {e}"));
        }
    }

    fn on_receiver_open(&mut self, r: &mut Receiver<'_>) {
        if let Some(w) = self.topup {
            let credit = r.credit();
            if w > credit {
                if let Err(e) = r.add_credit(w - credit) {
                    self.shared.fail(format!("cannot grant credit: {e}"));
                }
            }
        }
    }

    fn on_sendable(&mut self, s: &mut Sender<'_>) {
        let per_link = self.shared.per_link;
        while self.sent < per_link && s.credit() > 0 {
            let m = Message::builder()
                .property(TIMESTAMP, self.shared.micros_since_origin())
                .data(self.shared.body.clone())
                .build();
            if self.sent == 0 {
                self.shared.start.get_or_init(Instant::now);
            }
            if let Err(e) = s.send(&m) {
                self.shared.fail(format!("send failed: {e}"));
                return;
            }
            self.sent += 1;
        }
    }

    fn on_tracker_accept(&mut self, _t: &mut Tracker<'_>) {
        let n = self.shared.accepted.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.shared.total && !self.shared.presettled {
            self.shared.finish(Instant::now());
        }
    }

    fn on_tracker_reject(&mut self, _t: &mut Tracker<'_>) {
        self.outcome_failed("rejected");
    }

    fn on_tracker_release(&mut self, _t: &mut Tracker<'_>) {
        self.outcome_failed("released or modified");
    }

    fn on_message(&mut self, d: &mut Delivery<'_>, m: Message) {
        let now = self.shared.micros_since_origin();
        if let Some(sent) = m.property(TIMESTAMP).and_then(|v| v.as_u64()) {
            let latency = self.latency.get_or_insert_with(|| {
                Box::new(
                    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
                        .expect("constant histogram bounds are valid"),
                )
            });
            latency.saturating_record(now.saturating_sub(sent).max(1));
        }
        self.received += 1;
        let n = self.shared.received.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.shared.total && self.shared.presettled {
            self.shared.finish(Instant::now());
        }
        if self.received == self.shared.per_link {
            let _ = self.shared.notes.send(Note::LinkDone(self.latency.take()));
        }
        if let Some(w) = self.topup {
            // Keep the credit near W, topping up at half, as the runtime does for its own window (which
            // stays in force underneath: the runtime refills to 10 whenever the credit falls to 5).
            let mut r = d.receiver();
            let credit = r.credit();
            if credit <= w / 2 {
                if let Err(e) = r.add_credit(w - credit) {
                    self.shared.fail(format!("cannot grant credit: {e}"));
                }
            }
        }
    }

    fn on_transport_close(&mut self, _c: &mut Connection<'_>) {
        let done = self.shared.end.get().is_some();
        if !done {
            self.shared
                .fail("a connection closed before the run finished".to_string());
        }
    }

    fn on_error(&mut self, error: &Error) {
        if !self.shared.over.load(Ordering::Acquire) {
            self.shared.fail(error.to_string());
        }
    }
}

/// Makes the listener side's handlers.
struct Accept {
    shared: Arc<Shared>,
    topup: Option<u32>,
}

impl ListenHandler for Accept {
    type Handler = Bench;

    fn on_accept(&self, _peer: SocketAddr) -> Bench {
        Bench::new(self.shared.clone(), None, self.topup, None)
    }

    fn on_error(&self, error: &Error) {
        self.shared.fail(format!("listener: {error}"));
    }
}

/// The figures of a finished run.
struct Report {
    elapsed: Duration,
    received: u64,
    accepted: u64,
    latency: Option<Histogram<u64>>,
    /// How many client connections had both ends on the same worker thread.
    same_thread: usize,
}

/// The monitoring thread: waits for the end of the run (or a failure, or a stall), then stops the container.
fn monitor(
    shared: &Shared,
    notes: &mpsc::Receiver<Note>,
    links: u64,
) -> Result<(Instant, Histogram<u64>), String> {
    let mut histogram =
        Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3).map_err(|e| e.to_string())?;
    let mut links_done = 0;
    let mut end = None;
    let mut progress = (0, 0);
    let mut last_progress = Instant::now();
    loop {
        if let Some(end) = end {
            if links_done == links {
                return Ok((end, histogram));
            }
        }
        match notes.recv_timeout(Duration::from_millis(200)) {
            Ok(Note::Done(at)) => end = Some(at),
            Ok(Note::LinkDone(h)) => {
                if let Some(h) = h {
                    histogram.add(&*h).map_err(|e| e.to_string())?;
                }
                links_done += 1;
            }
            Ok(Note::Failed(what)) => return Err(what),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("the handlers went away before the run finished".into())
            }
        }
        let now = (
            shared.received.load(Ordering::Acquire),
            shared.accepted.load(Ordering::Acquire),
        );
        if now != progress {
            progress = now;
            last_progress = Instant::now();
        } else if last_progress.elapsed() >= STALL {
            return Err(format!(
                "stalled: no progress for {} s with {} of {} messages received and {} accepted",
                STALL.as_secs(),
                now.0,
                shared.total,
                now.1
            ));
        }
    }
}

fn run(args: &Args) -> Result<Report, String> {
    let links = args.connections;
    let total = links
        .checked_mul(args.messages)
        .ok_or("too many messages in total")?;
    let size = usize::try_from(args.size).map_err(|_| "the message size is too large")?;
    let threads = usize::try_from(args.threads).map_err(|_| "too many threads")?;
    let (notes_tx, notes) = mpsc::channel();
    let shared = Arc::new(Shared {
        origin: Instant::now(),
        start: OnceLock::new(),
        end: OnceLock::new(),
        received: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        over: AtomicBool::new(false),
        per_link: args.messages,
        total,
        presettled: args.presettled,
        body: Bytes::from(vec![0x5a; size]),
        notes: notes_tx,
        placement: Mutex::new(HashMap::new()),
    });

    let container = Container::builder()
        .id("throughput")
        .threads(threads)
        .build();
    let handle = container.handle();
    let (client_link, client_window, server_topup) = if args.client_receives {
        (Open::Receiver, args.credit, None)
    } else {
        (Open::Sender, None, args.credit)
    };
    let (listen_options, client_tls) = match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (Some(cert), Some(key), Some(ca)) => {
            let server =
                nucleon::TlsServerConfig::from_pem_files(cert, key).map_err(|e| e.to_string())?;
            let client = nucleon::TlsClientConfig::builder()
                .without_system_roots()
                .ca_file(ca)
                .build()
                .map_err(|e| e.to_string())?;
            let listen = nucleon::ListenOptions::new().tls(server.require_tls(true));
            (listen, Some(client))
        }
        _ => (nucleon::ListenOptions::default(), None),
    };
    let listener = handle
        .listen_with(
            "127.0.0.1:0",
            listen_options,
            Accept {
                shared: shared.clone(),
                topup: server_topup,
            },
        )
        .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
    let url = match client_tls {
        Some(_) => format!("amqps://localhost:{}", listener.port()),
        None => format!("amqp://127.0.0.1:{}", listener.port()),
    };
    for i in 0..links {
        let handler = Bench::new(shared.clone(), Some(client_link), None, client_window);
        let options = {
            let mut o = ConnectionOptions::new().container_id(format!("throughput-client-{i}"));
            o.tls = client_tls.clone();
            o
        };
        if let Err(e) = handle.connect(&url, options, handler) {
            handle.stop();
            return Err(format!("cannot connect to {url}: {e}"));
        }
    }

    let (ran_tx, ran_rx) = mpsc::channel::<()>();
    let watcher = {
        let shared = shared.clone();
        let handle = handle.clone();
        let args = args.clone();
        thread::spawn(move || {
            let result = monitor(&shared, &notes, links);
            shared.over.store(true, Ordering::Release);
            listener.stop();
            handle.stop();
            if ran_rx.recv_timeout(SHUTDOWN_GRACE).is_err() {
                // The container did not stop: report what we have rather than hang.
                let report = result.and_then(|(end, latency)| report(&shared, end, latency));
                if let Ok(report) = &report {
                    print(&args, report);
                }
                let why = report.err().map_or_else(String::new, |e| format!("{e}; "));
                let _ = writeln!(
                    io::stderr(),
                    "throughput: error: {why}the container did not stop within {} s",
                    SHUTDOWN_GRACE.as_secs()
                );
                std::process::exit(1);
            }
            result
        })
    };
    let ran = container.run();
    let _ = ran_tx.send(());
    let watched = watcher
        .join()
        .map_err(|_| "the monitoring thread panicked".to_string())?;
    let (end, latency) = watched?;
    ran.map_err(|e| format!("the container failed: {e}"))?;
    report(&shared, end, latency)
}

/// The figures of a run that ended at `end`.
fn report(shared: &Shared, end: Instant, latency: Histogram<u64>) -> Result<Report, String> {
    let start = shared
        .start
        .get()
        .copied()
        .ok_or("the run ended without a send")?;
    Ok(Report {
        elapsed: end.saturating_duration_since(start),
        received: shared.received.load(Ordering::Acquire),
        accepted: shared.accepted.load(Ordering::Acquire),
        latency: (!latency.is_empty()).then_some(latency),
        same_thread: shared
            .placement
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|ends| ends.len() == 2 && ends[0] == ends[1])
            .count(),
    })
}

/// Prints the report. Write errors (a closed stdout) are ignored: the exit status still tells the outcome.
fn print(args: &Args, report: &Report) {
    let _ = io::stdout()
        .lock()
        .write_all(render(args, report).as_bytes());
}

/// The summary line, the latency line and the setup line.
fn render(args: &Args, report: &Report) -> String {
    let mut out = String::new();
    let total = args.connections * args.messages;
    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let rate = total as f64 / secs;
    let mbps = rate * args.size as f64 / 1e6;
    let mode = if args.presettled {
        "pre-settled"
    } else {
        "unsettled"
    };
    let _ = writeln!(
        out,
        "throughput: {n} -> {n} connections, {total} messages of {size} bytes, {mode}: {secs:.2} s, \
         {rate:.0} msg/s, {mbps:.1} MB/s",
        n = args.connections,
        size = args.size,
    );
    if let Some(h) = &report.latency {
        let _ = writeln!(
            out,
            "latency: p50 {} us, p90 {} us, p99 {} us, p99.9 {} us, max {} us ({} samples, creation to receipt)",
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.90),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max(),
            h.len(),
        );
    }
    let (senders, receivers) = if args.client_receives {
        ("listener", "clients")
    } else {
        ("clients", "listener")
    };
    let window = match (args.credit, args.client_receives) {
        (None, _) => format!("{RUNTIME_WINDOW} (runtime default)"),
        (Some(w), true) => format!("{w} (ReceiverOptions::credit_window)"),
        (Some(w), false) => format!(
            "{} (kept up by the listener's handlers over the runtime's {RUNTIME_WINDOW})",
            w.max(RUNTIME_WINDOW)
        ),
    };
    let _ = writeln!(
        out,
        "setup: {} worker threads, {senders} send, {receivers} receive, credit window {window}, \
         {} of {} connections with both ends on one worker thread, {} received, {} accepted",
        args.threads, report.same_thread, args.connections, report.received, report.accepted,
    );
    out
}

/// Refuses settings whose messages in flight (every link's whole credit window) would not fit in memory.
fn check_in_flight(args: &Args) -> Result<(), String> {
    let window = u64::from(args.credit.unwrap_or(RUNTIME_WINDOW).max(RUNTIME_WINDOW));
    let in_flight = args
        .connections
        .saturating_mul(window)
        .saturating_mul(args.size.max(1));
    if in_flight > MAX_IN_FLIGHT {
        return Err(format!(
            "--connections x credit window x --size allows {in_flight} bytes in flight, more than the \
             {} MiB this benchmark allows: lower one of them",
            MAX_IN_FLIGHT >> 20
        ));
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = check_in_flight(&args) {
        Args::command()
            .error(clap::error::ErrorKind::ArgumentConflict, e)
            .exit();
    }
    match run(&args) {
        Ok(report) => {
            print(&args, &report);
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(io::stderr(), "throughput: error: {e}");
            ExitCode::FAILURE
        }
    }
}
