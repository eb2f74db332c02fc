//! `dyno kernels bench`: our kernels against baselines and the machine's limits.
//!
//! A [`BenchReport`] holds the machine, its measured limits ([`crate::machine`]) and generic
//! rows: kernel, shape, variant, threads, a metric (GFLOP/s for compute-bound kernels, GB/s of
//! weights streamed for GEMV-like ones), its value and the fraction of the matching limit (FMA
//! peak at the same thread count, or read bandwidth).

use crate::error::KernelError;
use crate::gemm::GemmParams;
use crate::machine::{Bandwidth, DEFAULT_BANDWIDTH_BYTES, MachineId, Measurement};
use crate::machine::{fma_peak_gflops, memory_bandwidth};
use crate::tune::gemm::{GemmRunner, KERNEL_NAME, OurGemm, cached_best};
use crate::tune::timing::{GemmOperands, Timing, TimingOptions, time_calls};
use crate::tune::{GemmShape, KernelCache};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

/// What a row measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Floating-point throughput, compared with the FMA peak at the same thread count.
    GflopS,
    /// Bytes of weights streamed per second, compared with the read bandwidth.
    GbS,
}

impl Metric {
    /// The unit as printed.
    pub fn unit(self) -> &'static str {
        match self {
            Metric::GflopS => "GFLOP/s",
            Metric::GbS => "GB/s",
        }
    }
}

/// One measured (or not measurable) variant of a kernel on a shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchRow {
    /// Kernel name (`gemm_f32`; quantized GEMV rows to come).
    pub kernel: String,
    /// Problem shape (`[m, n, k]` for GEMM).
    pub shape: Vec<usize>,
    /// Which implementation or parameter set: `ours/default`, `ours/tuned`, `gemm`,
    /// `matrixmultiply`.
    pub variant: String,
    /// Threads it ran with.
    pub threads: usize,
    /// What `value` measures.
    pub metric: Metric,
    /// The measured value; `None` when the variant could not run (see `note`).
    pub value: Option<f64>,
    /// Median seconds per call.
    pub median_s: Option<f64>,
    /// The machine limit `value` is compared with (same thread count).
    pub limit: Option<f64>,
    /// `value / limit`.
    pub fraction_of_limit: Option<f64>,
    /// Our parameters, for our variants.
    pub params: Option<GemmParams>,
    /// Remarks: "not tuned", how threads were chosen, ...
    pub note: Option<String>,
}

/// The machine's measured limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// FMA peak at each thread count a row uses (always 1 and all threads).
    pub fma_peak: Vec<Measurement>,
    /// Memory bandwidth at the bench's thread count.
    pub bandwidth: Bandwidth,
}

impl Limits {
    /// The FMA peak measured with exactly `threads` threads.
    pub fn peak(&self, threads: usize) -> Option<f64> {
        self.fma_peak.iter().find(|m| m.threads == threads).map(|m| m.value)
    }
}

/// The whole report, as written by `--json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    /// The machine.
    pub machine: MachineId,
    /// Its cache key.
    pub machine_key: String,
    /// Its measured limits.
    pub limits: Limits,
    /// One row per kernel × shape × variant.
    pub rows: Vec<BenchRow>,
}

/// What to bench and how long to spend.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchOptions {
    /// GEMM shapes.
    pub shapes: Vec<GemmShape>,
    /// Threads for our kernels and the `gemm` crate.
    pub threads: usize,
    /// Timing of each variant.
    pub timing: TimingOptions,
    /// Time per limit measurement (FMA peak per thread count, copy, read).
    pub limit_budget: Duration,
    /// Buffer size for the bandwidth measurement.
    pub bandwidth_bytes: usize,
    /// Seed of the random inputs.
    pub seed: u64,
    /// Weight shapes `(n, k)` for the quantized and bf16 GEMV rows (one activation row).
    pub gemv_shapes: Vec<(usize, usize)>,
    /// Times the whole set of measurements is repeated, round-robin; each figure is the best
    /// round's.
    pub rounds: usize,
}

