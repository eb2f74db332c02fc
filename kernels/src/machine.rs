//! This machine's limits: identity, measured FMA peak and memory bandwidth.
//!
//! The numbers here are the denominators of every "fraction of peak" that `dyno kernels bench`
//! reports, so they are *measured*, not taken from a datasheet:
//! - [`fma_peak_gflops`] runs a register-only loop of independent FMA chains (enough chains to
//!   cover FMA latency × throughput) on every thread at once, best of several repeats;
//! - [`memory_bandwidth`] copies and sums buffers far larger than any last-level cache.
//!
//! Each measurement takes a short time budget and returns the number together with how it was
//! measured ([`Measurement`]).

use crate::isa::Isa;
use serde::{Deserialize, Serialize};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// What identifies a machine for cached kernel timings: CPU model, usable ISA, flags, cores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineId {
    /// The CPU model string (`model name` in /proc/cpuinfo, else the CPUID brand string).
    pub cpu_model: String,
    /// The widest ISA kernels may use here (respects `DYNO_MAX_ISA`).
    pub isa: Isa,
    /// Kernel-relevant CPU flags that are present (for example `avx2`, `fma`, `avx512f`).
    pub flags: Vec<String>,
    /// Hardware threads this process may use.
    pub cores: usize,
}

impl MachineId {
    /// Detects this machine.
    pub fn detect() -> Self {
        Self {
            cpu_model: cpu_model(),
            isa: Isa::detect(),
            flags: cpu_flags(),
            cores: crate::threads::available(),
        }
    }

    /// A stable key for caches: `model|isa|cores`, with whitespace collapsed.
    ///
    /// The ISA is the capped one, so timings taken under `DYNO_MAX_ISA=avx2` on an AVX-512
    /// machine never stand in for the full machine (and vice versa).
    pub fn key(&self) -> String {
        let model = self.cpu_model.split_whitespace().collect::<Vec<_>>().join(" ");
        format!("{model}|{}|{}", self.isa, self.cores)
    }
}

fn cpu_model() -> String {
    if let Ok(text) = std::fs::read_to_string("/proc/cpuinfo") {
        for line in text.lines() {
            if let Some((key, value)) = line.split_once(':')
                && key.trim() == "model name"
                && !value.trim().is_empty()
            {
                return value.trim().to_string();
            }
        }
    }
    cpuid_brand().unwrap_or_else(|| std::env::consts::ARCH.to_string())
}

#[cfg(target_arch = "x86_64")]
fn cpuid_brand() -> Option<String> {
    use std::arch::x86_64::__cpuid;
    // SAFETY: CPUID is available on every x86_64 CPU; leaf 0x8000_0000 reports the highest
    // extended leaf, and the brand leaves are only read when it covers them.
    let max = __cpuid(0x8000_0000).eax;
    if max < 0x8000_0004 {
        return None;
    }
    let mut bytes = Vec::with_capacity(48);
    for leaf in 0x8000_0002u32..=0x8000_0004 {
        let r = __cpuid(leaf);
        for reg in [r.eax, r.ebx, r.ecx, r.edx] {
            bytes.extend_from_slice(&reg.to_le_bytes());
        }
    }
    let s = String::from_utf8_lossy(&bytes).trim_matches(char::from(0)).trim().to_string();
    (!s.is_empty()).then_some(s)
}

#[cfg(not(target_arch = "x86_64"))]
fn cpuid_brand() -> Option<String> {
    None
}

fn cpu_flags() -> Vec<String> {
    #[allow(unused_mut)]
    let mut flags: Vec<String> = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => {
                $(if std::arch::is_x86_feature_detected!($f) { flags.push($f.to_string()); })*
            };
        }
        probe!("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vnni", "avxvnni");
    }
    flags
}

/// One measured machine limit and how it was measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Measurement {
    /// The best value over the repeats.
    pub value: f64,
    /// Its unit (`GFLOP/s`, `GB/s`).
    pub unit: String,
    /// Threads that ran concurrently.
    pub threads: usize,
    /// Repeats taken; the value is the best of them.
    pub repeats: usize,
    /// What was measured, in words (loop, ISA, buffer sizes, what bytes are counted).
    pub method: String,
}

/// FMA chains per thread: covers latency (4-5 cycles) × throughput (2/cycle) on current cores.
const CHAINS: usize = 12;

