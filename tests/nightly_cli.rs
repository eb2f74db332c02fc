//! `dyno nightly` end to end: it records one run, detects a regression planted in a series'
//! history and fails the job until the alert is triaged, leaves the store consistent when
//! killed midway, and rejects bad input (a malformed suite, an unreachable database) with
//! exit 2 and without touching what is stored.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use dyno_harness::nightly::{prepare_file, stored_scenario};
use dyno_harness::provenance::Machine;
use dyno_results::Store;
use dyno_results::store::{
    CommitInfo, MetricValue, RunInfo, RunStatus, ScenarioResult, SeriesFilter,
};

/// A fast scenario (a test-sized model, 8 requests at 20 req/s).
const WORKLOAD: &str = "seed: 2\nlengths:\n  prompt: { dist: fixed, value: 16 }\n  output: { dist: fixed, value: 4 }\n\
                        arrival: { process: poisson, rate: 20 }\nrequests: 8\nwarmup: { requests: 1 }\n";

const QUICK: &str = "  - name: quick\n    model: mixtral-tiny\n    engine: { threads: 1, kv_pool_mib: 16 }\n    \
                     workload: w.yaml\n    rate: 20\n    requests: 8\n";

/// A scenario that would run for hours: only ever killed.
const ENDLESS: &str = "  - name: endless\n    model: mixtral-tiny\n    engine: { threads: 1, kv_pool_mib: 16 }\n    \
                       workload: w.yaml\n    rate: 20\n    requests: 100000\n";

fn suite(dir: &Path, name: &str, scenarios: &[&str]) -> PathBuf {
    std::fs::write(dir.join("w.yaml"), WORKLOAD).expect("write workload");
    let path = dir.join(name);
    std::fs::write(&path, format!("scenarios:\n{}", scenarios.concat())).expect("write suite");
    path
}

fn nightly_command(suite: &Path, db: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dyno"));
    c.args(["nightly", "--suite"])
        .arg(suite)
        .arg("--db")
        .arg(db)
        .args(["--branch", "test"])
        .args(extra)
        .env_remove("DYNO_DB");
    c
}

fn nightly(suite: &Path, db: &Path, extra: &[&str]) -> Output {
    nightly_command(suite, db, extra).output().expect("run dyno nightly")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}

fn open(db: &Path) -> Store {
    runtime().block_on(Store::open(db.to_str().expect("utf-8 path"))).expect("open store")
}

/// The `ttft_median_ms` series of scenario `quick`.
fn quick_ttft(store: &Store) -> Vec<dyno_results::store::Point> {
    let filter = SeriesFilter {
        scenario: "quick".into(),
        measure: "ttft_median_ms".into(),
        ..SeriesFilter::default()
    };
    runtime().block_on(store.series(&filter)).expect("series")
}

