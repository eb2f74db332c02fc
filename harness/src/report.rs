//! A [`LoadReport`] as `vllm bench serve` writes it: JSON with vLLM's keys at the top level
//! (milliseconds for latencies, seconds for `duration`, `ttfts` and `itls`) plus dyno's
//! extensions under `dyno`, and a plain-text table in the spirit of vLLM's
//! "Serving Benchmark Result" block.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use dyno_workloads::Slo;
use serde::{Deserialize, Serialize};

use crate::load::{LoadMode, LoadOutcome};
use crate::metrics::{Distribution, LoadReport};

/// Seconds to milliseconds.
const MS: f64 = 1000.0;

/// vLLM's result JSON, with dyno's extensions under `dyno`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonReport {
    /// First intended send → last completion, seconds.
    pub duration: f64,
    /// Successful requests.
    pub completed: usize,
    /// Failed requests.
    pub failed: usize,
    /// Prompt tokens of successful requests.
    pub total_input_tokens: usize,
    /// Output tokens of successful requests.
    pub total_output_tokens: usize,
    /// Successful requests per second.
    pub request_throughput: f64,
    /// Requests meeting the SLO per second; null without an SLO.
    pub request_goodput: Option<f64>,
    /// Output tokens per second.
    pub output_throughput: f64,
    /// Input + output tokens per second.
    pub total_token_throughput: f64,
    /// Prompt tokens per measured request.
    pub input_lens: Vec<usize>,
    /// Output tokens per measured request (0 for failures).
    pub output_lens: Vec<usize>,
    /// TTFT per successful request, seconds.
    pub ttfts: Vec<f64>,
    /// ITL samples per successful request, seconds.
    pub itls: Vec<Vec<f64>>,
    /// Error detail per measured request, "" for a success.
    pub errors: Vec<String>,

    /// Mean TTFT, ms.
    pub mean_ttft_ms: f64,
    /// Median TTFT, ms.
    pub median_ttft_ms: f64,
    /// Population std of TTFT, ms.
    pub std_ttft_ms: f64,
    /// p50 TTFT, ms.
    pub p50_ttft_ms: f64,
    /// p90 TTFT, ms.
    pub p90_ttft_ms: f64,
    /// p95 TTFT, ms.
    pub p95_ttft_ms: f64,
    /// p99 TTFT, ms.
    pub p99_ttft_ms: f64,
    /// p99.9 TTFT, ms.
    #[serde(rename = "p99.9_ttft_ms")]
    pub p99_9_ttft_ms: f64,

    /// Mean TPOT, ms.
    pub mean_tpot_ms: f64,
    /// Median TPOT, ms.
    pub median_tpot_ms: f64,
    /// Population std of TPOT, ms.
    pub std_tpot_ms: f64,
    /// p50 TPOT, ms.
    pub p50_tpot_ms: f64,
    /// p90 TPOT, ms.
    pub p90_tpot_ms: f64,
    /// p95 TPOT, ms.
    pub p95_tpot_ms: f64,
    /// p99 TPOT, ms.
    pub p99_tpot_ms: f64,
    /// p99.9 TPOT, ms.
    #[serde(rename = "p99.9_tpot_ms")]
    pub p99_9_tpot_ms: f64,

    /// Mean ITL, ms.
    pub mean_itl_ms: f64,
    /// Median ITL, ms.
    pub median_itl_ms: f64,
    /// Population std of ITL, ms.
    pub std_itl_ms: f64,
    /// p50 ITL, ms.
    pub p50_itl_ms: f64,
    /// p90 ITL, ms.
    pub p90_itl_ms: f64,
    /// p95 ITL, ms.
    pub p95_itl_ms: f64,
    /// p99 ITL, ms.
    pub p99_itl_ms: f64,
    /// p99.9 ITL, ms.
    #[serde(rename = "p99.9_itl_ms")]
    pub p99_9_itl_ms: f64,

    /// Mean E2EL, ms.
    pub mean_e2el_ms: f64,
    /// Median E2EL, ms.
    pub median_e2el_ms: f64,
    /// Population std of E2EL, ms.
    pub std_e2el_ms: f64,
    /// p50 E2EL, ms.
    pub p50_e2el_ms: f64,
    /// p90 E2EL, ms.
    pub p90_e2el_ms: f64,
    /// p95 E2EL, ms.
    pub p95_e2el_ms: f64,
    /// p99 E2EL, ms.
    pub p99_e2el_ms: f64,
    /// p99.9 E2EL, ms.
    #[serde(rename = "p99.9_e2el_ms")]
    pub p99_9_e2el_ms: f64,

    /// dyno's extensions.
    pub dyno: DynoExtensions,
}

