//! Register micro-kernels: `C[MR×NR] (+)= Ã · B̃` over packed panels.
//!
//! Every micro-kernel has the same contract ([`UkrFn`]), so the macro-kernel is written once:
//! - `a` points to a packed MR-row panel of A: `kc` groups of `MR` floats (column `p` of the
//!   panel is `a[p*MR .. p*MR + MR]`);
//! - `b` points to a packed NR-column panel of B: `kc` groups of `NR` floats;
//! - `c` points to the top-left of a full MR×NR tile whose rows are `ldc` floats apart and whose
//!   columns are contiguous;
//! - with `accumulate` the product is added to `c`, otherwise `c` is overwritten (never read).

pub(crate) mod scalar;

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2;
#[cfg(target_arch = "x86_64")]
pub(crate) mod avx512;

/// The micro-kernel entry point shared by every ISA; see the module docs for the contract.
///
/// # Safety
/// `a` must be readable for `kc * MR` floats, `b` for `kc * NR` floats, `c` readable (when
/// accumulating) and writable for rows `0..MR` of `NR` contiguous floats spaced `ldc` apart, and
/// the CPU must support the micro-kernel's ISA.
pub(crate) type UkrFn =
    unsafe fn(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, accumulate: bool);
