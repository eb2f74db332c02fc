//! Quantized weights and `f32 × quantized` matmul.
//!
//! Two formats, both symmetric, with one `f16` scale per block along `k` (the input dimension)
//! of a row-major `[n, k]` weight (Hugging Face layout, `y = x · Wᵀ`):
//!
//! | format | block | stored per block | bits/weight |
//! |---|---|---|---|
//! | [`Int8Matrix`] (like Q8_0) | 32 | 32 × `i8` + `f16` scale | 8.5 |
//! | [`Int4Matrix`] (like Q4_0) | group 32, 64 or 128 | group/2 bytes of nibbles + `f16` | 4.5 at group 32 |
//!
//! Quantization: `scale = max|w| / 127` (int8) or `max|w| / 7` (int4), `q = round(w / scale)`
//! clamped to `[-127, 127]` or `[-8, 7]`; an all-zero block gets scale 0. Int4 values are stored
//! as `q + 8` in a nibble; each 32-weight chunk of a row takes 16 bytes, byte `j` holding weight
//! `j` in its low nibble and weight `j + 16` in its high nibble, so one AND and one shift unpack
//! a chunk into 32 bytes in order.
//!
//! `matmul` takes the GEMV path for one activation row (decode: each weight row streamed once,
//! rows split across threads) and a row-tiled path for more, where each weight chunk is loaded
//! once and used against `row_tile` activation rows. Activations are either used as `f32`
//! (weights dequantized on the fly) or quantized once per call to `i8` per block of 32 with
//! their own scale, for integer dot products (AVX2 `maddubs`), see [`ActivationMode`].

mod kernel;

pub(crate) use kernel::drive;

use crate::error::{KernelError, ParamError};
use crate::isa::Isa;
use half::f16;
use serde::{Deserialize, Serialize};

/// Weights per int8 block, and per int4 nibble chunk.
pub const BLOCK: usize = 32;

/// Largest allowed `row_tile`: one register accumulator per activation row.
pub const MAX_ROW_TILE: usize = 8;

/// How activations enter the dot products.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationMode {
    /// Keep activations in `f32`; dequantize weights on the fly and use FMA.
    F32,
    /// Quantize activations per block of 32 to `i8` (own scale) and use integer dot products.
    Int8,
    /// `Int8` where a SIMD integer dot product exists (AVX2 and wider), else `F32`.
    Auto,
}

impl ActivationMode {
    /// The mode that actually runs on this machine.
    pub fn resolve(self) -> ActivationMode {
        match self {
            ActivationMode::Auto if Isa::detect() >= Isa::Avx2 => ActivationMode::Int8,
            ActivationMode::Auto => ActivationMode::F32,
            other => other,
        }
    }
}

/// Tunable parameters of the quantized matmul.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantParams {
    /// Activation rows that share each loaded weight chunk (1 to [`MAX_ROW_TILE`]).
    pub row_tile: usize,
    /// Worker threads.
    pub threads: usize,
    /// How activations enter the dot products.
    pub activations: ActivationMode,
}

impl Default for QuantParams {
    fn default() -> Self {
        Self {
            row_tile: 4,
            threads: crate::threads::available(),
            activations: ActivationMode::Auto,
        }
    }
}

impl QuantParams {
    /// Checks every field; the error names the field, the value and the reason.
    pub fn validate(&self) -> Result<(), ParamError> {
        if self.row_tile == 0 || self.row_tile > MAX_ROW_TILE {
            return Err(ParamError::new(
                "quant",
                "row_tile",
                self.row_tile,
                format!("must be between 1 and {MAX_ROW_TILE}"),
            ));
        }
        if self.threads == 0 {
            return Err(ParamError::new("quant", "threads", self.threads, "must be at least 1"));
        }
        Ok(())
    }
}

/// Int8 weights: blocks of 32 along each row with one `f16` scale per block (8.5 bits/weight).
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Matrix {
    rows: usize,
    cols: usize,
    /// `[rows, cols]` quantized values.
    quants: Vec<i8>,
    /// `[rows, cols / 32]` scales.
    scales: Vec<f16>,
}

