//! Constraints: what rules a candidate out before anything runs, each with a reason a study
//! records.
//!
//! - memory fit: weights + KV pool + activations ≤ the memory budget;
//! - divisibility: the engine's own model checks (heads and KV heads by tp, experts by ep,
//!   layers by pp, a KV pool that holds one full-length sequence);
//! - cores: ranks × replicas × threads ≤ the cores the engine may use;
//! - without chunked prefill, the token budget of a step must hold the workload's longest
//!   prompt (otherwise such a prompt could never be scheduled).
//!
//! The quality bound (KL against f32) is the fifth, checked by the study from its cached
//! measurement per weight format.

use dyno_engine::ModelConfig;
use dyno_engine::config::{BatchPolicy, EngineConfig};
use serde::{Deserialize, Serialize};

use crate::hardware::HardwareProfile;

/// What the hardware gives a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes of memory the engine may use (CPU targets; GPUs use [`Devices`]).
    pub memory_bytes: u64,
    /// Cores the engine may use (ranks × replicas × threads; CPU targets).
    pub cores: usize,
    /// The workload's longest prompt, tokens.
    pub max_prompt_tokens: usize,
    /// GPU targets: the devices, whose memory each rank fits in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub devices: Option<Devices>,
}

impl Limits {
    /// The limits of `devices` devices of `profile` (a CPU profile: its memory and cores),
    /// for a workload whose longest prompt is `max_prompt_tokens`.
    pub fn for_profile(
        profile: &HardwareProfile,
        devices: usize,
        max_prompt_tokens: usize,
    ) -> Self {
        match profile.cpu {
            Some(cpu) if !profile.is_gpu() => Limits {
                memory_bytes: profile.memory_bytes(),
                cores: cpu.cores,
                max_prompt_tokens,
                devices: None,
            },
            _ => Limits {
                memory_bytes: profile.memory_bytes() * devices as u64,
                cores: usize::MAX,
                max_prompt_tokens,
                devices: Some(Devices {
                    count: devices,
                    memory_bytes: profile.memory_bytes(),
                    utilization: 0.9,
                }),
            },
        }
    }
}

/// The GPUs of a target: every rank owns one.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Devices {
    /// Devices available (ranks per replica × replicas ≤ this).
    pub count: usize,
    /// Memory of each, bytes.
    pub memory_bytes: u64,
    /// Fraction of each device's memory the engine may fill (weights, activations and the
    /// KV cache, which takes what the others leave: vLLM's `gpu_memory_utilization`).
    pub utilization: f64,
}

/// The memory a config needs for a model, by part.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MemoryEstimate {
    /// Weights: one copy per replica, except that single-rank replicas share theirs.
    pub weights: u64,
    /// KV pools of every replica.
    pub kv: u64,
    /// Activations and logits of the largest step, per rank, over every rank.
    pub activations: u64,
}

impl MemoryEstimate {
    /// Sum of the parts.
    pub fn total(&self) -> u64 {
        self.weights + self.kv + self.activations
    }
}

/// Estimates what `config` needs to serve `model`.
pub fn memory(model: &ModelConfig, config: &EngineConfig) -> MemoryEstimate {
    let p = &config.parallel;
    let per_copy = model.weight_bytes(config.weight_format());
    let copies = if p.ranks_per_replica() == 1 { 1 } else { p.dp as u64 };
    let kv_per_replica = config.kv_blocks(model) as u64 * config.kv_block_bytes(model);
    let (tokens, seqs) = match config.batch {
        BatchPolicy::Static { batch_size } => (batch_size * model.max_context, batch_size),
        BatchPolicy::Dynamic { max_batch, .. } => (max_batch * model.max_context, max_batch),
        BatchPolicy::Continuous { max_num_batched_tokens, max_num_seqs, .. } => {
            (max_num_batched_tokens, max_num_seqs)
        }
    };
    // Per token: residual, normed input, q/k/v, attention output, router logits and the
    // expert hidden (gate and up) for each of top_k experts — f32 — and one logits row per
    // sequence that samples.
    let per_token = 4
        * (3 * model.hidden
            + model.q_dim()
            + 2 * model.kv_dim()
            + model.experts
            + 2 * model.top_k * model.expert_width) as u64;
    let activations = (tokens as u64 * per_token + seqs as u64 * model.vocab as u64 * 4)
        * (p.ranks_per_replica() * p.dp) as u64;
    MemoryEstimate { weights: per_copy * copies, kv: kv_per_replica * p.dp as u64, activations }
}

