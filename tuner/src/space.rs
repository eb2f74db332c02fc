//! The search space: which engine-config knobs the tuner turns, and the values it tries.
//!
//! A space file (YAML, `deny_unknown_fields`) lists knobs in order; each knob is a dotted path
//! into the engine config's YAML (`batch.max_num_seqs`, `kernels.quant_row_tile`, …) with the
//! values to try. Two knobs are special: `weights` takes a format label (`int4-g64` sets both
//! `weights` and `int4_group`), and `threads: auto` expands to 1, 2, 4, … up to the core count.
//! `batch.policy` replaces the whole `batch` section with that policy's defaults before the
//! other `batch.*` knobs apply, and a `batch.*` knob the chosen policy does not have is skipped.
//!
//! A point (one value index per knob) becomes an [`EngineConfig`] by writing each value into
//! the base config's YAML tree and parsing it back, so the engine's own validation judges
//! every candidate and the tuner never keeps a second copy of the config's fields.

use dyno_engine::config::{BatchPolicy, EngineConfig};
use dyno_engine::{ConfigError, WeightFormat};
use serde::{Deserialize, Serialize};
use serde_yaml::{Mapping, Value};
use std::path::Path;

use crate::strategy::{Dim, Point, Space};

/// The default space for a hardware kind, compiled in.
const CPU_SPACE: &str = include_str!("../spaces/cpu.yaml");
/// The built-in search space of GPU targets (simulated).
const GPU_SPACE: &str = include_str!("../spaces/gpu.yaml");

/// A space file that cannot be used, naming the file, the knob and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{origin}: {knob}: {reason}")]
pub struct SpaceError {
    /// The file (or `built-in cpu space`).
    pub origin: String,
    /// The knob (or `knobs`).
    pub knob: String,
    /// What is wrong.
    pub reason: String,
}

/// The file format.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpaceFile {
    /// Knob path → values (a list, or `auto` for `threads`), in file order.
    knobs: Mapping,
}

/// One knob and the values it takes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Knob {
    /// Dotted path into the engine config YAML.
    pub path: String,
    /// The values, in order (ascending for numeric knobs).
    pub values: Vec<Value>,
}

impl Knob {
    /// Whether the values are numbers in ascending order (neighbours are meaningful).
    pub fn ordered(&self) -> bool {
        self.values.iter().all(Value::is_number)
            && self
                .values
                .windows(2)
                .all(|w| w[0].as_f64().unwrap_or(f64::NAN) < w[1].as_f64().unwrap_or(f64::NAN))
    }
}

/// A checked search space over engine configs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSpace {
    /// Where it came from (a path, or `built-in cpu space`).
    pub origin: String,
    /// Knobs in order; a point has one index per knob.
    pub knobs: Vec<Knob>,
}

/// A value as YAML text, for reports (`int4-g32`, `16`, `decode_first`).
pub fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_yaml::to_string(other).unwrap_or_default().trim().to_string(),
    }
}

impl ConfigSpace {
    /// The built-in space for hardware kind `hw` (today: `cpu`), with `threads: auto` expanded
    /// for `cores`.
    pub fn builtin(hw: &str, cores: usize) -> Result<Self, SpaceError> {
        match hw {
            "cpu" => Self::from_yaml(CPU_SPACE, "built-in cpu space", cores),
            "gpu" => Self::from_yaml(GPU_SPACE, "built-in gpu space", cores),
            other => Err(SpaceError {
                origin: "--hw".into(),
                knob: other.into(),
                reason: "no built-in search space for this hardware (known: cpu, gpu); pass --space FILE"
                    .into(),
            }),
        }
    }

