//! `dyno kernels bench` and `dyno kernels tune`: argument definitions, wiring and printing.
//! The measuring, searching and caching live in `dyno_kernels::{machine, tune, bench}`.

use crate::record_args::{RecordArgs, block_on};
use anyhow::{Context, Result};
use clap::{ArgGroup, Args, Subcommand};
use dyno_harness::recording::kernel_scenario_results;
use dyno_kernels::bench::{BenchOptions, run_bench};
use dyno_kernels::machine::MachineId;
use dyno_kernels::tune::timing::TimingOptions;
use dyno_kernels::tune::{
    AttentionShape, AttentionTuneOptions, GemmShape, GemmTuneOptions, KernelCache, OurAttention,
    OurGemm, Tally, default_cache_path, tune_attention, tune_gemm,
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
    /// Search GEMM or attention parameters for one shape and cache the measurements.
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
    /// Where the results are recorded.
    #[command(flatten)]
    pub record: RecordArgs,
}

/// Arguments of `dyno kernels tune`: exactly one of `--shape` and `--attention`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["shape", "attention"])))]
pub struct KernelsTuneArgs {
    /// GEMM shape m,n,k to tune.
    #[arg(long, value_name = "M,N,K")]
    pub shape: Option<GemmShape>,
    /// Attention shape to tune (br × bc tiles): `prefill,q=TOKENS,ctx=TOKENS,g=G,d=HEAD_DIM` or
    /// `decode,seqs=N,ctx=TOKENS,g=G,d=HEAD_DIM`, optional `bs=BLOCK_SIZE` [16] and `seqs=N`.
    #[arg(long, value_name = "SHAPE")]
    pub attention: Option<AttentionShape>,
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
    let recorder = block_on(a.record.prepare())??;
    let report = run_bench(&opts, Some(&cache))?;
    print!("{}", report.table());
    if let Some(recorder) = &recorder {
        let scenarios = kernel_scenario_results(&report);
        block_on(recorder.record("kernels", "manual", None, &scenarios))??;
    }
    if let Some(path) = a.json {
        let json = serde_json::to_string_pretty(&report).context("serializing the bench report")?;
        write_file(&path, &json, "the bench report")?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// What one tune run found, in the terms printed for every kernel.
struct TuneSummary {
    header: String,
    tally: Tally,
    considered: usize,
    unit: &'static str,
    default_metric: Option<f64>,
    best_metric: f64,
    speedup: Option<f64>,
    best_yaml: String,
}

fn print_summary(s: &TuneSummary, out: Option<PathBuf>) -> Result<()> {
    let Tally { measured, cached, rejected } = s.tally;
    println!("{}", s.header);
    if measured == 0 {
        println!("reused {cached} cached results for this shape ({measured} measured)");
    } else {
        println!(
            "candidates: {} ({cached} cached, {measured} measured, {rejected} rejected by the correctness gate)",
            s.considered
        );
    }
    let (unit, best) = (s.unit, s.best_metric);
    match (s.default_metric, s.speedup) {
        (Some(d), Some(x)) => {
            println!("defaults: {d:.2} {unit}   best: {best:.2} {unit}   speedup {x:.2}x");
        }
        _ => println!("defaults were rejected by the correctness gate; best: {best:.2} {unit}"),
    }
    println!("best params:\n{}", s.best_yaml);
    if let Some(path) = out {
        write_file(&path, &s.best_yaml, "the best params")?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

fn run_tune_cmd(a: KernelsTuneArgs) -> Result<()> {
    let mut cache = load_cache(a.cache)?;
    let machine = MachineId::detect().key();
    let threads = a.threads.unwrap_or_else(dyno_kernels::threads::available);
    let timing = TimingOptions { budget: Duration::from_millis(a.budget_ms), ..Default::default() };
    let (budget, seed) = (a.budget, a.seed);
    let summary = match (a.shape, a.attention) {
        (Some(shape), None) => {
            let opts = GemmTuneOptions { budget, seed, threads, timing, ..Default::default() };
            let r = tune_gemm(shape, &opts, &OurGemm, &mut cache, &machine)?;
            TuneSummary {
                header: format!("gemm_f32 {}  machine {}", r.shape, r.machine),
                tally: Tally { measured: r.measured, cached: r.cached, rejected: r.rejected },
                considered: r.candidates.len(),
                unit: "GFLOP/s",
                default_metric: r.default_gflops,
                best_metric: r.best_gflops,
                speedup: r.speedup,
                best_yaml: serde_yaml::to_string(&r.best).context("serializing the best params")?,
            }
        }
        (None, Some(shape)) => {
            let opts = AttentionTuneOptions { budget, seed, threads, timing, ..Default::default() };
            let r = tune_attention(&shape, &opts, &OurAttention, &mut cache, &machine)?;
            TuneSummary {
                header: format!(
                    "{} {}  machine {}  best median {:.3} ms",
                    shape.kernel_name(),
                    r.shape,
                    r.machine,
                    r.best_median_s * 1e3
                ),
                tally: r.tally,
                considered: r.candidates.len(),
                unit: shape.metric_unit(),
                default_metric: r.default_metric,
                best_metric: r.best_metric,
                speedup: r.speedup,
                best_yaml: serde_yaml::to_string(&r.best).context("serializing the best params")?,
            }
        }
        // The `target` ArgGroup requires exactly one of the two.
        _ => anyhow::bail!("give exactly one of --shape and --attention"),
    };
    let header = format!("{}  threads {threads}  cache {}", summary.header, cache.path().display());
    print_summary(&TuneSummary { header, ..summary }, a.out)
}
