//! The store's input and output types (independent of dyno-harness: results ← harness).

use serde::{Deserialize, Serialize};

use super::row::from_row;

/// Status of a run. `Completed` and `Partial` runs contribute points to series (each scenario
/// result is written whole); `Running` and `Failed` ones never do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Started and not finished (or killed before finishing).
    Running,
    /// Finished with every scenario recorded.
    Completed,
    /// Finished with an error, or found stale.
    Failed,
    /// Finished with some scenarios missing; the recorded ones count.
    Partial,
}

impl RunStatus {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Partial => "partial",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<RunStatus> {
        match s {
            "running" => Some(RunStatus::Running),
            "completed" => Some(RunStatus::Completed),
            "failed" => Some(RunStatus::Failed),
            "partial" => Some(RunStatus::Partial),
            _ => None,
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A git commit a run measured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitInfo {
    /// Full commit hash.
    pub sha: String,
    /// Commit time, unix seconds, if known.
    pub timestamp: Option<i64>,
    /// Position in history (e.g. `git rev-list --count`); series are ordered by it. `None`:
    /// one past the largest stored (for a commit seen first), or the stored one.
    pub ordinal: Option<i64>,
}

/// The machine a run ran on: a hardware description, stored once per distinct spec.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Testbed {
    /// CPU, memory, GPU, ... as JSON; its canonical form (sorted keys) is hashed.
    pub spec: serde_json::Value,
}

impl Testbed {
    /// SHA-256 (hex) of the spec's canonical JSON (object keys sorted, no whitespace).
    pub fn hash(&self) -> String {
        use sha2::Digest;
        let mut canon = String::new();
        canonical_json(&self.spec, &mut canon);
        let digest = sha2::Sha256::digest(canon.as_bytes());
        hex(&digest)
    }
}

/// What `begin_run` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    /// The commit measured.
    pub commit: CommitInfo,
    /// The branch it was measured on.
    pub branch: String,
    /// What started the run (`nightly`, `manual`, `ci`, ...).
    pub trigger: String,
    /// OS, dyno version, driver, ... as JSON.
    pub environment: serde_json::Value,
    /// Unique per logical run: re-using the key of a completed run records nothing.
    pub idempotency_key: String,
    /// The machine.
    pub testbed: Testbed,
}

/// What `begin_run` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BeginRun {
    /// A new run, now `running`.
    Started(i64),
    /// A completed run with this idempotency key exists; nothing was written.
    AlreadyRecorded(i64),
}

impl BeginRun {
    /// The run id either way.
    pub fn id(self) -> i64 {
        match self {
            BeginRun::Started(id) | BeginRun::AlreadyRecorded(id) => id,
        }
    }
}

/// One benchmarked configuration: a model under a workload with an engine config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scenario {
    /// Scenario name (a series is keyed by it).
    pub name: String,
    /// Model name or path.
    pub model: String,
    /// Workload name.
    pub workload: String,
    /// Hash of the engine config (any stable hash the caller chooses).
    pub config_hash: String,
    /// The engine config itself, as text.
    pub config: String,
}

/// One measure's value in one scenario of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricValue {
    /// Measure name, e.g. `ttft_p99`.
    pub measure: String,
    /// Unit, e.g. `s`, `tok/s`.
    pub unit: String,
    /// Family (`latency`, `throughput`, ...), for per-family detection thresholds.
    pub family: String,
    /// True when smaller is better.
    pub lower_is_better: bool,
    /// The value (finite).
    pub value: f64,
    /// Lower bound of an interval around it, if any.
    pub lower: Option<f64>,
    /// Upper bound, if any.
    pub upper: Option<f64>,
    /// Number of observations behind it.
    pub n: i64,
    /// Raw samples (may be empty), stored as little-endian f64 bytes.
    pub samples: Vec<f64>,
}

/// A serialized latency histogram of one scenario.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// E.g. `ttft`.
    pub name: String,
    /// The serialized bytes (hex in JSON lines).
    #[serde(with = "hex_bytes")]
    pub data: Vec<u8>,
}

/// Which series to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeriesFilter {
    /// Scenario name.
    pub scenario: String,
    /// Measure name.
    pub measure: String,
    /// Only this testbed hash, if set.
    pub testbed: Option<String>,
    /// Only runs on this branch, if set.
    pub branch: Option<String>,
    /// Only this engine config hash, if set.
    pub config_hash: Option<String>,
}

