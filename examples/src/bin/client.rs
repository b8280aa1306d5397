//! `client`: the client half of request/reply through a broker, as Proton's `client` example. It receives
//! replies on a dynamic (temporary) queue the broker makes for it, sends each request with `reply_to` set to
//! that queue, and prints `request => reply` for each reply.
//!
//! ```text
//! client [-a|--address URL] [-q|--quiet] [REQUEST ...]
//! ```
//!
//! The URL defaults to `amqp://127.0.0.1:5672/examples`; its path is the server's request queue. Without
//! requests on the command line it sends four lines of Jabberwocky. Prints `N replies received` after the
//! last reply and exits. Exit status 1 when the connection fails, 2 on a bad argument.

use std::process::ExitCode;

use clap::Parser;
use nucleon::protocol::frame::{Error as AmqpError, MessageId};
use nucleon::{
    Connection, Delivery, Message, MessagingHandler, Receiver, ReceiverOptions, Sender, SenderId,
    SenderOptions, Session,
};
use nucleon_examples::{body_text, parse_url, queue_of, run_client, Failure, TlsArgs};

const DEFAULT_REQUESTS: [&str; 4] = [
    "Twas brillig, and the slithy toves",
    "Did gire and gymble in the wabe.",
    "All mimsy were the borogroves,",
    "And the mome raths outgrabe.",
];

/// Sends requests and prints the replies.
#[derive(Parser, Debug)]
#[command(name = "client")]
struct Args {
    /// The URL to send requests to; its path is the server's queue.
    #[arg(short, long, default_value = "amqp://127.0.0.1:5672/examples", value_parser = parse_url)]
    address: String,
    /// Print only the summary line.
    #[arg(short, long)]
    quiet: bool,
    /// The requests to send (default: four lines of Jabberwocky).
    requests: Vec<String>,
    #[command(flatten)]
    tls: TlsArgs,
}

struct Client {
    url: String,
    queue: String,
    quiet: bool,
    requests: Vec<String>,
    sender: Option<SenderId>,
    /// The dynamic address replies come to, once the broker has made it.
    reply_to: Option<String>,
    sent: usize,
    replies: usize,
    failure: Failure,
}

impl Client {
    fn fail(&mut self, connection: &mut Connection<'_>, why: String) {
        self.failure.lock().expect("lock").get_or_insert(why);
        connection.close();
    }

    fn send_requests(&mut self, sender: &mut Sender<'_>) {
        let Some(reply_to) = self.reply_to.clone() else {
            return; // not before the reply queue exists
        };
        while sender.credit() > 0 && self.sent < self.requests.len() {
            let request = Message::builder()
                .reply_to(reply_to.clone())
                .correlation_id(MessageId::Ulong(self.sent as u64))
                .body(self.requests[self.sent].clone())
                .build();
            if let Err(e) = sender.send(&request) {
                let why = format!("cannot send a request: {e}");
                return self.fail(&mut sender.connection(), why);
            }
            self.sent += 1;
        }
    }
}

impl MessagingHandler for Client {
    fn on_connection_open(&mut self, connection: &mut Connection<'_>) {
        match connection.open_sender(&self.queue, SenderOptions::default()) {
            Ok(sender) => self.sender = Some(sender.id()),
            Err(e) => return self.fail(connection, format!("cannot open a sender: {e}")),
        }
        let dynamic = ReceiverOptions::new().dynamic(true);
        if let Err(e) = connection.open_receiver("", dynamic) {
            self.fail(connection, format!("cannot open a receiver: {e}"));
        }
    }

    fn on_receiver_open(&mut self, receiver: &mut Receiver<'_>) {
        let Some(address) = receiver.address() else {
            let why = "the broker gave the reply queue no address".to_owned();
            return self.fail(&mut receiver.connection(), why);
        };
        self.reply_to = Some(address);
        let mut connection = receiver.connection();
        if let Some(mut sender) = self.sender.and_then(|id| connection.sender(id)) {
            self.send_requests(&mut sender);
        }
    }

    fn on_sendable(&mut self, sender: &mut Sender<'_>) {
        self.send_requests(sender);
    }

    fn on_message(&mut self, delivery: &mut Delivery<'_>, message: Message) {
        let request = match message.correlation_id() {
            Some(MessageId::Ulong(i)) => usize::try_from(*i)
                .ok()
                .and_then(|i| self.requests.get(i))
                .cloned()
                .unwrap_or_default(),
            _ => String::new(),
        };
        self.replies += 1;
        if !self.quiet {
            println!("{request} => {}", body_text(&message));
        }
        if self.replies == self.requests.len() {
            delivery.accept();
            println!("{} replies received", self.replies);
            // Stopping the container closes the connection once the acceptance is written; closing it
            // here would drop the acceptance.
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

    fn on_sender_error(&mut self, sender: &mut Sender<'_>, error: &AmqpError) {
        let why = format!("the request sender was closed: {error}");
        self.fail(&mut sender.connection(), why);
    }

    fn on_receiver_error(&mut self, receiver: &mut Receiver<'_>, error: &AmqpError) {
        let why = format!("the reply receiver was closed: {error}");
        self.fail(&mut receiver.connection(), why);
    }

    fn on_transport_close(&mut self, _connection: &mut Connection<'_>) {
        if self.replies < self.requests.len() {
            let why = format!(
                "the connection closed after {} of {} replies",
                self.replies,
                self.requests.len()
            );
            self.failure.lock().expect("lock").get_or_insert(why);
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let queue = queue_of(&args.address);
    let requests = if args.requests.is_empty() {
        DEFAULT_REQUESTS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.requests
    };
    let failure = Failure::default();
    let handler = Client {
        url: args.address.clone(),
        queue,
        quiet: args.quiet,
        requests,
        sender: None,
        reply_to: None,
        sent: 0,
        replies: 0,
        failure: failure.clone(),
    };
    run_client("client", &args.address, &args.tls, handler, &failure)
}
