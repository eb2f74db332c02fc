//! Quantized weights (int8 blocks of 32, int4 groups of 32/64/128) and f32 × quantized matmul.
//!
//! A linear layer's weight is `[n, k]` row-major (Hugging Face layout) and `y = x · Wᵀ` with
//! `x` `[m, k]` and `y` `[m, n]`, both row-major `f32`. Quantization blocks run along `k`
//! within one weight row.
//!
//! # Formats
//!
//! - [`Int8Matrix`] (Q8_0-like): blocks of 32 weights along `k`, one `f16` scale per block,
//!   `scale = max|w| / 127`, `q = round(w / scale)` clamped to `[-127, 127]`: 34 bytes per 32
//!   weights = 8.5 bits/weight.
//! - [`Int4Matrix`] (Q4_0-like): groups of 32, 64 or 128 weights along `k`, one `f16` scale
//!   per group, **symmetric** `scale = max|w| / 7`, `q = round(w / scale)` clamped to `[-7, 7]`,
//!   stored as the unsigned nibble `q + 8` (so nibble 0 is never produced): 4.5 bits/weight at
//!   group 32. See [`Int4Matrix`] for the nibble layout.
//!
//! Quants and scales are stored as two separate row-major arrays, so each weight row is two
//! contiguous streams (quants, then that row's scales) that the hardware prefetcher follows.
//! A block whose weights are all zero gets scale 0 and zero quants (never NaN).
//!
//! # Kernels
//!
//! [`Int8Matrix::matmul`] / [`Int4Matrix::matmul`] split the output features `n` into chunks
//! run on `threads` workers. Inside a chunk, for every tile of `row_tile` activation rows each
//! weight row is streamed from memory once and used against all rows of the tile (the tile is
//! processed a few rows at a time from L1), so batching pays off. With `m == 1` this is the
//! decode GEMV, which streams each weight row exactly once and is memory-bandwidth bound.
//!
//! Activations are either kept in `f32` (weights dequantized on the fly, FMA) or quantized
//! per block of 32 to int8 with their own scale ([`ActivationMode::Int8`]), once per call,
//! and multiplied with integer dot products: AVX2 `vpmaddubsw` with the sign trick plus
//! `vpmaddwd`, or `vpdpbusd` where AVX-VNNI exists. Scalar fallbacks exist for both modes.

/// The methods [`Int8Matrix`] and [`Int4Matrix`] share word for word, all through their
/// `view()`; each module defines its own `KERNEL` name for error messages.
macro_rules! shared_matrix_methods {
    () => {
        /// Output features `n`.
        pub fn rows(&self) -> usize {
            self.rows
        }

        /// Input features `k`.
        pub fn cols(&self) -> usize {
            self.cols
        }

        /// Bytes streamed by one full pass over the weight: quants plus scales.
        pub fn weight_bytes(&self) -> usize {
            self.view().weight_bytes()
        }

        /// The weights dequantized to `f32`, `[rows, cols]` row-major.
        pub fn dequantize(&self) -> Vec<f32> {
            self.view().dequantize()
        }

        /// `y = x · Wᵀ` with `x` `[m, k]` and `y` `[m, n]`; `m == 1` is the decode GEMV.
        pub fn matmul(
            &self,
            x: &[f32],
            m: usize,
            y: &mut [f32],
            params: &QuantParams,
        ) -> Result<(), KernelError> {
            super::matmul(KERNEL, self.view(), x, m, y, params)
        }

        /// The oracle: dequantized weights · `f32` x with f64 accumulation.
        pub fn matmul_reference(
            &self,
            x: &[f32],
            m: usize,
            y: &mut [f32],
        ) -> Result<(), KernelError> {
            super::matmul_reference(KERNEL, self.view(), x, m, y)
        }
    };
}

mod act;
mod int4;
mod int8;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod simd;

pub use int4::Int4Matrix;
pub use int8::Int8Matrix;

use crate::error::{KernelError, ParamError};
use crate::isa::{IntDotFeatures, Isa};
use act::QuantizedActs;
use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// The block size of int8 weights and of quantized activations, in elements along `k`.
pub const BLOCK: usize = 32;

