//! The SQL, written once and compiled for each backend by `backend!`: both dialects accept
//! `$N` placeholders, `RETURNING` and the column types the migrations use, so one body serves
//! SQLite and PostgreSQL without `AnyPool`.

use super::error::{Result, StoreError};
use super::row::from_row;
use super::types::*;

/// Current time, unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn parse_json(what: &str, text: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Corrupt { what: what.to_string(), reason: e.to_string() })
}

fn parse_status(s: &str) -> Result<RunStatus> {
    RunStatus::parse(s).ok_or_else(|| StoreError::Corrupt {
        what: "run status".into(),
        reason: format!("unknown status {s:?}"),
    })
}

fn check_finite(field: String, x: f64) -> Result<()> {
    if x.is_finite() {
        Ok(())
    } else {
        Err(StoreError::Invalid { field, reason: format!("{x} is not a finite number") })
    }
}

from_row! {
    struct RunRow {
        id: i64,
        sha: String,
        committed_at: Option<i64>,
        ordinal: i64,
        branch: String,
        trigger_kind: String,
        status: String,
        idempotency_key: String,
        environment: String,
        spec: String,
        started_at: i64,
        finished_at: Option<i64>,
    }
}

impl RunRow {
    fn into_summary(self) -> Result<RunSummary> {
        Ok(RunSummary {
            id: self.id,
            commit: CommitInfo {
                sha: self.sha,
                timestamp: self.committed_at,
                ordinal: Some(self.ordinal),
            },
            branch: self.branch,
            trigger: self.trigger_kind,
            status: parse_status(&self.status)?,
            idempotency_key: self.idempotency_key,
            environment: parse_json("run environment", &self.environment)?,
            testbed: Testbed { spec: parse_json("testbed spec", &self.spec)? },
            started_at: self.started_at,
            finished_at: self.finished_at,
        })
    }
}

const RUN_SELECT: &str = "SELECT r.id, c.sha, c.committed_at, c.ordinal, r.branch, r.trigger_kind, \
     r.status, r.idempotency_key, r.environment, t.spec, r.started_at, r.finished_at \
     FROM runs r JOIN commits c ON c.id = r.commit_id JOIN testbeds t ON t.id = r.testbed_id";

from_row! {
    struct ScenarioRow {
        id: i64,
        name: String,
        model: String,
        workload: String,
        config_hash: String,
        config: String,
    }
}

from_row! {
    struct ValueRow {
        scenario_id: i64,
        name: String,
        unit: String,
        family: String,
        lower_is_better: bool,
        value: f64,
        lower_bound: Option<f64>,
        upper_bound: Option<f64>,
        n: i64,
        data: Option<Vec<u8>>,
    }
}

from_row! {
    struct HistogramRow {
        scenario_id: i64,
        name: String,
        data: Vec<u8>,
    }
}

from_row! {
    struct MeasureRow {
        id: i64,
        unit: String,
        family: String,
        lower_is_better: bool,
    }
}

from_row! {
    struct TrialRow {
        id: i64,
        study_id: i64,
        number: i64,
        config: String,
        predicted: Option<String>,
        measured: Option<String>,
        status: String,
        error: Option<String>,
        run_id: Option<i64>,
        started_at: i64,
        finished_at: Option<i64>,
        trial_key: Option<String>,
        params: Option<String>,
        worker: Option<String>,
    }
}

/// The columns a [`TrialRow`] reads, for `SELECT` and `RETURNING` lists (a macro, so that
/// `concat!` can build whole statements from it at compile time).
/// The joins from a metric value to its run, commit, scenario, measure and testbed, keeping
/// only finished runs' values: what every series query reads from.
macro_rules! series_joins {
    () => {
        " FROM metric_values mv \
         JOIN runs r ON r.id = mv.run_id \
         JOIN commits c ON c.id = r.commit_id \
         JOIN scenarios s ON s.id = mv.scenario_id \
         JOIN measures m ON m.id = mv.measure_id \
         JOIN testbeds t ON t.id = mv.testbed_id \
         WHERE r.status IN ('completed', 'partial')"
    };
}

macro_rules! trial_columns {
    () => {
        "id, study_id, number, config, predicted, measured, status, error, run_id, started_at, \
         finished_at, trial_key, params, worker"
    };
}

/// The columns a [`StudyRow`] reads.
macro_rules! study_columns {
    () => {
        "id, name, scenario_id, objective, search_space, settings, status, created_at, finished_at"
    };
}

/// How many trial numbers an insert tries before giving up to concurrent inserters (each
/// failed attempt means another inserter succeeded, so this bounds only extreme contention).
const INSERT_ATTEMPTS: u32 = 64;

/// A trial row to insert.
struct TrialInsert<'a> {
    key: Option<&'a str>,
    params: Option<&'a serde_json::Value>,
    config: &'a serde_json::Value,
    predicted: Option<&'a serde_json::Value>,
    status: TrialStatus,
    error: Option<&'a str>,
}

impl<'a> TrialInsert<'a> {
    fn new(t: &'a NewTrial, status: TrialStatus, error: Option<&'a str>) -> TrialInsert<'a> {
        TrialInsert {
            key: Some(&t.trial_key),
            params: Some(&t.params),
            config: &t.config,
            predicted: t.predicted.as_ref(),
            status,
            error,
        }
    }
}

from_row! {
    struct StudyRow {
        id: i64,
        name: String,
        scenario_id: Option<i64>,
        objective: String,
        search_space: String,
        settings: Option<String>,
        status: String,
        created_at: i64,
        finished_at: Option<i64>,
    }
}

impl StudyRow {
    fn into_study(self) -> Result<Study> {
        let what = |w: &str| format!("{w} of study {:?}", self.name);
        let settings = match &self.settings {
            Some(text) => parse_json(&what("settings"), text)?,
            None => serde_json::Value::Null,
        };
        Ok(Study {
            search_space: parse_json(&what("search space"), &self.search_space)?,
            settings,
            status: parse_status(&self.status)?,
            id: self.id,
            name: self.name,
            scenario_id: self.scenario_id,
            objective: self.objective,
            created_at: self.created_at,
            finished_at: self.finished_at,
        })
    }
}

from_row! {
    struct StudySummaryRow {
        id: i64,
        name: String,
        status: String,
        created_at: i64,
        finished_at: Option<i64>,
        pending: i64,
        running: i64,
        completed: i64,
        failed: i64,
        pruned: i64,
        infeasible: i64,
    }
}

