//! The step-time model against rooflines computed by hand.

use dyno_engine::ModelConfig;
use dyno_engine::config::EngineConfig;
use dyno_engine::model_config::WeightFormat;
use dyno_tuner::hardware::HardwareProfile;
use dyno_tuner::step_model::{StepModel, StepShape};

/// The H100 profile with every efficiency 1 and no fixed overheads: the pure roofline.
fn ideal_h100() -> HardwareProfile {
    let mut p = HardwareProfile::resolve("h100").unwrap();
    p.calibration.efficiency.clear();
    p.calibration.default_efficiency = 1.0;
    p.calibration.step_overhead_us = 0.0;
    p.calibration.sample_overhead_us = 0.0;
    p
}

fn close(got: f64, want: f64, what: &str) {
    assert!((got - want).abs() <= want * 1e-9, "{what}: got {got}, want {want}");
}

/// Mixtral-8x7B, one sequence decoding at context 1024, bf16 weights, tp = 2 on H100 SXM
/// (3.35 TB/s HBM, 989 TFLOP/s bf16, NVLink 450 GB/s per direction, 8 µs per collective).
///
/// Per layer, on one of the two ranks (bf16 = 2 bytes per weight and per activation; the KV
/// cache is f32; every op at batch 1 is bandwidth-bound):
///
/// | op          | weights [out × in]            | bytes                                   |
/// |-------------|-------------------------------|-----------------------------------------|
/// | qkv_proj    | (16 + 2·4)·128 = 3072 × 4096  | 3072·4096·2 + (3072 + 4096)·2 = 25,180,160 |
/// | attention   | KV: 1024 tokens · 4 heads · 128 · (K, V) · 4 B | 4,194,304            |
/// | o_proj      | 4096 × 2048                   | 4096·2048·2 + (4096 + 2048)·2 = 16,789,504 |
/// | router (f32)| 8 × 4096                      | 8·4096·4 + (8 + 4096)·2 = 139,280        |
/// | 2 experts up| 2·7168 = 14336 × 4096         | 2 · (14336·4096·2 + (14336 + 4096)·2) = 2 · 117,477,376 |
/// | 2 experts dn| 4096 × 7168                   | 2 · (4096·7168·2 + (4096 + 7168)·2) = 2 · 58,742,784 |
/// | elementwise | 2 B · (8·4096 + 3·16·128 + 4·4·128 + 3·2·7168) | 167,936            |
///
/// Sum 398,911,504 bytes ÷ 3.35e12 B/s = 119.078 µs. Two ring all-reduces of one token's
/// hidden state (4096 · 2 B = 8192 B): 2·(2−1)/2 · 8192 B ÷ 450e9 B/s + 8 µs = 8.018 µs each.
/// The output head, split over the two ranks: 16000 × 4096 · 2 + (16000 + 4096)·2 =
/// 131,112,192 B ÷ 3.35e12 = 39.138 µs. Step: 32 · (119.078 + 2 · 8.018) µs + 39.138 µs
/// = 4.3628 ms.
#[test]
fn mixtral_8x7b_decode_batch_1_bf16_tp2_on_h100_is_the_hand_roofline() {
    let model = ModelConfig::preset("mixtral").unwrap();
    let mut cfg = EngineConfig::default();
    cfg.set_weight_format(WeightFormat::Bf16);
    cfg.parallel.tp = 2;
    let sm = StepModel::new(&ideal_h100(), &model, &cfg);
    let step = sm.step_time(&StepShape::decode(1, 1024));

    let bw = 3.35e12;
    let layer_bytes = 25_180_160.0
        + 4_194_304.0
        + 16_789_504.0
        + 139_280.0
        + 2.0 * 117_477_376.0
        + 2.0 * 58_742_784.0
        + 167_936.0;
    assert_eq!(layer_bytes, 398_911_504.0);
    let all_reduce = 2.0 * (2.0 - 1.0) / 2.0 * 8192.0 / 450e9 + 8e-6;
    let head = (16_000.0 * 4096.0 * 2.0 + (16_000.0 + 4096.0) * 2.0) / bw;
    let want = 32.0 * (layer_bytes / bw + 2.0 * all_reduce) + head;
    close(step.seconds, want, "step seconds");
    assert!((step.seconds - 4.3628e-3).abs() < 1e-6, "{}", step.seconds);

    let op =
        |name: &str| -> f64 { step.ops.iter().filter(|o| o.name == name).map(|o| o.bytes).sum() };
    close(op("qkv_proj"), 32.0 * 25_180_160.0, "qkv bytes");
    close(op("attention_decode"), 32.0 * 4_194_304.0, "KV bytes");
    close(op("expert_up"), 32.0 * 2.0 * 117_477_376.0, "expert up bytes");
    close(op("tp_all_reduce"), 2.0 * 32.0 * 8192.0, "all-reduce link bytes");
}

