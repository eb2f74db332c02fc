//! Request-stream specifications (YAML presets) and deterministic generators.
//!
//! A [`Workload`] (one YAML file, `deny_unknown_fields`) describes a request stream — lengths,
//! shared prefixes, arrival process, how many requests or how long, warm-up, seed — and the
//! SLOs a run is judged by. [`Workload::plan`] turns it into a [`Plan`]: arrival times computed
//! ahead as absolute offsets from the run's start, and request `i` generated from the seed and
//! `i` alone, so the same workload and seed give the same stream in the load generator and in
//! the simulator.
//!
//! # Workload files
//!
//! ```yaml
//! # chat: conversational traffic (one comment line saying what the stream stands for)
//! seed: 1                      # default 0
//! lengths:                     # token counts
//!   prompt: { dist: lognormal, median: 200, sigma: 0.9, min: 4, max: 2048 }
//!   output: { dist: uniform, min: 16, max: 256 }
//!   # other dists: { dist: fixed, value: N }, { dist: normal, mean, std, min, max }
//!   # (`min` defaults to 1 for normal and lognormal; samples are rounded and clamped)
//!   # or instead of prompt/output:
//!   #   trace: requests.jsonl    # {"timestamp": s, "prompt_tokens": N, "output_tokens": M} lines
//!   #   sharegpt: sharegpt.json  # lengths in UTF-8 bytes; optional min/max clamp both lengths
//! prefix: { length: 512, groups: 4 }   # optional: prompt = a group's prefix + sampled prompt
//! arrival: { process: poisson, rate: 4.0 }
//!   # { process: gamma, rate, burstiness }, { process: constant, rate },
//!   # { process: closed, concurrency }, { process: trace, speedup: 1.0 }
//! requests: 200                # or duration_s: 60 (exactly one)
//! warmup: { requests: 5 }      # leading requests, on top of `requests`, not measured
//! slo: { ttft_p99_ms: 2000, tpot_p99_ms: 200 }   # any subset, with e2el_p99_ms
//! ```
//!
//! Relative `trace` / `sharegpt` paths resolve against the workload file's directory. A
//! ShareGPT file is a JSON array of `{"conversations": [{"from": "human", "value": ...},
//! {"from": "gpt", "value": ...}, ...]}`; the first human turn directly followed by a model
//! turn of each conversation gives one (prompt, output) pair, its lengths counted as UTF-8
//! bytes because the built-in engine's tokenizer is byte-level. Data files may carry extra
//! fields; workload files may not. Every value is checked, and an error names the file, the
//! field, the value and the reason.
//!
//! # Generation
//!
//! Open-loop arrivals start at 0.0 and add one gap per request: exponential with mean `1/rate`
//! (`poisson`), gamma with shape `burstiness` and scale `1/(rate·burstiness)` (`gamma`), or
//! exactly `1/rate` (`constant`). With `duration_s`, arrivals are generated while they fall
//! within `duration_s` of the first measured request (warm-up requests come before it).
//! `trace` replays the trace's timestamps (relative to its first row) divided by `speedup`,
//! row `i` giving request `i`'s lengths; a stream longer than the trace wraps around, one mean
//! gap after the last row. Otherwise a trace or ShareGPT file's rows are drawn at random.
//!
//! Request `i` is a pure function of the seed and `i`: each draw uses a fresh generator seeded
//! from a SplitMix64 mix of the seed, a stream id (arrival gaps, lengths, prefix choice,
//! prefix text, prompt text) and `i` (or the prefix group). Prompt token ids are lower-case
//! letters and spaces (printable ASCII), so [`PlannedRequest::prompt_text`] is the same prompt
//! as text; requests in one prefix group start with identical prefix tokens.
//!
//! Suites of scenarios (`nightly.yaml`) are read by [`Suite`].

mod generate;
pub use generate::seeded_stream;
mod slo;
mod spec;
mod suite;
mod trace;

pub use slo::Slo;
pub use spec::{Arrival, LengthDist, Lengths, Prefix, Warmup};
pub use suite::{EngineSource, KernelShapes, LoadLevel, Scenario, Suite};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::RngExt;

