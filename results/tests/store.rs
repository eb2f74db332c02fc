//! Store tests. Each runs against SQLite (a temporary file) and, when `DYNO_TEST_POSTGRES_URL`
//! is set, against PostgreSQL too (each test in its own schemas, dropped first).

use std::collections::BTreeSet;
use std::time::Duration;

use dyno_results::store::*;
use serde_json::json;

/// Where a test's databases live.
enum Ctx {
    Sqlite(tempfile::TempDir),
    Postgres { base: String, test: String },
}

impl Ctx {
    /// The URL of this test's database number `i` (distinct databases for distinct `i`).
    async fn url(&self, i: usize) -> String {
        match self {
            Ctx::Sqlite(dir) => {
                let path = dir.path().join(format!("db{i}.sqlite"));
                format!("sqlite://{}", path.display())
            }
            Ctx::Postgres { base, test } => {
                let schema = format!("t_{test}_{i}");
                let pool = sqlx::PgPool::connect(base).await.expect("connect to test PostgreSQL");
                let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
                let create = format!("CREATE SCHEMA {schema}");
                sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&pool).await.expect("drop schema");
                sqlx::query(sqlx::AssertSqlSafe(create))
                    .execute(&pool)
                    .await
                    .expect("create schema");
                pool.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                format!("{base}{sep}options=-c%20search_path%3D{schema}")
            }
        }
    }

    async fn store(&self, i: usize) -> Store {
        let url = self.url(i).await;
        Store::open(&url).await.expect("open store")
    }
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let dir = tempfile::tempdir().expect("tempdir");
                super::$name(super::Ctx::Sqlite(dir)).await;
            }

            #[tokio::test]
            async fn postgres() {
                let Ok(base) = std::env::var("DYNO_TEST_POSTGRES_URL") else {
                    eprintln!("skipped: DYNO_TEST_POSTGRES_URL is not set");
                    return;
                };
                let test = stringify!($name).to_string();
                super::$name(super::Ctx::Postgres { base, test }).await;
            }
        }
    };
}

fn run_info(sha: &str, ordinal: Option<i64>, key: &str) -> RunInfo {
    RunInfo {
        commit: CommitInfo { sha: sha.to_string(), timestamp: Some(1_700_000_000), ordinal },
        branch: "main".into(),
        trigger: "nightly".into(),
        environment: json!({"os": "linux", "dyno": "0.1.0", "cores": 16}),
        idempotency_key: key.to_string(),
        testbed: Testbed { spec: json!({"cpu": "Xeon", "memory_gib": 128, "gpu": null}) },
    }
}

fn scenario() -> Scenario {
    Scenario {
        name: "chat-1k".into(),
        model: "tiny-llama".into(),
        workload: "sharegpt".into(),
        config_hash: "abc123".into(),
        config: "max_batch: 8\n".into(),
    }
}

fn value(measure: &str, v: f64) -> MetricValue {
    MetricValue {
        measure: measure.to_string(),
        unit: "s".into(),
        family: "latency".into(),
        lower_is_better: true,
        value: v,
        lower: Some(v * 0.9),
        upper: Some(v * 1.1),
        n: 3,
        samples: vec![v * 0.9, v, v * 1.1],
    }
}

fn ttft_filter() -> SeriesFilter {
    SeriesFilter {
        scenario: "chat-1k".into(),
        measure: "ttft_p50".into(),
        ..SeriesFilter::default()
    }
}

/// Record one complete run with one scenario; returns its id.
async fn complete_run(store: &Store, sha: &str, ordinal: Option<i64>, key: &str, v: f64) -> i64 {
    let id = match store.begin_run(&run_info(sha, ordinal, key)).await.expect("begin") {
        BeginRun::Started(id) => id,
        other => panic!("expected a new run, got {other:?}"),
    };
    let hist = Histogram { name: "ttft".into(), data: vec![0x1c, 0x84, 0x93, 0x14, 0, 1, 2, 255] };
    store
        .record_scenario_result(
            id,
            &scenario(),
            &[value("ttft_p50", v), value("itl_p50", v / 10.0)],
            &[hist],
        )
        .await
        .expect("record");
    store.finish_run(id, RunStatus::Completed).await.expect("finish");
    id
}

async fn migrations_idempotent(ctx: Ctx) {
    let url = ctx.url(0).await;
    let a = Store::open(&url).await.expect("first open");
    complete_run(&a, "aaa", Some(1), "k1", 1.0).await;
    a.close().await;
    let b = Store::open(&url).await.expect("second open migrates nothing and keeps data");
    assert_eq!(b.runs(10).await.expect("runs").len(), 1);
    b.close().await;
}
both!(migrations_idempotent);

