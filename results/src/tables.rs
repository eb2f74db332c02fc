//! Plain-text views of what the store holds, for the command line: runs (`dyno db runs`),
//! alerts with their triage (`dyno alerts`), and the formatting helpers they and
//! [`crate::compare`] share.

use serde::Serialize;

use crate::store::{Alert, RunSummary, TriageEvent};

/// The first 10 characters of a commit hash.
pub fn short_sha(sha: &str) -> &str {
    sha.get(..10).unwrap_or(sha)
}

/// A number with about 4 significant digits: plain between 0.001 and 100000, scientific
/// outside.
pub fn fmt_value(x: f64) -> String {
    let a = x.abs();
    if x == 0.0 {
        "0".to_string()
    } else if !x.is_finite() || !(1e-3..1e5).contains(&a) {
        format!("{x:.3e}")
    } else {
        // Digits after the point so that about 4 significant digits show.
        let decimals = (3 - a.log10().floor() as i32).clamp(0, 6) as usize;
        format!("{x:.decimals$}")
    }
}

/// Unix milliseconds as `YYYY-MM-DD HH:MM:SS` UTC. Hand-written (the civil-from-days
/// conversion of H. Hinnant's date algorithms) because this one line does not justify a date
/// crate in the workspace.
pub fn fmt_unix_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Columns padded to their widest cell (by characters), two spaces apart, trailing spaces
/// trimmed; one line per row after the header.
pub fn render_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            } else {
                widths.push(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (i, cell) in cells.enumerate() {
            let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(cell.chars().count());
            s.push_str(cell);
            s.push_str(&" ".repeat(pad + 2));
        }
        let mut s = s.trim_end().to_string();
        s.push('\n');
        s
    };
    let mut out = line(&mut header.iter().copied());
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

/// The runs table of `dyno db runs`: id, commit, branch, trigger, status, start (UTC).
pub fn render_runs(runs: &[RunSummary]) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                short_sha(&r.commit.sha).to_string(),
                r.branch.clone(),
                r.trigger.clone(),
                r.status.to_string(),
                fmt_unix_ms(r.started_at),
            ]
        })
        .collect();
    render_table(&["id", "commit", "branch", "trigger", "status", "started (UTC)"], &rows)
}

/// A triage step a person takes on an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TriageAction {
    /// Seen; someone is looking (`dyno alerts ack`).
    Acknowledged,
    /// The regression was fixed.
    Fixed,
    /// Not a real change (noise, a broken machine, ...).
    Invalid,
    /// A real change, and a welcome one.
    Improvement,
}

impl TriageAction {
    /// Every action, in the order forms and help list them.
    pub const ALL: [TriageAction; 4] = [
        TriageAction::Acknowledged,
        TriageAction::Fixed,
        TriageAction::Invalid,
        TriageAction::Improvement,
    ];

    /// The action stored as `name`, if any.
    pub fn parse(name: &str) -> Option<TriageAction> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The name stored in the triage history.
    pub fn as_str(self) -> &'static str {
        match self {
            TriageAction::Acknowledged => "acknowledged",
            TriageAction::Fixed => "fixed",
            TriageAction::Invalid => "invalid",
            TriageAction::Improvement => "improvement",
        }
    }
}

/// An alert with its triage history, oldest step first.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    /// The alert.
    pub alert: Alert,
    /// Its triage steps.
    pub history: Vec<TriageEvent>,
}

fn kind(alert: &Alert) -> &'static str {
    if alert.info.regression { "regression" } else { "improvement" }
}

fn fmt_change(pct: f64) -> String {
    format!("{pct:+.1}%")
}

fn fmt_p(p: Option<f64>) -> String {
    match p {
        None => "-".to_string(),
        Some(p) if p < 1e-6 => "<1e-6".to_string(),
        Some(p) if p < 0.001 => format!("{p:.1e}"),
        Some(p) => format!("{p:.3}"),
    }
}

