//! Studies end to end against a real store, with a synthetic evaluator whose optimum is known:
//! the budget and the baseline, pruning with reasons, resume after a kill, and two workers
//! sharing one study (SQLite here; PostgreSQL too when `DYNO_TEST_POSTGRES_URL` is set).

use std::collections::HashMap;
use std::sync::Mutex;

use dyno_engine::config::BatchPolicy;
use dyno_engine::{EngineConfig, ModelConfig, WeightFormat};
use dyno_results::store::{Store, TrialStatus};
use dyno_tuner::constraints::Limits;
use dyno_tuner::evaluate::{Evaluator, LoadLevel};
use dyno_tuner::objective::{Goal, TrialMetrics};
use dyno_tuner::space::ConfigSpace;
use dyno_tuner::strategy::StrategyKind;
use dyno_tuner::study::{self, Feasibility, StudySettings, WorkerOptions};

/// Scores a config by a known formula; optionally never returns on one trial (a "kill").
struct Synthetic {
    calls: Mutex<Vec<(String, String)>>,
    hang_on_call: Option<usize>,
    hung: tokio::sync::Notify,
}

impl Synthetic {
    fn new(hang_on_call: Option<usize>) -> Self {
        Self { calls: Mutex::new(Vec::new()), hang_on_call, hung: tokio::sync::Notify::new() }
    }

    fn calls(&self) -> Vec<(String, String)> {
        self.calls.lock().expect("lock").clone()
    }
}

/// Best at int8, 16 sequences, row tile 8: 1 + 2 + 3 = 6.
fn formula(config: &EngineConfig) -> f64 {
    let w = if config.weight_format() == WeightFormat::Int8 { 2.0 } else { 1.0 };
    let seqs = match config.batch {
        BatchPolicy::Continuous { max_num_seqs, .. } => max_num_seqs,
        _ => 0,
    };
    let s = 3.0 - ((seqs as f64).log2() - 4.0).abs();
    let t = 1.0 - ((config.kernels.quant_row_tile as f64).log2() - 3.0).abs() / 2.0;
    w + s + t
}

impl Evaluator for Synthetic {
    async fn evaluate(
        &self,
        config: &EngineConfig,
        fidelity: f64,
        _rate_hint: Option<f64>,
    ) -> Result<TrialMetrics, String> {
        let n = {
            let mut calls = self.calls.lock().expect("lock");
            calls.push((serde_json::to_string(config).expect("json"), format!("{fidelity}")));
            calls.len()
        };
        // Let another worker on this thread take its turn.
        tokio::task::yield_now().await;
        if self.hang_on_call == Some(n) {
            self.hung.notify_one();
            std::future::pending::<()>().await;
        }
        let v = formula(config);
        Ok(TrialMetrics {
            rate: 1.0,
            goodput: v,
            request_throughput: v,
            output_throughput: 10.0 * v,
            ttft_p50_ms: 50.0 / v,
            ttft_p99_ms: 100.0 / v,
            tpot_p50_ms: 8.0,
            tpot_p99_ms: 10.0,
            e2el_p99_ms: 1000.0,
            slo_attainment: 1.0,
            slo_met: true,
            requests: 10,
            failed: 0,
            duration_s: 1.0,
            load_tests: 1,
            kl: 0.0,
        })
    }
}

const SPACE: &str = "knobs:
  weights: [f32, int8]
  threads: [1, 2]
  batch.max_num_seqs: [4, 8, 16, 32]
  kernels.quant_row_tile: [4, 8, 16]
";

fn settings(strategy: StrategyKind, budget: usize, cores: usize) -> StudySettings {
    StudySettings {
        hw: "cpu".into(),
        model: "mixtral-tiny".into(),
        workload: "synthetic".into(),
        strategy,
        budget,
        seed: 3,
        goal: Goal::Goodput,
        level: LoadLevel::FixedRate { rate: 1.0 },
        requests: 10,
        max_kl: 0.05,
        limits: Limits { memory_bytes: 8 << 30, cores, max_prompt_tokens: 256, devices: None },
        space: ConfigSpace::from_yaml(SPACE, "space.yaml", 2).expect("space"),
        base: EngineConfig { threads: 1, ..EngineConfig::default() },
    }
}

fn all_formats_fine() -> HashMap<String, Result<f64, String>> {
    [("f32", 0.0), ("int8", 0.001)].into_iter().map(|(k, v)| (k.to_string(), Ok(v))).collect()
}

