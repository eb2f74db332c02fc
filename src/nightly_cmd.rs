//! `dyno nightly`: run a suite, record one run, detect regressions in every series it touched,
//! print (and write) the markdown summary. Exit 0, 1 on an open confirmed regression, 2 on an
//! error (a failed scenario included).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use dyno_harness::nightly::{
    NightlyOptions, prepare_file, run_suite, started_by_dead_local_process,
};
use dyno_harness::provenance::{GitInfo, GitOverrides, Machine};
use dyno_harness::recording::config_hash;
use dyno_results::analyze::analyze_run;
use dyno_results::store::{BeginRun, RunStatus, Store};
use dyno_results::summary::{ScenarioFailure, render_summary};

use crate::record_args::{DbArgs, short};

/// Arguments of `dyno nightly`.
#[derive(Debug, Args)]
pub struct NightlyArgs {
    /// The suite: scenarios (model, engine config, workload, load level) and kernel shapes.
    #[arg(long, default_value = "workloads/nightly.yaml")]
    pub suite: PathBuf,
    /// Also write the markdown summary to this file (e.g. $GITHUB_STEP_SUMMARY).
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// The results database.
    #[command(flatten)]
    pub db: DbArgs,
    /// The commit measured [default: HEAD of the working tree].
    #[arg(long, value_name = "SHA")]
    pub commit: Option<String>,
    /// The branch measured [default: the working tree's current branch].
    #[arg(long, value_name = "NAME")]
    pub branch: Option<String>,
    /// What started the run, as stored.
    #[arg(long, default_value = "nightly")]
    pub trigger: String,
    /// Unique per logical run [default: trigger, branch, commit, machine and suite]: a rerun
    /// with the key of a completed run measures nothing and reports the stored one.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
    /// A load run is invalid (its scenario fails) when its p99 send lag exceeds this, ms.
    #[arg(long, default_value_t = 10.0)]
    pub max_lag_ms: f64,
    /// Time budget per kernel variant, milliseconds.
    #[arg(long, default_value_t = 200)]
    pub kernel_budget_ms: u64,
}

/// Runs `dyno nightly`.
pub fn run_nightly(a: NightlyArgs) -> Result<ExitCode> {
    let suite = prepare_file(&a.suite)?;
    let suite_text = std::fs::read_to_string(&a.suite)
        .with_context(|| format!("reading {}", a.suite.display()))?;
    let cwd = std::env::current_dir().context("reading the working directory")?;
    let git = GitInfo::detect(&cwd, &GitOverrides { commit: a.commit, branch: a.branch })?;
    let machine = Machine::detect();
    let key = a.idempotency_key.clone().unwrap_or_else(|| {
        format!(
            "{}:{}:{}:{}:{}",
            a.trigger,
            git.branch,
            git.commit.sha,
            machine.testbed.hash(),
            config_hash(&suite_text)
        )
    });
    let opts = NightlyOptions {
        kernel_budget: Duration::from_millis(a.kernel_budget_ms),
        max_lag_s: a.max_lag_ms / 1e3,
        ..NightlyOptions::default()
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let store = a.db.open().await?;
        settle_abandoned_runs(&store).await?;
        let info = machine.run_info(&git, &a.trigger, key);
        let (run, failures) = match store.begin_run(&info).await? {
            BeginRun::AlreadyRecorded(id) => {
                eprintln!(
                    "run {id} already recorded this suite at {} (same idempotency key); \
                     reporting it without measuring (pass --idempotency-key to measure again)",
                    short(&git.commit.sha)
                );
                (id, Vec::new())
            }
            BeginRun::Started(id) => {
                eprintln!(
                    "dyno nightly: run {id}, {} on {}, into {}",
                    short(&git.commit.sha),
                    git.branch,
                    a.db.shown()
                );
                (id, measure(&store, id, &suite, &opts).await?)
            }
        };
        let analysis = analyze_run(&store, run).await?;
        let record = store.run_record(run).await?;
        let summary = render_summary(&record, &analysis, &failures);
        print!("{summary}");
        if let Some(path) = &a.summary {
            std::fs::write(path, &summary)
                .with_context(|| format!("writing the summary to {}", path.display()))?;
        }
        store.close().await;
        Ok(if !failures.is_empty() || record.run.status != RunStatus::Completed {
            ExitCode::from(2)
        } else if !analysis.open_regressions.is_empty() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
    })
}

/// Runs the suite into run `run` and finishes it: completed, partial when a scenario failed,
/// failed when none recorded. An interrupt (SIGINT, SIGTERM) marks the run failed and stops.
async fn measure(
    store: &Store,
    run: i64,
    suite: &dyno_harness::nightly::PreparedSuite,
    opts: &NightlyOptions,
) -> Result<Vec<ScenarioFailure>> {
    let outcome = tokio::select! {
        outcome = run_suite(store, run, suite, opts, |line| eprintln!("{line}")) => outcome,
        signal = interrupted() => {
            store.finish_run(run, RunStatus::Failed).await?;
            anyhow::bail!("interrupted by {signal}: run {run} marked failed");
        }
    };
    let outcome = match outcome {
        Ok(o) => o,
        Err(e) => {
            // The store failed mid-run: try to mark the run failed; it may be unreachable.
            let _ = store.finish_run(run, RunStatus::Failed).await;
            return Err(e.into());
        }
    };
    let status = match (outcome.recorded.is_empty(), outcome.failures.is_empty()) {
        (_, true) => RunStatus::Completed,
        (true, false) => RunStatus::Failed,
        (false, false) => RunStatus::Partial,
    };
    store.finish_run(run, status).await?;
    Ok(outcome.failures)
}

/// Resolves when the process is asked to stop; names the signal.
async fn interrupted() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "SIGINT",
                _ = term.recv() => "SIGTERM",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}

/// Marks failed the runs left `running` by killed processes: those started on this host by a
/// process that no longer exists, and any started more than a day ago.
async fn settle_abandoned_runs(store: &Store) -> Result<()> {
    for r in store.runs(500).await? {
        if r.status == RunStatus::Running && started_by_dead_local_process(&r) {
            store.finish_run(r.id, RunStatus::Failed).await?;
            eprintln!("run {} was left running by a process that died: marked failed", r.id);
        }
    }
    let stale = store.mark_stale_runs_failed(Duration::from_secs(24 * 3600)).await?;
    if stale > 0 {
        eprintln!("{stale} run(s) left running for over a day: marked failed");
    }
    Ok(())
}
