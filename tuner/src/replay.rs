//! Replaying a measured study: its stored trial results become a lookup table over the
//! points it measured, and a strategy searches that table as if it were measuring. With a
//! grid study as the table, this answers "how many trials does TPE need to reach 95% of the
//! grid's optimum?" from real measurements, for many seeds, in milliseconds.

use std::collections::HashMap;

use dyno_results::store::{Trial, TrialStatus};
use serde::Serialize;

use crate::objective::Goal;
use crate::strategy::{self, Context, Observation, Outcome, Point, Proposal, Space, StrategyKind};

/// Stored full-fidelity results by point.
#[derive(Debug, Clone)]
pub struct ReplayTable {
    /// The space the study searched.
    pub space: Space,
    /// The measured value of each point (the last measurement, if a point ran twice).
    pub values: HashMap<Point, f64>,
}

impl ReplayTable {
    /// The completed full-fidelity trials of a study, scored by `goal`.
    pub fn from_trials(space: Space, trials: &[Trial], goal: Goal) -> Self {
        let mut values = HashMap::new();
        for t in trials.iter().filter(|t| t.status == TrialStatus::Completed) {
            let Some(params) = &t.params else { continue };
            let point: Option<Point> =
                params.get("point").and_then(|p| serde_json::from_value(p.clone()).ok());
            let fidelity = params.get("fidelity").and_then(serde_json::Value::as_f64);
            let metrics = crate::study::trial_metrics(t);
            if let (Some(point), Some(f), Some(m)) = (point, fidelity, metrics)
                && f >= 1.0
            {
                values.insert(point, m.score(goal));
            }
        }
        Self { space, values }
    }

    /// The best stored value.
    pub fn best(&self) -> Option<f64> {
        self.values.values().copied().max_by(f64::total_cmp)
    }
}

/// One replayed search.
#[derive(Debug, Clone, Serialize)]
pub struct ReplayRun {
    /// The strategy.
    pub strategy: StrategyKind,
    /// Its seed.
    pub seed: u64,
    /// Trials until the best so far first reached the target (`None`: never, within the table).
    pub trials_to_target: Option<usize>,
    /// The best value the search found.
    pub best: f64,
}

/// Runs `kind` with `seed` over `table` (feasible = measured points, budget = the table's
/// size) until the best so far reaches `fraction` of the table's best.
pub fn replay(table: &ReplayTable, kind: StrategyKind, seed: u64, fraction: f64) -> ReplayRun {
    let target = table.best().unwrap_or(0.0) * fraction;
    let is_feasible = |p: &[usize]| table.values.contains_key(p);
    let ctx =
        Context { space: &table.space, feasible: &is_feasible, budget: table.values.len(), seed };
    let strategy = strategy::build(kind);
    let mut history: Vec<Observation> = Vec::new();
    let mut best = f64::NEG_INFINITY;
    let mut reached = None;
    while history.len() < table.values.len() {
        let Proposal::Run { point, fidelity } = strategy.propose(&ctx, &history) else { break };
        let value = table.values.get(&point).copied();
        let outcome = value.map_or(Outcome::Failed, Outcome::Value);
        history.push(Observation { point, fidelity, outcome });
        // Only full-fidelity results count towards the best (successive halving's lower rungs
        // are cheaper trials of the same point, not answers).
        if let Some(v) = value
            && fidelity >= 1.0
        {
            best = best.max(v);
            if reached.is_none() && best >= target {
                reached = Some(history.len());
                break;
            }
        }
    }
    ReplayRun { strategy: kind, seed, trials_to_target: reached, best }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::strategy::Dim;

    #[test]
    fn replay_finds_the_tables_best_and_counts_trials() {
        let space = Space {
            dims: vec![
                Dim { name: "a".into(), size: 10, ordered: true },
                Dim { name: "b".into(), size: 12, ordered: true },
            ],
        };
        let mut values = HashMap::new();
        for a in 0..10 {
            for b in 0..12 {
                let v = 100.0 - ((a as f64 - 6.0).powi(2) + (b as f64 - 3.0).powi(2));
                values.insert(vec![a, b], v);
            }
        }
        let table = ReplayTable { space, values };
        assert_eq!(table.best(), Some(100.0));
        let grid = replay(&table, StrategyKind::Grid, 0, 1.0);
        // The grid reaches the optimum at (6, 3): row 6, column 3, the 76th point.
        assert_eq!(grid.trials_to_target, Some(6 * 12 + 3 + 1));
        let tpe = replay(&table, StrategyKind::Tpe, 0, 0.95);
        assert!(tpe.trials_to_target.is_some_and(|n| n <= 30), "{tpe:?}");
        assert_eq!(
            replay(&table, StrategyKind::Tpe, 0, 0.95).trials_to_target,
            tpe.trials_to_target
        );
    }
}
