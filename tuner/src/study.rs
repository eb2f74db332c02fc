//! A tuning study: the loop that asks a strategy for trials, measures them and commits each to
//! the store as it finishes.
//!
//! The store is the study's only memory. A worker claims a queued trial if there is one
//! (under a row lock, `SKIP LOCKED` on PostgreSQL), otherwise reads the history, asks the
//! strategy for the next trial and queues it (a unique key per point and fidelity, so two
//! workers that ask at once queue it once), then claims again. Strategies are pure functions
//! of the history, so a killed study resumes where it stopped and several processes sharing
//! one PostgreSQL study split its trials between them.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use dyno_engine::{EngineConfig, ModelConfig, WeightFormat};
use dyno_harness::provenance::{is_dead_local_process, local_hostname};
use dyno_results::store::{
    NewTrial, RunStatus, Store, StoreError, Study, StudyInfo, Trial, TrialOutcome, TrialStatus,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::constraints::{self, Limits, reason_kind};
use crate::evaluate::{Evaluator, LoadLevel};
use crate::objective::{Goal, TrialMetrics, pareto_frontier};
use crate::space::ConfigSpace;
use crate::strategy::{self, Context, Observation, Outcome, Point, Proposal, StrategyKind};

/// Everything that defines a study; stored with it, and a resumed or joining worker must
/// bring the same.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudySettings {
    /// Hardware target (`cpu`).
    pub hw: String,
    /// Model name.
    pub model: String,
    /// Workload name.
    pub workload: String,
    /// Search strategy.
    pub strategy: StrategyKind,
    /// Trials at most (queued infeasible points are never counted: strategies skip them).
    pub budget: usize,
    /// Seed of the strategy.
    pub seed: u64,
    /// What is maximized.
    pub goal: Goal,
    /// At which load each trial measures.
    pub level: LoadLevel,
    /// Measured requests of a full-fidelity trial.
    pub requests: usize,
    /// Largest mean KL divergence against f32 a weight format may have, nats.
    pub max_kl: f64,
    /// Memory, cores and the workload's longest prompt.
    pub limits: Limits,
    /// The space searched.
    pub space: ConfigSpace,
    /// The config every knob not in the space is taken from; also the baseline trial.
    pub base: EngineConfig,
}

impl StudySettings {
    /// The engine config of `point`: the base with the point's knobs set, and on GPU targets
    /// the KV pool sized to fill each device.
    pub fn candidate(&self, model: &ModelConfig, point: &[usize]) -> Result<EngineConfig, String> {
        let mut config = self.space.config(&self.base, point)?;
        constraints::fit_kv_pool(model, &mut config, &self.limits);
        Ok(config)
    }
}

/// A finished trial's metrics: measured when it was measured, else predicted (a simulated
/// study).
pub fn trial_metrics(t: &Trial) -> Option<TrialMetrics> {
    t.measured.clone().or_else(|| t.predicted.clone()).and_then(|m| serde_json::from_value(m).ok())
}

/// A trial's prediction, when it has both a prediction and a measurement.
pub fn trial_prediction(t: &Trial) -> Option<TrialMetrics> {
    t.measured.as_ref()?;
    t.predicted.clone().and_then(|m| serde_json::from_value(m).ok())
}

/// How one worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Who this is, as stored with claimed trials (`host:pid`).
    pub worker: String,
    /// Stop proposing after this long.
    pub time_budget: Option<Duration>,
    /// Stop when this many finished full-fidelity trials in a row did not improve the best
    /// by more than 1% (0: never).
    pub patience: usize,
    /// How long to wait between looks at a study whose remaining trials other workers hold.
    pub poll: Duration,
    /// After the search, measure the best this-many points and the baseline once more; the
    /// best is then the highest mean (0: no confirmation round).
    pub confirm: usize,
}

/// A finished trial as the report shows it.
#[derive(Debug, Clone, Serialize)]
pub struct TrialRow {
    /// Trial number.
    pub number: i64,
    /// Status.
    pub status: TrialStatus,
    /// Fidelity.
    pub fidelity: f64,
    /// The knobs' values.
    pub knobs: BTreeMap<String, String>,
    /// Figures, if measured.
    pub metrics: Option<TrialMetrics>,
    /// The score, if measured.
    pub score: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    /// Whether this is the baseline (the base config).
    pub baseline: bool,
    /// The simulator's prediction for this trial, when it was queued with one (a measured
    /// trial of a simulate-then-measure study, or one still waiting to be measured).
    pub predicted: Option<TrialMetrics>,
}

/// Relative errors (predicted − measured) ÷ measured of the headline figures, as
/// [`TrialMetrics::errors_against`] gives them (NaN where the measurement is 0).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FigureErrors {
    /// Request throughput.
    pub throughput: f64,
    /// Median time to first token.
    pub ttft_p50: f64,
    /// p99 time to first token.
    pub ttft_p99: f64,
    /// Median time per output token.
    pub tpot_p50: f64,
    /// p99 time per output token.
    pub tpot_p99: f64,
}

impl FigureErrors {
    /// The errors of `predicted` against `measured`.
    pub fn of(predicted: &TrialMetrics, measured: &TrialMetrics) -> Self {
        let e = predicted.errors_against(measured);
        Self {
            throughput: e[0].1,
            ttft_p50: e[1].1,
            ttft_p99: e[2].1,
            tpot_p50: e[3].1,
            tpot_p99: e[4].1,
        }
    }

