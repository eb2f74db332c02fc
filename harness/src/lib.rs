//! Load generator, vLLM-compatible metrics, SLO/goodput, sweeps and the suite runner.

pub mod client;
pub mod demo;
pub mod load;
pub mod metrics;
pub mod nightly;
pub mod null_server;
pub mod progress;
pub mod provenance;
pub mod record;
pub mod recording;
pub mod report;
pub mod runner;
pub mod search;
pub mod sse;
pub mod target;

pub use client::{Client, RunClock, SloDeadline, TargetSpec};
pub use metrics::{
    CoView, Distribution, Histograms, LatencySamples, LoadReport, MetricsError, SummaryOptions,
    percentile,
};
pub use null_server::{NullServer, NullServerConfig, NullServerHandle};
pub use record::{ErrorKind, RequestRecord};
pub use report::{DynoExtensions, JsonReport, render_table};
pub use runner::{LiveStats, RunOptions, run_plan};