use generate::{GapSampler, LengthSampler, Stream, push_text, stream_rng};
use spec::{check_at_least_one, check_positive, conflict};
use trace::{Clamp, TraceRow};

/// Most requests one plan may hold (a guard against a typo such as `rate: 1e9`).
pub const MAX_PLANNED_REQUESTS: usize = 10_000_000;

/// The built-in presets, in the order they are listed.
const PRESETS: &[(&str, &str)] = &[
    ("chat", include_str!("../presets/chat.yaml")),
    ("rag", include_str!("../presets/rag.yaml")),
    ("summarize", include_str!("../presets/summarize.yaml")),
    ("code", include_str!("../presets/code.yaml")),
    ("burst", include_str!("../presets/burst.yaml")),
    ("decode-heavy", include_str!("../presets/decode-heavy.yaml")),
];

/// What a run's request stream looks like, as read from a workload YAML.
///
/// Built by [`Workload::preset`], [`Workload::load`], [`Workload::from_file`] or
/// [`Workload::from_yaml`], which check every value and read trace files.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Short name (the preset name, or the file stem).
    #[serde(default)]
    pub name: String,
    /// Seed of every random draw.
    #[serde(default)]
    pub seed: u64,
    /// Prompt and output lengths.
    pub lengths: Lengths,
    /// Shared prompt prefixes, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<Prefix>,
    /// Arrival process.
    pub arrival: Arrival,
    /// Measured requests (exclusive with `duration_s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<usize>,
    /// Seconds of measured arrivals (exclusive with `requests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
    /// Warm-up requests.
    #[serde(default)]
    pub warmup: Warmup,
    /// Service-level objectives; empty means "no SLO" (goodput = throughput).
    #[serde(default)]
    pub slo: Slo,
    /// Rows of `lengths.trace` / `lengths.sharegpt`, read when the workload is loaded.
    #[serde(skip)]
    rows: Option<Arc<[TraceRow]>>,
}

/// Overrides a command line applies on top of a workload's own load settings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadOverrides {
    /// Open loop at this many requests per second (replaces the workload's rate; a `closed`
    /// workload becomes `poisson` at this rate, a `trace` replay is time-scaled so its mean
    /// rate is this).
    pub rate: Option<f64>,
    /// Closed loop with this many requests in flight (replaces the arrival process).
    pub concurrency: Option<usize>,
    /// Measured requests (replaces the workload's count or duration).
    pub requests: Option<usize>,
    /// Seconds of arrivals (replaces the workload's count or duration).
    pub duration_s: Option<f64>,
}

/// How requests are paced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// Request `i` is sent at `Plan::arrivals_s[i]` whatever happened before (open loop).
    Open,
    /// `concurrency` requests in flight; each completion sends the next (closed loop).
    Closed {
        /// Requests in flight.
        concurrency: usize,
    },
}

/// One request of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRequest {
    /// Position in the stream (0-based, warm-up requests first).
    pub index: usize,
    /// Prompt token ids. Ids are printable ASCII bytes (32..127), so the same prompt can be
    /// sent as text (`prompt_text`) to servers that do not take token ids; with a byte-level
    /// tokenizer (the built-in engine's) the two are the same prompt.
    pub prompt: Vec<u32>,
    /// Output tokens to ask for (`max_tokens`, with `ignore_eos`).
    pub output_tokens: usize,
    /// Which shared prefix the prompt starts with, if any.
    pub prefix_group: Option<usize>,
    /// A warm-up request: sent, but excluded from the metrics.
    pub warmup: bool,
}

impl PlannedRequest {
    /// The prompt as text: each id is an ASCII byte.
    pub fn prompt_text(&self) -> String {
        self.prompt.iter().map(|&t| char::from(t as u8)).collect()
    }
}

