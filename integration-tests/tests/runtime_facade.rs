//! The async facade and the actor integration, over loopback, from inside actix Systems:
//! `send(..).await` returns each message's real outcome; a `ReceiverHandle` stream receives and accepts;
//! an actix actor receives through `Recipient<Received>` and never has more than the credit window of
//! messages outstanding.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Context, Handler};
use futures::StreamExt;
use nucleon::protocol::frame::{Error as AmqpError, ErrorCondition};
use nucleon::{
    ContainerBuilder, ContainerHandle, Delivery, ListenHandler, Message, MessagingHandler, Outcome,
    Received, ReceiverOptions, Sender, SenderOptions, Tracker, Value,
};

const N: usize = 10_000;
const TIMEOUT: Duration = Duration::from_secs(60);

/// Server side for the sender test: accepts, rejects or releases by the message's index.
struct Judge;

impl MessagingHandler for Judge {
    fn on_message(&mut self, d: &mut Delivery<'_>, m: Message) {
        match m.body_value().and_then(Value::as_i64).unwrap_or(-1) % 3 {
            0 => d.accept(),
            1 => d.reject(Some(AmqpError::new(
                ErrorCondition::InvalidField,
                "odd one",
            ))),
            _ => d.release(),
        }
    }
}

struct Judges;

impl ListenHandler for Judges {
    type Handler = Judge;
    fn on_accept(&self, _: std::net::SocketAddr) -> Judge {
        Judge
    }
}

/// Server side for the receiver tests: sends `N` numbered messages to whoever attaches a receiver.
struct Feeder {
    sent: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    next: usize,
}

impl MessagingHandler for Feeder {
    fn on_sendable(&mut self, s: &mut Sender<'_>) {
        while s.credit() > 0 && self.next < N {
            let m = Message::builder().body(self.next as i64).build();
            s.send(&m).expect("credit allows a send");
            self.next += 1;
            self.sent.fetch_add(1, Ordering::SeqCst);
        }
    }
    fn on_tracker_accept(&mut self, _t: &mut Tracker<'_>) {
        self.accepted.fetch_add(1, Ordering::SeqCst);
    }
}

#[derive(Clone, Default)]
struct Feeders {
    sent: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
}

impl ListenHandler for Feeders {
    type Handler = Feeder;
    fn on_accept(&self, _: std::net::SocketAddr) -> Feeder {
        Feeder {
            sent: self.sent.clone(),
            accepted: self.accepted.clone(),
            next: 0,
        }
    }
}

fn container() -> ContainerHandle {
    ContainerBuilder::default()
        .id("facade-test")
        .threads(2)
        .auto_stop(false)
        .start()
}

#[actix_rt::test]
async fn send_await_returns_every_outcome() {
    let _ = env_logger::builder().is_test(true).try_init();
    let container = container();
    let listener = container.listen("127.0.0.1:0", Judges).expect("listens");
    let url = format!("amqp://127.0.0.1:{}/judged", listener.port());
    let sender = container
        .open_sender(&url, SenderOptions::default())
        .await
        .expect("sender opens");
    let sends = (0..N).map(|i| {
        let sender = sender.clone();
        async move {
            let outcome = sender
                .send(Message::builder().body(i as i64).build())
                .await
                .expect("an outcome");
            (i, outcome)
        }
    });
    let outcomes = tokio::time::timeout(TIMEOUT, futures::future::join_all(sends))
        .await
        .expect("all outcomes in time");
    assert_eq!(outcomes.len(), N);
    for (i, outcome) in outcomes {
        match i % 3 {
            0 => assert_eq!(outcome, Outcome::Accepted, "message {i}"),
            1 => assert!(
                matches!(&outcome, Outcome::Rejected(Some(e)) if e.condition == ErrorCondition::InvalidField),
                "message {i}: {outcome:?}"
            ),
            _ => assert_eq!(outcome, Outcome::Released, "message {i}"),
        }
    }
    sender.close().expect("closes");
    listener.stop();
    container.stop();
}

