//! Search strategies over a discrete space, as pure functions of the study's history.
//!
//! A strategy never holds state between proposals: [`Strategy::propose`] sees every trial of
//! the study so far (finished, failed, or still pending on some worker) and returns the next
//! one to run. Its randomness is drawn from a generator seeded by the study seed and the
//! history's length, so the same history always gives the same proposal. That is what makes
//! a killed study resume exactly where it stopped and lets several workers share one study
//! through the store: whoever asks next sees the same history and gets the same answer.
//!
//! Every strategy maximizes. Failed trials count as the worst outcome; pending trials are
//! never proposed again.

use serde::{Deserialize, Serialize};

/// One dimension of the space: `size` choices, indexed `0..size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dim {
    /// The knob's name (for reports), e.g. `batch.max_num_seqs`.
    pub name: String,
    /// Number of choices (at least 1).
    pub size: usize,
    /// Whether the choices are ordered (numbers, small to large): neighbours are index ± 1.
    /// Unordered (categorical) choices are all each other's neighbours.
    pub ordered: bool,
}

/// A discrete space: the cross product of its dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    /// The dimensions, in a fixed order.
    pub dims: Vec<Dim>,
}

/// A point of a [`Space`]: one choice index per dimension.
pub type Point = Vec<usize>;

/// Where a trial of the history stands.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum Outcome {
    /// Claimed or queued but not finished: never propose the same (point, fidelity) again.
    Pending,
    /// Finished with this objective value (higher is better).
    Value(f64),
    /// Failed (engine error, out of memory, timeout): worse than any value.
    Failed,
}

/// One trial of the study's history, in trial-number order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// What was tried.
    pub point: Point,
    /// At which fidelity, in (0, 1]: the fraction of a full trial (1 = full length).
    pub fidelity: f64,
    /// How it went.
    pub outcome: Outcome,
}

/// What a strategy wants next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Proposal {
    /// Run `point` at `fidelity` (in (0, 1]).
    Run {
        /// The point.
        point: Point,
        /// The fidelity.
        fidelity: f64,
    },
    /// Nothing to propose until pending trials finish (a rung of successive halving waits
    /// for its last results).
    Wait,
    /// Nothing left to try (the feasible space is exhausted, or the strategy's plan is done).
    Exhausted,
}

/// Everything a strategy may look at besides the history.
pub struct Context<'a> {
    /// The space.
    pub space: &'a Space,
    /// Points that violate a constraint are never proposed.
    pub feasible: &'a dyn Fn(&[usize]) -> bool,
    /// Trials the study may run in all (at any fidelity); strategies that plan (Latin
    /// hypercube size, halving rungs) size their plan by it.
    pub budget: usize,
    /// The study's seed.
    pub seed: u64,
}

/// A search strategy. See the module documentation for the contract.
pub trait Strategy: Send + Sync {
    /// The strategy's name as the command line spells it (`grid`, `random`, `lhs`, `tpe`,
    /// `halving`).
    fn name(&self) -> &'static str;

    /// The next trial given `history` (every trial so far, in trial-number order). A pure
    /// function of (`self`, `ctx`, `history`).
    fn propose(&self, ctx: &Context<'_>, history: &[Observation]) -> Proposal;
}
