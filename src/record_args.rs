//! The results-database arguments shared by every command that reads or writes results, and
//! the recording step of the commands that measure (`dyno load`, `dyno kernels bench`,
//! `dyno ingest criterion`).

use anyhow::{Context, Result};
use clap::Args;
use dyno_harness::provenance::{GitInfo, GitOverrides, Machine, fresh_idempotency_key};
use dyno_results::store::{BeginRun, ScenarioResult, Store, redact_url};

/// Which results database: `--db URL` or `$DYNO_DB`, else `dyno.sqlite` here.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// Results database: `postgres://...`, `sqlite://PATH` or a file path [default: $DYNO_DB,
    /// else dyno.sqlite in the working directory, created on first use].
    #[arg(
        long,
        env = "DYNO_DB",
        value_name = "URL",
        default_value = "",
        hide_default_value = true
    )]
    pub db: String,
}

impl DbArgs {
    /// The URL as shown to people (password redacted, the default file named).
    pub fn shown(&self) -> String {
        if self.db.is_empty() {
            dyno_results::store::DEFAULT_SQLITE_FILE.to_string()
        } else {
            redact_url(&self.db)
        }
    }

    /// Opens (creating and migrating if needed) the database.
    pub async fn open(&self) -> Result<Store> {
        Ok(Store::open(&self.db).await?)
    }
}

/// Where a measuring command records its results, and under which commit.
#[derive(Debug, Clone, Args)]
pub struct RecordArgs {
    /// The results database.
    #[command(flatten)]
    pub db: DbArgs,
    /// Do not record the results anywhere.
    #[arg(long, conflicts_with_all = ["commit", "branch"])]
    pub no_db: bool,
    /// The commit measured [default: HEAD of the working tree].
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// The branch measured [default: the working tree's current branch].
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,
}

/// A results database opened and a commit resolved before measuring, so that a bad `--db` or
/// a missing commit fails at once rather than after a long measurement.
pub struct Recorder {
    store: Store,
    shown: String,
    git: GitInfo,
    machine: Machine,
}

impl RecordArgs {
    /// Resolves the commit and opens the database; `None` with `--no-db`.
    pub async fn prepare(&self) -> Result<Option<Recorder>> {
        if self.no_db {
            return Ok(None);
        }
        let overrides = GitOverrides { commit: self.commit.clone(), branch: self.branch.clone() };
        let cwd = std::env::current_dir().context("reading the working directory")?;
        let git = GitInfo::detect(&cwd, &overrides)?;
        let store = self.db.open().await?;
        Ok(Some(Recorder { store, shown: self.db.shown(), git, machine: Machine::detect() }))
    }
}

impl Recorder {
    /// The commit and branch results are recorded under.
    pub fn git(&self) -> &GitInfo {
        &self.git
    }

    /// Records `scenarios` as one completed run started by `trigger` (`manual`, ...), with the
    /// given idempotency key or a fresh one for `kind`; prints where it went.
    pub async fn record(
        &self,
        kind: &str,
        trigger: &str,
        idempotency_key: Option<String>,
        scenarios: &[ScenarioResult],
    ) -> Result<i64> {
        let key = idempotency_key.unwrap_or_else(|| fresh_idempotency_key(kind, &self.git));
        let info = self.machine.run_info(&self.git, trigger, key);
        let outcome = self
            .store
            .record_run(&info, scenarios)
            .await
            .with_context(|| format!("recording results into {}", self.shown))?;
        match outcome {
            BeginRun::Started(id) => {
                eprintln!("recorded run {id} ({}) in {}", short(&self.git.commit.sha), self.shown)
            }
            BeginRun::AlreadyRecorded(id) => eprintln!(
                "already recorded as run {id} in {} (same idempotency key): nothing written",
                self.shown
            ),
        }
        Ok(outcome.id())
    }

    /// The open store.
    pub fn store(&self) -> &Store {
        &self.store
    }
}

/// Runs `future` to completion on a new single-threaded runtime (for commands that are
/// synchronous apart from their database work).
pub fn block_on<F: std::future::Future>(future: F) -> Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(runtime.block_on(future))
}

/// The first 10 characters of a commit hash.
pub fn short(sha: &str) -> &str {
    sha.get(..10).unwrap_or(sha)
}
