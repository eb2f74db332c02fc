//! The search loop shared by every tunable kernel.
//!
//! A kernel brings a [`SearchSpace`] (random points and one-step neighbours of its parameter
//! type) and an evaluator (correctness gate, then timing); [`search`] does the rest the same way
//! for all of them: the defaults first, seeded random samples for the first half of the budget,
//! then mostly neighbours of the best so far; candidates already in the [`KernelCache`] are not
//! re-evaluated, new ones are appended to it as they finish.

use super::SplitMix64;
use super::cache::{CacheRecord, KernelCache, RecordStatus};
use crate::error::KernelError;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

/// A kernel's parameter space, as the search walks it.
pub trait SearchSpace {
    /// The kernel's parameters (serialized into cache records).
    type Params: Copy + Eq + Hash + Debug + Serialize + DeserializeOwned;

    /// A uniformly random point.
    fn random(&self, rng: &mut SplitMix64) -> Self::Params;

    /// A point one step away from `p` (which may lie outside the space, e.g. the defaults).
    fn neighbour(&self, p: &Self::Params, rng: &mut SplitMix64) -> Self::Params;
}

/// What the evaluator made of one new candidate.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Failed the correctness gate (or the kernel failed): recorded, not timed.
    Rejected {
        /// Largest absolute difference from the reference, when there was an output.
        max_abs_err: Option<f64>,
        /// Why it was rejected.
        note: String,
    },
    /// Passed the gate and was timed.
    Timed {
        /// Median seconds per call.
        median_s: f64,
        /// Timed repeats behind the median.
        repeats: usize,
        /// GFLOP/s at the median.
        gflops: f64,
        /// GB/s of memory traffic at the median, for kernels measured by bandwidth.
        gb_per_s: Option<f64>,
        /// Largest absolute difference from the reference on the gate's shape.
        max_abs_err: f64,
    },
}

impl Verdict {
    /// The verdict on a candidate whose correctness gate gave `gate` (the largest absolute
    /// error, or that and why it failed): rejected without timing, or timed by `time`, which
    /// returns the timing and the work of one call in FLOPs and, for bandwidth-bound kernels,
    /// in bytes.
    pub fn gated(
        gate: Result<f64, (Option<f64>, String)>,
        time: impl FnOnce() -> Result<(super::timing::Timing, f64, Option<f64>), KernelError>,
    ) -> Result<Verdict, KernelError> {
        Ok(match gate {
            Err((max_abs_err, note)) => Verdict::Rejected { max_abs_err, note },
            Ok(max_abs_err) => {
                let (t, flops, bytes) = time()?;
                Verdict::Timed {
                    median_s: t.median_s,
                    repeats: t.repeats,
                    gflops: flops / t.median_s / 1e9,
                    gb_per_s: bytes.map(|b| b / t.median_s / 1e9),
                    max_abs_err,
                }
            }
        })
    }
}

/// What happened to one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateOutcome<P> {
    /// The parameters tried.
    pub params: P,
    /// Timed or rejected.
    pub status: RecordStatus,
    /// Median seconds per call, when timed.
    #[serde(default)]
    pub median_s: Option<f64>,
    /// GFLOP/s at the median time, when timed.
    pub gflops: Option<f64>,
    /// GB/s at the median time, for kernels measured by bandwidth.
    #[serde(default)]
    pub gb_per_s: Option<f64>,
    /// Whether the result came from the cache rather than a new measurement.
    pub cached: bool,
    /// Why it was rejected.
    pub note: Option<String>,
}

impl<P> CandidateOutcome<P> {
    fn from_record(params: P, rec: &CacheRecord, cached: bool) -> Self {
        Self {
            params,
            status: rec.status,
            median_s: rec.median_s,
            gflops: rec.gflops,
            gb_per_s: rec.gb_per_s,
            cached,
            note: rec.note.clone(),
        }
    }
}

/// How many candidates were measured, came from the cache, or were rejected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Candidates measured in this run.
    pub measured: usize,
    /// Candidates whose results came from the cache.
    pub cached: usize,
    /// Candidates rejected by the correctness gate (new or cached).
    pub rejected: usize,
}

impl Tally {
    /// Counts `outcomes`.
    pub fn of<P>(outcomes: &[CandidateOutcome<P>]) -> Self {
        Self {
            measured: outcomes.iter().filter(|o| !o.cached).count(),
            cached: outcomes.iter().filter(|o| o.cached).count(),
            rejected: outcomes.iter().filter(|o| o.status == RecordStatus::Rejected).count(),
        }
    }
}

/// Where a search's results belong: machine, kernel and shape, as keyed in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchKey<'a> {
    /// [`crate::machine::MachineId::key`] of this machine.
    pub machine: &'a str,
    /// Kernel name in cache records.
    pub kernel: &'a str,
    /// Shape as stored in cache records.
    pub dims: Vec<usize>,
}

