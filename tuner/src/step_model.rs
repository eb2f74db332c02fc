//! The step-time model: how long one scheduler step of a model under a config takes on a
//! hardware profile.
//!
//! One step computes some prefill chunks and some decodes (a [`StepShape`]). Every op of the
//! forward pass is costed on one rank as a roofline,
//! `max(flops ÷ peak, bytes ÷ bandwidth) ÷ efficiency(class, size)`, with weight bytes at the
//! config's format, KV reads at the cache dtype, and for the mixture of experts the expected
//! number of experts a batch touches per layer. Ranks work in parallel, so one rank's share
//! is the critical path. Then:
//!
//! - tensor parallel: a ring all-reduce, `2(p−1)/p · S ÷ bw + latency`, after attention and
//!   after the experts (twice per layer);
//! - expert parallel: an all-to-all to dispatch tokens to their experts' ranks and one to
//!   combine them, `(p−1)/p · S ÷ bw + latency` each, in place of the second all-reduce;
//! - pipeline parallel: the batch runs as `m = min(pp, sequences)` micro-batches through
//!   `pp` stages, `(m + pp − 1)` stage times, plus a hop between stages;
//! - a fixed per-step overhead and a per-sampled-token overhead from the profile.
//!
//! A CPU profile's "device" is the socket: a rank with `t` threads gets `t ÷ cores` of the
//! peak and `min(t · one core's bandwidth, total ÷ concurrent ranks)` of the bandwidth.
//!
//! What is *not* modelled: prefix caching (the engine has none), overlap of communication
//! with compute, routing skew beyond the uniform (or Zipf-like `routing_skew`) default,
//! and cache effects of weights that fit on chip.

use dyno_engine::ModelConfig;
use dyno_engine::config::{EngineConfig, KvDtype};
use dyno_engine::model_config::WeightFormat;
use dyno_engine::scheduler::Step;
use std::sync::OnceLock;

use crate::hardware::{DeviceKind, HardwareProfile, OpClass};

/// What one step computes, aggregated so that costing it does not walk the items again.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct StepShape {
    /// Tokens computed (prefill chunk tokens + decodes).
    pub tokens: usize,
    /// Sequences in the step.
    pub sequences: usize,
    /// Items that sample a token (rows of the output head).
    pub samples: usize,
    /// Decode items (one token each).
    pub decodes: usize,
    /// Σ context length (cached tokens + 1) over decode items.
    pub decode_context: f64,
    /// Prefill items (chunks of more than one token, or a first one-token prompt).
    pub prefills: usize,
    /// Σ chunk tokens over prefill items.
    pub prefill_tokens: usize,
    /// Σ query–key pairs of causal attention over prefill items: for a chunk of `L` tokens
    /// after `s` cached ones, `L·s + L(L+1)/2`.
    pub prefill_pairs: f64,
    /// Σ KV tokens read over prefill items (`s + L`).
    pub prefill_kv_tokens: f64,
}

impl StepShape {
    /// The shape of a scheduled step.
    pub fn of(step: &Step) -> Self {
        let mut s = StepShape::default();
        for item in &step.items {
            s.add(item.start, item.len, item.samples);
        }
        s
    }

    /// Adds one item: positions `start..start + len`, sampling or not.
    pub fn add(&mut self, start: usize, len: usize, samples: bool) {
        self.tokens += len;
        self.sequences += 1;
        self.samples += usize::from(samples);
        if len == 1 && start > 0 {
            self.decodes += 1;
            self.decode_context += (start + 1) as f64;
        } else {
            let (s, l) = (start as f64, len as f64);
            self.prefills += 1;
            self.prefill_tokens += len;
            self.prefill_pairs += l * s + l * (l + 1.0) / 2.0;
            self.prefill_kv_tokens += s + l;
        }
    }

    /// A decode-only step of `batch` sequences at context `context` each.
    pub fn decode(batch: usize, context: usize) -> Self {
        let mut s = StepShape::default();
        for _ in 0..batch {
            s.add(context.saturating_sub(1).max(1), 1, true);
        }
        s
    }

