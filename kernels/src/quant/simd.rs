//! AVX2 (+ FMA, optionally AVX-VNNI) kernels for one weight row against a few activation rows.
//!
//! Every 32-weight chunk is decoded to 32 signed bytes in one register: int8 quants are loaded
//! as they are; int4 chunks are 16 bytes whose low nibbles are weights 0..16 and high nibbles
//! weights 16..32, so `(v, v >> 4) & 0x0F` in the two 128-bit lanes gives the 32 weights in
//! order, minus 8.
//!
//! Int8 activations use the sign trick: `vpmaddubsw` multiplies unsigned by signed bytes, so it
//! gets `|w|` and `x · sign(w)`; pairs of products are at most `2 · 127 · 127 < 2^15`, so the
//! 16-bit sums never saturate. `vpmaddwd` with ones widens to eight i32 partial sums, which
//! are exact in `f32` (`|sum| ≤ 32 · 127² < 2^24`) and scaled by `scale_w · scale_x`.
//! Int4 weights skip the sign trick: the stored nibbles `q + 8` (1..=15) are the unsigned
//! operand as they are, and the row's result is corrected by `Σ_g scale_g · 8 · Σ x` per group,
//! precomputed once per call ([`super::act::QuantizedActs::with_nibble_correction`]).

use super::{Acts, BLOCK, QView};
use half::f16;
use std::arch::x86_64::*;

/// Widens a row's `f16` scales to `f32`, eight at a time with F16C.
///
/// Must only be called on the AVX2 path, which also requires F16C (see `choose_path`).
pub(super) fn scales_to_f32(src: &[f16], dst: &mut [f32]) {
    debug_assert_eq!(src.len(), dst.len());
    #[target_feature(enable = "avx2,f16c")]
    fn convert(src: &[f16], dst: &mut [f32]) {
        let mut s8 = src.chunks_exact(8);
        let mut d8 = dst.chunks_exact_mut(8);
        for (s, d) in (&mut s8).zip(&mut d8) {
            // SAFETY: `s` has 8 `f16` (16 bytes) to read and `d` 8 `f32` to write.
            unsafe {
                let v = _mm_loadu_si128(s.as_ptr().cast());
                _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(v));
            }
        }
        for (s, d) in s8.remainder().iter().zip(d8.into_remainder()) {
            *d = s.to_f32();
        }
    }
    // SAFETY: the AVX2 path is only chosen when AVX2 and F16C were detected.
    unsafe { convert(src, dst) }
}

/// Activation rows handled per call of the int8-activation micro-kernel.
const MAX_M_INT8: usize = 4;
/// Activation rows handled per call of the f32-activation micro-kernel.
const MAX_M_F32: usize = 4;