fn options(worker: &str) -> WorkerOptions {
    WorkerOptions {
        worker: worker.into(),
        time_budget: None,
        patience: 0,
        poll: std::time::Duration::from_millis(20),
        confirm: 0,
    }
}

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{name}-{}-{nanos}", std::process::id())
}

async fn sqlite_store(dir: &tempfile::TempDir) -> Store {
    Store::open(&dir.path().join("t.sqlite").display().to_string()).await.expect("store")
}

fn dead_worker() -> String {
    let live = study::this_worker();
    let host = live.rsplit_once(':').map(|(h, _)| h.to_string()).expect("host:pid");
    // No process has this pid (Linux pids stay below 2^22).
    format!("{host}:4000000000")
}

#[tokio::test(flavor = "current_thread")]
async fn grid_study_measures_every_feasible_point_once_and_finds_the_optimum() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite_store(&dir).await;
    let model = ModelConfig::preset("mixtral-tiny").expect("tiny");
    // One core: the threads = 2 half of the space is pruned.
    let s = settings(StrategyKind::Grid, 100, 1);
    let feasible = Feasibility::new(&s, &model, all_formats_fine());
    let pruned = feasible.pruning_summary().expect("small space");
    assert_eq!(pruned.len(), 1, "{pruned:?}");
    let (kind, count, example) = &pruned[0];
    assert_eq!((kind.as_str(), *count), ("cores", 24));
    assert!(example.contains("> 1 cores"), "{example}");

    let (st, created) = study::open(&store, "grid", &s, &Some(pruned), false).await.expect("open");
    assert!(created);
    let eval = Synthetic::new(None);
    let summary = study::run_worker(&store, &st, &s, &feasible, &eval, &options("w1"), |_| {})
        .await
        .expect("run");
    assert_eq!(summary.stop, study::StopReason::Exhausted);
    let trials = store.trials(st.id).await.expect("trials");
    assert_eq!(trials.len(), 24, "every feasible point once");
    assert!(trials.iter().all(|t| t.status == TrialStatus::Completed));
    assert_eq!(eval.calls().len(), 24);
    let report = study::report(&st, &s, &trials);
    let best = &report.trials[report.best.expect("best")];
    assert_eq!(best.score, Some(6.0));
    assert_eq!(best.knobs["weights"], "int8");
    assert_eq!(best.knobs["batch.max_num_seqs"], "16");
    // The baseline (the base config) ran first and is marked.
    assert_eq!(report.baseline, Some(0));
    assert_eq!(report.trials[0].knobs["weights"], "f32");
    assert!(report.ratio_to_baseline().expect("ratio") > 1.0);
    // A second `open` without --resume refuses; with other settings it names the difference.
    // A confirmation round re-measures the best two points and the baseline once more.
    let confirm = WorkerOptions { confirm: 2, ..options("w1") };
    study::run_worker(&store, &st, &s, &feasible, &eval, &confirm, |_| {}).await.expect("confirm");
    let trials = store.trials(st.id).await.expect("trials");
    assert_eq!(trials.len(), 24 + 3, "top two and the baseline, once each");
    let report = study::report(&st, &s, &trials);
    let best = &report.points[report.best_point.expect("best point")];
    assert_eq!((best.mean, best.scores.len()), (6.0, 2));
    assert_eq!(report.points[report.baseline_point.expect("baseline")].scores.len(), 2);
    let e = study::open(&store, "grid", &s, &None, false).await.unwrap_err().to_string();
    assert!(e.contains("--resume"), "{e}");
    let other = StudySettings { budget: 5, ..s.clone() };
    let e = study::open(&store, "grid", &other, &None, true).await.unwrap_err().to_string();
    assert!(e.contains("budget"), "{e}");
}

#[tokio::test(flavor = "current_thread")]
async fn halving_study_runs_its_rungs_beside_the_baseline_and_reports_a_full_fidelity_best() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite_store(&dir).await;
    let model = ModelConfig::preset("mixtral-tiny").expect("tiny");
    let s = settings(StrategyKind::Halving, 20, 2);
    let feasible = Feasibility::new(&s, &model, all_formats_fine());
    let (st, _) = study::open(&store, "halving", &s, &None, false).await.expect("open");
    let eval = Synthetic::new(None);
    study::run_worker(&store, &st, &s, &feasible, &eval, &options("w"), |_| {}).await.expect("run");
    let trials = store.trials(st.id).await.expect("trials");
    assert!(trials.len() <= 20 && trials.len() >= 10, "{} trials", trials.len());
    let report = study::report(&st, &s, &trials);
    let fidelities: std::collections::BTreeSet<String> =
        report.trials.iter().map(|t| format!("{:.3}", t.fidelity)).collect();
    assert!(fidelities.len() >= 2, "several rungs: {fidelities:?}");
    let best = &report.trials[report.best.expect("best")];
    assert_eq!(best.fidelity, 1.0);
    assert_eq!(report.baseline, Some(0));
}

