//! Attention for one KV-head group: paged decode and tiled causal prefill.
