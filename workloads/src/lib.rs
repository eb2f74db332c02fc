//! Request-stream specifications (YAML presets) and deterministic generators.
//!
//! A [`Workload`] (one YAML file, `deny_unknown_fields`) describes a request stream — lengths,
//! shared prefixes, arrival process, how many requests or how long, warm-up, seed — and the
//! SLOs a run is judged by. [`Workload::plan`] turns it into a [`Plan`]: arrival times computed
//! ahead as absolute offsets from the run's start, and request `i` generated from the seed and
//! `i` alone, so the same workload and seed give the same stream in the load generator and in
//! the simulator.

mod slo;

pub use slo::Slo;

use std::path::Path;

/// What a run's request stream looks like, as read from a workload YAML.
///
/// SKELETON: the fields are filled in by the workloads implementation; the harness only uses
/// the methods below and the public fields `name`, `slo`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Short name (the preset name, or the file stem).
    #[serde(default)]
    pub name: String,
    /// Service-level objectives; empty means "no SLO" (goodput = throughput).
    #[serde(default)]
    pub slo: Slo,
}

/// Overrides a command line applies on top of a workload's own load settings.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadOverrides {
    /// Open loop at this many requests per second (replaces the workload's rate; a `closed`
    /// workload becomes `poisson` at this rate).
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
    /// run's start, non-decreasing. Closed loop: empty.
    pub arrivals_s: Vec<f64>,
    /// Closed loop: total requests to send (warm-up included), when bounded by count.
    pub max_requests: Option<usize>,
    /// Closed loop: stop sending new requests after this many seconds, when bounded by time.
    pub duration_s: Option<f64>,
    /// Leading requests that are warm-up.
    pub warmup_requests: usize,
}

impl Workload {
    /// A built-in preset by name (`chat`, `rag`, `summarize`, `code`, `burst`, `decode-heavy`).
    pub fn preset(name: &str) -> Result<Self, WorkloadError> {
        let _ = name;
        unimplemented!("SKELETON")
    }

    /// A preset name or a path to a workload YAML file.
    pub fn load(name_or_path: &str) -> Result<Self, WorkloadError> {
        let _ = name_or_path;
        unimplemented!("SKELETON")
    }

    /// Reads and validates a workload YAML file.
    pub fn from_file(path: &Path) -> Result<Self, WorkloadError> {
        let _ = path;
        unimplemented!("SKELETON")
    }

    /// The plan for a run with `overrides` applied.
    pub fn plan(&self, overrides: &LoadOverrides) -> Result<Plan, WorkloadError> {
        let _ = overrides;
        unimplemented!("SKELETON")
    }
}

impl Plan {
    /// Request `index` of the stream: a pure function of the workload, its seed and `index`.
    pub fn request(&self, index: usize) -> PlannedRequest {
        let _ = index;
        unimplemented!("SKELETON")
    }
}

/// A workload that cannot be read or used; the message names the file, field and reason.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    /// Anything wrong with a workload, suite or trace, with where and why.
    #[error("{0}")]
    Invalid(String),
}
