//! Elementwise and reduction ops: RMSNorm, RoPE, SiLU·mul, softmax, top-k.
//!
//! Each op has a `*_reference` twin: the plainest correct code, computing in f64 where that
//! removes doubt, used as the oracle in tests. The fast versions pick an AVX2+FMA path at run
//! time ([`crate::isa::Isa::detect`]) and fall back to portable loops.
//!
//! Shape mistakes (a buffer of the wrong length) return [`KernelError::Shape`]; nothing here
//! panics on bad input.

pub(crate) mod simd;

use crate::error::KernelError;
#[cfg(target_arch = "x86_64")]
use simd::use_avx2;
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

fn shape_err(kernel: &'static str, detail: String) -> Result<(), KernelError> {
    Err(KernelError::shape(kernel, detail))
}

/// Checks that `len` is a whole number of rows of `d` (with `d > 0`) and returns the row count.
fn rows_of(kernel: &'static str, what: &str, len: usize, d: usize) -> Result<usize, KernelError> {
    if d == 0 || !len.is_multiple_of(d) {
        return Err(KernelError::shape(
            kernel,
            format!("{what} has {len} elements, not a whole number of rows of {d}"),
        ));
    }
    Ok(len / d)
}

// ---------------------------------------------------------------------------------------------
// RMSNorm
// ---------------------------------------------------------------------------------------------

fn check_rms_norm(x: &[f32], weight: &[f32], out: &[f32]) -> Result<(), KernelError> {
    rows_of("rms_norm", "x", x.len(), weight.len())?;
    if out.len() != x.len() {
        return shape_err(
            "rms_norm",
            format!("out has {} elements but x has {}", out.len(), x.len()),
        );
    }
    Ok(())
}

/// Oracle for [`rms_norm`]: `out = x / sqrt(mean(x²) + eps) · weight` per row, in f64.
pub fn rms_norm_reference(
    x: &[f32],
    weight: &[f32],
    eps: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_rms_norm(x, weight, out)?;
    let d = weight.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let mean_sq = xr.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / d as f64;
        let inv = 1.0 / (mean_sq + eps as f64).sqrt();
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = (v as f64 * inv * w as f64) as f32;
        }
    }
    Ok(())
}

/// RMSNorm over rows of `d = weight.len()`: `out[r] = x[r] / sqrt(mean(x[r]²) + eps) · weight`.
///
/// `x` and `out` are `[rows, d]`. The sum of squares accumulates in f32 lanes.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) -> Result<(), KernelError> {
    check_rms_norm(x, weight, out)?;
    let d = weight.len();
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        #[cfg(target_arch = "x86_64")]
        if use_avx2() {
            // SAFETY: AVX2+FMA were detected at run time; all three slices have d elements.
            unsafe { rms_norm_row_avx2(xr, weight, eps, or) };
            continue;
        }
        let sum_sq: f32 = xr.iter().map(|v| v * v).sum();
        let inv = 1.0 / (sum_sq / d as f32 + eps).sqrt();
        for ((o, &v), &w) in or.iter_mut().zip(xr).zip(weight) {
            *o = v * inv * w;
        }
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn rms_norm_row_avx2(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = x.len();
    assert!(w.len() == d && out.len() == d);
    let body = d - d % 8;
    let mut acc = _mm256_setzero_ps();
    for c in (0..body).step_by(8) {
        // SAFETY: c + 8 ≤ d.
        let v = unsafe { _mm256_loadu_ps(x.as_ptr().add(c)) };
        acc = _mm256_fmadd_ps(v, v, acc);
    }
    // SAFETY: AVX2 is enabled on this function.
    let mut sum_sq = unsafe { simd::hsum(acc) };
    for &v in &x[body..] {
        sum_sq += v * v;
    }
    let inv = 1.0 / (sum_sq / d as f32 + eps).sqrt();
    let invv = _mm256_set1_ps(inv);
    for c in (0..body).step_by(8) {
        // SAFETY: c + 8 ≤ d for all three slices.
        unsafe {
            let v = _mm256_mul_ps(_mm256_loadu_ps(x.as_ptr().add(c)), invv);
            let r = _mm256_mul_ps(v, _mm256_loadu_ps(w.as_ptr().add(c)));
            _mm256_storeu_ps(out.as_mut_ptr().add(c), r);
        }
    }
    for c in body..d {
        out[c] = x[c] * inv * w[c];
    }
}

