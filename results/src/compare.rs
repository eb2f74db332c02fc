//! Comparing two stored runs measure by measure (`dyno compare RUN_A RUN_B`).
//!
//! For every scenario × measure present in both runs: both values, the ratio B/A, whether B is
//! better or worse in the measure's direction, and a two-sided Mann–Whitney U test on the raw
//! samples both runs stored (from [`CompareConfig::min_samples`] per side), so that a change
//! inside the noise is marked not significant. Scenarios are matched by name and measures by
//! name; what only one run has is listed apart.

use serde::Serialize;

use crate::detect::mann_whitney_u;
use crate::store::{MetricValue, RunRecord};
use crate::tables::{fmt_value, render_table};

/// How to compare.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompareConfig {
    /// Significance level of the Mann–Whitney test, in (0, 1).
    pub alpha: f64,
    /// Fewest raw samples each side needs for a test (below 4 per side the normal
    /// approximation cannot reach p ≤ 0.05 at all).
    pub min_samples: usize,
}

impl Default for CompareConfig {
    fn default() -> Self {
        CompareConfig { alpha: 0.05, min_samples: 5 }
    }
}

/// Why two runs cannot be compared as asked.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompareError {
    /// The significance level is not in (0, 1).
    #[error("alpha {0} is not in (0, 1)")]
    Alpha(f64),
    /// Fewer than two samples per side cannot be tested.
    #[error("min_samples {0} is below 2")]
    MinSamples(usize),
}

/// Whether B is better or worse than A in the measure's direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// B is better than A.
    Better,
    /// B is worse than A.
    Worse,
    /// The values are equal.
    Same,
}

impl Verdict {
    /// The verdict on a move from `a` to `b` for a measure where smaller is better when
    /// `lower_is_better`.
    pub fn of(lower_is_better: bool, a: f64, b: f64) -> Verdict {
        if a == b {
            Verdict::Same
        } else if (b < a) == lower_is_better {
            Verdict::Better
        } else {
            Verdict::Worse
        }
    }

    /// `better`, `worse` or `same`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Better => "better",
            Verdict::Worse => "worse",
            Verdict::Same => "same",
        }
    }
}

/// What the raw samples say about a row.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Significance {
    /// The Mann–Whitney test rejects equal distributions at alpha.
    Significant {
        /// U statistic of run A's samples.
        u: f64,
        /// Two-sided p-value.
        p_value: f64,
    },
    /// The test does not reject at alpha: the difference is within the noise.
    NotSignificant {
        /// U statistic of run A's samples.
        u: f64,
        /// Two-sided p-value.
        p_value: f64,
    },
    /// At least one run stored no raw samples for this measure.
    NoSamples,
    /// Both runs stored samples, but one has fewer than the minimum.
    TooFewSamples {
        /// The minimum per side.
        min: usize,
    },
}

impl Significance {
    /// The p-value when tested.
    pub fn p_value(&self) -> Option<f64> {
        match *self {
            Significance::Significant { p_value, .. }
            | Significance::NotSignificant { p_value, .. } => Some(p_value),
            _ => None,
        }
    }
}

/// One scenario × measure present in both runs.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompareRow {
    /// Scenario name.
    pub scenario: String,
    /// Measure name.
    pub measure: String,
    /// Unit.
    pub unit: String,
    /// True when smaller is better (run A's metadata).
    pub lower_is_better: bool,
    /// Run A's value.
    pub a: f64,
    /// Run B's value.
    pub b: f64,
    /// B / A; `None` when A is zero.
    pub ratio: Option<f64>,
    /// Better or worse in the measure's direction.
    pub verdict: Verdict,
    /// Raw samples stored by run A.
    pub samples_a: usize,
    /// Raw samples stored by run B.
    pub samples_b: usize,
    /// The test on the raw samples.
    pub significance: Significance,
}

/// A measure only one of the runs has.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Unmatched {
    /// Scenario name.
    pub scenario: String,
    /// Measure name.
    pub measure: String,
    /// Unit.
    pub unit: String,
    /// Its value in the run that has it.
    pub value: f64,
}

