//! The kernel cache: one JSON object per line, one line per measured (or rejected) candidate.
//!
//! A record is keyed by machine ([`crate::machine::MachineId::key`]), kernel name, shape and
//! params, and carries the median time, GFLOP/s and repeats. Records carry no timestamp, so the
//! same measurements give the same file. Appending never rewrites earlier lines; when a key
//! appears twice, the later line wins.

use super::format_error;
use crate::error::KernelError;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The environment variable naming the kernel cache file.
pub const CACHE_ENV: &str = "DYNO_KERNEL_CACHE";

/// The default cache file: `$DYNO_KERNEL_CACHE`, else `$XDG_CACHE_HOME/dyno/kernels.jsonl`, else
/// `~/.cache/dyno/kernels.jsonl`, else `./.dyno/kernels.jsonl`.
pub fn default_cache_path() -> PathBuf {
    let non_empty = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = non_empty(CACHE_ENV) {
        return PathBuf::from(p);
    }
    if let Some(p) = non_empty("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("dyno").join("kernels.jsonl");
    }
    if let Some(home) = non_empty("HOME") {
        return PathBuf::from(home).join(".cache").join("dyno").join("kernels.jsonl");
    }
    PathBuf::from(".dyno").join("kernels.jsonl")
}

/// Whether a candidate was timed or turned away by the correctness gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordStatus {
    /// Output matched the reference; timed.
    Ok,
    /// Output differed from the reference beyond tolerance (or the kernel failed); not timed.
    Rejected,
}

/// One cached measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheRecord {
    /// [`crate::machine::MachineId::key`] of the machine that measured it.
    pub machine: String,
    /// Kernel name, e.g. `gemm_f32`.
    pub kernel: String,
    /// Problem shape, e.g. `[m, n, k]` for GEMM.
    pub shape: Vec<usize>,
    /// The kernel's parameters as serialized (e.g. a `GemmParams`).
    pub params: serde_json::Value,
    /// Timed, or rejected by the correctness gate.
    pub status: RecordStatus,
    /// Median seconds per call (absent when rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_s: Option<f64>,
    /// GFLOP/s at the median (absent when rejected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gflops: Option<f64>,
    /// GB/s of memory traffic at the median, for kernels measured by bandwidth (attention
    /// decode); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gb_per_s: Option<f64>,
    /// Timed repeats behind the median.
    pub repeats: usize,
    /// Largest absolute difference from the reference on the gate's shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_abs_err: Option<f64>,
    /// Why it was rejected, or other remarks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl CacheRecord {
    fn same_key(&self, machine: &str, kernel: &str, shape: &[usize]) -> bool {
        self.machine == machine && self.kernel == kernel && self.shape == shape
    }
}

/// The cache file's records in memory, plus where to append new ones.
#[derive(Debug, Clone)]
pub struct KernelCache {
    path: PathBuf,
    records: Vec<CacheRecord>,
}

