//! Criterion benchmark of the blocked f32 GEMM with default parameters:
//! a square 1024³ product and a skinny decode-style product (m = 8, n = k = 4096).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dyno_kernels::gemm::{GemmParams, gemm_row_major};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let params = GemmParams::default();
    let mut group = c.benchmark_group("gemm_f32");
    group.sample_size(20);
    for (m, n, k) in [(1024, 1024, 1024), (8, 4096, 4096)] {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.25 - 0.75).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
        let mut out = vec![0.0f32; m * n];
        group.throughput(Throughput::Elements((2 * m * n * k) as u64));
        let name = format!("{m}x{n}x{k}/{}/t{}", params.micro_kernel, params.threads);
        group.bench_function(name, |bch| {
            bch.iter(|| {
                gemm_row_major(m, n, k, black_box(&a), black_box(&b), &mut out, false, &params)
                    .expect("valid shapes");
                black_box(&mut out);
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
