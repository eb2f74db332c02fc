//! The online-softmax engine shared by decode and prefill.
//!
//! For a block of query rows (already multiplied by the softmax scale) it walks the keys in
//! tiles of `bc`. Per tile and row it computes the scores `s = q·k`, then folds them into the
//! running state (flash-attention's online softmax):
//!
//! ```text
//! m' = max(m, max s)            running maximum
//! c  = exp(m − m')              how much the old terms shrink
//! p  = exp(s − m')              this tile's weights
//! l' = l·c + Σ p                running denominator
//! o' = o·c + Σ p·v              running (un-normalized) output
//! ```
//!
//! so the final output is `o / l`, and no score matrix larger than `rows × bc` ever exists.

use super::PagedKv;
use crate::ops::simd;

/// Running softmax state for `rows` query rows of `d` elements.
pub(crate) struct Online {
    d: usize,
    bc: usize,
    /// The query rows, pre-multiplied by the scale, `[rows, d]`.
    q: Vec<f32>,
    /// Running maximum per row.
    pub(crate) m: Vec<f32>,
    /// Running denominator per row.
    pub(crate) l: Vec<f32>,
    /// Running output per row, `[rows, d]`, not yet divided by `l`.
    pub(crate) acc: Vec<f32>,
    /// One tile of scores, `[rows, bc]`.
    scores: Vec<f32>,
}

impl Online {
    /// State for the query rows `q` (`[rows, d]`), scaled by `scale`, with key tiles of `bc`.
    pub(crate) fn new(q: &[f32], d: usize, scale: f32, bc: usize) -> Self {
        let rows = q.len() / d;
        Self {
            d,
            bc,
            q: q.iter().map(|v| v * scale).collect(),
            m: vec![f32::NEG_INFINITY; rows],
            l: vec![0.0; rows],
            acc: vec![0.0; rows * d],
            scores: vec![0.0; rows * bc],
        }
    }

    fn rows(&self) -> usize {
        self.m.len()
    }

    /// Folds keys `begin..end` of the sequence with block table `table` into the state.
    ///
    /// Row `r` sees only keys below `limit(r)` (causal masking); `limit` must not decrease with
    /// `r`. The table must cover every key below `end` (checked by the caller).
    pub(crate) fn attend(
        &mut self,
        kv: &PagedKv,
        table: &[u32],
        begin: usize,
        end: usize,
        limit: impl Fn(usize) -> usize,
    ) {
        let (d, bc, rows) = (self.d, self.bc, self.rows());
        let mut krows: Vec<&[f32]> = Vec::with_capacity(bc);
        let mut vrows: Vec<&[f32]> = Vec::with_capacity(bc);
        let mut t0 = begin;
        while t0 < end {
            let t1 = (t0 + bc).min(end);
            // Gather this tile's K and V rows through the block table.
            krows.clear();
            vrows.clear();
            for t in t0..t1 {
                let off = kv.row_offset(table, t);
                krows.push(&kv.k[off..off + d]);
                vrows.push(&kv.v[off..off + d]);
            }
            // Keys of this tile that row r may see.
            let visible = |r: usize| limit(r).min(t1).saturating_sub(t0);

            // Scores, four rows at a time so each K row is read once per four rows.
            let mut r = 0;
            while r < rows {
                let take = (rows - r).min(4);
                let n = visible(r + take - 1);
                if n > 0 {
                    if take == 4 {
                        let qs = [0, 1, 2, 3].map(|i| &self.q[(r + i) * d..(r + i + 1) * d]);
                        for (j, k) in krows[..n].iter().enumerate() {
                            let s = simd::dot_many(qs, k);
                            for (i, si) in s.into_iter().enumerate() {
                                self.scores[(r + i) * bc + j] = si;
                            }
                        }
                    } else {
                        for i in r..r + take {
                            let q = [&self.q[i * d..(i + 1) * d]];
                            for (j, k) in krows[..n].iter().enumerate() {
                                self.scores[i * bc + j] = simd::dot_many(q, k)[0];
                            }
                        }
                    }
                }
                r += take;
            }

            // Fold each row's scores into its running softmax and output.
            for r in 0..rows {
                let n = visible(r);
                if n == 0 {
                    continue;
                }
                let s = &mut self.scores[r * bc..r * bc + n];
                let m_new = self.m[r].max(simd::max(s));
                let shrink =
                    if self.m[r] == f32::NEG_INFINITY { 0.0 } else { (self.m[r] - m_new).exp() };
                let sum = simd::exp_sub_sum(s, m_new);
                let acc = &mut self.acc[r * d..(r + 1) * d];
                if shrink != 1.0 {
                    simd::scale(acc, shrink);
                }
                self.l[r] = self.l[r] * shrink + sum;
                self.m[r] = m_new;
                simd::accumulate_rows(acc, s, &vrows[..n]);
            }
            t0 = t1;
        }
    }

    /// Writes the normalized output `acc / l` of every row into `out` (`[rows, d]`).
    pub(crate) fn finish(&self, out: &mut [f32]) {
        for ((o, a), &l) in
            out.chunks_exact_mut(self.d).zip(self.acc.chunks_exact(self.d)).zip(&self.l)
        {
            let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
            for (o, a) in o.iter_mut().zip(a) {
                *o = a * inv;
            }
        }
    }
}