/// Zero scales stored after an [`Int4Matrix`]'s last scale, so the SIMD kernels can load eight
/// `f16` scales from any group of any row (a [`QView`] of an int4 matrix promises them).
pub(crate) const SCALE_PAD: usize = 8;

/// The int4 group sizes supported.
pub const INT4_GROUPS: [usize; 3] = [32, 64, 128];

/// How activations enter the dot products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationMode {
    /// Keep `x` in `f32`; dequantize weights on the fly and accumulate with FMA.
    F32,
    /// Quantize each `x` row per block of 32 to int8 (own scale per block) and use integer dot
    /// products. Adds an error bounded by half an activation quantization step per element.
    Int8,
    /// [`ActivationMode::Int8`] where a SIMD integer dot product exists (AVX2 `vpmaddubsw`,
    /// AVX-VNNI), else [`ActivationMode::F32`].
    #[default]
    Auto,
}

impl ActivationMode {
    /// The concrete mode used on this machine: resolves [`ActivationMode::Auto`].
    pub fn resolve(self) -> ActivationMode {
        match self {
            ActivationMode::Auto => {
                if Isa::detect() >= Isa::Avx2 {
                    ActivationMode::Int8
                } else {
                    ActivationMode::F32
                }
            }
            mode => mode,
        }
    }
}

/// Tunable parameters of the quantized matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuantParams {
    /// Activation rows that share one pass over the weights (batching); at least 1.
    pub row_tile: usize,
    /// Worker threads; at least 1.
    pub threads: usize,
    /// How activations enter the dot products.
    pub activations: ActivationMode,
}

impl Default for QuantParams {
    fn default() -> Self {
        Self {
            row_tile: 8,
            threads: crate::threads::available(),
            activations: ActivationMode::Auto,
        }
    }
}

/// The largest `row_tile` accepted (a tile's activations should stay in L2).
pub const MAX_ROW_TILE: usize = 1024;

impl QuantParams {
    /// Checks every field; the error names the field, the value and the reason.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.row_tile == 0 || self.row_tile > MAX_ROW_TILE {
            return Err(ParamError::new(
                "quant",
                "row_tile",
                self.row_tile,
                format!("must be in 1..={MAX_ROW_TILE}"),
            ));
        }
        if self.threads == 0 {
            return Err(ParamError::new("quant", "threads", self.threads, "must be at least 1"));
        }
        Ok(())
    }
}

/// A borrowed view of either weight format, what the kernels work on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QView<'a> {
    /// Row-major quants, `row_bytes()` per row (int8: two's complement bytes; int4: nibbles).
    pub quants: &'a [u8],
    /// Row-major scales, `cols / group` per row.
    pub scales: &'a [f16],
    pub rows: usize,
    pub cols: usize,
    /// Elements per scale (32 for int8).
    pub group: usize,
    /// Whether quants are packed int4 nibbles.
    pub q4: bool,
}

impl QView<'_> {
    fn row_bytes(&self) -> usize {
        if self.q4 { self.cols / 2 } else { self.cols }
    }

    fn groups_per_row(&self) -> usize {
        self.cols / self.group
    }

    fn row_quants(&self, j: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.quants[j * rb..(j + 1) * rb]
    }

    fn row_scales(&self, j: usize) -> &[f16] {
        let g = self.groups_per_row();
        &self.scales[j * g..(j + 1) * g]
    }

    /// log2 of 32-element chunks per scale group.
    fn group_shift(&self) -> u32 {
        (self.group / BLOCK).trailing_zeros()
    }

    /// Bytes streamed by one full pass: quants plus scales.
    pub fn weight_bytes(&self) -> usize {
        self.quants.len() + std::mem::size_of_val(self.scales)
    }

    /// The quantized value of weight `(j, i)`, in `[-127, 127]` (int8) or `[-7, 7]` (int4).
    fn quant_at(&self, j: usize, i: usize) -> i8 {
        let row = self.row_quants(j);
        if self.q4 {
            let chunk = i / BLOCK;
            let within = i % BLOCK;
            let byte = row[chunk * 16 + within % 16];
            let nibble = if within < 16 { byte & 0x0F } else { byte >> 4 };
            nibble as i8 - 8
        } else {
            row[i] as i8
        }
    }

    /// All weights dequantized to `f32`, `[rows, cols]` row-major.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for j in 0..self.rows {
            let scales = self.row_scales(j);
            for i in 0..self.cols {
                out.push(f32::from(self.quant_at(j, i)) * scales[i / self.group].to_f32());
            }
        }
        out
    }
}

