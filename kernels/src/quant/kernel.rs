//! The quantized matmul driver and its inner loops (scalar and AVX2).
//!
//! Blocking: weight rows are split into chunks small enough to stay in L2 (and many enough to
//! balance threads); each task walks its chunk once per tile of up to `row_tile` activation
//! rows, so a tile shares every weight chunk it loads. The inner loop, [`RowDot`], computes the
//! dot products of one weight row with the rows of one tile, one 32-weight chunk at a time.

use super::{ActivationMode, BLOCK, QuantParams};
use crate::isa::Isa;
use half::f16;
use rayon::prelude::*;

/// How a weight row's values are stored.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Format<'a> {
    /// `[rows, cols]` of `i8`.
    Int8 { quants: &'a [i8] },
    /// `[rows, cols / 2]` nibbles, 16 bytes per 32-weight chunk (see the module doc).
    Int4 { packed: &'a [u8] },
}

/// A borrowed quantized weight matrix.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Weights<'a> {
    pub rows: usize,
    pub cols: usize,
    pub format: Format<'a>,
    /// `[rows, cols / group]`.
    pub scales: &'a [f16],
    /// Weights per scale (a multiple of 32).
    pub group: usize,
}

impl<'a> Weights<'a> {
    fn row_bytes(&self) -> usize {
        match self.format {
            Format::Int8 { .. } => self.cols,
            Format::Int4 { .. } => self.cols / 2,
        }
    }

    fn row(&self, r: usize) -> Row<'a> {
        let data = match self.format {
            Format::Int8 { quants } => RowData::Int8(&quants[r * self.cols..(r + 1) * self.cols]),
            Format::Int4 { packed } => {
                let b = self.cols / 2;
                RowData::Int4(&packed[r * b..(r + 1) * b])
            }
        };
        let g = self.cols / self.group;
        Row { data, scales: &self.scales[r * g..(r + 1) * g] }
    }
}

#[derive(Clone, Copy)]
enum RowData<'a> {
    Int8(&'a [i8]),
    Int4(&'a [u8]),
}

#[derive(Clone, Copy)]
struct Row<'a> {
    data: RowData<'a>,
    scales: &'a [f16],
}

/// Activations quantized per block of 32: `[m, k]` values and `[m, k / 32]` scales.
struct QuantizedActs {
    values: Vec<i8>,
    scales: Vec<f32>,
}

fn quantize_acts(x: &[f32]) -> QuantizedActs {
    let mut values = vec![0i8; x.len()];
    let mut scales = Vec::with_capacity(x.len() / BLOCK);
    for (b, block) in x.chunks_exact(BLOCK).enumerate() {
        let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let s = amax / 127.0;
        let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
        for (q, &v) in values[b * BLOCK..(b + 1) * BLOCK].iter_mut().zip(block) {
            *q = (v * inv).round().clamp(-127.0, 127.0) as i8;
        }
        scales.push(s);
    }
    QuantizedActs { values, scales }
}

/// Activation rows of one tile, as the inner loop reads them.
#[derive(Clone, Copy)]
enum Tile<'a> {
    F32 { x: &'a [f32] },
    Int8 { values: &'a [i8], scales: &'a [f32] },
}

/// Bytes of weight rows one task keeps hot while it walks every activation tile.
const CHUNK_BYTES: usize = 256 << 10;

/// `y` shared across tasks that write disjoint elements.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: tasks write disjoint indices of one live `&mut [f32]` (each task owns a range of
// weight rows, hence distinct columns of `y`), and the scope ends before the borrow does.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// # Safety
    /// `i` is in bounds of the original slice and no other task writes it.
    unsafe fn write(&self, i: usize, v: f32) {
        // SAFETY: guaranteed by the caller.
        unsafe { *self.0.add(i) = v };
    }
}

