//! How the engine runs a model: every knob the tuner turns, as one YAML document.
//!
//! ```yaml
//! weights: int4            # f32 | bf16 | int8 | int4
//! int4_group: 32           # 32 | 64 | 128 (int4 only)
//! kv_dtype: f32
//! kv_block_size: 16        # tokens per KV block
//! kv_pool_mib: 256         # KV cache size; blocks = pool / bytes per block
//! kv_pool_blocks: null     # or an exact block count, overriding kv_pool_mib
//! threads: 2
//! max_waiting: 256         # waiting-queue limit; beyond it requests get 429
//! seed: 0                  # random weights (when no checkpoint is given)
//! batch:
//!   policy: continuous     # static | dynamic | continuous
//!   max_num_seqs: 32
//!   max_num_batched_tokens: 2048
//!   prefill_chunk: 512     # 0 = no chunked prefill
//!   priority: decode_first # decode_first | prefill_first
//! parallel: { tp: 1, ep: 1, pp: 1, dp: 1 }
//! kernels:
//!   gemm: { mc: 96, kc: 256, nc: 4080, micro_kernel: avx2_6x16, threads: 2 }
//!   gemm_per_op: { expert_up: { ... } }   # optional overrides by op name
//!   attention: { br: 16, bc: 64, threads: 2 }
//!   quant_row_tile: 8
//!   activations: auto      # f32 | int8 | auto
//! ```
//!
//! Every field has a default ([`EngineConfig::default`]); unknown fields are rejected, and
//! [`EngineConfig::validate`] names the field and value of anything impossible.

use crate::error::ConfigError;
use crate::model_config::{ModelConfig, WeightFormat};
use dyno_kernels::attention::AttentionParams;
use dyno_kernels::gemm::GemmParams;
use dyno_kernels::quant::ActivationMode;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Stored element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KvDtype {
    /// 4 bytes per element: what the CPU attention kernels read.
    #[default]
    F32,
}

/// Names accepted for [`EngineConfig::weights`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WeightDtype {
    /// Full precision.
    #[default]
    F32,
    /// bf16.
    Bf16,
    /// Q8_0-like int8.
    Int8,
    /// Q4_0-like int4 with [`EngineConfig::int4_group`].
    Int4,
}

/// Which of waiting prefills and running decodes a continuous batch serves first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Every running sequence decodes one token; leftover token budget goes to prefills
    /// (steady inter-token latency).
    #[default]
    DecodeFirst,
    /// Waiting prompts are admitted and prefilled first; decodes fill the rest (lower time
    /// to first token, stalls running streams).
    PrefillFirst,
}

/// The batch policy and its knobs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum BatchPolicy {
    /// Whenever nothing runs, start up to `batch_size` waiting requests and run them to
    /// completion; arrivals wait for the whole batch to finish.
    Static {
        /// Requests per batch.
        batch_size: usize,
    },
    /// Like static, but a batch starts only when `max_batch` requests wait or the oldest has
    /// waited `max_queue_delay_ms` (trading latency for fuller batches).
    Dynamic {
        /// Requests per batch at most.
        max_batch: usize,
        /// Longest time the first request waits for others, in milliseconds.
        max_queue_delay_ms: f64,
    },
    /// Iteration-level scheduling: sequences join and leave the batch at every step.
    Continuous {
        /// Sequences running at once.
        max_num_seqs: usize,
        /// Tokens (prefill + decode) per step.
        max_num_batched_tokens: usize,
        /// Prefill chunk in tokens; 0 prefills each prompt in one step.
        prefill_chunk: usize,
        /// Decodes or prefills first.
        #[serde(default)]
        priority: Priority,
    },
}

impl Default for BatchPolicy {
    fn default() -> Self {
        BatchPolicy::Continuous {
            max_num_seqs: 32,
            max_num_batched_tokens: 2048,
            prefill_chunk: 512,
            priority: Priority::DecodeFirst,
        }
    }
}

/// Parallel layout degrees: ranks = tp · ep · pp per replica, `dp` replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParallelConfig {
    /// Tensor parallel: attention heads and FFN columns split across ranks, all-reduce after.
    pub tp: usize,
    /// Expert parallel: experts split across ranks, tokens dispatched and combined.
    pub ep: usize,
    /// Pipeline parallel: layers split into stages, micro-batches flow through.
    pub pp: usize,
    /// Data parallel: independent replicas behind one server.
    pub dp: usize,
}