impl StudySummaryRow {
    fn into_summary(self) -> Result<StudySummary> {
        Ok(StudySummary {
            status: parse_status(&self.status)?,
            id: self.id,
            name: self.name,
            created_at: self.created_at,
            finished_at: self.finished_at,
            trials: TrialCounts {
                pending: self.pending,
                running: self.running,
                completed: self.completed,
                failed: self.failed,
                pruned: self.pruned,
                infeasible: self.infeasible,
            },
        })
    }
}

impl TrialRow {
    fn into_trial(self) -> Result<Trial> {
        let opt = |what: &str, t: Option<String>| t.map(|t| parse_json(what, &t)).transpose();
        Ok(Trial {
            id: self.id,
            study: self.study_id,
            number: self.number,
            config: parse_json("trial config", &self.config)?,
            predicted: opt("trial prediction", self.predicted)?,
            measured: opt("trial measurement", self.measured)?,
            status: TrialStatus::parse(&self.status).ok_or_else(|| StoreError::Corrupt {
                what: "trial status".into(),
                reason: format!("unknown status {:?}", self.status),
            })?,
            error: self.error,
            run: self.run_id,
            started_at: self.started_at,
            finished_at: self.finished_at,
            params: opt("trial params", self.params)?,
            trial_key: self.trial_key,
            worker: self.worker,
        })
    }
}

from_row! {
    struct AlertRow {
        id: i64,
        group_id: Option<i64>,
        scenario: String,
        config_hash: String,
        measure: String,
        unit: String,
        family: String,
        lower_is_better: bool,
        testbed: String,
        branch: String,
        sha: String,
        state: String,
        direction: String,
        before_value: f64,
        after_value: f64,
        change_pct: f64,
        p_value: Option<f64>,
        created_at: i64,
        updated_at: i64,
    }
}