from_row! {
    /// One point of a series.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Point {
        /// The run.
        pub run_id: i64,
        /// Commit hash.
        pub sha: String,
        /// Commit position (the series' order).
        pub ordinal: i64,
        /// Branch of the run.
        pub branch: String,
        /// Testbed hash.
        pub testbed: String,
        /// Value.
        pub value: f64,
        /// Lower bound.
        pub lower_bound: Option<f64>,
        /// Upper bound.
        pub upper_bound: Option<f64>,
        /// Observations.
        pub n: i64,
        /// Run start, unix ms.
        pub started_at: i64,
    }
}

from_row! {
    /// One point of any series, with the series it belongs to (what an overview of every
    /// series reads in one query).
    #[derive(Debug, Clone, PartialEq, Serialize)]
    pub struct SeriesPoint {
        /// Scenario name.
        pub scenario: String,
        /// Engine config hash of the scenario.
        pub config_hash: String,
        /// Model of the scenario.
        pub model: String,
        /// Workload of the scenario.
        pub workload: String,
        /// Measure name.
        pub measure: String,
        /// Measure unit.
        pub unit: String,
        /// Measure family.
        pub family: String,
        /// True when smaller is better.
        pub lower_is_better: bool,
        /// Testbed hash.
        pub testbed: String,
        /// Branch of the run.
        pub branch: String,
        /// The run.
        pub run_id: i64,
        /// Commit hash.
        pub sha: String,
        /// Commit position (the series' order).
        pub ordinal: i64,
        /// Value.
        pub value: f64,
        /// Lower bound.
        pub lower_bound: Option<f64>,
        /// Upper bound.
        pub upper_bound: Option<f64>,
        /// Run start, unix ms.
        pub started_at: i64,
    }
}

impl SeriesPoint {
    /// The key of the series this point belongs to.
    pub fn key(&self) -> SeriesKey {
        SeriesKey {
            scenario: self.scenario.clone(),
            config_hash: self.config_hash.clone(),
            measure: self.measure.clone(),
            unit: self.unit.clone(),
            family: self.family.clone(),
            lower_is_better: self.lower_is_better,
            testbed: self.testbed.clone(),
            branch: self.branch.clone(),
        }
    }
}

/// A run as listed by `runs`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// Run id.
    pub id: i64,
    /// Commit measured.
    pub commit: CommitInfo,
    /// Branch.
    pub branch: String,
    /// Trigger.
    pub trigger: String,
    /// Status.
    pub status: RunStatus,
    /// Idempotency key.
    pub idempotency_key: String,
    /// Environment JSON.
    pub environment: serde_json::Value,
    /// Testbed.
    pub testbed: Testbed,
    /// Start, unix ms.
    pub started_at: i64,
    /// End, unix ms, once finished.
    pub finished_at: Option<i64>,
}

/// A scenario's recorded results within a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// The scenario.
    pub scenario: Scenario,
    /// Its metric values, with samples.
    pub values: Vec<MetricValue>,
    /// Its histograms.
    pub histograms: Vec<Histogram>,
}

/// Everything stored about one run: one JSON line of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The run.
    pub run: RunSummary,
    /// Its scenarios, in recording order.
    pub scenarios: Vec<ScenarioResult>,
}

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Runs written.
    pub imported: usize,
    /// Runs skipped because their idempotency key was already stored.
    pub skipped: usize,
}

/// Lower-case hex of bytes.
pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Bytes from hex, `None` when malformed.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::hex(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        super::unhex(&s).ok_or_else(|| serde::de::Error::custom("malformed hex bytes"))
    }
}

/// Samples as consecutive little-endian f64.
pub(crate) fn samples_to_bytes(samples: &[f64]) -> Vec<u8> {
    samples.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Samples back from little-endian f64 bytes; `None` when the length is not a multiple of 8.
pub(crate) fn samples_from_bytes(bytes: &[u8]) -> Option<Vec<f64>> {
    if !bytes.len().is_multiple_of(8) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(8)
            .map(|c| {
                let mut a = [0u8; 8];
                a.copy_from_slice(c);
                f64::from_le_bytes(a)
            })
            .collect(),
    )
}

