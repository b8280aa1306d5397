//! Criterion benchmarks of the broker's queue at depths from ten to a million messages: is the per-message
//! cost of the operations a consumer drives independent of how many messages wait behind?
//!
//! Run with `cargo bench -p nucleon --bench queue_depth`. The queue is filled before each timed run (not
//! timed), through `nucleon::broker::bench`, a hidden hook: the queue itself is private to the broker.
//!
//! * `queue_drain/DEPTH`: a consumer drains a queue of DEPTH messages, granted 10 credits at a time (Proton's
//!   default window); each message taken is dropped, as an accepted one leaves the broker. Throughput:
//!   messages drained per second.
//! * `queue_release/DEPTH`: the consumer takes the head message and releases it (it goes back to the head).
//!   Throughput: take + release pairs per second. `insert_in_order` is a binary search (O(log n)) and a
//!   `VecDeque::insert`, which moves the shorter side: nothing, at the head.
//! * `queue_requeue_batch/HELD`: at a depth of a million, the consumer takes HELD messages and they all go
//!   back at once, as when a consumer holding them is lost; each goes back behind those returned before it,
//!   so the i-th moves i entries: O(HELD) a message, O(HELD²) in all (whatever the depth, for HELD well
//!   under half of it). Throughput: messages given back (and taken) per second.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use nucleon::broker::bench;

const DEPTHS: [usize; 4] = [10, 1_000, 100_000, 1_000_000];

/// The credit a consumer grants at a time.
const CREDIT: u32 = 10;

/// Messages released (or given back) per iteration: each call fills a queue first (not timed, but it takes
/// time), so an iteration must do enough for criterion to run more than a few of them per fill.
const ROUNDS: u64 = 10_000;

fn bench_drain(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue_drain");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for depth in DEPTHS {
        group.throughput(Throughput::Elements(depth as u64));
        group.bench_with_input(BenchmarkId::from_parameter(depth), &depth, |b, &depth| {
            // One iteration: fill (not timed), then drain the whole queue.
            b.iter_custom(|iters| (0..iters).map(|_| bench::drain(depth, CREDIT)).sum())
        });
    }
    group.finish();
}

fn bench_release(c: &mut Criterion) {
    let mut group = c.benchmark_group("queue_release");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    group.throughput(Throughput::Elements(ROUNDS));
    for depth in DEPTHS {
        group.bench_with_input(BenchmarkId::from_parameter(depth), &depth, |b, &depth| {
            // One fill per call; one iteration: ROUNDS times, take the head message and release it.
            b.iter_custom(|iters| bench::take_and_requeue(depth, 1, iters * ROUNDS))
        });
    }
    group.finish();
}

fn bench_requeue_batch(c: &mut Criterion) {
    const DEPTH: usize = 1_000_000;
    let mut group = c.benchmark_group("queue_requeue_batch");
    group.sampling_mode(SamplingMode::Flat).sample_size(10);
    for held in [10u32, 1_000, 10_000] {
        // Rounds per iteration: enough for the fill (not timed) not to dwarf what is timed.
        let rounds = (ROUNDS / u64::from(held)).max(1);
        group.throughput(Throughput::Elements(rounds * u64::from(held)));
        group.bench_with_input(BenchmarkId::from_parameter(held), &held, |b, &held| {
            b.iter_custom(|iters| bench::take_and_requeue(DEPTH, held, iters * rounds))
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_drain(&mut c);
    bench_release(&mut c);
    bench_requeue_batch(&mut c);
    c.final_summary();
}