async fn record_and_read_back(ctx: Ctx) {
    let store = ctx.store(0).await;
    // Out of commit order on purpose: the series follows ordinals, not insertion or clock.
    complete_run(&store, "c3", Some(30), "k3", 3.0).await;
    let r1 = complete_run(&store, "c1", Some(10), "k1", 1.0).await;
    complete_run(&store, "c2", Some(20), "k2", 2.0).await;

    let points = store.series(&ttft_filter()).await.expect("series");
    let shas: Vec<&str> = points.iter().map(|p| p.sha.as_str()).collect();
    assert_eq!(shas, ["c1", "c2", "c3"]);
    assert_eq!(points[0].value, 1.0);
    assert_eq!(points[0].lower_bound, Some(0.9));
    assert_eq!(points[0].n, 3);
    let testbed = Testbed { spec: json!({"memory_gib": 128, "gpu": null, "cpu": "Xeon"}) };
    assert_eq!(points[0].testbed, testbed.hash(), "hash ignores key order");

    let filtered = SeriesFilter { branch: Some("other".into()), ..ttft_filter() };
    assert!(store.series(&filtered).await.expect("series").is_empty());

    let record = store.run_record(r1).await.expect("record");
    assert_eq!(record.run.status, RunStatus::Completed);
    assert_eq!(record.run.commit.sha, "c1");
    assert_eq!(record.run.environment["cores"], 16);
    assert_eq!(record.scenarios.len(), 1);
    let s = &record.scenarios[0];
    assert_eq!(s.scenario, scenario());
    assert_eq!(s.values.len(), 2);
    assert_eq!(s.values[0], value("ttft_p50", 1.0));
    assert_eq!(s.histograms[0].data, vec![0x1c, 0x84, 0x93, 0x14, 0, 1, 2, 255]);

    let keys = store.series_of_run(r1).await.expect("series of run");
    let measures: Vec<&str> = keys.iter().map(|k| k.measure.as_str()).collect();
    assert_eq!(measures, ["itl_p50", "ttft_p50"]);
    assert!(keys[1].lower_is_better && keys[1].family == "latency");
    assert_eq!(store.series(&keys[1].filter()).await.expect("series"), points);

    let runs = store.runs(2).await.expect("runs");
    assert_eq!(runs.len(), 2);
    assert!(runs[0].id > runs[1].id, "newest first");

    // A commit seen first without an ordinal goes after every known one.
    complete_run(&store, "c4", None, "k4", 4.0).await;
    let last = store.series(&ttft_filter()).await.expect("series");
    assert_eq!(last.last().map(|p| (p.sha.as_str(), p.ordinal)), Some(("c4", 31)));
}
both!(record_and_read_back);

async fn idempotency_key_no_duplicate(ctx: Ctx) {
    let store = ctx.store(0).await;
    let id = complete_run(&store, "c1", Some(1), "nightly-c1", 1.0).await;
    let again = store.begin_run(&run_info("c1", Some(1), "nightly-c1")).await.expect("begin");
    assert_eq!(again, BeginRun::AlreadyRecorded(id));
    assert_eq!(store.runs(10).await.expect("runs").len(), 1);
    assert_eq!(store.series(&ttft_filter()).await.expect("series").len(), 1);

    // A running run with the key blocks a second start; a failed one lets a retry take it.
    let BeginRun::Started(r) =
        store.begin_run(&run_info("c2", Some(2), "nightly-c2")).await.expect("begin")
    else {
        panic!("expected a new run");
    };
    let err =
        store.begin_run(&run_info("c2", Some(2), "nightly-c2")).await.expect_err("in progress");
    assert!(matches!(err, StoreError::RunInProgress { id, .. } if id == r), "{err}");
    store.finish_run(r, RunStatus::Failed).await.expect("fail");
    let retry = store.begin_run(&run_info("c2", Some(2), "nightly-c2")).await.expect("retry");
    assert!(matches!(retry, BeginRun::Started(n) if n != r));
    let keys: BTreeSet<String> =
        store.runs(10).await.expect("runs").into_iter().map(|r| r.idempotency_key).collect();
    assert!(keys.contains(&format!("nightly-c2#attempt-{r}")), "{keys:?}");
    assert!(keys.contains("nightly-c2"));
}
both!(idempotency_key_no_duplicate);

async fn killed_run_never_in_series(ctx: Ctx) {
    let store = ctx.store(0).await;
    complete_run(&store, "c1", Some(1), "k1", 1.0).await;
    // Killed midway: begun, one scenario recorded, never finished.
    let BeginRun::Started(killed) =
        store.begin_run(&run_info("c2", Some(2), "k2")).await.expect("begin")
    else {
        panic!("expected a new run");
    };
    store
        .record_scenario_result(killed, &scenario(), &[value("ttft_p50", 9.0)], &[])
        .await
        .expect("record");
    let points = store.series(&ttft_filter()).await.expect("series");
    assert_eq!(points.len(), 1, "a running run's points are not in the series");

    // Too young to be stale.
    assert_eq!(store.mark_stale_runs_failed(Duration::from_secs(3600)).await.expect("stale"), 0);
    assert_eq!(store.mark_stale_runs_failed(Duration::ZERO).await.expect("stale"), 1);
    let record = store.run_record(killed).await.expect("record");
    assert_eq!(record.run.status, RunStatus::Failed);
    assert!(record.run.finished_at.is_some());
    assert_eq!(store.series(&ttft_filter()).await.expect("series").len(), 1);
    let err = store
        .record_scenario_result(killed, &scenario(), &[value("itl_p50", 1.0)], &[])
        .await
        .expect_err("a failed run takes no more results");
    assert!(matches!(err, StoreError::RunNotRunning { .. }), "{err}");

    // A partial run (finished, some scenarios missing) contributes what it recorded: each
    // scenario result is whole.
    let BeginRun::Started(partial) =
        store.begin_run(&run_info("c3", Some(3), "k3")).await.expect("begin")
    else {
        panic!("expected a new run");
    };
    store
        .record_scenario_result(partial, &scenario(), &[value("ttft_p50", 9.0)], &[])
        .await
        .expect("record");
    store.finish_run(partial, RunStatus::Partial).await.expect("finish");
    assert_eq!(store.series(&ttft_filter()).await.expect("series").len(), 2);
}
both!(killed_run_never_in_series);

