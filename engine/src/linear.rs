//! A linear layer `y = x · Wᵀ` whose weight is stored at a quantization level.
//!
//! The storage decides the bytes streamed per token, which is what decode speed is made of:
//! f32 (4 bytes/weight), bf16 (2), int8 (8.5 bits), int4 (4.5 bits at group 32). Each format
//! runs its own kernel from dyno-kernels; f32 weights switch to the blocked GEMM once enough
//! activation rows share a pass over the weight (prefill), where reuse beats streaming.

use crate::model_config::WeightFormat;
use dyno_kernels::KernelError;
use dyno_kernels::dense::{Bf16Matrix, DenseParams, F32Matrix};
use dyno_kernels::gemm::{GemmParams, MatMut, MatRef, gemm};
use dyno_kernels::quant::{Int4Matrix, Int8Matrix, QuantParams};

/// Activation rows from which f32 weights use the blocked GEMM instead of streaming rows.
/// Below it every weight is read once per call anyway, and the streaming kernel does that
/// without packing.
pub const GEMM_MIN_ROWS: usize = 16;

/// Kernel parameters of one linear layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LinearParams {
    /// f32 GEMM blocking (prefill-sized inputs of f32 weights).
    pub gemm: GemmParams,
    /// bf16 / f32 streaming kernel.
    pub dense: DenseParams,
    /// int8 / int4 kernel.
    pub quant: QuantParams,
}

/// The stored weight, `[out_features, in_features]`.
#[derive(Debug, Clone)]
enum Weight {
    F32(F32Matrix),
    Bf16(Bf16Matrix),
    Int8(Int8Matrix),
    Int4(Int4Matrix),
}

/// A linear layer without bias (Mixtral has none).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    params: LinearParams,
}

impl Linear {
    /// Stores `w` (`[rows, cols]` row-major `f32`) at `format`.
    pub fn new(
        w: &[f32],
        rows: usize,
        cols: usize,
        format: WeightFormat,
        params: LinearParams,
    ) -> Result<Self, KernelError> {
        let weight = match format {
            WeightFormat::F32 => Weight::F32(F32Matrix::from_f32(w, rows, cols)?),
            WeightFormat::Bf16 => Weight::Bf16(Bf16Matrix::from_f32(w, rows, cols)?),
            WeightFormat::Int8 => Weight::Int8(Int8Matrix::quantize(w, rows, cols)?),
            WeightFormat::Int4 { group } => {
                Weight::Int4(Int4Matrix::quantize(w, rows, cols, group)?)
            }
        };
        Ok(Self { weight, params })
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        match &self.weight {
            Weight::F32(m) => m.rows(),
            Weight::Bf16(m) => m.rows(),
            Weight::Int8(m) => m.rows(),
            Weight::Int4(m) => m.rows(),
        }
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        match &self.weight {
            Weight::F32(m) => m.cols(),
            Weight::Bf16(m) => m.cols(),
            Weight::Int8(m) => m.cols(),
            Weight::Int4(m) => m.cols(),
        }
    }

    /// Bytes one full pass over the weight streams (scales included).
    pub fn weight_bytes(&self) -> usize {
        match &self.weight {
            Weight::F32(m) => m.weight_bytes(),
            Weight::Bf16(m) => m.weight_bytes(),
            Weight::Int8(m) => m.weight_bytes(),
            Weight::Int4(m) => m.weight_bytes(),
        }
    }

    /// `y = x · Wᵀ`, `x` `[m, in]`, `y` `[m, out]`.
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<(), KernelError> {
        self.forward_on(x, m, y, None)
    }

    /// [`Linear::forward`] on `threads` workers instead of the configured count (for callers
    /// that already run several layers side by side).
    pub fn forward_on(
        &self,
        x: &[f32],
        m: usize,
        y: &mut [f32],
        threads: Option<usize>,
    ) -> Result<(), KernelError> {
        let mut params = self.params;
        if let Some(t) = threads {
            params.gemm.threads = t;
            params.dense.threads = t;
            params.quant.threads = t;
        }
        let p = &params;
        match &self.weight {
            Weight::F32(w) if m >= GEMM_MIN_ROWS => {
                let (n, k) = (w.rows(), w.cols());
                if x.len() != m * k || y.len() != m * n {
                    return Err(KernelError::shape(
                        "linear",
                        format!(
                            "x has {} and y {} elements for m={m}, [{n}, {k}]",
                            x.len(),
                            y.len()
                        ),
                    ));
                }
                gemm(
                    MatRef::row_major(x, m, k),
                    MatRef::transposed(w.as_slice(), n, k),
                    MatMut::row_major(y, m, n),
                    false,
                    &p.gemm,
                )
            }
            Weight::F32(w) => w.matmul(x, m, y, &p.dense),
            Weight::Bf16(w) => w.matmul(x, m, y, &p.dense),
            Weight::Int8(w) => w.matmul(x, m, y, &p.quant),
            Weight::Int4(w) => w.matmul(x, m, y, &p.quant),
        }
    }

    /// The weight as the kernels see it, dequantized to `f32` (for tests and KL baselines).
    pub fn dequantized(&self) -> Vec<f32> {
        match &self.weight {
            Weight::F32(m) => m.to_f32(),
            Weight::Bf16(m) => m.to_f32(),
            Weight::Int8(m) => m.dequantize(),
            Weight::Int4(m) => m.dequantize(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> LinearParams {
        LinearParams {
            gemm: GemmParams { threads: 2, ..GemmParams::default() },
            dense: DenseParams { threads: 2, ..DenseParams::default() },
            quant: QuantParams { threads: 2, ..QuantParams::default() },
        }
    }

    /// Every format and both f32 paths (streaming and GEMM) agree with `x · Wᵀ` of the
    /// dequantized weight.
    #[test]
    fn every_format_matches_its_dequantized_weight() {
        let (n, k) = (24, 128);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
        for format in WeightFormat::all() {
            let lin = Linear::new(&w, n, k, format, params()).unwrap();
            let wd = lin.dequantized();
            for m in [1, 3, GEMM_MIN_ROWS + 1] {
                let x: Vec<f32> =
                    (0..m * k).map(|i| ((i * 13 % 29) as f32 - 14.0) / 14.0).collect();
                let mut y = vec![0.0; m * n];
                lin.forward(&x, m, &mut y).unwrap();
                for r in 0..m {
                    for j in 0..n {
                        let want: f32 = (0..k).map(|i| x[r * k + i] * wd[j * k + i]).sum();
                        let mag: f32 = (0..k).map(|i| (x[r * k + i] * wd[j * k + i]).abs()).sum();
                        // int8 activations add half a quantization step per element.
                        let tol = 1e-5 * mag
                            + if format.bytes_per_weight() < 2.0 { 0.02 * mag } else { 0.0 };
                        assert!(
                            (y[r * n + j] - want).abs() <= tol + 1e-6,
                            "{format} m={m} r={r} j={j}"
                        );
                    }
                }
            }
        }
    }
}