    /// A step prefilling `batch` prompts of `tokens` tokens each from position 0.
    pub fn prefill(batch: usize, tokens: usize) -> Self {
        let mut s = StepShape::default();
        for _ in 0..batch {
            s.add(0, tokens, true);
        }
        s
    }

    /// This shape cut into `parts` equal micro-batches (counts divided, at least one
    /// sequence each).
    fn split(&self, parts: usize) -> Self {
        let p = parts.max(1) as f64;
        let div = |x: usize| ((x as f64 / p).ceil() as usize).max(usize::from(x > 0));
        StepShape {
            tokens: div(self.tokens),
            sequences: div(self.sequences),
            samples: div(self.samples),
            decodes: div(self.decodes),
            decode_context: self.decode_context / p,
            prefills: div(self.prefills),
            prefill_tokens: div(self.prefill_tokens),
            prefill_pairs: self.prefill_pairs / p,
            prefill_kv_tokens: self.prefill_kv_tokens / p,
        }
    }
}

/// One op's share of a step, for breakdowns and tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OpCost {
    /// The op (`qkv_proj`, `attention_decode`, `tp_all_reduce`, …).
    pub name: &'static str,
    /// Floating-point operations on the critical rank.
    pub flops: f64,
    /// Bytes the critical rank moves (memory, or the link for collectives).
    pub bytes: f64,
    /// Seconds, efficiency and latency included, for all layers of one stage.
    pub seconds: f64,
}

/// A step's predicted time and where it goes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StepTime {
    /// Seconds from the step's start to its tokens.
    pub seconds: f64,
    /// Per-op costs of one micro-batch through one stage (the pipeline factor and the
    /// overheads are applied on top).
    pub ops: Vec<OpCost>,
}

/// The per-rank compute and bandwidth a config gets from a profile.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankResources {
    /// FLOP/s of the compute dtype used by linear layers.
    pub linear_peak: f64,
    /// f32 (CPU) or bf16 (GPU) FLOP/s for attention.
    pub attention_peak: f64,
    /// Bytes per second.
    pub bandwidth: f64,
}

/// The model of one config on one profile; [`StepModel::step_time`] costs steps.
#[derive(Debug, Clone)]
pub struct StepModel {
    profile: HardwareProfile,
    model: ModelConfig,
    format: WeightFormat,
    kv_dtype: KvDtype,
    tp: usize,
    ep: usize,
    pp: usize,
    resources: RankResources,
    /// Zipf-like skew of expert routing: 0 is uniform.
    routing_skew: f64,
    /// Seconds of one stage's token-only ops (everything but attention) by micro-batch
    /// tokens, filled on first use: a simulated run costs hundreds of thousands of steps
    /// whose token counts repeat, while their attention (context lengths) does not.
    token_stage_s: Vec<OnceLock<f64>>,
}

/// Token counts up to which [`StepModel`] memoizes token-only stage times.
const TOKEN_MEMO: usize = 16_384;

impl StepModel {
    /// The step model of `config` serving `model` on `profile`.
    pub fn new(profile: &HardwareProfile, model: &ModelConfig, config: &EngineConfig) -> Self {
        let p = &config.parallel;
        let format = config.weight_format();
        let tflops = |t: f64| t * 1e12;
        let gpu_linear_peak = tflops(profile.peak_tflops.bf16);
        let resources = match (profile.kind, profile.cpu) {
            (DeviceKind::Cpu, Some(cpu)) => {
                let ranks = (p.ranks_per_replica() * p.dp).max(1);
                let threads = config.threads.max(1).min(cpu.cores);
                let share = threads as f64 / cpu.cores as f64;
                let total_bw = profile.memory_bandwidth_gbs * 1e9;
                let bandwidth = (cpu.bandwidth_one_core_gbs * 1e9 * threads as f64)
                    .min(total_bw / ranks as f64);
                let linear_tflops = match format {
                    WeightFormat::Int8 | WeightFormat::Int4 { .. } => profile.peak_tflops.int8,
                    _ => profile.peak_tflops.f32,
                };
                RankResources {
                    linear_peak: tflops(linear_tflops) * share,
                    attention_peak: tflops(profile.peak_tflops.f32) * share,
                    bandwidth,
                }
            }
            _ => RankResources {
                linear_peak: gpu_linear_peak,
                attention_peak: gpu_linear_peak,
                bandwidth: profile.memory_bandwidth_gbs * 1e9,
            },
        };
        Self {
            profile: profile.clone(),
            model: model.clone(),
            format,
            kv_dtype: config.kv_dtype,
            tp: p.tp.max(1),
            ep: p.ep.max(1),
            pp: p.pp.max(1),
            resources,
            routing_skew: 0.0,
            token_stage_s: Self::empty_memo(),
        }
    }

