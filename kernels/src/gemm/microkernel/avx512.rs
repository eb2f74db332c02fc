//! AVX-512F micro-kernels: the MR×NR tile lives in `MR × NV` zmm accumulators (NR = 16·NV).
//!
//! The same structure as the AVX2 kernels, with 16-lane registers and 32 of them:
//! 14×32 uses 28 accumulators + 2 B vectors + 1 broadcast, 6×64 uses 24+4+1.

use std::arch::x86_64::*;

/// Floats per zmm register.
const LANES: usize = 16;

/// AVX-512F micro-kernel for an `MR × (16·NV)` tile; see [`super::UkrFn`] for the contract.
///
/// # Safety
/// As [`super::UkrFn`], and the CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
#[allow(clippy::needless_range_loop)] // index loops over the register tile read like BLIS
pub(crate) unsafe fn kernel<const MR: usize, const NV: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    let mut bv = [_mm512_setzero_ps(); NV];
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
                bv[v] = _mm512_loadu_ps(b.add(v * LANES));
            }
            for i in 0..MR {
                let ai = _mm512_set1_ps(*a.add(i));
                for v in 0..NV {
                    acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
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
                    _mm512_add_ps(acc[i][v], _mm512_loadu_ps(p))
                } else {
                    acc[i][v]
                };
                _mm512_storeu_ps(p, x);
            }
        }
    }
}
