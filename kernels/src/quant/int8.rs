//! Int8 weights, Q8_0-like: blocks of 32 along `k`, one `f16` scale per block.

use super::{BLOCK, QView, QuantParams, check_weight_shape, quantize_block};
use crate::error::KernelError;
use half::f16;

const KERNEL: &str = "quant_int8";

/// An `[n, k]` weight quantized to int8 in blocks of 32 along `k` (8.5 bits/weight).
///
/// Layout: `quants` is `[rows, cols]` row-major `i8` in `[-127, 127]`; `scales` is
/// `[rows, cols / 32]` row-major `f16`; weight `(j, i) ≈ quants[j·cols + i] · scales[j·cols/32
/// + i/32]`, `scale = max|w| / 127` per block.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Matrix {
    quants: Vec<i8>,
    scales: Vec<f16>,
    rows: usize,
    cols: usize,
}

impl Int8Matrix {
    /// Quantizes a row-major `rows × cols` `f32` weight; `cols` must be a multiple of 32 and
    /// every weight finite.
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Result<Self, KernelError> {
        check_weight_shape(KERNEL, w.len(), rows, cols, BLOCK)?;
        let mut quants = vec![0i8; w.len()];
        crate::memory::advise_huge_pages(quants.as_ptr().cast(), quants.len());
        let mut scales = Vec::with_capacity(w.len() / BLOCK);
        for (wb, qb) in w.chunks_exact(BLOCK).zip(quants.chunks_exact_mut(BLOCK)) {
            scales.push(quantize_block(KERNEL, wb, 127.0, qb)?);
        }
        Ok(Self { quants, scales, rows, cols })
    }

    /// Builds a matrix from stored parts (for loaders): `quants` `[rows, cols]`, `scales`
    /// `[rows, cols / 32]`. Rejects mismatched lengths and quants equal to -128.
    pub fn from_parts(
        quants: Vec<i8>,
        scales: Vec<f16>,
        rows: usize,
        cols: usize,
    ) -> Result<Self, KernelError> {
        check_weight_shape(KERNEL, quants.len(), rows, cols, BLOCK)?;
        if scales.len() != quants.len() / BLOCK {
            return Err(KernelError::shape(
                KERNEL,
                format!(
                    "scales has {} entries but rows × cols / 32 = {}",
                    scales.len(),
                    quants.len() / BLOCK
                ),
            ));
        }
        if let Some(i) = quants.iter().position(|&q| q == i8::MIN) {
            return Err(KernelError::shape(
                KERNEL,
                format!("quants[{i}] = -128 is outside [-127, 127]"),
            ));
        }
        Ok(Self { quants, scales, rows, cols })
    }

    /// The quants, `[rows, cols]` row-major.
    pub fn quants(&self) -> &[i8] {
        &self.quants
    }

    /// The per-block scales, `[rows, cols / 32]` row-major.
    pub fn scales(&self) -> &[f16] {
        &self.scales
    }

    shared_matrix_methods!();

    fn view(&self) -> QView<'_> {
        // SAFETY: `i8` and `u8` have the same size and alignment and every bit pattern is valid
        // for both, so the slice can be reinterpreted.
        let quants = unsafe {
            std::slice::from_raw_parts(self.quants.as_ptr().cast::<u8>(), self.quants.len())
        };
        QView {
            quants,
            scales: &self.scales,
            rows: self.rows,
            cols: self.cols,
            group: BLOCK,
            q4: false,
        }
    }
}