/// `dst[i] = dot(weight row, activation row r0 + i)` for every `i`.
///
/// Must only be called when [`crate::isa::Isa::detect`] reports AVX2 (which includes FMA),
/// and with `vnni` only when AVX-VNNI is present.
pub(super) fn row(
    view: QView,
    wrow: &[u8],
    wscale: &[f32],
    acts: &Acts,
    r0: usize,
    vnni: bool,
    dst: &mut [f32],
) {
    let k = view.cols;
    let shift = view.group_shift();
    debug_assert_eq!(wrow.len(), view.row_bytes());
    debug_assert!(wscale.len() >= k / view.group);
    match acts {
        Acts::Int8(qa) if view.q4 && !qa.pairs.is_empty() => {
            debug_assert!(wscale.len() >= k / view.group + 8);
            let groups = k / view.group;
            for (sub, d) in dst.chunks_mut(MAX_M_INT8).enumerate() {
                let r = r0 + sub * MAX_M_INT8;
                let pairs = &qa.pairs[r..r + d.len()];
                let xc = qa.nibble_corr[r * groups..(r + d.len()) * groups].as_ptr();
                let a = RowsQ4 { w: wrow.as_ptr(), ws: wscale.as_ptr(), shift, xc, k };
                // SAFETY: the caller guarantees AVX2+FMA (and AVX-VNNI when `vnni`); `wrow` is
                // one int4 row of `k / 2` bytes with `k % 256 == 0` (pairs exist only then),
                // `wscale` holds its scales plus 8 readable floats, `pairs`/`xc` cover
                // `d.len()` activation rows, `d` has `d.len()` slots.
                unsafe { rows_q4_dispatch(vnni, d.len(), &a, pairs, d.as_mut_ptr()) };
            }
        }
        Acts::Int8(qa) => {
            for (sub, d) in dst.chunks_mut(MAX_M_INT8).enumerate() {
                let r = r0 + sub * MAX_M_INT8;
                let xq = &qa.q[r * k..(r + d.len()) * k];
                let xs = &qa.scales[r * qa.chunks()..(r + d.len()) * qa.chunks()];
                let args = Int8Args {
                    w: wrow.as_ptr(),
                    ws: wscale.as_ptr(),
                    shift,
                    x: xq.as_ptr(),
                    xs: xs.as_ptr(),
                    xc: if view.q4 {
                        let g = k / view.group;
                        qa.nibble_corr[r * g..(r + d.len()) * g].as_ptr()
                    } else {
                        std::ptr::null()
                    },
                    k,
                };
                // SAFETY: the caller guarantees AVX2+FMA (and AVX-VNNI when `vnni`); `wrow` is
                // one full weight row (`k` or `k / 2` bytes), `wscale` has one scale per group,
                // `xq`/`xs` cover `d.len()` activation rows, and `d` has `d.len()` slots.
                unsafe { int8_dispatch(view.q4, vnni, d.len(), &args, d.as_mut_ptr()) };
            }
        }
        Acts::F32(x) => {
            for (sub, d) in dst.chunks_mut(MAX_M_F32).enumerate() {
                let r = r0 + sub * MAX_M_F32;
                let xr = &x[r * k..(r + d.len()) * k];
                let (w, ws, xp, out) =
                    (wrow.as_ptr(), wscale.as_ptr(), xr.as_ptr(), d.as_mut_ptr());
                // SAFETY: as above; `xr` covers `d.len()` rows of `k` floats.
                unsafe {
                    match (view.q4, d.len()) {
                        (false, 1) => f32_kernel::<false, 1>(w, ws, shift, xp, k, out),
                        (false, 2) => f32_kernel::<false, 2>(w, ws, shift, xp, k, out),
                        (false, 3) => f32_kernel::<false, 3>(w, ws, shift, xp, k, out),
                        (false, _) => f32_kernel::<false, 4>(w, ws, shift, xp, k, out),
                        (true, 1) => f32_kernel::<true, 1>(w, ws, shift, xp, k, out),
                        (true, 2) => f32_kernel::<true, 2>(w, ws, shift, xp, k, out),
                        (true, 3) => f32_kernel::<true, 3>(w, ws, shift, xp, k, out),
                        (true, _) => f32_kernel::<true, 4>(w, ws, shift, xp, k, out),
                    }
                }
            }
        }
    }
}

/// Pointers shared by the int8-activation kernels.
struct Int8Args {
    /// The weight row's quants.
    w: *const u8,
    /// The weight row's scales as `f32`, one per group.
    ws: *const f32,
    /// log2 of 32-element chunks per weight group.
    shift: u32,
    /// Activation quants, `M` rows of `k`.
    x: *const i8,
    /// Activation scales, `M` rows of `k / 32`.
    xs: *const f32,
    /// Int4 only: `M` rows of `k / group` nibble corrections (see `QuantizedActs`).
    xc: *const f32,
    /// Row length.
    k: usize,
}

