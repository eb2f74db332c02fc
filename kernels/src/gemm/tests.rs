//! Unit tests: edge shapes, strides, accumulate, every available micro-kernel, params.
//!
//! Tolerance: `|c − ref| ≤ 1e-5 · Σ_p |a_ip|·|b_pj| + 1e-6` (relative to the sum of absolute
//! products, so it holds for any f32 summation order).

use super::*;

/// Deterministic pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn assert_close(a: MatRef, b: MatRef, got: &[f32], want: &[f32], ldc: usize, what: &str) {
    for i in 0..a.rows {
        for j in 0..b.cols {
            let bound: f32 = (0..a.cols).map(|p| (a.at(i, p) * b.at(p, j)).abs()).sum();
            let (g, w) = (got[i * ldc + j], want[i * ldc + j]);
            assert!(
                (g - w).abs() <= 1e-5 * bound + 1e-6,
                "{what}: C[{i},{j}] = {g}, reference {w}"
            );
        }
    }
}

fn params(mk: MicroKernel, mc: usize, kc: usize, nc: usize, threads: usize) -> GemmParams {
    GemmParams { mc, kc, nc, micro_kernel: mk, threads }
}

fn check_case(m: usize, n: usize, k: usize, p: &GemmParams, accumulate: bool) {
    let av = values(m * k, 1);
    let bv = values(k * n, 2);
    let c0 = values(m * n, 3);
    let a = MatRef::row_major(&av, m, k);
    let b = MatRef::row_major(&bv, k, n);
    let mut want = c0.clone();
    gemm_reference(a, b, MatMut::row_major(&mut want, m, n), accumulate).unwrap();
    let mut got = if accumulate { c0 } else { vec![f32::NAN; m * n] };
    gemm(a, b, MatMut::row_major(&mut got, m, n), accumulate, p).unwrap();
    assert_close(a, b, &got, &want, n, &format!("{m}×{n}×{k} {p:?} acc={accumulate}"));
}

#[test]
fn every_micro_kernel_on_edge_shapes() {
    for mk in MicroKernel::available() {
        for &(m, n, k) in
            &[(1, 1, 1), (7, 13, 5), (mk.mr(), mk.nr(), 3), (23, 37, 29), (33, 65, 70)]
        {
            for threads in [1, 2, 3] {
                for accumulate in [false, true] {
                    check_case(m, n, k, &params(mk, 8, 16, 32, threads), accumulate);
                }
            }
        }
        check_case(100, 90, 300, &GemmParams { micro_kernel: mk, ..GemmParams::default() }, true);
    }
}

#[test]
fn default_params_on_decode_and_square_shapes() {
    let p = GemmParams::default();
    p.validate().unwrap();
    check_case(8, 300, 270, &p, false);
    check_case(129, 131, 257, &p, true);
    check_case(300, 5, 40, &p, false);
}

#[test]
fn transposed_and_padded_views() {
    let (m, n, k) = (19, 27, 33);
    for mk in MicroKernel::available() {
        let p = params(mk, 12, 8, 40, 2);
        // A as the transpose of a row-major [k, m]; B = Wᵀ of a row-major [n, k] weight.
        let at = values(k * m, 4);
        let w = values(n * k, 5);
        let a = MatRef::transposed(&at, k, m);
        let b = MatRef::transposed(&w, n, k);
        // C column-major with a padded leading dimension.
        let ld = m + 3;
        let mut want = vec![0.0; ld * n];
        let mut got = vec![f32::NAN; ld * n];
        fn cm(d: &mut [f32], m: usize, n: usize, ld: usize) -> MatMut<'_> {
            MatMut { data: d, rows: m, cols: n, row_stride: 1, col_stride: ld }
        }
        gemm_reference(a, b, cm(&mut want, m, n, ld), false).unwrap();
        gemm(a, b, cm(&mut got, m, n, ld), false, &p).unwrap();
        // Compare through the transposed layout.
        for i in 0..m {
            for j in 0..n {
                let bound: f32 = (0..k).map(|q| (a.at(i, q) * b.at(q, j)).abs()).sum();
                let (g, r) = (got[i + j * ld], want[i + j * ld]);
                assert!((g - r).abs() <= 1e-5 * bound + 1e-6, "{mk}: C[{i},{j}] {g} vs {r}");
            }
        }
        // The padding between columns is never written.
        for j in 0..n {
            for i in m..ld {
                assert!(got[i + j * ld].is_nan());
            }
        }
    }
}