    /// The figures with their names, in the order of [`TrialMetrics::errors_against`].
    pub fn named(&self) -> [(&'static str, f64); 5] {
        [
            ("throughput", self.throughput),
            ("ttft_p50", self.ttft_p50),
            ("ttft_p99", self.ttft_p99),
            ("tpot_p50", self.tpot_p50),
            ("tpot_p99", self.tpot_p99),
        ]
    }
}

/// One measured trial that was queued with a prediction: both side by side.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredictionRow {
    /// Trial number.
    pub number: i64,
    /// Whether it is the baseline.
    pub baseline: bool,
    /// The predicted score (the study's goal).
    pub predicted_score: f64,
    /// The measured score.
    pub measured_score: f64,
    /// Relative errors of the headline figures.
    pub errors: FigureErrors,
}

/// How far the simulator's predictions were from the measurements of the same points.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PredictionReport {
    /// Every measured trial that carries a prediction, in number order.
    pub rows: Vec<PredictionRow>,
    /// Mean |relative error| per figure over the rows (NaN errors left out; NaN when none is
    /// left).
    pub mean_abs: FigureErrors,
}

impl PredictionReport {
    /// The side-by-side rows of `trials` (measured ones that carry a prediction) and their
    /// mean absolute errors; `None` when no trial has both.
    pub fn from_trials(trials: &[Trial], goal: Goal) -> Option<Self> {
        let rows: Vec<PredictionRow> = trials
            .iter()
            .filter(|t| t.status == TrialStatus::Completed)
            .filter_map(|t| {
                let measured: TrialMetrics = serde_json::from_value(t.measured.clone()?).ok()?;
                let predicted = trial_prediction(t)?;
                let baseline = t
                    .params
                    .clone()
                    .and_then(|p| serde_json::from_value::<TrialParams>(p).ok())
                    .is_some_and(|p| p.baseline);
                Some(PredictionRow {
                    number: t.number,
                    baseline,
                    predicted_score: predicted.score(goal),
                    measured_score: measured.score(goal),
                    errors: FigureErrors::of(&predicted, &measured),
                })
            })
            .collect();
        if rows.is_empty() {
            return None;
        }
        let mean = |f: fn(&FigureErrors) -> f64| {
            let v: Vec<f64> =
                rows.iter().map(|r| f(&r.errors).abs()).filter(|e| e.is_finite()).collect();
            if v.is_empty() { f64::NAN } else { v.iter().sum::<f64>() / v.len() as f64 }
        };
        let mean_abs = FigureErrors {
            throughput: mean(|e| e.throughput),
            ttft_p50: mean(|e| e.ttft_p50),
            ttft_p99: mean(|e| e.ttft_p99),
            tpot_p50: mean(|e| e.tpot_p50),
            tpot_p99: mean(|e| e.tpot_p99),
        };
        Some(Self { rows, mean_abs })
    }
}

/// What a study found so far.
#[derive(Debug, Clone, Serialize)]
pub struct StudyReport {
    /// Study id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Settings.
    pub settings: StudySettings,
    /// Every trial in number order.
    pub trials: Vec<TrialRow>,
    /// Index into `trials` of the best point's first full-fidelity trial (the best point has
    /// the highest mean over its measurements).
    pub best: Option<usize>,
    /// Index into `trials` of the baseline trial, once measured.
    pub baseline: Option<usize>,
    /// Completed full-fidelity measurements grouped by point.
    pub points: Vec<PointStats>,
    /// Index into `points` of the best point.
    pub best_point: Option<usize>,
    /// Index into `points` of the baseline's point.
    pub baseline_point: Option<usize>,
    /// Indices into `trials` of the Pareto frontier (throughput vs p99 TTFT and TPOT) among
    /// full-fidelity trials.
    pub frontier: Vec<usize>,
    /// Trial count (in number order) at which the best so far first reached 95% of the final
    /// best.
    pub trials_to_95: Option<usize>,
    /// Points the constraints ruled out, by reason, with one example reason each.
    pub pruned: Vec<(String, u64, String)>,
    /// Predicted against measured, for trials queued with the simulator's prediction
    /// (simulate-then-measure); `None` in a purely measured or purely simulated study.
    pub predictions: Option<PredictionReport>,
}

impl StudyReport {
    /// The best trial's config.
    pub fn best_config(&self, store_trials: &[Trial]) -> Option<EngineConfig> {
        let best = &self.trials[self.best?];
        let t = store_trials.iter().find(|t| t.number == best.number)?;
        serde_json::from_value(t.config.clone()).ok()
    }

    /// The best point's mean score over the baseline point's mean score.
    pub fn ratio_to_baseline(&self) -> Option<f64> {
        let best = self.points[self.best_point?].mean;
        let base = self.points[self.baseline_point?].mean;
        (base > 0.0).then_some(best / base)
    }
}

/// Errors that stop a study.
#[derive(Debug, thiserror::Error)]
pub enum StudyError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A study of that name exists with other settings, or may not be continued.
    #[error("{0}")]
    Conflict(String),
    /// Something about the inputs (a stored trial that cannot be read back, the quality
    /// measurement).
    #[error("{0}")]
    Invalid(String),
}

/// The params JSON stored with a trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct TrialParams {
    point: Point,
    fidelity: f64,
    #[serde(default)]
    baseline: bool,
    /// 0 for the search's own trial of a point; 1, 2, … for confirmation re-measurements.
    #[serde(default)]
    confirm: u32,
    knobs: BTreeMap<String, String>,
}

