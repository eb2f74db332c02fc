//! The Mixtral-style decoder, one forward pass over a batch of sequence chunks.
//!
//! ```text
//! x = embed(tokens)
//! for each layer:
//!     h = rms_norm(x)                      # pre-attention norm
//!     q, k, v = h · W_qkvᵀ                 # one fused projection
//!     q, k = rope(q), rope(k)              # rotary positions
//!     cache[k, v] at the chunk's positions # paged KV cache
//!     x += attention(q, cache) · W_oᵀ      # causal, grouped-query
//!     h = rms_norm(x)                      # pre-FFN norm
//!     for the top_k experts e of each token (router softmax over their logits):
//!         x += p_e · W_down,e(silu(h · W_gate,eᵀ) ⊙ (h · W_up,eᵀ))
//! logits = rms_norm(x_last) · W_headᵀ      # only where a token is sampled
//! ```
//!
//! A batch mixes prefill chunks (many tokens of one sequence) and decodes (one token each);
//! every token goes through the linear layers together, attention goes per sequence. The
//! order in which each token's values are summed does not depend on what else is in the
//! batch, so a request's tokens are the same alone or batched.

use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::kv::KvCache;
use crate::linear::{Linear, LinearParams};
use crate::model_config::{ModelConfig, WeightFormat};
use crate::weights::{TensorSource, names};
use dyno_kernels::attention::{AttentionParams, SeqKv, decode, prefill};
use dyno_kernels::dense::{DenseParams, F32Matrix};
use dyno_kernels::ops::{RopeTable, rms_norm, silu_mul, top_k};
use dyno_kernels::quant::QuantParams;
use rayon::prelude::*;

/// The part of the model one rank holds: a stage of layers (pipeline parallel), a slice of
/// the attention heads and of every expert's width (tensor parallel), a subset of the
/// experts (expert parallel). The full model is `tp = ep = 1` over all layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// Tensor-parallel degree and this rank's index in it.
    pub tp: usize,
    /// This rank's tensor-parallel index.
    pub tp_rank: usize,
    /// Expert-parallel degree.
    pub ep: usize,
    /// This rank's expert-parallel index.
    pub ep_rank: usize,
    /// Layers of this pipeline stage.
    pub layers: std::ops::Range<usize>,
    /// Whether this stage is the last (it holds the final norm and the output head).
    pub last_stage: bool,
}

impl Shard {
    /// The whole model on one rank.
    pub fn full(cfg: &ModelConfig) -> Self {
        Self { tp: 1, tp_rank: 0, ep: 1, ep_rank: 0, layers: 0..cfg.layers, last_stage: true }
    }

    /// Whether this rank computes attention: one expert-parallel copy of each head slice does
    /// (the others would only repeat it), so only `ep_rank == 0` holds KV heads.
    pub fn computes_attention(&self) -> bool {
        self.ep_rank == 0
    }

    /// Whether this rank holds expert `e` (experts are dealt out in contiguous blocks).
    pub fn owns_expert(&self, e: usize, experts: usize) -> bool {
        e / (experts / self.ep) == self.ep_rank
    }
}

/// Sums a buffer across the ranks of a tensor/expert-parallel group, in rank order (so every
/// rank gets the same bits). The single-rank model uses [`NoComm`].
pub trait Collective: Sync {
    /// Replaces `buf` with the element-wise sum of every rank's `buf`.
    fn all_reduce(&self, buf: &mut [f32]);
}

/// The collective of a group of one: nothing to exchange.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoComm;

impl Collective for NoComm {
    fn all_reduce(&self, _buf: &mut [f32]) {}
}

/// One expert's SwiGLU: `up` fuses `w1` (gate) and `w3` (up) into `[2·width, hidden]` so a
/// token's input is read once; `down` is `w2`, `[hidden, width]`.
#[derive(Debug, Clone)]
struct Expert {
    up: Linear,
    down: Linear,
}