    fn empty_memo() -> Vec<OnceLock<f64>> {
        (0..=TOKEN_MEMO).map(|_| OnceLock::new()).collect()
    }

    /// Routes tokens to experts with a Zipf-like skew `s ≥ 0` (expert `i` chosen ∝ 1/(i+1)^s)
    /// instead of uniformly: fewer distinct experts are touched per batch.
    pub fn with_routing_skew(mut self, s: f64) -> Self {
        self.routing_skew = s.max(0.0);
        self.token_stage_s = Self::empty_memo();
        self
    }

    /// The per-rank figures this model uses.
    pub fn resources(&self) -> RankResources {
        self.resources
    }

    /// The profile.
    pub fn profile(&self) -> &HardwareProfile {
        &self.profile
    }

    /// Seconds of one step of `shape` (what [`StepModel::step_time`] says, without the
    /// breakdown and with token-only ops memoized).
    pub fn seconds(&self, shape: &StepShape) -> f64 {
        if shape.tokens == 0 {
            return 0.0;
        }
        let micro = self.pp.min(shape.sequences).max(1);
        let part = if micro > 1 { shape.split(micro) } else { *shape };
        let attention: f64 = self.attention_ops(&part).iter().flatten().map(|o| o.seconds).sum();
        let stage = self.token_stage_seconds(part.tokens) + attention * self.layers_per_stage();
        self.finish(shape, &part, micro, stage, self.head_op(shape.samples).seconds)
    }

    /// The step's time and its per-op breakdown.
    pub fn step_time(&self, shape: &StepShape) -> StepTime {
        if shape.tokens == 0 {
            return StepTime::default();
        }
        let micro = self.pp.min(shape.sequences).max(1);
        let part = if micro > 1 { shape.split(micro) } else { *shape };
        let layers_per_stage = self.layers_per_stage();
        let mut ops = self.token_ops(part.tokens as f64);
        let attention = self.attention_ops(&part).into_iter().flatten();
        ops.splice(1..1, attention);
        for op in &mut ops {
            op.flops *= layers_per_stage;
            op.bytes *= layers_per_stage;
            op.seconds *= layers_per_stage;
        }
        let stage: f64 = ops.iter().map(|o| o.seconds).sum();
        let head = self.head_op(shape.samples);
        let seconds = self.finish(shape, &part, micro, stage, head.seconds);
        ops.push(head);
        if self.pp > 1 {
            let bytes = self.pp_message(&part);
            ops.push(OpCost { name: "pp_send", flops: 0.0, bytes, seconds: self.link(bytes, 1.0) });
        }
        StepTime { seconds, ops }
    }

    /// Layers on one pipeline stage.
    fn layers_per_stage(&self) -> f64 {
        self.model.layers.div_ceil(self.pp) as f64
    }

    /// Bytes one micro-batch sends to the next pipeline stage.
    fn pp_message(&self, part: &StepShape) -> f64 {
        part.tokens as f64 * self.model.hidden as f64 * f64::from(self.profile.activation_bytes)
    }

