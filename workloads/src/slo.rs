//! Service-level objectives a run is judged by.

use serde::{Deserialize, Serialize};

/// Latency objectives, each optional; a request is "good" when it meets every one given
/// (per request: its TTFT, TPOT and E2EL against the bound), and a run meets its SLOs when
/// the p99 of each metric is within its bound.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Bound on time to first token, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttft_p99_ms: Option<f64>,
    /// Bound on time per output token after the first, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpot_p99_ms: Option<f64>,
    /// Bound on end-to-end latency, milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2el_p99_ms: Option<f64>,
}

impl Slo {
    /// No objective given.
    pub fn is_empty(&self) -> bool {
        self.ttft_p99_ms.is_none() && self.tpot_p99_ms.is_none() && self.e2el_p99_ms.is_none()
    }
}
