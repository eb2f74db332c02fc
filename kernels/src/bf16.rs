//! bf16 weights with f32 accumulation.
//!
//! [`Bf16Matrix`] stores an `[n, k]` weight as `half::bf16` (round-to-nearest-even from `f32`),
//! 2 bytes/weight. `y = x · Wᵀ` widens each weight to `f32` with a 16-bit shift (AVX2:
//! `vpmovzxwd` + `vpslld 16`) and accumulates with FMA. Like the quantized kernels, output
//! features are split across `threads`, and for every tile of `row_tile` activation rows each
//! weight row is streamed once and used against the whole tile; `m == 1` is the decode GEMV.

use crate::error::{KernelError, ParamError};
use crate::isa::Isa;
use crate::quant::{check_operands, for_each_output_chunk};
use half::bf16;
use serde::{Deserialize, Serialize};

const KERNEL: &str = "bf16";

/// Tunable parameters of the bf16 matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bf16Params {
    /// Activation rows that share one pass over the weights (batching); at least 1.
    pub row_tile: usize,
    /// Worker threads; at least 1.
    pub threads: usize,
}

impl Default for Bf16Params {
    fn default() -> Self {
        Self { row_tile: 8, threads: crate::threads::available() }
    }
}

impl Bf16Params {
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

/// An `[n, k]` row-major weight stored as bf16.
#[derive(Debug, Clone, PartialEq)]
pub struct Bf16Matrix {
    data: Vec<bf16>,
    rows: usize,
    cols: usize,
}

impl Bf16Matrix {
    /// Converts a row-major `rows × cols` `f32` weight (round to nearest even).
    pub fn from_f32(w: &[f32], rows: usize, cols: usize) -> Result<Self, KernelError> {
        if rows.checked_mul(cols) != Some(w.len()) {
            return Err(KernelError::shape(
                KERNEL,
                format!("w has {} elements but rows × cols = {rows} × {cols}", w.len()),
            ));
        }
        Ok(Self { data: w.iter().map(|&v| bf16::from_f32(v)).collect(), rows, cols })
    }

    /// Wraps stored bf16 values (for loaders), `[rows, cols]` row-major.
    pub fn from_bf16(data: Vec<bf16>, rows: usize, cols: usize) -> Result<Self, KernelError> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(KernelError::shape(
                KERNEL,
                format!("data has {} elements but rows × cols = {rows} × {cols}", data.len()),
            ));
        }
        Ok(Self { data, rows, cols })
    }

    /// The stored values, `[rows, cols]` row-major.
    pub fn as_bf16(&self) -> &[bf16] {
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
        self.data.len() * std::mem::size_of::<bf16>()
    }

    /// `y = x · Wᵀ` with `x` `[m, k]` and `y` `[m, n]`; `m == 1` is the decode GEMV.
    pub fn matmul(
        &self,
        x: &[f32],
        m: usize,
        y: &mut [f32],
        params: &Bf16Params,
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

    /// The oracle: the bf16 weights widened to `f32` · `x`, f64 accumulation.
    pub fn matmul_reference(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<(), KernelError> {
        let (n, k) = (self.rows, self.cols);
        check_operands(KERNEL, x, m, y, n, k)?;
        for r in 0..m {
            let xr = &x[r * k..(r + 1) * k];
            for j in 0..n {
                let w = &self.data[j * k..(j + 1) * k];
                let acc: f64 =
                    w.iter().zip(xr).map(|(a, &b)| f64::from(a.to_f32()) * f64::from(b)).sum();
                y[r * n + j] = acc as f32;
            }
        }
        Ok(())
    }
}

/// Activation rows per call of the AVX2 micro-kernel.
const MAX_M: usize = 4;

/// `dst[i] = dot(w, x row i)`; `x` holds `dst.len()` rows of `k`.
fn row(w: &[bf16], x: &[f32], k: usize, simd: bool, dst: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        for (sub, d) in dst.chunks_mut(MAX_M).enumerate() {
            let xs = &x[sub * MAX_M * k..(sub * MAX_M + d.len()) * k];
            let (wp, xp, out) = (w.as_ptr().cast::<u16>(), xs.as_ptr(), d.as_mut_ptr());
            // SAFETY: `simd` means AVX2+FMA were detected; `w` has `k` values, `xs` covers
            // `d.len()` rows of `k` floats and `d` has `d.len()` slots; bf16 is a `u16`.
            unsafe {
                match d.len() {
                    1 => avx2::kernel::<1>(wp, xp, k, out),
                    2 => avx2::kernel::<2>(wp, xp, k, out),
                    3 => avx2::kernel::<3>(wp, xp, k, out),
                    _ => avx2::kernel::<4>(wp, xp, k, out),
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

    /// Eight bf16 at `p` widened to f32: zero-extend to 32 bits, shift into the high half.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn load8(p: *const u16) -> __m256 {
        // SAFETY: the caller guarantees 8 readable values at `p`.
        let v = unsafe { _mm_loadu_si128(p.cast()) };
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(v), 16))
    }

    /// One bf16 weight row against `M` activation rows, 16 weights per step into two
    /// accumulators per row, scalar tail.
    ///
    /// # Safety
    /// AVX2+FMA; `w` has `k` values, `x` `M` rows of `k` floats, `out` `M` slots.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kernel<const M: usize>(
        w: *const u16,
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
                    total += f32::from_bits(u32::from(*w.add(t)) << 16) * *x.add(r * k + t);
                }
                *out.add(r) = total;
            }
        }
    }
}
