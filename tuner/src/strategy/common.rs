//! What the strategies share: seeded generators, the set of tried (point, fidelity) pairs,
//! enumeration of the space, uniform draws and neighbourhoods.

use std::collections::HashSet;

use rand::RngExt;
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;

use super::{Context, Observation, Point, Space, space_size};

/// The fidelity of a full trial: every strategy but successive halving runs only these.
pub(crate) const FULL_FIDELITY: f64 = 1.0;

/// Spaces up to this many points are enumerated outright when drawing a random unvisited
/// point: cheaper than rejection once much of the space is tried.
const SMALL_SPACE: u128 = 4096;

/// Uniform draws tried before falling back to enumeration on a larger space.
const MAX_REJECTIONS: usize = 10_000;

/// The largest space enumerated as a fallback. Beyond it, a space whose feasible unvisited
/// points could not be found by [`MAX_REJECTIONS`] uniform draws counts as exhausted (walking
/// every point would take longer than any study).
const ENUMERATION_LIMIT: u128 = 1 << 24;

/// Independent random streams, so two strategies (or two purposes of one strategy) under one
/// seed never draw the same numbers.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub(crate) enum Stream {
    /// Uniform random points.
    Random = 1,
    /// The per-dimension permutations of a Latin hypercube design.
    LhsPermutation = 2,
    /// The position inside its stratum of a design point's coordinate.
    LhsJitter = 3,
    /// The order in which local search tries an incumbent's neighbours.
    LocalSearch = 4,
    /// TPE's candidate draws.
    Tpe = 5,
    /// Successive halving's rung-0 draws.
    Halving = 6,
}

pub(crate) fn stream_rng(seed: u64, stream: Stream, index: u64) -> Xoshiro256PlusPlus {
    dyno_workloads::seeded_stream(seed, stream as u64, index)
}

/// A fidelity as a hashable key: rounded to 1e-9, far finer than any two fidelities a study
/// tells apart, so that 1/9·3 and 1/3 are the same rung.
pub(crate) fn fidelity_key(fidelity: f64) -> u64 {
    // `as` saturates and maps NaN to 0; fidelities live in (0, 1].
    (fidelity * 1e9).round() as u64
}

/// Every (point, fidelity) of the history, pending or finished: never proposed again.
pub(crate) struct Visited {
    tried: HashSet<(Point, u64)>,
}

impl Visited {
    /// The tried pairs of `history`.
    pub(crate) fn new(history: &[Observation]) -> Self {
        let tried =
            history.iter().map(|obs| (obs.point.clone(), fidelity_key(obs.fidelity))).collect();
        Self { tried }
    }

    /// Whether `point` was tried (or is pending) at `fidelity`.
    pub(crate) fn contains(&self, point: &[usize], fidelity: f64) -> bool {
        // A borrowed lookup would need a custom key type; points are a few indices long.
        self.tried.contains(&(point.to_vec(), fidelity_key(fidelity)))
    }
}

/// Whether `point` may be proposed at `fidelity`: feasible and not tried there.
pub(crate) fn is_candidate(
    ctx: &Context<'_>,
    visited: &Visited,
    point: &[usize],
    fidelity: f64,
) -> bool {
    !visited.contains(point, fidelity) && (ctx.feasible)(point)
}

/// Every point of a space in lexicographic order (last dimension fastest).
pub(crate) struct Points {
    sizes: Vec<usize>,
    next: Option<Point>,
}

impl Points {
    /// Walks `space` from its first point; empty when a dimension has no choice.
    pub(crate) fn new(space: &Space) -> Self {
        let sizes: Vec<usize> = space.dims.iter().map(|dim| dim.size).collect();
        let next = sizes.iter().all(|&size| size > 0).then(|| vec![0; sizes.len()]);
        Self { sizes, next }
    }
}

impl Iterator for Points {
    type Item = Point;

    fn next(&mut self) -> Option<Point> {
        let current = self.next.take()?;
        let mut following = current.clone();
        for d in (0..following.len()).rev() {
            following[d] += 1;
            if following[d] < self.sizes[d] {
                self.next = Some(following);
                return Some(current);
            }
            following[d] = 0;
        }
        Some(current)
    }
}

