//! Vector building blocks shared by the elementwise ops and attention.
//!
//! Each function comes in two flavours: a portable one (plain loops the compiler may
//! auto-vectorize) and an AVX2+FMA one compiled with `#[target_feature]`. Callers pick with
//! [`use_avx2`], which follows [`Isa::detect`] and so honours `DYNO_MAX_ISA`.
//!
//! # The fast exponential
//!
//! [`exp_sub_sum`] (used by softmax, attention and SiLU) evaluates `exp` with the classic
//! Cephes `expf` scheme on 8 lanes: `x = n·ln2 + r` with `|r| ≤ ln2/2`, a degree-6
//! polynomial for `exp(r)`, and `2ⁿ` built in the exponent bits. Its maximum relative error
//! against `f32::exp` is below **4e-7** (about 3 ulp) for `x ∈ [-87, 88]`; the tests sweep that
//! range. Inputs below −87.3 give 0 (the true value is under 1.2e-38, the smallest normal
//! f32) and inputs above 88.7 saturate at about 3.4e38; NaN propagates.

use crate::isa::Isa;

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Whether the AVX2+FMA paths may run here (respecting `DYNO_MAX_ISA`).
#[inline]
pub(crate) fn use_avx2() -> bool {
    cfg!(target_arch = "x86_64") && Isa::detect() >= Isa::Avx2
}

/// Largest input the vector exp handles without saturating.
const EXP_HI: f32 = 88.722_83;
/// Smallest input the vector exp handles without flushing to zero.
const EXP_LO: f32 = -87.336_54;

/// `exp` of 8 lanes; see the module documentation for its accuracy.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn exp_ps(x: __m256) -> __m256 {
    // Clamp with `x` as the second operand so a NaN lane passes through unchanged.
    let x = _mm256_min_ps(_mm256_set1_ps(EXP_HI), x);
    let x = _mm256_max_ps(_mm256_set1_ps(EXP_LO), x);
    // n = round(x / ln 2); r = x − n·ln 2, with ln 2 split in two for exactness.
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    // exp(r) ≈ 1 + r + r²·P(r) (Cephes coefficients).
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.398_199_9e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.333_452e-3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.166_579_6e-2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.166_666_65));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5));
    let r2 = _mm256_mul_ps(r, r);
    let e = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0));
    // Scale by 2ⁿ. n + 127 can reach 255 at the top clamp, so split it into two factors.
    let n_int = _mm256_cvtps_epi32(n);
    let half = _mm256_srai_epi32::<1>(n_int);
    let rest = _mm256_sub_epi32(n_int, half);
    let bias = _mm256_set1_epi32(127);
    let pow_half = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(half, bias)));
    let pow_rest = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(rest, bias)));
    let scaled = _mm256_mul_ps(_mm256_mul_ps(e, pow_half), pow_rest);
    // Below the low clamp the true value is subnormal: return 0 there (NaN stays NaN).
    let tiny = _mm256_cmp_ps::<_CMP_LE_OQ>(x, _mm256_set1_ps(EXP_LO));
    _mm256_andnot_ps(tiny, scaled)
}

/// Horizontal sum of 8 lanes.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub(crate) unsafe fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// Horizontal maximum of 8 lanes.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn hmax(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_max_ps(lo, hi);
    let s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_max_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// The maximum of `x` (`-inf` when empty). NaN handling is unspecified.