/// Picks the monomorphized int8-activation kernel.
///
/// # Safety
/// AVX2+FMA must be available (and AVX-VNNI when `vnni`); pointers as in [`Int8Args`] for `m`
/// rows; `out` has `m` slots; `1 <= m <= MAX_M_INT8`.
unsafe fn int8_dispatch(q4: bool, vnni: bool, m: usize, a: &Int8Args, out: *mut f32) {
    macro_rules! pick {
        ($kernel:ident) => {
            // SAFETY: forwarded from this function's contract.
            unsafe {
                match (q4, m) {
                    (false, 1) => $kernel::<false, 1>(a, out),
                    (false, 2) => $kernel::<false, 2>(a, out),
                    (false, 3) => $kernel::<false, 3>(a, out),
                    (false, _) => $kernel::<false, 4>(a, out),
                    (true, 1) => $kernel::<true, 1>(a, out),
                    (true, 2) => $kernel::<true, 2>(a, out),
                    (true, 3) => $kernel::<true, 3>(a, out),
                    (true, _) => $kernel::<true, 4>(a, out),
                }
            }
        };
    }
    if vnni { pick!(int8_kernel_vnni) } else { pick!(int8_kernel_avx2) }
}

/// Loads chunk `c` of a weight row as 32 signed bytes.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load_chunk<const Q4: bool>(w: *const u8, c: usize) -> __m256i {
    // SAFETY: the caller guarantees chunk `c` lies within the row.
    unsafe {
        if Q4 {
            let v = _mm_loadu_si128(w.add(c * BLOCK / 2).cast());
            let both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
            let nibbles = _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
            _mm256_sub_epi8(nibbles, _mm256_set1_epi8(8))
        } else {
            _mm256_loadu_si256(w.add(c * BLOCK).cast())
        }
    }
}

/// The two operands of the sign trick for chunk `c`: the unsigned one and the one whose signs
/// go onto `x`. Int4 skips the trick: the nibbles `q + 8` are already unsigned and multiply `x`
/// directly, and the kernel subtracts `8 · Σx` per chunk afterwards (the same for every
/// weight row, so it is precomputed once per call).
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn operands<const Q4: bool>(w: *const u8, c: usize) -> (__m256i, __m256i) {
    // SAFETY: the caller guarantees chunk `c` lies within the row.
    unsafe {
        if Q4 {
            let v = _mm_loadu_si128(w.add(c * BLOCK / 2).cast());
            let both = _mm256_set_m128i(_mm_srli_epi16(v, 4), v);
            let nibbles = _mm256_and_si256(both, _mm256_set1_epi8(0x0F));
            (nibbles, nibbles)
        } else {
            let q = _mm256_loadu_si256(w.add(c * BLOCK).cast());
            (_mm256_abs_epi8(q), q)
        }
    }
}

/// `x` with the signs of `w` applied (int8), or `x` itself (int4 nibbles, see [`operands`]).
#[target_feature(enable = "avx2")]
#[inline]
fn signed_x<const Q4: bool>(x: __m256i, w: __m256i) -> __m256i {
    if Q4 { x } else { _mm256_sign_epi8(x, w) }
}

/// `Σ_g a[g] · b[g]` over `len` floats.
///
/// # Safety
/// AVX2+FMA; `len` readable floats at `a` and `b`.
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn dot_f32(a: *const f32, b: *const f32, len: usize) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut i = 0;
    // SAFETY: `i + 8 <= len` and `i < len` keep every read in bounds (contract).
    unsafe {
        while i + 8 <= len {
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(a.add(i)), _mm256_loadu_ps(b.add(i)), acc);
            i += 8;
        }
        let mut total = hsum(acc);
        while i < len {
            total += *a.add(i) * *b.add(i);
            i += 1;
        }
        total
    }
}

/// Horizontal sum of eight floats.
#[target_feature(enable = "avx2")]
#[inline]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Eight i32 partial dot products of `|w|` (unsigned) and `x · sign(w)` (signed): AVX2.
#[target_feature(enable = "avx2")]
#[inline]
fn dot_maddubs(abs_w: __m256i, signed_x: __m256i) -> __m256i {
    _mm256_madd_epi16(_mm256_maddubs_epi16(abs_w, signed_x), _mm256_set1_epi16(1))
}

/// The same with AVX-VNNI `vpdpbusd` (one instruction, no 16-bit intermediate).
#[target_feature(enable = "avx2,avxvnni")]
#[inline]
fn dot_vnni(abs_w: __m256i, signed_x: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), abs_w, signed_x)
}