/// Checks that `x` is `[m, k]` and `y` is `[m, n]`, naming the operand at fault.
pub(crate) fn check_operands(
    kernel: &'static str,
    x: &[f32],
    m: usize,
    y: &[f32],
    n: usize,
    k: usize,
) -> Result<(), KernelError> {
    let want_x = m.checked_mul(k);
    if want_x != Some(x.len()) {
        return Err(KernelError::shape(
            kernel,
            format!("x has {} elements but m × k = {m} × {k} needs {}", x.len(), m * k),
        ));
    }
    let want_y = m.checked_mul(n);
    if want_y != Some(y.len()) {
        return Err(KernelError::shape(
            kernel,
            format!("y has {} elements but m × n = {m} × {n} needs {}", y.len(), m * n),
        ));
    }
    Ok(())
}

/// Checks the weight shape given to a constructor: `w` is `rows × cols`, `cols % block == 0`.
pub(crate) fn check_weight_shape(
    kernel: &'static str,
    w_len: usize,
    rows: usize,
    cols: usize,
    block: usize,
) -> Result<(), KernelError> {
    if rows.checked_mul(cols) != Some(w_len) {
        return Err(KernelError::shape(
            kernel,
            format!("w has {w_len} elements but rows × cols = {rows} × {cols}"),
        ));
    }
    if !cols.is_multiple_of(block) {
        return Err(KernelError::shape(
            kernel,
            format!("cols = {cols} is not a multiple of the block size {block}"),
        ));
    }
    Ok(())
}

/// Quantizes one block symmetrically: returns the `f16` scale and writes `q = round(w / scale)`
/// clamped to `[-qmax, qmax]`. The quants are computed from the rounded (`f16`) scale so that
/// dequantization error stays within half a step. Zero (or `f16`-underflowing) blocks give
/// scale 0 and zero quants.
pub(crate) fn quantize_block(
    kernel: &'static str,
    w: &[f32],
    qmax: f32,
    out: &mut [i8],
) -> Result<f16, KernelError> {
    let mut amax = 0.0f32;
    for &v in w {
        if !v.is_finite() {
            return Err(KernelError::shape(kernel, format!("weight {v} is not finite")));
        }
        amax = amax.max(v.abs());
    }
    let scale = f16::from_f32(amax / qmax);
    if scale.is_infinite() {
        return Err(KernelError::shape(
            kernel,
            format!("block absmax {amax} overflows an f16 scale (max {})", f16::MAX),
        ));
    }
    let s = scale.to_f32();
    for (o, &v) in out.iter_mut().zip(w) {
        // `as i8` saturates, but the clamp keeps the code symmetric (no -128).
        *o = if s == 0.0 { 0 } else { (v / s).round().clamp(-qmax, qmax) as i8 };
    }
    Ok(if s == 0.0 { f16::ZERO } else { scale })
}

/// The oracle shared by both formats: dequantized weights · `f32` x, f64 accumulation.
pub(crate) fn matmul_reference(
    kernel: &'static str,
    view: QView,
    x: &[f32],
    m: usize,
    y: &mut [f32],
) -> Result<(), KernelError> {
    let (n, k) = (view.rows, view.cols);
    check_operands(kernel, x, m, y, n, k)?;
    let w = view.dequantize();
    for r in 0..m {
        let xr = &x[r * k..(r + 1) * k];
        for j in 0..n {
            let wj = &w[j * k..(j + 1) * k];
            let acc: f64 = wj.iter().zip(xr).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
            y[r * n + j] = acc as f32;
        }
    }
    Ok(())
}

/// Which inner kernel family runs. The AVX2 paths also need F16C (every AVX2 CPU has it) for
/// the scale conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX2 with AVX-VNNI `vpdpbusd` for the int8-activation dot products.
    #[cfg(target_arch = "x86_64")]
    Avx2Vnni,
}

