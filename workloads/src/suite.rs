//! Suites: the scenarios (model, engine config, workload, load level) a nightly run measures,
//! and the kernel shapes it microbenchmarks.
//!
//! ```yaml
//! # nightly: what this suite guards
//! scenarios:
//!   - name: chat-tiny                 # unique
//!     model: mixtral-tiny
//!     engine: { threads: 2 }          # inline engine config, or `config_file: engine.yaml`,
//!                                     # or neither (engine defaults); the caller checks it
//!     workload: chat                  # preset name, or a path (relative to this file)
//!     rate: 4.0                       # exactly one of: rate, concurrency,
//!                                     # max_rate_under_slo: true (needs a workload SLO)
//!     requests: 30                    # optional override (or duration_s)
//! kernels:                            # optional microbenchmarks
//!   gemm: [[1024, 1024, 1024]]        # [m, n, k]
//!   gemv: [[8192, 8192]]              # [n, k]
//! ```

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::spec::{check_at_least_one, check_positive, conflict, invalid};
use crate::{LoadOverrides, Workload, WorkloadError};

/// A list of scenarios and kernel microbenchmarks, as read from a suite YAML.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Suite {
    /// Serving scenarios, run in order.
    #[serde(default)]
    pub scenarios: Vec<Scenario>,
    /// Kernel shapes to microbenchmark.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernels: Option<KernelShapes>,
}

/// One serving measurement: a model on an engine config under a workload at a load level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Unique name within the suite.
    pub name: String,
    /// Model name (for example `mixtral-mini`).
    pub model: String,
    /// Inline engine config (a mapping), checked by the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<serde_yaml::Value>,
    /// Engine config file; after [`Suite::from_file`], resolved against the suite's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_file: Option<PathBuf>,
    /// Workload preset name or file; after [`Suite::from_file`], a relative path is resolved
    /// against the suite's directory.
    pub workload: String,
    /// Open loop at this rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    /// Closed loop at this concurrency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<usize>,
    /// Search for the highest rate that meets the workload's SLOs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub max_rate_under_slo: bool,
    /// Measured requests (replaces the workload's bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<usize>,
    /// Seconds of arrivals (replaces the workload's bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_s: Option<f64>,
}

/// Where a scenario's engine config comes from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EngineSource<'a> {
    /// The engine's defaults.
    Default,
    /// An inline mapping.
    Inline(&'a serde_yaml::Value),
    /// A YAML file.
    File(&'a Path),
}

/// A scenario's load level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoadLevel {
    /// Open loop at this many requests per second.
    Rate(f64),
    /// Closed loop with this many requests in flight.
    Concurrency(usize),
    /// The highest rate whose run meets the workload's SLOs.
    MaxRateUnderSlo,
}

/// Kernel microbenchmark shapes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelShapes {
    /// GEMM shapes `[m, n, k]`.
    #[serde(default)]
    pub gemm: Vec<[usize; 3]>,
    /// GEMV weight shapes `[n, k]`.
    #[serde(default)]
    pub gemv: Vec<[usize; 2]>,
}

impl Scenario {
    /// The load level (exactly one is set once the suite is checked).
    pub fn load_level(&self) -> LoadLevel {
        match (self.rate, self.concurrency) {
            (Some(r), _) => LoadLevel::Rate(r),
            (None, Some(c)) => LoadLevel::Concurrency(c),
            (None, None) => LoadLevel::MaxRateUnderSlo,
        }
    }

