//! Hugging Face checkpoints: writing, reading back (single file and sharded), and errors that
//! name the file, the tensor or the field.

use dyno_engine::checkpoint::{
    CONFIG_FILE, CheckpointDtype, INDEX_FILE, SINGLE_FILE, SafetensorsCheckpoint,
    model_config_from_hf_json, tensor_shapes, write_checkpoint,
};
use dyno_engine::weights::{RandomWeights, TensorSource, names};
use dyno_engine::{EngineError, ModelConfig};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use std::path::Path;

const SEED: u64 = 11;

fn tiny() -> ModelConfig {
    ModelConfig::preset("mixtral-tiny").unwrap()
}

/// mixtral-tiny from `RandomWeights { seed: SEED }` written as `dtype` into a fresh directory.
fn written(dtype: CheckpointDtype) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write_checkpoint(dir.path(), &tiny(), &RandomWeights { seed: SEED }, dtype).unwrap();
    dir
}

/// Asserts every tensor of `ckpt` is within `rel` (relative) plus `abs` of the source.
fn assert_matches_source(ckpt: &dyn TensorSource, model: &ModelConfig, rel: f32, abs: f32) {
    let source = RandomWeights { seed: SEED };
    for (name, shape) in tensor_shapes(model) {
        let want = source.tensor(&name, &shape).unwrap();
        let got = ckpt.tensor(&name, &shape).unwrap();
        assert_eq!(got.len(), want.len(), "{name}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!((g - w).abs() <= w.abs() * rel + abs, "{name}[{i}]: {g} vs {w}");
        }
    }
}

/// Writes a safetensors file by hand from `(name, dtype, shape, bytes)`.
fn write_safetensors(path: &Path, tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|&v| half::bf16::from_f32(v).to_le_bytes()).collect()
}

fn checkpoint_err(e: EngineError) -> (String, String) {
    match e {
        EngineError::Checkpoint { path, reason } => (path, reason),
        other => panic!("expected a checkpoint error, got {other:?}"),
    }
}

#[test]
fn f32_checkpoint_round_trips_exactly() {
    let dir = written(CheckpointDtype::F32);
    let ckpt = SafetensorsCheckpoint::open(dir.path()).unwrap();
    assert_eq!(ckpt.model_config(), &tiny());
    assert_matches_source(&ckpt, &tiny(), 0.0, 0.0);
}

#[test]
fn bf16_and_f16_checkpoints_round_trip_within_rounding() {
    let f32_size =
        std::fs::metadata(written(CheckpointDtype::F32).path().join(SINGLE_FILE)).unwrap().len();
    // Rounding to nearest is off by at most half an ulp: 2^-8 relative for bf16 (8 significant
    // bits), 2^-11 for f16 (11 bits), whose subnormals below 2^-14 are 2^-24 apart.
    for (dtype, rel, abs) in
        [(CheckpointDtype::Bf16, 1.0 / 256.0, 0.0), (CheckpointDtype::F16, 1.0 / 2048.0, 1e-7)]
    {
        let dir = written(dtype);
        let size = std::fs::metadata(dir.path().join(SINGLE_FILE)).unwrap().len();
        assert!(size * 2 < f32_size + 16384, "{dtype:?}: {size} bytes vs {f32_size} at f32");
        let ckpt = SafetensorsCheckpoint::open(dir.path()).unwrap();
        assert_eq!(ckpt.model_config(), &tiny());
        assert_matches_source(&ckpt, &tiny(), rel, abs);
    }
}

#[test]
fn written_config_json_is_hugging_face_mixtral() {
    let dir = written(CheckpointDtype::Bf16);
    let path = dir.path().join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["model_type"], "mixtral");
    assert_eq!(json["architectures"][0], "MixtralForCausalLM");
    assert_eq!(json["torch_dtype"], "bfloat16");
    assert_eq!(json["num_local_experts"], 4);
    // Floats are written as their shortest f32 decimal, not as the f64 nearest the f32.
    assert_eq!(json["rms_norm_eps"].as_f64(), Some(1e-5), "{text}");
    assert_eq!(json["rope_theta"].as_f64(), Some(1e4), "{text}");
    assert_eq!(model_config_from_hf_json(&text, &path.display().to_string()).unwrap(), tiny());
}