impl KernelCache {
    /// Loads `path`; a missing file is an empty cache. A malformed line is an error naming the
    /// file and the line number (blank lines are allowed).
    pub fn load(path: impl Into<PathBuf>) -> Result<Self, KernelError> {
        let path = path.into();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(source) => {
                return Err(KernelError::Io { path: path.display().to_string(), source });
            }
        };
        let mut records = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let rec: CacheRecord = serde_json::from_str(line).map_err(|e| {
                format_error(&path, format!("line {}: not a kernel cache record: {e}", i + 1))
            })?;
            records.push(rec);
        }
        Ok(Self { path, records })
    }

    /// An empty cache that will append to `path` (the file is not read).
    pub fn empty(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into(), records: Vec::new() }
    }

    /// The file this cache appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every record, in file order.
    pub fn records(&self) -> &[CacheRecord] {
        &self.records
    }

    /// The latest record for exactly these params, if any.
    pub fn lookup(
        &self,
        machine: &str,
        kernel: &str,
        shape: &[usize],
        params: &serde_json::Value,
    ) -> Option<&CacheRecord> {
        self.records
            .iter()
            .rev()
            .find(|r| r.same_key(machine, kernel, shape) && &r.params == params)
    }

    /// Timed records for (machine, kernel, shape) that `usable` accepts, fastest first by
    /// GFLOP/s; a params value measured twice counts once (its latest record).
    pub fn ranked(
        &self,
        machine: &str,
        kernel: &str,
        shape: &[usize],
        usable: impl Fn(&serde_json::Value) -> bool,
    ) -> Vec<&CacheRecord> {
        let mut out: Vec<&CacheRecord> = Vec::new();
        for r in self.records.iter().rev() {
            if r.same_key(machine, kernel, shape)
                && r.status == RecordStatus::Ok
                && r.gflops.is_some_and(f64::is_finite)
                && !out.iter().any(|o| o.params == r.params)
                && usable(&r.params)
            {
                out.push(r);
            }
        }
        out.sort_by(|a, b| b.gflops.unwrap_or(0.0).total_cmp(&a.gflops.unwrap_or(0.0)));
        out
    }

    /// The fastest timed record for (machine, kernel, shape) that `usable` accepts.
    pub fn best(
        &self,
        machine: &str,
        kernel: &str,
        shape: &[usize],
        usable: impl Fn(&serde_json::Value) -> bool,
    ) -> Option<&CacheRecord> {
        self.ranked(machine, kernel, shape, usable).into_iter().next()
    }

    /// Appends `record` to the file (creating it and its directory) and to memory.
    pub fn append(&mut self, record: CacheRecord) -> Result<(), KernelError> {
        let io = |source| KernelError::Io { path: self.path.display().to_string(), source };
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut line = serde_json::to_string(&record)
            .map_err(|e| format_error(&self.path, format!("cannot serialize record: {e}")))?;
        line.push('\n');
        let mut f =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.path).map_err(io)?;
        f.write_all(line.as_bytes()).map_err(io)?;
        self.records.push(record);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(params: serde_json::Value, gflops: Option<f64>) -> CacheRecord {
        CacheRecord {
            machine: "cpu|avx2|2".into(),
            kernel: "gemm_f32".into(),
            shape: vec![8, 16, 32],
            params,
            status: if gflops.is_some() { RecordStatus::Ok } else { RecordStatus::Rejected },
            median_s: gflops.map(|g| 1.0 / g),
            gflops,
            gb_per_s: None,
            repeats: 5,
            max_abs_err: Some(0.0),
            note: None,
        }
    }

    #[test]
    fn round_trip_lookup_and_best() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("k.jsonl");
        let mut c = KernelCache::load(&path).unwrap();
        assert!(c.records().is_empty());
        c.append(rec(serde_json::json!({"mc": 1}), Some(2.0))).unwrap();
        c.append(rec(serde_json::json!({"mc": 2}), Some(5.0))).unwrap();
        c.append(rec(serde_json::json!({"mc": 3}), None)).unwrap();
        let back = KernelCache::load(&path).unwrap();
        assert_eq!(back.records(), c.records());
        let shape = [8, 16, 32];
        let best = back.best("cpu|avx2|2", "gemm_f32", &shape, |_| true).unwrap();
        assert_eq!(best.params, serde_json::json!({"mc": 2}));
        let only_one = back.best("cpu|avx2|2", "gemm_f32", &shape, |p| p["mc"] == 1).unwrap();
        assert_eq!(only_one.gflops, Some(2.0));
        assert!(back.best("other", "gemm_f32", &shape, |_| true).is_none());
        let rejected =
            back.lookup("cpu|avx2|2", "gemm_f32", &shape, &serde_json::json!({"mc": 3})).unwrap();
        assert_eq!(rejected.status, RecordStatus::Rejected);
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.jsonl");
        let good = serde_json::to_string(&rec(serde_json::json!({}), Some(1.0))).unwrap();
        std::fs::write(&path, format!("{good}\n\n{{not json\n")).unwrap();
        let e = KernelCache::load(&path).unwrap_err().to_string();
        assert!(e.contains(&path.display().to_string()), "{e}");
        assert!(e.contains("line 3"), "{e}");

        std::fs::write(&path, format!("{}\n", good.replace("\"repeats\"", "\"repeatz\""))).unwrap();
        let e = KernelCache::load(&path).unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("repeatz"), "{e}");
    }
}
