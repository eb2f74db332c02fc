//! `dyno tune` (and the `tune` binary) and `dyno study`: parse, wire the tuner to the engine,
//! the harness and the store, print.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use dyno_engine::{EngineConfig, ModelConfig};
use dyno_harness::provenance::{GitInfo, GitOverrides, memory_bytes};
use dyno_kernels::tune::{KernelCache, default_cache_path};
use dyno_tuner::constraints::Limits;
use dyno_tuner::emit::{Provenance, best_config_yaml};
use dyno_tuner::evaluate::{Evaluator, LoadLevel, MeasuredEvaluator, SimulatedEvaluator};
use dyno_tuner::hardware::{HardwareProfile, resolve_target};
use dyno_tuner::kernel_stage::{KernelStageOptions, tune_kernels};
use dyno_tuner::objective::Goal;
use dyno_tuner::quality::{QualityCache, default_path};
use dyno_tuner::replay::{ReplayRun, ReplayTable, replay};
use dyno_tuner::space::ConfigSpace;
use dyno_tuner::strategy::StrategyKind;
use dyno_tuner::study::{
    self, Feasibility, Progress, StudyReport, StudySettings, WorkerOptions, this_worker,
};
use dyno_tuner::validate;
use dyno_workloads::{LoadOverrides, Slo, Workload};

use crate::record_args::{DbArgs, block_on};
use crate::simulate_cmd::longest_prompt;

/// Arguments of `dyno tune` (and of the `tune` binary).
#[derive(Debug, Args)]
pub struct TuneArgs {
    /// Hardware target: `cpu` (this machine: measured), or a GPU profile — h100 (h100-sxm),
    /// h200, a100 (a100-80gb), l40s, or a profile YAML file — searched with the simulator.
    #[arg(long, default_value = "cpu")]
    pub hw: String,
    /// GPU targets: devices [default: one node of the profile].
    #[arg(long)]
    pub gpus: Option<usize>,
    /// Model preset or model YAML file.
    #[arg(long, default_value = "mixtral-mini")]
    pub model: String,
    /// Workload preset or YAML file.
    #[arg(long, default_value = "chat")]
    pub workload: String,
    /// SLO bounds replacing the workload's: `ttft_p99_ms=2000,tpot_p99_ms=150[,e2el_p99_ms=..]`.
    #[arg(long, value_name = "BOUNDS")]
    pub slo: Option<String>,
    /// Search strategy: grid, random, lhs, tpe, halving (`--hw cpu`: with --measure-top 0).
    #[arg(long, default_value = "tpe")]
    pub strategy: StrategyKind,
    /// Trials at most (the baseline trial included) [default: 40 measured, 100 simulated];
    /// `--hw cpu` with --measure-top > 0 measures the top points instead.
    #[arg(long)]
    pub budget: Option<usize>,
    /// Stop proposing after this many minutes.
    #[arg(long, value_name = "MIN")]
    pub time_budget_min: Option<f64>,
    /// Stop after this many full-fidelity trials in a row without a 1% improvement (0: never)
    /// [default: half the budget, at least 8].
    #[arg(long)]
    pub patience: Option<usize>,
    /// Seed of the strategy.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// What to maximize: goodput (good requests/s) or throughput (output tokens/s).
    #[arg(long, default_value = "goodput")]
    pub objective: Goal,
    /// Measure every trial at this open-loop rate (req/s) instead of searching, per trial, for
    /// the highest rate that meets the SLOs.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Requests per full-fidelity load test [default: 24 measured, 400 simulated].
    #[arg(long)]
    pub requests: Option<usize>,
    /// Largest mean KL divergence against f32 a weight format may have, nats.
    #[arg(long, default_value_t = 0.05)]
    pub max_kl: f64,
    /// Search-space YAML [default: the built-in space of --hw].
    #[arg(long)]
    pub space: Option<PathBuf>,
    /// Engine config every knob outside the space comes from, and the baseline trial
    /// [default: the engine's defaults].
    #[arg(long)]
    pub base_config: Option<PathBuf>,
    /// Memory the engine may use, GiB [default: 80% of this machine's].
    #[arg(long)]
    pub memory_gib: Option<f64>,
    /// Cores the engine may use [default: all].
    #[arg(long)]
    pub cores: Option<usize>,
    /// After the search, measure the best this-many configs and the default once more; the
    /// best is the highest mean (0: no confirmation round).
    #[arg(long, default_value_t = 3)]
    pub confirm: usize,
    /// `--hw cpu`: simulate the space first with this machine's CPU profile (a study named
    /// `<study>-sim`), then measure only the baseline and this many points of highest
    /// predicted score, storing predicted and measured side by side and reporting the error
    /// (0: no simulation; --strategy searches with measurements alone).
    #[arg(long, default_value_t = 5)]
    pub measure_top: usize,
    /// `--hw cpu` with --measure-top: simulate every feasible point when there are at most
    /// this many, else this many chosen by TPE.
    #[arg(long, default_value_t = 2000)]
    pub sim_budget: usize,
    /// Skip the kernel level (no kernel tiles tuned before the system trials).
    #[arg(long)]
    pub no_kernels: bool,
    /// Study name (a new study; with --resume or --worker, an existing one).
    #[arg(long)]
    pub study: Option<String>,
    /// Continue the study named by --study, rerunning no finished trial.
    #[arg(long, requires = "study")]
    pub resume: bool,
    /// Join the study named by --study as one more worker (several processes sharing one
    /// PostgreSQL database split its trials).
    #[arg(long, requires = "study")]
    pub worker: bool,
    /// Write the best config here instead of stdout.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// A load test is invalid when its p99 schedule lag exceeds this, ms.
    #[arg(long, default_value_t = 10.0)]
    pub max_lag_ms: f64,
    /// The results database.
    #[command(flatten)]
    pub db: DbArgs,
}