impl BenchOptions {
    /// The default shapes: a square prefill-like GEMM and a batch-8 decode GEMM.
    pub fn default_shapes() -> Vec<GemmShape> {
        vec![GemmShape::new(1024, 1024, 1024), GemmShape::new(8, 4096, 4096)]
    }
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            shapes: Self::default_shapes(),
            threads: crate::threads::available(),
            timing: TimingOptions::default(),
            limit_budget: Duration::from_millis(500),
            bandwidth_bytes: DEFAULT_BANDWIDTH_BYTES,
            seed: 0,
            gemv_shapes: vec![(8192, 8192)],
            rounds: 3,
        }
    }
}

/// Thread counts whose FMA peak the rows need.
fn peak_threads(threads: usize) -> Vec<usize> {
    let mut t = vec![1, crate::threads::available(), threads.max(1)];
    #[cfg(feature = "baselines")]
    t.push(crate::baselines::matrixmultiply_threads());
    t.sort_unstable();
    t.dedup();
    t
}

/// One call of a GEMM implementation on `(a, b, c)`.
type GemmCall<'a> = Box<dyn FnMut(&[f32], &[f32], &mut [f32]) -> Result<(), KernelError> + 'a>;

/// A named way to run one GEMM shape, timed once per round.
struct GemmVariant<'a> {
    name: &'static str,
    threads: usize,
    params: Option<GemmParams>,
    note: Option<String>,
    /// `None` when the variant cannot run (for example: nothing tuned yet).
    run: Option<GemmCall<'a>>,
}

/// Keeps the faster of two timings of the same variant (rounds fight machine noise).
fn faster(best: Option<Timing>, t: Timing) -> Timing {
    match best {
        Some(b) if b.median_s <= t.median_s => b,
        _ => t,
    }
}

/// Keeps the higher of two measurements of the same limit.
fn higher(best: Option<Measurement>, m: Measurement) -> Measurement {
    match best {
        Some(b) if b.value >= m.value => b,
        _ => m,
    }
}

/// Measures the limits, then every variant on every shape, `opts.rounds` times round-robin,
/// keeping each variant's fastest median and each limit's highest value: on a shared or
/// virtualized machine, a slow spell then hits one round of one variant instead of skewing a
/// whole comparison. Tuned params come from `cache` (fastest valid record for this machine,
/// shape and thread count); without one the tuned row says "not tuned".
pub fn run_bench(
    opts: &BenchOptions,
    cache: Option<&KernelCache>,
) -> Result<BenchReport, KernelError> {
    let machine = MachineId::detect();
    let key = machine.key();
    let threads = opts.threads.max(1);
    let rounds = opts.rounds.max(1);
    let peak_counts = peak_threads(threads);

    let mut operands: Vec<GemmOperands> = opts
        .shapes
        .iter()
        .map(|&shape| GemmOperands::new(shape, opts.timing.rotate_bytes, opts.seed))
        .collect();
    let mut variants: Vec<Vec<GemmVariant>> =
        opts.shapes.iter().map(|&shape| gemm_variants(shape, threads, cache, &key)).collect();

    let mut gemv: Vec<GemvVariant> = opts
        .gemv_shapes
        .iter()
        .map(|&(n, k)| gemv_variants(n, k, threads, opts.timing.rotate_bytes))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let max_k = opts.gemv_shapes.iter().map(|s| s.1).max().unwrap_or(0);
    let max_n = opts.gemv_shapes.iter().map(|s| s.0).max().unwrap_or(0);
    let gemv_x: Vec<f32> = (0..max_k).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
    let mut gemv_y = vec![0.0f32; max_n];
    let mut gemv_timings: Vec<Option<Timing>> = vec![None; gemv.len()];

    let mut peaks: Vec<Option<Measurement>> = vec![None; peak_counts.len()];
    let mut bandwidth: Option<Bandwidth> = None;
    let mut timings: Vec<Vec<Option<Timing>>> =
        variants.iter().map(|v| vec![None; v.len()]).collect();
    for _ in 0..rounds {
        for (best, &t) in peaks.iter_mut().zip(&peak_counts) {
            *best = Some(higher(best.take(), fma_peak_gflops(t, opts.limit_budget)));
        }
        let b = memory_bandwidth(threads, opts.bandwidth_bytes, opts.limit_budget);
        bandwidth = Some(match bandwidth {
            Some(old) => Bandwidth {
                copy: higher(Some(old.copy), b.copy),
                read: higher(Some(old.read), b.read),
            },
            None => b,
        });
        for (v, best) in gemv.iter_mut().zip(gemv_timings.iter_mut()) {
            let t = time_calls(&opts.timing, |call| (v.run)(call, &gemv_x, &mut gemv_y))?;
            *best = Some(faster(best.take(), t));
        }
        for ((ops, shape_variants), shape_timings) in
            operands.iter_mut().zip(&mut variants).zip(&mut timings)
        {
            for (v, best) in shape_variants.iter_mut().zip(shape_timings.iter_mut()) {
                let Some(run) = v.run.as_mut() else { continue };
                let t = ops.time(&opts.timing, run)?;
                *best = Some(faster(best.take(), t));
            }
        }
    }
    let limits = Limits {
        fma_peak: peaks.into_iter().flatten().collect(),
        bandwidth: bandwidth.expect("at least one round ran"),
    };

    let mut rows = Vec::new();
    for ((shape, shape_variants), shape_timings) in opts.shapes.iter().zip(variants).zip(timings) {
        for (v, t) in shape_variants.into_iter().zip(shape_timings) {
            let value = t.map(|t| shape.flops() / t.median_s / 1e9);
            let limit = limits.peak(v.threads);
            rows.push(BenchRow {
                kernel: KERNEL_NAME.into(),
                shape: shape.dims(),
                variant: v.name.into(),
                threads: v.threads,
                metric: Metric::GflopS,
                value,
                median_s: t.map(|t| t.median_s),
                limit,
                fraction_of_limit: value.zip(limit).map(|(v, l)| v / l),
                params: v.params,
                note: v.note,
            });
        }
    }
    for (v, t) in gemv.into_iter().zip(gemv_timings) {
        let value = t.map(|t| v.bytes as f64 / t.median_s / 1e9);
        let limit = Some(limits.bandwidth.read.value);
        rows.push(BenchRow {
            kernel: v.kernel.into(),
            shape: vec![1, v.n, v.k],
            variant: v.name.into(),
            threads,
            metric: Metric::GbS,
            value,
            median_s: t.map(|t| t.median_s),
            limit,
            fraction_of_limit: value.zip(limit).map(|(v, l)| v / l),
            params: None,
            note: Some(v.note),
        });
    }
    Ok(BenchReport { machine, machine_key: key, limits, rows })
}

