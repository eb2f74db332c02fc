//! The markdown summary of an analysed run: what `dyno nightly` prints and writes for a CI job
//! summary or a pull-request comment.

use std::fmt::Write;

use crate::analyze::{RunAnalysis, SeriesAnalysis};
use crate::store::{Alert, AlertState, RunRecord};

/// A scenario that failed to run, for the summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioFailure {
    /// Scenario name.
    pub scenario: String,
    /// Why, in one line.
    pub error: String,
}

fn short(sha: &str) -> &str {
    sha.get(..10).unwrap_or(sha)
}

/// A value with its unit, with 4 significant digits.
fn value_text(x: f64, unit: &str) -> String {
    let digits = if x == 0.0 { 0 } else { (3 - x.abs().log10().floor() as i32).clamp(0, 6) };
    let num = format!("{x:.prec$}", prec = usize::try_from(digits).unwrap_or(0));
    if unit.is_empty() { num } else { format!("{num} {unit}") }
}

fn pct(x: Option<f64>) -> String {
    x.map_or_else(|| "–".to_string(), |c| format!("{:+.1}%", c * 100.0))
}

fn alert_text(a: &Alert) -> String {
    let what = if a.info.regression { "regression" } else { "improvement" };
    let p = a.info.p_value.map_or_else(String::new, |p| format!(", p={p:.1e}"));
    format!("{} {what} #{} ({:+.1}%{p})", a.info.state.as_str(), a.id, a.info.change_pct)
}

/// The newest alert of a series worth showing beside its value: one opened or changed by this
/// run, else an open (not retracted) one at the run's commit.
fn series_alert(s: &SeriesAnalysis) -> String {
    let at_commit = |a: &&Alert| {
        s.point.as_ref().is_some_and(|p| p.sha == a.info.commit)
            && a.info.state != AlertState::Retracted
    };
    s.changed
        .last()
        .or_else(|| s.alerts.iter().rfind(at_commit))
        .map_or_else(String::new, alert_text)
}

/// Escapes a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// Renders the summary: a headline (commit, branch, machine, status, verdict), the failed
/// scenarios, the alerts this run opened or changed, and one table per scenario with each
/// measure's value, change vs the previous point and vs the baseline, and its alert.
pub fn render_summary(
    record: &RunRecord,
    analysis: &RunAnalysis,
    failures: &[ScenarioFailure],
) -> String {
    let mut out = String::new();
    let run = &record.run;
    let machine = run.testbed.spec.get("cpu_model").and_then(|v| v.as_str()).unwrap_or("?");
    let _ = writeln!(
        out,
        "# dyno {}: `{}` on `{}`\n",
        run.trigger,
        short(&run.commit.sha),
        cell(&run.branch)
    );
    let verdict = match (analysis.open_regressions.len(), failures.len()) {
        (0, 0) => "no open regression".to_string(),
        (0, f) => format!("{f} scenario(s) failed"),
        (r, 0) => format!("**{r} confirmed regression(s)**"),
        (r, f) => format!("**{r} confirmed regression(s)**, {f} scenario(s) failed"),
    };
    let _ = writeln!(
        out,
        "Run {} ({}) on {}: {} series, {verdict}.\n",
        run.id,
        run.status,
        cell(machine),
        analysis.series.len()
    );
    if !failures.is_empty() {
        let _ = writeln!(out, "## Failed scenarios\n");
        for f in failures {
            let _ = writeln!(out, "- `{}`: {}", cell(&f.scenario), cell(&f.error));
        }
        out.push('\n');
    }
    if !analysis.open_regressions.is_empty() {
        let _ = writeln!(out, "## Open regressions\n");
        let _ =
            writeln!(out, "| alert | scenario | measure | commit | before → after | change | p |");
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for a in &analysis.open_regressions {
            let s = &a.info.series;
            let _ = writeln!(
                out,
                "| #{} | {} | {} | `{}` | {} → {} | {:+.1}% | {} |",
                a.id,
                cell(&s.scenario),
                cell(&s.measure),
                short(&a.info.commit),
                value_text(a.info.before, &s.unit),
                value_text(a.info.after, &s.unit),
                a.info.change_pct,
                a.info.p_value.map_or_else(|| "–".into(), |p| format!("{p:.1e}")),
            );
        }
        let _ = writeln!(
            out,
            "\nTriage with `dyno alerts ack ID --note TEXT` (or fixed / invalid / improvement).\n"
        );
    }
    let mut scenario: Option<&str> = None;
    for s in &analysis.series {
        if scenario != Some(s.key.scenario.as_str()) {
            scenario = Some(s.key.scenario.as_str());
            let _ = writeln!(out, "## {}\n", cell(&s.key.scenario));
            let _ = writeln!(out, "| measure | value | vs previous | vs baseline | alert |");
            let _ = writeln!(out, "|---|---|---|---|---|");
        }
        let value =
            s.point.as_ref().map_or_else(|| "–".to_string(), |p| value_text(p.value, &s.key.unit));
        let arrow = if s.key.lower_is_better { "↓" } else { "↑" };
        let _ = writeln!(
            out,
            "| {} {arrow} | {value} | {} | {} | {} |",
            cell(&s.key.measure),
            pct(s.change_vs(s.previous)),
            pct(s.change_vs(s.baseline)),
            series_alert(s),
        );
        let next = analysis.series.iter().skip_while(|x| !std::ptr::eq(*x, s)).nth(1);
        if next.is_none_or(|n| n.key.scenario != s.key.scenario) {
            out.push('\n');
        }
    }
    let _ = writeln!(
        out,
        "↓ lower is better, ↑ higher is better. Baseline: mean of the series since its last \
         confirmed change."
    );
    out
}
