//! `tune ARGS` is `dyno tune ARGS`: same arguments, same output, same exit codes.

use clap::Parser;
use dyno::cli::{TuneArgs, run_tune};
use std::process::ExitCode;

/// Emit the best config for a model on a hardware target (same as `dyno tune`).
#[derive(Debug, Parser)]
#[command(
    name = "tune",
    version,
    about = "Emit the best config for a model on a hardware target (same as `dyno tune`)."
)]
struct TuneCli {
    #[command(flatten)]
    args: TuneArgs,
}

fn main() -> ExitCode {
    match run_tune(TuneCli::parse().args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
