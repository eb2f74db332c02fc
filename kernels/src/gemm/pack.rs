//! Packing: copy a block of A or B into contiguous, zero-padded micro-panels.
//!
//! Both packings are the same operation on a strided block with a "panel" dimension `x` (rows of
//! A, columns of B) and the depth dimension `p` (k): panel `q` holds elements
//! `x ∈ [q·w, q·w + w)` for every `p`, stored as `dst[q·w·kb + p·w + (x − q·w)]`, with `x`
//! beyond the block zero-filled. A's MR-row panels use `w = MR`; B's NR-column panels `w = NR`.

/// A strided block to pack: element `(x, p)` is `data[offset + x * sx + p * sp]`.
pub(crate) struct Block<'a> {
    /// Backing storage (already checked to cover every element).
    pub data: &'a [f32],
    /// Index of element `(0, 0)`.
    pub offset: usize,
    /// Extent along the panel dimension (rows of A / columns of B).
    pub len_x: usize,
    /// Extent along the depth dimension.
    pub len_p: usize,
    /// Stride along the panel dimension.
    pub sx: usize,
    /// Stride along the depth dimension.
    pub sp: usize,
}

/// Packs `blk` into panels of width `w` in `dst` (which must hold `ceil(len_x / w) · w · len_p`).
pub(crate) fn pack(blk: &Block, w: usize, dst: &mut [f32]) {
    let kb = blk.len_p;
    let panel_len = w * kb;
    for (q, panel) in dst.chunks_exact_mut(panel_len).take(blk.len_x.div_ceil(w)).enumerate() {
        let x0 = q * w;
        let wx = w.min(blk.len_x - x0);
        let base = blk.offset + x0 * blk.sx;
        if wx < w {
            panel.fill(0.0);
        }
        if blk.sx == 1 {
            // The panel dimension is contiguous: copy `wx` floats per depth step.
            for (p, row) in panel.chunks_exact_mut(w).enumerate() {
                let s = base + p * blk.sp;
                row[..wx].copy_from_slice(&blk.data[s..s + wx]);
            }
        } else if blk.sp == 1 {
            // The depth dimension is contiguous: stream each source line into one lane.
            for x in 0..wx {
                let s = base + x * blk.sx;
                for (row, &v) in panel.chunks_exact_mut(w).zip(&blk.data[s..s + kb]) {
                    row[x] = v;
                }
            }
        } else {
            for (p, row) in panel.chunks_exact_mut(w).enumerate() {
                for (x, d) in row[..wx].iter_mut().enumerate() {
                    *d = blk.data[base + x * blk.sx + p * blk.sp];
                }
            }
        }
    }
}