    /// A step from one stage's time: the pipeline's `(m + pp − 1)` stage times, the output
    /// head, the hops between stages, and the profile's overheads.
    fn finish(
        &self,
        shape: &StepShape,
        part: &StepShape,
        micro: usize,
        stage: f64,
        head: f64,
    ) -> f64 {
        let mut seconds = (micro + self.pp - 1) as f64 * stage + head;
        if self.pp > 1 {
            seconds += (micro + self.pp - 2) as f64 * self.link(self.pp_message(part), 1.0);
        }
        let c = &self.profile.calibration;
        seconds + c.step_overhead_us * 1e-6 + shape.samples as f64 * c.sample_overhead_us * 1e-6
    }

    /// One stage's token-only ops at `tokens` micro-batch tokens, seconds (memoized).
    fn token_stage_seconds(&self, tokens: usize) -> f64 {
        let compute = || {
            let layer: f64 = self.token_ops(tokens as f64).iter().map(|o| o.seconds).sum();
            layer * self.layers_per_stage()
        };
        match self.token_stage_s.get(tokens) {
            Some(cell) => *cell.get_or_init(compute),
            None => compute(),
        }
    }

    /// Bytes of the KV cache per element.
    fn kv_bytes(&self) -> f64 {
        match self.kv_dtype {
            KvDtype::F32 => 4.0,
        }
    }

    /// The roofline of one op on one rank.
    fn roofline(&self, class: OpClass, size: f64, flops: f64, bytes: f64, peak: f64) -> f64 {
        let bound = (flops / peak).max(bytes / self.resources.bandwidth);
        bound / self.profile.efficiency(class, size)
    }

    /// A linear layer on one rank: `rows` activation rows × `[out, inp]` weights.
    fn linear(
        &self,
        name: &'static str,
        rows: f64,
        out: f64,
        inp: f64,
        format: WeightFormat,
    ) -> OpCost {
        let act = f64::from(self.profile.activation_bytes);
        let flops = 2.0 * rows * out * inp;
        let bytes = out * inp * format.bytes_per_weight() + rows * (out + inp) * act;
        let seconds =
            self.roofline(OpClass::linear(format), rows, flops, bytes, self.resources.linear_peak);
        OpCost { name, flops, bytes, seconds }
    }

    /// Expected distinct experts a batch of `tokens` touches in one layer, of `experts`, each
    /// token picking `top_k` (uniform: `E·(1 − (1 − k/E)^T)`; skewed: summed per expert).
    pub fn expected_experts(&self, tokens: f64) -> f64 {
        let (e, k) = (self.model.experts as f64, self.model.top_k as f64);
        if self.model.experts <= 1 {
            return e;
        }
        if self.routing_skew == 0.0 {
            return e * (1.0 - (1.0 - k / e).powf(tokens));
        }
        let weights: Vec<f64> = (0..self.model.experts)
            .map(|i| 1.0 / ((i + 1) as f64).powf(self.routing_skew))
            .collect();
        let total: f64 = weights.iter().sum();
        weights.iter().map(|w| 1.0 - (1.0 - (k * w / total).min(1.0)).powf(tokens)).sum()
    }