async fn scenario_result_all_or_nothing(ctx: Ctx) {
    let store = ctx.store(0).await;
    let BeginRun::Started(run) =
        store.begin_run(&run_info("c1", Some(1), "k1")).await.expect("begin")
    else {
        panic!("expected a new run");
    };
    // The same measure twice violates uniqueness after the first row is written: rolled back.
    let err = store
        .record_scenario_result(
            run,
            &scenario(),
            &[value("ttft_p50", 1.0), value("ttft_p50", 2.0)],
            &[],
        )
        .await
        .expect_err("duplicate measure");
    assert!(matches!(err, StoreError::Database(_)), "{err}");
    let err = store
        .record_scenario_result(run, &scenario(), &[value("ttft_p50", f64::NAN)], &[])
        .await
        .expect_err("NaN");
    assert!(err.to_string().contains("ttft_p50"), "{err}");
    let mut other_unit = value("ttft_p50", 1.0);
    other_unit.unit = "ms".into();
    store
        .record_scenario_result(run, &scenario(), &[value("ttft_p50", 1.0)], &[])
        .await
        .expect("record");
    let record = store.run_record(run).await.expect("record");
    assert_eq!(record.scenarios.len(), 1);
    assert_eq!(record.scenarios[0].values, vec![value("ttft_p50", 1.0)]);
    let mut s2 = scenario();
    s2.name = "other".into();
    let err =
        store.record_scenario_result(run, &s2, &[other_unit], &[]).await.expect_err("unit changed");
    assert!(matches!(err, StoreError::MeasureMismatch { .. }), "{err}");
    assert_eq!(store.run_record(run).await.expect("record").scenarios.len(), 1);
    let err = store
        .record_scenario_result(run + 1000, &scenario(), &[], &[])
        .await
        .expect_err("unknown run");
    assert!(matches!(err, StoreError::UnknownRun(_)), "{err}");
}
both!(scenario_result_all_or_nothing);

async fn export_import_round_trip(ctx: Ctx) {
    let src = ctx.store(0).await;
    complete_run(&src, "c1", Some(1), "k1", 1.0).await;
    complete_run(&src, "c2", Some(2), "k2", 2.0).await;
    let BeginRun::Started(failed) =
        src.begin_run(&run_info("c3", Some(3), "k3")).await.expect("begin")
    else {
        panic!("expected a new run");
    };
    src.record_scenario_result(failed, &scenario(), &[value("ttft_p50", 5.0)], &[])
        .await
        .expect("record");
    src.finish_run(failed, RunStatus::Failed).await.expect("finish");

    let mut buf = Vec::new();
    assert_eq!(src.export_jsonl(&mut buf).await.expect("export"), 3);
    let text = String::from_utf8(buf.clone()).expect("utf-8");
    assert_eq!(text.lines().count(), 3);

    let dst = ctx.store(1).await;
    let summary = dst.import_jsonl(buf.as_slice()).await.expect("import");
    assert_eq!(summary, ImportSummary { imported: 3, skipped: 0 });
    let again = dst.import_jsonl(buf.as_slice()).await.expect("re-import");
    assert_eq!(again, ImportSummary { imported: 0, skipped: 3 });
    assert_eq!(dst.runs(10).await.expect("runs").len(), 3);

    assert_eq!(
        src.series(&ttft_filter())
            .await
            .expect("series")
            .iter()
            .map(|p| p.value)
            .collect::<Vec<_>>(),
        dst.series(&ttft_filter())
            .await
            .expect("series")
            .iter()
            .map(|p| p.value)
            .collect::<Vec<_>>()
    );
    let mut back = Vec::new();
    dst.export_jsonl(&mut back).await.expect("export");
    let strip = |text: &[u8]| -> Vec<serde_json::Value> {
        String::from_utf8_lossy(text)
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).expect("json");
                v["run"]["id"] = serde_json::Value::Null;
                v
            })
            .collect()
    };
    assert_eq!(strip(&buf), strip(&back), "export → import → export is stable (ids aside)");

    // A malformed line names its number and writes nothing.
    let empty = ctx.store(2).await;
    let mut bad = buf.clone();
    bad.extend_from_slice(b"{\"run\": 1}\n");
    let err = empty.import_jsonl(bad.as_slice()).await.expect_err("bad line");
    assert!(err.to_string().starts_with("import line 4:"), "{err}");
    assert!(empty.runs(10).await.expect("runs").is_empty());
}
both!(export_import_round_trip);

#[tokio::test]
async fn bad_urls_give_one_clear_line() {
    let err = Store::open("postgres://dyno:hunter2@127.0.0.1:1/results")
        .await
        .expect_err("nothing listens on port 1");
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot open results database postgres://dyno:***@127.0.0.1:1/results: "),
        "{msg}"
    );
    assert!(!msg.contains("hunter2") && !msg.contains('\n'), "{msg}");

    let err =
        Store::open("sqlite:///nonexistent-dir/sub/x.sqlite").await.expect_err("no such directory");
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot open results database sqlite:///nonexistent-dir/sub/x.sqlite: "),
        "{msg}"
    );
    assert!(!msg.contains('\n'), "{msg}");

    let err = Store::open("mysql://root:pw@localhost/x").await.expect_err("unsupported");
    assert!(matches!(err, StoreError::UnsupportedUrl { .. }), "{err}");
    assert!(!err.to_string().contains("pw@"), "{err}");
}

#[test]
fn redaction() {
    assert_eq!(redact_url("postgres://u:p@h/db"), "postgres://u:***@h/db");
    assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    assert_eq!(
        redact_url("postgres://h/db?user=u&password=p"),
        "postgres://h/db?user=u&password=***"
    );
    assert_eq!(redact_url("dyno.sqlite"), "dyno.sqlite");
}

#[tokio::test]
async fn bare_path_creates_file_in_wal_mode() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bare.sqlite");
    let path_str = path.to_str().expect("utf-8 temp path");
    let store = Store::open(path_str).await.expect("open");
    assert!(path.exists());
    let Store::Sqlite(pool) = &store else { panic!("bare path opens SQLite") };
    let mode: String =
        sqlx::query_scalar("PRAGMA journal_mode").fetch_one(pool).await.expect("pragma");
    assert_eq!(mode, "wal");
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys").fetch_one(pool).await.expect("pragma");
    assert_eq!(fk, 1);
}

/// Table names with their column names, in file order.
type Tables = Vec<(String, BTreeSet<String>)>;

