//! The model against a plain reference: dense math in f64 over the dequantized weights, no
//! paging, no batching, every position recomputed from scratch.

use super::*;
use crate::weights::RandomWeights;
use dyno_kernels::ops::{rms_norm_reference, rope_reference, silu_mul_reference};

fn tiny(format: WeightFormat) -> Model {
    let cfg = ModelConfig::preset("mixtral-tiny").unwrap();
    let mut engine = EngineConfig { threads: 2, ..EngineConfig::default() };
    engine.set_weight_format(format);
    Model::load(&cfg, &RandomWeights { seed: 11 }, &engine).unwrap()
}

/// `y[m, n] = x[m, k] · Wᵀ` in f64 over a dequantized weight.
fn matmul_ref(x: &[f32], w: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut y = vec![0.0; m * n];
    for r in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|i| x[r * k + i] as f64 * w[j * k + i] as f64).sum();
            y[r * n + j] = s as f32;
        }
    }
    y
}

/// Logits at the last position of `tokens`, computed the slow way.
fn reference_logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let cfg = &model.cfg;
    let (t, hidden, hd, g) = (tokens.len(), cfg.hidden, cfg.head_dim, cfg.group());
    let (qd, kvd) = (cfg.q_dim(), cfg.kv_dim());
    let mut x: Vec<f32> = tokens
        .iter()
        .flat_map(|&id| model.embed[id as usize * hidden..(id as usize + 1) * hidden].to_vec())
        .collect();
    let positions: Vec<usize> = (0..t).collect();
    let mut h = vec![0.0; t * hidden];
    for layer in &model.layers {
        rms_norm_reference(&x, &layer.attn_norm, cfg.norm_eps, &mut h).unwrap();
        let qkv = matmul_ref(&h, &layer.qkv.dequantized(), t, qd + 2 * kvd, hidden);
        let mut q: Vec<f32> = qkv.chunks(qd + 2 * kvd).flat_map(|r| r[..qd].to_vec()).collect();
        let mut k: Vec<f32> =
            qkv.chunks(qd + 2 * kvd).flat_map(|r| r[qd..qd + kvd].to_vec()).collect();
        let v: Vec<f32> = qkv.chunks(qd + 2 * kvd).flat_map(|r| r[qd + kvd..].to_vec()).collect();
        rope_reference(&mut q, &positions, cfg.heads, hd, cfg.rope_theta).unwrap();
        rope_reference(&mut k, &positions, cfg.kv_heads, hd, cfg.rope_theta).unwrap();
        let mut attn = vec![0.0; t * qd];
        for i in 0..t {
            for head in 0..cfg.heads {
                let kvh = head / g;
                let qv = &q[i * qd + head * hd..i * qd + (head + 1) * hd];
                let scores: Vec<f64> = (0..=i)
                    .map(|j| {
                        let kj = &k[j * kvd + kvh * hd..j * kvd + (kvh + 1) * hd];
                        qv.iter().zip(kj).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::MIN, f64::max);
                let exps: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = exps.iter().sum();
                for d in 0..hd {
                    let o: f64 =
                        (0..=i).map(|j| exps[j] / sum * v[j * kvd + kvh * hd + d] as f64).sum();
                    attn[i * qd + head * hd + d] = o as f32;
                }
            }
        }
        let o = matmul_ref(&attn, &layer.o.dequantized(), t, hidden, qd);
        for (a, b) in x.iter_mut().zip(&o) {
            *a += b;
        }
        rms_norm_reference(&x, &layer.ffn_norm, cfg.norm_eps, &mut h).unwrap();
        let router = matmul_ref(&h, &layer.router.to_f32(), t, cfg.experts, hidden);
        let w = cfg.expert_width;
        for tok in 0..t {
            let logits = &router[tok * cfg.experts..(tok + 1) * cfg.experts];
            let mut order: Vec<usize> = (0..cfg.experts).collect();
            order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
            let chosen = &order[..cfg.top_k];
            let max = logits[chosen[0]];
            let sum: f32 = chosen.iter().map(|&e| (logits[e] - max).exp()).sum();
            let xt = &h[tok * hidden..(tok + 1) * hidden];
            for &e in chosen {
                let p = (logits[e] - max).exp() / sum;
                let ex = layer.experts[e].as_ref().unwrap();
                let up = matmul_ref(xt, &ex.up.dequantized(), 1, 2 * w, hidden);
                let mut act = vec![0.0; w];
                silu_mul_reference(&up[..w], &up[w..], &mut act).unwrap();
                let down = matmul_ref(&act, &ex.down.dequantized(), 1, hidden, w);
                for (a, d) in x[tok * hidden..(tok + 1) * hidden].iter_mut().zip(&down) {
                    *a += p * d;
                }
            }
        }
    }
    let mut last = vec![0.0; hidden];
    rms_norm_reference(&x[(t - 1) * hidden..], &model.final_norm, cfg.norm_eps, &mut last).unwrap();
    matmul_ref(&last, &model.lm_head.as_ref().unwrap().dequantized(), 1, cfg.vocab, hidden)
}

/// Contiguous blocks `0..` for a sequence of `len` tokens.
fn table(len: usize, block_size: usize) -> Vec<u32> {
    (0..len.div_ceil(block_size) as u32).collect()
}

fn max_rel_err(got: &[f32], want: &[f32]) -> f32 {
    let scale = want.iter().fold(0.0f32, |a, v| a.max(v.abs())).max(1e-6);
    got.iter().zip(want).fold(0.0f32, |a, (g, w)| a.max((g - w).abs())) / scale
}

fn prompt(len: usize, seed: u32) -> Vec<u32> {
    (0..len as u32).map(|i| (i * 7919 + seed * 104729) % 300 + 1).collect()
}

