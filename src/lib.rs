//! The `dyno` command line: parses arguments and wires the crates together. No logic lives here
//! that a library crate could own.

pub mod cli;
pub mod dashboard_cmd;
pub mod db_cmd;
pub mod engine_cmd;
pub mod kernels_cmd;
pub mod load_cmd;
pub mod nightly_cmd;
pub mod profile_cmd;
pub mod record_args;
pub mod simulate_cmd;
pub mod tune_cmd;
pub mod validate_cmd;
