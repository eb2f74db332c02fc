//! The first level of tuning: kernel parameters per op shape of the model, found by the
//! kernel tuner (`dyno kernels tune`'s search, correctness gate and cache) before any system
//! trial runs. Every system trial then inherits them through the base config: f32 GEMM tiles
//! per op (`kernels.gemm_per_op`) and the attention tiles (`kernels.attention`).

use dyno_engine::{EngineConfig, ModelConfig};
use dyno_kernels::tune::attention::{
    AttentionShape, AttentionTuneOptions, OurAttention, tune_attention,
};
use dyno_kernels::tune::timing::TimingOptions;
use dyno_kernels::tune::{GemmShape, GemmTuneOptions, KernelCache, OurGemm, tune_gemm};
use serde::Serialize;
use std::time::Duration;

/// How much effort the kernel level spends.
#[derive(Debug, Clone)]
pub struct KernelStageOptions {
    /// Candidates per shape (cached ones included).
    pub budget: usize,
    /// Activation rows of the dense ops' shapes (a prefill chunk).
    pub rows: usize,
    /// Timing budget per candidate.
    pub timing_budget: Duration,
}

impl Default for KernelStageOptions {
    fn default() -> Self {
        Self { budget: 12, rows: 256, timing_budget: Duration::from_millis(150) }
    }
}

/// What the kernel level chose for one op.
#[derive(Debug, Clone, Serialize)]
pub struct KernelChoice {
    /// The op (`qkv_proj`, …, `attention`).
    pub op: String,
    /// Its shape, as text.
    pub shape: String,
    /// Best over defaults, when the defaults ran.
    pub speedup: Option<f64>,
    /// Candidates measured now.
    pub measured: usize,
    /// Candidates taken from the cache.
    pub cached: usize,
}

/// The f32 GEMM shapes of `model`'s ops at `rows` activation rows: experts see their share of
/// the routed rows, the output head one row per sampling sequence.
pub fn op_shapes(model: &ModelConfig, rows: usize, seqs: usize) -> Vec<(&'static str, GemmShape)> {
    let (h, hd, w) = (model.hidden, model.head_dim, model.expert_width);
    let expert_rows = (rows * model.top_k).div_ceil(model.experts.max(1)).max(16);
    vec![
        ("qkv_proj", GemmShape::new(rows, (model.heads + 2 * model.kv_heads) * hd, h)),
        ("o_proj", GemmShape::new(rows, h, model.heads * hd)),
        ("expert_up", GemmShape::new(expert_rows, 2 * w, h)),
        ("expert_down", GemmShape::new(expert_rows, h, w)),
        ("lm_head", GemmShape::new(seqs.max(16), model.vocab, h)),
    ]
}

/// Tunes every op shape of `model` for `base`'s thread count and KV block size, reusing and
/// extending `cache`; returns `base` with the winners written in, and what was chosen.
pub fn tune_kernels(
    model: &ModelConfig,
    base: &EngineConfig,
    opts: &KernelStageOptions,
    cache: &mut KernelCache,
    mut progress: impl FnMut(&KernelChoice),
) -> Result<(EngineConfig, Vec<KernelChoice>), String> {
    let machine = dyno_kernels::machine::MachineId::detect().key();
    let timing = TimingOptions { budget: opts.timing_budget, ..TimingOptions::default() };
    let mut config = base.clone();
    let mut choices = Vec::new();
    for (op, shape) in op_shapes(model, opts.rows, 32) {
        let gemm_opts = GemmTuneOptions {
            budget: opts.budget,
            threads: base.threads,
            timing,
            ..GemmTuneOptions::default()
        };
        let r = tune_gemm(shape, &gemm_opts, &OurGemm, cache, &machine)
            .map_err(|e| format!("kernel level: {op} {shape:?}: {e}"))?;
        config.kernels.gemm_per_op.insert(op.to_string(), r.best);
        let choice = KernelChoice {
            op: op.to_string(),
            shape: format!("{}x{}x{}", shape.m, shape.n, shape.k),
            speedup: r.speedup,
            measured: r.measured,
            cached: r.cached,
        };
        progress(&choice);
        choices.push(choice);
    }
    let group = model.heads / model.kv_heads.max(1);
    let shape = AttentionShape::prefill(opts.rows, opts.rows, group, model.head_dim)
        .with_block_size(base.kv_block_size);
    let att_opts = AttentionTuneOptions {
        budget: opts.budget,
        threads: base.threads,
        timing,
        ..AttentionTuneOptions::default()
    };
    let r = tune_attention(&shape, &att_opts, &OurAttention, cache, &machine)
        .map_err(|e| format!("kernel level: attention: {e}"))?;
    config.kernels.attention = r.best;
    let choice = KernelChoice {
        op: "attention".into(),
        shape: format!("prefill q={} g={group} d={}", opts.rows, model.head_dim),
        speedup: r.speedup,
        measured: r.tally.measured,
        cached: r.tally.cached,
    };
    progress(&choice);
    choices.push(choice);
    Ok((config, choices))
}
