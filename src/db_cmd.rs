//! The results-database commands: `dyno db export|import|runs|seed-demo`, `dyno ingest criterion`,
//! `dyno alerts` and `dyno compare`. Parsing and printing only; the work is dyno-results'.

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use dyno_results::compare::{CompareConfig, compare};
use dyno_results::store::{AlertState, Store};
use dyno_results::tables::{
    AlertView, TriageAction, fmt_value, render_alert, render_alerts, render_runs, render_table,
};

use crate::record_args::{DbArgs, RecordArgs};

/// Arguments of `dyno db`.
#[derive(Debug, Args)]
pub struct DbCmdArgs {
    /// What to do with the results database.
    #[command(subcommand)]
    pub command: DbCommand,
}

/// `dyno db` subcommands.
#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Write every run (values, samples, histograms) as JSON lines, oldest first.
    Export(ExportArgs),
    /// Read runs written by `dyno db export`; runs already stored (same idempotency key) are
    /// skipped.
    Import(ImportArgs),
    /// List the latest runs, newest first.
    Runs(RunsArgs),
    /// Fill an empty results database with a year of made-up nightly history (planted
    /// regressions, alerts, triage, a tuning study): a demo and the dashboard's fixture.
    SeedDemo(SeedDemoArgs),
}

/// Arguments of `dyno db seed-demo`.
#[derive(Debug, Args)]
pub struct SeedDemoArgs {
    /// The results database to fill; it must hold no runs and no studies.
    #[command(flatten)]
    pub db: DbArgs,
    /// Nightly runs on main, one a day ending today (at least 30).
    #[arg(long, default_value_t = 365, value_name = "N")]
    pub days: usize,
    /// Seed of every made-up figure: the same seed gives the same history.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub seed: u64,
}

/// Arguments of `dyno db export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The results database to read.
    #[command(flatten)]
    pub db: DbArgs,
    /// Write to FILE (replaced only once the export is complete) instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

/// Arguments of `dyno db import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The results database to write.
    #[command(flatten)]
    pub db: DbArgs,
    /// A JSON-lines file from `dyno db export`, or `-` for stdin.
    #[arg(value_name = "FILE")]
    pub file: String,
}

/// Arguments of `dyno db runs`.
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// The results database to read.
    #[command(flatten)]
    pub db: DbArgs,
    /// How many runs to list.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: usize,
}

/// Arguments of `dyno ingest`.
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// What to ingest.
    #[command(subcommand)]
    pub command: IngestCommand,
}

/// `dyno ingest` subcommands.
#[derive(Debug, Subcommand)]
pub enum IngestCommand {
    /// Record criterion's saved estimates (from `cargo bench`) as one run, each benchmark a
    /// scenario `criterion/<id>` with time_mean, time_median and throughput measures.
    Criterion(CriterionArgs),
}

/// Arguments of `dyno ingest criterion`.
#[derive(Debug, Args)]
pub struct CriterionArgs {
    /// Criterion's output directory [default: $CRITERION_HOME, else $CARGO_TARGET_DIR/criterion,
    /// else target/criterion, as criterion itself decides].
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Where to record, under which commit.
    #[command(flatten)]
    pub record: RecordArgs,
}

/// Arguments of `dyno alerts`: list alerts, or triage one.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AlertsArgs {
    /// Triage or show one alert; without one, list alerts.
    #[command(subcommand)]
    pub action: Option<AlertsAction>,
    /// Listing options.
    #[command(flatten)]
    pub list: AlertsListArgs,
}

/// Options of `dyno alerts` (listing).
#[derive(Debug, Args)]
pub struct AlertsListArgs {
    /// The results database.
    #[command(flatten)]
    pub db: DbArgs,
    /// Only alerts in this state.
    #[arg(long, value_enum)]
    pub state: Option<StateArg>,
    /// Print JSON (each alert with its triage history) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// An alert state on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StateArg {
    /// Flagged by the per-point check, not yet confirmed.
    Provisional,
    /// Confirmed by change-point detection.
    Confirmed,
    /// Withdrawn.
    Retracted,
}

impl From<StateArg> for AlertState {
    fn from(s: StateArg) -> AlertState {
        match s {
            StateArg::Provisional => AlertState::Provisional,
            StateArg::Confirmed => AlertState::Confirmed,
            StateArg::Retracted => AlertState::Retracted,
        }
    }
}

/// `dyno alerts` subcommands.
#[derive(Debug, Subcommand)]
pub enum AlertsAction {
    /// Acknowledge an alert: someone is looking at it.
    Ack(TriageArgs),
    /// Mark an alert's regression as fixed.
    Fixed(TriageArgs),
    /// Mark an alert as invalid (noise, a broken machine, ...).
    Invalid(TriageArgs),
    /// Mark an alert as a real, welcome change.
    Improvement(TriageArgs),
    /// Print one alert with its triage history.
    Show(ShowArgs),
}

