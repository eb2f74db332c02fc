//! Hugging Face Mixtral checkpoints: `config.json` plus safetensors files.
//!
//! A checkpoint directory holds `config.json` (a `MixtralConfig`) and either one
//! `model.safetensors` or shards `model-0000x-of-0000y.safetensors` listed by
//! `model.safetensors.index.json` (`{"weight_map": {tensor: file}}`). [`SafetensorsCheckpoint`]
//! memory-maps the files, parses each header once, and hands out tensors as `f32` (stored as
//! F32, BF16 or F16) through [`TensorSource`]. [`write_checkpoint`] writes the same layout from
//! any source, one tensor in memory at a time.
//!
//! Only Mixtral naming ([`crate::weights::names`]) is read: a dense Llama/Mistral checkpoint
//! (no `num_local_experts`, `mlp.*_proj` tensors) is refused with an error naming the field.
//! `sliding_window` is not read: Mixtral has none, and the engine attends to the whole context.

use crate::error::{ConfigError, EngineError};
use crate::model_config::ModelConfig;
use crate::weights::{TensorSource, names};
use memmap2::Mmap;
use safetensors::tensor::Metadata;
use safetensors::{Dtype, SafeTensors, View};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The model configuration file of a checkpoint directory.
pub const CONFIG_FILE: &str = "config.json";
/// The tensor file of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";
/// The index of a sharded checkpoint: which file holds each tensor.
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Bytes of the little-endian header length that starts every safetensors file.
const HEADER_LEN_BYTES: usize = 8;

/// RoPE base frequency when `config.json` has no `rope_theta` (Mixtral's default).
const DEFAULT_ROPE_THETA: f32 = 1e6;
/// RMSNorm epsilon when `config.json` has no `rms_norm_eps` (Mixtral's default).
const DEFAULT_RMS_NORM_EPS: f32 = 1e-5;

/// A checkpoint directory: `config.json` + `model.safetensors`, or sharded
/// `model-0000x-of-0000y.safetensors` with `model.safetensors.index.json`.
///
/// Opening maps every file and parses its header; tensors are converted to `f32` when asked
/// for, so a loader holds at most the tensors it is quantizing.
#[derive(Debug)]
pub struct SafetensorsCheckpoint {
    /// The model's shape, from `config.json`.
    config: ModelConfig,
    /// The mapped tensor files.
    shards: Vec<Shard>,
    /// Tensor name → index into `shards`.
    location: HashMap<String, usize>,
    /// The file that says where tensors are (the index, or the single file), for errors.
    map_origin: PathBuf,
}

/// One mapped safetensors file with its parsed header.
#[derive(Debug)]
struct Shard {
    /// Where the file is, for errors.
    path: PathBuf,
    /// The whole file.
    mmap: Mmap,
    /// Offset of the data section (tensor offsets count from here).
    data_start: usize,
    /// The parsed header.
    metadata: Metadata,
}

impl Shard {
    /// Maps `path` and parses its header (the crate checks that the offsets tile the data
    /// section exactly, so a truncated or padded file is refused here).
    fn open(path: PathBuf) -> Result<Self, EngineError> {
        let file = std::fs::File::open(&path)
            .map_err(|e| checkpoint_error(&path, format!("cannot open: {e}")))?;
        // SAFETY: the map is read-only and private to this process; like every
        // memory-mapped loader we rely on nobody truncating or rewriting the checkpoint
        // while it is open (`write_checkpoint` replaces files by rename, never in place).
        let mmap = unsafe { Mmap::map(&file) }
            .map_err(|e| checkpoint_error(&path, format!("cannot memory-map: {e}")))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&mmap)
            .map_err(|e| checkpoint_error(&path, format!("not a valid safetensors file: {e}")))?;
        Ok(Shard { path, data_start: HEADER_LEN_BYTES + header_len, mmap, metadata })
    }
}

impl SafetensorsCheckpoint {
    /// Opens the checkpoint in `dir`: reads and validates `config.json`, memory-maps the
    /// tensor files and parses their headers. With an index, every tensor it lists must be in
    /// the shard it names.
    pub fn open(dir: &Path) -> Result<Self, EngineError> {
        let config_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&config_path)
            .map_err(|e| checkpoint_error(&config_path, format!("cannot read: {e}")))?;
        let config = model_config_from_hf_json(&text, &config_path.display().to_string())?;