/// Int4 weights: groups of 32, 64 or 128 along each row with one `f16` scale per group.
#[derive(Debug, Clone, PartialEq)]
pub struct Int4Matrix {
    rows: usize,
    cols: usize,
    group: usize,
    /// `[rows, cols / 2]` nibbles, laid out per 32-weight chunk (see the module doc).
    packed: Vec<u8>,
    /// `[rows, cols / group]` scales.
    scales: Vec<f16>,
}

fn check_weight_shape(
    kernel: &'static str,
    w: &[f32],
    rows: usize,
    cols: usize,
    block: usize,
) -> Result<(), KernelError> {
    if !cols.is_multiple_of(block) || cols == 0 {
        return Err(KernelError::shape(
            kernel,
            format!("cols = {cols} must be a positive multiple of the block size {block}"),
        ));
    }
    if w.len() != rows * cols {
        return Err(KernelError::shape(
            kernel,
            format!("weights hold {} values, expected rows × cols = {rows} × {cols}", w.len()),
        ));
    }
    Ok(())
}

/// Symmetric absmax scale of a block for a largest level `qmax`, and the quantizer.
fn quantize_block(block: &[f32], qmin: f32, qmax: f32, mut put: impl FnMut(usize, i8)) -> f16 {
    let amax = block.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    // Round the scale to f16 first, so values are quantized with the scale that is stored.
    let scale = f16::from_f32(amax / qmax);
    let s = scale.to_f32();
    let inv = if s > 0.0 { 1.0 / s } else { 0.0 };
    for (j, &v) in block.iter().enumerate() {
        put(j, (v * inv).round().clamp(qmin, qmax) as i8);
    }
    scale
}

/// The methods `Int8Matrix` and `Int4Matrix` share word for word: dimensions, the fast
/// `matmul` and its oracle. Each type provides `view()` and `dequantize()`.
macro_rules! shared_matrix_methods {
    ($kernel:literal) => {
        /// Output features (n).
        pub fn rows(&self) -> usize {
            self.rows
        }

        /// Input features (k).
        pub fn cols(&self) -> usize {
            self.cols
        }

        /// `y = x · Wᵀ` for `x` of `m × cols` and `y` of `m × rows`, blocked by `params`.
        pub fn matmul(
            &self,
            x: &[f32],
            m: usize,
            y: &mut [f32],
            params: &QuantParams,
        ) -> Result<(), KernelError> {
            params.validate()?;
            check_operands($kernel, x, m, y, self.rows, self.cols)?;
            kernel::matmul(self.view(), x, m, y, params);
            Ok(())
        }

        /// The oracle: dequantized weights times `f32` activations, accumulated in `f64`.
        pub fn matmul_reference(
            &self,
            x: &[f32],
            m: usize,
            y: &mut [f32],
        ) -> Result<(), KernelError> {
            check_operands($kernel, x, m, y, self.rows, self.cols)?;
            matmul_reference_dense(&self.dequantize(), self.rows, self.cols, x, m, y);
            Ok(())
        }
    };
}

impl Int8Matrix {
    /// Quantizes a row-major `[rows, cols]` matrix; `cols` must be a multiple of 32.
    pub fn quantize(w: &[f32], rows: usize, cols: usize) -> Result<Self, KernelError> {
        check_weight_shape("int8 quantize", w, rows, cols, BLOCK)?;
        let mut quants = vec![0i8; rows * cols];
        let mut scales = Vec::with_capacity(rows * cols / BLOCK);
        for (b, block) in w.chunks_exact(BLOCK).enumerate() {
            let out = &mut quants[b * BLOCK..(b + 1) * BLOCK];
            scales.push(quantize_block(block, -127.0, 127.0, |j, q| out[j] = q));
        }
        Ok(Self { rows, cols, quants, scales })
    }

    /// The weights as `f32`: `q · scale`.
    pub fn dequantize(&self) -> Vec<f32> {
        self.quants
            .chunks_exact(BLOCK)
            .zip(&self.scales)
            .flat_map(|(q, s)| q.iter().map(move |&q| q as f32 * s.to_f32()))
            .collect()
    }