/// What one device of a GPU target holds under `config`: its shard of the weights (split
/// evenly over the replica's tp·ep·pp ranks), its share of the replica's KV pool (split over
/// tp·pp: expert-parallel ranks hold no attention), and the activations of the largest step
/// at 2 bytes per element over tp.
pub fn device_memory(model: &ModelConfig, config: &EngineConfig) -> MemoryEstimate {
    let p = &config.parallel;
    let ranks = p.ranks_per_replica().max(1) as u64;
    let weights = model.weight_bytes(config.weight_format()).div_ceil(ranks);
    let kv_replica = config.kv_blocks(model) as u64 * config.kv_block_bytes(model);
    let kv = kv_replica.div_ceil((p.tp * p.pp).max(1) as u64);
    let one_replica = EngineConfig {
        parallel: dyno_engine::config::ParallelConfig { dp: 1, ..*p },
        ..config.clone()
    };
    let f32_activations = memory(model, &one_replica).activations / ranks;
    MemoryEstimate { weights, kv, activations: f32_activations / 2 / p.tp.max(1) as u64 }
}

/// Sizes a GPU candidate's KV pool to fill what the weights and activations leave of each
/// device (at `devices.utilization`), as serving engines do; CPU candidates keep theirs.
pub fn fit_kv_pool(model: &ModelConfig, config: &mut EngineConfig, limits: &Limits) {
    let Some(d) = limits.devices else { return };
    let p = &config.parallel;
    let need = device_memory(model, config);
    let budget = (d.memory_bytes as f64 * d.utilization) as u64;
    let free_per_device = budget.saturating_sub(need.weights + need.activations);
    let per_replica = free_per_device * (p.tp * p.pp).max(1) as u64;
    config.kv_pool_blocks = None;
    config.kv_pool_mib = ((per_replica >> 20) as usize).max(1);
}

/// Why a config cannot run here, or `Ok` if it can.
pub fn check(model: &ModelConfig, config: &EngineConfig, limits: &Limits) -> Result<(), String> {
    if let Some(d) = limits.devices {
        return check_devices(model, config, limits, &d);
    }
    config.validate_for(model, "candidate").map_err(|e| format!("{}: {}", e.field, e.reason))?;
    let p = &config.parallel;
    let cores = p.ranks_per_replica() * p.dp * config.threads;
    if cores > limits.cores {
        return Err(format!(
            "cores: tp·ep·pp·dp·threads = {}·{}·{}·{}·{} = {cores} > {} cores",
            p.tp, p.ep, p.pp, p.dp, config.threads, limits.cores
        ));
    }
    check_prefill(config, limits)?;
    let need = memory(model, config);
    if need.total() > limits.memory_bytes {
        let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
        return Err(format!(
            "memory: weights {:.2} + KV {:.2} + activations {:.2} = {:.2} GiB > budget {:.2} GiB",
            gib(need.weights),
            gib(need.kv),
            gib(need.activations),
            gib(need.total()),
            gib(limits.memory_bytes)
        ));
    }
    Ok(())
}

/// [`check`] for a GPU target: ranks fit the devices, each device's share fits its memory.
fn check_devices(
    model: &ModelConfig,
    config: &EngineConfig,
    limits: &Limits,
    d: &Devices,
) -> Result<(), String> {
    let p = &config.parallel;
    let ranks = p.ranks_per_replica() * p.dp;
    if ranks > d.count {
        return Err(format!(
            "devices: tp·ep·pp·dp = {}·{}·{}·{} = {ranks} > {} devices",
            p.tp, p.ep, p.pp, p.dp, d.count
        ));
    }
    let need = device_memory(model, config);
    let budget = (d.memory_bytes as f64 * d.utilization) as u64;
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    // Weights and activations alone over the budget: the reason is memory, whatever the
    // pool (which then cannot hold one sequence) says.
    if need.total() > budget || need.weights + need.activations >= budget {
        return Err(format!(
            "memory: per device, weights {:.1} + KV {:.1} + activations {:.1} = {:.1} GiB > {:.1} GiB ({:.0}% of {:.1} GiB)",
            gib(need.weights),
            gib(need.kv),
            gib(need.activations),
            gib(need.total()),
            gib(budget),
            d.utilization * 100.0,
            gib(d.memory_bytes)
        ));
    }
    config.validate_for(model, "candidate").map_err(|e| format!("{}: {}", e.field, e.reason))?;
    check_prefill(config, limits)
}

