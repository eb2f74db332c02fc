//! Sized rayon pools, built once per size and reused, so a kernel's `threads` parameter means
//! exactly that many workers and never oversubscribes the machine.

use rayon::ThreadPool;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// The number of hardware threads this process may use, asked once per process (the
/// standard library reads cgroup files on every call, and configs ask for it on every
/// default: the tuner builds tens of thousands of candidate configs).
pub fn available() -> usize {
    static AVAILABLE: OnceLock<usize> = OnceLock::new();
    *AVAILABLE.get_or_init(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
}

/// A shared pool with exactly `threads` workers (at least one).
pub fn pool(threads: usize) -> Arc<ThreadPool> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    let threads = threads.max(1);
    let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
    let mut pools = pools.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    pools
        .entry(threads)
        .or_insert_with(|| {
            Arc::new(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .thread_name(move |i| format!("dyno-kernel-{threads}-{i}"))
                    .build()
                    .expect("building a rayon pool (out of threads?)"),
            )
        })
        .clone()
}

/// Runs `f` on a pool of `threads` workers; with one thread, runs it inline on this thread.
pub fn run<R: Send>(threads: usize, f: impl FnOnce() -> R + Send) -> R {
    if threads <= 1 { f() } else { pool(threads).install(f) }
}
