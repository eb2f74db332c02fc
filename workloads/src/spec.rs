//! The parts of a workload file: lengths, shared prefix, arrival process, warm-up; and the
//! checks each value gets after parsing.

use std::fmt::Display;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Slo, WorkloadError};

fn one() -> usize {
    1
}

fn is_one(v: &usize) -> bool {
    *v == 1
}

/// Prompt and output lengths: two distributions, or rows of a trace file.
///
/// Exactly one of: `prompt` and `output` together; `trace` (JSON lines with
/// `timestamp`, `prompt_tokens`, `output_tokens`); `sharegpt` (a ShareGPT JSON array, lengths
/// counted in UTF-8 bytes). `min` / `max` clamp the lengths read from a file (both prompt and
/// output).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lengths {
    /// Prompt length distribution (tokens; without the shared prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<LengthDist>,
    /// Output length distribution (tokens asked for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<LengthDist>,
    /// JSON-lines trace of `{"timestamp", "prompt_tokens", "output_tokens"}` rows; a relative
    /// path resolves against the workload file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<PathBuf>,
    /// ShareGPT JSON file; a relative path resolves against the workload file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sharegpt: Option<PathBuf>,
    /// Lower clamp on lengths read from `trace` / `sharegpt` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<usize>,
    /// Upper clamp on lengths read from `trace` / `sharegpt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<usize>,
}

/// A distribution of token counts; samples are rounded and clamped to `[min, max]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "dist", rename_all = "lowercase", try_from = "RawLengthDist")]
pub enum LengthDist {
    /// Always `value`.
    Fixed {
        /// The length.
        value: usize,
    },
    /// Uniform integers in `[min, max]`.
    Uniform {
        /// Smallest length.
        min: usize,
        /// Largest length.
        max: usize,
    },
    /// Normal with `mean` and standard deviation `std`, clamped.
    Normal {
        /// Mean.
        mean: f64,
        /// Standard deviation (≥ 0).
        std: f64,
        /// Lower clamp (default 1).
        min: usize,
        /// Upper clamp.
        max: usize,
    },
    /// Log-normal with the given median (`exp(μ)`) and log-space standard deviation `sigma`,
    /// clamped.
    LogNormal {
        /// Median length.
        median: f64,
        /// Standard deviation of the logarithm (≥ 0).
        sigma: f64,
        /// Lower clamp (default 1).
        min: usize,
        /// Upper clamp.
        max: usize,
    },
}

impl LengthDist {
    /// The largest length this distribution can give.
    pub fn max_len(&self) -> usize {
        match *self {
            LengthDist::Fixed { value } => value,
            LengthDist::Uniform { max, .. }
            | LengthDist::Normal { max, .. }
            | LengthDist::LogNormal { max, .. } => max,
        }
    }
}

/// Prompts that start with one of `groups` shared prefixes of `length` tokens (as in RAG or a
/// shared system prompt); each request picks a group at random and appends its own sampled
/// prompt.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prefix {
    /// Tokens in each shared prefix.
    pub length: usize,
    /// Distinct prefixes (default 1).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub groups: usize,
}

/// When requests are sent.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "process", rename_all = "lowercase", try_from = "RawArrival")]
pub enum Arrival {
    /// Open loop, exponential gaps with mean `1/rate`.
    Poisson {
        /// Requests per second.
        rate: f64,
    },
    /// Open loop, gamma gaps with shape `burstiness` and scale `1/(rate·burstiness)`:
    /// burstiness 1 is Poisson, below 1 is burstier, above 1 more regular.
    Gamma {
        /// Requests per second.
        rate: f64,
        /// Gamma shape.
        burstiness: f64,
    },
    /// Open loop, one request every `1/rate` seconds.
    Constant {
        /// Requests per second.
        rate: f64,
    },
    /// Closed loop with `concurrency` requests in flight.
    Closed {
        /// Requests in flight.
        concurrency: usize,
    },
    /// Replay of the `lengths.trace` timestamps, divided by `speedup`.
    Trace {
        /// Time compression factor (default 1).
        speedup: f64,
    },
}

impl Arrival {
    /// The open-loop rate in requests per second, for the processes that have one.
    pub fn rate(&self) -> Option<f64> {
        match *self {
            Arrival::Poisson { rate }
            | Arrival::Gamma { rate, .. }
            | Arrival::Constant { rate } => Some(rate),
            Arrival::Closed { .. } | Arrival::Trace { .. } => None,
        }
    }
}

