//! `dyno model info`, `dyno engine bench` and `dyno serve`: arguments, wiring and printing.
//! The model, engine, benchmark and server live in `dyno_engine`.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use dyno_engine::bench::{BenchOptions, render};
use dyno_engine::{EngineConfig, ModelConfig, WeightFormat};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `dyno model`.
#[derive(Debug, Args)]
pub struct ModelArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ModelCommand,
}

/// `dyno model` subcommands.
#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Parameter counts and memory footprint per quantization level.
    Info(ModelInfoArgs),
}

/// Arguments of `dyno model info`.
#[derive(Debug, Args)]
pub struct ModelInfoArgs {
    /// Model preset (mixtral-8x7b alias mixtral, mixtral-8x22b, mixtral-mini, mixtral-tiny)
    /// or a model YAML file.
    pub model: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `dyno engine`.
#[derive(Debug, Args)]
pub struct EngineArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: EngineCommand,
}

/// `dyno engine` subcommands.
#[derive(Debug, Subcommand)]
pub enum EngineCommand {
    /// Prefill and decode throughput at several batch sizes, against the bandwidth roofline.
    Bench(EngineBenchArgs),
}

/// Model and engine configuration shared by `engine bench` and `serve`.
#[derive(Debug, Args)]
pub struct EngineSetup {
    /// Model preset or model YAML file.
    #[arg(long, default_value = "mixtral-mini")]
    pub model: String,
    /// Engine config YAML (weights, KV cache, batch policy, parallel layout, kernels).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override the config's weight format: f32, bf16, int8, int4 (group 32), int4-g64, int4-g128.
    #[arg(long, value_parser = weight_format)]
    pub weights: Option<WeightFormat>,
    /// Override the config's kernel threads.
    #[arg(long)]
    pub threads: Option<usize>,
}

fn weight_format(s: &str) -> Result<WeightFormat, String> {
    WeightFormat::parse(s).ok_or_else(|| {
        format!(
            "`{s}` is not a weight format (f32, bf16, int8, int4, int4-g32, int4-g64, int4-g128)"
        )
    })
}

impl EngineSetup {
    /// The model and the engine config, validated together.
    pub fn load(&self) -> Result<(ModelConfig, EngineConfig)> {
        let model = ModelConfig::resolve(&self.model)?;
        let (mut config, origin) = match &self.config {
            Some(path) => (EngineConfig::from_yaml_file(path)?, path.display().to_string()),
            None => (EngineConfig::default(), "default engine config".to_string()),
        };
        if let Some(w) = self.weights {
            config.set_weight_format(w);
        }
        if let Some(t) = self.threads {
            config.threads = t;
        }
        config.validate_for(&model, &origin)?;
        Ok((model, config))
    }
}

