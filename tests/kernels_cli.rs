//! End-to-end tests of `dyno kernels bench` / `dyno kernels tune` (tiny shapes, tiny budgets;
//! no timing assertions).

use std::path::Path;
use std::process::{Command, Output};

fn dyno(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(args)
        .env_remove("DYNO_KERNEL_CACHE")
        .output()
        .expect("running the dyno binary")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn tune(cache: &Path, extra: &[&str]) -> Output {
    let cache = cache.to_str().expect("utf-8 temp path");
    let mut args = vec![
        "kernels",
        "tune",
        "--shape",
        "6,300,600",
        "--budget",
        "5",
        "--seed",
        "7",
        "--threads",
        "1",
        "--budget-ms",
        "1",
        "--cache",
        cache,
    ];
    args.extend_from_slice(extra);
    dyno(&args)
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
    assert_eq!(lines.lines().count(), 5);
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["kernel"], "gemm_f32");
        assert_eq!(v["shape"], serde_json::json!([6, 300, 600]));
    }

    let second = tune(&cache, &[]);
    let (stdout, stderr) = text(&second);
    assert!(second.status.success(), "{stderr}");
    assert!(stdout.contains("reused 5 cached results"), "{stdout}");
    assert!(stdout.contains("(0 measured)"), "{stdout}");
    assert_eq!(std::fs::read_to_string(&cache).unwrap().lines().count(), 5, "nothing re-measured");
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
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stderr}");
    assert!(stdout.contains("ours/default") && stdout.contains("fma peak"), "{stdout}");

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
