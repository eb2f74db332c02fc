//! The search strategies on a synthetic objective with a known optimum: each finds it (or
//! comes within 5 %) in a stated budget, is deterministic for a seed, resumes from any prefix
//! of its history, and never proposes an infeasible or already tried point.

use std::collections::VecDeque;

use dyno_tuner::strategy::{
    Context, Dim, Grid, Halving, Observation, Outcome, Point, Proposal, Rung, Space, Strategy,
    StrategyKind, Tpe, build, enumerate_feasible, space_size,
};
use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};

/// 8 × 6 × 5 × 3 = 720 points: three ordered knobs and one categorical.
fn space() -> Space {
    let dim = |name: &str, size, ordered| Dim { name: name.to_owned(), size, ordered };
    Space {
        dims: vec![
            dim("tile_m", 8, true),
            dim("tile_n", 6, true),
            dim("threads", 5, true),
            dim("policy", 3, false),
        ],
    }
}

/// Two infeasible regions: large tiles together (memory) and policy 2 without threads.
fn feasible(point: &[usize]) -> bool {
    point[0] + point[1] <= 10 && !(point[3] == 2 && point[2] == 0)
}

/// A bowl centred on (5, 3, 2) plus a bonus for policy 1; fails where tile_m = 0 and
/// threads = 4. Maximum 115 at (5, 3, 2, 1).
fn objective(point: &[usize]) -> Outcome {
    if point[0] == 0 && point[2] == 4 {
        return Outcome::Failed;
    }
    let [a, b, c] = [point[0], point[1], point[2]].map(|x| x as f64);
    let bonus = [0.0, 15.0, 5.0][point[3]];
    Outcome::Value(
        100.0 - 3.0 * (a - 5.0).powi(2) - 4.0 * (b - 3.0).powi(2) - 5.0 * (c - 2.0).powi(2) + bonus,
    )
}

const OPTIMUM: f64 = 115.0;
const OPTIMUM_POINT: [usize; 4] = [5, 3, 2, 1];

/// The objective at `fidelity`: the full value minus a fidelity-dependent offset, so a low
/// fidelity ranks points exactly as a full trial does.
fn objective_at(point: &[usize], fidelity: f64) -> Outcome {
    match objective(point) {
        Outcome::Value(value) => Outcome::Value(value - 10.0 * (1.0 - fidelity)),
        other => other,
    }
}

fn context<'a>(
    space: &'a Space,
    feasible: &'a dyn Fn(&[usize]) -> bool,
    budget: usize,
    seed: u64,
) -> Context<'a> {
    Context { space, feasible, budget, seed }
}

/// Drives `strategy` synchronously (propose, evaluate, record) for at most `budget` trials.
/// Returns the proposals, in order, and the history they built.
fn drive(strategy: &dyn Strategy, budget: usize, seed: u64) -> (Vec<Proposal>, Vec<Observation>) {
    let space = space();
    let ctx = context(&space, &feasible, budget, seed);
    let mut proposals = Vec::new();
    let mut history = Vec::new();
    while history.len() < budget {
        let proposal = strategy.propose(&ctx, &history);
        proposals.push(proposal.clone());
        match proposal {
            Proposal::Run { point, fidelity } => {
                let outcome = objective_at(&point, fidelity);
                history.push(Observation { point, fidelity, outcome });
            }
            Proposal::Wait => panic!("{} waits with nothing pending", strategy.name()),
            Proposal::Exhausted => break,
        }
    }
    (proposals, history)
}

/// The best full-fidelity value of `history`, and the trial (1-based) that first reached
/// `target` if any did.
fn best_full(history: &[Observation], target: f64) -> (f64, Option<usize>) {
    let mut best = f64::NEG_INFINITY;
    let mut reached = None;
    for (i, obs) in history.iter().enumerate() {
        if let Outcome::Value(value) = obs.outcome
            && obs.fidelity == 1.0
        {
            best = best.max(value);
            if reached.is_none() && value >= target {
                reached = Some(i + 1);
            }
        }
    }
    (best, reached)
}

fn feasible_count() -> usize {
    let space = space();
    enumerate_feasible(&context(&space, &feasible, 0, 0)).len()
}

