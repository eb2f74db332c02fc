//! The KV block allocator: which of the pool's fixed-size blocks are free.
//!
//! Blocks are plain `u32` ids into the KV cache's storage; the allocator only tracks
//! ownership. Its order is a pure function of the calls, so the same calls always give the
//! same block tables (the engine and the simulator must agree step for step).

/// Free list of KV blocks: the most recently freed first, then never-used ids in order.
///
/// Every block at or above `fresh` has never been handed out; blocks below it that were
/// freed wait on a stack. A pool of any size starts in O(1) and every call is O(1) (the
/// simulator allocates a block per sequence every `block_size` tokens, millions of times; a
/// lowest-id-first heap cost it a tenth of its time). Callers that free a whole block table
/// free it last block first, so that the next owner gets the blocks back in their order.
#[derive(Debug, Clone)]
pub struct BlockAllocator {
    /// Freed ids below `fresh`, the next to hand out on top.
    freed: Vec<u32>,
    /// The lowest id never handed out.
    fresh: u32,
    /// `owned[b]`: block `b` is handed out (catches double frees and double ownership).
    owned: Vec<bool>,
    /// Blocks handed out.
    used: usize,
}

impl BlockAllocator {
    /// A pool of `num_blocks` blocks, all free. Ids are `u32`, so a pool is capped at
    /// `u32::MAX` blocks (far beyond any real KV cache).
    pub fn new(num_blocks: usize) -> Self {
        let n = num_blocks.min(u32::MAX as usize);
        Self { freed: Vec::new(), fresh: 0, owned: vec![false; n], used: 0 }
    }

    /// Blocks in the pool.
    pub fn num_blocks(&self) -> usize {
        self.owned.len()
    }

    /// Blocks not owned by any sequence.
    pub fn num_free(&self) -> usize {
        self.owned.len() - self.used
    }

    /// Blocks owned by some sequence.
    pub fn num_used(&self) -> usize {
        self.used
    }

    /// Takes the most recently freed block, else the lowest never used, or `None` when the
    /// pool is exhausted.
    pub fn allocate(&mut self) -> Option<u32> {
        let b = match self.freed.pop() {
            Some(b) => b,
            None if (self.fresh as usize) < self.owned.len() => {
                self.fresh += 1;
                self.fresh - 1
            }
            None => return None,
        };
        debug_assert!(!self.owned[b as usize], "block {b} was free and owned");
        self.owned[b as usize] = true;
        self.used += 1;
        Some(b)
    }

    /// Returns `block` to the free list. Freeing a block that is not owned is a bug of the
    /// caller: it panics in debug builds and is ignored in release builds.
    pub fn free(&mut self, block: u32) {
        let Some(owned) = self.owned.get_mut(block as usize) else {
            debug_assert!(false, "block {block} is outside the pool");
            return;
        };
        debug_assert!(*owned, "block {block} freed twice");
        if *owned {
            *owned = false;
            self.used -= 1;
            self.freed.push(block);
        }
    }

    /// Whether `block` is currently handed out.
    pub fn is_owned(&self, block: u32) -> bool {
        self.owned.get(block as usize).copied().unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_freed_first_then_fresh() {
        let mut a = BlockAllocator::new(3);
        assert_eq!((a.allocate(), a.allocate()), (Some(0), Some(1)));
        a.free(0);
        assert_eq!(a.allocate(), Some(0));
        assert_eq!(a.allocate(), Some(2));
        assert_eq!(a.allocate(), None);
        assert_eq!((a.num_used(), a.num_free(), a.num_blocks()), (3, 0, 3));
        a.free(1);
        assert!(!a.is_owned(1) && a.is_owned(2));
        assert_eq!(a.num_free(), 1);
        a.free(2);
        a.free(0);
        assert_eq!((a.allocate(), a.allocate(), a.allocate()), (Some(0), Some(2), Some(1)));
        assert_eq!(a.allocate(), None);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "freed twice")]
    fn double_free_panics_in_debug() {
        let mut a = BlockAllocator::new(2);
        let b = a.allocate();
        assert_eq!(b, Some(0));
        a.free(0);
        a.free(0);
    }
}