fn trial_key(point: &[usize], fidelity: f64, confirm: u32) -> String {
    let text = if confirm == 0 {
        format!("{point:?}@{fidelity}")
    } else {
        format!("{point:?}@{fidelity}#confirm{confirm}")
    };
    let digest = Sha256::digest(text.as_bytes());
    digest.iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// `host:pid` of this process.
pub fn this_worker() -> String {
    let host = local_hostname().unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// Whether `worker` (`host:pid`) is a process on this host that no longer exists.
fn is_dead_local_worker(worker: &str) -> bool {
    let Some((host, pid)) = worker.rsplit_once(':') else { return false };
    pid.parse().is_ok_and(|pid| is_dead_local_process(host, pid))
}

/// A study's feasibility predicate: constraints and the quality bound, memoized per point.
pub struct Feasibility<'a> {
    settings: &'a StudySettings,
    model: &'a ModelConfig,
    kl: HashMap<String, Result<f64, String>>,
    memo: RefCell<HashMap<Point, Result<(), String>>>,
}

impl<'a> Feasibility<'a> {
    /// The predicate for `settings`, with the KL of each weight format the space uses.
    pub fn new(
        settings: &'a StudySettings,
        model: &'a ModelConfig,
        kl: HashMap<String, Result<f64, String>>,
    ) -> Self {
        Self { settings, model, kl, memo: RefCell::new(HashMap::new()) }
    }

    /// Why `point` cannot run, or `Ok`.
    pub fn check(&self, point: &[usize]) -> Result<(), String> {
        if let Some(r) = self.memo.borrow().get(point) {
            return r.clone();
        }
        let s = self.settings;
        let verdict = s.candidate(self.model, point).and_then(|config| {
            constraints::check(self.model, &config, &s.limits)?;
            let format = config.weight_format().label();
            match self.kl.get(&format) {
                Some(Ok(kl)) if *kl > s.max_kl => Err(format!(
                    "quality: {format} has KL {kl:.4} nats against f32 > bound {:.4}",
                    s.max_kl
                )),
                Some(Err(e)) => {
                    Err(format!("weights: {format} cannot hold {}: {e}", self.model.name))
                }
                _ => Ok(()),
            }
        });
        self.memo.borrow_mut().insert(point.to_vec(), verdict.clone());
        verdict
    }

    /// Every point's verdict, grouped by reason kind: (kind, count, an example reason).
    /// `None` for spaces too large to enumerate (over 2²⁰ points).
    pub fn pruning_summary(&self) -> Option<Vec<(String, u64, String)>> {
        let space = self.settings.space.strategy_space();
        if strategy::space_size(&space) > 1 << 20 {
            return None;
        }
        let mut by_kind: BTreeMap<String, (u64, String)> = BTreeMap::new();
        for point in strategy::all_points(&space) {
            if let Err(reason) = self.check(&point) {
                let kind = reason_kind(&reason).to_string();
                by_kind.entry(kind).or_insert((0, reason)).0 += 1;
            }
        }
        Some(by_kind.into_iter().map(|(k, (n, ex))| (k, n, ex)).collect())
    }
}

/// The KL of every weight format `space` can choose, measured or from `cache`; a format the
/// model cannot be stored in (a group size that does not divide its widths) maps to why.
pub fn formats_kl(
    settings: &StudySettings,
    model: &ModelConfig,
    cache: &mut crate::quality::QualityCache,
) -> HashMap<String, Result<f64, String>> {
    let mut kl = HashMap::new();
    let formats: Vec<WeightFormat> = match settings.space.knobs.iter().find(|k| k.path == "weights")
    {
        Some(k) => {
            k.values.iter().filter_map(|v| v.as_str().and_then(WeightFormat::parse)).collect()
        }
        None => vec![settings.base.weight_format()],
    };
    for f in formats {
        kl.insert(f.label(), cache.kl(model, settings.base.seed, f, settings.base.threads));
    }
    kl
}

/// Opens (or creates) the study `name` with `settings`. An existing study must have the same
/// settings, and is only continued when `continue_existing` (`--resume` or `--worker`).
pub async fn open(
    store: &Store,
    name: &str,
    settings: &StudySettings,
    pruned: &Option<Vec<(String, u64, String)>>,
    continue_existing: bool,
) -> Result<(Study, bool), StudyError> {
    let settings_json =
        serde_json::to_value(settings).map_err(|e| StudyError::Invalid(e.to_string()))?;
    let info = StudyInfo {
        name: name.to_string(),
        scenario: None,
        objective: format!(
            "maximize {} on {} ({}) subject to the workload's SLOs, KL ≤ {}",
            settings.goal, settings.workload, settings.model, settings.max_kl
        ),
        search_space: json!({ "knobs": settings.space.knobs, "pruned": pruned }),
    };
    let (study, created) = store.open_study(&info, &settings_json).await?;
    if !created {
        if !continue_existing {
            return Err(StudyError::Conflict(format!(
                "study `{name}` already exists (id {}); pass --resume to continue it, or --worker to join it",
                study.id
            )));
        }
        let stored: StudySettings =
            serde_json::from_value(study.settings.clone()).map_err(|e| {
                StudyError::Conflict(format!("study `{name}` was not created by this tuner: {e}"))
            })?;
        if &stored != settings {
            let a = serde_json::to_value(&stored).unwrap_or_default();
            let differs: Vec<String> = settings_json
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, v)| a.get(k.as_str()) != Some(v))
                .map(|(k, _)| k.clone())
                .collect();
            return Err(StudyError::Conflict(format!(
                "study `{name}` exists with other settings (differs in: {}); use another --study name",
                differs.join(", ")
            )));
        }
    }
    Ok((study, created))
}

