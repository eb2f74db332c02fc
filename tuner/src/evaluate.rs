//! Evaluators: how a candidate config becomes [`TrialMetrics`].
//!
//! [`MeasuredEvaluator`] starts the reference engine with the candidate on this machine and
//! load-tests it through the harness over loopback HTTP, at a fixed open-loop rate or at the
//! highest rate that meets the workload's SLOs. [`SimulatedEvaluator`] predicts the same
//! metrics with the simulator, for hardware that is not here (or to search widely first).

use std::future::Future;
use std::time::Duration;

use dyno_engine::{EngineConfig, ModelConfig};
use dyno_harness::client::{Client, SloDeadline};
use dyno_harness::load::measure;
use dyno_harness::metrics::{LoadReport, SummaryOptions};
use dyno_harness::runner::RunOptions;
use dyno_harness::search::{SearchOptions, max_rate_under_slo};
use dyno_harness::target::Target;
use dyno_workloads::{LoadOverrides, Workload};
use serde::{Deserialize, Serialize};

use crate::hardware::HardwareProfile;
use crate::objective::TrialMetrics;
use crate::simulate::{SimOptions, SimOutcome, simulate_load};
use crate::step_model::StepModel;

/// Turns a candidate config into metrics.
pub trait Evaluator: Sync {
    /// Measures (or predicts) `config` at `fidelity` (the fraction of a full trial's requests,
    /// in (0, 1]). `rate_hint` is the best rate found so far, where a rate search may start.
    /// An error is the trial's failure reason.
    fn evaluate(
        &self,
        config: &EngineConfig,
        fidelity: f64,
        rate_hint: Option<f64>,
    ) -> impl Future<Output = Result<TrialMetrics, String>> + Send;

    /// Whether the metrics are predictions (a model of the hardware) rather than
    /// measurements; studies store them as such.
    fn predicts(&self) -> bool {
        false
    }
}

/// At which load a trial measures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode")]
pub enum LoadLevel {
    /// One open-loop run at this rate (requests per second): goodput at that offered load.
    FixedRate {
        /// Requests per second.
        rate: f64,
    },
    /// The highest open-loop rate that meets the SLOs (double, then bisect to `tolerance`),
    /// and the figures at that rate.
    MaxRateUnderSlo {
        /// Where the first search starts, requests per second (later ones start at the best
        /// rate found so far).
        start_rate: f64,
        /// Stop bisecting when the bracket is within this fraction.
        tolerance: f64,
        /// Load tests per trial at most.
        max_probes: usize,
    },
}

/// Receives one line per load test of a trial (rate, goodput, p99s), for progress displays.
pub type LoadTestLog = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// The reference engine on this machine, load-tested through the harness.
#[derive(Clone)]
pub struct MeasuredEvaluator {
    /// The model.
    pub model: ModelConfig,
    /// The request stream and its SLOs.
    pub workload: Workload,
    /// Measured requests of a full-fidelity load test.
    pub requests: usize,
    /// At which load.
    pub level: LoadLevel,
    /// A run whose client lagged its schedule by more than this (p99, seconds) is invalid.
    pub max_lag_s: f64,
    /// A whole trial (engine start and every load test) is abandoned after this long.
    pub trial_timeout: Duration,
    /// Told about every load test as it finishes.
    pub log: Option<LoadTestLog>,
}

impl std::fmt::Debug for MeasuredEvaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeasuredEvaluator")
            .field("model", &self.model.name)
            .field("workload", &self.workload.name)
            .field("requests", &self.requests)
            .field("level", &self.level)
            .field("max_lag_s", &self.max_lag_s)
            .field("trial_timeout", &self.trial_timeout)
            .finish_non_exhaustive()
    }
}

impl MeasuredEvaluator {
    /// Requests of one load test at `fidelity` (at least 4).
    pub fn requests_at(&self, fidelity: f64) -> usize {
        ((self.requests as f64 * fidelity).round() as usize).max(4)
    }

    async fn run(
        &self,
        config: &EngineConfig,
        fidelity: f64,
        rate_hint: Option<f64>,
    ) -> Result<TrialMetrics, String> {
        let target = Target::Builtin {
            model: self.model.clone(),
            config: Box::new(config.clone()),
            checkpoint: None,
        };
        let running = target.start().await.map_err(|e| format!("engine: {e}"))?;
        let slo = &self.workload.slo;
        // Requests that can no longer meet the SLOs are abandoned: goodput loses nothing,
        // and an overloaded candidate's run ends in bounded time.
        let mut client = Client::new(running.spec.clone(), 256, self.trial_timeout)
            .map_err(|e| e.to_string())?;
        if let Some(deadline) = slo_deadline(slo) {
            client = client.with_slo_deadline(deadline);
        }
        let requests = self.requests_at(fidelity);
        let summary = SummaryOptions { max_lag_s: self.max_lag_s };
        let run = RunOptions::default();
        let at = |rate: f64| LoadOverrides {
            rate: Some(rate),
            concurrency: None,
            requests: Some(requests),
            duration_s: None,
        };
        let once = async |rate: f64| {
            let report = measure(&client, &self.workload, &at(rate), &run, &summary)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(log) = &self.log {
                log(&format!(
                    "load test at {rate:.3} req/s: goodput {:.3} req/s, p99 TTFT {:.0} ms, p99 TPOT {:.1} ms, SLOs {}, {:.0} s",
                    report.request_goodput.unwrap_or(0.0),
                    report.ttft.p99 * 1e3,
                    report.tpot.p99 * 1e3,
                    if report.slo_met == Some(false) { "missed" } else { "met" },
                    report.duration_s
                ));
            }
            if !report.valid {
                return Err(format!(
                    "invalid run at {rate:.3} req/s: {}",
                    report.invalid_reason.clone().unwrap_or_default()
                ));
            }
            Ok::<_, String>(report)
        };
        at_level(self.level, rate_hint, once).await
    }
}