/// `dyno study ...`.
#[derive(Debug, Args)]
pub struct StudyArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: StudyCommand,
}

/// Study subcommands.
#[derive(Debug, Subcommand)]
pub enum StudyCommand {
    /// Print a study's trials, Pareto frontier and best config.
    Show {
        /// Study name.
        name: String,
        /// Print the report as JSON instead.
        #[arg(long)]
        json: bool,
        /// The results database.
        #[command(flatten)]
        db: DbArgs,
    },
    /// Replay a study's measured trials as a lookup table and count, per strategy and seed,
    /// the trials each needs to reach a fraction of the table's best (a grid study makes the
    /// table the whole space).
    Replay {
        /// Study name.
        name: String,
        /// Strategies to replay, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "tpe,random,lhs")]
        strategies: Vec<StrategyKind>,
        /// Seeds 0..N per strategy.
        #[arg(long, default_value_t = 10)]
        seeds: u64,
        /// The fraction of the best to reach.
        #[arg(long, default_value_t = 0.95)]
        fraction: f64,
        /// The results database.
        #[command(flatten)]
        db: DbArgs,
    },
    /// List the studies in the database.
    List {
        /// The results database.
        #[command(flatten)]
        db: DbArgs,
    },
}

fn parse_slo(text: &str, mut slo: Slo) -> Result<Slo> {
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (key, value) =
            part.split_once('=').with_context(|| format!("--slo: `{part}` is not KEY=VALUE"))?;
        let v: f64 =
            value.trim().parse().ok().filter(|v: &f64| v.is_finite() && *v > 0.0).with_context(
                || format!("--slo: {key} = `{value}` is not a positive number of ms"),
            )?;
        match key.trim() {
            "ttft_p99_ms" => slo.ttft_p99_ms = Some(v),
            "tpot_p99_ms" => slo.tpot_p99_ms = Some(v),
            "e2el_p99_ms" => slo.e2el_p99_ms = Some(v),
            other => {
                bail!("--slo: unknown bound `{other}` (ttft_p99_ms, tpot_p99_ms, e2el_p99_ms)")
            }
        }
    }
    Ok(slo)
}

fn hardware_line(cores: usize) -> String {
    let id = dyno_kernels::machine::MachineId::detect();
    format!("cpu: {}, {cores} cores, {}", id.cpu_model, id.isa)
}

/// Runs `dyno tune`: measured on this machine for `--hw cpu`, simulated for GPU profiles.
pub fn run_tune(args: TuneArgs) -> Result<()> {
    if args.budget == Some(0) {
        bail!("--budget 0: a study needs at least one trial");
    }
    if let Some(r) = args.rate
        && !(r.is_finite() && r > 0.0)
    {
        bail!("--rate {r}: must be a positive number of requests per second");
    }
    if args.sim_budget == 0 {
        bail!("--sim-budget 0: the simulated phase needs at least one trial");
    }
    if !(args.max_kl.is_finite() && args.max_kl >= 0.0) {
        bail!("--max-kl {}: must be ≥ 0", args.max_kl);
    }
    let profile = resolve_target(&args.hw)?;
    let model = ModelConfig::resolve(&args.model)?;
    let mut workload = Workload::load(&args.workload)?;
    if let Some(text) = &args.slo {
        workload.slo = parse_slo(text, workload.slo)?;
    }
    if workload.slo.is_empty() && args.objective == Goal::Goodput {
        bail!(
            "workload `{}` has no SLOs: goodput needs them (--slo ttft_p99_ms=..,tpot_p99_ms=..)",
            workload.name
        );
    }
    if profile.is_gpu() {
        run_simulated_tune(args, profile, model, workload)
    } else {
        run_measured_tune(args, model, workload)
    }
}

/// The longest prompt of the first `requests` requests of `workload`.
fn max_prompt(workload: &Workload, requests: usize) -> Result<usize> {
    longest_prompt(workload, &LoadOverrides { requests: Some(requests), ..Default::default() })
}

/// A study of an existing name being continued or joined, with its stored settings.
async fn existing_settings(
    store: &dyno_results::store::Store,
    args: &TuneArgs,
    name: Option<&str>,
) -> Result<Option<StudySettings>> {
    match name {
        Some(name) if args.resume || args.worker => match store.study_by_name(name).await? {
            Some(st) => Ok(Some(
                serde_json::from_value(st.settings)
                    .with_context(|| format!("study `{name}` was not created by `dyno tune`"))?,
            )),
            None => Ok(None),
        },
        _ => Ok(None),
    }
}