impl AlertRow {
    fn into_alert(self) -> Result<Alert> {
        Ok(Alert {
            id: self.id,
            info: AlertInfo {
                series: SeriesKey {
                    scenario: self.scenario,
                    config_hash: self.config_hash,
                    measure: self.measure,
                    unit: self.unit,
                    family: self.family,
                    lower_is_better: self.lower_is_better,
                    testbed: self.testbed,
                    branch: self.branch,
                },
                commit: self.sha,
                state: AlertState::parse(&self.state).ok_or_else(|| StoreError::Corrupt {
                    what: "alert state".into(),
                    reason: format!("unknown state {:?}", self.state),
                })?,
                regression: self.direction == "regression",
                before: self.before_value,
                after: self.after_value,
                change_pct: self.change_pct,
                p_value: self.p_value,
            },
            group: self.group_id,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

const ALERT_SELECT: &str = "SELECT a.id, a.group_id, s.name AS scenario, s.config_hash, m.name AS measure, \
     m.unit, m.family, m.lower_is_better, t.hash AS testbed, a.branch, c.sha, a.state, a.direction, \
     a.before_value, a.after_value, a.change_pct, a.p_value, a.created_at, a.updated_at FROM alerts a \
     JOIN scenarios s ON s.id = a.scenario_id JOIN measures m ON m.id = a.measure_id \
     JOIN testbeds t ON t.id = a.testbed_id JOIN commits c ON c.id = a.commit_id";

macro_rules! backend {
    ($modname:ident, $db:ty, $begin:literal, $lock_commits:literal, $skip_locked:literal) => {
        pub(crate) mod $modname {
            use super::*;
            use sqlx::QueryBuilder;

            type Db = $db;
            /// Starts a write transaction (SQLite: take the write lock at once, so a concurrent
            /// writer waits on the busy timeout instead of failing at its first write).
            const BEGIN: &str = $begin;
            /// Locks `commits` against concurrent inserts until the transaction ends (SQLite:
            /// `BEGIN IMMEDIATE` already did).
            const LOCK_COMMITS: &str = $lock_commits;
            /// Turns the study's lowest-numbered pending trial into a running one claimed by
            /// `$2` at `$3`, returning it. PostgreSQL locks the chosen row and skips rows other
            /// claimers hold; SQLite has one writer at a time (`BEGIN IMMEDIATE`), so the
            /// statement is atomic there as it is.
            const CLAIM: &str = concat!(
                "UPDATE trials SET status = 'running', worker = $2, started_at = $3 WHERE id = \
                 (SELECT id FROM trials WHERE study_id = $1 AND status = 'pending' ORDER BY number LIMIT 1",
                $skip_locked,
                ") AND status = 'pending' RETURNING ",
                trial_columns!()
            );
            type Conn = <Db as sqlx::Database>::Connection;
            pub(crate) type Pool = sqlx::Pool<Db>;

            /// Options for `begin_run` that only an import sets.
            #[derive(Default)]
            pub(crate) struct Preserve {
                pub started_at: Option<i64>,
            }

            async fn testbed_id(conn: &mut Conn, testbed: &Testbed) -> Result<i64> {
                // Insert-or-ignore, then read: safe against a concurrent insert of the same row.
                let hash = testbed.hash();
                sqlx::query(
                    "INSERT INTO testbeds (hash, spec, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (hash) DO NOTHING",
                )
                .bind(&hash)
                .bind(testbed.spec.to_string())
                .bind(now_ms())
                .execute(&mut *conn)
                .await?;
                Ok(sqlx::query_scalar("SELECT id FROM testbeds WHERE hash = $1")
                    .bind(&hash)
                    .fetch_one(&mut *conn)
                    .await?)
            }

            async fn commit_id(conn: &mut Conn, commit: &CommitInfo, branch: &str) -> Result<i64> {
                let find = async |conn: &mut Conn| -> Result<Option<i64>> {
                    Ok(sqlx::query_scalar("SELECT id FROM commits WHERE sha = $1")
                        .bind(&commit.sha)
                        .fetch_optional(&mut *conn)
                        .await?)
                };
                if let Some(id) = find(conn).await? {
                    if let Some(ordinal) = commit.ordinal {
                        sqlx::query("UPDATE commits SET ordinal = $1 WHERE id = $2")
                            .bind(ordinal)
                            .bind(id)
                            .execute(&mut *conn)
                            .await?;
                    }
                    return Ok(id);
                }
                let ordinal = match commit.ordinal {
                    Some(o) => o,
                    None => {
                        // Serialize "one past the largest" among concurrent writers.
                        sqlx::query(LOCK_COMMITS).execute(&mut *conn).await?;
                        let max: Option<i64> = sqlx::query_scalar("SELECT MAX(ordinal) FROM commits")
                            .fetch_one(&mut *conn)
                            .await?;
                        max.unwrap_or(0) + 1
                    }
                };
                sqlx::query(
                    "INSERT INTO commits (sha, branch, committed_at, ordinal) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (sha) DO NOTHING",
                )
                .bind(&commit.sha)
                .bind(branch)
                .bind(commit.timestamp)
                .bind(ordinal)
                .execute(&mut *conn)
                .await?;
                find(conn).await?.ok_or_else(|| StoreError::Corrupt {
                    what: format!("commit {}", commit.sha),
                    reason: "inserted but not found".into(),
                })
            }

            async fn scenario_id(conn: &mut Conn, s: &Scenario) -> Result<i64> {
                sqlx::query(
                    "INSERT INTO scenarios (name, model, workload, config_hash, config) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name, model, workload, config_hash) DO NOTHING",
                )
                .bind(&s.name)
                .bind(&s.model)
                .bind(&s.workload)
                .bind(&s.config_hash)
                .bind(&s.config)
                .execute(&mut *conn)
                .await?;
                Ok(sqlx::query_scalar(
                    "SELECT id FROM scenarios WHERE name = $1 AND model = $2 AND workload = $3 \
                     AND config_hash = $4",
                )
                .bind(&s.name)
                .bind(&s.model)
                .bind(&s.workload)
                .bind(&s.config_hash)
                .fetch_one(&mut *conn)
                .await?)
            }

            async fn measure_id(conn: &mut Conn, v: &MetricValue) -> Result<i64> {
                sqlx::query(
                    "INSERT INTO measures (name, unit, family, lower_is_better) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (name) DO NOTHING",
                )
                .bind(&v.measure)
                .bind(&v.unit)
                .bind(&v.family)
                .bind(v.lower_is_better)
                .execute(&mut *conn)
                .await?;
                let m: MeasureRow = sqlx::query_as(
                    "SELECT id, unit, family, lower_is_better FROM measures WHERE name = $1",
                )
                .bind(&v.measure)
                .fetch_one(&mut *conn)
                .await?;
                if m.unit != v.unit || m.family != v.family || m.lower_is_better != v.lower_is_better {
                    let fmt = |u: &str, f: &str, l: bool| {
                        format!("{u} ({f}, {})", if l { "lower is better" } else { "higher is better" })
                    };
                    return Err(StoreError::MeasureMismatch {
                        name: v.measure.clone(),
                        stored: fmt(&m.unit, &m.family, m.lower_is_better),
                        given: fmt(&v.unit, &v.family, v.lower_is_better),
                    });
                }
                Ok(m.id)
            }

            pub(crate) async fn begin_run(pool: &Pool, info: &RunInfo) -> Result<BeginRun> {
                let mut tx = pool.begin_with(BEGIN).await?;
                let out = begin_run_in(&mut tx, info, Preserve::default()).await?;
                tx.commit().await?;
                Ok(out)
            }

            async fn begin_run_in(tx: &mut Conn, info: &RunInfo, preserve: Preserve) -> Result<BeginRun> {
                if info.idempotency_key.is_empty() {
                    return Err(StoreError::Invalid {
                        field: "idempotency_key".into(),
                        reason: "must not be empty".into(),
                    });
                }
                let prior: Option<(i64, String)> =
                    sqlx::query_as("SELECT id, status FROM runs WHERE idempotency_key = $1")
                        .bind(&info.idempotency_key)
                        .fetch_optional(&mut *tx)
                        .await?;
                if let Some((id, status)) = prior {
                    match parse_status(&status)? {
                        RunStatus::Completed => return Ok(BeginRun::AlreadyRecorded(id)),
                        RunStatus::Running => {
                            return Err(StoreError::RunInProgress {
                                id,
                                key: info.idempotency_key.clone(),
                            })
                        }
                        // A failed or partial attempt keeps its record under a derived key, so
                        // the retry can take the key (and a re-import still finds both).
                        RunStatus::Failed | RunStatus::Partial => {
                            sqlx::query("UPDATE runs SET idempotency_key = $1 WHERE id = $2")
                                .bind(format!("{}#attempt-{id}", info.idempotency_key))
                                .bind(id)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                }
                let testbed = testbed_id(tx, &info.testbed).await?;
                let commit = commit_id(tx, &info.commit, &info.branch).await?;
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO runs (commit_id, branch, trigger_kind, environment, testbed_id, status, \
                     idempotency_key, started_at) VALUES ($1, $2, $3, $4, $5, 'running', $6, $7) RETURNING id",
                )
                .bind(commit)
                .bind(&info.branch)
                .bind(&info.trigger)
                .bind(info.environment.to_string())
                .bind(testbed)
                .bind(&info.idempotency_key)
                .bind(preserve.started_at.unwrap_or_else(now_ms))
                .fetch_one(&mut *tx)
                .await?;
                Ok(BeginRun::Started(id))
            }

            pub(crate) async fn record_scenario_result(
                pool: &Pool,
                run: i64,
                scenario: &Scenario,
                values: &[MetricValue],
                histograms: &[Histogram],
            ) -> Result<()> {
                let mut tx = pool.begin_with(BEGIN).await?;
                record_in(&mut tx, run, scenario, values, histograms).await?;
                tx.commit().await?;
                Ok(())
            }

            async fn record_in(
                conn: &mut Conn,
                run: i64,
                scenario: &Scenario,
                values: &[MetricValue],
                histograms: &[Histogram],
            ) -> Result<()> {
                for v in values {
                    check_finite(format!("value of {}", v.measure), v.value)?;
                    if let Some(x) = v.lower {
                        check_finite(format!("lower bound of {}", v.measure), x)?;
                    }
                    if let Some(x) = v.upper {
                        check_finite(format!("upper bound of {}", v.measure), x)?;
                    }
                }
                let row: Option<(String, i64)> =
                    sqlx::query_as("SELECT status, testbed_id FROM runs WHERE id = $1")
                        .bind(run)
                        .fetch_optional(&mut *conn)
                        .await?;
                let Some((status, testbed)) = row else {
                    return Err(StoreError::UnknownRun(run));
                };
                if status != "running" {
                    return Err(StoreError::RunNotRunning { id: run, status });
                }
                let scenario = scenario_id(conn, scenario).await?;
                // Measures in name order, so concurrent writers take their row locks in one
                // order (PostgreSQL would otherwise be free to deadlock two of them).
                let mut sorted: Vec<&MetricValue> = values.iter().collect();
                sorted.sort_by(|a, b| a.measure.cmp(&b.measure));
                let mut measures = std::collections::BTreeMap::new();
                for v in sorted {
                    if !measures.contains_key(v.measure.as_str()) {
                        measures.insert(v.measure.as_str(), measure_id(conn, v).await?);
                    }
                }
                for v in values {
                    let Some(&measure) = measures.get(v.measure.as_str()) else {
                        continue; // unreachable: every measure was inserted above
                    };
                    let value_id: i64 = sqlx::query_scalar(
                        "INSERT INTO metric_values (run_id, scenario_id, measure_id, testbed_id, value, \
                         lower_bound, upper_bound, n) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
                    )
                    .bind(run)
                    .bind(scenario)
                    .bind(measure)
                    .bind(testbed)
                    .bind(v.value)
                    .bind(v.lower)
                    .bind(v.upper)
                    .bind(v.n)
                    .fetch_one(&mut *conn)
                    .await?;
                    if !v.samples.is_empty() {
                        sqlx::query(
                            "INSERT INTO raw_samples (metric_value_id, encoding, data) VALUES ($1, 'f64le', $2)",
                        )
                        .bind(value_id)
                        .bind(samples_to_bytes(&v.samples))
                        .execute(&mut *conn)
                        .await?;
                    }
                }
                for h in histograms {
                    sqlx::query(
                        "INSERT INTO histograms (run_id, scenario_id, name, data) VALUES ($1, $2, $3, $4)",
                    )
                    .bind(run)
                    .bind(scenario)
                    .bind(&h.name)
                    .bind(&h.data)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok(())
            }

            pub(crate) async fn finish_run(pool: &Pool, run: i64, status: RunStatus) -> Result<()> {
                let mut conn = pool.acquire().await?;
                finish_in(&mut conn, run, status, None).await
            }

            async fn finish_in(
                conn: &mut Conn,
                run: i64,
                status: RunStatus,
                finished_at: Option<i64>,
            ) -> Result<()> {
                if status == RunStatus::Running {
                    return Err(StoreError::Invalid {
                        field: "status".into(),
                        reason: "a run cannot finish as running".into(),
                    });
                }
                let done = sqlx::query(
                    "UPDATE runs SET status = $1, finished_at = $2 WHERE id = $3 AND status = 'running'",
                )
                .bind(status.as_str())
                .bind(finished_at.unwrap_or_else(now_ms))
                .bind(run)
                .execute(&mut *conn)
                .await?;
                if done.rows_affected() == 1 {
                    return Ok(());
                }
                let current: Option<String> = sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
                    .bind(run)
                    .fetch_optional(&mut *conn)
                    .await?;
                match current {
                    None => Err(StoreError::UnknownRun(run)),
                    Some(status) => Err(StoreError::RunNotRunning { id: run, status }),
                }
            }

            pub(crate) async fn mark_stale_runs_failed(pool: &Pool, started_before: i64) -> Result<u64> {
                let done = sqlx::query(
                    "UPDATE runs SET status = 'failed', finished_at = $1 \
                     WHERE status = 'running' AND started_at <= $2",
                )
                .bind(now_ms())
                .bind(started_before)
                .execute(pool)
                .await?;
                Ok(done.rows_affected())
            }

            pub(crate) async fn series(pool: &Pool, f: &SeriesFilter) -> Result<Vec<Point>> {
                let mut q: QueryBuilder<Db> = QueryBuilder::new(concat!(
                    "SELECT r.id AS run_id, c.sha, c.ordinal, r.branch, t.hash AS testbed, mv.value, \
                     mv.lower_bound, mv.upper_bound, mv.n, r.started_at",
                    series_joins!(),
                    " AND s.name = "
                ));
                q.push_bind(&f.scenario);
                q.push(" AND m.name = ");
                q.push_bind(&f.measure);
                if let Some(t) = &f.testbed {
                    q.push(" AND t.hash = ");
                    q.push_bind(t);
                }
                if let Some(b) = &f.branch {
                    q.push(" AND r.branch = ");
                    q.push_bind(b);
                }
                if let Some(h) = &f.config_hash {
                    q.push(" AND s.config_hash = ");
                    q.push_bind(h);
                }
                q.push(" ORDER BY c.ordinal, r.id");
                Ok(q.build_query_as::<Point>().fetch_all(pool).await?)
            }

            pub(crate) async fn all_series_points(pool: &Pool) -> Result<Vec<SeriesPoint>> {
                Ok(sqlx::query_as(concat!(
                    "SELECT s.name AS scenario, s.config_hash, s.model, s.workload, \
                     m.name AS measure, m.unit, m.family, m.lower_is_better, t.hash AS testbed, \
                     r.branch, r.id AS run_id, c.sha, c.ordinal, mv.value, mv.lower_bound, \
                     mv.upper_bound, r.started_at",
                    series_joins!(),
                    " ORDER BY s.name, s.config_hash, m.name, t.hash, r.branch, c.ordinal, r.id"
                ))
                .fetch_all(pool)
                .await?)
            }

            pub(crate) async fn content_version(pool: &Pool) -> Result<Vec<i64>> {
                let row: (i64, i64, i64, i64, i64, i64) = sqlx::query_as(
                    "SELECT (SELECT COALESCE(MAX(id), 0) FROM runs), \
                     (SELECT COUNT(*) FROM runs WHERE status IN ('completed', 'partial')), \
                     (SELECT COUNT(*) FROM alerts), \
                     (SELECT COALESCE(MAX(updated_at), 0) FROM alerts), \
                     (SELECT COALESCE(MAX(id), 0) FROM triage_events), \
                     (SELECT COUNT(*) FROM testbeds)",
                )
                .fetch_one(pool)
                .await?;
                Ok(vec![row.0, row.1, row.2, row.3, row.4, row.5])
            }

            pub(crate) async fn testbeds(pool: &Pool) -> Result<Vec<(String, String)>> {
                Ok(sqlx::query_as("SELECT hash, spec FROM testbeds ORDER BY id")
                    .fetch_all(pool)
                    .await?)
            }

            pub(crate) async fn runs(pool: &Pool, limit: i64) -> Result<Vec<RunSummary>> {
                let mut q: QueryBuilder<Db> = QueryBuilder::new(RUN_SELECT);
                q.push(" ORDER BY r.id DESC LIMIT ");
                q.push_bind(limit);
                let rows: Vec<RunRow> = q.build_query_as().fetch_all(pool).await?;
                rows.into_iter().map(RunRow::into_summary).collect()
            }

            pub(crate) async fn series_of_run(pool: &Pool, run: i64) -> Result<Vec<SeriesKey>> {
                Ok(sqlx::query_as(
                    "SELECT DISTINCT s.name AS scenario, s.config_hash, m.name AS measure, m.unit, m.family, \
                     m.lower_is_better, t.hash AS testbed, r.branch FROM metric_values mv \
                     JOIN runs r ON r.id = mv.run_id \
                     JOIN scenarios s ON s.id = mv.scenario_id \
                     JOIN measures m ON m.id = mv.measure_id \
                     JOIN testbeds t ON t.id = mv.testbed_id \
                     WHERE mv.run_id = $1 ORDER BY s.name, s.config_hash, m.name",
                )
                .bind(run)
                .fetch_all(pool)
                .await?)
            }

            /// Insert the alert, or update the one for the same series and commit.
            pub(crate) async fn upsert_alert(pool: &Pool, a: &AlertInfo) -> Result<i64> {
                for (field, x) in [("before", a.before), ("after", a.after), ("change_pct", a.change_pct)] {
                    check_finite(format!("alert {field}"), x)?;
                }
                let mut tx = pool.begin_with(BEGIN).await?;
                let k = &a.series;
                let ids: Option<(i64, i64, i64, i64)> = sqlx::query_as(
                    "SELECT s.id, m.id, t.id, c.id FROM scenarios s, measures m, testbeds t, commits c \
                     WHERE s.name = $1 AND s.config_hash = $2 AND m.name = $3 AND t.hash = $4 AND c.sha = $5",
                )
                .bind(&k.scenario)
                .bind(&k.config_hash)
                .bind(&k.measure)
                .bind(&k.testbed)
                .bind(&a.commit)
                .fetch_optional(&mut *tx)
                .await?;
                let Some((scenario, measure, testbed, commit)) = ids else {
                    return Err(StoreError::Invalid {
                        field: "alert".into(),
                        reason: format!(
                            "no stored series {}/{} on testbed {} with commit {}",
                            k.scenario, k.measure, k.testbed, a.commit
                        ),
                    });
                };
                let now = now_ms();
                let direction = if a.regression { "regression" } else { "improvement" };
                sqlx::query(
                    "INSERT INTO alerts (scenario_id, measure_id, testbed_id, branch, commit_id, state, \
                     direction, before_value, after_value, change_pct, p_value, created_at, updated_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
                     ON CONFLICT (scenario_id, measure_id, testbed_id, branch, commit_id) DO UPDATE SET \
                     state = excluded.state, direction = excluded.direction, \
                     before_value = excluded.before_value, after_value = excluded.after_value, \
                     change_pct = excluded.change_pct, p_value = excluded.p_value, \
                     updated_at = excluded.updated_at",
                )
                .bind(scenario)
                .bind(measure)
                .bind(testbed)
                .bind(&k.branch)
                .bind(commit)
                .bind(a.state.as_str())
                .bind(direction)
                .bind(a.before)
                .bind(a.after)
                .bind(a.change_pct)
                .bind(a.p_value)
                .bind(now)
                .execute(&mut *tx)
                .await?;
                let id: i64 = sqlx::query_scalar(
                    "SELECT id FROM alerts WHERE scenario_id = $1 AND measure_id = $2 AND testbed_id = $3 \
                     AND branch = $4 AND commit_id = $5",
                )
                .bind(scenario)
                .bind(measure)
                .bind(testbed)
                .bind(&k.branch)
                .bind(commit)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(id)
            }

            pub(crate) async fn alerts(pool: &Pool, state: Option<AlertState>) -> Result<Vec<Alert>> {
                let mut q: QueryBuilder<Db> = QueryBuilder::new(ALERT_SELECT);
                if let Some(state) = state {
                    q.push(" WHERE a.state = ");
                    q.push_bind(state.as_str());
                }
                q.push(" ORDER BY c.ordinal, a.id");
                let rows: Vec<AlertRow> = q.build_query_as().fetch_all(pool).await?;
                rows.into_iter().map(AlertRow::into_alert).collect()
            }

            pub(crate) async fn alert(pool: &Pool, id: i64) -> Result<Alert> {
                let mut q: QueryBuilder<Db> = QueryBuilder::new(ALERT_SELECT);
                q.push(" WHERE a.id = ");
                q.push_bind(id);
                let row: Option<AlertRow> = q.build_query_as().fetch_optional(pool).await?;
                row.ok_or(StoreError::UnknownAlert(id))?.into_alert()
            }

            /// A group over the commit range `first..=last` holding `alerts`; returns its id.
            pub(crate) async fn group_alerts(pool: &Pool, alerts: &[i64], first: &str, last: &str) -> Result<i64> {
                let mut tx = pool.begin_with(BEGIN).await?;
                let mut commit = async |sha: &str| -> Result<i64> {
                    let id: Option<i64> = sqlx::query_scalar("SELECT id FROM commits WHERE sha = $1")
                        .bind(sha)
                        .fetch_optional(&mut *tx)
                        .await?;
                    id.ok_or_else(|| StoreError::Invalid {
                        field: "alert group commit".into(),
                        reason: format!("unknown commit {sha}"),
                    })
                };
                let first = commit(first).await?;
                let last = commit(last).await?;
                let group: i64 = sqlx::query_scalar(
                    "INSERT INTO alert_groups (first_commit_id, last_commit_id, created_at) \
                     VALUES ($1, $2, $3) RETURNING id",
                )
                .bind(first)
                .bind(last)
                .bind(now_ms())
                .fetch_one(&mut *tx)
                .await?;
                for &alert in alerts {
                    let done = sqlx::query("UPDATE alerts SET group_id = $1 WHERE id = $2")
                        .bind(group)
                        .bind(alert)
                        .execute(&mut *tx)
                        .await?;
                    if done.rows_affected() == 0 {
                        return Err(StoreError::UnknownAlert(alert));
                    }
                }
                tx.commit().await?;
                Ok(group)
            }

            pub(crate) async fn annotate(
                pool: &Pool,
                commit: Option<&str>,
                run: Option<i64>,
                text: &str,
            ) -> Result<i64> {
                let mut tx = pool.begin_with(BEGIN).await?;
                let commit_id = match commit {
                    None => None,
                    Some(sha) => {
                        let id: Option<i64> = sqlx::query_scalar("SELECT id FROM commits WHERE sha = $1")
                            .bind(sha)
                            .fetch_optional(&mut *tx)
                            .await?;
                        Some(id.ok_or_else(|| StoreError::Invalid {
                            field: "annotation commit".into(),
                            reason: format!("unknown commit {sha}"),
                        })?)
                    }
                };
                if let Some(run) = run {
                    let found: Option<i64> = sqlx::query_scalar("SELECT id FROM runs WHERE id = $1")
                        .bind(run)
                        .fetch_optional(&mut *tx)
                        .await?;
                    if found.is_none() {
                        return Err(StoreError::UnknownRun(run));
                    }
                }
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO annotations (commit_id, run_id, text, created_at) VALUES ($1, $2, $3, $4) \
                     RETURNING id",
                )
                .bind(commit_id)
                .bind(run)
                .bind(text)
                .bind(now_ms())
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(id)
            }

            pub(crate) async fn annotations(pool: &Pool) -> Result<Vec<Annotation>> {
                Ok(sqlx::query_as(
                    "SELECT a.id, c.sha, a.run_id, a.text, a.created_at FROM annotations a \
                     LEFT JOIN commits c ON c.id = a.commit_id ORDER BY a.id",
                )
                .fetch_all(pool)
                .await?)
            }

            pub(crate) async fn triage(
                pool: &Pool,
                alert: i64,
                action: &str,
                note: &str,
                author: Option<&str>,
            ) -> Result<i64> {
                let mut tx = pool.begin_with(BEGIN).await?;
                let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM alerts WHERE id = $1")
                    .bind(alert)
                    .fetch_optional(&mut *tx)
                    .await?;
                if exists.is_none() {
                    return Err(StoreError::UnknownAlert(alert));
                }
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO triage_events (alert_id, action, note, author, created_at) \
                     VALUES ($1, $2, $3, $4, $5) RETURNING id",
                )
                .bind(alert)
                .bind(action)
                .bind(note)
                .bind(author)
                .bind(now_ms())
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Ok(id)
            }

            pub(crate) async fn triage_history(pool: &Pool, alert: i64) -> Result<Vec<TriageEvent>> {
                Ok(sqlx::query_as(
                    "SELECT id, alert_id, action, note, author, created_at FROM triage_events \
                     WHERE alert_id = $1 ORDER BY id",
                )
                .bind(alert)
                .fetch_all(pool)
                .await?)
            }

            pub(crate) async fn run_ids(pool: &Pool) -> Result<Vec<i64>> {
                Ok(sqlx::query_scalar("SELECT id FROM runs ORDER BY id").fetch_all(pool).await?)
            }

            /// Write one exported run in one transaction: all of it or, on error, nothing.
            /// `false` when its idempotency key is already stored (nothing written).
            pub(crate) async fn import_record(pool: &Pool, rec: &RunRecord) -> Result<bool> {
                let mut tx = pool.begin_with(BEGIN).await?;
                if key_exists(&mut tx, &rec.run.idempotency_key).await? {
                    return Ok(false);
                }
                let info = RunInfo {
                    commit: rec.run.commit.clone(),
                    branch: rec.run.branch.clone(),
                    trigger: rec.run.trigger.clone(),
                    environment: rec.run.environment.clone(),
                    idempotency_key: rec.run.idempotency_key.clone(),
                    testbed: rec.run.testbed.clone(),
                };
                let preserve = Preserve {
                    started_at: Some(rec.run.started_at),
                };
                let id = begin_run_in(&mut tx, &info, preserve).await?.id();
                for s in &rec.scenarios {
                    record_in(&mut tx, id, &s.scenario, &s.values, &s.histograms).await?;
                }
                if rec.run.status != RunStatus::Running {
                    finish_in(&mut tx, id, rec.run.status, rec.run.finished_at).await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            /// `UnknownStudy` unless a study has this id.
            async fn ensure_study(conn: &mut Conn, study: i64) -> Result<()> {
                let exists: Option<i64> = sqlx::query_scalar("SELECT id FROM studies WHERE id = $1")
                    .bind(study)
                    .fetch_optional(&mut *conn)
                    .await?;
                match exists {
                    Some(_) => Ok(()),
                    None => Err(StoreError::UnknownStudy(study)),
                }
            }

            pub(crate) async fn create_study(pool: &Pool, info: &StudyInfo) -> Result<i64> {
                let mut tx = pool.begin_with(BEGIN).await?;
                let scenario = match &info.scenario {
                    Some(s) => Some(scenario_id(&mut tx, s).await?),
                    None => None,
                };
                let id: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO studies (name, scenario_id, objective, search_space, status, created_at) \
                     VALUES ($1, $2, $3, $4, 'running', $5) ON CONFLICT (name) DO NOTHING RETURNING id",
                )
                .bind(&info.name)
                .bind(scenario)
                .bind(&info.objective)
                .bind(info.search_space.to_string())
                .bind(now_ms())
                .fetch_optional(&mut *tx)
                .await?;
                let Some(id) = id else {
                    let existing: i64 = sqlx::query_scalar("SELECT id FROM studies WHERE name = $1")
                        .bind(&info.name)
                        .fetch_one(&mut *tx)
                        .await?;
                    return Err(StoreError::StudyExists { name: info.name.clone(), id: existing });
                };
                tx.commit().await?;
                Ok(id)
            }

            pub(crate) async fn open_study(
                pool: &Pool,
                info: &StudyInfo,
                settings: &serde_json::Value,
            ) -> Result<(Study, bool)> {
                let mut tx = pool.begin_with(BEGIN).await?;
                let scenario = match &info.scenario {
                    Some(s) => Some(scenario_id(&mut tx, s).await?),
                    None => None,
                };
                // The unique index on `name` settles a race: the loser inserts nothing (on
                // PostgreSQL after waiting for the winner to commit) and reads the winner's row.
                let created: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO studies (name, scenario_id, objective, search_space, settings, status, \
                     created_at) VALUES ($1, $2, $3, $4, $5, 'running', $6) \
                     ON CONFLICT (name) DO NOTHING RETURNING id",
                )
                .bind(&info.name)
                .bind(scenario)
                .bind(&info.objective)
                .bind(info.search_space.to_string())
                .bind(settings.to_string())
                .bind(now_ms())
                .fetch_optional(&mut *tx)
                .await?;
                let row: StudyRow = sqlx::query_as(concat!("SELECT ", study_columns!(), " FROM studies WHERE name = $1"))
                    .bind(&info.name)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok((row.into_study()?, created.is_some()))
            }

            pub(crate) async fn study_by_name(pool: &Pool, name: &str) -> Result<Option<Study>> {
                let row: Option<StudyRow> =
                    sqlx::query_as(concat!("SELECT ", study_columns!(), " FROM studies WHERE name = $1"))
                        .bind(name)
                        .fetch_optional(pool)
                        .await?;
                row.map(StudyRow::into_study).transpose()
            }

            pub(crate) async fn study(pool: &Pool, id: i64) -> Result<Study> {
                let row: Option<StudyRow> =
                    sqlx::query_as(concat!("SELECT ", study_columns!(), " FROM studies WHERE id = $1"))
                        .bind(id)
                        .fetch_optional(pool)
                        .await?;
                row.ok_or(StoreError::UnknownStudy(id))?.into_study()
            }

            pub(crate) async fn studies(pool: &Pool) -> Result<Vec<StudySummary>> {
                let rows: Vec<StudySummaryRow> = sqlx::query_as(
                    "SELECT s.id, s.name, s.status, s.created_at, s.finished_at, \
                     COUNT(t.id) FILTER (WHERE t.status = 'pending') AS pending, \
                     COUNT(t.id) FILTER (WHERE t.status = 'running') AS running, \
                     COUNT(t.id) FILTER (WHERE t.status = 'completed') AS completed, \
                     COUNT(t.id) FILTER (WHERE t.status = 'failed') AS failed, \
                     COUNT(t.id) FILTER (WHERE t.status = 'pruned') AS pruned, \
                     COUNT(t.id) FILTER (WHERE t.status = 'infeasible') AS infeasible \
                     FROM studies s LEFT JOIN trials t ON t.study_id = s.id \
                     GROUP BY s.id, s.name, s.status, s.created_at, s.finished_at ORDER BY s.id",
                )
                .fetch_all(pool)
                .await?;
                rows.into_iter().map(StudySummaryRow::into_summary).collect()
            }

            pub(crate) async fn finish_study(pool: &Pool, study: i64, status: RunStatus) -> Result<()> {
                let done = sqlx::query("UPDATE studies SET status = $1, finished_at = $2 WHERE id = $3")
                    .bind(status.as_str())
                    .bind(now_ms())
                    .bind(study)
                    .execute(pool)
                    .await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::UnknownStudy(study));
                }
                Ok(())
            }

            /// Insert a trial numbered one past the study's largest, each attempt in its own
            /// transaction. `None` when `t.key` is already in the study (nothing written). A
            /// clash on the number (a concurrent inserter took it first; possible on
            /// PostgreSQL, where inserters do not wait for each other until they collide)
            /// writes nothing and tries the next number, at most `INSERT_ATTEMPTS` times.
            async fn insert_trial(pool: &Pool, study: i64, t: &TrialInsert<'_>) -> Result<Option<TrialRow>> {
                for _ in 0..INSERT_ATTEMPTS {
                    let mut tx = pool.begin_with(BEGIN).await?;
                    ensure_study(&mut tx, study).await?;
                    let max: Option<i64> = sqlx::query_scalar("SELECT MAX(number) FROM trials WHERE study_id = $1")
                        .bind(study)
                        .fetch_one(&mut *tx)
                        .await?;
                    let now = now_ms();
                    let row: Option<TrialRow> = sqlx::query_as(concat!(
                        "INSERT INTO trials (study_id, number, config, predicted, status, error, started_at, \
                         finished_at, trial_key, params) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                         ON CONFLICT DO NOTHING RETURNING ",
                        trial_columns!()
                    ))
                    .bind(study)
                    .bind(max.map_or(0, |n| n + 1))
                    .bind(t.config.to_string())
                    .bind(t.predicted.map(|p| p.to_string()))
                    .bind(t.status.as_str())
                    .bind(t.error)
                    .bind(now)
                    .bind(t.status.is_finished().then_some(now))
                    .bind(t.key)
                    .bind(t.params.map(|p| p.to_string()))
                    .fetch_optional(&mut *tx)
                    .await?;
                    if let Some(row) = row {
                        tx.commit().await?;
                        return Ok(Some(row));
                    }
                    if let Some(key) = t.key {
                        let taken: Option<i64> =
                            sqlx::query_scalar("SELECT id FROM trials WHERE study_id = $1 AND trial_key = $2")
                                .bind(study)
                                .bind(key)
                                .fetch_optional(&mut *tx)
                                .await?;
                        if taken.is_some() {
                            tx.rollback().await?;
                            return Ok(None);
                        }
                    }
                    tx.rollback().await?;
                }
                Err(StoreError::TrialNumberContention { study, attempts: INSERT_ATTEMPTS })
            }

            pub(crate) async fn begin_trial(
                pool: &Pool,
                study: i64,
                config: &serde_json::Value,
                predicted: Option<&serde_json::Value>,
            ) -> Result<Trial> {
                let insert = TrialInsert {
                    key: None,
                    params: None,
                    config,
                    predicted,
                    status: TrialStatus::Running,
                    error: None,
                };
                // Without a key only the number can clash, and that is retried: a row or an error.
                match insert_trial(pool, study, &insert).await? {
                    Some(row) => row.into_trial(),
                    None => Err(StoreError::TrialNumberContention { study, attempts: INSERT_ATTEMPTS }),
                }
            }

            pub(crate) async fn enqueue_trial(pool: &Pool, study: i64, trial: &NewTrial) -> Result<Option<Trial>> {
                let insert = TrialInsert::new(trial, TrialStatus::Pending, None);
                insert_trial(pool, study, &insert).await?.map(TrialRow::into_trial).transpose()
            }

            pub(crate) async fn record_infeasible(
                pool: &Pool,
                study: i64,
                trial: &NewTrial,
                reason: &str,
            ) -> Result<Option<Trial>> {
                let insert = TrialInsert::new(trial, TrialStatus::Infeasible, Some(reason));
                insert_trial(pool, study, &insert).await?.map(TrialRow::into_trial).transpose()
            }

            pub(crate) async fn claim_trial(pool: &Pool, study: i64, worker: &str) -> Result<Option<Trial>> {
                let mut tx = pool.begin_with(BEGIN).await?;
                ensure_study(&mut tx, study).await?;
                let row: Option<TrialRow> = sqlx::query_as(CLAIM)
                    .bind(study)
                    .bind(worker)
                    .bind(now_ms())
                    .fetch_optional(&mut *tx)
                    .await?;
                tx.commit().await?;
                row.map(TrialRow::into_trial).transpose()
            }

            pub(crate) async fn finish_trial(
                pool: &Pool,
                trial: i64,
                worker: Option<&str>,
                outcome: &TrialOutcome,
            ) -> Result<()> {
                if !outcome.status.is_finished() {
                    return Err(StoreError::Invalid {
                        field: "trial status".into(),
                        reason: format!("trial {trial} cannot finish as {}", outcome.status),
                    });
                }
                let mut tx = pool.begin_with(BEGIN).await?;
                // The status (and worker) test in the UPDATE is what keeps a stale worker from
                // finishing a trial that was requeued or claimed again since.
                let done = sqlx::query(
                    "UPDATE trials SET status = $1, measured = $2, error = $3, run_id = $4, finished_at = $5, \
                     predicted = COALESCE($8, predicted) \
                     WHERE id = $6 AND status = 'running' AND ($7 IS NULL OR worker = $7)",
                )
                .bind(outcome.status.as_str())
                .bind(outcome.measured.as_ref().map(|m| m.to_string()))
                .bind(outcome.error.as_deref())
                .bind(outcome.run)
                .bind(now_ms())
                .bind(trial)
                .bind(worker)
                .bind(outcome.predicted.as_ref().map(|m| m.to_string()))
                .execute(&mut *tx)
                .await?;
                if done.rows_affected() == 1 {
                    tx.commit().await?;
                    return Ok(());
                }
                let found: Option<(i64, i64, String, Option<String>)> =
                    sqlx::query_as("SELECT study_id, number, status, worker FROM trials WHERE id = $1")
                        .bind(trial)
                        .fetch_optional(&mut *tx)
                        .await?;
                tx.rollback().await?;
                let Some((study, number, status, held_by)) = found else {
                    return Err(StoreError::UnknownTrial(trial));
                };
                match worker {
                    Some(worker) if status == TrialStatus::Running.as_str() => {
                        Err(StoreError::TrialClaimedElsewhere {
                            id: trial,
                            study,
                            number,
                            worker: worker.to_string(),
                            held_by,
                        })
                    }
                    _ => Err(StoreError::TrialNotRunning { id: trial, study, number, status }),
                }
            }

            pub(crate) async fn requeue_trials(pool: &Pool, study: i64, workers: &[String]) -> Result<u64> {
                let mut tx = pool.begin_with(BEGIN).await?;
                ensure_study(&mut tx, study).await?;
                let mut requeued = 0;
                for worker in workers {
                    let done = sqlx::query(
                        "UPDATE trials SET status = 'pending', worker = NULL \
                         WHERE study_id = $1 AND status = 'running' AND worker = $2",
                    )
                    .bind(study)
                    .bind(worker)
                    .execute(&mut *tx)
                    .await?;
                    requeued += done.rows_affected();
                }
                tx.commit().await?;
                Ok(requeued)
            }

            pub(crate) async fn trials(pool: &Pool, study: i64) -> Result<Vec<Trial>> {
                let rows: Vec<TrialRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    trial_columns!(),
                    " FROM trials WHERE study_id = $1 ORDER BY number"
                ))
                .bind(study)
                .fetch_all(pool)
                .await?;
                rows.into_iter().map(TrialRow::into_trial).collect()
            }

            pub(crate) async fn running_trials(pool: &Pool, study: i64) -> Result<Vec<Trial>> {
                let rows: Vec<TrialRow> = sqlx::query_as(concat!(
                    "SELECT ",
                    trial_columns!(),
                    " FROM trials WHERE study_id = $1 AND status = 'running' ORDER BY number"
                ))
                .bind(study)
                .fetch_all(pool)
                .await?;
                rows.into_iter().map(TrialRow::into_trial).collect()
            }

            async fn key_exists(conn: &mut Conn, key: &str) -> Result<bool> {
                let found: Option<i64> = sqlx::query_scalar("SELECT id FROM runs WHERE idempotency_key = $1")
                    .bind(key)
                    .fetch_optional(&mut *conn)
                    .await?;
                Ok(found.is_some())
            }

            pub(crate) async fn run_record(pool: &Pool, run: i64) -> Result<RunRecord> {
                let mut q: QueryBuilder<Db> = QueryBuilder::new(RUN_SELECT);
                q.push(" WHERE r.id = ");
                q.push_bind(run);
                let row: Option<RunRow> = q.build_query_as().fetch_optional(pool).await?;
                let Some(row) = row else {
                    return Err(StoreError::UnknownRun(run));
                };
                let summary = row.into_summary()?;
                let scenarios: Vec<ScenarioRow> = sqlx::query_as(
                    "SELECT s.id, s.name, s.model, s.workload, s.config_hash, s.config FROM scenarios s \
                     WHERE s.id IN (SELECT scenario_id FROM metric_values WHERE run_id = $1 \
                     UNION SELECT scenario_id FROM histograms WHERE run_id = $1) ORDER BY s.id",
                )
                .bind(run)
                .fetch_all(pool)
                .await?;
                let values: Vec<ValueRow> = sqlx::query_as(
                    "SELECT mv.scenario_id, m.name, m.unit, m.family, m.lower_is_better, mv.value, \
                     mv.lower_bound, mv.upper_bound, mv.n, rs.data FROM metric_values mv \
                     JOIN measures m ON m.id = mv.measure_id \
                     LEFT JOIN raw_samples rs ON rs.metric_value_id = mv.id \
                     WHERE mv.run_id = $1 ORDER BY mv.id",
                )
                .bind(run)
                .fetch_all(pool)
                .await?;
                let histograms: Vec<HistogramRow> = sqlx::query_as(
                    "SELECT scenario_id, name, data FROM histograms WHERE run_id = $1 ORDER BY id",
                )
                .bind(run)
                .fetch_all(pool)
                .await?;
                let mut out = Vec::with_capacity(scenarios.len());
                for s in scenarios {
                    let mut vals = Vec::new();
                    for v in values.iter().filter(|v| v.scenario_id == s.id) {
                        let samples = match &v.data {
                            None => Vec::new(),
                            Some(bytes) => samples_from_bytes(bytes).ok_or_else(|| StoreError::Corrupt {
                                what: format!("raw samples of {} in run {run}", v.name),
                                reason: format!("{} bytes is not a whole number of f64", bytes.len()),
                            })?,
                        };
                        vals.push(MetricValue {
                            measure: v.name.clone(),
                            unit: v.unit.clone(),
                            family: v.family.clone(),
                            lower_is_better: v.lower_is_better,
                            value: v.value,
                            lower: v.lower_bound,
                            upper: v.upper_bound,
                            n: v.n,
                            samples,
                        });
                    }
                    let hists = histograms
                        .iter()
                        .filter(|h| h.scenario_id == s.id)
                        .map(|h| Histogram {
                            name: h.name.clone(),
                            data: h.data.clone(),
                        })
                        .collect();
                    out.push(ScenarioResult {
                        scenario: Scenario {
                            name: s.name,
                            model: s.model,
                            workload: s.workload,
                            config_hash: s.config_hash,
                            config: s.config,
                        },
                        values: vals,
                        histograms: hists,
                    });
                }
                Ok(RunRecord {
                    run: summary,
                    scenarios: out,
                })
            }
        }
    };
}

backend!(sqlite, sqlx::Sqlite, "BEGIN IMMEDIATE", "SELECT 1", "");
backend!(
    postgres,
    sqlx::Postgres,
    "BEGIN",
    "LOCK TABLE commits IN SHARE ROW EXCLUSIVE MODE",
    " FOR UPDATE SKIP LOCKED"
);
