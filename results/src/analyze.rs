//! Detection over stored series: after a run is recorded, each series it touched is read back
//! in commit order, analysed by [`crate::detect`], and its alerts in the store are moved on
//! (opened, confirmed, retracted). The result also carries what a nightly summary prints: the
//! run's value, the previous point and the baseline.
//!
//! The baseline of a series is the mean of its current segment (the points since the last
//! confirmed change point) before the run's own point: the level the provisional check holds
//! the new point against, so "vs baseline" reads as "vs where this series has settled", where
//! "vs previous" moves with every night's noise.

use crate::detect::{self, ChangeKind, DetectConfig, Direction, Family, Series, Stat};
use crate::store::{Alert, AlertInfo, AlertState, Point, Result, RunStatus, SeriesKey, Store};

/// Triage actions that close an alert for the nightly gate.
pub const CLOSING_ACTIONS: [&str; 4] = ["acknowledged", "fixed", "invalid", "improvement"];

/// How a series is analysed: its family's detection settings, and a tail test for percentiles.
pub fn series_settings(key: &SeriesKey) -> (DetectConfig, Direction, Stat) {
    let config =
        Family::parse(&key.family).map_or_else(DetectConfig::default, DetectConfig::for_family);
    let direction =
        if key.lower_is_better { Direction::LowerIsBetter } else { Direction::HigherIsBetter };
    // p90, p95, p99, p999 and the like (not p50): heavy-tailed from run to run.
    let tail = key.measure.split('_').any(|part| {
        part.strip_prefix('p').is_some_and(|digits| {
            digits.len() >= 2 && digits.chars().all(|c| c.is_ascii_digit()) && digits[..2] >= *"90"
        })
    });
    (config, direction, if tail { Stat::Tail } else { Stat::Central })
}

/// One series after analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesAnalysis {
    /// Which series.
    pub key: SeriesKey,
    /// The run's own point, if the run contributed one (completed and partial runs only).
    pub point: Option<Point>,
    /// The value of the point before it in commit order.
    pub previous: Option<f64>,
    /// Mean of the current segment before the run's point (see the module docs).
    pub baseline: Option<f64>,
    /// Points in the series.
    pub len: usize,
    /// Each point's commit and its ordinal, in series order.
    pub commits: Vec<(String, i64)>,
    /// The series' alerts after this analysis (every state), by commit order.
    pub alerts: Vec<Alert>,
    /// Alerts this analysis opened or changed.
    pub changed: Vec<Alert>,
}

impl SeriesAnalysis {
    /// The run's value relative to `reference`: (value − reference) / |reference|.
    pub fn change_vs(&self, reference: Option<f64>) -> Option<f64> {
        let value = self.point.as_ref()?.value;
        let r = reference?;
        (r != 0.0).then(|| (value - r) / r.abs())
    }
}

fn to_detect_state(s: AlertState) -> detect::AlertState {
    match s {
        AlertState::Provisional => detect::AlertState::Provisional,
        AlertState::Confirmed => detect::AlertState::Confirmed,
        AlertState::Retracted => detect::AlertState::Retracted,
    }
}

fn from_detect_state(s: detect::AlertState) -> AlertState {
    match s {
        detect::AlertState::Provisional => AlertState::Provisional,
        detect::AlertState::Confirmed => AlertState::Confirmed,
        detect::AlertState::Retracted => AlertState::Retracted,
    }
}

fn info_of(key: &SeriesKey, points: &[Point], a: &detect::Alert) -> AlertInfo {
    AlertInfo {
        series: key.clone(),
        commit: points[a.index].sha.clone(),
        state: from_detect_state(a.state),
        regression: a.kind == ChangeKind::Regression,
        before: a.before,
        after: a.after,
        change_pct: a.change * 100.0,
        p_value: a.p_value,
    }
}

/// Whether two alert descriptions say the same thing (so nothing needs writing).
fn same(a: &AlertInfo, b: &AlertInfo) -> bool {
    a.state == b.state
        && a.regression == b.regression
        && a.before == b.before
        && a.after == b.after
        && a.change_pct == b.change_pct
        && a.p_value == b.p_value
}