/// `dyno tune --hw cpu`: kernels, then load tests of the engine on this machine.
fn run_measured_tune(args: TuneArgs, model: ModelConfig, workload: Workload) -> Result<()> {
    let cores = args.cores.unwrap_or_else(dyno_kernels::threads::available).max(1);
    let space = match &args.space {
        Some(p) => ConfigSpace::from_file(p, cores)?,
        None => ConfigSpace::builtin("cpu", cores)?,
    };
    let mut base = match &args.base_config {
        Some(p) => EngineConfig::from_yaml_file(p)?,
        None => EngineConfig { threads: cores, ..EngineConfig::default() },
    };
    base.validate_for(&model, "base config")?;
    let memory = match args.memory_gib {
        Some(g) if g.is_finite() && g > 0.0 => (g * f64::from(1u32 << 30)) as u64,
        Some(g) => bail!("--memory-gib {g}: must be positive"),
        None => memory_bytes().map_or(8 << 30, |b| b / 5 * 4),
    };
    let requests = args.requests.unwrap_or(MEASURED_REQUESTS);
    let budget = args.budget.unwrap_or(MEASURED_BUDGET);
    let max_prompt = max_prompt(&workload, requests)?;
    let level = match args.rate {
        Some(rate) => LoadLevel::FixedRate { rate },
        None => LoadLevel::MaxRateUnderSlo {
            start_rate: workload.arrival.rate().unwrap_or(1.0).min(0.25),
            tolerance: 0.15,
            max_probes: 6,
        },
    };

    block_on(async move {
        let store = args.db.open().await?;
        eprintln!(
            "dyno tune: {} on {}, workload {}, results in {}",
            model.name,
            hardware_line(cores),
            workload.name,
            args.db.shown()
        );
        // A study being continued or joined keeps the base config and limits it was created
        // with (its tuned kernel tiles included): every worker measures the same candidates.
        let mut existing = existing_settings(&store, &args, args.study.as_deref()).await?;
        if existing.is_none() && args.measure_top > 0 {
            // Stopped during the simulated phase: its study holds the base config and limits.
            let sim = args.study.as_deref().map(sim_study_name);
            existing = existing_settings(&store, &args, sim.as_deref()).await?;
        }
        let mut limits =
            Limits { memory_bytes: memory, cores, max_prompt_tokens: max_prompt, devices: None };
        if let Some(stored) = &existing {
            eprintln!("continuing study: base config and limits as stored (kernel level skipped)");
            base = stored.base.clone();
            limits = stored.limits;
        } else if !args.no_kernels {
            eprintln!(
                "kernel level: tuning f32 GEMM tiles per op and attention tiles ({} threads)",
                base.threads
            );
            let mut cache = KernelCache::load(default_cache_path())?;
            let started = Instant::now();
            let (tuned, _) =
                tune_kernels(&model, &base, &KernelStageOptions::default(), &mut cache, |c| {
                    eprintln!(
                        "  {:<12} {:<22} {:>6}  ({} measured, {} cached)",
                        c.op,
                        c.shape,
                        c.speedup.map_or("-".into(), |s| format!("{s:.2}×")),
                        c.measured,
                        c.cached
                    );
                })
                .map_err(anyhow::Error::msg)?;
            eprintln!("  kernel level done in {:.1} s", started.elapsed().as_secs_f64());
            base = tuned;
        }
        let settings = StudySettings {
            hw: args.hw.clone(),
            model: model.name.clone(),
            workload: workload.name.clone(),
            strategy: args.strategy,
            budget,
            seed: args.seed,
            goal: args.objective,
            level,
            requests,
            max_kl: args.max_kl,
            limits,
            space,
            base,
        };
        let kl = quality_bounds(&settings, &model)?;
        let evaluator = MeasuredEvaluator {
            model: model.clone(),
            workload: workload.clone(),
            requests,
            level,
            max_lag_s: args.max_lag_ms / 1e3,
            trial_timeout: Duration::from_secs(1200),
            log: Some(std::sync::Arc::new(|line: &str| eprintln!("    {line}"))),
        };
        let mut emitted = Provenance {
            hardware: hardware_line(cores),
            version: env!("CARGO_PKG_VERSION").to_string(),
            commit: build_commit(),
            predicted_by: None,
            screened_by: None,
            notes: Vec::new(),
        };
        let name = study_name(&args, &settings);
        if args.measure_top == 0 {
            return search(
                &store,
                &args,
                &name,
                &model,
                &settings,
                kl,
                &evaluator,
                args.confirm,
                emitted,
                &[],
            )
            .await;
        }
        if args.budget.is_some() || args.strategy != StrategyKind::Tpe {
            eprintln!(
                "note: --budget and --strategy apply to a purely measured search (--measure-top 0); \
                 this study measures the baseline and the top {} predicted points",
                args.measure_top
            );
        }
        let (top, screened_by) =
            simulated_phase(&store, &args, &name, &model, &workload, &settings, &kl).await?;
        emitted.screened_by = Some(screened_by);
        let settings = StudySettings { budget: top.len(), ..settings };
        eprintln!(
            "measured phase: the baseline and the top {} predicted points ({} trials; the strategy proposes no others)",
            args.measure_top,
            top.len()
        );
        search(&store, &args, &name, &model, &settings, kl, &evaluator, args.confirm, emitted, &top)
            .await
    })?
}