    /// One layer's ops on the critical rank that depend only on the step's `t` tokens, in
    /// forward order: the QKV projection (attention goes right after it), the output
    /// projection, the router, the experts, the elementwise work and the collectives.
    fn token_ops(&self, t: f64) -> Vec<OpCost> {
        let m = &self.model;
        let (tp, ep) = (self.tp as f64, self.ep as f64);
        let (h, hd) = (m.hidden as f64, m.head_dim as f64);
        let heads = m.heads as f64 / tp;
        let kv_heads = m.kv_heads as f64 / tp;
        let width = m.expert_width as f64 / tp;
        let act = f64::from(self.profile.activation_bytes);
        let mut ops = Vec::with_capacity(12);

        ops.push(self.linear("qkv_proj", t, (heads + 2.0 * kv_heads) * hd, h, self.format));
        ops.push(self.linear("o_proj", t, h, heads * hd, self.format));
        ops.push(self.linear("router", t, m.experts as f64, h, WeightFormat::F32));

        // Experts: this rank holds E/ep of them at width/tp; the batch touches some.
        let touched_total = self.expected_experts(t);
        let touched = touched_total / ep;
        let rows_per_expert =
            if touched_total > 0.0 { t * m.top_k as f64 / touched_total } else { 0.0 };
        let up = self.linear("expert_up", rows_per_expert, 2.0 * width, h, self.format);
        let down = self.linear("expert_down", rows_per_expert, h, width, self.format);
        for op in [up, down] {
            ops.push(OpCost {
                name: op.name,
                flops: op.flops * touched,
                bytes: op.bytes * touched,
                seconds: op.seconds * touched,
            });
        }

        // Norms, RoPE, SiLU·mul, residual adds and KV writes: a few passes over each token.
        let elem_bytes = t
            * act
            * (8.0 * h + 3.0 * heads * hd + 4.0 * kv_heads * hd + 3.0 * m.top_k as f64 * width);
        let seconds = elem_bytes
            / self.resources.bandwidth
            / self.profile.efficiency(OpClass::Elementwise, t);
        ops.push(OpCost { name: "elementwise", flops: 0.0, bytes: elem_bytes, seconds });

        let message = t * h * act;
        if self.tp > 1 {
            let ring = 2.0 * (tp - 1.0) / tp * message;
            let after_attention = self.link(ring, 1.0);
            ops.push(OpCost {
                name: "tp_all_reduce",
                flops: 0.0,
                bytes: ring,
                seconds: after_attention,
            });
            if self.ep == 1 {
                ops.push(OpCost {
                    name: "tp_all_reduce",
                    flops: 0.0,
                    bytes: ring,
                    seconds: after_attention,
                });
            }
        }
        if self.ep > 1 {
            let bytes = (ep - 1.0) / ep * message * m.top_k as f64;
            let seconds = self.link(bytes, 1.0);
            ops.push(OpCost { name: "ep_dispatch", flops: 0.0, bytes, seconds });
            ops.push(OpCost { name: "ep_combine", flops: 0.0, bytes, seconds });
        }
        ops
    }

    /// One layer's attention on the critical rank for `shape`: decode and prefill parts.
    fn attention_ops(&self, shape: &StepShape) -> [Option<OpCost>; 2] {
        let m = &self.model;
        let tp = self.tp as f64;
        let hd = m.head_dim as f64;
        let heads = m.heads as f64 / tp;
        let kv_heads = m.kv_heads as f64 / tp;
        let act = f64::from(self.profile.activation_bytes);
        let (mut decode, mut prefill) = (None, None);
        if shape.decodes > 0 {
            let ctx = shape.decode_context;
            let flops = 4.0 * ctx * heads * hd;
            let bytes = ctx * kv_heads * hd * 2.0 * self.kv_bytes();
            let size = ctx / shape.decodes as f64;
            let seconds = self.roofline(
                OpClass::AttentionDecode,
                size,
                flops,
                bytes,
                self.resources.attention_peak,
            );
            decode = Some(OpCost { name: "attention_decode", flops, bytes, seconds });
        }
        if shape.prefills > 0 {
            let flops = 4.0 * shape.prefill_pairs * heads * hd;
            let bytes = shape.prefill_kv_tokens * kv_heads * hd * 2.0 * self.kv_bytes()
                + shape.prefill_tokens as f64 * heads * hd * 2.0 * act;
            let size = shape.prefill_tokens as f64 / shape.prefills as f64;
            let seconds = self.roofline(
                OpClass::AttentionPrefill,
                size,
                flops,
                bytes,
                self.resources.attention_peak,
            );
            prefill = Some(OpCost { name: "attention_prefill", flops, bytes, seconds });
        }
        [decode, prefill]
    }

    /// The output head over the sampled rows (split across tensor-parallel ranks on GPUs).
    fn head_op(&self, samples: usize) -> OpCost {
        if samples == 0 {
            return OpCost { name: "lm_head", flops: 0.0, bytes: 0.0, seconds: 0.0 };
        }
        let split = if self.profile.is_gpu() { self.tp as f64 } else { 1.0 };
        self.linear(
            "lm_head",
            samples as f64,
            self.model.vocab as f64 / split,
            self.model.hidden as f64,
            self.format,
        )
    }

