//! `multithreaded_client_flow_control`: [`multithreaded_client`](../multithreaded_client.rs) with flow control
//! in the hands of the receiving threads, as Proton's `multithreaded_client_flow_control.cpp`.
//!
//! ```text
//! multithreaded_client_flow_control [-a|--address URL] [-m|--messages N] [-t|--threads T] [-q|--quiet]
//! ```
//!
//! The receiver's credit window is 0, so the broker sends nothing unasked. Each time a receiver thread wants
//! a message it grants one credit, through the connection's `WorkQueue` (`Receiver::add_credit(1)` runs in
//! the connection's context), and then waits for it: the client never holds more messages than its threads
//! asked for. Sender threads wait for credit as in `multithreaded_client`. Prints `sent ...` and
//! `received ...` lines (unless `--quiet`) and then `N messages sent, N received, at most B buffered`.
//! Exit status 1 when the connection fails, 2 on a bad argument.

use std::collections::VecDeque;
use std::process::ExitCode;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use clap::Parser;
use nucleon::protocol::frame::Error as AmqpError;
use nucleon::{
    Connection, Container, Delivery, Message, MessagingHandler, Receiver, ReceiverId,
    ReceiverOptions, Sender, SenderId, SenderOptions, Session, WorkQueue,
};
use nucleon_examples::{body_text, parse_url, queue_of, TlsArgs};

/// Sends and receives N messages from user threads, granting credit one message at a time.
#[derive(Parser, Debug)]
#[command(name = "multithreaded_client_flow_control")]
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
    /// The receiver, once it is open.
    receiver: Option<ReceiverId>,
    /// Credits granted by receiver threads (one per message they want).
    requested: u64,
    /// Messages received and not yet taken by a receiver thread.
    messages: VecDeque<Message>,
    /// The most messages ever waiting in `messages`.
    most_buffered: usize,
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
                // Credit window 0: the receiver threads grant credit themselves.
                let options = ReceiverOptions::new().credit_window(0);
                connection.open_receiver(&self.queue, options).map(|_| ())
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

    fn on_receiver_open(&mut self, receiver: &mut Receiver<'_>) {
        let id = receiver.id();
        self.shared.update(|s| s.receiver = Some(id));
    }

    fn on_sendable(&mut self, _sender: &mut Sender<'_>) {
        self.shared.update(|s| s.sendable = true);
    }

    fn on_message(&mut self, _delivery: &mut Delivery<'_>, message: Message) {
        self.shared.update(|s| {
            s.messages.push_back(message);
            s.most_buffered = s.most_buffered.max(s.messages.len());
        });
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

/// Called from a receiver thread: grants one credit through the work queue, then waits for a message.
/// `None` once `total` are asked for and taken, or the connection is finished.
fn receive(shared: &Shared, work: &WorkQueue<Client>, total: u64) -> Option<Message> {
    let mut state = shared.lock();
    let id = loop {
        if state.closed || state.failure.is_some() || state.requested >= total {
            return None;
        }
        match state.receiver {
            Some(id) => break id,
            None => state = shared.wait(state),
        }
    };
    state.requested += 1;
    drop(state);
    let granted = work.add(move |client, connection| match connection.receiver(id) {
        Some(mut receiver) => {
            if let Err(e) = receiver.add_credit(1) {
                client.fail(format!("cannot grant credit: {e}"));
                connection.close();
            }
        }
        None => {
            client.fail("the receiver is gone".to_owned());
            connection.close();
        }
    });
    if granted.is_err() {
        return None;
    }
    let mut state = shared.lock();
    loop {
        if let Some(m) = state.messages.pop_front() {
            state.taken += 1;
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
            eprintln!("multithreaded_client_flow_control: {e}");
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
    let container = Container::new("multithreaded_client_flow_control");
    let connection = match container.handle().connect(&args.address, options, client) {
        Ok(c) => c,
        Err(e) => {
            eprintln!(
                "multithreaded_client_flow_control: cannot connect to {}: {e}",
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
        let (shared, work) = (shared.clone(), connection.work_queue());
        receivers.push(thread::spawn(move || {
            let mut received = 0u64;
            while let Some(m) = receive(&shared, &work, total) {
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
    let (failure, most_buffered) = {
        let mut state = shared.lock();
        (state.failure.take(), state.most_buffered)
    };
    println!("{sent} messages sent, {received} received, at most {most_buffered} buffered");
    if let Err(e) = run {
        eprintln!("multithreaded_client_flow_control: {e}");
        return ExitCode::from(1);
    }
    match failure {
        Some(why) => {
            eprintln!("multithreaded_client_flow_control: {why}");
            ExitCode::from(1)
        }
        None if received < total => {
            eprintln!(
                "multithreaded_client_flow_control: only {received} of {total} messages received"
            );
            ExitCode::from(1)
        }
        None => ExitCode::SUCCESS,
    }
}