/// One decoder layer.
#[derive(Debug, Clone)]
struct Layer {
    attn_norm: Vec<f32>,
    /// `[q_dim + 2·kv_dim, hidden]`: q, k, v projections stacked.
    qkv: Linear,
    /// `[hidden, q_dim]`.
    o: Linear,
    ffn_norm: Vec<f32>,
    /// `[experts, hidden]`, kept in f32 (tiny, and routing is sensitive to it).
    router: F32Matrix,
    /// Indexed by expert id; `None` for experts another expert-parallel rank holds.
    experts: Vec<Option<Expert>>,
}

/// The loaded model: weights at the configured format, RoPE table, kernel parameters.
#[derive(Debug, Clone)]
pub struct Model {
    cfg: ModelConfig,
    format: WeightFormat,
    shard: Shard,
    /// Query and KV heads held (the tensor-parallel slice; KV heads 0 where this rank skips
    /// attention).
    heads: usize,
    kv_heads: usize,
    /// `[vocab, hidden]`, f32 (empty past the first stage).
    embed: Vec<f32>,
    /// The layers of this stage.
    layers: Vec<Layer>,
    final_norm: Vec<f32>,
    /// The output head (last stage only).
    lm_head: Option<Linear>,
    rope: RopeTable,
    attention: AttentionParams,
    dense: DenseParams,
}

/// What a forward pass returns.
#[derive(Debug, Clone, PartialEq)]
pub struct ForwardOutput {
    /// `[count, vocab]` logits of the chunks that asked for them, in chunk order.
    pub logits: Vec<f32>,
    /// Bytes of weights the pass streamed (each linear weight it used, once; experts only if
    /// some token was routed to them; the embedding rows looked up).
    pub weight_bytes: u64,
    /// Bytes of KV cache attention read (every layer's keys and values of every chunk's
    /// context).
    pub kv_bytes: u64,
}

/// What a pipeline stage starts from.
#[derive(Debug)]
pub enum StageInput<'a> {
    /// Token ids (the first stage embeds them).
    Tokens(&'a [u32]),
    /// `[tokens, hidden]` states from the previous stage.
    Hidden(Vec<f32>),
}

/// What a pipeline stage hands on.
#[derive(Debug)]
pub enum StageOutput {
    /// `[tokens, hidden]` states for the next stage, and what this stage read.
    Hidden {
        /// The residual stream after this stage's layers.
        x: Vec<f32>,
        /// Bytes of weights this stage streamed.
        weight_bytes: u64,
        /// Bytes of KV cache it read.
        kv_bytes: u64,
    },
    /// The last stage's logits.
    Logits(ForwardOutput),
}

/// Tokens `start..start + tokens.len()` of one sequence, computed in a forward pass.
#[derive(Debug, Clone, Copy)]
pub struct SeqChunk<'a> {
    /// The token ids at those positions.
    pub tokens: &'a [u32],
    /// Position of the first one.
    pub start: usize,
    /// The sequence's KV blocks, covering at least `start + tokens.len()` positions.
    pub block_table: &'a [u32],
    /// Whether to return logits for the chunk's last position.
    pub logits: bool,
}

impl Model {
    /// Loads every tensor of `cfg` from `source` and stores linear weights at the format of
    /// `engine`; kernel parameters come from `engine` too.
    pub fn load(
        cfg: &ModelConfig,
        source: &dyn TensorSource,
        engine: &EngineConfig,
    ) -> Result<Self, EngineError> {
        Self::load_shard(cfg, source, engine, Shard::full(cfg))
    }