/// `CREATE TABLE` names and their column names, per file, from a migrations directory.
fn schema_of(dir: &str) -> Vec<(String, Tables)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations").join(dir);
    let mut files: Vec<_> = std::fs::read_dir(&root)
        .expect("migrations dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).expect("read migration");
            let mut tables = Vec::new();
            let mut current: Option<(String, BTreeSet<String>)> = None;
            for line in text.lines().map(str::trim) {
                if let Some(rest) = line.strip_prefix("ALTER TABLE ") {
                    // `ALTER TABLE t ADD COLUMN c ...`: an entry for `t` with the new column.
                    let words: Vec<&str> = rest.split_whitespace().collect();
                    if let [table, "ADD", "COLUMN", column, ..] = words.as_slice() {
                        tables.push((table.to_string(), BTreeSet::from([column.to_string()])));
                    }
                } else if let Some(rest) = line.strip_prefix("CREATE TABLE ") {
                    let name = rest.trim_end_matches(" (").to_string();
                    current = Some((name, BTreeSet::new()));
                } else if line.starts_with(");") {
                    tables.extend(current.take());
                } else if let Some((_, cols)) = current.as_mut() {
                    let first = line.split_whitespace().next().unwrap_or("");
                    if !first.is_empty() && first != "UNIQUE" {
                        cols.insert(first.to_string());
                    }
                }
            }
            let name = f.file_name().expect("file name").to_string_lossy().into_owned();
            (name, tables)
        })
        .collect()
}

#[test]
fn migration_dialects_in_step() {
    let sqlite = schema_of("sqlite");
    let postgres = schema_of("postgres");
    assert!(!sqlite.is_empty());
    assert_eq!(sqlite, postgres, "migrations/sqlite and migrations/postgres must match");
    let tables: Vec<&str> = sqlite[0].1.iter().map(|(t, _)| t.as_str()).collect();
    for t in [
        "testbeds",
        "commits",
        "scenarios",
        "measures",
        "runs",
        "metric_values",
        "raw_samples",
        "histograms",
        "studies",
        "trials",
        "alerts",
        "alert_groups",
        "triage_events",
        "annotations",
    ] {
        assert!(tables.contains(&t), "missing table {t}");
    }
    let added: Vec<(&str, &str)> = sqlite[1]
        .1
        .iter()
        .flat_map(|(t, cols)| cols.iter().map(move |c| (t.as_str(), c.as_str())))
        .collect();
    assert_eq!(
        added,
        [
            ("studies", "settings"),
            ("trials", "trial_key"),
            ("trials", "params"),
            ("trials", "worker")
        ]
    );
}

#[test]
fn migration_dialects_differ_only_where_the_dialects_do() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    for entry in std::fs::read_dir(root.join("sqlite")).expect("migrations dir") {
        let name = entry.expect("dir entry").file_name();
        let body = |dir: &str| -> String {
            let text = std::fs::read_to_string(root.join(dir).join(&name))
                .unwrap_or_else(|e| panic!("{dir}/{name:?}: {e}"));
            text.lines().filter(|l| !l.starts_with("--")).collect::<Vec<_>>().join("\n")
        };
        let translated = body("sqlite")
            .replace("INTEGER PRIMARY KEY", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
            .replace(" BLOB ", " BYTEA ");
        assert_eq!(translated, body("postgres"), "{name:?}");
    }
}

async fn studies_and_trials(ctx: Ctx) {
    let store = ctx.store(0).await;
    let study = store
        .create_study(&StudyInfo {
            name: "tune-chat".into(),
            scenario: Some(scenario()),
            objective: "maximize goodput".into(),
            search_space: json!({"max_batch": [1, 64]}),
        })
        .await
        .expect("study");
    let t0 = store
        .begin_trial(study, &json!({"max_batch": 8}), Some(&json!({"goodput": 10.0})))
        .await
        .expect("trial 0");
    let t1 = store.begin_trial(study, &json!({"max_batch": 64}), None).await.expect("trial 1");
    assert_eq!((t0.number, t1.number), (0, 1));
    assert_eq!(t0.status, TrialStatus::Running);
    let run = complete_run(&store, "c1", Some(1), "trial-0", 1.0).await;
    store
        .finish_trial(
            t0.id,
            &TrialOutcome {
                status: TrialStatus::Completed,
                measured: Some(json!({"goodput": 9.5})),
                predicted: None,
                error: None,
                run: Some(run),
            },
        )
        .await
        .expect("finish 0");
    store
        .finish_trial(
            t1.id,
            &TrialOutcome {
                status: TrialStatus::Failed,
                measured: None,
                predicted: None,
                error: Some("out of memory".into()),
                run: None,
            },
        )
        .await
        .expect("finish 1");
    store.finish_study(study, RunStatus::Completed).await.expect("finish study");
    let trials = store.trials(study).await.expect("trials");
    assert_eq!(trials.len(), 2);
    assert_eq!(trials[0].predicted, Some(json!({"goodput": 10.0})));
    assert_eq!(trials[0].measured, Some(json!({"goodput": 9.5})));
    assert_eq!(trials[0].run, Some(run));
    assert_eq!(trials[1].status, TrialStatus::Failed);
    assert_eq!(trials[1].error.as_deref(), Some("out of memory"));
    assert!(trials[1].finished_at.is_some());
    assert_eq!((trials[0].trial_key.as_deref(), trials[0].worker.as_deref()), (None, None));
    assert_eq!(trials[0].params, None);
    let err = store.begin_trial(study + 100, &json!({}), None).await.expect_err("no study");
    assert!(matches!(err, StoreError::UnknownStudy(_)), "{err}");
    let err = store.create_study(&study_info("tune-chat")).await.expect_err("name taken");
    assert!(matches!(err, StoreError::StudyExists { id, .. } if id == study), "{err}");
    assert!(err.to_string().contains("\"tune-chat\""), "{err}");
}
both!(studies_and_trials);

fn study_info(name: &str) -> StudyInfo {
    StudyInfo {
        name: name.to_string(),
        scenario: Some(scenario()),
        objective: "maximize goodput".into(),
        search_space: json!({"max_batch": [1, 64]}),
    }
}

/// A trial the tuner might propose: point `[k]` at fidelity 1, keyed by `k`.
fn new_trial(k: usize) -> NewTrial {
    NewTrial {
        trial_key: format!("key-{k}"),
        params: json!({"point": [k], "fidelity": 1}),
        config: json!({"max_batch": k}),
        predicted: Some(json!({"goodput": k})),
    }
}

