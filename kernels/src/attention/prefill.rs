//! Causal prefill, tiled flash-style.

use super::core::Online;
use super::{AttentionParams, PagedKv, SeqKv, check_prefill};
use crate::error::KernelError;
use rayon::prelude::*;

/// Causal prefill attention for one KV-head group (also chunked prefill).
///
/// `q` and `out` are `[q_len, group, head_dim]`; query token `i` sits at absolute position
/// `q_start + i` and attends to keys `0..=q_start + i`. The chunk's own K/V must already be in
/// the cache, so `seq.context_len == q_start + q_len`.
///
/// Queries are cut into tiles of `params.br` tokens (`br · group` rows); each tile walks the
/// keys it can see in tiles of `params.bc` with an online softmax. Tiles run in parallel.
#[allow(clippy::too_many_arguments)]
pub fn prefill(
    q: &[f32],
    q_start: usize,
    seq: &SeqKv,
    kv: &PagedKv,
    group: usize,
    scale: f32,
    out: &mut [f32],
    params: &AttentionParams,
) -> Result<(), KernelError> {
    params.validate()?;
    check_prefill("attention.prefill", q, q_start, seq, kv, group, out)?;
    let d = kv.head_dim;
    let row = group * d;
    if row == 0 || q.is_empty() {
        return Ok(());
    }
    let tile = params.br * row;
    let work = |(ti, o): (usize, &mut [f32])| {
        let i0 = ti * params.br;
        let tokens = o.len() / row;
        let mut state = Online::new(&q[i0 * row..(i0 + tokens) * row], d, scale, params.bc);
        // Row r is head r % group of query token i0 + r / group.
        let limit = |r: usize| q_start + i0 + r / group + 1;
        state.attend(kv, seq.block_table, 0, q_start + i0 + tokens, limit);
        state.finish(o);
    };
    if params.threads <= 1 {
        out.chunks_mut(tile).enumerate().for_each(work);
    } else {
        crate::threads::run(params.threads, || out.par_chunks_mut(tile).enumerate().for_each(work));
    }
    Ok(())
}
