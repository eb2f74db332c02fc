//! Load generator, vLLM-compatible metrics, SLO/goodput, sweeps and the suite runner.

pub mod record;

pub use record::{ErrorKind, RequestRecord};