    /// Reads and checks a space file.
    pub fn from_file(path: &Path, cores: usize) -> Result<Self, SpaceError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| SpaceError {
            origin: origin.clone(),
            knob: "file".into(),
            reason: e.to_string(),
        })?;
        Self::from_yaml(&text, &origin, cores)
    }

    /// Parses and checks a space; every knob must name a field of the engine config and every
    /// value must make a valid config on its own.
    pub fn from_yaml(text: &str, origin: &str, cores: usize) -> Result<Self, SpaceError> {
        let err = |knob: &str, reason: String| SpaceError {
            origin: origin.to_string(),
            knob: knob.to_string(),
            reason,
        };
        let file: SpaceFile =
            serde_yaml::from_str(text).map_err(|e| err("knobs", e.to_string()))?;
        let mut knobs = Vec::new();
        for (key, values) in file.knobs {
            let path = key
                .as_str()
                .ok_or_else(|| err("knobs", format!("knob name {key:?} is not a string")))?
                .to_string();
            let values = match values {
                Value::String(s) if s == "auto" && path == "threads" => auto_threads(cores),
                Value::Sequence(v) if !v.is_empty() => v,
                other => {
                    return Err(err(
                        &path,
                        format!("expected a non-empty list of values, found {other:?}"),
                    ));
                }
            };
            if knobs.iter().any(|k: &Knob| k.path == path) {
                return Err(err(&path, "listed twice".into()));
            }
            knobs.push(Knob { path, values });
        }
        if knobs.is_empty() {
            return Err(err("knobs", "the space has no knobs".into()));
        }
        let space = ConfigSpace { origin: origin.to_string(), knobs };
        space.check_each_value()?;
        Ok(space)
    }

    /// Every value of every knob, applied alone to the default config, must give a valid
    /// config: a typo in a path or a value fails here, naming the knob.
    fn check_each_value(&self) -> Result<(), SpaceError> {
        let base = EngineConfig::default();
        for knob in &self.knobs {
            for v in &knob.values {
                let mut tree = to_tree(&base);
                apply_knob(&mut tree, &knob.path, v).and_then(|()| from_tree(tree, "")).map_err(
                    |reason| SpaceError {
                        origin: self.origin.clone(),
                        knob: knob.path.clone(),
                        reason: format!("value {}: {reason}", value_text(v)),
                    },
                )?;
            }
        }
        Ok(())
    }

    /// The abstract space the strategies search.
    pub fn strategy_space(&self) -> Space {
        Space {
            dims: self
                .knobs
                .iter()
                .map(|k| Dim { name: k.path.clone(), size: k.values.len(), ordered: k.ordered() })
                .collect(),
        }
    }

    /// Number of points.
    pub fn size(&self) -> u128 {
        crate::strategy::space_size(&self.strategy_space())
    }

    /// The point as `knob=value` pairs, for reports.
    pub fn describe(&self, point: &[usize]) -> Vec<(String, String)> {
        self.knobs
            .iter()
            .zip(point)
            .map(|(k, &i)| (k.path.clone(), k.values.get(i).map(value_text).unwrap_or_default()))
            .collect()
    }

    /// The engine config of `point`: `base` with each knob's chosen value written in (the
    /// `batch.policy` knob first). Errors say which knob made the config invalid.
    pub fn config(&self, base: &EngineConfig, point: &[usize]) -> Result<EngineConfig, String> {
        if point.len() != self.knobs.len() {
            return Err(format!(
                "a point has {} coordinates; the space has {} knobs",
                point.len(),
                self.knobs.len()
            ));
        }
        let mut tree = to_tree(base);
        let mut order: Vec<usize> = (0..self.knobs.len()).collect();
        order.sort_by_key(|&i| self.knobs[i].path != "batch.policy");
        for i in order {
            let knob = &self.knobs[i];
            let value = knob.values.get(point[i]).ok_or_else(|| {
                format!("{}: index {} out of {} values", knob.path, point[i], knob.values.len())
            })?;
            apply_knob(&mut tree, &knob.path, value).map_err(|e| format!("{}: {e}", knob.path))?;
        }
        from_tree(tree, "candidate")
    }

    /// The point whose values equal `config`'s where the space has them (the default config's
    /// coordinates, for example); `None` if some knob has no value matching `config`.
    pub fn point_of(&self, config: &EngineConfig) -> Option<Point> {
        let tree = to_tree(config);
        self.knobs
            .iter()
            .map(|k| {
                k.values.iter().position(|v| {
                    let mut t = tree.clone();
                    apply_knob(&mut t, &k.path, v).is_ok() && t == tree
                })
            })
            .collect()
    }
}

/// 1, 2, 4, … up to `cores`, and `cores` itself.
fn auto_threads(cores: usize) -> Vec<Value> {
    let cores = cores.max(1);
    let mut v: Vec<usize> =
        std::iter::successors(Some(1usize), |t| Some(t * 2)).take_while(|&t| t < cores).collect();
    v.push(cores);
    v.into_iter().map(|t| Value::Number((t as u64).into())).collect()
}

fn to_tree(config: &EngineConfig) -> Value {
    serde_yaml::to_value(config).unwrap_or(Value::Null)
}

fn from_tree(tree: Value, origin: &str) -> Result<EngineConfig, String> {
    let config: EngineConfig = serde_yaml::from_value(tree).map_err(|e| e.to_string())?;
    config.validate(origin).map_err(|e: ConfigError| e.to_string())?;
    Ok(config)
}

/// The `batch` section of `policy` with its defaults.
fn policy_defaults(policy: &str) -> Result<Value, String> {
    let batch = match policy {
        "static" => BatchPolicy::Static { batch_size: 8 },
        "dynamic" => BatchPolicy::Dynamic { max_batch: 8, max_queue_delay_ms: 20.0 },
        "continuous" => BatchPolicy::default(),
        other => {
            return Err(format!("unknown batch policy `{other}` (static, dynamic, continuous)"));
        }
    };
    serde_yaml::to_value(batch).map_err(|e| e.to_string())
}

