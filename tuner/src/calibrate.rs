//! `dyno profile --hw cpu`: measures this machine and writes the calibrated `cpu` profile the
//! simulator uses.
//!
//! What is measured, in order:
//!
//! 1. the machine's limits: read bandwidth with every thread and with one
//!    (`memory_bandwidth_gbs`, `cpu.bandwidth_one_core_gbs`), the FMA peak with every thread
//!    (`peak_tflops.f32`; bf16 the same, int8 twice it), cores and RAM;
//! 2. an efficiency curve per op class: the real kernel timed over a grid of sizes on the
//!    model's shapes (linear layers per weight format through the engine's own [`Linear`], so
//!    f32 switches to the GEMM where the engine does; decode attention over contexts; prefill
//!    attention over chunk sizes; the elementwise ops over tokens), each point the step model's
//!    roofline bound of that op ÷ the measured median, clamped to (0, 1];
//! 3. the engine's fixed costs: an [`Engine`] of the model (random weights, the default config
//!    with every core) runs real prefill and decode steps of known shapes; `step_overhead_us`
//!    and `sample_overhead_us` are fitted (non-negative weighted least squares, relative
//!    errors) to measured − predicted. When the kernel-level curves leave a systematic error
//!    on real steps (the engine runs experts and heads side by side, which a lone kernel does
//!    not), the linear curve of the engine's weight format is corrected per step size from the
//!    steps themselves, because what matters is that the step model predicts real steps.
//!
//! Times are medians of several repeats after a warm-up; weights and KV caches are rotated
//! over enough copies to exceed the last-level cache, so no op is timed from cache that the
//! engine streams from memory. Engine steps keep the best of three rounds (other processes only
//! ever add time), and the report warns when the load average says other work competed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dyno_engine::api::GenerateRequest;
use dyno_engine::config::{BatchPolicy, EngineConfig, Priority};
use dyno_engine::engine::Engine;
use dyno_engine::linear::{Linear, LinearParams};
use dyno_engine::model::Model;
use dyno_engine::model_config::WeightFormat;
use dyno_engine::weights::RandomWeights;
use dyno_engine::{EngineError, ModelConfig};
use dyno_kernels::KernelError;
use dyno_kernels::attention::{AttentionParams, PagedKv, SeqKv, decode, prefill};
use dyno_kernels::dense::DenseParams;
use dyno_kernels::machine::{MachineId, fma_peak_gflops, memory_bandwidth};
use dyno_kernels::quant::QuantParams;
use rayon::prelude::*;

use crate::hardware::{
    CpuTopology, EfficiencyCurve, EfficiencyPoint, HardwareProfile, OpClass, ProfileError,
};
use crate::step_model::{StepModel, StepShape};

/// What `dyno profile --hw cpu` measures and how long it spends.
#[derive(Debug, Clone)]
pub struct CalibrateOptions {
    /// The model whose shapes are timed and whose engine is stepped (`mixtral-mini`).
    pub model: String,
    /// Fewer sizes and repeats and small buffers: a few seconds, for tests.
    pub quick: bool,
    /// Print progress to stderr.
    pub progress: bool,
}

impl CalibrateOptions {
    /// The full measurement of `mixtral-mini`.
    pub fn full() -> Self {
        Self { model: "mixtral-mini".into(), quick: false, progress: true }
    }

    /// The quick measurement on `mixtral-tiny`.
    pub fn quick() -> Self {
        Self { model: "mixtral-tiny".into(), quick: true, progress: false }
    }
}

