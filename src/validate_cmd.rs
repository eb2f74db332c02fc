//! `dyno validate`: parse, run each config through the simulator and the engine, store both,
//! print the prediction error table.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use dyno_engine::{EngineConfig, ModelConfig};
use dyno_results::store::StudyInfo;
use dyno_tuner::evaluate::{LoadLevel, MeasuredEvaluator, SimulatedEvaluator};
use dyno_tuner::hardware::resolve_target;
use dyno_tuner::study::trial_outcome;
use dyno_tuner::validate::{
    ValidationCase, ValidationSettings, check_cases, cpu_cases, render_figures, render_table,
    run_case,
};
use dyno_workloads::Workload;

use crate::record_args::{DbArgs, block_on};

/// Arguments of `dyno validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Hardware target: `cpu` (this machine; its profile from `dyno profile --hw cpu`).
    #[arg(long, default_value = "cpu")]
    pub hw: String,
    /// Model preset or model YAML file.
    #[arg(long, default_value = "mixtral-mini")]
    pub model: String,
    /// Workload preset or YAML file.
    #[arg(long, default_value = "chat")]
    pub workload: String,
    /// Engine config files to validate, comma-separated [default: six built-in configs
    /// varying weights, batch knobs, priority and layout].
    #[arg(long, value_delimiter = ',')]
    pub configs: Option<Vec<PathBuf>>,
    /// Open-loop rate of every run, requests per second.
    #[arg(long, default_value_t = 0.2)]
    pub rate: f64,
    /// Requests per run (warm-up comes on top).
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
    /// Study name the results are stored under [default: validate-MODEL-WORKLOAD-HW-TIME].
    #[arg(long)]
    pub study: Option<String>,
    /// A load test is invalid when its p99 schedule lag exceeds this, ms.
    #[arg(long, default_value_t = 10.0)]
    pub max_lag_ms: f64,
    /// The results database.
    #[command(flatten)]
    pub db: DbArgs,
}

/// Runs `dyno validate`.
pub fn run_validate(a: ValidateArgs) -> Result<()> {
    let profile = resolve_target(&a.hw)?;
    if profile.is_gpu() {
        bail!(
            "--hw {}: validation measures the engine on this machine, so the target must be this machine (`cpu`); GPU validation needs the CUDA backend",
            a.hw
        );
    }
    if !(a.rate.is_finite() && a.rate > 0.0) {
        bail!("--rate {}: must be a positive number of requests per second", a.rate);
    }
    if a.requests < 16 {
        bail!("--requests {}: at least 16, so that p99s mean something", a.requests);
    }
    let model = ModelConfig::resolve(&a.model)?;
    let workload = Workload::load(&a.workload)?;
    let cores = dyno_kernels::threads::available();
    let cases: Vec<ValidationCase> = match &a.configs {
        Some(paths) => paths
            .iter()
            .map(|p| {
                Ok(ValidationCase {
                    name: p.file_stem().map_or_else(
                        || p.display().to_string(),
                        |s| s.to_string_lossy().into_owned(),
                    ),
                    config: EngineConfig::from_yaml_file(p)?,
                })
            })
            .collect::<Result<_>>()?,
        None => cpu_cases(cores),
    };
    check_cases(&model, &cases).map_err(anyhow::Error::msg)?;
    if !profile.calibration.calibrated {
        eprintln!(
            "warning: the cpu profile is the uncalibrated template; run `dyno profile --hw cpu` first for meaningful predictions"
        );
    }
    let level = LoadLevel::FixedRate { rate: a.rate };
    let simulated = SimulatedEvaluator {
        profile: profile.clone(),
        model: model.clone(),
        workload: workload.clone(),
        requests: a.requests,
        min_duration_s: 0.0,
        max_requests: a.requests,
        level,
        routing_skew: 0.0,
    };
    let measured = MeasuredEvaluator {
        model: model.clone(),
        workload: workload.clone(),
        requests: a.requests,
        level,
        max_lag_s: a.max_lag_ms / 1e3,
        trial_timeout: Duration::from_secs(1800),
        log: Some(std::sync::Arc::new(|line: &str| eprintln!("    {line}"))),
    };
    let settings = ValidationSettings {
        kind: "validation".into(),
        hw: a.hw.clone(),
        profile: profile.provenance(),
        model: model.name.clone(),
        workload: workload.name.clone(),
        rate: a.rate,
        requests: a.requests,
    };
    block_on(async move {
        let store = a.db.open().await?;
        let name = a.study.clone().unwrap_or_else(|| {
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            format!("validate-{}-{}-{}-{secs}", model.name, workload.name, a.hw)
        });
        let info = StudyInfo {
            name: name.clone(),
            scenario: None,
            objective: format!(
                "prediction error of the simulator ({}) against the engine on {} at {} req/s",
                profile.provenance(),
                workload.name,
                a.rate
            ),
            search_space: serde_json::json!({ "cases": cases.iter().map(|c| &c.name).collect::<Vec<_>>() }),
        };
        let (study, created) = store.open_study(&info, &serde_json::to_value(&settings)?).await?;
        if !created {
            bail!("a study named `{name}` already exists in {}; pick another --study", a.db.shown());
        }
        eprintln!(
            "dyno validate: {} on {} ({}), workload {} at {} req/s, {} requests per run; study `{name}` in {}",
            model.name,
            a.hw,
            profile.provenance(),
            workload.name,
            a.rate,
            a.requests,
            a.db.shown()
        );
        let mut rows = Vec::with_capacity(cases.len());
        for (i, case) in cases.iter().enumerate() {
            eprintln!("[{}/{}] {}", i + 1, cases.len(), case.name);
            let row = run_case(case, &simulated, &measured).await.map_err(anyhow::Error::msg)?;
            let predicted = serde_json::to_value(&row.predicted)?;
            let trial = store
                .begin_trial(study.id, &serde_json::to_value(&case.config)?, Some(&predicted))
                .await?;
            let metrics = match &row.measured {
                Ok(m) => Ok(Some(serde_json::to_value(m)?)),
                Err(e) => Err(e.as_str()),
            };
            let outcome = trial_outcome(metrics, false);
            store.finish_trial(trial.id, &outcome).await?;
            match &row.measured {
                Ok(m) => eprintln!(
                    "    predicted {:.3} req/s, measured {:.3} req/s",
                    row.predicted.request_throughput, m.request_throughput
                ),
                Err(e) => eprintln!("    measurement failed: {e}"),
            }
            rows.push(row);
        }
        store.finish_study(study.id, dyno_results::store::RunStatus::Completed).await?;
        println!(
            "simulated ({}) against measured: {} on {}, {} at {} req/s, {} requests per run",
            profile.provenance(),
            model.name,
            a.hw,
            workload.name,
            a.rate,
            a.requests
        );
        print!("{}", render_table(&rows));
        println!();
        print!("{}", render_figures(&rows));
        println!("stored as study `{name}` (id {})", study.id);
        Ok::<_, anyhow::Error>(())
    })
    .context("validation")??;
    Ok(())
}
