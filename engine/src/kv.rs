//! The paged KV cache: per layer and KV head, a pool of fixed-size blocks of K rows and of V
//! rows. A sequence owns a list of block ids (its block table, kept by the scheduler); block
//! `b` means the same slot range in every layer's and head's pool, so one table serves all.

use dyno_kernels::KernelError;
use dyno_kernels::attention::{PagedKv, write_kv};

/// Storage for K and V of every layer and KV head, `[num_blocks, block_size, head_dim]` each.
#[derive(Debug, Clone)]
pub struct KvCache {
    /// Layers held (a pipeline stage holds only its own).
    pub layers: usize,
    /// KV heads held (a tensor-parallel rank holds only its own).
    pub kv_heads: usize,
    /// Elements per head vector.
    pub head_dim: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// Blocks per pool.
    pub num_blocks: usize,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl KvCache {
    /// Zeroed pools (the pages are only touched when written).
    pub fn new(
        layers: usize,
        kv_heads: usize,
        head_dim: usize,
        block_size: usize,
        num_blocks: usize,
    ) -> Self {
        let len = num_blocks * block_size * head_dim;
        let pools = layers * kv_heads;
        Self {
            layers,
            kv_heads,
            head_dim,
            block_size,
            num_blocks,
            k: (0..pools).map(|_| vec![0.0; len]).collect(),
            v: (0..pools).map(|_| vec![0.0; len]).collect(),
        }
    }

    /// The pools of `layer`, KV head `head`, as the attention kernels read them.
    pub fn pool(&self, layer: usize, head: usize) -> PagedKv<'_> {
        let i = layer * self.kv_heads + head;
        PagedKv {
            k: &self.k[i],
            v: &self.v[i],
            block_size: self.block_size,
            head_dim: self.head_dim,
        }
    }

    /// Stores `k_new`/`v_new` (`[n, head_dim]`) at positions `start..start + n` of the
    /// sequence with `block_table`.
    pub fn write(
        &mut self,
        layer: usize,
        head: usize,
        block_table: &[u32],
        start: usize,
        k_new: &[f32],
        v_new: &[f32],
    ) -> Result<(), KernelError> {
        let i = layer * self.kv_heads + head;
        write_kv(
            &mut self.k[i],
            &mut self.v[i],
            self.block_size,
            self.head_dim,
            block_table,
            start,
            k_new,
            v_new,
        )
    }

    /// Bytes of K and V storage per token, across the layers and heads held.
    pub fn bytes_per_token(&self) -> usize {
        2 * self.layers * self.kv_heads * self.head_dim * 4
    }
}