/// The name of the simulated study that screens the points of measured study `name`.
fn sim_study_name(name: &str) -> String {
    format!("{name}-sim")
}

/// The study's name: `--study`, or one made of the model, workload, target and the time.
fn study_name(args: &TuneArgs, settings: &StudySettings) -> String {
    args.study.clone().unwrap_or_else(|| {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        format!("{}-{}-{}-{secs}", settings.model, settings.workload, settings.hw)
    })
}

/// Simulated trials between two progress lines of the simulated phase.
const SIM_PROGRESS_EVERY: usize = 250;

/// `dyno tune --hw cpu --measure-top K`, first phase: the study `<name>-sim` predicts the
/// space (every feasible point when they number at most `--sim-budget`, else that many
/// chosen by TPE) with the simulator and this machine's CPU profile, at the measured study's
/// load level and workload. A stored one (--resume, --worker) is continued, so finished
/// predictions are not made again. Returns the top K points with their predictions (and the
/// baseline's) and, for the emitted header, how they were chosen.
async fn simulated_phase(
    store: &dyno_results::store::Store,
    args: &TuneArgs,
    name: &str,
    model: &ModelConfig,
    workload: &Workload,
    settings: &StudySettings,
    kl: &std::collections::HashMap<String, Result<f64, String>>,
) -> Result<(Vec<study::PredictedPoint>, String)> {
    let profile = resolve_target("cpu")?;
    if profile.calibration.calibrated {
        eprintln!("simulated phase: profile {} (calibrated on this machine)", profile.provenance());
    } else {
        eprintln!(
            "warning: no calibrated CPU profile for this machine: predictions come from the \
             uncalibrated template {}; run `dyno profile --hw cpu` to calibrate one",
            profile.provenance()
        );
    }
    let sim_name = sim_study_name(name);
    // The simulated study's feasibility is the measured one's (only strategy and budget
    // differ, and no constraint reads them): one memo serves the count and the search.
    let feasible = Feasibility::new(settings, model, kl.clone());
    let pruned = feasible.pruning_summary();
    let feasible_points = pruned.as_ref().map(|p| {
        let ruled_out: u128 = p.iter().map(|(_, n, _)| u128::from(*n)).sum();
        settings.space.size().saturating_sub(ruled_out)
    });
    let (strategy, budget) = match feasible_points {
        Some(n) if n <= args.sim_budget as u128 => (StrategyKind::Grid, (n as usize).max(1)),
        _ => (StrategyKind::Tpe, args.sim_budget),
    };
    let sim_settings = StudySettings { strategy, budget, ..settings.clone() };
    let (sim_row, created) =
        study::open(store, &sim_name, &sim_settings, &pruned, args.resume || args.worker).await?;
    eprintln!(
        "study `{}` (id {}){}: simulated, {} of {} feasible points ({} strategy)",
        sim_row.name,
        sim_row.id,
        if created { "" } else { ", continued (finished predictions reused)" },
        budget,
        feasible_points.map_or("?".into(), |n| n.to_string()),
        strategy
    );
    let evaluator = SimulatedEvaluator {
        profile: profile.clone(),
        model: model.clone(),
        workload: workload.clone(),
        requests: settings.requests,
        min_duration_s: 0.0,
        max_requests: 10_000,
        level: settings.level,
        routing_skew: 0.0,
    };
    let opts = WorkerOptions {
        worker: this_worker(),
        time_budget: None,
        patience: 0,
        poll: Duration::from_secs(2),
        confirm: 0,
    };
    let started = Instant::now();
    let goal = settings.goal;
    let summary =
        study::run_local(store, &sim_row, &sim_settings, &feasible, &evaluator, &opts, |p| {
            if let Progress::Finished { done, best, .. } = p
                && (done % SIM_PROGRESS_EVERY == 0 || done == budget)
            {
                eprintln!(
                    "  [{done}/{budget}] simulated; best predicted {goal} {}; {:.1} s elapsed",
                    best.map_or("-".into(), |b| format!("{b:.3}")),
                    started.elapsed().as_secs_f64()
                );
            }
        })
        .await?;
    let trials = store.trials(sim_row.id).await?;
    study::finish_if_settled(store, &sim_row, &trials).await?;
    let predicted =
        trials.iter().filter(|t| t.status == dyno_results::store::TrialStatus::Completed).count();
    eprintln!(
        "simulated phase: {predicted} points predicted ({} here) in {:.1} s; top {} by predicted {goal}:",
        summary.measured,
        started.elapsed().as_secs_f64(),
        args.measure_top
    );
    let top = study::top_predicted(&trials, goal, args.measure_top);
    if top.is_empty() {
        bail!(
            "study `{sim_name}`: the simulator predicted no point, so there is nothing to measure"
        );
    }
    for p in &top {
        let knobs: Vec<String> = settings
            .space
            .describe(&p.point)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        eprintln!(
            "  {} {:.3} at {:.3} req/s{}: {}",
            goal,
            p.predicted.score(goal),
            p.predicted.rate,
            if p.baseline { " (baseline)" } else { "" },
            knobs.join(" ")
        );
    }
    let screened_by = format!(
        "the top {} of {predicted} points predicted by the simulator (study `{sim_name}`, profile {})",
        args.measure_top,
        profile.provenance()
    );
    Ok((top, screened_by))
}

