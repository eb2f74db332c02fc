//! Random search: uniform over the feasible points not tried yet.

use super::common::{FULL_FIDELITY, Stream, Visited, random_unvisited, stream_rng};
use super::{Context, Observation, Proposal, Strategy};

/// A feasible point not in the history, uniform over those, at full fidelity;
/// [`Proposal::Exhausted`] when none is left.
///
/// Draws uniform points and rejects the infeasible and tried ones (up to a cap), or lists the
/// feasible untried points and picks one when the space is small or the draws keep missing.
/// The generator is seeded by the study seed and the history's length.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Random;

impl Strategy for Random {
    fn name(&self) -> &'static str {
        "random"
    }

    fn propose(&self, ctx: &Context<'_>, history: &[Observation]) -> Proposal {
        let visited = Visited::new(history);
        let mut rng = stream_rng(ctx.seed, Stream::Random, history.len() as u64);
        random_unvisited(ctx, &visited, FULL_FIDELITY, &mut rng)
            .map_or(Proposal::Exhausted, |point| Proposal::Run { point, fidelity: FULL_FIDELITY })
    }
}