/// What dyno reports beyond vLLM's keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DynoExtensions {
    /// Warm-up requests sent and excluded.
    pub warmup_requests: usize,
    /// Measured requests (completed + failed).
    pub measured_requests: usize,
    /// Failures by kind, keyed by [`crate::ErrorKind::name`] (every kind, zeros included).
    pub failures: BTreeMap<String, usize>,
    /// Successful requests without usage (counted as 0 output tokens).
    pub missing_usage: usize,
    /// Whether the numbers can be trusted.
    pub valid: bool,
    /// Why not, when `valid` is false.
    pub invalid_reason: Option<String>,
    /// The objectives given.
    pub slo: Slo,
    /// Whether each given bound is ≥ its metric's p99; null without an SLO.
    pub slo_met: Option<bool>,
    /// Requests meeting every given objective; null without an SLO.
    pub good_requests: Option<usize>,
    /// Schedule rate of the measured requests, requests/s.
    pub intended_rate: Option<f64>,
    /// Achieved send rate, requests/s.
    pub achieved_rate: Option<f64>,
    /// TTFT from the intended send time, ms.
    pub ttft_intended_ms: Distribution,
    /// E2EL from the intended send time, ms.
    pub e2el_intended_ms: Distribution,
    /// Send lag behind the schedule (sent − intended), ms.
    pub lag_ms: Distribution,
    /// Where the run happened (machine, engine, versions); the caller fills it.
    #[serde(default)]
    pub environment: serde_json::Value,
}

impl JsonReport {
    /// Build the JSON view of a report; `environment` starts null.
    pub fn new(r: &LoadReport) -> JsonReport {
        let (t, p, i, e) =
            (r.ttft.scaled(MS), r.tpot.scaled(MS), r.itl.scaled(MS), r.e2el.scaled(MS));
        JsonReport {
            duration: r.duration_s,
            completed: r.completed,
            failed: r.failed,
            total_input_tokens: r.total_input_tokens,
            total_output_tokens: r.total_output_tokens,
            request_throughput: r.request_throughput,
            request_goodput: r.request_goodput,
            output_throughput: r.output_throughput,
            total_token_throughput: r.total_token_throughput,
            input_lens: r.input_lens.clone(),
            output_lens: r.output_lens.clone(),
            ttfts: r.ttfts.clone(),
            itls: r.itls.clone(),
            errors: r.errors.clone(),
            mean_ttft_ms: t.mean,
            median_ttft_ms: t.median,
            std_ttft_ms: t.std,
            p50_ttft_ms: t.p50,
            p90_ttft_ms: t.p90,
            p95_ttft_ms: t.p95,
            p99_ttft_ms: t.p99,
            p99_9_ttft_ms: t.p999,
            mean_tpot_ms: p.mean,
            median_tpot_ms: p.median,
            std_tpot_ms: p.std,
            p50_tpot_ms: p.p50,
            p90_tpot_ms: p.p90,
            p95_tpot_ms: p.p95,
            p99_tpot_ms: p.p99,
            p99_9_tpot_ms: p.p999,
            mean_itl_ms: i.mean,
            median_itl_ms: i.median,
            std_itl_ms: i.std,
            p50_itl_ms: i.p50,
            p90_itl_ms: i.p90,
            p95_itl_ms: i.p95,
            p99_itl_ms: i.p99,
            p99_9_itl_ms: i.p999,
            mean_e2el_ms: e.mean,
            median_e2el_ms: e.median,
            std_e2el_ms: e.std,
            p50_e2el_ms: e.p50,
            p90_e2el_ms: e.p90,
            p95_e2el_ms: e.p95,
            p99_e2el_ms: e.p99,
            p99_9_e2el_ms: e.p999,
            dyno: DynoExtensions {
                warmup_requests: r.warmup_requests,
                measured_requests: r.measured_requests,
                failures: r.failures.iter().map(|(k, &n)| (k.name().to_string(), n)).collect(),
                missing_usage: r.missing_usage,
                valid: r.valid,
                invalid_reason: r.invalid_reason.clone(),
                slo: r.slo,
                slo_met: r.slo_met,
                good_requests: r.good_requests,
                intended_rate: r.co.intended_rate,
                achieved_rate: r.co.achieved_rate,
                ttft_intended_ms: r.co.ttft.scaled(MS),
                e2el_intended_ms: r.co.e2el.scaled(MS),
                lag_ms: r.co.lag.scaled(MS),
                environment: serde_json::Value::Null,
            },
        }
    }