/// Defines an int8-activation micro-kernel: one weight row against `M` activation rows, two
/// chunks per step into two accumulator sets (to hide FMA latency when `M` is small).
macro_rules! int8_kernel {
    ($name:ident, $features:literal, $dot:ident) => {
        /// `out[r] = Σ_c (w_c · x_rc) · scale_w · scale_x` for `r < M`.
        ///
        /// # Safety
        /// CPU features as enabled below; pointers as in [`Int8Args`] for `M` rows.
        #[target_feature(enable = $features)]
        unsafe fn $name<const Q4: bool, const M: usize>(a: &Int8Args, out: *mut f32) {
            let chunks = a.k / BLOCK;
            let mut acc0 = [_mm256_setzero_ps(); M];
            let mut acc1 = [_mm256_setzero_ps(); M];
            // SAFETY: every pointer offset below stays within the row / `M` rows (contract).
            unsafe {
                let mut c = 0;
                while c + 2 <= chunks {
                    let (aw0, w0) = operands::<Q4>(a.w, c);
                    let (aw1, w1) = operands::<Q4>(a.w, c + 1);
                    let s0 = *a.ws.add(c >> a.shift);
                    let s1 = *a.ws.add((c + 1) >> a.shift);
                    for r in 0..M {
                        let xr = a.x.add(r * a.k + c * BLOCK);
                        let xs = a.xs.add(r * chunks + c);
                        let x0 = _mm256_loadu_si256(xr.cast());
                        let x1 = _mm256_loadu_si256(xr.add(BLOCK).cast());
                        let p0 = _mm256_cvtepi32_ps($dot(aw0, signed_x::<Q4>(x0, w0)));
                        let p1 = _mm256_cvtepi32_ps($dot(aw1, signed_x::<Q4>(x1, w1)));
                        acc0[r] = _mm256_fmadd_ps(p0, _mm256_set1_ps(s0 * *xs), acc0[r]);
                        acc1[r] = _mm256_fmadd_ps(p1, _mm256_set1_ps(s1 * *xs.add(1)), acc1[r]);
                    }
                    c += 2;
                }
                if c < chunks {
                    let (aw0, w0) = operands::<Q4>(a.w, c);
                    let s0 = *a.ws.add(c >> a.shift);
                    for r in 0..M {
                        let x0 = _mm256_loadu_si256(a.x.add(r * a.k + c * BLOCK).cast());
                        let p0 = _mm256_cvtepi32_ps($dot(aw0, signed_x::<Q4>(x0, w0)));
                        let d = s0 * *a.xs.add(r * chunks + c);
                        acc0[r] = _mm256_fmadd_ps(p0, _mm256_set1_ps(d), acc0[r]);
                    }
                }
                let groups = chunks >> a.shift;
                for r in 0..M {
                    let mut total = hsum(_mm256_add_ps(acc0[r], acc1[r]));
                    if Q4 {
                        total -= dot_f32(a.ws, a.xc.add(r * groups), groups);
                    }
                    *out.add(r) = total;
                }
            }
        }
    };
}

int8_kernel!(int8_kernel_avx2, "avx2,fma", dot_maddubs);
int8_kernel!(int8_kernel_vnni, "avx2,fma,avxvnni", dot_vnni);

