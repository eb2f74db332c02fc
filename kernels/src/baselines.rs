//! Third-party GEMMs (`gemm`, `matrixmultiply`) as baselines.
//!
//! Both compute `c = a·b` for contiguous row-major `a` (m×k), `b` (k×n), `c` (m×n).
//!
//! The `gemm` crate is used through its f32 half, `gemm-f32` (with `gemm-common`): the `gemm`
//! facade only picks the element type's kernel at run time, and depending on it would build
//! its f16, f64, c32 and c64 kernels (minutes of every clean build) that no baseline uses.
//! [`gemm_crate_f32`] does what the facade does for f32 before calling that kernel.
//!
//! Threads: the `gemm` crate takes a thread count per call (`Parallelism::Rayon(n)`, run here on
//! a pool of exactly `n` workers). `matrixmultiply` decides once per process: the
//! `MATMUL_NUM_THREADS` environment variable if set, else the number of *physical* cores, capped
//! at 4 ([`matrixmultiply_threads`] reports what it will use).

use crate::error::KernelError;

fn check(m: usize, n: usize, k: usize, a: &[f32], b: &[f32], c: &[f32]) -> Result<(), KernelError> {
    let bad = |what: &str, len: usize, want: usize| {
        KernelError::shape(
            "baseline gemm",
            format!("{what} holds {len} elements, {m}×{n}×{k} needs {want}"),
        )
    };
    if a.len() < m * k {
        return Err(bad("A", a.len(), m * k));
    }
    if b.len() < k * n {
        return Err(bad("B", b.len(), k * n));
    }
    if c.len() < m * n {
        return Err(bad("C", c.len(), m * n));
    }
    Ok(())
}

/// `c = a·b` through the `gemm` crate (0.19, its f32 kernel) with `threads` rayon workers.
pub fn gemm_crate_f32(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    threads: usize,
) -> Result<(), KernelError> {
    check(m, n, k, a, b, c)?;
    let threads = threads.max(1);
    let parallelism = if threads == 1 {
        gemm_common::Parallelism::None
    } else {
        gemm_common::Parallelism::Rayon(threads)
    };
    // Row-major strides (column stride 1, row stride = columns) of dst, lhs and rhs.
    let (dst_cs, dst_rs) = (1, n as isize);
    let (lhs_cs, lhs_rs) = (1, k as isize);
    let (rhs_cs, rhs_rs) = (1, n as isize);
    // As `gemm::gemm` does: its kernels prefer a column-major destination, so a row-major
    // product is computed as its transpose, `cᵀ = bᵀ·aᵀ` (the same memory, strides swapped).
    // Strides here are positive, so its normalization of negative strides has nothing to do.
    let transpose = dst_cs < dst_rs;
    let (rows, cols, dst_cs, dst_rs, lhs, lhs_cs, lhs_rs, rhs, rhs_cs, rhs_rs) = if transpose {
        (n, m, dst_rs, dst_cs, b, rhs_rs, rhs_cs, a, lhs_rs, lhs_cs)
    } else {
        (m, n, dst_cs, dst_rs, a, lhs_cs, lhs_rs, b, rhs_cs, rhs_rs)
    };
    let kernel = gemm_f32::gemm::f32::get_gemm_fn();
    crate::threads::run(threads, || {
        // SAFETY: the lengths were checked above and the strides describe the contiguous
        // row-major matrices (or their transposes, which address the same elements), so every
        // addressed element lies in its slice; `c` does not alias `a` or `b` (it is a distinct
        // `&mut`). `read_dst` is false and alpha 0: dst is only written, `c = 1·a·b`.
        unsafe {
            kernel(
                rows,
                cols,
                k,
                c.as_mut_ptr(),
                dst_cs,
                dst_rs,
                false,
                lhs.as_ptr(),
                lhs_cs,
                lhs_rs,
                rhs.as_ptr(),
                rhs_cs,
                rhs_rs,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                parallelism,
            );
        }
    });
    Ok(())
}

