//! Hardware profiles: what a device can do, as the step-time model needs it.
//!
//! A profile (`tuner/hardware/*.yaml`, compiled in) holds datasheet figures — dense peak
//! FLOP/s per dtype, memory capacity and bandwidth, interconnect bandwidth and latency,
//! devices per node — and a [`Calibration`]: the efficiency the engine's kernels reach per
//! op class and size, and the fixed per-step costs. A profile whose calibration came from a
//! datasheet and a documented heuristic says `calibrated: false`; `dyno profile --hw cpu`
//! measures this machine and writes a calibrated one.
//!
//! The roofline of one op on one device is
//! `max(flops ÷ peak, bytes ÷ bandwidth) ÷ efficiency(class, size)`.

use std::collections::BTreeMap;
use std::path::Path;

use dyno_engine::ModelConfig;
use dyno_engine::model_config::WeightFormat;
use serde::{Deserialize, Serialize};

/// The profiles compiled into the binary: (file name, YAML).
const BUILT_IN: &[(&str, &str)] = &[
    ("h100-sxm", include_str!("../hardware/h100-sxm.yaml")),
    ("h200", include_str!("../hardware/h200.yaml")),
    ("a100-80gb", include_str!("../hardware/a100-80gb.yaml")),
    ("l40s", include_str!("../hardware/l40s.yaml")),
    ("cpu", include_str!("../hardware/cpu.yaml")),
];

/// A device class the simulator can predict for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HardwareProfile {
    /// Canonical name (`h100-sxm`).
    pub name: String,
    /// Other names `--hw` accepts (`h100`).
    #[serde(default)]
    pub aliases: Vec<String>,
    /// One line for people.
    pub description: String,
    /// GPU or CPU: a CPU "device" is the whole socket, shared by every rank's threads.
    pub kind: DeviceKind,
    /// Devices in one node (the default `--gpus`).
    pub devices_per_node: usize,
    /// Memory per device, GiB (GPU: HBM; CPU: what the engine may use).
    pub memory_gib: f64,
    /// Sustained memory bandwidth per device, GB/s (10⁹ bytes per second).
    pub memory_bandwidth_gbs: f64,
    /// Dense peak TFLOP/s per device, per compute dtype.
    pub peak_tflops: PeakFlops,
    /// Bytes per activation element the engine moves between ranks (2 for bf16 on GPUs,
    /// 4 for the CPU engine's f32).
    pub activation_bytes: u32,
    /// Between devices of one node.
    pub interconnect: Interconnect,
    /// CPU only: cores and the bandwidth one core can draw, for ranks with few threads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuTopology>,
    /// Efficiencies and fixed costs.
    pub calibration: Calibration,
}

/// GPU or CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    /// A GPU: each rank owns one device.
    Gpu,
    /// A CPU: ranks share the socket's cores and bandwidth.
    Cpu,
}

/// Dense peak TFLOP/s per compute dtype (no sparsity).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeakFlops {
    /// f32 (CUDA cores on GPUs, FMA units on CPUs).
    pub f32: f64,
    /// bf16 (tensor cores on GPUs).
    pub bf16: f64,
    /// int8 (tensor cores on GPUs; VNNI on CPUs).
    pub int8: f64,
}

/// The links between devices of one node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interconnect {
    /// What it is (`nvlink4`, `pcie4`, `shared-memory`).
    pub kind: String,
    /// Bandwidth per device per direction, GB/s: the `bw` of a ring all-reduce.
    pub bandwidth_gbs: f64,
    /// Latency of one collective, microseconds.
    pub latency_us: f64,
}

/// A CPU's cores, for ranks that use only some of them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CpuTopology {
    /// Physical cores the engine may use.
    pub cores: usize,
    /// Bandwidth one core's stream reaches, GB/s.
    pub bandwidth_one_core_gbs: f64,
}

/// How close the engine's kernels come to the roofline, and what each step costs beyond it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// Whether the efficiencies were fitted from measurements on this hardware.
    pub calibrated: bool,
    /// Where the figures came from (a datasheet and heuristic, or the command, machine and
    /// date that measured them).
    pub source: String,
    /// Fixed cost of one engine step (scheduling, launches, bookkeeping), microseconds.
    pub step_overhead_us: f64,
    /// Cost of each sampled token (logits softmax, sampling, streaming), microseconds.
    pub sample_overhead_us: f64,
    /// Efficiency curves per op class; a class not listed uses `default`.
    pub efficiency: BTreeMap<OpClass, EfficiencyCurve>,
    /// For classes without a curve.
    pub default_efficiency: f64,
}