// ---------------------------------------------------------------------------------------------
// RoPE
// ---------------------------------------------------------------------------------------------

fn check_rope(
    x: &[f32],
    positions: &[usize],
    heads: usize,
    head_dim: usize,
) -> Result<(), KernelError> {
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return shape_err("rope", format!("head_dim {head_dim} must be even and non-zero"));
    }
    let want = positions.len() * heads * head_dim;
    if x.len() != want {
        return shape_err(
            "rope",
            format!(
                "x has {} elements, expected tokens {} × heads {heads} × head_dim {head_dim} = {want}",
                x.len(),
                positions.len()
            ),
        );
    }
    Ok(())
}

/// Rotates one head vector in place: pairs `(i, i + half)` by the angle whose cosine and sine
/// are `cos[i]`, `sin[i]` ("rotate_half" / NeoX convention).
fn rotate_head(h: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    let (a, b) = h.split_at_mut(half);
    for i in 0..half {
        let (x0, x1) = (a[i], b[i]);
        a[i] = x0 * cos[i] - x1 * sin[i];
        b[i] = x1 * cos[i] + x0 * sin[i];
    }
}

/// Oracle for [`rope`]: every angle computed in f64 from scratch.
pub fn rope_reference(
    x: &mut [f32],
    positions: &[usize],
    heads: usize,
    head_dim: usize,
    theta: f32,
) -> Result<(), KernelError> {
    check_rope(x, positions, heads, head_dim)?;
    let half = head_dim / 2;
    for (t, &pos) in positions.iter().enumerate() {
        for h in 0..heads {
            let base = (t * heads + h) * head_dim;
            for i in 0..half {
                let inv_freq = (theta as f64).powf(-2.0 * i as f64 / head_dim as f64);
                let angle = pos as f64 * inv_freq;
                let (s, c) = angle.sin_cos();
                let x0 = x[base + i] as f64;
                let x1 = x[base + i + half] as f64;
                x[base + i] = (x0 * c - x1 * s) as f32;
                x[base + i + half] = (x1 * c + x0 * s) as f32;
            }
        }
    }
    Ok(())
}

/// Rotary position embedding in place, Hugging Face / Mixtral "rotate_half" convention.
///
/// `x` is `[tokens, heads, head_dim]`, `positions[t]` the position of token `t`. Dimension
/// `i < head_dim/2` pairs with `i + head_dim/2` and turns by `pos · theta^(−2i/head_dim)`.
/// Angles are computed in f64 once per token and shared by its heads; for many calls at
/// bounded positions, [`RopeTable`] precomputes them.
pub fn rope(
    x: &mut [f32],
    positions: &[usize],
    heads: usize,
    head_dim: usize,
    theta: f32,
) -> Result<(), KernelError> {
    check_rope(x, positions, heads, head_dim)?;
    let half = head_dim / 2;
    let inv_freq = inv_freqs(head_dim, theta);
    let mut cos = vec![0.0f32; half];
    let mut sin = vec![0.0f32; half];
    for (t, &pos) in positions.iter().enumerate() {
        for i in 0..half {
            let (s, c) = (pos as f64 * inv_freq[i]).sin_cos();
            cos[i] = c as f32;
            sin[i] = s as f32;
        }
        for h in x[t * heads * head_dim..(t + 1) * heads * head_dim].chunks_exact_mut(head_dim) {
            rotate_head(h, &cos, &sin);
        }
    }
    Ok(())
}

fn inv_freqs(head_dim: usize, theta: f32) -> Vec<f64> {
    (0..head_dim / 2).map(|i| (theta as f64).powf(-2.0 * i as f64 / head_dim as f64)).collect()
}