/// Arguments of a triage step (`dyno alerts ack|fixed|invalid|improvement`).
#[derive(Debug, Args)]
pub struct TriageArgs {
    /// The alert id (from `dyno alerts`).
    #[arg(value_name = "ID")]
    pub id: i64,
    /// Why: kept in the alert's history.
    #[arg(long, value_name = "TEXT")]
    pub note: String,
    /// Who.
    #[arg(long, value_name = "NAME")]
    pub author: Option<String>,
    /// The results database.
    #[command(flatten)]
    pub db: DbArgs,
}

/// Arguments of `dyno alerts show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The alert id.
    #[arg(value_name = "ID")]
    pub id: i64,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The results database.
    #[command(flatten)]
    pub db: DbArgs,
}

/// Arguments of `dyno compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The baseline run's id (from `dyno db runs`).
    #[arg(value_name = "RUN_A")]
    pub run_a: i64,
    /// The run compared against it.
    #[arg(value_name = "RUN_B")]
    pub run_b: i64,
    /// Significance level of the Mann-Whitney test on raw samples.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Fewest raw samples each run needs for a measure to be tested.
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub min_samples: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The results database.
    #[command(flatten)]
    pub db: DbArgs,
}

/// Runs `fut` on a single-threaded runtime (database work only).
fn block_on<T>(fut: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the database runtime")?
        .block_on(fut)
}

/// Runs `dyno db`.
pub fn run_db(args: DbCmdArgs) -> Result<()> {
    match args.command {
        DbCommand::Export(a) => block_on(export(a)),
        DbCommand::Import(a) => block_on(import(a)),
        DbCommand::Runs(a) => block_on(runs(a)),
        DbCommand::SeedDemo(a) => block_on(seed_demo(a)),
    }
}

async fn seed_demo(args: SeedDemoArgs) -> Result<()> {
    let opts = dyno_harness::demo::SeedOptions { days: args.days, seed: args.seed };
    if opts.days < dyno_harness::demo::MIN_DAYS {
        // Checked before the database is opened, so a bad value creates no file.
        return Err(dyno_harness::demo::DemoError::TooFewDays(opts.days).into());
    }
    let store = args.db.open().await?;
    let shown = args.db.shown();
    let summary = dyno_harness::demo::seed_demo(&store, &opts)
        .await
        .with_context(|| format!("seeding the demo into {shown}"))?;
    println!("{summary} in {shown}");
    store.close().await;
    Ok(())
}

async fn export(args: ExportArgs) -> Result<()> {
    let store = args.db.open().await?;
    let shown = args.db.shown();
    match &args.out {
        None => {
            let n = store
                .export_jsonl(BufWriter::new(std::io::stdout().lock()))
                .await
                .with_context(|| format!("exporting {shown}"))?;
            eprintln!("exported {n} runs from {shown}");
        }
        Some(path) => {
            let n = export_to_file(&store, path)
                .await
                .with_context(|| format!("exporting {shown} to {}", path.display()))?;
            eprintln!("exported {n} runs from {shown} to {}", path.display());
        }
    }
    store.close().await;
    Ok(())
}

/// Exports into `PATH.partial`, renamed to `path` once complete, so that a failed export never
/// leaves a truncated file under the name asked for.
async fn export_to_file(store: &Store, path: &Path) -> Result<usize> {
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let result = async {
        let file =
            File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
        let mut out = BufWriter::new(file);
        let n = store.export_jsonl(&mut out).await?;
        out.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .with_context(|| format!("writing {}", partial.display()))?;
        std::fs::rename(&partial, path)
            .with_context(|| format!("renaming {} to {}", partial.display(), path.display()))?;
        Ok(n)
    }
    .await;
    if result.is_err() {
        // Best effort: the error being returned is the one that matters.
        let _ = std::fs::remove_file(&partial);
    }
    result
}

async fn import(args: ImportArgs) -> Result<()> {
    let store = args.db.open().await?;
    let shown = args.db.shown();
    let summary = if args.file == "-" {
        store.import_jsonl(std::io::stdin().lock()).await
    } else {
        let file = File::open(&args.file).with_context(|| format!("reading {}", args.file))?;
        store.import_jsonl(BufReader::new(file)).await
    }
    .with_context(|| format!("importing {} into {shown}", args.file))?;
    println!(
        "imported {} runs into {shown}; skipped {} already stored (same idempotency key)",
        summary.imported, summary.skipped
    );
    store.close().await;
    Ok(())
}

