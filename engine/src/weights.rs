//! Where weights come from, and the names they go by.
//!
//! A [`TensorSource`] hands out `f32` tensors by Hugging Face Mixtral name; the model
//! quantizes them to its [`crate::model_config::WeightFormat`] as it loads. Two sources exist:
//! [`RandomWeights`] (deterministic from a seed: performance does not depend on values) and
//! [`crate::checkpoint::SafetensorsCheckpoint`] (a directory with `config.json` and
//! `*.safetensors`).

use crate::error::EngineError;

/// Names of the linear ops, as `kernels.gemm_per_op` keys them: the fused q/k/v projection,
/// the attention output, each expert's fused gate+up (`w1`, `w3`) and its down (`w2`)
/// projection, and the output head.
pub const OP_NAMES: [&str; 5] = ["qkv_proj", "o_proj", "expert_up", "expert_down", "lm_head"];

/// Tensors by Hugging Face name.
pub trait TensorSource: Sync {
    /// The values of tensor `name`, row-major, which must have `shape`; errors name the
    /// tensor and the file.
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EngineError>;
}

/// Hugging Face Mixtral tensor names.
pub mod names {
    /// Token embedding table, `[vocab, hidden]`.
    pub const EMBED: &str = "model.embed_tokens.weight";
    /// Final RMSNorm weight, `[hidden]`.
    pub const FINAL_NORM: &str = "model.norm.weight";
    /// Output head, `[vocab, hidden]`.
    pub const LM_HEAD: &str = "lm_head.weight";

    /// Layer `i`'s pre-attention RMSNorm weight, `[hidden]`.
    pub fn input_norm(i: usize) -> String {
        format!("model.layers.{i}.input_layernorm.weight")
    }
    /// Layer `i`'s pre-FFN RMSNorm weight, `[hidden]`.
    pub fn post_attention_norm(i: usize) -> String {
        format!("model.layers.{i}.post_attention_layernorm.weight")
    }
    /// Layer `i`'s attention projection `proj` (`q_proj`, `k_proj`, `v_proj`, `o_proj`).
    pub fn attn(i: usize, proj: &str) -> String {
        format!("model.layers.{i}.self_attn.{proj}.weight")
    }
    /// Layer `i`'s router, `[experts, hidden]`.
    pub fn router(i: usize) -> String {
        format!("model.layers.{i}.block_sparse_moe.gate.weight")
    }
    /// Layer `i`, expert `e`'s `w` (`w1` gate `[width, hidden]`, `w2` down `[hidden, width]`,
    /// `w3` up `[width, hidden]`).
    pub fn expert(i: usize, e: usize, w: &str) -> String {
        format!("model.layers.{i}.block_sparse_moe.experts.{e}.{w}.weight")
    }
}

/// Deterministic random weights: each tensor's values depend only on the seed and its name.
///
/// Linear weights are uniform in `±1/√fan_in` (unit-variance activations stay unit-variance),
/// norm weights are 1, the embedding table is uniform in `±1`. Values come from a SplitMix64
/// stream: the reference engine needs reproducible bits across platforms and versions more
/// than statistical quality, and a 10-line generator pins them.
#[derive(Debug, Clone, Copy)]
pub struct RandomWeights {
    /// The seed.
    pub seed: u64,
}

impl TensorSource for RandomWeights {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EngineError> {
        let len: usize = shape.iter().product();
        if name.ends_with("norm.weight") || name.ends_with("layernorm.weight") {
            return Ok(vec![1.0; len]);
        }
        let scale = if name == names::EMBED {
            1.0
        } else {
            1.0 / (*shape.last().unwrap_or(&1)).max(1) as f32
        }
        .sqrt();
        let mut state = self.seed ^ fnv1a(name.as_bytes());
        Ok((0..len)
            .map(|_| {
                let u = (splitmix64(&mut state) >> 40) as f32 / (1u64 << 24) as f32;
                (2.0 * u - 1.0) * scale
            })
            .collect())
    }
}

/// FNV-1a hash of a tensor name, to give each tensor its own stream.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// One step of SplitMix64.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_weights_are_deterministic_per_name_and_scaled() {
        let r = RandomWeights { seed: 7 };
        let a = r.tensor(&names::attn(0, "q_proj"), &[8, 64]).unwrap();
        assert_eq!(a, r.tensor(&names::attn(0, "q_proj"), &[8, 64]).unwrap());
        assert_ne!(a, r.tensor(&names::attn(1, "q_proj"), &[8, 64]).unwrap());
        assert!(a.iter().all(|v| v.abs() <= 0.125));
        assert!(a.iter().any(|v| v.abs() > 0.1));
        assert_eq!(r.tensor(&names::input_norm(0), &[4]).unwrap(), vec![1.0; 4]);
    }
}