/// Analyses one series and moves its stored alerts on. `run` picks the point reported as the
/// run's own (and so the previous point and the baseline).
///
/// Stored alerts are mapped to indices by their commit; [`detect::update_alerts`] decides the
/// new states. An alert it replaced (a provisional flag confirmed at a nearby commit after the
/// change point settled) is marked retracted, so one change never shows as two open alerts.
pub async fn analyze_series(store: &Store, key: &SeriesKey, run: i64) -> Result<SeriesAnalysis> {
    let points = store.series(&key.filter()).await?;
    let (config, direction, stat) = series_settings(key);
    let values: Vec<f64> = points.iter().map(|p| p.value).collect();
    let detection = detect::detect(&Series { values: &values, direction, stat }, &config);

    let stored: Vec<Alert> =
        store.alerts(None).await?.into_iter().filter(|a| a.info.series == *key).collect();
    let index_of = |sha: &str| points.iter().position(|p| p.sha == sha);
    let previous: Vec<(usize, &Alert, detect::Alert)> = stored
        .iter()
        .filter_map(|a| {
            let index = index_of(&a.info.commit)?;
            let kind =
                if a.info.regression { ChangeKind::Regression } else { ChangeKind::Improvement };
            Some((
                index,
                a,
                detect::Alert {
                    index,
                    state: to_detect_state(a.info.state),
                    kind,
                    before: a.info.before,
                    after: a.info.after,
                    change: a.info.change_pct / 100.0,
                    p_value: a.info.p_value,
                },
            ))
        })
        .collect();
    let prior: Vec<detect::Alert> = previous.iter().map(|(_, _, d)| *d).collect();
    let updated = detect::update_alerts(&prior, &detection, points.len(), &config);

    let mut writes: Vec<AlertInfo> = Vec::new();
    for a in &updated {
        let info = info_of(key, &points, a);
        let unchanged = previous.iter().any(|(i, s, _)| *i == a.index && same(&s.info, &info));
        if !unchanged {
            writes.push(info);
        }
    }
    for (index, s, _) in &previous {
        let kept = updated.iter().any(|a| a.index == *index);
        if !kept && s.info.state != AlertState::Retracted {
            writes.push(AlertInfo { state: AlertState::Retracted, ..s.info.clone() });
        }
    }
    let mut changed_ids = Vec::new();
    for info in &writes {
        changed_ids.push(store.upsert_alert(info).await?);
    }

    let alerts: Vec<Alert> =
        store.alerts(None).await?.into_iter().filter(|a| a.info.series == *key).collect();
    let changed = alerts.iter().filter(|a| changed_ids.contains(&a.id)).cloned().collect();

    let at = points.iter().position(|p| p.run_id == run);
    let (previous_value, baseline) = match at {
        Some(i) => {
            let segment_start = detection
                .change_points
                .iter()
                .map(|c| c.index)
                .filter(|&c| c <= i)
                .max()
                .unwrap_or(0);
            let segment = &values[segment_start..i];
            let baseline = detect::mean(segment);
            (i.checked_sub(1).map(|j| values[j]), baseline)
        }
        None => (None, None),
    };
    Ok(SeriesAnalysis {
        key: key.clone(),
        point: at.map(|i| points[i].clone()),
        previous: previous_value,
        baseline,
        len: points.len(),
        commits: points.iter().map(|p| (p.sha.clone(), p.ordinal)).collect(),
        alerts,
        changed,
    })
}

/// Every series a run touched, analysed.
#[derive(Debug, Clone, PartialEq)]
pub struct RunAnalysis {
    /// The run.
    pub run: i64,
    /// Its status.
    pub status: RunStatus,
    /// One entry per series, by scenario then measure.
    pub series: Vec<SeriesAnalysis>,
    /// Confirmed regressions in these series that no triage action has closed (see
    /// [`CLOSING_ACTIONS`]): what fails a nightly.
    pub open_regressions: Vec<Alert>,
}

/// Groups the confirmed alerts of `series` that are in no group yet by the commits that may
/// have caused them ([`detect::group_alerts`]: from the commit after the previous point to
/// the alert's commit; members share at least one suspect). A group is stored with the
/// measured commits that bound its shared range.
async fn group_new_alerts(store: &Store, series: &mut [SeriesAnalysis]) -> Result<()> {
    let mut candidates = Vec::new();
    for (si, s) in series.iter().enumerate() {
        let ordinals: Vec<u64> =
            s.commits.iter().map(|(_, o)| u64::try_from(*o).unwrap_or(0)).collect();
        for a in s.alerts.iter().filter(|a| a.info.state == AlertState::Confirmed) {
            if a.group.is_some() {
                continue;
            }
            let Some(index) = s.commits.iter().position(|(sha, _)| *sha == a.info.commit) else {
                continue;
            };
            let Some(range) = detect::CommitRange::of_index(&ordinals, index) else { continue };
            let kind =
                if a.info.regression { ChangeKind::Regression } else { ChangeKind::Improvement };
            let alert = detect::Alert {
                index,
                state: detect::AlertState::Confirmed,
                kind,
                before: a.info.before,
                after: a.info.after,
                change: a.info.change_pct / 100.0,
                p_value: a.info.p_value,
            };
            candidates.push(detect::SeriesAlert { series: (si, a.id), alert, range });
        }
    }
    for group in detect::group_alerts(&candidates) {
        // The measured commits bounding the shared range: the earliest member commit at or
        // after its first suspect, and the member commit at its last.
        let commit_at = |pred: &dyn Fn(u64) -> bool| {
            group
                .alerts
                .iter()
                .filter_map(|m| {
                    let (si, _) = m.series;
                    let (sha, ordinal) = series[si].commits.get(m.alert.index)?;
                    let o = u64::try_from(*ordinal).ok()?;
                    pred(o).then(|| (o, sha.clone()))
                })
                .min()
        };
        let first = commit_at(&|o| o >= group.range.first);
        let last = commit_at(&|o| o == group.range.last);
        let (Some((_, first)), Some((_, last))) = (first, last) else { continue };
        let ids: Vec<i64> = group.alerts.iter().map(|m| m.series.1).collect();
        let gid = store.group_alerts(&ids, &first, &last).await?;
        for s in series.iter_mut() {
            for a in s.alerts.iter_mut().chain(s.changed.iter_mut()) {
                if ids.contains(&a.id) {
                    a.group = Some(gid);
                }
            }
        }
    }
    Ok(())
}

/// Analyses every series `run` recorded into (see [`analyze_series`]), groups newly confirmed
/// alerts across them by commit range, and finds the open confirmed regressions.
pub async fn analyze_run(store: &Store, run: i64) -> Result<RunAnalysis> {
    let record = store.run_record(run).await?;
    let mut series = Vec::new();
    for key in store.series_of_run(run).await? {
        series.push(analyze_series(store, &key, run).await?);
    }
    group_new_alerts(store, &mut series).await?;
    let mut open_regressions = Vec::new();
    for s in &series {
        for a in &s.alerts {
            if a.info.state == AlertState::Confirmed && a.info.regression {
                let history = store.triage_history(a.id).await?;
                let closed = history.iter().any(|e| CLOSING_ACTIONS.contains(&e.action.as_str()));
                if !closed {
                    open_regressions.push(a.clone());
                }
            }
        }
    }
    Ok(RunAnalysis { run, status: record.run.status, series, open_regressions })
}