/// The values of one blocking axis worth trying for a dimension: multiples of `align`, those
/// below the (aligned) dimension plus the first that covers it (larger ones all behave alike).
pub(crate) fn axis(set: &[usize], align: usize, dim: usize) -> Vec<usize> {
    let align = align.max(1);
    let cover = dim.div_ceil(align) * align;
    let mut out: Vec<usize> = Vec::new();
    for &v in set {
        let v = v.div_ceil(align) * align;
        if out.last() == Some(&v) {
            continue;
        }
        out.push(v);
        if v >= cover {
            break;
        }
    }
    if out.last().is_none_or(|&v| v < cover) {
        out.push(cover);
    }
    out
}

/// Index of the value in `vals` nearest to `v` (0 when `vals` is empty).
pub(crate) fn nearest(vals: &[usize], v: usize) -> usize {
    vals.iter().enumerate().min_by_key(|(_, x)| x.abs_diff(v)).map_or(0, |(i, _)| i)
}

fn params_value<P: Serialize>(p: &P) -> serde_json::Value {
    // Params are plain data; serializing them cannot fail.
    serde_json::to_value(p).unwrap_or(serde_json::Value::Null)
}

/// Runs the search: `default` first, then up to `budget` candidates in all from `space` with a
/// generator seeded by `seed`. Cached candidates are reused; every new one is passed to
/// `evaluate` and its verdict appended to `cache`. Returns every candidate in the order
/// considered. A kernel failure inside `evaluate` that is not a verdict (an `Err`) stops the
/// search.
pub fn search<S: SearchSpace>(
    space: &S,
    default: S::Params,
    budget: usize,
    seed: u64,
    cache: &mut KernelCache,
    key: &SearchKey<'_>,
    mut evaluate: impl FnMut(&S::Params) -> Result<Verdict, KernelError>,
) -> Result<Vec<CandidateOutcome<S::Params>>, KernelError> {
    let mut rng = SplitMix64::new(seed);
    let mut seen: HashSet<S::Params> = HashSet::new();
    let mut outcomes: Vec<CandidateOutcome<S::Params>> = Vec::new();
    let budget = budget.max(1);
    let explore = 1 + (budget - 1) / 2;

    while outcomes.len() < budget {
        let next = if outcomes.is_empty() {
            Some(default)
        } else {
            let best_so_far = outcomes
                .iter()
                .filter(|o| o.gflops.is_some())
                .max_by(|a, b| a.gflops.unwrap_or(0.0).total_cmp(&b.gflops.unwrap_or(0.0)))
                .map(|o| o.params);
            (0..64).find_map(|_| {
                let p = match best_so_far {
                    Some(best) if outcomes.len() >= explore && rng.below(4) != 0 => {
                        space.neighbour(&best, &mut rng)
                    }
                    _ => space.random(&mut rng),
                };
                (!seen.contains(&p)).then_some(p)
            })
        };
        let Some(params) = next else { break }; // the space is exhausted
        seen.insert(params);
        let value = params_value(&params);

        // The search's own record (not a later confirmation): the path the search takes
        // depends only on it, so a rerun over the same cache walks the same candidates.
        let own = cache.records().iter().rev().find(|r| {
            r.machine == key.machine
                && r.kernel == key.kernel
                && r.shape == key.dims
                && r.params == value
                && !r.note.as_deref().is_some_and(|n| n.starts_with(CONFIRMED))
        });
        if let Some(rec) = own {
            outcomes.push(CandidateOutcome::from_record(params, rec, true));
            continue;
        }

        let record = verdict_record(key, value, evaluate(&params)?, None);
        outcomes.push(CandidateOutcome::from_record(params, &record, false));
        cache.append(record)?;
    }
    Ok(outcomes)
}

/// The cache record of `verdict` on the candidate `params` of `key`; `tag` (a record
/// [`confirm`] writes) prefixes the note.
fn verdict_record(
    key: &SearchKey<'_>,
    params: serde_json::Value,
    verdict: Verdict,
    tag: Option<&str>,
) -> CacheRecord {
    let mut record = CacheRecord {
        machine: key.machine.to_string(),
        kernel: key.kernel.to_string(),
        shape: key.dims.clone(),
        params,
        status: RecordStatus::Rejected,
        median_s: None,
        gflops: None,
        gb_per_s: None,
        repeats: 0,
        max_abs_err: None,
        note: tag.map(str::to_string),
    };
    match verdict {
        Verdict::Rejected { max_abs_err, note } => {
            record.max_abs_err = max_abs_err.filter(|e| e.is_finite());
            record.note = Some(match tag {
                Some(t) => format!("{t}; rejected: {note}"),
                None => note,
            });
        }
        Verdict::Timed { median_s, repeats, gflops, gb_per_s, max_abs_err } => {
            record.status = RecordStatus::Ok;
            record.median_s = Some(median_s);
            record.gflops = Some(gflops);
            record.gb_per_s = gb_per_s;
            record.repeats = repeats;
            record.max_abs_err = Some(max_abs_err);
        }
    }
    record
}

