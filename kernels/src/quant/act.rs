//! Per-block int8 quantization of activations, done once per matmul call.

use super::BLOCK;

/// `x` `[m, k]` quantized per block of 32 along `k`: `x ≈ q · scale`, `|x - q · scale| ≤
/// scale / 2`, `scale = max|x| / 127` per block (0 for an all-zero block).
#[derive(Debug, Clone)]
pub(crate) struct QuantizedActs {
    /// `[m, k]` quants in `[-127, 127]`.
    pub q: Vec<i8>,
    /// `[m, k / 32]` scales.
    pub scales: Vec<f32>,
    /// Row length.
    pub k: usize,
    /// For int4 weights: `[m, k / group]`, `8 · Σ_{c ∈ group} scale_c · Σ_{i ∈ c} q_i`, the
    /// term to subtract when the SIMD kernel multiplies the unsigned nibbles `q_w + 8`
    /// directly (empty otherwise).
    pub nibble_corr: Vec<f32>,
    /// For int4 weights on the SIMD path with `k % 256 == 0`: every row rearranged for the
    /// chunk-pair kernels (empty otherwise).
    pub pairs: Vec<ChunkPairs>,
}

impl QuantizedActs {
    /// Quantizes `x` (`[m, k]`, `k % 32 == 0`).
    pub fn new(x: &[f32], m: usize, k: usize) -> Self {
        debug_assert_eq!(x.len(), m * k);
        debug_assert_eq!(k % BLOCK, 0);
        let mut q = vec![0i8; m * k];
        let mut scales = Vec::with_capacity(m * k / BLOCK);
        for (xb, qb) in x.chunks_exact(BLOCK).zip(q.chunks_exact_mut(BLOCK)) {
            let amax = xb.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
            let scale = amax / 127.0;
            if scale > 0.0 && scale.is_finite() {
                let inv = 1.0 / scale;
                for (o, &v) in qb.iter_mut().zip(xb) {
                    *o = (v * inv).round().clamp(-127.0, 127.0) as i8;
                }
                scales.push(scale);
            } else {
                scales.push(if scale.is_finite() { 0.0 } else { f32::NAN });
            }
        }
        Self { q, scales, k, nibble_corr: Vec::new(), pairs: Vec::new() }
    }

    /// Fills [`QuantizedActs::nibble_corr`] for int4 weights in groups of `group`.
    pub fn with_nibble_correction(mut self, group: usize) -> Self {
        let per_group = group / BLOCK;
        self.nibble_corr = self
            .q
            .chunks_exact(BLOCK)
            .zip(&self.scales)
            .map(|(qb, &s)| 8.0 * s * qb.iter().map(|&v| i32::from(v)).sum::<i32>() as f32)
            .collect::<Vec<f32>>()
            .chunks_exact(per_group)
            .map(|g| g.iter().sum())
            .collect();
        self
    }

    /// Fills [`QuantizedActs::pairs`] (every row) for kernels that fold chunk sums in the lane
    /// order `lane_chunks`; `k` must be a multiple of 256.
    pub fn with_chunk_pairs(mut self, lane_chunks: [usize; 8]) -> Self {
        let rows = self.q.len() / self.k.max(1);
        self.pairs = (0..rows).map(|r| ChunkPairs::new(&self, r, lane_chunks)).collect();
        self
    }

    /// Chunks of 32 per row.
    pub fn chunks(&self) -> usize {
        self.k / BLOCK
    }

    /// Quants of row `r`.
    pub fn row(&self, r: usize) -> &[i8] {
        &self.q[r * self.k..(r + 1) * self.k]
    }

    /// Scales of row `r`.
    pub fn row_scales(&self, r: usize) -> &[f32] {
        let c = self.chunks();
        &self.scales[r * c..(r + 1) * c]
    }
}

/// One activation row rearranged for the chunk-pair int4 GEMV kernel
/// ([`super::simd`]`::gemv_q4_dispatch`): for chunks `2p` and `2p + 1`, 64 bytes
/// `[x_2p[0..16], x_2p+1[0..16], x_2p[16..32], x_2p+1[16..32]]` (the order in which the kernel
/// finds low and high nibbles), and per step of eight chunks their eight scales and nibble
/// offsets in the lane order of the kernel's folded chunk sums.
#[derive(Debug, Clone)]
pub(crate) struct ChunkPairs {
    /// `k` quants, 64 per pair.
    pub q: Vec<i8>,
    /// 8 scales per step of 8 chunks.
    pub scales: Vec<f32>,
    /// Per step of 8 chunks, `8 · Σ q` of each chunk: what the unsigned nibbles `q_w + 8` add
    /// to a chunk's integer dot product, subtracted before scaling so no correction is left
    /// for the end of a row.
    pub offsets: Vec<i32>,
}

impl ChunkPairs {
    /// Row `r` of `acts`, whose chunk count must be a multiple of 8; `lane_chunks[i]` is the
    /// chunk (within a step) whose sum the kernel leaves in lane `i`.
    pub fn new(acts: &QuantizedActs, r: usize, lane_chunks: [usize; 8]) -> Self {
        let (x, xs) = (acts.row(r), acts.row_scales(r));
        debug_assert_eq!(acts.chunks() % 8, 0);
        let mut q = Vec::with_capacity(x.len());
        for (a, b) in x.chunks_exact(BLOCK).step_by(2).zip(x.chunks_exact(BLOCK).skip(1).step_by(2))
        {
            for half in [0..16, 16..32] {
                q.extend_from_slice(&a[half.clone()]);
                q.extend_from_slice(&b[half]);
            }
        }
        let scales = xs.chunks_exact(8).flat_map(|s| lane_chunks.map(|c| s[c])).collect();
        let chunk_offsets: Vec<i32> = x
            .chunks_exact(BLOCK)
            .map(|c| 8 * c.iter().map(|&v| i32::from(v)).sum::<i32>())
            .collect();
        let offsets =
            chunk_offsets.chunks_exact(8).flat_map(|o| lane_chunks.map(|c| o[c])).collect();
        Self { q, scales, offsets }
    }
}