#[test]
fn empty_dimensions() {
    let p = GemmParams::default();
    let mut c = vec![f32::NAN; 6];
    // k = 0 without accumulate zeroes C.
    gemm(
        MatRef::row_major(&[], 2, 0),
        MatRef::row_major(&[], 0, 3),
        MatMut::row_major(&mut c, 2, 3),
        false,
        &p,
    )
    .unwrap();
    assert_eq!(c, vec![0.0; 6]);
    // k = 0 with accumulate leaves C alone.
    let mut c = vec![1.5; 6];
    gemm(
        MatRef::row_major(&[], 2, 0),
        MatRef::row_major(&[], 0, 3),
        MatMut::row_major(&mut c, 2, 3),
        true,
        &p,
    )
    .unwrap();
    assert_eq!(c, vec![1.5; 6]);
    // m = 0 / n = 0 are no-ops.
    let a = [1.0; 4];
    gemm(
        MatRef::row_major(&[], 0, 4),
        MatRef::row_major(&a, 4, 1),
        MatMut::row_major(&mut [], 0, 1),
        false,
        &p,
    )
    .unwrap();
    gemm(
        MatRef::row_major(&a, 1, 4),
        MatRef::row_major(&[], 4, 0),
        MatMut::row_major(&mut [], 1, 0),
        false,
        &p,
    )
    .unwrap();
}

#[test]
fn shape_errors() {
    let p = GemmParams::default();
    let a = vec![0.0; 6];
    let b = vec![0.0; 6];
    let mut c = vec![0.0; 4];
    // inner dimensions disagree
    let e = gemm(
        MatRef::row_major(&a, 2, 3),
        MatRef::row_major(&b, 2, 3),
        MatMut::row_major(&mut c, 2, 2),
        false,
        &p,
    );
    assert!(matches!(e, Err(KernelError::Shape { .. })), "{e:?}");
    // buffer too small
    let e = gemm(
        MatRef::row_major(&a, 2, 3),
        MatRef::row_major(&b, 3, 2),
        MatMut::row_major(&mut c[..3], 2, 2),
        false,
        &p,
    );
    assert!(matches!(e, Err(KernelError::Shape { .. })), "{e:?}");
    // overlapping C
    let c = MatMut { data: &mut c, rows: 2, cols: 2, row_stride: 1, col_stride: 1 };
    let e = gemm(MatRef::row_major(&a, 2, 3), MatRef::row_major(&b, 3, 2), c, false, &p);
    assert!(matches!(e, Err(KernelError::Shape { .. })), "{e:?}");
}

#[test]
fn validate_names_the_field() {
    for field in ["mc", "kc", "nc", "threads"] {
        let mut p = GemmParams::default();
        match field {
            "mc" => p.mc = 0,
            "kc" => p.kc = 0,
            "nc" => p.nc = 0,
            _ => p.threads = 0,
        }
        let e = p.validate().unwrap_err();
        assert_eq!(e.field, field);
        assert!(e.to_string().contains(field), "{e}");
    }
    if let Some(&mk) = MicroKernel::ALL.iter().find(|m| !m.isa().is_available()) {
        let p = GemmParams { micro_kernel: mk, ..GemmParams::default() };
        let e = p.validate().unwrap_err();
        assert_eq!(e.field, "micro_kernel");
        assert!(e.to_string().contains(mk.name()), "{e}");
        assert!(
            gemm(
                MatRef::row_major(&[1.0], 1, 1),
                MatRef::row_major(&[1.0], 1, 1),
                MatMut::row_major(&mut [0.0], 1, 1),
                false,
                &p
            )
            .is_err()
        );
    }
}

#[test]
fn micro_kernel_table_is_consistent() {
    for &mk in MicroKernel::ALL {
        assert!(mk.mr() * mk.nr() <= 14 * 32);
        let yaml = serde_yaml::to_string(&mk).unwrap();
        assert_eq!(yaml.trim(), mk.name());
        assert_eq!(mk.name(), format!("{}_{}x{}", mk.isa(), mk.mr(), mk.nr()));
    }
    for isa in Isa::ALL {
        assert_eq!(MicroKernel::default_for(isa).isa(), isa);
        GemmParams::default_for(isa);
    }
    assert!(MicroKernel::available().contains(&MicroKernel::default_for(Isa::detect())));
}

#[test]
fn grid_uses_threads_for_skinny_and_tall_shapes() {
    // decode: m = 8 rows → split columns
    assert_eq!(driver::grid(2, 2, 256), (1, 2));
    // tall and thin: n = 1 tile → split rows
    assert_eq!(driver::grid(4, 100, 1), (4, 1));
    // a single tile: one worker
    assert_eq!(driver::grid(8, 1, 1), (1, 1));
    let (tm, tn) = driver::grid(3, 50, 50);
    assert!(tm * tn <= 3 && tm * tn >= 2);
}
