//! The quality bound: KL divergence of each weight format against f32, measured once per
//! (model, weights seed, format) and cached as JSON lines beside the kernel cache
//! (`quality.jsonl`), so a study checks its bound before anything runs and a second study
//! pays nothing.

use std::io::Write;
use std::path::{Path, PathBuf};

use dyno_engine::model::Model;
use dyno_engine::quality::kl_divergence;
use dyno_engine::weights::RandomWeights;
use dyno_engine::{EngineConfig, ModelConfig, WeightFormat};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// One cached measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QualityRecord {
    /// Model name.
    pub model: String,
    /// Hash of the model config (a changed shape is another model).
    pub model_hash: String,
    /// Seed of the random weights.
    pub seed: u64,
    /// Weight format label.
    pub format: String,
    /// Mean KL(f32 ‖ format) over the fixed prompt set, nats.
    pub kl_mean: f64,
    /// Largest at any position, nats.
    pub kl_max: f64,
}

/// The cache file and what it holds.
#[derive(Debug, Clone)]
pub struct QualityCache {
    path: PathBuf,
    records: Vec<QualityRecord>,
}

/// `quality.jsonl` in the kernel cache's directory.
pub fn default_path() -> PathBuf {
    let kernels = dyno_kernels::tune::cache::default_cache_path();
    kernels.with_file_name("quality.jsonl")
}

fn model_hash(model: &ModelConfig) -> String {
    let json = serde_json::to_string(model).unwrap_or_default();
    let digest = Sha256::digest(json.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl QualityCache {
    /// Reads the cache at `path` (absent: empty); a malformed line is an error naming it.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let records = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l).map_err(|e| format!("{}:{}: {e}", path.display(), i + 1))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { path: path.to_path_buf(), records })
    }

    /// The cached mean KL of `format` for `model` with weights from `seed`.
    pub fn lookup(&self, model: &ModelConfig, seed: u64, format: WeightFormat) -> Option<f64> {
        let hash = model_hash(model);
        let label = format.label();
        self.records
            .iter()
            .rev()
            .find(|r| r.model_hash == hash && r.seed == seed && r.format == label)
            .map(|r| r.kl_mean)
    }

    /// The mean KL of `format`: 0 for f32, else cached or measured now (loading the f32 and
    /// the quantized model with `threads` kernel threads) and appended to the cache.
    pub fn kl(
        &mut self,
        model: &ModelConfig,
        seed: u64,
        format: WeightFormat,
        threads: usize,
    ) -> Result<f64, String> {
        if format == WeightFormat::F32 {
            return Ok(0.0);
        }
        if let Some(kl) = self.lookup(model, seed, format) {
            return Ok(kl);
        }
        let weights = RandomWeights { seed };
        let mut config = EngineConfig { threads, seed, ..EngineConfig::default() };
        let reference = Model::load(model, &weights, &config).map_err(|e| e.to_string())?;
        config.set_weight_format(format);
        let candidate = Model::load(model, &weights, &config).map_err(|e| e.to_string())?;
        let report = kl_divergence(&reference, &candidate, None).map_err(|e| e.to_string())?;
        let record = QualityRecord {
            model: model.name.clone(),
            model_hash: model_hash(model),
            seed,
            format: format.label(),
            kl_mean: report.mean,
            kl_max: report.max,
        };
        self.append(record)?;
        Ok(report.mean)
    }

    fn append(&mut self, record: QualityRecord) -> Result<(), String> {
        if let Some(dir) = self.path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        let line = serde_json::to_string(&record).map_err(|e| e.to_string())?;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        writeln!(f, "{line}").map_err(|e| format!("{}: {e}", self.path.display()))?;
        self.records.push(record);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_once_then_reads_the_cache() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q.jsonl");
        let tiny = ModelConfig::preset("mixtral-tiny").expect("tiny");
        let mut cache = QualityCache::load(&path).expect("empty");
        let int4 = WeightFormat::Int4 { group: 32 };
        let kl = cache.kl(&tiny, 0, int4, 1).expect("kl");
        assert!(kl > 0.0);
        assert_eq!(cache.kl(&tiny, 0, WeightFormat::F32, 1), Ok(0.0));
        let reread = QualityCache::load(&path).expect("reread");
        assert_eq!(reread.lookup(&tiny, 0, int4), Some(kl));
        assert_eq!(reread.lookup(&tiny, 1, int4), None, "another seed is another model");
        std::fs::write(&path, "{not json\n").expect("write");
        let e = QualityCache::load(&path).unwrap_err();
        assert!(e.contains("q.jsonl:1"), "{e}");
    }
}
