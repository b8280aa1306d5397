//! nucleon's in-process broker (`nucleon::broker`) with python-qpid-proton clients (issue #5, "Proof").
//!
//! Each test starts a [`Broker`] on 127.0.0.1:0 in a container that runs on a thread of its own, then runs
//! `integration-tests/proton/broker_send.py` and `broker_recv.py` with Debian's `/usr/bin/python3` (Proton
//! 0.37) against it. The sender sends the type-rich `interop.message(i)` (the message that
//! `engine_interop.rs` cross-checks with our codec), with 5 MiB data messages at some indexes
//! (`broker_plan.py`); the receiver checks every message it gets against the same plan, strictly typed
//! (`corpus.message_diffs`: every header and properties field, annotations, application properties and body,
//! type and value), in order. Both scripts exit 0 only for a clean, complete run, and the sender only if
//! the broker accepted every message.
//!
//! Nothing is skipped: without Proton's Python binding the tests fail and say to run
//! `scripts/install-test-deps.sh`. A failing script fails the test with everything it printed.

use nucleon_integration_tests::peers::proton::{python_script, Finished, ProtonProcess};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nucleon::broker::{Broker, BrokerOptions};
use nucleon::{Container, ContainerHandle, ListenOptions};

/// The Python scripts give up after this many seconds (their `--timeout`)...
const SCRIPT_TIMEOUT_S: u64 = 30;
/// ...and are killed if they are still running this long after the test starts waiting for them.
const KILL_AFTER: Duration = Duration::from_secs(SCRIPT_TIMEOUT_S + 15);

/// The size of the large messages: 5 MiB.
const LARGE: usize = 5 * 1024 * 1024;

// ---------------------------------------------------------------------------------------------------------------
// The broker, in-process
// ---------------------------------------------------------------------------------------------------------------

/// Our broker on 127.0.0.1:0, in a container running on its own thread; stopped (and joined) when dropped.
struct InProcessBroker {
    broker: Broker,
    container: ContainerHandle,
    port: u16,
    /// Signalled by the container thread when `run` returns.
    stopped: mpsc::Receiver<String>,
    thread: Option<JoinHandle<()>>,
}

impl InProcessBroker {
    fn start() -> InProcessBroker {
        let (ready_tx, ready) = mpsc::channel();
        let (stopped_tx, stopped) = mpsc::channel();
        let thread = thread::spawn(move || {
            let container = Container::builder()
                .id("broker-interop")
                .threads(2)
                .auto_stop(false)
                .build();
            let handle = container.handle();
            let broker = Broker::new(BrokerOptions::default());
            let listening = broker
                .listen(&handle, "127.0.0.1:0", ListenOptions::default())
                .map(|l| (broker, handle, l.port()))
                .map_err(|e| format!("the broker cannot listen: {e}"));
            let failed = listening.is_err();
            let _ = ready_tx.send(listening);
            let result = if failed {
                "not started".to_owned()
            } else {
                match container.run() {
                    Ok(()) => "stopped".to_owned(),
                    Err(e) => format!("container run failed: {e}"),
                }
            };
            let _ = stopped_tx.send(result);
        });
        let (broker, container, port) = match ready.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(started)) => started,
            Ok(Err(e)) => panic!("{e}"),
            Err(e) => panic!("the broker's container thread did not start: {e}"),
        };
        InProcessBroker {
            broker,
            container,
            port,
            stopped,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("amqp://127.0.0.1:{}", self.port)
    }

    /// Messages waiting in the queue at `address` (0 when there is no such queue).
    fn depth(&self, address: &str) -> usize {
        self.broker.queue_depth(address).unwrap_or(0)
    }
}

