//! Quantization quality: how far a quantized model's next-token distributions drift from the
//! f32 model's, as the KL divergence `KL(P_f32 ‖ P_quantized)` averaged over every position of
//! a fixed prompt set (teacher-forced: both models read the same tokens).

use crate::error::EngineError;
use crate::model::{Model, SeqChunk};
use crate::tokenizer;

/// The fixed prompt set: short English text through the byte tokenizer.
pub const PROMPTS: [&str; 4] = [
    "The quick brown fox jumps over the lazy dog.",
    "Mixture-of-experts models route each token to a few experts.",
    "Memory bandwidth bounds the speed of decoding one token.",
    "def add(a, b):\n    return a + b\n",
];

/// The KL divergence of a candidate model against a reference.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct KlReport {
    /// Mean over positions, nats.
    pub mean: f64,
    /// Largest at any position, nats.
    pub max: f64,
    /// Positions compared.
    pub positions: usize,
}

/// Next-token logits at every position of `tokens`, computed token by token through the cache.
fn logits_per_position(model: &Model, tokens: &[u32]) -> Result<Vec<Vec<f32>>, EngineError> {
    let block_size = 16;
    let table: Vec<u32> = (0..tokens.len().div_ceil(block_size) as u32).collect();
    let mut kv = model.new_kv_cache(block_size, table.len());
    (0..tokens.len())
        .map(|p| {
            let chunk =
                SeqChunk { tokens: &tokens[p..p + 1], start: p, block_table: &table, logits: true };
            Ok(model.forward(&[chunk], &mut kv)?.logits)
        })
        .collect()
}

/// `log softmax(x)` in f64.
fn log_softmax(x: &[f32]) -> Vec<f64> {
    let max = x.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(f64::from(v)));
    let lse = max + x.iter().map(|&v| (f64::from(v) - max).exp()).sum::<f64>().ln();
    x.iter().map(|&v| f64::from(v) - lse).collect()
}

/// `KL(reference ‖ candidate)` over [`PROMPTS`] (or `prompts` when given).
pub fn kl_divergence(
    reference: &Model,
    candidate: &Model,
    prompts: Option<&[Vec<u32>]>,
) -> Result<KlReport, EngineError> {
    let default: Vec<Vec<u32>> = PROMPTS.iter().map(|p| tokenizer::encode(p)).collect();
    let prompts = prompts.unwrap_or(&default);
    let (mut sum, mut max, mut positions) = (0.0f64, 0.0f64, 0usize);
    for tokens in prompts {
        let want = logits_per_position(reference, tokens)?;
        let got = logits_per_position(candidate, tokens)?;
        for (p, q) in want.iter().zip(&got) {
            let (lp, lq) = (log_softmax(p), log_softmax(q));
            let kl: f64 = lp.iter().zip(&lq).map(|(a, b)| a.exp() * (a - b)).sum();
            sum += kl;
            max = max.max(kl);
            positions += 1;
        }
    }
    Ok(KlReport { mean: sum / positions.max(1) as f64, max, positions })
}
