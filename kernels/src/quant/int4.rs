//! Int4 weights, Q4_0-like: groups of 32, 64 or 128 along `k`, one `f16` scale per group.

use super::{
    BLOCK, INT4_GROUPS, QView, QuantParams, SCALE_PAD, check_weight_shape, quantize_block,
};
use crate::error::{KernelError, ParamError};
use half::f16;

const KERNEL: &str = "quant_int4";

/// An `[n, k]` weight quantized to 4 bits in groups along `k` (4.5 bits/weight at group 32,
/// 4.25 at 64, 4.125 at 128).
///
/// Quantization is symmetric: `scale = max|w| / 7` per group, `q = round(w / scale)` in
/// `[-7, 7]`, stored as the nibble `q + 8` (`1..=15`). (llama.cpp's Q4_0 uses `max / -8` to
/// reach -8 too; the symmetric choice keeps the `|w − ŵ| ≤ scale / 2` bound and `-q` exact.)
///
/// Nibble layout, chosen so that AVX2 unpacks 32 weights with one shift and one mask: each row
/// is `cols / 2` bytes; the 32 weights `32c..32c+32` of chunk `c` live in bytes
/// `16c..16c+16`, byte `16c + j` holding weight `32c + j` in its low nibble and weight
/// `32c + 16 + j` in its high nibble. Scales are `[rows, cols / group]` row-major `f16`,
/// stored with [`SCALE_PAD`] zero scales after the last so SIMD kernels may load eight scales
/// from any group without reading past the allocation.
#[derive(Debug, Clone, PartialEq)]
pub struct Int4Matrix {
    packed: Vec<u8>,
    scales: Vec<f16>,
    rows: usize,
    cols: usize,
    group: usize,
}

fn check_group(group: usize) -> Result<(), KernelError> {
    if INT4_GROUPS.contains(&group) {
        Ok(())
    } else {
        Err(ParamError::new(KERNEL, "group", group, "must be 32, 64 or 128").into())
    }
}

impl Int4Matrix {
    /// Quantizes a row-major `rows × cols` `f32` weight in groups of `group` (32, 64 or 128)
    /// along `cols`, which must be a multiple of `group`; every weight must be finite.
    pub fn quantize(
        w: &[f32],
        rows: usize,
        cols: usize,
        group: usize,
    ) -> Result<Self, KernelError> {
        check_group(group)?;
        check_weight_shape(KERNEL, w.len(), rows, cols, group)?;
        let mut packed = Vec::with_capacity(w.len() / 2);
        crate::memory::advise_huge_pages(packed.as_ptr(), packed.capacity());
        let mut scales = Vec::with_capacity(w.len() / group);
        let mut q = vec![0i8; group];
        for wg in w.chunks_exact(group) {
            scales.push(quantize_block(KERNEL, wg, 7.0, &mut q)?);
            for qc in q.chunks_exact(BLOCK) {
                let (lo, hi) = qc.split_at(BLOCK / 2);
                packed.extend(
                    lo.iter().zip(hi).map(|(&l, &h)| ((l + 8) as u8) | (((h + 8) as u8) << 4)),
                );
            }
        }
        Ok(Self::with_padding(packed, scales, rows, cols, group))
    }

    /// Builds a matrix from stored parts (for loaders): `packed` `[rows, cols / 2]` nibbles in
    /// the layout above, `scales` `[rows, cols / group]`. Rejects mismatched lengths, groups
    /// other than 32/64/128 and nibble 0 (which would be -8, outside the symmetric range).
    pub fn from_parts(
        packed: Vec<u8>,
        scales: Vec<f16>,
        rows: usize,
        cols: usize,
        group: usize,
    ) -> Result<Self, KernelError> {
        check_group(group)?;
        check_weight_shape(KERNEL, packed.len() * 2, rows, cols, group)?;
        if scales.len() * group != rows * cols {
            return Err(KernelError::shape(
                KERNEL,
                format!(
                    "scales has {} entries but rows × cols / group = {}",
                    scales.len(),
                    rows * cols / group
                ),
            ));
        }
        if let Some(i) = packed.iter().position(|&b| b & 0x0F == 0 || b >> 4 == 0) {
            return Err(KernelError::shape(KERNEL, format!("packed[{i}] holds nibble 0 (q = -8)")));
        }
        Ok(Self::with_padding(packed, scales, rows, cols, group))
    }

    /// Appends the [`SCALE_PAD`] trailing scales (see the type's docs).
    fn with_padding(
        packed: Vec<u8>,
        mut scales: Vec<f16>,
        rows: usize,
        cols: usize,
        group: usize,
    ) -> Self {
        scales.extend([f16::ZERO; SCALE_PAD]);
        Self { packed, scales, rows, cols, group }
    }

    /// The packed nibbles, `[rows, cols / 2]` row-major, layout as documented on the type.
    pub fn packed(&self) -> &[u8] {
        &self.packed
    }

    /// The per-group scales, `[rows, cols / group]` row-major.
    pub fn scales(&self) -> &[f16] {
        &self.scales[..self.scales.len() - SCALE_PAD]
    }

    /// Elements per scale along `k`: 32, 64 or 128.
    pub fn group(&self) -> usize {
        self.group
    }

    shared_matrix_methods!();

    fn view(&self) -> QView<'_> {
        QView {
            quants: &self.packed,
            scales: self.scales(),
            rows: self.rows,
            cols: self.cols,
            group: self.group,
            q4: true,
        }
    }
}