/// f32-activation micro-kernel: dequantize each chunk to 4 × 8 floats, dot them with `M`
/// activation rows (one product chain per chunk, independent across chunks), and add the
/// chunk's sum times its scale into one accumulator per row.
///
/// # Safety
/// AVX2+FMA; `w` one weight row, `ws` its `f32` scales, `x` `M` rows of `k` floats, `out` `M`
/// slots.
#[target_feature(enable = "avx2,fma")]
unsafe fn f32_kernel<const Q4: bool, const M: usize>(
    w: *const u8,
    ws: *const f32,
    shift: u32,
    x: *const f32,
    k: usize,
    out: *mut f32,
) {
    let chunks = k / BLOCK;
    let mut acc = [_mm256_setzero_ps(); M];
    // SAFETY: offsets stay within the row and the `M` activation rows (contract).
    unsafe {
        for c in 0..chunks {
            let q = load_chunk::<Q4>(w, c);
            let s = _mm256_set1_ps(*ws.add(c >> shift));
            let lo = _mm256_castsi256_si128(q);
            let hi = _mm256_extracti128_si256(q, 1);
            let w0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
            let w1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
            let w2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
            let w3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let xr = x.add(r * k + c * BLOCK);
                let mut t = _mm256_mul_ps(w0, _mm256_loadu_ps(xr));
                t = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xr.add(8)), t);
                t = _mm256_fmadd_ps(w2, _mm256_loadu_ps(xr.add(16)), t);
                t = _mm256_fmadd_ps(w3, _mm256_loadu_ps(xr.add(24)), t);
                *acc_r = _mm256_fmadd_ps(t, s, *acc_r);
            }
        }
        for (r, acc_r) in acc.iter().enumerate() {
            *out.add(r) = hsum(*acc_r);
        }
    }
}

/// Weight rows handled together by the one-activation-row (GEMV) kernel: each activation
/// chunk is loaded once for all of them, and the rows are independent memory streams.
pub(super) const GEMV_ROWS: usize = 4;

/// Pointers for [`gemv_dispatch`]: `GEMV_ROWS` consecutive weight rows against one activation
/// row.
pub(super) struct GemvArgs {
    /// The first weight row's quants; row `r` starts `r * row_bytes` later.
    pub w: *const u8,
    /// Bytes per weight row.
    pub row_bytes: usize,
    /// `GEMV_ROWS` rows of `k / group` weight scales as `f32`, back to back (generic kernel).
    pub ws: *const f32,
    /// The same scales as stored (`f16` bits), followed by at least 8 readable values (the
    /// int4 pair kernel).
    pub ws16: *const u16,
    /// log2 of 32-element chunks per weight group.
    pub shift: u32,
    /// The activation row's quants (`k`).
    pub x: *const i8,
    /// Its scales (`k / 32`).
    pub xs: *const f32,
    /// Int4 only: its `k / group` nibble corrections (the chunk-pair kernel subtracts
    /// [`super::act::ChunkPairs::offsets`] per step instead).
    pub xc: *const f32,
    /// Row length.
    pub k: usize,
}

/// `out[r] = dot(weight row r, x)` for `r < GEMV_ROWS`.
///
/// # Safety
/// AVX2+FMA (and AVX-VNNI when `vnni`); pointers as in [`GemvArgs`]; `out` has `GEMV_ROWS`
/// slots.
pub(super) unsafe fn gemv_dispatch(q4: bool, vnni: bool, a: &GemvArgs, out: *mut f32) {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        match (q4, vnni) {
            (false, false) => gemv_kernel_avx2::<false>(a, out),
            (true, false) => gemv_kernel_avx2::<true>(a, out),
            (false, true) => gemv_kernel_vnni::<false>(a, out),
            (true, true) => gemv_kernel_vnni::<true>(a, out),
        }
    }
}

/// Defines the GEMV micro-kernel: `GEMV_ROWS` weight rows, one int8 activation row.
macro_rules! gemv_kernel {
    ($name:ident, $features:literal, $dot:ident) => {
        /// See [`gemv_dispatch`].
        ///
        /// # Safety
        /// CPU features as enabled below; pointers as in [`GemvArgs`].
        #[target_feature(enable = $features)]
        unsafe fn $name<const Q4: bool>(a: &GemvArgs, out: *mut f32) {
            const R: usize = GEMV_ROWS;
            let chunks = a.k / BLOCK;
            let groups = chunks >> a.shift;
            let mut acc = [_mm256_setzero_ps(); R];
            // SAFETY: every offset stays within the `R` rows and the activation row.
            unsafe {
                for c in 0..chunks {
                    let x = _mm256_loadu_si256(a.x.add(c * BLOCK).cast());
                    let xs = *a.xs.add(c);
                    let g = c >> a.shift;
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let (aw, w) = operands::<Q4>(a.w.add(r * a.row_bytes), c);
                        let p = _mm256_cvtepi32_ps($dot(aw, signed_x::<Q4>(x, w)));
                        let d = *a.ws.add(r * groups + g) * xs;
                        *acc_r = _mm256_fmadd_ps(p, _mm256_set1_ps(d), *acc_r);
                    }
                }
                for (r, acc_r) in acc.iter().enumerate() {
                    let mut total = hsum(*acc_r);
                    if Q4 {
                        total -= dot_f32(a.ws.add(r * groups), a.xc, groups);
                    }
                    *out.add(r) = total;
                }
            }
        }
    };
}