/// Precomputed RoPE cosines and sines for positions `0..max_pos` (angles computed in f64).
#[derive(Debug, Clone)]
pub struct RopeTable {
    head_dim: usize,
    max_pos: usize,
    /// `[max_pos, head_dim/2]`.
    cos: Vec<f32>,
    /// `[max_pos, head_dim/2]`.
    sin: Vec<f32>,
}

impl RopeTable {
    /// Builds the table; `head_dim` must be even and non-zero.
    pub fn new(head_dim: usize, theta: f32, max_pos: usize) -> Result<Self, KernelError> {
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(KernelError::shape(
                "rope",
                format!("head_dim {head_dim} must be even and non-zero"),
            ));
        }
        let half = head_dim / 2;
        let inv_freq = inv_freqs(head_dim, theta);
        let mut cos = Vec::with_capacity(max_pos * half);
        let mut sin = Vec::with_capacity(max_pos * half);
        for pos in 0..max_pos {
            for &f in &inv_freq {
                let (s, c) = (pos as f64 * f).sin_cos();
                cos.push(c as f32);
                sin.push(s as f32);
            }
        }
        Ok(Self { head_dim, max_pos, cos, sin })
    }

    /// The head dimension the table was built for.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Positions covered: `0..max_pos`.
    pub fn max_pos(&self) -> usize {
        self.max_pos
    }

    /// Applies RoPE in place, like [`rope`], reading angles from the table.
    pub fn apply(
        &self,
        x: &mut [f32],
        positions: &[usize],
        heads: usize,
    ) -> Result<(), KernelError> {
        check_rope(x, positions, heads, self.head_dim)?;
        if let Some(&p) = positions.iter().find(|&&p| p >= self.max_pos) {
            return shape_err(
                "rope",
                format!("position {p} is outside the table (max_pos {})", self.max_pos),
            );
        }
        let half = self.head_dim / 2;
        for (t, &pos) in positions.iter().enumerate() {
            let cos = &self.cos[pos * half..(pos + 1) * half];
            let sin = &self.sin[pos * half..(pos + 1) * half];
            let token = &mut x[t * heads * self.head_dim..(t + 1) * heads * self.head_dim];
            for h in token.chunks_exact_mut(self.head_dim) {
                rotate_head(h, cos, sin);
            }
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// SiLU · mul
// ---------------------------------------------------------------------------------------------

fn check_silu_mul(gate: &[f32], up: &[f32], out: &[f32]) -> Result<(), KernelError> {
    if gate.len() != up.len() || out.len() != gate.len() {
        return shape_err(
            "silu_mul",
            format!(
                "gate {}, up {} and out {} must have equal lengths",
                gate.len(),
                up.len(),
                out.len()
            ),
        );
    }
    Ok(())
}

/// Oracle for [`silu_mul`], in f64.
pub fn silu_mul_reference(gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    check_silu_mul(gate, up, out)?;
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        let g = g as f64;
        *o = (g / (1.0 + (-g).exp()) * u as f64) as f32;
    }
    Ok(())
}

/// The SwiGLU activation: `out = silu(gate) · up` with `silu(g) = g / (1 + e^(−g))`.
///
/// The AVX2 path uses the crate's fast vector exp (relative error < 4e-7 on [-87, 88]).
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    check_silu_mul(gate, up, out)?;
    #[cfg(target_arch = "x86_64")]
    if use_avx2() {
        // SAFETY: AVX2+FMA were detected at run time; lengths were checked equal.
        unsafe { silu_mul_avx2(gate, up, out) };
        return Ok(());
    }
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn silu_mul_avx2(gate: &[f32], up: &[f32], out: &mut [f32]) {
    let n = gate.len();
    assert!(up.len() == n && out.len() == n);
    let body = n - n % 8;
    let one = _mm256_set1_ps(1.0);
    for c in (0..body).step_by(8) {
        // SAFETY: c + 8 ≤ n for all three slices.
        unsafe {
            let g = _mm256_loadu_ps(gate.as_ptr().add(c));
            let u = _mm256_loadu_ps(up.as_ptr().add(c));
            let e = simd::exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), g));
            let s = _mm256_div_ps(g, _mm256_add_ps(one, e));
            _mm256_storeu_ps(out.as_mut_ptr().add(c), _mm256_mul_ps(s, u));
        }
    }
    for c in body..n {
        let g = gate[c];
        out[c] = g / (1.0 + (-g).exp()) * up[c];
    }
}