/// A workload made concrete: pacing, arrival times, and a deterministic request generator.
#[derive(Debug, Clone)]
pub struct Plan {
    /// How requests are paced.
    pub pacing: Pacing,
    /// Open loop: intended send time of every request (warm-up included), seconds after the
    /// run's start, non-decreasing, the first at 0.0. Closed loop: empty.
    pub arrivals_s: Vec<f64>,
    /// Total requests to send (warm-up included): `arrivals_s.len()` in open loop; in closed
    /// loop, when bounded by count.
    pub max_requests: Option<usize>,
    /// Closed loop: stop sending new requests after this many seconds, when bounded by time
    /// (open loop: `None`, the arrivals already end there).
    pub duration_s: Option<f64>,
    /// Leading requests that are warm-up.
    pub warmup_requests: usize,
    /// Seed of the request generator.
    seed: u64,
    /// Where lengths come from.
    lengths: LengthSource,
    /// Shared prefixes.
    prefix: Option<Prefix>,
}

/// Where a plan's request lengths come from.
#[derive(Debug, Clone)]
enum LengthSource {
    Dists {
        prompt: LengthSampler,
        output: LengthSampler,
    },
    /// Rows of a file: row `i % n` for request `i` when `in_order` (trace replay), a random
    /// row otherwise.
    Rows {
        rows: Arc<[TraceRow]>,
        in_order: bool,
    },
}

/// How a plan is bounded.
#[derive(Debug, Clone, Copy)]
enum Bound {
    Requests(usize),
    Duration(f64),
}

