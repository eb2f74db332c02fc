//! The tuner's output: the best config as engine-config YAML (what `dyno serve --config`
//! reads, unchanged) under a comment header that says where it came from and what it achieved.

use dyno_engine::EngineConfig;

use crate::evaluate::LoadLevel;
use crate::study::StudyReport;

/// Where the emitted figures come from, for the header.
#[derive(Debug, Clone)]
pub struct Provenance {
    /// The hardware, in words (`cpu: AMD EPYC 7B13, 2 cores`).
    pub hardware: String,
    /// dyno's version.
    pub version: String,
    /// The commit dyno was built from, if known.
    pub commit: Option<String>,
    /// Set when the figures are the simulator's: the hardware profile they came from
    /// (`h100-sxm, uncalibrated (datasheet + heuristic)`) and the device count.
    pub predicted_by: Option<String>,
    /// Set when the measured points were chosen by the simulator first (simulate, then
    /// measure the top few): how they were chosen, with the profile's provenance
    /// (`the top 5 of 2000 points predicted from profile cpu-…, calibrated (…)`).
    pub screened_by: Option<String>,
    /// Further lines for the header (where kernel tiles came from, what was not checked).
    pub notes: Vec<String>,
}

/// The best config of `report` as YAML with its header; `None` when no trial has finished.
pub fn best_config_yaml(
    report: &StudyReport,
    config: &EngineConfig,
    provenance: &Provenance,
) -> Option<String> {
    let best = &report.trials[report.best?];
    let m = best.metrics.as_ref()?;
    let s = &report.settings;
    let load = match s.level {
        LoadLevel::FixedRate { rate } => {
            format!("open loop at {rate} req/s, {} requests", s.requests)
        }
        LoadLevel::MaxRateUnderSlo { .. } => {
            format!(
                "highest open-loop rate meeting the SLOs ({:.3} req/s), {} requests per run",
                m.rate, s.requests
            )
        }
    };
    let point = &report.points[report.best_point?];
    let noun = if provenance.predicted_by.is_some() { "prediction" } else { "measurement" };
    let measured = |p: &crate::study::PointStats| {
        if p.scores.len() == 1 {
            format!("1 {noun}")
        } else {
            let each: Vec<String> = p.scores.iter().map(|v| format!("{v:.3}")).collect();
            format!("mean of {} {noun}s: {}", p.scores.len(), each.join(", "))
        }
    };
    let baseline = match (report.ratio_to_baseline(), report.baseline_point) {
        (Some(r), Some(b)) => {
            let b = &report.points[b];
            format!("{r:.2}× the default config's {:.3}, {}", b.mean, measured(b))
        }
        _ if provenance.predicted_by.is_some() => {
            "the default config was not evaluated (it does not fit the target)".into()
        }
        _ => "the default config was not measured".into(),
    };
    let achieved = if provenance.predicted_by.is_some() { "predicted" } else { "achieved" };
    let mut out = String::new();
    let mut line = |l: String| {
        out.push_str("# ");
        out.push_str(&l);
        out.push('\n');
    };
    line(format!("dyno tune: the best config found for {} on {}", s.model, provenance.hardware));
    line(format!("workload: {} ({load})", s.workload));
    line(format!(
        "objective: maximize {} subject to the workload's SLOs and KL ≤ {} nats against f32",
        s.goal, s.max_kl
    ));
    line(format!("{achieved}: {} {:.3} ({})", s.goal, point.mean, measured(point)));
    line(format!("          = {baseline}"));
    line(format!(
        "trial {}: goodput {:.3} req/s, output {:.1} tok/s, p99 TTFT {:.0} ms, p99 TPOT {:.1} ms,",
        best.number, m.goodput, m.output_throughput, m.ttft_p99_ms, m.tpot_p99_ms
    ));
    line(format!(
        "          SLO attainment {:.0}%, KL {:.2e} nats against f32",
        m.slo_attainment * 100.0,
        m.kl
    ));
    let figures = match &provenance.predicted_by {
        Some(by) => format!("PREDICTED by the simulator from profile {by}, not measured"),
        None => "measured on this machine".into(),
    };
    line(format!(
        "figures: {figures}; trial {} of study `{}` (id {}), {} strategy, seed {}",
        best.number, report.name, report.id, s.strategy, s.seed
    ));
    if let Some(by) = &provenance.screened_by {
        line(format!("chosen among {by}, then measured"));
        if let Some(p) = &report.predictions {
            let pct = |e: f64| {
                if e.is_finite() { format!("{:.0}%", e * 100.0) } else { "-".into() }
            };
            line(format!(
                "prediction error (mean |predicted − measured| ÷ measured over {} points): throughput {}, p99 TTFT {}, p99 TPOT {}",
                p.rows.len(),
                pct(p.mean_abs.throughput),
                pct(p.mean_abs.ttft_p99),
                pct(p.mean_abs.tpot_p99)
            ));
        }
    }
    for note in &provenance.notes {
        line(note.clone());
    }
    line(format!(
        "dyno {}{}",
        provenance.version,
        provenance.commit.as_deref().map(|c| format!(", commit {c}")).unwrap_or_default()
    ));
    out.push_str(&config.to_yaml());
    Some(out)
}
