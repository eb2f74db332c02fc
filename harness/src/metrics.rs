//! Summaries of a load test's [`RequestRecord`]s, with the definitions of `vllm bench serve`
//! so the numbers compare with what people publish, plus what it leaves out: a
//! coordinated-omission view (latency from the intended send time), the schedule lag and a
//! validity verdict, failures by kind, and HDR histograms for storage and merging.
//!
//! Every time in a [`LoadReport`] is in seconds, like the records; [`crate::report`] turns it
//! into vLLM's millisecond keys.
//!
//! Definitions (DESIGN.md, "Measuring"):
//! - TTFT = first choice event − sent; E2EL = last choice event − sent;
//! - ITL = gaps between consecutive choice events, pooled over requests;
//! - output tokens = `usage.completion_tokens`; TPOT = (E2EL − TTFT)/(tokens − 1), tokens > 1;
//! - only successful requests contribute latencies and tokens;
//! - duration = first measured request's intended send → last measured completion.

use std::collections::BTreeMap;

use dyno_workloads::Slo;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer, V2Serializer};
use serde::{Deserialize, Serialize};

use crate::record::{ErrorKind, RequestRecord};

/// Errors from building, serializing or merging [`Histograms`].
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// A histogram could not be created with the fixed bounds.
    #[error("cannot create histogram: {0}")]
    Create(String),
    /// Two histograms could not be added.
    #[error("cannot merge histogram `{name}`: {reason}")]
    Merge {
        /// Which histogram.
        name: &'static str,
        /// The library's reason.
        reason: String,
    },
    /// A histogram could not be serialized.
    #[error("cannot serialize histogram `{name}`: {reason}")]
    Serialize {
        /// Which histogram.
        name: &'static str,
        /// The library's reason.
        reason: String,
    },
    /// Bytes could not be read back as a histogram.
    #[error("cannot deserialize histogram `{name}`: {reason}")]
    Deserialize {
        /// Which histogram.
        name: String,
        /// The library's reason.
        reason: String,
    },
    /// A serialized histogram has a name this version does not know.
    #[error("unknown histogram `{0}`")]
    UnknownHistogram(String),
    /// A histogram is missing from a serialized set.
    #[error("histogram `{0}` missing from the serialized set")]
    MissingHistogram(&'static str),
}

/// Percentile `p` (0–100) of already sorted samples by linear interpolation between the two
/// nearest ranks, NumPy's default (`np.percentile(..., method="linear")`): rank
/// = p/100·(n−1), interpolated between `sorted[floor(rank)]` and `sorted[ceil(rank)]`.
///
/// `p` outside 0–100 is clamped. An empty slice gives 0.0, as vLLM's `np.percentile(xs or 0)`.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return 0.0;
    }
    let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
    let rank = p / 100.0 * (n - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = (rank.ceil() as usize).min(n - 1);
    let frac = rank - lo as f64;
    let (a, b) = (sorted[lo.min(n - 1)], sorted[hi]);
    // NumPy's lerp form: exact at both ends and symmetric around the midpoint.
    if frac >= 0.5 { b - (b - a) * (1.0 - frac) } else { a + (b - a) * frac }
}

/// Summary statistics of raw samples, in the samples' unit.
///
/// Non-finite samples are dropped. No samples gives all zeros with `count == 0` (vLLM reports
/// `np.mean(xs or 0)`, i.e. zeros, for an empty list).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// Arithmetic mean.
    pub mean: f64,
    /// Median (= p50).
    pub median: f64,
    /// Population standard deviation (NumPy's default `ddof=0`).
    pub std: f64,
    /// 50th percentile.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Number of samples.
    pub count: usize,
}

impl Distribution {
    /// Summarize samples in any order.
    pub fn from_samples(samples: &[f64]) -> Distribution {
        let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        sorted.sort_unstable_by(f64::total_cmp);
        Distribution::from_sorted(&sorted)
    }