/// A point drawn uniformly from the whole space (feasible or not).
pub(crate) fn uniform_point(space: &Space, rng: &mut Xoshiro256PlusPlus) -> Point {
    space.dims.iter().map(|dim| rng.random_range(0..dim.size.max(1))).collect()
}

/// Every feasible point not tried at `fidelity`, in lexicographic order; `None` when the space
/// is too large to walk.
fn enumerate_candidates(ctx: &Context<'_>, visited: &Visited, fidelity: f64) -> Option<Vec<Point>> {
    if space_size(ctx.space) > ENUMERATION_LIMIT {
        return None;
    }
    Some(Points::new(ctx.space).filter(|p| is_candidate(ctx, visited, p, fidelity)).collect())
}

/// A feasible point not tried at `fidelity`, uniform over those: rejection sampling, or
/// enumeration when the space is small or the draws keep missing. `None` when there is none
/// left.
pub(crate) fn random_unvisited(
    ctx: &Context<'_>,
    visited: &Visited,
    fidelity: f64,
    rng: &mut Xoshiro256PlusPlus,
) -> Option<Point> {
    if space_size(ctx.space) > SMALL_SPACE {
        for _ in 0..MAX_REJECTIONS {
            let point = uniform_point(ctx.space, rng);
            if is_candidate(ctx, visited, &point, fidelity) {
                return Some(point);
            }
        }
    }
    let candidates = enumerate_candidates(ctx, visited, fidelity)?;
    if candidates.is_empty() {
        return None;
    }
    let pick = rng.random_range(0..candidates.len());
    candidates.into_iter().nth(pick)
}

/// The distance between two points: per dimension, ordered choices count their index gap as
/// a fraction of the dimension's range, categorical ones 1 when they differ.
fn distance(space: &Space, a: &[usize], b: &[usize]) -> f64 {
    space
        .dims
        .iter()
        .zip(a.iter().zip(b))
        .map(|(dim, (&x, &y))| {
            if dim.ordered {
                x.abs_diff(y) as f64 / dim.size.saturating_sub(1).max(1) as f64
            } else if x == y {
                0.0
            } else {
                1.0
            }
        })
        .sum()
}

/// The feasible point not tried at `fidelity` nearest to `target` (ties: the first in
/// lexicographic order); on a space too large to walk, a random one. `None` when none is left.
pub(crate) fn nearest_unvisited(
    ctx: &Context<'_>,
    visited: &Visited,
    target: &[usize],
    fidelity: f64,
    rng: &mut Xoshiro256PlusPlus,
) -> Option<Point> {
    if space_size(ctx.space) == 0 {
        return None;
    }
    if is_candidate(ctx, visited, target, fidelity) {
        return Some(target.to_vec());
    }
    match enumerate_candidates(ctx, visited, fidelity) {
        Some(candidates) => candidates.into_iter().fold(None, |best: Option<(f64, Point)>, p| {
            let d = distance(ctx.space, target, &p);
            match best {
                Some((best_d, _)) if best_d <= d => best,
                _ => Some((d, p)),
            }
        }),
        None => random_unvisited(ctx, visited, fidelity, rng).map(|p| (0.0, p)),
    }
    .map(|(_, point)| point)
}

/// The neighbours of `point`, nearest first: one change of one dimension each (ordered: index
/// ± 1; categorical: every other choice) in a seeded order, then ordered index ± 2 in a seeded
/// order.
pub(crate) fn neighbours(
    space: &Space,
    point: &[usize],
    rng: &mut Xoshiro256PlusPlus,
) -> Vec<Point> {
    let mut near = Vec::new();
    let mut far = Vec::new();
    for (d, dim) in space.dims.iter().enumerate() {
        let current = point[d];
        let moved = |choice: usize, into: &mut Vec<Point>| {
            let mut neighbour = point.to_vec();
            neighbour[d] = choice;
            into.push(neighbour);
        };
        if dim.ordered {
            for step in [1, 2] {
                let into = if step == 1 { &mut near } else { &mut far };
                if let Some(below) = current.checked_sub(step) {
                    moved(below, into);
                }
                if current + step < dim.size {
                    moved(current + step, into);
                }
            }
        } else {
            for choice in (0..dim.size).filter(|&c| c != current) {
                moved(choice, &mut near);
            }
        }
    }
    near.shuffle(rng);
    far.shuffle(rng);
    near.extend(far);
    near
}
