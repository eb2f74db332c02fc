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
//!
//! The strategies: [`Grid`] (every feasible point in order), [`Random`] (uniform over the
//! feasible unvisited points), [`Lhs`] (a Latin hypercube design, then local search from the
//! best point), [`Tpe`] (Tree-structured Parzen Estimator) and [`Halving`] (successive halving
//! across fidelities). [`build`] makes one of them, with its defaults, from a [`StrategyKind`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

mod common;
mod grid;
mod halving;
mod lhs;
mod random;
mod tpe;

pub use grid::Grid;
pub use halving::{Halving, Rung};
pub use lhs::Lhs;
pub use random::Random;
pub use tpe::Tpe;

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

/// Which strategy a study uses, as the command line and the store spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    /// [`Grid`]: every feasible point in lexicographic order.
    Grid,
    /// [`Random`]: uniform over the feasible unvisited points.
    Random,
    /// [`Lhs`]: a Latin hypercube design, then local search.
    Lhs,
    /// [`Tpe`]: Tree-structured Parzen Estimator.
    Tpe,
    /// [`Halving`]: successive halving across fidelities.
    Halving,
}

impl StrategyKind {
    /// Every kind, in the order the documentation lists them.
    pub const ALL: [StrategyKind; 5] = [
        StrategyKind::Grid,
        StrategyKind::Random,
        StrategyKind::Lhs,
        StrategyKind::Tpe,
        StrategyKind::Halving,
    ];

    /// The name as the command line spells it (the same as [`Strategy::name`]).
    pub fn name(self) -> &'static str {
        match self {
            StrategyKind::Grid => "grid",
            StrategyKind::Random => "random",
            StrategyKind::Lhs => "lhs",
            StrategyKind::Tpe => "tpe",
            StrategyKind::Halving => "halving",
        }
    }
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A strategy name that is none of [`StrategyKind`]'s; the message lists the valid names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy `{0}` (expected one of: grid, random, lhs, tpe, halving)")]
pub struct UnknownStrategy(
    /// The name as given.
    pub String,
);

impl FromStr for StrategyKind {
    type Err = UnknownStrategy;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        StrategyKind::ALL
            .into_iter()
            .find(|kind| kind.name() == name)
            .ok_or_else(|| UnknownStrategy(name.to_owned()))
    }
}

/// The strategy of `kind` with its default settings.
pub fn build(kind: StrategyKind) -> Box<dyn Strategy> {
    match kind {
        StrategyKind::Grid => Box::new(Grid),
        StrategyKind::Random => Box::new(Random),
        StrategyKind::Lhs => Box::new(Lhs::default()),
        StrategyKind::Tpe => Box::new(Tpe::default()),
        StrategyKind::Halving => Box::new(Halving::default()),
    }
}

/// The number of points of `space` (feasible or not), saturating at `u128::MAX`; 0 when a
/// dimension has no choice.
pub fn space_size(space: &Space) -> u128 {
    space.dims.iter().fold(1u128, |size, dim| size.saturating_mul(dim.size as u128))
}

/// Every point of `space`, feasible or not, in lexicographic order (last dimension fastest).
pub fn all_points(space: &Space) -> impl Iterator<Item = Point> {
    common::Points::new(space)
}

/// Every feasible point of `ctx.space` in lexicographic order (last dimension fastest). It
/// walks the whole space: meant for spaces small enough to list (tests, reports, grid search).
pub fn enumerate_feasible(ctx: &Context<'_>) -> Vec<Point> {
    common::Points::new(ctx.space).filter(|point| (ctx.feasible)(point)).collect()
}
