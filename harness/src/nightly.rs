//! The suite runner behind `dyno nightly`: every scenario of a suite (kernel microbenchmarks
//! and engine load tests at fixed configs) measured in turn and recorded into one run as soon
//! as it finishes, so a run killed midway keeps what it finished and the store stays
//! consistent (the run is left `running` and later marked failed; only completed runs feed
//! series).
//!
//! [`prepare`] checks everything a suite names (models, engine configs, workloads) before
//! anything runs; [`run_suite`] measures and records; failures of single scenarios are
//! collected, not fatal, while a failing store is.

use std::path::Path;
use std::time::{Duration, Instant};

use dyno_engine::{EngineConfig, ModelConfig};
use dyno_kernels::bench::{BenchOptions, run_bench};
use dyno_kernels::tune::GemmShape;
use dyno_kernels::tune::timing::TimingOptions;
use dyno_results::store::{RunSummary, Scenario as StoredScenario, Store, StoreError};
use dyno_results::summary::ScenarioFailure;
use dyno_workloads::{EngineSource, KernelShapes, LoadLevel, Suite};
use dyno_workloads::{LoadOverrides, Workload};

use crate::client::Client;
use crate::load::{LoadMode, LoadSpec, run_load};
use crate::metrics::SummaryOptions;
use crate::recording::{kernel_scenario_results, load_level, load_scenario, outcome_results};
use crate::runner::RunOptions;
use crate::search::SearchOptions;
use crate::target::Target;

/// A suite that cannot run as written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SuiteError(pub String);

/// One serving scenario, checked and ready to run.
#[derive(Debug, Clone)]
pub struct PreparedScenario {
    /// The suite's name for it (its series are keyed by it).
    pub name: String,
    /// The built-in engine with the scenario's model and config.
    pub target: Target,
    /// The workload.
    pub workload: Workload,
    /// The scenario's count/duration and level overrides.
    pub overrides: LoadOverrides,
    /// Fixed rate, fixed concurrency, or the highest rate under the SLOs.
    pub level: LoadLevel,
}

/// A whole suite, checked.
#[derive(Debug, Clone)]
pub struct PreparedSuite {
    /// Serving scenarios, in suite order.
    pub scenarios: Vec<PreparedScenario>,
    /// Kernel microbenchmark shapes, if any.
    pub kernels: Option<KernelShapes>,
}

/// Checks every scenario of `suite` (read from `origin`): its model resolves, its engine
/// config parses and fits the model. Nothing is started.
pub fn prepare(suite: &Suite, origin: &str) -> Result<PreparedSuite, SuiteError> {
    let mut scenarios = Vec::with_capacity(suite.scenarios.len());
    for s in &suite.scenarios {
        let at = format!("{origin}: scenario `{}`", s.name);
        let model = ModelConfig::resolve(&s.model)
            .map_err(|e| SuiteError(format!("{at}: model `{}`: {e}", s.model)))?;
        let config = match s.engine_source() {
            EngineSource::Default => EngineConfig::default(),
            EngineSource::Inline(v) => {
                let text = serde_yaml::to_string(v)
                    .map_err(|e| SuiteError(format!("{at}: engine: {e}")))?;
                EngineConfig::from_yaml(&text, &format!("{at}: engine"))
                    .map_err(|e| SuiteError(e.to_string()))?
            }
            EngineSource::File(p) => {
                EngineConfig::from_yaml_file(p).map_err(|e| SuiteError(format!("{at}: {e}")))?
            }
        };
        config.validate_for(&model, &at).map_err(|e| SuiteError(e.to_string()))?;
        let workload = s.load_workload().map_err(|e| SuiteError(format!("{at}: {e}")))?;
        scenarios.push(PreparedScenario {
            name: s.name.clone(),
            target: Target::Builtin { model, config: Box::new(config), checkpoint: None },
            workload,
            overrides: s.overrides(),
            level: s.load_level(),
        });
    }
    Ok(PreparedSuite { scenarios, kernels: suite.kernels.clone() })
}

