//! The model's shape: presets, parameter counts and memory footprints.
//!
//! A [`ModelConfig`] is everything about the network that does not depend on how it is run:
//! widths, depth, heads, experts. Presets live as YAML in `engine/models/` and are compiled
//! in; a user's own file in the same format loads with [`ModelConfig::from_yaml_file`].

use crate::error::ConfigError;
use serde::{Deserialize, Serialize};

/// The shape of a Mixtral-style decoder (a dense model is `experts: 1, top_k: 1`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Preset or user name, reported by `/v1/models`.
    pub name: String,
    /// Residual stream width (`hidden_size`).
    pub hidden: usize,
    /// Inner width of each expert's SwiGLU (`intermediate_size`).
    pub expert_width: usize,
    /// Decoder layers.
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention: `heads / kv_heads` queries share one).
    pub kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Experts per layer (`num_local_experts`).
    pub experts: usize,
    /// Experts each token is routed to (`num_experts_per_tok`).
    pub top_k: usize,
    /// Vocabulary size; at least [`crate::tokenizer::MIN_VOCAB`] for the byte tokenizer.
    pub vocab: usize,
    /// Longest sequence (prompt + output) served.
    pub max_context: usize,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
}

/// The built-in presets: `(name, YAML)`.
const PRESETS: [(&str, &str); 4] = [
    ("mixtral-8x7b", include_str!("../models/mixtral-8x7b.yaml")),
    ("mixtral-8x22b", include_str!("../models/mixtral-8x22b.yaml")),
    ("mixtral-mini", include_str!("../models/mixtral-mini.yaml")),
    ("mixtral-tiny", include_str!("../models/mixtral-tiny.yaml")),
];

/// Other names accepted for presets.
const ALIASES: [(&str, &str); 1] = [("mixtral", "mixtral-8x7b")];

/// Parameter counts of a model, split the way memory and bandwidth planning needs them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ParamCounts {
    /// Every parameter.
    pub total: u64,
    /// Parameters one token's forward pass uses: attention and norm weights, the router,
    /// `top_k` experts per layer, the output head, and the whole embedding table (as the
    /// published 12.9 B figure for 8x7B counts it, though a token reads one row).
    pub active: u64,
    /// Parameters in linear layers (the ones quantization applies to).
    pub linear: u64,
    /// Parameters kept in `f32` whatever the quantization: embedding table, norms, router.
    pub f32_kept: u64,
    /// The linear-layer part of `active` (what a decode token streams at the weight format).
    pub active_linear: u64,
}