/// Note that marks a record written by [`confirm`].
pub const CONFIRMED: &str = "confirmed: best of interleaved re-measurements";

/// Candidates [`confirm`] re-measures at the top of the ranking.
pub const CONFIRM_TOP: usize = 3;

/// Interleaved rounds [`confirm`] times each of them.
pub const CONFIRM_ROUNDS: usize = 3;

/// Guards the tuner's pick against a lucky measurement (the winner's curse: among many noisy
/// timings the fastest is often the luckiest). The `top` fastest cached candidates for `key`
/// that `usable` accepts, and `also`, that are not confirmed yet are timed again by `evaluate`,
/// round-robin for `rounds` rounds, and each gets a new record with its best round, marked
/// [`CONFIRMED`]; records are ranked by their latest measurement, so these supersede the first
/// ones. Repeats until the top `top` are all confirmed (each pass confirms at least one more,
/// so this ends). Returns how many candidates were re-timed; already-confirmed ones (a second
/// tuning run) cost nothing.
#[allow(clippy::too_many_arguments)]
pub fn confirm<P: Serialize + DeserializeOwned>(
    cache: &mut KernelCache,
    key: &SearchKey<'_>,
    top: usize,
    rounds: usize,
    also: Option<&P>,
    usable: impl Fn(&P) -> bool,
    mut evaluate: impl FnMut(&P) -> Result<Verdict, KernelError>,
) -> Result<usize, KernelError> {
    let parse = |v: &serde_json::Value| serde_json::from_value::<P>(v.clone()).ok();
    let also = also.map(params_value);
    let mut retimed = 0;
    loop {
        let mut candidates: Vec<&CacheRecord> = cache
            .ranked(key.machine, key.kernel, &key.dims, |v| parse(v).is_some_and(|p| usable(&p)))
            .into_iter()
            .take(top)
            .collect();
        // `also` (the defaults) is re-timed beside them, so the reported speedup compares
        // like with like.
        if let Some(a) = &also
            && !candidates.iter().any(|r| &r.params == a)
            && let Some(rec) = cache.lookup(key.machine, key.kernel, &key.dims, a)
            && rec.status == RecordStatus::Ok
        {
            candidates.push(rec);
        }
        let pending: Vec<(P, serde_json::Value)> = candidates
            .into_iter()
            .filter(|r| r.note.as_deref() != Some(CONFIRMED))
            .filter_map(|r| Some((parse(&r.params)?, r.params.clone())))
            .collect();
        if pending.is_empty() {
            break;
        }
        let mut best: Vec<Option<Verdict>> = vec![None; pending.len()];
        for _ in 0..rounds.max(1) {
            for ((params, _), slot) in pending.iter().zip(best.iter_mut()) {
                let v = evaluate(params)?;
                let better = match (&v, &*slot) {
                    (Verdict::Timed { gflops, .. }, Some(Verdict::Timed { gflops: old, .. })) => {
                        gflops > old
                    }
                    (Verdict::Timed { .. }, _) => true,
                    (Verdict::Rejected { .. }, None) => true,
                    (Verdict::Rejected { .. }, Some(_)) => false,
                };
                if better {
                    *slot = Some(v);
                }
            }
        }
        for ((_, value), verdict) in pending.into_iter().zip(best) {
            let Some(verdict) = verdict else { continue };
            let record = verdict_record(key, value, verdict, Some(CONFIRMED));
            cache.append(record)?;
            retimed += 1;
        }
    }
    Ok(retimed)
}

/// What one tuning run leaves, after [`search_and_confirm`].
#[derive(Debug, Clone)]
pub struct Tuned<P> {
    /// Every candidate the search considered, in order (the defaults first).
    pub outcomes: Vec<CandidateOutcome<P>>,
    /// The fastest usable params after confirmation, with their latest record.
    pub best: Option<(P, CacheRecord)>,
    /// The defaults' latest record: re-timed beside the best by the confirmation.
    pub default: Option<CacheRecord>,
}

