//! Property tests: fast quantized / bf16 matmul against the reference oracles, quantization
//! error bounds, and parameter / shape errors.
//!
//! Run once per ISA path: `cargo test -p dyno-kernels --test quant_props` and again with
//! `DYNO_MAX_ISA=scalar`.

use dyno_kernels::dense::{Bf16Matrix, DenseParams, F32Matrix};
use dyno_kernels::quant::{ActivationMode, Int4Matrix, Int8Matrix, QuantParams};
use proptest::prelude::*;

const MODES: [ActivationMode; 3] =
    [ActivationMode::F32, ActivationMode::Int8, ActivationMode::Auto];

/// Deterministic pseudo-random values in `[-1, 1)`, with whole 32-blocks zeroed now and then
/// and a few larger outliers, from a seed (splitmix64).
fn data(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    let mut s = seed;
    let mut next = move || {
        s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut v: Vec<f32> =
        (0..len).map(|_| ((next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale).collect();
    for block in v.chunks_mut(32) {
        match next() % 16 {
            0 => block.fill(0.0),
            1 => block[0] *= 8.0,
            _ => {}
        }
    }
    v
}

/// Σ_i |w_ji| |x_ri| for every (r, j): the natural scale of f32 rounding error in y[r, j].
fn abs_dot(w: &[f32], x: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for r in 0..m {
        for j in 0..n {
            out[r * n + j] =
                (0..k).map(|i| f64::from(w[j * k + i].abs()) * f64::from(x[r * k + i].abs())).sum();
        }
    }
    out
}

/// The activation-quantization bound for Int8 mode: per 32-block of x row r, every element
/// moves by at most scale_x / 2 = max|x_b| / 254, so
/// |Δy[r, j]| ≤ Σ_b (max|x_b| / 254) · Σ_{i∈b} |w_ji|.
fn act_bound(w: &[f32], x: &[f32], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for r in 0..m {
        for j in 0..n {
            let mut b = 0.0;
            for blk in 0..k / 32 {
                let xs = &x[r * k + blk * 32..r * k + blk * 32 + 32];
                let half_step = f64::from(xs.iter().fold(0.0f32, |a, v| a.max(v.abs()))) / 254.0;
                let wsum: f64 = w[j * k + blk * 32..j * k + blk * 32 + 32]
                    .iter()
                    .map(|v| f64::from(v.abs()))
                    .sum();
                b += half_step * wsum;
            }
            out[r * n + j] = b;
        }
    }
    out
}

/// Checks `got` against `want` with `|Δ| ≤ 1e-4 · Σ|w||x| + extra + 1e-6`.
///
/// 1e-4 relative to Σ|w||x| covers f32 accumulation over k ≤ 512 (worst case ≈ k · 2^-24 ≈
/// 3e-5) plus the per-block scale products; `extra` is the Int8-activation bound.
fn check_close(
    got: &[f32],
    want: &[f32],
    absd: &[f64],
    extra: Option<&[f64]>,
    what: &str,
) -> Result<(), TestCaseError> {
    for i in 0..got.len() {
        let tol = 1e-4 * absd[i] + extra.map_or(0.0, |e| e[i]) + 1e-6;
        let err = (f64::from(got[i]) - f64::from(want[i])).abs();
        prop_assert!(
            err <= tol,
            "{what}: y[{i}] = {} vs reference {} (|Δ| = {err:e} > tol {tol:e})",
            got[i],
            want[i]
        );
    }
    Ok(())
}

/// Runs every activation mode and thread count against the reference.
///
/// `wmag` is the magnitude the Int8-activation SIMD kernel's f32 rounding scales with: `|w|`
/// for int8, but `|w| + 8 · scale` for int4, whose kernel multiplies the stored nibbles
/// `q + 8` and subtracts `8 · scale · Σx` afterwards (so the rounding of that offset shows up
/// even where `w = 0`).
fn check_matmul(
    name: &str,
    (wdeq, wmag): (&[f32], &[f32]),
    x: &[f32],
    (m, n, k): (usize, usize, usize),
    row_tile: usize,
    fast: impl Fn(&[f32], &mut [f32], &QuantParams) -> Result<(), dyno_kernels::KernelError>,
    reference: &[f32],
) -> Result<(), TestCaseError> {
    let absd = abs_dot(wdeq, x, m, n, k);
    let absd_int8 = abs_dot(wmag, x, m, n, k);
    let bound = act_bound(wdeq, x, m, n, k);
    for activations in MODES {
        for threads in [1, 2] {
            let params = QuantParams { row_tile, threads, activations };
            let mut y = vec![f32::NAN; m * n];
            fast(x, &mut y, &params).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let int8 = activations.resolve() == ActivationMode::Int8;
            let extra = int8.then_some(&bound[..]);
            let absd = if int8 { &absd_int8 } else { &absd };
            check_close(
                &y,
                reference,
                absd,
                extra,
                &format!("{name} m={m} n={n} k={k} {params:?}"),
            )?;
        }
    }
    Ok(())
}

proptest! {
    // Fixed seed: the same cases on every run (failures still persist to the regressions file).
    #![proptest_config(ProptestConfig {
        cases: 64,
        rng_seed: proptest::test_runner::RngSeed::Fixed(0x5EED_D1A0),
        ..ProptestConfig::default()
    })]

    #[test]
    fn int8_matches_reference(m in 1usize..=9, n in 1usize..=41, blocks in 1usize..=16, row_tile in 1usize..=9, seed in any::<u64>()) {
        let k = blocks * 32;
        let w = data(seed, n * k, 1.0);
        let x = data(seed ^ 0xABCD, m * k, 2.0);
        let q = Int8Matrix::quantize(&w, n, k).unwrap();
        let wdeq = q.dequantize();
        let mut want = vec![0.0; m * n];
        q.matmul_reference(&x, m, &mut want).unwrap();
        check_matmul("int8", (&wdeq, &wdeq), &x, (m, n, k), row_tile, |x, y, p| q.matmul(x, m, y, p), &want)?;
    }

    #[test]
    fn int4_matches_reference(m in 1usize..=9, n in 1usize..=41, gi in 0usize..3, groups in 1usize..=4, row_tile in 1usize..=9, seed in any::<u64>()) {
        let group = [32, 64, 128][gi];
        let k = groups * group;
        let w = data(seed, n * k, 1.0);
        let x = data(seed ^ 0x1234, m * k, 2.0);
        let q = Int4Matrix::quantize(&w, n, k, group).unwrap();
        let wdeq = q.dequantize();
        let mut want = vec![0.0; m * n];
        q.matmul_reference(&x, m, &mut want).unwrap();
        let wmag: Vec<f32> = wdeq.iter().enumerate().map(|(i, v)| v.abs() + 8.0 * q.scales()[i / group].to_f32()).collect();
        check_matmul("int4", (&wdeq, &wmag), &x, (m, n, k), row_tile, |x, y, p| q.matmul(x, m, y, p), &want)?;
    }

    /// The decode case (one activation row) has its own kernels: several weight rows per
    /// step, and for int4 eight chunks per step when `k % 256 == 0`; `n` covers rows left over.
    #[test]
    fn int8_gemv_matches_reference(n in 1usize..=41, blocks in 1usize..=40, seed in any::<u64>()) {
        let k = blocks * 32;
        let w = data(seed, n * k, 1.0);
        let x = data(seed ^ 0xBEEF, k, 2.0);
        let q = Int8Matrix::quantize(&w, n, k).unwrap();
        let wdeq = q.dequantize();
        let mut want = vec![0.0; n];
        q.matmul_reference(&x, 1, &mut want).unwrap();
        check_matmul("int8 gemv", (&wdeq, &wdeq), &x, (1, n, k), 1, |x, y, p| q.matmul(x, 1, y, p), &want)?;
    }

    #[test]
    fn int4_gemv_matches_reference(n in 1usize..=41, gi in 0usize..3, steps in 1usize..=5, odd in any::<bool>(), seed in any::<u64>()) {
        let group = [32, 64, 128][gi];
        // Multiples of 256 take the eight-chunk kernel; `odd` adds one group to leave it.
        let k = steps * 256 + if odd { group } else { 0 };
        let w = data(seed, n * k, 1.0);
        let x = data(seed ^ 0x4321, k, 2.0);
        let q = Int4Matrix::quantize(&w, n, k, group).unwrap();
        let wdeq = q.dequantize();
        let mut want = vec![0.0; n];
        q.matmul_reference(&x, 1, &mut want).unwrap();
        let wmag: Vec<f32> = wdeq.iter().enumerate().map(|(i, v)| v.abs() + 8.0 * q.scales()[i / group].to_f32()).collect();
        check_matmul("int4 gemv", (&wdeq, &wmag), &x, (1, n, k), 1, |x, y, p| q.matmul(x, 1, y, p), &want)?;
    }

    /// bf16 against the reference computed from the same bf16 weights: only f32 accumulation
    /// error remains, ≤ 1e-4 · Σ|w||x| for k < 600.
    #[test]
    fn bf16_matches_reference(m in 1usize..=9, n in 1usize..=41, k in 1usize..=600, row_tile in 1usize..=9, seed in any::<u64>()) {
        let w = data(seed, n * k, 1.0);
        let x = data(seed ^ 0x77, m * k, 2.0);
        let b = Bf16Matrix::from_f32(&w, n, k).unwrap();
        let mut want = vec![0.0; m * n];
        b.matmul_reference(&x, m, &mut want).unwrap();
        let absd = abs_dot(&b.to_f32(), &x, m, n, k);
        for threads in [1, 2] {
            let mut y = vec![f32::NAN; m * n];
            b.matmul(&x, m, &mut y, &DenseParams { row_tile, threads }).unwrap();
            check_close(&y, &want, &absd, None, &format!("bf16 m={m} n={n} k={k} threads={threads}"))?;
        }
    }

    /// f32 weights: the same streaming kernel, only accumulation order differs.
    #[test]
    fn f32_dense_matches_reference(m in 1usize..=9, n in 1usize..=41, k in 1usize..=600, row_tile in 1usize..=9, seed in any::<u64>()) {
        let w = data(seed, n * k, 1.0);
        let x = data(seed ^ 0x99, m * k, 2.0);
        let f = F32Matrix::from_f32(&w, n, k).unwrap();
        assert_eq!(f.to_f32(), w);
        let mut want = vec![0.0; m * n];
        f.matmul_reference(&x, m, &mut want).unwrap();
        let absd = abs_dot(&w, &x, m, n, k);
        for threads in [1, 2] {
            let mut y = vec![f32::NAN; m * n];
            f.matmul(&x, m, &mut y, &DenseParams { row_tile, threads }).unwrap();
            check_close(&y, &want, &absd, None, &format!("f32 m={m} n={n} k={k} threads={threads}"))?;
        }
    }

    /// Quantize → dequantize moves each weight by at most half a step (scale / 2); the f16
    /// scale is used as stored, so only a hair of f32 rounding is allowed on top.
    #[test]
    fn dequantize_error_is_half_a_step(n in 1usize..=9, blocks in 1usize..=8, gi in 0usize..3, seed in any::<u64>()) {
        let w = data(seed, n * blocks * 128, 3.0);
        let k = blocks * 128;
        let q8 = Int8Matrix::quantize(&w, n, k).unwrap();
        for (i, (a, b)) in w.iter().zip(q8.dequantize()).enumerate() {
            let s = q8.scales()[i / 32].to_f32();
            prop_assert!((a - b).abs() <= s * 0.5 * (1.0 + 1e-5) + 1e-12, "int8 w[{i}] = {a} → {b}, scale {s}");
        }
        let group = [32, 64, 128][gi];
        let q4 = Int4Matrix::quantize(&w, n, k, group).unwrap();
        for (i, (a, b)) in w.iter().zip(q4.dequantize()).enumerate() {
            let s = q4.scales()[i / group].to_f32();
            prop_assert!((a - b).abs() <= s * 0.5 * (1.0 + 1e-5) + 1e-12, "int4 w[{i}] = {a} → {b}, scale {s}");
        }
    }
}

