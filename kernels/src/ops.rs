//! Elementwise and reduction ops: RMSNorm, RoPE, SiLU·mul, softmax, top-k.