    /// The same with `dyno.environment` set.
    pub fn with_environment(mut self, environment: serde_json::Value) -> JsonReport {
        self.dyno.environment = environment;
        self
    }

    /// Pretty-printed JSON.
    pub fn to_json_pretty(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self)
    }
}

/// One `label value` line, vLLM's `{:<40} {:<10}` layout.
fn line(out: &mut String, label: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{label:<40} {value:<10}");
}

/// A title centered in a 50-wide rule of `fill`, as vLLM's section headers.
fn rule(out: &mut String, title: &str, fill: char) {
    let padded = if title.is_empty() { String::new() } else { format!(" {title} ") };
    let width = 50usize.saturating_sub(padded.chars().count());
    let left = width / 2;
    let fill_s = |n: usize| std::iter::repeat_n(fill, n).collect::<String>();
    let _ = writeln!(out, "{}{}{}", fill_s(left), padded, fill_s(width - left));
}

/// `mean / median / p99` lines of one latency, in ms.
fn latency(out: &mut String, name: &str, d: &Distribution) {
    let d = d.scaled(MS);
    line(out, &format!("Mean {name} (ms):"), format!("{:.2}", d.mean));
    line(out, &format!("Median {name} (ms):"), format!("{:.2}", d.median));
    line(out, &format!("P99 {name} (ms):"), format!("{:.2}", d.p99));
}

/// An optional rate with two decimals, or "n/a".
fn opt2(x: Option<f64>) -> String {
    x.map_or_else(|| "n/a".to_string(), |v| format!("{v:.2}"))
}

/// A plain-text summary in the spirit of vLLM's "Serving Benchmark Result" block, followed by
/// dyno's coordinated-omission view, lag, failures by kind and (loudly) validity.
pub fn render_table(r: &LoadReport) -> String {
    let mut o = String::new();
    if !r.valid {
        let reason = r.invalid_reason.as_deref().unwrap_or("unknown");
        let _ = writeln!(o, "!!! INVALID RUN: {reason} — numbers are not trusted !!!");
    }
    rule(&mut o, "Serving Benchmark Result", '=');
    line(&mut o, "Successful requests:", r.completed);
    line(&mut o, "Failed requests:", r.failed);
    line(&mut o, "Warm-up requests (excluded):", r.warmup_requests);
    line(&mut o, "Benchmark duration (s):", format!("{:.2}", r.duration_s));
    line(&mut o, "Total input tokens:", r.total_input_tokens);
    line(&mut o, "Total generated tokens:", r.total_output_tokens);
    line(&mut o, "Request throughput (req/s):", format!("{:.2}", r.request_throughput));
    if let Some(g) = r.request_goodput {
        line(&mut o, "Request goodput (req/s):", format!("{g:.2}"));
    }
    line(&mut o, "Output token throughput (tok/s):", format!("{:.2}", r.output_throughput));
    line(&mut o, "Total Token throughput (tok/s):", format!("{:.2}", r.total_token_throughput));
    rule(&mut o, "Time to First Token", '-');
    latency(&mut o, "TTFT", &r.ttft);
    rule(&mut o, "Time per Output Token (excl. 1st token)", '-');
    latency(&mut o, "TPOT", &r.tpot);
    rule(&mut o, "Inter-token Latency", '-');
    latency(&mut o, "ITL", &r.itl);
    rule(&mut o, "End-to-end Latency", '-');
    latency(&mut o, "E2EL", &r.e2el);
    rule(&mut o, "From intended send (coordinated omission)", '-');
    latency(&mut o, "TTFT", &r.co.ttft);
    latency(&mut o, "E2EL", &r.co.e2el);
    rule(&mut o, "Schedule", '-');
    line(&mut o, "Intended rate (req/s):", opt2(r.co.intended_rate));
    line(&mut o, "Achieved send rate (req/s):", opt2(r.co.achieved_rate));
    latency(&mut o, "send lag", &r.co.lag);
    rule(&mut o, "Failures by kind", '-');
    for (kind, n) in &r.failures {
        line(&mut o, &format!("{}:", kind.name()), n);
    }
    if let Some(met) = r.slo_met {
        rule(&mut o, "SLO", '-');
        let bound = |b: Option<f64>| b.map_or_else(|| "-".to_string(), |v| format!("{v}"));
        line(&mut o, "TTFT p99 bound (ms):", bound(r.slo.ttft_p99_ms));
        line(&mut o, "TPOT p99 bound (ms):", bound(r.slo.tpot_p99_ms));
        line(&mut o, "E2EL p99 bound (ms):", bound(r.slo.e2el_p99_ms));
        line(&mut o, "SLO met:", if met { "yes" } else { "NO" });
    }
    rule(&mut o, "", '=');
    if !r.valid {
        let reason = r.invalid_reason.as_deref().unwrap_or("unknown");
        let _ = writeln!(o, "!!! INVALID RUN: {reason} — numbers are not trusted !!!");
    }
    o
}