#[tokio::test(flavor = "current_thread")]
async fn quality_bound_and_unusable_formats_prune_with_reasons() {
    let model = ModelConfig::preset("mixtral-tiny").expect("tiny");
    let s = settings(StrategyKind::Random, 10, 2);
    let kl = [("f32".to_string(), Ok(0.0)), ("int8".to_string(), Ok(0.5))].into_iter().collect();
    let f = Feasibility::new(&s, &model, kl);
    let pruned = f.pruning_summary().expect("small");
    assert_eq!(pruned.len(), 1);
    assert_eq!((pruned[0].0.as_str(), pruned[0].1), ("quality", 24));
    assert!(pruned[0].2.contains("int8") && pruned[0].2.contains("0.0500"), "{:?}", pruned[0]);
    let kl = [("f32".to_string(), Ok(0.0)), ("int8".to_string(), Err("too wide".to_string()))]
        .into_iter()
        .collect();
    let f = Feasibility::new(&s, &model, kl);
    let e = f.check(&[1, 0, 0, 0]).unwrap_err();
    assert!(e.starts_with("weights: int8") && e.contains("too wide"), "{e}");
}

/// Runs a study whose first worker is "killed" mid-trial, then resumes it with another.
async fn resume_after_kill(store: &Store, name: &str) {
    let model = ModelConfig::preset("mixtral-tiny").expect("tiny");
    let s = settings(StrategyKind::Tpe, 12, 2);
    let feasible = Feasibility::new(&s, &model, all_formats_fine());
    let (st, _) = study::open(store, name, &s, &None, false).await.expect("open");
    let killed = Synthetic::new(Some(6));
    let first = options(&dead_worker());
    let run = study::run_worker(store, &st, &s, &feasible, &killed, &first, |_| {});
    // The first worker hangs in its sixth trial; stop it there, as a kill would.
    tokio::select! {
        r = run => panic!("the first worker should hang in its sixth trial, not end: {r:?}"),
        () = killed.hung.notified() => {}
    }
    let before = store.trials(st.id).await.expect("trials");
    let finished: Vec<_> = before.iter().filter(|t| t.status == TrialStatus::Completed).collect();
    assert_eq!(finished.len(), 5);
    assert_eq!(before.iter().filter(|t| t.status == TrialStatus::Running).count(), 1);

    let resumed = Synthetic::new(None);
    let (st, created) = study::open(store, name, &s, &None, true).await.expect("reopen");
    assert!(!created);
    let summary = study::run_worker(store, &st, &s, &feasible, &resumed, &options("w2"), |_| {})
        .await
        .expect("resume");
    assert_eq!(summary.requeued, 1, "the dead worker's trial goes back to the queue");
    let after = store.trials(st.id).await.expect("trials");
    assert_eq!(after.len(), 12);
    assert!(after.iter().all(|t| t.status == TrialStatus::Completed));
    // Finished trials were kept, not rerun: the resumed worker measured the rest only.
    assert_eq!(resumed.calls().len(), 12 - 5);
    for t in &finished {
        let again = after.iter().find(|a| a.id == t.id).expect("kept");
        assert_eq!(again.measured, t.measured);
    }
    // The resumed proposals are the ones an uninterrupted study makes.
    let fresh_dir = tempfile::tempdir().expect("tempdir");
    let fresh = sqlite_store(&fresh_dir).await;
    let (st2, _) = study::open(&fresh, name, &s, &None, false).await.expect("open");
    study::run_worker(&fresh, &st2, &s, &feasible, &Synthetic::new(None), &options("w3"), |_| {})
        .await
        .expect("uninterrupted");
    let keys = |ts: &[dyno_results::store::Trial]| {
        ts.iter().map(|t| t.trial_key.clone()).collect::<Vec<_>>()
    };
    assert_eq!(keys(&after), keys(&fresh.trials(st2.id).await.expect("trials")));
}

#[tokio::test(flavor = "current_thread")]
async fn resume_after_kill_loses_no_finished_trial_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    resume_after_kill(&sqlite_store(&dir).await, "resume").await;
}

