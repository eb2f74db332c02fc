//! Property tests: the fast attention kernels against the f64 oracles.
//!
//! Deterministic: a fixed proptest seed and no failure files; values come from a small seeded
//! generator so big caches do not go through proptest's shrinker.
//!
//! Tolerance: outputs are convex combinations of V rows with |v| ≤ 1, computed in f32 with an
//! online softmax and an exp of relative error < 4e-7, against f64. We accept
//! `|fast − ref| ≤ 1e-5·|ref| + 1e-5` (about 1e-5 relative plus a small absolute term for
//! outputs near zero, where cancellation leaves only absolute accuracy).

use dyno_kernels::KernelError;
use dyno_kernels::attention::{
    AttentionParams, PagedKv, SeqKv, decode, decode_reference, prefill, prefill_reference, write_kv,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

/// SplitMix64: a tiny deterministic generator for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn fill(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.unit()).collect()
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A KV pool with random contents and one shuffled, non-contiguous block table per sequence.
struct Cache {
    k: Vec<f32>,
    v: Vec<f32>,
    block_size: usize,
    head_dim: usize,
    tables: Vec<Vec<u32>>,
}

impl Cache {
    fn new(rng: &mut Rng, lens: &[usize], block_size: usize, head_dim: usize) -> Self {
        let needed: usize = lens.iter().map(|l| l.div_ceil(block_size)).sum();
        let num_blocks = needed + 3; // spare blocks the tables never use
        let mut ids: Vec<u32> = (0..num_blocks as u32).collect();
        for i in (1..ids.len()).rev() {
            ids.swap(i, rng.below(i + 1));
        }
        let mut next = 0;
        let tables = lens
            .iter()
            .map(|l| {
                let n = l.div_ceil(block_size);
                next += n;
                ids[next - n..next].to_vec()
            })
            .collect();
        let pool = num_blocks * block_size * head_dim;
        Self { k: rng.fill(pool), v: rng.fill(pool), block_size, head_dim, tables }
    }
    fn kv(&self) -> PagedKv<'_> {
        PagedKv { k: &self.k, v: &self.v, block_size: self.block_size, head_dim: self.head_dim }
    }
}

fn assert_close(fast: &[f32], reference: &[f32], what: &str) {
    assert_eq!(fast.len(), reference.len());
    for (i, (a, b)) in fast.iter().zip(reference).enumerate() {
        let tol = 1e-5 * b.abs() + 1e-5;
        assert!((a - b).abs() <= tol, "{what}: element {i}: fast {a} vs reference {b} (tol {tol})");
    }
}

