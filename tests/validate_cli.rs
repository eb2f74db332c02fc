//! `dyno validate` end to end on the test-sized model: each config predicted and measured
//! over loopback HTTP, both stored side by side, the error table printed.

use std::process::{Command, Output};

const WORKLOAD: &str = "seed: 4\nlengths:\n  prompt: { dist: uniform, min: 8, max: 24 }\n  output: { dist: uniform, min: 2, max: 6 }\n\
                        arrival: { process: poisson, rate: 10 }\nrequests: 16\n\
                        slo: { ttft_p99_ms: 5000, tpot_p99_ms: 1000 }\n";

fn dyno(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dyno"))
        .current_dir(dir)
        .env("DYNO_KERNEL_CACHE", dir.join("cache").join("kernels.jsonl"))
        .env("DYNO_DB", dir.join("v.sqlite"))
        .args(args)
        .output()
        .expect("run dyno")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_stores_predicted_and_measured_and_prints_the_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("w.yaml"), WORKLOAD).expect("workload");
    std::fs::write(dir.path().join("a.yaml"), "threads: 1\n").expect("a");
    std::fs::write(
        dir.path().join("b.yaml"),
        "threads: 1\nweights: int8\nbatch: { policy: continuous, max_num_seqs: 2, max_num_batched_tokens: 64, prefill_chunk: 16 }\n",
    )
    .expect("b");
    let out = dyno(
        dir.path(),
        &[
            "validate",
            "--model",
            "mixtral-tiny",
            "--workload",
            "w.yaml",
            "--configs",
            "a.yaml,b.yaml",
            "--rate",
            "10",
            "--requests",
            "16",
            "--study",
            "v1",
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("uncalibrated template"), "{stderr}");
    for needle in ["tput err", "TTFT p99", "mean |error|", "stored as study `v1`"] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }
    let rows: Vec<&str> =
        stdout.lines().filter(|l| l.starts_with("a ") || l.starts_with("b ")).collect();
    assert_eq!(rows.len(), 4, "two cases in both tables: {stdout}");
    assert!(rows.iter().all(|l| l.contains('%') || l.contains('/')), "{stdout}");

    // Both figures are in the store, side by side, per trial.
    let store = tokio::runtime::Runtime::new().expect("rt").block_on(async {
        let url = format!("sqlite://{}", dir.path().join("v.sqlite").display());
        let store = dyno_results::store::Store::open(&url).await.expect("open");
        let study = store.study_by_name("v1").await.expect("query").expect("study");
        store.trials(study.id).await.expect("trials")
    });
    assert_eq!(store.len(), 2);
    for t in &store {
        let p = t.predicted.as_ref().expect("predicted");
        let m = t.measured.as_ref().expect("measured");
        assert_eq!(p["requests"], 16);
        assert_eq!(m["requests"], 16);
        assert!(m["request_throughput"].as_f64().expect("tput") > 0.0);
    }

    // `dyno study show` renders a validation study as its error table.
    let show = dyno(dir.path(), &["study", "show", "v1"]);
    assert!(show.status.success(), "{}", text(&show.stderr));
    let shown = text(&show.stdout);
    assert!(shown.contains("validation study `v1`") && shown.contains("mean |error|"), "{shown}");
    assert_eq!(shown.lines().filter(|l| l.starts_with("a ") || l.starts_with("b ")).count(), 4);

    // A second run under the same name is refused and changes nothing.
    let again = dyno(
        dir.path(),
        &[
            "validate",
            "--model",
            "mixtral-tiny",
            "--workload",
            "w.yaml",
            "--configs",
            "a.yaml",
            "--study",
            "v1",
            "--requests",
            "16",
        ],
    );
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("already exists"), "{}", text(&again.stderr));
}

#[test]
fn validate_refuses_gpu_targets_and_short_runs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dyno(dir.path(), &["validate", "--hw", "h100"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("this machine"), "{}", text(&out.stderr));
    let out = dyno(dir.path(), &["validate", "--requests", "3"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--requests 3"), "{}", text(&out.stderr));
}