    /// Seconds to move `bytes` over the interconnect in `collectives` operations.
    fn link(&self, bytes: f64, collectives: f64) -> f64 {
        let ic = &self.profile.interconnect;
        bytes / (ic.bandwidth_gbs * 1e9) + collectives * ic.latency_us * 1e-6
    }
}

/// The roofline bounds of single ops, without efficiency: what `dyno profile --hw cpu`
/// divides by a measured kernel time to get an efficiency. Each uses the same flops and bytes
/// as the op of the same name in [`StepModel::step_time`] (a test holds them together).
impl StepModel {
    /// `max(flops ÷ peak, bytes ÷ bandwidth)` on one rank, seconds.
    pub fn bound(&self, flops: f64, bytes: f64, peak: f64) -> f64 {
        (flops / peak).max(bytes / self.resources.bandwidth)
    }

    /// One linear op of `rows` activation rows × `[out, inp]` weights at `format`, seconds.
    pub fn linear_bound(&self, rows: f64, out: f64, inp: f64, format: WeightFormat) -> f64 {
        let act = f64::from(self.profile.activation_bytes);
        let flops = 2.0 * rows * out * inp;
        let bytes = out * inp * format.bytes_per_weight() + rows * (out + inp) * act;
        self.bound(flops, bytes, self.resources.linear_peak)
    }

    /// One layer's decode attention for `sequences` queries at `context` tokens each (all of
    /// this rank's heads), seconds.
    pub fn attention_decode_bound(&self, sequences: f64, context: f64) -> f64 {
        let m = &self.model;
        let tp = self.tp as f64;
        let (heads, kv_heads) = (m.heads as f64 / tp, m.kv_heads as f64 / tp);
        let hd = m.head_dim as f64;
        let ctx = sequences * context;
        let flops = 4.0 * ctx * heads * hd;
        let bytes = ctx * kv_heads * hd * 2.0 * self.kv_bytes();
        self.bound(flops, bytes, self.resources.attention_peak)
    }

    /// One layer's causal attention of one prefill chunk of `tokens` from position 0 (all of
    /// this rank's heads), seconds.
    pub fn attention_prefill_bound(&self, tokens: f64) -> f64 {
        let m = &self.model;
        let tp = self.tp as f64;
        let (heads, kv_heads) = (m.heads as f64 / tp, m.kv_heads as f64 / tp);
        let hd = m.head_dim as f64;
        let act = f64::from(self.profile.activation_bytes);
        let pairs = tokens * (tokens + 1.0) / 2.0;
        let flops = 4.0 * pairs * heads * hd;
        let bytes =
            tokens * kv_heads * hd * 2.0 * self.kv_bytes() + tokens * heads * hd * 2.0 * act;
        self.bound(flops, bytes, self.resources.attention_peak)
    }

    /// One layer's elementwise work (norms, RoPE, SiLU·mul, residuals, KV writes) over
    /// `tokens`, seconds.
    pub fn elementwise_bound(&self, tokens: f64) -> f64 {
        let m = &self.model;
        let tp = self.tp as f64;
        let (heads, kv_heads) = (m.heads as f64 / tp, m.kv_heads as f64 / tp);
        let (h, hd, width) = (m.hidden as f64, m.head_dim as f64, m.expert_width as f64 / tp);
        let act = f64::from(self.profile.activation_bytes);
        let bytes = tokens
            * act
            * (8.0 * h + 3.0 * heads * hd + 4.0 * kv_heads * hd + 3.0 * m.top_k as f64 * width);
        bytes / self.resources.bandwidth
    }

    /// The model this step model costs.
    pub fn model(&self) -> &ModelConfig {
        &self.model
    }