/// One call of a GEMV implementation: `y[..n] = W · x[..k]`; the `usize` counts calls, so a
/// variant can rotate through copies of its weights.
type GemvCall = Box<dyn FnMut(usize, &[f32], &mut [f32]) -> Result<(), KernelError>>;

/// A quantized or bf16 GEMV variant: decode's matmul, limited by streaming the weights.
struct GemvVariant {
    kernel: &'static str,
    name: &'static str,
    n: usize,
    k: usize,
    /// Bytes of weights (and scales) one call streams.
    bytes: usize,
    note: String,
    run: GemvCall,
}

/// Copies of a `bytes`-sized weight that together span `rotate_bytes` (at least one): calls
/// rotate through them, so a matrix smaller than the last-level cache is still streamed from
/// memory, as it is in a model whose weights do not fit the cache.
fn weight_copies(bytes: usize, rotate_bytes: usize) -> usize {
    rotate_bytes.div_ceil(bytes.max(1)).max(1)
}

/// Copies of one weight matrix, each with its own buffers: the first from `make()` tells
/// `bytes` per copy, and [`weight_copies`] says how many more to make.
fn replicate<W>(
    rotate_bytes: usize,
    bytes: impl Fn(&W) -> usize,
    make: impl Fn() -> Result<W, KernelError>,
) -> Result<Arc<Vec<W>>, KernelError> {
    let first = make()?;
    let copies = weight_copies(bytes(&first), rotate_bytes);
    let mut all = Vec::with_capacity(copies);
    all.push(first);
    for _ in 1..copies {
        all.push(make()?);
    }
    Ok(Arc::new(all))
}

/// A GEMV call rotating through `copies` of one weight matrix.
fn rotating<W: Send + Sync + 'static>(
    copies: Arc<Vec<W>>,
    gemv: impl Fn(&W, &[f32], &mut [f32]) -> Result<(), KernelError> + 'static,
) -> GemvCall {
    Box::new(move |call, x, y| gemv(&copies[call % copies.len()], x, y))
}

