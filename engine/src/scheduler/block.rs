//! The KV block allocator: which of the pool's fixed-size blocks are free.
//!
//! Blocks are plain `u32` ids into the KV cache's storage; the allocator only tracks
//! ownership. It hands out the lowest free id first so that the same calls always give the
//! same block tables (the engine and the simulator must agree step for step).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Free list of KV blocks, lowest id first.
///
/// Every block at or above `fresh` has never been handed out; blocks below it that were
/// freed wait in a min-heap. The lowest free id is the smaller of the heap's top and
/// `fresh`, so a pool of any size starts in O(1) and each call costs O(log freed).
#[derive(Debug, Clone)]
pub struct BlockAllocator {
    /// Freed ids below `fresh`, lowest on top.
    freed: BinaryHeap<Reverse<u32>>,
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
        Self { freed: BinaryHeap::new(), fresh: 0, owned: vec![false; n], used: 0 }
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

    /// Takes the lowest free block, or `None` when the pool is exhausted.
    pub fn allocate(&mut self) -> Option<u32> {
        let b = match self.freed.peek() {
            Some(&Reverse(b)) => {
                self.freed.pop();
                b
            }
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
            self.freed.push(Reverse(block));
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
    fn lowest_first_and_reuse() {
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
