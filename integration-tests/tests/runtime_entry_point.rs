//! The stand-alone container's entry points outside actix (#17): from plain tokio, as `#[tokio::main]` and
//! `#[tokio::test]` run code (a `tokio::runtime::Runtime` the test builds, both flavours, `block_on` an async
//! fn), and from a plain thread with no runtime at all. Each builds the container, serves the in-process
//! broker on it, connects through the async facade, sends and receives, stops it and sees it end.
//! `ContainerBuilder::build` used to `block_on` a runtime of its own, which panics inside a runtime.

use std::time::Duration;

use nucleon::broker::{Broker, BrokerOptions};
use nucleon::{
    Container, ContainerHandle, Error, ListenOptions, Message, Outcome, ReceiverOptions,
    SenderOptions, Value,
};

const TIMEOUT: Duration = Duration::from_secs(20);

/// The in-process broker on `container`, on a free port: its base URL (the broker must stay alive).
fn serve(container: &ContainerHandle) -> (Broker, String) {
    let broker = Broker::new(BrokerOptions::default());
    let listener = broker
        .listen(container, "127.0.0.1:0", ListenOptions::default())
        .expect("the broker listens");
    (broker, format!("amqp://127.0.0.1:{}", listener.port()))
}

/// One connection, a sender and a receiver on `queue`: sends `text` and gets it back, accepted both ways.
/// Uses no timer, so that it also runs under `futures::executor::block_on`.
async fn round_trip(container: &ContainerHandle, base: &str, queue: &str, text: &str) {
    let connection = container
        .connect_async(base, Default::default())
        .await
        .expect("connects");
    let sender = connection
        .open_sender(queue, SenderOptions::default())
        .await
        .expect("sender opens");
    let mut receiver = connection
        .open_receiver(queue, ReceiverOptions::default())
        .await
        .expect("receiver opens");
    let outcome = sender
        .send(Message::with_body(text))
        .await
        .expect("the broker settles the message");
    assert!(
        matches!(outcome, Outcome::Accepted),
        "accepted: {outcome:?}"
    );
    let received = receiver.recv().await.expect("a message arrives");
    assert_eq!(received.message.body_value(), Some(&Value::from(text)));
    received.accept().expect("accepts");
    connection.close().expect("closes");
}

/// What a `#[tokio::main] async fn main` does: spawn the container, use it, stop it, await its end.
async fn tokio_main_with_spawn() -> Result<(), Error> {
    let container = Container::builder().threads(2).auto_stop(false).spawn()?;
    let (_broker, base) = serve(&container.handle());
    round_trip(&container.handle(), &base, "entry-spawn", "from tokio").await;
    container.handle().stop();
    tokio::time::timeout(TIMEOUT, container.wait())
        .await
        .expect("the container ends in time")
}

/// The same with `build()`, the call that panicked inside a runtime: it must not, and `run` must return
/// once the container stopped.
async fn tokio_main_with_build() -> Result<(), Error> {
    let container = Container::builder().threads(2).auto_stop(false).build();
    let handle = container.handle();
    let (_broker, base) = serve(&handle);
    round_trip(&handle, &base, "entry-build", "built in tokio").await;
    handle.stop();
    container.run()
}

fn runtimes() -> [(&'static str, tokio::runtime::Runtime); 2] {
    [
        (
            "multi-thread (#[tokio::main])",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("a runtime"),
        ),
        (
            "current-thread (#[tokio::test])",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
        ),
    ]
}

#[test]
fn spawn_works_under_plain_tokio_runtimes() {
    for (flavour, runtime) in runtimes() {
        runtime
            .block_on(tokio_main_with_spawn())
            .unwrap_or_else(|e| panic!("{flavour}: {e}"));
    }
}

#[test]
fn build_inside_a_tokio_runtime_does_not_panic_and_runs() {
    for (flavour, runtime) in runtimes() {
        runtime
            .block_on(tokio_main_with_build())
            .unwrap_or_else(|e| panic!("{flavour}: {e}"));
    }
}

#[test]
fn spawn_and_build_work_from_plain_threads_without_a_runtime() {
    // spawn: the container on its own threads; the facade's futures driven by a plain executor.
    let worker = std::thread::spawn(|| {
        let container = Container::builder()
            .threads(1)
            .auto_stop(false)
            .spawn()
            .expect("spawns");
        let (_broker, base) = serve(&container.handle());
        futures::executor::block_on(round_trip(
            &container.handle(),
            &base,
            "entry-thread",
            "from a plain thread",
        ));
        container.handle().stop();
        container.join()
    });
    worker
        .join()
        .expect("no panic")
        .expect("the container ends cleanly");

    // build: `run` on this plain thread (as from `fn main`), used from another thread meanwhile, which
    // stops it when done (or, should it hang, after TIMEOUT, failing the test).
    let container = Container::builder().threads(1).build();
    let handle = container.handle();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let user = std::thread::spawn(move || {
        let (_broker, base) = serve(&handle);
        let watchdog = handle.clone();
        std::thread::spawn(move || {
            if done_rx.recv_timeout(TIMEOUT).is_err() {
                watchdog.stop();
            }
        });
        futures::executor::block_on(round_trip(&handle, &base, "entry-main", "from fn main"));
        let _ = done_tx.send(());
        handle.stop();
    });
    container.run().expect("runs cleanly");
    user.join()
        .expect("the round trip from another thread worked in time");
}
