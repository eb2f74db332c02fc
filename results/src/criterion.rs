//! Criterion's saved estimates as stored scenario results, so kernel microbenchmarks run with
//! `cargo bench` join the same series as everything else (`dyno ingest criterion`).
//!
//! Criterion 0.8 writes, for every benchmark, a directory `<DIR>/<group>/<bench...>/new/`
//! holding `benchmark.json` (the id: `group_id`, `function_id`, `value_str`, `throughput`,
//! `full_id`), `estimates.json` (`mean`, `median`, ... each a `point_estimate` in ns with a
//! `confidence_interval`) and `sample.json` (`iters` and total `times` per sample). Each
//! benchmark becomes the scenario `criterion/<full_id>` with the measures `time_mean` and
//! `time_median` (ns, family `kernel`, lower is better, bounds = criterion's confidence
//! interval, raw samples = per-iteration times) and, when criterion recorded a throughput,
//! `throughput_elements` / `throughput_bytes` / `throughput_bits` per second (from the mean,
//! higher is better). Baselines saved under other names, `change/` and `report/` directories
//! are ignored: only `new/` is read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::Digest;

use crate::store::{MetricValue, Scenario, ScenarioResult};

/// The family criterion measures are stored under (detection's `Family::Kernel`).
pub const FAMILY: &str = "kernel";

/// The workload name of every criterion scenario.
pub const WORKLOAD: &str = "criterion";

/// Why a criterion directory could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CriterionError {
    /// The directory does not exist or cannot be listed.
    #[error("cannot read criterion directory {path}: {error}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The I/O error (in the message, not a separate source, so it prints once).
        error: std::io::Error,
    },
    /// A file cannot be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
    /// A file is not what criterion writes.
    #[error("malformed criterion file {path}: {reason}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the field.
        reason: String,
    },
    /// Two benchmark directories claim the same `full_id`.
    #[error("benchmark {full_id:?} appears twice: in {first} and {second}")]
    Duplicate {
        /// The benchmark id.
        full_id: String,
        /// Its first `benchmark.json`.
        first: PathBuf,
        /// The second.
        second: PathBuf,
    },
    /// No benchmark was found.
    #[error(
        "no criterion benchmarks under {path} (expected <group>/<bench>/new/estimates.json; run `cargo bench` first)"
    )]
    Empty {
        /// The directory searched.
        path: PathBuf,
    },
}

/// `Result` with a [`CriterionError`].
pub type Result<T, E = CriterionError> = std::result::Result<T, E>;

/// `benchmark.json`: criterion's `BenchmarkId`.
#[derive(Debug, Deserialize)]
struct BenchmarkId {
    group_id: String,
    #[serde(default)]
    function_id: Option<String>,
    #[serde(default)]
    value_str: Option<String>,
    #[serde(default)]
    throughput: Option<Throughput>,
    full_id: String,
}

/// Criterion's `Throughput`, as serde writes it (`{"Elements": 4096}`).
#[derive(Debug, Clone, Copy, Deserialize)]
enum Throughput {
    Bits(u64),
    Bytes(u64),
    BytesDecimal(u64),
    Elements(u64),
    ElementsAndBytes { elements: u64, bytes: u64 },
}

impl Throughput {
    /// (measure name, unit, amount per iteration) of each rate this throughput gives.
    fn rates(self) -> Vec<(&'static str, &'static str, u64)> {
        match self {
            Throughput::Bits(n) => vec![("throughput_bits", "bit/s", n)],
            Throughput::Bytes(n) | Throughput::BytesDecimal(n) => {
                vec![("throughput_bytes", "B/s", n)]
            }
            Throughput::Elements(n) => vec![("throughput_elements", "elem/s", n)],
            Throughput::ElementsAndBytes { elements, bytes } => vec![
                ("throughput_elements", "elem/s", elements),
                ("throughput_bytes", "B/s", bytes),
            ],
        }
    }
}

#[derive(Debug, Deserialize)]
struct ConfidenceInterval {
    lower_bound: f64,
    upper_bound: f64,
}

#[derive(Debug, Deserialize)]
struct Estimate {
    confidence_interval: ConfidenceInterval,
    point_estimate: f64,
}

/// `estimates.json` (only the fields used; `slope`, `std_dev`, ... may be there too).
#[derive(Debug, Deserialize)]
struct Estimates {
    mean: Estimate,
    median: Estimate,
}

/// `sample.json`: total time of each sample and its iteration count.
#[derive(Debug, Deserialize)]
struct SavedSample {
    iters: Vec<f64>,
    times: Vec<f64>,
}