/// JSON with object keys sorted and no whitespace, so equal documents hash equally whatever
/// serde_json's map order feature says.
fn canonical_json(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(x) = map.get(*k) {
                    canonical_json(x, out);
                }
            }
            out.push('}');
        }
        serde_json::Value::Array(xs) => {
            out.push('[');
            for (i, x) in xs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Status of a tuner trial: `pending` (queued) → `running` (claimed by a worker) → one of the
/// finished states; `infeasible` trials are recorded finished, never run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialStatus {
    /// Queued, not yet claimed by any worker.
    Pending,
    /// Claimed by a worker and being measured.
    Running,
    /// Measured.
    Completed,
    /// The engine or the measurement failed (see the trial's error).
    Failed,
    /// Stopped early by the tuner.
    Pruned,
    /// Ruled out by a constraint before running (the reason is the trial's error).
    Infeasible,
}

impl TrialStatus {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TrialStatus::Pending => "pending",
            TrialStatus::Running => "running",
            TrialStatus::Completed => "completed",
            TrialStatus::Failed => "failed",
            TrialStatus::Pruned => "pruned",
            TrialStatus::Infeasible => "infeasible",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<TrialStatus> {
        match s {
            "pending" => Some(TrialStatus::Pending),
            "running" => Some(TrialStatus::Running),
            "completed" => Some(TrialStatus::Completed),
            "failed" => Some(TrialStatus::Failed),
            "pruned" => Some(TrialStatus::Pruned),
            "infeasible" => Some(TrialStatus::Infeasible),
            _ => None,
        }
    }

    /// True for the states a trial ends in (completed, failed, pruned, infeasible).
    pub fn is_finished(self) -> bool {
        !matches!(self, TrialStatus::Pending | TrialStatus::Running)
    }
}

impl std::fmt::Display for TrialStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tuning study to create.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyInfo {
    /// Study name.
    pub name: String,
    /// The scenario tuned, if any.
    pub scenario: Option<Scenario>,
    /// The objective, e.g. `maximize goodput s.t. ttft_p99 <= 0.5`.
    pub objective: String,
    /// The search space as JSON.
    pub search_space: serde_json::Value,
}

/// A stored tuning study.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Study {
    /// Study id.
    pub id: i64,
    /// Its name, unique in the database.
    pub name: String,
    /// The scenario tuned, if any (id in `scenarios`).
    pub scenario_id: Option<i64>,
    /// The objective.
    pub objective: String,
    /// The search space as JSON.
    pub search_space: serde_json::Value,
    /// The tuner's settings (strategy, seed, budget, model, workload, ...) as JSON; `null` for
    /// a study created without settings.
    pub settings: serde_json::Value,
    /// `running` until finished.
    pub status: RunStatus,
    /// Creation time, unix ms.
    pub created_at: i64,
    /// End, unix ms, once finished.
    pub finished_at: Option<i64>,
}

/// How many trials of a study are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialCounts {
    /// Queued, not claimed.
    pub pending: i64,
    /// Claimed, not finished.
    pub running: i64,
    /// Measured.
    pub completed: i64,
    /// Failed.
    pub failed: i64,
    /// Stopped early.
    pub pruned: i64,
    /// Ruled out before running.
    pub infeasible: i64,
}

impl TrialCounts {
    /// All trials, whatever their state.
    pub fn total(&self) -> i64 {
        self.pending + self.running + self.completed + self.failed + self.pruned + self.infeasible
    }
}

/// A study as listed by `studies`: what it is and how far it got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudySummary {
    /// Study id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// `running` until finished.
    pub status: RunStatus,
    /// Creation time, unix ms.
    pub created_at: i64,
    /// End, unix ms, once finished.
    pub finished_at: Option<i64>,
    /// Its trials by state.
    pub trials: TrialCounts,
}

/// A trial the tuner wants run (or recorded as infeasible).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTrial {
    /// The tuner's identity of the trial (e.g. a hash of point and fidelity): unique within
    /// the study, so the same trial is never queued twice.
    pub trial_key: String,
    /// The point and fidelity as JSON (opaque to the store).
    pub params: serde_json::Value,
    /// The engine config to try, as JSON.
    pub config: serde_json::Value,
    /// The tuner's predicted metrics, as JSON.
    pub predicted: Option<serde_json::Value>,
}

/// How a trial ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialOutcome {
    /// Completed, failed, pruned or infeasible.
    pub status: TrialStatus,
    /// Measured metrics as JSON, if measured.
    pub measured: Option<serde_json::Value>,
    /// Predicted metrics as JSON (a simulated evaluation), replacing any prediction stored
    /// when the trial was queued; `None` keeps that one.
    pub predicted: Option<serde_json::Value>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// The run holding its full results, if recorded.
    pub run: Option<i64>,
}