/// Two runs compared.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Run A's id.
    pub run_a: i64,
    /// Run B's id.
    pub run_b: i64,
    /// The significance level used.
    pub alpha: f64,
    /// Measures in both runs, in run A's order.
    pub rows: Vec<CompareRow>,
    /// Measures only run A has.
    pub only_a: Vec<Unmatched>,
    /// Measures only run B has.
    pub only_b: Vec<Unmatched>,
}

/// Every (scenario, value) of a run, first occurrence of each scenario × measure only.
fn values(run: &RunRecord) -> Vec<(&str, &MetricValue)> {
    let mut out: Vec<(&str, &MetricValue)> = Vec::new();
    for s in &run.scenarios {
        for v in &s.values {
            let name = s.scenario.name.as_str();
            if !out.iter().any(|(n, w)| *n == name && w.measure == v.measure) {
                out.push((name, v));
            }
        }
    }
    out
}

/// The value of `scenario` × `measure` among `vs`.
fn find<'a>(
    vs: &[(&str, &'a MetricValue)],
    scenario: &str,
    measure: &str,
) -> Option<&'a MetricValue> {
    vs.iter().find(|(n, v)| *n == scenario && v.measure == measure).map(|(_, v)| *v)
}

fn unmatched(scenario: &str, v: &MetricValue) -> Unmatched {
    Unmatched {
        scenario: scenario.to_string(),
        measure: v.measure.clone(),
        unit: v.unit.clone(),
        value: v.value,
    }
}

fn significance(a: &[f64], b: &[f64], config: &CompareConfig) -> Significance {
    if a.is_empty() || b.is_empty() {
        return Significance::NoSamples;
    }
    if a.len() < config.min_samples || b.len() < config.min_samples {
        return Significance::TooFewSamples { min: config.min_samples };
    }
    match mann_whitney_u(a, b) {
        Some((u, p_value)) if p_value <= config.alpha => Significance::Significant { u, p_value },
        Some((u, p_value)) => Significance::NotSignificant { u, p_value },
        // Only NaN samples make the test undefined; the store never holds them, but say so.
        None => Significance::NoSamples,
    }
}

/// Compares run `b` against run `a`.
pub fn compare(
    a: &RunRecord,
    b: &RunRecord,
    config: &CompareConfig,
) -> Result<Comparison, CompareError> {
    if !(config.alpha > 0.0 && config.alpha < 1.0) {
        return Err(CompareError::Alpha(config.alpha));
    }
    if config.min_samples < 2 {
        return Err(CompareError::MinSamples(config.min_samples));
    }
    let (va, vb) = (values(a), values(b));
    let mut rows = Vec::new();
    let mut only_a = Vec::new();
    for &(scenario, x) in &va {
        let Some(y) = find(&vb, scenario, &x.measure) else {
            only_a.push(unmatched(scenario, x));
            continue;
        };
        rows.push(CompareRow {
            scenario: scenario.to_string(),
            measure: x.measure.clone(),
            unit: x.unit.clone(),
            lower_is_better: x.lower_is_better,
            a: x.value,
            b: y.value,
            ratio: (x.value != 0.0).then(|| y.value / x.value),
            verdict: Verdict::of(x.lower_is_better, x.value, y.value),
            samples_a: x.samples.len(),
            samples_b: y.samples.len(),
            significance: significance(&x.samples, &y.samples, config),
        });
    }
    let only_b = vb
        .iter()
        .filter(|(scenario, y)| find(&va, scenario, &y.measure).is_none())
        .map(|&(scenario, y)| unmatched(scenario, y))
        .collect();
    Ok(Comparison { run_a: a.run.id, run_b: b.run.id, alpha: config.alpha, rows, only_a, only_b })
}