#[tokio::test(flavor = "current_thread")]
async fn resume_after_kill_loses_no_finished_trial_postgres() {
    let Ok(url) = std::env::var("DYNO_TEST_POSTGRES_URL") else {
        eprintln!("skipped: DYNO_TEST_POSTGRES_URL is not set");
        return;
    };
    resume_after_kill(&Store::open(&url).await.expect("pg"), &unique("resume")).await;
}

/// Two workers, each with its own connection pool, run one study at the same time.
async fn two_workers(a: &Store, b: &Store, name: &str) {
    let model = ModelConfig::preset("mixtral-tiny").expect("tiny");
    let s = settings(StrategyKind::Random, 20, 2);
    let feasible = Feasibility::new(&s, &model, all_formats_fine());
    let (st, _) = study::open(a, name, &s, &None, false).await.expect("open");
    let (st_b, _) = study::open(b, name, &s, &None, true).await.expect("join");
    assert_eq!(st.id, st_b.id);
    let (ea, eb) = (Synthetic::new(None), Synthetic::new(None));
    let (oa, ob) = (options("worker-a"), options("worker-b"));
    let (ra, rb) = tokio::join!(
        study::run_worker(a, &st, &s, &feasible, &ea, &oa, |_| {}),
        study::run_worker(b, &st_b, &s, &feasible, &eb, &ob, |_| {}),
    );
    ra.expect("a");
    rb.expect("b");
    let trials = a.trials(st.id).await.expect("trials");
    assert_eq!(trials.len(), 20);
    assert!(trials.iter().all(|t| t.status == TrialStatus::Completed));
    let mut all = ea.calls();
    all.extend(eb.calls());
    assert_eq!(all.len(), 20, "each trial measured by exactly one worker");
    let mut seen = std::collections::HashSet::new();
    assert!(all.iter().all(|c| seen.insert(c.clone())), "no config measured twice");
    let by_worker = |w: &str| trials.iter().filter(|t| t.worker.as_deref() == Some(w)).count();
    assert_eq!(by_worker("worker-a"), ea.calls().len());
    assert_eq!(by_worker("worker-b"), eb.calls().len());
}

#[tokio::test(flavor = "current_thread")]
async fn two_workers_never_run_the_same_trial_sqlite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = sqlite_store(&dir).await;
    let b = sqlite_store(&dir).await;
    two_workers(&a, &b, "shared").await;
}

#[tokio::test(flavor = "current_thread")]
async fn two_workers_never_run_the_same_trial_postgres() {
    let Ok(url) = std::env::var("DYNO_TEST_POSTGRES_URL") else {
        eprintln!("skipped: DYNO_TEST_POSTGRES_URL is not set");
        return;
    };
    let a = Store::open(&url).await.expect("pg a");
    let b = Store::open(&url).await.expect("pg b");
    two_workers(&a, &b, &unique("shared")).await;
}

/// The simulator's stand-in: [`Synthetic`]'s figures with known errors (throughput and
/// goodput 10% high, p50 TTFT 20% low, p99 TTFT 10 ms high, p50 TPOT exact, p99 TPOT 10%
/// low), stored as predictions.
struct Predicting(Synthetic);

impl Evaluator for Predicting {
    async fn evaluate(
        &self,
        config: &EngineConfig,
        fidelity: f64,
        rate_hint: Option<f64>,
    ) -> Result<TrialMetrics, String> {
        let m = self.0.evaluate(config, fidelity, rate_hint).await?;
        Ok(TrialMetrics {
            goodput: m.goodput * 1.1,
            request_throughput: m.request_throughput * 1.1,
            ttft_p50_ms: m.ttft_p50_ms * 0.8,
            ttft_p99_ms: m.ttft_p99_ms + 10.0,
            tpot_p99_ms: m.tpot_p99_ms * 0.9,
            ..m
        })
    }

    fn predicts(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "current_thread")]