    /// The engine config source.
    pub fn engine_source(&self) -> EngineSource<'_> {
        match (&self.engine, &self.config_file) {
            (Some(v), _) => EngineSource::Inline(v),
            (None, Some(p)) => EngineSource::File(p),
            (None, None) => EngineSource::Default,
        }
    }

    /// The scenario's workload.
    pub fn load_workload(&self) -> Result<Workload, WorkloadError> {
        Workload::load(&self.workload)
    }

    /// The overrides this scenario applies to its workload (for `max_rate_under_slo`, only
    /// the bound: the search sets the rate).
    pub fn overrides(&self) -> LoadOverrides {
        LoadOverrides {
            rate: self.rate,
            concurrency: self.concurrency,
            requests: self.requests,
            duration_s: self.duration_s,
        }
    }

    fn check(&self, origin: &str, i: usize) -> Result<(), WorkloadError> {
        let at = |f: &str| format!("scenarios[{i}].{f}");
        if self.name.trim().is_empty() {
            return Err(invalid(origin, &at("name"), "\"\"", "must not be empty"));
        }
        let origin = &format!("{origin}: scenario `{}`", self.name);
        if self.model.trim().is_empty() {
            return Err(invalid(origin, &at("model"), "\"\"", "must not be empty"));
        }
        if self.engine.is_some() && self.config_file.is_some() {
            return Err(conflict(origin, "give `engine` or `config_file`, not both"));
        }
        if let Some(v) = &self.engine
            && !v.is_mapping()
        {
            return Err(invalid(
                origin,
                &at("engine"),
                format_args!("{v:?}"),
                "must be a mapping of engine settings",
            ));
        }
        let levels = usize::from(self.rate.is_some())
            + usize::from(self.concurrency.is_some())
            + usize::from(self.max_rate_under_slo);
        if levels != 1 {
            return Err(conflict(
                origin,
                format_args!(
                    "give exactly one load level of `rate`, `concurrency`, \
                     `max_rate_under_slo: true` ({levels} given)"
                ),
            ));
        }
        if let Some(r) = self.rate {
            check_positive(origin, &at("rate"), r)?;
        }
        if let Some(c) = self.concurrency {
            check_at_least_one(origin, &at("concurrency"), c)?;
        }
        if self.requests.is_some() && self.duration_s.is_some() {
            return Err(conflict(origin, "give `requests` or `duration_s`, not both"));
        }
        if let Some(n) = self.requests {
            check_at_least_one(origin, &at("requests"), n)?;
        }
        if let Some(d) = self.duration_s {
            check_positive(origin, &at("duration_s"), d)?;
        }
        let workload = self
            .load_workload()
            .map_err(|e| WorkloadError::Invalid(format!("{origin}: `{}`: {e}", at("workload"))))?;
        if self.max_rate_under_slo && workload.slo.is_empty() {
            return Err(conflict(
                origin,
                format_args!(
                    "`max_rate_under_slo` needs SLOs, and workload `{}` has none",
                    self.workload
                ),
            ));
        }
        if let Some(p) = &self.config_file
            && !p.is_file()
        {
            return Err(invalid(origin, &at("config_file"), p.display(), "no such file"));
        }
        Ok(())
    }
}

impl KernelShapes {
    fn check(&self, origin: &str) -> Result<(), WorkloadError> {
        for (i, s) in self.gemm.iter().enumerate() {
            if s.contains(&0) {
                return Err(invalid(
                    origin,
                    &format!("kernels.gemm[{i}]"),
                    format_args!("{s:?}"),
                    "every dimension must be at least 1",
                ));
            }
        }
        for (i, s) in self.gemv.iter().enumerate() {
            if s.contains(&0) {
                return Err(invalid(
                    origin,
                    &format!("kernels.gemv[{i}]"),
                    format_args!("{s:?}"),
                    "every dimension must be at least 1",
                ));
            }
        }
        Ok(())
    }
}

impl Suite {
    /// Reads and checks a suite file: relative workload and config paths resolve against its
    /// directory, and every scenario's workload is loaded and checked.
    pub fn from_file(path: &Path) -> Result<Self, WorkloadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| WorkloadError::Io { path: path.to_path_buf(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Self::from_yaml(&text, &path.display().to_string(), base)
    }

    /// Parses and checks suite YAML; `origin` names it in errors, relative paths resolve
    /// against `base_dir`.
    pub fn from_yaml(text: &str, origin: &str, base_dir: &Path) -> Result<Self, WorkloadError> {
        let mut suite: Suite = serde_yaml::from_str(text)
            .map_err(|e| WorkloadError::Invalid(format!("{origin}: {e}")))?;
        for s in &mut suite.scenarios {
            if Workload::preset_yaml(&s.workload).is_none() && Path::new(&s.workload).is_relative()
            {
                s.workload = base_dir.join(&s.workload).display().to_string();
            }
            if let Some(p) = &s.config_file
                && p.is_relative()
            {
                s.config_file = Some(base_dir.join(p));
            }
        }
        suite.check(origin)?;
        Ok(suite)
    }

    fn check(&self, origin: &str) -> Result<(), WorkloadError> {
        if self.scenarios.is_empty() && self.kernels.is_none() {
            return Err(conflict(origin, "the suite lists no `scenarios` and no `kernels`"));
        }
        let mut names = HashSet::new();
        for (i, s) in self.scenarios.iter().enumerate() {
            if !names.insert(s.name.as_str()) {
                return Err(invalid(
                    origin,
                    &format!("scenarios[{i}].name"),
                    &s.name,
                    "used by an earlier scenario; names must be unique",
                ));
            }
            s.check(origin, i)?;
        }
        if let Some(k) = &self.kernels {
            k.check(origin)?;
        }
        Ok(())
    }
}
