//! Portable micro-kernels. Plain Rust over fixed-size arrays: the compiler keeps the MR×NR
//! accumulator tile in registers and vectorizes with the baseline target features (SSE2).

/// Portable MR×NR micro-kernel; see [`super::UkrFn`] for the contract.
///
/// # Safety
/// As [`super::UkrFn`]: `a` holds `kc * MR` floats, `b` holds `kc * NR` floats, and `c` covers
/// `MR` rows of `NR` contiguous floats spaced `ldc` apart.
pub(crate) unsafe fn kernel<const MR: usize, const NR: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    // SAFETY: the caller guarantees `a` and `b` point to packed panels of `kc * MR` and
    // `kc * NR` initialized floats.
    let (a, b) =
        unsafe { (std::slice::from_raw_parts(a, kc * MR), std::slice::from_raw_parts(b, kc * NR)) };
    let mut acc = [[0.0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for (row, &ai) in acc.iter_mut().zip(ap) {
            for (x, &bj) in row.iter_mut().zip(bp) {
                *x += ai * bj;
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        // SAFETY: the caller guarantees row `i < MR` of the tile is `NR` contiguous floats at
        // `c + i * ldc`, exclusively ours for the duration of the call.
        let dst = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), NR) };
        if accumulate {
            for (d, &x) in dst.iter_mut().zip(row) {
                *d += x;
            }
        } else {
            dst.copy_from_slice(row);
        }
    }
}
