//! `dyno engine bench`: prefill and decode throughput of the engine at several batch sizes,
//! each decode figure beside its bandwidth roofline, and the quantization's KL divergence.
//!
//! The roofline of a decode step is the bytes it must read (the weights it uses — for a
//! mixture of experts, only the experts its tokens were routed to — plus the KV cache of every
//! sequence) divided by the measured read bandwidth of this machine; the engine cannot decode
//! faster than that, so `measured / roofline` says how much of the machine it uses.

use crate::api::GenerateRequest;
use crate::config::{BatchPolicy, EngineConfig, Priority};
use crate::engine::Engine;
use crate::error::EngineError;
use crate::model::Model;
use crate::model_config::{ModelConfig, WeightFormat};
use crate::quality::{KlReport, kl_divergence};
use crate::weights::RandomWeights;
use dyno_kernels::machine::{Bandwidth, DEFAULT_BANDWIDTH_BYTES, memory_bandwidth};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Batch sizes (concurrent sequences).
    pub batches: Vec<usize>,
    /// Prompt tokens per sequence.
    pub prompt_len: usize,
    /// Decode steps timed per batch size.
    pub decode_steps: usize,
    /// Compare against the f32 model (KL divergence) when the weights are quantized.
    pub kl: bool,
    /// Time spent measuring memory bandwidth.
    pub bandwidth_budget: Duration,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            batches: vec![1, 8, 32],
            prompt_len: 32,
            decode_steps: 16,
            kl: true,
            bandwidth_budget: Duration::from_millis(1500),
        }
    }
}

/// One batch size's figures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchRow {
    /// Concurrent sequences.
    pub batch: usize,
    /// Prompt tokens per second while prefilling the whole batch.
    pub prefill_tok_s: f64,
    /// Output tokens per second over the timed decode steps.
    pub decode_tok_s: f64,
    /// Mean wall time of one decode step, ms.
    pub decode_step_ms: f64,
    /// Mean bytes one decode step read (weights used + KV cache).
    pub decode_bytes_per_step: f64,
    /// Output tokens per second if every step ran at the measured read bandwidth.
    pub roofline_tok_s: f64,
    /// `decode_tok_s / roofline_tok_s`.
    pub of_roofline: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Model name.
    pub model: String,
    /// Weight format label.
    pub weights: String,
    /// Kernel threads.
    pub threads: usize,
    /// Bytes of weights held.
    pub weight_bytes: usize,
    /// This machine's measured bandwidth.
    pub bandwidth: Bandwidth,
    /// One row per batch size.
    pub rows: Vec<BenchRow>,
    /// KL divergence against f32 (absent for f32 itself or when not asked).
    pub kl: Option<KlReport>,
}

/// Loads `model` with random weights at `config` and measures it.
pub fn run(
    model: &ModelConfig,
    config: &EngineConfig,
    opts: &BenchOptions,
) -> Result<BenchReport, EngineError> {
    config.validate_for(model, "engine config")?;
    let weights = RandomWeights { seed: config.seed };
    let loaded = Arc::new(Model::load(model, &weights, config)?);
    let bandwidth =
        memory_bandwidth(config.threads, DEFAULT_BANDWIDTH_BYTES, opts.bandwidth_budget);
    let read_bw = bandwidth.read.value * 1e9;
    let mut rows = Vec::new();
    for &batch in &opts.batches {
        rows.push(bench_batch(&loaded, config, batch, opts, read_bw)?);
    }
    let kl = if opts.kl && config.weight_format() != WeightFormat::F32 {
        let mut f32_config = config.clone();
        f32_config.set_weight_format(WeightFormat::F32);
        let reference = Model::load(model, &weights, &f32_config)?;
        Some(kl_divergence(&reference, &loaded, None)?)
    } else {
        None
    };
    Ok(BenchReport {
        model: model.name.clone(),
        weights: config.weight_format().label(),
        threads: config.threads,
        weight_bytes: loaded.weight_bytes(),
        bandwidth,
        rows,
        kl,
    })
}

