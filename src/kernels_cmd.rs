//! `dyno kernels bench` and `dyno kernels tune`: argument definitions, wiring and printing.
//! The measuring, searching and caching live in `dyno_kernels::{machine, tune, bench}`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use dyno_kernels::bench::{BenchOptions, run_bench};
use dyno_kernels::machine::MachineId;
use dyno_kernels::tune::timing::TimingOptions;
use dyno_kernels::tune::{
    GemmShape, GemmTuneOptions, KernelCache, OurGemm, default_cache_path, tune_gemm,
};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `dyno kernels`.
#[derive(Debug, Args)]
pub struct KernelsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: KernelsCommand,
}

/// `dyno kernels` subcommands.
#[derive(Debug, Subcommand)]
pub enum KernelsCommand {
    /// Measure this machine's limits and our GEMM against baselines.
    Bench(KernelsBenchArgs),
    /// Search GEMM parameters for one shape and cache the measurements.
    Tune(KernelsTuneArgs),
}

/// A positive integer (for thread counts, budgets, sizes).
fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err(format!("`{s}` must be at least 1")),
        Ok(v) => Ok(v),
        Err(_) => Err(format!("`{s}` is not a positive integer")),
    }
}

/// A GEMV weight shape `n,k`: k must be a multiple of 128 (every quantization group).
fn gemv_shape(s: &str) -> Result<(usize, usize), String> {
    let parts: Vec<&str> = s.split(',').collect();
    let [n, k] = parts.as_slice() else {
        return Err(format!("`{s}` is not n,k (two positive integers, e.g. 8192,8192)"));
    };
    let (n, k) = (positive(n)?, positive(k)?);
    if !k.is_multiple_of(128) {
        return Err(format!("k = {k} must be a multiple of 128 (the largest int4 group)"));
    }
    Ok((n, k))
}