fn outcome(status: TrialStatus) -> TrialOutcome {
    TrialOutcome {
        status,
        measured: Some(json!({"goodput": 1.0})),
        predicted: None,
        error: None,
        run: None,
    }
}

/// A study with trials `0..n` queued.
async fn queued_study(store: &Store, name: &str, n: usize) -> Study {
    let (study, created) =
        store.open_study(&study_info(name), &json!({"seed": 7})).await.expect("open study");
    assert!(created);
    for k in 0..n {
        store.enqueue_trial(study.id, &new_trial(k)).await.expect("enqueue").expect("new key");
    }
    study
}

async fn open_study_get_or_create(ctx: Ctx) {
    let store = ctx.store(0).await;
    assert_eq!(store.study_by_name("tune-chat").await.expect("lookup"), None);
    let settings = json!({"strategy": "tpe", "seed": 7, "budget": 40, "model": "tiny-llama"});
    let (first, created) =
        store.open_study(&study_info("tune-chat"), &settings).await.expect("open");
    assert!(created);
    assert_eq!(first.name, "tune-chat");
    assert_eq!(first.settings, settings);
    assert_eq!(first.search_space, json!({"max_batch": [1, 64]}));
    assert_eq!(first.status, RunStatus::Running);
    assert!(first.scenario_id.is_some());
    // Resuming (even with other settings) finds the same study, as it was created.
    let (again, created) =
        store.open_study(&study_info("tune-chat"), &json!({"seed": 8})).await.expect("reopen");
    assert!(!created);
    assert_eq!(again, first);
    assert_eq!(store.study_by_name("tune-chat").await.expect("lookup"), Some(first.clone()));
    assert_eq!(store.study(first.id).await.expect("by id"), first);
    let err = store.study(first.id + 100).await.expect_err("unknown");
    assert!(matches!(err, StoreError::UnknownStudy(id) if id == first.id + 100), "{err}");
    // A study made by create_study has no settings.
    let plain = store.create_study(&study_info("plain")).await.expect("create");
    assert_eq!(store.study(plain).await.expect("plain").settings, serde_json::Value::Null);

    // Counts by status.
    let q = queued_study(&store, "counted", 4).await;
    let t = store.claim_trial(q.id, "w:1").await.expect("claim").expect("pending");
    store.finish_trial(t.id, &outcome(TrialStatus::Completed)).await.expect("finish");
    store.claim_trial(q.id, "w:1").await.expect("claim").expect("pending");
    store.record_infeasible(q.id, &new_trial(9), "does not fit").await.expect("infeasible");
    let summaries = store.studies().await.expect("studies");
    let names: Vec<&str> = summaries.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["tune-chat", "plain", "counted"]);
    assert_eq!(summaries[0].trials, TrialCounts::default());
    let counts =
        TrialCounts { pending: 2, running: 1, completed: 1, infeasible: 1, ..Default::default() };
    assert_eq!(summaries[2].trials, counts);
    assert_eq!(summaries[2].trials.total(), 5);
}
both!(open_study_get_or_create);

async fn open_study_race_makes_one_study(ctx: Ctx) {
    let url = ctx.url(0).await;
    let a = Store::open(&url).await.expect("open a");
    let b = Store::open(&url).await.expect("open b");
    let info = study_info("shared");
    let settings = json!({"seed": 1});
    let (ra, rb) = tokio::join!(a.open_study(&info, &settings), b.open_study(&info, &settings));
    let ((sa, ca), (sb, cb)) = (ra.expect("open a"), rb.expect("open b"));
    assert_eq!(sa, sb, "both processes got the same study");
    assert!(ca != cb, "exactly one created it: {ca} {cb}");
    assert_eq!(a.studies().await.expect("studies").len(), 1);
}
both!(open_study_race_makes_one_study);

async fn enqueue_numbers_and_keys(ctx: Ctx) {
    let store = ctx.store(0).await;
    let study = queued_study(&store, "s", 3).await;
    let trials = store.trials(study.id).await.expect("trials");
    let numbers: Vec<i64> = trials.iter().map(|t| t.number).collect();
    assert_eq!(numbers, [0, 1, 2]);
    let t = &trials[1];
    assert_eq!(t.status, TrialStatus::Pending);
    assert_eq!(t.trial_key.as_deref(), Some("key-1"));
    assert_eq!(t.params, Some(json!({"point": [1], "fidelity": 1})));
    assert_eq!(t.config, json!({"max_batch": 1}));
    assert_eq!(t.predicted, Some(json!({"goodput": 1})));
    assert_eq!((t.worker.as_deref(), t.finished_at), (None, None));

    // A key already queued (even with another config) inserts nothing.
    let mut dup = new_trial(1);
    dup.config = json!({"max_batch": 99});
    assert_eq!(store.enqueue_trial(study.id, &dup).await.expect("enqueue"), None);
    assert_eq!(store.record_infeasible(study.id, &dup, "x").await.expect("infeasible"), None);
    assert_eq!(store.trials(study.id).await.expect("trials"), trials);

    // The same key in another study is another trial.
    let other = queued_study(&store, "other", 1).await;
    assert_eq!(
        store.trials(other.id).await.expect("trials")[0].trial_key.as_deref(),
        Some("key-0")
    );

    let bad = store.record_infeasible(study.id, &new_trial(3), "needs 90 GB, has 80").await;
    let bad = bad.expect("infeasible").expect("new key");
    assert_eq!((bad.number, bad.status), (3, TrialStatus::Infeasible));
    assert_eq!(bad.error.as_deref(), Some("needs 90 GB, has 80"));
    assert!(bad.finished_at.is_some());
    // Infeasible trials are never claimed.
    for _ in 0..3 {
        store.claim_trial(study.id, "w").await.expect("claim").expect("pending");
    }
    assert_eq!(store.claim_trial(study.id, "w").await.expect("claim"), None);

    let err = store.enqueue_trial(study.id + 100, &new_trial(0)).await.expect_err("no study");
    assert!(matches!(err, StoreError::UnknownStudy(_)), "{err}");
}
both!(enqueue_numbers_and_keys);