// ---------------------------------------------------------------------------------------------
// Softmax
// ---------------------------------------------------------------------------------------------

fn check_softmax(x: &[f32], n: usize) -> Result<(), KernelError> {
    rows_of("softmax", "x", x.len(), n).map(|_| ())
}

/// Oracle for [`softmax`], in f64.
pub fn softmax_reference(x: &mut [f32], n: usize) -> Result<(), KernelError> {
    check_softmax(x, n)?;
    for row in x.chunks_exact_mut(n) {
        let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let e: Vec<f64> = row.iter().map(|&v| (v as f64 - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        for (o, v) in row.iter_mut().zip(e) {
            *o = (v / sum) as f32;
        }
    }
    Ok(())
}

/// Numerically stable softmax in place over each row of `n` (`x` is `[rows, n]`).
///
/// Subtracts the row maximum before exponentiating, so large inputs do not overflow. A row of
/// all `-inf` has no defined softmax and becomes NaN. Uses the fast exp (relative error < 4e-7)
/// on AVX2.
pub fn softmax(x: &mut [f32], n: usize) -> Result<(), KernelError> {
    check_softmax(x, n)?;
    for row in x.chunks_exact_mut(n) {
        let m = simd::max(row);
        let sum = simd::exp_sub_sum(row, m);
        simd::scale(row, 1.0 / sum);
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Top-k
// ---------------------------------------------------------------------------------------------

/// The order top-k ranks by: larger value first, NaN after every number, ties by lower index.
fn ranks_before(a: (usize, f32), b: (usize, f32)) -> bool {
    match (a.1.is_nan(), b.1.is_nan()) {
        (false, true) => true,
        (true, false) => false,
        (true, true) => a.0 < b.0,
        (false, false) => a.1 > b.1 || (a.1 == b.1 && a.0 < b.0),
    }
}

fn rank_cmp(a: &(usize, f32), b: &(usize, f32)) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    if ranks_before(*a, *b) {
        Ordering::Less
    } else if ranks_before(*b, *a) {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

/// Oracle for [`top_k`]: sort everything, keep the first `k`.
pub fn top_k_reference(x: &[f32], k: usize) -> Vec<(usize, f32)> {
    let mut all: Vec<(usize, f32)> = x.iter().copied().enumerate().collect();
    all.sort_by(rank_cmp);
    all.truncate(k);
    all
}

/// The `k` largest values of `x` with their indices, sorted by value descending, ties broken
/// by the lower index. Returns `min(k, x.len())` entries.
///
/// NaN ranks below every number (including `-inf`), so it is chosen only when fewer than `k`
/// numbers exist; `-0.0` and `0.0` compare equal and tie by index. Small `k` (expert routing,
/// top-2 of 8) keeps a sorted insertion buffer, O(n·k); large `k` selects then sorts.
pub fn top_k(x: &[f32], k: usize) -> Vec<(usize, f32)> {
    let k = k.min(x.len());
    if k == 0 {
        return Vec::new();
    }
    if k <= 16 {
        let mut best: Vec<(usize, f32)> = Vec::with_capacity(k + 1);
        for cand in x.iter().copied().enumerate() {
            if best.len() == k && !ranks_before(cand, best[k - 1]) {
                continue;
            }
            let at = best.iter().position(|&b| ranks_before(cand, b)).unwrap_or(best.len());
            best.insert(at, cand);
            best.truncate(k);
        }
        return best;
    }
    let mut all: Vec<(usize, f32)> = x.iter().copied().enumerate().collect();
    all.select_nth_unstable_by(k - 1, rank_cmp);
    all.truncate(k);
    all.sort_unstable_by(rank_cmp);
    all
}
