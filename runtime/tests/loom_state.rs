//! Model checks (loom) of the runtime's two small shared-state types, compiled from their own source files
//! against loom's atomics and mutex (the `sync` module below stands in for `runtime/src/sync.rs`):
//!
//! * `Signal` (wake and `WorkReady`): whatever two raisers and the consumer interleave, and whatever the
//!   memory model lets each thread see, the consumer's last pass sees every raiser's data, though raises
//!   that find the flag set send no message. With `clear` as a plain store this fails (a lost wake).
//! * `Gate` (connect/listen against stop and auto-stop): a connection admitted by the gate is always
//!   started by the supervisor before the supervisor can finish, and nothing is admitted after it
//!   finished or after `close`.

#![allow(dead_code)]

mod sync {
    pub(crate) use loom::sync::atomic::AtomicBool;
    pub(crate) use loom::sync::{Mutex, MutexGuard};
}

#[path = "../src/signal.rs"]
mod signal;

#[path = "../src/gate.rs"]
mod gate;

use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::sync::{Arc, Mutex};
use loom::thread;

use gate::Gate;
use signal::Signal;

/// The consumer's pass for one message, if one is in the mailbox: clear, then look at the data.
fn consume(signal: &Signal, mailbox: &Mutex<usize>, data: &AtomicUsize) -> Option<usize> {
    {
        let mut m = mailbox.lock().unwrap();
        if *m == 0 {
            return None;
        }
        *m -= 1;
    }
    signal.clear();
    Some(data.load(Ordering::Relaxed))
}

#[test]
fn a_raise_that_sends_nothing_is_seen_by_the_message_on_its_way() {
    loom::model(|| {
        let signal = Arc::new(Signal::default());
        // What the raisers leave for the consumer, written with no ordering of its own.
        let data = Arc::new(AtomicUsize::new(0));
        // The actor's mailbox: the count of messages sent (a channel synchronizes its two ends).
        let mailbox = Arc::new(Mutex::new(0usize));
        let raisers: Vec<_> = (0..2)
            .map(|_| {
                let (signal, data, mailbox) = (signal.clone(), data.clone(), mailbox.clone());
                thread::spawn(move || {
                    data.fetch_add(1, Ordering::Relaxed);
                    if signal.raise() {
                        *mailbox.lock().unwrap() += 1;
                    }
                })
            })
            .collect();
        // Two passes of the consumer while the raisers run, then whatever messages are left.
        let mut last_seen = None;
        for _ in 0..2 {
            if let Some(seen) = consume(&signal, &mailbox, &data) {
                last_seen = Some(seen);
            }
        }
        for r in raisers {
            r.join().unwrap();
        }
        while let Some(seen) = consume(&signal, &mailbox, &data) {
            last_seen = Some(seen);
        }
        assert_eq!(
            last_seen,
            Some(2),
            "the last callback saw every raiser's data"
        );
    });
}

#[test]
fn an_admitted_connection_is_started_before_the_supervisor_finishes() {
    loom::model(|| {
        let gate = Arc::new(Gate::default());
        // The supervisor's mailbox of admitted connections.
        let mailbox = Arc::new(Mutex::new(0usize));
        let admitted = Arc::new(AtomicUsize::new(0));
        let connect = {
            let (gate, mailbox, admitted) = (gate.clone(), mailbox.clone(), admitted.clone());
            thread::spawn(move || {
                if gate.enter() {
                    admitted.fetch_add(1, Ordering::Relaxed);
                    *mailbox.lock().unwrap() += 1;
                }
            })
        };
        let stop = {
            let gate = gate.clone();
            thread::spawn(move || gate.close())
        };
        // The supervisor's turn: start what has arrived, then finish (as auto_stop would) if the gate lets
        // it. Once while the others run, then again after them until it finishes.
        let mut started = 0;
        let turn = |started: &mut usize| {
            let arrived = std::mem::take(&mut *mailbox.lock().unwrap());
            for _ in 0..arrived {
                gate.arrived();
                *started += 1;
            }
            gate.try_finish()
        };
        let finished_early = turn(&mut started);
        let started_at_finish = started;
        connect.join().unwrap();
        stop.join().unwrap();
        if finished_early {
            // Nothing got in after the finish, and all that got in before was started.
            assert!(!gate.enter());
            assert_eq!(*mailbox.lock().unwrap(), 0, "admitted after the finish");
            assert_eq!(started_at_finish, admitted.load(Ordering::Relaxed));
        } else {
            assert!(turn(&mut started), "nothing is left on its way");
            assert_eq!(started, admitted.load(Ordering::Relaxed));
        }
        assert!(gate.is_closed());
    });
}
