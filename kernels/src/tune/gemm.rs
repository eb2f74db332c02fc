//! Tuning [`GemmParams`] for one shape on this machine.
//!
//! Strategy: evaluate the defaults first, then seeded random samples of the space for the first
//! half of the budget, then mostly local neighbourhood moves around the best so far (one axis
//! one step), up to `budget` candidates. A candidate already in the cache is not re-measured.
//! Every new candidate first passes a correctness gate: its output on the shape (or, for big
//! shapes, on a proxy that still crosses each of its block boundaries) is compared with
//! [`gemm_reference`]; one that differs beyond tolerance is recorded as rejected and not timed.

pub use super::TuneError;
use super::cache::KernelCache;
use super::search::{self, SearchKey, SearchSpace, Tally, Verdict, axis, compare, nearest};
use super::timing::{GemmOperands, TimingOptions};
use super::{GemmShape, SplitMix64, TuneTarget};
use crate::error::KernelError;
use crate::gemm::{GemmParams, MatMut, MatRef, MicroKernel, gemm_reference, gemm_row_major};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// The kernel name in cache records and reports.
pub const KERNEL_NAME: &str = "gemm_f32";

/// Runs a GEMM candidate: `c = a·b` for row-major `a` (m×k), `b` (k×n), `c` (m×n).
///
/// The seam between the search and the kernel: [`OurGemm`] in production, a deliberately broken
/// closure in tests of the correctness gate.
pub trait GemmRunner {
    /// Computes `c = a·b` with `params`.
    fn run(
        &self,
        shape: GemmShape,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        params: &GemmParams,
    ) -> Result<(), KernelError>;
}

/// This crate's [`crate::gemm::gemm`].
#[derive(Debug, Clone, Copy, Default)]
pub struct OurGemm;

impl GemmRunner for OurGemm {
    fn run(
        &self,
        s: GemmShape,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        params: &GemmParams,
    ) -> Result<(), KernelError> {
        gemm_row_major(s.m, s.n, s.k, a, b, c, false, params)
    }
}

impl<F> GemmRunner for F
where
    F: Fn(GemmShape, &[f32], &[f32], &mut [f32], &GemmParams) -> Result<(), KernelError>,
{
    fn run(
        &self,
        shape: GemmShape,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        params: &GemmParams,
    ) -> Result<(), KernelError> {
        self(shape, a, b, c, params)
    }
}

/// How to tune.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmTuneOptions {
    /// Candidates to consider at most, the defaults and cached ones included.
    pub budget: usize,
    /// Seed of the search (and of the random inputs).
    pub seed: u64,
    /// Threads every candidate runs with (the search covers tiles and micro-kernels).
    pub threads: usize,
    /// Timing of each measured candidate.
    pub timing: TimingOptions,
    /// The gate accepts `|c − reference| ≤ tolerance · k` per element (inputs lie in [-1, 1)).
    pub tolerance: f64,
    /// Shapes with at most this many multiply-adds are gated on themselves; larger ones on a
    /// proxy shape.
    pub gate_max_macs: usize,
}

impl Default for GemmTuneOptions {
    fn default() -> Self {
        Self {
            budget: 24,
            seed: 0,
            threads: crate::threads::available(),
            timing: TimingOptions::default(),
            tolerance: 1e-5,
            gate_max_macs: 1 << 24,
        }
    }
}

/// What happened to one GEMM candidate.
pub type CandidateOutcome = search::CandidateOutcome<GemmParams>;

/// The outcome of [`tune_gemm`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GemmTuneReport {
    /// Machine key the results belong to.
    pub machine: String,
    /// The shape tuned.
    pub shape: GemmShape,
    /// The fastest valid params known for this shape, machine and thread count (this search or
    /// an earlier one in the cache).
    pub best: GemmParams,
    /// Their GFLOP/s.
    pub best_gflops: f64,
    /// The defaults (with the tuned thread count).
    pub default: GemmParams,
    /// The defaults' GFLOP/s (`None` if they were rejected).
    pub default_gflops: Option<f64>,
    /// `best_gflops / default_gflops`.
    pub speedup: Option<f64>,
    /// Candidates measured in this run.
    pub measured: usize,
    /// Candidates whose results came from the cache.
    pub cached: usize,
    /// Candidates rejected by the correctness gate (new or cached).
    pub rejected: usize,
    /// Every candidate, in the order considered.
    pub candidates: Vec<CandidateOutcome>,
}

const MC_SET: [usize; 8] = [24, 48, 72, 96, 144, 192, 288, 384];
const KC_SET: [usize; 8] = [64, 128, 192, 256, 384, 512, 768, 1024];
const NC_SET: [usize; 7] = [128, 256, 512, 1024, 2048, 4096, 8192];

