//! Property tests: the fast elementwise ops against their f64 oracles.
//!
//! Deterministic (fixed proptest seed, no failure files). Tolerances, per op:
//! - rms_norm: `|fast − ref| ≤ 1e-5·|ref| + 1e-5·max|ref row|` (f32 sum of squares over up to
//!   a few hundred terms, split over 8 lanes);
//! - rope: `1e-5·|ref| + 1e-5` for inputs in [-1, 1] (angles in f64, cos/sin rounded to f32);
//! - silu_mul: `1e-5·|ref| + 1e-6`;
//! - softmax: `1e-5·|ref| + 1e-7` (fast exp < 4e-7 relative, f32 row sums);
//! - top_k: exact.

use dyno_kernels::KernelError;
use dyno_kernels::ops::{
    RopeTable, rms_norm, rms_norm_reference, rope, rope_reference, silu_mul, silu_mul_reference,
    softmax, softmax_reference, top_k, top_k_reference,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

fn config() -> Config {
    Config {
        cases: 128,
        rng_seed: RngSeed::Fixed(0x0B5_5EED),
        failure_persistence: None,
        ..Config::default()
    }
}

fn check(fast: &[f32], reference: &[f32], rel: f32, abs: f32, what: &str) {
    assert_eq!(fast.len(), reference.len());
    for (i, (a, b)) in fast.iter().zip(reference).enumerate() {
        let tol = rel * b.abs() + abs;
        assert!((a - b).abs() <= tol, "{what}: element {i}: fast {a} vs reference {b}");
    }
}

/// `(rows, d, x)` with `x` of `rows × d` values in [-lim, lim].
fn matrix(
    max_rows: usize,
    max_d: usize,
    lim: f32,
) -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
    (1..=max_rows, 1..=max_d)
        .prop_flat_map(move |(r, d)| (Just(r), Just(d), prop::collection::vec(-lim..lim, r * d)))
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn rms_norm_matches_reference(
        (rows, d, x) in matrix(4, 300, 10.0),
        w_seed in prop::collection::vec(-2.0f32..2.0, 300),
        eps in prop::sample::select(vec![1e-6f32, 1e-5, 1e-2]),
    ) {
        let w = &w_seed[..d];
        let mut fast = vec![0.0; rows * d];
        let mut want = vec![0.0; rows * d];
        rms_norm(&x, w, eps, &mut fast).unwrap();
        rms_norm_reference(&x, w, eps, &mut want).unwrap();
        for (f, r) in fast.chunks(d).zip(want.chunks(d)) {
            let big = r.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            check(f, r, 1e-5, 1e-5 * big, "rms_norm");
        }
    }

    #[test]
    fn rope_matches_reference(
        tokens in 1usize..6,
        heads in 1usize..5,
        half in prop::sample::select(vec![1usize, 4, 32, 64]),
        theta in prop::sample::select(vec![10_000.0f32, 1_000_000.0]),
        positions in prop::collection::vec(0usize..8192, 6),
        seed in prop::collection::vec(-1.0f32..1.0, 6 * 4 * 128),
    ) {
        let head_dim = 2 * half;
        let positions = &positions[..tokens];
        let x = &seed[..tokens * heads * head_dim];
        let mut want = x.to_vec();
        rope_reference(&mut want, positions, heads, head_dim, theta).unwrap();
        let mut fast = x.to_vec();
        rope(&mut fast, positions, heads, head_dim, theta).unwrap();
        check(&fast, &want, 1e-5, 1e-5, "rope");
        let table = RopeTable::new(head_dim, theta, 8192).unwrap();
        let mut tabled = x.to_vec();
        table.apply(&mut tabled, positions, heads).unwrap();
        check(&tabled, &want, 1e-5, 1e-5, "RopeTable");
    }

    #[test]
    fn silu_mul_matches_reference(
        gu in prop::collection::vec((-30.0f32..30.0, -10.0f32..10.0), 0..200),
    ) {
        let (g, u): (Vec<f32>, Vec<f32>) = gu.into_iter().unzip();
        let mut fast = vec![0.0; g.len()];
        let mut want = vec![0.0; g.len()];
        silu_mul(&g, &u, &mut fast).unwrap();
        silu_mul_reference(&g, &u, &mut want).unwrap();
        check(&fast, &want, 1e-5, 1e-6, "silu_mul");
    }

    #[test]
    fn softmax_matches_reference((rows, n, x) in matrix(4, 1000, 50.0)) {
        let mut fast = x.clone();
        let mut want = x;
        softmax(&mut fast, n).unwrap();
        softmax_reference(&mut want, n).unwrap();
        check(&fast, &want, 1e-5, 1e-7, "softmax");
        for row in fast.chunks(n).take(rows) {
            let sum: f32 = row.iter().sum();
            prop_assert!((sum - 1.0).abs() < 1e-4);
        }
    }

    /// Values from a tiny set so ties, `-0.0`, infinities and NaN all show up.
    #[test]
    fn top_k_matches_reference(
        picks in prop::collection::vec(0usize..8, 0..60),
        k in 0usize..70,
    ) {
        let values = [0.0f32, -0.0, 1.0, -1.0, 2.5, f32::NAN, f32::INFINITY, f32::NEG_INFINITY];
        let x: Vec<f32> = picks.iter().map(|&i| values[i]).collect();
        let fast = top_k(&x, k);
        let want = top_k_reference(&x, k);
        prop_assert_eq!(fast.len(), k.min(x.len()));
        for (a, b) in fast.iter().zip(&want) {
            prop_assert_eq!(a.0, b.0);
            prop_assert!(a.1 == b.1 || (a.1.is_nan() && b.1.is_nan()));
        }
        // NaN never ranks ahead of a number.
        if let Some(first_nan) = fast.iter().position(|p| p.1.is_nan()) {
            prop_assert!(fast[first_nan..].iter().all(|p| p.1.is_nan()));
        }
    }

    #[test]
    fn top_k_large_k_matches_reference(
        x in prop::collection::vec(-100.0f32..100.0, 0..300),
        k in 0usize..300,
    ) {
        prop_assert_eq!(top_k(&x, k), top_k_reference(&x, k));
    }
}

