//! The results store: runs, their metric values, raw samples and histograms, in SQLite (the
//! default, a file created on first use) or PostgreSQL.
//!
//! One schema history lives in two directories, `migrations/sqlite` and `migrations/postgres`,
//! which differ only where the dialects do (id columns, BLOB vs BYTEA); a test keeps their
//! files, tables and columns in step. The files are compiled in and applied by sqlx's migrator
//! (see `migrations.rs`). Raw samples are stored as a blob of little-endian f64.
//! Only finished runs (completed, or partial: some scenarios failed, each recorded one whole)
//! contribute points to a series, so a run killed midway (left `running`, later marked
//! `failed`) never shows half its results.
//!
//! Tuning studies are shared through the database, Optuna-style: workers `open_study` by name
//! (get-or-create, the name is unique), queue trials (`enqueue_trial`, `pending`, unique per
//! study by the tuner's trial key) and `claim_trial` them one at a time (PostgreSQL: row locks
//! with SKIP LOCKED; SQLite: one writer at a time). Only a `running` trial can be finished,
//! and a resumed study puts the trials of its dead workers back with `requeue_trials`.

mod backend;
mod error;
mod migrations;
mod record;
mod row;
mod types;

use std::io::{BufRead, Write};
use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{ConnectOptions, Connection};

pub use error::{Result, StoreError, redact_url};
pub use types::{
    Alert, AlertInfo, AlertState, Annotation, BeginRun, CommitInfo, Histogram, ImportSummary,
    MetricValue, NewTrial, Point, RunInfo, RunRecord, RunStatus, RunSummary, Scenario,
    ScenarioResult, SeriesFilter, SeriesKey, SeriesPoint, Study, StudyInfo, StudySummary, Testbed,
    TriageEvent, Trial, TrialCounts, TrialOutcome, TrialStatus,
};

/// The SQLite file used when no URL is given.
pub const DEFAULT_SQLITE_FILE: &str = "dyno.sqlite";

/// An open, migrated results database.
#[derive(Debug, Clone)]
pub enum Store {
    /// A SQLite file (WAL mode, foreign keys on).
    Sqlite(sqlx::SqlitePool),
    /// A PostgreSQL database.
    Postgres(sqlx::PgPool),
}

macro_rules! dispatch {
    ($self:expr, $f:ident ( $($arg:expr),* )) => {
        match $self {
            Store::Sqlite(pool) => backend::sqlite::$f(pool, $($arg),*).await,
            Store::Postgres(pool) => backend::postgres::$f(pool, $($arg),*).await,
        }
    };
}