/// The search space for one shape: per micro-kernel, the mc/kc/nc values to try.
#[derive(Debug, Clone)]
pub struct GemmSpace {
    kernels: Vec<MicroKernel>,
    threads: usize,
    shape: GemmShape,
}

impl GemmSpace {
    /// The space for `shape` over the micro-kernels available here, at `threads` threads.
    pub fn new(shape: GemmShape, threads: usize) -> Self {
        Self { kernels: MicroKernel::available(), threads: threads.max(1), shape }
    }

    fn axes(&self, mk: MicroKernel) -> [Vec<usize>; 3] {
        [
            axis(&MC_SET, mk.mr(), self.shape.m),
            axis(&KC_SET, 1, self.shape.k),
            axis(&NC_SET, mk.nr(), self.shape.n),
        ]
    }

    /// Candidates in the space (micro-kernels × mc × kc × nc).
    pub fn size(&self) -> usize {
        self.kernels.iter().map(|&mk| self.axes(mk).iter().map(Vec::len).product::<usize>()).sum()
    }

    fn make(&self, mk: MicroKernel, mc: usize, kc: usize, nc: usize) -> GemmParams {
        GemmParams { mc, kc, nc, micro_kernel: mk, threads: self.threads }
    }

    /// A uniformly random point.
    pub fn random(&self, rng: &mut SplitMix64) -> GemmParams {
        let mk = self.kernels[rng.below(self.kernels.len())];
        let [mc, kc, nc] = self.axes(mk);
        self.make(mk, mc[rng.below(mc.len())], kc[rng.below(kc.len())], nc[rng.below(nc.len())])
    }

    /// A neighbour of `p`: one axis moved one step, or another micro-kernel (with mc and nc
    /// snapped to its alignment).
    pub fn neighbour(&self, p: &GemmParams, rng: &mut SplitMix64) -> GemmParams {
        let axis_choice = rng.below(4);
        if axis_choice == 3 && self.kernels.len() > 1 {
            let mk = self.kernels[rng.below(self.kernels.len())];
            let [mc, kc, nc] = self.axes(mk);
            return self.make(
                mk,
                mc[nearest(&mc, p.mc)],
                kc[nearest(&kc, p.kc)],
                nc[nearest(&nc, p.nc)],
            );
        }
        let axes = self.axes(p.micro_kernel);
        // Snap every axis into the space (the defaults may lie outside it), then step one.
        let mut idx = [0usize; 3];
        for ((i, vals), v) in idx.iter_mut().zip(&axes).zip([p.mc, p.kc, p.nc]) {
            *i = nearest(vals, v);
        }
        let which = axis_choice % 3;
        let last = axes[which].len() - 1;
        let i = idx[which];
        idx[which] = if rng.below(2) == 0 { i.saturating_sub(1) } else { (i + 1).min(last) };
        let v = [axes[0][idx[0]], axes[1][idx[1]], axes[2][idx[2]]];
        self.make(p.micro_kernel, v[0], v[1], v[2])
    }
}

impl SearchSpace for GemmSpace {
    type Params = GemmParams;

    fn random(&self, rng: &mut SplitMix64) -> GemmParams {
        GemmSpace::random(self, rng)
    }

    fn neighbour(&self, p: &GemmParams, rng: &mut SplitMix64) -> GemmParams {
        GemmSpace::neighbour(self, p, rng)
    }
}

/// The shape the correctness gate runs `params` on: the shape itself when small, otherwise one
/// that still crosses an mc, kc and (capped) nc block boundary and a partial register tile.
pub fn gate_shape(shape: GemmShape, params: &GemmParams, max_macs: usize) -> GemmShape {
    if shape.m * shape.n * shape.k <= max_macs {
        return shape;
    }
    let mk = params.micro_kernel;
    GemmShape::new(
        shape.m.min(params.mc + mk.mr() + 1),
        shape.n.min(params.nc.min(512) + mk.nr() + 1),
        shape.k.min(params.kc + 1),
    )
}

/// Gate inputs and reference outputs per gate shape: `(a, b, reference c)`.
type GateRefs = HashMap<GemmShape, (Vec<f32>, Vec<f32>, Vec<f32>)>;

