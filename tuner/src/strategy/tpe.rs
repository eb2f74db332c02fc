//! Tree-structured Parzen Estimator (Bergstra et al. 2011), as Optuna's `TPESampler` runs it on
//! discrete spaces.
//!
//! Why not `tpe::TpeOptimizer` as is: it models one parameter per optimizer and picks each
//! parameter's best candidate on its own, so the joint point it would return could be
//! infeasible or already tried, and it cannot be asked for the next-best joint candidate; it
//! also minimizes and keeps state between calls, where a strategy is a pure function of the
//! history. So this module does TPE's outer loop by hand (split the history into good and bad,
//! draw joint candidates from the good model, rank them by log l(x) − log g(x), keep the best
//! feasible untried one) and takes the per-dimension density estimators from the `tpe` crate:
//! its Parzen estimator (Gaussians on the observed indices, a prior Gaussian over the whole
//! range, neighbour-distance bandwidths clipped to [range/min(100, n + 1), range]) for ordered
//! dimensions, its densities at the integer indices standing in for discretized masses (the
//! bandwidth is rarely under an index), and its histogram estimator (counts plus one prior
//! count per choice) for categorical ones.

use std::convert::Infallible;

use rand::distr::Distribution;
use rand::rngs::Xoshiro256PlusPlus;
use tpe::density_estimation::{
    BuildDensityEstimator, DensityEstimator, HistogramEstimator, HistogramEstimatorBuilder,
    ParzenEstimator, ParzenEstimatorBuilder,
};

use super::common::{FULL_FIDELITY, Stream, Visited, is_candidate, random_unvisited, stream_rng};
use super::lhs::design_proposal;
use super::{Context, Dim, Observation, Outcome, Point, Proposal, Strategy};

/// Batches of candidates drawn before falling back to a random point, when every candidate of
/// a batch is infeasible or tried (common late in a study on a small space).
const CANDIDATE_BATCHES: usize = 8;

/// Tree-structured Parzen Estimator over the choice indices, at full fidelity.
///
/// The first [`Tpe::startup_trials`] trials are a Latin hypercube design (even coverage for
/// the models to start from). Then the finished trials are ranked (failed last) and split into
/// good, the top `ceil(gamma · n)` (at least 1, at most `max_good`), and bad, the rest. Each
/// dimension gets a density estimate over its indices from each group; `n_candidates` joint
/// points are drawn from the good model and the feasible untried one with the highest
/// log l(x) − log g(x) is proposed (more batches if none is; a random point if still none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tpe {
    /// Design trials before the models take over (default 10), capped by [`Tpe::startup_trials`].
    pub n_startup: usize,
    /// Candidates drawn from the good model per proposal (default 24, as Optuna).
    pub n_candidates: usize,
    /// The good fraction of the finished trials (default 0.25).
    pub gamma: f64,
    /// At most this many good trials (default 25, as Optuna).
    pub max_good: usize,
}

impl Default for Tpe {
    fn default() -> Self {
        Self { n_startup: 10, n_candidates: 24, gamma: 0.25, max_good: 25 }
    }
}

impl Tpe {
    /// The design trials for `budget`: `n_startup`, but at most a quarter of the budget (at
    /// least 1), so a small study keeps most of its trials for the models.
    pub fn startup_trials(&self, budget: usize) -> usize {
        self.n_startup.min((budget / 4).max(1)).max(1)
    }

    /// How many of `finished` trials count as good.
    fn good_count(&self, finished: usize) -> usize {
        let by_fraction = (self.gamma * finished as f64).ceil();
        // `as` saturates (NaN → 0); the clamps keep it in [1, finished].
        (by_fraction as usize).min(self.max_good).max(1).min(finished)
    }
}

impl Strategy for Tpe {
    fn name(&self) -> &'static str {
        "tpe"
    }

    fn propose(&self, ctx: &Context<'_>, history: &[Observation]) -> Proposal {
        if ctx.space.dims.iter().any(|dim| dim.size == 0) {
            return Proposal::Exhausted;
        }
        let visited = Visited::new(history);
        let mut rng = stream_rng(ctx.seed, Stream::Tpe, history.len() as u64);
        let startup = self.startup_trials(ctx.budget);
        let point = if history.len() < startup {
            design_proposal(ctx, &visited, startup, history.len(), &mut rng)
        } else {
            self.model_proposal(ctx, &visited, history, &mut rng)
                .or_else(|| random_unvisited(ctx, &visited, FULL_FIDELITY, &mut rng))
        };
        point.map_or(Proposal::Exhausted, |point| Proposal::Run { point, fidelity: FULL_FIDELITY })
    }
}

