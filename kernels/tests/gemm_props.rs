//! Property tests: the blocked [`gemm`] agrees with [`gemm_reference`] on random shapes, strides,
//! transposes, accumulate on/off, every available micro-kernel and several thread counts.
//!
//! Small MC/KC/NC are drawn so that the block edges (sizes just above a block, primes, 1) are
//! exercised, not just the micro-kernel's tile edges.
//!
//! Tolerance: `|c − ref| ≤ 1e-5 · Σ_p |a_ip|·|b_pj| + 1e-6`, i.e. relative to the sum of the
//! absolute products, which bounds f32 rounding for any summation order at these sizes.

use dyno_kernels::KernelError;
use dyno_kernels::gemm::{GemmParams, MatMut, MatRef, MicroKernel, gemm, gemm_reference};
use proptest::prelude::*;

/// A strided operand of `rows × cols`: row-major or column-major, with optional padding.
#[derive(Debug, Clone)]
struct Layout {
    col_major: bool,
    pad: usize,
}

impl Layout {
    fn strides(&self, rows: usize, cols: usize) -> (usize, usize, usize) {
        if self.col_major {
            let ld = rows + self.pad;
            (1, ld, ld * cols.max(1))
        } else {
            let ld = cols + self.pad;
            (ld, 1, ld * rows.max(1))
        }
    }
}

fn layout() -> impl Strategy<Value = Layout> {
    (any::<bool>(), prop_oneof![Just(0usize), 1usize..4])
        .prop_map(|(col_major, pad)| Layout { col_major, pad })
}

fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(1usize),
        1usize..20,
        prop::sample::select(vec![2, 3, 5, 7, 13, 17, 31, 33, 65, 97])
    ]
}

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
    k: usize,
    la: Layout,
    lb: Layout,
    lc: Layout,
    accumulate: bool,
    mk: MicroKernel,
    mc: usize,
    kc: usize,
    nc: usize,
    threads: usize,
    seed: u32,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (dim(), dim(), dim()),
        (layout(), layout(), layout()),
        any::<bool>(),
        prop::sample::select(MicroKernel::available()),
        (1usize..40, 1usize..40, 1usize..100, 1usize..5),
        any::<u32>(),
    )
        .prop_map(|((m, n, k), (la, lb, lc), accumulate, mk, (mc, kc, nc, threads), seed)| {
            Case { m, n, k, la, lb, lc, accumulate, mk, mc, kc, nc, threads, seed }
        })
}