impl Workload {
    /// The names of the built-in presets.
    pub fn preset_names() -> impl Iterator<Item = &'static str> {
        PRESETS.iter().map(|(n, _)| *n)
    }

    /// The YAML text of a built-in preset.
    pub fn preset_yaml(name: &str) -> Option<&'static str> {
        PRESETS.iter().find(|(n, _)| *n == name).map(|(_, y)| *y)
    }

    /// A built-in preset by name (`chat`, `rag`, `summarize`, `code`, `burst`, `decode-heavy`).
    pub fn preset(name: &str) -> Result<Self, WorkloadError> {
        let yaml = Self::preset_yaml(name).ok_or_else(|| {
            WorkloadError::Invalid(format!(
                "no workload preset `{name}` (presets: {})",
                Self::preset_names().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let mut w = Self::from_yaml(yaml, &format!("preset `{name}`"), Path::new("."))?;
        w.name = name.to_string();
        Ok(w)
    }

    /// A preset name or a path to a workload YAML file.
    pub fn load(name_or_path: &str) -> Result<Self, WorkloadError> {
        if Self::preset_yaml(name_or_path).is_some() {
            return Self::preset(name_or_path);
        }
        let path = Path::new(name_or_path);
        if !path.exists() {
            return Err(WorkloadError::Invalid(format!(
                "`{name_or_path}` is neither a workload preset ({}) nor an existing file",
                Self::preset_names().collect::<Vec<_>>().join(", ")
            )));
        }
        Self::from_file(path)
    }

    /// Reads and validates a workload YAML file.
    pub fn from_file(path: &Path) -> Result<Self, WorkloadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| WorkloadError::Io { path: path.to_path_buf(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut w = Self::from_yaml(&text, &path.display().to_string(), base)?;
        if w.name.is_empty() {
            w.name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        }
        Ok(w)
    }

    /// Parses and validates workload YAML; `origin` names it in errors, and relative data
    /// file paths resolve against `base_dir`.
    pub fn from_yaml(text: &str, origin: &str, base_dir: &Path) -> Result<Self, WorkloadError> {
        let mut w: Workload = serde_yaml::from_str(text)
            .map_err(|e| WorkloadError::Invalid(format!("{origin}: {e}")))?;
        w.check(origin)?;
        w.read_rows(origin, base_dir)?;
        Ok(w)
    }

    /// Checks every value (not the data files).
    fn check(&self, origin: &str) -> Result<(), WorkloadError> {
        self.lengths.check(origin)?;
        if let Some(p) = &self.prefix {
            p.check(origin)?;
        }
        self.arrival.check(origin)?;
        if matches!(self.arrival, Arrival::Trace { .. }) && self.lengths.trace.is_none() {
            return Err(conflict(
                origin,
                "`arrival.process: trace` replays the timestamps of `lengths.trace`, which is \
                 not given",
            ));
        }
        match (self.requests, self.duration_s) {
            (Some(n), None) => check_at_least_one(origin, "requests", n)?,
            (None, Some(d)) => check_positive(origin, "duration_s", d)?,
            (None, None) => {
                return Err(conflict(origin, "give `requests` or `duration_s` (neither is given)"));
            }
            (Some(_), Some(_)) => {
                return Err(conflict(origin, "give `requests` or `duration_s`, not both"));
            }
        }
        spec::check_slo(origin, &self.slo)
    }

    /// Reads the trace / ShareGPT rows, if the lengths come from a file.
    fn read_rows(&mut self, origin: &str, base_dir: &Path) -> Result<(), WorkloadError> {
        let clamp = Clamp { min: self.lengths.min.unwrap_or(1), max: self.lengths.max };
        let rows = if let Some(p) = &self.lengths.trace {
            trace::read_jsonl(&resolve(base_dir, p), clamp)?
        } else if let Some(p) = &self.lengths.sharegpt {
            trace::read_sharegpt(&resolve(base_dir, p), clamp)?
        } else {
            self.rows = None;
            return Ok(());
        };
        if matches!(self.arrival, Arrival::Trace { .. }) {
            check_replayable(origin, &rows)?;
        }
        self.rows = Some(rows.into());
        Ok(())
    }

    /// The longest sequence (prefix + prompt + output tokens) a request can need, to check
    /// against a model's context.
    pub fn max_sequence_tokens(&self) -> usize {
        let prefix = self.prefix.map_or(0, |p| p.length);
        let body = match (&self.lengths.prompt, &self.lengths.output, &self.rows) {
            (Some(p), Some(o), _) => p.max_len() + o.max_len(),
            (_, _, Some(rows)) => {
                rows.iter().map(|r| r.prompt_tokens + r.output_tokens).max().unwrap_or(0)
            }
            _ => 0,
        };
        prefix + body
    }

    /// The plan for a run with `overrides` applied.
    pub fn plan(&self, overrides: &LoadOverrides) -> Result<Plan, WorkloadError> {
        let origin = format!("workload `{}`", self.name);
        let origin = origin.as_str();
        if overrides.rate.is_some() && overrides.concurrency.is_some() {
            return Err(conflict(origin, "override either the rate or the concurrency, not both"));
        }
        if overrides.requests.is_some() && overrides.duration_s.is_some() {
            return Err(conflict(
                origin,
                "override either the request count or the duration, not both",
            ));
        }
        if let Some(r) = overrides.rate {
            check_positive(origin, "rate override", r)?;
        }
        if let Some(c) = overrides.concurrency {
            check_at_least_one(origin, "concurrency override", c)?;
        }
        if let Some(n) = overrides.requests {
            check_at_least_one(origin, "requests override", n)?;
        }
        if let Some(d) = overrides.duration_s {
            check_positive(origin, "duration_s override", d)?;
        }
        self.check(origin)?;

        let bound = match (overrides.requests, overrides.duration_s, self.requests, self.duration_s)
        {
            (Some(n), _, _, _) => Bound::Requests(n),
            (None, Some(d), _, _) => Bound::Duration(d),
            (None, None, Some(n), _) => Bound::Requests(n),
            (None, None, None, Some(d)) => Bound::Duration(d),
            (None, None, None, None) => {
                return Err(conflict(origin, "give `requests` or `duration_s`"));
            }
        };
        let warmup = self.warmup.requests;
        if let Bound::Requests(n) = bound
            && n.saturating_add(warmup) > MAX_PLANNED_REQUESTS
        {
            return Err(conflict(
                origin,
                format_args!(
                    "{n} requests + {warmup} warm-up exceed the limit of {MAX_PLANNED_REQUESTS}"
                ),
            ));
        }

        let is_trace = matches!(self.arrival, Arrival::Trace { .. });
        let lengths = match (&self.lengths.prompt, &self.lengths.output, &self.rows) {
            (Some(p), Some(o), _) => LengthSource::Dists {
                prompt: LengthSampler::new(p, "lengths.prompt")?,
                output: LengthSampler::new(o, "lengths.output")?,
            },
            (_, _, Some(rows)) => LengthSource::Rows { rows: rows.clone(), in_order: is_trace },
            _ => {
                return Err(conflict(
                    origin,
                    "the trace rows are not loaded (build workloads with `Workload::from_file`, \
                     `from_yaml`, `load` or `preset`)",
                ));
            }
        };

        // The effective arrival process.
        let arrival = match (overrides.concurrency, overrides.rate, self.arrival) {
            (Some(concurrency), _, _) => Arrival::Closed { concurrency },
            (None, Some(rate), Arrival::Gamma { burstiness, .. }) => {
                Arrival::Gamma { rate, burstiness }
            }
            (None, Some(rate), Arrival::Constant { .. }) => Arrival::Constant { rate },
            (None, Some(rate), Arrival::Poisson { .. } | Arrival::Closed { .. }) => {
                Arrival::Poisson { rate }
            }
            (None, _, a) => a,
        };

        let (pacing, arrivals_s, max_requests, duration_s) = match arrival {
            Arrival::Closed { concurrency } => {
                let (max, dur) = match bound {
                    Bound::Requests(n) => (Some(n + warmup), None),
                    Bound::Duration(d) => (None, Some(d)),
                };
                (Pacing::Closed { concurrency }, Vec::new(), max, dur)
            }
            Arrival::Trace { speedup } => {
                let rows = self.rows.as_deref().unwrap_or(&[]);
                let times = replay_times(origin, rows)?;
                let scale = match overrides.rate {
                    // Mean rate of the (wrapped) replay is (n - 1) / span.
                    Some(rate) => times.natural_rate() / rate,
                    None => 1.0 / speedup,
                };
                let arrivals = open_arrivals(origin, bound, warmup, |i| times.at(i) * scale)?;
                let n = arrivals.len();
                (Pacing::Open, arrivals, Some(n), None)
            }
            open => {
                let gaps = GapSampler::new(&open)?.ok_or_else(|| {
                    WorkloadError::Invalid(format!("{origin}: no gap sampler for {open:?}"))
                })?;
                let seed = self.seed;
                let mut t = 0.0;
                let arrivals = open_arrivals(origin, bound, warmup, |i| {
                    match gaps {
                        // Exact multiples, without the rounding a running sum accumulates.
                        GapSampler::Constant(g) => t = i as f64 * g,
                        _ if i > 0 => t += gaps.gap(seed, i),
                        _ => {}
                    }
                    t
                })?;
                let n = arrivals.len();
                (Pacing::Open, arrivals, Some(n), None)
            }
        };

        Ok(Plan {
            pacing,
            arrivals_s,
            max_requests,
            duration_s,
            warmup_requests: warmup,
            seed: self.seed,
            lengths,
            prefix: self.prefix,
        })
    }
}

fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() { p.to_path_buf() } else { base.join(p) }
}

/// Arrival times of a trace replay, wrapping around one mean gap after the last row.
struct ReplayTimes<'a> {
    rows: &'a [TraceRow],
    span: f64,
}

fn check_replayable(origin: &str, rows: &[TraceRow]) -> Result<(), WorkloadError> {
    replay_times(origin, rows).map(|_| ())
}

fn replay_times<'a>(origin: &str, rows: &'a [TraceRow]) -> Result<ReplayTimes<'a>, WorkloadError> {
    if rows.iter().any(|r| r.timestamp_s.is_none()) {
        return Err(conflict(
            origin,
            "`arrival.process: trace` needs a `timestamp` on every row of `lengths.trace`",
        ));
    }
    let span = rows.last().and_then(|r| r.timestamp_s).unwrap_or(0.0);
    if rows.len() < 2 || span <= 0.0 {
        return Err(conflict(
            origin,
            "`arrival.process: trace` needs at least 2 trace rows spanning some time",
        ));
    }
    Ok(ReplayTimes { rows, span })
}