impl Tpe {
    /// The best-scoring feasible untried candidate drawn from the good model; `None` when too
    /// few trials are finished or no candidate qualifies.
    fn model_proposal(
        &self,
        ctx: &Context<'_>,
        visited: &Visited,
        history: &[Observation],
        rng: &mut Xoshiro256PlusPlus,
    ) -> Option<Point> {
        let mut finished: Vec<(f64, &Point)> = history
            .iter()
            .filter_map(|obs| match obs.outcome {
                Outcome::Pending => None,
                Outcome::Value(value) if !value.is_nan() => Some((value, &obs.point)),
                Outcome::Value(_) | Outcome::Failed => Some((f64::NEG_INFINITY, &obs.point)),
            })
            .collect();
        if finished.len() < 2 {
            return None;
        }
        // Stable: equal values keep trial order.
        finished.sort_by(|a, b| b.0.total_cmp(&a.0));
        let (good, bad) = finished.split_at(self.good_count(finished.len()));
        let models: Vec<DimModel> = ctx
            .space
            .dims
            .iter()
            .enumerate()
            .map(|(d, dim)| {
                DimModel::new(dim, good.iter().map(|g| g.1[d]), bad.iter().map(|b| b.1[d]))
            })
            .collect::<Option<_>>()?;
        for _ in 0..CANDIDATE_BATCHES {
            let mut candidates: Vec<(f64, Point)> = (0..self.n_candidates.max(1))
                .map(|_| {
                    let point: Point = models.iter().map(|model| model.sample(rng)).collect();
                    let score = models.iter().zip(&point).map(|(m, &i)| m.score(i)).sum();
                    (score, point)
                })
                .collect();
            // Stable: equal scores keep draw order.
            candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
            if let Some((_, point)) = candidates
                .into_iter()
                .find(|(_, point)| is_candidate(ctx, visited, point, FULL_FIDELITY))
            {
                return Some(point);
            }
        }
        None
    }
}

/// One dimension's good and bad density estimates over its choice indices.
enum DimModel {
    /// Ordered choices: Parzen estimators on [−0.5, size − 0.5), index = the rounded draw.
    Ordered { size: usize, good: ParzenEstimator, bad: ParzenEstimator },
    /// Categorical choices: histograms over the indices.
    Categorical { good: HistogramEstimator, bad: HistogramEstimator },
}

/// The value of a build that cannot fail.
fn infallible<T>(built: Result<T, Infallible>) -> T {
    match built {
        Ok(value) => value,
        Err(never) => match never {},
    }
}

impl DimModel {
    /// The models of `dim` from the good and bad trials' indices; `None` for an empty dim.
    fn new(
        dim: &Dim,
        good: impl Iterator<Item = usize> + Clone,
        bad: impl Iterator<Item = usize> + Clone,
    ) -> Option<Self> {
        let good = good.map(|i| i as f64);
        let bad = bad.map(|i| i as f64);
        if dim.ordered {
            let range = tpe::range(-0.5, dim.size as f64 - 0.5).ok()?;
            let builder = ParzenEstimatorBuilder::new();
            Some(DimModel::Ordered {
                size: dim.size,
                good: infallible(builder.build_density_estimator(good, range)),
                bad: infallible(builder.build_density_estimator(bad, range)),
            })
        } else {
            let range = tpe::categorical_range(dim.size).ok()?;
            let builder = HistogramEstimatorBuilder::new();
            Some(DimModel::Categorical {
                good: infallible(builder.build_density_estimator(good, range)),
                bad: infallible(builder.build_density_estimator(bad, range)),
            })
        }
    }

    /// An index drawn from the good model.
    fn sample(&self, rng: &mut Xoshiro256PlusPlus) -> usize {
        match self {
            DimModel::Ordered { size, good, .. } => {
                // `as` saturates (negative → 0); the `min` keeps the top edge inside.
                (good.sample(rng).round() as usize).min(size - 1)
            }
            DimModel::Categorical { good, .. } => good.sample(rng) as usize,
        }
    }

    /// log l(index) − log g(index).
    fn score(&self, index: usize) -> f64 {
        let x = index as f64;
        match self {
            DimModel::Ordered { good, bad, .. } => good.log_pdf(x) - bad.log_pdf(x),
            DimModel::Categorical { good, bad } => good.log_pdf(x) - bad.log_pdf(x),
        }
    }
}