/// Reads, checks and prepares the suite file at `path`.
pub fn prepare_file(path: &Path) -> Result<PreparedSuite, SuiteError> {
    let suite = Suite::from_file(path).map_err(|e| SuiteError(e.to_string()))?;
    prepare(&suite, &path.display().to_string())
}

/// How a nightly measures.
#[derive(Debug, Clone)]
pub struct NightlyOptions {
    /// Time budget per kernel variant.
    pub kernel_budget: Duration,
    /// Rounds per kernel measurement (best round kept).
    pub kernel_rounds: usize,
    /// Threads for kernels.
    pub kernel_threads: usize,
    /// A load run is invalid above this p99 send lag, seconds.
    pub max_lag_s: f64,
    /// Per-request timeout.
    pub request_timeout: Duration,
}

impl Default for NightlyOptions {
    fn default() -> Self {
        NightlyOptions {
            kernel_budget: Duration::from_millis(200),
            kernel_rounds: 3,
            kernel_threads: dyno_kernels::threads::available(),
            max_lag_s: 0.010,
            request_timeout: Duration::from_secs(600),
        }
    }
}

/// What [`run_suite`] did.
#[derive(Debug, Clone, Default)]
pub struct SuiteOutcome {
    /// Scenarios recorded, by stored name.
    pub recorded: Vec<String>,
    /// Scenarios that failed, with why.
    pub failures: Vec<ScenarioFailure>,
}

/// Runs the kernel microbenchmarks of `shapes` (no kernel cache: default parameters and the
/// baselines, so the series do not move when someone tunes locally).
fn run_kernels(
    shapes: &KernelShapes,
    opts: &NightlyOptions,
) -> Result<Vec<dyno_results::store::ScenarioResult>, String> {
    let bench = BenchOptions {
        shapes: shapes.gemm.iter().map(|&[m, n, k]| GemmShape::new(m, n, k)).collect(),
        threads: opts.kernel_threads,
        timing: TimingOptions { budget: opts.kernel_budget, ..TimingOptions::default() },
        gemv_shapes: shapes.gemv.iter().map(|&[n, k]| (n, k)).collect(),
        rounds: opts.kernel_rounds,
        ..BenchOptions::default()
    };
    let report = run_bench(&bench, None).map_err(|e| e.to_string())?;
    Ok(kernel_scenario_results(&report))
}

/// Runs one serving scenario against a fresh built-in engine.
async fn run_serving(
    p: &PreparedScenario,
    opts: &NightlyOptions,
) -> Result<(Vec<dyno_results::store::ScenarioResult>, Vec<String>), String> {
    let mode = match p.level {
        // The search starts from the workload's own rate where it has one.
        LoadLevel::MaxRateUnderSlo => LoadMode::MaxRateUnderSlo(SearchOptions {
            start_rate: p.workload.arrival.rate().unwrap_or(1.0),
            ..SearchOptions::default()
        }),
        LoadLevel::Rate(_) | LoadLevel::Concurrency(_) => LoadMode::Single,
    };
    let spec = LoadSpec {
        workload: p.workload.clone(),
        overrides: p.overrides,
        mode,
        run: RunOptions::default(),
        summary: SummaryOptions { max_lag_s: opts.max_lag_s },
    };
    let running = p.target.start().await.map_err(|e| e.to_string())?;
    let pool = p.overrides.concurrency.unwrap_or(64).max(64);
    let client =
        Client::new(running.spec.clone(), pool, opts.request_timeout).map_err(|e| e.to_string())?;
    let outcome = run_load(&client, &spec).await.map_err(|e| e.to_string())?;
    drop(running);
    outcome_results(&p.target, &spec, &outcome, Some(&p.name)).map_err(|e| e.to_string())
}

