//! bf16 weights with f32 accumulation.