/// The GEMV variants for an `[n, k]` weight: int8 and int4 (group 32) with f32 and with int8
/// activations, bf16 and f32. Each rotates through enough copies of its weights to span
/// `rotate_bytes`. Weights are random; speed does not depend on their values.
fn gemv_variants(
    n: usize,
    k: usize,
    threads: usize,
    rotate_bytes: usize,
) -> Result<Vec<GemvVariant>, KernelError> {
    use crate::dense::{Bf16Matrix, DenseParams, F32Matrix};
    use crate::quant::{ActivationMode, Int4Matrix, Int8Matrix, QuantParams};
    let w: Vec<f32> = (0..n * k).map(|i| ((i * 2654435761) % 2001) as f32 / 1000.0 - 1.0).collect();
    let int8 =
        replicate(rotate_bytes, Int8Matrix::weight_bytes, || Int8Matrix::quantize(&w, n, k))?;
    let int4 =
        replicate(rotate_bytes, Int4Matrix::weight_bytes, || Int4Matrix::quantize(&w, n, k, 32))?;
    let mut out = Vec::new();
    for mode in [ActivationMode::F32, ActivationMode::Int8] {
        let p = QuantParams { threads, activations: mode, ..QuantParams::default() };
        let (name, acts) = match mode {
            ActivationMode::Int8 => ("ours/int8-acts", "activations quantized to int8 per 32"),
            _ => ("ours/f32-acts", "f32 activations, weights dequantized in registers"),
        };
        out.push(GemvVariant {
            kernel: "int8_gemv",
            name,
            n,
            k,
            bytes: int8[0].weight_bytes(),
            note: format!("{acts}; GB/s of int8 weights + f16 scales"),
            run: rotating(int8.clone(), move |q, x, y| q.matmul(&x[..k], 1, &mut y[..n], &p)),
        });
        out.push(GemvVariant {
            kernel: "int4_gemv",
            name,
            n,
            k,
            bytes: int4[0].weight_bytes(),
            note: format!("{acts}; group 32; GB/s of nibbles + f16 scales"),
            run: rotating(int4.clone(), move |q, x, y| q.matmul(&x[..k], 1, &mut y[..n], &p)),
        });
    }
    let p = DenseParams { threads, ..DenseParams::default() };
    let bf16 =
        replicate(rotate_bytes, Bf16Matrix::weight_bytes, || Bf16Matrix::from_f32(&w, n, k))?;
    out.push(GemvVariant {
        kernel: "bf16_gemv",
        name: "ours",
        n,
        k,
        bytes: bf16[0].weight_bytes(),
        note: "GB/s of bf16 weights".into(),
        run: rotating(bf16, move |b, x, y| b.matmul(&x[..k], 1, &mut y[..n], &p)),
    });
    let f32s = replicate(rotate_bytes, F32Matrix::weight_bytes, || F32Matrix::from_f32(&w, n, k))?;
    out.push(GemvVariant {
        kernel: "f32_gemv",
        name: "ours",
        n,
        k,
        bytes: f32s[0].weight_bytes(),
        note: "GB/s of f32 weights".into(),
        run: rotating(f32s, move |f, x, y| f.matmul(&x[..k], 1, &mut y[..n], &p)),
    });
    Ok(out)
}

/// The GEMM variants benched on `shape`: ours at default and tuned params, then the baselines.
fn gemm_variants<'a>(
    shape: GemmShape,
    threads: usize,
    cache: Option<&KernelCache>,
    machine_key: &str,
) -> Vec<GemmVariant<'a>> {
    let mut out = Vec::new();
    let default = GemmParams { threads, ..GemmParams::default() };
    out.push(GemmVariant {
        name: "ours/default",
        threads,
        params: Some(default),
        note: None,
        run: Some(Box::new(move |a, b, c| OurGemm.run(shape, a, b, c, &default))),
    });
    match cache.and_then(|c| cached_best(c, machine_key, shape, threads)) {
        Some((tuned, cached_gflops)) => out.push(GemmVariant {
            name: "ours/tuned",
            threads,
            params: Some(tuned),
            note: Some(format!("cache had {cached_gflops:.1} GFLOP/s")),
            run: Some(Box::new(move |a, b, c| OurGemm.run(shape, a, b, c, &tuned))),
        }),
        None => out.push(GemmVariant {
            name: "ours/tuned",
            threads,
            params: None,
            note: Some(format!("not tuned (run `dyno kernels tune --shape {shape}`)")),
            run: None,
        }),
    }
    #[cfg(feature = "baselines")]
    {
        use crate::baselines::{gemm_crate_f32, matrixmultiply_f32, matrixmultiply_threads};
        let (m, n, k) = (shape.m, shape.n, shape.k);
        out.push(GemmVariant {
            name: "gemm",
            threads,
            params: None,
            note: Some("gemm 0.19, Parallelism::Rayon".into()),
            run: Some(Box::new(move |a, b, c| gemm_crate_f32(m, n, k, a, b, c, threads))),
        });
        out.push(GemmVariant {
            name: "matrixmultiply",
            threads: matrixmultiply_threads(),
            params: None,
            note: Some("threads: MATMUL_NUM_THREADS or physical cores, max 4".into()),
            run: Some(Box::new(move |a, b, c| matrixmultiply_f32(m, n, k, a, b, c))),
        });
    }
    out
}

