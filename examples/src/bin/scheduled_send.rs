//! `scheduled_send`: sends a message at every interval until the time runs out, as Proton's
//! `scheduled_send.cpp`.
//!
//! ```text
//! scheduled_send [-a|--address URL] [-m|--messages N] [-t|--timeout SECONDS] [-i|--interval SECONDS] [-q|--quiet]
//! ```
//!
//! The URL defaults to `amqp://127.0.0.1:5672/examples`; its path is the queue. Once the sender is open, a
//! tick is scheduled on the connection's `WorkQueue` every `--interval` seconds (default 0.1): it sends one
//! message if the link has credit. A second scheduled item ends the run after `--timeout` seconds (default
//! 5), or the run ends after N messages (`-m`, default 100), whichever comes first; the connection is closed
//! once every message sent is confirmed. Prints `sent message I` lines (unless `--quiet`), `timeout` when the
//! time runs out, and then `N messages sent, N confirmed`. Exit status 1 when the connection fails, 2 on a
//! bad argument.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use nucleon::protocol::frame::Error as AmqpError;
use nucleon::{
    Connection, Container, Message, MessagingHandler, Sender, SenderId, SenderOptions, Session,
    Tracker, WorkQueue,
};
use nucleon_examples::{parse_url, queue_of, TlsArgs};

/// Sends messages at intervals until the time runs out.
#[derive(Parser, Debug)]
#[command(name = "scheduled_send")]
struct Args {
    /// The URL to send to; its path is the queue.
    #[arg(short, long, default_value = "amqp://127.0.0.1:5672/examples", value_parser = parse_url)]
    address: String,
    /// The most messages to send.
    #[arg(short, long, default_value_t = 100)]
    messages: u64,
    /// How long to send, in seconds.
    #[arg(short, long, default_value_t = 5.0, value_parser = parse_seconds)]
    timeout: f64,
    /// The time between two messages, in seconds.
    #[arg(short, long, default_value_t = 0.1, value_parser = parse_seconds)]
    interval: f64,
    /// Print only the summary line.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=86_400.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected a number of seconds (0 to 86400), got {s:?}"
        )),
    }
}

/// Where the handler leaves its results, for `main`.
#[derive(Default)]
struct Outcome {
    sent: u64,
    confirmed: u64,
    failure: Option<String>,
}

struct ScheduledSend {
    url: String,
    queue: String,
    total: u64,
    timeout: Duration,
    interval: Duration,
    quiet: bool,
    /// This connection's work queue, for the ticks.
    work: WorkQueue<ScheduledSend>,
    sender: Option<SenderId>,
    /// No more sending: the time ran out or N were sent.
    done: bool,
    sent: u64,
    confirmed: u64,
    outcome: Arc<Mutex<Outcome>>,
}

impl ScheduledSend {
    fn fail(&mut self, connection: &mut Connection<'_>, why: String) {
        self.record(Some(why));
        connection.close();
    }

    fn record(&mut self, failure: Option<String>) {
        let mut o = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        o.sent = self.sent;
        o.confirmed = self.confirmed;
        if o.failure.is_none() {
            o.failure = failure;
        }
    }

    /// Schedules the first tick and the end of the run.
    fn start(&mut self, connection: &mut Connection<'_>) {
        let work = self.work.clone();
        let scheduled = work
            .schedule(self.timeout, |h: &mut ScheduledSend, c| {
                if !h.done {
                    println!("timeout");
                }
                h.finish(c);
            })
            .and_then(|()| work.schedule(self.interval, tick));
        if let Err(e) = scheduled {
            self.fail(connection, format!("cannot schedule: {e}"));
        }
    }

    /// Stops sending; closes the connection once everything sent is confirmed.
    fn finish(&mut self, connection: &mut Connection<'_>) {
        self.done = true;
        if self.confirmed == self.sent {
            self.record(None);
            connection.close();
        }
    }
}

