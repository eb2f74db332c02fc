//! `dyno simulate`: parse, wire a workload, a model, a config and a hardware profile to the
//! tuner's simulator, print the predicted metrics as `dyno load` prints measured ones.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use dyno_engine::{EngineConfig, ModelConfig, WeightFormat};
use dyno_harness::RunOptions;
use dyno_harness::load::{LoadOutcome, LoadSpec, run_load_with};
use dyno_harness::metrics::{LoadReport, SummaryOptions};
use dyno_harness::report::{outcome_json, render_outcome};
use dyno_tuner::constraints::{self, Limits};
use dyno_tuner::hardware::{HardwareProfile, resolve_target};
use dyno_tuner::simulate::{SimOptions, simulate};
use dyno_tuner::step_model::StepModel;
use dyno_workloads::{LoadOverrides, Workload};

use crate::load_cmd::LoadLevelArgs;
use crate::record_args::block_on;

/// Arguments of `dyno simulate`.
#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Hardware profile: h100 (h100-sxm), h200, a100 (a100-80gb), l40s, cpu, or a profile
    /// YAML file.
    #[arg(long, default_value = "cpu")]
    pub hw: String,
    /// Devices [default: one node of the profile].
    #[arg(long)]
    pub gpus: Option<usize>,
    /// Model preset or model YAML file.
    #[arg(long, default_value = "mixtral-mini")]
    pub model: String,
    /// Engine config YAML (the layout, batch policy and weights to simulate) [default: the
    /// engine's defaults].
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override the config's weight format: f32, bf16, int8, int4, int4-g64, int4-g128.
    #[arg(long, value_parser = weight_format)]
    pub weights: Option<WeightFormat>,
    /// GPU targets: keep the config's KV pool instead of filling each device's memory.
    #[arg(long)]
    pub keep_kv_pool: bool,
    /// Workload preset or YAML file.
    #[arg(long, default_value = "chat")]
    pub workload: String,
    /// The load: rate, concurrency, sweep or rate search; requests or duration.
    #[command(flatten)]
    pub level: LoadLevelArgs,
    /// Zipf-like skew of expert routing (0: uniform).
    #[arg(long, default_value_t = 0.0)]
    pub routing_skew: f64,
    /// Also write the report as JSON (the keys of `dyno load --json`) to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn weight_format(s: &str) -> Result<WeightFormat, String> {
    WeightFormat::parse(s).ok_or_else(|| format!("`{s}` is not a weight format"))
}

/// The model, the config (validated for the target) and its limits.
pub struct SimTarget {
    /// The hardware.
    pub profile: HardwareProfile,
    /// Devices.
    pub devices: usize,
    /// The model.
    pub model: ModelConfig,
    /// The config, KV pool fitted on GPUs.
    pub config: EngineConfig,
}

/// Resolves `--hw`, `--gpus`, the model and the config, and checks the config fits.
pub fn sim_target(
    hw: &str,
    gpus: Option<usize>,
    model: &str,
    config: Option<&std::path::Path>,
    weights: Option<WeightFormat>,
    keep_kv_pool: bool,
    max_prompt_tokens: usize,
) -> Result<SimTarget> {
    let profile = resolve_target(hw)?;
    let devices = gpus.unwrap_or(profile.devices_per_node);
    if devices == 0 {
        bail!("--gpus 0: at least one device is needed");
    }
    let model = ModelConfig::resolve(model)?;
    let (mut cfg, origin) = match config {
        Some(path) => (EngineConfig::from_yaml_file(path)?, path.display().to_string()),
        None => {
            let mut c = EngineConfig::default();
            if profile.is_gpu() {
                c.set_weight_format(WeightFormat::Bf16);
            }
            (c, "default engine config".to_string())
        }
    };
    if let Some(w) = weights {
        cfg.set_weight_format(w);
    }
    let limits = Limits::for_profile(&profile, devices, max_prompt_tokens);
    if !keep_kv_pool {
        constraints::fit_kv_pool(&model, &mut cfg, &limits);
    }
    constraints::check(&model, &cfg, &limits).map_err(|reason| {
        anyhow::anyhow!(
            "{origin}: cannot run {} on {} × {}: {reason}",
            model.name,
            devices,
            profile.name
        )
    })?;
    Ok(SimTarget { profile, devices, model, config: cfg })
}

/// The longest prompt of a workload's plan.
pub fn longest_prompt(workload: &Workload, overrides: &LoadOverrides) -> Result<usize> {
    let plan = workload.plan(overrides)?;
    let n = plan.max_requests.unwrap_or(plan.arrivals_s.len()).min(100_000);
    Ok((0..n).map(|i| plan.lengths(i).0).max().unwrap_or(0))
}

/// Runs `dyno simulate`.
pub fn run_simulate(a: SimulateArgs) -> Result<()> {
    let workload = Workload::load(&a.workload)?;
    a.level.check(&workload, &a.workload)?;
    if !(a.routing_skew.is_finite() && a.routing_skew >= 0.0) {
        bail!("--routing-skew {}: must be ≥ 0", a.routing_skew);
    }
    let overrides = a.level.overrides();
    let target = sim_target(
        &a.hw,
        a.gpus,
        &a.model,
        a.config.as_deref(),
        a.weights,
        a.keep_kv_pool,
        longest_prompt(&workload, &overrides)?,
    )?;
    let step_model = StepModel::new(&target.profile, &target.model, &target.config)
        .with_routing_skew(a.routing_skew);
    let mode = a.level.mode();
    let spec = LoadSpec {
        workload: workload.clone(),
        overrides,
        mode,
        run: RunOptions::default(),
        summary: SummaryOptions::default(),
    };
    eprintln!(
        "dyno simulate: {} on {} × {} ({}), workload {}",
        target.model.name,
        target.devices,
        target.profile.name,
        target.profile.provenance(),
        workload.name
    );
    // Totals over every simulated run: requests, engine steps, seconds simulating, seconds
    // summarizing.
    let totals = std::cell::Cell::new((0usize, 0u64, 0.0f64, 0.0f64));
    let outcome: LoadOutcome = block_on(run_load_with(&spec, |o| {
        let result = workload.plan(o).map(|plan| {
            let started = Instant::now();
            let out =
                simulate(&plan, &target.model, &target.config, &step_model, &SimOptions::default());
            let simulated = started.elapsed().as_secs_f64();
            let report = LoadReport::from_records(&out.records, &workload.slo, &spec.summary);
            let (n, steps, sim_s, report_s) = totals.get();
            totals.set((
                n + out.records.len(),
                steps + out.steps,
                sim_s + simulated,
                report_s + started.elapsed().as_secs_f64() - simulated,
            ));
            report
        });
        async move { result }
    }))??;
    print!("{}", render_outcome(&outcome));
    let (n, steps, sim_s, report_s) = totals.get();
    eprintln!(
        "predicted, not measured: {n} simulated requests in {steps} engine steps; simulating {sim_s:.2} s ({:.0} requests/s), metrics {report_s:.2} s",
        n as f64 / sim_s.max(1e-9)
    );
    if let Some(path) = &a.json {
        let env = serde_json::json!({
            "dyno_version": env!("CARGO_PKG_VERSION"),
            "predicted": true,
            "hardware_profile": target.profile.provenance(),
            "devices": target.devices,
            "model": target.model.name,
            "workload": a.workload,
            "config": target.config,
        });
        let json = outcome_json(&spec.mode, &outcome, &env)?;
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing the JSON report to {}", path.display()))?;
    }
    Ok(())
}
