//! Attention for one KV-head group: paged decode and tiled causal prefill.
//!
//! # Layout
//!
//! The KV cache of one KV head is a pool of fixed-size blocks, `[num_blocks, block_size,
//! head_dim]` for K and the same for V ([`PagedKv`]). A sequence reaches its tokens through a
//! block table ([`SeqKv`]): token `t` lives in block `table[t / block_size]`, slot
//! `t % block_size`. Blocks need not be contiguous or in order.
//!
//! A *group* is the `G` query heads that share this KV head (grouped-query attention; Mixtral
//! has `G = 4`). Queries and outputs are `[tokens, G, head_dim]`, so the `G` heads of a token
//! are adjacent rows and the kernels process them together: every K/V row fetched from memory
//! serves all `G` heads.
//!
//! # Kernels
//!
//! - [`decode`]: one new query token per sequence against its whole context, parallel over
//!   sequences and, when there are fewer sequences than threads, over slices of the context
//!   whose partial softmaxes are merged afterwards (flash-decoding).
//! - [`prefill`]: causal attention of a chunk of query tokens against the cache, tiled
//!   `br` query tokens × `bc` keys with an online softmax (flash-attention), parallel over
//!   query tiles.
//! - [`decode_reference`] / [`prefill_reference`]: the oracles, materializing every score and
//!   taking the softmax in f64.
//! - [`write_kv`]: appends new K/V rows through a block table.

mod core;
mod decode;
mod prefill;
mod reference;

pub use decode::decode;
pub use prefill::prefill;
pub use reference::{decode_reference, prefill_reference};

use crate::error::{KernelError, ParamError};
use serde::{Deserialize, Serialize};

/// The paged K and V pools of one KV head, each `[num_blocks, block_size, head_dim]`.
#[derive(Debug, Clone, Copy)]
pub struct PagedKv<'a> {
    /// Key pool.
    pub k: &'a [f32],
    /// Value pool, laid out like `k`.
    pub v: &'a [f32],
    /// Tokens per block.
    pub block_size: usize,
    /// Elements per head vector.
    pub head_dim: usize,
}

impl PagedKv<'_> {
    /// Number of blocks in the pool (after [`PagedKv::check`] succeeds).
    pub fn num_blocks(&self) -> usize {
        self.k.len() / (self.block_size * self.head_dim).max(1)
    }

    /// Checks the pool geometry: non-zero sizes, K and V equally long, whole blocks.
    pub fn check(&self, kernel: &'static str) -> Result<(), KernelError> {
        if self.block_size == 0 || self.head_dim == 0 {
            return Err(KernelError::shape(
                kernel,
                format!(
                    "block_size ({}) and head_dim ({}) must be non-zero",
                    self.block_size, self.head_dim
                ),
            ));
        }
        let block = self.block_size * self.head_dim;
        if self.k.len() != self.v.len() || !self.k.len().is_multiple_of(block) {
            return Err(KernelError::shape(
                kernel,
                format!(
                    "K pool has {} and V pool {} elements; both must be equal and a whole number of blocks of block_size {} × head_dim {}",
                    self.k.len(),
                    self.v.len(),
                    self.block_size,
                    self.head_dim
                ),
            ));
        }
        Ok(())
    }

    /// Offset of token `t`'s row in the pools. The table must cover `t` (checked beforehand).
    #[inline]
    pub(crate) fn row_offset(&self, table: &[u32], t: usize) -> usize {
        let block = table[t / self.block_size] as usize;
        (block * self.block_size + t % self.block_size) * self.head_dim
    }
}

/// One sequence's view of the cache: its block table and how many tokens it holds.
#[derive(Debug, Clone, Copy)]
pub struct SeqKv<'a> {
    /// Block indices into the pool, in token order.
    pub block_table: &'a [u32],
    /// Tokens of context (keys) the sequence attends to.
    pub context_len: usize,
}

impl SeqKv<'_> {
    /// Checks that the table covers `context_len` tokens and names only blocks in the pool.
    pub fn check(
        &self,
        kernel: &'static str,
        kv: &PagedKv,
        which: usize,
    ) -> Result<(), KernelError> {
        check_table(kernel, kv, self.block_table, self.context_len, which)
    }
}

fn check_table(
    kernel: &'static str,
    kv: &PagedKv,
    table: &[u32],
    tokens: usize,
    which: usize,
) -> Result<(), KernelError> {
    let needed = tokens.div_ceil(kv.block_size);
    if table.len() < needed {
        return Err(KernelError::shape(
            kernel,
            format!(
                "sequence {which}: block table has {} blocks but {tokens} tokens at block_size {} need {needed}",
                table.len(),
                kv.block_size
            ),
        ));
    }
    let num_blocks = kv.num_blocks();
    if let Some((i, &b)) =
        table[..needed].iter().enumerate().find(|(_, b)| **b as usize >= num_blocks)
    {
        return Err(KernelError::shape(
            kernel,
            format!(
                "sequence {which}: block table entry {i} is block {b} but the pool has {num_blocks} blocks"
            ),
        ));
    }
    Ok(())
}

/// Tunable tile sizes and threads for [`decode`] and [`prefill`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttentionParams {
    /// Query tokens per prefill tile (each brings its `G` heads, so a tile is `br·G` rows).
    pub br: usize,
    /// Keys per tile, in prefill and decode: the scores of a tile are computed, then folded into
    /// the running softmax in one step.
    pub bc: usize,
    /// Worker threads.
    pub threads: usize,
}

/// Largest accepted `br` and `bc`: beyond this a tile's scratch outgrows any cache.
pub const MAX_TILE: usize = 4096;