    /// Summarize finite samples already in ascending order.
    fn from_sorted(sorted: &[f64]) -> Distribution {
        let n = sorted.len();
        if n == 0 {
            return Distribution::default();
        }
        let mean = sorted.iter().sum::<f64>() / n as f64;
        let var = sorted.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        let median = percentile(sorted, 50.0);
        Distribution {
            mean,
            median,
            std: var.sqrt(),
            p50: median,
            p90: percentile(sorted, 90.0),
            p95: percentile(sorted, 95.0),
            p99: percentile(sorted, 99.0),
            p999: percentile(sorted, 99.9),
            min: sorted[0],
            max: sorted[n - 1],
            count: n,
        }
    }

    /// The same distribution with every statistic multiplied by `factor` (1000.0: s → ms).
    pub fn scaled(&self, factor: f64) -> Distribution {
        Distribution {
            mean: self.mean * factor,
            median: self.median * factor,
            std: self.std * factor.abs(),
            p50: self.p50 * factor,
            p90: self.p90 * factor,
            p95: self.p95 * factor,
            p99: self.p99 * factor,
            p999: self.p999 * factor,
            min: self.min * factor,
            max: self.max * factor,
            count: self.count,
        }
    }
}

/// Knobs of the summary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SummaryOptions {
    /// A run is invalid when the p99 of the schedule lag (sent − intended) exceeds this,
    /// seconds: the client fell behind its schedule. Default 0.010.
    pub max_lag_s: f64,
}

impl Default for SummaryOptions {
    fn default() -> Self {
        SummaryOptions { max_lag_s: 0.010 }
    }
}

/// Latency measured from the intended send time instead of the actual one, with the
/// schedule lag: what coordinated omission hides.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CoView {
    /// First choice event − intended send, successful requests, seconds.
    pub ttft: Distribution,
    /// Last choice event − intended send, successful requests, seconds.
    pub e2el: Distribution,
    /// Sent − intended over every measured request (failures included), seconds.
    pub lag: Distribution,
    /// Measured requests per second of the schedule: (n−1)/(last − first intended), n ≥ 2.
    pub intended_rate: Option<f64>,
    /// The same on the actual send times: the rate the client achieved.
    pub achieved_rate: Option<f64>,
}

/// Everything a load test's records say, vLLM-compatible where vLLM has a definition.
///
/// Per-request lists are in plan order (by `RequestRecord::index`) over measured requests.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoadReport {
    /// Warm-up requests seen (excluded from everything else).
    pub warmup_requests: usize,
    /// Measured (non-warm-up) requests: `completed + failed`.
    pub measured_requests: usize,
    /// Successful measured requests.
    pub completed: usize,
    /// Failed measured requests.
    pub failed: usize,
    /// Failed measured requests by kind; every kind present, zeros included.
    pub failures: BTreeMap<ErrorKind, usize>,
    /// Successful requests without `usage.completion_tokens` (counted as 0 output tokens).
    pub missing_usage: usize,
    /// First measured intended send → last measured completion, seconds (0 with no request).
    pub duration_s: f64,
    /// Prompt tokens sent by successful requests (vLLM counts the lengths it sent).
    pub total_input_tokens: usize,
    /// Output tokens (`usage.completion_tokens`) of successful requests.
    pub total_output_tokens: usize,
    /// Successful requests per second (0 when the duration is 0).
    pub request_throughput: f64,
    /// Requests meeting every given SLO per second; `None` without an SLO.
    pub request_goodput: Option<f64>,
    /// Requests meeting every given SLO; `None` without an SLO.
    pub good_requests: Option<usize>,
    /// Output tokens per second.
    pub output_throughput: f64,
    /// Input plus output tokens per second.
    pub total_token_throughput: f64,
    /// Time to first token, successful requests, seconds.
    pub ttft: Distribution,
    /// Time per output token after the first, successful requests with > 1 token, seconds.
    pub tpot: Distribution,
    /// Inter-token latency, gaps pooled over successful requests, seconds.
    pub itl: Distribution,
    /// End-to-end latency, successful requests, seconds.
    pub e2el: Distribution,
    /// Coordinated-omission view and schedule lag.
    pub co: CoView,
    /// The objectives the run was judged by.
    pub slo: Slo,
    /// Each given bound ≥ that metric's p99 (and at least one success); `None` without SLO.
    pub slo_met: Option<bool>,
    /// False when the numbers are not to be trusted; see `invalid_reason`.
    pub valid: bool,
    /// Why the run is invalid.
    pub invalid_reason: Option<String>,
    /// Prompt tokens sent, per measured request.
    pub input_lens: Vec<usize>,
    /// Output tokens per measured request (0 for a failure, as vLLM).
    pub output_lens: Vec<usize>,
    /// TTFT per successful measured request, seconds.
    pub ttfts: Vec<f64>,
    /// ITL samples per successful measured request, seconds (aligned with `ttfts`).
    pub itls: Vec<Vec<f64>>,
    /// Per measured request: its error detail (the kind's name when it has none), "" if OK.
    pub errors: Vec<String>,
    /// The latency samples behind the distributions (not part of the JSON report).
    #[serde(skip)]
    pub samples: LatencySamples,
}