/// Measured requests per full-fidelity load test by default.
const MEASURED_REQUESTS: usize = 24;
/// Trials of a measured study by default.
const MEASURED_BUDGET: usize = 40;
/// Simulated requests per run by default.
const SIMULATED_REQUESTS: usize = 400;
/// Trials of a simulated study by default.
const SIMULATED_BUDGET: usize = 100;

/// `dyno tune --hw h100` (any GPU profile): search with the simulator.
fn run_simulated_tune(
    args: TuneArgs,
    profile: HardwareProfile,
    model: ModelConfig,
    workload: Workload,
) -> Result<()> {
    let devices = args.gpus.unwrap_or(profile.devices_per_node);
    if devices == 0 {
        bail!("--gpus 0: at least one device is needed");
    }
    let space = match &args.space {
        Some(p) => ConfigSpace::from_file(p, 1)?,
        None => ConfigSpace::builtin("gpu", 1)?,
    };
    let base = match &args.base_config {
        Some(p) => EngineConfig::from_yaml_file(p)?,
        None => {
            let mut c = EngineConfig { threads: 1, max_waiting: 4096, ..EngineConfig::default() };
            c.set_weight_format(dyno_engine::WeightFormat::Bf16);
            c
        }
    };
    let requests = args.requests.unwrap_or(SIMULATED_REQUESTS);
    let budget = args.budget.unwrap_or(SIMULATED_BUDGET);
    let limits = Limits::for_profile(&profile, devices, max_prompt(&workload, requests)?);
    let level = match args.rate {
        Some(rate) => LoadLevel::FixedRate { rate },
        None => LoadLevel::MaxRateUnderSlo {
            start_rate: workload.arrival.rate().unwrap_or(1.0),
            tolerance: 0.1,
            max_probes: 12,
        },
    };
    let predicted_by = format!("{} × {devices}", profile.provenance());
    block_on(async move {
        let store = args.db.open().await?;
        eprintln!(
            "dyno tune: {} on {devices} × {} — simulated (no {} here): figures are predictions from profile {}; workload {}, results in {}",
            model.name,
            profile.name,
            profile.name,
            profile.provenance(),
            workload.name,
            args.db.shown()
        );
        let existing = existing_settings(&store, &args, args.study.as_deref()).await?;
        let settings = StudySettings {
            hw: format!("{}x{devices}", profile.name),
            model: model.name.clone(),
            workload: workload.name.clone(),
            strategy: args.strategy,
            budget,
            seed: args.seed,
            goal: args.objective,
            level,
            requests,
            max_kl: args.max_kl,
            limits: existing.as_ref().map_or(limits, |s| s.limits),
            space,
            base: existing.as_ref().map_or(base, |s| s.base.clone()),
        };
        let kl = quality_bounds(&settings, &model)?;
        let evaluator = SimulatedEvaluator {
            profile: profile.clone(),
            model: model.clone(),
            workload: workload.clone(),
            requests,
            min_duration_s: 15.0,
            max_requests: 10_000,
            level,
            routing_skew: 0.0,
        };
        let mut notes = vec![format!(
            "GPU kernel tiles: no measured kernel cache for {} exists yet (the CUDA backend measures one); the step model's efficiencies are the profile's heuristic curves",
            profile.name
        )];
        if kl.is_empty() {
            notes.push(format!(
                "quality bound not checked: {}'s f32 weights do not fit this machine to measure KL",
                model.name
            ));
        }
        let emitted = Provenance {
            hardware: format!("{devices} × {} ({})", profile.name, profile.description),
            version: env!("CARGO_PKG_VERSION").to_string(),
            commit: build_commit(),
            predicted_by: Some(predicted_by),
            screened_by: None,
            notes,
        };
        let name = study_name(&args, &settings);
        // Predictions are deterministic: measuring a point twice would tell nothing new.
        search(&store, &args, &name, &model, &settings, kl, &evaluator, 0, emitted, &[]).await
    })?
}

/// The KL against f32 of each weight format the space can choose, measured (or cached) when
/// the model's f32 weights fit in a quarter of this machine's memory; empty otherwise.
fn quality_bounds(
    settings: &StudySettings,
    model: &ModelConfig,
) -> Result<std::collections::HashMap<String, Result<f64, String>>> {
    let f32_bytes = model.weight_bytes(dyno_engine::WeightFormat::F32);
    if f32_bytes > memory_bytes().unwrap_or(8 << 30) / 4 {
        eprintln!(
            "quality: not measured ({}'s f32 weights, {:.0} GB, do not fit this machine); weight formats are not pruned by KL",
            model.name,
            f32_bytes as f64 / 1e9
        );
        return Ok(Default::default());
    }
    let mut quality = QualityCache::load(&default_path()).map_err(anyhow::Error::msg)?;
    eprintln!("quality: KL against f32 per weight format (cached in {})", default_path().display());
    let kl = study::formats_kl(settings, model, &mut quality);
    let mut formats: Vec<_> = kl.iter().collect();
    formats.sort_by(|a, b| a.0.cmp(b.0));
    for (f, v) in formats {
        match v {
            Ok(v) if *v > settings.max_kl => {
                eprintln!("  {f:<10} {v:.2e} nats  over the bound: pruned")
            }
            Ok(v) => eprintln!("  {f:<10} {v:.2e} nats  ok"),
            Err(e) => eprintln!("  {f:<10} cannot hold the model: {e}"),
        }
    }
    Ok(kl)
}