        let index_path = dir.join(INDEX_FILE);
        let single_path = dir.join(SINGLE_FILE);
        let (shards, location, map_origin) = if index_path.is_file() {
            let (shards, location) = open_sharded(dir, &index_path)?;
            (shards, location, index_path)
        } else if single_path.is_file() {
            let shard = Shard::open(single_path.clone())?;
            let location = shard.metadata.tensors().into_keys().map(|n| (n, 0)).collect();
            (vec![shard], location, single_path)
        } else {
            return Err(checkpoint_error(
                dir,
                format!("no {SINGLE_FILE} nor {INDEX_FILE} beside {CONFIG_FILE}"),
            ));
        };
        Ok(Self { config, shards, location, map_origin })
    }

    /// The model's shape, from `config.json`.
    pub fn model_config(&self) -> &ModelConfig {
        &self.config
    }
}

/// Reads a sharded checkpoint's index, maps each shard it names once, and checks that every
/// listed tensor is in its shard.
fn open_sharded(
    dir: &Path,
    index_path: &Path,
) -> Result<(Vec<Shard>, HashMap<String, usize>), EngineError> {
    let text = std::fs::read_to_string(index_path)
        .map_err(|e| checkpoint_error(index_path, format!("cannot read: {e}")))?;
    let index: Value = serde_json::from_str(&text)
        .map_err(|e| checkpoint_error(index_path, format!("invalid JSON: {e}")))?;
    let weight_map = index.get("weight_map").and_then(Value::as_object).ok_or_else(|| {
        checkpoint_error(index_path, "`weight_map`: missing, or not an object of tensor → file")
    })?;

    let mut shards: Vec<Shard> = Vec::new();
    let mut shard_of_file: HashMap<&str, usize> = HashMap::new();
    let mut location = HashMap::with_capacity(weight_map.len());
    for (tensor, file) in weight_map {
        let file = file.as_str().ok_or_else(|| {
            checkpoint_error(
                index_path,
                format!("`weight_map`: tensor `{tensor}` maps to {file}, not a file name"),
            )
        })?;
        if Path::new(file).file_name().and_then(|f| f.to_str()) != Some(file) {
            return Err(checkpoint_error(
                index_path,
                format!(
                    "`weight_map`: tensor `{tensor}` maps to `{file}`, not a file in the directory"
                ),
            ));
        }
        let i = match shard_of_file.get(file) {
            Some(&i) => i,
            None => {
                shards.push(Shard::open(dir.join(file))?);
                shard_of_file.insert(file, shards.len() - 1);
                shards.len() - 1
            }
        };
        let shard = &shards[i];
        if shard.metadata.info(tensor).is_none() {
            return Err(checkpoint_error(
                &shard.path,
                format!("tensor `{tensor}` is missing, though {INDEX_FILE} puts it in this file"),
            ));
        }
        location.insert(tensor.clone(), i);
    }
    Ok((shards, location))
}

impl TensorSource for SafetensorsCheckpoint {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EngineError> {
        let Some(shard) = self.location.get(name).and_then(|&i| self.shards.get(i)) else {
            return Err(checkpoint_error(&self.map_origin, format!("tensor `{name}` not found")));
        };
        let info = shard
            .metadata
            .info(name)
            .ok_or_else(|| checkpoint_error(&shard.path, format!("tensor `{name}` not found")))?;
        if info.shape != shape {
            return Err(checkpoint_error(
                &shard.path,
                format!("tensor `{name}`: expected shape {shape:?}, found {:?}", info.shape),
            ));
        }
        let (start, end) = info.data_offsets;
        let bytes =
            shard.mmap.get(shard.data_start + start..shard.data_start + end).ok_or_else(|| {
                checkpoint_error(&shard.path, format!("tensor `{name}`: data past end of file"))
            })?;
        let len: usize = shape.iter().product();
        decode(bytes, info.dtype, len)
            .map_err(|reason| checkpoint_error(&shard.path, format!("tensor `{name}`: {reason}")))
    }
}

/// Converts `len` little-endian values of `dtype` to `f32`.
fn decode(bytes: &[u8], dtype: Dtype, len: usize) -> Result<Vec<f32>, String> {
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::BF16 | Dtype::F16 => 2,
        other => {
            return Err(format!("dtype {other} is not supported (F32, BF16 or F16)"));
        }
    };
    if bytes.len() != len * width {
        return Err(format!(
            "{} bytes of data for {len} values of {dtype} ({} expected)",
            bytes.len(),
            len * width
        ));
    }
    Ok(match dtype {
        Dtype::F32 => {
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
        }
        Dtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => {
            bytes.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect()
        }
    })
}