    /// Loads the part of the model `shard` describes: its layers, its slice of heads and of
    /// expert width, its experts.
    pub fn load_shard(
        cfg: &ModelConfig,
        source: &dyn TensorSource,
        engine: &EngineConfig,
        shard: Shard,
    ) -> Result<Self, EngineError> {
        let format = engine.weight_format();
        let threads = engine.threads;
        let dense = DenseParams { row_tile: engine.kernels.quant_row_tile, threads };
        let quant = QuantParams {
            row_tile: engine.kernels.quant_row_tile,
            threads,
            activations: engine.kernels.activations,
        };
        let params = |op: &str| LinearParams { gemm: engine.gemm_params(op), dense, quant };
        let (h, hd) = (cfg.hidden, cfg.head_dim);
        let (tp, r) = (shard.tp, shard.tp_rank);
        let heads = cfg.heads / tp;
        let kv_heads = if shard.computes_attention() { cfg.kv_heads / tp } else { 0 };
        let width = cfg.expert_width / tp;
        // Rows `lo..hi` of a `[rows, cols]` tensor, and columns `lo..hi` of one.
        let rows = |name: &str, shape: [usize; 2], lo: usize, hi: usize| {
            let t = source.tensor(name, &shape)?;
            Ok::<_, EngineError>(t[lo * shape[1]..hi * shape[1]].to_vec())
        };
        let cols = |name: &str, shape: [usize; 2], lo: usize, hi: usize| {
            let t = source.tensor(name, &shape)?;
            Ok::<_, EngineError>(
                t.chunks_exact(shape[1]).flat_map(|row| row[lo..hi].to_vec()).collect::<Vec<f32>>(),
            )
        };
        let linear = |data: Vec<f32>, rows: usize, cols: usize, op: &str| {
            Ok::<_, EngineError>(Linear::new(&data, rows, cols, format, params(op))?)
        };
        let layers = shard
            .layers
            .clone()
            .map(|i| {
                let (q_rows, kv_rows) = ([cfg.q_dim(), h], [cfg.kv_dim(), h]);
                let mut qkv =
                    rows(&names::attn(i, "q_proj"), q_rows, r * heads * hd, (r + 1) * heads * hd)?;
                let kv_lo = r * kv_heads * hd;
                qkv.extend(rows(&names::attn(i, "k_proj"), kv_rows, kv_lo, kv_lo + kv_heads * hd)?);
                qkv.extend(rows(&names::attn(i, "v_proj"), kv_rows, kv_lo, kv_lo + kv_heads * hd)?);
                let q_lo = r * heads * hd;
                let o = cols(&names::attn(i, "o_proj"), [h, cfg.q_dim()], q_lo, q_lo + heads * hd)?;
                let experts = (0..cfg.experts)
                    .into_par_iter()
                    .map(|e| {
                        if !shard.owns_expert(e, cfg.experts) {
                            return Ok(None);
                        }
                        let (lo, hi) = (r * width, (r + 1) * width);
                        let shape = [cfg.expert_width, h];
                        let mut up = rows(&names::expert(i, e, "w1"), shape, lo, hi)?;
                        up.extend(rows(&names::expert(i, e, "w3"), shape, lo, hi)?);
                        let down = cols(&names::expert(i, e, "w2"), [h, cfg.expert_width], lo, hi)?;
                        Ok(Some(Expert {
                            up: linear(up, 2 * width, h, "expert_up")?,
                            down: linear(down, h, width, "expert_down")?,
                        }))
                    })
                    .collect::<Result<Vec<_>, EngineError>>()?;
                Ok(Layer {
                    attn_norm: source.tensor(&names::input_norm(i), &[h])?,
                    qkv: linear(qkv, (heads + 2 * kv_heads) * hd, h, "qkv_proj")?,
                    o: linear(o, h, heads * hd, "o_proj")?,
                    ffn_norm: source.tensor(&names::post_attention_norm(i), &[h])?,
                    router: F32Matrix::from_vec(
                        source.tensor(&names::router(i), &[cfg.experts, h])?,
                        cfg.experts,
                        h,
                    )?,
                    experts,
                })
            })
            .collect::<Result<Vec<_>, EngineError>>()?;
        let mut attention = engine.kernels.attention;
        attention.threads = threads;
        let first_stage = shard.layers.start == 0;
        let lm_head = if shard.last_stage {
            Some(linear(source.tensor(names::LM_HEAD, &[cfg.vocab, h])?, cfg.vocab, h, "lm_head")?)
        } else {
            None
        };
        Ok(Self {
            cfg: cfg.clone(),
            format,
            heads,
            kv_heads,
            embed: if first_stage {
                source.tensor(names::EMBED, &[cfg.vocab, h])?
            } else {
                Vec::new()
            },
            layers,
            final_norm: source.tensor(names::FINAL_NORM, &[h])?,
            lm_head,
            rope: RopeTable::new(cfg.head_dim, cfg.rope_theta, cfg.max_context)?,
            attention,
            dense,
            shard,
        })
    }

