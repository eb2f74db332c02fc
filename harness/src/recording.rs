//! What a measurement becomes in the results store: the measures of a load test and of a
//! kernel benchmark, each with its unit, family, direction, bounds and raw samples.
//!
//! Latency measures are stored in milliseconds, throughput in per-second units. Medians and
//! tail percentiles carry a distribution-free 95% confidence interval (order statistics under
//! the binomial normal approximation) as their bounds; every latency measure keeps the run's
//! per-request raw samples (pooled gaps for ITL), which `dyno compare` tests with
//! Mann-Whitney.

use dyno_kernels::bench::{BenchReport, BenchRow};
use dyno_results::store::{Histogram, MetricValue, Scenario, ScenarioResult};
use sha2::Digest;

use crate::load::{LoadMode, LoadOutcome, LoadSpec, RunResult};
use crate::metrics::{Distribution, Histograms, LoadReport, MetricsError, percentile};
use crate::target::Target;
use dyno_workloads::{LoadOverrides, Workload};

/// Raw samples kept per measure at most; longer runs keep an evenly strided subset, so a
/// day-long soak cannot bloat the store.
pub const MAX_STORED_SAMPLES: usize = 20_000;

/// Measure families, as dyno-results' detection names them.
const LATENCY: &str = "latency";
const THROUGHPUT: &str = "throughput";
const KERNEL: &str = "kernel";

