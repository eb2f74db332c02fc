//! Property tests: int8, int4 and bf16 matmul agree with their references on random shapes,
//! values, activation modes, row tiles and thread counts.
//!
//! Tolerances, per element of `y` (row i, weight row r), with `S = Σ_j |w_rj|·|x_ij|`:
//! - f32 activations (int8, int4, bf16 weights): `|y − ref| ≤ 1e-5·S + 1e-6` — f32 rounding of
//!   a sum in any order at these lengths, against an f64 reference over the same weights;
//! - int8 activations: each block of 32 activations is rounded to `q·s_x` with
//!   `|Δx_j| ≤ s_x/2`, so `|y − ref| ≤ Σ_blocks (s_x/2)·Σ_{j∈block} |w_rj| + 1e-5·S + 1e-6`.

use dyno_kernels::bf16::{Bf16Matrix, Bf16Params};
use dyno_kernels::quant::{ActivationMode, Int4Matrix, Int8Matrix, QuantParams};
use proptest::prelude::*;

fn fill(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(12345);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0
        })
        .collect()
}

#[derive(Debug, Clone)]
struct Case {
    m: usize,
    n: usize,
    /// k in units of 128 weights (a multiple of every group size).
    k128: usize,
    group: usize,
    row_tile: usize,
    threads: usize,
    mode: ActivationMode,
    seed: u32,
}

fn case() -> impl Strategy<Value = Case> {
    (
        1usize..=9,
        prop_oneof![1usize..12, prop::sample::select(vec![13, 31, 37, 64, 97])],
        1usize..=3,
        prop::sample::select(vec![32usize, 64, 128]),
        1usize..=8,
        1usize..=3,
        prop::sample::select(vec![ActivationMode::F32, ActivationMode::Int8, ActivationMode::Auto]),
        any::<u32>(),
    )
        .prop_map(|(m, n, k128, group, row_tile, threads, mode, seed)| Case {
            m,
            n,
            k128,
            group,
            row_tile,
            threads,
            mode,
            seed,
        })
}

/// The bound of the module doc for row `i` of `x` and row `r` of the dequantized `w`.
fn bound(w: &[f32], x: &[f32], k: usize, i: usize, r: usize, int8_acts: bool) -> f64 {
    let (wr, xi) = (&w[r * k..(r + 1) * k], &x[i * k..(i + 1) * k]);
    let s: f64 = wr.iter().zip(xi).map(|(a, b)| (a.abs() * b.abs()) as f64).sum();
    let mut b = 1e-5 * s + 1e-6;
    if int8_acts {
        for (wb, xb) in wr.chunks(32).zip(xi.chunks(32)) {
            let sx = xb.iter().fold(0.0f32, |m, v| m.max(v.abs())) as f64 / 127.0;
            b += sx / 2.0 * wb.iter().map(|v| v.abs() as f64).sum::<f64>() + 1e-6;
        }
    }
    b
}

fn check(
    name: &str,
    dense: &[f32],
    x: &[f32],
    (m, n, k): (usize, usize, usize),
    got: &[f32],
    want: &[f32],
    int8_acts: bool,
) -> Result<(), TestCaseError> {
    for i in 0..m {
        for r in 0..n {
            let (g, w) = (got[i * n + r] as f64, want[i * n + r] as f64);
            let tol = bound(dense, x, k, i, r, int8_acts);
            prop_assert!((g - w).abs() <= tol, "{name} y[{i},{r}] = {g}, reference {w}, tol {tol}");
        }
    }
    Ok(())
}

fn int8_activations(mode: ActivationMode) -> bool {
    mode.resolve() == ActivationMode::Int8
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn int8_matches_reference(c in case()) {
        let k = c.k128 * 128;
        let w = fill(c.n * k, c.seed);
        let x = fill(c.m * k, c.seed ^ 0x5bd1e995);
        let q = Int8Matrix::quantize(&w, c.n, k).unwrap();
        let p = QuantParams { row_tile: c.row_tile, threads: c.threads, activations: c.mode };
        let (mut got, mut want) = (vec![f32::NAN; c.m * c.n], vec![0.0; c.m * c.n]);
        q.matmul(&x, c.m, &mut got, &p).unwrap();
        q.matmul_reference(&x, c.m, &mut want).unwrap();
        check("int8", &q.dequantize(), &x, (c.m, c.n, k), &got, &want, int8_activations(c.mode))?;
    }

    #[test]
    fn int4_matches_reference(c in case()) {
        let k = c.k128 * 128;
        let w = fill(c.n * k, c.seed);
        let x = fill(c.m * k, c.seed ^ 0x5bd1e995);
        let q = Int4Matrix::quantize(&w, c.n, k, c.group).unwrap();
        let p = QuantParams { row_tile: c.row_tile, threads: c.threads, activations: c.mode };
        let (mut got, mut want) = (vec![f32::NAN; c.m * c.n], vec![0.0; c.m * c.n]);
        q.matmul(&x, c.m, &mut got, &p).unwrap();
        q.matmul_reference(&x, c.m, &mut want).unwrap();
        check("int4", &q.dequantize(), &x, (c.m, c.n, k), &got, &want, int8_activations(c.mode))?;
    }

    #[test]
    fn bf16_matches_reference(c in case(), odd_k in 1usize..40) {
        // bf16 has no block constraint: k need not be a multiple of the SIMD width.
        let k = c.k128 * 128 + odd_k;
        let w = fill(c.n * k, c.seed);
        let x = fill(c.m * k, c.seed ^ 0x5bd1e995);
        let b = Bf16Matrix::from_f32(&w, c.n, k).unwrap();
        let p = Bf16Params { row_tile: c.row_tile, threads: c.threads };
        let (mut got, mut want) = (vec![f32::NAN; c.m * c.n], vec![0.0; c.m * c.n]);
        b.matmul(&x, c.m, &mut got, &p).unwrap();
        b.matmul_reference(&x, c.m, &mut want).unwrap();
        check("bf16", &b.to_f32(), &x, (c.m, c.n, k), &got, &want, false)?;
    }
}

#[test]
fn quantized_matmul_tracks_the_f32_product() {
    // Quantization error end to end, against the unquantized weights: int8 within 1%, int4
    // within 15% of the norm of y (absmax scaling over uniform weights).
    let (m, n, k) = (2, 16, 256);
    let w = fill(n * k, 3);
    let x = fill(m * k, 4);
    let mut exact = vec![0.0; m * n];
    for i in 0..m {
        for r in 0..n {
            exact[i * n + r] = (0..k).map(|j| w[r * k + j] * x[i * k + j]).sum();
        }
    }
    let norm = exact.iter().map(|v| v * v).sum::<f32>().sqrt();
    let p = QuantParams { activations: ActivationMode::F32, ..Default::default() };
    let mut y = vec![0.0; m * n];
    Int8Matrix::quantize(&w, n, k).unwrap().matmul(&x, m, &mut y, &p).unwrap();
    let err = y.iter().zip(&exact).map(|(a, b)| (a - b).powi(2)).sum::<f32>().sqrt();
    assert!(err <= 0.01 * norm, "int8 error {err} vs norm {norm}");
    Int4Matrix::quantize(&w, n, k, 32).unwrap().matmul(&x, m, &mut y, &p).unwrap();
    let err = y.iter().zip(&exact).map(|(a, b)| (a - b).powi(2)).sum::<f32>().sqrt();
    assert!(err <= 0.15 * norm, "int4 error {err} vs norm {norm}");
}