    /// The part of the model this instance holds.
    pub fn shard(&self) -> &Shard {
        &self.shard
    }

    /// The model's shape.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The format linear weights are stored at.
    pub fn format(&self) -> WeightFormat {
        self.format
    }

    /// Bytes of weights held (linear layers at their format, the rest f32).
    pub fn weight_bytes(&self) -> usize {
        let linear: usize = self
            .layers
            .iter()
            .map(|l| {
                l.qkv.weight_bytes()
                    + l.o.weight_bytes()
                    + l.experts
                        .iter()
                        .flatten()
                        .map(|e| e.up.weight_bytes() + e.down.weight_bytes())
                        .sum::<usize>()
                    + l.router.weight_bytes()
                    + 4 * (l.attn_norm.len() + l.ffn_norm.len())
            })
            .sum();
        linear
            + self.lm_head.as_ref().map_or(0, Linear::weight_bytes)
            + 4 * (self.embed.len() + self.final_norm.len())
    }

    /// An empty KV cache for the layers and KV heads this model holds, with `num_blocks`
    /// blocks of `block_size` tokens.
    pub fn new_kv_cache(&self, block_size: usize, num_blocks: usize) -> KvCache {
        KvCache::new(self.layers.len(), self.kv_heads, self.cfg.head_dim, block_size, num_blocks)
    }

    /// Runs `chunks` through the model, writing their K/V into `kv`; returns the logits of
    /// every chunk with `logits` set and what the pass read. Needs the whole model
    /// ([`Shard::full`]).
    pub fn forward(
        &self,
        chunks: &[SeqChunk],
        kv: &mut KvCache,
    ) -> Result<ForwardOutput, EngineError> {
        let tokens: Vec<u32> = chunks.iter().flat_map(|c| c.tokens.iter().copied()).collect();
        match self.forward_stage(chunks, StageInput::Tokens(&tokens), kv, &NoComm)? {
            StageOutput::Logits(out) => Ok(out),
            StageOutput::Hidden { .. } => Err(EngineError::Config(crate::ConfigError::new(
                "model",
                "shard",
                "forward() needs the last pipeline stage; use forward_stage".to_string(),
            ))),
        }
    }

