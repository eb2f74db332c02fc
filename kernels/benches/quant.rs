//! Criterion benchmark of the weight-streaming matmuls at default parameters: int8 and int4
//! (group 32) with f32 and int8 activations, and bf16, for one activation row (decode GEMV)
//! and for eight (a decode batch, where the row tile reuses each loaded weight chunk).
//! Throughput is bytes of weights and scales streamed per call.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dyno_kernels::bf16::{Bf16Matrix, Bf16Params};
use dyno_kernels::quant::{ActivationMode, Int4Matrix, Int8Matrix, QuantParams};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let (n, k) = (4096, 4096);
    let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0).collect();
    let int8 = Int8Matrix::quantize(&w, n, k).expect("k is a multiple of 32");
    let int4 = Int4Matrix::quantize(&w, n, k, 32).expect("k is a multiple of 32");
    let bf16 = Bf16Matrix::from_f32(&w, n, k).expect("sizes agree");
    let mut group = c.benchmark_group("weight_matmul");
    group.sample_size(20);
    for m in [1usize, 8] {
        let x: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.1 - 0.6).collect();
        let mut y = vec![0.0f32; m * n];
        for mode in [ActivationMode::F32, ActivationMode::Int8] {
            let p = QuantParams { activations: mode, ..QuantParams::default() };
            group.throughput(Throughput::Bytes(int8.weight_bytes() as u64));
            group.bench_function(format!("int8/{mode:?}/m{m}"), |b| {
                b.iter(|| int8.matmul(black_box(&x), m, &mut y, &p).expect("valid shapes"))
            });
            group.throughput(Throughput::Bytes(int4.weight_bytes() as u64));
            group.bench_function(format!("int4g32/{mode:?}/m{m}"), |b| {
                b.iter(|| int4.matmul(black_box(&x), m, &mut y, &p).expect("valid shapes"))
            });
        }
        let p = Bf16Params::default();
        group.throughput(Throughput::Bytes(bf16.weight_bytes() as u64));
        group.bench_function(format!("bf16/m{m}"), |b| {
            b.iter(|| bf16.matmul(black_box(&x), m, &mut y, &p).expect("valid shapes"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