gemv_kernel!(gemv_kernel_avx2, "avx2,fma", dot_maddubs);
gemv_kernel!(gemv_kernel_vnni, "avx2,fma,avxvnni", dot_vnni);

/// Two chunks of int4 nibbles against the matching pair-interleaved activations: eight i32
/// partial sums, lanes 0..4 from the first chunk and 4..8 from the second (AVX2). Each
/// `vpmaddubsw` pair sum is at most `2 · 15 · 127`, so adding the two stays within i16.
#[target_feature(enable = "avx2")]
#[inline]
fn dot_pair_maddubs(lo: __m256i, xa: __m256i, hi: __m256i, xb: __m256i) -> __m256i {
    let s = _mm256_add_epi16(_mm256_maddubs_epi16(lo, xa), _mm256_maddubs_epi16(hi, xb));
    _mm256_madd_epi16(s, _mm256_set1_epi16(1))
}

/// The same with AVX-VNNI: two chained `vpdpbusd`.
#[target_feature(enable = "avx2,avxvnni")]
#[inline]
fn dot_pair_vnni(lo: __m256i, xa: __m256i, hi: __m256i, xb: __m256i) -> __m256i {
    _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), lo, xa), hi, xb)
}

/// `out[r] = dot(int4 weight row r, x)` for `r < GEMV_ROWS`, eight chunks per step.
///
/// 32 bytes of nibbles hold chunks `c` and `c + 1`; masking gives the low nibbles (weights
/// 0..16 of each chunk, one chunk per 128-bit lane) and shifting the high ones (16..32).
/// Rather than reassemble the weights, the activations come pre-arranged to match
/// ([`super::act::ChunkPairs`]). Four such pairs give four vectors of per-chunk partial sums
/// that three `vphaddd` fold into one vector of eight chunk sums (lane order
/// [`PAIR_LANE_CHUNKS`]), so the float work (convert, scale, accumulate) happens once per
/// eight chunks instead of once per chunk.
///
/// # Safety
/// AVX2+FMA (and AVX-VNNI when `vnni`); pointers as in [`GemvArgs`] with `a.k % 256 == 0`,
/// and at least 8 readable `f16` scales from any group's (`a.ws16`, see `SCALE_PAD`); `pairs` holds the
/// same activation row arranged as [`super::act::ChunkPairs`]; `out` has `GEMV_ROWS` slots.
pub(super) unsafe fn gemv_q4_dispatch(
    vnni: bool,
    a: &GemvArgs,
    pairs: &super::act::ChunkPairs,
    out: *mut f32,
) {
    // SAFETY: forwarded from this function's contract.
    unsafe { if vnni { gemv_q4_vnni(a, pairs, out) } else { gemv_q4_avx2(a, pairs, out) } }
}

/// How many weight rows ahead the int4 GEMV kernel prefetches.
const PREFETCH_ROWS: usize = 8;

/// Chunk (of the eight in a step) whose sum lands in each lane after the `vphaddd` fold.
pub(super) const PAIR_LANE_CHUNKS: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];

/// The low and high nibbles of one eight-chunk step (four 32-byte pairs) at `w`: pair `p`'s
/// low nibbles hold weights 0..16 of chunks `2p` (lane 0) and `2p + 1` (lane 1), its high
/// nibbles weights 16..32.
///
/// # Safety
/// AVX2; 128 readable bytes at `w`.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn unpack_step(w: *const u8, mask: __m256i) -> ([__m256i; 4], [__m256i; 4]) {
    let mut lo = [_mm256_setzero_si256(); 4];
    let mut hi = [_mm256_setzero_si256(); 4];
    for p in 0..4 {
        // SAFETY: `32 * p + 32 <= 128` bytes (contract).
        let v = unsafe { _mm256_loadu_si256(w.add(32 * p).cast()) };
        lo[p] = _mm256_and_si256(v, mask);
        hi[p] = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
    }
    (lo, hi)
}

