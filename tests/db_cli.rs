//! The results-database commands as a user runs them: `dyno ingest criterion`, `dyno db
//! export|import|runs`, `dyno compare` and `dyno alerts`, each against a SQLite file in a
//! temporary directory (and PostgreSQL too when `DYNO_TEST_POSTGRES_URL` is set).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use dyno_results::store::{AlertInfo, AlertState, Store};

/// Runs `dyno` in `dir` (never the repository: nothing may land there).
fn dyno(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(args)
        .current_dir(dir)
        .env_remove("DYNO_DB")
        // `dyno ingest criterion` without DIR looks where criterion writes, as criterion does.
        .env_remove("CRITERION_HOME")
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run dyno")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(o: Output) -> Output {
    assert!(o.status.success(), "stdout:\n{}\nstderr:\n{}", stdout(&o), stderr(&o));
    o
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// One synthesized criterion benchmark: its id and per-iteration times (ns).
struct Bench<'a> {
    group: &'a str,
    function: &'a str,
    throughput: Option<u64>,
    times_ns: Vec<f64>,
}

/// Writes `benches` the way criterion 0.8 lays them out under `root` (`new/` with
/// benchmark.json, estimates.json, sample.json, plus a `base/` copy that must be ignored).
fn write_criterion(root: &Path, benches: &[Bench<'_>]) {
    for b in benches {
        let full_id = format!("{}/{}", b.group, b.function);
        let dir_name = format!("{}/{}", b.group, b.function.replace('/', "_"));
        let bench_dir = root.join(&dir_name);
        let n = b.times_ns.len() as f64;
        let mean = b.times_ns.iter().sum::<f64>() / n;
        let mut sorted = b.times_ns.clone();
        sorted.sort_by(f64::total_cmp);
        let median = sorted[sorted.len() / 2];
        let estimate = |x: f64| {
            serde_json::json!({
                "confidence_interval": {"confidence_level": 0.95, "lower_bound": x * 0.98, "upper_bound": x * 1.02},
                "point_estimate": x,
                "standard_error": x * 0.01,
            })
        };
        let estimates = serde_json::json!({
            "mean": estimate(mean),
            "median": estimate(median),
            "median_abs_dev": estimate(1.0),
            "slope": estimate(mean),
            "std_dev": estimate(2.0),
        });
        let iters: Vec<f64> = (1..=b.times_ns.len()).map(|i| (i * 10) as f64).collect();
        let times: Vec<f64> = iters.iter().zip(&b.times_ns).map(|(i, t)| i * t).collect();
        let sample = serde_json::json!({"sampling_mode": "Linear", "iters": iters, "times": times});
        let throughput = b.throughput.map(|e| serde_json::json!({"Elements": e}));
        let id = serde_json::json!({
            "group_id": b.group,
            "function_id": b.function,
            "value_str": null,
            "throughput": throughput,
            "full_id": full_id,
            "directory_name": dir_name,
            "title": full_id,
        });
        for sub in ["new", "base"] {
            let d = bench_dir.join(sub);
            std::fs::create_dir_all(&d).expect("mkdir");
            std::fs::write(d.join("benchmark.json"), id.to_string()).expect("write");
            std::fs::write(d.join("estimates.json"), estimates.to_string()).expect("write");
            std::fs::write(d.join("sample.json"), sample.to_string()).expect("write");
        }
    }
}

/// 30 evenly spread, shuffled per-iteration times around `center` (±2%).
fn times(center: f64, salt: usize) -> Vec<f64> {
    (0..30).map(|i| center * (0.98 + 0.04 * ((i * 7 + salt) % 30) as f64 / 29.0)).collect()
}

/// A criterion directory whose `ops/shifted` takes `shifted` ns and `ops/steady` 100 ns.
fn criterion_dir(root: &Path, name: &str, shifted: f64, salt: usize) -> PathBuf {
    let dir = root.join(name);
    write_criterion(
        &dir,
        &[
            Bench {
                group: "ops",
                function: "shifted/64",
                throughput: Some(64),
                times_ns: times(shifted, salt),
            },
            Bench {
                group: "ops",
                function: "steady",
                throughput: None,
                times_ns: times(100.0, salt),
            },
        ],
    );
    dir
}

fn ingest(root: &Path, dir: &Path, db: &str, commit: &str) -> Output {
    dyno(
        root,
        &["ingest", "criterion", path(dir), "--db", db, "--commit", commit, "--branch", "main"],
    )
}

fn export_lines(root: &Path, db: &str) -> Vec<serde_json::Value> {
    let out = ok(dyno(root, &["db", "export", "--db", db]));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("each export line is JSON"))
        .collect()
}

