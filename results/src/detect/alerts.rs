//! Alerts over successive detections of one series, and their grouping across series.

use super::{ChangeKind, DetectConfig, Detection, relative_change};

/// Where an alert stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertState {
    /// The newest point left the prediction interval; not yet confirmed.
    Provisional,
    /// A change point passed the significance, magnitude and points-after tests. Stays
    /// confirmed whatever later analyses say (triage, not detection, closes it).
    Confirmed,
    /// A provisional flag that `min_points_after` further points did not confirm.
    Retracted,
}

/// An alert on one series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Alert {
    /// Index in the series of the first changed point.
    pub index: usize,
    /// Provisional, confirmed or retracted.
    pub state: AlertState,
    /// Regression or improvement.
    pub kind: ChangeKind,
    /// Value before: the segment mean (or the expected value of a provisional flag).
    pub before: f64,
    /// Value after: the segment mean (or the flagged value of a provisional flag).
    pub after: f64,
    /// Relative change (after − before) / |before|.
    pub change: f64,
    /// t-test p-value once confirmed; `None` while provisional.
    pub p_value: Option<f64>,
}

/// The alerts of a series after a new point: `previous` (the alerts before it, in any state)
/// updated with `detection` (the analysis of the series of `len` points, newest included).
///
/// - A confirmed change point confirms the alert of the same kind within
///   `match_distance` points of it (preferring a confirmed one, then the nearest), updating its
///   index and values; without one, it opens a new confirmed alert.
/// - A confirmed alert stays confirmed even if a later analysis no longer finds it.
/// - A provisional alert that is not confirmed once `min_points_after` points follow it is
///   retracted.
/// - The newest point's provisional flag opens a provisional alert, unless a provisional alert
///   of the same kind is already open (a shift flags several points in a row: one alert).
///
/// The result is sorted by index.
pub fn update_alerts(
    previous: &[Alert],
    detection: &Detection,
    len: usize,
    config: &DetectConfig,
) -> Vec<Alert> {
    let mut alerts = previous.to_vec();
    let mut touched = vec![false; alerts.len()];
    for cp in &detection.change_points {
        let rank = |a: &Alert| match a.state {
            AlertState::Confirmed => 0,
            AlertState::Provisional => 1,
            AlertState::Retracted => 2,
        };
        let found = alerts
            .iter()
            .enumerate()
            .filter(|(i, a)| {
                !touched[*i]
                    && a.kind == cp.kind
                    && a.index.abs_diff(cp.index) <= config.match_distance
            })
            .min_by_key(|(_, a)| (rank(a), a.index.abs_diff(cp.index)))
            .map(|(i, _)| i);
        let confirmed = Alert {
            index: cp.index,
            state: AlertState::Confirmed,
            kind: cp.kind,
            before: cp.before,
            after: cp.after,
            change: cp.change,
            p_value: Some(cp.p_value),
        };
        match found {
            Some(i) => {
                alerts[i] = confirmed;
                touched[i] = true;
            }
            None => {
                alerts.push(confirmed);
                touched.push(true);
            }
        }
    }
    for (alert, touched) in alerts.iter_mut().zip(&touched) {
        let after = len.saturating_sub(alert.index + 1);
        if !touched && alert.state == AlertState::Provisional && after >= config.min_points_after {
            alert.state = AlertState::Retracted;
        }
    }
    if let Some(p) = detection.provisional {
        let open = alerts.iter().any(|a| a.state == AlertState::Provisional && a.kind == p.kind);
        let explained = alerts.iter().any(|a| a.index == p.index);
        if !open && !explained {
            alerts.push(Alert {
                index: p.index,
                state: AlertState::Provisional,
                kind: p.kind,
                before: p.expected,
                after: p.value,
                change: relative_change(p.expected, p.value),
                p_value: None,
            });
        }
    }
    alerts.sort_by_key(|a| a.index);
    alerts
}

/// The commits that may have caused a change, as inclusive ordinals in commit order (the
/// caller numbers commits, e.g. by topological order, and maps ordinals back to ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CommitRange {
    /// First suspect: the commit right after the last point before the change.
    pub first: u64,
    /// Last suspect: the commit of the first changed point.
    pub last: u64,
}

impl CommitRange {
    /// The range for a change at `index` of a series whose points were measured at commit
    /// ordinals `ordinals` (increasing). `None` if `index` is out of range.
    pub fn of_index(ordinals: &[u64], index: usize) -> Option<CommitRange> {
        let last = *ordinals.get(index)?;
        let first = match index.checked_sub(1) {
            Some(prev) => ordinals.get(prev).map_or(last, |p| (p + 1).min(last)),
            None => last,
        };
        Some(CommitRange { first, last })
    }

    /// Whether the two ranges share a commit.
    pub fn overlaps(&self, other: &CommitRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// An alert with the series it belongs to and its suspect commits.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesAlert<S> {
    /// The caller's series key.
    pub series: S,
    /// The alert.
    pub alert: Alert,
    /// The commits that may have caused it.
    pub range: CommitRange,
}

/// Alerts of several series that one commit range explains.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertGroup<S> {
    /// The commits every member's range contains (the intersection).
    pub range: CommitRange,
    /// The grouped alerts, by their range's first commit.
    pub alerts: Vec<SeriesAlert<S>>,
}

/// Groups alerts whose commit ranges share at least one commit with every other member of the
/// group (greedily, in order of first suspect commit). Retracted alerts are left out. Groups come
/// in commit order.
pub fn group_alerts<S: Clone>(alerts: &[SeriesAlert<S>]) -> Vec<AlertGroup<S>> {
    let mut live: Vec<&SeriesAlert<S>> =
        alerts.iter().filter(|a| a.alert.state != AlertState::Retracted).collect();
    live.sort_by_key(|a| (a.range.first, a.range.last));
    let mut groups: Vec<AlertGroup<S>> = Vec::new();
    for a in live {
        match groups.last_mut() {
            Some(g) if g.range.overlaps(&a.range) => {
                g.range = CommitRange {
                    first: g.range.first.max(a.range.first),
                    last: g.range.last.min(a.range.last),
                };
                g.alerts.push(a.clone());
            }
            _ => groups.push(AlertGroup { range: a.range, alerts: vec![a.clone()] }),
        }
    }
    groups
}