/// A checkpoint error about `path`.
fn checkpoint_error(path: &Path, reason: impl Into<String>) -> EngineError {
    EngineError::Checkpoint { path: path.display().to_string(), reason: reason.into() }
}

/// Parses a Hugging Face `MixtralConfig` `config.json` and validates the result with
/// [`ModelConfig::validate`]; `origin` (the file's path) names the file in errors, and its
/// directory names the model when `_name_or_path` is absent or empty.
///
/// Required: `hidden_size`, `intermediate_size`, `num_hidden_layers`, `num_attention_heads`,
/// `num_key_value_heads`, `num_local_experts`, `num_experts_per_tok`, `vocab_size`,
/// `max_position_embeddings`. Optional: `head_dim` (default `hidden_size /
/// num_attention_heads`), `rope_theta` (default 1e6), `rms_norm_eps` (default 1e-5);
/// `hidden_act`, when present, must be `silu`. Other keys are ignored. A missing or ill-typed
/// field is an error naming the field and the file.
pub fn model_config_from_hf_json(text: &str, origin: &str) -> Result<ModelConfig, EngineError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ConfigError::new(origin, "", format!("invalid JSON: {e}")))?;
    let obj = value.as_object().ok_or_else(|| ConfigError::new(origin, "", "not a JSON object"))?;
    let fields = HfFields { obj, origin };

    if fields.get("num_local_experts").is_none() {
        let model_type = obj.get("model_type").and_then(Value::as_str).unwrap_or("unknown");
        return Err(ConfigError::new(
            origin,
            "num_local_experts",
            format!(
                "missing; only Mixtral checkpoints (model_type `mixtral`) load, this one's \
                 model_type is `{model_type}`"
            ),
        )
        .into());
    }
    if let Some(act) = fields.get("hidden_act")
        && act.as_str() != Some("silu")
    {
        return Err(ConfigError::new(
            origin,
            "hidden_act",
            format!("{act}: the engine's experts are SwiGLU, only `silu` is supported"),
        )
        .into());
    }

    let hidden = fields.usize("hidden_size")?;
    let heads = fields.usize("num_attention_heads")?;
    let head_dim = match fields.optional_usize("head_dim")? {
        Some(d) => d,
        None if heads > 0 && hidden.is_multiple_of(heads) => hidden / heads,
        None => {
            return Err(ConfigError::new(
                origin,
                "head_dim",
                format!(
                    "missing, and hidden_size = {hidden} is not a multiple of \
                     num_attention_heads = {heads}"
                ),
            )
            .into());
        }
    };
    let name = match obj.get("_name_or_path").and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n.to_string(),
        _ => Path::new(origin)
            .parent()
            .and_then(Path::file_name)
            .map_or_else(|| "checkpoint".to_string(), |n| n.to_string_lossy().into_owned()),
    };
    let model = ModelConfig {
        name,
        hidden,
        expert_width: fields.usize("intermediate_size")?,
        layers: fields.usize("num_hidden_layers")?,
        heads,
        kv_heads: fields.usize("num_key_value_heads")?,
        head_dim,
        experts: fields.usize("num_local_experts")?,
        top_k: fields.usize("num_experts_per_tok")?,
        vocab: fields.usize("vocab_size")?,
        max_context: fields.usize("max_position_embeddings")?,
        rope_theta: fields.optional_f32("rope_theta")?.unwrap_or(DEFAULT_ROPE_THETA),
        norm_eps: fields.optional_f32("rms_norm_eps")?.unwrap_or(DEFAULT_RMS_NORM_EPS),
    };
    model.validate(origin)?;
    Ok(model)
}

/// Typed access to the fields of a `config.json` object, with errors naming field and file.
struct HfFields<'a> {
    /// The parsed object.
    obj: &'a Map<String, Value>,
    /// The file, for errors.
    origin: &'a str,
}

