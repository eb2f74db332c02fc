//! `dyno load`: parse, start the target, run the harness, print and write the report.

use crate::engine_cmd::EngineSetup;
use crate::record_args::RecordArgs;
use anyhow::{Context, Result, bail};
use clap::Args;
use dyno_harness::load::{LoadMode, LoadSpec, run_load};
use dyno_harness::metrics::SummaryOptions;
use dyno_harness::null_server::NullServerConfig;
use dyno_harness::progress::Progress;
use dyno_harness::recording::outcome_results;
use dyno_harness::report::{outcome_json, render_outcome};
use dyno_harness::search::SearchOptions;
use dyno_harness::target::Target;
use dyno_harness::{Client, LiveStats, RunOptions};
use dyno_workloads::{LoadOverrides, Workload};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Arguments of `dyno load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Workload preset (chat, rag, summarize, code, burst, decode-heavy) or YAML file.
    #[arg(long, default_value = "chat")]
    pub workload: String,
    /// `builtin` (the reference engine on a loopback port), `null` (a server that streams
    /// tokens at --null-ttft-ms / --null-itl-ms, to measure the client itself), or the base
    /// URL of any OpenAI-compatible server.
    #[arg(long, default_value = "builtin")]
    pub target: String,
    /// Built-in target: model and engine config.
    #[command(flatten)]
    pub setup: EngineSetup,
    /// URL target: the model name to send (default: the first of its GET /v1/models).
    #[arg(long)]
    pub served_model: Option<String>,
    /// Built-in target: a safetensors checkpoint directory instead of random weights.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// The load: rate, concurrency, sweep or rate search; requests or duration.
    #[command(flatten)]
    pub level: LoadLevelArgs,
    /// Open loop: at most this many requests in flight (a held request counts as schedule lag).
    #[arg(long)]
    pub max_concurrency: Option<usize>,
    /// Null target: time to first token, milliseconds.
    #[arg(long, default_value_t = 0.0)]
    pub null_ttft_ms: f64,
    /// Null target: time between tokens, milliseconds.
    #[arg(long, default_value_t = 0.0)]
    pub null_itl_ms: f64,
    /// Null target: busy-wait this many microseconds before each due event instead of
    /// sleeping (tokio's timer alone is up to ~2 ms late); costs the server's core.
    #[arg(long, default_value_t = 0)]
    pub null_spin_us: u64,
    /// URL target: send prompts as token-id arrays instead of text.
    #[arg(long)]
    pub token_prompts: bool,
    /// Worker threads of the load generator (1 = one client core).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Per-request timeout, seconds.
    #[arg(long, default_value_t = 600.0)]
    pub timeout_s: f64,
    /// A run is invalid when its p99 schedule lag exceeds this, milliseconds.
    #[arg(long, default_value_t = 10.0)]
    pub max_lag_ms: f64,
    /// Also write the report as JSON (vLLM's key names plus dyno's fields) to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// No live progress line.
    #[arg(long)]
    pub no_progress: bool,
    /// Where the results are recorded.
    #[command(flatten)]
    pub record: RecordArgs,
}

/// The load of a run, shared by `dyno load` and `dyno simulate`.
#[derive(Debug, Args)]
pub struct LoadLevelArgs {
    /// Open loop at this many requests per second.
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Closed loop with this many requests in flight.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Open loop: one run per rate, comma-separated.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["rate", "concurrency", "max_rate_under_slo"])]
    pub sweep: Option<Vec<f64>>,
    /// Find the highest open-loop rate whose run meets the workload's SLOs (double until a
    /// run fails, then bisect to 5%), starting at --rate or 1 req/s.
    #[arg(long, conflicts_with = "concurrency")]
    pub max_rate_under_slo: bool,
    /// Measured requests per run (warm-up comes on top).
    #[arg(long, conflicts_with = "duration")]
    pub requests: Option<usize>,
    /// Seconds of arrivals per run.
    #[arg(long)]
    pub duration: Option<f64>,
}

impl LoadLevelArgs {
    /// Checks the values on their own and against `workload` (a rate search needs SLOs);
    /// the error names the flag.
    pub fn check(&self, workload: &Workload, shown: &str) -> Result<()> {
        if self.max_rate_under_slo && workload.slo.is_empty() {
            bail!(
                "--max-rate-under-slo: workload `{shown}` has no SLOs (add `slo:` with \
                 ttft_p99_ms, tpot_p99_ms or e2el_p99_ms)"
            );
        }
        for (flag, v) in [("--rate", self.rate), ("--duration", self.duration)] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                bail!("{flag} {v}: must be a positive number");
            }
        }
        if let Some(rates) = &self.sweep
            && let Some(bad) = rates.iter().find(|r| !(r.is_finite() && **r > 0.0))
        {
            bail!("--sweep: rate {bad} must be a positive number");
        }
        Ok(())
    }

    /// The overrides of the workload's own load settings.
    pub fn overrides(&self) -> LoadOverrides {
        LoadOverrides {
            rate: self.rate,
            concurrency: self.concurrency,
            requests: self.requests,
            duration_s: self.duration,
        }
    }

    /// One run, a sweep, or the rate search (from --rate or 1 req/s).
    pub fn mode(&self) -> LoadMode {
        match (&self.sweep, self.max_rate_under_slo) {
            (Some(rates), _) => LoadMode::Sweep(rates.clone()),
            (None, true) => LoadMode::MaxRateUnderSlo(SearchOptions {
                start_rate: self.rate.unwrap_or(1.0),
                ..SearchOptions::default()
            }),
            (None, false) => LoadMode::Single,
        }
    }
}

/// Runs `dyno load`.
pub fn run_load_cmd(a: LoadArgs) -> Result<()> {
    let workload = Workload::load(&a.workload)?;
    a.level.check(&workload, &a.workload)?;
    if a.client_threads == 0 {
        bail!("--client-threads must be at least 1");
    }
    let overrides = a.level.overrides();
    // Fail on a bad workload/override before starting any server.
    let plan = workload.plan(&overrides)?;
    let mode = a.level.mode();
    let live = Arc::new(LiveStats::default());
    let spec = LoadSpec {
        workload: workload.clone(),
        overrides,
        mode,
        run: RunOptions { max_in_flight: a.max_concurrency, live: Some(live.clone()), start: None },
        summary: SummaryOptions { max_lag_s: a.max_lag_ms / 1e3 },
    };
    let target = target_from_args(&a)?;
    let runtime = if a.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(a.client_threads)
            .enable_all()
            .build()
    }
    .context("starting the load generator's runtime")?;
    let timeout = Duration::from_secs_f64(a.timeout_s.max(0.001));
    let (outcome, env) = runtime.block_on(async {
        let recorder = a.record.prepare().await?;
        let running = target.start().await?;
        eprintln!("dyno load: {} → {}", workload.name, running.description);
        let running_description = running.description.clone();
        let pool = a.level.concurrency.or(a.max_concurrency).unwrap_or(256).max(64);
        let client = Client::new(running.spec.clone(), pool, timeout)?;
        let total = plan_total(&plan);
        let _progress = (!a.no_progress && matches!(spec.mode, LoadMode::Single))
            .then(|| Progress::start(live.clone(), total, workload.name.clone()));
        let outcome = run_load(&client, &spec).await?;
        drop(running);
        if let Some(recorder) = &recorder {
            let (scenarios, skipped) = outcome_results(&target, &spec, &outcome, None)?;
            for reason in skipped {
                eprintln!("{reason}");
            }
            if scenarios.is_empty() {
                eprintln!("nothing recorded: no valid run (see the report)");
            } else {
                recorder.record("load", "manual", None, &scenarios).await?;
            }
        }
        Ok::<_, anyhow::Error>((outcome, environment(&running_description, &a)))
    })?;
    print!("{}", render_outcome(&outcome));
    if let Some(path) = &a.json {
        let json = outcome_json(&spec.mode, &outcome, &env)?;
        std::fs::write(path, serde_json::to_string_pretty(&json)? + "\n")
            .with_context(|| format!("writing the JSON report to {}", path.display()))?;
    }
    Ok(())
}

/// Requests a plan sends, when known ahead.
fn plan_total(plan: &dyno_workloads::Plan) -> Option<usize> {
    if plan.arrivals_s.is_empty() { plan.max_requests } else { Some(plan.arrivals_s.len()) }
}

/// The target the arguments name (not started).
fn target_from_args(a: &LoadArgs) -> Result<Target> {
    Ok(match a.target.as_str() {
        "builtin" => {
            let (model, config) = a.setup.load()?;
            Target::Builtin { model, config: Box::new(config), checkpoint: a.checkpoint.clone() }
        }
        "null" => Target::Null(NullServerConfig {
            spin_us: a.null_spin_us,
            ..NullServerConfig::new(a.null_ttft_ms, a.null_itl_ms)
        }),
        url if url.starts_with("http://") || url.starts_with("https://") => Target::Url {
            base_url: url.to_owned(),
            model: a.served_model.clone(),
            token_prompts: a.token_prompts,
        },
        other => bail!("--target {other}: expected builtin, null or an http(s):// URL"),
    })
}

/// The environment a report records: this machine, the target, the dyno version.
fn environment(target_description: &str, a: &LoadArgs) -> serde_json::Value {
    serde_json::json!({
        "dyno_version": env!("CARGO_PKG_VERSION"),
        "machine": dyno_kernels::machine::MachineId::detect(),
        "target": target_description,
        "workload": a.workload,
        "client_threads": a.client_threads,
    })
}
