//! The oracles: every score materialized, softmax and weighted sum in f64.

use super::{PagedKv, SeqKv, check_decode, check_prefill};
use crate::error::KernelError;

/// `softmax(scale · q·kᵢ) · vᵢ` over keys `0..keys` of one sequence, in f64.
fn attend_one(q: &[f32], kv: &PagedKv, table: &[u32], keys: usize, scale: f32, out: &mut [f32]) {
    let d = kv.head_dim;
    let rows: Vec<usize> = (0..keys).map(|t| kv.row_offset(table, t)).collect();
    let scores: Vec<f64> = rows
        .iter()
        .map(|&off| {
            let k = &kv.k[off..off + d];
            scale as f64 * q.iter().zip(k).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>()
        })
        .collect();
    let m = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - m).exp()).collect();
    let total: f64 = weights.iter().sum();
    for (c, o) in out.iter_mut().enumerate() {
        let v: f64 = rows.iter().zip(&weights).map(|(&off, w)| w * kv.v[off + c] as f64).sum();
        *o = (v / total) as f32;
    }
}

/// Oracle for [`super::decode`]: same operands, no tuning parameters.
pub fn decode_reference(
    q: &[f32],
    seqs: &[SeqKv],
    kv: &PagedKv,
    group: usize,
    scale: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_decode("attention.decode_reference", q, seqs, kv, group, out)?;
    let d = kv.head_dim;
    for (i, (qh, oh)) in q.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
        let s = &seqs[i / group];
        attend_one(qh, kv, s.block_table, s.context_len, scale, oh);
    }
    Ok(())
}

/// Oracle for [`super::prefill`]: same operands, no tuning parameters.
#[allow(clippy::too_many_arguments)]
pub fn prefill_reference(
    q: &[f32],
    q_start: usize,
    seq: &SeqKv,
    kv: &PagedKv,
    group: usize,
    scale: f32,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_prefill("attention.prefill_reference", q, q_start, seq, kv, group, out)?;
    let d = kv.head_dim;
    for (i, (qh, oh)) in q.chunks_exact(d).zip(out.chunks_exact_mut(d)).enumerate() {
        let token = i / group;
        attend_one(qh, kv, seq.block_table, q_start + token + 1, scale, oh);
    }
    Ok(())
}