    /// Bytes one full pass over the weights streams: quantized values plus scales.
    pub fn weight_bytes(&self) -> usize {
        self.quants.len() + 2 * self.scales.len()
    }

    shared_matrix_methods!("int8 matmul");

    fn view(&self) -> kernel::Weights<'_> {
        kernel::Weights {
            rows: self.rows,
            cols: self.cols,
            format: kernel::Format::Int8 { quants: &self.quants },
            scales: &self.scales,
            group: BLOCK,
        }
    }
}

impl Int4Matrix {
    /// Quantizes a row-major `[rows, cols]` matrix with one scale per `group` weights (32, 64
    /// or 128); `cols` must be a multiple of `group`.
    pub fn quantize(
        w: &[f32],
        rows: usize,
        cols: usize,
        group: usize,
    ) -> Result<Self, KernelError> {
        if ![32, 64, 128].contains(&group) {
            return Err(ParamError::new("int4", "group", group, "must be 32, 64 or 128").into());
        }
        check_weight_shape("int4 quantize", w, rows, cols, group)?;
        let mut packed = vec![0u8; rows * cols / 2];
        let mut scales = Vec::with_capacity(rows * cols / group);
        let mut q = vec![0i8; group];
        for (g, block) in w.chunks_exact(group).enumerate() {
            scales.push(quantize_block(block, -8.0, 7.0, |j, v| q[j] = v));
            for (c, chunk) in q.chunks_exact(BLOCK).enumerate() {
                let base = (g * group + c * BLOCK) / 2;
                for j in 0..BLOCK / 2 {
                    let lo = (chunk[j] + 8) as u8;
                    let hi = (chunk[j + BLOCK / 2] + 8) as u8;
                    packed[base + j] = lo | (hi << 4);
                }
            }
        }
        Ok(Self { rows, cols, group, packed, scales })
    }

    /// The weights as `f32`: `(nibble − 8) · scale`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0.0f32; self.rows * self.cols];
        for (c, chunk) in self.packed.chunks_exact(BLOCK / 2).enumerate() {
            let s = self.scales[c * BLOCK / self.group].to_f32();
            let dst = &mut out[c * BLOCK..(c + 1) * BLOCK];
            for (j, &b) in chunk.iter().enumerate() {
                dst[j] = ((b & 0x0f) as i32 - 8) as f32 * s;
                dst[j + BLOCK / 2] = ((b >> 4) as i32 - 8) as f32 * s;
            }
        }
        out
    }

    /// Weights per scale.
    pub fn group(&self) -> usize {
        self.group
    }

    /// Bytes one full pass over the weights streams: nibbles plus scales.
    pub fn weight_bytes(&self) -> usize {
        self.packed.len() + 2 * self.scales.len()
    }

    shared_matrix_methods!("int4 matmul");

    fn view(&self) -> kernel::Weights<'_> {
        kernel::Weights {
            rows: self.rows,
            cols: self.cols,
            format: kernel::Format::Int4 { packed: &self.packed },
            scales: &self.scales,
            group: self.group,
        }
    }
}

/// Checks `x` is `m × cols` and `y` is `m × rows`.
pub(crate) fn check_operands(
    kernel: &'static str,
    x: &[f32],
    m: usize,
    y: &[f32],
    rows: usize,
    cols: usize,
) -> Result<(), KernelError> {
    if x.len() != m * cols {
        return Err(KernelError::shape(
            kernel,
            format!("x holds {} values, expected m × k = {m} × {cols}", x.len()),
        ));
    }
    if y.len() != m * rows {
        return Err(KernelError::shape(
            kernel,
            format!("y holds {} values, expected m × n = {m} × {rows}", y.len()),
        ));
    }
    Ok(())
}