#[test]
fn zero_blocks_give_zero_scale_and_no_nan() {
    let w = vec![0.0f32; 3 * 128];
    let q8 = Int8Matrix::quantize(&w, 3, 128).unwrap();
    assert!(q8.scales().iter().all(|s| s.to_f32() == 0.0));
    assert!(q8.dequantize().iter().all(|&v| v == 0.0));
    let q4 = Int4Matrix::quantize(&w, 3, 128, 64).unwrap();
    assert!(q4.scales().iter().all(|s| s.to_f32() == 0.0));
    assert!(q4.dequantize().iter().all(|&v| v == 0.0));
    let x = vec![1.0f32; 128];
    let mut y = vec![f32::NAN; 3];
    for activations in MODES {
        let p = QuantParams { activations, ..QuantParams::default() };
        q8.matmul(&x, 1, &mut y, &p).unwrap();
        assert_eq!(y, [0.0; 3]);
        q4.matmul(&x, 1, &mut y, &p).unwrap();
        assert_eq!(y, [0.0; 3]);
    }
}

#[test]
fn sizes_and_bits_per_weight() {
    let w = data(1, 64 * 256, 1.0);
    let q8 = Int8Matrix::quantize(&w, 64, 256).unwrap();
    assert_eq!(q8.weight_bytes() * 8, 64 * 256 * 17 / 2); // 8.5 bits/weight
    let q4 = Int4Matrix::quantize(&w, 64, 256, 32).unwrap();
    assert_eq!(q4.weight_bytes() * 8, 64 * 256 * 9 / 2); // 4.5 bits/weight
    let q4 = Int4Matrix::quantize(&w, 64, 256, 128).unwrap();
    assert_eq!(q4.group(), 128);
    assert_eq!(q4.weight_bytes(), 64 * 128 + 64 * 2 * 2);
    let b = Bf16Matrix::from_f32(&w, 64, 256).unwrap();
    assert_eq!(b.weight_bytes(), 64 * 256 * 2);
}