#[test]
fn tensor_shapes_cover_every_parameter_once() {
    for name in ModelConfig::preset_names() {
        let m = ModelConfig::preset(name).unwrap();
        let shapes = tensor_shapes(&m);
        let total: u64 = shapes.iter().map(|(_, s)| s.iter().product::<usize>() as u64).sum();
        assert_eq!(total, m.params().total, "{name}");
        let mut names: Vec<&str> = shapes.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), shapes.len(), "{name}");
    }
    let shapes = tensor_shapes(&tiny());
    assert_eq!(shapes[0], (names::EMBED.to_string(), vec![320, 64]));
    assert_eq!(shapes[2], (names::attn(0, "q_proj"), vec![64, 64]));
    assert_eq!(shapes[3], (names::attn(0, "k_proj"), vec![32, 64]));
    assert_eq!(shapes[8], (names::expert(0, 0, "w1"), vec![96, 64]));
    assert_eq!(shapes[9], (names::expert(0, 0, "w2"), vec![64, 96]));
    assert_eq!(shapes.last().unwrap(), &(names::LM_HEAD.to_string(), vec![320, 64]));
}

/// A sharded copy of mixtral-tiny: the first half of the tensors in shard 1 at f32, the rest
/// in shard 2 at bf16, with the index.
fn sharded() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let written = written(CheckpointDtype::F32);
    std::fs::copy(written.path().join(CONFIG_FILE), dir.path().join(CONFIG_FILE)).unwrap();
    let source = RandomWeights { seed: SEED };
    let shapes = tensor_shapes(&tiny());
    let (first, second) = shapes.split_at(shapes.len() / 2);
    let mut weight_map = serde_json::Map::new();
    for (k, (part, dtype)) in [(first, Dtype::F32), (second, Dtype::BF16)].into_iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", k + 1);
        let tensors: Vec<_> = part
            .iter()
            .map(|(name, shape)| {
                let values = source.tensor(name, shape).unwrap();
                let bytes =
                    if dtype == Dtype::F32 { f32_bytes(&values) } else { bf16_bytes(&values) };
                weight_map.insert(name.clone(), file.clone().into());
                (name.clone(), dtype, shape.clone(), bytes)
            })
            .collect();
        write_safetensors(&dir.path().join(&file), &tensors);
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": weight_map});
    std::fs::write(dir.path().join(INDEX_FILE), index.to_string()).unwrap();
    dir
}

#[test]
fn sharded_checkpoint_loads() {
    let dir = sharded();
    let ckpt = SafetensorsCheckpoint::open(dir.path()).unwrap();
    assert_eq!(ckpt.model_config(), &tiny());
    assert_matches_source(&ckpt, &tiny(), 1.0 / 256.0, 0.0);
    // The first shard is f32: exact.
    let (name, shape) = &tensor_shapes(&tiny())[2];
    assert_eq!(
        ckpt.tensor(name, shape).unwrap(),
        RandomWeights { seed: SEED }.tensor(name, shape).unwrap()
    );
}

#[test]
fn sharded_index_errors_name_the_index_or_the_shard() {
    let dir = sharded();
    let ckpt = SafetensorsCheckpoint::open(dir.path()).unwrap();
    let (path, reason) = checkpoint_err(ckpt.tensor("model.extra.weight", &[1]).unwrap_err());
    assert!(path.ends_with(INDEX_FILE), "{path}");
    assert!(reason.contains("model.extra.weight"), "{reason}");

    // The index puts a tensor in a shard that lacks it.
    let index_path = dir.path().join(INDEX_FILE);
    let mut index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index_path).unwrap()).unwrap();
    index["weight_map"]["model.extra.weight"] = "model-00002-of-00002.safetensors".into();
    std::fs::write(&index_path, index.to_string()).unwrap();
    let (path, reason) = checkpoint_err(SafetensorsCheckpoint::open(dir.path()).unwrap_err());
    assert!(path.ends_with("model-00002-of-00002.safetensors"), "{path}");
    assert!(reason.contains("model.extra.weight"), "{reason}");

    // The index names a shard that does not exist.
    index["weight_map"]["model.extra.weight"] = "model-00003-of-00002.safetensors".into();
    std::fs::write(&index_path, index.to_string()).unwrap();
    let (path, _) = checkpoint_err(SafetensorsCheckpoint::open(dir.path()).unwrap_err());
    assert!(path.ends_with("model-00003-of-00002.safetensors"), "{path}");

    // Shard names must stay inside the directory.
    index["weight_map"]["model.extra.weight"] = "../model.safetensors".into();
    std::fs::write(&index_path, index.to_string()).unwrap();
    let (path, reason) = checkpoint_err(SafetensorsCheckpoint::open(dir.path()).unwrap_err());
    assert!(path.ends_with(INDEX_FILE) && reason.contains("../model.safetensors"), "{reason}");
}