/// The JSON report of a `dyno load` or `dyno simulate` invocation, each report carrying
/// `environment` as its `dyno.environment`: a single run's [`JsonReport`] as is, else a
/// `runs` array (each run's `rate` and `report`) beside the search's `max_rate_under_slo`
/// (`null` for a sweep, or when no rate met the SLOs).
///
/// Both commands write this same shape, so it is built in one place and cannot drift
/// between the measured and the predicted report.
pub fn outcome_json(
    mode: &LoadMode,
    outcome: &LoadOutcome,
    environment: &serde_json::Value,
) -> Result<serde_json::Value, serde_json::Error> {
    let report_json = |r: &LoadReport| {
        serde_json::to_value(JsonReport::new(r).with_environment(environment.clone()))
    };
    Ok(match (mode, outcome.runs.as_slice()) {
        (LoadMode::Single, [only]) => report_json(&only.report)?,
        _ => serde_json::json!({
            "runs": outcome
                .runs
                .iter()
                .map(|r| Ok(serde_json::json!({ "rate": r.rate, "report": report_json(&r.report)? })))
                .collect::<Result<Vec<_>, serde_json::Error>>()?,
            "max_rate_under_slo": outcome.max_rate_under_slo.flatten(),
        }),
    })
}

/// The text report of a `dyno load` invocation: the full table for a single run, else one
/// row per run (a sweep, or the rates a search walked) and the search's verdict.
pub fn render_outcome(outcome: &LoadOutcome) -> String {
    let mut out = String::new();
    match (outcome.max_rate_under_slo, outcome.runs.as_slice()) {
        (None, [only]) => out.push_str(&render_table(&only.report)),
        _ => {
            let _ = writeln!(
                out,
                "{:>9} {:>9} {:>9} {:>11} {:>10} {:>10} {:>10} {:>9} {:>7} {:>6}",
                "rate",
                "sent/s",
                "req/s",
                "out tok/s",
                "TTFT p50",
                "TTFT p99",
                "TPOT p99",
                "goodput",
                "failed",
                "SLO"
            );
            for r in &outcome.runs {
                let rep = &r.report;
                let _ = writeln!(
                    out,
                    "{:>9.2} {:>9.2} {:>9.2} {:>11.1} {:>8.1}ms {:>8.1}ms {:>8.1}ms {:>9} {:>7} {:>6}",
                    r.rate.unwrap_or(f64::NAN),
                    rep.co.achieved_rate.unwrap_or(f64::NAN),
                    rep.request_throughput,
                    rep.output_throughput,
                    rep.ttft.median * 1e3,
                    rep.ttft.p99 * 1e3,
                    rep.tpot.p99 * 1e3,
                    rep.request_goodput.map_or("-".into(), |g| format!("{g:.2}")),
                    rep.failed,
                    match (rep.valid, rep.slo_met) {
                        (false, _) => "invalid",
                        (true, Some(true)) => "met",
                        (true, Some(false)) => "missed",
                        (true, None) => "-",
                    }
                );
            }
            match outcome.max_rate_under_slo {
                Some(Some(best)) => {
                    let _ = writeln!(out, "highest rate meeting the SLOs: {best:.2} req/s");
                }
                Some(None) => {
                    let _ = writeln!(out, "no rate tried met the SLOs");
                }
                None => {}
            }
        }
    }
    out
}