pub(crate) fn max(x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() && x.len() >= 8 {
        // SAFETY: AVX2+FMA were detected at run time.
        return unsafe { max_avx2(x) };
    }
    x.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn max_avx2(x: &[f32]) -> f32 {
    let chunks = x.chunks_exact(8);
    let tail = chunks.remainder();
    let mut m = _mm256_set1_ps(f32::NEG_INFINITY);
    for c in chunks {
        // SAFETY: `c` holds exactly 8 floats.
        m = _mm256_max_ps(m, unsafe { _mm256_loadu_ps(c.as_ptr()) });
    }
    // SAFETY: AVX2 is enabled on this function.
    tail.iter().copied().fold(unsafe { hmax(m) }, f32::max)
}

/// Replaces each `s` by `exp(s − m)` and returns their sum (accumulated in f32).
pub(crate) fn exp_sub_sum(s: &mut [f32], m: f32) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: AVX2+FMA were detected at run time.
        return unsafe { exp_sub_sum_avx2(s, m) };
    }
    let mut sum = 0.0;
    for v in s.iter_mut() {
        *v = (*v - m).exp();
        sum += *v;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_sub_sum_avx2(s: &mut [f32], m: f32) -> f32 {
    let mv = _mm256_set1_ps(m);
    let mut acc = _mm256_setzero_ps();
    let mut chunks = s.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: `c` holds exactly 8 floats; AVX2 is enabled on this function.
        unsafe {
            let e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), mv));
            _mm256_storeu_ps(c.as_mut_ptr(), e);
            acc = _mm256_add_ps(acc, e);
        }
    }
    let tail = chunks.into_remainder();
    // SAFETY: AVX2 is enabled on this function.
    let mut sum = unsafe { hsum(acc) };
    if !tail.is_empty() {
        // Pad the tail to a full vector so it gets the same exp as the body.
        let mut buf = [f32::NEG_INFINITY; 8];
        buf[..tail.len()].copy_from_slice(tail);
        // SAFETY: `buf` holds 8 floats.
        let e = unsafe { exp_ps(_mm256_sub_ps(_mm256_loadu_ps(buf.as_ptr()), mv)) };
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(buf.as_mut_ptr(), e) };
        for (t, b) in tail.iter_mut().zip(buf) {
            *t = b;
            sum += b;
        }
    }
    sum
}

/// Multiplies every element by `a`.
pub(crate) fn scale(x: &mut [f32], a: f32) {
    // Simple enough that the compiler vectorizes it with the baseline features.
    for v in x {
        *v *= a;
    }
}

/// Dot products of `N` rows with one vector: `out[i] = rows[i] · k`. All have `k.len()` elements.
pub(crate) fn dot_many<const N: usize>(rows: [&[f32]; N], k: &[f32]) -> [f32; N] {
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: AVX2+FMA were detected at run time.
        return unsafe { dot_many_avx2(rows, k) };
    }
    rows.map(|r| r.iter().zip(k).map(|(a, b)| a * b).sum())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_many_avx2<const N: usize>(rows: [&[f32]; N], k: &[f32]) -> [f32; N] {
    let d = k.len();
    for r in &rows {
        assert_eq!(r.len(), d, "dot_many rows must match k");
    }
    let body = d - d % 16;
    let mut acc0 = [_mm256_setzero_ps(); N];
    let mut acc1 = [_mm256_setzero_ps(); N];
    let mut c = 0;
    while c < body {
        // SAFETY: c + 16 ≤ d, and every row has d elements (asserted above).
        unsafe {
            let k0 = _mm256_loadu_ps(k.as_ptr().add(c));
            let k1 = _mm256_loadu_ps(k.as_ptr().add(c + 8));
            for i in 0..N {
                let p = rows[i].as_ptr().add(c);
                acc0[i] = _mm256_fmadd_ps(_mm256_loadu_ps(p), k0, acc0[i]);
                acc1[i] = _mm256_fmadd_ps(_mm256_loadu_ps(p.add(8)), k1, acc1[i]);
            }
        }
        c += 16;
    }
    let mut out = [0.0; N];
    for i in 0..N {
        // SAFETY: AVX2 is enabled on this function.
        let mut s = unsafe { hsum(_mm256_add_ps(acc0[i], acc1[i])) };
        for j in body..d {
            s += rows[i][j] * k[j];
        }
        out[i] = s;
    }
    out
}