fn malformed(path: &Path, reason: impl Into<String>) -> CriterionError {
    CriterionError::Malformed { path: path.to_path_buf(), reason: reason.into() }
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| CriterionError::Read { path: path.to_path_buf(), error })?;
    serde_json::from_str(&text).map_err(|e| malformed(path, e.to_string()))
}

/// Every `new/` directory under `dir` holding `benchmark.json` or `estimates.json`, sorted.
/// Symbolic links are not followed (no loops).
fn benchmark_dirs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries =
        std::fs::read_dir(dir).map_err(|error| CriterionError::Dir { path: dir.into(), error })?;
    let mut subdirs = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| CriterionError::Dir { path: dir.into(), error })?;
        let file_type =
            entry.file_type().map_err(|error| CriterionError::Dir { path: dir.into(), error })?;
        if file_type.is_dir() {
            subdirs.push(entry.path());
        }
    }
    subdirs.sort();
    for sub in subdirs {
        let is_new = sub.file_name().is_some_and(|n| n == "new");
        if is_new && (sub.join("benchmark.json").exists() || sub.join("estimates.json").exists()) {
            out.push(sub);
        } else {
            benchmark_dirs(&sub, out)?;
        }
    }
    Ok(())
}

fn check_estimate(path: &Path, field: &str, e: &Estimate) -> Result<()> {
    let ci = &e.confidence_interval;
    if !(e.point_estimate.is_finite() && e.point_estimate > 0.0) {
        return Err(malformed(
            path,
            format!(
                "{field}.point_estimate is {}, expected a positive time in ns",
                e.point_estimate
            ),
        ));
    }
    for (name, x) in [("lower_bound", ci.lower_bound), ("upper_bound", ci.upper_bound)] {
        if !x.is_finite() {
            return Err(malformed(
                path,
                format!("{field}.confidence_interval.{name} is {x}, expected a finite number"),
            ));
        }
    }
    if ci.lower_bound > ci.upper_bound {
        return Err(malformed(
            path,
            format!(
                "{field}.confidence_interval: lower_bound {} exceeds upper_bound {}",
                ci.lower_bound, ci.upper_bound
            ),
        ));
    }
    Ok(())
}

/// Per-iteration times (ns) from `sample.json`: `times[i] / iters[i]`.
fn per_iteration_times(path: &Path, s: &SavedSample) -> Result<Vec<f64>> {
    if s.iters.len() != s.times.len() {
        return Err(malformed(
            path,
            format!("iters has {} entries but times has {}", s.iters.len(), s.times.len()),
        ));
    }
    s.iters
        .iter()
        .zip(&s.times)
        .enumerate()
        .map(|(i, (&iters, &time))| {
            if !(iters.is_finite() && iters > 0.0) {
                return Err(malformed(path, format!("iters[{i}] is {iters}, expected > 0")));
            }
            if !(time.is_finite() && time >= 0.0) {
                return Err(malformed(path, format!("times[{i}] is {time}, expected ≥ 0")));
            }
            Ok(time / iters)
        })
        .collect()
}

