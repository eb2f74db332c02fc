//! One `dyno load` invocation: a workload against a started target, as a single run, a sweep
//! over rates, or the search for the highest rate that meets the workload's SLOs.

use crate::client::Client;
use crate::metrics::{LoadReport, SummaryOptions};
use crate::runner::{RunOptions, run_plan};
use crate::search::{RateSearch, SearchOptions, max_rate_under_slo};
use dyno_workloads::{LoadOverrides, Workload, WorkloadError};
use serde::Serialize;

/// What to run.
#[derive(Debug, Clone)]
pub enum LoadMode {
    /// One run at the workload's (or the overridden) load.
    Single,
    /// One run per open-loop rate, in order.
    Sweep(Vec<f64>),
    /// The highest open-loop rate whose run meets every SLO.
    MaxRateUnderSlo(SearchOptions),
}

/// Everything one invocation needs besides the target.
#[derive(Debug, Clone)]
pub struct LoadSpec {
    /// The request stream and its SLOs.
    pub workload: Workload,
    /// Command-line overrides of its load settings.
    pub overrides: LoadOverrides,
    /// Single run, sweep or search.
    pub mode: LoadMode,
    /// How each run sends.
    pub run: RunOptions,
    /// How each run is summarized.
    pub summary: SummaryOptions,
}

/// One run of an invocation.
#[derive(Debug, Clone, Serialize)]
pub struct RunResult {
    /// The requested open-loop rate (`None`: the workload's own pacing).
    pub rate: Option<f64>,
    /// Its report.
    pub report: LoadReport,
}

/// The outcome of an invocation.
#[derive(Debug, Clone, Serialize)]
pub struct LoadOutcome {
    /// Every run, in the order it ran.
    pub runs: Vec<RunResult>,
    /// For a search: the best rate found (`None` when even the lowest rate failed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rate_under_slo: Option<Option<f64>>,
}

/// Runs the workload once with `overrides` and summarizes it.
pub async fn measure(
    client: &Client,
    workload: &Workload,
    overrides: &LoadOverrides,
    run: &RunOptions,
    summary: &SummaryOptions,
) -> Result<LoadReport, WorkloadError> {
    let plan = workload.plan(overrides)?;
    let records = run_plan(client, &plan, run).await;
    Ok(LoadReport::from_records(&records, &workload.slo, summary))
}

/// Runs `spec` against `client`'s target.
pub async fn run_load(client: &Client, spec: &LoadSpec) -> Result<LoadOutcome, WorkloadError> {
    run_load_with(spec, |overrides| {
        let overrides = *overrides;
        async move { measure(client, &spec.workload, &overrides, &spec.run, &spec.summary).await }
    })
    .await
}

/// Runs `spec`'s mode (one run, a sweep, or the rate search) with `run_once` producing the
/// report of one run at the given overrides: a real load test ([`run_load`]) or a simulated
/// one (the tuner's simulator), so both report alike.
pub async fn run_load_with<F, Fut>(
    spec: &LoadSpec,
    run_once: F,
) -> Result<LoadOutcome, WorkloadError>
where
    F: Fn(&LoadOverrides) -> Fut,
    Fut: std::future::Future<Output = Result<LoadReport, WorkloadError>>,
{
    let at_rate =
        |rate: f64| LoadOverrides { rate: Some(rate), concurrency: None, ..spec.overrides };
    match &spec.mode {
        LoadMode::Single => {
            let report = run_once(&spec.overrides).await?;
            Ok(LoadOutcome {
                runs: vec![RunResult { rate: spec.overrides.rate, report }],
                max_rate_under_slo: None,
            })
        }
        LoadMode::Sweep(rates) => {
            let mut runs = Vec::with_capacity(rates.len());
            for &rate in rates {
                let report = run_once(&at_rate(rate)).await?;
                runs.push(RunResult { rate: Some(rate), report });
            }
            Ok(LoadOutcome { runs, max_rate_under_slo: None })
        }
        LoadMode::MaxRateUnderSlo(opts) => {
            let search: RateSearch<LoadReport> = max_rate_under_slo(opts, |rate| {
                let run = run_once(&at_rate(rate));
                async move {
                    let report = run.await?;
                    let passed = report.valid && report.slo_met.unwrap_or(true);
                    Ok::<_, WorkloadError>((passed, report))
                }
            })
            .await?;
            let best = search.best_rate;
            let runs = search
                .probes
                .into_iter()
                .map(|p| RunResult { rate: Some(p.rate), report: p.result })
                .collect();
            Ok(LoadOutcome { runs, max_rate_under_slo: Some(best) })
        }
    }
}
