//! bf16 weights with f32 accumulation: `y = x · Wᵀ` for a row-major `[n, k]` weight of
//! `bf16` and `f32` activations.
//!
//! bf16 is the top half of an f32, so widening is a 16-bit shift (AVX2: `vpmovzxwd` +
//! `vpslld 16`). The blocking is the quantized kernels' ([`crate::quant`]): weight rows in
//! cache-sized chunks across threads, each row loaded once per tile of `row_tile` activation
//! rows.

use crate::error::{KernelError, ParamError};
use crate::isa::Isa;
use crate::quant::{MAX_ROW_TILE, check_operands, drive, matmul_reference_dense};
use half::bf16;
use serde::{Deserialize, Serialize};

/// Tunable parameters of the bf16 matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bf16Params {
    /// Activation rows that share each loaded weight row (1 to [`MAX_ROW_TILE`]).
    pub row_tile: usize,
    /// Worker threads.
    pub threads: usize,
}

impl Default for Bf16Params {
    fn default() -> Self {
        Self { row_tile: 4, threads: crate::threads::available() }
    }
}

impl Bf16Params {
    /// Checks every field; the error names the field, the value and the reason.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.row_tile == 0 || self.row_tile > MAX_ROW_TILE {
            return Err(ParamError::new(
                "bf16",
                "row_tile",
                self.row_tile,
                format!("must be between 1 and {MAX_ROW_TILE}"),
            ));
        }
        if self.threads == 0 {
            return Err(ParamError::new("bf16", "threads", self.threads, "must be at least 1"));
        }
        Ok(())
    }
}

/// A row-major `[rows, cols]` matrix of bf16 weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Bf16Matrix {
    rows: usize,
    cols: usize,
    data: Vec<bf16>,
}

impl Bf16Matrix {
    /// Rounds an `f32` matrix to bf16 (round to nearest even).
    pub fn from_f32(w: &[f32], rows: usize, cols: usize) -> Result<Self, KernelError> {
        if w.len() != rows * cols {
            return Err(KernelError::shape(
                "bf16 from_f32",
                format!("weights hold {} values, expected rows × cols = {rows} × {cols}", w.len()),
            ));
        }
        Ok(Self { rows, cols, data: w.iter().map(|&v| bf16::from_f32(v)).collect() })
    }

    /// The weights widened back to `f32` (exact).
    pub fn to_f32(&self) -> Vec<f32> {
        self.data.iter().map(|v| v.to_f32()).collect()
    }

    /// Output features (n).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input features (k).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Bytes one full pass over the weights streams.
    pub fn weight_bytes(&self) -> usize {
        2 * self.data.len()
    }

    /// `y = x · Wᵀ` for `x` of `m × cols` and `y` of `m × rows`, blocked by `params`.
    pub fn matmul(
        &self,
        x: &[f32],
        m: usize,
        y: &mut [f32],
        params: &Bf16Params,
    ) -> Result<(), KernelError> {
        params.validate()?;
        check_operands("bf16 matmul", x, m, y, self.rows, self.cols)?;
        let (cols, simd) = (self.cols, Isa::detect() >= Isa::Avx2);
        drive(self.rows, m, 2 * cols, params.threads, params.row_tile, y, |r, t0, t1, dots| {
            let w = &self.data[r * cols..(r + 1) * cols];
            let x = &x[t0 * cols..t1 * cols];
            row_dot(simd, w, x, cols, dots);
        });
        Ok(())
    }

    /// The oracle: the bf16 weights widened to `f32`, times `x`, accumulated in `f64`.
    pub fn matmul_reference(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<(), KernelError> {
        check_operands("bf16 matmul", x, m, y, self.rows, self.cols)?;
        matmul_reference_dense(&self.to_f32(), self.rows, self.cols, x, m, y);
        Ok(())
    }
}

/// Dot products of one weight row with each of `dots.len()` activation rows.
fn row_dot(simd: bool, w: &[bf16], x: &[f32], cols: usize, dots: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        macro_rules! dispatch {
            ($($r:literal)*) => {
                match dots.len() {
                    $($r => {
                        // SAFETY: AVX2 and FMA were detected at run time (Isa::Avx2).
                        let d = unsafe { avx2::row_dot::<$r>(w, x, cols) };
                        dots.copy_from_slice(&d);
                        return;
                    })*
                    _ => unreachable!("row_tile is validated to 1..=8"),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8);
    }
    let _ = simd;
    for (i, dot) in dots.iter_mut().enumerate() {
        let xi = &x[i * cols..(i + 1) * cols];
        *dot = w.iter().zip(xi).map(|(a, b)| a.to_f32() * b).sum();
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use half::bf16;
    use std::arch::x86_64::*;

    /// # Safety
    /// AVX2 and FMA are available; `w` holds `cols` weights and `x` holds `R × cols` values.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn row_dot<const R: usize>(w: &[bf16], x: &[f32], cols: usize) -> [f32; R] {
        let mut acc = [_mm256_setzero_ps(); R];
        let full = cols / 8 * 8;
        // SAFETY: offsets stay below `full ≤ cols` for w and below R·cols for x.
        unsafe {
            for j in (0..full).step_by(8) {
                let h = _mm_loadu_si128(w.as_ptr().add(j) as *const __m128i);
                let wf = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
                for (i, a) in acc.iter_mut().enumerate() {
                    let xv = _mm256_loadu_ps(x.as_ptr().add(i * cols + j));
                    *a = _mm256_fmadd_ps(wf, xv, *a);
                }
            }
            let mut out = [0.0f32; R];
            for (i, (o, a)) in out.iter_mut().zip(acc).enumerate() {
                let mut lanes = [0.0f32; 8];
                _mm256_storeu_ps(lanes.as_mut_ptr(), a);
                *o = lanes.iter().sum::<f32>()
                    + (full..cols).map(|j| w[j].to_f32() * x[i * cols + j]).sum::<f32>();
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_and_widening_exact() {
        let w = [1.0f32, 1.0 + 1.0 / 256.0, -3.5, 1e-3];
        let m = Bf16Matrix::from_f32(&w, 1, 4).unwrap();
        let back = m.to_f32();
        assert_eq!(back[0], 1.0);
        assert_eq!(back[2], -3.5);
        for (a, b) in w.iter().zip(&back) {
            assert!((a - b).abs() <= a.abs() / 256.0, "{a} vs {b}");
        }
        assert_eq!(m.weight_bytes(), 8);
    }

    #[test]
    fn params_are_validated_with_names() {
        let p = Bf16Params { row_tile: 0, threads: 1 };
        assert!(p.validate().unwrap_err().to_string().contains("row_tile"));
        let e = Bf16Matrix::from_f32(&[0.0; 5], 2, 3).unwrap_err().to_string();
        assert!(e.contains("2 × 3"), "{e}");
    }
}