async fn claim_lowest_and_finish_only_running(ctx: Ctx) {
    let store = ctx.store(0).await;
    let study = queued_study(&store, "s", 2).await;
    let t0 = store.claim_trial(study.id, "host:1").await.expect("claim").expect("pending");
    assert_eq!((t0.number, t0.status), (0, TrialStatus::Running));
    assert_eq!(t0.worker.as_deref(), Some("host:1"));
    let t1 = store.claim_trial(study.id, "host:2").await.expect("claim").expect("pending");
    assert_eq!(t1.number, 1);
    assert_eq!(store.claim_trial(study.id, "host:1").await.expect("claim"), None);
    let running: Vec<i64> =
        store.running_trials(study.id).await.expect("running").iter().map(|t| t.number).collect();
    assert_eq!(running, [0, 1]);

    let measured = TrialOutcome {
        status: TrialStatus::Completed,
        measured: Some(json!({"goodput": 9.5})),
        predicted: Some(json!({"goodput": 9.0})),
        error: None,
        run: None,
    };
    store.finish_claimed_trial(t0.id, "host:1", &measured).await.expect("finish");
    let before = store.trials(study.id).await.expect("trials");
    assert_eq!(before[0].predicted, Some(json!({"goodput": 9.0})), "prediction stored beside");
    assert_eq!(before[0].status, TrialStatus::Completed);
    assert_eq!(before[0].measured, Some(json!({"goodput": 9.5})));

    // Finishing twice, finishing as running or pending, or as another worker: errors, no change.
    let err = store.finish_trial(t0.id, &outcome(TrialStatus::Failed)).await.expect_err("done");
    assert!(
        matches!(&err, StoreError::TrialNotRunning { id, number: 0, status, .. }
            if *id == t0.id && status == "completed"),
        "{err}"
    );
    assert!(err.to_string().contains("is completed, not running"), "{err}");
    for status in [TrialStatus::Running, TrialStatus::Pending] {
        let err = store.finish_trial(t1.id, &outcome(status)).await.expect_err("not an end");
        assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
    }
    let err = store
        .finish_claimed_trial(t1.id, "host:1", &outcome(TrialStatus::Pruned))
        .await
        .expect_err("claimed by host:2");
    assert!(matches!(err, StoreError::TrialClaimedElsewhere { .. }), "{err}");
    assert!(err.to_string().contains("claimed by worker \"host:2\""), "{err}");
    let err = store.finish_trial(t1.id + 100, &outcome(TrialStatus::Failed)).await.expect_err("?");
    assert!(matches!(err, StoreError::UnknownTrial(_)), "{err}");
    assert_eq!(store.trials(study.id).await.expect("trials"), before);

    let pending = store.enqueue_trial(study.id, &new_trial(5)).await.expect("enqueue");
    let pending = pending.expect("new key");
    let err = store.finish_trial(pending.id, &outcome(TrialStatus::Completed)).await;
    let err = err.expect_err("pending");
    assert!(matches!(&err, StoreError::TrialNotRunning { status, .. } if status == "pending"));

    // Every end state is allowed from running.
    store.finish_trial(t1.id, &outcome(TrialStatus::Pruned)).await.expect("pruned");
    let t2 = store.claim_trial(study.id, "host:1").await.expect("claim").expect("pending");
    assert_eq!(t2.id, pending.id);
    store.finish_trial(t2.id, &outcome(TrialStatus::Infeasible)).await.expect("infeasible");
    let statuses: Vec<TrialStatus> =
        store.trials(study.id).await.expect("trials").iter().map(|t| t.status).collect();
    assert_eq!(statuses, [TrialStatus::Completed, TrialStatus::Pruned, TrialStatus::Infeasible]);
    assert!(store.running_trials(study.id).await.expect("running").is_empty());
}
both!(claim_lowest_and_finish_only_running);

async fn requeue_after_kill(ctx: Ctx) {
    let store = ctx.store(0).await;
    let study = queued_study(&store, "s", 3).await;
    let dead = store.claim_trial(study.id, "host:dead").await.expect("claim").expect("pending");
    let alive = store.claim_trial(study.id, "host:alive").await.expect("claim").expect("pending");
    // The dead worker's process is gone; resuming puts its trial back, not the live one's.
    let n = store.requeue_trials(study.id, &["host:dead".to_string()]).await.expect("requeue");
    assert_eq!(n, 1);
    let running = store.running_trials(study.id).await.expect("running");
    assert_eq!(running.iter().map(|t| t.id).collect::<Vec<_>>(), [alive.id]);
    let back = &store.trials(study.id).await.expect("trials")[0];
    assert_eq!((back.status, back.worker.as_deref()), (TrialStatus::Pending, None));
    let err = store.finish_trial(dead.id, &outcome(TrialStatus::Completed)).await;
    assert!(matches!(err, Err(StoreError::TrialNotRunning { .. })), "{err:?}");

    // Claimed again (lowest number first), by someone else; the stale worker cannot finish it.
    let again = store.claim_trial(study.id, "host:new").await.expect("claim").expect("pending");
    assert_eq!((again.id, again.number), (dead.id, 0));
    assert_eq!(again.worker.as_deref(), Some("host:new"));
    let failed = outcome(TrialStatus::Failed);
    let stale = store.finish_claimed_trial(dead.id, "host:dead", &failed).await;
    assert!(matches!(stale, Err(StoreError::TrialClaimedElsewhere { .. })), "{stale:?}");
    store
        .finish_claimed_trial(dead.id, "host:new", &outcome(TrialStatus::Completed))
        .await
        .expect("finish");
    assert_eq!(store.requeue_trials(study.id, &[]).await.expect("requeue"), 0);
    let err = store.requeue_trials(study.id + 100, &[]).await.expect_err("no study");
    assert!(matches!(err, StoreError::UnknownStudy(_)), "{err}");
}
both!(requeue_after_kill);