/// Latency samples of a run's successful measured requests, seconds, in plan order: what the
/// report's distributions, the histograms and the stored raw samples are computed from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencySamples {
    /// TTFT from the actual send, per request.
    pub ttft: Vec<f64>,
    /// TPOT, per request with more than one output token.
    pub tpot: Vec<f64>,
    /// Inter-token gaps, pooled over requests.
    pub itl: Vec<f64>,
    /// End-to-end latency from the actual send, per request.
    pub e2el: Vec<f64>,
    /// TTFT from the intended send (coordinated-omission view), per request.
    pub ttft_intended: Vec<f64>,
    /// E2EL from the intended send, per request.
    pub e2el_intended: Vec<f64>,
}

impl LatencySamples {
    fn from_measured(measured: &[&RequestRecord]) -> LatencySamples {
        let mut s = LatencySamples::default();
        for r in measured.iter().filter(|r| r.ok()) {
            if let (Some(ttft), Some(e2el), Some(&first), Some(&last)) =
                (r.ttft_s(), r.e2el_s(), r.choice_events_s.first(), r.choice_events_s.last())
            {
                s.ttft.push(ttft);
                s.e2el.push(e2el);
                s.ttft_intended.push(first - r.intended_s);
                s.e2el_intended.push(last - r.intended_s);
            }
            if let Some(tpot) = r.tpot_s() {
                s.tpot.push(tpot);
            }
            s.itl.extend(r.itls_s());
        }
        s
    }
}

/// Measured (non-warm-up) records in plan order.
fn measured(records: &[RequestRecord]) -> Vec<&RequestRecord> {
    let mut m: Vec<&RequestRecord> = records.iter().filter(|r| !r.warmup).collect();
    m.sort_by_key(|r| r.index);
    m
}

/// Events per second over a set of times: (n−1)/(max − min), `None` for n < 2 or no span.
fn rate(times: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut n, mut lo, mut hi) = (0usize, f64::INFINITY, f64::NEG_INFINITY);
    for t in times.filter(|t| t.is_finite()) {
        n += 1;
        lo = lo.min(t);
        hi = hi.max(t);
    }
    (n >= 2 && hi > lo).then(|| (n - 1) as f64 / (hi - lo))
}

/// `x / d`, or 0 when `d` is not positive.
fn per(x: f64, d: f64) -> f64 {
    if d > 0.0 { x / d } else { 0.0 }
}

/// Whether one successful request meets every bound of `slo` (milliseconds). A request
/// without TPOT (one output token) passes the TPOT bound, as vLLM counts its TPOT as 0; one
/// without any choice event fails TTFT and E2EL bounds.
fn meets(r: &RequestRecord, slo: &Slo) -> bool {
    let within = |bound: Option<f64>, value: Option<f64>, missing_ok: bool| match bound {
        None => true,
        Some(b) => value.map_or(missing_ok, |v| v * 1000.0 <= b),
    };
    within(slo.ttft_p99_ms, r.ttft_s(), false)
        && within(slo.tpot_p99_ms, r.tpot_s(), true)
        && within(slo.e2el_p99_ms, r.e2el_s(), false)
}