/// Arguments of `dyno engine bench`.
#[derive(Debug, Args)]
pub struct EngineBenchArgs {
    /// Model and engine.
    #[command(flatten)]
    pub setup: EngineSetup,
    /// Batch sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,8,32")]
    pub batches: Vec<usize>,
    /// Prompt tokens per sequence.
    #[arg(long, default_value_t = 32)]
    pub prompt_len: usize,
    /// Decode steps timed per batch size.
    #[arg(long, default_value_t = 16)]
    pub decode_steps: usize,
    /// Skip the KL divergence against the f32 model.
    #[arg(long)]
    pub no_kl: bool,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Arguments of `dyno serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Model and engine.
    #[command(flatten)]
    pub setup: EngineSetup,
    /// A Hugging Face Mixtral checkpoint directory (config.json + *.safetensors); its
    /// config.json replaces --model. Without it the weights are random from the config's seed.
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0 picks a free one; the address is printed).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,
    /// Seconds in-flight requests get to finish after SIGINT/SIGTERM before they are aborted.
    #[arg(long, default_value_t = 10)]
    pub grace_s: u64,
}

/// Runs `dyno serve`: loads the model, starts the engine replicas and serves HTTP until
/// SIGINT or SIGTERM.
pub fn run_serve(a: ServeArgs) -> Result<()> {
    use dyno_engine::engine::EngineHandle;
    use std::io::Write;
    use std::sync::Arc;
    let (model, config) = a.setup.load()?;
    let (handle, model) =
        EngineHandle::start_with_weights(&model, &config, a.checkpoint.as_deref())?;
    let handle = Arc::new(handle);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the HTTP runtime")?;
    let grace = Duration::from_secs(a.grace_s);
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((a.host.as_str(), a.port))
            .await
            .with_context(|| format!("binding {}:{}", a.host, a.port))?;
        let addr = listener.local_addr()?;
        println!(
            "dyno serve: {} ({}) listening on http://{addr}",
            model.name,
            config.weight_format()
        );
        std::io::stdout().flush()?;
        let backend: Arc<dyn dyno_engine::api::Backend> = handle.clone();
        dyno_engine::server::serve(backend, listener, dyno_engine::server::shutdown_signal(), grace)
            .await
            .context("serving HTTP")
    })?;
    println!("dyno serve: stopped");
    Ok(())
}

/// Runs `dyno model`.
pub fn run_model(args: ModelArgs) -> Result<()> {
    match args.command {
        ModelCommand::Info(a) => model_info(&a),
    }
}

fn model_info(a: &ModelInfoArgs) -> Result<()> {
    let m = ModelConfig::resolve(&a.model)?;
    let p = m.params();
    let formats = WeightFormat::all();
    if a.json {
        let per_format: Vec<serde_json::Value> = formats
            .iter()
            .map(|&f| {
                serde_json::json!({
                    "weights": f.label(),
                    "bits_per_weight": f.bytes_per_weight() * 8.0,
                    "weight_bytes": m.weight_bytes(f),
                    "active_bytes_per_token": m.active_weight_bytes(f),
                })
            })
            .collect();
        let v = serde_json::json!({
            "config": m,
            "params": p,
            "kv_bytes_per_token": m.kv_bytes_per_token(),
            "formats": per_format,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{}: hidden {}, {} layers, {} heads / {} KV heads × {}, {} experts (top {}) of width {}, vocab {}, context {}",
        m.name,
        m.hidden,
        m.layers,
        m.heads,
        m.kv_heads,
        m.head_dim,
        m.experts,
        m.top_k,
        m.expert_width,
        m.vocab,
        m.max_context
    );
    println!(
        "parameters: {:.3} B total, {:.3} B active per token ({:.3} B in linear layers, {:.3} B kept f32)",
        p.total as f64 / 1e9,
        p.active as f64 / 1e9,
        p.linear as f64 / 1e9,
        p.f32_kept as f64 / 1e9
    );
    println!(
        "KV cache: {:.1} KiB per token (f32, K and V, all layers)\n",
        m.kv_bytes_per_token() as f64 / 1024.0
    );
    println!("{:<10} {:>8} {:>14} {:>22}", "weights", "bits/w", "memory", "read per decode token");
    for f in formats {
        println!(
            "{:<10} {:>8.2} {:>14} {:>22}",
            f.label(),
            f.bytes_per_weight() * 8.0,
            human_bytes(m.weight_bytes(f)),
            human_bytes(m.active_weight_bytes(f))
        );
    }
    Ok(())
}

fn human_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1e9 { format!("{:.2} GB", b / 1e9) } else { format!("{:.1} MB", b / 1e6) }
}

/// Runs `dyno engine`.
pub fn run_engine(args: EngineArgs) -> Result<()> {
    match args.command {
        EngineCommand::Bench(a) => engine_bench(&a),
    }
}

fn engine_bench(a: &EngineBenchArgs) -> Result<()> {
    let (model, config) = a.setup.load()?;
    if let Some(b) = a.batches.iter().find(|&&b| b == 0) {
        anyhow::bail!("--batches: batch size {b} must be at least 1");
    }
    let opts = BenchOptions {
        batches: a.batches.clone(),
        prompt_len: a.prompt_len.max(1),
        decode_steps: a.decode_steps.max(1),
        kl: !a.no_kl,
        bandwidth_budget: Duration::from_millis(1500),
    };
    let report = dyno_engine::bench::run(&model, &config, &opts)?;
    print!("{}", render(&report));
    if let Some(path) = &a.json {
        write_json(path, &serde_json::to_string_pretty(&report)?)?;
    }
    Ok(())
}

fn write_json(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