/// Runs `params` on `gs` and compares with the reference: `Ok(max_abs_err)` when within
/// `tolerance · k`, `Err(reason)` otherwise.
fn gate(
    runner: &dyn GemmRunner,
    params: &GemmParams,
    gs: GemmShape,
    tolerance: f64,
    refs: &mut GateRefs,
    seed: u64,
) -> Result<f64, (Option<f64>, String)> {
    let (a, b, want) = refs.entry(gs).or_insert_with(|| {
        let ops = GemmOperands::new(gs, 0, seed ^ 0x6A7E);
        let (a, b) = ops.first();
        let mut c = vec![0.0; gs.m * gs.n];
        // The reference only fails on inconsistent shapes, which GemmOperands cannot produce.
        let _ = gemm_reference(
            MatRef::row_major(a, gs.m, gs.k),
            MatRef::row_major(b, gs.k, gs.n),
            MatMut::row_major(&mut c, gs.m, gs.n),
            false,
        );
        (a.to_vec(), b.to_vec(), c)
    });
    let mut got = vec![f32::NAN; gs.m * gs.n];
    if let Err(e) = runner.run(gs, a, b, &mut got, params) {
        return Err((None, format!("kernel failed on {gs}: {e}")));
    }
    let bound = tolerance * gs.k as f64;
    let (max_err, _) = compare(&got, want, |_| bound);
    if max_err <= bound {
        Ok(max_err)
    } else {
        Err((
            Some(max_err),
            format!("differs from gemm_reference on {gs}: max |Δ| = {max_err:.3e} > {bound:.3e}"),
        ))
    }
}

/// The search key of `shape` on `machine`.
fn key(machine: &str, shape: GemmShape) -> SearchKey<'_> {
    SearchKey { machine, kernel: KERNEL_NAME, dims: shape.dims() }
}

/// The fastest cached params for `shape` on `machine` at `threads` threads, with GFLOP/s.
///
/// Records whose params no longer parse (a renamed micro-kernel) or are unusable here are
/// skipped.
pub fn cached_best(
    cache: &KernelCache,
    machine: &str,
    shape: GemmShape,
    threads: usize,
) -> Option<(GemmParams, f64)> {
    let (p, rec) = search::cached_best(cache, &key(machine, shape), usable_at(threads))?;
    Some((p, rec.gflops?))
}

/// Which cached params count here: the requested thread count, valid on this machine.
fn usable_at(threads: usize) -> impl Fn(&GemmParams) -> bool {
    move |p| p.threads == threads && p.validate().is_ok()
}

