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
    let panels = blk.len_x.div_ceil(w);
    let dst = &mut dst[..panels * w * kb];
    if !blk.len_x.is_multiple_of(w) {
        // Zero-pad the last, partial panel.
        dst[(panels - 1) * w * kb..].fill(0.0);
    }
    if blk.sx == 1 {
        // The panel dimension is contiguous (row-major B, column-major A): walk each source line
        // once, sequentially, dealing `w`-float pieces out to the panels.
        for p in 0..kb {
            let s = blk.offset + p * blk.sp;
            for (q, piece) in blk.data[s..s + blk.len_x].chunks(w).enumerate() {
                let d = q * w * kb + p * w;
                dst[d..d + piece.len()].copy_from_slice(piece);
            }
        }
        return;
    }
    for (q, panel) in dst.chunks_exact_mut(w * kb).enumerate() {
        let x0 = q * w;
        let wx = w.min(blk.len_x - x0);
        let base = blk.offset + x0 * blk.sx;
        if blk.sp == 1 {
            // The depth dimension is contiguous (row-major A, B = Wᵀ): stream each source line
            // into one lane of the panel.
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