/// The FLOPs one call of the FMA loop does per iteration, and the loop itself.
fn fma_kernel(isa: Isa) -> (f64, &'static str, fn(u64) -> f32) {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => ((CHAINS * 16 * 2) as f64, "avx512 _mm512_fmadd_ps", |n| {
            // SAFETY: only selected when `Isa::detect()` reports AVX-512 F.
            unsafe { fma_loop_avx512(n) }
        }),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => ((CHAINS * 8 * 2) as f64, "avx2 _mm256_fmadd_ps", |n| {
            // SAFETY: only selected when `Isa::detect()` reports AVX2 + FMA.
            unsafe { fma_loop_avx2(n) }
        }),
        _ => ((CHAINS * 2) as f64, "scalar mul+add", fma_loop_scalar),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_loop_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let x = _mm256_set1_ps(black_box(0.999_999));
    let y = _mm256_set1_ps(black_box(1e-7));
    let mut acc = [_mm256_set1_ps(black_box(1.0)); CHAINS];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm256_fmadd_ps(*a, x, y);
        }
    }
    let mut sum = _mm256_setzero_ps();
    for a in acc {
        sum = _mm256_add_ps(sum, a);
    }
    let mut out = [0.0f32; 8];
    // SAFETY: `out` holds exactly 8 f32s; storeu has no alignment requirement.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), sum) };
    out.iter().sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_loop_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let x = _mm512_set1_ps(black_box(0.999_999));
    let y = _mm512_set1_ps(black_box(1e-7));
    let mut acc = [_mm512_set1_ps(black_box(1.0)); CHAINS];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = _mm512_fmadd_ps(*a, x, y);
        }
    }
    let mut sum = _mm512_setzero_ps();
    for a in acc {
        sum = _mm512_add_ps(sum, a);
    }
    _mm512_reduce_add_ps(sum)
}

fn fma_loop_scalar(iters: u64) -> f32 {
    let x = black_box(0.999_999f32);
    let y = black_box(1e-7f32);
    let mut acc = [black_box(1.0f32); CHAINS];
    for _ in 0..iters {
        for a in acc.iter_mut() {
            *a = *a * x + y;
        }
    }
    acc.iter().sum()
}

/// Runs `work(thread_index)` on `threads` OS threads released together by a barrier; returns
/// the wall time from the earliest start to the latest finish, as clocked by the workers
/// themselves (the spawning thread may not even be scheduled while they run).
fn timed_parallel<F: Fn(usize) + Sync>(threads: usize, work: F) -> Duration {
    let threads = threads.max(1);
    let barrier = Barrier::new(threads);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let barrier = &barrier;
                let work = &work;
                s.spawn(move || {
                    barrier.wait();
                    let start = Instant::now();
                    work(t);
                    (start, Instant::now())
                })
            })
            .collect();
        handles.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    let start = spans.iter().map(|s| s.0).min();
    let end = spans.iter().map(|s| s.1).max();
    match (start, end) {
        (Some(a), Some(b)) => b.duration_since(a),
        _ => Duration::MAX, // a worker panicked: report no throughput rather than a wrong one
    }
}

/// Measured single-precision FMA peak in GFLOP/s with `threads` threads, spending about
/// `budget`.
///
/// Every thread runs the same register-only loop of independent FMA chains for the widest ISA
/// available ([`Isa::detect`]); the result counts 2 FLOPs per lane per FMA, best of the repeats.
pub fn fma_peak_gflops(threads: usize, budget: Duration) -> Measurement {
    let threads = threads.max(1);
    let isa = Isa::detect();
    let (flops_per_iter, what, kernel) = fma_kernel(isa);
    // Calibrate: grow the iteration count until one repeat takes about budget / 8.
    let target = (budget / 8).max(Duration::from_millis(2));
    let mut iters: u64 = 1 << 14;
    loop {
        let start = Instant::now();
        black_box(kernel(iters));
        let took = start.elapsed();
        if took >= target / 2 || iters >= 1 << 40 {
            let scale = target.as_secs_f64() / took.as_secs_f64().max(1e-9);
            iters = ((iters as f64 * scale) as u64).max(1);
            break;
        }
        iters *= 4;
    }
    let deadline = Instant::now() + budget;
    let mut best = 0.0f64;
    let mut repeats = 0;
    while repeats < 3 || (Instant::now() < deadline && repeats < 50) {
        let took = timed_parallel(threads, |_| {
            black_box(kernel(black_box(iters)));
        });
        let gflops = flops_per_iter * iters as f64 * threads as f64 / took.as_secs_f64() / 1e9;
        best = best.max(gflops);
        repeats += 1;
    }
    Measurement {
        value: best,
        unit: "GFLOP/s".into(),
        threads,
        repeats,
        method: format!(
            "{what}: {CHAINS} independent f32 FMA chains per thread in registers, {iters} iterations, best of {repeats}"
        ),
    }
}

/// Measured memory bandwidth: a streaming copy and a read-only sum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bandwidth {
    /// Copy `dst ← src`, counting bytes read plus bytes written (not write-allocate reads).
    pub copy: Measurement,
    /// Sum of a buffer, counting bytes read: the limit for streaming weights (GEMV).
    pub read: Measurement,
}

/// Default buffer size for [`memory_bandwidth`]: far past any current L3.
pub const DEFAULT_BANDWIDTH_BYTES: usize = 256 << 20;

