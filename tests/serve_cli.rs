//! `dyno serve` as a user runs it: starts on a free loopback port, answers a completion and
//! `/health`, refuses a bad config naming the field, and exits 0 on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

fn http(addr: &str, method: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect to dyno serve");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("write request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read response");
    out
}

#[test]
fn serve_answers_and_stops_cleanly_on_sigterm() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["serve", "--model", "mixtral-tiny", "--port", "0", "--threads", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dyno serve");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("first line");
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .filter(|_| line.contains("listening on"))
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();

    let health = http(&addr, "GET", "/health", "");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let body = r#"{"model":"mixtral-tiny","prompt":"Hi","max_tokens":5,"ignore_eos":true}"#;
    let resp = http(&addr, "POST", "/v1/completions", body);
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains(r#""completion_tokens":5"#), "{resp}");
    let bad = http(
        &addr,
        "POST",
        "/v1/completions",
        r#"{"model":"mixtral-tiny","prompt":"Hi","max_tokens":"many"}"#,
    );
    assert!(bad.starts_with("HTTP/1.1 400") && bad.contains("max_tokens"), "{bad}");

    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    assert!(killed.is_ok_and(|s| s.success()));
    let status = child.wait().expect("wait for dyno serve");
    assert!(status.success(), "dyno serve exited with {status}");
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("rest of stdout");
    assert!(rest.contains("stopped"), "{rest}");
}

#[test]
fn serve_refuses_a_bad_config_naming_the_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("engine.yaml");
    std::fs::write(&path, "kv_block_size: 0\n").expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["serve", "--model", "mixtral-tiny", "--port", "0", "--config"])
        .arg(&path)
        .output()
        .expect("run dyno serve");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("engine.yaml") && err.contains("kv_block_size"), "{err}");
}

#[test]
fn model_info_prints_counts_and_footprints() {
    let out = Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["model", "info", "mixtral", "--json"])
        .output()
        .expect("run dyno model info");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["config"]["name"], "mixtral-8x7b");
    let total = v["params"]["total"].as_f64().expect("total");
    assert!((total / 1e9 - 46.7).abs() < 0.05, "{total}");
    let formats = v["formats"].as_array().expect("formats");
    assert_eq!(formats.len(), 6);
    let bad = Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["model", "info", "llama-9000"])
        .output()
        .expect("run dyno model info");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("llama-9000"));
}

#[test]
fn engine_bench_reports_every_batch_and_the_kl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("bench.json");
    let out = Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args([
            "engine",
            "bench",
            "--model",
            "mixtral-tiny",
            "--weights",
            "int8",
            "--batches",
            "1,3",
            "--prompt-len",
            "4",
            "--decode-steps",
            "2",
            "--json",
        ])
        .arg(&json)
        .output()
        .expect("run dyno engine bench");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("json file")).expect("JSON");
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.iter().map(|r| r["batch"].as_u64()).collect::<Vec<_>>(), [Some(1), Some(3)]);
    assert!(rows.iter().all(
        |r| r["decode_tok_s"].as_f64() > Some(0.0) && r["roofline_tok_s"].as_f64() > Some(0.0)
    ));
    assert!(v["kl"]["mean"].as_f64().is_some_and(|kl| kl > 0.0));
}
