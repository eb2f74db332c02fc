//! The parts of a workload file: lengths, shared prefix, arrival process, warm-up; and the
//! checks each value gets after parsing.

use std::fmt::Display;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{Slo, WorkloadError};

fn one() -> usize {
    1
}

fn one_f64() -> f64 {
    1.0
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
#[serde(tag = "dist", rename_all = "lowercase", deny_unknown_fields)]
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
        #[serde(default = "one")]
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
        #[serde(default = "one")]
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
#[serde(tag = "process", rename_all = "lowercase", deny_unknown_fields)]
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
        #[serde(default = "one_f64")]
        speedup: f64,
    },
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