// The tagged enums above are read through flat structs so that a type error names its field
// and line (serde buffers internally tagged enums and loses both), and a field that belongs to
// another variant gets a message saying which fields the variant takes.

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum DistKind {
    Fixed,
    Uniform,
    Normal,
    LogNormal,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLengthDist {
    dist: DistKind,
    value: Option<usize>,
    min: Option<usize>,
    max: Option<usize>,
    mean: Option<f64>,
    std: Option<f64>,
    median: Option<f64>,
    sigma: Option<f64>,
}

/// Fails when a field outside `allowed` is given, or one of `required` is missing.
fn fields_of(
    prefix: &str,
    kind: &str,
    given: &[(&str, bool)],
    allowed: &[&str],
    required: &[&str],
) -> Result<(), String> {
    for (name, present) in given {
        if *present && !allowed.contains(name) {
            return Err(format!(
                "`{prefix}{name}` does not apply to `{kind}` (it takes: {})",
                allowed.join(", ")
            ));
        }
        if !*present && required.contains(name) {
            return Err(format!(
                "`{kind}` needs `{prefix}{name}` (it takes: {})",
                allowed.join(", ")
            ));
        }
    }
    Ok(())
}

impl TryFrom<RawLengthDist> for LengthDist {
    type Error = String;

    fn try_from(r: RawLengthDist) -> Result<Self, String> {
        let given = [
            ("value", r.value.is_some()),
            ("min", r.min.is_some()),
            ("max", r.max.is_some()),
            ("mean", r.mean.is_some()),
            ("std", r.std.is_some()),
            ("median", r.median.is_some()),
            ("sigma", r.sigma.is_some()),
        ];
        Ok(match r.dist {
            DistKind::Fixed => {
                fields_of("", "dist: fixed", &given, &["value"], &["value"])?;
                LengthDist::Fixed { value: r.value.unwrap_or_default() }
            }
            DistKind::Uniform => {
                fields_of("", "dist: uniform", &given, &["min", "max"], &["min", "max"])?;
                LengthDist::Uniform {
                    min: r.min.unwrap_or_default(),
                    max: r.max.unwrap_or_default(),
                }
            }
            DistKind::Normal => {
                fields_of(
                    "",
                    "dist: normal",
                    &given,
                    &["mean", "std", "min", "max"],
                    &["mean", "std", "max"],
                )?;
                LengthDist::Normal {
                    mean: r.mean.unwrap_or_default(),
                    std: r.std.unwrap_or_default(),
                    min: r.min.unwrap_or(1),
                    max: r.max.unwrap_or_default(),
                }
            }
            DistKind::LogNormal => {
                fields_of(
                    "",
                    "dist: lognormal",
                    &given,
                    &["median", "sigma", "min", "max"],
                    &["median", "sigma", "max"],
                )?;
                LengthDist::LogNormal {
                    median: r.median.unwrap_or_default(),
                    sigma: r.sigma.unwrap_or_default(),
                    min: r.min.unwrap_or(1),
                    max: r.max.unwrap_or_default(),
                }
            }
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum ProcessKind {
    Poisson,
    Gamma,
    Constant,
    Closed,
    Trace,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArrival {
    process: ProcessKind,
    rate: Option<f64>,
    burstiness: Option<f64>,
    concurrency: Option<usize>,
    speedup: Option<f64>,
}

impl TryFrom<RawArrival> for Arrival {
    type Error = String;

    fn try_from(r: RawArrival) -> Result<Self, String> {
        let given = [
            ("rate", r.rate.is_some()),
            ("burstiness", r.burstiness.is_some()),
            ("concurrency", r.concurrency.is_some()),
            ("speedup", r.speedup.is_some()),
        ];
        let rate = r.rate.unwrap_or_default();
        Ok(match r.process {
            ProcessKind::Poisson => {
                fields_of("arrival.", "process: poisson", &given, &["rate"], &["rate"])?;
                Arrival::Poisson { rate }
            }
            ProcessKind::Gamma => {
                fields_of(
                    "arrival.",
                    "process: gamma",
                    &given,
                    &["rate", "burstiness"],
                    &["rate", "burstiness"],
                )?;
                Arrival::Gamma { rate, burstiness: r.burstiness.unwrap_or_default() }
            }
            ProcessKind::Constant => {
                fields_of("arrival.", "process: constant", &given, &["rate"], &["rate"])?;
                Arrival::Constant { rate }
            }
            ProcessKind::Closed => {
                fields_of(
                    "arrival.",
                    "process: closed",
                    &given,
                    &["concurrency"],
                    &["concurrency"],
                )?;
                Arrival::Closed { concurrency: r.concurrency.unwrap_or_default() }
            }
            ProcessKind::Trace => {
                fields_of("arrival.", "process: trace", &given, &["speedup"], &[])?;
                Arrival::Trace { speedup: r.speedup.unwrap_or(1.0) }
            }
        })
    }
}

/// Leading requests sent before measuring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Warmup {
    /// How many (on top of the measured requests).
    #[serde(default)]
    pub requests: usize,
}

/// A value that fails a check: "`origin`: `field` = value: reason".
pub(crate) fn invalid(
    origin: &str,
    field: &str,
    value: impl Display,
    reason: impl Display,
) -> WorkloadError {
    WorkloadError::Invalid(format!("{origin}: `{field}` = {value}: {reason}"))
}

/// A field combination that does not make sense.
pub(crate) fn conflict(origin: &str, reason: impl Display) -> WorkloadError {
    WorkloadError::Invalid(format!("{origin}: {reason}"))
}

/// Checks `v` is finite and > 0.
pub(crate) fn check_positive(origin: &str, field: &str, v: f64) -> Result<(), WorkloadError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(invalid(origin, field, v, "must be a finite number > 0"))
    }
}

/// Checks `v` is finite and ≥ 0.
fn check_non_negative(origin: &str, field: &str, v: f64) -> Result<(), WorkloadError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(invalid(origin, field, v, "must be a finite number ≥ 0"))
    }
}

/// Checks `v` ≥ 1.
pub(crate) fn check_at_least_one(origin: &str, field: &str, v: usize) -> Result<(), WorkloadError> {
    if v >= 1 { Ok(()) } else { Err(invalid(origin, field, v, "must be at least 1")) }
}

fn check_min_max(origin: &str, field: &str, min: usize, max: usize) -> Result<(), WorkloadError> {
    check_at_least_one(origin, &format!("{field}.min"), min)?;
    check_at_least_one(origin, &format!("{field}.max"), max)?;
    if min > max {
        return Err(invalid(
            origin,
            &format!("{field}.min"),
            min,
            format_args!("must not exceed `{field}.max` ({max})"),
        ));
    }
    Ok(())
}

impl LengthDist {
    pub(crate) fn check(&self, origin: &str, field: &str) -> Result<(), WorkloadError> {
        match *self {
            LengthDist::Fixed { value } => {
                check_at_least_one(origin, &format!("{field}.value"), value)
            }
            LengthDist::Uniform { min, max } => check_min_max(origin, field, min, max),
            LengthDist::Normal { mean, std, min, max } => {
                check_positive(origin, &format!("{field}.mean"), mean)?;
                check_non_negative(origin, &format!("{field}.std"), std)?;
                check_min_max(origin, field, min, max)
            }
            LengthDist::LogNormal { median, sigma, min, max } => {
                check_positive(origin, &format!("{field}.median"), median)?;
                check_non_negative(origin, &format!("{field}.sigma"), sigma)?;
                check_min_max(origin, field, min, max)
            }
        }
    }
}

impl Lengths {
    pub(crate) fn check(&self, origin: &str) -> Result<(), WorkloadError> {
        let files = usize::from(self.trace.is_some()) + usize::from(self.sharegpt.is_some());
        match (&self.prompt, &self.output, files) {
            (Some(p), Some(o), 0) => {
                if self.min.is_some() || self.max.is_some() {
                    return Err(conflict(
                        origin,
                        "`lengths.min` / `lengths.max` clamp lengths read from `lengths.trace` or \
                         `lengths.sharegpt`; give `min`/`max` inside `lengths.prompt` and \
                         `lengths.output` instead",
                    ));
                }
                p.check(origin, "lengths.prompt")?;
                o.check(origin, "lengths.output")
            }
            (None, None, 1) => {
                let min = self.min.unwrap_or(1);
                check_at_least_one(origin, "lengths.min", min)?;
                if let Some(max) = self.max {
                    check_min_max(origin, "lengths", min, max)?;
                }
                Ok(())
            }
            (None, None, 0) => Err(conflict(
                origin,
                "`lengths` needs `prompt` and `output`, or `trace`, or `sharegpt`",
            )),
            (Some(_), None, 0) => Err(conflict(origin, "`lengths.output` is missing")),
            (None, Some(_), 0) => Err(conflict(origin, "`lengths.prompt` is missing")),
            _ => Err(conflict(
                origin,
                "`lengths` takes exactly one of: `prompt` + `output`, `trace`, `sharegpt`",
            )),
        }
    }
}

impl Prefix {
    pub(crate) fn check(&self, origin: &str) -> Result<(), WorkloadError> {
        check_at_least_one(origin, "prefix.length", self.length)?;
        check_at_least_one(origin, "prefix.groups", self.groups)
    }
}

impl Arrival {
    pub(crate) fn check(&self, origin: &str) -> Result<(), WorkloadError> {
        match *self {
            Arrival::Poisson { rate } | Arrival::Constant { rate } => {
                check_positive(origin, "arrival.rate", rate)
            }
            Arrival::Gamma { rate, burstiness } => {
                check_positive(origin, "arrival.rate", rate)?;
                check_positive(origin, "arrival.burstiness", burstiness)
            }
            Arrival::Closed { concurrency } => {
                check_at_least_one(origin, "arrival.concurrency", concurrency)
            }
            Arrival::Trace { speedup } => check_positive(origin, "arrival.speedup", speedup),
        }
    }
}

/// Checks every bound of `slo` is finite and > 0.
pub(crate) fn check_slo(origin: &str, slo: &Slo) -> Result<(), WorkloadError> {
    for (field, v) in [
        ("slo.ttft_p99_ms", slo.ttft_p99_ms),
        ("slo.tpot_p99_ms", slo.tpot_p99_ms),
        ("slo.e2el_p99_ms", slo.e2el_p99_ms),
    ] {
        if let Some(v) = v {
            check_positive(origin, field, v)?;
        }
    }
    Ok(())
}
