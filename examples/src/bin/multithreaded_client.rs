//! `multithreaded_client`: plain user threads send and receive through one connection while the container
//! runs on its own thread, as Proton's `multithreaded_client.cpp`.
//!
//! ```text
//! multithreaded_client [-a|--address URL] [-m|--messages N] [-t|--threads T] [-q|--quiet]
//! ```
//!
//! The URL defaults to `amqp://127.0.0.1:5672/examples`; its path is the queue, which the client both sends
//! to and receives from. `T` sender threads share the N messages; `T` receiver threads take them. Callbacks
//! never block: a sender thread waits (on a condition variable) until the link is sendable, then hands the
//! message to the connection through its `WorkQueue`; `on_message` puts each message in a thread-safe queue
//! that the receiver threads wait on. Prints `sent ...` and `received ...` lines (unless `--quiet`) and then
//! `N messages sent, N received`. Exit status 1 when the connection fails, 2 on a bad argument.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use clap::Parser;
use nucleon::protocol::frame::Error as AmqpError;
use nucleon::{
    Connection, Container, Delivery, Message, MessagingHandler, Receiver, ReceiverOptions, Sender,
    SenderId, SenderOptions, Session, WorkQueue,
};
use nucleon_examples::{body_text, parse_url, queue_of, TlsArgs};

/// Sends and receives N messages from user threads.
#[derive(Parser, Debug)]
#[command(name = "multithreaded_client")]
struct Args {
    /// The URL to send to and receive from; its path is the queue.
    #[arg(short, long, default_value = "amqp://127.0.0.1:5672/examples", value_parser = parse_url)]
    address: String,
    /// How many messages to send (and receive).
    #[arg(short, long, default_value_t = 100)]
    messages: u64,
    /// Sender threads, and as many receiver threads.
    #[arg(short, long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
    /// Print only the summary line.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    tls: TlsArgs,
}

/// What the handler and the user threads share, under one lock.
#[derive(Default)]
struct State {
    /// The sender, once it is open.
    sender: Option<SenderId>,
    /// The sender has credit: a sender thread may send, unless a send is in flight.
    sendable: bool,
    /// A send is queued on the connection and has not run yet; it tells whether there is credit for the next.
    in_flight: bool,
    /// Messages received and not yet taken by a receiver thread.
    messages: VecDeque<Message>,
    /// Messages taken by receiver threads.
    taken: u64,
    /// The connection is finished: nothing more will happen.
    closed: bool,
    /// Why the connection failed, if it did.
    failure: Option<String>,
}

/// The state plus the condition variable that signals every change to it.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the state and wakes every waiting thread.
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(guard).unwrap_or_else(|e| e.into_inner())
    }
}

/// The connection's handler: it runs on the container's threads and never blocks.
struct Client {
    url: String,
    queue: String,
    shared: Arc<Shared>,
}

impl Client {
    fn fail(&self, why: String) {
        self.shared.update(|s| {
            s.failure.get_or_insert(why);
        });
    }

    /// Runs inside the connection (queued by `send`): sends one message.
    fn do_send(&mut self, connection: &mut Connection<'_>, id: SenderId, message: Message) {
        let Some(mut sender) = connection.sender(id) else {
            self.fail("the sender is gone".to_owned());
            connection.close();
            return;
        };
        if let Err(e) = sender.send(&message) {
            self.fail(format!("cannot send: {e}"));
            connection.close();
            return;
        }
        let credit = sender.credit();
        self.shared.update(|s| {
            s.in_flight = false;
            s.sendable = credit > 0;
        });
    }
}

impl MessagingHandler for Client {
    fn on_connection_open(&mut self, connection: &mut Connection<'_>) {
        let opened = connection
            .open_sender(&self.queue, SenderOptions::default())
            .map(|_| ())
            .and_then(|()| {
                connection
                    .open_receiver(&self.queue, ReceiverOptions::default())
                    .map(|_| ())
            });
        if let Err(e) = opened {
            self.fail(format!("cannot open links: {e}"));
            connection.close();
        }
    }

    fn on_sender_open(&mut self, sender: &mut Sender<'_>) {
        let id = sender.id();
        self.shared.update(|s| s.sender = Some(id));
    }

    fn on_sendable(&mut self, _sender: &mut Sender<'_>) {
        self.shared.update(|s| s.sendable = true);
    }

    fn on_message(&mut self, _delivery: &mut Delivery<'_>, message: Message) {
        self.shared.update(|s| s.messages.push_back(message));
    }

    fn on_transport_error(&mut self, _connection: &mut Connection<'_>, error: &AmqpError) {
        self.fail(format!("cannot connect to {}: {error}", self.url));
    }

    fn on_connection_error(&mut self, _connection: &mut Connection<'_>, error: &AmqpError) {
        self.fail(format!("the connection was closed: {error}"));
    }

