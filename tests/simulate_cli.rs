//! `dyno simulate` and `dyno tune --hw <gpu>` end to end: predicted metrics printed like a
//! load test, a simulated study that emits a config for the target, and clear errors for
//! configs that do not fit.

use std::process::{Command, Output};

use dyno_engine::{EngineConfig, ModelConfig};

fn dyno(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dyno"))
        .current_dir(dir)
        .env("DYNO_KERNEL_CACHE", dir.join("cache").join("kernels.jsonl"))
        .env("DYNO_DB", dir.join("t.sqlite"))
        .args(args)
        .output()
        .expect("run dyno")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn simulate_prints_the_load_report_and_its_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("tp2.yaml"),
        "weights: bf16\nparallel: { tp: 2, dp: 4 }\nbatch: { policy: continuous, max_num_seqs: 64, max_num_batched_tokens: 4096, prefill_chunk: 1024 }\n",
    )
    .expect("config");
    let out = dyno(
        dir.path(),
        &[
            "simulate",
            "--hw",
            "h100",
            "--gpus",
            "8",
            "--model",
            "mixtral",
            "--config",
            "tp2.yaml",
            "--workload",
            "chat",
            "--rate",
            "4",
            "--requests",
            "100",
            "--json",
            "r.json",
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("Median TTFT (ms)") && stdout.contains("Request goodput"), "{stdout}");
    assert!(stderr.contains("predicted, not measured") && stderr.contains("h100-sxm"), "{stderr}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("r.json")).expect("json"))
            .expect("parse");
    assert_eq!(json["completed"], 100);
    assert!(json["median_tpot_ms"].as_f64().expect("tpot") > 0.0);
    assert_eq!(json["dyno"]["environment"]["predicted"], true);
}

#[test]
fn a_config_that_does_not_fit_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    // bf16 Mixtral-8x7B is ~87 GiB of weights: not one 80 GB H100.
    let out = dyno(
        dir.path(),
        &["simulate", "--hw", "h100", "--gpus", "1", "--model", "mixtral", "--weights", "bf16"],
    );
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("memory") && stderr.contains("1 × h100-sxm"), "{stderr}");
    let out = dyno(dir.path(), &["simulate", "--hw", "tpu-v9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("tpu-v9"), "{}", text(&out.stderr));
}

#[test]
fn tune_for_an_h100_searches_with_the_simulator_and_emits_a_valid_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dyno(
        dir.path(),
        &[
            "tune",
            "--hw",
            "h100",
            "--model",
            "mixtral",
            "--budget",
            "12",
            "--requests",
            "200",
            "--study",
            "h100",
            "--out",
            "best.yaml",
        ],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("simulated") && stderr.contains("pruned"), "{stderr}");
    let yaml = std::fs::read_to_string(dir.path().join("best.yaml")).expect("best.yaml");
    assert!(
        yaml.contains("PREDICTED by the simulator from profile h100-sxm, uncalibrated"),
        "{yaml}"
    );
    assert!(yaml.contains("GPU kernel tiles"), "{yaml}");
    let config = EngineConfig::from_yaml(&yaml, "best.yaml").expect("the engine reads it");
    let model = ModelConfig::preset("mixtral").expect("mixtral");
    config.validate_for(&model, "best.yaml").expect("valid for mixtral");
    let p = config.parallel;
    assert!(p.tp * p.ep * p.pp * p.dp <= 8, "{p:?}");
    // Not bf16 on one GPU: that does not fit.
    assert!(
        !(config.weights == dyno_engine::config::WeightDtype::Bf16 && p.tp * p.ep * p.pp == 1),
        "{yaml}"
    );
    // The study keeps the predictions, not measurements.
    let show = dyno(dir.path(), &["study", "show", "h100", "--json"]);
    assert!(show.status.success(), "{}", text(&show.stderr));
    let report: serde_json::Value = serde_json::from_slice(&show.stdout).expect("json");
    assert!(report["trials"].as_array().expect("trials").len() >= 2);
}