    /// The weight format of the config's linear layers.
    pub fn format(&self) -> WeightFormat {
        self.format
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_experts_matches_the_closed_form() {
        let model = ModelConfig::preset("mixtral").unwrap();
        let profile = HardwareProfile::resolve("h100").unwrap();
        let mut cfg = EngineConfig::default();
        cfg.set_weight_format(WeightFormat::Bf16);
        let sm = StepModel::new(&profile, &model, &cfg);
        assert!((sm.expected_experts(1.0) - 2.0).abs() < 1e-12);
        // 8·(1 − 0.75²) = 3.5
        assert!((sm.expected_experts(2.0) - 3.5).abs() < 1e-12);
        assert!(sm.expected_experts(1000.0) > 7.999);
        let skewed = sm.clone().with_routing_skew(1.5);
        assert!(skewed.expected_experts(16.0) < sm.expected_experts(16.0));
    }

    #[test]
    fn shapes_aggregate_items() {
        let mut s = StepShape::default();
        s.add(0, 4, true); // prefill of 4: pairs 4·5/2 = 10
        s.add(9, 1, true); // decode at context 10
        s.add(4, 3, false); // chunk of 3 after 4: 3·4 + 6 = 18 pairs
        assert_eq!((s.tokens, s.sequences, s.samples, s.decodes, s.prefills), (8, 3, 2, 1, 2));
        assert_eq!((s.decode_context, s.prefill_pairs, s.prefill_kv_tokens), (10.0, 28.0, 11.0));
    }

    /// `seconds` (memoized token-only ops, no breakdown) and `step_time` (every op listed)
    /// are the same model: on fresh random shapes, across tp, ep and pp layouts, and beyond
    /// the memo's range, they agree to rounding, memo hits included.
    #[test]
    fn seconds_is_step_time_without_the_breakdown() {
        use rand::rngs::Xoshiro256PlusPlus;
        use rand::{RngExt, SeedableRng};
        let seed: u64 = rand::rng().random();
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let model = ModelConfig::preset("mixtral").unwrap();
        let profile = HardwareProfile::resolve("h100").unwrap();
        for (tp, ep, pp) in [(1, 1, 1), (2, 1, 1), (2, 4, 1), (1, 1, 4), (2, 2, 2)] {
            let mut cfg = EngineConfig::default();
            cfg.set_weight_format(WeightFormat::Int8);
            (cfg.parallel.tp, cfg.parallel.ep, cfg.parallel.pp) = (tp, ep, pp);
            let sm = StepModel::new(&profile, &model, &cfg).with_routing_skew(0.5);
            for _ in 0..50 {
                let mut shape = StepShape::default();
                for _ in 0..rng.random_range(1..40usize) {
                    if rng.random_bool(0.8) {
                        shape.add(rng.random_range(1..4000), 1, true);
                    } else {
                        let len = rng.random_range(2..3000);
                        shape.add(rng.random_range(0..2000), len, rng.random_bool(0.5));
                    }
                }
                let full = sm.step_time(&shape).seconds;
                for fast in [sm.seconds(&shape), sm.seconds(&shape)] {
                    let err = (fast - full).abs() / full;
                    assert!(
                        err < 1e-12,
                        "seed {seed}, {tp}/{ep}/{pp}, {shape:?}: {fast} vs {full}"
                    );
                }
            }
            let huge = StepShape::prefill(3, TOKEN_MEMO);
            let (fast, full) = (sm.seconds(&huge), sm.step_time(&huge).seconds);
            assert!((fast - full).abs() / full < 1e-12, "{tp}/{ep}/{pp}: {fast} vs {full}");
        }
    }

    #[test]
    fn bigger_batches_take_longer_but_less_per_token() {
        let model = ModelConfig::preset("mixtral").unwrap();
        let profile = HardwareProfile::resolve("h100").unwrap();
        let mut cfg = EngineConfig::default();
        cfg.set_weight_format(WeightFormat::Bf16);
        cfg.parallel.tp = 2;
        let sm = StepModel::new(&profile, &model, &cfg);
        let one = sm.seconds(&StepShape::decode(1, 512));
        let many = sm.seconds(&StepShape::decode(64, 512));
        assert!(many > one && many / 64.0 < one, "{one} {many}");
        let int4 = {
            let mut c = cfg.clone();
            c.set_weight_format(WeightFormat::Int4 { group: 128 });
            StepModel::new(&profile, &model, &c).seconds(&StepShape::decode(1, 512))
        };
        assert!(int4 < one);
    }
}
