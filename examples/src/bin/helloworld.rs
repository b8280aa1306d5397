//! `helloworld`: sends "Hello World!" to itself through a broker and prints it, as Proton's `helloworld`.
//!
//! ```text
//! helloworld [-a|--address URL]
//! ```
//!
//! The URL defaults to `amqp://127.0.0.1:5672/examples`; its path is the queue. Exit status 1 when the
//! connection fails, 2 on a bad argument.

use std::process::ExitCode;

use clap::Parser;
use nucleon::protocol::frame::Error as AmqpError;
use nucleon::{
    Body, Connection, Delivery, Message, MessagingHandler, Receiver, ReceiverOptions, Sender,
    SenderOptions, Session, Value,
};
use nucleon_examples::{parse_url, queue_of, run_client, Failure, TlsArgs};

/// Sends "Hello World!" to itself through a broker.
#[derive(Parser, Debug)]
#[command(name = "helloworld")]
struct Args {
    /// The URL to use; its path is the queue.
    #[arg(short, long, default_value = "amqp://127.0.0.1:5672/examples", value_parser = parse_url)]
    address: String,
    #[command(flatten)]
    tls: TlsArgs,
}

struct HelloWorld {
    url: String,
    queue: String,
    sent: bool,
    received: bool,
    failure: Failure,
}

impl HelloWorld {
    fn fail(&mut self, connection: &mut Connection<'_>, why: String) {
        self.failure.lock().expect("lock").get_or_insert(why);
        connection.close();
    }
}

impl MessagingHandler for HelloWorld {
    fn on_connection_open(&mut self, connection: &mut Connection<'_>) {
        // The receiver first, so the queue exists (and has a consumer) before the message is sent.
        if let Err(e) = connection.open_receiver(&self.queue, ReceiverOptions::default()) {
            return self.fail(connection, format!("cannot open a receiver: {e}"));
        }
        if let Err(e) = connection.open_sender(&self.queue, SenderOptions::default()) {
            self.fail(connection, format!("cannot open a sender: {e}"));
        }
    }

    fn on_sendable(&mut self, sender: &mut Sender<'_>) {
        if self.sent {
            return;
        }
        if let Err(e) = sender.send(&Message::with_body("Hello World!")) {
            let why = format!("cannot send: {e}");
            return self.fail(&mut sender.connection(), why);
        }
        self.sent = true;
        sender.close();
    }

    fn on_message(&mut self, delivery: &mut Delivery<'_>, message: Message) {
        if self.received {
            delivery.release();
            return;
        }
        self.received = true;
        delivery.accept();
        match message.body() {
            Body::Value(Value::String(s)) => println!("{s}"),
            Body::Value(v) => println!("{v}"),
            other => println!("{other:?}"),
        }
        // Stopping the container closes the connection once the acceptance is written; closing it here
        // would drop the acceptance.
        delivery.receiver().connection().container().stop();
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
        let why = format!("the sender was closed: {error}");
        self.fail(&mut sender.connection(), why);
    }

    fn on_receiver_error(&mut self, receiver: &mut Receiver<'_>, error: &AmqpError) {
        let why = format!("the receiver was closed: {error}");
        self.fail(&mut receiver.connection(), why);
    }

    fn on_transport_close(&mut self, _connection: &mut Connection<'_>) {
        if !self.received {
            let why = "the connection closed before the message came back".to_owned();
            self.failure.lock().expect("lock").get_or_insert(why);
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let queue = queue_of(&args.address);
    let failure = Failure::default();
    let handler = HelloWorld {
        url: args.address.clone(),
        queue,
        sent: false,
        received: false,
        failure: failure.clone(),
    };
    run_client("helloworld", &args.address, &args.tls, handler, &failure)
}
