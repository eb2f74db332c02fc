//! The simulator against queueing theory and against the engine's own step sequence.

use std::path::Path;

use dyno_engine::ModelConfig;
use dyno_engine::api::GenerateRequest;
use dyno_engine::config::{BatchPolicy, EngineConfig, Priority};
use dyno_engine::engine::Engine;
use dyno_engine::weights::RandomWeights;
use dyno_harness::metrics::{LoadReport, SummaryOptions};
use dyno_tuner::hardware::HardwareProfile;
use dyno_tuner::simulate::{ConstantStep, SimOptions, simulate};
use dyno_tuner::step_model::StepModel;
use dyno_workloads::{LoadOverrides, Workload};

fn workload(yaml: &str) -> Workload {
    Workload::from_yaml(yaml, "test workload", Path::new(".")).unwrap()
}

/// M/D/1: Poisson arrivals at rate λ, one server with a deterministic service time D. At
/// utilisation ρ = λD the mean wait in the queue is ρD / (2(1 − ρ)) (Pollaczek–Khinchine);
/// at ρ = 0.5 and D = 1 s that is 0.5 s, and the time to the first (only) token is the wait
/// plus the service: 1.5 s.
#[test]
fn constant_steps_at_batch_one_reproduce_the_md1_mean_wait() {
    let w = workload(
        "seed: 7\nlengths:\n  prompt: { dist: fixed, value: 4 }\n  output: { dist: fixed, value: 1 }\narrival: { process: poisson, rate: 0.5 }\nrequests: 200000\n",
    );
    let model = ModelConfig::preset("mixtral-tiny").unwrap();
    let cfg = EngineConfig {
        batch: BatchPolicy::Static { batch_size: 1 },
        max_waiting: 1_000_000,
        ..EngineConfig::default()
    };
    let plan = w.plan(&LoadOverrides::default()).unwrap();
    let out = simulate(&plan, &model, &cfg, &ConstantStep(1.0), &SimOptions::default());
    assert_eq!(out.records.len(), 200_000);
    assert!(out.records.iter().all(|r| r.ok()));
    let waits: Vec<f64> = out.records.iter().map(|r| r.ttft_s().unwrap() - 1.0).collect();
    let mean = waits.iter().sum::<f64>() / waits.len() as f64;
    let theory = 0.5 * 1.0 / (2.0 * (1.0 - 0.5));
    assert!((mean - theory).abs() / theory < 0.03, "mean wait {mean} vs M/D/1 {theory}");
}

/// The simulator drives the engine's scheduler: for the same requests, all arriving at
/// once, the engine's steps and the simulator's have the same sequences and tokens, step by
/// step — chunked prefill, a full token budget and preemption included.
#[test]
fn the_simulator_schedules_exactly_as_the_engine() {
    let model = ModelConfig::preset("mixtral-tiny").unwrap();
    let mut cfg = EngineConfig { threads: 1, ..EngineConfig::default() };
    cfg.batch = BatchPolicy::Continuous {
        max_num_seqs: 12,
        max_num_batched_tokens: 64,
        prefill_chunk: 16,
        priority: Priority::DecodeFirst,
    };
    // mixtral-tiny's 512-token context in 16-token blocks: the smallest pool that validates.
    cfg.kv_block_size = 16;
    cfg.kv_pool_blocks = Some(32);
    let n = 12;
    let w = workload(&format!(
        "seed: 3\nlengths:\n  prompt: {{ dist: uniform, min: 3, max: 60 }}\n  output: {{ dist: uniform, min: 10, max: 60 }}\narrival: {{ process: closed, concurrency: {n} }}\nrequests: {n}\n"
    ));
    let plan = w.plan(&LoadOverrides::default()).unwrap();

    let mut engine = Engine::new(&model, &RandomWeights { seed: 1 }, &cfg).unwrap();
    for r in plan.requests() {
        let req = GenerateRequest {
            prompt: r.prompt.clone(),
            max_tokens: r.output_tokens,
            min_tokens: 0,
            ignore_eos: true,
            temperature: 0.0,
            seed: None,
        };
        engine.add(req, None, 0.0).unwrap();
    }
    let mut engine_steps = Vec::new();
    let mut preemptions = 0;
    while engine.has_work() {
        let report = engine.step(0.0).unwrap();
        engine_steps.push((report.batch_size, report.tokens_computed));
        assert!(engine_steps.len() < 10_000, "engine did not finish");
    }
    preemptions += engine.metrics().preemptions_total;

    let opts = SimOptions { log_steps: true, ..SimOptions::default() };
    let out = simulate(&plan, &model, &cfg, &ConstantStep(0.01), &opts);
    let sim_steps: Vec<(usize, usize)> =
        out.step_log.iter().map(|(_, s)| (s.sequences, s.tokens)).collect();
    assert_eq!(sim_steps, engine_steps);
    assert_eq!(out.preemptions, preemptions);
    assert!(preemptions > 0, "the scenario should exercise preemption");
    assert!(out.records.iter().all(|r| r.ok()));
    for (r, planned) in out.records.iter().zip(plan.requests()) {
        assert_eq!(r.output_tokens, Some(planned.output_tokens));
        assert_eq!(r.prompt_tokens, planned.prompt.len());
    }
}

/// Simulated runs produce the same records a load test does, so the same report applies:
/// the simulated chat workload on an H100 has sane figures.
#[test]
fn a_simulated_run_reports_like_a_load_test() {
    let model = ModelConfig::preset("mixtral").unwrap();
    let mut cfg = EngineConfig::default();
    cfg.set_weight_format(dyno_engine::model_config::WeightFormat::Bf16);
    cfg.parallel.tp = 2;
    cfg.kv_pool_mib = 20 * 1024;
    let sm = StepModel::new(&HardwareProfile::resolve("h100").unwrap(), &model, &cfg);
    let w = Workload::preset("chat").unwrap();
    let plan = w.plan(&LoadOverrides { rate: Some(4.0), ..LoadOverrides::default() }).unwrap();
    let out = simulate(&plan, &model, &cfg, &sm, &SimOptions::default());
    let report = LoadReport::from_records(&out.records, &w.slo, &SummaryOptions::default());
    assert_eq!(report.completed, 200);
    assert!(report.ttft.p50 > 0.0 && report.tpot.p50 > 0.0);
    // Decode at a few sequences on 2 H100s: a handful of milliseconds per token.
    assert!(report.tpot.p50 > 0.002 && report.tpot.p50 < 0.05, "tpot {}", report.tpot.p50);
    assert!((report.request_throughput - 4.0).abs() < 1.0, "{}", report.request_throughput);
}
