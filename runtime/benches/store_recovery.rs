//! How long the durable broker's message store takes to recover a million small messages: the time a
//! broker restarted with a backlog spends reading its journal before it serves (it then decodes the
//! messages too, which this does not count).
//!
//! Run with `cargo bench -p nucleon --features broker --bench store_recovery` (add `-- MESSAGES SIZE` to
//! change the default of 1,000,000 messages of 60 bytes). It writes through `nucleon::broker::bench`, a
//! hidden hook (the store is private to the broker), into a fresh directory under the system temp dir,
//! deleted at the end: put TMPDIR on the filesystem of the broker's data directory to measure that one.

use std::time::Duration;

use nucleon::broker::bench;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| !a.starts_with("--"));
    let messages: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(60);
    let dir = std::env::temp_dir().join(format!("nucleon-store-recovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (write, recovery) = bench::store_recovery(&dir, messages, size);
    let bytes = dir_size(&dir);
    std::fs::remove_dir_all(&dir).expect("remove the bench directory");
    let rate = |d: Duration| messages as f64 / d.as_secs_f64();
    println!(
        "store_recovery: {messages} messages of {size} bytes, {:.1} MiB of segments",
        bytes as f64 / (1 << 20) as f64
    );
    println!(
        "  write (batch sync, one producer, until the last is durable): {write:?} ({:.0} msgs/s)",
        rate(write)
    );
    println!(
        "  recovery (Store::open): {recovery:?} ({:.0} msgs/s)",
        rate(recovery)
    );
}

/// The bytes of the files in `dir`.
fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
