//! End-to-end tests of `dyno kernels bench` / `dyno kernels tune` (tiny shapes, tiny budgets;
//! no timing assertions).

mod common;

use std::path::Path;
use std::process::{Command, Output};

fn dyno(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(args)
        .env_remove("DYNO_KERNEL_CACHE")
        .env("DYNO_DB", common::test_db_dir().join("results.sqlite"))
        .output()
        .expect("running the dyno binary")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `dyno kernels tune` on `target` (`["--shape", "m,n,k"]` or `["--attention", SHAPE]`) with
/// a tiny time budget, the given budget, seed and threads, a temp cache, and `extra` flags.
fn tune_on(cache: &Path, target: [&str; 2], knobs: [&str; 3], extra: &[&str]) -> Output {
    let cache = cache.to_str().expect("utf-8 temp path");
    let [budget, seed, threads] = knobs;
    let mut args =
        vec!["kernels", "tune", target[0], target[1], "--budget", budget, "--seed", seed];
    args.extend_from_slice(&["--threads", threads, "--budget-ms", "1", "--cache", cache]);
    args.extend_from_slice(extra);
    dyno(&args)
}

/// The GEMM tuning run most tests use: a small shape, 5 candidates, one thread.
fn tune(cache: &Path, extra: &[&str]) -> Output {
    tune_on(cache, ["--shape", "6,300,600"], ["5", "7", "1"], extra)
}

/// A second tuning run over the same cache reused all `cached` results, measured nothing and
/// wrote nothing (the cache still has `lines` lines).
fn assert_rerun_measures_nothing(second: &Output, cache: &Path, cached: usize, lines: usize) {
    let (stdout, stderr) = text(second);
    assert!(second.status.success(), "{stderr}");
    assert!(stdout.contains(&format!("reused {cached} cached results")), "{stdout}");
    assert!(stdout.contains("(0 measured)"), "{stdout}");
    let now = std::fs::read_to_string(cache).unwrap().lines().count();
    assert_eq!(now, lines, "nothing re-measured");
}

/// Cache lines written by the search itself, not by the confirmation of the best candidates.
fn count_search_records(lines: &str) -> usize {
    let confirmed = dyno_kernels::tune::search::CONFIRMED;
    lines.lines().filter(|l| !l.contains(confirmed)).count()
}

#[test]
fn tune_writes_valid_params_and_a_second_run_reuses_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("kernels.jsonl");
    let out = dir.path().join("best.yaml");
    let first = tune(&cache, &["--out", out.to_str().unwrap()]);
    let (stdout, stderr) = text(&first);
    assert!(first.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("0 cached, 5 measured"), "{stdout}");
    assert!(stdout.contains("speedup"), "{stdout}");

    let yaml = std::fs::read_to_string(&out).unwrap();
    let params: dyno_kernels::gemm::GemmParams = serde_yaml::from_str(&yaml).unwrap();
    params.validate().unwrap();
    assert_eq!(params.threads, 1);

    let lines = std::fs::read_to_string(&cache).unwrap();
    let lines_after_first = lines.lines().count();
    assert_eq!(count_search_records(&lines), 5);
    assert!(lines_after_first > 5, "the best candidates were confirmed:\n{lines}");
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["kernel"], "gemm_f32");
        assert_eq!(v["shape"], serde_json::json!([6, 300, 600]));
    }

    assert_rerun_measures_nothing(&tune(&cache, &[]), &cache, 5, lines_after_first);
}

#[test]
fn malformed_cache_is_an_error_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("kernels.jsonl");
    std::fs::write(&cache, "{\"oops\": 1}\n").unwrap();
    let o = tune(&cache, &[]);
    let (_, stderr) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("kernels.jsonl") && stderr.contains("line 1"), "{stderr}");
}