/// `y = x · Wᵀ`; shapes and params already checked.
pub(crate) fn matmul(w: Weights, x: &[f32], m: usize, y: &mut [f32], params: &QuantParams) {
    let cols = w.cols;
    let acts = (params.activations.resolve() == ActivationMode::Int8).then(|| quantize_acts(x));
    let simd = avx2_available();
    drive(w.rows, m, w.row_bytes(), params.threads, params.row_tile, y, |r, t0, t1, dots| {
        let tile = match &acts {
            Some(a) => Tile::Int8 {
                values: &a.values[t0 * cols..t1 * cols],
                scales: &a.scales[t0 * cols / BLOCK..t1 * cols / BLOCK],
            },
            None => Tile::F32 { x: &x[t0 * cols..t1 * cols] },
        };
        let row = w.row(r);
        row_dot(simd, row.data, row.scales, w.group, cols, tile, dots);
    });
}

/// The blocking shared by every `y = x · Wᵀ` kernel over row-major weights: weight rows in
/// chunks of about [`CHUNK_BYTES`] (at least four tasks per thread), activation rows in tiles
/// of `row_tile`. `dot(r, t0, t1, dots)` fills `dots[i]` with row `t0 + i` of `x` dotted with
/// weight row `r`, for `i < t1 − t0 ≤ MAX_ROW_TILE`.
pub(crate) fn drive(
    rows: usize,
    m: usize,
    row_bytes: usize,
    threads: usize,
    row_tile: usize,
    y: &mut [f32],
    dot: impl Fn(usize, usize, usize, &mut [f32]) + Sync,
) {
    assert!(y.len() >= rows * m && (1..=super::MAX_ROW_TILE).contains(&row_tile));
    if rows == 0 || m == 0 {
        return;
    }
    let by_cache = (CHUNK_BYTES / row_bytes.max(1)).max(1);
    let chunk_rows = by_cache.min(rows.div_ceil(threads * 4)).max(1);
    let out = SharedOut(y.as_mut_ptr());
    crate::threads::run(threads, || {
        (0..rows.div_ceil(chunk_rows)).into_par_iter().for_each(|c| {
            let (r0, r1) = (c * chunk_rows, ((c + 1) * chunk_rows).min(rows));
            let mut dots = [0.0f32; super::MAX_ROW_TILE];
            for t0 in (0..m).step_by(row_tile) {
                let t1 = (t0 + row_tile).min(m);
                for r in r0..r1 {
                    let dots = &mut dots[..t1 - t0];
                    dot(r, t0, t1, dots);
                    for (i, &d) in dots.iter().enumerate() {
                        // SAFETY: t0 + i < m and r < rows index y's m × rows elements (checked
                        // above); only this task owns weight row r.
                        unsafe { out.write((t0 + i) * rows + r, d) };
                    }
                }
            }
        });
    });
}

fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        Isa::detect() >= Isa::Avx2 && std::arch::is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = Isa::detect();
        false
    }
}

/// Dot products of one weight row with each row of a tile (`dots.len()` rows).
fn row_dot(
    simd: bool,
    row: RowData,
    scales: &[f16],
    group: usize,
    cols: usize,
    tile: Tile,
    dots: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if simd {
        macro_rules! dispatch {
            ($($r:literal)*) => {
                match dots.len() {
                    $($r => {
                        // SAFETY: avx2, fma and f16c were detected at run time.
                        let d = unsafe { avx2::row_dot::<$r>(row, scales, group, cols, tile) };
                        dots.copy_from_slice(&d);
                        return;
                    })*
                    _ => unreachable!("row_tile is validated to 1..=8"),
                }
            };
        }
        dispatch!(1 2 3 4 5 6 7 8);
    }
    let _ = simd;
    scalar::row_dot(row, scales, group, cols, tile, dots);
}

/// Portable inner loops: the fallback, and the model the SIMD loops follow.
mod scalar {
    use super::{BLOCK, RowData, Tile};
    use half::f16;

