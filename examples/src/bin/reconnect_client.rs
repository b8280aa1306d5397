//! `reconnect_client`: sends N messages through a queue and receives them back, one at a time, surviving a
//! broker restart or failover, as Proton's `reconnect_client.cpp`.
//!
//! ```text
//! reconnect_client [-a|--address URL] [-f|--failover URL ...] [-m|--messages N] [-d|--delay SECONDS]
//!                  [--max-attempts N] [-q|--quiet]
//! ```
//!
//! The URL defaults to `amqp://127.0.0.1:5672/examples`; its path is the queue. The connection has
//! `ReconnectOptions`: after a lost transport it connects again, to the main URL and then each failover URL
//! in turn, with exponential backoff, and the runtime attaches its links again (their `SenderId` and
//! `ReceiverId` stay valid). Message `i` is sent once message `i - 1` has come back (after `--delay` seconds,
//! default 0); a message lost with a broker is sent again after the reconnect, and duplicates are skipped.
//! Prints `connected` or `reconnected` on each connection, `received I` for each message (unless
//! `--quiet`), and then `N messages received, R reconnects`. It gives up after `--max-attempts` failed
//! connection attempts in a row (default 10): exit status 1 then; 2 on a bad argument.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use nucleon::protocol::frame::Error as AmqpError;
use nucleon::{
    Connection, Container, Delivery, Message, MessagingHandler, Receiver, ReceiverOptions,
    ReconnectOptions, Sender, SenderId, SenderOptions, Session, WorkQueue,
};
use nucleon_examples::{parse_url, queue_of, TlsArgs};

/// Sends and receives N messages through a broker, reconnecting when the connection is lost.
#[derive(Parser, Debug)]
#[command(name = "reconnect_client")]
struct Args {
    /// The URL to connect to; its path is the queue.
    #[arg(short, long, default_value = "amqp://127.0.0.1:5672/examples", value_parser = parse_url)]
    address: String,
    /// A failover URL, tried after the main one (repeatable).
    #[arg(short, long = "failover", value_parser = parse_url)]
    failover: Vec<String>,
    /// How many messages to send and receive.
    #[arg(short, long, default_value_t = 100)]
    messages: u64,
    /// Seconds to wait between receiving a message and sending the next.
    #[arg(short, long, default_value_t = 0.0, value_parser = parse_seconds)]
    delay: f64,
    /// Give up after this many failed connection attempts in a row.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,
    /// Print only the summary line.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.0..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "expected a number of seconds (0 to 3600), got {s:?}"
        )),
    }
}

/// What `main` reports.
#[derive(Default)]
struct Outcome {
    received: u64,
    reconnects: u64,
    /// The last transport error, reported if the client gives up.
    last_error: Option<String>,
    failure: Option<String>,
}

struct ReconnectClient {
    queue: String,
    total: u64,
    delay: Duration,
    quiet: bool,
    /// This connection's work queue (for delayed sends).
    work: WorkQueue<ReconnectClient>,
    sender: Option<SenderId>,
    /// The next message to receive (and the one to send when nothing is in flight), from 1.
    next: u64,
    /// Message `next` is sent (or a delayed send of it is scheduled) and has not come back yet.
    in_flight: bool,
    /// A connection has been open before: the next open is a reconnect.
    opened: bool,
    reconnects: u64,
    outcome: Arc<Mutex<Outcome>>,
}

impl ReconnectClient {
    fn outcome(&self) -> std::sync::MutexGuard<'_, Outcome> {
        self.outcome.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&mut self, connection: &mut Connection<'_>, why: String) {
        self.outcome().failure.get_or_insert(why);
        connection.close();
    }

    /// Sends message `next` if nothing is in flight and the sender has credit.
    fn send_next(&mut self, connection: &mut Connection<'_>) {
        if self.in_flight || self.next > self.total {
            return;
        }
        let Some(mut sender) = self.sender.and_then(|id| connection.sender(id)) else {
            return;
        };
        if sender.credit() == 0 {
            return;
        }
        let message = Message::builder()
            .message_id(self.next)
            .body(self.next)
            .build();
        match sender.send(&message) {
            Ok(_) => self.in_flight = true,
            Err(e) => self.fail(connection, format!("cannot send: {e}")),
        }
    }
}