impl LoadReport {
    /// Summarize a run's records against its SLO.
    pub fn from_records(records: &[RequestRecord], slo: &Slo, opts: &SummaryOptions) -> LoadReport {
        let warmup_requests = records.iter().filter(|r| r.warmup).count();
        let measured = measured(records);
        let samples = LatencySamples::from_measured(&measured);

        let mut failures: BTreeMap<ErrorKind, usize> =
            ErrorKind::ALL.iter().map(|&k| (k, 0)).collect();
        let (mut completed, mut missing_usage) = (0usize, 0usize);
        let (mut total_input_tokens, mut total_output_tokens) = (0usize, 0usize);
        let mut good = 0usize;
        let mut input_lens = Vec::with_capacity(measured.len());
        let mut output_lens = Vec::with_capacity(measured.len());
        let mut ttfts = Vec::new();
        let mut itls = Vec::new();
        let mut errors = Vec::with_capacity(measured.len());
        for r in &measured {
            input_lens.push(r.prompt_tokens);
            match r.error {
                None => {
                    completed += 1;
                    let out = r.output_tokens.unwrap_or_else(|| {
                        missing_usage += 1;
                        0
                    });
                    output_lens.push(out);
                    total_input_tokens += r.prompt_tokens;
                    total_output_tokens += out;
                    if let Some(t) = r.ttft_s() {
                        ttfts.push(t);
                    }
                    itls.push(r.itls_s().collect());
                    if meets(r, slo) {
                        good += 1;
                    }
                    errors.push(String::new());
                }
                Some(kind) => {
                    *failures.entry(kind).or_insert(0) += 1;
                    output_lens.push(0);
                    errors.push(
                        r.error_detail
                            .clone()
                            .filter(|d| !d.is_empty())
                            .unwrap_or_else(|| kind.name().to_string()),
                    );
                }
            }
        }
        let failed = measured.len() - completed;

        let first_intended = measured.iter().map(|r| r.intended_s).fold(f64::INFINITY, f64::min);
        let last_completion =
            measured.iter().map(|r| r.completed_s).fold(f64::NEG_INFINITY, f64::max);
        let duration_s =
            if measured.is_empty() { 0.0 } else { (last_completion - first_intended).max(0.0) };

        let ttft = Distribution::from_samples(&samples.ttft);
        let tpot = Distribution::from_samples(&samples.tpot);
        let e2el = Distribution::from_samples(&samples.e2el);
        let lag_samples: Vec<f64> = measured.iter().map(|r| r.lag_s()).collect();
        let co = CoView {
            ttft: Distribution::from_samples(&samples.ttft_intended),
            e2el: Distribution::from_samples(&samples.e2el_intended),
            lag: Distribution::from_samples(&lag_samples),
            intended_rate: rate(measured.iter().map(|r| r.intended_s)),
            achieved_rate: rate(measured.iter().map(|r| r.sent_s)),
        };

        let (request_goodput, good_requests, slo_met) = if slo.is_empty() {
            (None, None, None)
        } else {
            let within =
                |bound: Option<f64>, d: &Distribution| bound.is_none_or(|b| d.p99 * 1000.0 <= b);
            let met = completed > 0
                && within(slo.ttft_p99_ms, &ttft)
                && within(slo.tpot_p99_ms, &tpot)
                && within(slo.e2el_p99_ms, &e2el);
            (Some(per(good as f64, duration_s)), Some(good), Some(met))
        };

        let invalid_reason = if measured.is_empty() {
            Some("no measured requests".to_string())
        } else if co.lag.p99 > opts.max_lag_s {
            Some(format!(
                "client fell behind its schedule: p99 send lag {:.3} ms > {:.3} ms",
                co.lag.p99 * 1000.0,
                opts.max_lag_s * 1000.0
            ))
        } else {
            None
        };

        LoadReport {
            warmup_requests,
            measured_requests: measured.len(),
            completed,
            failed,
            failures,
            missing_usage,
            duration_s,
            total_input_tokens,
            total_output_tokens,
            request_throughput: per(completed as f64, duration_s),
            request_goodput,
            good_requests,
            output_throughput: per(total_output_tokens as f64, duration_s),
            total_token_throughput: per(
                (total_input_tokens + total_output_tokens) as f64,
                duration_s,
            ),
            ttft,
            tpot,
            itl: Distribution::from_samples(&samples.itl),
            e2el,
            co,
            slo: *slo,
            slo_met,
            valid: invalid_reason.is_none(),
            invalid_reason,
            input_lens,
            output_lens,
            ttfts,
            itls,
            errors,
            samples,
        }
    }
}