/// What kind of work an op is, for its efficiency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpClass {
    /// Activations × f32 weights; size = activation rows.
    LinearF32,
    /// Activations × bf16 weights; size = activation rows.
    LinearBf16,
    /// Activations × int8 weights; size = activation rows.
    LinearInt8,
    /// Activations × int4 weights; size = activation rows.
    LinearInt4,
    /// One query per sequence against its cached K/V; size = context tokens.
    AttentionDecode,
    /// Causal attention of a prefill chunk; size = chunk tokens.
    AttentionPrefill,
    /// Norms, RoPE, SiLU·mul, KV writes, routing: bandwidth-bound; size = tokens.
    Elementwise,
}

impl OpClass {
    /// The linear class of a weight format.
    pub fn linear(format: WeightFormat) -> OpClass {
        match format {
            WeightFormat::F32 => OpClass::LinearF32,
            WeightFormat::Bf16 => OpClass::LinearBf16,
            WeightFormat::Int8 => OpClass::LinearInt8,
            WeightFormat::Int4 { .. } => OpClass::LinearInt4,
        }
    }

    /// Every class, in order.
    pub const ALL: [OpClass; 7] = [
        OpClass::LinearF32,
        OpClass::LinearBf16,
        OpClass::LinearInt8,
        OpClass::LinearInt4,
        OpClass::AttentionDecode,
        OpClass::AttentionPrefill,
        OpClass::Elementwise,
    ];
}

/// Efficiency (0, 1] against the roofline as a function of an op's size: points sorted by
/// size, interpolated linearly in log(size), held flat beyond the ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EfficiencyCurve {
    /// (size, efficiency) points.
    pub points: Vec<EfficiencyPoint>,
}

/// One point of an [`EfficiencyCurve`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EfficiencyPoint {
    /// The op's size (rows, tokens).
    pub size: f64,
    /// Fraction of the roofline reached.
    pub efficiency: f64,
}

impl EfficiencyCurve {
    /// The efficiency at `size`.
    pub fn at(&self, size: f64) -> f64 {
        let pts = &self.points;
        let Some(first) = pts.first() else { return 1.0 };
        if size <= first.size {
            return first.efficiency;
        }
        for w in pts.windows(2) {
            let (a, b) = (w[0], w[1]);
            if size <= b.size {
                let span = (b.size / a.size).ln();
                let t = if span > 0.0 { (size / a.size).ln() / span } else { 1.0 };
                return a.efficiency + t * (b.efficiency - a.efficiency);
            }
        }
        pts[pts.len() - 1].efficiency
    }
}

/// A profile that cannot be read or used; the message names the file, field and reason.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {field}: {reason}")]
pub struct ProfileError {
    /// The file or built-in profile.
    pub origin: String,
    /// The field at fault.
    pub field: String,
    /// Why.
    pub reason: String,
}

impl ProfileError {
    fn new(origin: &str, field: &str, reason: impl Into<String>) -> Self {
        Self { origin: origin.to_string(), field: field.to_string(), reason: reason.into() }
    }
}