#[test]
fn ingesting_criterion_twice_records_once() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let db = root.join("x.sqlite");
    let db = path(&db);
    let dir = criterion_dir(root, "criterion", 200.0, 0);

    let first = ok(ingest(root, &dir, db, "c0ffee"));
    assert!(stdout(&first).contains("2 criterion benchmarks"), "{}", stdout(&first));
    assert!(stdout(&first).contains("criterion/ops/shifted/64"), "{}", stdout(&first));
    assert!(stderr(&first).contains("recorded run 1"), "{}", stderr(&first));
    let second = ok(ingest(root, &dir, db, "c0ffee"));
    assert!(stderr(&second).contains("already recorded as run 1"), "{}", stderr(&second));

    let runs = stdout(&ok(dyno(root, &["db", "runs", "--db", db])));
    assert_eq!(runs.lines().count(), 2, "header and one run:\n{runs}");
    assert!(runs.contains("c0ffee") && runs.contains("criterion") && runs.contains("completed"));

    let lines = export_lines(root, db);
    assert_eq!(lines.len(), 1);
    let scenarios = lines[0]["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> =
        scenarios.iter().filter_map(|s| s["scenario"]["name"].as_str()).collect();
    assert_eq!(names, ["criterion/ops/shifted/64", "criterion/ops/steady"]);
    let measures: Vec<&str> = scenarios[0]["values"]
        .as_array()
        .expect("values")
        .iter()
        .filter_map(|v| v["measure"].as_str())
        .collect();
    assert_eq!(measures, ["time_mean", "time_median", "throughput_elements"]);
    assert_eq!(scenarios[0]["values"][0]["samples"].as_array().map(Vec::len), Some(30));
    assert_eq!(scenarios[0]["values"][0]["unit"], "ns");
    assert_eq!(scenarios[0]["values"][0]["family"], "kernel");

    // The same directory at another commit is a new run.
    ok(ingest(root, &dir, db, "beef01"));
    assert_eq!(export_lines(root, db).len(), 2);
}

#[test]
fn malformed_criterion_files_name_the_file_and_record_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let db = root.join("x.sqlite");
    let db = path(&db);
    let dir = criterion_dir(root, "criterion", 200.0, 0);
    let bad = dir.join("ops/steady/new/estimates.json");
    std::fs::write(&bad, r#"{"mean": {"point_estimate": 1.0}}"#).expect("write");
    let out = ingest(root, &dir, db, "c0ffee");
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains(path(&bad)) && err.contains("confidence_interval"), "{err}");
    assert!(!Path::new(db).exists(), "nothing recorded, not even an empty database");

    let out = dyno(root, &["ingest", "criterion", "--db", db, "--commit", "c0ffee"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("target/criterion"), "{}", stderr(&out));
}

