//! Load generator, vLLM-compatible metrics, SLO/goodput, sweeps and the suite runner.

pub mod null_server;
pub mod record;

pub use null_server::{NullServer, NullServerConfig, NullServerHandle};
pub use record::{ErrorKind, RequestRecord};