impl HardwareProfile {
    /// Names of the built-in profiles.
    pub fn built_in_names() -> Vec<&'static str> {
        BUILT_IN.iter().map(|(n, _)| *n).collect()
    }

    /// A built-in profile by name or alias (`h100`), or a profile YAML file by path.
    pub fn resolve(name_or_path: &str) -> Result<Self, ProfileError> {
        let wanted = name_or_path.to_ascii_lowercase();
        for (name, text) in BUILT_IN {
            let p = Self::from_yaml(text, &format!("built-in profile {name}"))?;
            if p.name == wanted || p.aliases.contains(&wanted) {
                return Ok(p);
            }
        }
        let path = Path::new(name_or_path);
        if path.exists() {
            return Self::from_yaml_file(path);
        }
        let mut known: Vec<String> = Vec::new();
        for (name, text) in BUILT_IN {
            if let Ok(p) = Self::from_yaml(text, name) {
                known.push(p.name.clone());
                known.extend(p.aliases.iter().cloned());
            }
        }
        Err(ProfileError::new(
            "--hw",
            name_or_path,
            format!("no such hardware profile or file (known: {})", known.join(", ")),
        ))
    }

    /// Reads a profile YAML file.
    pub fn from_yaml_file(path: &Path) -> Result<Self, ProfileError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ProfileError::new(&origin, "(file)", e.to_string()))?;
        Self::from_yaml(&text, &origin)
    }

    /// Parses and validates profile YAML; `origin` names it in errors.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Self, ProfileError> {
        let p: Self = serde_yaml::from_str(text)
            .map_err(|e| ProfileError::new(origin, "(yaml)", e.to_string()))?;
        p.validate(origin)?;
        Ok(p)
    }

    /// The YAML form, which [`HardwareProfile::from_yaml`] reads back.
    pub fn to_yaml(&self) -> String {
        serde_yaml::to_string(self).unwrap_or_else(|e| format!("# not serializable: {e}\n"))
    }

    /// Checks every figure is positive and every efficiency in (0, 1].
    pub fn validate(&self, origin: &str) -> Result<(), ProfileError> {
        let positive = |field: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ProfileError::new(origin, field, format!("{v} must be a positive number")))
            }
        };
        let non_negative = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                Err(ProfileError::new(origin, field, format!("{v} must be ≥ 0")))
            }
        };
        if self.devices_per_node == 0 {
            return Err(ProfileError::new(origin, "devices_per_node", "must be at least 1"));
        }
        positive("memory_gib", self.memory_gib)?;
        positive("memory_bandwidth_gbs", self.memory_bandwidth_gbs)?;
        positive("peak_tflops.f32", self.peak_tflops.f32)?;
        positive("peak_tflops.bf16", self.peak_tflops.bf16)?;
        positive("peak_tflops.int8", self.peak_tflops.int8)?;
        if self.activation_bytes == 0 {
            return Err(ProfileError::new(origin, "activation_bytes", "must be at least 1"));
        }
        positive("interconnect.bandwidth_gbs", self.interconnect.bandwidth_gbs)?;
        non_negative("interconnect.latency_us", self.interconnect.latency_us)?;
        match (self.kind, &self.cpu) {
            (DeviceKind::Cpu, None) => {
                return Err(ProfileError::new(
                    origin,
                    "cpu",
                    "a cpu profile needs `cpu: {cores, bandwidth_one_core_gbs}`",
                ));
            }
            (DeviceKind::Cpu, Some(c)) => {
                if c.cores == 0 {
                    return Err(ProfileError::new(origin, "cpu.cores", "must be at least 1"));
                }
                positive("cpu.bandwidth_one_core_gbs", c.bandwidth_one_core_gbs)?;
            }
            (DeviceKind::Gpu, Some(_)) => {
                return Err(ProfileError::new(origin, "cpu", "only a cpu profile has `cpu`"));
            }
            (DeviceKind::Gpu, None) => {}
        }
        let c = &self.calibration;
        non_negative("calibration.step_overhead_us", c.step_overhead_us)?;
        non_negative("calibration.sample_overhead_us", c.sample_overhead_us)?;
        let efficiency = |field: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v <= 1.0 {
                Ok(())
            } else {
                Err(ProfileError::new(origin, field, format!("{v} must be in (0, 1]")))
            }
        };
        efficiency("calibration.default_efficiency", c.default_efficiency)?;
        for (class, curve) in &c.efficiency {
            let field = format!("calibration.efficiency.{}", class.label());
            if curve.points.is_empty() {
                return Err(ProfileError::new(origin, &field, "needs at least one point"));
            }
            let mut last = 0.0;
            for p in &curve.points {
                positive(&format!("{field}.size"), p.size)?;
                efficiency(&format!("{field}.efficiency"), p.efficiency)?;
                if p.size <= last {
                    return Err(ProfileError::new(origin, &field, "sizes must increase"));
                }
                last = p.size;
            }
        }
        Ok(())
    }

    /// Memory per device, bytes.
    pub fn memory_bytes(&self) -> u64 {
        (self.memory_gib * f64::from(1u32 << 30)) as u64
    }

    /// The efficiency of an op of `class` at `size`.
    pub fn efficiency(&self, class: OpClass, size: f64) -> f64 {
        self.calibration
            .efficiency
            .get(&class)
            .map_or(self.calibration.default_efficiency, |c| c.at(size))
    }

    /// Whether this profile describes a GPU.
    pub fn is_gpu(&self) -> bool {
        self.kind == DeviceKind::Gpu
    }

    /// A one-line description of where the figures come from, for emitted configs and
    /// reports: "h100-sxm, uncalibrated (datasheet + heuristic)".
    pub fn provenance(&self) -> String {
        let state = if self.calibration.calibrated { "calibrated" } else { "uncalibrated" };
        format!("{}, {state} ({})", self.name, self.calibration.source)
    }

    /// Whether `model` at `format` fits `devices` devices at all (weights only).
    pub fn weights_fit(&self, model: &ModelConfig, format: WeightFormat, devices: usize) -> bool {
        model.weight_bytes(format) <= self.memory_bytes() * devices as u64
    }
}

