//! Regression detection over one series: pure functions, no database.
//!
//! A series is its values in commit order (the caller keeps the commit ids and maps the indices
//! returned here back to them), a [`Direction`] and a [`Stat`]. Detection has two stages, as
//! DESIGN.md "Results and regressions" says:
//!
//! 1. [`provisional_check`] on the newest point: a Student-t prediction interval over the
//!    current segment (median ± k·MAD for tail percentiles), from
//!    [`DetectConfig::provisional_from`] points on.
//! 2. [`change_points`] confirms in the Hunter/Apache Otava manner: E-divisive means proposes
//!    candidates, each is kept only if a two-sample t-test between its neighbouring segments
//!    gives p ≤ [`DetectConfig::p_value`], the relative change of segment means is at least
//!    [`DetectConfig::min_magnitude`], and at least [`DetectConfig::min_points_after`] points
//!    follow it.
//!
//! [`update_alerts`] turns successive detections into alerts that move provisional → confirmed
//! or provisional → retracted, and [`group_alerts`] groups alerts of many series by commit range.

mod alerts;
pub mod edivisive;
mod stats;

pub use alerts::{
    Alert, AlertGroup, AlertState, CommitRange, SeriesAlert, group_alerts, update_alerts,
};
pub use stats::{
    MAD_TO_SIGMA, TTest, mad, mann_whitney_u, mean, median, t_quantile, t_test, variance,
};

/// Which way is better for a measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Smaller is better (latency, memory).
    LowerIsBetter,
    /// Larger is better (throughput, goodput).
    HigherIsBetter,
}

/// What kind of statistic a series holds, which picks the provisional check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Stat {
    /// A central value (mean or median of a run): Student-t prediction interval.
    #[default]
    Central,
    /// A tail percentile (p99 and the like), heavy-tailed from run to run: median ± k·MAD.
    Tail,
}

/// A family of measures, which sets the smallest relative change worth an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// Request latencies (TTFT, ITL, end-to-end): 3%.
    Latency,
    /// Throughput and goodput: 3%.
    Throughput,
    /// Kernel microbenchmarks (criterion estimates, steadier): 2%.
    Kernel,
}

impl Family {
    /// Every family, for listing.
    pub const ALL: [Family; 3] = [Family::Latency, Family::Throughput, Family::Kernel];

    /// The smallest relative change of segment means that counts for this family.
    pub fn min_magnitude(self) -> f64 {
        match self {
            Family::Latency => 0.03,
            Family::Throughput => 0.03,
            Family::Kernel => 0.02,
        }
    }

    /// The name stored in the results database.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Latency => "latency",
            Family::Throughput => "throughput",
            Family::Kernel => "kernel",
        }
    }

    /// The family with this stored name, if any.
    pub fn parse(name: &str) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// Whether a change is bad or good news for its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChangeKind {
    /// The measure got worse.
    Regression,
    /// The measure got better.
    Improvement,
}

impl ChangeKind {
    /// The kind of a move from `before` to `after` for a measure with `direction`.
    pub fn of(direction: Direction, before: f64, after: f64) -> ChangeKind {
        let worse = match direction {
            Direction::LowerIsBetter => after > before,
            Direction::HigherIsBetter => after < before,
        };
        if worse { ChangeKind::Regression } else { ChangeKind::Improvement }
    }
}

/// Detection settings. [`Default`] is the latency/throughput family; see
/// [`DetectConfig::for_family`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DetectConfig {
    /// Smallest relative change (|after − before| / |before|) that is reported, provisional or
    /// confirmed. Default 0.03 (3%): below what run-to-run noise of a shared CI box makes
    /// routine, above what users notice. Per family: [`Family::min_magnitude`].
    pub min_magnitude: f64,
    /// Largest two-sided t-test p-value that confirms a change point. Default 0.001, as in
    /// Hunter/Otava: a nightly that fails the build must almost never cry wolf.
    pub p_value: f64,
    /// Points that must follow a change point (not counting its own first point) before it is
    /// confirmed, and after which an unconfirmed provisional flag is retracted. Default 3.
    pub min_points_after: usize,
    /// Length of the current segment, newest point included, from which the provisional check
    /// runs. Default 5: four reference points are the fewest that give a usable spread.
    pub provisional_from: usize,
    /// Two-sided α of the provisional prediction interval. Default 0.01 (a 99% interval): a
    /// provisional flag is cheap, but should not fire on every other night.
    pub provisional_alpha: f64,
    /// Half-width of the tail-percentile interval in scaled MADs. Default 3.5, the
    /// Iglewicz–Hoaglin outlier cut-off for the modified z-score.
    pub k_mad: f64,
    /// Smallest segment E-divisive may split off. Default 2 (the energy statistic needs a pair
    /// on each side); [`DetectConfig::min_points_after`] decides confirmation.
    pub min_segment: usize,
    /// Welch's t-test instead of Student's pooled one. Default false: with only
    /// `min_points_after + 1` points after a change, Welch's degrees of freedom collapse to
    /// about 3 and no 5% step could reach p ≤ 0.001 in time; the pooled test borrows the
    /// spread of the longer segment.
    pub welch: bool,
    /// How far (in points) a change point may move between analyses and still be the same
    /// alert. Default 2.
    pub match_distance: usize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            min_magnitude: 0.03,
            p_value: 0.001,
            min_points_after: 3,
            provisional_from: 5,
            provisional_alpha: 0.01,
            k_mad: 3.5,
            min_segment: 2,
            welch: false,
            match_distance: 2,
        }
    }
}