/// Opens the study, queues `seeded` (points with the simulator's predictions), runs this
/// worker with progress lines, prints the summary and emits the best config: the part every
/// target shares.
#[allow(clippy::too_many_arguments)]
async fn search<E: Evaluator>(
    store: &dyno_results::store::Store,
    args: &TuneArgs,
    name: &str,
    model: &ModelConfig,
    settings: &StudySettings,
    kl: std::collections::HashMap<String, Result<f64, String>>,
    evaluator: &E,
    confirm: usize,
    emitted: Provenance,
    seeded: &[study::PredictedPoint],
) -> Result<()> {
    let feasible = Feasibility::new(settings, model, kl);
    let pruned = feasible.pruning_summary();
    let (study_row, created) =
        study::open(store, name, settings, &pruned, args.resume || args.worker).await?;
    eprintln!(
        "study `{}` (id {}){}: {} strategy, budget {}, space of {} points",
        study_row.name,
        study_row.id,
        if created { "" } else { ", continued" },
        settings.strategy,
        settings.budget,
        settings.space.size()
    );
    if let Some(p) = &pruned {
        for (_, n, example) in p {
            eprintln!("  pruned {n:>6} points, e.g. {example}");
        }
    }
    if !seeded.is_empty() {
        study::enqueue_predicted(store, &study_row, settings, model, seeded).await?;
    }
    let opts = WorkerOptions {
        worker: this_worker(),
        time_budget: args.time_budget_min.map(|m| Duration::from_secs_f64(m * 60.0)),
        patience: args.patience.unwrap_or((settings.budget / 2).max(8)),
        poll: Duration::from_secs(2),
        confirm,
    };
    let started = Instant::now();
    let budget = settings.budget;
    let verb = if evaluator.predicts() { "predicted" } else { "measured" };
    let summary =
        study::run_worker(store, &study_row, settings, &feasible, evaluator, &opts, |p| match p {
            Progress::Started { number, knobs, fidelity } => {
                let knobs: Vec<String> = knobs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                eprintln!("trial {number} (fidelity {fidelity:.2}): {}", knobs.join(" "));
            }
            Progress::Finished { number, result, best, done } => {
                let what = match result {
                    Ok(m) => format!(
                        "{} {:.3} at {:.3} req/s (p99 TTFT {:.0} ms, TPOT {:.1} ms, {} runs)",
                        settings.goal,
                        m.score(settings.goal),
                        m.rate,
                        m.ttft_p99_ms,
                        m.tpot_p99_ms,
                        m.load_tests
                    ),
                    Err(e) => format!("failed: {e}"),
                };
                eprintln!(
                    "  [{done}/{budget}] trial {number}: {what}; best {}; {:.0} s elapsed",
                    best.map_or("-".into(), |b| format!("{b:.3}")),
                    started.elapsed().as_secs_f64()
                );
            }
        })
        .await?;
    let trials = store.trials(study_row.id).await?;
    let report = study::report(&study_row, settings, &trials);
    study::finish_if_settled(store, &study_row, &trials).await?;
    eprintln!(
        "stopped: {} after {} trials {verb} here in {:.1} s{}",
        summary.stop,
        summary.measured,
        started.elapsed().as_secs_f64(),
        if summary.requeued > 0 {
            format!(" ({} requeued from dead workers)", summary.requeued)
        } else {
            String::new()
        }
    );
    print_summary(&report);
    emit(&report, &trials, &emitted, args.out.as_deref())
}

/// The commit dyno was built from; else the working tree's, when run inside one.
fn build_commit() -> Option<String> {
    let built = env!("DYNO_BUILD_COMMIT");
    if built.is_empty() {
        let cwd = std::env::current_dir().unwrap_or_default();
        GitInfo::detect(&cwd, &GitOverrides::default()).ok().map(|g| g.commit.sha)
    } else {
        Some(built.to_string())
    }
}

fn emit(
    report: &StudyReport,
    trials: &[dyno_results::store::Trial],
    provenance: &Provenance,
    out: Option<&std::path::Path>,
) -> Result<()> {
    let Some(config) = report.best_config(trials) else {
        bail!("study `{}`: no trial finished, so there is no best config", report.name);
    };
    let yaml =
        best_config_yaml(report, &config, provenance).context("the best trial has no metrics")?;
    match out {
        Some(path) => {
            std::fs::write(path, &yaml).with_context(|| format!("writing {}", path.display()))?;
            eprintln!("best config written to {}", path.display());
        }
        None => {
            std::io::stdout().write_all(yaml.as_bytes())?;
        }
    }
    Ok(())
}

/// The human summary: the trials table, the frontier, the best and the baseline.
fn print_summary(report: &StudyReport) {
    eprint!("{}", render_report(report));
}