#[test]
fn the_synthetic_space_is_large_enough_and_its_optimum_feasible() {
    let space = space();
    assert_eq!(space_size(&space), 720);
    let count = feasible_count();
    assert!((100..720).contains(&count), "{count} feasible points");
    assert!(feasible(&OPTIMUM_POINT));
    assert_eq!(objective(&OPTIMUM_POINT), Outcome::Value(OPTIMUM));
    let ctx = context(&space, &feasible, 0, 0);
    let best = enumerate_feasible(&ctx)
        .iter()
        .filter_map(|p| match objective(p) {
            Outcome::Value(v) => Some(v),
            _ => None,
        })
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(best, OPTIMUM);
}

#[test]
fn grid_enumerates_exactly_the_feasible_points_then_exhausts() {
    let space = space();
    let ctx = context(&space, &feasible, usize::MAX, 0);
    let expected = enumerate_feasible(&ctx);
    let (proposals, history) = drive(&Grid, 10_000, 0);
    let points: Vec<Point> = history.iter().map(|obs| obs.point.clone()).collect();
    assert_eq!(points, expected);
    assert!(points.windows(2).all(|w| w[0] < w[1]), "lexicographic order");
    assert_eq!(proposals.last(), Some(&Proposal::Exhausted));
    assert_eq!(Grid.propose(&ctx, &history), Proposal::Exhausted);
    assert_eq!(best_full(&history, OPTIMUM).0, OPTIMUM);
}

#[test]
fn random_reaches_95_percent_of_the_optimum_within_half_the_feasible_points() {
    let budget = feasible_count() / 2;
    let (_, history) = drive(build(StrategyKind::Random).as_ref(), budget, 1);
    let (best, reached) = best_full(&history, 0.95 * OPTIMUM);
    assert!(best >= 0.95 * OPTIMUM, "best {best} in {budget} trials");
    eprintln!("random: 95 % after {reached:?} of {budget} trials");
}

#[test]
fn random_exhausts_after_every_feasible_point() {
    let count = feasible_count();
    let (proposals, history) = drive(build(StrategyKind::Random).as_ref(), count + 5, 3);
    assert_eq!(history.len(), count);
    assert_eq!(proposals.last(), Some(&Proposal::Exhausted));
    assert_eq!(best_full(&history, OPTIMUM).0, OPTIMUM);
}

#[test]
fn lhs_finds_the_optimum_within_a_fifth_of_the_feasible_points() {
    let budget = feasible_count() / 5;
    let (_, history) = drive(build(StrategyKind::Lhs).as_ref(), budget, 1);
    let (best, reached) = best_full(&history, OPTIMUM);
    assert_eq!(best, OPTIMUM, "best {best} in {budget} trials");
    eprintln!("lhs: optimum after {reached:?} of {budget} trials");
}

#[test]
fn tpe_finds_the_optimum_within_a_fifth_of_the_feasible_points() {
    let budget = feasible_count() / 5;
    let (_, history) = drive(build(StrategyKind::Tpe).as_ref(), budget, 1);
    let (best, reached) = best_full(&history, OPTIMUM);
    assert_eq!(best, OPTIMUM, "best {best} in {budget} trials");
    eprintln!("tpe: optimum after {reached:?} of {budget} trials");
}

/// The target: TPE within 95 % of the grid's optimum in a quarter of the grid's trials,
/// for seeds 0 to 4.
#[test]
fn tpe_reaches_95_percent_within_a_quarter_of_the_grid_trials_for_seeds_0_to_4() {
    let budget = feasible_count() / 4;
    for seed in 0..5 {
        let (_, history) = drive(build(StrategyKind::Tpe).as_ref(), budget, seed);
        let (best, reached) = best_full(&history, 0.95 * OPTIMUM);
        eprintln!("tpe seed {seed}: 95 % after {reached:?} of {budget} trials, best {best}");
        assert!(best >= 0.95 * OPTIMUM, "seed {seed}: best {best} in {budget} trials");
    }
}