impl DetectConfig {
    /// The defaults with the minimum magnitude of `family`.
    pub fn for_family(family: Family) -> Self {
        DetectConfig { min_magnitude: family.min_magnitude(), ..DetectConfig::default() }
    }
}

/// One series to analyse.
#[derive(Debug, Clone, Copy)]
pub struct Series<'a> {
    /// Values in commit order, oldest first.
    pub values: &'a [f64],
    /// Which way is better.
    pub direction: Direction,
    /// Central value or tail percentile.
    pub stat: Stat,
}

/// A flag on the newest point: it lies outside what the current segment predicts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Provisional {
    /// Index of the flagged (newest) point.
    pub index: usize,
    /// Regression or improvement.
    pub kind: ChangeKind,
    /// The newest value.
    pub value: f64,
    /// What the segment predicts (its mean, or median for [`Stat::Tail`]).
    pub expected: f64,
    /// The interval `(lower, upper)` the value fell outside of.
    pub bounds: (f64, f64),
}

/// A confirmed change point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChangePoint {
    /// Index of the first point of the new segment.
    pub index: usize,
    /// Mean of the segment before (back to the previous change point).
    pub before: f64,
    /// Mean of the segment after (up to the next change point).
    pub after: f64,
    /// Relative change (after − before) / |before|; ±∞ when `before` is 0.
    pub change: f64,
    /// Two-sided t-test p-value between the two segments.
    pub p_value: f64,
    /// Regression or improvement for the series' direction.
    pub kind: ChangeKind,
}

/// Both stages on one series.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Detection {
    /// Confirmed change points, in index order.
    pub change_points: Vec<ChangePoint>,
    /// The provisional flag on the newest point, if it has one.
    pub provisional: Option<Provisional>,
}

fn relative_change(before: f64, after: f64) -> f64 {
    if before == 0.0 {
        if after == 0.0 { 0.0 } else { (after - before).signum() * f64::INFINITY }
    } else {
        (after - before) / before.abs()
    }
}

/// Stage 1: checks the newest point of `series` against the segment
/// `values[segment_start..len − 1]`. Runs when that segment plus the newest point has at least
/// `provisional_from` points; flags the point when it lies outside the prediction interval
/// (mean ± t₍₁₋α/₂, n−1₎·s·√(1 + 1/n), or median ± k·MAD for [`Stat::Tail`]) and differs from
/// the expected value by at least `min_magnitude`. `None` otherwise, and for non-finite values.
pub fn provisional_check(
    series: &Series<'_>,
    segment_start: usize,
    config: &DetectConfig,
) -> Option<Provisional> {
    let (newest, reference) = series.values.split_last()?;
    let reference = reference.get(segment_start..)?;
    if reference.len() + 1 < config.provisional_from.max(3) || !newest.is_finite() {
        return None;
    }
    let (expected, half_width) = match series.stat {
        Stat::Central => {
            let n = reference.len() as f64;
            let t = t_quantile(config.provisional_alpha, n - 1.0)?;
            (mean(reference)?, t * variance(reference)?.sqrt() * (1.0 + 1.0 / n).sqrt())
        }
        Stat::Tail => (median(reference)?, config.k_mad * mad(reference)?),
    };
    let bounds = (expected - half_width, expected + half_width);
    let outside = *newest < bounds.0 || *newest > bounds.1;
    if !outside || relative_change(expected, *newest).abs() < config.min_magnitude {
        return None;
    }
    Some(Provisional {
        index: series.values.len() - 1,
        kind: ChangeKind::of(series.direction, expected, *newest),
        value: *newest,
        expected,
        bounds,
    })
}