#[actix_rt::test]
async fn a_receiver_stream_receives_and_accepts_in_order() {
    let container = container();
    let feeders = Feeders::default();
    let listener = container
        .listen("127.0.0.1:0", feeders.clone())
        .expect("listens");
    let url = format!("amqp://127.0.0.1:{}/feed", listener.port());
    let mut receiver = container
        .open_receiver(&url, ReceiverOptions::default())
        .await
        .expect("receiver opens");
    let received = tokio::time::timeout(TIMEOUT, async {
        let mut bodies = Vec::with_capacity(N);
        while bodies.len() < N {
            let r = receiver.next().await.expect("the stream goes on");
            bodies.push(
                r.message
                    .body_value()
                    .and_then(Value::as_i64)
                    .expect("long"),
            );
            r.accept().expect("accepts");
        }
        bodies
    })
    .await
    .expect("all messages in time");
    assert_eq!(received, (0..N as i64).collect::<Vec<_>>());
    let all_accepted = tokio::time::timeout(TIMEOUT, async {
        while feeders.accepted.load(Ordering::SeqCst) < N {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(all_accepted.is_ok(), "the sender saw every accept");
    receiver.close().expect("closes");
    listener.stop();
    container.stop();
}

/// An actor that counts what it handles and checks that no more than the credit window was ever sent
/// ahead of it.
struct Counter {
    sent: Arc<AtomicUsize>,
    handled: usize,
    window: usize,
    worst_backlog: Arc<AtomicUsize>,
    done: Option<tokio::sync::oneshot::Sender<usize>>,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Received> for Counter {
    type Result = ();
    fn handle(&mut self, r: Received, _: &mut Context<Self>) {
        // Messages sent but not yet handled (this one included) can never exceed the credit window.
        let backlog = self.sent.load(Ordering::SeqCst) - self.handled;
        self.worst_backlog.fetch_max(backlog, Ordering::SeqCst);
        assert!(
            backlog <= self.window,
            "backlog {backlog} > window {}",
            self.window
        );
        r.accept().expect("accepts");
        self.handled += 1;
        if self.handled == N {
            if let Some(done) = self.done.take() {
                let _ = done.send(self.handled);
            }
        }
    }
}

#[actix_rt::test]
async fn an_actor_receives_with_credit_that_follows_its_pace() {
    let container = container();
    let feeders = Feeders::default();
    let listener = container
        .listen("127.0.0.1:0", feeders.clone())
        .expect("listens");
    let url = format!("amqp://127.0.0.1:{}/feed", listener.port());
    let window = 20;
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let worst = Arc::new(AtomicUsize::new(0));
    let counter = Counter {
        sent: feeders.sent.clone(),
        handled: 0,
        window,
        worst_backlog: worst.clone(),
        done: Some(done_tx),
    }
    .start();
    let link = container
        .receive_into(
            &url,
            ReceiverOptions::new().credit_window(window as u32),
            counter.recipient(),
        )
        .await
        .expect("receiver opens");
    let handled = tokio::time::timeout(TIMEOUT, done_rx)
        .await
        .expect("all messages in time")
        .expect("the actor finished");
    assert_eq!(handled, N);
    assert!(worst.load(Ordering::SeqCst) <= window);
    assert!(worst.load(Ordering::SeqCst) >= 1);
    link.close().expect("closes");
    listener.stop();
    container.stop();
}

/// The facade from plain threads (no async runtime of their own): 8 threads open senders and receivers at
/// once while `run` is active on the test thread, send and receive, and the container then stops.
#[test]
fn the_facade_works_from_eight_plain_threads_while_the_container_runs() {
    let container = nucleon::Container::builder()
        .id("facade-threads")
        .threads(2)
        .auto_stop(false)
        .build();
    let handle = container.handle();
    let judged = handle.listen("127.0.0.1:0", Judges).expect("listens");
    let feeders = Feeders::default();
    let fed = handle
        .listen("127.0.0.1:0", feeders.clone())
        .expect("listens");
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let handle = handle.clone();
            let done = done_tx.clone();
            let send_url = format!("amqp://127.0.0.1:{}/judged", judged.port());
            let recv_url = format!("amqp://127.0.0.1:{}/feed", fed.port());
            std::thread::spawn(move || {
                futures::executor::block_on(async {
                    let sender = handle
                        .open_sender(&send_url, SenderOptions::default())
                        .await
                        .expect("sender opens");
                    let mut receiver = handle
                        .open_receiver(&recv_url, ReceiverOptions::default())
                        .await
                        .expect("receiver opens");
                    // Index 0 is accepted by the judge.
                    let outcome = sender
                        .send(Message::builder().body(0i64).build())
                        .await
                        .expect("an outcome");
                    assert_eq!(outcome, Outcome::Accepted, "thread {t}");
                    for _ in 0..100 {
                        receiver
                            .next()
                            .await
                            .expect("a message")
                            .accept()
                            .expect("accepts");
                    }
                    sender.close().expect("closes");
                    receiver.close().expect("closes");
                });
                let _ = done.send(t);
            })
        })
        .collect();
    let stopper = handle.clone();
    let checker = std::thread::spawn(move || {
        let finished: Vec<_> = (0..8)
            .map(|_| {
                done_rx
                    .recv_timeout(TIMEOUT)
                    .expect("every thread finishes")
            })
            .collect();
        stopper.stop();
        finished
    });
    container.run().expect("runs until stopped");
    let mut finished = checker.join().expect("checker");
    finished.sort();
    assert_eq!(finished, (0..8).collect::<Vec<_>>());
    for t in threads {
        t.join().expect("worker thread");
    }
}

#[actix_rt::test]
async fn dropping_a_receiver_handle_closes_its_connection_and_the_broker_gets_its_messages_back() {
    let container = container();
    let broker = nucleon::broker::Broker::new(nucleon::broker::BrokerOptions::default());
    let listener = broker
        .listen(&container, "127.0.0.1:0", nucleon::ListenOptions::default())
        .expect("listens");
    let url = format!("amqp://127.0.0.1:{}/dropped", listener.port());
    let sender = container
        .open_sender(&url, SenderOptions::default())
        .await
        .expect("sender opens");
    for i in 0..2i64 {
        let outcome = tokio::time::timeout(TIMEOUT, sender.send(Message::with_body(i)))
            .await
            .expect("an outcome in time")
            .expect("an outcome");
        assert_eq!(outcome, Outcome::Accepted);
    }
    let mut first = container
        .open_receiver(&url, ReceiverOptions::default())
        .await
        .expect("first receiver opens");
    // The broker gives both messages to the first consumer (it has credit for ten); it takes one, unsettled.
    let taken = tokio::time::timeout(TIMEOUT, first.next())
        .await
        .expect("a message in time")
        .expect("the stream goes on");
    drop(taken);
    // Without closing its connection, the broker would keep the second message for this consumer forever.
    drop(first);
    let mut second = container
        .open_receiver(&url, ReceiverOptions::default())
        .await
        .expect("second receiver opens");
    let bodies = tokio::time::timeout(TIMEOUT, async {
        let mut bodies = Vec::new();
        while bodies.len() < 2 {
            let r = second.next().await.expect("the stream goes on");
            bodies.push(r.message.body_value().and_then(Value::as_i64));
            r.accept().expect("accepts");
        }
        bodies
    })
    .await
    .expect("the second receiver gets both messages in time");
    assert_eq!(bodies, vec![Some(0), Some(1)]);
    sender.close().expect("closes");
    drop(second);
    listener.stop();
    container.stop();
}