/// SHA-256 (hex, first 16 characters) of a config's text: the scenario's config hash.
pub fn config_hash(config_text: &str) -> String {
    let digest = sha2::Sha256::digest(config_text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// At most [`MAX_STORED_SAMPLES`] of `xs` (every k-th), scaled by `scale`.
fn stored_samples(xs: &[f64], scale: f64) -> Vec<f64> {
    let stride = xs.len().div_ceil(MAX_STORED_SAMPLES).max(1);
    xs.iter().step_by(stride).map(|x| x * scale).collect()
}

/// A distribution-free 95% confidence interval for the `q`-quantile (0–1) of `sorted` samples:
/// the order statistics at ranks n·q ± 1.96·√(n·q·(1−q)), clamped to the sample range. `None`
/// below 2 samples.
pub fn quantile_interval(sorted: &[f64], q: f64) -> Option<(f64, f64)> {
    let n = sorted.len();
    if n < 2 {
        return None;
    }
    let nf = n as f64;
    let half = 1.96 * (nf * q * (1.0 - q)).sqrt();
    let lo = ((nf * q - half).floor().max(1.0) as usize).min(n) - 1;
    let hi = ((nf * q + half).ceil().max(1.0) as usize).min(n) - 1;
    Some((sorted[lo], sorted[hi]))
}

fn metric(name: &str, unit: &str, family: &str, lower_is_better: bool, value: f64) -> MetricValue {
    MetricValue {
        measure: name.to_string(),
        unit: unit.to_string(),
        family: family.to_string(),
        lower_is_better,
        value,
        lower: None,
        upper: None,
        n: 1,
        samples: Vec::new(),
    }
}

/// `{name}_median_ms` and `{name}_p99_ms` of one latency distribution, with intervals and the
/// raw samples (seconds in, milliseconds stored).
fn latency_pair(name: &str, dist: &Distribution, samples_s: &[f64]) -> Vec<MetricValue> {
    if dist.count == 0 {
        return Vec::new();
    }
    let mut sorted: Vec<f64> = samples_s.iter().copied().filter(|x| x.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let stored = stored_samples(samples_s, 1e3);
    [("median", 0.5, dist.median), ("p99", 0.99, dist.p99)]
        .into_iter()
        .map(|(stat, q, value)| {
            let (lower, upper) = quantile_interval(&sorted, q)
                .map_or((None, None), |(l, u)| (Some(l * 1e3), Some(u * 1e3)));
            MetricValue {
                lower,
                upper,
                n: i64::try_from(dist.count).unwrap_or(i64::MAX),
                samples: stored.clone(),
                ..metric(&format!("{name}_{stat}_ms"), "ms", LATENCY, true, value * 1e3)
            }
        })
        .collect()
}

/// The measures of one load-test report: TTFT, TPOT, ITL and E2EL median and p99 (ms), TTFT
/// p99 from the intended send (the coordinated-omission view), request and token throughput,
/// goodput when the workload has SLOs, and the failed-request fraction.
pub fn load_metric_values(report: &LoadReport) -> Vec<MetricValue> {
    let s = &report.samples;
    let mut values = Vec::new();
    values.extend(latency_pair("ttft", &report.ttft, &s.ttft));
    values.extend(latency_pair("tpot", &report.tpot, &s.tpot));
    values.extend(latency_pair("itl", &report.itl, &s.itl));
    values.extend(latency_pair("e2el", &report.e2el, &s.e2el));
    if report.co.ttft.count > 0 {
        let mut sorted = s.ttft_intended.clone();
        sorted.sort_by(f64::total_cmp);
        let value = percentile(&sorted, 99.0);
        values.push(MetricValue {
            n: i64::try_from(sorted.len()).unwrap_or(i64::MAX),
            samples: stored_samples(&s.ttft_intended, 1e3),
            ..metric("ttft_intended_p99_ms", "ms", LATENCY, true, value * 1e3)
        });
    }
    let n = i64::try_from(report.measured_requests).unwrap_or(i64::MAX);
    let counted = |m: MetricValue| MetricValue { n, ..m };
    values.push(counted(metric(
        "request_throughput",
        "req/s",
        THROUGHPUT,
        false,
        report.request_throughput,
    )));
    values.push(counted(metric(
        "output_throughput",
        "tok/s",
        THROUGHPUT,
        false,
        report.output_throughput,
    )));
    values.push(counted(metric(
        "total_token_throughput",
        "tok/s",
        THROUGHPUT,
        false,
        report.total_token_throughput,
    )));
    if let Some(goodput) = report.request_goodput {
        values.push(counted(metric("request_goodput", "req/s", THROUGHPUT, false, goodput)));
    }
    if report.measured_requests > 0 {
        let fraction = report.failed as f64 / report.measured_requests as f64;
        values.push(counted(metric("failed_fraction", "", THROUGHPUT, true, fraction)));
    }
    values.retain(|v| v.value.is_finite());
    values
}

/// The run's HDR histograms, serialized (V2 + DEFLATE) under their names.
pub fn load_histograms(report: &LoadReport) -> Result<Vec<Histogram>, MetricsError> {
    Ok(Histograms::from_samples(&report.samples)?
        .serialize(true)?
        .into_iter()
        .map(|(name, data)| Histogram { name: name.to_string(), data })
        .collect())
}

/// The model name a target serves, for scenario names: the built-in model's name, the URL
/// target's `--served-model` (else `url`), or `null-server`.
fn target_model(target: &Target) -> String {
    match target {
        Target::Builtin { model, .. } => model.name.clone(),
        Target::Url { model, .. } => model.clone().unwrap_or_else(|| "url".to_string()),
        Target::Null(_) => "null-server".to_string(),
    }
}

/// The stored scenario of a load test: named `{workload}/{model}/{level}` (level: `rate=R`,
/// `concurrency=C`, `max-rate-under-slo`, or `workload` for the workload's own pacing), with a
/// config that holds everything that shapes the numbers — the target (model and engine config
/// for the built-in engine), the parsed workload and the count/duration overrides — so a
/// series never mixes configurations (its hash keys the series).
pub fn load_scenario(
    target: &Target,
    workload: &Workload,
    overrides: &LoadOverrides,
    level: &str,
) -> Result<Scenario, serde_yaml::Error> {
    use serde_yaml::{Mapping, Value};
    let mut doc = Mapping::new();
    let mut put = |k: &str, v: Value| doc.insert(Value::String(k.to_string()), v);
    match target {
        Target::Builtin { model, config, checkpoint } => {
            put("target", Value::String("builtin".into()));
            put("model", serde_yaml::to_value(model)?);
            put("engine", serde_yaml::to_value(config.as_ref())?);
            if let Some(c) = checkpoint {
                put("checkpoint", Value::String(c.display().to_string()));
            }
        }
        Target::Url { base_url, model, token_prompts } => {
            put("target", Value::String(base_url.clone()));
            put("served_model", serde_yaml::to_value(model)?);
            put("token_prompts", Value::Bool(*token_prompts));
        }
        Target::Null(config) => {
            put("target", Value::String("null".into()));
            put("null_server", serde_yaml::to_value(config)?);
        }
    }
    put("workload", serde_yaml::to_value(workload)?);
    put("requests", serde_yaml::to_value(overrides.requests)?);
    put("duration_s", serde_yaml::to_value(overrides.duration_s)?);
    let config = serde_yaml::to_string(&doc)?;
    let model = target_model(target);
    Ok(Scenario {
        name: format!("{}/{model}/{level}", workload.name),
        model,
        workload: workload.name.clone(),
        config_hash: config_hash(&config),
        config,
    })
}

/// The level part of a load scenario's name for a run at `rate` (or at the overrides' or the
/// workload's own pacing when `None`).
pub fn load_level(rate: Option<f64>, overrides: &LoadOverrides) -> String {
    match (rate.or(overrides.rate), overrides.concurrency) {
        (Some(r), _) => format!("rate={r}"),
        (None, Some(c)) => format!("concurrency={c}"),
        (None, None) => "workload".to_string(),
    }
}

/// One load-test run as a stored scenario result.
pub fn load_scenario_result(
    scenario: Scenario,
    run: &RunResult,
) -> Result<ScenarioResult, MetricsError> {
    Ok(ScenarioResult {
        scenario,
        values: load_metric_values(&run.report),
        histograms: load_histograms(&run.report)?,
    })
}

/// Why a run of an outcome is not stored.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// The scenario description could not be serialized.
    #[error("describing the scenario: {0}")]
    Describe(#[from] serde_yaml::Error),
    /// The histograms could not be built or serialized.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// What a load invocation stores: each valid run as a scenario (a search stores its best
/// passing run, with the rate it found, as level `max-rate-under-slo`), named by
/// [`load_scenario`] or, when given, `name` (with ` @rate=R` per run of a sweep). Invalid
/// runs are left out, since their numbers measure the client rather than the target; the
/// second list says which and why, one line each.
pub fn outcome_results(
    target: &Target,
    spec: &LoadSpec,
    outcome: &LoadOutcome,
    name: Option<&str>,
) -> Result<(Vec<ScenarioResult>, Vec<String>), RecordingError> {
    let is_search = matches!(spec.mode, LoadMode::MaxRateUnderSlo(_));
    let is_sweep = matches!(spec.mode, LoadMode::Sweep(_));
    let chosen: Vec<&RunResult> = match (is_search, outcome.max_rate_under_slo.flatten()) {
        (true, Some(best)) => {
            outcome.runs.iter().filter(|r| r.rate == Some(best)).take(1).collect()
        }
        (true, None) => Vec::new(),
        (false, _) => outcome.runs.iter().collect(),
    };
    let mut skipped = Vec::new();
    if is_search && chosen.is_empty() {
        skipped.push("nothing recorded: no rate met the SLOs".to_string());
    }
    let mut out = Vec::new();
    for run in chosen {
        let level = if is_search {
            "max-rate-under-slo".to_string()
        } else {
            load_level(run.rate, &spec.overrides)
        };
        if let Some(reason) = &run.report.invalid_reason {
            skipped.push(format!("not recording the run at {level}: it is invalid ({reason})"));
            continue;
        }
        let mut scenario = load_scenario(target, &spec.workload, &spec.overrides, &level)?;
        if let Some(name) = name {
            scenario.name = if is_sweep { format!("{name} @{level}") } else { name.to_string() };
        }
        let mut result = load_scenario_result(scenario, run)?;
        if let (true, Some(rate)) = (is_search, run.rate) {
            result.values.push(max_rate_metric(rate, outcome.runs.len()));
        }
        out.push(result);
    }
    Ok((out, skipped))
}

/// The found highest rate under the SLOs, as a measure (higher is better).
pub fn max_rate_metric(rate: f64, probes: usize) -> MetricValue {
    MetricValue {
        n: i64::try_from(probes).unwrap_or(i64::MAX),
        ..metric("max_rate_under_slo", "req/s", THROUGHPUT, false, rate)
    }
}

/// A kernel row's scenario name: `kernels/{kernel}/{shape}` with the shape joined by `x`.
fn kernel_scenario_name(row: &BenchRow) -> String {
    let shape: Vec<String> = row.shape.iter().map(usize::to_string).collect();
    format!("kernels/{}/{}", row.kernel, shape.join("x"))
}

/// The measures of a kernel benchmark: one scenario per kernel and shape, one measure per
/// variant (its throughput in the row's unit, higher is better, family `kernel`); rows
/// without a value (a variant this machine cannot run) are left out. The scenario's config is
/// the machine key and thread count, so a series never mixes thread counts.
pub fn kernel_scenario_results(report: &BenchReport) -> Vec<ScenarioResult> {
    let mut out: Vec<ScenarioResult> = Vec::new();
    for row in &report.rows {
        let Some(value) = row.value.filter(|v| v.is_finite()) else { continue };
        let name = kernel_scenario_name(row);
        let config = format!("machine: {}\nthreads: {}\n", report.machine_key, row.threads);
        let scenario = Scenario {
            name: name.clone(),
            model: String::new(),
            workload: "microbenchmark".to_string(),
            config_hash: config_hash(&config),
            config,
        };
        let value = MetricValue {
            samples: row.median_s.map(|t| vec![t]).unwrap_or_default(),
            ..metric(&row.variant, row.metric.unit(), KERNEL, false, value)
        };
        match out.iter_mut().find(|r| r.scenario == scenario) {
            Some(r) if !r.values.iter().any(|v| v.measure == value.measure) => r.values.push(value),
            Some(_) => {}
            None => out.push(ScenarioResult { scenario, values: vec![value], histograms: vec![] }),
        }
    }
    out
}
