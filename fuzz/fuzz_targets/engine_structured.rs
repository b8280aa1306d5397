//! Fuzzes a server engine with sequences of performatives; `nucleon_protocol::fuzzing::engine_structured`
//! documents the input format and what is checked, `nucleon_protocol::fuzzing::structured` the ops.
//!
//! On top of the engine checks, this target bounds memory with a counting global allocator:
//!
//! * while one input runs, the heap may grow by at most `Script::memory_bound()`: 64 bytes per byte fed to the
//!   engine plus 64 MiB (`structured::MEMORY_PER_BYTE`, `structured::MEMORY_BUDGET`);
//! * once the engine and everything made from the input are dropped, the heap is back where it was: no leak.
//!
//! Time is bounded by libFuzzer's `-timeout=` (see `fuzz/README.md`), not here.
#![no_main]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use nucleon_protocol::fuzzing::structured::Script;

/// The system allocator, counting the bytes currently allocated and the most since the last reset.
struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Relaxed) + by;
    PEAK.fetch_max(now, Relaxed);
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
    let start = CURRENT.load(Relaxed);
    PEAK.store(start, Relaxed);
    drop(script.run());
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

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The first input also initialises whatever std and the engine set up once (and keep): run it twice, so the
    // leak check compares like with like.
    static WARM: std::sync::Once = std::sync::Once::new();
    WARM.call_once(|| nucleon_protocol::fuzzing::engine_structured(data));
    run(data);
});
