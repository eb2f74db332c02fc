//! "The highest arrival rate that meets the SLOs": expand by doubling until a run fails, then
//! bisect between the last passing and the first failing rate until they are within a
//! relative tolerance. Generic over how one rate is measured, so the same walk drives real
//! load tests and the simulator, and can be tested on a scripted capacity.

use serde::Serialize;
use std::future::Future;

/// One measured rate on the walk.
#[derive(Debug, Clone, Serialize)]
pub struct RateProbe<T> {
    /// Requested arrival rate, requests per second.
    pub rate: f64,
    /// The run met every SLO (and was valid).
    pub passed: bool,
    /// What the measurement returned (a load report, for example).
    pub result: T,
}

/// The outcome of a search.
#[derive(Debug, Clone, Serialize)]
pub struct RateSearch<T> {
    /// The highest rate that passed; `None` if even the lowest tried rate failed.
    pub best_rate: Option<f64>,
    /// Every probe in the order it ran (the curve the search walked).
    pub probes: Vec<RateProbe<T>>,
}

impl<T> RateSearch<T> {
    /// The probes sorted by rate, for printing the curve.
    pub fn curve(&self) -> Vec<&RateProbe<T>> {
        let mut c: Vec<_> = self.probes.iter().collect();
        c.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        c
    }

    /// The passing probe at the best rate.
    pub fn best(&self) -> Option<&RateProbe<T>> {
        let best = self.best_rate?;
        self.probes.iter().find(|p| p.passed && p.rate == best)
    }
}

/// Bounds of a search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SearchOptions {
    /// First rate tried.
    pub start_rate: f64,
    /// Stop bisecting when `(fail − pass) / pass` is at most this (0.05 = 5%).
    pub tolerance: f64,
    /// Never go below this rate while halving after a failing start.
    pub min_rate: f64,
    /// Never go above this rate while doubling.
    pub max_rate: f64,
    /// At most this many probes in all.
    pub max_probes: usize,
}

impl Default for SearchOptions {
    fn default() -> Self {
        Self { start_rate: 1.0, tolerance: 0.05, min_rate: 0.01, max_rate: 1e6, max_probes: 24 }
    }
}

/// Walks rates with `measure(rate) -> (passed, result)`: doubling from `opts.start_rate` while
/// runs pass (halving while they fail, if the start already fails), then bisecting the
/// bracket to `opts.tolerance`. Errors from `measure` end the search and are returned.
pub async fn max_rate_under_slo<T, E, F, Fut>(
    opts: &SearchOptions,
    mut measure: F,
) -> Result<RateSearch<T>, E>
where
    F: FnMut(f64) -> Fut,
    Fut: Future<Output = Result<(bool, T), E>>,
{
    let mut probes: Vec<RateProbe<T>> = Vec::new();
    let mut probe = async |rate: f64, probes: &mut Vec<RateProbe<T>>| -> Result<bool, E> {
        let (passed, result) = measure(rate).await?;
        probes.push(RateProbe { rate, passed, result });
        Ok(passed)
    };
    let mut rate = opts.start_rate.clamp(opts.min_rate, opts.max_rate);
    let (mut pass, mut fail): (Option<f64>, Option<f64>) = (None, None);
    // Expand: find a bracket [pass, fail].
    while probes.len() < opts.max_probes {
        if probe(rate, &mut probes).await? {
            pass = Some(rate);
            if fail.is_some() || rate >= opts.max_rate {
                break;
            }
            rate = (rate * 2.0).min(opts.max_rate);
        } else {
            fail = Some(rate);
            if pass.is_some() || rate <= opts.min_rate {
                break;
            }
            rate = (rate / 2.0).max(opts.min_rate);
        }
    }
    // Bisect the bracket.
    if let (Some(mut lo), Some(mut hi)) = (pass, fail) {
        while (hi - lo) / lo > opts.tolerance && probes.len() < opts.max_probes {
            let mid = 0.5 * (lo + hi);
            if probe(mid, &mut probes).await? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        pass = Some(lo);
    }
    Ok(RateSearch { best_rate: pass, probes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(capacity: f64, opts: SearchOptions) -> RateSearch<()> {
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        rt.block_on(max_rate_under_slo(&opts, |rate| async move {
            Ok::<_, std::convert::Infallible>((rate <= capacity, ()))
        }))
        .expect("infallible")
    }

    #[test]
    fn finds_capacity_within_tolerance_from_below() {
        let s = run(13.0, SearchOptions::default());
        let best = s.best_rate.expect("passes at 1");
        assert!((13.0 / 1.05..=13.0).contains(&best), "best {best}");
        // Doubling walked 1, 2, 4, 8, 16 before bisecting.
        let first: Vec<f64> = s.probes.iter().take(5).map(|p| p.rate).collect();
        assert_eq!(first, vec![1.0, 2.0, 4.0, 8.0, 16.0]);
        assert!(s.probes.iter().all(|p| p.passed == (p.rate <= 13.0)));
        assert!(s.best().is_some());
    }

    #[test]
    fn halves_when_the_start_fails() {
        let opts = SearchOptions { start_rate: 10.0, ..SearchOptions::default() };
        let s = run(0.7, opts);
        let best = s.best_rate.expect("passes at 0.625");
        assert!((0.7 / 1.05..=0.7).contains(&best), "best {best}");
        assert_eq!(s.probes[0].rate, 10.0);
        assert_eq!(s.probes[1].rate, 5.0);
    }

    #[test]
    fn reports_none_when_nothing_passes_and_respects_the_probe_budget() {
        let s = run(0.0, SearchOptions { start_rate: 1.0, min_rate: 0.25, ..Default::default() });
        assert_eq!(s.best_rate, None);
        assert_eq!(s.probes.iter().map(|p| p.rate).collect::<Vec<_>>(), vec![1.0, 0.5, 0.25]);
        let s = run(1e9, SearchOptions { max_probes: 4, ..Default::default() });
        assert_eq!(s.probes.len(), 4);
        assert_eq!(s.best_rate, Some(8.0));
    }
}
