//! Successive halving across fidelities (Jamieson & Talwalkar 2016), synchronous.

use super::common::{Stream, Visited, fidelity_key, random_unvisited, stream_rng};
use super::{Context, Observation, Outcome, Point, Proposal, Strategy};

/// One rung of a successive-halving plan.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rung {
    /// The fidelity its trials run at; the top rung's is exactly 1.
    pub fidelity: f64,
    /// How many trials it holds.
    pub size: usize,
}

/// Successive halving: many points at a low fidelity, the best `1/eta` of them at `eta` times
/// the fidelity, and so on up to full trials.
///
/// Rung `r` runs at `min_fidelity · eta^r` (the last one at exactly 1) and holds
/// `max(floor(n0 / eta^r), 1)` trials, with the largest `n0` whose plan fits the budget
/// ([`Halving::plan`]). Rung 0 takes random feasible points; a higher rung takes the best
/// finished point of the rung below that it does not hold yet, and only once every trial of
/// the rung below has finished: until then it answers [`Proposal::Wait`], so the workers of a
/// shared study wait for the rung. Failed trials are never promoted. [`Proposal::Exhausted`]
/// once the top rung is full (or nothing is left to promote).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Halving {
    /// The reduction factor between rungs (default 3; below 2 counts as 2).
    pub eta: usize,
    /// The fidelity of rung 0, in (0, 1] (default 1/9: rungs at 1/9, 1/3 and 1 with `eta` 3).
    pub min_fidelity: f64,
}

impl Default for Halving {
    fn default() -> Self {
        Self { eta: 3, min_fidelity: 1.0 / 9.0 }
    }
}

/// Slack when comparing a rung's fidelity with 1, so 1/9 · 3 · 3 is the top rung.
const FIDELITY_SLACK: f64 = 1e-9;

impl Halving {
    /// The reduction factor actually used (at least 2).
    fn factor(&self) -> usize {
        self.eta.max(2)
    }

    /// The rungs' fidelities, lowest first: `min_fidelity · eta^r` below 1, then exactly 1.
    /// A `min_fidelity` that is not in (0, 1) gives the single rung 1.
    pub fn fidelities(&self) -> Vec<f64> {
        let mut fidelities = Vec::new();
        let mut fidelity = self.min_fidelity;
        if fidelity.is_finite() && fidelity > 0.0 {
            while fidelity < 1.0 - FIDELITY_SLACK {
                fidelities.push(fidelity);
                fidelity *= self.factor() as f64;
            }
        }
        fidelities.push(1.0);
        fidelities
    }

    /// The plan for `budget` trials in all and at most `max_points` distinct rung-0 points:
    /// the largest `n0` whose rung sizes sum to at most `budget`. When even one trial per rung
    /// does not fit, the lowest rungs are dropped (the top rung at fidelity 1 stays); an empty
    /// plan for a budget of 0.
    pub fn plan_for(&self, budget: usize, max_points: usize) -> Vec<Rung> {
        let mut fidelities = self.fidelities();
        let eta = self.factor();
        while fidelities.len() > budget.max(1) {
            fidelities.remove(0);
        }
        if budget == 0 || max_points == 0 {
            return Vec::new();
        }
        let sizes = |n0: usize| -> Vec<usize> {
            let mut divisor = 1usize;
            (0..fidelities.len())
                .map(|_| {
                    let size = (n0 / divisor).max(1);
                    divisor = divisor.saturating_mul(eta);
                    size
                })
                .collect()
        };
        let fits = |n0: usize| sizes(n0).iter().sum::<usize>() <= budget;
        let mut n0 = 1;
        while n0 < max_points && fits(n0 + 1) {
            n0 += 1;
        }
        fidelities.iter().zip(sizes(n0)).map(|(&fidelity, size)| Rung { fidelity, size }).collect()
    }

    /// The plan for `ctx`: [`Halving::plan_for`] with its budget and, on a space small enough
    /// to walk, its feasible point count.
    pub fn plan(&self, ctx: &Context<'_>) -> Vec<Rung> {
        const COUNT_LIMIT: u128 = 1 << 16;
        let max_points = if super::space_size(ctx.space) <= COUNT_LIMIT {
            super::enumerate_feasible(ctx).len()
        } else {
            usize::MAX
        };
        self.plan_for(ctx.budget, max_points)
    }
}

impl Strategy for Halving {
    fn name(&self) -> &'static str {
        "halving"
    }

    fn propose(&self, ctx: &Context<'_>, history: &[Observation]) -> Proposal {
        let visited = Visited::new(history);
        let plan = self.plan(ctx);
        let in_rung = |rung: &Rung| {
            let key = fidelity_key(rung.fidelity);
            history.iter().filter(move |obs| fidelity_key(obs.fidelity) == key)
        };
        for (r, rung) in plan.iter().enumerate() {
            if in_rung(rung).count() >= rung.size {
                continue;
            }
            let Some(below) = r.checked_sub(1).map(|b| &plan[b]) else {
                let mut rng = stream_rng(ctx.seed, Stream::Halving, history.len() as u64);
                match random_unvisited(ctx, &visited, rung.fidelity, &mut rng) {
                    Some(point) => return Proposal::Run { point, fidelity: rung.fidelity },
                    None => continue,
                }
            };
            if in_rung(below).any(|obs| obs.outcome == Outcome::Pending) {
                return Proposal::Wait;
            }
            let promoted: Vec<&Point> = in_rung(rung).map(|obs| &obs.point).collect();
            let mut finished: Vec<(f64, &Point)> = in_rung(below)
                .filter_map(|obs| match obs.outcome {
                    Outcome::Value(value) if !value.is_nan() => Some((value, &obs.point)),
                    _ => None,
                })
                .filter(|(_, point)| !promoted.contains(point))
                .filter(|(_, point)| !visited.contains(point, rung.fidelity))
                .collect();
            // Stable: equal values keep trial order.
            finished.sort_by(|a, b| b.0.total_cmp(&a.0));
            if let Some((_, point)) = finished.first() {
                return Proposal::Run { point: point.to_vec(), fidelity: rung.fidelity };
            }
        }
        Proposal::Exhausted
    }
}