/// The study report as text.
pub fn render_report(report: &StudyReport) -> String {
    use std::fmt::Write as _;
    let goal = report.settings.goal;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "study `{}` (id {}): {} on {}, {} strategy",
        report.name, report.id, report.settings.model, report.settings.hw, report.settings.strategy
    );
    let knob_names: Vec<String> =
        report.settings.space.knobs.iter().map(|k| k.path.clone()).collect();
    // A column of predicted scores when any trial was queued with the simulator's prediction.
    let with_predictions = report.trials.iter().any(|t| t.predicted.is_some());
    let predicted_header =
        if with_predictions { format!(" {:>9}", format!("pred {goal}")) } else { String::new() };
    let _ = writeln!(
        s,
        "{:>4} {:<10} {:>5}{predicted_header} {:>9} {:>8} {:>9} {:>9}  knobs ({})",
        "#",
        "status",
        "fid",
        goal.to_string(),
        "rate",
        "TTFT p99",
        "TPOT p99",
        knob_names.join(", ")
    );
    for (i, t) in report.trials.iter().enumerate() {
        let mark = if Some(i) == report.best {
            "*"
        } else if t.baseline {
            "b"
        } else {
            " "
        };
        let values: Vec<&str> =
            knob_names.iter().map(|k| t.knobs.get(k).map_or("-", String::as_str)).collect();
        let (score, rate, ttft, tpot) = match &t.metrics {
            Some(m) => (
                format!("{:.3}", m.score(goal)),
                format!("{:.3}", m.rate),
                format!("{:.0}", m.ttft_p99_ms),
                format!("{:.1}", m.tpot_p99_ms),
            ),
            None => ("-".into(), "-".into(), "-".into(), "-".into()),
        };
        let predicted = match (&t.predicted, with_predictions) {
            (Some(p), true) => format!(" {:>9.3}", p.score(goal)),
            (None, true) => format!(" {:>9}", "-"),
            (_, false) => String::new(),
        };
        let _ = writeln!(
            s,
            "{:>3}{mark} {:<10} {:>5.2}{predicted} {score:>9} {rate:>8} {ttft:>9} {tpot:>9}  {}{}",
            t.number,
            t.status.to_string(),
            t.fidelity,
            values.join(" "),
            t.error.as_deref().map(|e| format!("  ({e})")).unwrap_or_default()
        );
    }
    if let Some(p) = &report.predictions {
        s.push_str(&render_predictions(p, goal));
    }
    let _ = writeln!(
        s,
        "pareto frontier (output tok/s ↑, p99 TTFT ↓, p99 TPOT ↓): trials {}",
        report
            .frontier
            .iter()
            .map(|&i| report.trials[i].number.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for &i in &report.frontier {
        if let Some(m) = &report.trials[i].metrics {
            let _ = writeln!(
                s,
                "  trial {:>3}: {:.1} tok/s, TTFT p99 {:.0} ms, TPOT p99 {:.1} ms",
                report.trials[i].number, m.output_throughput, m.ttft_p99_ms, m.tpot_p99_ms
            );
        }
    }
    let trial_list = |p: &dyno_tuner::study::PointStats| {
        p.trials.iter().map(i64::to_string).collect::<Vec<_>>().join(", ")
    };
    match (report.best_point, report.baseline_point) {
        (Some(b), base) => {
            let best = &report.points[b];
            let _ =
                write!(s, "best: {goal} {:.3}, mean of trial(s) {}", best.mean, trial_list(best));
            if let (Some(r), Some(bi)) = (report.ratio_to_baseline(), base) {
                let base = &report.points[bi];
                let _ = write!(
                    s,
                    " = {r:.2}× the default config ({:.3}, trial(s) {})",
                    base.mean,
                    trial_list(base)
                );
            }
            if let Some(n) = report.trials_to_95 {
                let _ = write!(s, "; 95% of it reached after {n} trials");
            }
            let _ = writeln!(s);
        }
        (None, _) => {
            let _ = writeln!(s, "best: none yet (no full-fidelity trial finished)");
        }
    }
    s
}

/// Predicted against measured per trial, and the mean |error| per figure, as text.
fn render_predictions(p: &dyno_tuner::study::PredictionReport, goal: Goal) -> String {
    use std::fmt::Write as _;
    let pct = |e: f64| if e.is_finite() { format!("{:+.1}%", e * 100.0) } else { "-".into() };
    let mut s = String::new();
    let _ =
        writeln!(s, "predicted vs measured (relative error = (predicted − measured) ÷ measured):");
    let _ = writeln!(
        s,
        "{:>4} {:>10} {:>10} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "#",
        format!("pred {goal}"),
        format!("meas {goal}"),
        "throughput",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99"
    );
    for r in &p.rows {
        let e = r.errors.named().map(|(_, v)| pct(v));
        let _ = writeln!(
            s,
            "{:>3}{} {:>10.3} {:>10.3} {:>10} {:>9} {:>9} {:>9} {:>9}",
            r.number,
            if r.baseline { "b" } else { " " },
            r.predicted_score,
            r.measured_score,
            e[0],
            e[1],
            e[2],
            e[3],
            e[4]
        );
    }
    let m = p
        .mean_abs
        .named()
        .map(|(_, v)| if v.is_finite() { format!("{:.1}%", v * 100.0) } else { "-".into() });
    let _ = writeln!(
        s,
        "{:>4} {:>21} {:>10} {:>9} {:>9} {:>9} {:>9}",
        "mean", "|error|", m[0], m[1], m[2], m[3], m[4]
    );
    s
}

/// A study by name with its settings and trials.
async fn load_study(
    db: &DbArgs,
    name: &str,
) -> Result<(dyno_results::store::Study, StudySettings, Vec<dyno_results::store::Trial>)> {
    let store = db.open().await?;
    let Some(study_row) = store.study_by_name(name).await? else {
        bail!("no study named `{name}` in {}", db.shown());
    };
    let settings: StudySettings = serde_json::from_value(study_row.settings.clone())
        .with_context(|| format!("study `{name}` was not created by `dyno tune`"))?;
    let trials = store.trials(study_row.id).await?;
    Ok((study_row, settings, trials))
}

/// The study named `name` with its trials, when it is a validation study (`dyno validate`).
async fn validation_study(
    db: &DbArgs,
    name: &str,
) -> Result<Option<(dyno_results::store::Study, Vec<dyno_results::store::Trial>)>> {
    let store = db.open().await?;
    match store.study_by_name(name).await? {
        Some(st) if validate::is_validation(&st.settings) => {
            let trials = store.trials(st.id).await?;
            Ok(Some((st, trials)))
        }
        _ => Ok(None),
    }
}

/// Runs `dyno study ...`.
pub fn run_study(args: StudyArgs) -> Result<()> {
    match args.command {
        StudyCommand::Show { name, json, db } => block_on(async move {
            if let Some((study_row, trials)) = validation_study(&db, &name).await? {
                let rows = validate::rows_from_study(&study_row, &trials);
                if json {
                    let settings = &study_row.settings;
                    let out = serde_json::json!({ "name": study_row.name, "settings": settings, "rows": rows });
                    println!("{}", serde_json::to_string_pretty(&out)?);
                } else {
                    println!(
                        "validation study `{}` (id {}): {}",
                        study_row.name, study_row.id, study_row.objective
                    );
                    print!("{}", validate::render_table(&rows));
                    println!();
                    print!("{}", validate::render_figures(&rows));
                }
                return Ok(());
            }
            let (study_row, settings, trials) = load_study(&db, &name).await?;
            let report = study::report(&study_row, &settings, &trials);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
                return Ok(());
            }
            print!("{}", render_report(&report));
            if let Some(c) = report.best_config(&trials) {
                println!("best config:\n{}", c.to_yaml());
            }
            Ok(())
        })?,
        StudyCommand::Replay { name, strategies, seeds, fraction, db } => block_on(async move {
            if !(fraction > 0.0 && fraction <= 1.0) {
                bail!("--fraction {fraction}: must be in (0, 1]");
            }
            let (_, settings, trials) = load_study(&db, &name).await?;
            let table =
                ReplayTable::from_trials(settings.space.strategy_space(), &trials, settings.goal);
            let Some(best) = table.best() else {
                bail!("study `{name}` has no completed full-fidelity trial to replay");
            };
            println!(
                "study `{name}`: {} measured points, best {} {best:.4}; target {:.0}% of it",
                table.values.len(),
                settings.goal,
                fraction * 100.0
            );
            println!(
                "{:<10} {:>8} {:>8} {:>8} {:>10}  per seed",
                "strategy", "median", "max", "reached", "median/n"
            );
            for kind in strategies {
                let runs: Vec<ReplayRun> =
                    (0..seeds).map(|seed| replay(&table, kind, seed, fraction)).collect();
                let mut counts: Vec<usize> =
                    runs.iter().filter_map(|r| r.trials_to_target).collect();
                counts.sort_unstable();
                let per_seed: Vec<String> = runs
                    .iter()
                    .map(|r| r.trials_to_target.map_or("-".into(), |n| n.to_string()))
                    .collect();
                let median = counts.get(counts.len().saturating_sub(1) / 2).copied();
                println!(
                    "{:<10} {:>8} {:>8} {:>5}/{:<2} {:>10}  {}",
                    kind.to_string(),
                    median.map_or("-".into(), |m| m.to_string()),
                    counts.last().map_or("-".into(), |m| m.to_string()),
                    counts.len(),
                    runs.len(),
                    median.map_or("-".into(), |m| format!(
                        "{:.1}%",
                        100.0 * m as f64 / table.values.len() as f64
                    )),
                    per_seed.join(" ")
                );
            }
            Ok(())
        })?,
        StudyCommand::List { db } => block_on(async move {
            let store = db.open().await?;
            println!(
                "{:>4} {:<40} {:<10} {:>7} {:>7} {:>7}",
                "id", "name", "status", "trials", "done", "failed"
            );
            for s in store.studies().await? {
                let c = s.trials;
                println!(
                    "{:>4} {:<40} {:<10} {:>7} {:>7} {:>7}",
                    s.id,
                    s.name,
                    s.status.as_str(),
                    c.total(),
                    c.completed,
                    c.failed
                );
            }
            Ok(())
        })?,
    }
}