/// Statistics of a candidate at `cps[i]` between its neighbouring candidates.
fn candidate_stats(
    values: &[f64],
    cps: &[usize],
    i: usize,
    config: &DetectConfig,
) -> Option<(f64, f64, TTest)> {
    let lo = if i == 0 { 0 } else { cps[i - 1] };
    let hi = cps.get(i + 1).copied().unwrap_or(values.len());
    let (left, right) = (&values[lo..cps[i]], &values[cps[i]..hi]);
    Some((mean(left)?, mean(right)?, t_test(left, right, config.welch)?))
}

/// Stage 2: confirmed change points of `values` (Hunter/Otava style).
///
/// E-divisive means bisects the series top-down ([`edivisive::candidates`]), keeping a split
/// only when a t-test between the two parts of its window gives p ≤ `p_value`. Then, as Hunter
/// does, the weakest candidate (largest p-value) that fails `p_value` or `min_magnitude` against
/// its final neighbouring segments is dropped, its segments merged, and the rest re-tested,
/// until every candidate passes; each survivor is then moved by at most `match_distance` to
/// the least-squares split between its neighbours. Of those, the ones followed by at least
/// `min_points_after` points are returned; the younger ones still bound their neighbours'
/// segments but wait for more data. Non-finite values give an empty list.
pub fn change_points(
    values: &[f64],
    direction: Direction,
    config: &DetectConfig,
) -> Vec<ChangePoint> {
    if values.iter().any(|v| !v.is_finite()) {
        return Vec::new();
    }
    let mut cps = edivisive::candidates(values, config.min_segment, |left, right| {
        t_test(left, right, config.welch).is_some_and(|t| t.p_value <= config.p_value)
    });
    loop {
        let mut worst: Option<(usize, f64)> = None;
        for i in 0..cps.len() {
            let failed_p = match candidate_stats(values, &cps, i, config) {
                Some((before, after, test)) => {
                    let weak = test.p_value > config.p_value
                        || relative_change(before, after).abs() < config.min_magnitude;
                    weak.then_some(test.p_value)
                }
                None => Some(f64::INFINITY),
            };
            if let Some(p) = failed_p
                && worst.is_none_or(|(_, w)| p > w)
            {
                worst = Some((i, p));
            }
        }
        match worst {
            Some((i, _)) => {
                cps.remove(i);
            }
            None => break,
        }
    }
    refine(values, &mut cps, config);
    (0..cps.len())
        .filter(|&i| values.len() - 1 - cps[i] >= config.min_points_after)
        .filter_map(|i| {
            let (before, after, test) = candidate_stats(values, &cps, i, config)?;
            Some(ChangePoint {
                index: cps[i],
                before,
                after,
                change: relative_change(before, after),
                p_value: test.p_value,
                kind: ChangeKind::of(direction, before, after),
            })
        })
        .collect()
}

/// Moves each change point by at most `match_distance` to the split of its two neighbouring
/// segments with the least squared error (the largest m·k/(m+k)·(mean difference)²). The
/// energy statistic weighs a borderline first point of a new level by its distances to the
/// whole distribution; this settles it by the means, the same measure the t-test and the
/// reported change use.
fn refine(values: &[f64], cps: &mut [usize], config: &DetectConfig) {
    let min = config.min_segment.max(1);
    for i in 0..cps.len() {
        let lo = if i == 0 { 0 } else { cps[i - 1] };
        let hi = cps.get(i + 1).copied().unwrap_or(values.len());
        let from = cps[i].saturating_sub(config.match_distance).max(lo + min);
        let to = (cps[i] + config.match_distance).min(hi.saturating_sub(min));
        let score = |tau: usize| {
            let (l, r) = (&values[lo..tau], &values[tau..hi]);
            let (m, k) = (l.len() as f64, r.len() as f64);
            match (mean(l), mean(r)) {
                (Some(a), Some(b)) => m * k / (m + k) * (b - a) * (b - a),
                _ => f64::NEG_INFINITY,
            }
        };
        if let Some(best) = (from..=to).max_by(|&a, &b| score(a).total_cmp(&score(b))) {
            cps[i] = best;
        }
    }
}

/// Both stages: the confirmed change points, then the provisional check of the newest point
/// over the segment since the last confirmed one.
pub fn detect(series: &Series<'_>, config: &DetectConfig) -> Detection {
    let change_points = change_points(series.values, series.direction, config);
    let segment_start = change_points.last().map_or(0, |c| c.index);
    let provisional = provisional_check(series, segment_start, config);
    Detection { change_points, provisional }
}
