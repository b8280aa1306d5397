//! `queue_browser`: prints the messages on a queue without consuming them, as Proton's `queue_browser.cpp`.
//!
//! ```text
//! queue_browser [-a|--address URL] [-m|--messages N] [-q|--quiet]
//! ```
//!
//! The URL defaults to `amqp://127.0.0.1:5672/examples`; its path is the queue. The receiver asks for
//! distribution mode `copy`, so the broker sends copies and the queue keeps its messages. The credit window
//! is 0: once attached, the browser grants N credits (`-m`, default 100, the most messages it shows) and
//! drains, so the broker sends what it has and gives the rest of the credit back; when the drain finishes
//! the browser has seen everything there was. Prints each message body (unless `--quiet`), then
//! `N messages browsed`. Exit status 1 when the connection fails, 2 on a bad argument.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use nucleon::protocol::frame::definitions::DISTRIBUTION_MODE_COPY;
use nucleon::protocol::frame::Error as AmqpError;
use nucleon::{
    Connection, Container, Delivery, Message, MessagingHandler, Receiver, ReceiverOptions, Session,
};
use nucleon_examples::{body_text, parse_url, queue_of, TlsArgs};

/// Browses a queue without consuming its messages.
#[derive(Parser, Debug)]
#[command(name = "queue_browser")]
struct Args {
    /// The URL of the queue to browse; its path is the queue.
    #[arg(short, long, default_value = "amqp://127.0.0.1:5672/examples", value_parser = parse_url)]
    address: String,
    /// The most messages to browse.
    #[arg(short, long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    messages: u32,
    /// Print only the summary line.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

/// What `main` reports: how many were browsed, or why it failed.
#[derive(Default)]
struct Outcome {
    browsed: u64,
    finished: bool,
    failure: Option<String>,
}

struct QueueBrowser {
    url: String,
    queue: String,
    credit: u32,
    quiet: bool,
    browsed: u64,
    outcome: Arc<Mutex<Outcome>>,
}

impl QueueBrowser {
    fn fail(&mut self, connection: &mut Connection<'_>, why: String) {
        self.failed(why);
        connection.close();
    }

    fn failed(&mut self, why: String) {
        let mut o = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        o.failure.get_or_insert(why);
    }
}

impl MessagingHandler for QueueBrowser {
    fn on_connection_open(&mut self, connection: &mut Connection<'_>) {
        let options = ReceiverOptions::new()
            .distribution_mode(DISTRIBUTION_MODE_COPY)
            // We grant credit ourselves, once, and drain.
            .credit_window(0);
        if let Err(e) = connection.open_receiver(&self.queue, options) {
            self.fail(connection, format!("cannot open a receiver: {e}"));
        }
    }

    fn on_receiver_open(&mut self, receiver: &mut Receiver<'_>) {
        let drained = receiver
            .add_credit(self.credit)
            .and_then(|()| receiver.drain());
        if let Err(e) = drained {
            self.fail(&mut receiver.connection(), format!("cannot drain: {e}"));
        }
    }

    fn on_message(&mut self, _delivery: &mut Delivery<'_>, message: Message) {
        self.browsed += 1;
        if !self.quiet {
            println!("{}", body_text(&message));
        }
    }

    fn on_receiver_drain_finish(&mut self, receiver: &mut Receiver<'_>) {
        // The broker has sent all it had (up to our credit) and given the rest of the credit back.
        {
            let mut o = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
            o.browsed = self.browsed;
            o.finished = true;
        }
        receiver.connection().close();
    }

    fn on_transport_error(&mut self, _connection: &mut Connection<'_>, error: &AmqpError) {
        self.failed(format!("cannot connect to {}: {error}", self.url));
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
        let mut o = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if !o.finished && o.failure.is_none() {
            o.failure = Some("the connection closed before the queue was browsed".to_owned());
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = match args.tls.connection_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("queue_browser: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let queue = queue_of(&args.address);
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let handler = QueueBrowser {
        url: args.address.clone(),
        queue,
        credit: args.messages,
        quiet: args.quiet,
        browsed: 0,
        outcome: outcome.clone(),
    };
    let container = Container::builder().threads(1).build();
    if let Err(e) = container.handle().connect(&args.address, options, handler) {
        eprintln!("queue_browser: cannot connect to {}: {e}", args.address);
        return ExitCode::from(1);
    }
    let run = container.run();
    let outcome = std::mem::take(&mut *outcome.lock().unwrap_or_else(|e| e.into_inner()));
    println!("{} messages browsed", outcome.browsed);
    if let Err(e) = run {
        eprintln!("queue_browser: {e}");
        return ExitCode::from(1);
    }
    match outcome.failure {
        Some(why) => {
            eprintln!("queue_browser: {why}");
            ExitCode::from(1)
        }
        None => ExitCode::SUCCESS,
    }
}