#[test]
fn halving_top_rung_reaches_95_percent_of_the_optimum() {
    let budget = feasible_count() / 3;
    let halving = build(StrategyKind::Halving);
    let (_, history) = drive(halving.as_ref(), budget, 1);
    let (best, _) = best_full(&history, OPTIMUM);
    assert!(best >= 0.95 * OPTIMUM, "best {best} in {budget} trials");
    let space = space();
    let ctx = context(&space, &feasible, budget, 1);
    assert_eq!(halving.propose(&ctx, &history), Proposal::Exhausted, "the plan is complete");
    eprintln!("halving: best {best} in {} of {budget} trials", history.len());
}

#[test]
fn halving_plan_fits_the_budget_with_default_fidelities() {
    let halving = Halving::default();
    let fidelities = halving.fidelities();
    assert_eq!(fidelities.len(), 3);
    assert!((fidelities[0] - 1.0 / 9.0).abs() < 1e-12);
    assert!((fidelities[1] - 1.0 / 3.0).abs() < 1e-12);
    assert_eq!(fidelities[2], 1.0);
    let sizes = |plan: &[Rung]| plan.iter().map(|rung| rung.size).collect::<Vec<_>>();
    // 21 + 7 + 2 = 30; n0 = 22 would need 22 + 7 + 2 = 31.
    assert_eq!(sizes(&halving.plan_for(30, usize::MAX)), [21, 7, 2]);
    assert_eq!(sizes(&halving.plan_for(100, 40)), [40, 13, 4], "rung 0 capped by the points");
    assert_eq!(sizes(&halving.plan_for(2, usize::MAX)), [1, 1], "lowest rung dropped");
    assert_eq!(halving.plan_for(2, usize::MAX)[1].fidelity, 1.0);
    assert!(halving.plan_for(0, usize::MAX).is_empty());
    for budget in 1..300 {
        let plan = halving.plan_for(budget, usize::MAX);
        let total: usize = plan.iter().map(|rung| rung.size).sum();
        assert!(total <= budget, "budget {budget}: {plan:?}");
        assert_eq!(plan.last().map(|rung| rung.fidelity), Some(1.0));
        assert!(plan.windows(2).all(|w| w[0].size >= w[1].size && w[0].fidelity < w[1].fidelity));
        let n0 = plan[0].size;
        let bigger = Halving::default().plan_for(usize::MAX, n0 + 1);
        if plan.len() == 3 {
            let needed: usize = bigger.iter().map(|rung| rung.size).sum();
            assert!(needed > budget, "budget {budget}: n0 {n0} is not the largest");
        }
    }
}

#[test]
fn halving_waits_while_the_rung_below_has_pending_trials() {
    let space = space();
    let ctx = context(&space, &feasible, 30, 4);
    let halving = Halving::default();
    let plan = halving.plan(&ctx);
    let mut history: Vec<Observation> = Vec::new();
    for _ in 0..plan[0].size {
        let Proposal::Run { point, fidelity } = halving.propose(&ctx, &history) else {
            panic!("rung 0 should propose");
        };
        assert_eq!(fidelity, plan[0].fidelity);
        history.push(Observation { point, fidelity, outcome: Outcome::Pending });
    }
    for i in 0..history.len() {
        assert_eq!(halving.propose(&ctx, &history), Proposal::Wait, "{i} finished");
        history[i].outcome = objective_at(&history[i].point, history[i].fidelity);
    }
    let best_rung0 = history
        .iter()
        .filter_map(|obs| match obs.outcome {
            Outcome::Value(v) => Some((v, obs.point.clone())),
            _ => None,
        })
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, point)| point);
    match halving.propose(&ctx, &history) {
        Proposal::Run { point, fidelity } => {
            assert_eq!(fidelity, plan[1].fidelity);
            assert_eq!(Some(point), best_rung0, "the best of rung 0 is promoted first");
        }
        other => panic!("expected a promotion, got {other:?}"),
    }
}

#[test]
fn halving_top_rung_holds_the_best_rung_0_point() {
    let budget = 60;
    let (_, history) = drive(&Halving::default(), budget, 9);
    let best_of = |fidelity: f64| {
        history
            .iter()
            .filter(|obs| (obs.fidelity - fidelity).abs() < 1e-9)
            .filter_map(|obs| match obs.outcome {
                Outcome::Value(v) => Some((v, obs.point.clone())),
                _ => None,
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, point)| point)
    };
    let top: Vec<&Point> =
        history.iter().filter(|obs| obs.fidelity == 1.0).map(|obs| &obs.point).collect();
    let plan = Halving::default().plan_for(budget, usize::MAX);
    assert_eq!(top.len(), plan[2].size);
    let best = best_of(1.0 / 9.0).expect("rung 0 has values");
    assert!(top.contains(&&best), "{best:?} not in the top rung {top:?}");
}