impl ModelConfig {
    /// Names of the built-in presets.
    pub fn preset_names() -> Vec<&'static str> {
        PRESETS.iter().map(|(n, _)| *n).collect()
    }

    /// A built-in preset by name or alias (`mixtral` is `mixtral-8x7b`).
    pub fn preset(name: &str) -> Result<Self, ConfigError> {
        let name = ALIASES.iter().find(|(a, _)| *a == name).map_or(name, |(_, n)| n);
        let (file, yaml) = PRESETS.iter().find(|(n, _)| *n == name).ok_or_else(|| {
            ConfigError::new(
                "--model",
                "name",
                format!(
                    "unknown model `{name}`; presets: {} (alias mixtral), or a path to a model YAML file",
                    Self::preset_names().join(", ")
                ),
            )
        })?;
        Self::from_yaml(yaml, &format!("engine/models/{file}.yaml"))
    }

    /// A preset name, or else a path to a model YAML file.
    pub fn resolve(name_or_path: &str) -> Result<Self, ConfigError> {
        if std::path::Path::new(name_or_path).is_file() {
            Self::from_yaml_file(std::path::Path::new(name_or_path))
        } else {
            Self::preset(name_or_path)
        }
    }

    /// Loads and validates a model YAML file.
    pub fn from_yaml_file(path: &std::path::Path) -> Result<Self, ConfigError> {
        Self::from_yaml(&crate::error::read_yaml_file(path)?, &path.display().to_string())
    }

    /// Parses and validates model YAML; `origin` names the file in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ConfigError> {
        let cfg: Self = crate::error::parse_yaml(text, origin)?;
        cfg.validate(origin)?;
        Ok(cfg)
    }

    /// Checks every field; the error names `origin`, the field and why.
    pub fn validate(&self, origin: &str) -> Result<(), ConfigError> {
        let err = |field: &str, reason: String| Err(ConfigError::new(origin, field, reason));
        for (field, v) in [
            ("hidden", self.hidden),
            ("expert_width", self.expert_width),
            ("layers", self.layers),
            ("heads", self.heads),
            ("kv_heads", self.kv_heads),
            ("head_dim", self.head_dim),
            ("experts", self.experts),
            ("top_k", self.top_k),
            ("max_context", self.max_context),
        ] {
            if v == 0 {
                return err(field, format!("{field} = 0; must be at least 1"));
            }
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return err(
                "kv_heads",
                format!("heads = {} is not a multiple of kv_heads = {}", self.heads, self.kv_heads),
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return err("head_dim", format!("head_dim = {} must be even (RoPE)", self.head_dim));
        }
        if self.top_k > self.experts {
            return err(
                "top_k",
                format!("top_k = {} exceeds experts = {}", self.top_k, self.experts),
            );
        }
        if self.vocab < crate::tokenizer::MIN_VOCAB {
            return err(
                "vocab",
                format!(
                    "vocab = {} is below {} (256 bytes plus the special tokens of the byte tokenizer)",
                    self.vocab,
                    crate::tokenizer::MIN_VOCAB
                ),
            );
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return err("rope_theta", format!("rope_theta = {} must be > 1", self.rope_theta));
        }
        if !(self.norm_eps.is_finite() && self.norm_eps > 0.0) {
            return err("norm_eps", format!("norm_eps = {} must be > 0", self.norm_eps));
        }
        Ok(())
    }

    /// Query heads per KV head.
    pub fn group(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of all KV heads together.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Parameter counts.
    pub fn params(&self) -> ParamCounts {
        let (h, w, e) = (self.hidden as u64, self.expert_width as u64, self.experts as u64);
        let attn = h * self.q_dim() as u64 * 2 + h * self.kv_dim() as u64 * 2;
        let expert = 3 * h * w;
        let router = e * h;
        let norms_per_layer = 2 * h;
        let embed = self.vocab as u64 * h;
        let head = self.vocab as u64 * h;
        let layers = self.layers as u64;
        let linear = layers * (attn + e * expert) + head;
        let f32_kept = layers * (router + norms_per_layer) + embed + h;
        let active_linear = layers * (attn + self.top_k as u64 * expert) + head;
        let active = active_linear + layers * (router + norms_per_layer) + embed + h;
        ParamCounts { total: linear + f32_kept, active, linear, f32_kept, active_linear }
    }

    /// Bytes of weights held at `format` (linear layers at the format, the rest `f32`).
    pub fn weight_bytes(&self, format: WeightFormat) -> u64 {
        let p = self.params();
        (p.linear as f64 * format.bytes_per_weight()) as u64 + p.f32_kept * 4
    }

    /// Bytes of weights one decode step reads for one token: the active linear weights at
    /// `format`, the router and norms, one embedding row. The bandwidth roofline's numerator
    /// (plus the KV cache, which depends on the context).
    pub fn active_weight_bytes(&self, format: WeightFormat) -> u64 {
        let p = self.params();
        let h = self.hidden as u64;
        // The f32 part of `active`, with one embedding row in place of the whole table.
        let kept = p.active - p.active_linear - self.vocab as u64 * h + h;
        (p.active_linear as f64 * format.bytes_per_weight()) as u64 + kept * 4
    }

    /// Bytes of KV cache per token at `f32` (K and V, every layer and KV head).
    pub fn kv_bytes_per_token(&self) -> u64 {
        2 * (self.layers * self.kv_dim()) as u64 * 4
    }
}

/// How linear-layer weights are stored (the quantization level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum WeightFormat {
    /// 4 bytes per weight.
    F32,
    /// 2 bytes per weight, f32 accumulation.
    Bf16,
    /// Blocks of 32 int8 with an f16 scale (like Q8_0): 8.5 bits per weight.
    Int8,
    /// Groups of `group` int4 with an f16 scale (like Q4_0 at 32): 4 + 16/group bits.
    Int4 {
        /// Weights per scale: 32, 64 or 128.
        group: usize,
    },
}

impl WeightFormat {
    /// Every format the engine runs, with int4 at each group size.
    pub fn all() -> Vec<WeightFormat> {
        let mut v = vec![WeightFormat::F32, WeightFormat::Bf16, WeightFormat::Int8];
        v.extend(dyno_kernels::quant::INT4_GROUPS.map(|group| WeightFormat::Int4 { group }));
        v
    }