#[test]
fn bench_json_has_the_expected_rows() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("kernels.jsonl");
    let json = dir.path().join("bench.json");
    let db = dir.path().join("results.sqlite");
    // Tune one of the two shapes first so its tuned row is measured.
    assert!(tune(&cache, &[]).status.success());
    let o = dyno(&[
        "kernels",
        "bench",
        "--shape",
        "6,300,600",
        "--shape",
        "3,5,7",
        "--gemv",
        "8,256",
        "--threads",
        "1",
        "--budget-ms",
        "1",
        "--limit-ms",
        "5",
        "--mem-mib",
        "2",
        "--cache",
        cache.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--db",
        db.to_str().unwrap(),
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("ours/default") && stdout.contains("fma peak"), "{stdout}");
    // Recorded: one scenario per kernel and shape, one higher-is-better measure per variant.
    assert!(stderr.contains("recorded run"), "{stderr}");
    let runs = common::stored_runs(&db);
    let [record] = runs.as_slice() else { panic!("{} runs", runs.len()) };
    let gemm = record
        .scenarios
        .iter()
        .find(|s| s.scenario.name == "kernels/gemm_f32/6x300x600")
        .expect("the gemm scenario");
    let ours = gemm.values.iter().find(|v| v.measure == "ours/default").expect("ours/default");
    assert_eq!((ours.family.as_str(), ours.lower_is_better), ("kernel", false));
    assert!(ours.value > 0.0);
    assert!(record.scenarios.iter().any(|s| s.scenario.name == "kernels/int4_gemv/1x8x256"));

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["machine_key"].as_str().is_some_and(|k| !k.is_empty()));
    let peaks = report["limits"]["fma_peak"].as_array().unwrap();
    assert!(peaks.iter().any(|p| p["threads"] == 1));
    assert!(report["limits"]["bandwidth"]["read"]["value"].as_f64().unwrap() > 0.0);
    let rows = report["rows"].as_array().unwrap();
    let find = |shape: serde_json::Value, variant: &str| {
        rows.iter()
            .find(|r| r["shape"] == shape && r["variant"] == variant)
            .unwrap_or_else(|| panic!("no {variant} row for {shape}: {rows:?}"))
    };
    for shape in [serde_json::json!([6, 300, 600]), serde_json::json!([3, 5, 7])] {
        for variant in ["ours/default", "ours/tuned", "gemm", "matrixmultiply"] {
            let r = find(shape.clone(), variant);
            assert_eq!(r["kernel"], "gemm_f32");
            assert_eq!(r["metric"], "gflop_s");
        }
        let d = find(shape.clone(), "ours/default");
        assert!(d["value"].as_f64().unwrap() > 0.0);
        assert!(d["fraction_of_limit"].as_f64().unwrap() > 0.0);
    }
    assert!(find(serde_json::json!([6, 300, 600]), "ours/tuned")["value"].as_f64().is_some());
    let untuned = find(serde_json::json!([3, 5, 7]), "ours/tuned");
    assert!(untuned["value"].is_null());
    assert!(untuned["note"].as_str().unwrap().contains("not tuned"));
    for (kernel, variant) in [
        ("int8_gemv", "ours/f32-acts"),
        ("int8_gemv", "ours/int8-acts"),
        ("int4_gemv", "ours/f32-acts"),
        ("int4_gemv", "ours/int8-acts"),
        ("bf16_gemv", "ours"),
    ] {
        let r = rows
            .iter()
            .find(|r| r["kernel"] == kernel && r["variant"] == variant)
            .unwrap_or_else(|| panic!("no {kernel} {variant} row: {rows:?}"));
        assert_eq!(r["shape"], serde_json::json!([1, 8, 256]));
        assert_eq!(r["metric"], "gb_s");
        assert!(r["fraction_of_limit"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn bad_gemv_shapes_fail_naming_the_flag() {
    for bad in ["8,100", "8", "x,128", "0,128"] {
        let o = dyno(&["kernels", "bench", "--gemv", bad]);
        let (stdout, stderr) = text(&o);
        assert!(!o.status.success(), "--gemv {bad} succeeded: {stdout}");
        assert!(stderr.contains("--gemv") && stderr.contains(bad), "{bad}: {stderr}");
    }
}

#[test]
fn bad_shapes_fail_naming_the_flag() {
    for (cmd, bad) in [
        ("tune", "8,x,3"),
        ("tune", "0,1,1"),
        ("tune", "2,3"),
        ("bench", "8,x,3"),
        ("bench", "1,2,3,4"),
    ] {
        let o = dyno(&["kernels", cmd, "--shape", bad]);
        let (stdout, stderr) = text(&o);
        assert!(!o.status.success(), "{cmd} --shape {bad} succeeded: {stdout}");
        assert!(stderr.contains("--shape") && stderr.contains(bad), "{cmd} {bad}: {stderr}");
    }
}

/// An attention tuning run: 4 candidates on two threads.
fn tune_attention(cache: &Path, shape: &str, extra: &[&str]) -> Output {
    tune_on(cache, ["--attention", shape], ["4", "3", "2"], extra)
}

#[test]
fn attention_tune_writes_params_and_a_second_run_reuses_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("kernels.jsonl");
    let out = dir.path().join("attn.yaml");
    let shape = "prefill,q=40,ctx=56,g=2,d=16,bs=8";
    let first = tune_attention(&cache, shape, &["--out", out.to_str().unwrap()]);
    let (stdout, stderr) = text(&first);
    assert!(first.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("attention_prefill_f32"), "{stdout}");
    assert!(stdout.contains("0 cached, 4 measured, 0 rejected"), "{stdout}");
    assert!(stdout.contains("GFLOP/s") && stdout.contains("speedup"), "{stdout}");

    let yaml = std::fs::read_to_string(&out).unwrap();
    let params: dyno_kernels::attention::AttentionParams = serde_yaml::from_str(&yaml).unwrap();
    params.validate().unwrap();
    assert_eq!(params.threads, 2);

    let lines = std::fs::read_to_string(&cache).unwrap();
    let lines_after_first = lines.lines().count();
    assert_eq!(count_search_records(&lines), 4);
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["kernel"], "attention_prefill_f32");
        // [seqs, context, q_len, group, head_dim, block_size]
        assert_eq!(v["shape"], serde_json::json!([1, 56, 40, 2, 16, 8]));
        assert!(v["median_s"].as_f64().is_some() && v["gflops"].as_f64().is_some(), "{v}");
    }

    assert_rerun_measures_nothing(
        &tune_attention(&cache, shape, &[]),
        &cache,
        4,
        lines_after_first,
    );
}