/// One tick: send a message if the sender has credit, and schedule the next tick.
fn tick(h: &mut ScheduledSend, c: &mut Connection<'_>) {
    if h.done {
        return;
    }
    if let Some(mut sender) = h.sender.and_then(|id| c.sender(id)) {
        if sender.credit() > 0 {
            let i = h.sent + 1;
            let message = Message::builder()
                .message_id(i)
                .body(format!("message {i}"))
                .build();
            if let Err(e) = sender.send(&message) {
                h.fail(c, format!("cannot send: {e}"));
                return;
            }
            h.sent = i;
            if !h.quiet {
                println!("sent message {i}");
            }
        }
    }
    if h.sent >= h.total {
        h.finish(c);
        return;
    }
    if let Err(e) = h.work.schedule(h.interval, tick) {
        h.fail(c, format!("cannot schedule: {e}"));
    }
}

impl MessagingHandler for ScheduledSend {
    fn on_connection_open(&mut self, connection: &mut Connection<'_>) {
        if let Err(e) = connection.open_sender(&self.queue, SenderOptions::default()) {
            self.fail(connection, format!("cannot open a sender: {e}"));
        }
    }

    fn on_sender_open(&mut self, sender: &mut Sender<'_>) {
        self.sender = Some(sender.id());
        if self.total == 0 {
            self.finish(&mut sender.connection());
        } else {
            self.start(&mut sender.connection());
        }
    }

    fn on_tracker_accept(&mut self, tracker: &mut Tracker<'_>) {
        self.confirmed += 1;
        if self.done && self.confirmed == self.sent {
            self.finish(&mut tracker.sender().connection());
        }
    }

    fn on_tracker_reject(&mut self, tracker: &mut Tracker<'_>) {
        let why = format!("a message was rejected: {:?}", tracker.state());
        self.fail(&mut tracker.sender().connection(), why);
    }

    fn on_tracker_release(&mut self, tracker: &mut Tracker<'_>) {
        let why = "a message was released".to_owned();
        self.fail(&mut tracker.sender().connection(), why);
    }

    fn on_transport_error(&mut self, _connection: &mut Connection<'_>, error: &AmqpError) {
        let why = format!("cannot connect to {}: {error}", self.url);
        self.record(Some(why));
    }

    fn on_connection_error(&mut self, connection: &mut Connection<'_>, error: &AmqpError) {
        self.fail(connection, format!("the connection was closed: {error}"));
    }

    // RabbitMQ refuses a link by ending its session with the error (and a peer may end one for its own
    // reasons): without this the connection would stay open with nothing to do, and the program hang.
    fn on_session_error(&mut self, session: &mut Session<'_>, error: &AmqpError) {
        self.fail(
            &mut session.connection(),
            format!("the session was ended: {error}"),
        );
    }

    fn on_sender_error(&mut self, sender: &mut Sender<'_>, error: &AmqpError) {
        self.fail(
            &mut sender.connection(),
            format!("the sender was closed: {error}"),
        );
    }

    fn on_transport_close(&mut self, _connection: &mut Connection<'_>) {
        let failure = (!self.done || self.confirmed < self.sent).then(|| {
            format!(
                "the connection closed early ({} messages sent, {} confirmed)",
                self.sent, self.confirmed
            )
        });
        self.record(failure);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = match args.tls.connection_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("scheduled_send: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let queue = queue_of(&args.address);
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let (url, total, quiet) = (args.address.clone(), args.messages, args.quiet);
    let timeout = Duration::from_secs_f64(args.timeout);
    let interval = Duration::from_secs_f64(args.interval);
    let shared = outcome.clone();
    let make = move |work| ScheduledSend {
        url,
        queue,
        total,
        timeout,
        interval,
        quiet,
        work,
        sender: None,
        done: false,
        sent: 0,
        confirmed: 0,
        outcome: shared,
    };
    let container = Container::builder().threads(1).build();
    let connected = container
        .handle()
        .connect_with_queue(&args.address, options, make);
    if let Err(e) = connected {
        eprintln!("scheduled_send: cannot connect to {}: {e}", args.address);
        return ExitCode::from(1);
    }
    let run = container.run();
    let outcome = std::mem::take(&mut *outcome.lock().unwrap_or_else(|e| e.into_inner()));
    println!(
        "{} messages sent, {} confirmed",
        outcome.sent, outcome.confirmed
    );
    if let Err(e) = run {
        eprintln!("scheduled_send: {e}");
        return ExitCode::from(1);
    }
    match outcome.failure {
        Some(why) => {
            eprintln!("scheduled_send: {why}");
            ExitCode::from(1)
        }
        None => ExitCode::SUCCESS,
    }
}
