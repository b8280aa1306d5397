//! `direct_send`: listens for a receiver to connect and sends it messages directly, with no broker in
//! between, as Proton's `direct_send` example.
//!
//! ```text
//! direct_send [-a|--address URL] [-m|--messages N] [-q|--quiet]
//! ```
//!
//! Listens on the URL's host and port (default `amqp://127.0.0.1:5672/examples`; port 0 picks a free port)
//! and prints `listening on HOST:PORT` once it accepts connections. Each message has a map body
//! `{"sequence": i}`. Prints each message as it is accepted (unless `--quiet`), then `all messages confirmed`,
//! and exits. Exit status 1 when it cannot listen, 2 on a bad argument.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use nucleon::protocol::codec::Map;
use nucleon::protocol::frame::Error as AmqpError;
use nucleon::{
    Address, Connection, Container, ListenHandler, Message, MessagingHandler, Sender, Tracker,
    Value,
};
use nucleon_examples::parse_url;

/// Serves N messages to a receiver that connects.
#[derive(Parser, Debug)]
#[command(name = "direct_send")]
struct Args {
    /// The URL to listen on (its host and port).
    #[arg(short, long, default_value = "amqp://127.0.0.1:5672/examples", value_parser = parse_url)]
    address: String,
    /// How many messages to send.
    #[arg(short, long, default_value_t = 100)]
    messages: u64,
    /// Print only the summary line.
    #[arg(short, long)]
    quiet: bool,
}

/// What all accepted connections share.
struct State {
    total: u64,
    quiet: bool,
    sent: u64,
    confirmed: u64,
}

/// The handler of one accepted connection.
struct DirectSend {
    state: Arc<Mutex<State>>,
    peer: SocketAddr,
}

impl MessagingHandler for DirectSend {
    fn on_sendable(&mut self, sender: &mut Sender<'_>) {
        let mut s = self.state.lock().expect("lock");
        while sender.credit() > 0 && s.sent < s.total {
            let i = s.sent + 1;
            let mut body = Map::new();
            body.insert(
                "sequence",
                i32::try_from(i).map_or(Value::Long(i as i64), Value::Int),
            );
            let message = Message::builder().message_id(i).body(body).build();
            if let Err(e) = sender.send(&message) {
                eprintln!("direct_send: cannot send to {}: {e}", self.peer);
                sender.connection().close();
                return;
            }
            s.sent += 1;
        }
    }

    fn on_tracker_accept(&mut self, tracker: &mut Tracker<'_>) {
        let mut s = self.state.lock().expect("lock");
        s.confirmed += 1;
        if !s.quiet {
            println!("message {} confirmed", s.confirmed);
        }
        if s.confirmed == s.total {
            println!("all messages confirmed");
            // Stops the listener and closes the connection once the settlement is written.
            tracker.sender().connection().container().stop();
        }
    }

    fn on_transport_error(&mut self, _connection: &mut Connection<'_>, error: &AmqpError) {
        eprintln!("direct_send: connection from {}: {error}", self.peer);
    }

    fn on_transport_close(&mut self, _connection: &mut Connection<'_>) {
        // Messages sent but not confirmed on this connection go to the next receiver.
        let mut s = self.state.lock().expect("lock");
        s.sent = s.confirmed;
    }
}

struct Listen(Arc<Mutex<State>>);

impl ListenHandler for Listen {
    type Handler = DirectSend;

    fn on_accept(&self, peer: SocketAddr) -> DirectSend {
        DirectSend {
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
            eprintln!("direct_send: {e}");
            return ExitCode::from(2);
        }
    };
    let state = Arc::new(Mutex::new(State {
        total: args.messages,
        quiet: args.quiet,
        sent: 0,
        confirmed: 0,
    }));
    let container = Container::builder().threads(1).build();
    let listener = match container.handle().listen(&host_port, Listen(state.clone())) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("direct_send: cannot listen on {host_port}: {e}");
            return ExitCode::from(1);
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening on {}", listener.local_addr());
    let _ = out.flush();
    drop(out);
    if args.messages == 0 {
        println!("all messages confirmed");
        return ExitCode::SUCCESS;
    }
    match container.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("direct_send: {e}");
            ExitCode::from(1)
        }
    }
}