fn run(case: &Case) -> Result<(), TestCaseError> {
    let Case { m, n, k, accumulate, .. } = *case;
    let (ars, acs, alen) = case.la.strides(m, k);
    let (brs, bcs, blen) = case.lb.strides(k, n);
    let (crs, ccs, clen) = case.lc.strides(m, n);
    let av = fill(alen, case.seed);
    let bv = fill(blen, case.seed ^ 0x55);
    let a = MatRef { data: &av, rows: m, cols: k, row_stride: ars, col_stride: acs };
    let b = MatRef { data: &bv, rows: k, cols: n, row_stride: brs, col_stride: bcs };
    let c0 = fill(clen, case.seed ^ 0xaa);
    let mut want = c0.clone();
    // Without accumulate C must never be read: start it as NaN.
    let mut got = if accumulate { c0 } else { vec![f32::NAN; clen] };
    gemm_reference(
        a,
        b,
        MatMut { data: &mut want, rows: m, cols: n, row_stride: crs, col_stride: ccs },
        accumulate,
    )
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let params = GemmParams {
        mc: case.mc,
        kc: case.kc,
        nc: case.nc,
        micro_kernel: case.mk,
        threads: case.threads,
    };
    gemm(
        a,
        b,
        MatMut { data: &mut got, rows: m, cols: n, row_stride: crs, col_stride: ccs },
        accumulate,
        &params,
    )
    .map_err(|e| TestCaseError::fail(e.to_string()))?;
    for i in 0..m {
        for j in 0..n {
            let idx = i * crs + j * ccs;
            let bound: f32 = (0..k).map(|p| (a.at(i, p) * b.at(p, j)).abs()).sum();
            let tol = 1e-5 * bound + 1e-6;
            prop_assert!(
                (got[idx] - want[idx]).abs() <= tol,
                "C[{},{}] = {} but reference {} (tol {})",
                i,
                j,
                got[idx],
                want[idx],
                tol
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn gemm_matches_reference(case in case()) {
        run(&case)?;
    }

    #[test]
    fn mismatched_inner_dimension_is_a_shape_error(m in 1usize..9, n in 1usize..9, k in 1usize..9) {
        let a = vec![0.0; m * k];
        let b = vec![0.0; (k + 1) * n];
        let mut c = vec![0.0; m * n];
        let r = gemm(
            MatRef::row_major(&a, m, k),
            MatRef::row_major(&b, k + 1, n),
            MatMut::row_major(&mut c, m, n),
            false,
            &GemmParams::default(),
        );
        let is_shape = matches!(r, Err(KernelError::Shape { .. }));
        prop_assert!(is_shape, "{:?}", r);
    }
}

#[test]
fn larger_than_default_blocks_with_every_micro_kernel() {
    // One case per micro-kernel across the default blocks (k > KC, n > NR·threads).
    for mk in MicroKernel::available() {
        let d = GemmParams::default();
        let case = Case {
            m: 2 * mk.mr() + 3,
            n: 300,
            k: d.kc + 7,
            la: Layout { col_major: false, pad: 0 },
            lb: Layout { col_major: true, pad: 1 },
            lc: Layout { col_major: false, pad: 2 },
            accumulate: true,
            mk,
            mc: d.mc,
            kc: d.kc,
            nc: d.nc,
            threads: 2,
            seed: 7,
        };
        if let Err(e) = run(&case) {
            panic!("{mk}: {e}");
        }
    }
}

#[test]
fn params_yaml_round_trips_and_rejects_unknown_fields() {
    for mk in MicroKernel::ALL.iter().copied() {
        let p = GemmParams { mc: 96, kc: 128, nc: 1024, micro_kernel: mk, threads: 3 };
        let yaml = serde_yaml::to_string(&p).unwrap();
        assert!(yaml.contains(&format!("micro_kernel: {}", mk.name())), "{yaml}");
        let back: GemmParams = serde_yaml::from_str(&yaml).unwrap();
        assert_eq!(back, p);
    }
    let yaml = "mc: 96\nkc: 128\nnc: 1024\nmicro_kernel: scalar_4x4\nthreads: 1\nmr: 4\n";
    let err = serde_yaml::from_str::<GemmParams>(yaml).unwrap_err().to_string();
    assert!(err.contains("mr"), "{err}");
    let yaml = "mc: 96\nkc: 128\nnc: 1024\nmicro_kernel: avx3_1x1\nthreads: 1\n";
    assert!(serde_yaml::from_str::<GemmParams>(yaml).is_err());
}

#[test]
fn validate_rejects_zeros_and_unavailable_micro_kernels() {
    let base = GemmParams::default();
    for (field, p) in [
        ("mc", GemmParams { mc: 0, ..base }),
        ("kc", GemmParams { kc: 0, ..base }),
        ("nc", GemmParams { nc: 0, ..base }),
        ("threads", GemmParams { threads: 0, ..base }),
    ] {
        let e = p.validate().unwrap_err();
        assert_eq!(e.field, field);
        let msg = e.to_string();
        assert!(msg.contains(field) && msg.contains('0'), "{msg}");
    }
    for &mk in MicroKernel::ALL {
        let p = GemmParams { micro_kernel: mk, ..base };
        match p.validate() {
            Ok(()) => assert!(mk.isa().is_available()),
            Err(e) => {
                assert!(!mk.isa().is_available());
                assert_eq!(e.field, "micro_kernel");
                assert!(e.to_string().contains(mk.name()), "{e}");
            }
        }
    }
}
