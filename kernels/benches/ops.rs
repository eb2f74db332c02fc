//! Elementwise op benchmarks, fast path beside the reference, at a hidden size of 4096.
//! Throughput is in elements.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dyno_kernels::ops::{rms_norm, rms_norm_reference, silu_mul, silu_mul_reference, softmax};
use std::hint::black_box;
use std::time::Duration;

fn data(n: usize, salt: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919 + salt) % 2003) as f32 / 200.0) - 5.0).collect()
}

fn bench_ops(c: &mut Criterion) {
    let d = 4096;
    let x = data(d, 1);
    let w = data(d, 2);
    let mut out = vec![0.0; d];
    let mut group = c.benchmark_group("ops");
    group.throughput(Throughput::Elements(d as u64));
    group.bench_function("rms_norm/4096", |b| {
        b.iter(|| rms_norm(black_box(&x), &w, 1e-5, &mut out).unwrap())
    });
    group.bench_function("rms_norm_reference/4096", |b| {
        b.iter(|| rms_norm_reference(black_box(&x), &w, 1e-5, &mut out).unwrap())
    });
    group.bench_function("silu_mul/4096", |b| {
        b.iter(|| silu_mul(black_box(&x), &w, &mut out).unwrap())
    });
    group.bench_function("silu_mul_reference/4096", |b| {
        b.iter(|| silu_mul_reference(black_box(&x), &w, &mut out).unwrap())
    });
    group.bench_function("softmax/4096", |b| {
        b.iter(|| {
            out.copy_from_slice(&x);
            softmax(black_box(&mut out), d).unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    targets = bench_ops
}
criterion_main!(benches);