#[test]
fn export_and_import_move_runs_between_sqlite_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let (a, b) = (root.join("a.sqlite"), root.join("b.sqlite"));
    let (a, b) = (path(&a), path(&b));
    ok(ingest(root, &criterion_dir(root, "c1", 200.0, 0), a, "c1"));
    ok(ingest(root, &criterion_dir(root, "c2", 210.0, 3), a, "c2"));

    let file = root.join("runs.jsonl");
    let out = ok(dyno(root, &["db", "export", "--db", a, "--out", path(&file)]));
    assert!(stderr(&out).contains("exported 2 runs"), "{}", stderr(&out));
    assert!(!root.join("runs.jsonl.partial").exists());

    let out = ok(dyno(root, &["db", "import", path(&file), "--db", b]));
    assert!(stdout(&out).contains("imported 2 runs"), "{}", stdout(&out));
    let out = ok(dyno(root, &["db", "import", path(&file), "--db", b]));
    assert!(stdout(&out).contains("imported 0 runs") && stdout(&out).contains("skipped 2"));
    assert_eq!(export_lines(root, a), export_lines(root, b), "the same runs, values and samples");

    // From stdin too.
    let c = root.join("c.sqlite");
    let child = Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(["db", "import", "-", "--db", path(&c)])
        .current_dir(root)
        .stdin(std::fs::File::open(&file).expect("open export"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let out = ok(child.wait_with_output().expect("wait"));
    assert!(stdout(&out).contains("imported 2 runs"), "{}", stdout(&out));

    // A malformed export names the line and imports nothing.
    let broken = root.join("broken.jsonl");
    let text = std::fs::read_to_string(&file).expect("read export");
    std::fs::write(&broken, format!("{text}{{not json\n")).expect("write");
    let d = root.join("d.sqlite");
    let out = dyno(root, &["db", "import", path(&broken), "--db", path(&d)]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("broken.jsonl") && stderr(&out).contains("line 3"),
        "{}",
        stderr(&out)
    );
    assert!(export_lines(root, path(&d)).is_empty());
}

/// A PostgreSQL URL whose search path is a fresh schema named after `test`, or `None` when
/// `DYNO_TEST_POSTGRES_URL` is not set.
async fn postgres_url(test: &str) -> Option<String> {
    let Ok(base) = std::env::var("DYNO_TEST_POSTGRES_URL") else {
        eprintln!("skipped: DYNO_TEST_POSTGRES_URL is not set");
        return None;
    };
    let schema = format!("cli_{test}");
    let pool = sqlx::PgPool::connect(&base).await.expect("connect to test PostgreSQL");
    for sql in
        [format!("DROP SCHEMA IF EXISTS {schema} CASCADE"), format!("CREATE SCHEMA {schema}")]
    {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect("reset schema");
    }
    pool.close().await;
    let sep = if base.contains('?') { '&' } else { '?' };
    Some(format!("{base}{sep}options=-c%20search_path%3D{schema}"))
}

#[tokio::test]
async fn export_from_sqlite_imports_into_postgres() {
    let Some(pg) = postgres_url("export_import").await else { return };
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let a = root.join("a.sqlite");
    let a = path(&a);
    ok(ingest(root, &criterion_dir(root, "c1", 200.0, 0), a, "c1"));
    ok(ingest(root, &criterion_dir(root, "c2", 210.0, 3), a, "c2"));
    let file = root.join("runs.jsonl");
    ok(dyno(root, &["db", "export", "--db", a, "--out", path(&file)]));

    let out = ok(dyno(root, &["db", "import", path(&file), "--db", &pg]));
    assert!(stdout(&out).contains("imported 2 runs"), "{}", stdout(&out));
    let out = ok(dyno(root, &["db", "import", path(&file), "--db", &pg]));
    assert!(stdout(&out).contains("skipped 2"), "{}", stdout(&out));
    assert_eq!(export_lines(root, a), export_lines(root, &pg));

    // And back: PostgreSQL → a fresh SQLite file.
    let back = root.join("back.sqlite");
    let file2 = root.join("pg.jsonl");
    ok(dyno(root, &["db", "export", "--db", &pg, "--out", path(&file2)]));
    ok(dyno(root, &["db", "import", path(&file2), "--db", path(&back)]));
    assert_eq!(export_lines(root, a), export_lines(root, path(&back)));

    let out = ok(dyno(root, &["compare", "1", "2", "--db", &pg]));
    assert!(stdout(&out).contains("criterion/ops/steady"), "{}", stdout(&out));
}

#[test]
fn compare_marks_significant_and_not_significant_rows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let db = root.join("x.sqlite");
    let db = path(&db);
    ok(ingest(root, &criterion_dir(root, "c1", 200.0, 0), db, "c1"));
    // ops/shifted 20% slower; ops/steady the same times in another order.
    ok(ingest(root, &criterion_dir(root, "c2", 240.0, 11), db, "c2"));

    let out = ok(dyno(root, &["compare", "1", "2", "--db", db]));
    let text = stdout(&out);
    let line = |scenario: &str, measure: &str| {
        text.lines()
            .find(|l| l.contains(scenario) && l.contains(&format!(" {measure} ")))
            .unwrap_or_else(|| panic!("no {scenario} {measure} row in\n{text}"))
            .to_string()
    };
    let shifted = line("criterion/ops/shifted/64", "time_mean");
    assert!(shifted.contains("1.200") && shifted.contains("worse"), "{shifted}");
    assert!(shifted.contains("p=") && !shifted.contains("n.s."), "{shifted}");
    let tput = line("criterion/ops/shifted/64", "throughput_elements");
    assert!(tput.contains("worse") && tput.contains("p="), "{tput}");
    let steady = line("criterion/ops/steady", "time_mean");
    assert!(steady.contains("n.s. (p="), "{steady}");

    let out = ok(dyno(root, &["compare", "1", "2", "--db", db, "--json"]));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 5);
    let kind = |scenario: &str, measure: &str| {
        rows.iter()
            .find(|r| r["scenario"] == scenario && r["measure"] == measure)
            .map(|r| r["significance"]["kind"].clone())
    };
    assert_eq!(kind("criterion/ops/shifted/64", "time_median"), Some("significant".into()));
    assert_eq!(kind("criterion/ops/steady", "time_median"), Some("not_significant".into()));

    let out = dyno(root, &["compare", "1", "7", "--db", db]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no run with id 7"), "{}", stderr(&out));
}

