//! Load generator, vLLM-compatible metrics, SLO/goodput, sweeps and the suite runner.

pub mod client;
pub mod record;
pub mod runner;
pub mod search;
pub mod sse;

pub use client::{Client, RunClock, TargetSpec};
pub use record::{ErrorKind, RequestRecord};
pub use runner::{LiveStats, RunOptions, run_plan};
