//! A listener that runs out of file descriptors, for `runtime_listener_limits.rs` (run it under a low
//! `RLIMIT_NOFILE`, e.g. `prlimit --nofile=64:64`): it fills every free descriptor but one, connects to
//! itself with that one, so that the accept loop fails with EMFILE, counts the failed accepts for a
//! while, then frees the descriptors and waits for the accept to succeed. It prints
//! `failed=<n> accepted=<bool>`; the log goes to stderr.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use nucleon::{ContainerBuilder, Error, ListenHandler, MessagingHandler};

/// How long the failed accepts are counted.
const WINDOW: Duration = Duration::from_secs(2);

struct Idle;

impl MessagingHandler for Idle {}

struct Starved {
    failures: Arc<AtomicUsize>,
    opened: mpsc::Sender<SocketAddr>,
    accepted: mpsc::Sender<()>,
}

impl ListenHandler for Starved {
    type Handler = Idle;

    fn on_open(&self, addr: SocketAddr) {
        let _ = self.opened.send(addr);
    }

    fn on_accept(&self, _: SocketAddr) -> Idle {
        let _ = self.accepted.send(());
        Idle
    }

    fn on_error(&self, _: &Error) {
        self.failures.fetch_add(1, Ordering::SeqCst);
    }
}

fn main() {
    env_logger::builder().format_timestamp_millis().init();
    let container = ContainerBuilder::default().threads(1).build();
    let handle = container.handle();
    let failures = Arc::new(AtomicUsize::new(0));
    let (opened, listening) = mpsc::channel();
    let (accepted, accepts) = mpsc::channel();
    let starved = Starved {
        failures: failures.clone(),
        opened,
        accepted,
    };
    handle.listen("127.0.0.1:0", starved).expect("listens");
    let starver = std::thread::spawn(move || {
        let addr = listening
            .recv_timeout(Duration::from_secs(10))
            .expect("the listener opens");
        let mut filler = Vec::new();
        while let Ok(f) = File::open("/dev/null") {
            filler.push(f);
        }
        // The last free descriptor goes to our client; the listener has none left to accept it with.
        filler.pop();
        let client = TcpStream::connect(addr).expect("connects with the last descriptor");
        std::thread::sleep(WINDOW);
        let failed = failures.load(Ordering::SeqCst);
        drop(filler);
        let accepted = accepts.recv_timeout(Duration::from_secs(10)).is_ok();
        println!("failed={failed} accepted={accepted}");
        drop(client);
        handle.stop();
    });
    container.run().expect("runs");
    starver.join().expect("the starving thread finishes");
}
