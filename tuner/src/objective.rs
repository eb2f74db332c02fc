//! What a trial measured, what the study maximizes, and the Pareto frontier it reports.

use dyno_harness::LoadReport;
use serde::{Deserialize, Serialize};

/// The quantity a study maximizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// Requests per second that met every SLO (vLLM's request goodput).
    #[default]
    Goodput,
    /// Output tokens per second; a run that missed its SLOs scores only the share of its
    /// requests that met them.
    Throughput,
}

impl std::str::FromStr for Goal {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "goodput" => Ok(Goal::Goodput),
            "throughput" => Ok(Goal::Throughput),
            other => Err(format!("unknown objective `{other}` (goodput, throughput)")),
        }
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Goal::Goodput => "goodput",
            Goal::Throughput => "throughput",
        })
    }
}

/// The figures of one trial, as stored with it (JSON) and compared between trials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrialMetrics {
    /// The open-loop rate the figures were measured at, requests per second.
    pub rate: f64,
    /// Good requests per second (each met every SLO).
    pub goodput: f64,
    /// Completed requests per second.
    pub request_throughput: f64,
    /// Output tokens per second.
    pub output_throughput: f64,
    /// Median time to first token, ms (0 in trials stored before it was kept).
    #[serde(default)]
    pub ttft_p50_ms: f64,
    /// p99 time to first token, ms.
    pub ttft_p99_ms: f64,
    /// Median time per output token, ms (0 in trials stored before it was kept).
    #[serde(default)]
    pub tpot_p50_ms: f64,
    /// p99 time per output token, ms.
    pub tpot_p99_ms: f64,
    /// p99 end-to-end latency, ms.
    pub e2el_p99_ms: f64,
    /// Fraction of measured requests that met every SLO.
    pub slo_attainment: f64,
    /// Whether the run's p99s met the SLOs.
    pub slo_met: bool,
    /// Measured requests, and how many failed (timeouts past the SLO deadline included).
    pub requests: usize,
    /// Failed requests.
    pub failed: usize,
    /// Seconds the measured part of the run took.
    pub duration_s: f64,
    /// Load tests this trial ran (1 at a fixed rate; the probes of a rate search).
    pub load_tests: usize,
    /// KL divergence of the weight format against f32, nats (0 for f32).
    pub kl: f64,
}

impl TrialMetrics {
    /// The figures of `report`, measured at `rate`.
    pub fn from_report(report: &LoadReport, rate: f64, load_tests: usize, kl: f64) -> Self {
        let requests = report.measured_requests;
        let good = report.good_requests.unwrap_or(report.completed);
        TrialMetrics {
            rate,
            goodput: report.request_goodput.unwrap_or(report.request_throughput),
            request_throughput: report.request_throughput,
            output_throughput: report.output_throughput,
            ttft_p50_ms: report.ttft.p50 * 1e3,
            ttft_p99_ms: report.ttft.p99 * 1e3,
            tpot_p50_ms: report.tpot.p50 * 1e3,
            tpot_p99_ms: report.tpot.p99 * 1e3,
            e2el_p99_ms: report.e2el.p99 * 1e3,
            slo_attainment: if requests == 0 { 0.0 } else { good as f64 / requests as f64 },
            slo_met: report.slo_met.unwrap_or(true),
            requests,
            failed: report.failed,
            duration_s: report.duration_s,
            load_tests,
            kl,
        }
    }

    /// Relative error of each headline figure of this prediction against `measured`:
    /// (predicted − measured) ÷ measured for request throughput, p50 and p99 TTFT, p50 and
    /// p99 TPOT, in that order, with their names.
    pub fn errors_against(&self, measured: &TrialMetrics) -> [(&'static str, f64); 5] {
        let rel = |p: f64, m: f64| if m == 0.0 { f64::NAN } else { (p - m) / m };
        [
            ("throughput", rel(self.request_throughput, measured.request_throughput)),
            ("ttft_p50", rel(self.ttft_p50_ms, measured.ttft_p50_ms)),
            ("ttft_p99", rel(self.ttft_p99_ms, measured.ttft_p99_ms)),
            ("tpot_p50", rel(self.tpot_p50_ms, measured.tpot_p50_ms)),
            ("tpot_p99", rel(self.tpot_p99_ms, measured.tpot_p99_ms)),
        ]
    }

    /// The value `goal` maximizes.
    pub fn score(&self, goal: Goal) -> f64 {
        match goal {
            Goal::Goodput => self.goodput,
            Goal::Throughput if self.slo_met => self.output_throughput,
            Goal::Throughput => self.output_throughput * self.slo_attainment,
        }
    }
}

/// Indices of the points on the Pareto frontier of (throughput ↑, p99 TTFT ↓, p99 TPOT ↓):
/// those no other point beats or equals on all three while beating on one. Sorted by
/// throughput, highest first.
pub fn pareto_frontier(points: &[TrialMetrics]) -> Vec<usize> {
    let figures: Vec<(f64, f64, f64)> =
        points.iter().map(|p| (p.output_throughput, p.ttft_p99_ms, p.tpot_p99_ms)).collect();
    let mut front = dyno_results::frontier::pareto_front(&figures);
    front.sort_by(|&a, &b| points[b].output_throughput.total_cmp(&points[a].output_throughput));
    front
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(tput: f64, ttft: f64, tpot: f64) -> TrialMetrics {
        TrialMetrics {
            rate: 1.0,
            goodput: 0.5,
            request_throughput: 1.0,
            output_throughput: tput,
            ttft_p50_ms: ttft / 2.0,
            ttft_p99_ms: ttft,
            tpot_p50_ms: tpot / 2.0,
            tpot_p99_ms: tpot,
            e2el_p99_ms: 0.0,
            slo_attainment: 0.5,
            slo_met: false,
            requests: 10,
            failed: 0,
            duration_s: 1.0,
            load_tests: 1,
            kl: 0.0,
        }
    }

    #[test]
    fn frontier_keeps_only_undominated_points() {
        let pts =
            [m(100.0, 50.0, 10.0), m(80.0, 40.0, 12.0), m(70.0, 60.0, 12.0), m(100.0, 50.0, 10.0)];
        // Point 2 is dominated by 0 and 1; 0 and 3 tie, so neither dominates the other.
        assert_eq!(pareto_frontier(&pts), vec![0, 3, 1]);
    }

    #[test]
    fn throughput_scores_only_the_good_share_of_a_run_that_missed_its_slos() {
        let mut x = m(100.0, 1.0, 1.0);
        assert_eq!(x.score(Goal::Throughput), 50.0);
        x.slo_met = true;
        assert_eq!(x.score(Goal::Throughput), 100.0);
        assert_eq!(x.score(Goal::Goodput), 0.5);
        assert_eq!("throughput".parse::<Goal>(), Ok(Goal::Throughput));
        assert!("speed".parse::<Goal>().is_err());
    }
}