/// Tunes `runner` for `shape` on the machine `machine` (a [`crate::machine::MachineId::key`]),
/// reusing and extending `cache`.
pub fn tune_gemm(
    shape: GemmShape,
    opts: &GemmTuneOptions,
    runner: &dyn GemmRunner,
    cache: &mut KernelCache,
    machine: &str,
) -> Result<GemmTuneReport, TuneError> {
    let threads = opts.threads.max(1);
    let space = GemmSpace::new(shape, threads);
    let default = GemmParams { threads, ..GemmParams::default() };
    let mut operands: Option<GemmOperands> = None;
    let mut refs = HashMap::new();

    let evaluate = |params: &GemmParams| {
        let gs = gate_shape(shape, params, opts.gate_max_macs);
        Verdict::gated(gate(runner, params, gs, opts.tolerance, &mut refs, opts.seed), || {
            let ops = operands.get_or_insert_with(|| {
                GemmOperands::new(shape, opts.timing.rotate_bytes, opts.seed)
            });
            let t = ops.time(&opts.timing, |a, b, c| runner.run(shape, a, b, c, params))?;
            Ok((t, shape.flops(), None))
        })
    };
    let tuned = search::search_and_confirm(
        &space,
        default,
        opts.budget,
        opts.seed,
        cache,
        &key(machine, shape),
        usable_at(threads),
        evaluate,
    )?;
    let outcomes = tuned.outcomes;
    let (best, best_gflops) =
        tuned.best.and_then(|(p, r)| Some((p, r.gflops?))).ok_or(TuneError::NoValidCandidate {
            target: TuneTarget::GemmF32(shape),
            tried: outcomes.len(),
        })?;
    let default_gflops = tuned.default.and_then(|r| r.gflops);
    let Tally { measured, cached, rejected } = Tally::of(&outcomes);
    Ok(GemmTuneReport {
        machine: machine.to_string(),
        shape,
        best,
        best_gflops,
        default,
        default_gflops,
        speedup: default_gflops.map(|d| best_gflops / d),
        measured,
        cached,
        rejected,
        candidates: outcomes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::cache::RecordStatus;
    use std::cell::Cell;

    fn quick(budget: usize) -> GemmTuneOptions {
        GemmTuneOptions {
            budget,
            seed: 3,
            threads: 1,
            timing: TimingOptions {
                budget: std::time::Duration::ZERO,
                min_repeats: 2,
                max_repeats: 2,
                rotate_bytes: 1 << 16,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn axes_are_aligned_and_cover_the_dimension() {
        assert_eq!(axis(&MC_SET, 8, 20), vec![24]);
        assert_eq!(axis(&KC_SET, 1, 300), vec![64, 128, 192, 256, 384]);
        assert_eq!(axis(&NC_SET, 6, 100), vec![132]);
        assert_eq!(axis(&[4, 8], 1, 100), vec![4, 8, 100]);
        for v in axis(&NC_SET, 12, 5000) {
            assert_eq!(v % 12, 0);
        }
    }

    #[test]
    fn search_is_reproducible_and_reuses_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.jsonl");
        let shape = GemmShape::new(9, 70, 300);
        let mut cache = KernelCache::load(&path).unwrap();
        let first = tune_gemm(shape, &quick(6), &OurGemm, &mut cache, "test").unwrap();
        assert_eq!(first.candidates[0].params, first.default);
        assert_eq!(first.cached, 0);
        assert_eq!(first.measured, first.candidates.len());
        assert!(first.best.validate().is_ok());

        let mut again = KernelCache::load(&path).unwrap();
        let calls = Cell::new(0usize);
        let counting = |s: GemmShape, a: &[f32], b: &[f32], c: &mut [f32], p: &GemmParams| {
            calls.set(calls.get() + 1);
            OurGemm.run(s, a, b, c, p)
        };
        let second = tune_gemm(shape, &quick(6), &counting, &mut again, "test").unwrap();
        assert_eq!(calls.get(), 0, "a cached candidate must not run");
        assert_eq!(second.measured, 0);
        assert_eq!(second.cached, first.candidates.len());
        let p1: Vec<_> = first.candidates.iter().map(|c| c.params).collect();
        let p2: Vec<_> = second.candidates.iter().map(|c| c.params).collect();
        assert_eq!(p1, p2);
        assert_eq!(second.best, first.best);
    }

    #[test]
    fn gate_rejects_a_wrong_kernel_without_timing_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = KernelCache::load(dir.path().join("k.jsonl")).unwrap();
        let shape = GemmShape::new(5, 7, 300);
        let default_mc = GemmParams::default().mc;
        let calls = Cell::new(0usize);
        // Correct only at the default mc; every other candidate corrupts one element.
        let broken = |s: GemmShape, a: &[f32], b: &[f32], c: &mut [f32], p: &GemmParams| {
            calls.set(calls.get() + 1);
            OurGemm.run(s, a, b, c, p)?;
            if p.mc != default_mc {
                c[c.len() / 2] += 0.5;
            }
            Ok(())
        };
        let r = tune_gemm(shape, &quick(4), &broken, &mut cache, "test").unwrap();
        assert_eq!(r.best.mc, default_mc);
        assert!(r.rejected >= 1, "{r:?}");
        for c in r.candidates.iter().filter(|c| c.params.mc != default_mc) {
            assert_eq!(c.status, RecordStatus::Rejected);
            assert!(c.gflops.is_none());
            assert!(c.note.as_deref().unwrap_or("").contains("gemm_reference"));
        }
        // Search: each timed one costs 1 gate + warm-up + 2 timed, each rejected one the gate.
        let timed = r.candidates.iter().filter(|c| c.status == RecordStatus::Ok).count();
        // Then the confirmation re-times the (only) timed one in every round.
        let confirmed = 4 * search::CONFIRM_ROUNDS * timed.min(search::CONFIRM_TOP);
        assert_eq!(calls.get(), 4 * timed + r.rejected + confirmed);
        let rejected_lines =
            cache.records().iter().filter(|r| r.status == RecordStatus::Rejected).count();
        assert_eq!(rejected_lines, r.rejected);

        let mut cache2 = KernelCache::load(dir.path().join("k2.jsonl")).unwrap();
        let always_wrong = |_: GemmShape, _: &[f32], _: &[f32], c: &mut [f32], _: &GemmParams| {
            c.fill(f32::NAN);
            Ok(())
        };
        let e = tune_gemm(shape, &quick(3), &always_wrong, &mut cache2, "test").unwrap_err();
        assert!(matches!(e, TuneError::NoValidCandidate { tried: 3, .. }), "{e}");
    }

    #[test]
    fn gate_shape_shrinks_big_problems_but_crosses_blocks() {
        let p = GemmParams { mc: 96, kc: 256, nc: 4096, ..GemmParams::default() };
        let gs = gate_shape(GemmShape::new(1024, 1024, 1024), &p, 1 << 24);
        assert!(gs.m > p.mc && gs.k > p.kc && gs.n > 512);
        assert!(gs.m * gs.n * gs.k < 1024 * 1024 * 1024 / 10);
        let small = GemmShape::new(8, 8, 8);
        assert_eq!(gate_shape(small, &p, 1 << 24), small);
    }
}