impl Evaluator for MeasuredEvaluator {
    async fn evaluate(
        &self,
        config: &EngineConfig,
        fidelity: f64,
        rate_hint: Option<f64>,
    ) -> Result<TrialMetrics, String> {
        match tokio::time::timeout(self.trial_timeout, self.run(config, fidelity, rate_hint)).await
        {
            Ok(result) => result,
            Err(_) => Err(format!("timeout: the trial ran past {:?}", self.trial_timeout)),
        }
    }
}

/// When a request is abandoned under `slo` (both a TTFT and a TPOT bound, and a second of
/// grace): the same rule for measured and simulated trials, so their goodputs compare.
fn slo_deadline(slo: &dyno_workloads::Slo) -> Option<SloDeadline> {
    let (ttft, tpot) = (slo.ttft_p99_ms?, slo.tpot_p99_ms?);
    Some(SloDeadline { ttft_s: ttft / 1e3, tpot_s: tpot / 1e3, grace_s: 1.0 })
}

/// The trial's figures at `level`, with `once(rate)` producing one run's report: one run at a
/// fixed rate, or the highest rate meeting the SLOs (double, then bisect; starting from
/// `rate_hint` when given). When no rate passes, the lowest rate tried stands (its goodput is
/// what the candidate manages at all).
async fn at_level<F, Fut>(
    level: LoadLevel,
    rate_hint: Option<f64>,
    once: F,
) -> Result<TrialMetrics, String>
where
    F: Fn(f64) -> Fut,
    Fut: Future<Output = Result<LoadReport, String>>,
{
    match level {
        LoadLevel::FixedRate { rate } => {
            let report = once(rate).await?;
            Ok(TrialMetrics::from_report(&report, rate, 1, 0.0))
        }
        LoadLevel::MaxRateUnderSlo { start_rate, tolerance, max_probes } => {
            let opts = SearchOptions {
                start_rate: rate_hint.unwrap_or(start_rate),
                tolerance,
                max_probes,
                ..SearchOptions::default()
            };
            let search = max_rate_under_slo(&opts, |rate| {
                let run = once(rate);
                async move {
                    let report = run.await?;
                    Ok::<_, String>((report.slo_met.unwrap_or(true), report))
                }
            })
            .await?;
            let chosen = search
                .best()
                .or_else(|| search.probes.iter().min_by(|a, b| a.rate.total_cmp(&b.rate)));
            let probe = chosen.ok_or("the rate search ran no load test")?;
            Ok(TrialMetrics::from_report(&probe.result, probe.rate, search.probes.len(), 0.0))
        }
    }
}

/// The simulator: the engine's scheduler driven by the step-time model of a hardware
/// profile, at the same load levels as [`MeasuredEvaluator`].
#[derive(Debug, Clone)]
pub struct SimulatedEvaluator {
    /// The hardware.
    pub profile: HardwareProfile,
    /// The model.
    pub model: ModelConfig,
    /// The request stream and its SLOs.
    pub workload: Workload,
    /// Simulated requests of a full-fidelity run, at least.
    pub requests: usize,
    /// A full-fidelity run also lasts at least this many seconds of arrivals (so a fast
    /// target meets a high rate for long enough that a queue would build), up to
    /// `max_requests`.
    pub min_duration_s: f64,
    /// Simulated requests of one run at most.
    pub max_requests: usize,
    /// At which load.
    pub level: LoadLevel,
    /// Zipf-like skew of expert routing (0: uniform).
    pub routing_skew: f64,
}

impl SimulatedEvaluator {
    /// One simulated open-loop run of `config` at `rate` with `requests` requests.
    pub fn run_at(
        &self,
        config: &EngineConfig,
        rate: f64,
        requests: usize,
    ) -> Result<(LoadReport, SimOutcome), String> {
        let step_model =
            StepModel::new(&self.profile, &self.model, config).with_routing_skew(self.routing_skew);
        let slo_deadline = slo_deadline(&self.workload.slo);
        let overrides = LoadOverrides {
            rate: Some(rate),
            concurrency: None,
            requests: Some(requests),
            duration_s: None,
        };
        simulate_load(
            &self.workload,
            &overrides,
            &self.model,
            config,
            &step_model,
            &SimOptions { slo_deadline, log_steps: false },
            &SummaryOptions::default(),
        )
        .map_err(|e| e.to_string())
    }

    /// Requests of one run at `rate` and `fidelity` (at least 16).
    pub fn requests_at(&self, rate: f64, fidelity: f64) -> usize {
        let by_duration = (rate * self.min_duration_s).ceil().min(self.max_requests as f64);
        ((self.requests as f64).max(by_duration) * fidelity).round().max(16.0) as usize
    }
}

impl Evaluator for SimulatedEvaluator {
    async fn evaluate(
        &self,
        config: &EngineConfig,
        fidelity: f64,
        rate_hint: Option<f64>,
    ) -> Result<TrialMetrics, String> {
        let once = |rate: f64| {
            let run = self.run_at(config, rate, self.requests_at(rate, fidelity));
            async move { run.map(|(report, _)| report) }
        };
        at_level(self.level, rate_hint, once).await
    }

    fn predicts(&self) -> bool {
        true
    }
}