/// Largest accepted `br × bc`: a prefill tile keeps `br · G × bc` scores.
pub const MAX_TILE_AREA: usize = 1 << 18;

impl Default for AttentionParams {
    fn default() -> Self {
        Self { br: 16, bc: 64, threads: crate::threads::available() }
    }
}

impl AttentionParams {
    /// Checks every field; the error names the field, the value and the reason.
    pub fn validate(&self) -> Result<(), ParamError> {
        for (field, v) in [("br", self.br), ("bc", self.bc), ("threads", self.threads)] {
            if v == 0 {
                return Err(ParamError::new("attention", field, v, "must be at least 1"));
            }
        }
        for (field, v) in [("br", self.br), ("bc", self.bc)] {
            if v > MAX_TILE {
                return Err(ParamError::new(
                    "attention",
                    field,
                    v,
                    format!("must be at most {MAX_TILE}"),
                ));
            }
        }
        if self.br * self.bc > MAX_TILE_AREA {
            return Err(ParamError::new(
                "attention",
                "bc",
                self.bc,
                format!(
                    "br {} × bc {} exceeds {MAX_TILE_AREA} scores per tile; shrink br or bc",
                    self.br, self.bc
                ),
            ));
        }
        Ok(())
    }
}

/// Checks that `len` elements are `[tokens, group, head_dim]` and returns `tokens`.
fn tokens_of(
    kernel: &'static str,
    what: &str,
    len: usize,
    group: usize,
    head_dim: usize,
) -> Result<usize, KernelError> {
    if group == 0 {
        return Err(KernelError::shape(
            kernel,
            "group (query heads per KV head) must be at least 1",
        ));
    }
    let row = group * head_dim;
    if !len.is_multiple_of(row) {
        return Err(KernelError::shape(
            kernel,
            format!(
                "{what} has {len} elements, not a whole number of tokens of group {group} × head_dim {head_dim}"
            ),
        ));
    }
    Ok(len / row)
}

/// Writes `n` new tokens' K and V rows (`k_new`, `v_new` are `[n, head_dim]`) at positions
/// `start_pos..start_pos + n` of the sequence whose blocks are `block_table`.
///
/// Fails with [`KernelError::Shape`] (writing nothing) when the pools are not whole blocks, the
/// new rows are ragged, the table is too short or names a block outside the pool.
#[allow(clippy::too_many_arguments)]
pub fn write_kv(
    k_pool: &mut [f32],
    v_pool: &mut [f32],
    block_size: usize,
    head_dim: usize,
    block_table: &[u32],
    start_pos: usize,
    k_new: &[f32],
    v_new: &[f32],
) -> Result<(), KernelError> {
    const KERNEL: &str = "write_kv";
    let kv = PagedKv { k: k_pool, v: v_pool, block_size, head_dim };
    kv.check(KERNEL)?;
    if k_new.len() != v_new.len() || !k_new.len().is_multiple_of(head_dim) {
        return Err(KernelError::shape(
            KERNEL,
            format!(
                "k_new has {} and v_new {} elements; both must be equal and whole rows of head_dim {head_dim}",
                k_new.len(),
                v_new.len()
            ),
        ));
    }
    let n = k_new.len() / head_dim;
    check_table(KERNEL, &kv, block_table, start_pos + n, 0)?;
    for (i, (kr, vr)) in k_new.chunks_exact(head_dim).zip(v_new.chunks_exact(head_dim)).enumerate()
    {
        let t = start_pos + i;
        let off = (block_table[t / block_size] as usize * block_size + t % block_size) * head_dim;
        k_pool[off..off + head_dim].copy_from_slice(kr);
        v_pool[off..off + head_dim].copy_from_slice(vr);
    }
    Ok(())
}

/// Validates [`decode`]'s operands.
fn check_decode(
    kernel: &'static str,
    q: &[f32],
    seqs: &[SeqKv],
    kv: &PagedKv,
    group: usize,
    out: &[f32],
) -> Result<(), KernelError> {
    kv.check(kernel)?;
    let n = tokens_of(kernel, "q", q.len(), group, kv.head_dim)?;
    if n != seqs.len() {
        return Err(KernelError::shape(
            kernel,
            format!("q holds {n} query tokens but {} sequences were given", seqs.len()),
        ));
    }
    if out.len() != q.len() {
        return Err(KernelError::shape(
            kernel,
            format!("out has {} elements but q has {}", out.len(), q.len()),
        ));
    }
    for (i, s) in seqs.iter().enumerate() {
        if s.context_len == 0 {
            return Err(KernelError::shape(
                kernel,
                format!("sequence {i} has context_len 0: decode needs at least one key"),
            ));
        }
        s.check(kernel, kv, i)?;
    }
    Ok(())
}

/// Validates [`prefill`]'s operands and returns the number of query tokens.
fn check_prefill(
    kernel: &'static str,
    q: &[f32],
    q_start: usize,
    seq: &SeqKv,
    kv: &PagedKv,
    group: usize,
    out: &[f32],
) -> Result<usize, KernelError> {
    kv.check(kernel)?;
    let q_len = tokens_of(kernel, "q", q.len(), group, kv.head_dim)?;
    if out.len() != q.len() {
        return Err(KernelError::shape(
            kernel,
            format!("out has {} elements but q has {}", out.len(), q.len()),
        ));
    }
    if seq.context_len != q_start + q_len {
        return Err(KernelError::shape(
            kernel,
            format!(
                "context_len {} must equal q_start {q_start} + q_len {q_len} (the chunk's K/V already written)",
                seq.context_len
            ),
        ));
    }
    seq.check(kernel, kv, 0)?;
    Ok(q_len)
}
