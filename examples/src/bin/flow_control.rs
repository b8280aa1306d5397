//! `flow_control`: credit and drain on a direct link, with no broker: one process listens (the sending side)
//! and connects to itself (the receiving side), as Proton's `flow_control.cpp`.
//!
//! ```text
//! flow_control [-a|--address URL] [-m|--messages N] [-b|--batch B] [-q|--quiet]
//! ```
//!
//! The sending side listens on the URL's host:port (default `127.0.0.1:5672`; port 0 picks a free one) and
//! has N messages (default 100). The receiver's credit window is 0: in each round it grants B credits
//! (default 10) and asks the sender to drain. The sender sends what it has, up to the credit, and the rest
//! of the credit comes back; `on_receiver_drain_finish` ends the round. A round with fewer than B messages
//! means the sender is empty, and the program ends. Prints each round (`credit B granted, draining`,
//! `received ...`, `drain finished: K messages, U credits returned`; the per-message lines only without
//! `--quiet`) and then `N messages received in R rounds, U credits returned by drain`. Exit status 1 when
//! it cannot listen or connect, 2 on a bad argument.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use nucleon::protocol::frame::Error as AmqpError;
use nucleon::{
    Address, Connection, Container, Delivery, ListenHandler, Listener, Message, MessagingHandler,
    Receiver, ReceiverOptions, Sender,
};
use nucleon_examples::{parse_url, TlsArgs};

/// Shows credit and drain on a direct link.
#[derive(Parser, Debug)]
#[command(name = "flow_control")]
struct Args {
    /// Where to listen (and connect); the path is the link's address.
    #[arg(short, long, default_value = "amqp://127.0.0.1:5672/examples", value_parser = parse_url)]
    address: String,
    /// How many messages the sending side has.
    #[arg(short, long, default_value_t = 100)]
    messages: u64,
    /// Credits granted per round.
    #[arg(short, long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Print only the rounds and the summary, not each message.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

// ----- the sending side (accepted connections) -----

/// Makes a [`Source`] handler per accepted connection; all share the N messages.
struct Server {
    left: Arc<Mutex<u64>>,
    sent: Arc<Mutex<u64>>,
}

impl ListenHandler for Server {
    type Handler = Source;

    fn on_accept(&self, _peer: SocketAddr) -> Source {
        Source {
            left: self.left.clone(),
            sent: self.sent.clone(),
        }
    }
}

/// The sending side: sends while it has credit and messages.
struct Source {
    left: Arc<Mutex<u64>>,
    sent: Arc<Mutex<u64>>,
}

impl Source {
    fn send_all(&mut self, sender: &mut Sender<'_>) {
        let mut left = self.left.lock().unwrap_or_else(|e| e.into_inner());
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        while *left > 0 && sender.credit() > 0 {
            let i = *sent + 1;
            let message = Message::builder()
                .message_id(i)
                .body(format!("message {i}"))
                .build();
            if sender.send(&message).is_err() {
                break;
            }
            *left -= 1;
            *sent = i;
        }
    }
}

impl MessagingHandler for Source {
    fn on_sendable(&mut self, sender: &mut Sender<'_>) {
        self.send_all(sender);
    }

    fn on_sender_drain_start(&mut self, sender: &mut Sender<'_>) {
        let left = *self.left.lock().unwrap_or_else(|e| e.into_inner());
        println!(
            "sender: drain requested; {} credits unused, {left} messages left",
            sender.credit()
        );
        // Send what we have; the runtime then gives back the credit that is left.
        self.send_all(sender);
    }
}

// ----- the receiving side (our client connection) -----

/// What `main` reports.
#[derive(Default)]
struct Outcome {
    received: u64,
    rounds: u64,
    returned: u64,
    done: bool,
    failure: Option<String>,
}

struct Sink {
    url: String,
    address: String,
    batch: u32,
    quiet: bool,
    listener: Listener,
    /// Messages received in the current round.
    in_round: u32,
    outcome: Arc<Mutex<Outcome>>,
}

impl Sink {
    fn outcome(&self) -> std::sync::MutexGuard<'_, Outcome> {
        self.outcome.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&mut self, connection: &mut Connection<'_>, why: String) {
        self.outcome().failure.get_or_insert(why);
        self.listener.stop();
        connection.close();
    }

