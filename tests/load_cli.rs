//! `dyno load` as a user runs it: against the null server and the built-in engine, JSON with
//! vLLM's key names, and clear errors for bad input.

mod common;

use common::stored_runs;
use std::path::Path;
use std::process::{Command, Output};

fn dyno(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(args)
        .env("DYNO_DB", common::test_db_dir().join("results.sqlite"))
        .output()
        .expect("run dyno")
}

fn write_workload(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write workload");
    path.to_string_lossy().into_owned()
}

const SMALL: &str = "seed: 2\nlengths:\n  prompt: { dist: fixed, value: 16 }\n  output: { dist: fixed, value: 4 }\n\
                     arrival: { process: constant, rate: 50 }\nrequests: 12\nwarmup: { requests: 2 }\n\
                     slo: { ttft_p99_ms: 60000 }\n";

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).expect("json written")).expect("valid JSON")
}

#[test]
fn null_target_writes_vllm_keyed_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = write_workload(dir.path(), "small.yaml", SMALL);
    let out_path = dir.path().join("out.json");
    let out = dyno(&[
        "load",
        "--target",
        "null",
        "--workload",
        &w,
        "--no-progress",
        "--json",
        out_path.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Serving Benchmark Result"), "{stdout}");
    let v = json(&out_path);
    for key in [
        "completed",
        "request_throughput",
        "output_throughput",
        "total_token_throughput",
        "mean_ttft_ms",
        "median_ttft_ms",
        "p99_ttft_ms",
        "mean_tpot_ms",
        "p99_itl_ms",
        "median_e2el_ms",
        "request_goodput",
        "input_lens",
        "output_lens",
        "ttfts",
        "itls",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["completed"], 12);
    assert_eq!(v["total_output_tokens"], 48);
    assert_eq!(v["input_lens"].as_array().map(Vec::len), Some(12));
    assert_eq!(v["dyno"]["warmup_requests"], 2);
    assert!(v["dyno"]["environment"]["machine"].is_object(), "{}", v["dyno"]);
}

#[test]
fn a_load_run_is_recorded_with_its_commit_measures_and_histograms() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = write_workload(dir.path(), "small.yaml", SMALL);
    let db = dir.path().join("r.sqlite");
    let db_arg = db.to_str().expect("utf-8 path");
    let args = ["load", "--target", "null", "--workload", &w, "--no-progress", "--rate", "40"];
    let mut with_db = args.to_vec();
    with_db.extend(["--db", db_arg, "--commit", "HEAD", "--branch", "test-branch"]);
    let out = dyno(&with_db);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("recorded run"));

    let runs = stored_runs(&db);
    assert_eq!(runs.len(), 1);
    let record = &runs[0];
    assert_eq!(record.run.branch, "test-branch");
    assert_eq!(record.run.status, dyno_results::store::RunStatus::Completed);
    assert_eq!(record.run.commit.sha.len(), 40, "HEAD resolved to a full hash");
    assert!(record.run.commit.ordinal.is_some_and(|n| n > 0));
    assert!(record.run.testbed.spec["cpu_model"].is_string());
    assert!(record.run.environment["os"].is_string());
    let [scenario] = record.scenarios.as_slice() else { panic!("{:?}", record.scenarios) };
    assert_eq!(scenario.scenario.name, "small/null-server/rate=40");
    let value = |m: &str| {
        scenario.values.iter().find(|v| v.measure == m).unwrap_or_else(|| panic!("no {m}"))
    };
    let ttft = value("ttft_p99_ms");
    assert_eq!((ttft.unit.as_str(), ttft.lower_is_better, ttft.n), ("ms", true, 12));
    assert_eq!(ttft.samples.len(), 12, "one raw TTFT per measured request");
    assert!(ttft.lower.is_some_and(|l| l <= ttft.value));
    assert!(ttft.upper.is_some_and(|u| u >= ttft.value));
    assert!(!value("request_throughput").lower_is_better);
    assert_eq!(value("failed_fraction").value, 0.0);
    let names: Vec<&str> = scenario.histograms.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["ttft", "tpot", "itl", "e2el", "ttft_intended", "e2el_intended"]);

    // --no-db records nothing; a bad --db fails before anything runs.
    let mut no_db = args.to_vec();
    no_db.extend(["--no-db", "--db", db_arg]);
    assert!(dyno(&no_db).status.success());
    assert_eq!(stored_runs(&db).len(), 1);
    let mut bad_db = args.to_vec();
    bad_db.extend(["--db", "postgres://dyno:x@127.0.0.1:1/none"]);
    let out = dyno(&bad_db);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open results database") && !err.contains("dyno:x@"), "{err}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("Serving Benchmark Result"));
}

#[test]
fn builtin_engine_serves_a_sweep_over_real_http() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = write_workload(dir.path(), "small.yaml", SMALL);
    let out_path = dir.path().join("sweep.json");
    let out = dyno(&[
        "load",
        "--target",
        "builtin",
        "--model",
        "mixtral-tiny",
        "--threads",
        "1",
        "--workload",
        &w,
        "--sweep",
        "20,40",
        "--requests",
        "6",
        "--json",
        out_path.to_str().expect("utf-8 path"),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out_path);
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    for (run, rate) in runs.iter().zip([20.0, 40.0]) {
        assert_eq!(run["rate"], rate);
        assert_eq!(run["report"]["completed"], 6, "{}", run["report"]);
        assert_eq!(run["report"]["failed"], 0);
        // The built-in engine honours max_tokens with ignore_eos: 4 tokens each.
        assert_eq!(run["report"]["total_output_tokens"], 24);
    }
}

#[test]
fn bad_input_names_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let typo =
        write_workload(dir.path(), "typo.yaml", &SMALL.replace("requests: 12", "requets: 12"));
    let out = dyno(&["load", "--target", "null", "--workload", &typo]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("typo.yaml") && err.contains("requets"), "{err}");

    let out = dyno(&["load", "--target", "ftp://x", "--workload", "chat"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--target ftp://x"));

    let out = dyno(&["load", "--target", "null", "--workload", "no-such-preset"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-preset"));

    let no_slo = write_workload(
        dir.path(),
        "noslo.yaml",
        &SMALL.replace("slo: { ttft_p99_ms: 60000 }\n", ""),
    );
    let out = dyno(&["load", "--target", "null", "--workload", &no_slo, "--max-rate-under-slo"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no SLOs"));

    let out = dyno(&["load", "--target", "null", "--workload", &no_slo, "--rate", "-3"]);
    assert!(!out.status.success());
}