impl Comparison {
    /// The comparison as a plain-text table: one line per row with A, B, B/A, the verdict and
    /// the test (`p=…`, `n.s. (p=…)`, `no samples`, `too few samples (A n, B m)`), then the
    /// measures only one run has.
    pub fn render_text(&self) -> String {
        let mut out = format!(
            "run {} (A) vs run {} (B): {} measures in both, Mann-Whitney at alpha {}\n",
            self.run_a,
            self.run_b,
            self.rows.len(),
            self.alpha
        );
        let header = ["scenario", "measure", "unit", "A", "B", "B/A", "B vs A", "Mann-Whitney"];
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| {
                let test = match r.significance {
                    Significance::Significant { p_value, .. } => format!("p={}", fmt_p(p_value)),
                    Significance::NotSignificant { p_value, .. } => {
                        format!("n.s. (p={})", fmt_p(p_value))
                    }
                    Significance::NoSamples => "no samples".to_string(),
                    Significance::TooFewSamples { min } => format!(
                        "too few samples (A {}, B {}; need {min})",
                        r.samples_a, r.samples_b
                    ),
                };
                vec![
                    r.scenario.clone(),
                    r.measure.clone(),
                    r.unit.clone(),
                    fmt_value(r.a),
                    fmt_value(r.b),
                    r.ratio.map_or_else(|| "-".to_string(), |x| format!("{x:.3}")),
                    r.verdict.as_str().to_string(),
                    test,
                ]
            })
            .collect();
        if !rows.is_empty() {
            out.push_str(&render_table(&header, &rows));
        }
        for (which, list) in [("A", &self.only_a), ("B", &self.only_b)] {
            if list.is_empty() {
                continue;
            }
            out.push_str(&format!("only in run {which}:\n"));
            for u in list {
                out.push_str(&format!(
                    "  {} {} = {} {}\n",
                    u.scenario,
                    u.measure,
                    fmt_value(u.value),
                    u.unit
                ));
            }
        }
        out
    }
}

