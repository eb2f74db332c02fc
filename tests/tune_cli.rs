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
        &["tune", "--budget", "3", "--strategy", "random", "--study", "s1"],
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("--resume"), "{}", text(&again.stderr));
    let resumed = tune(
        env!("CARGO_BIN_EXE_tune"),
        dir.path(),
        &["--budget", "3", "--strategy", "random", "--study", "s1", "--resume", "--confirm", "1"],
    );
    let stderr = text(&resumed.stderr);
    assert!(resumed.status.success(), "{stderr}");
    assert!(stderr.contains("after 0 trials measured here"), "{stderr}");
    // Without --out the config goes to stdout, the summary to stderr.
    EngineConfig::from_yaml(&text(&resumed.stdout), "stdout").expect("yaml on stdout");
}

#[test]
fn bad_input_names_the_flag_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (args, needle) in [
        (vec!["tune", "--strategy", "annealing"], "annealing"),
        (vec!["tune", "--hw", "h100"], "--hw h100"),
        (vec!["tune", "--slo", "ttft_p99_ms=fast"], "ttft_p99_ms"),
        (vec!["tune", "--slo", "p50_ms=3"], "p50_ms"),
        (vec!["tune", "--budget", "0"], "--budget"),
        (vec!["tune", "--max-kl=-1"], "--max-kl"),
    ] {
        let out = tune(env!("CARGO_BIN_EXE_dyno"), dir.path(), &args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    assert!(!dir.path().join("t.sqlite").exists(), "nothing stored for bad input");
}