    /// One pipeline stage's part of a forward pass on this rank: embeds `input` tokens (first
    /// stage) or continues from the previous stage's hidden states, runs this stage's layers
    /// (summing partial results across the tensor/expert-parallel group with `comm`), and
    /// returns logits (last stage) or hidden states for the next stage.
    pub fn forward_stage(
        &self,
        chunks: &[SeqChunk],
        input: StageInput,
        kv: &mut KvCache,
        comm: &dyn Collective,
    ) -> Result<StageOutput, EngineError> {
        let cfg = &self.cfg;
        let hidden = cfg.hidden;
        let positions: Vec<usize> =
            chunks.iter().flat_map(|c| c.start..c.start + c.tokens.len()).collect();
        let t = positions.len();
        // Row i of the batch belongs to chunk `offsets[c]..offsets[c + 1]`.
        let offsets: Vec<usize> = std::iter::once(0)
            .chain(chunks.iter().scan(0, |o, c| {
                *o += c.tokens.len();
                Some(*o)
            }))
            .collect();

        let mut weight_bytes = 0u64;
        let mut x = match input {
            StageInput::Tokens(tokens) => {
                if let Some(&bad) = tokens.iter().find(|&&id| id as usize >= cfg.vocab) {
                    return Err(EngineError::Config(crate::ConfigError::new(
                        "request",
                        "prompt",
                        format!(
                            "token id {bad} is outside the vocabulary of {} ({})",
                            cfg.name, cfg.vocab
                        ),
                    )));
                }
                weight_bytes += (t * hidden * 4) as u64;
                let mut x = Vec::with_capacity(t * hidden);
                for &id in tokens {
                    x.extend_from_slice(
                        &self.embed[id as usize * hidden..(id as usize + 1) * hidden],
                    );
                }
                x
            }
            StageInput::Hidden(x) => x,
        };
        let context: usize = chunks.iter().map(|c| c.start + c.tokens.len()).sum();
        let kv_bytes = (context * self.layers.len() * self.kv_heads * cfg.head_dim * 2 * 4) as u64;
        let mut h = vec![0.0; t * hidden];
        for (l, layer) in self.layers.iter().enumerate() {
            weight_bytes += (layer.qkv.weight_bytes()
                + layer.o.weight_bytes()
                + layer.router.weight_bytes()
                + 8 * hidden) as u64;
            rms_norm(&x, &layer.attn_norm, cfg.norm_eps, &mut h)?;
            let mut o = vec![0.0; t * hidden];
            if self.shard.computes_attention() {
                let attn = self.attention_block(l, layer, &h, &positions, chunks, &offsets, kv)?;
                layer.o.forward(&attn, t, &mut o)?;
            }
            comm.all_reduce(&mut o);
            add_in_place(&mut x, &o);

            rms_norm(&x, &layer.ffn_norm, cfg.norm_eps, &mut h)?;
            let (mut moe, expert_bytes) = self.moe_block(layer, &h, t)?;
            comm.all_reduce(&mut moe);
            weight_bytes += expert_bytes;
            add_in_place(&mut x, &moe);
        }
        let Some(lm_head) = &self.lm_head else {
            return Ok(StageOutput::Hidden { x, weight_bytes, kv_bytes });
        };

        let last_rows: Vec<usize> = chunks
            .iter()
            .enumerate()
            .filter(|(_, c)| c.logits)
            .map(|(i, _)| offsets[i + 1] - 1)
            .collect();
        let mut last = Vec::with_capacity(last_rows.len() * hidden);
        for &r in &last_rows {
            last.extend_from_slice(&x[r * hidden..(r + 1) * hidden]);
        }
        let mut normed = vec![0.0; last.len()];
        rms_norm(&last, &self.final_norm, cfg.norm_eps, &mut normed)?;
        let mut logits = vec![0.0; last_rows.len() * cfg.vocab];
        if !last_rows.is_empty() {
            lm_head.forward(&normed, last_rows.len(), &mut logits)?;
            weight_bytes += (lm_head.weight_bytes() + 4 * hidden) as u64;
        }
        Ok(StageOutput::Logits(ForwardOutput { logits, weight_bytes, kv_bytes }))
    }

