//! Paged decode: one new query token per sequence against its whole context.

use super::core::Online;
use super::{AttentionParams, PagedKv, SeqKv, check_decode};
use crate::error::KernelError;
use rayon::prelude::*;

/// Context slices shorter than this are not split further (a split costs a merge).
const MIN_SPLIT_KEYS: usize = 256;

/// One unit of work: keys `begin..end` of sequence `seq`.
#[derive(Debug, Clone, Copy)]
struct Slice {
    seq: usize,
    begin: usize,
    end: usize,
}

/// Decode attention for one KV-head group.
///
/// `q` and `out` are `[num_seqs, group, head_dim]`: query token `s` (its `group` heads) attends
/// to keys `0..seqs[s].context_len` of its sequence with softmax scale `scale`. All heads of a
/// group are processed together, so each K/V row is read from memory once.
///
/// Parallel over sequences; when there are fewer sequences than `params.threads`, each context
/// is also cut into slices of whole `bc` tiles whose partial softmaxes `(max, sum, output)` are
/// merged at the end (flash-decoding).
#[allow(clippy::too_many_arguments)]
pub fn decode(
    q: &[f32],
    seqs: &[SeqKv],
    kv: &PagedKv,
    group: usize,
    scale: f32,
    out: &mut [f32],
    params: &AttentionParams,
) -> Result<(), KernelError> {
    params.validate()?;
    check_decode("attention.decode", q, seqs, kv, group, out)?;
    let d = kv.head_dim;
    let row = group * d;
    let slices = plan(seqs, params);

    // Each slice leaves [m (group), l (group), acc (group × d)].
    let part = group * (d + 2);
    let mut partials = vec![0.0f32; slices.len() * part];
    let work = |(slice, p): (&Slice, &mut [f32])| {
        let mut state =
            Online::new(&q[slice.seq * row..(slice.seq + 1) * row], d, scale, params.bc);
        state.attend(kv, seqs[slice.seq].block_table, slice.begin, slice.end, |_| slice.end);
        let (m, rest) = p.split_at_mut(group);
        let (l, acc) = rest.split_at_mut(group);
        m.copy_from_slice(&state.m);
        l.copy_from_slice(&state.l);
        acc.copy_from_slice(&state.acc);
    };
    if params.threads <= 1 {
        slices.iter().zip(partials.chunks_mut(part)).for_each(work);
    } else {
        crate::threads::run(params.threads, || {
            slices.par_iter().zip(partials.par_chunks_mut(part)).for_each(work)
        });
    }

    // Merge: a slice with maximum m and sum l weighs exp(m − M) against the overall maximum M.
    let mut first = 0;
    for (s, o) in out.chunks_exact_mut(row).enumerate() {
        let count = slices[first..].iter().take_while(|x| x.seq == s).count();
        let parts = &partials[first * part..(first + count) * part];
        for g in 0..group {
            let m_all = parts.chunks_exact(part).map(|p| p[g]).fold(f32::NEG_INFINITY, f32::max);
            let o = &mut o[g * d..(g + 1) * d];
            o.fill(0.0);
            let mut l_all = 0.0;
            for p in parts.chunks_exact(part) {
                let w = (p[g] - m_all).exp();
                l_all += p[group + g] * w;
                let acc = &p[2 * group + g * d..2 * group + (g + 1) * d];
                for (o, a) in o.iter_mut().zip(acc) {
                    *o += a * w;
                }
            }
            let inv = 1.0 / l_all;
            for o in o.iter_mut() {
                *o *= inv;
            }
        }
        first += count;
    }
    Ok(())
}

/// Cuts the work into slices: one per sequence, or several per sequence (whole `bc` tiles,
/// at least [`MIN_SPLIT_KEYS`] keys each) when sequences alone cannot keep the threads busy.
fn plan(seqs: &[SeqKv], params: &AttentionParams) -> Vec<Slice> {
    let wanted = if seqs.len() >= params.threads {
        1
    } else {
        // Two slices per thread give the scheduler room to balance unequal contexts.
        (2 * params.threads).div_ceil(seqs.len().max(1))
    };
    let mut slices = Vec::new();
    for (seq, s) in seqs.iter().enumerate() {
        let len = s.context_len;
        let splits = wanted.min(len.div_ceil(MIN_SPLIT_KEYS.max(params.bc))).max(1);
        let chunk = len.div_ceil(splits).div_ceil(params.bc) * params.bc;
        let mut begin = 0;
        while begin < len {
            let end = (begin + chunk).min(len);
            slices.push(Slice { seq, begin, end });
            begin = end;
        }
    }
    slices
}