impl ReplayTimes<'_> {
    fn natural_rate(&self) -> f64 {
        (self.rows.len() - 1) as f64 / self.span
    }

    fn at(&self, i: usize) -> f64 {
        let n = self.rows.len();
        let period = self.span + self.span / (n - 1) as f64;
        let lap = (i / n) as f64;
        lap * period + self.rows[i % n].timestamp_s.unwrap_or(0.0)
    }
}

/// Arrival times `time(0), time(1), ...` (called once each, in order): `warmup + n` of them,
/// or the warm-up ones and then those within `d` seconds of the first measured one.
fn open_arrivals(
    origin: &str,
    bound: Bound,
    warmup: usize,
    mut time: impl FnMut(usize) -> f64,
) -> Result<Vec<f64>, WorkloadError> {
    match bound {
        Bound::Requests(n) => Ok((0..n + warmup).map(time).collect()),
        Bound::Duration(d) => {
            let mut out = Vec::new();
            let mut start = None;
            for i in 0.. {
                if i >= MAX_PLANNED_REQUESTS {
                    return Err(conflict(
                        origin,
                        format_args!(
                            "{d} s of arrivals exceed the limit of {MAX_PLANNED_REQUESTS} requests"
                        ),
                    ));
                }
                let t = time(i);
                if i >= warmup {
                    let t0 = *start.get_or_insert(t);
                    if t - t0 >= d {
                        break;
                    }
                }
                out.push(t);
            }
            Ok(out)
        }
    }
}