#[test]
fn attention_decode_tune_reports_bandwidth() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("kernels.jsonl");
    let o = tune_attention(&cache, "decode,seqs=3,ctx=300,g=2,d=16", &[]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("attention_decode_f32") && stdout.contains("GB/s"), "{stdout}");
    for line in std::fs::read_to_string(&cache).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["kernel"], "attention_decode_f32");
        assert_eq!(v["shape"], serde_json::json!([3, 300, 1, 2, 16, 16]));
        assert!(v["gb_per_s"].as_f64().is_some_and(|g| g > 0.0), "{v}");
    }
}

#[test]
fn tune_needs_exactly_one_target_and_names_bad_attention_parts() {
    for args in [
        vec!["kernels", "tune"],
        vec!["kernels", "tune", "--shape", "2,2,2", "--attention", "decode,ctx=8,g=1,d=4"],
    ] {
        let o = dyno(&args);
        let (_, stderr) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("--shape") && stderr.contains("--attention"), "{stderr}");
    }
    for (bad, part) in [
        ("prefill,q=4,ctx=8,g=x,d=4", "g = `x`"),
        ("prefill,q=9,ctx=8,g=1,d=4", "q=9 exceeds ctx=8"),
        ("decode,ctx=8,g=1", "`d=` is missing"),
        ("sideways,ctx=8,g=1,d=4", "`sideways`"),
        ("decode,ctx=8,g=1,d=4,bs=0", "bs must be at least 1"),
    ] {
        let o = dyno(&["kernels", "tune", "--attention", bad]);
        let (stdout, stderr) = text(&o);
        assert!(!o.status.success(), "--attention {bad} succeeded: {stdout}");
        assert!(stderr.contains("--attention") && stderr.contains(part), "{bad}: {stderr}");
    }
}

/// The option names (`--hw`, ...) listed by a `--help` text.
fn options(help: &str) -> Vec<String> {
    let mut opts: Vec<String> = help
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .filter_map(|l| l.split([' ', ',']).find(|w| w.starts_with("--")).map(str::to_string))
        .collect();
    opts.sort();
    opts
}

#[test]
fn tune_binary_and_dyno_tune_list_the_same_options() {
    let a = Command::new(env!("CARGO_BIN_EXE_tune")).arg("--help").output().unwrap();
    let b = dyno(&["tune", "--help"]);
    assert!(a.status.success() && b.status.success());
    let (oa, ob) = (options(&text(&a).0), options(&text(&b).0));
    assert!(oa.contains(&"--hw".to_string()), "{oa:?}");
    // `tune` is a top-level binary, so it also has --version; everything else is shared.
    let shared: Vec<_> = oa.iter().filter(|o| *o != "--version").cloned().collect();
    assert_eq!(shared, ob);
}