async fn simulate_then_measure_keeps_predictions_beside_measurements_and_reports_the_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = sqlite_store(&dir).await;
    let model = ModelConfig::preset("mixtral-tiny").expect("tiny");
    // The simulated phase: every feasible point (24 on one core), predictions only.
    let sim = settings(StrategyKind::Grid, 24, 1);
    let feasible = Feasibility::new(&sim, &model, all_formats_fine());
    let (sim_row, _) = study::open(&store, "s-sim", &sim, &None, false).await.expect("open");
    let predictor = Predicting(Synthetic::new(None));
    let summary =
        study::run_local(&store, &sim_row, &sim, &feasible, &predictor, &options("w"), |_| {})
            .await
            .expect("simulate");
    assert_eq!(summary.measured, 24);
    let sim_trials = store.trials(sim_row.id).await.expect("trials");
    assert_eq!(sim_trials.len(), 24, "every feasible point once");
    assert!(sim_trials.iter().all(|t| t.predicted.is_some() && t.measured.is_none()));
    // Resuming the finished simulated study predicts nothing again.
    let again =
        study::run_local(&store, &sim_row, &sim, &feasible, &predictor, &options("w"), |_| {})
            .await
            .expect("again");
    assert_eq!(again.measured, 0);

    // The top two by predicted goodput, then the baseline (f32: not among them).
    let top = study::top_predicted(&sim_trials, Goal::Goodput, 2);
    assert_eq!(top.len(), 3, "{top:?}");
    assert!((top[0].predicted.goodput - 6.0 * 1.1).abs() < 1e-9, "the optimum first");
    assert!(top[0].predicted.goodput >= top[1].predicted.goodput);
    assert!(!top[0].baseline && !top[1].baseline && top[2].baseline);

    // The measured phase: those three queued with their predictions, nothing else measured.
    let measured = StudySettings { budget: top.len(), ..settings(StrategyKind::Tpe, 3, 1) };
    let feasible = Feasibility::new(&measured, &model, all_formats_fine());
    let (st, _) = study::open(&store, "s", &measured, &None, false).await.expect("open");
    let queued =
        study::enqueue_predicted(&store, &st, &measured, &model, &top).await.expect("enqueue");
    assert_eq!(queued, 3);
    assert_eq!(
        study::enqueue_predicted(&store, &st, &measured, &model, &top).await.expect("again"),
        0
    );
    let eval = Synthetic::new(None);
    let summary =
        study::run_worker(&store, &st, &measured, &feasible, &eval, &options("w"), |_| {})
            .await
            .expect("measure");
    assert_eq!((summary.measured, summary.stop), (3, study::StopReason::Budget));
    assert_eq!(eval.calls().len(), 3, "only the queued points are measured");
    let trials = store.trials(st.id).await.expect("trials");
    assert_eq!(trials.len(), 3);
    assert!(trials.iter().all(|t| t.status == TrialStatus::Completed));
    assert!(trials.iter().all(|t| t.predicted.is_some() && t.measured.is_some()));
    // The baseline is queued first.
    assert!(study::trial_prediction(&trials[0]).is_some());

    let report = study::report(&st, &measured, &trials);
    assert_eq!(report.baseline, Some(0));
    assert!(report.trials.iter().all(|t| t.predicted.is_some()));
    let p = report.predictions.as_ref().expect("prediction section");
    assert_eq!(p.rows.len(), 3);
    let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
    let mut ttft99 = Vec::new();
    for r in &p.rows {
        // Measured goodput v; predicted 1.1·v.
        let v = r.measured_score;
        assert!(close(r.predicted_score, 1.1 * v), "{r:?}");
        assert!(close(r.errors.throughput, 0.1), "{r:?}");
        assert!(close(r.errors.ttft_p50, -0.2), "{r:?}");
        // p99 TTFT measured 100/v, predicted 100/v + 10: error 10 ÷ (100/v) = v/10.
        assert!(close(r.errors.ttft_p99, v / 10.0), "{r:?}");
        assert!(close(r.errors.tpot_p50, 0.0), "{r:?}");
        assert!(close(r.errors.tpot_p99, -0.1), "{r:?}");
        ttft99.push(v / 10.0);
    }
    // The optimum (6) and the baseline were measured: v/10 = 0.6 for the optimum.
    assert!(ttft99.iter().any(|&e| close(e, 0.6)), "{ttft99:?}");
    assert!(close(p.mean_abs.throughput, 0.1));
    assert!(close(p.mean_abs.ttft_p50, 0.2));
    assert!(close(p.mean_abs.ttft_p99, ttft99.iter().sum::<f64>() / 3.0));
    assert!(close(p.mean_abs.tpot_p50, 0.0));
    assert!(close(p.mean_abs.tpot_p99, 0.1));
    // In the report's JSON (what `dyno study show --json` prints).
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["predictions"]["rows"].as_array().map(Vec::len), Some(3));
    // A purely simulated study has no prediction section (its predictions are its metrics).
    let sim_report = study::report(&sim_row, &sim, &sim_trials);
    assert!(sim_report.predictions.is_none());
    assert!(sim_report.trials.iter().all(|t| t.predicted.is_none()));
}