impl Plan {
    /// Request `index` of the stream: a pure function of the workload, its seed and `index`.
    pub fn request(&self, index: usize) -> PlannedRequest {
        let i = index as u64;
        let (prompt_len, output_tokens) = self.own_lengths(index);
        let mut prompt = Vec::with_capacity(self.prefix.map_or(0, |p| p.length) + prompt_len);
        let prefix_group = self.prefix.map(|p| {
            let g = stream_rng(self.seed, Stream::PrefixChoice, i).random_range(0..p.groups as u64);
            push_text(&mut stream_rng(self.seed, Stream::PrefixText, g), p.length, &mut prompt);
            g as usize
        });
        push_text(&mut stream_rng(self.seed, Stream::PromptText, i), prompt_len, &mut prompt);
        PlannedRequest {
            index,
            prompt,
            output_tokens,
            prefix_group,
            warmup: index < self.warmup_requests,
        }
    }

    /// Request `index`'s (prompt tokens, output tokens) without building the prompt: what
    /// [`Plan::request`] would return, for consumers that need only the lengths (the
    /// simulator).
    pub fn lengths(&self, index: usize) -> (usize, usize) {
        let (prompt_len, output_tokens) = self.own_lengths(index);
        (self.prefix.map_or(0, |p| p.length) + prompt_len, output_tokens)
    }

    /// The request's own prompt length (after any shared prefix) and its output tokens.
    fn own_lengths(&self, index: usize) -> (usize, usize) {
        let mut rng = stream_rng(self.seed, Stream::Lengths, index as u64);
        match &self.lengths {
            LengthSource::Dists { prompt, output } => {
                let p = prompt.sample(&mut rng);
                (p, output.sample(&mut rng))
            }
            LengthSource::Rows { rows, in_order } => {
                let n = rows.len().max(1);
                let row =
                    if *in_order { index % n } else { rng.random_range(0..n as u64) as usize };
                rows.get(row).map_or((1, 1), |r| (r.prompt_tokens, r.output_tokens))
            }
        }
    }

    /// The requests of an open-loop plan, or of a count-bounded closed-loop plan, in order.
    pub fn requests(&self) -> impl Iterator<Item = PlannedRequest> + '_ {
        let n = match self.pacing {
            Pacing::Open => self.arrivals_s.len(),
            Pacing::Closed { .. } => self.max_requests.unwrap_or(0),
        };
        (0..n).map(|i| self.request(i))
    }
}

/// A workload that cannot be read or used; the message names the file, field and reason.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// Anything wrong with a workload, suite or trace, with where and why.
    #[error("{0}")]
    Invalid(String),
    /// A file that cannot be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}