/// The eight chunk sums of one step, in [`PAIR_LANE_CHUNKS`] lane order: each pair's two dot
/// products against the pair-interleaved activations at `$xq` (256 bytes), folded by three
/// `vphaddd`. A macro because `$dot2` differs between the AVX2 and AVX-VNNI kernels; expands
/// inside their `unsafe` blocks.
macro_rules! fold_step {
    ($dot2:ident, $lo:expr, $hi:expr, $xq:expr) => {{
        let mut d = [_mm256_setzero_si256(); 4];
        for (p, d_p) in d.iter_mut().enumerate() {
            let xa = _mm256_loadu_si256($xq.add(64 * p).cast());
            let xb = _mm256_loadu_si256($xq.add(64 * p + 32).cast());
            *d_p = $dot2($lo[p], xa, $hi[p], xb);
        }
        _mm256_hadd_epi32(_mm256_hadd_epi32(d[0], d[1]), _mm256_hadd_epi32(d[2], d[3]))
    }};
}

/// Defines the chunk-pair int4 GEMV micro-kernel (see [`gemv_q4_dispatch`]).
macro_rules! gemv_q4_kernel {
    ($name:ident, $features:literal, $dot2:ident) => {
        /// See [`gemv_q4_dispatch`].
        ///
        /// # Safety
        /// As [`gemv_q4_dispatch`], with the CPU features enabled below.
        #[target_feature(enable = $features)]
        #[target_feature(enable = "f16c")]
        unsafe fn $name(a: &GemvArgs, pairs: &super::act::ChunkPairs, out: *mut f32) {
            const R: usize = GEMV_ROWS;
            let chunks = a.k / BLOCK;
            let groups = chunks >> a.shift;
            let mask = _mm256_set1_epi8(0x0F);
            // Lane i's weight scale, relative to the step's first group.
            let lane_group = PAIR_LANE_CHUNKS.map(|c| (c >> a.shift) as i32);
            // SAFETY: `lane_group` is eight i32s.
            let scale_idx = unsafe { _mm256_loadu_si256(lane_group.as_ptr().cast()) };
            let mut acc = [_mm256_setzero_ps(); R];
            // SAFETY: every offset stays within the `R` rows, the activation pairs and the
            // padded scales.
            unsafe {
                for step in 0..chunks / 8 {
                    let xq = pairs.q.as_ptr().add(256 * step);
                    let xs = _mm256_loadu_ps(pairs.scales.as_ptr().add(8 * step));
                    let offsets = _mm256_loadu_si256(pairs.offsets.as_ptr().add(8 * step).cast());
                    let g0 = (8 * step) >> a.shift;
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let w = a.w.add(r * a.row_bytes + 128 * step);
                        // Rows are short when k is small; fetch the same spot two row groups
                        // ahead so the next groups are in flight (never dereferenced).
                        let ahead = w.wrapping_add(PREFETCH_ROWS * a.row_bytes);
                        _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
                        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast());
                        let (lo, hi) = unpack_step(w, mask);
                        let sums = fold_step!($dot2, lo, hi, xq);
                        let ws16 = _mm_loadu_si128(a.ws16.add(r * groups + g0).cast());
                        let ws = _mm256_cvtph_ps(ws16);
                        let scale = _mm256_mul_ps(_mm256_permutevar8x32_ps(ws, scale_idx), xs);
                        let sums = _mm256_sub_epi32(sums, offsets);
                        *acc_r = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), scale, *acc_r);
                    }
                }
                for (r, acc_r) in acc.iter().enumerate() {
                    *out.add(r) = hsum(*acc_r);
                }
            }
        }
    };
}

gemv_q4_kernel!(gemv_q4_avx2, "avx2,fma", dot_pair_maddubs);
gemv_q4_kernel!(gemv_q4_vnni, "avx2,fma,avxvnni", dot_pair_vnni);