#[test]
fn a_planted_regression_fails_the_nightly_until_it_is_triaged() {
    let dir = tempfile::tempdir().expect("tempdir");
    let suite = suite(dir.path(), "suite.yaml", &[QUICK]);

    // What this machine measures for the scenario, in a throwaway store.
    let probe_db = dir.path().join("probe.sqlite");
    let out = nightly(&suite, &probe_db, &["--commit", &"a".repeat(40)]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("## quick") && stdout.contains("ttft_median_ms"), "{stdout}");
    let measured = quick_ttft(&open(&probe_db))[0].value;

    // History: 10 nights at half that TTFT, then 3 at it (1% noise): a regression at s10.
    let db = dir.path().join("results.sqlite");
    let store = open(&db);
    let prepared = prepare_file(&suite).expect("suite");
    let scenario = stored_scenario(&prepared.scenarios[0]).expect("scenario");
    let machine = Machine::detect();
    let sha = |i: usize| format!("{i:040x}");
    for i in 0..13 {
        let level = if i < 10 { measured / 2.0 } else { measured };
        let noise = 1.0 + 0.01 * [0.3, -0.8, 0.5, -0.2, 0.9, -0.6, 0.1, -0.4, 0.7, -0.9][i % 10];
        let info = RunInfo {
            commit: CommitInfo { sha: sha(i), timestamp: None, ordinal: Some(i as i64 + 1) },
            branch: "test".into(),
            trigger: "seed".into(),
            environment: serde_json::json!({}),
            idempotency_key: format!("seed-{i}"),
            testbed: machine.testbed.clone(),
        };
        let value = MetricValue {
            measure: "ttft_median_ms".into(),
            unit: "ms".into(),
            family: "latency".into(),
            lower_is_better: true,
            value: level * noise,
            lower: None,
            upper: None,
            n: 8,
            samples: vec![],
        };
        let result =
            ScenarioResult { scenario: scenario.clone(), values: vec![value], histograms: vec![] };
        runtime().block_on(store.record_run(&info, &[result])).expect("seed run");
    }

    // The nightly (a new commit) confirms it at s10, exits 1, and says so.
    let summary_path = dir.path().join("summary.md");
    let out = nightly(
        &suite,
        &db,
        &["--commit", &"b".repeat(40), "--summary", summary_path.to_str().expect("utf-8")],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 confirmed regression"), "{stdout}");
    let summary = std::fs::read_to_string(&summary_path).expect("summary written");
    assert_eq!(summary, stdout);
    let alerts = runtime().block_on(store.alerts(None)).expect("alerts");
    let confirmed: Vec<_> = alerts
        .iter()
        .filter(|a| a.info.state == dyno_results::store::AlertState::Confirmed)
        .collect();
    assert_eq!(confirmed.len(), 1, "{alerts:?}");
    let alert = confirmed[0];
    assert_eq!(alert.info.commit, sha(10), "the first commit at the new level");
    assert!(alert.info.regression);
    assert!(alert.info.p_value.is_some_and(|p| p <= 0.001));
    assert!(summary.contains(&format!("#{}", alert.id)));

    // Re-running with the same key measures nothing and gives the same verdict.
    let out = nightly(&suite, &db, &["--commit", &"b".repeat(40)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("already recorded"));
    assert_eq!(quick_ttft(&store).len(), 14);

    // Acknowledged, the regression no longer fails the job.
    runtime()
        .block_on(store.triage(alert.id, "acknowledged", "known: test plant", None))
        .expect("triage");
    let out = nightly(&suite, &db, &["--commit", &"c".repeat(40)]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("no open regression"), "{stdout}");
    runtime().block_on(store.close());
}

/// Waits until the running run in `db` has recorded scenario `quick` (or the child exits).
fn wait_for_first_scenario(db: &Path, child: &mut Child) -> i64 {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            panic!("dyno nightly exited early: {status}");
        }
        if db.exists() {
            let store = open(db);
            let runs = runtime().block_on(store.runs(10)).expect("runs");
            if let Some(run) = runs.iter().find(|r| r.status == RunStatus::Running) {
                let record = runtime().block_on(store.run_record(run.id)).expect("record");
                if record.scenarios.iter().any(|s| s.scenario.name == "quick") {
                    runtime().block_on(store.close());
                    return run.id;
                }
            }
            runtime().block_on(store.close());
        }
        assert!(Instant::now() < deadline, "the first scenario was never recorded");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_killed_nightly_leaves_nothing_half_written_in_any_series() {
    let dir = tempfile::tempdir().expect("tempdir");
    let long = suite(dir.path(), "long.yaml", &[QUICK, ENDLESS]);
    let db = dir.path().join("results.sqlite");

    let mut child = nightly_command(&long, &db, &["--commit", &"d".repeat(40)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let killed_run = wait_for_first_scenario(&db, &mut child);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");

    let store = open(&db);
    let record = runtime().block_on(store.run_record(killed_run)).expect("record");
    assert_eq!(record.run.status, RunStatus::Running, "nobody could mark it");
    assert!(record.scenarios.iter().any(|s| s.scenario.name == "quick"));
    assert!(quick_ttft(&store).is_empty(), "a running run's values are in no series");

    // The next nightly marks the dead run failed; only its own point joins the series.
    let quick = suite(dir.path(), "quick.yaml", &[QUICK]);
    let out = nightly(&quick, &db, &["--commit", &"e".repeat(40)]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stderr.contains(&format!("run {killed_run} was left running")), "{stderr}");
    let record = runtime().block_on(store.run_record(killed_run)).expect("record");
    assert_eq!(record.run.status, RunStatus::Failed);
    let points = quick_ttft(&store);
    assert_eq!(points.len(), 1);
    assert_ne!(points[0].run_id, killed_run);
    runtime().block_on(store.close());
}

#[cfg(unix)]
#[test]
fn an_interrupted_nightly_marks_its_run_failed_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let long = suite(dir.path(), "long.yaml", &[QUICK, ENDLESS]);
    let db = dir.path().join("results.sqlite");
    let mut child = nightly_command(&long, &db, &["--commit", &"f".repeat(40)])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let run = wait_for_first_scenario(&db, &mut child);
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("interrupted by SIGTERM"), "{stderr}");
    let store = open(&db);
    let record = runtime().block_on(store.run_record(run)).expect("record");
    assert_eq!(record.run.status, RunStatus::Failed);
    assert!(quick_ttft(&store).is_empty());
    runtime().block_on(store.close());
}

#[test]
fn bad_input_exits_2_and_touches_nothing_stored() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("results.sqlite");
    let good = suite(dir.path(), "good.yaml", &[QUICK]);
    let out = nightly(&good, &db, &["--commit", &"1".repeat(40)]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    let before = common::stored_runs(&db);

    // A typo'd field: the error names the file, the line and the field.
    let typo = dir.path().join("typo.yaml");
    std::fs::write(&typo, format!("scenarios:\n{}", QUICK.replace("rate: 20", "rat: 20")))
        .expect("write");
    let out = nightly(&typo, &db, &["--commit", &"2".repeat(40)]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("typo.yaml") && stderr.contains("line 6") && stderr.contains("rat"),
        "{stderr}"
    );

    // A model that does not exist: named with its scenario.
    let bad_model = dir.path().join("bad-model.yaml");
    std::fs::write(&bad_model, format!("scenarios:\n{}", QUICK.replace("mixtral-tiny", "nope")))
        .expect("write");
    let out = nightly(&bad_model, &db, &["--commit", &"3".repeat(40)]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("scenario `quick`") && stderr.contains("nope"), "{stderr}");
    assert_eq!(common::stored_runs(&db), before, "nothing stored was touched");

    // An unreachable database: one clear line, exit 2.
    let out = nightly_command(&good, Path::new("postgres://dyno:secret@127.0.0.1:1/none"), &[])
        .output()
        .expect("run");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot open results database") && !stderr.contains("secret"));
}