/// Why calibration failed.
#[derive(Debug, thiserror::Error)]
pub enum CalibrateError {
    /// The model or engine could not be built or stepped.
    #[error("engine: {0}")]
    Engine(#[from] EngineError),
    /// A kernel rejected its inputs.
    #[error("kernel: {0}")]
    Kernel(#[from] KernelError),
    /// The resulting profile is invalid.
    #[error("profile: {0}")]
    Profile(#[from] ProfileError),
    /// The engine did not schedule the shape asked for.
    #[error("engine step {what}: {reason}")]
    Step {
        /// The shape.
        what: String,
        /// What happened instead.
        reason: String,
    },
}

/// One kernel measurement behind a curve point.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelPoint {
    /// The op class.
    pub class: OpClass,
    /// Its size (rows, context or chunk tokens, tokens).
    pub size: f64,
    /// Median measured seconds.
    pub measured_s: f64,
    /// The step model's roofline bound, seconds.
    pub bound_s: f64,
}

/// One engine step shape: measured against predicted after the fit.
#[derive(Debug, Clone, PartialEq)]
pub struct FitRow {
    /// `decode b4 ctx 256`, `prefill 4×256`.
    pub shape: String,
    /// Median measured step time, ms.
    pub measured_ms: f64,
    /// The calibrated step model's prediction, ms.
    pub predicted_ms: f64,
    /// Kernel-level curves and zero overheads (before any fit), ms.
    pub kernel_only_ms: f64,
}

impl FitRow {
    /// (predicted − measured) ÷ measured, percent.
    pub fn error_pct(&self) -> f64 {
        (self.predicted_ms - self.measured_ms) / self.measured_ms * 100.0
    }
}

/// The calibrated profile and the measurements behind it.
#[derive(Debug, Clone)]
pub struct Calibrated {
    /// The profile to write.
    pub profile: HardwareProfile,
    /// Every kernel measurement, in class and size order.
    pub kernel_points: Vec<KernelPoint>,
    /// The engine steps and how well the profile predicts them.
    pub fit: Vec<FitRow>,
    /// Factors the engine's linear curve was multiplied by after the engine steps, as
    /// (from rows, factor), one per row bin (streaming kernels, GEMM, large GEMM).
    pub linear_correction: Vec<(f64, f64)>,
    /// The factor peaks and bandwidths were scaled up by (and efficiencies down) so that no
    /// efficiency exceeds 1; 1 when none did. The probes measured the figures ÷ this.
    pub rescale: f64,
    /// Kernel threads used (the engine's default).
    pub threads: usize,
    /// Seconds spent.
    pub seconds: f64,
    /// The highest 1-minute load average seen at the start and end (Linux): well above our
    /// own threads means other processes competed and every figure is pessimistic.
    pub load_average: Option<f64>,
}

/// Where `dyno profile --hw cpu` writes this machine's profile and `--hw cpu` looks for it:
/// `<dir of the kernel cache>/hardware/cpu-<machine key>.yaml`, the key sanitized to
/// `[A-Za-z0-9._-]`.
pub fn calibrated_cpu_path() -> PathBuf {
    let cache = dyno_kernels::tune::cache::default_cache_path();
    let dir = cache.parent().map(PathBuf::from).unwrap_or_default();
    dir.join("hardware").join(format!("cpu-{}.yaml", sanitize(&MachineId::detect().key())))
}

/// Keeps `[A-Za-z0-9._-]`, turns every other run of characters into one `-`.
fn sanitize(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if c.is_ascii_alphanumeric() || matches!(c, '.' | '_') {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

/// Sizes, repeats and buffers of one run.
struct Plan {
    rows: Vec<usize>,
    contexts: Vec<usize>,
    chunks: Vec<usize>,
    repeats: usize,
    /// Bytes the rotated copies of an op's operands should exceed.
    rotate_bytes: f64,
    bandwidth_bytes: usize,
    budget: Duration,
    /// Engine cases: (batch, prompt tokens), each prefilled in one step then decoded.
    engine_cases: Vec<(usize, usize)>,
    /// Rounds over the engine cases; each shape keeps its best round.
    engine_rounds: usize,
    /// Rounds over the engine cases for each weight format other than f32.
    format_rounds: usize,
    decode_steps: usize,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Plan {
                rows: vec![1, 4, 16],
                contexts: vec![16, 64],
                chunks: vec![8, 32],
                repeats: 3,
                rotate_bytes: 1e6,
                bandwidth_bytes: 8 << 20,
                budget: Duration::from_millis(20),
                engine_cases: vec![(1, 16), (4, 8)],
                engine_rounds: 1,
                format_rounds: 1,
                decode_steps: 3,
            }
        } else {
            Plan {
                rows: vec![1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
                contexts: vec![64, 128, 256, 512, 1024, 2048],
                chunks: vec![16, 32, 64, 128, 256, 512],
                repeats: 9,
                rotate_bytes: 96e6,
                bandwidth_bytes: dyno_kernels::machine::DEFAULT_BANDWIDTH_BYTES,
                budget: Duration::from_millis(600),
                engine_cases: vec![(1, 128), (1, 512), (4, 256), (8, 64), (16, 128)],
                engine_rounds: 3,
                format_rounds: 2,
                decode_steps: 8,
            }
        }
    }
}

/// Measures this machine and returns its calibrated `cpu` profile (see the module docs).
pub fn calibrate_cpu(opts: &CalibrateOptions) -> Result<Calibrated, CalibrateError> {
    let started = Instant::now();
    let load_before = load_average();
    let plan = Plan::new(opts.quick);
    let log = |msg: &str| {
        if opts.progress {
            eprintln!("[{:6.1}s] {msg}", started.elapsed().as_secs_f64());
        }
    };
    let model = ModelConfig::preset(&opts.model).map_err(EngineError::from)?;
    let config = EngineConfig::default();
    config.validate_for(&model, "engine config").map_err(EngineError::from)?;
    let threads = config.threads.max(1);
    let machine = MachineId::detect();

    // 1. The machine's limits.
    log(&format!("memory bandwidth ({threads} threads and 1)"));
    let bw_all = memory_bandwidth(threads, plan.bandwidth_bytes, plan.budget);
    let bw_one = memory_bandwidth(1, plan.bandwidth_bytes, plan.budget);
    log(&format!("FMA peak ({threads} threads)"));
    let peak = fma_peak_gflops(threads, plan.budget);
    let f32_tflops = peak.value / 1e3;

    let mut profile = HardwareProfile::resolve("cpu")?;
    profile.name = "cpu".into();
    profile.aliases = vec!["local".into()];
    profile.description = format!("this machine's CPU, measured: {}", machine.cpu_model);
    profile.memory_bandwidth_gbs = bw_all.read.value;
    profile.peak_tflops.f32 = f32_tflops;
    profile.peak_tflops.bf16 = f32_tflops;
    profile.peak_tflops.int8 = 2.0 * f32_tflops;
    if let Some(bytes) = dyno_harness::provenance::memory_bytes() {
        profile.memory_gib = bytes as f64 / f64::from(1u32 << 30);
    }
    profile.cpu = Some(CpuTopology {
        cores: machine.cores.max(1),
        bandwidth_one_core_gbs: bw_one.read.value.min(bw_all.read.value),
    });
    let cal = &mut profile.calibration;
    cal.calibrated = true;
    cal.source = format!(
        "dyno profile --hw cpu{} on {}, {}",
        if opts.quick { " --quick" } else { "" },
        machine.key(),
        utc_date()
    );
    cal.step_overhead_us = 0.0;
    cal.sample_overhead_us = 0.0;
    cal.efficiency.clear();
    cal.default_efficiency = 0.5;
    log(&format!(
        "bandwidth {:.1} GB/s ({:.1} one thread), FMA peak {:.1} GFLOP/s",
        bw_all.read.value, bw_one.read.value, peak.value
    ));

    // 2. Kernel curves, against the bounds of a step model of the measured limits.
    let sm = StepModel::new(&profile, &model, &config);
    let mut points = Vec::new();
    let formats = [
        WeightFormat::F32,
        WeightFormat::Bf16,
        WeightFormat::Int8,
        WeightFormat::Int4 { group: config.int4_group },
    ];
    for format in formats {
        log(&format!("linear {} over rows {:?}", format.label(), plan.rows));
        points.extend(measure_linear(&sm, &config, &plan, format)?);
    }
    log(&format!("decode attention over contexts {:?}", plan.contexts));
    points.extend(measure_decode(&sm, &config, &plan)?);
    log(&format!("prefill attention over chunks {:?}", plan.chunks));
    points.extend(measure_prefill(&sm, &config, &plan)?);
    log("elementwise ops");
    points.extend(measure_elementwise(&sm, &plan)?);
    // A one-row GEMV only streams its weight. Where one streamed faster than the read probe
    // (which other processes or its access pattern held back), the probe under-measured: take
    // the fastest streaming rate as the sustained bandwidth, so that no efficiency has to be
    // clamped at 1, and recompute the bounds.
    let probe = profile.memory_bandwidth_gbs;
    let streamed = points
        .iter()
        .filter(|p| is_linear(p.class) && p.size == 1.0)
        .map(|p| probe * p.bound_s / p.measured_s)
        .fold(0.0, f64::max);
    // Likewise the f32 GEMM (compute-bound from 64 rows) against the FMA loop's peak.
    let peak_probe = profile.peak_tflops.f32;
    let achieved = points
        .iter()
        .filter(|p| p.class == OpClass::LinearF32 && p.size >= 64.0)
        .map(|p| peak_probe * p.bound_s / p.measured_s)
        .fold(0.0, f64::max);
    if achieved > peak_probe {
        log(&format!(
            "the f32 GEMM reached {:.1} GFLOP/s > the FMA probe's {:.1}: using it",
            achieved * 1e3,
            peak_probe * 1e3
        ));
        profile.peak_tflops.f32 = achieved;
        profile.peak_tflops.bf16 = achieved;
        profile.peak_tflops.int8 = 2.0 * achieved;
    }
    if streamed > probe {
        log(&format!(
            "a one-row GEMV streamed {streamed:.1} GB/s > the read probe's {probe:.1}: using it"
        ));
        profile.memory_bandwidth_gbs = streamed;
    }
    if streamed > probe || achieved > peak_probe {
        let sm = StepModel::new(&profile, &model, &config);
        for p in &mut points {
            p.bound_s = bound_of(&sm, &config, p);
        }
    }
    for p in &points {
        log(&format!(
            "  {:<17} {:>6}: {:>9.3} ms, bound {:>9.3} ms, efficiency {:.2}",
            p.class.label(),
            p.size,
            p.measured_s * 1e3,
            p.bound_s * 1e3,
            p.bound_s / p.measured_s
        ));
    }
    for class in OpClass::ALL {
        let mut pts: Vec<EfficiencyPoint> = points
            .iter()
            .filter(|p| p.class == class)
            .map(|p| EfficiencyPoint {
                size: p.size,
                // Unclamped for now: the fit needs the measured ratios; `normalize` brings
                // every efficiency into (0, 1] at the end.
                efficiency: p.bound_s / p.measured_s,
            })
            .collect();
        pts.sort_by(|a, b| a.size.total_cmp(&b.size));
        pts.dedup_by(|a, b| a.size == b.size);
        if !pts.is_empty() {
            profile.calibration.efficiency.insert(class, EfficiencyCurve { points: pts });
        }
    }

    // 3. Engine steps: overheads, and the linear curve scaled where the kernels mislead.
    log(&format!("loading {} (random weights, {threads} threads)", model.name));
    let loaded = Arc::new(Model::load(&model, &RandomWeights { seed: config.seed }, &config)?);
    if let Some(&(batch, prompt)) = plan.engine_cases.first() {
        log("engine warm-up (page faults, first touches; discarded)");
        measure_engine(&loaded, &config, batch, prompt, plan.decode_steps)?;
    }
    let mut steps: Vec<MeasuredStep> = Vec::new();
    for round in 0..plan.engine_rounds {
        for &(batch, prompt) in &plan.engine_cases {
            log(&format!("engine steps: batch {batch}, prompt {prompt} (round {})", round + 1));
            for m in measure_engine(&loaded, &config, batch, prompt, plan.decode_steps)? {
                log(&format!("  {:<22} {:>10.2} ms", m.label, m.seconds * 1e3));
                // Other processes only ever add time: keep each shape's best round.
                match steps.iter_mut().find(|s| s.label == m.label) {
                    Some(s) => s.seconds = s.seconds.min(m.seconds),
                    None => steps.push(m),
                }
            }
        }
    }
    // 4. The other weight formats: the same engine steps with each format's weights.
    let mut groups: Vec<(WeightFormat, EngineConfig, Vec<MeasuredStep>)> =
        vec![(config.weight_format(), config.clone(), steps)];
    for format in formats.into_iter().filter(|f| *f != config.weight_format()) {
        let mut fconfig = config.clone();
        // int4 as the tuner most often picks it (group 128), where the model's widths allow.
        let widths = [model.hidden, model.expert_width, model.q_dim()];
        let format = match format {
            WeightFormat::Int4 { .. } => WeightFormat::Int4 {
                group: [128, 64, 32]
                    .into_iter()
                    .find(|g| widths.iter().all(|w| w % g == 0))
                    .unwrap_or(32),
            },
            other => other,
        };
        fconfig.set_weight_format(format);
        log(&format!("loading {} at {} for its engine steps", model.name, format.label()));
        let loaded = Arc::new(Model::load(&model, &RandomWeights { seed: config.seed }, &fconfig)?);
        if let Some(&(batch, prompt)) = plan.engine_cases.first() {
            measure_engine(&loaded, &fconfig, batch, prompt, plan.decode_steps)?;
        }
        let mut fsteps: Vec<MeasuredStep> = Vec::new();
        for _ in 0..plan.format_rounds {
            for &(batch, prompt) in &plan.engine_cases {
                for m in measure_engine(&loaded, &fconfig, batch, prompt, plan.decode_steps)? {
                    log(&format!(
                        "  {} {:<22} {:>10.2} ms",
                        format.label(),
                        m.label,
                        m.seconds * 1e3
                    ));
                    match fsteps.iter_mut().find(|s| s.label == m.label) {
                        Some(s) => s.seconds = s.seconds.min(m.seconds),
                        None => fsteps.push(m),
                    }
                }
            }
        }
        groups.push((format, fconfig, fsteps));
    }

    // 5. One fit over every format's steps: a factor per format and row bin on its linear
    //    ops, and the step and per-sample overheads shared by all (the formats' different
    //    linear costs are what tell the overheads apart from the linear time).
    let kernel_only: Vec<Vec<f64>> = groups
        .iter()
        .map(|(_, c, st)| {
            st.iter().map(|s| StepModel::new(&profile, &model, c).seconds(&s.shape)).collect()
        })
        .collect();
    let parts: Vec<(&EngineConfig, &[MeasuredStep])> =
        groups.iter().map(|(_, c, st)| (c, st.as_slice())).collect();
    let joint = fit_joint(&profile, &model, &parts);
    for ((format, _, _), scales) in groups.iter().zip(&joint.scales) {
        if let Some(curve) = profile.calibration.efficiency.get_mut(&OpClass::linear(*format)) {
            for p in &mut curve.points {
                p.efficiency /= scales[bin_of(p.size)];
            }
        }
        log(&format!(
            "  {} linear factors per row bin: {}",
            format.label(),
            scales.iter().map(|a| format!("{:.2}", 1.0 / a)).collect::<Vec<_>>().join(" ")
        ));
    }
    let correction: Vec<(f64, f64)> = std::iter::once(1.0)
        .chain(bin_edges())
        .zip(joint.scales[0])
        .map(|(from, a)| (from, 1.0 / a))
        .collect();
    profile.calibration.step_overhead_us = joint.step_us;
    profile.calibration.sample_overhead_us = joint.sample_us;
    let mut fit: Vec<FitRow> = Vec::new();
    for (((format, c, st), before), first) in
        groups.iter().zip(&kernel_only).zip(std::iter::once(true).chain(std::iter::repeat(false)))
    {
        let sm = StepModel::new(&profile, &model, c);
        fit.extend(st.iter().zip(before).map(|(s, k)| FitRow {
            shape: if first { s.label.clone() } else { format!("{} {}", format.label(), s.label) },
            measured_ms: s.seconds * 1e3,
            predicted_ms: sm.seconds(&s.shape) * 1e3,
            kernel_only_ms: k * 1e3,
        }));
    }
    let rescale = normalize(&mut profile);
    if rescale > 1.0 {
        log(&format!(
            "ops ran up to {rescale:.2}× faster than the probes' roofline: peak and bandwidth \
             scaled up by {rescale:.2} and every efficiency down by it (predictions unchanged)"
        ));
        let sm = StepModel::new(&profile, &model, &config);
        for p in &mut points {
            p.bound_s = bound_of(&sm, &config, p);
        }
    }
    profile.validate("calibrated cpu profile")?;
    Ok(Calibrated {
        profile,
        kernel_points: points,
        fit,
        linear_correction: correction,
        rescale,
        threads,
        seconds: started.elapsed().as_secs_f64(),
        load_average: [load_before, load_average()].into_iter().flatten().reduce(f64::max),
    })
}

/// The 1-minute load average (Linux), to tell whether other processes competed for the cores.
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Brings every efficiency into (0, 1] without changing a prediction: where some op ran
/// faster than its roofline (`e > 1`: the probes under-measured, as they do when other
/// processes compete, or the engine overlaps what a lone kernel cannot), the peaks and
/// bandwidths are multiplied by the largest `e` and every efficiency divided by it, so every
/// bound ÷ efficiency stays the same. Returns the factor (1 when nothing exceeded 1).
fn normalize(profile: &mut HardwareProfile) -> f64 {
    let cal = &mut profile.calibration;
    let e = cal
        .efficiency
        .values()
        .flat_map(|c| c.points.iter().map(|p| p.efficiency))
        .chain(std::iter::once(cal.default_efficiency))
        .filter(|e| e.is_finite())
        .fold(1.0, f64::max);
    for curve in cal.efficiency.values_mut() {
        for p in &mut curve.points {
            p.efficiency = clamp_eff(p.efficiency / e);
        }
    }
    cal.default_efficiency = clamp_eff(cal.default_efficiency / e);
    if e > 1.0 {
        profile.memory_bandwidth_gbs *= e;
        profile.peak_tflops.f32 *= e;
        profile.peak_tflops.bf16 *= e;
        profile.peak_tflops.int8 *= e;
        if let Some(cpu) = profile.cpu.as_mut() {
            cpu.bandwidth_one_core_gbs *= e;
        }
    }
    e
}

/// An efficiency clamped to (0, 1].
fn clamp_eff(e: f64) -> f64 {
    if e.is_finite() { e.clamp(1e-3, 1.0) } else { 1e-3 }
}

/// Today's date in UTC, `YYYY-MM-DD` (civil-from-days, H. Hinnant's algorithm: the tuner has
/// no date crate and needs nothing else of one).
fn utc_date() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Deterministic values in [−0.05, 0.05) (a 64-bit LCG): timing does not depend on them.
fn filler(n: usize, seed: u64) -> Vec<f32> {
    let mut s =
        seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            ((s >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.1
        })
        .collect()
}

/// The median of `repeats` timings of `f(i)` (i counts calls, for rotating inputs) after one
/// warm-up call per rotated copy.
fn median_time<E>(
    copies: usize,
    repeats: usize,
    mut f: impl FnMut(usize) -> Result<(), E>,
) -> Result<f64, E> {
    for i in 0..copies.max(1) {
        f(i)?;
    }
    let mut times = Vec::with_capacity(repeats);
    for i in 0..repeats.max(1) {
        let t = Instant::now();
        f(i)?;
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Whether `class` is a linear layer.
fn is_linear(class: OpClass) -> bool {
    matches!(
        class,
        OpClass::LinearF32 | OpClass::LinearBf16 | OpClass::LinearInt8 | OpClass::LinearInt4
    )
}

/// The step model's bound of a measured point, as the `measure_*` functions compute it.
fn bound_of(sm: &StepModel, config: &EngineConfig, p: &KernelPoint) -> f64 {
    let m = sm.model();
    let (out, inp) = ((2 * m.expert_width) as f64, m.hidden as f64);
    let linear = |f: WeightFormat| sm.linear_bound(p.size, out, inp, f);
    match p.class {
        OpClass::LinearF32 => linear(WeightFormat::F32),
        OpClass::LinearBf16 => linear(WeightFormat::Bf16),
        OpClass::LinearInt8 => linear(WeightFormat::Int8),
        OpClass::LinearInt4 => linear(WeightFormat::Int4 { group: config.int4_group }),
        OpClass::AttentionDecode => sm.attention_decode_bound(DECODE_SEQS as f64, p.size),
        OpClass::AttentionPrefill => sm.attention_prefill_bound(p.size),
        OpClass::Elementwise => sm.elementwise_bound(p.size),
    }
}

/// Sequences in the decode-attention measurement.
const DECODE_SEQS: usize = 4;

/// How many copies of `bytes` exceed `target` bytes (1 to 16).
fn copies_for(bytes: f64, target: f64) -> usize {
    ((target / bytes.max(1.0)).ceil() as usize).clamp(1, 16)
}

/// The expert up-projection (`[2·width, hidden]`, the largest linear op per token) through the
/// engine's [`Linear`] at `format`, over the grid of activation rows.
fn measure_linear(
    sm: &StepModel,
    config: &EngineConfig,
    plan: &Plan,
    format: WeightFormat,
) -> Result<Vec<KernelPoint>, CalibrateError> {
    let m = sm.model();
    let (out, inp) = (2 * m.expert_width, m.hidden);
    let threads = config.threads.max(1);
    let params = LinearParams {
        gemm: config.gemm_params("expert_up"),
        dense: DenseParams { row_tile: config.kernels.quant_row_tile, threads },
        quant: QuantParams {
            row_tile: config.kernels.quant_row_tile,
            threads,
            activations: config.kernels.activations,
        },
    };
    let w = filler(out * inp, 1);
    let copies = copies_for(out as f64 * inp as f64 * format.bytes_per_weight(), plan.rotate_bytes);
    let weights = (0..copies)
        .map(|_| Linear::new(&w, out, inp, format, params))
        .collect::<Result<Vec<_>, _>>()?;
    let mut points = Vec::new();
    for &rows in &plan.rows {
        let x = filler(rows * inp, 2);
        let mut y = vec![0.0f32; rows * out];
        let t =
            median_time(copies, plan.repeats, |i| weights[i % copies].forward(&x, rows, &mut y))?;
        points.push(KernelPoint {
            class: OpClass::linear(format),
            size: rows as f64,
            measured_s: t,
            bound_s: sm.linear_bound(rows as f64, out as f64, inp as f64, format),
        });
    }
    Ok(points)
}

/// One layer's KV pools (one per KV head) holding `seqs` sequences of `context` tokens, with
/// disjoint block tables.
struct Pools {
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    tables: Vec<Vec<u32>>,
    block: usize,
}

impl Pools {
    fn new(kv_heads: usize, head_dim: usize, block: usize, seqs: usize, context: usize) -> Self {
        let per_seq = context.div_ceil(block);
        let blocks = per_seq * seqs;
        let data = filler(blocks * block * head_dim, 3);
        let tables = (0..seqs)
            .map(|s| {
                // Interleave the sequences' blocks, as an allocator serving them in turn would.
                (0..per_seq).map(|b| (b * seqs + s) as u32).collect()
            })
            .collect();
        Pools { k: vec![data.clone(); kv_heads], v: vec![data; kv_heads], tables, block }
    }

    fn pool(&self, head: usize, head_dim: usize) -> PagedKv<'_> {
        PagedKv { k: &self.k[head], v: &self.v[head], block_size: self.block, head_dim }
    }
}

/// Decode attention of one layer at each context, four sequences, the heads run side by side
/// single-threaded as the engine runs a decode-only step.
fn measure_decode(
    sm: &StepModel,
    config: &EngineConfig,
    plan: &Plan,
) -> Result<Vec<KernelPoint>, CalibrateError> {
    let m = sm.model();
    let (kv_heads, hd) = (m.kv_heads, m.head_dim);
    let g = m.heads / m.kv_heads.max(1);
    let threads = config.threads.max(1);
    let params = AttentionParams { threads, ..config.kernels.attention };
    let single = AttentionParams { threads: 1, ..params };
    let seqs = DECODE_SEQS;
    let scale = 1.0 / (hd as f32).sqrt();
    let mut points = Vec::new();
    for &ctx in &plan.contexts {
        let layer_bytes = (seqs * ctx * kv_heads * hd * 8) as f64;
        let copies = copies_for(layer_bytes, plan.rotate_bytes);
        let layers: Vec<Pools> = (0..copies)
            .map(|_| Pools::new(kv_heads, hd, config.kv_block_size, seqs, ctx))
            .collect();
        let q = filler(seqs * g * hd, 4);
        let t = median_time(copies, plan.repeats, |i| {
            let layer = &layers[i % copies];
            let views: Vec<SeqKv> =
                layer.tables.iter().map(|t| SeqKv { block_table: t, context_len: ctx }).collect();
            let head = |h: usize, p: &AttentionParams| {
                let mut out = vec![0.0f32; q.len()];
                decode(&q, &views, &layer.pool(h, hd), g, scale, &mut out, p).map(|_| out)
            };
            if threads > 1 {
                dyno_kernels::threads::run(threads, || {
                    (0..kv_heads)
                        .into_par_iter()
                        .map(|h| head(h, &single))
                        .collect::<Result<Vec<_>, _>>()
                })
                .map(|_| ())
            } else {
                (0..kv_heads).try_for_each(|h| head(h, &params).map(|_| ()))
            }
        })?;
        points.push(KernelPoint {
            class: OpClass::AttentionDecode,
            size: ctx as f64,
            measured_s: t,
            bound_s: sm.attention_decode_bound(seqs as f64, ctx as f64),
        });
    }
    Ok(points)
}

/// Causal attention of one prefill chunk from position 0, one layer, head after head with
/// every thread (as the engine runs a step with prefills).
fn measure_prefill(
    sm: &StepModel,
    config: &EngineConfig,
    plan: &Plan,
) -> Result<Vec<KernelPoint>, CalibrateError> {
    let m = sm.model();
    let (kv_heads, hd) = (m.kv_heads, m.head_dim);
    let g = m.heads / m.kv_heads.max(1);
    let params = AttentionParams { threads: config.threads.max(1), ..config.kernels.attention };
    let scale = 1.0 / (hd as f32).sqrt();
    let mut points = Vec::new();
    for &len in &plan.chunks {
        let layer = Pools::new(kv_heads, hd, config.kv_block_size, 1, len);
        let q = filler(len * g * hd, 5);
        let mut out = vec![0.0f32; q.len()];
        let t = median_time(1, plan.repeats, |_| {
            let seq = SeqKv { block_table: &layer.tables[0], context_len: len };
            (0..kv_heads).try_for_each(|h| {
                prefill(&q, 0, &seq, &layer.pool(h, hd), g, scale, &mut out, &params)
            })
        })?;
        points.push(KernelPoint {
            class: OpClass::AttentionPrefill,
            size: len as f64,
            measured_s: t,
            bound_s: sm.attention_prefill_bound(len as f64),
        });
    }
    Ok(points)
}

/// One layer's elementwise ops over `tokens`: two RMSNorms, RoPE on queries and keys, SiLU·mul
/// over the chosen experts' widths and two residual adds.
fn measure_elementwise(sm: &StepModel, plan: &Plan) -> Result<Vec<KernelPoint>, CalibrateError> {
    use dyno_kernels::ops::{rms_norm, rope, silu_mul};
    let m = sm.model();
    let (h, hd, width) = (m.hidden, m.head_dim, m.expert_width);
    let mut points = Vec::new();
    for &t in &plan.rows {
        let x = filler(t * h, 6);
        let norm_w = vec![1.0f32; h];
        let mut normed = vec![0.0f32; t * h];
        let mut q = filler(t * m.heads * hd, 7);
        let mut k = filler(t * m.kv_heads * hd, 8);
        let positions: Vec<usize> = (0..t).collect();
        let gate = filler(t * m.top_k * width, 9);
        let up = filler(t * m.top_k * width, 10);
        let mut act = vec![0.0f32; gate.len()];
        let mut resid = x.clone();
        let time = median_time(1, plan.repeats, |_| {
            rms_norm(&x, &norm_w, 1e-5, &mut normed)?;
            rope(&mut q, &positions, m.heads, hd, m.rope_theta)?;
            rope(&mut k, &positions, m.kv_heads, hd, m.rope_theta)?;
            for (r, n) in resid.iter_mut().zip(&normed) {
                *r += n;
            }
            rms_norm(&resid, &norm_w, 1e-5, &mut normed)?;
            silu_mul(&gate, &up, &mut act)?;
            for (r, n) in resid.iter_mut().zip(&normed) {
                *r += n;
            }
            Ok::<_, KernelError>(())
        })?;
        points.push(KernelPoint {
            class: OpClass::Elementwise,
            size: t as f64,
            measured_s: time,
            bound_s: sm.elementwise_bound(t as f64),
        });
    }
    Ok(points)
}

/// One measured engine step shape.
#[derive(Debug, Clone)]
struct MeasuredStep {
    label: String,
    shape: StepShape,
    seconds: f64,
}

/// `batch` prompts of `prompt` tokens prefilled in one step, then `decode_steps` decode steps
/// (the first, still warming up, dropped): the prefill step and the median decode step at the
/// middle context.
fn measure_engine(
    model: &Arc<Model>,
    base: &EngineConfig,
    batch: usize,
    prompt: usize,
    decode_steps: usize,
) -> Result<Vec<MeasuredStep>, CalibrateError> {
    let cfg = model.config();
    let mut config = base.clone();
    config.batch = BatchPolicy::Continuous {
        max_num_seqs: batch,
        max_num_batched_tokens: batch * prompt,
        prefill_chunk: 0,
        priority: Priority::DecodeFirst,
    };
    let seq_len = prompt + decode_steps + 2;
    let blocks = batch * seq_len.div_ceil(config.kv_block_size) + 1;
    let block_mib = (config.kv_block_bytes(cfg) as usize * blocks).div_ceil(1 << 20);
    config.kv_pool_mib = config.kv_pool_mib.max(block_mib);
    let mut engine = Engine::from_model(model.clone(), &config);
    let vocab = cfg.vocab.max(3) as u32;
    for s in 0..batch {
        let ids = (0..prompt as u32).map(|i| (i * 31 + s as u32 * 7) % (vocab - 2) + 1).collect();
        let req = GenerateRequest {
            prompt: ids,
            max_tokens: decode_steps + 2,
            min_tokens: decode_steps + 2,
            ignore_eos: true,
            temperature: 0.0,
            seed: None,
        };
        engine.add(req, None, 0.0).map_err(|e| CalibrateError::Step {
            what: format!("batch {batch}, prompt {prompt}"),
            reason: e.to_string(),
        })?;
    }
    let wrong = |what: String, got: usize, want: usize| CalibrateError::Step {
        what,
        reason: format!("ran {got} tokens, expected {want}"),
    };
    let prefill_label = format!("prefill {batch}×{prompt}");
    let mut step = || -> Result<_, CalibrateError> {
        let r = engine.step(0.0)?;
        let seconds = r.seconds;
        Ok((r, seconds))
    };
    let (r, seconds) = step()?;
    if r.tokens_computed != batch * prompt {
        return Err(wrong(prefill_label, r.tokens_computed, batch * prompt));
    }
    let mut out = vec![MeasuredStep {
        label: prefill_label,
        shape: StepShape::prefill(batch, prompt),
        seconds,
    }];
    let mut times = Vec::new();
    for j in 0..decode_steps {
        let (r, seconds) = step()?;
        if r.tokens_computed != batch {
            return Err(wrong(format!("decode b{batch}"), r.tokens_computed, batch));
        }
        if j > 0 {
            times.push(seconds);
        }
    }
    times.sort_by(f64::total_cmp);
    if let Some(&median) = times.get(times.len() / 2) {
        let ctx = prompt + 1 + decode_steps / 2;
        out.push(MeasuredStep {
            label: format!("decode b{batch} ctx {ctx}"),
            shape: StepShape::decode(batch, ctx),
            seconds: median,
        });
    }
    Ok(out)
}

/// Where the engine's linear ops change regime, in activation rows: the streaming kernels
/// below [`dyno_engine::linear::GEMM_MIN_ROWS`], the blocked GEMM from it, and large GEMMs
/// from 256 rows (where packing is amortized). Each bin gets its own factor from the steps.
fn bin_edges() -> [f64; 2] {
    [dyno_engine::linear::GEMM_MIN_ROWS as f64, 256.0]
}

/// The bin of an op of `rows` activation rows.
fn bin_of(rows: f64) -> usize {
    bin_edges().iter().filter(|&&e| rows >= e).count()
}

/// Scale bins (see [`bin_edges`]).
const BINS: usize = 3;

/// What the engine steps say about the kernel-level profile: a factor on the linear ops'
/// predicted time per row bin, and the fixed costs.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq)]
struct StepFit {
    scales: [f64; BINS],
    step_us: f64,
    sample_us: f64,
}

/// Each step's linear-op seconds per row bin, and everything else, with zero overheads.
fn split_linear(
    profile: &HardwareProfile,
    model: &ModelConfig,
    config: &EngineConfig,
    steps: &[MeasuredStep],
) -> Vec<([f64; BINS], f64)> {
    let mut p = profile.clone();
    p.calibration.step_overhead_us = 0.0;
    p.calibration.sample_overhead_us = 0.0;
    let sm = StepModel::new(&p, model, config);
    steps
        .iter()
        .map(|s| {
            let t = s.shape.tokens as f64;
            let touched = sm.expected_experts(t);
            let expert_rows = if touched > 0.0 { t * model.top_k as f64 / touched } else { 0.0 };
            let st = sm.step_time(&s.shape);
            let (mut linear, mut other) = ([0.0; BINS], 0.0);
            for o in &st.ops {
                let rows = match o.name {
                    "qkv_proj" | "o_proj" | "router" => Some(t),
                    "expert_up" | "expert_down" => Some(expert_rows),
                    "lm_head" => Some(s.shape.samples as f64),
                    _ => None,
                };
                match rows {
                    Some(r) => linear[bin_of(r)] += o.seconds,
                    None => other += o.seconds,
                }
            }
            // With pp = 1 (the engine's default) the ops add up to the step.
            (linear, other)
        })
        .collect()
}

/// Fits `measured ≈ Σ_b a_b·linear_b + other + s + n·c` over one format's steps (see
/// [`fit_joint`]).
#[cfg(test)]
fn fit_steps(
    profile: &HardwareProfile,
    model: &ModelConfig,
    config: &EngineConfig,
    steps: &[MeasuredStep],
) -> StepFit {
    let joint = fit_joint(profile, model, &[(config, steps)]);
    StepFit { scales: joint.scales[0], step_us: joint.step_us, sample_us: joint.sample_us }
}

/// What the engine steps of several weight formats say: a factor per format and row bin on
/// the linear ops' predicted time, and the overheads all formats share.
#[derive(Debug, Clone, PartialEq)]
struct JointFit {
    /// Per group, in order.
    scales: Vec<[f64; BINS]>,
    step_us: f64,
    sample_us: f64,
}

/// Fits `measured ≈ Σ_b a_{f,b}·linear_{f,b} + other + s + n·c` over the steps of every group
/// (a format's config and its steps), minimizing the sum of squared *relative* errors (so long
/// prefills do not drown short decodes), with every `a > 0` and `s, c ≥ 0`.
///
/// Few unknowns, sign-constrained: every subset of the overheads is solved by weighted normal
/// equations and the best feasible solution kept (the active-set method, enumerated; no kept
/// crate solves NNLS). A bin with no data keeps factor 1.
fn fit_joint(
    profile: &HardwareProfile,
    model: &ModelConfig,
    groups: &[(&EngineConfig, &[MeasuredStep])],
) -> JointFit {
    let scale_cols = groups.len() * BINS;
    let n = scale_cols + 2;
    // Columns: each group's bins' linear seconds, 1 (step), samples; target measured − other.
    let mut rows: Vec<(Vec<f64>, f64, f64)> = Vec::new();
    for (g, (config, steps)) in groups.iter().enumerate() {
        let parts = split_linear(profile, model, config, steps);
        for (s, (linear, other)) in steps.iter().zip(&parts) {
            let mut a = vec![0.0; n];
            a[g * BINS..(g + 1) * BINS].copy_from_slice(linear);
            a[scale_cols] = 1.0;
            a[scale_cols + 1] = s.shape.samples as f64;
            rows.push((a, s.seconds - other, 1.0 / s.seconds));
        }
    }
    let has = |j: usize| rows.iter().any(|r| r.0[j] > 0.0);
    let mut default = vec![0.0; n];
    default[..scale_cols].fill(1.0);
    let mut best: Option<(f64, Vec<f64>)> = None;
    for mask in 0..4u32 {
        let mut cols: Vec<usize> = (0..scale_cols).filter(|&j| has(j)).collect();
        cols.extend((0..2).filter(|b| mask & (1 << b) != 0).map(|b| b + scale_cols));
        let Some(sol) = weighted_least_squares(&rows, &cols, scale_cols) else { continue };
        let mut x = default.clone();
        for (&j, v) in cols.iter().zip(&sol) {
            x[j] = *v;
        }
        if x[..scale_cols].iter().any(|&v| v <= 0.0) || x[scale_cols..].iter().any(|&v| v < 0.0) {
            continue;
        }
        let sse: f64 = rows
            .iter()
            .map(|(a, y, w)| {
                let pred: f64 = (0..n).map(|j| a[j] * x[j]).sum();
                (w * (y - pred)).powi(2)
            })
            .sum();
        if best.as_ref().is_none_or(|(b, _)| sse < *b) {
            best = Some((sse, x));
        }
    }
    let x = best.map_or(default, |b| b.1);
    let scales = (0..groups.len())
        .map(|g| {
            let mut s = [1.0; BINS];
            s.copy_from_slice(&x[g * BINS..(g + 1) * BINS]);
            s
        })
        .collect();
    JointFit { scales, step_us: x[scale_cols] * 1e6, sample_us: x[scale_cols + 1] * 1e6 }
}

/// Solves the weighted normal equations of `y ≈ Σ_j a_j x_j` over columns `cols`; a scale
/// column (`j < scale_cols`) not listed enters with coefficient 1, an overhead column with 0.
/// `None` when singular.
fn weighted_least_squares(
    rows: &[(Vec<f64>, f64, f64)],
    cols: &[usize],
    scale_cols: usize,
) -> Option<Vec<f64>> {
    let k = cols.len();
    if k == 0 {
        return None;
    }
    let mut m = vec![vec![0.0; k + 1]; k];
    for (a, y, w) in rows {
        let fixed: f64 = (0..scale_cols).filter(|j| !cols.contains(j)).map(|j| a[j]).sum();
        let w2 = w * w;
        for (r, &jr) in cols.iter().enumerate() {
            for (c, &jc) in cols.iter().enumerate() {
                m[r][c] += w2 * a[jr] * a[jc];
            }
            m[r][k] += w2 * a[jr] * (y - fixed);
        }
    }
    // Gauss-Jordan elimination with partial pivoting.
    for i in 0..k {
        let piv = (i..k).max_by(|&a, &b| m[a][i].abs().total_cmp(&m[b][i].abs()))?;
        if m[piv][i].abs() < 1e-300 {
            return None;
        }
        m.swap(i, piv);
        let pivot = m[i].clone();
        for (r, row) in m.iter_mut().enumerate() {
            if r != i {
                let f = row[i] / pivot[i];
                for (v, p) in row.iter_mut().zip(&pivot).skip(i) {
                    *v -= f * p;
                }
            }
        }
    }
    let x: Vec<f64> = (0..k).map(|i| m[i][k] / m[i][i]).collect();
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardware::resolve_target;
    use std::sync::Mutex;

    /// Tests that set `DYNO_KERNEL_CACHE` take this lock.
    static ENV: Mutex<()> = Mutex::new(());

    #[test]
    fn keys_sanitize_to_file_names() {
        assert_eq!(sanitize("AMD EPYC 7B13 64-Core|avx2|2"), "AMD-EPYC-7B13-64-Core-avx2-2");
        assert_eq!(utc_date().len(), 10);
    }

    #[test]
    fn op_bounds_match_the_step_model_ops() {
        let model = ModelConfig::preset("mixtral-mini").unwrap();
        let mut profile = HardwareProfile::resolve("cpu").unwrap();
        profile.calibration.efficiency.clear();
        profile.calibration.default_efficiency = 1.0;
        let config = EngineConfig::default();
        let sm = StepModel::new(&profile, &model, &config);
        let layers = model.layers as f64;
        let op = |shape: &StepShape, name: &str| {
            sm.step_time(shape).ops.iter().find(|o| o.name == name).unwrap().seconds
        };
        let close = |a: f64, b: f64| assert!((a - b).abs() <= 1e-9 * b.abs(), "{a} vs {b}");
        let d = StepShape::decode(4, 300);
        let qkv = (model.heads + 2 * model.kv_heads) * model.head_dim;
        close(
            op(&d, "qkv_proj"),
            layers * sm.linear_bound(4.0, qkv as f64, model.hidden as f64, WeightFormat::F32),
        );
        close(op(&d, "attention_decode"), layers * sm.attention_decode_bound(4.0, 300.0));
        close(op(&d, "elementwise"), layers * sm.elementwise_bound(4.0));
        let p = StepShape::prefill(1, 128);
        close(op(&p, "attention_prefill"), layers * sm.attention_prefill_bound(128.0));
    }

    #[test]
    fn step_fit_recovers_known_scales_and_costs() {
        let model = ModelConfig::preset("mixtral-mini").unwrap();
        let mut profile = HardwareProfile::resolve("cpu").unwrap();
        profile.calibration.step_overhead_us = 0.0;
        profile.calibration.sample_overhead_us = 0.0;
        let config = EngineConfig::default();
        let shapes = [
            StepShape::decode(1, 64),
            StepShape::decode(4, 300),
            StepShape::decode(16, 100),
            StepShape::prefill(1, 128),
            StepShape::prefill(4, 256),
            StepShape::prefill(16, 128),
            StepShape::prefill(1, 512),
        ];
        let probe: Vec<MeasuredStep> = shapes
            .iter()
            .map(|&shape| MeasuredStep { label: String::new(), shape, seconds: 1.0 })
            .collect();
        let parts = split_linear(&profile, &model, &config, &probe);
        let steps: Vec<MeasuredStep> = probe
            .into_iter()
            .zip(&parts)
            .map(|(mut s, (linear, other))| {
                s.seconds = 1.3 * linear[0]
                    + 0.8 * linear[1]
                    + 0.6 * linear[2]
                    + other
                    + 300e-6
                    + s.shape.samples as f64 * 20e-6;
                s
            })
            .collect();
        let f = fit_steps(&profile, &model, &config, &steps);
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-6 * b.abs().max(1.0), "{f:?}");
        close(f.scales[0], 1.3);
        close(f.scales[1], 0.8);
        close(f.scales[2], 0.6);
        close(f.step_us, 300.0);
        close(f.sample_us, 20.0);
    }

    #[test]
    fn normalizing_keeps_every_prediction() {
        let model = ModelConfig::preset("mixtral-mini").unwrap();
        let config = EngineConfig::default();
        let mut p = HardwareProfile::resolve("cpu").unwrap();
        if let Some(c) = p.calibration.efficiency.get_mut(&OpClass::LinearF32) {
            c.points[0].efficiency = 2.5;
        }
        let shapes = [StepShape::decode(1, 100), StepShape::prefill(4, 256)];
        let before: Vec<f64> =
            shapes.iter().map(|s| StepModel::new(&p, &model, &config).seconds(s)).collect();
        assert_eq!(normalize(&mut p), 2.5);
        p.validate("normalized").unwrap();
        for (s, b) in shapes.iter().zip(before) {
            let after = StepModel::new(&p, &model, &config).seconds(s);
            assert!((after - b).abs() <= 1e-9 * b, "{after} vs {b}");
        }
    }

    #[test]
    fn a_calibrated_profile_round_trips_and_resolve_prefers_it() {
        let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
        let dir = tempfile::tempdir().unwrap();
        let prev = std::env::var_os(dyno_kernels::tune::cache::CACHE_ENV);
        // SAFETY: every test that touches the variable holds `ENV`; nothing else in this
        // crate's tests reads it concurrently.
        unsafe {
            std::env::set_var(dyno_kernels::tune::cache::CACHE_ENV, dir.path().join("k.jsonl"))
        };
        let template = resolve_target("cpu").unwrap();
        assert!(!template.calibration.calibrated);
        assert_eq!(template.cpu.unwrap().cores, dyno_kernels::threads::available());

        let cal = calibrate_cpu(&CalibrateOptions::quick()).unwrap();
        let p = &cal.profile;
        assert!(p.calibration.calibrated && p.name == "cpu" && p.aliases == ["local"]);
        assert!(p.calibration.source.starts_with("dyno profile --hw cpu --quick on "));
        for class in [OpClass::LinearF32, OpClass::LinearInt4, OpClass::AttentionDecode] {
            assert!(p.calibration.efficiency.contains_key(&class), "{class:?}");
        }
        let model = ModelConfig::preset("mixtral-tiny").unwrap();
        let sm = StepModel::new(p, &model, &EngineConfig::default());
        for k in &cal.kernel_points {
            let b = bound_of(&sm, &EngineConfig::default(), k);
            assert!((b - k.bound_s).abs() <= 1e-9 * b, "{k:?}: {b}");
        }
        let back = HardwareProfile::from_yaml(&p.to_yaml(), "round trip").unwrap();
        assert_eq!(&back, p);

        let path = calibrated_cpu_path();
        assert!(path.starts_with(dir.path().join("hardware")), "{}", path.display());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, p.to_yaml()).unwrap();
        for name in ["cpu", "local", "CPU"] {
            assert_eq!(&resolve_target(name).unwrap(), p, "{name}");
        }
        std::fs::write(&path, "name: cpu\n").unwrap();
        let err = resolve_target("cpu").unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert_eq!(resolve_target("h100").unwrap().name, "h100-sxm");
        // SAFETY: as above.
        unsafe {
            match prev {
                Some(v) => std::env::set_var(dyno_kernels::tune::cache::CACHE_ENV, v),
                None => std::env::remove_var(dyno_kernels::tune::cache::CACHE_ENV),
            }
        }
    }
}