    /// Attention of layer `l` for every chunk: returns `[t, q_dim]` (heads concatenated).
    #[allow(clippy::too_many_arguments)]
    fn attention_block(
        &self,
        l: usize,
        layer: &Layer,
        h: &[f32],
        positions: &[usize],
        chunks: &[SeqChunk],
        offsets: &[usize],
        kv: &mut KvCache,
    ) -> Result<Vec<f32>, EngineError> {
        let cfg = &self.cfg;
        let (t, hd, g) = (positions.len(), cfg.head_dim, cfg.group());
        let (qd, kvd) = (self.heads * hd, self.kv_heads * hd);
        let mut qkv = vec![0.0; t * (qd + 2 * kvd)];
        layer.qkv.forward(h, t, &mut qkv)?;
        let (mut q, mut k, mut v) =
            (Vec::with_capacity(t * qd), Vec::with_capacity(t * kvd), Vec::with_capacity(t * kvd));
        for row in qkv.chunks_exact(qd + 2 * kvd) {
            q.extend_from_slice(&row[..qd]);
            k.extend_from_slice(&row[qd..qd + kvd]);
            v.extend_from_slice(&row[qd + kvd..]);
        }
        self.rope.apply(&mut q, positions, self.heads)?;
        self.rope.apply(&mut k, positions, self.kv_heads)?;

        // Store this step's K/V, one head's rows at a time.
        let (mut kh, mut vh) = (Vec::new(), Vec::new());
        for (c, chunk) in chunks.iter().enumerate() {
            for head in 0..self.kv_heads {
                kh.clear();
                vh.clear();
                for r in offsets[c]..offsets[c + 1] {
                    kh.extend_from_slice(&k[r * kvd + head * hd..r * kvd + (head + 1) * hd]);
                    vh.extend_from_slice(&v[r * kvd + head * hd..r * kvd + (head + 1) * hd]);
                }
                kv.write(l, head, chunk.block_table, chunk.start, &kh, &vh)?;
            }
        }

        // Queries of KV head `head` for rows `r`: the `g` query heads sharing it.
        let group_of =
            |r: usize, head: usize| &q[r * qd + head * g * hd..r * qd + (head + 1) * g * hd];
        let scale = 1.0 / (hd as f32).sqrt();
        let mut out = vec![0.0; t * qd];
        let decodes: Vec<usize> =
            (0..chunks.len()).filter(|&c| chunks[c].tokens.len() == 1).collect();
        let seqs: Vec<SeqKv> = decodes
            .iter()
            .map(|&c| SeqKv {
                block_table: chunks[c].block_table,
                context_len: chunks[c].start + 1,
            })
            .collect();
        // One KV head's attention for every chunk: `[t, g · hd]`, rows in batch order.
        let head_attention = |head: usize, params: &AttentionParams| {
            let pool = kv.pool(l, head);
            let mut head_out = vec![0.0; t * g * hd];
            let mut qbuf = Vec::new();
            if !decodes.is_empty() {
                for &c in &decodes {
                    qbuf.extend_from_slice(group_of(offsets[c], head));
                }
                let mut obuf = vec![0.0; qbuf.len()];
                decode(&qbuf, &seqs, &pool, g, scale, &mut obuf, params)?;
                for (i, &c) in decodes.iter().enumerate() {
                    let r = offsets[c];
                    head_out[r * g * hd..(r + 1) * g * hd]
                        .copy_from_slice(&obuf[i * g * hd..(i + 1) * g * hd]);
                }
            }
            for (c, chunk) in chunks.iter().enumerate().filter(|(_, c)| c.tokens.len() > 1) {
                qbuf.clear();
                for r in offsets[c]..offsets[c + 1] {
                    qbuf.extend_from_slice(group_of(r, head));
                }
                let seq = SeqKv {
                    block_table: chunk.block_table,
                    context_len: chunk.start + chunk.tokens.len(),
                };
                let rows = offsets[c] * g * hd..offsets[c + 1] * g * hd;
                prefill(&qbuf, chunk.start, &seq, &pool, g, scale, &mut head_out[rows], params)?;
            }
            Ok::<_, EngineError>(head_out)
        };
        // A decode-only step has little work per head: run the heads side by side, one thread
        // each, rather than splitting every head's small job across all threads.
        let threads = self.attention.threads;
        let per_head: Vec<Vec<f32>> = if decodes.len() == chunks.len() && threads > 1 {
            let single = AttentionParams { threads: 1, ..self.attention };
            dyno_kernels::threads::run(threads, || {
                (0..self.kv_heads)
                    .into_par_iter()
                    .map(|head| head_attention(head, &single))
                    .collect::<Result<Vec<_>, _>>()
            })?
        } else {
            (0..self.kv_heads)
                .map(|head| head_attention(head, &self.attention))
                .collect::<Result<Vec<_>, _>>()?
        };
        for (head, head_out) in per_head.iter().enumerate() {
            for (r, row) in head_out.chunks_exact(g * hd).enumerate() {
                out[r * qd + head * g * hd..r * qd + (head + 1) * g * hd].copy_from_slice(row);
            }
        }
        Ok(out)
    }