#[test]
fn same_seed_gives_the_same_proposals_and_another_seed_others() {
    let budget = 80;
    for kind in StrategyKind::ALL {
        let strategy = build(kind);
        let (first, _) = drive(strategy.as_ref(), budget, 7);
        let (again, _) = drive(strategy.as_ref(), budget, 7);
        assert_eq!(first, again, "{kind}");
        if kind != StrategyKind::Grid {
            let (other, _) = drive(strategy.as_ref(), budget, 8);
            assert_ne!(first, other, "{kind}");
        }
    }
}

#[test]
fn a_truncated_history_replays_to_the_same_proposal() {
    let budget = 80;
    let space = space();
    for kind in StrategyKind::ALL {
        let strategy = build(kind);
        let (proposals, history) = drive(strategy.as_ref(), budget, 11);
        let ctx = context(&space, &feasible, budget, 11);
        for k in (0..proposals.len()).step_by(3) {
            assert_eq!(strategy.propose(&ctx, &history[..k]), proposals[k], "{kind} at {k}");
        }
    }
}

/// Several workers' worth of pending trials and some failures: no strategy ever proposes an
/// infeasible point or a (point, fidelity) already in the history.
#[test]
fn never_proposes_an_infeasible_or_tried_point_with_pending_and_failed_trials() {
    let space = space();
    for kind in StrategyKind::ALL {
        let strategy = build(kind);
        let budget = 150;
        let ctx = context(&space, &feasible, budget, 5);
        let mut workers = Xoshiro256PlusPlus::seed_from_u64(99);
        let mut history: Vec<Observation> = Vec::new();
        let mut pending: VecDeque<usize> = VecDeque::new();
        let mut failed = 0;
        let mut waits = 0;
        let finish = |history: &mut Vec<Observation>, i: usize| {
            history[i].outcome = objective_at(&history[i].point, history[i].fidelity);
        };
        while history.len() < budget {
            if pending.len() > 4 || (!pending.is_empty() && workers.random_bool(0.3)) {
                let i = pending.pop_front().expect("not empty");
                finish(&mut history, i);
            }
            match strategy.propose(&ctx, &history) {
                Proposal::Run { point, fidelity } => {
                    assert!(feasible(&point), "{kind} proposed infeasible {point:?}");
                    assert!(
                        !history.iter().any(|obs| obs.point == point && obs.fidelity == fidelity),
                        "{kind} proposed {point:?} at {fidelity} again"
                    );
                    assert!(fidelity > 0.0 && fidelity <= 1.0);
                    if objective(&point) == Outcome::Failed {
                        failed += 1;
                    }
                    history.push(Observation { point, fidelity, outcome: Outcome::Pending });
                    pending.push_back(history.len() - 1);
                }
                Proposal::Wait => {
                    waits += 1;
                    let i =
                        pending.pop_front().unwrap_or_else(|| panic!("{kind} waits on nothing"));
                    finish(&mut history, i);
                }
                Proposal::Exhausted => break,
            }
        }
        assert!(history.len() > 20, "{kind} ran {} trials", history.len());
        eprintln!("{kind}: {} trials, {failed} failed, {waits} waits", history.len());
        if kind == StrategyKind::Halving {
            assert!(waits > 0, "halving never waited");
        }
    }
}

#[test]
fn every_strategy_exhausts_a_tiny_space() {
    let space = Space { dims: vec![Dim { name: "x".into(), size: 3, ordered: true }] };
    let feasible = |p: &[usize]| p[0] != 1;
    for kind in [StrategyKind::Grid, StrategyKind::Random, StrategyKind::Lhs, StrategyKind::Tpe] {
        let strategy = build(kind);
        let ctx = context(&space, &feasible, 10, 0);
        let mut history = Vec::new();
        for _ in 0..2 {
            let Proposal::Run { point, fidelity } = strategy.propose(&ctx, &history) else {
                panic!("{kind} should propose");
            };
            history.push(Observation { point, fidelity, outcome: Outcome::Value(1.0) });
        }
        assert_eq!(strategy.propose(&ctx, &history), Proposal::Exhausted, "{kind}");
    }
}