/// Compute-bound prefill: 8 prompts of 2048 tokens on one H100 in bf16. The expert GEMMs
/// dominate: every expert is touched (16,384 tokens), each sees 16384·2/8 = 4096 rows, and
/// 2·rows·out·in flops at 989 TFLOP/s outweigh their bytes.
#[test]
fn large_prefill_is_compute_bound_on_the_experts() {
    let model = ModelConfig::preset("mixtral").unwrap();
    let mut cfg = EngineConfig::default();
    cfg.set_weight_format(WeightFormat::Bf16);
    let sm = StepModel::new(&ideal_h100(), &model, &cfg);
    let step = sm.step_time(&StepShape::prefill(8, 2048));
    let up = step.ops.iter().find(|o| o.name == "expert_up").unwrap();
    // 8 experts · 2 · 4096 rows · 28672 · 4096 per layer, 32 layers.
    let flops = 32.0 * 8.0 * 2.0 * 4096.0 * 28672.0 * 4096.0;
    assert!((up.flops - flops).abs() / flops < 1e-6, "{} vs {flops}", up.flops);
    close(up.seconds, flops / 989e12, "expert_up seconds (compute-bound)");
}

/// Expert parallelism replaces the second all-reduce by a dispatch and a combine.
#[test]
fn expert_parallel_steps_pay_all_to_all() {
    let model = ModelConfig::preset("mixtral").unwrap();
    let mut cfg = EngineConfig::default();
    cfg.set_weight_format(WeightFormat::Bf16);
    cfg.parallel.ep = 4;
    let sm = StepModel::new(&ideal_h100(), &model, &cfg);
    let step = sm.step_time(&StepShape::decode(32, 512));
    let names: Vec<&str> = step.ops.iter().map(|o| o.name).collect();
    assert!(names.contains(&"ep_dispatch") && names.contains(&"ep_combine"), "{names:?}");
    assert!(!names.contains(&"tp_all_reduce"));
}

/// Pipeline parallel: with pp stages and m micro-batches a step costs (m + pp − 1) stage
/// times; at batch 1 (m = 1) that is pp stages of layers/pp layers, the same compute as one
/// stage plus the hops.
#[test]
fn pipeline_bubbles_cost_what_the_formula_says() {
    let model = ModelConfig::preset("mixtral").unwrap();
    let mut cfg = EngineConfig::default();
    cfg.set_weight_format(WeightFormat::Bf16);
    let flat = StepModel::new(&ideal_h100(), &model, &cfg).seconds(&StepShape::decode(1, 512));
    cfg.parallel.pp = 4;
    let piped = StepModel::new(&ideal_h100(), &model, &cfg).seconds(&StepShape::decode(1, 512));
    // Same layer work; plus 3 hops of one hidden state (8192 B ÷ 450 GB/s + 8 µs).
    let hops = 3.0 * (8192.0 / 450e9 + 8e-6);
    close(piped, flat + hops, "pp=4 at batch 1");
}
