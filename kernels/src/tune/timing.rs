//! Timing a kernel call fairly: warm-up, inputs rotated across several buffers so a small
//! problem is not served from a cache the previous repeat warmed, median of repeats.

use super::{GemmShape, SplitMix64};
use crate::error::KernelError;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// How long and how often to time one variant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimingOptions {
    /// Stop starting new repeats after this much time (minimum repeats still run).
    pub budget: Duration,
    /// Untimed calls first.
    pub warmup: usize,
    /// Timed calls at least.
    pub min_repeats: usize,
    /// Timed calls at most.
    pub max_repeats: usize,
    /// Total bytes of rotated input sets to aim for (at most 8 sets); about twice the last-level
    /// cache keeps every repeat's inputs cold.
    pub rotate_bytes: usize,
}

impl Default for TimingOptions {
    fn default() -> Self {
        Self {
            budget: Duration::from_millis(300),
            warmup: 1,
            min_repeats: 3,
            max_repeats: 51,
            rotate_bytes: 64 << 20,
        }
    }
}

/// The result of timing one variant.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    /// Median seconds per call.
    pub median_s: f64,
    /// Fastest call, seconds.
    pub min_s: f64,
    /// Timed calls.
    pub repeats: usize,
}

/// Input sets for timing a GEMM of one shape: several `(A, B)` pairs and one `C`.
#[derive(Debug, Clone)]
pub struct GemmOperands {
    /// The shape the buffers hold.
    pub shape: GemmShape,
    sets: Vec<(Vec<f32>, Vec<f32>)>,
    c: Vec<f32>,
}

impl GemmOperands {
    /// Random inputs in `[-1, 1)` from `seed`: as many sets as fit in `rotate_bytes` (1 to 8).
    pub fn new(shape: GemmShape, rotate_bytes: usize, seed: u64) -> Self {
        let set_bytes = (shape.m * shape.k + shape.k * shape.n) * 4;
        let count = (rotate_bytes / set_bytes.max(1)).clamp(1, 8);
        let mut rng = SplitMix64::new(seed);
        let mut fill = |len: usize| (0..len).map(|_| rng.unit_f32()).collect::<Vec<f32>>();
        let sets = (0..count).map(|_| (fill(shape.m * shape.k), fill(shape.k * shape.n))).collect();
        Self { shape, sets, c: vec![0.0; shape.m * shape.n] }
    }

    /// Number of rotated input sets.
    pub fn sets(&self) -> usize {
        self.sets.len()
    }

    /// The first input set, `(A, B)`.
    pub fn first(&self) -> (&[f32], &[f32]) {
        (&self.sets[0].0, &self.sets[0].1)
    }

    /// Times `call(a, b, c)` per `opts`, rotating through the input sets.
    pub fn time(
        &mut self,
        opts: &TimingOptions,
        mut call: impl FnMut(&[f32], &[f32], &mut [f32]) -> Result<(), KernelError>,
    ) -> Result<Timing, KernelError> {
        let n = self.sets.len();
        let (sets, c) = (&self.sets, &mut self.c);
        time_calls(opts, |i| {
            let (a, b) = &sets[i % n];
            call(a, b, c)
        })
    }
}

/// Times `call(i)` per `opts`: `opts.warmup` untimed calls, then timed ones until at least
/// `min_repeats` ran and either `max_repeats` ran or the budget is spent. `i` counts every call
/// from 0, so a caller can rotate through input sets with `i % sets`.
pub fn time_calls(
    opts: &TimingOptions,
    mut call: impl FnMut(usize) -> Result<(), KernelError>,
) -> Result<Timing, KernelError> {
    for i in 0..opts.warmup {
        call(i)?;
    }
    let deadline = Instant::now() + opts.budget;
    let mut times = Vec::new();
    while times.len() < opts.min_repeats.max(1)
        || (times.len() < opts.max_repeats && Instant::now() < deadline)
    {
        let i = opts.warmup + times.len();
        let start = Instant::now();
        call(i)?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(summarize(&mut times))
}

fn summarize(times: &mut [f64]) -> Timing {
    times.sort_by(f64::total_cmp);
    let mid = times.len() / 2;
    let median_s =
        if times.len() % 2 == 1 { times[mid] } else { (times[mid - 1] + times[mid]) / 2.0 };
    Timing { median_s, min_s: times[0], repeats: times.len() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_rotation() {
        assert_eq!(summarize(&mut [3.0, 1.0, 2.0]).median_s, 2.0);
        assert_eq!(summarize(&mut [4.0, 1.0, 2.0, 3.0]).median_s, 2.5);
        let shape = GemmShape::new(2, 3, 4);
        let mut ops = GemmOperands::new(shape, 1 << 20, 1);
        assert_eq!(ops.sets(), 8);
        let mut seen = Vec::new();
        let opts = TimingOptions { min_repeats: 8, max_repeats: 8, ..Default::default() };
        let t = ops
            .time(&opts, |a, _, _| {
                seen.push(a[0]);
                Ok(())
            })
            .unwrap();
        assert_eq!(t.repeats, 8);
        assert_eq!(seen.len(), 9);
        let distinct = seen.iter().map(|x| x.to_bits()).collect::<std::collections::HashSet<_>>();
        assert!(distinct.len() >= 8);
    }
}
