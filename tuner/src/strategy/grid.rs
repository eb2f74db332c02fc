//! Grid search: every feasible point, in lexicographic order.

use super::common::{FULL_FIDELITY, Points, Visited, is_candidate};
use super::{Context, Observation, Proposal, Strategy};

/// Every feasible point of the space in lexicographic order (last dimension fastest), each
/// once at full fidelity; [`Proposal::Exhausted`] once all are in the history.
///
/// The reference the other strategies are measured against: it finds the optimum for sure,
/// at the price of the whole feasible space. It ignores the budget (the study stops it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Grid;

impl Strategy for Grid {
    fn name(&self) -> &'static str {
        "grid"
    }

    fn propose(&self, ctx: &Context<'_>, history: &[Observation]) -> Proposal {
        let visited = Visited::new(history);
        Points::new(ctx.space)
            .find(|point| is_candidate(ctx, &visited, point, FULL_FIDELITY))
            .map_or(Proposal::Exhausted, |point| Proposal::Run { point, fidelity: FULL_FIDELITY })
    }
}
