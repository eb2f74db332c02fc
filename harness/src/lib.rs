//! Load generator, vLLM-compatible metrics, SLO/goodput, sweeps and the suite runner.

pub mod metrics;
pub mod record;
pub mod report;

pub use metrics::{
    CoView, Distribution, Histograms, LoadReport, MetricsError, SummaryOptions, percentile,
};
pub use record::{ErrorKind, RequestRecord};
pub use report::{DynoExtensions, JsonReport, render_table};
