//! Where a measurement came from: the git commit and branch of the code measured, the machine
//! it ran on (the testbed, hashed to key series) and the environment (OS, versions, driver),
//! stored with every run so results stay comparable across commits and machines.
//!
//! The testbed spec holds only what changes performance and stays put from night to night (CPU
//! model, widest usable ISA, cores, memory size, GPU model): a series is keyed by its hash. The
//! environment holds the rest (flags, kernel version, dyno version, GPU driver), for reading.

use std::path::Path;
use std::process::Command;

use dyno_kernels::machine::MachineId;
use dyno_results::store::{CommitInfo, RunInfo, Testbed};
use serde_json::json;

/// The commit and branch of a measurement, as given or as read from a git working tree.
#[derive(Debug, Clone, PartialEq)]
pub struct GitInfo {
    /// The commit (hash, time, position in history).
    pub commit: CommitInfo,
    /// The branch name.
    pub branch: String,
}

/// What the user said about the commit and branch (`--commit`, `--branch`); unset fields are
/// read from the working tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GitOverrides {
    /// A commit hash (or anything `git rev-parse` resolves in the tree).
    pub commit: Option<String>,
    /// A branch name.
    pub branch: Option<String>,
}

/// Why the commit or branch could not be found.
#[derive(Debug, thiserror::Error)]
pub enum ProvenanceError {
    /// Not in a git working tree (or git is missing) and no `--commit` was given.
    #[error(
        "cannot tell which commit is measured: {reason}; run inside a git working tree, pass --commit SHA (and --branch NAME), or --no-db to record nothing"
    )]
    NoCommit {
        /// What git said.
        reason: String,
    },
}

fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .map_err(|e| format!("running git: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        let err = String::from_utf8_lossy(&out.stderr);
        Err(format!("git {}: {}", args.join(" "), err.trim()))
    }
}

impl GitInfo {
    /// The commit and branch measured: the overrides where given, else the working tree at
    /// `dir` (HEAD, its commit time, its position `git rev-list --count`, the current branch or
    /// `detached`). A `--commit` that git cannot resolve here (a hash from another clone) is
    /// kept as given, without time or position (the store places a new commit last).
    pub fn detect(dir: &Path, overrides: &GitOverrides) -> Result<GitInfo, ProvenanceError> {
        let rev = overrides.commit.as_deref().unwrap_or("HEAD");
        let resolved =
            git(dir, &["rev-parse", "--verify", "--quiet", &format!("{rev}^{{commit}}")]);
        let commit = match (resolved, &overrides.commit) {
            (Ok(sha), _) => CommitInfo {
                timestamp: git(dir, &["log", "-1", "--format=%ct", &sha])
                    .ok()
                    .and_then(|t| t.parse().ok()),
                ordinal: git(dir, &["rev-list", "--count", &sha]).ok().and_then(|n| n.parse().ok()),
                sha,
            },
            (Err(_), Some(given)) => {
                CommitInfo { sha: given.clone(), timestamp: None, ordinal: None }
            }
            (Err(reason), None) => return Err(ProvenanceError::NoCommit { reason }),
        };
        let branch = match &overrides.branch {
            Some(b) => b.clone(),
            None => match git(dir, &["symbolic-ref", "--quiet", "--short", "HEAD"]) {
                Ok(b) if !b.is_empty() => b,
                _ => std::env::var("GITHUB_REF_NAME").unwrap_or_else(|_| "detached".to_string()),
            },
        };
        Ok(GitInfo { commit, branch })
    }
}

/// This host's name (Linux: `/proc/sys/kernel/hostname`); `None` elsewhere.
pub fn local_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|s| s.trim().to_string())
}

/// Whether process `pid` on host `host` is known to be gone: the host is this one, the pid is
/// not this process, and `/proc/PID` does not exist. What lets a runner or tuner worker reclaim
/// what a killed process left behind.
pub fn is_dead_local_process(host: &str, pid: u64) -> bool {
    local_hostname().is_some_and(|here| here == host)
        && u64::from(std::process::id()) != pid
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Total memory in bytes, from /proc/meminfo (Linux); `None` elsewhere.
pub fn memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `PRETTY_NAME` from /etc/os-release, else the OS family.
fn os_name() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| std::env::consts::OS.to_string())
}

fn kernel_release() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string())
}

/// The GPUs `nvidia-smi` reports, as (name, memory MiB, driver); empty without one.
fn gpus() -> Vec<(String, String, String)> {
    let Ok(out) = Command::new("nvidia-smi")
        .args(["--query-gpu=name,memory.total,driver_version", "--format=csv,noheader,nounits"])
        .output()
    else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(',').map(|p| p.trim().to_string());
            Some((parts.next()?, parts.next()?, parts.next()?))
        })
        .collect()
}

/// The machine this process runs on, as stored with a run.
#[derive(Debug, Clone)]
pub struct Machine {
    /// The series-keying hardware description.
    pub testbed: Testbed,
    /// Everything else worth knowing when reading a result.
    pub environment: serde_json::Value,
}

impl Machine {
    /// Detects this machine: CPU (model, widest usable ISA, flags, cores), memory, OS and
    /// kernel, dyno's version, and GPUs with their driver when `nvidia-smi` finds any.
    pub fn detect() -> Machine {
        let cpu = MachineId::detect();
        let memory = memory_bytes();
        let gpus = gpus();
        let gpu_names: Vec<String> = gpus.iter().map(|(name, _, _)| name.clone()).collect();
        let testbed = Testbed {
            spec: json!({
                "cpu_model": cpu.cpu_model,
                "isa": cpu.isa.to_string(),
                "cores": cpu.cores,
                // Rounded to GiB: the exact figure moves with firmware reservations.
                "memory_gib": memory.map(|b| (b as f64 / f64::from(1u32 << 30)).round() as u64),
                "gpus": gpu_names,
                "arch": std::env::consts::ARCH,
            }),
        };
        let environment = json!({
            "cpu_flags": cpu.flags,
            "memory_bytes": memory,
            "os": os_name(),
            "kernel": kernel_release(),
            "dyno_version": env!("CARGO_PKG_VERSION"),
            "gpus": gpus.iter().map(|(name, mem, driver)| json!({
                "name": name, "memory_mib": mem, "driver": driver,
            })).collect::<Vec<_>>(),
            "pid": std::process::id(),
            "hostname": local_hostname(),
        });
        Machine { testbed, environment }
    }

    /// The run description for results measured here at `git`, started by `trigger`
    /// (`manual`, `nightly`, `ci`, ...), unique by `idempotency_key`.
    pub fn run_info(&self, git: &GitInfo, trigger: &str, idempotency_key: String) -> RunInfo {
        RunInfo {
            commit: git.commit.clone(),
            branch: git.branch.clone(),
            trigger: trigger.to_string(),
            environment: self.environment.clone(),
            idempotency_key,
            testbed: self.testbed.clone(),
        }
    }
}

/// A key unique to one invocation: the kind of run, the commit, and the current time in
/// nanoseconds with the process id (two processes started in the same nanosecond differ).
pub fn fresh_idempotency_key(kind: &str, git: &GitInfo) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{kind}:{}:{nanos}:{}", git.commit.sha, std::process::id())
}