/// `acc += Σⱼ p[j] · rows[j]`, where every row has `acc.len()` elements.
pub(crate) fn accumulate_rows(acc: &mut [f32], p: &[f32], rows: &[&[f32]]) {
    debug_assert_eq!(p.len(), rows.len());
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: AVX2+FMA were detected at run time.
        return unsafe { accumulate_rows_avx2(acc, p, rows) };
    }
    for (&pj, row) in p.iter().zip(rows) {
        for (a, &v) in acc.iter_mut().zip(row.iter()) {
            *a += pj * v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn accumulate_rows_avx2(acc: &mut [f32], p: &[f32], rows: &[&[f32]]) {
    let d = acc.len();
    for r in rows {
        assert_eq!(r.len(), d, "accumulate_rows rows must match acc");
    }
    let n = p.len().min(rows.len());
    // Columns in strips of 32 (four registers held across all rows), then 8, then scalars.
    let mut c = 0;
    while c + 32 <= d {
        // SAFETY: c + 32 ≤ d and every row has d elements.
        unsafe {
            let a = acc.as_mut_ptr().add(c);
            let mut a0 = _mm256_loadu_ps(a);
            let mut a1 = _mm256_loadu_ps(a.add(8));
            let mut a2 = _mm256_loadu_ps(a.add(16));
            let mut a3 = _mm256_loadu_ps(a.add(24));
            for j in 0..n {
                let w = _mm256_set1_ps(p[j]);
                let v = rows[j].as_ptr().add(c);
                a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v), a0);
                a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v.add(8)), a1);
                a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v.add(16)), a2);
                a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(v.add(24)), a3);
            }
            _mm256_storeu_ps(a, a0);
            _mm256_storeu_ps(a.add(8), a1);
            _mm256_storeu_ps(a.add(16), a2);
            _mm256_storeu_ps(a.add(24), a3);
        }
        c += 32;
    }
    while c + 8 <= d {
        // SAFETY: c + 8 ≤ d and every row has d elements.
        unsafe {
            let a = acc.as_mut_ptr().add(c);
            let mut a0 = _mm256_loadu_ps(a);
            for j in 0..n {
                a0 = _mm256_fmadd_ps(
                    _mm256_set1_ps(p[j]),
                    _mm256_loadu_ps(rows[j].as_ptr().add(c)),
                    a0,
                );
            }
            _mm256_storeu_ps(a, a0);
        }
        c += 8;
    }
    for col in c..d {
        for j in 0..n {
            acc[col] += p[j] * rows[j][col];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented bound: relative error below 4e-7 against `f32::exp` on [-87, 88].
    #[test]
    fn fast_exp_relative_error_is_below_4e_7() {
        if !use_avx2() {
            return;
        }
        let n = 2_000_000;
        let mut worst = 0.0f64;
        let mut xs: Vec<f32> = (0..n).map(|i| -87.0 + 175.0 * i as f32 / n as f32).collect();
        xs.extend([0.0, -0.0, 1e-8, -1e-8, 0.5, -0.5, 88.0, -87.0]);
        let mut ys = xs.clone();
        // exp(x − 0) through the public-to-the-crate entry point.
        exp_sub_sum(&mut ys, 0.0);
        for (&x, &y) in xs.iter().zip(&ys) {
            let want = (x as f64).exp();
            worst = worst.max(((y as f64 - want) / want).abs());
        }
        assert!(worst < 4e-7, "worst relative error {worst:e}");
    }

    #[test]
    fn fast_exp_edges() {
        if !use_avx2() {
            return;
        }
        let mut ys = [-100.0f32, 100.0, f32::NAN, f32::NEG_INFINITY, 0.0, 0.0, 0.0, 0.0];
        exp_sub_sum(&mut ys, 0.0);
        assert_eq!(ys[0], 0.0);
        assert!(ys[1].is_finite() && ys[1] > 3e38);
        assert!(ys[2].is_nan());
        assert_eq!(ys[3], 0.0);
        assert_eq!(ys[4], 1.0);
    }
}