impl HfFields<'_> {
    /// The field's value, or `None` when absent or `null`.
    fn get(&self, field: &str) -> Option<&Value> {
        self.obj.get(field).filter(|v| !v.is_null())
    }

    /// A required non-negative integer.
    fn usize(&self, field: &str) -> Result<usize, ConfigError> {
        self.optional_usize(field)?.ok_or_else(|| ConfigError::new(self.origin, field, "missing"))
    }

    /// An optional non-negative integer.
    fn optional_usize(&self, field: &str) -> Result<Option<usize>, ConfigError> {
        self.get(field)
            .map(|v| {
                v.as_u64().and_then(|n| usize::try_from(n).ok()).ok_or_else(|| {
                    ConfigError::new(
                        self.origin,
                        field,
                        format!("{v} is not a non-negative integer"),
                    )
                })
            })
            .transpose()
    }

    /// An optional number (integer or float).
    fn optional_f32(&self, field: &str) -> Result<Option<f32>, ConfigError> {
        self.get(field)
            .map(|v| {
                v.as_f64().map(|x| x as f32).ok_or_else(|| {
                    ConfigError::new(self.origin, field, format!("{v} is not a number"))
                })
            })
            .transpose()
    }
}

/// The element type [`write_checkpoint`] stores tensors as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointDtype {
    /// 32-bit float: values round-trip exactly.
    F32,
    /// bfloat16, rounded to nearest even (the usual dtype of published Mixtral checkpoints).
    Bf16,
    /// IEEE half precision, rounded to nearest even.
    F16,
}

impl CheckpointDtype {
    /// The safetensors dtype.
    fn safetensors(self) -> Dtype {
        match self {
            CheckpointDtype::F32 => Dtype::F32,
            CheckpointDtype::Bf16 => Dtype::BF16,
            CheckpointDtype::F16 => Dtype::F16,
        }
    }

    /// Bytes per stored value.
    fn bytes_per_value(self) -> usize {
        match self {
            CheckpointDtype::F32 => 4,
            CheckpointDtype::Bf16 | CheckpointDtype::F16 => 2,
        }
    }

    /// The `torch_dtype` Hugging Face writes in `config.json`.
    fn torch_name(self) -> &'static str {
        match self {
            CheckpointDtype::F32 => "float32",
            CheckpointDtype::Bf16 => "bfloat16",
            CheckpointDtype::F16 => "float16",
        }
    }

    /// Little-endian bytes of `values` in this dtype.
    fn encode(self, values: &[f32]) -> Vec<u8> {
        match self {
            CheckpointDtype::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            CheckpointDtype::Bf16 => {
                values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect()
            }
            CheckpointDtype::F16 => {
                values.iter().flat_map(|&v| half::f16::from_f32(v).to_le_bytes()).collect()
            }
        }
    }
}

/// Every tensor of a Mixtral model with its shape, in a fixed order: the embedding table;
/// per layer the input norm, `q_proj`, `k_proj`, `v_proj`, `o_proj`, the post-attention norm,
/// the router and each expert's `w1`, `w2`, `w3`; the final norm; the output head.
pub fn tensor_shapes(model: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, w, vocab) = (model.hidden, model.expert_width, model.vocab);
    let mut shapes = vec![(names::EMBED.to_string(), vec![vocab, h])];
    for i in 0..model.layers {
        shapes.push((names::input_norm(i), vec![h]));
        shapes.push((names::attn(i, "q_proj"), vec![model.q_dim(), h]));
        shapes.push((names::attn(i, "k_proj"), vec![model.kv_dim(), h]));
        shapes.push((names::attn(i, "v_proj"), vec![model.kv_dim(), h]));
        shapes.push((names::attn(i, "o_proj"), vec![h, model.q_dim()]));
        shapes.push((names::post_attention_norm(i), vec![h]));
        shapes.push((names::router(i), vec![model.experts, h]));
        for e in 0..model.experts {
            shapes.push((names::expert(i, e, "w1"), vec![w, h]));
            shapes.push((names::expert(i, e, "w2"), vec![h, w]));
            shapes.push((names::expert(i, e, "w3"), vec![w, h]));
        }
    }
    shapes.push((names::FINAL_NORM.to_string(), vec![h]));
    shapes.push((names::LM_HEAD.to_string(), vec![vocab, h]));
    shapes
}