/// The alerts table of `dyno alerts`: id, state, kind, scenario, measure, commit, before →
/// after, change, p-value and the latest triage action.
pub fn render_alerts(alerts: &[AlertView]) -> String {
    let rows: Vec<Vec<String>> = alerts
        .iter()
        .map(|v| {
            let a = &v.alert.info;
            vec![
                v.alert.id.to_string(),
                a.state.as_str().to_string(),
                kind(&v.alert).to_string(),
                a.series.scenario.clone(),
                a.series.measure.clone(),
                short_sha(&a.commit).to_string(),
                format!("{} → {} {}", fmt_value(a.before), fmt_value(a.after), a.series.unit),
                fmt_change(a.change_pct),
                fmt_p(a.p_value),
                v.history.last().map_or_else(|| "-".to_string(), |e| e.action.clone()),
            ]
        })
        .collect();
    render_table(
        &[
            "id",
            "state",
            "kind",
            "scenario",
            "measure",
            "commit",
            "before → after",
            "change",
            "p",
            "triage",
        ],
        &rows,
    )
}

/// One alert in full (`dyno alerts show`), with every triage step.
pub fn render_alert(view: &AlertView) -> String {
    let alert = &view.alert;
    let a = &alert.info;
    let k = &a.series;
    let mut out = format!(
        "alert {}: {} {} ({})\n",
        alert.id,
        a.state.as_str(),
        kind(alert),
        if k.lower_is_better { "lower is better" } else { "higher is better" }
    );
    let lines = [
        ("series", format!("{} / {} [{}]", k.scenario, k.measure, k.unit)),
        ("commit", a.commit.clone()),
        ("branch", k.branch.clone()),
        ("testbed", short_sha(&k.testbed).to_string()),
        ("config", k.config_hash.clone()),
        (
            "change",
            format!(
                "{} → {} {} ({})",
                fmt_value(a.before),
                fmt_value(a.after),
                k.unit,
                fmt_change(a.change_pct)
            ),
        ),
        ("p-value", fmt_p(a.p_value)),
        ("group", alert.group.map_or_else(|| "-".to_string(), |g| g.to_string())),
        ("reported", fmt_unix_ms(alert.created_at)),
        ("updated", fmt_unix_ms(alert.updated_at)),
    ];
    for (name, value) in lines {
        out.push_str(&format!("  {name:<9} {value}\n"));
    }
    if view.history.is_empty() {
        out.push_str("  triage    none yet\n");
    } else {
        out.push_str("  triage:\n");
        for e in &view.history {
            let by = e.author.as_deref().map(|a| format!(" by {a}")).unwrap_or_default();
            out.push_str(&format!(
                "    {} {}{by}: {}\n",
                fmt_unix_ms(e.created_at),
                e.action,
                e.note
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triage_actions_parse_from_their_stored_names() {
        for a in TriageAction::ALL {
            assert_eq!(TriageAction::parse(a.as_str()), Some(a));
        }
        assert_eq!(TriageAction::parse("ack"), None);
    }

    #[test]
    fn dates_are_utc_civil_time() {
        assert_eq!(fmt_unix_ms(0), "1970-01-01 00:00:00");
        assert_eq!(fmt_unix_ms(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(fmt_unix_ms(1_700_000_000_999), "2023-11-14 22:13:20");
        assert_eq!(fmt_unix_ms(-1000), "1969-12-31 23:59:59");
    }

    #[test]
    fn values_keep_about_four_digits() {
        assert_eq!(fmt_value(0.0), "0");
        assert_eq!(fmt_value(123.456), "123.5");
        assert_eq!(fmt_value(1.5), "1.500");
        assert_eq!(fmt_value(0.0125), "0.01250");
        assert_eq!(fmt_value(12345.6), "12346");
        assert_eq!(fmt_value(4.096e10), "4.096e10");
    }

    #[test]
    fn tables_align_columns() {
        let t = render_table(&["a", "bb"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "a    bb\nxyz  1\n");
    }
}