fn observations(trials: &[Trial], goal: Goal) -> Vec<Observation> {
    trials.iter().filter_map(|t| observation(t, goal)).collect()
}

/// What a strategy sees of one trial; `None` for infeasible trials and foreign ones.
fn observation(t: &Trial, goal: Goal) -> Option<Observation> {
    if t.status == TrialStatus::Infeasible {
        return None;
    }
    let p: TrialParams = serde_json::from_value(t.params.clone()?).ok()?;
    let outcome = match t.status {
        TrialStatus::Pending | TrialStatus::Running => Outcome::Pending,
        TrialStatus::Completed => match trial_metrics(t) {
            Some(m) => Outcome::Value(m.score(goal)),
            None => Outcome::Failed,
        },
        _ => Outcome::Failed,
    };
    Some(Observation { point: p.point, fidelity: p.fidelity, outcome })
}

fn new_trial(
    settings: &StudySettings,
    model: &ModelConfig,
    point: &[usize],
    fidelity: f64,
    baseline: bool,
    confirm: u32,
) -> Result<NewTrial, String> {
    let config = settings.candidate(model, point)?;
    let params = TrialParams {
        point: point.to_vec(),
        fidelity,
        baseline,
        confirm,
        knobs: settings.space.describe(point).into_iter().collect(),
    };
    Ok(NewTrial {
        trial_key: trial_key(point, fidelity, confirm),
        params: serde_json::to_value(params).map_err(|e| e.to_string())?,
        config: serde_json::to_value(config).map_err(|e| e.to_string())?,
        predicted: None,
    })
}

/// A point to measure with the simulator's prediction for it.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictedPoint {
    /// The point.
    pub point: Point,
    /// Whether it is the baseline's point.
    pub baseline: bool,
    /// The prediction.
    pub predicted: TrialMetrics,
}

/// From a simulated study's trials: the `top` points of highest predicted score (ties to the
/// lower p99 TTFT, then p99 TPOT, then trial order), then the baseline's point when it is not among them. Each point once, at
/// full fidelity.
pub fn top_predicted(trials: &[Trial], goal: Goal, top: usize) -> Vec<PredictedPoint> {
    let mut predicted: Vec<PredictedPoint> = Vec::new();
    for t in trials.iter().filter(|t| t.status == TrialStatus::Completed) {
        let Some(p) = t.params.clone().and_then(|p| serde_json::from_value::<TrialParams>(p).ok())
        else {
            continue;
        };
        let Some(m) = trial_metrics(t) else { continue };
        if p.fidelity < 1.0 || p.confirm > 0 || predicted.iter().any(|q| q.point == p.point) {
            continue;
        }
        predicted.push(PredictedPoint { point: p.point, baseline: p.baseline, predicted: m });
    }
    let mut ranked: Vec<&PredictedPoint> = predicted.iter().collect();
    // Equal scores (a fixed rate that several points meet) go to the lower p99 TTFT, then
    // the lower p99 TPOT; stable, so full ties keep trial order.
    ranked.sort_by(|a, b| {
        let (a, b) = (&a.predicted, &b.predicted);
        b.score(goal)
            .total_cmp(&a.score(goal))
            .then(a.ttft_p99_ms.total_cmp(&b.ttft_p99_ms))
            .then(a.tpot_p99_ms.total_cmp(&b.tpot_p99_ms))
    });
    let mut out: Vec<PredictedPoint> = ranked.into_iter().take(top).cloned().collect();
    if let Some(b) = predicted.iter().find(|p| p.baseline)
        && !out.iter().any(|p| p.point == b.point)
    {
        out.push(b.clone());
    }
    out
}

/// Queues `points` in `study` at full fidelity, each with its prediction attached (stored in
/// the trial's `predicted` column, kept when the measurement arrives), baselines first.
/// Points already queued or run are left alone. Returns how many were newly queued.
pub async fn enqueue_predicted(
    store: &Store,
    study: &Study,
    settings: &StudySettings,
    model: &ModelConfig,
    points: &[PredictedPoint],
) -> Result<usize, StudyError> {
    let mut queued = 0;
    let ordered = points.iter().filter(|p| p.baseline).chain(points.iter().filter(|p| !p.baseline));
    for p in ordered {
        let mut t = new_trial(settings, model, &p.point, 1.0, p.baseline, 0)
            .map_err(StudyError::Invalid)?;
        t.predicted = Some(
            serde_json::to_value(&p.predicted).map_err(|e| StudyError::Invalid(e.to_string()))?,
        );
        if store.enqueue_trial(study.id, &t).await?.is_some() {
            queued += 1;
        }
    }
    Ok(queued)
}

/// What one worker did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Trials this worker measured.
    pub measured: usize,
    /// Trials put back in the queue because their worker had died.
    pub requeued: u64,
    /// Why the worker stopped.
    pub stop: StopReason,
}

/// Why a worker stopped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StopReason {
    /// The budget of trials is spent.
    #[default]
    Budget,
    /// The strategy has nothing left to propose.
    Exhausted,
    /// The wall-time budget ran out.
    Time,
    /// No improvement for `patience` trials.
    Stalled,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopReason::Budget => "budget spent",
            StopReason::Exhausted => "space exhausted",
            StopReason::Time => "time budget spent",
            StopReason::Stalled => "no improvement (patience)",
        })
    }
}

