//! Latin hypercube design, then local search from the best points.

use rand::RngExt;
use rand::seq::SliceRandom;

use super::common::{
    FULL_FIDELITY, Stream, Visited, is_candidate, nearest_unvisited, neighbours, random_unvisited,
    stream_rng,
};
use super::{Context, Observation, Outcome, Point, Proposal, Space, Strategy, space_size};

/// A Latin hypercube design of `n_init` points, then hill climbing; all at full fidelity.
///
/// Trial `k < n_init` of the study is design point `k`: every dimension is cut into `n_init`
/// strata mapped onto its choice indices, a seeded permutation per dimension gives each design
/// point one stratum, and a seeded position inside the stratum picks the index. So the design
/// covers every dimension evenly however few trials it has. A design point that is infeasible
/// or already tried is replaced by the nearest feasible untried point (ties: the first in
/// lexicographic order).
///
/// After the design, local search: the untried feasible neighbours of the best finished point
/// (ordered dimensions: index ± 1, then ± 2; categorical: every other choice), in a seeded
/// order; once that neighbourhood is exhausted, the next-best point's; once every finished
/// point's is, a random feasible untried point. Failed trials are never climbed from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lhs {
    /// Design size; `None`: a third of the budget, at most 10 per dimension (the usual
    /// initial design of model-based search; more only delays the local search), at least
    /// dims + 1, at most the budget (and at least one point).
    pub n_init: Option<usize>,
}

impl Lhs {
    /// The design size for `ctx`, at most the size of the space.
    pub fn design_size(&self, ctx: &Context<'_>) -> usize {
        let dims = ctx.space.dims.len();
        let size = self.n_init.unwrap_or_else(|| {
            (ctx.budget / 3).min(10 * dims).max(dims + 1).min(ctx.budget).max(1)
        });
        usize::try_from(space_size(ctx.space)).map_or(size, |points| size.min(points))
    }
}

impl Strategy for Lhs {
    fn name(&self) -> &'static str {
        "lhs"
    }

    fn propose(&self, ctx: &Context<'_>, history: &[Observation]) -> Proposal {
        let visited = Visited::new(history);
        let n_init = self.design_size(ctx);
        let mut rng = stream_rng(ctx.seed, Stream::LocalSearch, history.len() as u64);
        let point = if history.len() < n_init {
            design_proposal(ctx, &visited, n_init, history.len(), &mut rng)
        } else {
            local_search(ctx, &visited, history, &mut rng)
                .or_else(|| random_unvisited(ctx, &visited, FULL_FIDELITY, &mut rng))
        };
        point.map_or(Proposal::Exhausted, |point| Proposal::Run { point, fidelity: FULL_FIDELITY })
    }
}

/// Point `index` of the seeded Latin hypercube design of `n` points over `space`. It depends
/// on the seed, `n` and `index` only, never on the history.
pub(crate) fn design_point(space: &Space, seed: u64, n: usize, index: usize) -> Point {
    let n = n.max(1);
    let mut jitter = stream_rng(seed, Stream::LhsJitter, index as u64);
    space
        .dims
        .iter()
        .enumerate()
        .map(|(d, dim)| {
            let mut strata: Vec<usize> = (0..n).collect();
            strata.shuffle(&mut stream_rng(seed, Stream::LhsPermutation, d as u64));
            let stratum = strata[index % n];
            let position = (stratum as f64 + jitter.random::<f64>()) / n as f64;
            // `as` saturates; the `min` keeps a position of exactly 1 inside the range.
            ((position * dim.size as f64) as usize).min(dim.size.saturating_sub(1))
        })
        .collect()
}

/// Design point `index` of `n`, or the nearest feasible untried point when it is infeasible or
/// tried; `None` when nothing is left.
pub(crate) fn design_proposal(
    ctx: &Context<'_>,
    visited: &Visited,
    n: usize,
    index: usize,
    rng: &mut rand::rngs::Xoshiro256PlusPlus,
) -> Option<Point> {
    let target = design_point(ctx.space, ctx.seed, n, index);
    nearest_unvisited(ctx, visited, &target, FULL_FIDELITY, rng)
}

/// The first untried feasible neighbour of the best finished points, best first.
fn local_search(
    ctx: &Context<'_>,
    visited: &Visited,
    history: &[Observation],
    rng: &mut rand::rngs::Xoshiro256PlusPlus,
) -> Option<Point> {
    let mut finished: Vec<(f64, &Point)> = history
        .iter()
        .filter_map(|obs| match obs.outcome {
            Outcome::Value(value) if !value.is_nan() => Some((value, &obs.point)),
            _ => None,
        })
        .collect();
    // Stable: equal values keep trial order.
    finished.sort_by(|a, b| b.0.total_cmp(&a.0));
    finished.into_iter().find_map(|(_, incumbent)| {
        neighbours(ctx.space, incumbent, rng)
            .into_iter()
            .find(|point| is_candidate(ctx, visited, point, FULL_FIDELITY))
    })
}