/// The profile `--hw NAME` means: a built-in profile or a file, except that `cpu` prefers the
/// calibrated profile `dyno profile --hw cpu` wrote for this machine.
///
/// Without a calibrated file, `cpu` is the built-in template with this machine's cores filled
/// in, still `calibrated: false`. A calibrated file that cannot be read or is invalid is an
/// error naming the file (it is never silently skipped).
pub fn resolve_target(name: &str) -> Result<HardwareProfile, ProfileError> {
    let wanted = name.to_ascii_lowercase();
    if wanted != "cpu" && wanted != "local" {
        return HardwareProfile::resolve(name);
    }
    let path = crate::calibrate::calibrated_cpu_path();
    if path.exists() {
        return HardwareProfile::from_yaml_file(&path);
    }
    let mut template = HardwareProfile::resolve("cpu")?;
    if let Some(cpu) = template.cpu.as_mut() {
        cpu.cores = dyno_kernels::threads::available().max(1);
    }
    Ok(template)
}

impl OpClass {
    /// The YAML key.
    pub fn label(self) -> &'static str {
        match self {
            OpClass::LinearF32 => "linear_f32",
            OpClass::LinearBf16 => "linear_bf16",
            OpClass::LinearInt8 => "linear_int8",
            OpClass::LinearInt4 => "linear_int4",
            OpClass::AttentionDecode => "attention_decode",
            OpClass::AttentionPrefill => "attention_prefill",
            OpClass::Elementwise => "elementwise",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_profile_parses_and_aliases_resolve() {
        for name in HardwareProfile::built_in_names() {
            let p = HardwareProfile::resolve(name).unwrap();
            assert_eq!(p.name, name);
        }
        assert_eq!(HardwareProfile::resolve("h100").unwrap().name, "h100-sxm");
        assert_eq!(HardwareProfile::resolve("A100").unwrap().name, "a100-80gb");
        let err = HardwareProfile::resolve("tpu-v9").unwrap_err().to_string();
        assert!(err.contains("tpu-v9") && err.contains("h100"), "{err}");
    }

    #[test]
    fn datasheet_figures_match_the_design() {
        let h100 = HardwareProfile::resolve("h100").unwrap();
        assert_eq!(h100.peak_tflops.bf16, 989.0);
        assert_eq!(h100.memory_bandwidth_gbs, 3350.0);
        assert!(!h100.calibration.calibrated);
        let h200 = HardwareProfile::resolve("h200").unwrap();
        assert_eq!((h200.peak_tflops.bf16, h200.memory_bandwidth_gbs), (989.0, 4800.0));
        let a100 = HardwareProfile::resolve("a100").unwrap();
        assert_eq!((a100.peak_tflops.bf16, a100.memory_bandwidth_gbs), (312.0, 2039.0));
        let l40s = HardwareProfile::resolve("l40s").unwrap();
        assert_eq!((l40s.peak_tflops.bf16, l40s.memory_bandwidth_gbs), (362.0, 864.0));
    }

    #[test]
    fn curves_interpolate_in_log_size_and_hold_at_the_ends() {
        let c = EfficiencyCurve {
            points: vec![
                EfficiencyPoint { size: 1.0, efficiency: 0.2 },
                EfficiencyPoint { size: 100.0, efficiency: 0.6 },
            ],
        };
        assert_eq!(c.at(0.5), 0.2);
        assert!((c.at(10.0) - 0.4).abs() < 1e-12);
        assert_eq!(c.at(1e6), 0.6);
    }

    #[test]
    fn bad_figures_are_named() {
        let text = HardwareProfile::resolve("h100").unwrap().to_yaml();
        let bad = text.replace("memory_bandwidth_gbs: 3350.0", "memory_bandwidth_gbs: -1.0");
        let err = HardwareProfile::from_yaml(&bad, "x.yaml").unwrap_err().to_string();
        assert!(err.contains("x.yaml") && err.contains("memory_bandwidth_gbs"), "{err}");
        let bad = text.replace("efficiency: 0.8", "efficiency: 1.5");
        let err = HardwareProfile::from_yaml(&bad, "x.yaml").unwrap_err().to_string();
        assert!(err.contains("efficiency") && err.contains("(0, 1]"), "{err}");
        let bad = format!("{text}\nwarp_speed: 9\n");
        assert!(HardwareProfile::from_yaml(&bad, "x.yaml").is_err());
    }
}
