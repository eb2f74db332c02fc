//! Dense (unquantized) weights streamed row by row: bf16 or f32, f32 accumulation.
//!
//! [`DenseMatrix`] stores an `[n, k]` weight as [`Bf16Matrix`] (`half::bf16`, round to nearest
//! even from `f32`, 2 bytes/weight) or [`F32Matrix`] (4 bytes/weight). `y = x · Wᵀ` widens
//! bf16 weights to `f32` with a 16-bit shift (AVX2: `vpmovzxwd` + `vpslld 16`) and accumulates
//! with FMA. This is the decode-side path for dense weights: few activation rows, every weight
//! read once per call; many rows (prefill) are better served by the blocked f32 GEMM. Like the quantized kernels, output
//! features are split across `threads`, and for every tile of `row_tile` activation rows each
//! weight row is streamed once and used against the whole tile; `m == 1` is the decode GEMV.

use crate::error::{KernelError, ParamError};
use crate::isa::Isa;
use crate::quant::{check_operands, for_each_output_chunk};
use half::bf16;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

const KERNEL: &str = "dense";

/// Tunable parameters of the dense (bf16 or f32) weight-streaming matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DenseParams {
    /// Activation rows that share one pass over the weights (batching); at least 1.
    pub row_tile: usize,
    /// Worker threads; at least 1.
    pub threads: usize,
}

impl Default for DenseParams {
    fn default() -> Self {
        Self { row_tile: 8, threads: crate::threads::available() }
    }
}

impl DenseParams {
    /// Checks every field; the error names the field, the value and the reason.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.row_tile == 0 || self.row_tile > crate::quant::MAX_ROW_TILE {
            return Err(ParamError::new(
                KERNEL,
                "row_tile",
                self.row_tile,
                format!("must be in 1..={}", crate::quant::MAX_ROW_TILE),
            ));
        }
        if self.threads == 0 {
            return Err(ParamError::new(KERNEL, "threads", self.threads, "must be at least 1"));
        }
        Ok(())
    }
}

/// An element type a [`DenseMatrix`] can store.
pub trait DenseElem: Copy + Debug + PartialEq + Send + Sync + 'static {
    /// Rounds an `f32` to this type.
    fn from_f32(v: f32) -> Self;
    /// Widens to `f32` (exact for both types here).
    fn to_f32(self) -> f32;
    /// Whether the type is bf16 (else f32): the SIMD kernel picks its widening load by this
    /// constant, so the load inlines into the kernel's target-feature context.
    const IS_BF16: bool;
}

impl DenseElem for bf16 {
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    const IS_BF16: bool = true;
}

impl DenseElem for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f32(self) -> f32 {
        self
    }
    const IS_BF16: bool = false;
}

/// An `[n, k]` row-major weight stored as `T`.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseMatrix<T> {
    data: Vec<T>,
    rows: usize,
    cols: usize,
}

/// bf16 weights: 2 bytes each.
pub type Bf16Matrix = DenseMatrix<bf16>;
/// f32 weights: 4 bytes each.
pub type F32Matrix = DenseMatrix<f32>;

impl<T: DenseElem> DenseMatrix<T> {
    /// Converts a row-major `rows × cols` `f32` weight (bf16: round to nearest even).
    pub fn from_f32(w: &[f32], rows: usize, cols: usize) -> Result<Self, KernelError> {
        let mut data: Vec<T> = Vec::with_capacity(w.len());
        crate::memory::advise_huge_pages(data.as_ptr().cast(), w.len() * size_of::<T>());
        data.extend(w.iter().map(|&v| T::from_f32(v)));
        Self::from_vec(data, rows, cols)
    }