async fn two_workers_claim_each_trial_once(ctx: Ctx) {
    const N: usize = 40;
    let url = ctx.url(0).await;
    let a = Store::open(&url).await.expect("open a");
    let b = Store::open(&url).await.expect("open b");
    let study = queued_study(&a, "shared", N).await;
    let work = |store: Store, worker: &'static str| async move {
        let mut claimed = Vec::new();
        while let Some(t) = store.claim_trial(study.id, worker).await.expect("claim") {
            assert_eq!(t.worker.as_deref(), Some(worker));
            store
                .finish_claimed_trial(t.id, worker, &outcome(TrialStatus::Completed))
                .await
                .expect("finish what it claimed");
            claimed.push(t.id);
        }
        claimed
    };
    let (ta, tb) = (tokio::spawn(work(a.clone(), "a:1")), tokio::spawn(work(b.clone(), "b:1")));
    let (ca, cb) = (ta.await.expect("worker a"), tb.await.expect("worker b"));
    let mut all: Vec<i64> = ca.iter().chain(&cb).copied().collect();
    all.sort_unstable();
    let trials = a.trials(study.id).await.expect("trials");
    let ids: Vec<i64> = trials.iter().map(|t| t.id).collect();
    assert_eq!(all, ids, "every trial claimed exactly once");
    assert!(trials.iter().all(|t| t.status == TrialStatus::Completed));
    for t in &trials {
        let by = if ca.contains(&t.id) { "a:1" } else { "b:1" };
        assert_eq!(t.worker.as_deref(), Some(by), "trial {}", t.number);
    }
}
both!(two_workers_claim_each_trial_once);

async fn concurrent_enqueue_no_duplicates(ctx: Ctx) {
    let url = ctx.url(0).await;
    let a = Store::open(&url).await.expect("open a");
    let b = Store::open(&url).await.expect("open b");
    let study = queued_study(&a, "shared", 0).await;
    // Keys 0..30 and 15..45: the middle 15 are offered by both.
    let enqueue = |store: Store, keys: std::ops::Range<usize>| async move {
        let mut added = Vec::new();
        for k in keys {
            if let Some(t) = store.enqueue_trial(study.id, &new_trial(k)).await.expect("enqueue") {
                added.push(t.trial_key.expect("key"));
            }
        }
        added
    };
    let (ta, tb) =
        (tokio::spawn(enqueue(a.clone(), 0..30)), tokio::spawn(enqueue(b.clone(), 15..45)));
    let (ka, kb) = (ta.await.expect("enqueuer a"), tb.await.expect("enqueuer b"));
    assert_eq!(ka.len() + kb.len(), 45, "each key added by exactly one: {ka:?} {kb:?}");
    let trials = a.trials(study.id).await.expect("trials");
    let numbers: Vec<i64> = trials.iter().map(|t| t.number).collect();
    assert_eq!(numbers, (0..45).collect::<Vec<i64>>(), "unique and contiguous");
    let keys: BTreeSet<String> = trials.iter().filter_map(|t| t.trial_key.clone()).collect();
    let want: BTreeSet<String> = (0..45).map(|k| format!("key-{k}")).collect();
    assert_eq!(keys, want);
}
both!(concurrent_enqueue_no_duplicates);

async fn concurrent_writers(ctx: Ctx) {
    let url = ctx.url(0).await;
    let a = Store::open(&url).await.expect("open a");
    let b = Store::open(&url).await.expect("open b");
    let write = |store: Store, tag: &'static str| async move {
        for i in 0..10 {
            let sha = format!("{tag}{i}");
            complete_run(&store, &sha, None, &format!("key-{sha}"), 1.0).await;
        }
    };
    tokio::join!(write(a.clone(), "a"), write(b.clone(), "b"));
    assert_eq!(a.runs(100).await.expect("runs").len(), 20);
    let points = a.series(&ttft_filter()).await.expect("series");
    let ordinals: BTreeSet<i64> = points.iter().map(|p| p.ordinal).collect();
    assert_eq!(ordinals.len(), 20, "every new commit got its own position");
}
both!(concurrent_writers);

async fn alerts_and_triage(ctx: Ctx) {
    let store = ctx.store(0).await;
    let r1 = complete_run(&store, "c1", Some(1), "k1", 1.0).await;
    complete_run(&store, "c2", Some(2), "k2", 1.1).await;
    let key = store
        .series_of_run(r1)
        .await
        .expect("series")
        .into_iter()
        .find(|k| k.measure == "ttft_p50")
        .expect("ttft series");
    let mut info = AlertInfo {
        series: key,
        commit: "c2".into(),
        state: AlertState::Provisional,
        regression: true,
        before: 1.0,
        after: 1.1,
        change_pct: 10.0,
        p_value: None,
    };
    let id = store.upsert_alert(&info).await.expect("provisional");
    info.state = AlertState::Confirmed;
    info.p_value = Some(1e-4);
    assert_eq!(store.upsert_alert(&info).await.expect("confirm"), id, "same series and commit");
    let all = store.alerts(None).await.expect("alerts");
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].info, info);
    assert!(store.alerts(Some(AlertState::Provisional)).await.expect("alerts").is_empty());
    assert_eq!(store.alert(id).await.expect("one alert"), all[0]);
    let err = store.alert(id + 100).await.expect_err("unknown alert");
    assert!(matches!(err, StoreError::UnknownAlert(x) if x == id + 100), "{err}");

    let group = store.group_alerts(&[id], "c1", "c2").await.expect("group");
    assert_eq!(store.alerts(None).await.expect("alerts")[0].group, Some(group));
    let err = store.group_alerts(&[id, id + 100], "c1", "c2").await.expect_err("unknown alert");
    assert!(matches!(err, StoreError::UnknownAlert(_)), "{err}");
    assert_eq!(store.alerts(None).await.expect("alerts")[0].group, Some(group), "rolled back");

    store.triage(id, "acknowledged", "looking", Some("ci")).await.expect("ack");
    store.triage(id, "fixed", "reverted in c3", None).await.expect("fixed");
    let history = store.triage_history(id).await.expect("history");
    let actions: Vec<&str> = history.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["acknowledged", "fixed"]);
    let err = store.triage(id + 100, "fixed", "", None).await.expect_err("no alert");
    assert!(matches!(err, StoreError::UnknownAlert(_)), "{err}");
    store.annotate(Some("c2"), Some(r1), "driver 550 → 555").await.expect("annotate");
    store.annotate(None, None, "moved racks").await.expect("annotate");
    assert!(store.annotate(Some("nope"), None, "x").await.is_err());
    let notes = store.annotations().await.expect("annotations");
    assert_eq!(notes.len(), 2);
    assert_eq!((notes[0].sha.as_deref(), notes[0].run_id), (Some("c2"), Some(r1)));
    assert_eq!(notes[1].text, "moved racks");

    info.commit = "unknown-sha".into();
    assert!(store.upsert_alert(&info).await.is_err());
}
both!(alerts_and_triage);