/// One line, for error messages.
fn one_line(e: &dyn std::fmt::Display) -> String {
    e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Store {
    /// Open (creating a SQLite file if needed) and migrate the database at `url`:
    /// `postgres://...` or `postgresql://...`, `sqlite://PATH`, `sqlite:PATH`, or a bare file
    /// path; an empty string means [`DEFAULT_SQLITE_FILE`] in the working directory.
    pub async fn open(url: &str) -> Result<Store> {
        let shown = redact_url(url);
        let connect_err = |e: &dyn std::fmt::Display| StoreError::Connect {
            url: shown.clone(),
            reason: one_line(e),
        };
        let migrate_err = |source| StoreError::Migrate { url: shown.clone(), source };
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(|e| connect_err(&e))?;
            // One direct connection first: a pool retries a refused connection until its
            // acquire timeout, and an unreachable server should fail at once.
            let probe = options.connect().await.map_err(|e| connect_err(&e))?;
            probe.close().await.map_err(|e| connect_err(&e))?;
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await
                .map_err(|e| connect_err(&e))?;
            migrations::POSTGRES.run(&pool).await.map_err(migrate_err)?;
            return Ok(Store::Postgres(pool));
        }
        let path = if let Some(p) = url.strip_prefix("sqlite://") {
            p
        } else if let Some(p) = url.strip_prefix("sqlite:") {
            p
        } else if url.contains("://") {
            return Err(StoreError::UnsupportedUrl { url: shown });
        } else {
            url
        };
        let path = if path.is_empty() { DEFAULT_SQLITE_FILE } else { path };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| connect_err(&e))?;
        migrations::SQLITE.run(&pool).await.map_err(migrate_err)?;
        Ok(Store::Sqlite(pool))
    }

    /// Which backend: `"sqlite"` or `"postgres"`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }

    /// Start a run. If a completed run has the same idempotency key, nothing is written and
    /// [`BeginRun::AlreadyRecorded`] names it; a failed or partial one with that key keeps its
    /// data under the key `KEY#attempt-ID` and a new run starts; a running one is an error.
    pub async fn begin_run(&self, info: &RunInfo) -> Result<BeginRun> {
        dispatch!(self, begin_run(info))
    }

    /// Record one scenario's metric values (with raw samples) and histograms into a running
    /// run, in one transaction: all of it or nothing.
    pub async fn record_scenario_result(
        &self,
        run: i64,
        scenario: &Scenario,
        values: &[MetricValue],
        histograms: &[Histogram],
    ) -> Result<()> {
        dispatch!(self, record_scenario_result(run, scenario, values, histograms))
    }

    /// Finish a running run as completed, failed or partial.
    pub async fn finish_run(&self, run: i64, status: RunStatus) -> Result<()> {
        dispatch!(self, finish_run(run, status))
    }

    /// Mark every run still `running` that started at least `older_than` ago as `failed`
    /// (its process died); returns how many.
    pub async fn mark_stale_runs_failed(&self, older_than: Duration) -> Result<u64> {
        let age = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        let before = backend::now_ms().saturating_sub(age);
        dispatch!(self, mark_stale_runs_failed(before))
    }

    /// A series' points from completed and partial runs, ordered by commit position (then run
    /// id).
    pub async fn series(&self, filter: &SeriesFilter) -> Result<Vec<Point>> {
        dispatch!(self, series(filter))
    }

    /// Every point of every series (completed and partial runs), grouped by series (scenario,
    /// config, measure, testbed, branch) and in commit order within each: the dashboard's
    /// overview reads the whole history in this one query.
    pub async fn all_series_points(&self) -> Result<Vec<SeriesPoint>> {
        dispatch!(self, all_series_points())
    }

    /// A value that changes whenever what a series overview shows can change: runs started or
    /// finished, alerts opened or moved on, triage steps, testbeds. Equal versions mean the
    /// same points, alerts and triage, so a reader may reuse what it computed from them.
    pub async fn content_version(&self) -> Result<Vec<i64>> {
        dispatch!(self, content_version())
    }

    /// Every testbed: its hash and its spec (JSON text), oldest first.
    pub async fn testbeds(&self) -> Result<Vec<(String, serde_json::Value)>> {
        let rows: Vec<(String, String)> = dispatch!(self, testbeds())?;
        rows.into_iter()
            .map(|(hash, spec)| {
                let spec = serde_json::from_str(&spec).map_err(|e| StoreError::Corrupt {
                    what: format!("testbed {hash} spec"),
                    reason: e.to_string(),
                })?;
                Ok((hash, spec))
            })
            .collect()
    }

    /// The series a run recorded values into, sorted by scenario and measure.
    pub async fn series_of_run(&self, run: i64) -> Result<Vec<SeriesKey>> {
        dispatch!(self, series_of_run(run))
    }

    /// The latest `limit` runs, newest first.
    pub async fn runs(&self, limit: usize) -> Result<Vec<RunSummary>> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        dispatch!(self, runs(limit))
    }

    /// Everything stored about one run.
    pub async fn run_record(&self, run: i64) -> Result<RunRecord> {
        dispatch!(self, run_record(run))
    }

    /// Write every run, oldest first, as one JSON object per line; returns how many.
    pub async fn export_jsonl<W: Write>(&self, mut out: W) -> Result<usize> {
        let ids = dispatch!(self, run_ids())?;
        for &id in &ids {
            let record = self.run_record(id).await?;
            serde_json::to_writer(&mut out, &record).map_err(std::io::Error::from)?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(ids.len())
    }

    /// Read runs written by [`Store::export_jsonl`]. Every line is parsed before anything is
    /// written (a malformed line names its number and stores nothing); each run is then
    /// written in its own transaction, and runs whose idempotency key is already stored are
    /// skipped, so importing twice does not duplicate.
    pub async fn import_jsonl<R: BufRead>(&self, input: R) -> Result<ImportSummary> {
        let mut records = Vec::new();
        for (i, line) in input.lines().enumerate() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let record: RunRecord = serde_json::from_str(&line)
                .map_err(|e| StoreError::Import { line: i + 1, reason: e.to_string() })?;
            records.push(record);
        }
        let mut summary = ImportSummary::default();
        for record in &records {
            if dispatch!(self, import_record(record))? {
                summary.imported += 1;
            } else {
                summary.skipped += 1;
            }
        }
        Ok(summary)
    }

    /// Create a tuning study (status `running`, no settings); returns its id. The name must be
    /// new ([`StoreError::StudyExists`] otherwise): use [`Store::open_study`] to resume one.
    pub async fn create_study(&self, info: &StudyInfo) -> Result<i64> {
        dispatch!(self, create_study(info))
    }

    /// The study named `info.name`, created (status `running`, with `info` and the tuner's
    /// `settings`) if there is none; `true` when this call created it. This is how a killed
    /// study resumes and how several workers join one: the name is unique, so processes racing
    /// to create it all get the same single study. An existing study keeps what it was created
    /// with; the caller compares its settings with its own.
    pub async fn open_study(
        &self,
        info: &StudyInfo,
        settings: &serde_json::Value,
    ) -> Result<(Study, bool)> {
        dispatch!(self, open_study(info, settings))
    }

    /// The study with this name, if any.
    pub async fn study_by_name(&self, name: &str) -> Result<Option<Study>> {
        dispatch!(self, study_by_name(name))
    }

    /// One study by id ([`StoreError::UnknownStudy`] when there is none).
    pub async fn study(&self, id: i64) -> Result<Study> {
        dispatch!(self, study(id))
    }

    /// Every study, oldest first, with its trial counts by status.
    pub async fn studies(&self) -> Result<Vec<StudySummary>> {
        dispatch!(self, studies())
    }

    /// Set a study's final status.
    pub async fn finish_study(&self, study: i64, status: RunStatus) -> Result<()> {
        dispatch!(self, finish_study(study, status))
    }

    /// Start the study's next trial (numbered 0, 1, ...) with its config and the tuner's
    /// prediction, `running` at once and claimed by no worker (a single-process tuner's path;
    /// shared studies use [`Store::enqueue_trial`] and [`Store::claim_trial`]).
    pub async fn begin_trial(
        &self,
        study: i64,
        config: &serde_json::Value,
        predicted: Option<&serde_json::Value>,
    ) -> Result<Trial> {
        dispatch!(self, begin_trial(study, config, predicted))
    }

    /// Queue a trial (status `pending`), numbered one past the study's largest, for any worker
    /// to claim. `None` when the study already has a trial with this `trial_key` (queued by
    /// someone else, or run before): nothing is written. Concurrent enqueuers never fail on a
    /// number clash: the loser retries with the next number, so numbers stay unique and
    /// contiguous.
    pub async fn enqueue_trial(&self, study: i64, trial: &NewTrial) -> Result<Option<Trial>> {
        dispatch!(self, enqueue_trial(study, trial))
    }

    /// Record a trial a constraint ruled out before running: inserted finished, as
    /// `infeasible`, with `reason` as its error, so the tuner never proposes it again. `None`
    /// when the key is already in the study (nothing written).
    pub async fn record_infeasible(
        &self,
        study: i64,
        trial: &NewTrial,
        reason: &str,
    ) -> Result<Option<Trial>> {
        dispatch!(self, record_infeasible(study, trial, reason))
    }

    /// Claim the study's lowest-numbered pending trial for `worker` (e.g. `host:pid`): it
    /// becomes `running` with `worker` and `started_at` set, in one atomic step, so two workers
    /// never get the same trial. `None` when nothing is pending.
    pub async fn claim_trial(&self, study: i64, worker: &str) -> Result<Option<Trial>> {
        dispatch!(self, claim_trial(study, worker))
    }

    /// Record how a running trial ended (completed, failed, pruned or infeasible). Only a
    /// `running` trial can finish: one that is pending (e.g. requeued) or already finished
    /// gives [`StoreError::TrialNotRunning`] and nothing changes, so a trial is finished once.
    pub async fn finish_trial(&self, trial: i64, outcome: &TrialOutcome) -> Result<()> {
        dispatch!(self, finish_trial(trial, None, outcome))
    }

    /// [`Store::finish_trial`] for a worker that claimed the trial: it must still be running
    /// on behalf of `worker`. A stale worker (presumed dead, its trial requeued and claimed
    /// again by another) gets [`StoreError::TrialClaimedElsewhere`] and changes nothing.
    pub async fn finish_claimed_trial(
        &self,
        trial: i64,
        worker: &str,
        outcome: &TrialOutcome,
    ) -> Result<()> {
        dispatch!(self, finish_trial(trial, Some(worker), outcome))
    }

    /// Put the study's running trials claimed by any of `workers` back to `pending` (worker
    /// cleared), for resuming after those workers were killed; returns how many.
    pub async fn requeue_trials(&self, study: i64, workers: &[String]) -> Result<u64> {
        dispatch!(self, requeue_trials(study, workers))
    }

    /// A study's trials by number.
    pub async fn trials(&self, study: i64) -> Result<Vec<Trial>> {
        dispatch!(self, trials(study))
    }

    /// A study's running (claimed, unfinished) trials by number.
    pub async fn running_trials(&self, study: i64) -> Result<Vec<Trial>> {
        dispatch!(self, running_trials(study))
    }

    /// Record what detection says about a change in a series at a commit: inserts the alert,
    /// or updates state and statistics of the existing one (e.g. provisional → confirmed).
    pub async fn upsert_alert(&self, alert: &AlertInfo) -> Result<i64> {
        dispatch!(self, upsert_alert(alert))
    }

    /// Alerts, optionally only those in one state, by commit position.
    pub async fn alerts(&self, state: Option<AlertState>) -> Result<Vec<Alert>> {
        dispatch!(self, alerts(state))
    }

    /// One alert by id ([`StoreError::UnknownAlert`] when there is none).
    pub async fn alert(&self, id: i64) -> Result<Alert> {
        dispatch!(self, alert(id))
    }

    /// Group alerts (typically one regression seen in several series) under the commit range
    /// `first..=last`, in one transaction; returns the group id.
    pub async fn group_alerts(&self, alerts: &[i64], first: &str, last: &str) -> Result<i64> {
        dispatch!(self, group_alerts(alerts, first, last))
    }

    /// Attach a note to a commit (by sha) and/or a run; returns its id.
    pub async fn annotate(
        &self,
        commit: Option<&str>,
        run: Option<i64>,
        text: &str,
    ) -> Result<i64> {
        dispatch!(self, annotate(commit, run, text))
    }

    /// Every annotation, oldest first.
    pub async fn annotations(&self) -> Result<Vec<Annotation>> {
        dispatch!(self, annotations())
    }

    /// Add a triage step (`acknowledged`, `fixed`, `invalid`, `improvement`, ...) to an
    /// alert's history; returns the event id.
    pub async fn triage(
        &self,
        alert: i64,
        action: &str,
        note: &str,
        author: Option<&str>,
    ) -> Result<i64> {
        dispatch!(self, triage(alert, action, note, author))
    }

    /// An alert's triage history, oldest first.
    pub async fn triage_history(&self, alert: i64) -> Result<Vec<TriageEvent>> {
        dispatch!(self, triage_history(alert))
    }

    /// Close the pool (waits for connections to be returned).
    pub async fn close(&self) {
        match self {
            Store::Sqlite(p) => p.close().await,
            Store::Postgres(p) => p.close().await,
        }
    }
}