    /// Starts a round: grant a batch of credit and ask the sender to drain.
    fn round(&mut self, receiver: &mut Receiver<'_>) {
        self.in_round = 0;
        self.outcome().rounds += 1;
        println!("credit {} granted, draining", self.batch);
        let started = receiver
            .add_credit(self.batch)
            .and_then(|()| receiver.drain());
        if let Err(e) = started {
            self.fail(&mut receiver.connection(), format!("cannot drain: {e}"));
        }
    }
}

impl MessagingHandler for Sink {
    fn on_connection_open(&mut self, connection: &mut Connection<'_>) {
        let options = ReceiverOptions::new().credit_window(0);
        if let Err(e) = connection.open_receiver(&self.address, options) {
            self.fail(connection, format!("cannot open a receiver: {e}"));
        }
    }

    fn on_receiver_open(&mut self, receiver: &mut Receiver<'_>) {
        self.round(receiver);
    }

    fn on_message(&mut self, _delivery: &mut Delivery<'_>, message: Message) {
        self.in_round += 1;
        self.outcome().received += 1;
        if !self.quiet {
            let body = message
                .body_value()
                .and_then(|v| v.as_str().map(str::to_owned));
            println!("received {}", body.unwrap_or_default());
        }
    }

    fn on_receiver_drain_finish(&mut self, receiver: &mut Receiver<'_>) {
        let returned = self.batch - self.in_round.min(self.batch);
        println!(
            "drain finished: {} messages, {returned} credits returned, credit now {}",
            self.in_round,
            receiver.credit()
        );
        self.outcome().returned += u64::from(returned);
        if self.in_round < self.batch {
            // The sender had less than we asked for: it is empty.
            self.outcome().done = true;
            self.listener.stop();
            receiver.connection().close();
        } else {
            self.round(receiver);
        }
    }

    fn on_transport_error(&mut self, _connection: &mut Connection<'_>, error: &AmqpError) {
        let why = format!("cannot connect to {}: {error}", self.url);
        self.outcome().failure.get_or_insert(why);
        self.listener.stop();
    }

    fn on_connection_error(&mut self, connection: &mut Connection<'_>, error: &AmqpError) {
        self.fail(connection, format!("the connection was closed: {error}"));
    }

    fn on_receiver_error(&mut self, receiver: &mut Receiver<'_>, error: &AmqpError) {
        self.fail(
            &mut receiver.connection(),
            format!("the receiver was closed: {error}"),
        );
    }

    fn on_transport_close(&mut self, _connection: &mut Connection<'_>) {
        // Whatever happened, the program is over: stop listening so the container stops.
        self.listener.stop();
        let mut o = self.outcome();
        if !o.done && o.failure.is_none() {
            o.failure = Some("the connection closed early".to_owned());
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = match args.tls.connection_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("flow_control: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let Ok(url) = Address::parse(&args.address) else {
        return ExitCode::from(2);
    };
    let address = url.address.clone().unwrap_or_else(|| "examples".to_owned());
    let container = Container::builder().threads(2).build();
    let handle = container.handle();
    let server = Server {
        left: Arc::new(Mutex::new(args.messages)),
        sent: Arc::new(Mutex::new(0)),
    };
    let listener = match handle.listen(&url.host_port(), server) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("flow_control: cannot listen on {}: {e}", url.host_port());
            return ExitCode::from(1);
        }
    };
    let target = format!("amqp://{}/{address}", listener.local_addr());
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let sink = Sink {
        url: target.clone(),
        address,
        batch: args.batch,
        quiet: args.quiet,
        listener: listener.clone(),
        in_round: 0,
        outcome: outcome.clone(),
    };
    if let Err(e) = handle.connect(&target, options, sink) {
        listener.stop();
        eprintln!("flow_control: cannot connect to {target}: {e}");
        return ExitCode::from(1);
    }
    let run = container.run();
    let outcome = std::mem::take(&mut *outcome.lock().unwrap_or_else(|e| e.into_inner()));
    println!(
        "{} messages received in {} rounds, {} credits returned by drain",
        outcome.received, outcome.rounds, outcome.returned
    );
    if let Err(e) = run {
        eprintln!("flow_control: {e}");
        return ExitCode::from(1);
    }
    match outcome.failure {
        Some(why) => {
            eprintln!("flow_control: {why}");
            ExitCode::from(1)
        }
        None => ExitCode::SUCCESS,
    }
}