/// Relative noise of about 1% in a fixed, repeating pattern (mean 0, sd ≈ 0.01).
fn wobble(i: usize) -> f64 {
    1.0 + 0.01 * [0.3, -1.1, 0.8, -0.2, 1.4, -0.7, 0.1, -1.3, 0.9, -0.2][i % 10]
}

/// The confirmed alerts of the `ttft_p50` series.
async fn confirmed_alerts(store: &Store) -> Vec<Alert> {
    let alerts = store.alerts(Some(AlertState::Confirmed)).await.expect("alerts");
    alerts.into_iter().filter(|a| a.info.series.measure == "ttft_p50").collect()
}

async fn analysis_confirms_a_step_once_three_points_follow(ctx: Ctx) {
    use dyno_results::analyze::analyze_run;
    let store = ctx.store(0).await;
    // A 5% slowdown from s15 on, in 1% noise, one nightly at a time.
    for i in 0..21 {
        let level = if i < 15 { 100.0 } else { 105.0 };
        let sha = format!("s{i:02}");
        let run = complete_run(&store, &sha, Some(i as i64 + 1), &sha, level * wobble(i)).await;
        let analysis = analyze_run(&store, run).await.expect("analyze");
        let ttft = analysis.series.iter().find(|s| s.key.measure == "ttft_p50").expect("series");
        assert_eq!(ttft.point.as_ref().map(|p| p.run_id), Some(run));
        let confirmed = confirmed_alerts(&store).await;
        if i < 18 {
            assert!(confirmed.is_empty(), "confirmed too early, at s{i:02}: {confirmed:?}");
            continue;
        }
        assert_eq!(confirmed.len(), 1, "at s{i:02}: {confirmed:?}");
        let alert = &confirmed[0];
        assert_eq!(alert.info.commit, "s15");
        assert!(alert.info.regression);
        assert!((alert.info.change_pct - 5.0).abs() < 1.5, "{}", alert.info.change_pct);
        assert!(alert.info.p_value.is_some_and(|p| p <= 0.001));
        // Both recorded measures (ttft_p50, and itl_p50 = ttft_p50 / 10) moved.
        assert_eq!(analysis.open_regressions.len(), 2);
        // Both series' alerts form one group: the same commit explains them.
        let all = store.alerts(Some(AlertState::Confirmed)).await.expect("alerts");
        assert!(all.iter().all(|a| a.group.is_some() && a.group == all[0].group), "{all:?}");
        if i == 18 {
            assert!(ttft.changed.iter().any(|a| a.id == alert.id), "this analysis confirmed it");
            let baseline = ttft.baseline.expect("baseline");
            assert!((baseline - 105.0).abs() < 2.0, "the segment since the change: {baseline}");
        }
    }
    // Triaged, it no longer counts as open; the alert itself stays confirmed.
    for alert in store.alerts(Some(AlertState::Confirmed)).await.expect("alerts") {
        store.triage(alert.id, "acknowledged", "known", None).await.expect("ack");
    }
    let run = complete_run(&store, "s21", Some(22), "s21", 105.0 * wobble(21)).await;
    let analysis = analyze_run(&store, run).await.expect("analyze");
    assert!(analysis.open_regressions.is_empty());
    assert_eq!(confirmed_alerts(&store).await.len(), 1);
}
both!(analysis_confirms_a_step_once_three_points_follow);

async fn analysis_retracts_a_single_outlier(ctx: Ctx) {
    use dyno_results::analyze::analyze_run;
    let store = ctx.store(0).await;
    let mut flagged = None;
    for i in 0..16 {
        let sha = format!("o{i:02}");
        let value = if i == 10 { 130.0 } else { 100.0 * wobble(i) };
        let run = complete_run(&store, &sha, Some(i as i64 + 1), &sha, value).await;
        analyze_run(&store, run).await.expect("analyze");
        let alerts: Vec<Alert> = store
            .alerts(None)
            .await
            .expect("alerts")
            .into_iter()
            .filter(|a| a.info.series.measure == "ttft_p50")
            .collect();
        match i {
            0..=9 => assert!(alerts.is_empty(), "at o{i:02}: {alerts:?}"),
            10..=12 => {
                assert_eq!(alerts.len(), 1, "at o{i:02}: {alerts:?}");
                assert_eq!(alerts[0].info.state, AlertState::Provisional);
                assert_eq!(alerts[0].info.commit, "o10");
                flagged = Some(alerts[0].id);
            }
            _ => {
                assert_eq!(alerts.len(), 1, "at o{i:02}: {alerts:?}");
                assert_eq!(alerts[0].info.state, AlertState::Retracted);
                assert_eq!(Some(alerts[0].id), flagged, "the same alert, moved on");
            }
        }
    }
    assert!(confirmed_alerts(&store).await.is_empty());
}
both!(analysis_retracts_a_single_outlier);