    // RabbitMQ refuses a link by ending its session with the error (and a peer may end one for its own
    // reasons): without this the connection would stay open with nothing to do, and the program hang.
    fn on_session_error(&mut self, session: &mut Session<'_>, error: &AmqpError) {
        self.fail(format!("the session was ended: {error}"));
        session.connection().close();
    }

    fn on_sender_error(&mut self, sender: &mut Sender<'_>, error: &AmqpError) {
        self.fail(format!("the sender was closed: {error}"));
        sender.connection().close();
    }

    fn on_receiver_error(&mut self, receiver: &mut Receiver<'_>, error: &AmqpError) {
        self.fail(format!("the receiver was closed: {error}"));
        receiver.connection().close();
    }

    fn on_transport_close(&mut self, _connection: &mut Connection<'_>) {
        self.shared.update(|s| s.closed = true);
    }
}

/// Called from a sender thread: waits until the link may take a message, then queues the send on the
/// connection. False when the connection is finished.
fn send(shared: &Shared, work: &WorkQueue<Client>, message: Message) -> bool {
    let mut state = shared.lock();
    let id = loop {
        if state.closed || state.failure.is_some() {
            return false;
        }
        match state.sender {
            Some(id) if state.sendable && !state.in_flight => break id,
            _ => state = shared.wait(state),
        }
    };
    // One send at a time: `do_send` says whether there is credit for the next.
    state.in_flight = true;
    drop(state);
    work.add(move |client, connection| client.do_send(connection, id, message))
        .is_ok()
}

/// Called from a receiver thread: the next message, or `None` once `total` are taken or the connection is
/// finished.
fn receive(shared: &Shared, total: u64) -> Option<Message> {
    let mut state = shared.lock();
    loop {
        if state.taken >= total {
            return None;
        }
        if let Some(m) = state.messages.pop_front() {
            state.taken += 1;
            if state.taken == total {
                // Let the other receiver threads see that everything is taken.
                shared.changed.notify_all();
            }
            return Some(m);
        }
        if state.closed || state.failure.is_some() {
            return None;
        }
        state = shared.wait(state);
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = match args.tls.connection_options() {
        Ok(options) => options,
        Err(e) => {
            eprintln!("multithreaded_client: {e}");
            return ExitCode::from(2);
        }
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let queue = queue_of(&args.address);
    let shared = Arc::new(Shared::default());
    let client = Client {
        url: args.address.clone(),
        queue,
        shared: shared.clone(),
    };
    let container = Container::new("multithreaded_client");
    let connection = match container.handle().connect(&args.address, options, client) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "multithreaded_client: cannot connect to {}: {e}",
                args.address
            );
            return ExitCode::from(1);
        }
    };

    // The user threads: they only touch the shared state and the connection's work queue.
    let threads = u64::from(args.threads);
    let total = args.messages;
    let quiet = args.quiet;
    let mut senders = Vec::new();
    for t in 0..threads {
        let (shared, work) = (shared.clone(), connection.work_queue());
        senders.push(thread::spawn(move || {
            let mut sent = 0u64;
            // Thread t sends messages t, t + T, t + 2T, ...
            for i in (t..total).step_by(usize::try_from(threads).unwrap_or(1)) {
                let text = format!("message {} from thread {t}", i + 1);
                if !send(&shared, &work, Message::with_body(text.as_str())) {
                    break;
                }
                sent += 1;
                if !quiet {
                    println!("sent \"{text}\"");
                }
            }
            sent
        }));
    }
    let mut receivers = Vec::new();
    for _ in 0..threads {
        let shared = shared.clone();
        receivers.push(thread::spawn(move || {
            let mut received = 0u64;
            while let Some(m) = receive(&shared, total) {
                received += 1;
                if !quiet {
                    println!("received \"{}\"", body_text(&m));
                }
            }
            received
        }));
    }
    // When the user threads are done, close the connection; the container then stops by itself.
    let closer = {
        let connection = connection.clone();
        thread::spawn(move || {
            let sent: u64 = senders.into_iter().map(|h| h.join().unwrap_or(0)).sum();
            let received: u64 = receivers.into_iter().map(|h| h.join().unwrap_or(0)).sum();
            let _ = connection.close();
            (sent, received)
        })
    };

    // The container runs on the main thread.
    let run = container.run();
    // Should the container stop first (an error), the user threads must not wait for ever.
    shared.update(|s| s.closed = true);
    let (sent, received) = closer.join().unwrap_or((0, 0));
    let failure = shared.lock().failure.take();
    println!("{sent} messages sent, {received} received");
    if let Err(e) = run {
        eprintln!("multithreaded_client: {e}");
        return ExitCode::from(1);
    }
    match failure {
        Some(why) => {
            eprintln!("multithreaded_client: {why}");
            ExitCode::from(1)
        }
        None if received < total => {
            eprintln!("multithreaded_client: only {received} of {total} messages received");
            ExitCode::from(1)
        }
        None => ExitCode::SUCCESS,
    }
}