#[test]
fn from_parts_round_trips() {
    let w = data(2, 5 * 64, 1.0);
    let q8 = Int8Matrix::quantize(&w, 5, 64).unwrap();
    let again = Int8Matrix::from_parts(q8.quants().to_vec(), q8.scales().to_vec(), 5, 64).unwrap();
    assert_eq!(again, q8);
    let q4 = Int4Matrix::quantize(&w, 5, 64, 64).unwrap();
    let again =
        Int4Matrix::from_parts(q4.packed().to_vec(), q4.scales().to_vec(), 5, 64, 64).unwrap();
    assert_eq!(again, q4);
    let err = Int4Matrix::from_parts(vec![0; 160], q4.scales().to_vec(), 5, 64, 64).unwrap_err();
    assert!(err.to_string().contains("nibble 0"), "{err}");
}

#[test]
fn errors_name_the_bad_field_or_shape() {
    let w = vec![0.5f32; 4 * 48];
    let e = Int8Matrix::quantize(&w, 4, 48).unwrap_err().to_string();
    assert!(e.contains("cols = 48") && e.contains("multiple"), "{e}");
    let e = Int4Matrix::quantize(&w, 4, 48, 32).unwrap_err().to_string();
    assert!(e.contains("cols = 48"), "{e}");
    let w = vec![0.5f32; 4 * 96];
    let e = Int4Matrix::quantize(&w, 4, 96, 48).unwrap_err().to_string();
    assert!(e.contains("`group` = 48"), "{e}");
    let e = Int8Matrix::quantize(&w, 5, 96).unwrap_err().to_string();
    assert!(e.contains("rows × cols"), "{e}");
    let e = Int8Matrix::quantize(&[f32::NAN; 32], 1, 32).unwrap_err().to_string();
    assert!(e.contains("not finite"), "{e}");

    let q = Int8Matrix::quantize(&w, 4, 96).unwrap();
    let p = QuantParams::default();
    let mut y = vec![0.0; 8];
    let e = q.matmul(&[0.0; 95], 2, &mut y, &p).unwrap_err().to_string();
    assert!(e.contains("x has 95"), "{e}");
    let e = q.matmul(&[0.0; 192], 2, &mut y[..7], &p).unwrap_err().to_string();
    assert!(e.contains("y has 7"), "{e}");
    let e = q.matmul_reference(&[0.0; 95], 2, &mut y).unwrap_err().to_string();
    assert!(e.contains("x has 95"), "{e}");
    let e =
        q.matmul(&[0.0; 192], 2, &mut y, &QuantParams { threads: 0, ..p }).unwrap_err().to_string();
    assert!(e.contains("`threads` = 0"), "{e}");
    let e = q
        .matmul(&[0.0; 192], 2, &mut y, &QuantParams { row_tile: 0, ..p })
        .unwrap_err()
        .to_string();
    assert!(e.contains("`row_tile` = 0"), "{e}");

    let b = Bf16Matrix::from_f32(&w, 4, 96).unwrap();
    let e = b.matmul(&[0.0; 96], 1, &mut y[..3], &DenseParams::default()).unwrap_err().to_string();
    assert!(e.contains("y has 3"), "{e}");
    let e = DenseParams { threads: 0, row_tile: 1 }.validate().unwrap_err().to_string();
    assert!(e.contains("`threads` = 0"), "{e}");
    assert!(Bf16Matrix::from_f32(&w, 5, 96).is_err());
}