impl MessagingHandler for ReconnectClient {
    fn on_connection_open(&mut self, connection: &mut Connection<'_>) {
        // Not `connection.reconnected()`: that is also true when the first attempts failed, and the links
        // must be opened on the first connection that succeeds, whichever attempt it is.
        if self.opened {
            self.reconnects += 1;
            println!("reconnected");
            // A message in flight may have been lost with the old connection: send it again.
            self.in_flight = false;
            return;
        }
        self.opened = true;
        println!("connected");
        if self.total == 0 {
            connection.close();
            return;
        }
        let opened = connection
            .open_receiver(&self.queue, ReceiverOptions::default())
            .map(|_| ())
            .and_then(|()| {
                connection
                    .open_sender(&self.queue, SenderOptions::default())
                    .map(|s| self.sender = Some(s.id()))
            });
        if let Err(e) = opened {
            self.fail(connection, format!("cannot open links: {e}"));
        }
    }

    fn on_sendable(&mut self, sender: &mut Sender<'_>) {
        self.send_next(&mut sender.connection());
    }

    fn on_message(&mut self, delivery: &mut Delivery<'_>, message: Message) {
        let seq = message.body_value().and_then(|v| v.as_u64());
        if seq != Some(self.next) {
            // A copy of a message already received (sent again after a reconnect): skip it.
            return;
        }
        if !self.quiet {
            println!("received {}", self.next);
        }
        self.outcome().received = self.next;
        self.next += 1;
        self.in_flight = false;
        let mut receiver = delivery.receiver();
        let mut connection = receiver.connection();
        if self.next > self.total {
            connection.close();
        } else if self.delay.is_zero() {
            self.send_next(&mut connection);
        } else {
            self.in_flight = true;
            let next = self.next;
            let scheduled = self
                .work
                .schedule(self.delay, move |h: &mut ReconnectClient, c| {
                    // Unless a reconnect has already sent it again.
                    if h.next == next && h.in_flight {
                        h.in_flight = false;
                        h.send_next(c);
                    }
                });
            if let Err(e) = scheduled {
                self.fail(&mut connection, format!("cannot schedule: {e}"));
            }
        }
    }

    fn on_transport_error(&mut self, _connection: &mut Connection<'_>, error: &AmqpError) {
        self.outcome().last_error = Some(error.to_string());
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
        let why = format!("the sender was closed: {error}");
        self.fail(&mut sender.connection(), why);
    }

    fn on_receiver_error(&mut self, receiver: &mut Receiver<'_>, error: &AmqpError) {
        let why = format!("the receiver was closed: {error}");
        self.fail(&mut receiver.connection(), why);
    }

    fn on_transport_close(&mut self, _connection: &mut Connection<'_>) {
        let reconnects = self.reconnects;
        self.outcome().reconnects = reconnects;
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = match args.tls.connection_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("reconnect_client: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let queue = queue_of(&args.address);
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let (total, delay, quiet) = (
        args.messages,
        Duration::from_secs_f64(args.delay),
        args.quiet,
    );
    let shared = outcome.clone();
    let make = move |work| ReconnectClient {
        queue,
        total,
        delay,
        quiet,
        work,
        sender: None,
        next: 1,
        in_flight: false,
        opened: false,
        reconnects: 0,
        outcome: shared,
    };
    let options = options.reconnect(
        ReconnectOptions::new()
            .max_delay(Duration::from_secs(1))
            .max_attempts(args.max_attempts)
            .failover_urls(args.failover.clone()),
    );
    let container = Container::builder().threads(1).build();
    let connected = container
        .handle()
        .connect_with_queue(&args.address, options, make);
    if let Err(e) = connected {
        eprintln!("reconnect_client: cannot connect to {}: {e}", args.address);
        return ExitCode::from(1);
    }
    let run = container.run();
    let outcome = std::mem::take(&mut *outcome.lock().unwrap_or_else(|e| e.into_inner()));
    println!(
        "{} messages received, {} reconnects",
        outcome.received, outcome.reconnects
    );
    if let Err(e) = run {
        eprintln!("reconnect_client: {e}");
        return ExitCode::from(1);
    }
    if let Some(why) = outcome.failure {
        eprintln!("reconnect_client: {why}");
        return ExitCode::from(1);
    }
    if outcome.received < args.messages {
        let why = outcome
            .last_error
            .unwrap_or_else(|| "the connection closed".to_owned());
        eprintln!(
            "reconnect_client: gave up connecting to {} after {} attempts: {why}",
            args.address, args.max_attempts
        );
        return ExitCode::from(1);
    }
    ExitCode::SUCCESS
}