    /// Wraps stored values (for loaders), `[rows, cols]` row-major.
    pub fn from_vec(data: Vec<T>, rows: usize, cols: usize) -> Result<Self, KernelError> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(KernelError::shape(
                KERNEL,
                format!("data has {} elements but rows × cols = {rows} × {cols}", data.len()),
            ));
        }
        Ok(Self { data, rows, cols })
    }

    /// The stored values, `[rows, cols]` row-major.
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    /// The weights widened to `f32` (exact).
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|v| v.to_f32()).collect()
    }

    /// Output features `n`.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features `k`.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes streamed by one full pass over the weight.
    pub fn weight_bytes(&self) -> usize {
        std::mem::size_of_val(self.data.as_slice())
    }

    /// `y = x · Wᵀ` with `x` `[m, k]` and `y` `[m, n]`; `m == 1` is the decode GEMV.
    pub fn matmul(
        &self,
        x: &[f32],
        m: usize,
        y: &mut [f32],
        params: &DenseParams,
    ) -> Result<(), KernelError> {
        params.validate()?;
        let (n, k) = (self.rows, self.cols);
        check_operands(KERNEL, x, m, y, n, k)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let simd = cfg!(target_arch = "x86_64") && Isa::detect() >= Isa::Avx2;
        for_each_output_chunk(y, n, m, params.threads, |j0, chunk| {
            for t0 in (0..m).step_by(params.row_tile) {
                let t1 = (t0 + params.row_tile).min(m);
                for (jj, dst) in chunk.chunks_exact_mut(m).enumerate() {
                    let j = j0 + jj;
                    let w = &self.data[j * k..(j + 1) * k];
                    let xs = &x[t0 * k..t1 * k];
                    row(w, xs, k, simd, &mut dst[t0..t1]);
                }
            }
        });
        Ok(())
    }

    /// The oracle: the weights widened to `f32` · `x`, f64 accumulation.
    pub fn matmul_reference(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<(), KernelError> {
        let (n, k) = (self.rows, self.cols);
        check_operands(KERNEL, x, m, y, n, k)?;
        for r in 0..m {
            let xr = &x[r * k..(r + 1) * k];
            for j in 0..n {
                let w = &self.data[j * k..(j + 1) * k];
                let acc: f64 = w
                    .iter()
                    .zip(xr)
                    .map(|(a, &b)| f64::from(DenseElem::to_f32(*a)) * f64::from(b))
                    .sum();
                y[r * n + j] = acc as f32;
            }
        }
        Ok(())
    }
}

/// Activation rows per call of the AVX2 micro-kernel.
const MAX_M: usize = 4;

/// `dst[i] = dot(w, x row i)`; `x` holds `dst.len()` rows of `k`.
fn row<T: DenseElem>(w: &[T], x: &[f32], k: usize, simd: bool, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        for (sub, d) in dst.chunks_mut(MAX_M).enumerate() {
            let xs = &x[sub * MAX_M * k..(sub * MAX_M + d.len()) * k];
            let (wp, xp, out) = (w.as_ptr(), xs.as_ptr(), d.as_mut_ptr());
            // SAFETY: `simd` means AVX2+FMA were detected; `w` has `k` values, `xs` covers
            // `d.len()` rows of `k` floats and `d` has `d.len()` slots.
            unsafe {
                match d.len() {
                    1 => avx2::kernel::<T, 1>(wp, xp, k, out),
                    2 => avx2::kernel::<T, 2>(wp, xp, k, out),
                    3 => avx2::kernel::<T, 3>(wp, xp, k, out),
                    _ => avx2::kernel::<T, 4>(wp, xp, k, out),
                }
            }
        }
        return;
    }
    let _ = simd;
    for (i, d) in dst.iter_mut().enumerate() {
        let xr = &x[i * k..(i + 1) * k];
        *d = w.iter().zip(xr).map(|(a, &b)| a.to_f32() * b).sum();
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    use super::DenseElem;

    /// Eight values of `T` at `p` as f32 lanes.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load8<T: DenseElem>(p: *const T) -> __m256 {
        // SAFETY: forwarded contract; bf16 is stored as a `u16`.
        unsafe { if T::IS_BF16 { load8_bf16(p.cast()) } else { load8_f32(p.cast()) } }
    }

    /// Eight bf16 at `p` widened to f32: zero-extend to 32 bits, shift into the high half.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load8_bf16(p: *const u16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable values at `p`.
        let v = unsafe { _mm_loadu_si128(p.cast()) };
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16))
    }

    /// Eight f32 at `p`.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load8_f32(p: *const f32) -> __m256 {
        // SAFETY: the caller guarantees 8 readable values at `p`.
        unsafe { _mm256_loadu_ps(p) }
    }

    /// One weight row against `M` activation rows, 16 weights per step into two
    /// accumulators per row, scalar tail.
    ///
    /// # Safety
    /// AVX2+FMA; `w` has `k` values, `x` `M` rows of `k` floats, `out` `M` slots.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kernel<T: DenseElem, const M: usize>(
        w: *const T,
        x: *const f32,
        k: usize,
        out: *mut f32,
    ) {
        let mut acc0 = [_mm256_setzero_ps(); M];
        let mut acc1 = [_mm256_setzero_ps(); M];
        // SAFETY: every offset is below `k` within the row / each of the `M` rows.
        unsafe {
            let mut i = 0;
            while i + 16 <= k {
                let w0 = load8(w.add(i));
                let w1 = load8(w.add(i + 8));
                for r in 0..M {
                    let xr = x.add(r * k + i);
                    acc0[r] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xr), acc0[r]);
                    acc1[r] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr.add(8)), acc1[r]);
                }
                i += 16;
            }
            for r in 0..M {
                let s = _mm256_add_ps(acc0[r], acc1[r]);
                let h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
                let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
                let h = _mm_add_ss(h, _mm_movehdup_ps(h));
                let mut total = _mm_cvtss_f32(h);
                for t in i..k {
                    total += (*w.add(t)).to_f32() * *x.add(r * k + t);
                }
                *out.add(r) = total;
            }
        }
    }
}
