//! `server`: the server half of request/reply through a broker, as Proton's `server` example. It receives
//! requests from a queue and sends each reply, the request's body in upper case, to the request's `reply_to`
//! with its correlation id.
//!
//! ```text
//! server [-a|--address URL] [-q|--quiet]
//! ```
//!
//! The URL defaults to `amqp://127.0.0.1:5672/examples`; its path is the request queue. Prints
//! `server listening on QUEUE` once it receives, then `request => reply` for each request (unless `--quiet`).
//! Runs until killed. Exit status 1 when the connection fails or is lost, 2 on a bad argument.

use std::collections::VecDeque;
use std::process::ExitCode;

use clap::Parser;
use nucleon::protocol::frame::{Error as AmqpError, MessageId, Target};
use nucleon::{
    Connection, Delivery, Message, MessagingHandler, Receiver, ReceiverOptions, Sender, SenderId,
    SenderOptions, Session,
};
use nucleon_examples::{body_text, parse_url, queue_of, run_client, Failure, TlsArgs};

/// Replies to requests with their body in upper case.
#[derive(Parser, Debug)]
#[command(name = "server")]
struct Args {
    /// The URL to receive requests from; its path is the queue.
    #[arg(short, long, default_value = "amqp://127.0.0.1:5672/examples", value_parser = parse_url)]
    address: String,
    /// Print only the ready line.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

struct Server {
    url: String,
    queue: String,
    quiet: bool,
    /// The anonymous sender replies go out on, each addressed by its `to`.
    replies: Option<SenderId>,
    /// Replies waiting for credit.
    pending: VecDeque<Message>,
    failure: Failure,
}

impl Server {
    fn fail(&mut self, connection: &mut Connection<'_>, why: String) {
        self.failure.lock().expect("lock").get_or_insert(why);
        connection.close();
    }

    fn send_pending(&mut self, sender: &mut Sender<'_>) {
        while sender.credit() > 0 {
            let Some(reply) = self.pending.pop_front() else {
                break;
            };
            if let Err(e) = sender.send(&reply) {
                let why = format!("cannot send a reply: {e}");
                return self.fail(&mut sender.connection(), why);
            }
        }
    }
}

impl MessagingHandler for Server {
    fn on_connection_open(&mut self, connection: &mut Connection<'_>) {
        // Replies go to many addresses: one sender with no target (anonymous relay) serves them all.
        let anonymous = SenderOptions::new().target(Target::default());
        match connection.open_sender("", anonymous) {
            Ok(sender) => self.replies = Some(sender.id()),
            Err(e) => return self.fail(connection, format!("cannot open a sender: {e}")),
        }
        if let Err(e) = connection.open_receiver(&self.queue, ReceiverOptions::default()) {
            self.fail(connection, format!("cannot open a receiver: {e}"));
        }
    }

    fn on_receiver_open(&mut self, _receiver: &mut Receiver<'_>) {
        println!("server listening on {}", self.queue);
    }

    fn on_message(&mut self, delivery: &mut Delivery<'_>, message: Message) {
        let request = body_text(&message);
        let Some(reply_to) = message.reply_to() else {
            eprintln!("server: a request with no reply_to: {request}");
            delivery.reject(None);
            return;
        };
        let reply = request.to_uppercase();
        if !self.quiet {
            println!("{request} => {reply}");
        }
        let mut builder = Message::builder().to(reply_to).body(reply);
        let correlation: Option<MessageId> = message
            .correlation_id()
            .or_else(|| message.message_id())
            .cloned();
        if let Some(id) = correlation {
            builder = builder.correlation_id(id);
        }
        self.pending.push_back(builder.build());
        let mut receiver = delivery.receiver();
        let mut connection = receiver.connection();
        if let Some(mut sender) = self.replies.and_then(|id| connection.sender(id)) {
            self.send_pending(&mut sender);
        }
    }

    fn on_sendable(&mut self, sender: &mut Sender<'_>) {
        self.send_pending(sender);
    }

    fn on_transport_error(&mut self, _connection: &mut Connection<'_>, error: &AmqpError) {
        let why = format!("connection to {} failed: {error}", self.url);
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
        let why = format!("the reply sender was closed: {error}");
        self.fail(&mut sender.connection(), why);
    }

    fn on_receiver_error(&mut self, receiver: &mut Receiver<'_>, error: &AmqpError) {
        let why = format!("the receiver was closed: {error}");
        self.fail(&mut receiver.connection(), why);
    }

    fn on_transport_close(&mut self, _connection: &mut Connection<'_>) {
        let why = format!("the connection to {} closed", self.url);
        self.failure.lock().expect("lock").get_or_insert(why);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let queue = queue_of(&args.address);
    let failure = Failure::default();
    let handler = Server {
        url: args.address.clone(),
        queue,
        quiet: args.quiet,
        replies: None,
        pending: VecDeque::new(),
        failure: failure.clone(),
    };
    run_client("server", &args.address, &args.tls, handler, &failure)
}