fn config() -> Config {
    Config {
        cases: 64,
        rng_seed: RngSeed::Fixed(0x5EED_A77E),
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn decode_matches_reference(
        seed in any::<u64>(),
        block_size in prop::sample::select(vec![1usize, 3, 16, 32]),
        head_dim in prop::sample::select(vec![8usize, 64, 128]),
        group in prop::sample::select(vec![1usize, 2, 4]),
        lens in prop::collection::vec(1usize..=300, 1..5),
        bc in prop::sample::select(vec![1usize, 7, 16, 64]),
        threads in 1usize..=3,
        sharpness in 0.5f32..4.0,
    ) {
        let mut rng = Rng(seed);
        let cache = Cache::new(&mut rng, &lens, block_size, head_dim);
        let seqs: Vec<SeqKv> = lens
            .iter()
            .zip(&cache.tables)
            .map(|(&context_len, t)| SeqKv { block_table: t, context_len })
            .collect();
        let q = rng.fill(lens.len() * group * head_dim);
        let scale = sharpness / (head_dim as f32).sqrt();
        let mut fast = vec![0.0; q.len()];
        let mut want = vec![0.0; q.len()];
        let params = AttentionParams { br: 16, bc, threads };
        decode(&q, &seqs, &cache.kv(), group, scale, &mut fast, &params).unwrap();
        decode_reference(&q, &seqs, &cache.kv(), group, scale, &mut want).unwrap();
        assert_close(&fast, &want, "decode");
    }

    #[test]
    fn prefill_matches_reference(
        seed in any::<u64>(),
        block_size in prop::sample::select(vec![1usize, 5, 16, 32]),
        head_dim in prop::sample::select(vec![8usize, 64, 128]),
        group in prop::sample::select(vec![1usize, 2, 4]),
        q_start in 0usize..200,
        q_len in 1usize..100,
        br in prop::sample::select(vec![1usize, 3, 16]),
        bc in prop::sample::select(vec![1usize, 5, 32, 64]),
        threads in 1usize..=3,
    ) {
        let mut rng = Rng(seed);
        let context_len = q_start + q_len;
        let cache = Cache::new(&mut rng, &[context_len], block_size, head_dim);
        let seq = SeqKv { block_table: &cache.tables[0], context_len };
        let q = rng.fill(q_len * group * head_dim);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let mut fast = vec![0.0; q.len()];
        let mut want = vec![0.0; q.len()];
        let params = AttentionParams { br, bc, threads };
        prefill(&q, q_start, &seq, &cache.kv(), group, scale, &mut fast, &params).unwrap();
        prefill_reference(&q, q_start, &seq, &cache.kv(), group, scale, &mut want).unwrap();
        assert_close(&fast, &want, "prefill");
    }

    /// Prefill of a whole sequence gives, for each token, what decode gives for that token as
    /// the last one of a context ending there.
    #[test]
    fn prefill_equals_decode_of_each_last_token(
        seed in any::<u64>(),
        block_size in prop::sample::select(vec![1usize, 4, 16]),
        head_dim in prop::sample::select(vec![8usize, 64]),
        group in prop::sample::select(vec![1usize, 2, 4]),
        len in 1usize..80,
        br in prop::sample::select(vec![1usize, 3, 16]),
        bc in prop::sample::select(vec![1usize, 5, 32]),
    ) {
        let mut rng = Rng(seed);
        let cache = Cache::new(&mut rng, &[len], block_size, head_dim);
        let row = group * head_dim;
        let q = rng.fill(len * row);
        let scale = 1.0 / (head_dim as f32).sqrt();
        let params = AttentionParams { br, bc, threads: 2 };
        let seq = SeqKv { block_table: &cache.tables[0], context_len: len };
        let mut full = vec![0.0; q.len()];
        prefill(&q, 0, &seq, &cache.kv(), group, scale, &mut full, &params).unwrap();
        for i in 0..len {
            let last = [SeqKv { block_table: &cache.tables[0], context_len: i + 1 }];
            let mut one = vec![0.0; row];
            decode(&q[i * row..(i + 1) * row], &last, &cache.kv(), group, scale, &mut one, &params)
                .unwrap();
            // Both sides are f32 with the same tolerance against f64, so allow it twice.
            for (a, b) in one.iter().zip(&full[i * row..(i + 1) * row]) {
                prop_assert!((a - b).abs() <= 2e-5 * b.abs() + 2e-5, "token {i}: {a} vs {b}");
            }
        }
    }

    /// Prefill in two chunks (the second attending to the first) equals prefill in one.
    #[test]
    fn chunked_prefill_equals_whole(
        seed in any::<u64>(),
        len in 2usize..120,
        cut_at in 1usize..119,
        group in prop::sample::select(vec![1usize, 4]),
    ) {
        let cut = cut_at.min(len - 1);
        let (block_size, head_dim) = (16, 64);
        let mut rng = Rng(seed);
        let cache = Cache::new(&mut rng, &[len], block_size, head_dim);
        let row = group * head_dim;
        let q = rng.fill(len * row);
        let scale = 0.125;
        let params = AttentionParams::default();
        let table = &cache.tables[0];
        let mut whole = vec![0.0; q.len()];
        prefill(&q, 0, &SeqKv { block_table: table, context_len: len }, &cache.kv(), group, scale, &mut whole, &params).unwrap();
        let mut chunked = vec![0.0; q.len()];
        let (first, second) = chunked.split_at_mut(cut * row);
        prefill(&q[..cut * row], 0, &SeqKv { block_table: table, context_len: cut }, &cache.kv(), group, scale, first, &params).unwrap();
        prefill(&q[cut * row..], cut, &SeqKv { block_table: table, context_len: len }, &cache.kv(), group, scale, second, &params).unwrap();
        assert_close(&chunked, &whole, "chunked prefill");
    }
}

#[test]
fn write_kv_places_rows_through_the_table() {
    let (bs, d) = (2, 3);
    let mut k = vec![0.0; 4 * bs * d];
    let mut v = vec![0.0; 4 * bs * d];
    let table = [3u32, 1];
    let k_new: Vec<f32> = (0..3 * d).map(|i| i as f32).collect();
    let v_new: Vec<f32> = k_new.iter().map(|x| -x).collect();
    // Positions 1, 2, 3: slot 1 of block 3, then slots 0 and 1 of block 1.
    write_kv(&mut k, &mut v, bs, d, &table, 1, &k_new, &v_new).unwrap();
    assert_eq!(&k[(3 * bs + 1) * d..(3 * bs + 2) * d], &k_new[..d]);
    assert_eq!(&k[bs * d..2 * bs * d], &k_new[d..]);
    assert_eq!(&v[bs * d..2 * bs * d], &v_new[d..]);
    assert!(k[..bs * d].iter().all(|&x| x == 0.0));

    // Position 4 would need a third block.
    let err = write_kv(&mut k, &mut v, bs, d, &table, 2, &k_new, &v_new).unwrap_err();
    assert!(matches!(err, KernelError::Shape { .. }), "{err}");
    // Block 9 is outside a 4-block pool.
    let err = write_kv(&mut k, &mut v, bs, d, &[9], 0, &k_new[..d], &v_new[..d]).unwrap_err();
    assert!(err.to_string().contains("block 9"), "{err}");
    // Ragged rows.
    let err = write_kv(&mut k, &mut v, bs, d, &table, 0, &k_new[..4], &v_new[..4]).unwrap_err();
    assert!(matches!(err, KernelError::Shape { .. }), "{err}");
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let (bs, d, g) = (4, 8, 2);
    let k = vec![0.5; 3 * bs * d];
    let kv = PagedKv { k: &k, v: &k, block_size: bs, head_dim: d };
    let table = [2u32, 0];
    let params = AttentionParams::default();
    let q = vec![0.1; g * d];
    let mut out = vec![0.0; g * d];
    let shape = |r: Result<(), KernelError>| match r {
        Err(KernelError::Shape { detail, .. }) => detail,
        other => panic!("expected a shape error, got {other:?}"),
    };

    let ok = [SeqKv { block_table: &table, context_len: 8 }];
    decode(&q, &ok, &kv, g, 1.0, &mut out, &params).unwrap();
    shape(decode(&q[1..], &ok, &kv, g, 1.0, &mut out, &params));
    shape(decode(&q, &ok, &kv, g, 1.0, &mut out[1..], &params));
    let too_long = [SeqKv { block_table: &table, context_len: 9 }];
    assert!(shape(decode(&q, &too_long, &kv, g, 1.0, &mut out, &params)).contains("block table"));
    let outside = [SeqKv { block_table: &[0, 7], context_len: 5 }];
    assert!(shape(decode(&q, &outside, &kv, g, 1.0, &mut out, &params)).contains("block 7"));
    let empty = [SeqKv { block_table: &table, context_len: 0 }];
    shape(decode(&q, &empty, &kv, g, 1.0, &mut out, &params));
    shape(decode(&q, &ok, &kv, 0, 1.0, &mut out, &params));
    let ragged = PagedKv { k: &k[1..], v: &k[1..], block_size: bs, head_dim: d };
    shape(decode(&q, &ok, &ragged, g, 1.0, &mut out, &params));
    shape(decode_reference(&q[1..], &ok, &kv, g, 1.0, &mut out));

    // Prefill: context_len must be q_start + q_len.
    let seq = SeqKv { block_table: &table, context_len: 5 };
    prefill(&q, 4, &seq, &kv, g, 1.0, &mut out, &params).unwrap();
    assert!(shape(prefill(&q, 3, &seq, &kv, g, 1.0, &mut out, &params)).contains("q_start"));
    shape(prefill(&q, 4, &seq, &kv, g, 1.0, &mut out[..d], &params));
    shape(prefill_reference(&q, 3, &seq, &kv, g, 1.0, &mut out));
}

#[test]
fn params_validate_and_name_the_field() {
    AttentionParams::default().validate().unwrap();
    for (p, field) in [
        (AttentionParams { br: 0, ..Default::default() }, "br"),
        (AttentionParams { bc: 0, ..Default::default() }, "bc"),
        (AttentionParams { bc: 1 << 20, ..Default::default() }, "bc"),
        (AttentionParams { threads: 0, ..Default::default() }, "threads"),
        (AttentionParams { br: 4096, bc: 4096, threads: 1 }, "bc"),
    ] {
        let err = p.validate().unwrap_err();
        assert_eq!(err.field, field);
        assert!(err.to_string().contains(field), "{err}");
        // The kernels refuse them too.
        let k = vec![0.0; 8];
        let kv = PagedKv { k: &k, v: &k, block_size: 1, head_dim: 8 };
        let seqs = [SeqKv { block_table: &[0], context_len: 1 }];
        let err = decode(&[0.0; 8], &seqs, &kv, 1, 1.0, &mut [0.0; 8], &p).unwrap_err();
        assert!(matches!(err, KernelError::Param(_)));
    }

    let p = AttentionParams { br: 8, bc: 32, threads: 2 };
    let yaml = serde_yaml::to_string(&p).unwrap();
    assert_eq!(serde_yaml::from_str::<AttentionParams>(&yaml).unwrap(), p);
    assert!(serde_yaml::from_str::<AttentionParams>("br: 8\nbc: 32\nthreads: 2\nbk: 1\n").is_err());
}