fn choose_path() -> Path {
    #[cfg(target_arch = "x86_64")]
    {
        if Isa::detect() >= Isa::Avx2 && std::arch::is_x86_feature_detected!("f16c") {
            return if IntDotFeatures::detect().avx_vnni { Path::Avx2Vnni } else { Path::Avx2 };
        }
    }
    let _ = IntDotFeatures::default();
    Path::Scalar
}

/// Output rows per parallel task: one task per thread would leave no room for balancing, so
/// aim at ~8 tasks per thread, in multiples of 4 rows.
fn rows_per_task(n: usize, threads: usize) -> usize {
    if threads <= 1 {
        return n.max(1);
    }
    let per = n.div_ceil(threads * 8).max(4);
    per.div_ceil(4) * 4
}

/// Runs `f(first_row, out_chunk)` over `out` split into chunks of `rows` output rows of
/// `per_row` values each, on `threads` workers (inline when `threads == 1`).
fn for_each_row_chunk<F>(threads: usize, out: &mut [f32], rows: usize, per_row: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let chunk = (rows * per_row).max(1);
    if threads <= 1 {
        for (i, c) in out.chunks_mut(chunk).enumerate() {
            f(i * rows, c);
        }
    } else {
        crate::threads::run(threads, || {
            out.par_chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i * rows, c));
        });
    }
}

/// The output side shared by every `y = x · Wᵀ` over row-major weights (int8, int4, bf16):
/// `f(first_row, chunk)` fills `chunk`, the `[rows, m]` outputs of weight rows `first_row..`,
/// on `threads` workers; then `y` (`[m, n]`) receives them. Working feature-major lets each
/// task own contiguous memory; for `m == 1` the two layouts coincide and `y` is written
/// directly.
pub(crate) fn for_each_output_chunk<F>(y: &mut [f32], n: usize, m: usize, threads: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let rows = rows_per_task(n, threads);
    if m == 1 {
        for_each_row_chunk(threads, y, rows, 1, f);
        return;
    }
    let mut transposed = vec![0.0f32; n * m];
    for_each_row_chunk(threads, &mut transposed, rows, m, f);
    for (j, col) in transposed.chunks_exact(m).enumerate() {
        for (r, &v) in col.iter().enumerate() {
            y[r * n + j] = v;
        }
    }
}

/// Activations as one path needs them.
enum Acts<'a> {
    F32(&'a [f32]),
    Int8(QuantizedActs),
}

/// The fast matmul shared by both formats. `y` is `[m, n]`.
pub(crate) fn matmul(
    kernel: &'static str,
    view: QView,
    x: &[f32],
    m: usize,
    y: &mut [f32],
    params: &QuantParams,
) -> Result<(), KernelError> {
    params.validate()?;
    let (n, k) = (view.rows, view.cols);
    check_operands(kernel, x, m, y, n, k)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        y.fill(0.0);
        return Ok(());
    }
    let path = choose_path();
    let acts = match params.activations.resolve() {
        ActivationMode::Int8 => {
            let qa = QuantizedActs::new(x, m, k);
            // Only the SIMD path multiplies raw nibbles and needs the correction.
            Acts::Int8(if view.q4 && path != Path::Scalar {
                let qa = qa.with_nibble_correction(view.group);
                #[cfg(target_arch = "x86_64")]
                let qa = if k.is_multiple_of(8 * BLOCK) {
                    qa.with_chunk_pairs(simd::PAIR_LANE_CHUNKS)
                } else {
                    qa
                };
                qa
            } else {
                qa
            })
        }
        _ => Acts::F32(x),
    };
    let row_tile = params.row_tile;
    for_each_output_chunk(y, n, m, params.threads, |j0, chunk| {
        run_task(view, &acts, m, row_tile, path, j0, chunk);
    });
    Ok(())
}

