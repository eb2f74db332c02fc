//! Attention benchmarks at default parameters (all threads), and with one thread (`/t1`).
//!
//! - decode: 8 sequences × 1024 context, G = 4, head_dim 128, block size 16 with a shuffled
//!   block table. Throughput is the K+V bytes read (8 MiB per call), so criterion reports GB/s.
//! - prefill: 512 tokens from position 0, G = 4, head_dim 128. Throughput is counted in
//!   FLOPs (2·d for q·k plus 2·d for p·v per visible query-key pair), so criterion's
//!   "elem/s" reads as FLOP/s.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dyno_kernels::attention::{AttentionParams, PagedKv, SeqKv, decode, prefill};
use std::hint::black_box;
use std::time::Duration;

const G: usize = 4;
const D: usize = 128;
const BS: usize = 16;

fn data(n: usize, salt: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919 + salt) % 2003) as f32 / 1001.5) - 1.0).collect()
}

/// A block table over `blocks` blocks in a scrambled order (7 is coprime to the counts used).
fn table(blocks: usize, offset: usize) -> Vec<u32> {
    (0..blocks).map(|i| ((i * 7 + offset) % blocks) as u32).collect()
}

fn bench_decode(c: &mut Criterion) {
    let (seqs_n, ctx) = (8, 1024);
    let blocks_per_seq = ctx / BS;
    let pool = seqs_n * blocks_per_seq * BS * D;
    let (k, v) = (data(pool, 1), data(pool, 2));
    let kv = PagedKv { k: &k, v: &v, block_size: BS, head_dim: D };
    let all = table(seqs_n * blocks_per_seq, 3);
    let seqs: Vec<SeqKv> =
        all.chunks(blocks_per_seq).map(|t| SeqKv { block_table: t, context_len: ctx }).collect();
    let q = data(seqs_n * G * D, 4);
    let mut out = vec![0.0; q.len()];
    let params = AttentionParams::default();
    let mut group = c.benchmark_group("attention");
    group.throughput(Throughput::Bytes((seqs_n * ctx * D * 4 * 2) as u64));
    group.bench_function("decode/8x1024/g4/d128", |b| {
        b.iter(|| decode(black_box(&q), &seqs, &kv, G, 0.088, &mut out, &params).unwrap())
    });
    let one = AttentionParams { threads: 1, ..params };
    group.bench_function("decode/8x1024/g4/d128/t1", |b| {
        b.iter(|| decode(black_box(&q), &seqs, &kv, G, 0.088, &mut out, &one).unwrap())
    });
    group.finish();
}

fn bench_prefill(c: &mut Criterion) {
    let n = 512;
    let pool = n * D;
    let (k, v) = (data(pool, 5), data(pool, 6));
    let kv = PagedKv { k: &k, v: &v, block_size: BS, head_dim: D };
    let t = table(n / BS, 1);
    let seq = SeqKv { block_table: &t, context_len: n };
    let q = data(n * G * D, 7);
    let mut out = vec![0.0; q.len()];
    let params = AttentionParams::default();
    let pairs = G * n * (n + 1) / 2;
    let mut group = c.benchmark_group("attention");
    group.throughput(Throughput::Elements((pairs * 4 * D) as u64));
    group.bench_function("prefill/512/g4/d128", |b| {
        b.iter(|| prefill(black_box(&q), 0, &seq, &kv, G, 0.088, &mut out, &params).unwrap())
    });
    let one = AttentionParams { threads: 1, ..params };
    group.bench_function("prefill/512/g4/d128/t1", |b| {
        b.iter(|| prefill(black_box(&q), 0, &seq, &kv, G, 0.088, &mut out, &one).unwrap())
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_decode, bench_prefill
}
criterion_main!(benches);
