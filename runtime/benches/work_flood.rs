//! Does a flood of work items crowd out a connection's own I/O? A connection streams small messages over
//! loopback to a second connection in the same container (two worker threads) as fast as credit allows.
//! The receiver's count over one second is measured five ways, in the same run: alone; while one thread,
//! then three threads, add no-op work items to the streaming connection as fast as they can with the
//! bounded `WorkQueue::send` (waiting for room); and the same with the unbounded `WorkQueue::add`.
//!
//! Run with `cargo bench -p nucleon --bench work_flood` (`-- ROUNDS` for more than 5 rounds). Each round
//! prints its figures; the last lines give the median of each and the slowdown, `alone / flooded`. The
//! design goal is a bounded flood (`send`) slowing the stream at most 2x; `add` has no backpressure and is
//! kept for Proton parity, so threads adding faster than the connection runs its work win. The flooding
//! threads need CPU themselves: on a 2-core machine three of them and the two workers compete for the cores.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use nucleon::{
    Connection, ConnectionOptions, Container, Delivery, ListenHandler, Message, MessagingHandler,
    Sender, SenderOptions,
};

/// Counts the messages it receives.
struct Counter(Arc<AtomicUsize>);

impl MessagingHandler for Counter {
    fn on_message(&mut self, _d: &mut Delivery<'_>, _m: Message) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

impl ListenHandler for Counter {
    type Handler = Counter;
    fn on_accept(&self, _peer: SocketAddr) -> Counter {
        Counter(self.0.clone())
    }
}

/// Sends whenever it has credit, forever; says when it first has credit.
struct Firehose(mpsc::Sender<()>);

impl MessagingHandler for Firehose {
    fn on_connection_open(&mut self, c: &mut Connection<'_>) {
        let _ = c.open_sender("firehose", SenderOptions::default());
    }
    fn on_sendable(&mut self, s: &mut Sender<'_>) {
        let _ = self.0.send(());
        while s.credit() > 0 {
            if s.send(&Message::builder().body(0i64).build()).is_err() {
                break;
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Flood {
    Send,
    Add,
}

/// The floods measured, after the stream alone: how, and from how many threads.
const FLOODS: [(Flood, usize); 4] = [
    (Flood::Send, 1),
    (Flood::Add, 1),
    (Flood::Send, 3),
    (Flood::Add, 3),
];

/// The messages received in one second: alone, then under each of `FLOODS`.
fn round() -> [usize; 5] {
    let container = Container::builder().id("work-flood").threads(2).build();
    let handle = container.handle();
    let received = Arc::new(AtomicUsize::new(0));
    let listener = handle
        .listen("127.0.0.1:0", Counter(received.clone()))
        .expect("listens on loopback");
    let (sendable_tx, sendable_rx) = mpsc::channel();
    let conn = handle
        .connect(
            &format!("amqp://127.0.0.1:{}", listener.port()),
            ConnectionOptions::default(),
            Firehose(sendable_tx),
        )
        .expect("connects");
    let measure = thread::spawn(move || {
        sendable_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the sender gets credit");
        let count_for_a_second = || {
            let start = received.load(Ordering::Relaxed);
            thread::sleep(Duration::from_secs(1));
            received.load(Ordering::Relaxed) - start
        };
        let flooded = |(how, threads): (Flood, usize)| {
            let flooding = Arc::new(AtomicBool::new(true));
            let flooders: Vec<_> = (0..threads)
                .map(|_| {
                    let (wq, flooding) = (conn.work_queue(), flooding.clone());
                    thread::spawn(move || {
                        while flooding.load(Ordering::Relaxed) {
                            let added = match how {
                                Flood::Send => {
                                    futures::executor::block_on(wq.send(|_: &mut Firehose, _| {}))
                                }
                                Flood::Add => wq.add(|_: &mut Firehose, _| {}),
                            };
                            if added.is_err() {
                                return;
                            }
                        }
                    })
                })
                .collect();
            let count = count_for_a_second();
            flooding.store(false, Ordering::Relaxed);
            for f in flooders {
                f.join().expect("a flooding thread");
            }
            count
        };
        let alone = count_for_a_second();
        let [a, b, c, d] = FLOODS.map(flooded);
        conn.close().expect("close is queued");
        listener.stop();
        [alone, a, b, c, d]
    });
    container.run().expect("the container runs until auto-stop");
    measure.join().expect("the measuring thread")
}

fn median(mut v: Vec<usize>) -> usize {
    v.sort_unstable();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5);
    let name = |(how, threads): (Flood, usize)| {
        let how = match how {
            Flood::Send => "send()",
            Flood::Add => "add()",
        };
        format!(
            "{how} from {threads} thread{}",
            if threads > 1 { "s" } else { "" }
        )
    };
    let mut figures: [Vec<usize>; 5] = Default::default();
    for i in 0..rounds {
        let r = round();
        let flooded: Vec<String> = FLOODS
            .iter()
            .zip(&r[1..])
            .map(|(&f, n)| format!("{n} under {}", name(f)))
            .collect();
        println!(
            "round {}: {} msg/s alone, {}",
            i + 1,
            r[0],
            flooded.join(", ")
        );
        for (all, one) in figures.iter_mut().zip(r) {
            all.push(one);
        }
    }
    let [alone, flooded @ ..] = figures.map(median);
    println!("median of {rounds} rounds: {alone} msg/s alone");
    for (f, n) in FLOODS.into_iter().zip(flooded) {
        let slowdown = alone as f64 / n.max(1) as f64;
        println!("  {n} msg/s under {}: {slowdown:.2}x slower", name(f));
    }
}