/// Without chunked prefill, the step's token budget must hold the longest prompt.
fn check_prefill(config: &EngineConfig, limits: &Limits) -> Result<(), String> {
    if let BatchPolicy::Continuous { max_num_batched_tokens, prefill_chunk: 0, .. } = config.batch
        && max_num_batched_tokens < limits.max_prompt_tokens
    {
        return Err(format!(
            "prefill: without chunked prefill, max_num_batched_tokens = {max_num_batched_tokens} cannot hold the workload's longest prompt ({} tokens)",
            limits.max_prompt_tokens
        ));
    }
    Ok(())
}

/// The leading word of a reason (`cores`, `memory`, `parallel.tp`, …): what study summaries
/// group pruned points by.
pub fn reason_kind(reason: &str) -> &str {
    reason.split(':').next().unwrap_or(reason).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { memory_bytes: 8 << 30, cores: 2, max_prompt_tokens: 2048, devices: None }
    }

    #[test]
    fn each_constraint_prunes_with_its_reason() {
        let mini = ModelConfig::preset("mixtral-mini").expect("mini");
        let ok = EngineConfig { threads: 2, ..EngineConfig::default() };
        assert_eq!(check(&mini, &ok, &limits()), Ok(()));

        let mut too_many = ok.clone();
        too_many.parallel.dp = 2;
        let e = check(&mini, &too_many, &limits()).unwrap_err();
        assert_eq!(reason_kind(&e), "cores", "{e}");

        let mut tp3 = ok.clone();
        tp3.threads = 1;
        tp3.parallel.tp = 3;
        let e = check(&mini, &tp3, &Limits { cores: 8, ..limits() }).unwrap_err();
        assert!(e.contains("parallel.tp") && e.contains("kv_heads"), "{e}");

        let small = Limits { memory_bytes: 1 << 30, ..limits() };
        let e = check(&mini, &ok, &small).unwrap_err();
        assert_eq!(reason_kind(&e), "memory", "{e}");
        let mut int4 = ok.clone();
        int4.set_weight_format(dyno_engine::WeightFormat::Int4 { group: 32 });
        assert_eq!(check(&mini, &int4, &small), Ok(()), "int4 mini fits in 1 GiB");

        let mut unchunked = ok.clone();
        unchunked.batch = BatchPolicy::Continuous {
            max_num_seqs: 8,
            max_num_batched_tokens: 512,
            prefill_chunk: 0,
            priority: Default::default(),
        };
        let e = check(&mini, &unchunked, &limits()).unwrap_err();
        assert_eq!(reason_kind(&e), "prefill", "{e}");
    }

    #[test]
    fn bf16_mixtral_8x7b_does_not_fit_one_h100_but_fits_two() {
        let mixtral = ModelConfig::preset("mixtral").expect("mixtral");
        let h100 = Devices { count: 8, memory_bytes: 80_000_000_000, utilization: 0.9 };
        let limits = Limits { devices: Some(h100), ..limits() };
        let mut c = EngineConfig::default();
        c.set_weight_format(dyno_engine::WeightFormat::Bf16);
        fit_kv_pool(&mixtral, &mut c, &limits);
        let e = check(&mixtral, &c, &limits).unwrap_err();
        assert_eq!(reason_kind(&e), "memory", "{e}");
        c.parallel.tp = 2;
        fit_kv_pool(&mixtral, &mut c, &limits);
        assert_eq!(check(&mixtral, &c, &limits), Ok(()));
        let per_device = device_memory(&mixtral, &c);
        let budget = 72_000_000_000u64;
        assert!(per_device.total() <= budget && per_device.total() > budget - (64 << 20));
        c.parallel.dp = 8;
        let e = check(&mixtral, &c, &limits).unwrap_err();
        assert_eq!(reason_kind(&e), "devices", "{e}");
    }

    #[test]
    fn replicas_of_one_rank_share_weights() {
        let mini = ModelConfig::preset("mixtral-mini").expect("mini");
        let mut c = EngineConfig { threads: 1, ..EngineConfig::default() };
        let one = memory(&mini, &c);
        c.parallel.dp = 2;
        let two = memory(&mini, &c);
        assert_eq!(one.weights, two.weights);
        assert_eq!(two.kv, 2 * one.kv);
        c.parallel.tp = 2;
        assert_eq!(memory(&mini, &c).weights, 2 * one.weights);
    }
}