/// Measures every scenario of `suite` and records each into the running run `run` as it
/// finishes: kernels first, then the serving scenarios in order. A scenario that fails (or
/// whose run is invalid) is reported in the outcome and the rest go on; a store error stops
/// everything. `progress` receives one line per step.
pub async fn run_suite(
    store: &Store,
    run: i64,
    suite: &PreparedSuite,
    opts: &NightlyOptions,
    mut progress: impl FnMut(&str),
) -> Result<SuiteOutcome, StoreError> {
    let mut outcome = SuiteOutcome::default();
    let total = suite.scenarios.len() + usize::from(suite.kernels.is_some());
    let mut step = 0;
    if let Some(shapes) = &suite.kernels {
        step += 1;
        progress(&format!("[{step}/{total}] kernel microbenchmarks"));
        let started = Instant::now();
        let shapes = shapes.clone();
        let kernel_opts = opts.clone();
        let measured = tokio::task::spawn_blocking(move || run_kernels(&shapes, &kernel_opts))
            .await
            .unwrap_or_else(|e| Err(format!("the benchmark thread failed: {e}")));
        match measured {
            Ok(results) => {
                for r in &results {
                    store
                        .record_scenario_result(run, &r.scenario, &r.values, &r.histograms)
                        .await?;
                    outcome.recorded.push(r.scenario.name.clone());
                }
                progress(&format!(
                    "      recorded {} kernel scenarios in {:.1} s",
                    results.len(),
                    started.elapsed().as_secs_f64()
                ));
            }
            Err(error) => {
                progress(&format!("      failed: {error}"));
                outcome.failures.push(ScenarioFailure { scenario: "kernels".into(), error });
            }
        }
    }
    for p in &suite.scenarios {
        step += 1;
        progress(&format!("[{step}/{total}] {} ({})", p.name, p.workload.name));
        let started = Instant::now();
        match run_serving(p, opts).await {
            Ok((results, skipped)) if !results.is_empty() => {
                for r in &results {
                    store
                        .record_scenario_result(run, &r.scenario, &r.values, &r.histograms)
                        .await?;
                    outcome.recorded.push(r.scenario.name.clone());
                }
                for s in skipped {
                    progress(&format!("      {s}"));
                }
                progress(&format!("      recorded in {:.1} s", started.elapsed().as_secs_f64()));
            }
            Ok((_, skipped)) => {
                let error = if skipped.is_empty() {
                    "no run to record".to_string()
                } else {
                    skipped.join("; ")
                };
                progress(&format!("      failed: {error}"));
                outcome.failures.push(ScenarioFailure { scenario: p.name.clone(), error });
            }
            Err(error) => {
                progress(&format!("      failed: {error}"));
                outcome.failures.push(ScenarioFailure { scenario: p.name.clone(), error });
            }
        }
    }
    Ok(outcome)
}

/// Whether a `running` run was started by a process on this host that no longer exists
/// (killed before it could finish its run), judged from the `hostname` and `pid` its
/// environment recorded.
pub fn started_by_dead_local_process(run: &RunSummary) -> bool {
    let env = &run.environment;
    let host = env.get("hostname").and_then(|h| h.as_str());
    let pid = env.get("pid").and_then(serde_json::Value::as_u64);
    match (host, pid) {
        (Some(host), Some(pid)) => crate::provenance::is_dead_local_process(host, pid),
        _ => false,
    }
}

/// The stored description of a prepared scenario, as [`run_suite`] records it (its config
/// hash keys the scenario's series).
pub fn stored_scenario(p: &PreparedScenario) -> Result<StoredScenario, serde_yaml::Error> {
    let level = match p.level {
        LoadLevel::MaxRateUnderSlo => "max-rate-under-slo".to_string(),
        LoadLevel::Rate(_) | LoadLevel::Concurrency(_) => load_level(None, &p.overrides),
    };
    let mut s = load_scenario(&p.target, &p.workload, &p.overrides, &level)?;
    s.name = p.name.clone();
    Ok(s)
}
