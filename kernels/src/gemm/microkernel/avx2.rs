//! AVX2 + FMA micro-kernels: the MR×NR tile lives in `MR × NV` ymm accumulators (NR = 8·NV).
//!
//! Per step `p` of the depth loop: load NV vectors of the packed B row, then for each of the MR
//! rows broadcast one element of the packed A column and issue NV FMAs. 16 ymm registers hold
//! `MR·NV` accumulators + `NV` B vectors + 1 broadcast: 6×16 uses 12+2+1, 8×8 uses 8+1+1.
//! (4×24 would need all 16 and LLVM spills an accumulator, so it is not offered.)

use std::arch::x86_64::*;

/// Floats per ymm register.
const LANES: usize = 8;

/// AVX2+FMA micro-kernel for an `MR × (8·NV)` tile; see [`super::UkrFn`] for the contract.
///
/// # Safety
/// As [`super::UkrFn`], and the CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::needless_range_loop)] // index loops over the register tile read like BLIS
pub(crate) unsafe fn kernel<const MR: usize, const NV: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut acc = [[_mm256_setzero_ps(); NV]; MR];
    let mut bv = [_mm256_setzero_ps(); NV];
    let (mut a, mut b) = (a, b);
    for i in 0..MR {
        // Warm the C tile (both ends of row `i`) while the FMAs run; a prefetch never faults.
        _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * ldc + NV * LANES - 1) as *const i8);
    }
    for _ in 0..kc {
        // SAFETY: `b` holds `kc` groups of `NV * LANES` floats and `a` `kc` groups of `MR`; we
        // advance by one group per step, so every load stays inside the packed panels.
        unsafe {
            for v in 0..NV {
                bv[v] = _mm256_loadu_ps(b.add(v * LANES));
            }
            for i in 0..MR {
                let ai = _mm256_broadcast_ss(&*a.add(i));
                for v in 0..NV {
                    acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
                }
            }
            a = a.add(MR);
            b = b.add(NV * LANES);
        }
    }
    for i in 0..MR {
        for v in 0..NV {
            // SAFETY: row `i < MR` of the tile is `NV * LANES` contiguous floats at
            // `c + i * ldc`, readable and writable by the caller's contract.
            unsafe {
                let p = c.add(i * ldc + v * LANES);
                let x = if accumulate {
                    _mm256_add_ps(acc[i][v], _mm256_loadu_ps(p))
                } else {
                    acc[i][v]
                };
                _mm256_storeu_ps(p, x);
            }
        }
    }
}