/// The `config.json` Hugging Face writes for `model` as a `MixtralForCausalLM`.
fn hf_config_json(model: &ModelConfig, dtype: CheckpointDtype) -> Result<String, EngineError> {
    // Floats go through their shortest `f32` decimal form, so 1e-5 is written as 0.00001
    // rather than as the f64 nearest the f32 (0.000009999999747378752).
    let float = |field: &str, x: f32| {
        x.to_string().parse::<f64>().ok().and_then(serde_json::Number::from_f64).ok_or_else(|| {
            ConfigError::new(&model.name, field, format!("{x} cannot be written to JSON"))
        })
    };
    let config = serde_json::json!({
        "_name_or_path": model.name,
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        "hidden_act": "silu",
        "hidden_size": model.hidden,
        "intermediate_size": model.expert_width,
        "num_hidden_layers": model.layers,
        "num_attention_heads": model.heads,
        "num_key_value_heads": model.kv_heads,
        "head_dim": model.head_dim,
        "num_local_experts": model.experts,
        "num_experts_per_tok": model.top_k,
        "vocab_size": model.vocab,
        "max_position_embeddings": model.max_context,
        "rope_theta": float("rope_theta", model.rope_theta)?,
        "rms_norm_eps": float("norm_eps", model.norm_eps)?,
        "sliding_window": null,
        "tie_word_embeddings": false,
        "torch_dtype": dtype.torch_name(),
    });
    serde_json::to_string_pretty(&config)
        .map_err(|e| ConfigError::new(&model.name, "", format!("cannot write JSON: {e}")).into())
}

/// A tensor that is fetched from its source only when the serializer writes it, so writing
/// holds one tensor in memory at a time. The first failure is kept in `failure` (a
/// [`View`] cannot return an error) and the tensor is written as zeros.
struct PendingTensor<'a> {
    /// Hugging Face name.
    name: String,
    /// Shape.
    shape: Vec<usize>,
    /// Stored element type.
    dtype: CheckpointDtype,
    /// Where the values come from.
    source: &'a dyn TensorSource,
    /// The first error met while writing.
    failure: &'a RefCell<Option<EngineError>>,
}

impl PendingTensor<'_> {
    /// Elements in the tensor.
    fn len(&self) -> usize {
        self.shape.iter().product()
    }
}

impl View for PendingTensor<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype.safetensors()
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        let result = self.source.tensor(&self.name, &self.shape).and_then(|values| {
            if values.len() == self.len() {
                Ok(values)
            } else {
                Err(EngineError::Checkpoint {
                    path: "tensor source".into(),
                    reason: format!(
                        "tensor `{}`: {} values for shape {:?}",
                        self.name,
                        values.len(),
                        self.shape
                    ),
                })
            }
        });
        match result {
            Ok(values) => Cow::Owned(self.dtype.encode(&values)),
            Err(e) => {
                self.failure.borrow_mut().get_or_insert(e);
                Cow::Owned(vec![0; self.data_len()])
            }
        }
    }

    fn data_len(&self) -> usize {
        self.len() * self.dtype.bytes_per_value()
    }
}

/// Writes a checkpoint of `model` into `dir` (created if needed): `config.json` in Hugging
/// Face Mixtral form and one `model.safetensors` holding every tensor of
/// [`tensor_shapes`] from `source`, stored as `dtype`. Tensors are fetched one at a time as
/// they are written; the safetensors file is written beside its final name and renamed into
/// place, and `config.json` is written last, so a failed write leaves no loadable checkpoint.
pub fn write_checkpoint(
    dir: &Path,
    model: &ModelConfig,
    source: &dyn TensorSource,
    dtype: CheckpointDtype,
) -> Result<(), EngineError> {
    model.validate(&model.name)?;
    std::fs::create_dir_all(dir)
        .map_err(|e| checkpoint_error(dir, format!("cannot create directory: {e}")))?;
    let config_path = dir.join(CONFIG_FILE);
    let tensors_path = dir.join(SINGLE_FILE);
    let config = hf_config_json(model, dtype)?;
    // A stale config.json must not pair with a half-written tensor file, nor a stale index
    // (which `open` prefers) with the new one.
    for stale in [&config_path, &dir.join(INDEX_FILE)] {
        match std::fs::remove_file(stale) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(checkpoint_error(stale, format!("cannot replace: {e}")));
            }
            _ => {}
        }
    }

    let failure = RefCell::new(None);
    let pending = tensor_shapes(model).into_iter().map(|(name, shape)| {
        let view = PendingTensor { name: name.clone(), shape, dtype, source, failure: &failure };
        (name, view)
    });
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(pending, Some(metadata), &tensors_path)
        .map_err(|e| checkpoint_error(&tensors_path, format!("cannot write: {e}")))?;
    if let Some(e) = failure.into_inner() {
        // Best effort: the error to report is the source's, not a failed clean-up.
        let _ = std::fs::remove_file(&tensors_path);
        return Err(e);
    }
    std::fs::write(&config_path, config)
        .map_err(|e| checkpoint_error(&config_path, format!("cannot write: {e}")))
}
