//! `dyno tune` and the `tune` binary end to end on the test-sized model: a real study over
//! loopback HTTP that records its trials, emits a config `dyno serve --config` accepts, and
//! shows in `dyno study show`; bad input exits 2 with a message naming the flag.

use std::path::Path;
use std::process::{Command, Output};

use dyno_engine::EngineConfig;

/// A small, fast workload for the tiny model.
const WORKLOAD: &str = "seed: 2\nlengths:\n  prompt: { dist: fixed, value: 16 }\n  output: { dist: fixed, value: 4 }\n\
                        arrival: { process: poisson, rate: 20 }\nrequests: 8\nwarmup: { requests: 1 }\n\
                        slo: { ttft_p99_ms: 5000, tpot_p99_ms: 1000 }\n";

/// Three knobs, eight points.
const SPACE: &str = "knobs:\n  weights: [f32, int8]\n  batch.max_num_seqs: [4, 8]\n  kernels.quant_row_tile: [4, 8]\n";

fn tune(bin: &str, dir: &Path, extra: &[&str]) -> Output {
    std::fs::write(dir.join("w.yaml"), WORKLOAD).expect("workload");
    std::fs::write(dir.join("space.yaml"), SPACE).expect("space");
    Command::new(bin)
        .current_dir(dir)
        .env("DYNO_KERNEL_CACHE", dir.join("cache").join("kernels.jsonl"))
        .env("DYNO_DB", dir.join("t.sqlite"))
        .args(extra)
        .args(["--model", "mixtral-tiny", "--workload", "w.yaml", "--space", "space.yaml"])
        .args(["--rate", "20", "--requests", "6", "--no-kernels", "--cores", "1"])
        .output()
        .expect("run")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn a_study_emits_a_config_serve_accepts_and_shows_its_trials() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = tune(
        env!("CARGO_BIN_EXE_dyno"),
        dir.path(),
        &[
            "tune",
            "--measure-top",
            "0",
            "--budget",
            "3",
            "--strategy",
            "random",
            "--study",
            "s1",
            "--out",
            "best.yaml",
            "--confirm",
            "1",
        ],
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("[3/3]") && stderr.contains("best:"), "{stderr}");
    // --measure-top 0: the strategy's own search, no simulated phase.
    assert!(!stderr.contains("simulated phase") && !stderr.contains("s1-sim"), "{stderr}");
    let yaml = std::fs::read_to_string(dir.path().join("best.yaml")).expect("best.yaml");
    assert!(yaml.starts_with("# dyno tune: the best config found for mixtral-tiny"), "{yaml}");
    assert!(yaml.contains("study `s1`") && yaml.contains("goodput"), "{yaml}");
    let config = EngineConfig::from_yaml(&yaml, "best.yaml").expect("serve's parser accepts it");
    assert_eq!(config.threads, 1);

    // The quality cache sits beside the kernel cache, not in the user's home.
    assert!(dir.path().join("cache").join("quality.jsonl").exists());

    let show = Command::new(env!("CARGO_BIN_EXE_dyno"))
        .current_dir(dir.path())
        .env("DYNO_DB", dir.path().join("t.sqlite"))
        .args(["study", "show", "s1"])
        .output()
        .expect("show");
    let shown = text(&show.stdout);
    assert!(show.status.success(), "{}", text(&show.stderr));
    // Three trials, then the best point and the baseline once more (one trial if they are the
    // same point).
    let completed = shown.lines().filter(|l| l.contains(" completed ")).count();
    assert!((4..=5).contains(&completed), "{shown}");
    assert!(shown.contains("pareto frontier") && shown.contains("best config:"), "{shown}");

    // The same name again needs --resume; resuming a finished study measures nothing more.
    let again = tune(
        env!("CARGO_BIN_EXE_dyno"),
        dir.path(),
        &["tune", "--measure-top", "0", "--budget", "3", "--strategy", "random", "--study", "s1"],
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("--resume"), "{}", text(&again.stderr));
    let resumed = tune(
        env!("CARGO_BIN_EXE_tune"),
        dir.path(),
        &[
            "--measure-top",
            "0",
            "--budget",
            "3",
            "--strategy",
            "random",
            "--study",
            "s1",
            "--resume",
            "--confirm",
            "1",
        ],
    );
    let stderr = text(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(stderr.contains("after 0 trials measured here"), "{stderr}");
    // Without --out the config goes to stdout, the summary to stderr.
    EngineConfig::from_yaml(&text(&resumed.stdout), "stdout").expect("yaml on stdout");
}

#[test]
fn measure_top_simulates_the_space_then_measures_the_top_points_beside_their_predictions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let args =
        ["tune", "--measure-top", "2", "--study", "h", "--confirm", "0", "--out", "best.yaml"];
    let out = tune(env!("CARGO_BIN_EXE_dyno"), dir.path(), &args);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // No calibrated profile under this test's cache directory: the template, with a warning.
    assert!(
        stderr.contains("uncalibrated") && stderr.contains("dyno profile --hw cpu"),
        "{stderr}"
    );
    // Eight points, all feasible on one core: the grid covers them.
    assert!(
        stderr.contains("study `h-sim`") && stderr.contains("8 of 8 feasible points"),
        "{stderr}"
    );
    assert!(stderr.contains("grid strategy"), "{stderr}");
    assert!(stderr.contains("predicted vs measured") && stderr.contains("mean"), "{stderr}");
    let yaml = std::fs::read_to_string(dir.path().join("best.yaml")).expect("best.yaml");
    assert!(
        yaml.contains("chosen among the top 2 of 8 points predicted by the simulator"),
        "{yaml}"
    );
    assert!(yaml.contains("prediction error") && yaml.contains("throughput"), "{yaml}");
    EngineConfig::from_yaml(&yaml, "best.yaml").expect("serve's parser accepts it");

    let dyno = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_dyno"))
            .current_dir(dir.path())
            .env("DYNO_DB", dir.path().join("t.sqlite"))
            .args(args)
            .output()
            .expect("dyno")
    };
    // The simulated study holds a prediction of every point and no measurement.
    let sim = dyno(&["study", "show", "h-sim", "--json"]);
    assert!(sim.status.success(), "{}", text(&sim.stderr));
    let sim: serde_json::Value = serde_json::from_slice(&sim.stdout).expect("json");
    assert_eq!(sim["trials"].as_array().map(Vec::len), Some(8), "{sim}");
    assert!(sim["predictions"].is_null(), "{sim}");
    // The measured study: the top two (and the baseline, when it is in the space), each
    // with its prediction beside its measurement.
    let shown = dyno(&["study", "show", "h", "--json"]);
    assert!(shown.status.success(), "{}", text(&shown.stderr));
    let report: serde_json::Value = serde_json::from_slice(&shown.stdout).expect("json");
    let trials = report["trials"].as_array().expect("trials");
    assert!((2..=3).contains(&trials.len()), "{report}");
    assert!(trials.iter().all(|t| t["predicted"].is_object() && t["metrics"].is_object()));
    let rows = report["predictions"]["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), trials.len(), "{report}");
    assert!(report["predictions"]["mean_abs"]["throughput"].is_number(), "{report}");
    let text_report = dyno(&["study", "show", "h"]);
    let shown = text(&text_report.stdout);
    assert!(shown.contains("pred goodput") && shown.contains("predicted vs measured"), "{shown}");

    // Resuming reuses the stored simulation and measures nothing again.
    let resumed =
        tune(env!("CARGO_BIN_EXE_dyno"), dir.path(), &[&args[..], &["--resume"]].concat());
    let stderr = text(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(
        stderr.contains("finished predictions reused") && stderr.contains("(0 here)"),
        "{stderr}"
    );
    assert!(stderr.contains("after 0 trials measured here"), "{stderr}");
}

#[test]
fn bad_input_names_the_flag_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (args, needle) in [
        (vec!["tune", "--strategy", "annealing"], "annealing"),
        (vec!["tune", "--hw", "nonesuch"], "nonesuch"),
        (vec!["tune", "--slo", "ttft_p99_ms=fast"], "ttft_p99_ms"),
        (vec!["tune", "--slo", "p50_ms=3"], "p50_ms"),
        (vec!["tune", "--budget", "0"], "--budget"),
        (vec!["tune", "--max-kl=-1"], "--max-kl"),
        (vec!["tune", "--sim-budget", "0"], "--sim-budget"),
    ] {
        let out = tune(env!("CARGO_BIN_EXE_dyno"), dir.path(), &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    assert!(!dir.path().join("t.sqlite").exists(), "nothing stored for bad input");
}