    /// Weight `j` of 32-weight chunk `c`, as an integer.
    fn weight(row: RowData, c: usize, j: usize) -> i32 {
        match row {
            RowData::Int8(q) => q[c * BLOCK + j] as i32,
            RowData::Int4(p) => {
                let b = p[c * BLOCK / 2 + j % (BLOCK / 2)];
                let nib = if j < BLOCK / 2 { b & 0x0f } else { b >> 4 };
                nib as i32 - 8
            }
        }
    }

    pub(super) fn row_dot(
        row: RowData,
        scales: &[f16],
        group: usize,
        cols: usize,
        tile: Tile,
        dots: &mut [f32],
    ) {
        let chunks = cols / BLOCK;
        let mut w = [0i32; BLOCK];
        dots.fill(0.0);
        for c in 0..chunks {
            for (j, v) in w.iter_mut().enumerate() {
                *v = weight(row, c, j);
            }
            let ws = scales[c * BLOCK / group].to_f32();
            for (i, dot) in dots.iter_mut().enumerate() {
                let base = i * cols + c * BLOCK;
                *dot += match tile {
                    Tile::F32 { x } => {
                        let xs = &x[base..base + BLOCK];
                        w.iter().zip(xs).map(|(&a, &b)| a as f32 * b).sum::<f32>() * ws
                    }
                    Tile::Int8 { values, scales: xsc } => {
                        let xq = &values[base..base + BLOCK];
                        let sum: i32 = w.iter().zip(xq).map(|(&a, &b)| a * b as i32).sum();
                        sum as f32 * ws * xsc[i * chunks + c]
                    }
                };
            }
        }
    }
}