/// Measured memory bandwidth in GB/s (10⁹ bytes) with `threads` threads over buffers of
/// `bytes` bytes each (two for the copy: source and destination), spending about `budget` per
/// measurement. Use [`DEFAULT_BANDWIDTH_BYTES`] unless memory is tight: a buffer that fits in
/// cache measures the cache.
pub fn memory_bandwidth(threads: usize, bytes: usize, budget: Duration) -> Bandwidth {
    let threads = threads.max(1);
    let len = (bytes / 4).max(threads * 1024);
    // Huge pages where the OS offers them, as the engine's weight buffers get (see `memory`),
    // so the limit is measured under the same paging as the kernels it is compared with.
    let mut src: Vec<f32> = Vec::with_capacity(len);
    crate::memory::advise_huge_pages(src.as_ptr().cast(), len * 4);
    src.extend((0..len).map(|i| (i % 1013) as f32));
    let mut dst = vec![0.0f32; len];
    crate::memory::advise_huge_pages(dst.as_ptr().cast(), len * 4);
    let chunk = len.div_ceil(threads);
    let mib = (len * 4) >> 20;

    let repeat_until = |mut once: Box<dyn FnMut() -> Duration + '_>, bytes_moved: f64| {
        black_box(once()); // warm-up: page faults, TLB
        let deadline = Instant::now() + budget;
        let mut best = 0.0f64;
        let mut repeats = 0;
        while repeats < 2 || (Instant::now() < deadline && repeats < 50) {
            let took = once();
            best = best.max(bytes_moved / took.as_secs_f64() / 1e9);
            repeats += 1;
        }
        (best, repeats)
    };

    let dst_ptr = SendPtr(dst.as_mut_ptr());
    let src_ref = &src;
    let (copy_gbs, copy_reps) = repeat_until(
        Box::new(move || {
            timed_parallel(threads, |t| {
                let lo = (t * chunk).min(len);
                let hi = ((t + 1) * chunk).min(len);
                // SAFETY: each thread writes the disjoint range lo..hi of `dst`, which outlives
                // the scope; nothing else reads or writes `dst` meanwhile.
                let out = unsafe { std::slice::from_raw_parts_mut(dst_ptr.get().add(lo), hi - lo) };
                out.copy_from_slice(&src_ref[lo..hi]);
            })
        }),
        (len * 8) as f64,
    );
    black_box(&dst);
    let (read_gbs, read_reps) = repeat_until(
        Box::new(move || {
            timed_parallel(threads, |t| {
                let lo = (t * chunk).min(len);
                let hi = ((t + 1) * chunk).min(len);
                black_box(sum_lanes(&src_ref[lo..hi]));
            })
        }),
        (len * 4) as f64,
    );
    Bandwidth {
        copy: Measurement {
            value: copy_gbs,
            unit: "GB/s".into(),
            threads,
            repeats: copy_reps,
            method: format!(
                "copy of a {mib} MiB f32 buffer split across threads; counts read + written bytes, best of {copy_reps}"
            ),
        },
        read: Measurement {
            value: read_gbs,
            unit: "GB/s".into(),
            threads,
            repeats: read_reps,
            method: format!(
                "read-only sum of a {mib} MiB f32 buffer split across threads, best of {read_reps}"
            ),
        },
    }
}

/// A raw pointer that may cross into scoped threads (each uses a disjoint range).
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used to hand disjoint sub-slices to scoped threads (see `memory_bandwidth`).
unsafe impl Send for SendPtr {}
// SAFETY: as above; the pointer itself is never written through from two threads at one index.
unsafe impl Sync for SendPtr {}

impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// A sum with 16 independent lanes so the loop is bound by loads, not by add latency.
fn sum_lanes(xs: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = xs.chunks_exact(16);
    for c in &mut chunks {
        for (a, x) in acc.iter_mut().zip(c) {
            *a += *x;
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_key_is_stable_and_names_isa() {
        let a = MachineId::detect();
        let b = MachineId::detect();
        assert_eq!(a.key(), b.key());
        assert!(a.key().contains(a.isa.name()));
        assert!(a.cores >= 1);
        assert!(!a.cpu_model.is_empty());
    }

    #[test]
    fn measurements_are_positive() {
        let p = fma_peak_gflops(1, Duration::from_millis(20));
        assert!(p.value > 0.0 && p.value.is_finite(), "{p:?}");
        assert!(p.repeats >= 3);
        let bw = memory_bandwidth(2, 1 << 20, Duration::from_millis(10));
        assert!(bw.copy.value > 0.0 && bw.read.value > 0.0, "{bw:?}");
        assert_eq!(bw.copy.threads, 2);
    }

    #[test]
    fn sum_lanes_matches_plain_sum() {
        let xs: Vec<f32> = (0..1000).map(|i| i as f32).collect();
        assert_eq!(sum_lanes(&xs), xs.iter().sum::<f32>());
    }
}