/// The whole tuning run every kernel shares: [`search`] from `default`, then [`confirm`] the
/// top candidates and the defaults, then read the winner and the defaults' latest timing.
/// `usable` filters cached records (threads, validity on this machine).
#[allow(clippy::too_many_arguments)]
pub fn search_and_confirm<S: SearchSpace>(
    space: &S,
    default: S::Params,
    budget: usize,
    seed: u64,
    cache: &mut KernelCache,
    key: &SearchKey<'_>,
    usable: impl Fn(&S::Params) -> bool,
    mut evaluate: impl FnMut(&S::Params) -> Result<Verdict, KernelError>,
) -> Result<Tuned<S::Params>, KernelError> {
    let outcomes = search(space, default, budget, seed, cache, key, &mut evaluate)?;
    confirm(cache, key, CONFIRM_TOP, CONFIRM_ROUNDS, Some(&default), &usable, &mut evaluate)?;
    let best = cached_best(cache, key, &usable).map(|(p, r)| (p, r.clone()));
    let default =
        cache.lookup(key.machine, key.kernel, &key.dims, &params_value(&default)).cloned();
    Ok(Tuned { outcomes, best, default })
}

/// The fastest cached params for `key` that parse as `P` and that `usable` accepts, with their
/// record. Records whose params no longer parse (a renamed field) are skipped.
pub fn cached_best<'c, P: DeserializeOwned>(
    cache: &'c KernelCache,
    key: &SearchKey<'_>,
    usable: impl Fn(&P) -> bool,
) -> Option<(P, &'c CacheRecord)> {
    let parse = |v: &serde_json::Value| serde_json::from_value::<P>(v.clone()).ok();
    let rec =
        cache.best(key.machine, key.kernel, &key.dims, |v| parse(v).is_some_and(|p| usable(&p)))?;
    Some((parse(&rec.params)?, rec))
}

/// Largest `|got − want|` (NaN if any element is NaN) and whether every element lies within
/// `bound(want)`.
pub(crate) fn compare(got: &[f32], want: &[f32], bound: impl Fn(f64) -> f64) -> (f64, bool) {
    let mut max_err = 0.0f64;
    let mut ok = got.len() == want.len();
    for (g, w) in got.iter().zip(want) {
        let e = (*g as f64 - *w as f64).abs();
        if e.is_nan() {
            return (f64::NAN, false);
        }
        max_err = max_err.max(e);
        ok &= e <= bound(*w as f64);
    }
    (max_err, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_flags_nan_and_out_of_bound() {
        assert_eq!(compare(&[1.0, 2.0], &[1.0, 2.5], |_| 1.0), (0.5, true));
        assert!(!compare(&[1.0, 2.0], &[1.0, 2.5], |_| 0.1).1);
        assert!(compare(&[f32::NAN], &[1.0], |_| 1.0).0.is_nan());
        assert!(!compare(&[1.0], &[1.0, 2.0], |_| 1.0).1);
    }

    /// A toy space of `0..10` where `p` runs at `p` GFLOP/s, except that the first timing of
    /// 3 is a lucky 100: the search alone crowns 3, confirmation crowns 9.
    #[test]
    fn confirmation_undoes_a_lucky_first_measurement() {
        struct Line;
        impl SearchSpace for Line {
            type Params = u32;
            fn random(&self, rng: &mut SplitMix64) -> u32 {
                rng.below(10) as u32
            }
            fn neighbour(&self, p: &u32, rng: &mut SplitMix64) -> u32 {
                (p + 1 + rng.below(2) as u32) % 10
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let mut cache = KernelCache::empty(dir.path().join("c.jsonl"));
        let key = SearchKey { machine: "m", kernel: "toy", dims: vec![1] };
        let mut timed = std::collections::HashMap::<u32, usize>::new();
        let mut evaluate = |p: &u32| {
            let n = timed.entry(*p).or_default();
            *n += 1;
            let gflops = if *p == 3 && *n == 1 { 100.0 } else { f64::from(*p) };
            Ok(Verdict::Timed {
                median_s: 1.0,
                repeats: 1,
                gflops,
                gb_per_s: None,
                max_abs_err: 0.0,
            })
        };
        search(&Line, 0, 64, 1, &mut cache, &key, &mut evaluate).unwrap();
        assert_eq!(cached_best::<u32>(&cache, &key, |_| true).map(|b| b.0), Some(3));
        let retimed =
            confirm::<u32>(&mut cache, &key, 3, 2, None, |_| true, &mut evaluate).unwrap();
        assert!(retimed >= 3);
        let (best, rec) = cached_best::<u32>(&cache, &key, |_| true).unwrap();
        assert_eq!((best, rec.note.as_deref()), (9, Some(CONFIRMED)));
        // A second confirmation finds the top already confirmed and times nothing.
        assert_eq!(
            confirm::<u32>(&mut cache, &key, 3, 2, None, |_| true, &mut evaluate).unwrap(),
            0
        );
    }

    #[test]
    fn nearest_picks_the_closest() {
        assert_eq!(nearest(&[8, 16, 32], 20), 1);
        assert_eq!(nearest(&[8, 16, 32], 1000), 2);
        assert_eq!(nearest(&[], 3), 0);
    }
}