impl Drop for InProcessBroker {
    fn drop(&mut self) {
        self.container.stop();
        match self.stopped.recv_timeout(Duration::from_secs(10)) {
            Ok(_) => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
            }
            // Do not hang the test run on a container that will not stop; leave its thread behind.
            Err(_) if thread::panicking() => {}
            Err(e) => panic!("the broker's container did not stop within 10 s: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// The Python clients
// ---------------------------------------------------------------------------------------------------------------

/// A running Python client, its output collected (see [`ProtonProcess`]).
struct Script(ProtonProcess);

impl Script {
    /// Runs `integration-tests/proton/SCRIPT URL ADDRESS COUNT ARGS... --timeout N`.
    fn start(script: &str, url: &str, address: &str, count: usize, args: &[&str]) -> Script {
        let mut all = vec![url.to_owned(), address.to_owned(), count.to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        all.extend(["--timeout".to_owned(), SCRIPT_TIMEOUT_S.to_string()]);
        Script(ProtonProcess::spawn(python_script(script, &all)))
    }

    /// Waits for the line `want`; fails the test (showing the output) if the script ends or is too slow.
    fn wait_for_line(&mut self, want: &str) {
        if let Err(e) = self.0.wait_line(KILL_AFTER, |line| line == want) {
            panic!("no line {want:?}: {e}");
        }
    }

    /// Waits for the script to exit (killing it if it is still running after [`KILL_AFTER`]) and returns what
    /// it printed.
    fn finish(self) -> Finished {
        self.0.finish(KILL_AFTER)
    }
}

/// `--large 5242880 --large-at I ...`: the plan's large messages.
fn large_args(at: &[usize]) -> Vec<String> {
    let mut args = vec!["--large".to_owned(), LARGE.to_string()];
    for i in at {
        args.extend(["--large-at".to_owned(), i.to_string()]);
    }
    args
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

/// The sender's output must show every message accepted by the broker, in index order.
fn assert_all_accepted(out: &Finished, count: usize) {
    out.assert_success();
    let outcomes: Vec<&str> = out
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("outcome "))
        .collect();
    let expected: Vec<String> = (0..count)
        .map(|i| format!("outcome {i} ACCEPTED"))
        .collect();
    assert_eq!(outcomes, expected, "outcomes the Python sender saw:\n{out}");
    assert!(
        out.lines().contains(&format!("sent {count}").as_str()),
        "{out}"
    );
}

/// The receiver's output must show every message received in order and matching the plan.
fn assert_all_received(out: &Finished, count: usize, large_at: &[usize]) {
    out.assert_success();
    let checks: Vec<&str> = out
        .lines()
        .into_iter()
        .filter(|l| l.starts_with("ok ") || l.starts_with("MISMATCH "))
        .collect();
    let expected: Vec<String> = (0..count)
        .map(|i| {
            if large_at.contains(&i) {
                format!("ok {i} large")
            } else {
                format!("ok {i}")
            }
        })
        .collect();
    assert_eq!(checks, expected, "what the Python receiver checked:\n{out}");
    assert!(
        out.lines().contains(&format!("received {count}").as_str()),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------------------------

#[test]
fn python_messages_queue_in_our_broker_and_reach_a_python_receiver_intact() {
    const N: usize = 40;
    // Two 5 MiB messages between the rich ones: in the middle and last.
    let large_at = [17, N - 1];
    let broker = InProcessBroker::start();
    let url = broker.url();
    let large = large_args(&large_at);

    // Python's default max-frame-size is large, so each 5 MiB message reaches us in few frames.
    let out = Script::start("broker_send.py", &url, "rich", N, &strs(&large)).finish();
    assert_all_accepted(&out, N);
    // The broker accepts a message only once it is enqueued: all of them wait in the queue now.
    assert_eq!(broker.depth("rich"), N, "messages queued after the sender");

    // A receiver with 16 KiB frames and a window of 5: the broker splits each 5 MiB message into 320-odd
    // frames and respects the credit.
    let mut args = strs(&large);
    args.extend(["--credit", "5", "--max-frame", "16384"]);
    let out = Script::start("broker_recv.py", &url, "rich", N, &args).finish();
    assert_all_received(&out, N, &large_at);
    assert_eq!(broker.depth("rich"), 0, "messages left in the queue");
    assert_eq!(broker.broker.rejected(), 0, "messages rejected");
}

#[test]
fn a_waiting_python_receiver_gets_messages_as_a_python_sender_sends_them() {
    const N: usize = 25;
    let large_at = [0, 12];
    let broker = InProcessBroker::start();
    let url = broker.url();
    let large = large_args(&large_at);

    // The receiver attaches first (its queue is created on demand, empty) and waits with credit.
    let mut recv_args = strs(&large);
    recv_args.extend(["--credit", "10"]);
    let mut receiver = Script::start("broker_recv.py", &url, "live", N, &recv_args);
    receiver.wait_for_line("attaching");

    // This sender's frames are 16 KiB, so the broker reassembles each 5 MiB message from 320-odd transfers.
    let mut send_args = strs(&large);
    send_args.extend(["--max-frame", "16384"]);
    let sent = Script::start("broker_send.py", &url, "live", N, &send_args).finish();
    let received = receiver.finish();
    assert_all_accepted(&sent, N);
    assert_all_received(&received, N, &large_at);
    assert_eq!(broker.depth("live"), 0, "messages left in the queue");
}

#[test]
fn the_python_receiver_reports_a_message_that_differs_from_the_plan() {
    // A guard against a receiver that passes whatever it gets: messages sent by one plan and checked
    // against another (message 2 large instead of rich) must fail the receiver.
    const N: usize = 3;
    let broker = InProcessBroker::start();
    let url = broker.url();
    let out = Script::start("broker_send.py", &url, "guard", N, &[]).finish();
    assert_all_accepted(&out, N);
    let large = large_args(&[2]);
    let out = Script::start("broker_recv.py", &url, "guard", N, &strs(&large)).finish();
    assert!(
        out.status.is_some_and(|s| s.code() == Some(1)),
        "the receiver should exit 1: {out}"
    );
    let lines = out.lines();
    assert!(lines.contains(&"ok 0") && lines.contains(&"ok 1"), "{out}");
    assert!(
        lines.iter().any(|l| l.starts_with("MISMATCH 2: ")),
        "the receiver should report message 2:\n{out}"
    );
}
