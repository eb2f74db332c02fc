//! Quantized / bf16 matmul benchmarks, with a memory-read bandwidth reference.
//!
//! `cargo bench -p dyno-kernels --bench quant` runs GEMV at n = k = 4096 (int8, int4, bf16)
//! and an m = 8 batch. `DYNO_BENCH_LARGE=1` adds n = k = 8192 (weights ≫ L3) and a 512 MiB
//! read loop, whose throughputs (bytes of quants + scales per second) are the ones to compare
//! against the machine's bandwidth.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use dyno_kernels::dense::{Bf16Matrix, DenseParams};
use dyno_kernels::quant::{ActivationMode, Int4Matrix, Int8Matrix, QuantParams};
use rayon::prelude::*;
use std::hint::black_box;
use std::time::Duration;

fn data(len: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// Sums a buffer as u64 lanes: a plain streaming read the compiler vectorizes.
fn read_sum(buf: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    for c in buf.chunks_exact(8) {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = a.wrapping_add(v);
        }
    }
    acc.iter().fold(0, |a, &b| a.wrapping_add(b))
}

fn bandwidth(c: &mut Criterion) {
    let buf: Vec<u64> = (0..(512usize << 20) / 8).map(|i| i as u64).collect();
    let mut g = c.benchmark_group("membw_read_512MiB");
    g.throughput(Throughput::Bytes((buf.len() * 8) as u64));
    for threads in [1usize, 2] {
        g.bench_function(BenchmarkId::from_parameter(threads), |b| {
            b.iter(|| {
                dyno_kernels::threads::run(threads, || {
                    let chunk = buf.len().div_ceil(threads);
                    buf.par_chunks(chunk).map(read_sum).reduce(|| 0, u64::wrapping_add)
                })
            })
        });
    }
    g.finish();
}

fn gemv_group(c: &mut Criterion, n: usize, k: usize, m: usize) {
    let w = data(n * k, 1);
    let x = data(m * k, 2);
    let mut y = vec![0.0f32; m * n];
    let q8 = Int8Matrix::quantize(&w, n, k).expect("k is a multiple of 32");
    let q4 = Int4Matrix::quantize(&w, n, k, 32).expect("k is a multiple of 32");
    let bf = Bf16Matrix::from_f32(&w, n, k).expect("shape");
    drop(w);
    let mut g = c.benchmark_group(format!("quant_m{m}_n{n}_k{k}"));
    for threads in [1usize, 2] {
        for act in [ActivationMode::F32, ActivationMode::Int8] {
            let p = QuantParams { row_tile: 8, threads, activations: act };
            g.throughput(Throughput::Bytes(q8.weight_bytes() as u64));
            g.bench_function(BenchmarkId::new(format!("int8_{act:?}"), threads), |b| {
                b.iter(|| q8.matmul(black_box(&x), m, &mut y, &p).expect("valid"))
            });
            g.throughput(Throughput::Bytes(q4.weight_bytes() as u64));
            g.bench_function(BenchmarkId::new(format!("int4_{act:?}"), threads), |b| {
                b.iter(|| q4.matmul(black_box(&x), m, &mut y, &p).expect("valid"))
            });
        }
        let p = DenseParams { row_tile: 8, threads };
        g.throughput(Throughput::Bytes(bf.weight_bytes() as u64));
        g.bench_function(BenchmarkId::new("bf16", threads), |b| {
            b.iter(|| bf.matmul(black_box(&x), m, &mut y, &p).expect("valid"))
        });
    }
    g.finish();
}

fn quant(c: &mut Criterion) {
    gemv_group(c, 4096, 4096, 1);
    gemv_group(c, 4096, 4096, 8);
    if std::env::var_os("DYNO_BENCH_LARGE").is_some() {
        bandwidth(c);
        gemv_group(c, 8192, 8192, 1);
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).warm_up_time(Duration::from_millis(300)).measurement_time(Duration::from_secs(1));
    targets = quant
}
criterion_main!(benches);