/// `y = x · Wᵀ` over a dense `f32` weight, in `f64`: the oracle for every weight format.
pub(crate) fn matmul_reference_dense(
    w: &[f32],
    rows: usize,
    cols: usize,
    x: &[f32],
    m: usize,
    y: &mut [f32],
) {
    for i in 0..m {
        let xi = &x[i * cols..(i + 1) * cols];
        for r in 0..rows {
            let wr = &w[r * cols..(r + 1) * cols];
            y[i * rows + r] =
                xi.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum::<f64>() as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(len: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn quantize_round_trip_within_half_a_step() {
        let (rows, cols) = (3, 128);
        let w = ramp(rows * cols, 7);
        let q8 = Int8Matrix::quantize(&w, rows, cols).unwrap();
        for (b, (orig, back)) in w.chunks(32).zip(q8.dequantize().chunks(32)).enumerate() {
            let s = q8.scales[b].to_f32();
            for (a, c) in orig.iter().zip(back) {
                assert!((a - c).abs() <= s * 0.5 + 1e-6, "int8 block {b}: {a} vs {c}");
            }
        }
        for group in [32, 64, 128] {
            let q4 = Int4Matrix::quantize(&w, rows, cols, group).unwrap();
            for (g, (orig, back)) in w.chunks(group).zip(q4.dequantize().chunks(group)).enumerate()
            {
                let s = q4.scales[g].to_f32();
                for (a, c) in orig.iter().zip(back) {
                    assert!((a - c).abs() <= s * 0.5 + 1e-6, "int4/{group} group {g}: {a} vs {c}");
                }
            }
        }
    }

    #[test]
    fn zero_blocks_have_zero_scale_and_no_nan() {
        let w = vec![0.0f32; 64];
        let q8 = Int8Matrix::quantize(&w, 1, 64).unwrap();
        assert!(q8.dequantize().iter().all(|v| *v == 0.0));
        let q4 = Int4Matrix::quantize(&w, 1, 64, 64).unwrap();
        assert!(q4.dequantize().iter().all(|v| *v == 0.0));
    }

    #[test]
    fn bytes_match_the_bits_per_weight() {
        let w = vec![0.5f32; 64 * 128];
        assert_eq!(
            Int8Matrix::quantize(&w, 64, 128).unwrap().weight_bytes() * 8,
            64 * 128 * 17 / 2
        );
        assert_eq!(
            Int4Matrix::quantize(&w, 64, 128, 32).unwrap().weight_bytes() * 8,
            64 * 128 * 9 / 2
        );
    }

    #[test]
    fn bad_shapes_and_params_are_named() {
        let w = vec![0.0f32; 40];
        let e = Int8Matrix::quantize(&w, 1, 40).unwrap_err().to_string();
        assert!(e.contains("multiple of the block size 32"), "{e}");
        let e = Int4Matrix::quantize(&w, 1, 40, 48).unwrap_err().to_string();
        assert!(e.contains("group") && e.contains("48"), "{e}");
        let q = Int8Matrix::quantize(&[0.0; 32], 1, 32).unwrap();
        let e = q.matmul(&[0.0; 31], 1, &mut [0.0], &QuantParams::default()).unwrap_err();
        assert!(e.to_string().contains("x holds 31"), "{e}");
        let p = QuantParams { row_tile: 9, ..Default::default() };
        let e = q.matmul(&[0.0; 32], 1, &mut [0.0], &p).unwrap_err().to_string();
        assert!(e.contains("row_tile") && e.contains('9'), "{e}");
        let p = QuantParams { threads: 0, ..Default::default() };
        assert!(p.validate().unwrap_err().to_string().contains("threads"));
    }

    #[test]
    fn params_yaml_round_trip_and_reject_unknown_fields() {
        let p = QuantParams { row_tile: 2, threads: 3, activations: ActivationMode::Int8 };
        let yaml = serde_yaml::to_string(&p).unwrap();
        assert!(yaml.contains("activations: int8"), "{yaml}");
        assert_eq!(serde_yaml::from_str::<QuantParams>(&yaml).unwrap(), p);
        let bad = "row_tile: 2\nthreads: 1\nactivations: f32\nrowtile: 3\n";
        assert!(serde_yaml::from_str::<QuantParams>(bad).is_err());
    }
}