#[test]
fn params_serde() {
    let p: QuantParams =
        serde_yaml::from_str("row_tile: 4\nthreads: 2\nactivations: int8\n").unwrap();
    assert_eq!(p, QuantParams { row_tile: 4, threads: 2, activations: ActivationMode::Int8 });
    let back: QuantParams = serde_yaml::from_str(&serde_yaml::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
    assert!(serde_yaml::from_str::<QuantParams>("row_tile: 4\nbogus: 1\n").is_err());
    assert!(serde_yaml::from_str::<QuantParams>("activations: f16\n").is_err());
    let a: ActivationMode = serde_yaml::from_str("auto").unwrap();
    assert_eq!(a, ActivationMode::Auto);
    let b: DenseParams = serde_yaml::from_str("row_tile: 2\nthreads: 1\n").unwrap();
    assert_eq!(b, DenseParams { row_tile: 2, threads: 1 });
    assert!(serde_yaml::from_str::<DenseParams>("row_tile: 2\nextra: 1\n").is_err());
}

/// Batching must not change results beyond rounding: every row of an m = 7 product matches
/// the m = 1 GEMV of that row in F32 mode (same per-row arithmetic order).
#[test]
fn batched_rows_match_gemv() {
    let (m, n, k) = (7, 13, 256);
    let w = data(3, n * k, 1.0);
    let x = data(4, m * k, 1.0);
    let q = Int4Matrix::quantize(&w, n, k, 64).unwrap();
    for activations in MODES {
        let p = QuantParams { row_tile: 3, threads: 2, activations };
        let mut y = vec![0.0; m * n];
        q.matmul(&x, m, &mut y, &p).unwrap();
        for r in 0..m {
            let mut y1 = vec![0.0; n];
            q.matmul(&x[r * k..(r + 1) * k], 1, &mut y1, &p).unwrap();
            for j in 0..n {
                assert!(
                    (y1[j] - y[r * n + j]).abs() <= 1e-5 * (1.0 + y1[j].abs()),
                    "{activations:?} r={r} j={j}"
                );
            }
        }
    }
}
