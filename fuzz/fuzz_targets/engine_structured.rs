//! Fuzzes a server engine with sequences of performatives; `nucleon_protocol::fuzzing::engine_structured`
//! documents the input format and what is checked, `nucleon_protocol::fuzzing::structured` the ops.
//!
//! On top of the engine checks, this target bounds memory with a counting global allocator:
//!
//! * while one input runs, the heap may grow by at most `Script::memory_bound()`: 64 bytes per byte fed to the
//!   engine plus 64 MiB (`structured::MEMORY_PER_BYTE`, `structured::MEMORY_BUDGET`);
//! * once the engine and everything made from the input are dropped, the heap is back where it was: no leak.
//!
//! The memory bound is checked by the allocator itself, at the allocation that crosses it: the run stops there
//! with a message on stderr and `abort`, which libFuzzer reports as a crash and saves, before the engine can take
//! gigabytes and long enough for `-timeout` to fire first. Set `NUCLEON_FUZZ_PRINT=1` when replaying an input to
//! see its setup and ops.
//!
//! Time is bounded by libFuzzer's `-timeout=` (see `fuzz/README.md`), not here.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use nucleon_protocol::fuzzing::structured::Script;

/// The system allocator, counting the bytes currently allocated and the most since the last reset.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
/// While an input runs: the heap size at its start plus its bound; otherwise `usize::MAX`.
static LIMIT: AtomicUsize = AtomicUsize::new(usize::MAX);
/// While an input runs: the heap size at its start, the bound, and the bytes fed (for the message).
static START: AtomicUsize = AtomicUsize::new(0);
static BOUND: AtomicUsize = AtomicUsize::new(0);
static FED: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
    if now > LIMIT.load(Relaxed) {
        over_bound(now);
    }
}

/// Reports the allocation that crossed the bound and aborts; allocates nothing (it runs inside the allocator).
#[cold]
fn over_bound(now: usize) -> ! {
    LIMIT.store(usize::MAX, Relaxed);
    let grown = now - START.load(Relaxed);
    let mut buf = [0u8; 400];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(
        cursor,
        "\nmemory bound exceeded: the heap grew by {grown} bytes ({} MiB) while the engine ran, over the bound of \
         {} bytes (64 * {} bytes fed + 64 MiB); replay with NUCLEON_FUZZ_PRINT=1 to see the ops\n",
        grown >> 20,
        BOUND.load(Relaxed),
        FED.load(Relaxed),
    );
    let len = cursor.position() as usize;
    let _ = std::io::stderr().write_all(&buf[..len]);
    std::process::abort();
}

fn shrank(by: usize) {
    CURRENT.fetch_sub(by, Relaxed);
}

// SAFETY: every method forwards to `System` with the same arguments; the counting has no effect on the memory.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Runs one input, asserting the memory bounds.
fn run(data: &[u8]) {
    let before = CURRENT.load(Relaxed);
    let script = Script::from_fuzz_input(data);
    let bound = script.memory_bound();
    if print_ops() {
        eprintln!(
            "fuzz input {} bytes, {} bytes fed, bound {bound} bytes; setup {:?}; ops {:?}",
            data.len(),
            script.stream_len(),
            script.setup,
            script.ops
        );
    }
    let start = CURRENT.load(Relaxed);
    PEAK.store(start, Relaxed);
    START.store(start, Relaxed);
    BOUND.store(bound, Relaxed);
    FED.store(script.stream_len(), Relaxed);
    LIMIT.store(start.saturating_add(bound), Relaxed);
    let driver = script.run();
    LIMIT.store(usize::MAX, Relaxed);
    drop(driver);
    // The allocator has already aborted if the bound was crossed; this covers growth it did not count.
    let peak = PEAK.load(Relaxed) - start;
    if peak > bound {
        let mut ops = format!("{:?}", script.ops);
        if ops.len() > 2000 {
            let mut cut = 2000;
            while !ops.is_char_boundary(cut) {
                cut -= 1;
            }
            ops.truncate(cut);
            ops.push_str("...");
        }
        panic!(
            "memory bound exceeded: the heap grew by {peak} bytes ({} MiB) while the engine ran, over the bound of \
             {bound} bytes (64 * {} bytes fed + 64 MiB; fuzz input {} bytes, {} ops); setup {:?}, ops {ops}",
            peak >> 20,
            script.stream_len(),
            data.len(),
            script.ops.len(),
            script.setup,
        );
    }
    drop(script);
    let after = CURRENT.load(Relaxed);
    assert!(
        after <= before,
        "leak: {} bytes still allocated after the engine and the script were dropped (fuzz input {} bytes)",
        after - before,
        data.len()
    );
}

/// Whether `NUCLEON_FUZZ_PRINT` is set (read once, during the warm-up).
fn print_ops() -> bool {
    static PRINT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *PRINT.get_or_init(|| std::env::var_os("NUCLEON_FUZZ_PRINT").is_some())
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // Whatever std sets up once and keeps (stderr, the environment lookup) is set up by a small fixed input first,
    // so that the leak check of the first real input compares like with like.
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| {
        print_ops();
        nucleon_protocol::fuzzing::engine_structured(&[0; 64]);
    });
    run(data);
});
