//! `direct_recv`: listens for a sender to connect and receives messages from it directly, with no broker in
//! between, as Proton's `direct_recv` example.
//!
//! ```text
//! direct_recv [-a|--address URL] [-m|--messages N] [--credit N] [-q|--quiet]
//! ```
//!
//! Listens on the URL's host and port (default `amqp://127.0.0.1:5672/examples`; port 0 picks a free port)
//! and prints `listening on HOST:PORT` once it accepts connections. Prints each body (unless `--quiet`), then
//! `N messages received`, and exits. Exit status 1 when it cannot listen, 2 on a bad argument.
//!
//! `--credit N` sets the credit window kept open to the sender (default 10, Proton's default window). Proton
//! C's `direct` example grants all the messages it expects at once, so comparing with it fairly takes
//! `--credit` equal to `--messages` (scripts/bench-vs-proton.sh does that).

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use nucleon::protocol::frame::Error as AmqpError;
use nucleon::{
    Address, AttachReply, Connection, Container, Delivery, ListenHandler, Message, MessagingHandler,
};
use nucleon_examples::{body_text, parse_url};

/// Receives N messages from a sender that connects.
#[derive(Parser, Debug)]
#[command(name = "direct_recv")]
struct Args {
    /// The URL to listen on (its host and port).
    #[arg(short, long, default_value = "amqp://127.0.0.1:5672/examples", value_parser = parse_url)]
    address: String,
    /// How many messages to receive.
    #[arg(short, long, default_value_t = 100)]
    messages: u64,
    /// The credit window kept open to the sender (refilled as messages arrive).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    credit: u32,
    /// Print only the summary line.
    #[arg(short, long)]
    quiet: bool,
}

/// What all accepted connections share.
struct State {
    expected: u64,
    credit: u32,
    quiet: bool,
    received: u64,
}

/// The handler of one accepted connection.
struct DirectRecv {
    state: Arc<Mutex<State>>,
    peer: SocketAddr,
}

impl MessagingHandler for DirectRecv {
    fn on_link_attach_request(&mut self, reply: &mut AttachReply) {
        // Only a receiver's window counts; for a sender the runtime ignores it.
        reply.credit_window = self.state.lock().expect("lock").credit;
    }

    fn on_message(&mut self, delivery: &mut Delivery<'_>, message: Message) {
        let mut s = self.state.lock().expect("lock");
        if s.received >= s.expected {
            delivery.release();
            return;
        }
        s.received += 1;
        if !s.quiet {
            println!("{}", body_text(&message));
        }
        if s.received == s.expected {
            delivery.accept();
            println!("{} messages received", s.received);
            // Stopping the container stops the listener and closes the connection once the acceptance is
            // written; closing the connection here would drop the acceptance.
            delivery.receiver().connection().container().stop();
        }
    }

    fn on_transport_error(&mut self, _connection: &mut Connection<'_>, error: &AmqpError) {
        eprintln!("direct_recv: connection from {}: {error}", self.peer);
    }
}

struct Listen(Arc<Mutex<State>>);

impl ListenHandler for Listen {
    type Handler = DirectRecv;

    fn on_accept(&self, peer: SocketAddr) -> DirectRecv {
        DirectRecv {
            state: self.0.clone(),
            peer,
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let host_port = match Address::parse(&args.address) {
        Ok(a) => a.host_port(),
        Err(e) => {
            eprintln!("direct_recv: {e}");
            return ExitCode::from(2);
        }
    };
    let state = Arc::new(Mutex::new(State {
        expected: args.messages,
        credit: args.credit,
        quiet: args.quiet,
        received: 0,
    }));
    let container = Container::builder().threads(1).build();
    let listener = match container.handle().listen(&host_port, Listen(state.clone())) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("direct_recv: cannot listen on {host_port}: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {}", listener.local_addr());
    let _ = out.flush();
    drop(out);
    if args.messages == 0 {
        println!("0 messages received");
        return ExitCode::SUCCESS;
    }
    match container.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("direct_recv: {e}");
            ExitCode::from(1)
        }
    }
}
