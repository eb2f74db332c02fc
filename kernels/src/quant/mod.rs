//! Quantized weights (int8 blocks of 32, int4 groups of 32/64/128) and f32 × quantized matmul.