/// `c = a·b` through `matrixmultiply::sgemm` (threads: see [`matrixmultiply_threads`]).
pub fn matrixmultiply_f32(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
) -> Result<(), KernelError> {
    check(m, n, k, a, b, c)?;
    // SAFETY: lengths checked above; row-major strides (row stride = columns, column stride 1)
    // keep every access inside its slice; beta = 0 so `c` need not be initialized.
    unsafe {
        matrixmultiply::sgemm(
            m,
            k,
            n,
            1.0,
            a.as_ptr(),
            k as isize,
            1,
            b.as_ptr(),
            n as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            n as isize,
            1,
        );
    }
    Ok(())
}

/// The thread count `matrixmultiply` uses in this process: `MATMUL_NUM_THREADS` if it parses
/// (unparsable means 1), else physical cores, clamped to 1..=4 — mirroring its registry.
pub fn matrixmultiply_threads() -> usize {
    let n = match std::env::var("MATMUL_NUM_THREADS") {
        Ok(s) if !s.is_empty() => s.trim().parse::<usize>().unwrap_or(1),
        _ => physical_cores(),
    };
    n.clamp(1, 4)
}

/// Physical cores from /proc/cpuinfo (distinct `physical id`/`core id` pairs), else the
/// available hardware threads.
fn physical_cores() -> usize {
    let Ok(text) = std::fs::read_to_string("/proc/cpuinfo") else {
        return crate::threads::available();
    };
    let mut pairs = std::collections::HashSet::new();
    let (mut phys, mut core) = (None, None);
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if let (Some(p), Some(c)) = (phys.take(), core.take()) {
                pairs.insert((p, c));
            }
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            match k.trim() {
                "physical id" => phys = Some(v.trim().to_string()),
                "core id" => core = Some(v.trim().to_string()),
                _ => {}
            }
        }
    }
    if pairs.is_empty() { crate::threads::available() } else { pairs.len() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::{MatMut, MatRef, gemm_reference};
    use crate::tune::SplitMix64;

    fn reference(m: usize, n: usize, k: usize, a: &[f32], b: &[f32]) -> Vec<f32> {
        let mut c = vec![0.0; m * n];
        gemm_reference(
            MatRef::row_major(a, m, k),
            MatRef::row_major(b, k, n),
            MatMut::row_major(&mut c, m, n),
            false,
        )
        .unwrap();
        c
    }

    #[test]
    fn baselines_match_the_reference() {
        let mut rng = SplitMix64::new(11);
        for (m, n, k) in [(1, 1, 1), (7, 13, 5), (33, 65, 129), (64, 48, 300)] {
            let a: Vec<f32> = (0..m * k).map(|_| rng.unit_f32()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.unit_f32()).collect();
            let want = reference(m, n, k, &a, &b);
            for threads in [1, 2] {
                let mut c = vec![f32::NAN; m * n];
                gemm_crate_f32(m, n, k, &a, &b, &mut c, threads).unwrap();
                for (g, w) in c.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-5 * k as f32, "gemm {m}x{n}x{k}: {g} vs {w}");
                }
            }
            let mut c = vec![f32::NAN; m * n];
            matrixmultiply_f32(m, n, k, &a, &b, &mut c).unwrap();
            for (g, w) in c.iter().zip(&want) {
                assert!((g - w).abs() <= 1e-5 * k as f32, "matrixmultiply {m}x{n}x{k}: {g} vs {w}");
            }
        }
    }

    #[test]
    fn short_buffers_are_errors() {
        let mut c = vec![0.0; 4];
        assert!(gemm_crate_f32(2, 2, 2, &[0.0; 3], &[0.0; 4], &mut c, 1).is_err());
        assert!(matrixmultiply_f32(2, 2, 2, &[0.0; 4], &[0.0; 4], &mut c[..3]).is_err());
        assert!((1..=4).contains(&matrixmultiply_threads()));
    }
}