/// Arguments of `dyno kernels bench`.
#[derive(Debug, Args)]
pub struct KernelsBenchArgs {
    /// GEMM shape m,n,k (repeatable) [default: 1024,1024,1024 and 8,4096,4096].
    #[arg(long = "shape", value_name = "M,N,K")]
    pub shapes: Vec<GemmShape>,
    /// Quantized and bf16 GEMV weight shape n,k (repeatable) [default: 8192,8192].
    #[arg(long = "gemv", value_name = "N,K", value_parser = gemv_shape)]
    pub gemv_shapes: Vec<(usize, usize)>,
    /// Threads for our GEMM and the `gemm` crate [default: all available].
    #[arg(long, value_parser = positive)]
    pub threads: Option<usize>,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Kernel cache to read tuned params from [default: $DYNO_KERNEL_CACHE or
    /// ~/.cache/dyno/kernels.jsonl].
    #[arg(long, value_name = "FILE")]
    pub cache: Option<PathBuf>,
    /// Time budget per variant, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 300)]
    pub budget_ms: u64,
    /// Time budget per machine-limit measurement, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 500)]
    pub limit_ms: u64,
    /// Buffer size of the memory-bandwidth measurement, in MiB (keep it well past L3).
    #[arg(long, value_name = "MIB", default_value_t = 256, value_parser = positive)]
    pub mem_mib: usize,
    /// Repeat every measurement this many times, round-robin, and keep each one's best round
    /// (shields comparisons from noisy neighbours on shared machines).
    #[arg(long, default_value_t = 3, value_parser = positive)]
    pub rounds: usize,
}

/// Arguments of `dyno kernels tune`.
#[derive(Debug, Args)]
pub struct KernelsTuneArgs {
    /// GEMM shape m,n,k to tune.
    #[arg(long, value_name = "M,N,K")]
    pub shape: GemmShape,
    /// Candidates to consider at most (the defaults and cached ones included).
    #[arg(long, value_name = "N", default_value_t = 24, value_parser = positive)]
    pub budget: usize,
    /// Write the best params as YAML to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Kernel cache to reuse and append to [default: $DYNO_KERNEL_CACHE or
    /// ~/.cache/dyno/kernels.jsonl].
    #[arg(long, value_name = "FILE")]
    pub cache: Option<PathBuf>,
    /// Seed of the search.
    #[arg(long, value_name = "S", default_value_t = 0)]
    pub seed: u64,
    /// Threads every candidate runs with [default: all available].
    #[arg(long, value_parser = positive)]
    pub threads: Option<usize>,
    /// Time budget per measured candidate, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 300)]
    pub budget_ms: u64,
}

/// Runs `dyno kernels ...`.
pub fn run(args: KernelsArgs) -> Result<()> {
    match args.command {
        KernelsCommand::Bench(a) => run_bench_cmd(a),
        KernelsCommand::Tune(a) => run_tune_cmd(a),
    }
}

fn load_cache(path: Option<PathBuf>) -> Result<KernelCache> {
    let path = path.unwrap_or_else(default_cache_path);
    KernelCache::load(&path).with_context(|| format!("loading the kernel cache {}", path.display()))
}

fn write_file(path: &Path, text: &str, what: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {what} to {}", path.display()))
}

fn run_bench_cmd(a: KernelsBenchArgs) -> Result<()> {
    let cache = load_cache(a.cache)?;
    let opts = BenchOptions {
        shapes: if a.shapes.is_empty() { BenchOptions::default_shapes() } else { a.shapes },
        threads: a.threads.unwrap_or_else(dyno_kernels::threads::available),
        timing: TimingOptions { budget: Duration::from_millis(a.budget_ms), ..Default::default() },
        limit_budget: Duration::from_millis(a.limit_ms),
        bandwidth_bytes: a.mem_mib << 20,
        seed: 0,
        gemv_shapes: if a.gemv_shapes.is_empty() { vec![(8192, 8192)] } else { a.gemv_shapes },
        rounds: a.rounds,
    };
    let report = run_bench(&opts, Some(&cache))?;
    print!("{}", report.table());
    if let Some(path) = a.json {
        let json = serde_json::to_string_pretty(&report).context("serializing the bench report")?;
        write_file(&path, &json, "the bench report")?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn run_tune_cmd(a: KernelsTuneArgs) -> Result<()> {
    let mut cache = load_cache(a.cache)?;
    let machine = MachineId::detect().key();
    let opts = GemmTuneOptions {
        budget: a.budget,
        seed: a.seed,
        threads: a.threads.unwrap_or_else(dyno_kernels::threads::available),
        timing: TimingOptions { budget: Duration::from_millis(a.budget_ms), ..Default::default() },
        ..Default::default()
    };
    let r = tune_gemm(a.shape, &opts, &OurGemm, &mut cache, &machine)?;
    let considered = r.candidates.len();
    println!(
        "gemm_f32 {}  machine {}  threads {}  cache {}",
        r.shape,
        r.machine,
        opts.threads,
        cache.path().display()
    );
    if r.measured == 0 {
        println!("reused {} cached results for this shape ({} measured)", r.cached, r.measured);
    } else {
        println!(
            "candidates: {considered} ({} cached, {} measured, {} rejected by the correctness gate)",
            r.cached, r.measured, r.rejected
        );
    }
    match (r.default_gflops, r.speedup) {
        (Some(d), Some(s)) => {
            println!(
                "defaults: {d:.2} GFLOP/s   best: {:.2} GFLOP/s   speedup {s:.2}x",
                r.best_gflops
            );
        }
        _ => println!(
            "defaults were rejected by the correctness gate; best: {:.2} GFLOP/s",
            r.best_gflops
        ),
    }
    let yaml = serde_yaml::to_string(&r.best).context("serializing the best params")?;
    println!("best params:\n{yaml}");
    if let Some(path) = a.out {
        write_file(&path, &yaml, "the best params")?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