#[test]
fn missing_tensor_and_wrong_shape_name_file_and_tensor() {
    let dir = written(CheckpointDtype::F32);
    let ckpt = SafetensorsCheckpoint::open(dir.path()).unwrap();
    let missing = names::input_norm(7);
    let (path, reason) = checkpoint_err(ckpt.tensor(&missing, &[64]).unwrap_err());
    assert!(path.ends_with(SINGLE_FILE), "{path}");
    assert!(reason.contains(&missing), "{reason}");

    let e = ckpt.tensor(names::EMBED, &[321, 64]).unwrap_err().to_string();
    assert!(e.contains(SINGLE_FILE) && e.contains(names::EMBED), "{e}");
    assert!(e.contains("[321, 64]") && e.contains("[320, 64]"), "{e}");
}

#[test]
fn unsupported_dtype_names_file_tensor_and_dtype() {
    let dir = written(CheckpointDtype::F32);
    let ints: Vec<u8> = (0..4i32).flat_map(|v| v.to_le_bytes()).collect();
    write_safetensors(
        &dir.path().join(SINGLE_FILE),
        &[(names::FINAL_NORM.to_string(), Dtype::I32, vec![4], ints)],
    );
    let ckpt = SafetensorsCheckpoint::open(dir.path()).unwrap();
    let (path, reason) = checkpoint_err(ckpt.tensor(names::FINAL_NORM, &[4]).unwrap_err());
    assert!(path.ends_with(SINGLE_FILE), "{path}");
    assert!(reason.contains(names::FINAL_NORM) && reason.contains("I32"), "{reason}");
}

#[test]
fn truncated_or_corrupt_safetensors_names_the_file() {
    let dir = written(CheckpointDtype::F32);
    let path = dir.path().join(SINGLE_FILE);
    let bytes = std::fs::read(&path).unwrap();
    for broken in [
        bytes[..bytes.len() - 100].to_vec(),
        bytes[..bytes.len() / 2].to_vec(),
        bytes[..5].to_vec(),
        Vec::new(),
        b"this is not a safetensors file at all".to_vec(),
        [&[0xff; 8][..], &bytes[8..]].concat(),
    ] {
        std::fs::write(&path, &broken).unwrap();
        let (p, reason) = checkpoint_err(SafetensorsCheckpoint::open(dir.path()).unwrap_err());
        assert!(p.ends_with(SINGLE_FILE), "{p}: {reason}");
        assert!(reason.contains("safetensors"), "{reason}");
    }
}

#[test]
fn missing_files_are_named() {
    let dir = written(CheckpointDtype::F32);
    std::fs::remove_file(dir.path().join(SINGLE_FILE)).unwrap();
    let e = SafetensorsCheckpoint::open(dir.path()).unwrap_err().to_string();
    assert!(e.contains(SINGLE_FILE) && e.contains(INDEX_FILE), "{e}");

    std::fs::remove_file(dir.path().join(CONFIG_FILE)).unwrap();
    let (path, _) = checkpoint_err(SafetensorsCheckpoint::open(dir.path()).unwrap_err());
    assert!(path.ends_with(CONFIG_FILE), "{path}");
}

