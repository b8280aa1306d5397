//! Shared helpers for the runtime threading tests: a watchdog that keeps a test from hanging, a barrier
//! that gives up after a timeout, a detector of overlapping callbacks, and a way to run a second container
//! on a thread of its own.
//!
//! Each test binary uses only some of these.
#![allow(dead_code)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use nucleon::{ContainerBuilder, ContainerHandle, Error};

/// Stops the containers if a test runs longer than its limit, so that `run` returns and the test fails
/// instead of hanging. If they still have not stopped 30 s later, the process is aborted.
pub struct Watchdog {
    disarm: Option<mpsc::Sender<()>>,
    fired: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Arms the watchdog over `containers` for `limit`.
    pub fn new(containers: Vec<ContainerHandle>, limit: Duration) -> Watchdog {
        let (tx, rx) = mpsc::channel::<()>();
        let fired = Arc::new(AtomicBool::new(false));
        let f = fired.clone();
        let thread = thread::spawn(move || {
            if rx.recv_timeout(limit) != Err(mpsc::RecvTimeoutError::Timeout) {
                return;
            }
            f.store(true, Ordering::SeqCst);
            eprintln!("watchdog: the test ran longer than {limit:?}; stopping its containers");
            for c in &containers {
                c.stop();
            }
            if rx.recv_timeout(Duration::from_secs(30)) == Err(mpsc::RecvTimeoutError::Timeout) {
                eprintln!("watchdog: the containers did not stop within 30 s of stop(); aborting");
                std::process::abort();
            }
        });
        Watchdog {
            disarm: Some(tx),
            fired,
            thread: Some(thread),
        }
    }

    /// Disarms the watchdog; true if it had fired.
    pub fn disarm(mut self) -> bool {
        self.finish();
        self.fired.load(Ordering::SeqCst)
    }

    fn finish(&mut self) {
        self.disarm.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.finish();
    }
}

/// A barrier for `n` parties that gives up after a timeout, so a test fails instead of hanging.
pub struct TimedBarrier {
    n: usize,
    arrived: Mutex<usize>,
    all_here: Condvar,
}

impl TimedBarrier {
    /// A barrier for `n` parties.
    pub fn new(n: usize) -> TimedBarrier {
        TimedBarrier {
            n,
            arrived: Mutex::new(0),
            all_here: Condvar::new(),
        }
    }

    /// Arrives and waits for the others; true if all `n` arrived within `timeout`.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut arrived = self.arrived.lock().unwrap();
        *arrived += 1;
        if *arrived >= self.n {
            self.all_here.notify_all();
            return true;
        }
        while *arrived < self.n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            arrived = self.all_here.wait_timeout(arrived, left).unwrap().0;
        }
        true
    }
}

/// Detects overlapping callbacks of one connection. Every callback and work item calls
/// [`Overlap::enter`] and holds the returned guard until it returns: a `compare_exchange` on a busy flag
/// that fails only if another callback of the same connection is running at that moment. It also checks
/// that all callbacks of the connection run on one thread.
#[derive(Debug, Default)]
pub struct Overlap {
    busy: AtomicBool,
    violations: AtomicUsize,
    entries: AtomicUsize,
    thread: Mutex<Option<ThreadId>>,
    other_threads: AtomicUsize,
}

impl Overlap {
    /// Marks a callback as running until the guard is dropped.
    pub fn enter(self: &Arc<Self>) -> InCallback {
        if self
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        let n = self.entries.fetch_add(1, Ordering::Relaxed);
        let me = thread::current().id();
        let mut t = self.thread.lock().unwrap();
        match *t {
            None => *t = Some(me),
            Some(first) if first != me => {
                self.other_threads.fetch_add(1, Ordering::SeqCst);
            }
            Some(_) => {}
        }
        drop(t);
        // Widen the window in which an overlapping callback would be caught.
        if n.is_multiple_of(4) {
            thread::yield_now();
        }
        InCallback(self.clone())
    }

    /// Callbacks that started while another callback of the same connection was running.
    pub fn violations(&self) -> usize {
        self.violations.load(Ordering::SeqCst)
    }

    /// Callbacks and work items that ran.
    pub fn entries(&self) -> usize {
        self.entries.load(Ordering::SeqCst)
    }

    /// Callbacks that ran on another thread than the connection's first callback.
    pub fn other_threads(&self) -> usize {
        self.other_threads.load(Ordering::SeqCst)
    }
}

/// Held for the duration of one callback; see [`Overlap::enter`].
pub struct InCallback(Arc<Overlap>);

impl Drop for InCallback {
    fn drop(&mut self) {
        self.0.busy.store(false, Ordering::Release);
    }
}

/// A container running on a thread of its own. Returns its handle and a receiver that gets `run`'s
/// result when it returns.
pub fn spawn_container(
    builder: ContainerBuilder,
) -> (
    ContainerHandle,
    mpsc::Receiver<Result<(), Error>>,
    JoinHandle<()>,
) {
    let (handle_tx, handle_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let thread = thread::spawn(move || {
        let container = builder.build();
        handle_tx.send(container.handle()).unwrap();
        let _ = done_tx.send(container.run());
    });
    let handle = handle_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the container thread builds its container");
    (handle, done_rx, thread)
}

/// Receives from `rx` within `timeout`, or panics with `what`.
pub fn recv<T>(rx: &mpsc::Receiver<T>, timeout: Duration, what: &str) -> T {
    match rx.recv_timeout(timeout) {
        Ok(v) => v,
        Err(e) => panic!("{what}: {e:?} after {timeout:?}"),
    }
}

/// Stops the containers when dropped during a panic, so that a failing helper thread makes `run` return
/// (and the test fail) instead of leaving the containers running.
pub struct StopOnPanic(pub Vec<ContainerHandle>);

impl Drop for StopOnPanic {
    fn drop(&mut self) {
        if thread::panicking() {
            for c in &self.0 {
                c.stop();
            }
        }
    }
}