impl BenchReport {
    /// A readable table: machine, limits, then one line per row.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let m = &self.machine;
        let _ = writeln!(
            s,
            "machine: {}  (isa {}, {} threads, flags {})",
            m.cpu_model,
            m.isa,
            m.cores,
            m.flags.join(",")
        );
        for p in &self.limits.fma_peak {
            let _ = writeln!(
                s,
                "fma peak, {:>2} thread(s): {:>8.1} GFLOP/s   [{}]",
                p.threads, p.value, p.method
            );
        }
        for (name, b) in
            [("copy", &self.limits.bandwidth.copy), ("read", &self.limits.bandwidth.read)]
        {
            let _ = writeln!(
                s,
                "memory {name}, {:>2} thread(s): {:>6.1} GB/s   [{}]",
                b.threads, b.value, b.method
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{:<10} {:<16} {:<15} {:>3} {:>12} {:>8}  notes",
            "kernel", "shape m,n,k", "variant", "thr", "value", "of peak"
        );
        for r in &self.rows {
            let shape = r.shape.iter().map(ToString::to_string).collect::<Vec<_>>().join(",");
            let value = r.value.map_or("-".to_string(), |v| format!("{v:.1} {}", r.metric.unit()));
            let frac =
                r.fraction_of_limit.map_or("-".to_string(), |f| format!("{:.1}%", f * 100.0));
            let mut note = r.note.clone().unwrap_or_default();
            if let Some(p) = &r.params {
                let _ = write!(
                    note,
                    "{}mc={} kc={} nc={} {}",
                    if note.is_empty() { "" } else { "; " },
                    p.mc,
                    p.kc,
                    p.nc,
                    serde_json::to_value(p.micro_kernel)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                );
            }
            let _ = writeln!(
                s,
                "{:<10} {:<16} {:<15} {:>3} {:>12} {:>8}  {}",
                r.kernel, shape, r.variant, r.threads, value, frac, note
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_bench_has_every_row() {
        let opts = BenchOptions {
            shapes: vec![GemmShape::new(3, 5, 7)],
            threads: 1,
            timing: TimingOptions {
                budget: Duration::ZERO,
                min_repeats: 1,
                max_repeats: 1,
                rotate_bytes: 0,
                ..Default::default()
            },
            limit_budget: Duration::from_millis(5),
            bandwidth_bytes: 1 << 20,
            seed: 0,
            gemv_shapes: vec![(5, 64)],
            rounds: 2,
        };
        let r = run_bench(&opts, None).unwrap();
        let variants: Vec<&str> = r.rows.iter().map(|r| r.variant.as_str()).collect();
        assert!(variants.starts_with(&["ours/default", "ours/tuned"]), "{variants:?}");
        #[cfg(feature = "baselines")]
        assert!(variants.contains(&"gemm") && variants.contains(&"matrixmultiply"));
        assert!(r.rows[1].value.is_none());
        assert!(r.rows[1].note.as_deref().unwrap_or("").contains("not tuned"));
        assert!(r.rows[0].fraction_of_limit.is_some());
        assert!(r.limits.peak(1).is_some());
        let json = serde_json::to_string(&r).unwrap();
        let back: BenchReport = serde_json::from_str(&json).unwrap();
        assert_eq!(back.rows.len(), r.rows.len());
        assert!(r.table().contains("ours/default"));
    }
}