#[test]
fn bad_config_json_fields_are_named() {
    let dir = written(CheckpointDtype::F32);
    let path = dir.path().join(CONFIG_FILE);
    let good = std::fs::read_to_string(&path).unwrap();
    let cases = [
        ("\"num_hidden_layers\": 2", "\"num_hidden_layers\": \"two\"", "num_hidden_layers"),
        ("\"num_hidden_layers\": 2", "\"num_hidden_layers\": -2", "num_hidden_layers"),
        ("\"num_local_experts\": 4,", "", "num_local_experts"),
        ("\"vocab_size\"", "\"vocab\"", "vocab_size"),
        ("\"rope_theta\": 10000.0", "\"rope_theta\": \"big\"", "rope_theta"),
        ("\"hidden_act\": \"silu\"", "\"hidden_act\": \"gelu\"", "hidden_act"),
        // Parses, but ModelConfig::validate refuses it.
        ("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3", "kv_heads"),
        ("{", "[", ""),
    ];
    for (from, to, field) in cases {
        assert!(good.contains(from), "{from}");
        std::fs::write(&path, good.replace(from, to)).unwrap();
        let e = SafetensorsCheckpoint::open(dir.path()).unwrap_err();
        let EngineError::Config(c) = &e else { panic!("{from} → {to}: {e:?}") };
        assert!(c.origin.ends_with(CONFIG_FILE), "{e}");
        assert_eq!(c.field, field, "{e}");
        assert!(e.to_string().contains(CONFIG_FILE), "{e}");
    }
}

#[test]
fn dense_config_is_refused_naming_num_local_experts() {
    let mistral = r#"{"model_type": "mistral", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 32000, "max_position_embeddings": 32768}"#;
    let e = model_config_from_hf_json(mistral, "/m/config.json").unwrap_err().to_string();
    assert!(e.contains("/m/config.json") && e.contains("num_local_experts"), "{e}");
    assert!(e.contains("mistral"), "{e}");
}

#[test]
fn real_mixtral_8x7b_config_matches_the_preset() {
    // mistralai/Mixtral-8x7B-v0.1 config.json, verbatim.
    let text = r#"{
  "architectures": [
    "MixtralForCausalLM"
  ],
  "attention_dropout": 0.0,
  "bos_token_id": 1,
  "eos_token_id": 2,
  "hidden_act": "silu",
  "hidden_size": 4096,
  "initializer_range": 0.02,
  "intermediate_size": 14336,
  "max_position_embeddings": 32768,
  "model_type": "mixtral",
  "num_attention_heads": 32,
  "num_experts_per_tok": 2,
  "num_hidden_layers": 32,
  "num_key_value_heads": 8,
  "num_local_experts": 8,
  "output_router_logits": false,
  "rms_norm_eps": 1e-05,
  "rope_theta": 1e6,
  "router_aux_loss_coef": 0.02,
  "sliding_window": null,
  "tie_word_embeddings": false,
  "torch_dtype": "bfloat16",
  "transformers_version": "4.36.0.dev0",
  "use_cache": true,
  "vocab_size": 32000
}"#;
    let got = model_config_from_hf_json(text, "/models/Mixtral-8x7B-v0.1/config.json").unwrap();
    assert_eq!(got.name, "Mixtral-8x7B-v0.1");
    let preset = ModelConfig::preset("mixtral-8x7b").unwrap();
    assert_eq!(ModelConfig { name: preset.name.clone(), ..got }, preset);

    // `_name_or_path` wins over the directory; defaults fill rope_theta, rms_norm_eps, head_dim.
    let mut json: serde_json::Value = serde_json::from_str(text).unwrap();
    let obj = json.as_object_mut().unwrap();
    obj.insert("_name_or_path".into(), "mistralai/Mixtral-8x7B-v0.1".into());
    obj.remove("rope_theta");
    obj.remove("rms_norm_eps");
    obj.insert("head_dim".into(), serde_json::Value::Null);
    let got = model_config_from_hf_json(&json.to_string(), "config.json").unwrap();
    assert_eq!(got, ModelConfig { name: "mistralai/Mixtral-8x7B-v0.1".into(), ..preset });
}

/// A source that fails on one tensor.
struct FailingSource;

impl TensorSource for FailingSource {
    fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EngineError> {
        if name == names::router(1) {
            return Err(EngineError::Checkpoint { path: "somewhere".into(), reason: name.into() });
        }
        RandomWeights { seed: SEED }.tensor(name, shape)
    }
}

#[test]
fn failed_write_reports_the_source_error_and_leaves_no_checkpoint() {
    let dir = written(CheckpointDtype::F32);
    let e = write_checkpoint(dir.path(), &tiny(), &FailingSource, CheckpointDtype::Bf16)
        .unwrap_err()
        .to_string();
    assert!(e.contains(&names::router(1)), "{e}");
    assert!(!dir.path().join(CONFIG_FILE).exists());
    assert!(!dir.path().join(SINGLE_FILE).exists());
    assert!(SafetensorsCheckpoint::open(dir.path()).is_err());
}