/// Lowest value a histogram tells apart: 1 µs.
const HIST_LOW_US: u64 = 1;
/// Highest value a histogram tracks: 1 hour in µs (larger values are clamped to it).
const HIST_HIGH_US: u64 = 3_600_000_000;
/// Significant decimal digits kept.
const HIST_SIGFIG: u8 = 3;

/// Microsecond HDR histograms of a run's latencies (1 µs .. 1 h, 3 significant digits), for
/// storage and merging across load generators — not the source of reported percentiles.
#[derive(Debug, Clone)]
pub struct Histograms {
    /// TTFT from the actual send.
    pub ttft: Histogram<u64>,
    /// TPOT.
    pub tpot: Histogram<u64>,
    /// Pooled inter-token gaps.
    pub itl: Histogram<u64>,
    /// E2EL from the actual send.
    pub e2el: Histogram<u64>,
    /// TTFT from the intended send (coordinated-omission view).
    pub ttft_intended: Histogram<u64>,
    /// E2EL from the intended send (coordinated-omission view).
    pub e2el_intended: Histogram<u64>,
}

/// Serialized histogram names, in [`Histograms::serialize`] order.
pub const HISTOGRAM_NAMES: [&str; 6] =
    ["ttft", "tpot", "itl", "e2el", "ttft_intended", "e2el_intended"];

/// Seconds to whole microseconds, clamped at 0 (and at `u64::MAX` by the cast).
fn to_us(s: f64) -> u64 {
    if s.is_finite() && s > 0.0 { (s * 1e6).round() as u64 } else { 0 }
}

impl Histograms {
    /// Empty histograms with the fixed bounds.
    pub fn new() -> Result<Histograms, MetricsError> {
        let h = || {
            Histogram::<u64>::new_with_bounds(HIST_LOW_US, HIST_HIGH_US, HIST_SIGFIG)
                .map_err(|e| MetricsError::Create(e.to_string()))
        };
        Ok(Histograms {
            ttft: h()?,
            tpot: h()?,
            itl: h()?,
            e2el: h()?,
            ttft_intended: h()?,
            e2el_intended: h()?,
        })
    }

    /// Record the measured requests of a run (same selection as [`LoadReport::from_records`]).
    /// Values beyond one hour are clamped to it.
    pub fn from_records(records: &[RequestRecord]) -> Result<Histograms, MetricsError> {
        Histograms::from_samples(&LatencySamples::from_measured(&measured(records)))
    }

    /// Record a run's latency samples (for example [`LoadReport::samples`]).
    pub fn from_samples(s: &LatencySamples) -> Result<Histograms, MetricsError> {
        let mut h = Histograms::new()?;
        for (hist, xs) in [
            (&mut h.ttft, &s.ttft),
            (&mut h.tpot, &s.tpot),
            (&mut h.itl, &s.itl),
            (&mut h.e2el, &s.e2el),
            (&mut h.ttft_intended, &s.ttft_intended),
            (&mut h.e2el_intended, &s.e2el_intended),
        ] {
            for &x in xs {
                hist.saturating_record(to_us(x));
            }
        }
        Ok(h)
    }