/// Whether some batch policy has a field `name`.
fn batch_field_exists(name: &str) -> bool {
    ["static", "dynamic", "continuous"]
        .iter()
        .filter_map(|p| policy_defaults(p).ok())
        .any(|d| d.get(name).is_some() || name == "priority")
}

/// Writes `value` at `path` in the config tree.
fn apply_knob(tree: &mut Value, path: &str, value: &Value) -> Result<(), String> {
    if path == "weights" {
        let label = value.as_str().ok_or("expected a weight format label")?;
        let format = WeightFormat::parse(label).ok_or_else(|| {
            format!(
                "`{label}` is not a weight format (f32, bf16, int8, int4-g32, int4-g64, int4-g128)"
            )
        })?;
        let mut config: EngineConfig =
            serde_yaml::from_value(tree.clone()).map_err(|e| e.to_string())?;
        config.set_weight_format(format);
        *tree = to_tree(&config);
        return Ok(());
    }
    if path == "batch.policy" {
        let policy = value.as_str().ok_or("expected a policy name")?;
        let defaults = policy_defaults(policy)?;
        let map = tree.as_mapping_mut().ok_or("the config is not a mapping")?;
        let current = map.get("batch").and_then(|b| b.get("policy")).and_then(Value::as_str);
        if current != Some(policy) {
            map.insert(Value::from("batch"), defaults);
        }
        return Ok(());
    }
    let parts: Vec<&str> = path.split('.').collect();
    let (last, parents) = parts.split_last().ok_or("empty knob path")?;
    let mut node = tree;
    for part in parents {
        node = node
            .get_mut(*part)
            .ok_or_else(|| format!("the engine config has no field `{part}` (in `{path}`)"))?;
    }
    let map = node.as_mapping_mut().ok_or_else(|| format!("`{path}` is not inside a section"))?;
    match map.get_mut(*last) {
        Some(slot) => {
            *slot = value.clone();
            Ok(())
        }
        // A batch knob the chosen policy does not have (max_num_seqs under static) is moot,
        // provided some policy has it.
        None if parents == ["batch"] && batch_field_exists(last) => Ok(()),
        None => Err(format!("the engine config has no field `{last}` (in `{path}`)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_cpu_space_parses_and_contains_the_default_config() {
        let s = ConfigSpace::builtin("cpu", 2).expect("cpu space");
        assert!(s.size() >= 100);
        let threads = s.knobs.iter().find(|k| k.path == "threads").expect("threads");
        assert_eq!(threads.values, vec![Value::from(1u64), Value::from(2u64)]);
        let base = EngineConfig { threads: 2, ..EngineConfig::default() };
        let p = s.point_of(&base).expect("default is a point of the space");
        assert_eq!(s.config(&base, &p).expect("valid"), base);
    }

    #[test]
    fn points_become_configs() {
        let s = ConfigSpace::from_yaml(
            "knobs:\n  weights: [f32, int4-g64]\n  batch.max_num_seqs: [4, 8]\n  batch.policy: [continuous, static]\n",
            "s.yaml",
            2,
        )
        .expect("space");
        let base = EngineConfig::default();
        let c = s.config(&base, &[1, 1, 0]).expect("config");
        assert_eq!(c.weight_format(), WeightFormat::Int4 { group: 64 });
        assert!(matches!(c.batch, BatchPolicy::Continuous { max_num_seqs: 8, .. }));
        // Under static batching max_num_seqs is moot, and the policy applies first.
        let c = s.config(&base, &[0, 1, 1]).expect("config");
        assert_eq!(c.batch, BatchPolicy::Static { batch_size: 8 });
        assert!(s.knobs[1].ordered() && !s.knobs[0].ordered());
    }

    #[test]
    fn bad_spaces_name_the_knob() {
        for (yaml, knob) in [
            ("knobs:\n  batch.max_num_sequences: [4]\n", "batch.max_num_sequences"),
            ("knobs:\n  weights: [int3]\n", "weights"),
            ("knobs:\n  kv_block_size: [0, 16]\n", "kv_block_size"),
            ("knobs:\n  threads: []\n", "threads"),
            ("knobs:\n  batch.policy: [greedy]\n", "batch.policy"),
            ("knobz: {}\n", "knobs"),
        ] {
            let e = ConfigSpace::from_yaml(yaml, "s.yaml", 2).unwrap_err().to_string();
            assert!(e.starts_with("s.yaml: ") && e.contains(knob), "{yaml}: {e}");
        }
    }
}