/// Prefill then decode `batch` sequences together.
fn bench_batch(
    model: &Arc<Model>,
    config: &EngineConfig,
    batch: usize,
    opts: &BenchOptions,
    read_bw: f64,
) -> Result<BenchRow, EngineError> {
    let cfg = model.config();
    let seq_len = opts.prompt_len + opts.decode_steps + 2;
    let mut config = config.clone();
    config.batch = BatchPolicy::Continuous {
        max_num_seqs: batch,
        max_num_batched_tokens: (batch * opts.prompt_len).max(batch),
        prefill_chunk: 0,
        priority: Priority::DecodeFirst,
    };
    let blocks = batch * seq_len.div_ceil(config.kv_block_size) + 1;
    let block_mib = (config.kv_block_bytes(cfg) as usize * blocks).div_ceil(1 << 20);
    config.kv_pool_mib = config.kv_pool_mib.max(block_mib);
    let mut engine = Engine::from_model(model.clone(), &config);
    for s in 0..batch {
        let prompt =
            (0..opts.prompt_len as u32).map(|i| (i * 31 + s as u32 * 7) % 250 + 1).collect();
        let req = GenerateRequest {
            prompt,
            max_tokens: opts.decode_steps + 1,
            min_tokens: 0,
            ignore_eos: true,
            temperature: 0.0,
            seed: None,
        };
        engine.add(req, None, 0.0).map_err(|e| {
            EngineError::Config(crate::ConfigError::new("engine bench", "batch", e.to_string()))
        })?;
    }
    let epoch = Instant::now();
    let mut prefill_tokens = 0;
    let prefill_start = Instant::now();
    while prefill_tokens < batch * opts.prompt_len {
        prefill_tokens += engine.step(epoch.elapsed().as_secs_f64())?.tokens_computed;
    }
    let prefill_s = prefill_start.elapsed().as_secs_f64();
    let (mut decode_s, mut bytes, mut tokens, mut steps) = (0.0, 0.0, 0usize, 0usize);
    while steps < opts.decode_steps && engine.has_work() {
        let t0 = Instant::now();
        let r = engine.step(epoch.elapsed().as_secs_f64())?;
        decode_s += t0.elapsed().as_secs_f64();
        bytes += (r.weight_bytes + r.kv_bytes) as f64;
        tokens += r.sampled.len();
        steps += 1;
    }
    let steps_f = steps.max(1) as f64;
    let decode_tok_s = tokens as f64 / decode_s.max(1e-12);
    let bytes_per_step = bytes / steps_f;
    let roofline_tok_s = (tokens as f64 / steps_f) / (bytes_per_step / read_bw);
    Ok(BenchRow {
        batch,
        prefill_tok_s: prefill_tokens as f64 / prefill_s.max(1e-12),
        decode_tok_s,
        decode_step_ms: decode_s / steps_f * 1e3,
        decode_bytes_per_step: bytes_per_step,
        roofline_tok_s,
        of_roofline: decode_tok_s / roofline_tok_s,
    })
}

/// The report as an aligned table.
pub fn render(r: &BenchReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "model {}  weights {} ({:.1} MiB)  threads {}",
        r.model,
        r.weights,
        r.weight_bytes as f64 / (1 << 20) as f64,
        r.threads
    );
    let _ = writeln!(
        s,
        "memory read bandwidth: {:.1} GB/s  [{}]",
        r.bandwidth.read.value, r.bandwidth.read.method
    );
    let _ = writeln!(
        s,
        "\n{:>5}  {:>12}  {:>11}  {:>9}  {:>13}  {:>13}  {:>8}",
        "batch", "prefill tok/s", "decode tok/s", "step ms", "MB/step", "roofline tok/s", "of roof"
    );
    for row in &r.rows {
        let _ = writeln!(
            s,
            "{:>5}  {:>12.1}  {:>11.1}  {:>9.2}  {:>13.1}  {:>13.1}  {:>7.1}%",
            row.batch,
            row.prefill_tok_s,
            row.decode_tok_s,
            row.decode_step_ms,
            row.decode_bytes_per_step / 1e6,
            row.roofline_tok_s,
            row.of_roofline * 100.0
        );
    }
    if let (Some(first), Some(last)) = (r.rows.first(), r.rows.last())
        && r.rows.len() > 1
    {
        let _ = writeln!(
            s,
            "\nbatch {} vs batch {} decode throughput: {:.2}x",
            last.batch,
            first.batch,
            last.decode_tok_s / first.decode_tok_s.max(1e-12)
        );
    }
    match &r.kl {
        Some(kl) => {
            let _ = writeln!(
                s,
                "KL divergence vs f32: mean {:.3e} nats, max {:.3e} over {} positions",
                kl.mean, kl.max, kl.positions
            );
        }
        None => {
            let _ = writeln!(s, "KL divergence vs f32: - (f32 weights, or --no-kl)");
        }
    }
    s
}