    fn parts(&self) -> [(&'static str, &Histogram<u64>); 6] {
        [
            (HISTOGRAM_NAMES[0], &self.ttft),
            (HISTOGRAM_NAMES[1], &self.tpot),
            (HISTOGRAM_NAMES[2], &self.itl),
            (HISTOGRAM_NAMES[3], &self.e2el),
            (HISTOGRAM_NAMES[4], &self.ttft_intended),
            (HISTOGRAM_NAMES[5], &self.e2el_intended),
        ]
    }

    fn parts_mut(&mut self) -> [(&'static str, &mut Histogram<u64>); 6] {
        [
            (HISTOGRAM_NAMES[0], &mut self.ttft),
            (HISTOGRAM_NAMES[1], &mut self.tpot),
            (HISTOGRAM_NAMES[2], &mut self.itl),
            (HISTOGRAM_NAMES[3], &mut self.e2el),
            (HISTOGRAM_NAMES[4], &mut self.ttft_intended),
            (HISTOGRAM_NAMES[5], &mut self.e2el_intended),
        ]
    }

    /// Each histogram in HdrHistogram's V2 binary format (V2 + DEFLATE when `deflate`), named
    /// as in [`HISTOGRAM_NAMES`].
    pub fn serialize(&self, deflate: bool) -> Result<Vec<(&'static str, Vec<u8>)>, MetricsError> {
        let mut v2 = V2Serializer::new();
        let mut v2d = V2DeflateSerializer::new();
        self.parts()
            .into_iter()
            .map(|(name, h)| {
                let mut buf = Vec::new();
                let res = if deflate {
                    v2d.serialize(h, &mut buf).map_err(|e| e.to_string())
                } else {
                    v2.serialize(h, &mut buf).map_err(|e| e.to_string())
                };
                res.map(|_| (name, buf)).map_err(|reason| MetricsError::Serialize { name, reason })
            })
            .collect()
    }

    /// Read back what [`Histograms::serialize`] wrote (either format). Every name must be
    /// known and present.
    pub fn deserialize<N: AsRef<str>, B: AsRef<[u8]>>(
        parts: &[(N, B)],
    ) -> Result<Histograms, MetricsError> {
        let mut de = Deserializer::new();
        let mut found: BTreeMap<&'static str, Histogram<u64>> = BTreeMap::new();
        for (name, bytes) in parts {
            let name = name.as_ref();
            let known = HISTOGRAM_NAMES
                .iter()
                .find(|&&n| n == name)
                .ok_or_else(|| MetricsError::UnknownHistogram(name.to_string()))?;
            let mut reader = bytes.as_ref();
            let h: Histogram<u64> = de.deserialize(&mut reader).map_err(|e| {
                MetricsError::Deserialize { name: name.to_string(), reason: e.to_string() }
            })?;
            found.insert(known, h);
        }
        let mut take =
            |name: &'static str| found.remove(name).ok_or(MetricsError::MissingHistogram(name));
        Ok(Histograms {
            ttft: take(HISTOGRAM_NAMES[0])?,
            tpot: take(HISTOGRAM_NAMES[1])?,
            itl: take(HISTOGRAM_NAMES[2])?,
            e2el: take(HISTOGRAM_NAMES[3])?,
            ttft_intended: take(HISTOGRAM_NAMES[4])?,
            e2el_intended: take(HISTOGRAM_NAMES[5])?,
        })
    }

    /// Add `other`'s counts into these (e.g. from another load generator).
    pub fn merge(&mut self, other: &Histograms) -> Result<(), MetricsError> {
        for ((name, mine), (_, theirs)) in self.parts_mut().into_iter().zip(other.parts()) {
            mine.add(theirs).map_err(|e| MetricsError::Merge { name, reason: e.to_string() })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_ends_and_clamp() {
        let xs = [1.0, 2.0, 4.0];
        assert_eq!(percentile(&xs, 0.0), 1.0);
        assert_eq!(percentile(&xs, 100.0), 4.0);
        assert_eq!(percentile(&xs, 150.0), 4.0);
        assert_eq!(percentile(&xs, -5.0), 1.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn rate_needs_two_distinct_times() {
        assert_eq!(rate([1.0].into_iter()), None);
        assert_eq!(rate([1.0, 1.0].into_iter()), None);
        assert_eq!(rate([0.0, 0.5, 1.0].into_iter()), Some(2.0));
    }

    #[test]
    fn microseconds_clamp_at_zero() {
        assert_eq!(to_us(-1.0), 0);
        assert_eq!(to_us(f64::NAN), 0);
        assert_eq!(to_us(0.0012345), 1235);
    }
}