/// A p-value with 2 significant digits, `<1e-6` below that.
fn fmt_p(p: f64) -> String {
    if p < 1e-6 {
        "<1e-6".to_string()
    } else if p < 0.001 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{CommitInfo, RunStatus, RunSummary, Scenario, ScenarioResult, Testbed};

    fn value(measure: &str, lower_is_better: bool, value: f64, samples: Vec<f64>) -> MetricValue {
        MetricValue {
            measure: measure.to_string(),
            unit: "ms".to_string(),
            family: "latency".to_string(),
            lower_is_better,
            value,
            lower: None,
            upper: None,
            n: samples.len() as i64,
            samples,
        }
    }

    fn run(id: i64, scenarios: Vec<(&str, Vec<MetricValue>)>) -> RunRecord {
        RunRecord {
            run: RunSummary {
                id,
                commit: CommitInfo { sha: "abc".into(), timestamp: None, ordinal: None },
                branch: "main".into(),
                trigger: "manual".into(),
                status: RunStatus::Completed,
                idempotency_key: format!("k{id}"),
                environment: serde_json::json!({}),
                testbed: Testbed { spec: serde_json::json!({}) },
                started_at: 0,
                finished_at: None,
            },
            scenarios: scenarios
                .into_iter()
                .map(|(name, values)| ScenarioResult {
                    scenario: Scenario {
                        name: name.to_string(),
                        model: String::new(),
                        workload: String::new(),
                        config_hash: String::new(),
                        config: String::new(),
                    },
                    values,
                    histograms: vec![],
                })
                .collect(),
        }
    }

    /// Deterministic noise: 40 values spread evenly over ±1 around `center`, shuffled.
    fn noisy(center: f64, salt: usize) -> Vec<f64> {
        (0..40).map(|i| center + (((i * 17 + salt) % 40) as f64 / 20.0 - 1.0)).collect()
    }

    #[test]
    fn a_clear_shift_is_significant_and_identical_distributions_are_not() {
        let a = run(1, vec![("s", vec![value("lat", true, 10.0, noisy(10.0, 0))])]);
        let b = run(2, vec![("s", vec![value("lat", true, 12.0, noisy(12.0, 3))])]);
        let c = run(3, vec![("s", vec![value("lat", true, 10.0, noisy(10.0, 7))])]);
        let shifted = compare(&a, &b, &CompareConfig::default()).expect("compare");
        let row = &shifted.rows[0];
        assert_eq!(row.verdict, Verdict::Worse);
        assert_eq!(row.ratio, Some(1.2));
        assert!(
            matches!(row.significance, Significance::Significant { p_value, .. } if p_value < 1e-6)
        );

        let same = compare(&a, &c, &CompareConfig::default()).expect("compare");
        let row = &same.rows[0];
        assert!(
            matches!(row.significance, Significance::NotSignificant { p_value, .. } if p_value > 0.9),
            "{row:?}"
        );
        assert!(same.render_text().contains("n.s. (p="), "{}", same.render_text());
        assert!(shifted.render_text().contains("p=<1e-6"), "{}", shifted.render_text());
    }

    #[test]
    fn direction_decides_better_or_worse() {
        assert_eq!(Verdict::of(true, 10.0, 9.0), Verdict::Better);
        assert_eq!(Verdict::of(true, 10.0, 11.0), Verdict::Worse);
        assert_eq!(Verdict::of(false, 10.0, 11.0), Verdict::Better);
        assert_eq!(Verdict::of(false, 10.0, 9.0), Verdict::Worse);
        assert_eq!(Verdict::of(false, 10.0, 10.0), Verdict::Same);

        let a = run(1, vec![("s", vec![value("tput", false, 100.0, vec![])])]);
        let b = run(2, vec![("s", vec![value("tput", false, 150.0, vec![])])]);
        let cmp = compare(&a, &b, &CompareConfig::default()).expect("compare");
        assert_eq!(cmp.rows[0].verdict, Verdict::Better);
        assert_eq!(cmp.rows[0].ratio, Some(1.5));
    }

    #[test]
    fn missing_or_scarce_samples_are_said_so() {
        let a = run(
            1,
            vec![(
                "s",
                vec![value("none", true, 1.0, vec![]), value("few", true, 1.0, vec![1.0, 2.0])],
            )],
        );
        let b = run(
            2,
            vec![(
                "s",
                vec![
                    value("none", true, 2.0, noisy(2.0, 0)),
                    value("few", true, 2.0, noisy(2.0, 0)),
                ],
            )],
        );
        let cmp = compare(&a, &b, &CompareConfig::default()).expect("compare");
        assert_eq!(cmp.rows[0].significance, Significance::NoSamples);
        assert_eq!(cmp.rows[1].significance, Significance::TooFewSamples { min: 5 });
        let text = cmp.render_text();
        assert!(text.contains("no samples"), "{text}");
        assert!(text.contains("too few samples (A 2, B 40; need 5)"), "{text}");
    }

    #[test]
    fn measures_in_one_run_only_are_listed_apart() {
        let a = run(
            1,
            vec![
                ("s", vec![value("x", true, 1.0, vec![]), value("gone", true, 3.0, vec![])]),
                ("old", vec![value("x", true, 1.0, vec![])]),
            ],
        );
        let b = run(
            2,
            vec![("s", vec![value("x", true, 0.0, vec![]), value("new", true, 4.0, vec![])])],
        );
        let cmp = compare(&a, &b, &CompareConfig::default()).expect("compare");
        assert_eq!(cmp.rows.len(), 1);
        let only_a: Vec<(&str, &str)> =
            cmp.only_a.iter().map(|u| (u.scenario.as_str(), u.measure.as_str())).collect();
        assert_eq!(only_a, [("s", "gone"), ("old", "x")]);
        assert_eq!(cmp.only_b.len(), 1);
        assert_eq!(cmp.only_b[0].measure, "new");
        let text = cmp.render_text();
        assert!(text.contains("only in run A:") && text.contains("only in run B:"), "{text}");

        // A zero A value has no ratio.
        let zero = run(3, vec![("s", vec![value("x", true, 0.0, vec![])])]);
        let cmp = compare(&zero, &a, &CompareConfig::default()).expect("compare");
        assert_eq!(cmp.rows[0].ratio, None);
    }

    #[test]
    fn bad_settings_are_refused() {
        let a = run(1, vec![]);
        let bad = CompareConfig { alpha: 1.5, ..CompareConfig::default() };
        assert_eq!(compare(&a, &a, &bad), Err(CompareError::Alpha(1.5)));
        let bad = CompareConfig { min_samples: 1, ..CompareConfig::default() };
        assert_eq!(compare(&a, &a, &bad), Err(CompareError::MinSamples(1)));
    }
}