/// SHA-256 (hex, first 16 characters) of a text, the scenario's config hash (the same
/// shortening as dyno-harness' `config_hash`).
fn short_hash(text: &str) -> String {
    let digest = sha2::Sha256::digest(text.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn time_measure(name: &str, e: &Estimate, samples: &[f64]) -> MetricValue {
    MetricValue {
        measure: name.to_string(),
        unit: "ns".to_string(),
        family: FAMILY.to_string(),
        lower_is_better: true,
        value: e.point_estimate,
        lower: Some(e.confidence_interval.lower_bound),
        upper: Some(e.confidence_interval.upper_bound),
        n: i64::try_from(samples.len()).unwrap_or(i64::MAX).max(1),
        samples: samples.to_vec(),
    }
}

/// Rate per second of `amount` per iteration taking `ns`; `None` when `ns` is not positive.
fn per_second(amount: u64, ns: f64) -> Option<f64> {
    (ns > 0.0).then(|| amount as f64 * 1e9 / ns)
}

/// One benchmark's `new/` directory as a scenario result.
fn read_benchmark(new_dir: &Path) -> Result<(BenchmarkId, ScenarioResult)> {
    let id_path = new_dir.join("benchmark.json");
    let est_path = new_dir.join("estimates.json");
    let sample_path = new_dir.join("sample.json");
    if !id_path.exists() {
        return Err(malformed(
            &est_path,
            format!("no benchmark.json beside it in {}", new_dir.display()),
        ));
    }
    if !est_path.exists() {
        return Err(malformed(
            &id_path,
            format!("no estimates.json beside it in {}", new_dir.display()),
        ));
    }
    let id: BenchmarkId = read_json(&id_path)?;
    if id.full_id.trim().is_empty() {
        return Err(malformed(&id_path, "full_id is empty"));
    }
    if id.group_id.trim().is_empty() {
        return Err(malformed(&id_path, "group_id is empty"));
    }
    let estimates: Estimates = read_json(&est_path)?;
    check_estimate(&est_path, "mean", &estimates.mean)?;
    check_estimate(&est_path, "median", &estimates.median)?;
    let samples = if sample_path.exists() {
        let saved: SavedSample = read_json(&sample_path)?;
        per_iteration_times(&sample_path, &saved)?
    } else {
        Vec::new()
    };

    let mut values = vec![
        time_measure("time_mean", &estimates.mean, &samples),
        time_measure("time_median", &estimates.median, &samples),
    ];
    if let Some(throughput) = id.throughput {
        let mean = &estimates.mean;
        for (name, unit, amount) in throughput.rates() {
            let Some(value) = per_second(amount, mean.point_estimate) else { continue };
            let ci = &mean.confidence_interval;
            values.push(MetricValue {
                measure: name.to_string(),
                unit: unit.to_string(),
                family: FAMILY.to_string(),
                lower_is_better: false,
                value,
                // The slowest time in the interval gives the lowest rate.
                lower: per_second(amount, ci.upper_bound),
                upper: per_second(amount, ci.lower_bound),
                n: i64::try_from(samples.len()).unwrap_or(i64::MAX).max(1),
                samples: samples.iter().filter_map(|&ns| per_second(amount, ns)).collect(),
            });
        }
    }
    let mut config = format!("criterion: {}\ngroup: {}\n", id.full_id, id.group_id);
    if let Some(f) = &id.function_id {
        config.push_str(&format!("function: {f}\n"));
    }
    if let Some(v) = &id.value_str {
        config.push_str(&format!("value: {v}\n"));
    }
    let scenario = Scenario {
        name: format!("criterion/{}", id.full_id),
        model: String::new(),
        workload: WORKLOAD.to_string(),
        config_hash: short_hash(&config),
        config,
    };
    Ok((id, ScenarioResult { scenario, values, histograms: Vec::new() }))
}

/// Where criterion saves its results, as criterion 0.8 decides it: `$CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else `target/criterion` (criterion also asks `cargo
/// metadata` for a target directory configured elsewhere; pass that one explicitly).
pub fn default_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(home) = var("CRITERION_HOME") {
        PathBuf::from(home)
    } else if let Some(target) = var("CARGO_TARGET_DIR") {
        PathBuf::from(target).join("criterion")
    } else {
        PathBuf::from("target/criterion")
    }
}

/// Reads every benchmark criterion saved under `dir` (usually `target/criterion`), sorted by
/// scenario name. Any malformed file fails the whole read, naming the file and the field, so
/// that nothing is recorded from a half-readable directory; no benchmark at all is an error.
pub fn read_dir(dir: &Path) -> Result<Vec<ScenarioResult>> {
    let mut dirs = Vec::new();
    benchmark_dirs(dir, &mut dirs)?;
    let mut seen: BTreeMap<String, (PathBuf, ScenarioResult)> = BTreeMap::new();
    for new_dir in dirs {
        let (id, result) = read_benchmark(&new_dir)?;
        let path = new_dir.join("benchmark.json");
        if let Some((first, _)) = seen.get(&id.full_id) {
            return Err(CriterionError::Duplicate {
                full_id: id.full_id,
                first: first.clone(),
                second: path,
            });
        }
        seen.insert(id.full_id, (path, result));
    }
    if seen.is_empty() {
        return Err(CriterionError::Empty { path: dir.to_path_buf() });
    }
    Ok(seen.into_values().map(|(_, r)| r).collect())
}

/// The idempotency key of ingesting `results` measured at commit `sha`:
/// `criterion:<sha>:<hash>`, where the hash (SHA-256, 16 hex characters) covers every
/// scenario, value, bound and sample. Ingesting the same estimates at the same commit twice
/// gives the same key, so the second records nothing; a new `cargo bench` gives a new one.
pub fn idempotency_key(sha: &str, results: &[ScenarioResult]) -> String {
    let mut hasher = sha2::Sha256::new();
    for r in results {
        hasher.update(r.scenario.name.as_bytes());
        hasher.update([0]);
        hasher.update(r.scenario.config_hash.as_bytes());
        hasher.update([0]);
        for v in &r.values {
            hasher.update(v.measure.as_bytes());
            hasher.update([0]);
            for x in [Some(v.value), v.lower, v.upper].into_iter().flatten() {
                hasher.update(x.to_le_bytes());
            }
            for x in &v.samples {
                hasher.update(x.to_le_bytes());
            }
        }
    }
    let digest = hasher.finalize();
    let hash: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("criterion:{sha}:{hash}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ESTIMATES: &str = r#"{"mean":{"confidence_interval":{"confidence_level":0.95,"lower_bound":95.0,"upper_bound":105.0},"point_estimate":100.0,"standard_error":2.5},"median":{"confidence_interval":{"confidence_level":0.95,"lower_bound":97.0,"upper_bound":101.0},"point_estimate":99.0,"standard_error":1.0},"median_abs_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":1.0,"upper_bound":3.0},"point_estimate":2.0,"standard_error":0.5},"slope":{"confidence_interval":{"confidence_level":0.95,"lower_bound":96.0,"upper_bound":104.0},"point_estimate":100.5,"standard_error":2.0},"std_dev":{"confidence_interval":{"confidence_level":0.95,"lower_bound":3.0,"upper_bound":6.0},"point_estimate":4.0,"standard_error":0.7}}"#;

    fn write_bench(
        root: &Path,
        dir: &str,
        benchmark: &str,
        estimates: &str,
        sample: Option<&str>,
    ) -> PathBuf {
        let new_dir = root.join(dir).join("new");
        std::fs::create_dir_all(&new_dir).expect("mkdir");
        std::fs::write(new_dir.join("benchmark.json"), benchmark).expect("write");
        std::fs::write(new_dir.join("estimates.json"), estimates).expect("write");
        if let Some(s) = sample {
            std::fs::write(new_dir.join("sample.json"), s).expect("write");
        }
        new_dir
    }

    fn id_json(group: &str, function: &str, throughput: &str) -> String {
        format!(
            r#"{{"group_id":"{group}","function_id":"{function}","value_str":null,"throughput":{throughput},"full_id":"{group}/{function}","directory_name":"{group}/{function}","title":"{group}/{function}"}}"#
        )
    }

    #[test]
    fn reads_estimates_samples_and_throughput() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_bench(
            dir.path(),
            "ops/rms_norm_4096",
            &id_json("ops", "rms_norm/4096", r#"{"Elements":4096}"#),
            ESTIMATES,
            Some(r#"{"sampling_mode":"Linear","iters":[10.0,20.0],"times":[1000.0,1800.0]}"#),
        );
        write_bench(dir.path(), "gemm/a", &id_json("gemm", "a", "null"), ESTIMATES, None);
        // A baseline saved under another name, change/ and report/ are ignored.
        for other in ["gemm/a/base", "gemm/a/change", "gemm/a/report"] {
            let d = dir.path().join(other);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("estimates.json"), "not even json").expect("write");
            std::fs::write(d.join("benchmark.json"), "not even json").expect("write");
        }
        std::fs::create_dir_all(dir.path().join("report")).expect("mkdir");

        let results = read_dir(dir.path()).expect("read");
        let names: Vec<&str> = results.iter().map(|r| r.scenario.name.as_str()).collect();
        assert_eq!(names, ["criterion/gemm/a", "criterion/ops/rms_norm/4096"]);

        let gemm = &results[0];
        assert_eq!(gemm.values.len(), 2);
        assert!(gemm.values.iter().all(|v| v.samples.is_empty() && v.n == 1));

        let ops = &results[1];
        assert_eq!(ops.scenario.workload, WORKLOAD);
        let mean = &ops.values[0];
        assert_eq!(
            (mean.measure.as_str(), mean.unit.as_str(), mean.family.as_str()),
            ("time_mean", "ns", "kernel")
        );
        assert!(mean.lower_is_better);
        assert_eq!((mean.value, mean.lower, mean.upper), (100.0, Some(95.0), Some(105.0)));
        assert_eq!(mean.samples, [100.0, 90.0]);
        assert_eq!(mean.n, 2);
        let median = &ops.values[1];
        assert_eq!((median.measure.as_str(), median.value), ("time_median", 99.0));
        assert_eq!((median.lower, median.upper), (Some(97.0), Some(101.0)));
        let tp = &ops.values[2];
        assert_eq!((tp.measure.as_str(), tp.unit.as_str()), ("throughput_elements", "elem/s"));
        assert!(!tp.lower_is_better);
        assert!((tp.value - 4096.0 * 1e9 / 100.0).abs() < 1e-3);
        let (lo, hi) = (tp.lower.expect("lower"), tp.upper.expect("upper"));
        assert!(
            (lo - 4096.0 * 1e9 / 105.0).abs() < 1e-3 && (hi - 4096.0 * 1e9 / 95.0).abs() < 1e-3
        );
        assert_eq!(tp.samples.len(), 2);
    }

    #[test]
    fn elements_and_bytes_give_two_rates() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_bench(
            dir.path(),
            "g/f",
            &id_json("g", "f", r#"{"ElementsAndBytes":{"elements":10,"bytes":40}}"#),
            ESTIMATES,
            None,
        );
        let results = read_dir(dir.path()).expect("read");
        let measures: Vec<&str> = results[0].values.iter().map(|v| v.measure.as_str()).collect();
        assert_eq!(
            measures,
            ["time_mean", "time_median", "throughput_elements", "throughput_bytes"]
        );
    }

    #[test]
    fn malformed_files_name_the_file_and_field() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = ESTIMATES.replace(r#""point_estimate":100.0"#, r#""point_estimate":"fast""#);
        write_bench(dir.path(), "g/f", &id_json("g", "f", "null"), &bad, None);
        let err = read_dir(dir.path()).expect_err("malformed").to_string();
        assert!(err.contains("estimates.json") && err.contains("invalid type"), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        let no_mean = r#"{"median":{"confidence_interval":{"lower_bound":1.0,"upper_bound":2.0},"point_estimate":1.5}}"#;
        write_bench(dir.path(), "g/f", &id_json("g", "f", "null"), no_mean, None);
        let err = read_dir(dir.path()).expect_err("missing mean").to_string();
        assert!(err.contains("estimates.json") && err.contains("mean"), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        let negative = ESTIMATES.replace(r#""point_estimate":99.0"#, r#""point_estimate":-1.0"#);
        write_bench(dir.path(), "g/f", &id_json("g", "f", "null"), &negative, None);
        let err = read_dir(dir.path()).expect_err("negative").to_string();
        assert!(err.contains("median.point_estimate is -1"), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        let sample = r#"{"sampling_mode":"Flat","iters":[1.0,2.0],"times":[5.0]}"#;
        write_bench(dir.path(), "g/f", &id_json("g", "f", "null"), ESTIMATES, Some(sample));
        let err = read_dir(dir.path()).expect_err("lengths").to_string();
        assert!(err.contains("sample.json") && err.contains("iters has 2"), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        let sample = r#"{"sampling_mode":"Flat","iters":[0.0],"times":[5.0]}"#;
        write_bench(dir.path(), "g/f", &id_json("g", "f", "null"), ESTIMATES, Some(sample));
        let err = read_dir(dir.path()).expect_err("zero iters").to_string();
        assert!(err.contains("iters[0] is 0"), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        write_bench(dir.path(), "g/f", r#"{"group_id":"g"}"#, ESTIMATES, None);
        let err = read_dir(dir.path()).expect_err("no full_id").to_string();
        assert!(err.contains("benchmark.json") && err.contains("full_id"), "{err}");

        let dir = tempfile::tempdir().expect("tempdir");
        let new_dir = write_bench(dir.path(), "g/f", &id_json("g", "f", "null"), ESTIMATES, None);
        std::fs::remove_file(new_dir.join("estimates.json")).expect("rm");
        let err = read_dir(dir.path()).expect_err("no estimates").to_string();
        assert!(err.contains("no estimates.json"), "{err}");
    }

    #[test]
    fn empty_or_missing_directories_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_dir(dir.path()).expect_err("empty").to_string();
        assert!(err.contains("no criterion benchmarks"), "{err}");
        let missing = dir.path().join("nope");
        let err = read_dir(&missing).expect_err("missing").to_string();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn idempotency_key_follows_commit_and_estimates() {
        let dir = tempfile::tempdir().expect("tempdir");
        write_bench(dir.path(), "g/f", &id_json("g", "f", "null"), ESTIMATES, None);
        let a = read_dir(dir.path()).expect("read");
        let b = read_dir(dir.path()).expect("read again");
        assert_eq!(idempotency_key("abc", &a), idempotency_key("abc", &b));
        assert_ne!(idempotency_key("abc", &a), idempotency_key("abd", &a));
        write_bench(
            dir.path(),
            "g/f",
            &id_json("g", "f", "null"),
            &ESTIMATES.replace("100.0", "101.0"),
            None,
        );
        let c = read_dir(dir.path()).expect("read changed");
        assert_ne!(idempotency_key("abc", &a), idempotency_key("abc", &c));
        assert!(idempotency_key("abc", &a).starts_with("criterion:abc:"));
    }
}
