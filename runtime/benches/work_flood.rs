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

/// The work items run so far (a static, so that an item captures nothing: it costs what a no-op costs).
static RAN: AtomicUsize = AtomicUsize::new(0);

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

/// The messages received in one second alone, then under each of `FLOODS` with the work items run meanwhile.
fn round() -> (usize, [(usize, usize); 4]) {
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
                            let item = |_: &mut Firehose, _: &mut Connection<'_>| {
                                RAN.fetch_add(1, Ordering::Relaxed);
                            };
                            let added = match how {
                                Flood::Send => futures::executor::block_on(wq.send(item)),
                                Flood::Add => wq.add(item),
                            };
                            if added.is_err() {
                                return;
                            }
                        }
                    })
                })
                .collect();
            let work_before = RAN.load(Ordering::Relaxed);
            let count = count_for_a_second();
            let work = RAN.load(Ordering::Relaxed) - work_before;
            flooding.store(false, Ordering::Relaxed);
            for f in flooders {
                f.join().expect("a flooding thread");
            }
            // What the flood left queued runs before the next measurement starts: an item added now
            // runs after all of it.
            let (drained_tx, drained_rx) = mpsc::channel();
            conn.work_queue()
                .add(move |_, _| {
                    let _ = drained_tx.send(());
                })
                .expect("the connection is open");
            drained_rx
                .recv_timeout(Duration::from_secs(120))
                .expect("the flood's backlog drains");
            (count, work)
        };
        let alone = count_for_a_second();
        let floods = FLOODS.map(flooded);
        conn.close().expect("close is queued");
        listener.stop();
        (alone, floods)
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
    let (mut alone, mut flooded, mut work) = (
        Vec::new(),
        [(); 4].map(|_| Vec::new()),
        [(); 4].map(|_| Vec::new()),
    );
    for i in 0..rounds {
        let (a, floods) = round();
        let described: Vec<String> = FLOODS
            .iter()
            .zip(&floods)
            .map(|(&f, (n, w))| format!("{n} under {} ({w} items run)", name(f)))
            .collect();
        println!("round {}: {a} msg/s alone, {}", i + 1, described.join(", "));
        alone.push(a);
        for (k, (n, w)) in floods.into_iter().enumerate() {
            flooded[k].push(n);
            work[k].push(w);
        }
    }
    let alone = median(alone);
    println!("median of {rounds} rounds: {alone} msg/s alone");
    for ((f, n), w) in FLOODS
        .into_iter()
        .zip(flooded.map(median))
        .zip(work.map(median))
    {
        let slowdown = alone as f64 / n.max(1) as f64;
        println!(
            "  {n} msg/s under {}: {slowdown:.2}x slower; {w} work items/s run",
            name(f)
        );
    }
}