/// A stored trial.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    /// Trial id.
    pub id: i64,
    /// Its study.
    pub study: i64,
    /// Number within the study (0, 1, ...).
    pub number: i64,
    /// The engine config tried, as JSON.
    pub config: serde_json::Value,
    /// The tuner's predicted metrics, as JSON.
    pub predicted: Option<serde_json::Value>,
    /// Measured metrics, as JSON.
    pub measured: Option<serde_json::Value>,
    /// Status.
    pub status: TrialStatus,
    /// Error, when failed.
    pub error: Option<String>,
    /// Run with the full results.
    pub run: Option<i64>,
    /// Unix ms: when it was queued while `pending`, when it was (last) claimed once `running`
    /// or finished; for an infeasible trial, when it was recorded.
    pub started_at: i64,
    /// End, unix ms.
    pub finished_at: Option<i64>,
    /// The tuner's identity of the trial; `None` for trials begun without one.
    pub trial_key: Option<String>,
    /// The point and fidelity as JSON, if given.
    pub params: Option<serde_json::Value>,
    /// Who claimed it last (e.g. `host:pid`); `None` while pending or when begun directly.
    pub worker: Option<String>,
}

from_row! {
    /// A series a run contributed to, with its measure's metadata (what detection needs).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct SeriesKey {
        /// Scenario name.
        pub scenario: String,
        /// Engine config hash of the scenario.
        pub config_hash: String,
        /// Measure name.
        pub measure: String,
        /// Measure unit.
        pub unit: String,
        /// Measure family.
        pub family: String,
        /// True when smaller is better.
        pub lower_is_better: bool,
        /// Testbed hash.
        pub testbed: String,
        /// Branch.
        pub branch: String,
    }
}

impl SeriesKey {
    /// The filter that reads exactly this series.
    pub fn filter(&self) -> SeriesFilter {
        SeriesFilter {
            scenario: self.scenario.clone(),
            measure: self.measure.clone(),
            testbed: Some(self.testbed.clone()),
            branch: Some(self.branch.clone()),
            config_hash: Some(self.config_hash.clone()),
        }
    }
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// Flagged by the per-point check, not yet confirmed.
    Provisional,
    /// Confirmed by change-point detection.
    Confirmed,
    /// Withdrawn: later points showed no change.
    Retracted,
}

impl AlertState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Provisional => "provisional",
            AlertState::Confirmed => "confirmed",
            AlertState::Retracted => "retracted",
        }
    }

    /// Parse a stored name.
    pub fn parse(s: &str) -> Option<AlertState> {
        match s {
            "provisional" => Some(AlertState::Provisional),
            "confirmed" => Some(AlertState::Confirmed),
            "retracted" => Some(AlertState::Retracted),
            _ => None,
        }
    }
}

/// An alert as detection reports it: one change in one series at one commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertInfo {
    /// The series (scenario, config hash, measure, testbed, branch).
    pub series: SeriesKey,
    /// The first commit after the change.
    pub commit: String,
    /// Provisional, confirmed or retracted.
    pub state: AlertState,
    /// True for a regression (worse in the measure's direction), false for an improvement.
    pub regression: bool,
    /// Mean before the change.
    pub before: f64,
    /// Mean after.
    pub after: f64,
    /// `(after - before) / before * 100`.
    pub change_pct: f64,
    /// The t-test's p-value, once confirmed.
    pub p_value: Option<f64>,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Alert id.
    pub id: i64,
    /// What detection reported (latest).
    pub info: AlertInfo,
    /// Its group, if grouped.
    pub group: Option<i64>,
    /// First reported, unix ms.
    pub created_at: i64,
    /// Last changed, unix ms.
    pub updated_at: i64,
}

from_row! {
    /// One triage step on an alert (`acknowledged`, `fixed`, `invalid`, `improvement`, ...).
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct TriageEvent {
        /// Event id.
        pub id: i64,
        /// The alert.
        pub alert_id: i64,
        /// The action.
        pub action: String,
        /// Free text.
        pub note: String,
        /// Who, if known.
        pub author: Option<String>,
        /// When, unix ms.
        pub created_at: i64,
    }
}

from_row! {
    /// A note attached to a commit and/or a run (e.g. "driver upgraded", "noisy neighbour").
    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    pub struct Annotation {
        /// Annotation id.
        pub id: i64,
        /// The commit, if any.
        pub sha: Option<String>,
        /// The run, if any.
        pub run_id: Option<i64>,
        /// The note.
        pub text: String,
        /// When, unix ms.
        pub created_at: i64,
    }
}