#[test]
fn strategy_kinds_parse_display_and_serialize_by_name() {
    for (kind, name) in
        StrategyKind::ALL.into_iter().zip(["grid", "random", "lhs", "tpe", "halving"])
    {
        assert_eq!(name.parse::<StrategyKind>(), Ok(kind));
        assert_eq!(kind.to_string(), name);
        assert_eq!(build(kind).name(), name);
        assert_eq!(serde_json::to_string(&kind).expect("serializes"), format!("\"{name}\""));
        let back: StrategyKind = serde_json::from_str(&format!("\"{name}\"")).expect("parses");
        assert_eq!(back, kind);
    }
    let error = "bayes".parse::<StrategyKind>().expect_err("unknown");
    assert_eq!(
        error.to_string(),
        "unknown strategy `bayes` (expected one of: grid, random, lhs, tpe, halving)"
    );
}

#[test]
fn tpe_startup_is_capped_by_the_budget() {
    let tpe = Tpe::default();
    assert_eq!(tpe.startup_trials(1000), 10);
    assert_eq!(tpe.startup_trials(20), 5);
    assert_eq!(tpe.startup_trials(2), 1);
}

/// A harder space for TPE: 5760 points whose knobs interact (a ridge along tile_m − tile_n = 2,
/// a categorical bonus that depends on threads).
fn interacting_space() -> Space {
    let dim = |name: &str, size, ordered| Dim { name: name.to_owned(), size, ordered };
    Space {
        dims: vec![
            dim("tile_m", 10, true),
            dim("tile_n", 8, true),
            dim("threads", 6, true),
            dim("policy", 4, false),
            dim("queue", 3, true),
        ],
    }
}

fn interacting_feasible(p: &[usize]) -> bool {
    p[0] + p[1] <= 14 && !(p[3] == 3 && p[2] < 2)
}

/// Maximum 114.5; fails where tile_m ≥ 8 and threads = 5.
fn interacting_objective(p: &[usize]) -> Outcome {
    if p[0] >= 8 && p[2] == 5 {
        return Outcome::Failed;
    }
    let [a, b, c, q] = [p[0], p[1], p[2], p[4]].map(|x| x as f64);
    let bonus = match p[3] {
        0 => 0.0,
        1 => 10.0 + 2.0 * c,
        2 => 20.0 - 3.0 * c,
        _ => 5.0,
    };
    Outcome::Value(
        100.0
            - 2.0 * (a - b - 2.0).powi(2)
            - 1.5 * (a + b - 11.0).powi(2)
            - 2.0 * (c - 3.0).powi(2)
            - 3.0 * (q - 1.0).powi(2)
            + bonus,
    )
}

#[test]
fn tpe_reaches_95_percent_on_interacting_knobs_within_60_trials_for_seeds_0_to_4() {
    let space = interacting_space();
    let optimum = enumerate_feasible(&context(&space, &interacting_feasible, 0, 0))
        .iter()
        .filter_map(|p| match interacting_objective(p) {
            Outcome::Value(v) => Some(v),
            _ => None,
        })
        .fold(f64::NEG_INFINITY, f64::max);
    assert_eq!(optimum, 114.5);
    let budget = 60;
    let tpe = Tpe::default();
    for seed in 0..5 {
        let ctx = context(&space, &interacting_feasible, budget, seed);
        let mut history = Vec::new();
        while history.len() < budget {
            let Proposal::Run { point, fidelity } = tpe.propose(&ctx, &history) else {
                panic!("seed {seed}: tpe stopped early");
            };
            let outcome = interacting_objective(&point);
            history.push(Observation { point, fidelity, outcome });
        }
        let (best, reached) = best_full(&history, 0.95 * optimum);
        eprintln!("tpe interacting seed {seed}: 95 % after {reached:?} of {budget} trials");
        assert!(best >= 0.95 * optimum, "seed {seed}: best {best}");
    }
}