/// An event for the progress display.
#[derive(Debug, Clone)]
pub enum Progress<'a> {
    /// A trial starts.
    Started {
        /// Its number.
        number: i64,
        /// Its knobs.
        knobs: &'a BTreeMap<String, String>,
        /// Its fidelity.
        fidelity: f64,
    },
    /// A trial finished.
    Finished {
        /// Its number.
        number: i64,
        /// Score, or the failure.
        result: &'a Result<TrialMetrics, String>,
        /// Best full-fidelity score so far.
        best: Option<f64>,
        /// Trials counted against the budget so far.
        done: usize,
    },
}

fn best_full_score(trials: &[Trial], goal: Goal) -> Option<f64> {
    observations(trials, goal)
        .iter()
        .filter(|o| o.fidelity >= 1.0)
        .filter_map(|o| match o.outcome {
            Outcome::Value(v) => Some(v),
            _ => None,
        })
        .max_by(f64::total_cmp)
}

/// Whether the last `patience` finished full-fidelity trials all failed to beat the best
/// before them by more than 1%.
fn stalled(trials: &[Trial], goal: Goal, patience: usize) -> bool {
    patience > 0 && stalled_in(&observations(trials, goal), patience)
}

/// [`stalled`] over observations.
fn stalled_in(observed: &[Observation], patience: usize) -> bool {
    if patience == 0 {
        return false;
    }
    let values: Vec<f64> = observed
        .iter()
        .filter(|o| o.fidelity >= 1.0)
        .filter_map(|o| match o.outcome {
            Outcome::Value(v) => Some(v),
            Outcome::Failed => Some(f64::NEG_INFINITY),
            Outcome::Pending => None,
        })
        .collect();
    if values.len() <= patience {
        return false;
    }
    let (before, recent) = values.split_at(values.len() - patience);
    let best_before = before.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    recent.iter().all(|&v| v <= best_before * 1.01 || !v.is_finite())
}

/// Puts the running trials of dead local workers back in the queue; how many.
async fn requeue_dead(store: &Store, study: &Study) -> Result<u64, StudyError> {
    let dead: Vec<String> = store
        .running_trials(study.id)
        .await?
        .into_iter()
        .filter_map(|t| t.worker)
        .filter(|w| is_dead_local_worker(w))
        .collect();
    if dead.is_empty() { Ok(0) } else { Ok(store.requeue_trials(study.id, &dead).await?) }
}

/// Queues the baseline (the base config at full fidelity, what results are compared to)
/// when it is a feasible point of the space; a study that has it already keeps it.
async fn enqueue_baseline(
    store: &Store,
    study: &Study,
    settings: &StudySettings,
    feasible: &Feasibility<'_>,
) -> Result<(), StudyError> {
    if let Some(point) = settings.space.point_of(&settings.base)
        && feasible.check(&point).is_ok()
    {
        let t = new_trial(settings, feasible.model, &point, 1.0, true, 0)
            .map_err(StudyError::Invalid)?;
        store.enqueue_trial(study.id, &t).await?;
    }
    Ok(())
}