    /// The mixture of experts on normalized `h` (`[t, hidden]`): returns what to add to x and
    /// the bytes of expert weights used.
    fn moe_block(
        &self,
        layer: &Layer,
        h: &[f32],
        t: usize,
    ) -> Result<(Vec<f32>, u64), EngineError> {
        let cfg = &self.cfg;
        let (hidden, width, e_count) = (cfg.hidden, cfg.expert_width / self.shard.tp, cfg.experts);
        let mut router_logits = vec![0.0; t * e_count];
        layer.router.matmul(h, t, &mut router_logits, &self.dense)?;

        // (token, weight) per expert, tokens ascending.
        let mut routed: Vec<Vec<(usize, f32)>> = vec![Vec::new(); e_count];
        for (tok, logits) in router_logits.chunks_exact(e_count).enumerate() {
            let chosen = top_k(logits, cfg.top_k);
            let max = chosen.first().map_or(0.0, |c| c.1);
            let exps: Vec<f32> = chosen.iter().map(|c| (c.1 - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            for ((e, _), p) in chosen.iter().zip(exps) {
                routed[*e].push((tok, p / sum));
            }
        }

        // One expert's SwiGLU on its tokens: `[n, hidden]`, kernels on `threads` workers.
        let run_expert = |expert: &Expert, toks: &[(usize, f32)], threads: Option<usize>| {
            let n = toks.len();
            let mut xe = Vec::with_capacity(n * hidden);
            for &(tok, _) in toks {
                xe.extend_from_slice(&h[tok * hidden..(tok + 1) * hidden]);
            }
            let mut up = vec![0.0; n * 2 * width];
            expert.up.forward_on(&xe, n, &mut up, threads)?;
            let mut act = vec![0.0; n * width];
            for (u, a) in up.chunks_exact(2 * width).zip(act.chunks_exact_mut(width)) {
                silu_mul(&u[..width], &u[width..], a)?;
            }
            let mut down = vec![0.0; n * hidden];
            expert.down.forward_on(&act, n, &mut down, threads)?;
            Ok::<_, EngineError>(down)
        };
        let active: Vec<(&Expert, &[(usize, f32)])> = layer
            .experts
            .iter()
            .zip(&routed)
            .filter_map(|(e, toks)| Some((e.as_ref()?, toks.as_slice())))
            .filter(|(_, toks)| !toks.is_empty())
            .collect();
        // With at least one busy expert per thread, run whole experts side by side (one
        // parallel region per layer) instead of splitting each expert's matmuls.
        let threads = self.dense.threads;
        let outputs: Vec<Vec<f32>> = if threads > 1 && active.len() >= threads {
            dyno_kernels::threads::run(threads, || {
                active
                    .par_iter()
                    .map(|&(e, toks)| run_expert(e, toks, Some(1)))
                    .collect::<Result<Vec<_>, _>>()
            })?
        } else {
            active.iter().map(|&(e, toks)| run_expert(e, toks, None)).collect::<Result<_, _>>()?
        };
        let mut out = vec![0.0; t * hidden];
        let mut bytes = 0u64;
        // Experts in index order: each token's sum is ordered the same in any batch.
        for (&(expert, toks), down) in active.iter().zip(&outputs) {
            bytes += (expert.up.weight_bytes() + expert.down.weight_bytes()) as u64;
            for (&(tok, p), d) in toks.iter().zip(down.chunks_exact(hidden)) {
                for (o, &v) in out[tok * hidden..(tok + 1) * hidden].iter_mut().zip(d) {
                    *o += p * v;
                }
            }
        }
        Ok((out, bytes))
    }
}

/// `x += y`.
fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, &b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