async fn runs(args: RunsArgs) -> Result<()> {
    let store = args.db.open().await?;
    let runs = store.runs(args.limit).await?;
    if runs.is_empty() {
        println!("no runs in {}", args.db.shown());
    } else {
        print!("{}", render_runs(&runs));
    }
    store.close().await;
    Ok(())
}

/// Runs `dyno ingest`.
pub fn run_ingest(args: IngestArgs) -> Result<()> {
    match args.command {
        IngestCommand::Criterion(a) => block_on(ingest_criterion(a)),
    }
}

async fn ingest_criterion(args: CriterionArgs) -> Result<()> {
    // Everything is read and checked before the database is opened: a malformed file records
    // nothing.
    let dir = args.dir.clone().unwrap_or_else(dyno_results::criterion::default_dir);
    let results = dyno_results::criterion::read_dir(&dir)?;
    let rows: Vec<Vec<String>> = results
        .iter()
        .map(|r| {
            let get = |m: &str| {
                r.values
                    .iter()
                    .find(|v| v.measure == m)
                    .map_or("-".to_string(), |v| format!("{} {}", fmt_value(v.value), v.unit))
            };
            let samples = r.values.first().map_or(0, |v| v.samples.len());
            vec![r.scenario.name.clone(), get("time_mean"), get("time_median"), samples.to_string()]
        })
        .collect();
    println!("{} criterion benchmarks in {}", results.len(), dir.display());
    print!("{}", render_table(&["scenario", "time_mean", "time_median", "samples"], &rows));
    let Some(recorder) = args.record.prepare().await? else {
        return Ok(());
    };
    let key = dyno_results::criterion::idempotency_key(&recorder.git().commit.sha, &results);
    recorder.record("criterion", "criterion", Some(key), &results).await?;
    recorder.store().close().await;
    Ok(())
}

/// Runs `dyno alerts`.
pub fn run_alerts(args: AlertsArgs) -> Result<()> {
    block_on(async move {
        match args.action {
            None => list_alerts(args.list).await,
            Some(AlertsAction::Show(a)) => show_alert(a).await,
            Some(AlertsAction::Ack(a)) => triage(a, TriageAction::Acknowledged).await,
            Some(AlertsAction::Fixed(a)) => triage(a, TriageAction::Fixed).await,
            Some(AlertsAction::Invalid(a)) => triage(a, TriageAction::Invalid).await,
            Some(AlertsAction::Improvement(a)) => triage(a, TriageAction::Improvement).await,
        }
    })
}

async fn alert_view(store: &Store, id: i64) -> Result<AlertView> {
    let alert = store.alert(id).await?;
    let history = store.triage_history(id).await?;
    Ok(AlertView { alert, history })
}

async fn list_alerts(args: AlertsListArgs) -> Result<()> {
    let store = args.db.open().await?;
    let alerts = store.alerts(args.state.map(AlertState::from)).await?;
    let mut views = Vec::with_capacity(alerts.len());
    for alert in alerts {
        let history = store.triage_history(alert.id).await?;
        views.push(AlertView { alert, history });
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&views)?);
    } else if views.is_empty() {
        println!("no alerts in {}", args.db.shown());
    } else {
        print!("{}", render_alerts(&views));
    }
    store.close().await;
    Ok(())
}

async fn show_alert(args: ShowArgs) -> Result<()> {
    let store = args.db.open().await?;
    let view = alert_view(&store, args.id).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&view)?);
    } else {
        print!("{}", render_alert(&view));
    }
    store.close().await;
    Ok(())
}

async fn triage(args: TriageArgs, action: TriageAction) -> Result<()> {
    if args.note.trim().is_empty() {
        anyhow::bail!("--note is empty: say why the alert is {}", action.as_str());
    }
    let store = args.db.open().await?;
    store
        .triage(args.id, action.as_str(), &args.note, args.author.as_deref())
        .await
        .with_context(|| format!("triaging alert {} in {}", args.id, args.db.shown()))?;
    print!("{}", render_alert(&alert_view(&store, args.id).await?));
    store.close().await;
    Ok(())
}

/// Runs `dyno compare`.
pub fn run_compare(args: CompareArgs) -> Result<()> {
    block_on(async move {
        let config = CompareConfig { alpha: args.alpha, min_samples: args.min_samples };
        let store = args.db.open().await?;
        let a = store.run_record(args.run_a).await.context("run A")?;
        let b = store.run_record(args.run_b).await.context("run B")?;
        store.close().await;
        let comparison = compare(&a, &b, &config)?;
        if args.json {
            println!("{}", serde_json::to_string_pretty(&comparison)?);
        } else {
            print!("{}", render_runs(&[a.run, b.run]));
            println!();
            print!("{}", comparison.render_text());
        }
        Ok(())
    })
}