/// Runs one worker of study `study` until the budget, the strategy, the time budget or the
/// patience ends it. Trials of dead local workers are requeued first.
pub async fn run_worker<E: Evaluator>(
    store: &Store,
    study: &Study,
    settings: &StudySettings,
    feasible: &Feasibility<'_>,
    evaluator: &E,
    opts: &WorkerOptions,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<WorkerSummary, StudyError> {
    let started = Instant::now();
    let mut summary =
        WorkerSummary { requeued: requeue_dead(store, study).await?, ..Default::default() };
    enqueue_baseline(store, study, settings, feasible).await?;
    let strategy = strategy::build(settings.strategy);
    let space = settings.space.strategy_space();
    let is_feasible = |p: &[usize]| feasible.check(p).is_ok();
    loop {
        if claim_and_measure(store, study, settings, feasible, evaluator, opts, &mut progress)
            .await?
        {
            summary.measured += 1;
            continue;
        }
        if opts.time_budget.is_some_and(|b| started.elapsed() >= b) {
            summary.stop = StopReason::Time;
            break;
        }
        let history = store.trials(study.id).await?;
        let counted = history.iter().filter(|t| t.status != TrialStatus::Infeasible).count();
        let busy = history.iter().any(|t| t.status == TrialStatus::Running);
        if stalled(&history, settings.goal, opts.patience) {
            summary.stop = StopReason::Stalled;
            break;
        }
        let proposal = if counted >= settings.budget {
            None
        } else {
            let ctx = Context {
                space: &space,
                feasible: &is_feasible,
                budget: settings.budget,
                seed: settings.seed,
            };
            Some(strategy.propose(&ctx, &observations(&history, settings.goal)))
        };
        match proposal {
            Some(Proposal::Run { point, fidelity }) => {
                let t = new_trial(settings, feasible.model, &point, fidelity, false, 0)
                    .map_err(StudyError::Invalid)?;
                store.enqueue_trial(study.id, &t).await?;
            }
            Some(Proposal::Wait) if busy => tokio::time::sleep(opts.poll).await,
            Some(Proposal::Exhausted | Proposal::Wait) => {
                summary.stop = StopReason::Exhausted;
                break;
            }
            None if busy => tokio::time::sleep(opts.poll).await,
            None => {
                summary.stop = StopReason::Budget;
                break;
            }
        }
    }
    if opts.confirm > 0 && summary.stop != StopReason::Time {
        // Re-measure the best few and the baseline, so the winner is not merely the luckiest
        // measurement (each point's mean over its measurements decides).
        // A study resumed after its confirmation round keeps that round's choice (the
        // ranking it would redo is of means the round itself changed).
        let history = store.trials(study.id).await?;
        let confirmed = history.iter().any(|t| {
            t.params
                .clone()
                .and_then(|p| serde_json::from_value::<TrialParams>(p).ok())
                .is_some_and(|p| p.confirm > 0)
        });
        let points = if confirmed {
            Vec::new()
        } else {
            confirmation_points(&history, settings.goal, opts.confirm)
        };
        for (point, baseline) in points {
            let t = new_trial(settings, feasible.model, &point, 1.0, baseline, 1)
                .map_err(StudyError::Invalid)?;
            store.enqueue_trial(study.id, &t).await?;
        }
        loop {
            if claim_and_measure(store, study, settings, feasible, evaluator, opts, &mut progress)
                .await?
            {
                summary.measured += 1;
                continue;
            }
            let history = store.trials(study.id).await?;
            if history.iter().any(|t| t.status == TrialStatus::Running) {
                tokio::time::sleep(opts.poll).await;
            } else {
                break;
            }
        }
    }
    Ok(summary)
}

/// The `top` best points by mean full-fidelity score, and the baseline's point, for a
/// confirmation round (`true` marks the baseline).
fn confirmation_points(trials: &[Trial], goal: Goal, top: usize) -> Vec<(Point, bool)> {
    let stats = point_stats(trials, goal);
    let mut ranked: Vec<&PointStats> = stats.iter().collect();
    ranked.sort_by(|a, b| b.mean.total_cmp(&a.mean));
    let mut out: Vec<(Point, bool)> =
        ranked.iter().take(top).map(|p| (p.point.clone(), p.baseline)).collect();
    if let Some(b) = stats.iter().find(|p| p.baseline)
        && !out.iter().any(|(p, _)| *p == b.point)
    {
        out.push((b.point.clone(), true));
    }
    out
}

/// Claims one queued trial, measures it and commits the result; `false` when nothing was
/// queued.
async fn claim_and_measure<E: Evaluator>(
    store: &Store,
    study: &Study,
    settings: &StudySettings,
    feasible: &Feasibility<'_>,
    evaluator: &E,
    opts: &WorkerOptions,
    progress: &mut impl FnMut(Progress<'_>),
) -> Result<bool, StudyError> {
    let Some(trial) = store.claim_trial(study.id, &opts.worker).await? else {
        return Ok(false);
    };
    let history = store.trials(study.id).await?;
    let result = evaluate_claimed(
        store,
        feasible,
        evaluator,
        &opts.worker,
        &trial,
        rate_hint(&history, settings.goal),
        progress,
    )
    .await?
    .0;
    let history = store.trials(study.id).await?;
    let done = history.iter().filter(|t| t.status != TrialStatus::Infeasible).count();
    progress(Progress::Finished {
        number: trial.number,
        result: &result,
        best: best_full_score(&history, settings.goal),
        done,
    });
    Ok(true)
}

/// The rate of the best completed trial: where a rate search starts.
fn rate_hint(history: &[Trial], goal: Goal) -> Option<f64> {
    history
        .iter()
        .filter(|t| t.status == TrialStatus::Completed)
        .filter_map(trial_metrics)
        .max_by(|a, b| a.score(goal).total_cmp(&b.score(goal)))
        .map(|m| m.rate)
}

/// Evaluates a trial this worker claimed and commits how it went; returns the result and
/// the outcome stored.
#[allow(clippy::too_many_arguments)]
async fn evaluate_claimed<E: Evaluator>(
    store: &Store,
    feasible: &Feasibility<'_>,
    evaluator: &E,
    worker: &str,
    trial: &Trial,
    hint: Option<f64>,
    progress: &mut impl FnMut(Progress<'_>),
) -> Result<(Result<TrialMetrics, String>, TrialOutcome), StudyError> {
    let params: TrialParams = trial
        .params
        .clone()
        .and_then(|p| serde_json::from_value(p).ok())
        .ok_or_else(|| StudyError::Invalid(format!("trial {} has no params", trial.number)))?;
    let config: EngineConfig = serde_json::from_value(trial.config.clone())
        .map_err(|e| StudyError::Invalid(format!("trial {}: config: {e}", trial.number)))?;
    progress(Progress::Started {
        number: trial.number,
        knobs: &params.knobs,
        fidelity: params.fidelity,
    });
    // A rate search starts from the rate of the best trial so far.
    let mut result = evaluator.evaluate(&config, params.fidelity, hint).await;
    if let Ok(m) = &mut result {
        m.kl = match feasible.kl.get(&config.weight_format().label()) {
            Some(Ok(kl)) => *kl,
            _ => 0.0,
        };
    }
    let metrics = result.as_ref().map(|m| serde_json::to_value(m).ok()).map_err(String::as_str);
    let outcome = trial_outcome(metrics, evaluator.predicts());
    store.finish_claimed_trial(trial.id, worker, &outcome).await?;
    Ok((result, outcome))
}

/// [`run_worker`] for quick evaluators (the simulator), where reading the study back from
/// the store before each trial would cost more than the trial: the history is read once
/// (and again only when another worker got in the way) and kept in memory as trials
/// finish. Pending trials (a requeued or joined study) are measured first; no confirmation
/// round.
pub async fn run_local<E: Evaluator>(
    store: &Store,
    study: &Study,
    settings: &StudySettings,
    feasible: &Feasibility<'_>,
    evaluator: &E,
    opts: &WorkerOptions,
    mut progress: impl FnMut(Progress<'_>),
) -> Result<WorkerSummary, StudyError> {
    let started = Instant::now();
    let mut summary =
        WorkerSummary { requeued: requeue_dead(store, study).await?, ..Default::default() };
    enqueue_baseline(store, study, settings, feasible).await?;
    let strategy = strategy::build(settings.strategy);
    let space = settings.space.strategy_space();
    let is_feasible = |p: &[usize]| feasible.check(p).is_ok();
    let mut history = store.trials(study.id).await?;
    // The observations of `history`, kept in step with it: (trial id, observation).
    let observe = |history: &[Trial]| -> Vec<(i64, Observation)> {
        history.iter().filter_map(|t| Some((t.id, observation(t, settings.goal)?))).collect()
    };
    let mut observed = observe(&history);
    let mut best = best_full_score(&history, settings.goal);
    let mut hint = rate_hint(&history, settings.goal);
    loop {
        if let Some(trial) = store.claim_trial(study.id, &opts.worker).await? {
            let (result, outcome) = evaluate_claimed(
                store,
                feasible,
                evaluator,
                &opts.worker,
                &trial,
                hint,
                &mut progress,
            )
            .await?;
            summary.measured += 1;
            let finished = Trial {
                status: outcome.status,
                measured: outcome.measured.or(trial.measured.clone()),
                predicted: outcome.predicted.or(trial.predicted.clone()),
                error: outcome.error,
                ..trial.clone()
            };
            let seen = observation(&finished, settings.goal);
            match (observed.iter_mut().find(|(id, _)| *id == finished.id), seen) {
                (Some(o), Some(seen)) => o.1 = seen,
                (None, Some(seen)) => observed.push((finished.id, seen)),
                (_, None) => observed.retain(|(id, _)| *id != finished.id),
            }
            match history.iter_mut().find(|t| t.id == finished.id) {
                Some(t) => *t = finished,
                None => history.push(finished),
            }
            if let Ok(m) = &result {
                let full = trial
                    .params
                    .clone()
                    .and_then(|p| serde_json::from_value::<TrialParams>(p).ok())
                    .is_some_and(|p| p.fidelity >= 1.0);
                let score = m.score(settings.goal);
                if full && best.is_none_or(|b| score > b) {
                    best = Some(score);
                    hint = Some(m.rate);
                }
            }
            let done = history.iter().filter(|t| t.status != TrialStatus::Infeasible).count();
            progress(Progress::Finished { number: trial.number, result: &result, best, done });
            continue;
        }
        if opts.time_budget.is_some_and(|b| started.elapsed() >= b) {
            summary.stop = StopReason::Time;
            break;
        }
        let counted = history.iter().filter(|t| t.status != TrialStatus::Infeasible).count();
        // Trials another worker holds (or queued trials it claimed first).
        let busy =
            history.iter().any(|t| matches!(t.status, TrialStatus::Running | TrialStatus::Pending));
        let seen: Vec<Observation> = observed.iter().map(|(_, o)| o.clone()).collect();
        if stalled_in(&seen, opts.patience) {
            summary.stop = StopReason::Stalled;
            break;
        }
        let proposal = if counted >= settings.budget {
            None
        } else {
            let ctx = Context {
                space: &space,
                feasible: &is_feasible,
                budget: settings.budget,
                seed: settings.seed,
            };
            Some(strategy.propose(&ctx, &seen))
        };
        let reread = match proposal {
            Some(Proposal::Run { point, fidelity }) => {
                let t = new_trial(settings, feasible.model, &point, fidelity, false, 0)
                    .map_err(StudyError::Invalid)?;
                match store.enqueue_trial(study.id, &t).await? {
                    // Claimed (by this worker or another) at the top of the loop.
                    Some(queued) => {
                        if let Some(o) = observation(&queued, settings.goal) {
                            observed.push((queued.id, o));
                        }
                        history.push(queued);
                        false
                    }
                    // Another worker queued it first: catch up with the store.
                    None => true,
                }
            }
            Some(Proposal::Wait) | None if busy => {
                tokio::time::sleep(opts.poll).await;
                true
            }
            Some(Proposal::Exhausted | Proposal::Wait) => {
                summary.stop = StopReason::Exhausted;
                break;
            }
            None => {
                summary.stop = StopReason::Budget;
                break;
            }
        };
        if reread {
            history = store.trials(study.id).await?;
            observed = observe(&history);
            best = best_full_score(&history, settings.goal);
            hint = rate_hint(&history, settings.goal);
        }
    }
    Ok(summary)
}

/// Every full-fidelity measurement of one point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointStats {
    /// The point.
    pub point: Point,
    /// Whether it is the baseline's.
    pub baseline: bool,
    /// Trial numbers of its completed full-fidelity measurements, in order.
    pub trials: Vec<i64>,
    /// Their scores.
    pub scores: Vec<f64>,
    /// Mean score.
    pub mean: f64,
}

/// Completed full-fidelity trials grouped by point, in order of first measurement.
pub fn point_stats(trials: &[Trial], goal: Goal) -> Vec<PointStats> {
    let mut out: Vec<PointStats> = Vec::new();
    for t in trials.iter().filter(|t| t.status == TrialStatus::Completed) {
        let Some(p) = t.params.clone().and_then(|p| serde_json::from_value::<TrialParams>(p).ok())
        else {
            continue;
        };
        let Some(m) = trial_metrics(t) else {
            continue;
        };
        if p.fidelity < 1.0 {
            continue;
        }
        let score = m.score(goal);
        match out.iter_mut().find(|s| s.point == p.point) {
            Some(s) => {
                s.trials.push(t.number);
                s.scores.push(score);
                s.baseline |= p.baseline;
            }
            None => out.push(PointStats {
                point: p.point,
                baseline: p.baseline,
                trials: vec![t.number],
                scores: vec![score],
                mean: 0.0,
            }),
        }
    }
    for s in &mut out {
        s.mean = s.scores.iter().sum::<f64>() / s.scores.len() as f64;
    }
    out
}

/// Marks the study finished.
pub async fn finish(store: &Store, study: &Study) -> Result<(), StudyError> {
    store.finish_study(study.id, RunStatus::Completed).await?;
    Ok(())
}

/// Marks the study finished when none of `trials` (its trials as just read from `store`) is
/// still pending or running; returns whether it did.
///
/// A worker that stops while trials are queued or claimed by another worker must leave the
/// study open for them, so every command that ends a worker checks the same way before
/// calling [`finish`].
pub async fn finish_if_settled(
    store: &Store,
    study: &Study,
    trials: &[Trial],
) -> Result<bool, StudyError> {
    let settled =
        !trials.iter().any(|t| matches!(t.status, TrialStatus::Pending | TrialStatus::Running));
    if settled {
        finish(store, study).await?;
    }
    Ok(settled)
}

/// The outcome to store for an evaluated trial: completed with its metrics (`metrics`, as
/// JSON; `None` stores none), or failed with its error.
///
/// `predicts` says whether the metrics came from the simulator: they then go in the
/// outcome's `predicted` field, else in `measured`. One constructor so the tuner's workers
/// and `dyno validate` record trials alike.
pub fn trial_outcome(
    metrics: Result<Option<serde_json::Value>, &str>,
    predicts: bool,
) -> TrialOutcome {
    match metrics {
        Ok(m) if predicts => TrialOutcome {
            status: TrialStatus::Completed,
            measured: None,
            predicted: m,
            error: None,
            run: None,
        },
        Ok(m) => TrialOutcome {
            status: TrialStatus::Completed,
            measured: m,
            predicted: None,
            error: None,
            run: None,
        },
        Err(e) => TrialOutcome {
            status: TrialStatus::Failed,
            measured: None,
            predicted: None,
            error: Some(e.to_owned()),
            run: None,
        },
    }
}

/// The report of a study from its stored trials.
pub fn report(study: &Study, settings: &StudySettings, trials: &[Trial]) -> StudyReport {
    let goal = settings.goal;
    let rows: Vec<TrialRow> = trials
        .iter()
        .map(|t| {
            let params: Option<TrialParams> =
                t.params.clone().and_then(|p| serde_json::from_value(p).ok());
            let metrics = trial_metrics(t);
            TrialRow {
                number: t.number,
                status: t.status,
                fidelity: params.as_ref().map_or(1.0, |p| p.fidelity),
                knobs: params.as_ref().map(|p| p.knobs.clone()).unwrap_or_default(),
                score: metrics.as_ref().map(|m| m.score(goal)),
                metrics,
                error: t.error.clone(),
                baseline: params.as_ref().is_some_and(|p| p.baseline),
                // A simulated study's own trials hold their prediction as their metrics; a
                // prediction is shown beside a measurement (or one still to come).
                predicted: t
                    .predicted
                    .clone()
                    .filter(|_| t.measured.is_some() || t.status != TrialStatus::Completed)
                    .and_then(|m| serde_json::from_value(m).ok()),
            }
        })
        .collect();
    let full: Vec<usize> =
        (0..rows.len()).filter(|&i| rows[i].fidelity >= 1.0 && rows[i].metrics.is_some()).collect();
    let points = point_stats(trials, goal);
    // After a confirmation round only confirmed points (measured more than once) compete: an
    // unconfirmed point's single measurement is not comparable with a confirmed mean.
    let confirmed = points.iter().any(|p| !p.baseline && p.scores.len() > 1);
    let best_point = (0..points.len())
        .filter(|&i| !confirmed || points[i].scores.len() > 1)
        .max_by(|&a, &b| points[a].mean.total_cmp(&points[b].mean));
    let baseline_point = points.iter().position(|p| p.baseline);
    let row_of = |number: i64| rows.iter().position(|r| r.number == number);
    let best = best_point.and_then(|p| row_of(points[p].trials[0]));
    let baseline = baseline_point.and_then(|p| row_of(points[p].trials[0]));
    let metrics: Vec<TrialMetrics> = full.iter().filter_map(|&i| rows[i].metrics.clone()).collect();
    let frontier = pareto_frontier(&metrics).into_iter().map(|j| full[j]).collect();
    let trials_to_95 = best_point.and_then(|b| {
        let target = 0.95 * points[b].mean;
        let mut seen = 0;
        for r in &rows {
            if r.status == TrialStatus::Infeasible {
                continue;
            }
            seen += 1;
            if r.fidelity >= 1.0 && r.score.is_some_and(|s| s >= target) {
                return Some(seen);
            }
        }
        None
    });
    let pruned = study
        .search_space
        .get("pruned")
        .and_then(|p| serde_json::from_value(p.clone()).ok())
        .unwrap_or_default();
    StudyReport {
        id: study.id,
        name: study.name.clone(),
        settings: settings.clone(),
        trials: rows,
        best,
        baseline,
        points,
        best_point,
        baseline_point,
        frontier,
        trials_to_95,
        pruned,
        predictions: PredictionReport::from_trials(trials, goal),
    }
}
