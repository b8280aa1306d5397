//! `simple_recv`: receives messages from a queue and prints their bodies, as Proton's `simple_recv` example.
//!
//! ```text
//! simple_recv [-a|--address URL] [-m|--messages N] [--credit N] [-q|--quiet]
//! ```
//!
//! The URL defaults to `amqp://127.0.0.1:5672/examples`; its path is the queue. Prints each body (unless
//! `--quiet`), then `N messages received`, and exits after N messages (`-m 0`: never). Exit status 1 when the
//! connection fails, 2 on a bad argument.
//!
//! `--credit N` sets the receiver's credit window (default 10, Proton's default window); Proton C's
//! `receive` grants all the messages it expects at once, i.e. `--credit` equal to `--messages`.

use std::process::ExitCode;

use clap::Parser;
use nucleon::protocol::frame::Error as AmqpError;
use nucleon::{
    Connection, Delivery, Message, MessagingHandler, Receiver, ReceiverOptions, Session,
};
use nucleon_examples::{body_text, parse_url, queue_of, run_client, Failure, TlsArgs};

/// Receives N messages and prints them.
#[derive(Parser, Debug)]
#[command(name = "simple_recv")]
struct Args {
    /// The URL to receive from; its path is the queue.
    #[arg(short, long, default_value = "amqp://127.0.0.1:5672/examples", value_parser = parse_url)]
    address: String,
    /// How many messages to receive (0: no limit).
    #[arg(short, long, default_value_t = 100)]
    messages: u64,
    /// The credit window kept open to the sender (refilled as messages arrive).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    credit: u32,
    /// Print only the summary line.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

struct SimpleRecv {
    url: String,
    queue: String,
    expected: u64,
    credit: u32,
    quiet: bool,
    received: u64,
    failure: Failure,
}

impl SimpleRecv {
    fn fail(&mut self, connection: &mut Connection<'_>, why: String) {
        self.failure.lock().expect("lock").get_or_insert(why);
        connection.close();
    }

    fn done(&self) -> bool {
        self.expected != 0 && self.received >= self.expected
    }
}

impl MessagingHandler for SimpleRecv {
    fn on_connection_open(&mut self, connection: &mut Connection<'_>) {
        if let Err(e) = connection.open_receiver(
            &self.queue,
            ReceiverOptions::default().credit_window(self.credit),
        ) {
            self.fail(connection, format!("cannot open a receiver: {e}"));
        }
    }

    fn on_message(&mut self, delivery: &mut Delivery<'_>, message: Message) {
        if self.done() {
            // Credit granted before the last message may bring more: leave them on the queue.
            delivery.release();
            return;
        }
        self.received += 1;
        if !self.quiet {
            println!("{}", body_text(&message));
        }
        if self.done() {
            delivery.accept();
            println!("{} messages received", self.received);
            // Stopping the container closes the connection from a later turn of its mailbox, once this
            // acceptance is written: closing it here would drop the acceptance.
            delivery.receiver().connection().container().stop();
        }
    }

    fn on_transport_error(&mut self, _connection: &mut Connection<'_>, error: &AmqpError) {
        let why = format!("cannot connect to {}: {error}", self.url);
        self.failure.lock().expect("lock").get_or_insert(why);
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

    fn on_receiver_error(&mut self, receiver: &mut Receiver<'_>, error: &AmqpError) {
        self.fail(
            &mut receiver.connection(),
            format!("the receiver was closed: {error}"),
        );
    }

    fn on_transport_close(&mut self, _connection: &mut Connection<'_>) {
        if !self.done() {
            let why = format!(
                "the connection closed after {} messages were received",
                self.received
            );
            self.failure.lock().expect("lock").get_or_insert(why);
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let queue = queue_of(&args.address);
    let failure = Failure::default();
    let handler = SimpleRecv {
        url: args.address.clone(),
        queue,
        expected: args.messages,
        credit: args.credit,
        quiet: args.quiet,
        received: 0,
        failure: failure.clone(),
    };
    run_client("simple_recv", &args.address, &args.tls, handler, &failure)
}