#[test]
fn prefill_matches_the_reference_forward() {
    let model = tiny(WeightFormat::F32);
    for len in [1, 5, 40] {
        let tokens = prompt(len, 3);
        let mut kv = model.new_kv_cache(16, 8);
        let tbl = table(len, 16);
        let chunk = SeqChunk { tokens: &tokens, start: 0, block_table: &tbl, logits: true };
        let got = model.forward(&[chunk], &mut kv).unwrap().logits;
        let want = reference_logits(&model, &tokens);
        assert!(max_rel_err(&got, &want) <= 1e-4, "len {len}: {}", max_rel_err(&got, &want));
    }
}

/// Decoding token by token through the cache gives the logits of recomputing the whole
/// sequence, at every step; so does chunked prefill in uneven chunks.
#[test]
fn incremental_decode_matches_full_recompute() {
    let model = tiny(WeightFormat::F32);
    let tokens = prompt(37, 5);
    let bs = 4;
    // A scattered block table: blocks need not be contiguous or ordered.
    let tbl: Vec<u32> = (0..10u32).map(|i| (i * 7) % 13).collect();
    let mut kv = model.new_kv_cache(bs, 13);
    let first = 9;
    let c = SeqChunk { tokens: &tokens[..first], start: 0, block_table: &tbl, logits: true };
    let mut got = model.forward(&[c], &mut kv).unwrap().logits;
    for pos in first..tokens.len() {
        let want = {
            let mut fresh = model.new_kv_cache(bs, 13);
            let c = SeqChunk { tokens: &tokens[..pos], start: 0, block_table: &tbl, logits: true };
            model.forward(&[c], &mut fresh).unwrap().logits
        };
        assert!(max_rel_err(&got, &want) <= 1e-4, "pos {pos}: {}", max_rel_err(&got, &want));
        let c =
            SeqChunk { tokens: &tokens[pos..pos + 1], start: pos, block_table: &tbl, logits: true };
        got = model.forward(&[c], &mut kv).unwrap().logits;
    }
    // Chunked prefill of 37 tokens as 10 + 1 + 26.
    let mut kv = model.new_kv_cache(bs, 13);
    let mut last = Vec::new();
    for (s, e) in [(0, 10), (10, 11), (11, 37)] {
        let c = SeqChunk { tokens: &tokens[s..e], start: s, block_table: &tbl, logits: e == 37 };
        last = model.forward(&[c], &mut kv).unwrap().logits;
    }
    let want = reference_logits(&model, &tokens);
    assert!(max_rel_err(&last, &want) <= 1e-4, "chunked: {}", max_rel_err(&last, &want));
}

/// Several sequences in one pass (prefills and decodes mixed) give each the logits it gets
/// alone.
#[test]
fn a_batch_gives_each_sequence_its_own_logits() {
    let model = tiny(WeightFormat::F32);
    let seqs: Vec<Vec<u32>> = [12, 1, 30, 7].iter().zip(1..).map(|(&l, s)| prompt(l, s)).collect();
    let tables: Vec<Vec<u32>> = (0..4u32).map(|i| (i * 8..i * 8 + 8).collect()).collect();
    let mut kv = model.new_kv_cache(4, 32);
    // Sequences 0 and 2 already have all but their last token cached; 1 and 3 prefill.
    for i in [0, 2] {
        let n = seqs[i].len() - 1;
        let c =
            SeqChunk { tokens: &seqs[i][..n], start: 0, block_table: &tables[i], logits: false };
        model.forward(&[c], &mut kv).unwrap();
    }
    let chunks: Vec<SeqChunk> = (0..4)
        .map(|i| {
            let start = if i % 2 == 0 { seqs[i].len() - 1 } else { 0 };
            SeqChunk { tokens: &seqs[i][start..], start, block_table: &tables[i], logits: true }
        })
        .collect();
    let batched = model.forward(&chunks, &mut kv).unwrap().logits;
    let vocab = model.cfg.vocab;
    for (i, s) in seqs.iter().enumerate() {
        let want = reference_logits(&model, s);
        let got = &batched[i * vocab..(i + 1) * vocab];
        assert!(max_rel_err(got, &want) <= 1e-4, "seq {i}: {}", max_rel_err(got, &want));
    }
}

#[test]
fn quantized_models_match_their_own_reference() {
    for format in [WeightFormat::Bf16, WeightFormat::Int8, WeightFormat::Int4 { group: 32 }] {
        let model = tiny(format);
        let tokens = prompt(20, 9);
        let mut kv = model.new_kv_cache(16, 4);
        let tbl = table(20, 16);
        let c = SeqChunk { tokens: &tokens, start: 0, block_table: &tbl, logits: true };
        let got = model.forward(&[c], &mut kv).unwrap().logits;
        let want = reference_logits(&model, &tokens);
        // The reference uses the same dequantized weights; int8 activations add their own
        // rounding (half a step of 127 per element) on the quantized formats.
        let tol = if format == WeightFormat::Bf16 { 1e-4 } else { 3e-2 };
        assert!(max_rel_err(&got, &want) <= tol, "{format}: {}", max_rel_err(&got, &want));
    }
}

#[test]
fn out_of_vocabulary_tokens_are_refused() {
    let model = tiny(WeightFormat::F32);
    let mut kv = model.new_kv_cache(16, 4);
    let tbl = table(2, 16);
    let c = SeqChunk { tokens: &[1, 9999], start: 0, block_table: &tbl, logits: true };
    let e = model.forward(&[c], &mut kv).unwrap_err().to_string();
    assert!(e.contains("9999") && e.contains("vocabulary"), "{e}");
}
