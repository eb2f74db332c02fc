//! Argument definitions and dispatch for `dyno` and `tune`.

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::dashboard_cmd::{self, DashboardArgs};
use crate::db_cmd::{self, AlertsArgs, CompareArgs, DbCmdArgs, IngestArgs};
use crate::engine_cmd::{self, EngineArgs, ModelArgs, ServeArgs};
use crate::kernels_cmd::{self, KernelsArgs};
use crate::load_cmd::{self, LoadArgs};
use crate::nightly_cmd::{self, NightlyArgs};
use crate::profile_cmd::{self, ProfileArgs};
use crate::simulate_cmd::{self, SimulateArgs};
use crate::tune_cmd::{self, StudyArgs};
pub use crate::tune_cmd::{TuneArgs, run_tune};
use crate::validate_cmd::{self, ValidateArgs};
use std::process::ExitCode;

/// dyno: a dynamometer for LLM inference.
#[derive(Debug, Parser)]
#[command(name = "dyno", version, about, long_about = None)]
pub struct Cli {
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Emit the best config for a model on a hardware target.
    Tune(Box<TuneArgs>),
    /// Show a tuning study (`show NAME`) or list them (`list`).
    Study(StudyArgs),
    /// Benchmark and tune compute kernels on this machine (`bench`, `tune`).
    Kernels(KernelsArgs),
    /// Describe a model: parameters and memory per quantization level (`info`).
    Model(ModelArgs),
    /// Measure the reference engine (`bench`).
    Engine(EngineArgs),
    /// Serve the reference engine over an OpenAI-compatible HTTP API.
    Serve(ServeArgs),
    /// Load-test a server (the built-in engine, the null server or any URL) with a workload.
    Load(Box<LoadArgs>),
    /// Move results between databases (`export`, `import`) and list runs (`runs`).
    Db(DbCmdArgs),
    /// Record results measured elsewhere (`criterion`: cargo bench's saved estimates).
    Ingest(IngestArgs),
    /// List regression alerts, or triage one (`ack`, `fixed`, `invalid`, `improvement`, `show`).
    Alerts(AlertsArgs),
    /// Compare two runs measure by measure, with a Mann-Whitney test on raw samples.
    Compare(CompareArgs),
    /// Run a suite, record it, detect regressions; exit 1 on an open confirmed regression.
    Nightly(NightlyArgs),
    /// Predict a workload's metrics on a hardware profile with the simulator (the engine's
    /// scheduler and a step-time model), printed like `dyno load`.
    Simulate(Box<SimulateArgs>),
    /// Measure this machine and write its calibrated hardware profile (`--hw cpu`).
    Profile(ProfileArgs),
    /// Run configs both simulated and measured on this machine, store both, print the
    /// prediction error per config.
    Validate(ValidateArgs),
    /// Serve the web dashboard over the results store: series, runs, comparisons, alerts
    /// (triage with --token) and tuning studies.
    Dashboard(DashboardArgs),
}

/// Runs a parsed command line; the exit code of a command that completed (errors exit 2).
pub fn run(cli: Cli) -> Result<ExitCode> {
    let done = |r: Result<()>| r.map(|()| ExitCode::SUCCESS);
    match cli.command {
        Command::Tune(args) => done(run_tune(*args)),
        Command::Study(args) => done(tune_cmd::run_study(args)),
        Command::Kernels(args) => done(kernels_cmd::run(args)),
        Command::Model(args) => done(engine_cmd::run_model(args)),
        Command::Engine(args) => done(engine_cmd::run_engine(args)),
        Command::Serve(args) => done(engine_cmd::run_serve(args)),
        Command::Load(args) => done(load_cmd::run_load_cmd(*args)),
        Command::Nightly(args) => nightly_cmd::run_nightly(args),
        Command::Simulate(args) => done(simulate_cmd::run_simulate(*args)),
        Command::Validate(args) => done(validate_cmd::run_validate(args)),
        Command::Db(args) => done(db_cmd::run_db(args)),
        Command::Ingest(args) => done(db_cmd::run_ingest(args)),
        Command::Alerts(args) => done(db_cmd::run_alerts(args)),
        Command::Compare(args) => done(db_cmd::run_compare(args)),
        Command::Profile(args) => done(profile_cmd::run_profile(args)),
        Command::Dashboard(args) => done(dashboard_cmd::run_dashboard(args)),
    }
}