impl Default for ParallelConfig {
    fn default() -> Self {
        Self { tp: 1, ep: 1, pp: 1, dp: 1 }
    }
}

impl ParallelConfig {
    /// Ranks of one replica.
    pub fn ranks_per_replica(&self) -> usize {
        self.tp * self.ep * self.pp
    }
}

/// Kernel parameters the engine passes to every call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KernelConfig {
    /// f32 GEMM blocking for every op without its own entry.
    pub gemm: GemmParams,
    /// Per-op GEMM overrides, keyed by [`crate::weights::OP_NAMES`].
    pub gemm_per_op: BTreeMap<String, GemmParams>,
    /// Attention tiles.
    pub attention: AttentionParams,
    /// Activation rows per pass over quantized or bf16 weights.
    pub quant_row_tile: usize,
    /// How activations meet quantized weights.
    pub activations: ActivationMode,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            gemm: GemmParams::default(),
            gemm_per_op: BTreeMap::new(),
            attention: AttentionParams::default(),
            quant_row_tile: 8,
            activations: ActivationMode::Auto,
        }
    }
}

/// Everything about how the engine runs a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Linear-layer weight storage.
    pub weights: WeightDtype,
    /// Weights per int4 scale: 32, 64 or 128.
    pub int4_group: usize,
    /// KV cache element type.
    pub kv_dtype: KvDtype,
    /// Tokens per KV block.
    pub kv_block_size: usize,
    /// KV cache size in MiB, across all layers.
    pub kv_pool_mib: usize,
    /// KV blocks in the pool, overriding `kv_pool_mib` when set (for exact sizing).
    pub kv_pool_blocks: Option<usize>,
    /// Worker threads for the kernels (per rank).
    pub threads: usize,
    /// Waiting requests beyond which new ones are refused (HTTP 429).
    pub max_waiting: usize,
    /// Seed of the random weights when no checkpoint is loaded.
    pub seed: u64,
    /// Batch policy.
    pub batch: BatchPolicy,
    /// Parallel layout.
    pub parallel: ParallelConfig,
    /// Kernel parameters.
    pub kernels: KernelConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let threads = dyno_kernels::threads::available();
        Self {
            weights: WeightDtype::F32,
            int4_group: 32,
            kv_dtype: KvDtype::F32,
            kv_block_size: 16,
            kv_pool_mib: 256,
            kv_pool_blocks: None,
            threads,
            max_waiting: 256,
            seed: 0,
            batch: BatchPolicy::default(),
            parallel: ParallelConfig::default(),
            kernels: KernelConfig::default(),
        }
    }
}

impl EngineConfig {
    /// Loads and validates an engine YAML file.
    pub fn from_yaml_file(path: &Path) -> Result<Self, ConfigError> {
        Self::from_yaml(&crate::error::read_yaml_file(path)?, &path.display().to_string())
    }

