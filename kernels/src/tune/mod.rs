//! Kernel auto-tuning: candidate search, correctness gate, and the on-disk cache.
