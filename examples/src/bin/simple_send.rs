//! `simple_send`: sends messages with a map body `{"sequence": i}` to a queue and waits until every one is
//! accepted, as Proton's `simple_send` example.
//!
//! ```text
//! simple_send [-a|--address URL] [-m|--messages N] [-q|--quiet]
//! ```
//!
//! The URL defaults to `amqp://127.0.0.1:5672/examples`; its path is the queue. Prints each message as it is
//! accepted (unless `--quiet`), then `all messages confirmed`. Exit status 1 when the connection fails, 2 on a
//! bad argument.

use std::process::ExitCode;

use clap::Parser;
use nucleon::protocol::codec::Map;
use nucleon::protocol::frame::Error as AmqpError;
use nucleon::{
    Connection, Message, MessagingHandler, Sender, SenderOptions, Session, Tracker, Value,
};
use nucleon_examples::{parse_url, queue_of, run_client, Failure, TlsArgs};

/// Sends N messages and waits for them all to be accepted.
#[derive(Parser, Debug)]
#[command(name = "simple_send")]
struct Args {
    /// The URL to send to; its path is the queue.
    #[arg(short, long, default_value = "amqp://127.0.0.1:5672/examples", value_parser = parse_url)]
    address: String,
    /// How many messages to send.
    #[arg(short, long, default_value_t = 100)]
    messages: u64,
    /// Print only the summary line.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

struct SimpleSend {
    url: String,
    queue: String,
    total: u64,
    quiet: bool,
    sent: u64,
    confirmed: u64,
    failure: Failure,
}

impl SimpleSend {
    fn fail(&mut self, connection: &mut Connection<'_>, why: String) {
        self.failure.lock().expect("lock").get_or_insert(why);
        connection.close();
    }
}

impl MessagingHandler for SimpleSend {
    fn on_connection_open(&mut self, connection: &mut Connection<'_>) {
        if self.total == 0 {
            println!("all messages confirmed");
            connection.close();
            return;
        }
        if let Err(e) = connection.open_sender(&self.queue, SenderOptions::default()) {
            self.fail(connection, format!("cannot open a sender: {e}"));
        }
    }

    fn on_sendable(&mut self, sender: &mut Sender<'_>) {
        while sender.credit() > 0 && self.sent < self.total {
            let mut body = Map::new();
            let i = self.sent + 1;
            body.insert(
                "sequence",
                i32::try_from(i).map_or(Value::Long(i as i64), Value::Int),
            );
            let message = Message::builder()
                .message_id(self.sent + 1)
                .body(body)
                .build();
            if let Err(e) = sender.send(&message) {
                let why = format!("cannot send: {e}");
                self.fail(&mut sender.connection(), why);
                return;
            }
            self.sent += 1;
        }
    }

    fn on_tracker_accept(&mut self, tracker: &mut Tracker<'_>) {
        self.confirmed += 1;
        if !self.quiet {
            println!("message {} confirmed", self.confirmed);
        }
        if self.confirmed == self.total {
            println!("all messages confirmed");
            // Closes the connection once the settlement of this delivery is written.
            tracker.sender().connection().container().stop();
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

    fn on_sender_error(&mut self, sender: &mut Sender<'_>, error: &AmqpError) {
        self.fail(
            &mut sender.connection(),
            format!("the sender was closed: {error}"),
        );
    }

    fn on_transport_close(&mut self, _connection: &mut Connection<'_>) {
        if self.confirmed < self.total {
            let why = format!(
                "the connection closed after {} of {} messages were confirmed",
                self.confirmed, self.total
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
    let handler = SimpleSend {
        url: args.address.clone(),
        queue,
        total: args.messages,
        quiet: args.quiet,
        sent: 0,
        confirmed: 0,
        failure: failure.clone(),
    };
    run_client("simple_send", &args.address, &args.tls, handler, &failure)
}