/// Pointers for [`rows_q4_dispatch`]: one int4 weight row against a few activation rows.
struct RowsQ4 {
    /// The weight row's nibbles (`k / 2` bytes).
    w: *const u8,
    /// Its scales as `f32`, with 8 readable floats past the last group.
    ws: *const f32,
    /// log2 of 32-element chunks per weight group.
    shift: u32,
    /// `M` rows of `k / group` nibble corrections.
    xc: *const f32,
    /// Row length, a multiple of 256.
    k: usize,
}

/// `out[r] = dot(weight row, activation row r)` for `r < m` (`1 <= m <= MAX_M_INT8`): the
/// batched counterpart of [`gemv_q4_dispatch`], decoding each 32-byte pair of chunks once for
/// all `m` rows.
///
/// # Safety
/// AVX2+FMA (and AVX-VNNI when `vnni`); pointers as in [`RowsQ4`]; `pairs` has `m` rows of
/// the same `k`; `out` has `m` slots.
unsafe fn rows_q4_dispatch(
    vnni: bool,
    m: usize,
    a: &RowsQ4,
    pairs: &[super::act::ChunkPairs],
    out: *mut f32,
) {
    macro_rules! pick {
        ($kernel:ident) => {
            // SAFETY: forwarded from this function's contract.
            unsafe {
                match m {
                    1 => $kernel::<1>(a, pairs, out),
                    2 => $kernel::<2>(a, pairs, out),
                    3 => $kernel::<3>(a, pairs, out),
                    _ => $kernel::<4>(a, pairs, out),
                }
            }
        };
    }
    if vnni { pick!(rows_q4_vnni) } else { pick!(rows_q4_avx2) }
}

/// Defines the batched chunk-pair int4 micro-kernel (see [`rows_q4_dispatch`]).
macro_rules! rows_q4_kernel {
    ($name:ident, $features:literal, $dot2:ident) => {
        /// See [`rows_q4_dispatch`].
        ///
        /// # Safety
        /// As [`rows_q4_dispatch`], with the CPU features enabled below.
        #[target_feature(enable = $features)]
        unsafe fn $name<const M: usize>(
            a: &RowsQ4,
            pairs: &[super::act::ChunkPairs],
            out: *mut f32,
        ) {
            let chunks = a.k / BLOCK;
            let groups = chunks >> a.shift;
            let mask = _mm256_set1_epi8(0x0F);
            let lane_group = PAIR_LANE_CHUNKS.map(|c| (c >> a.shift) as i32);
            // SAFETY: `lane_group` is eight i32s.
            let scale_idx = unsafe { _mm256_loadu_si256(lane_group.as_ptr().cast()) };
            let mut acc = [_mm256_setzero_ps(); M];
            // SAFETY: every offset stays within the weight row, its padded scales and the `M`
            // rows of pairs (contract).
            unsafe {
                for step in 0..chunks / 8 {
                    let w = a.w.add(128 * step);
                    let (lo, hi) = unpack_step(w, mask);
                    let ws = _mm256_loadu_ps(a.ws.add((8 * step) >> a.shift));
                    let ws = _mm256_permutevar8x32_ps(ws, scale_idx);
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let xq = pairs[r].q.as_ptr().add(256 * step);
                        let sums = fold_step!($dot2, lo, hi, xq);
                        let xs = _mm256_loadu_ps(pairs[r].scales.as_ptr().add(8 * step));
                        *acc_r = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(sums),
                            _mm256_mul_ps(ws, xs),
                            *acc_r,
                        );
                    }
                }
                for (r, acc_r) in acc.iter().enumerate() {
                    *out.add(r) = hsum(*acc_r) - dot_f32(a.ws, a.xc.add(r * groups), groups);
                }
            }
        }
    };
}

rows_q4_kernel!(rows_q4_avx2, "avx2,fma", dot_pair_maddubs);
rows_q4_kernel!(rows_q4_vnni, "avx2,fma,avxvnni", dot_pair_vnni);