#[tokio::test]
async fn alerts_list_triage_and_unknown_ids() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let db_path = root.join("x.sqlite");
    let db = path(&db_path);
    ok(ingest(root, &criterion_dir(root, "c1", 200.0, 0), db, "c0ffee1234567"));
    assert!(stdout(&ok(dyno(root, &["alerts", "--db", db]))).contains("no alerts"));

    let store = Store::open(db).await.expect("open store");
    let series = store.series_of_run(1).await.expect("series of run");
    let key = series.iter().find(|k| k.measure == "time_mean").expect("time_mean series");
    let id = store
        .upsert_alert(&AlertInfo {
            series: key.clone(),
            commit: "c0ffee1234567".into(),
            state: AlertState::Provisional,
            regression: true,
            before: 100.0,
            after: 120.0,
            change_pct: 20.0,
            p_value: None,
        })
        .await
        .expect("alert");
    store.close().await;
    let id = id.to_string();

    let list = stdout(&ok(dyno(root, &["alerts", "--db", db])));
    let row = list.lines().nth(1).expect("one alert row");
    for part in
        [&id, "provisional", "regression", &key.scenario, "time_mean", "c0ffee1234", "+20.0%"]
    {
        assert!(row.contains(part), "{part} missing in {row}");
    }
    assert!(row.trim_end().ends_with('-'), "no triage yet: {row}");

    let out = ok(dyno(
        root,
        &["alerts", "ack", &id, "--note", "looking into it", "--author", "ci", "--db", db],
    ));
    let shown = stdout(&out);
    assert!(shown.contains("acknowledged by ci: looking into it"), "{shown}");
    ok(dyno(root, &["alerts", "fixed", &id, "--note", "reverted", "--db", db]));

    let list = stdout(&ok(dyno(root, &["alerts", "--db", db, "--json"])));
    let v: serde_json::Value = serde_json::from_str(&list).expect("JSON");
    let actions: Vec<&str> = v[0]["history"]
        .as_array()
        .expect("history")
        .iter()
        .filter_map(|e| e["action"].as_str())
        .collect();
    assert_eq!(actions, ["acknowledged", "fixed"]);
    assert!(stdout(&ok(dyno(root, &["alerts", "--db", db]))).contains("fixed"));
    let confirmed = stdout(&ok(dyno(root, &["alerts", "--state", "confirmed", "--db", db])));
    assert!(confirmed.contains("no alerts"), "{confirmed}");
    let show = stdout(&ok(dyno(root, &["alerts", "show", &id, "--db", db])));
    assert!(show.contains("acknowledged") && show.contains("reverted"), "{show}");

    let out = dyno(root, &["alerts", "invalid", "4242", "--note", "noise", "--db", db]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("no alert with id 4242"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let out = dyno(root, &["alerts", "show", "4242", "--db", db]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("4242"));

    // Nothing was written by the failed triage.
    let store = Store::open(db).await.expect("open store");
    let history = store.triage_history(id.parse().expect("id")).await.expect("history");
    assert_eq!(history.len(), 2);
    store.close().await;
}

#[test]
fn unreachable_postgres_is_one_clear_error() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path();
    let url = "postgres://dyno:x@127.0.0.1:1/none";
    let dir = criterion_dir(root, "criterion", 200.0, 0);
    for args in [
        vec!["db", "runs", "--db", url],
        vec!["db", "export", "--db", url],
        vec!["alerts", "--db", url],
        vec!["compare", "1", "2", "--db", url],
        vec!["ingest", "criterion", path(&dir), "--db", url, "--commit", "c0ffee"],
    ] {
        let out = dyno(root, &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with(
                "error: cannot open results database postgres://dyno:***@127.0.0.1:1/none"
            ),
            "{args:?}: {err}"
        );
    }
}