    /// Parses and validates engine YAML; `origin` names the file in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: Self = crate::error::parse_yaml(text, origin)?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// The YAML form, which [`EngineConfig::from_yaml`] reads back.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_else(|e| format!("# not serializable: {e}\n"))
    }

    /// The weight format this config selects.
    pub fn weight_format(&self) -> WeightFormat {
        match self.weights {
            WeightDtype::F32 => WeightFormat::F32,
            WeightDtype::Bf16 => WeightFormat::Bf16,
            WeightDtype::Int8 => WeightFormat::Int8,
            WeightDtype::Int4 => WeightFormat::Int4 { group: self.int4_group },
        }
    }

    /// Sets [`EngineConfig::weights`] and [`EngineConfig::int4_group`] from a format.
    pub fn set_weight_format(&mut self, format: WeightFormat) {
        self.weights = match format {
            WeightFormat::F32 => WeightDtype::F32,
            WeightFormat::Bf16 => WeightDtype::Bf16,
            WeightFormat::Int8 => WeightDtype::Int8,
            WeightFormat::Int4 { group } => {
                self.int4_group = group;
                WeightDtype::Int4
            }
        };
    }

    /// Bytes of one KV block across all layers (K and V).
    pub fn kv_block_bytes(&self, model: &ModelConfig) -> u64 {
        self.kv_block_size as u64 * model.kv_bytes_per_token()
    }

    /// KV blocks in the pool for `model`.
    pub fn kv_blocks(&self, model: &ModelConfig) -> usize {
        if let Some(blocks) = self.kv_pool_blocks {
            return blocks;
        }
        (((self.kv_pool_mib as u64) << 20) / self.kv_block_bytes(model).max(1)) as usize
    }

    /// The GEMM parameters of op `name`.
    pub fn gemm_params(&self, name: &str) -> GemmParams {
        let mut p = *self.kernels.gemm_per_op.get(name).unwrap_or(&self.kernels.gemm);
        p.threads = self.threads;
        p
    }

    /// Checks every field on its own; the error names `origin`, the field and the value.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let err = |field: &str, reason: String| Err(ConfigError::new(origin, field, reason));
        if !dyno_kernels::quant::INT4_GROUPS.contains(&self.int4_group) {
            return err(
                "int4_group",
                format!("int4_group = {} must be one of 32, 64, 128", self.int4_group),
            );
        }
        for (field, v) in [
            ("kv_block_size", self.kv_block_size),
            ("kv_pool_mib", self.kv_pool_mib),
            ("threads", self.threads),
            ("max_waiting", self.max_waiting),
            ("kernels.quant_row_tile", self.kernels.quant_row_tile),
        ] {
            if v == 0 {
                return err(field, format!("{field} = 0; must be at least 1"));
            }
        }
        if self.kv_block_size > 1024 {
            return err(
                "kv_block_size",
                format!("kv_block_size = {} exceeds 1024 tokens", self.kv_block_size),
            );
        }
        match self.batch {
            BatchPolicy::Static { batch_size: 0 } => {
                return err("batch.batch_size", "batch_size = 0; must be at least 1".into());
            }
            BatchPolicy::Dynamic { max_batch, max_queue_delay_ms } => {
                if max_batch == 0 {
                    return err("batch.max_batch", "max_batch = 0; must be at least 1".into());
                }
                if !(max_queue_delay_ms.is_finite() && max_queue_delay_ms >= 0.0) {
                    return err(
                        "batch.max_queue_delay_ms",
                        format!("max_queue_delay_ms = {max_queue_delay_ms} must be ≥ 0"),
                    );
                }
            }
            BatchPolicy::Continuous { max_num_seqs, max_num_batched_tokens, .. } => {
                if max_num_seqs == 0 {
                    return err(
                        "batch.max_num_seqs",
                        "max_num_seqs = 0; must be at least 1".into(),
                    );
                }
                if max_num_batched_tokens < max_num_seqs {
                    return err(
                        "batch.max_num_batched_tokens",
                        format!(
                            "max_num_batched_tokens = {max_num_batched_tokens} is below max_num_seqs = {max_num_seqs}: a step could not decode every running sequence"
                        ),
                    );
                }
            }
            BatchPolicy::Static { .. } => {}
        }
        let p = &self.parallel;
        for (field, v) in [
            ("parallel.tp", p.tp),
            ("parallel.ep", p.ep),
            ("parallel.pp", p.pp),
            ("parallel.dp", p.dp),
        ] {
            if v == 0 {
                return err(field, format!("{field} = 0; must be at least 1"));
            }
        }
        let gemms = std::iter::once(("kernels.gemm".to_string(), &self.kernels.gemm)).chain(
            self.kernels.gemm_per_op.iter().map(|(k, v)| (format!("kernels.gemm_per_op.{k}"), v)),
        );
        for (field, g) in gemms {
            if let Err(e) = g.validate() {
                return err(&field, e.to_string());
            }
        }
        for name in self.kernels.gemm_per_op.keys() {
            if !crate::weights::OP_NAMES.contains(&name.as_str()) {
                return err(
                    "kernels.gemm_per_op",
                    format!("unknown op `{name}`; ops: {}", crate::weights::OP_NAMES.join(", ")),
                );
            }
        }
        if let Err(e) = self.kernels.attention.validate() {
            return err("kernels.attention", e.to_string());
        }
        Ok(())
    }

    /// Checks what depends on the model too: layouts that must divide it, a pool that holds
    /// at least one full-length sequence.
    pub fn validate_for(&self, model: &ModelConfig, origin: &str) -> Result<(), ConfigError> {
        self.validate(origin)?;
        let err = |field: &str, reason: String| Err(ConfigError::new(origin, field, reason));
        let p = &self.parallel;
        if !model.kv_heads.is_multiple_of(p.tp) {
            return err(
                "parallel.tp",
                format!(
                    "tp = {} must divide kv_heads = {} of {}",
                    p.tp, model.kv_heads, model.name
                ),
            );
        }
        if !model.expert_width.is_multiple_of(p.tp) {
            return err(
                "parallel.tp",
                format!(
                    "tp = {} must divide expert_width = {} of {}",
                    p.tp, model.expert_width, model.name
                ),
            );
        }
        if !model.experts.is_multiple_of(p.ep) {
            return err(
                "parallel.ep",
                format!("ep = {} must divide experts = {} of {}", p.ep, model.experts, model.name),
            );
        }
        if p.pp > model.layers {
            return err(
                "parallel.pp",
                format!("pp = {} exceeds layers = {} of {}", p.pp, model.layers, model.name),
            );
        }
        let blocks = self.kv_blocks(model);
        let needed = model.max_context.div_ceil(self.kv_block_size);
        if blocks < needed {
            return err(
                "kv_pool_mib",
                format!(
                    "the KV pool holds {blocks} blocks of {} tokens (kv_pool_mib = {}, kv_pool_blocks = {:?}); one {}-token sequence of {} needs {needed}",
                    self.kv_block_size,
                    self.kv_pool_mib,
                    self.kv_pool_blocks,
                    model.max_context,
                    model.name
                ),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_round_trip_through_yaml() {
        let c = EngineConfig::default();
        assert_eq!(EngineConfig::from_yaml(&c.to_yaml(), "x").unwrap(), c);
    }

    #[test]
    fn partial_yaml_fills_defaults() {
        let c = EngineConfig::from_yaml(
            "weights: int4\nint4_group: 64\nbatch: { policy: static, batch_size: 4 }\n",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(c.weight_format(), WeightFormat::Int4 { group: 64 });
        assert_eq!(c.batch, BatchPolicy::Static { batch_size: 4 });
    }

    #[test]
    fn bad_fields_are_named() {
        for (yaml, field) in [
            ("int4_group: 48\n", "int4_group"),
            ("kv_block_size: 0\n", "kv_block_size"),
            ("weights: int3\n", "weights"),
            (
                "batch: { policy: continuous, max_num_seqs: 8, max_num_batched_tokens: 4, prefill_chunk: 0 }\n",
                "max_num_batched_tokens",
            ),
            (
                "batch: { policy: dynamic, max_batch: 4, max_queue_delay_ms: -1 }\n",
                "max_queue_delay_ms",
            ),
            (
                "kernels: { gemm_per_op: { qkvx: { mc: 96, kc: 256, nc: 4080, micro_kernel: scalar_4x4, threads: 1 } } }\n",
                "qkvx",
            ),
            ("treads: 2\n", "treads"),
            ("kernels: { attention: { br: 0, bc: 64, threads: 1 } }\n", "br"),
        ] {
            let e = EngineConfig::from_yaml(yaml, "c.yaml").unwrap_err().to_string();
            assert!(e.contains("c.yaml") && e.contains(field), "{yaml}: {e}");
        }
    }

    #[test]
    fn model_dependent_checks() {
        let tiny = ModelConfig::preset("mixtral-tiny").unwrap();
        let mut c = EngineConfig::default();
        c.parallel.tp = 4;
        let e = c.validate_for(&tiny, "c.yaml").unwrap_err().to_string();
        assert!(e.contains("parallel.tp") && e.contains("kv_heads"), "{e}");
        let mut c = EngineConfig::default();
        c.parallel.ep = 3;
        assert!(c.validate_for(&tiny, "c").unwrap_err().to_string().contains("ep = 3"));
        let mini = ModelConfig::preset("mixtral-mini").unwrap();
        let c = EngineConfig { kv_pool_mib: 1, ..EngineConfig::default() };
        let e = c.validate_for(&mini, "c").unwrap_err().to_string();
        assert!(e.contains("kv_pool_mib"), "{e}");
    }
}