    /// Average bytes per weight, scales included.
    pub fn bytes_per_weight(self) -> f64 {
        match self {
            WeightFormat::F32 => 4.0,
            WeightFormat::Bf16 => 2.0,
            WeightFormat::Int8 => 34.0 / 32.0,
            WeightFormat::Int4 { group } => (group as f64 / 2.0 + 2.0) / group as f64,
        }
    }

    /// Short label: `f32`, `bf16`, `int8`, `int4-g32`.
    pub fn label(self) -> String {
        match self {
            WeightFormat::F32 => "f32".into(),
            WeightFormat::Bf16 => "bf16".into(),
            WeightFormat::Int8 => "int8".into(),
            WeightFormat::Int4 { group } => format!("int4-g{group}"),
        }
    }

    /// Parses a label as [`WeightFormat::label`] writes it (`int4` alone means group 32).
    pub fn parse(s: &str) -> Option<WeightFormat> {
        match s {
            "f32" => Some(WeightFormat::F32),
            "bf16" => Some(WeightFormat::Bf16),
            "int8" => Some(WeightFormat::Int8),
            "int4" => Some(WeightFormat::Int4 { group: 32 }),
            _ => {
                let g: usize = s.strip_prefix("int4-g")?.parse().ok()?;
                dyno_kernels::quant::INT4_GROUPS
                    .contains(&g)
                    .then_some(WeightFormat::Int4 { group: g })
            }
        }
    }
}

impl std::fmt::Display for WeightFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixtral_8x7b_counts_match_the_published_figures() {
        let p = ModelConfig::preset("mixtral").unwrap().params();
        assert!((p.total as f64 / 1e9 - 46.7).abs() < 0.05, "total {}", p.total);
        assert!((p.active as f64 / 1e9 - 12.9).abs() < 0.05, "active {}", p.active);
    }

    #[test]
    fn mini_is_about_0_4_b_and_past_any_cache() {
        let m = ModelConfig::preset("mixtral-mini").unwrap();
        let p = m.params();
        assert!((0.35e9..0.45e9).contains(&(p.total as f64)), "total {}", p.total);
        assert!(m.weight_bytes(WeightFormat::Int4 { group: 32 }) > 128 << 20);
    }

    #[test]
    fn every_preset_loads_and_quantization_shrinks_it() {
        for name in ModelConfig::preset_names() {
            let m = ModelConfig::preset(name).unwrap();
            let sizes: Vec<u64> = [
                WeightFormat::F32,
                WeightFormat::Bf16,
                WeightFormat::Int8,
                WeightFormat::Int4 { group: 32 },
                WeightFormat::Int4 { group: 128 },
            ]
            .map(|f| m.weight_bytes(f))
            .to_vec();
            assert!(sizes.windows(2).all(|w| w[0] > w[1]), "{name}: {sizes:?}");
        }
    }

    #[test]
    fn bad_presets_and_fields_are_named() {
        let e = ModelConfig::preset("gpt-5").unwrap_err().to_string();
        assert!(e.contains("gpt-5") && e.contains("mixtral-mini"), "{e}");
        let yaml =
            include_str!("../models/mixtral-tiny.yaml").replace("kv_heads: 2", "kv_heads: 3");
        let e = ModelConfig::from_yaml(&yaml, "my.yaml").unwrap_err().to_string();
        assert!(e.contains("my.yaml") && e.contains("kv_heads"), "{e}");
        let yaml = format!("{}\nlayer: 3\n", include_str!("../models/mixtral-tiny.yaml"));
        let e = ModelConfig::from_yaml(&yaml, "my.yaml").unwrap_err().to_string();
        assert!(e.contains("unknown field") && e.contains("layer"), "{e}");
    }

    #[test]
    fn weight_format_labels_round_trip() {
        for f in WeightFormat::all() {
            assert_eq!(WeightFormat::parse(&f.label()), Some(f));
        }
        assert_eq!(WeightFormat::parse("int4-g48"), None);
        assert!((WeightFormat::Int4 { group: 32 }.bytes_per_weight() * 8.0 - 4.5).abs() < 1e-9);
        assert!((WeightFormat::Int8.bytes_per_weight() * 8.0 - 8.5).abs() < 1e-9);
    }
}