/// AVX2 + FMA inner loops: one 32-weight chunk is loaded (and for int4, unpacked) once into a
/// register and used against every activation row of the tile. Even and odd chunks feed two
/// sets of accumulators so that the FMA latency chain does not bound a one-row GEMV, and the
/// weight format and chunks-per-scale are compile-time constants so the hot loop has no
/// branches on them and no division.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BLOCK, RowData, Tile};
    use half::f16;
    use std::arch::x86_64::*;

    /// One `f16` scale as `f32`, by F16C.
    #[inline(always)]
    unsafe fn scale(s: f16) -> f32 {
        // SAFETY: register-only intrinsics; the caller enabled F16C.
        unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(s.to_bits() as i32))) }
    }

    /// 32 signed weights of chunk `c` of a row starting at `w`, in order.
    #[inline(always)]
    unsafe fn load_chunk<const INT4: bool>(w: *const u8, c: usize) -> __m256i {
        // SAFETY: the caller passes c < cols / 32, so each load stays inside the row.
        unsafe {
            if INT4 {
                let b = _mm_loadu_si128(w.add(c * BLOCK / 2) as *const __m128i);
                let mask = _mm_set1_epi8(0x0f);
                let lo = _mm_and_si128(b, mask);
                let hi = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
                _mm256_sub_epi8(_mm256_set_m128i(hi, lo), _mm256_set1_epi8(8))
            } else {
                _mm256_loadu_si256(w.add(c * BLOCK) as *const __m256i)
            }
        }
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        // SAFETY: register-only intrinsics; the caller enabled AVX.
        unsafe {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
            _mm_cvtss_f32(s)
        }
    }

    /// # Safety
    /// The CPU supports AVX2, FMA and F16C; `tile` holds `R` rows of `cols` activations (and
    /// `cols / 32` scales per row in int8 mode); `scales` holds `cols / group` row scales.
    pub(super) unsafe fn row_dot<const R: usize>(
        row: RowData,
        scales: &[f16],
        group: usize,
        cols: usize,
        tile: Tile,
    ) -> [f32; R] {
        // SAFETY: forwarded from the caller.
        unsafe {
            match (row, group / BLOCK) {
                (RowData::Int8(q), _) => {
                    chunks::<R, false, 1>(q.as_ptr().cast(), scales, cols, tile)
                }
                (RowData::Int4(p), 1) => chunks::<R, true, 1>(p.as_ptr(), scales, cols, tile),
                (RowData::Int4(p), 2) => chunks::<R, true, 2>(p.as_ptr(), scales, cols, tile),
                (RowData::Int4(p), _) => chunks::<R, true, 4>(p.as_ptr(), scales, cols, tile),
            }
        }
    }

    /// The loop over a row's chunks; `PER_SCALE` chunks share one weight scale.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn chunks<const R: usize, const INT4: bool, const PER_SCALE: usize>(
        w: *const u8,
        scales: &[f16],
        cols: usize,
        tile: Tile,
    ) -> [f32; R] {
        let n = cols / BLOCK;
        let mut even = [_mm256_setzero_ps(); R];
        let mut odd = [_mm256_setzero_ps(); R];
        // SAFETY: every offset below is < cols (chunks c < n) of rows the caller sized, and
        // scale indices c / PER_SCALE < cols / group; intrinsics are enabled above.
        unsafe {
            match tile {
                Tile::Int8 { values, scales: xsc } => {
                    let ones = _mm256_set1_epi16(1);
                    let (xq, xs, ws) = (values.as_ptr(), xsc.as_ptr(), scales.as_ptr());
                    macro_rules! step {
                        ($c:expr, $acc:ident) => {{
                            let c = $c;
                            let wv = load_chunk::<INT4>(w, c);
                            let s = scale(*ws.add(c / PER_SCALE));
                            // |w| as u8 times x·sign(w) as i8: maddubs needs one unsigned side.
                            let aw = _mm256_sign_epi8(wv, wv);
                            for i in 0..R {
                                let x = _mm256_loadu_si256(xq.add(i * cols + c * BLOCK).cast());
                                let sx = _mm256_sign_epi8(x, wv);
                                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones);
                                let f = _mm256_set1_ps(s * *xs.add(i * n + c));
                                $acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), f, $acc[i]);
                            }
                        }};
                    }
                    let mut c = 0;
                    while c + 1 < n {
                        step!(c, even);
                        step!(c + 1, odd);
                        c += 2;
                    }
                    if c < n {
                        step!(c, even);
                    }
                }
                Tile::F32 { x } => {
                    let (xp, ws) = (x.as_ptr(), scales.as_ptr());
                    macro_rules! step {
                        ($c:expr, $acc:ident) => {{
                            let c = $c;
                            let wv = load_chunk::<INT4>(w, c);
                            let lo = _mm256_castsi256_si128(wv);
                            let hi = _mm256_extracti128_si256(wv, 1);
                            let wf = [
                                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)),
                                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8))),
                                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)),
                                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8))),
                            ];
                            let s = _mm256_set1_ps(scale(*ws.add(c / PER_SCALE)));
                            for i in 0..R {
                                let xi = xp.add(i * cols + c * BLOCK);
                                let mut b = _mm256_mul_ps(wf[0], _mm256_loadu_ps(xi));
                                b = _mm256_fmadd_ps(wf[1], _mm256_loadu_ps(xi.add(8)), b);
                                b = _mm256_fmadd_ps(wf[2], _mm256_loadu_ps(xi.add(16)), b);
                                b = _mm256_fmadd_ps(wf[3], _mm256_loadu_ps(xi.add(24)), b);
                                $acc[i] = _mm256_fmadd_ps(b, s, $acc[i]);
                            }
                        }};
                    }
                    let mut c = 0;
                    while c + 1 < n {
                        step!(c, even);
                        step!(c + 1, odd);
                        c += 2;
                    }
                    if c < n {
                        step!(c, even);
                    }
                }
            }
            let mut out = [0.0f32; R];
            for i in 0..R {
                out[i] = hsum(_mm256_add_ps(even[i], odd[i]));
            }
            out
        }
    }
}