#[test]
fn top_k_breaks_ties_by_lower_index() {
    let x = [1.0, 3.0, 3.0, f32::NAN, 2.0, 3.0];
    assert_eq!(top_k(&x, 3), vec![(1, 3.0), (2, 3.0), (5, 3.0)]);
    let all = top_k(&x, 10);
    assert_eq!(all.len(), 6);
    assert_eq!(all[5].0, 3, "NaN comes last");
}

#[test]
fn softmax_of_huge_values_is_stable() {
    let mut x = vec![1000.0, 1000.0, -1000.0, 999.0];
    softmax(&mut x, 4).unwrap();
    assert!(x.iter().all(|v| v.is_finite()));
    assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);
}

#[test]
fn rms_norm_of_4096_wide_rows() {
    let x: Vec<f32> = (0..2 * 4096).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
    let w: Vec<f32> = (0..4096).map(|i| 0.5 + (i % 13) as f32 / 13.0).collect();
    let mut fast = vec![0.0; x.len()];
    let mut want = vec![0.0; x.len()];
    rms_norm(&x, &w, 1e-5, &mut fast).unwrap();
    rms_norm_reference(&x, &w, 1e-5, &mut want).unwrap();
    check(&fast, &want, 2e-5, 1e-6, "rms_norm 4096");
}

#[test]
fn bad_shapes_are_errors() {
    let shape =
        |r: Result<(), KernelError>| assert!(matches!(r, Err(KernelError::Shape { .. })), "{r:?}");
    shape(rms_norm(&[1.0; 5], &[1.0; 2], 1e-5, &mut [0.0; 5]));
    shape(rms_norm(&[1.0; 4], &[1.0; 2], 1e-5, &mut [0.0; 3]));
    shape(rms_norm(&[1.0; 4], &[], 1e-5, &mut [0.0; 4]));
    shape(rope(&mut [0.0; 8], &[0, 1], 1, 3, 1e4));
    shape(rope(&mut [0.0; 8], &[0], 1, 4, 1e4));
    shape(silu_mul(&[0.0; 3], &[0.0; 2], &mut [0.0; 3]));
    shape(softmax(&mut [0.0; 7], 2));
    shape(softmax(&mut [0.0; 4], 0));
    let table = RopeTable::new(4, 1e4, 10).unwrap();
    shape(table.apply(&mut [0.0; 4], &[10], 1));
    assert!(RopeTable::new(3, 1e4, 10).is_err());
}