/// One task: output rows `j0..j0 + out.len() / m`, `out` is `[rows, m]`.
fn run_task(
    view: QView,
    acts: &Acts,
    m: usize,
    row_tile: usize,
    path: Path,
    j0: usize,
    out: &mut [f32],
) {
    let nrows = out.len() / m;
    // Padded by 8: the chunk-pair kernels load eight scales from each step's first group.
    let mut wscale = vec![0.0f32; view.groups_per_row() + 8];
    let groups = view.groups_per_row();
    let mut row_buf = Vec::new();
    #[cfg(target_arch = "x86_64")]
    if let (1, Acts::Int8(qa), Path::Avx2 | Path::Avx2Vnni) = (m, acts, path) {
        let done = gemv_rows(view, qa, path == Path::Avx2Vnni, j0, out);
        for (jj, dst) in out.iter_mut().enumerate().skip(done) {
            let j = j0 + jj;
            simd::scales_to_f32(view.row_scales(j), &mut wscale[..groups]);
            let vnni = path == Path::Avx2Vnni;
            simd::row(view, view.row_quants(j), &wscale, acts, 0, vnni, std::slice::from_mut(dst));
        }
        return;
    }
    for t0 in (0..m).step_by(row_tile) {
        let t1 = (t0 + row_tile).min(m);
        for jj in 0..nrows {
            let j = j0 + jj;
            let (wrow, scales) = (view.row_quants(j), view.row_scales(j));
            let dst = &mut out[jj * m + t0..jj * m + t1];
            match path {
                Path::Scalar => {
                    scales.convert_to_f32_slice(&mut wscale[..groups]);
                    scalar::row(view, wrow, &wscale[..groups], acts, t0, &mut row_buf, dst);
                }
                #[cfg(target_arch = "x86_64")]
                Path::Avx2 | Path::Avx2Vnni => {
                    simd::scales_to_f32(scales, &mut wscale[..groups]);
                    simd::row(view, wrow, &wscale, acts, t0, path == Path::Avx2Vnni, dst);
                }
            }
        }
    }
}

/// The decode case: `out[jj] = dot(weight row j0 + jj, x)` for the one activation row, in
/// groups of [`simd::GEMV_ROWS`] weight rows. Returns how many leading outputs it filled (a
/// multiple of `GEMV_ROWS`); the caller finishes the rest row by row.
#[cfg(target_arch = "x86_64")]
fn gemv_rows(view: QView, qa: &QuantizedActs, vnni: bool, j0: usize, out: &mut [f32]) -> usize {
    const R: usize = simd::GEMV_ROWS;
    let groups = view.groups_per_row();
    let full = out.len() / R * R;
    let chunk_pairs = qa.pairs.first();
    // The generic kernel reads f32 scales; the int4 pair kernel converts f16 in registers.
    let mut wscale = if chunk_pairs.is_some() { Vec::new() } else { vec![0.0f32; R * groups] };
    for (i, dst) in out[..full].chunks_exact_mut(R).enumerate() {
        let j = j0 + i * R;
        let row_scales = &view.scales[j * groups..(j + R) * groups];
        if chunk_pairs.is_none() {
            simd::scales_to_f32(row_scales, &mut wscale);
        }
        let args = simd::GemvArgs {
            w: view.row_quants(j).as_ptr(),
            row_bytes: view.row_bytes(),
            ws: wscale.as_ptr(),
            ws16: row_scales.as_ptr().cast(),
            shift: view.group_shift(),
            x: qa.q.as_ptr(),
            xs: qa.scales.as_ptr(),
            xc: if view.q4 { qa.nibble_corr.as_ptr() } else { std::ptr::null() },
            k: view.cols,
        };
        // SAFETY: the path was chosen by feature detection (AVX2+FMA+F16C, AVX-VNNI when
        // `vnni`); rows `j..j + R` exist (`j + R <= j0 + out.len() <= view.rows`); `wscale`
        // holds their scales for the generic kernel; the pair kernel reads `ws16`, the view's
        // own f16 scales, which an int4 matrix pads by `SCALE_PAD`; `qa` is one activation
        // row of `view.cols`; `dst` has `R` slots.
        unsafe {
            match chunk_pairs {
                Some(pairs) => simd::gemv_q4_dispatch(vnni, &args, pairs, dst.as_mut_ptr()),
                None => simd::gemv_dispatch(view.q4, vnni, &args, dst.as_mut_ptr()),
            }
        }
    }
    full
}
