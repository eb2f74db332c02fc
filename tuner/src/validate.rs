//! Validation of the simulator against the engine: the same configs, the same request
//! stream, predicted and measured side by side, and the error of each headline figure.
//!
//! `dyno validate` runs every [`ValidationCase`] twice — through the [`SimulatedEvaluator`]
//! (the hardware profile's step-time model driving the engine's scheduler) and through the
//! [`MeasuredEvaluator`] (the engine on this machine over loopback HTTP) — at the same
//! open-loop rate and request count, so both see the same arrivals and lengths. Each case is
//! stored as one trial of a validation study, its prediction and its measurement in the
//! trial's two columns.

use std::fmt::Write as _;

use dyno_engine::config::{BatchPolicy, EngineConfig, Priority};
use dyno_engine::{ModelConfig, WeightFormat};
use dyno_results::store::{Study, Trial};
use serde::{Deserialize, Serialize};

use crate::evaluate::{MeasuredEvaluator, SimulatedEvaluator};
use crate::objective::TrialMetrics;

/// One config to validate, with a short name for the table.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationCase {
    /// Table label (`f32 default`, `int4-g128 dp2`).
    pub name: String,
    /// The config.
    pub config: EngineConfig,
}

/// The stored settings of a validation study (`kind: validation`, so readers tell it from a
/// tuning study).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ValidationSettings {
    /// Always `validation`.
    pub kind: String,
    /// Hardware target.
    pub hw: String,
    /// The profile the predictions came from, with its calibration state.
    pub profile: String,
    /// Model name.
    pub model: String,
    /// Workload name.
    pub workload: String,
    /// Open-loop rate of every run, requests per second.
    pub rate: f64,
    /// Requests per run.
    pub requests: usize,
}

/// One case's outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValidationRow {
    /// The case's name.
    pub name: String,
    /// What the simulator predicted.
    pub predicted: TrialMetrics,
    /// What the engine did, or why the measurement failed.
    pub measured: Result<TrialMetrics, String>,
}

/// The built-in cases for a CPU target with `cores` cores: the engine's default config and
/// variations of weight format, batch knobs, priority and layout that the tuner turns.
pub fn cpu_cases(cores: usize) -> Vec<ValidationCase> {
    let base = EngineConfig { threads: cores, ..EngineConfig::default() };
    let with = |name: &str, f: &dyn Fn(&mut EngineConfig)| {
        let mut config = base.clone();
        f(&mut config);
        ValidationCase { name: name.to_string(), config }
    };
    let continuous = |seqs, tokens, chunk, priority| BatchPolicy::Continuous {
        max_num_seqs: seqs,
        max_num_batched_tokens: tokens,
        prefill_chunk: chunk,
        priority,
    };
    let mut cases = vec![
        with("f32 default", &|_| {}),
        with("int8", &|c| c.set_weight_format(WeightFormat::Int8)),
        with("int4-g128", &|c| c.set_weight_format(WeightFormat::Int4 { group: 128 })),
        with("f32 seqs4 chunk128", &|c| {
            c.batch = continuous(4, 512, 128, Priority::DecodeFirst);
        }),
        with("bf16 prefill-first", &|c| {
            c.set_weight_format(WeightFormat::Bf16);
            c.batch = continuous(16, 1024, 256, Priority::PrefillFirst);
        }),
    ];
    if cores >= 2 {
        cases.push(with("int4-g128 dp2", &|c| {
            c.set_weight_format(WeightFormat::Int4 { group: 128 });
            c.threads = (cores / 2).max(1);
            c.parallel.dp = 2;
        }));
    }
    cases
}

/// Predicts and measures one case; the measurement's error is kept, not raised.
pub async fn run_case(
    case: &ValidationCase,
    simulated: &SimulatedEvaluator,
    measured: &MeasuredEvaluator,
) -> Result<ValidationRow, String> {
    use crate::evaluate::Evaluator;
    let predicted = simulated.evaluate(&case.config, 1.0, None).await?;
    let measured = measured.evaluate(&case.config, 1.0, None).await;
    Ok(ValidationRow { name: case.name.clone(), predicted, measured })
}

/// Whether `model` can run every case: the cases whose configs do not validate for it are
/// named with the reason.
pub fn check_cases(model: &ModelConfig, cases: &[ValidationCase]) -> Result<(), String> {
    for c in cases {
        c.config
            .validate_for(model, &c.name)
            .map_err(|e| format!("case `{}`: {}: {}", c.name, e.field, e.reason))?;
    }
    Ok(())
}

/// The rows of a stored validation study: case names from the study's `search_space.cases`
/// (in trial order), predictions and measurements from its trials.
pub fn rows_from_study(study: &Study, trials: &[Trial]) -> Vec<ValidationRow> {
    let names = study.search_space.get("cases").and_then(serde_json::Value::as_array);
    trials
        .iter()
        .filter_map(|t| {
            let predicted: TrialMetrics = serde_json::from_value(t.predicted.clone()?).ok()?;
            let name = names
                .and_then(|n| n.get(t.number as usize))
                .and_then(serde_json::Value::as_str)
                .map_or_else(|| format!("trial {}", t.number), str::to_string);
            let measured = match &t.measured {
                Some(m) => serde_json::from_value(m.clone()).map_err(|e| e.to_string()),
                None => Err(t.error.clone().unwrap_or_else(|| format!("{}", t.status))),
            };
            Some(ValidationRow { name, predicted, measured })
        })
        .collect()
}

/// Whether a stored study's settings are a validation study's.
pub fn is_validation(settings: &serde_json::Value) -> bool {
    settings.get("kind").and_then(serde_json::Value::as_str) == Some("validation")
}

/// The error table: per case, predicted and measured throughput and the relative error of
/// throughput, p50/p99 TTFT and p50/p99 TPOT; then the mean |error| of each column.
pub fn render_table(rows: &[ValidationRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<22} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "config",
        "pred req/s",
        "meas req/s",
        "tput err",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99"
    );
    let mut sums = [0.0f64; 5];
    let mut counts = [0usize; 5];
    for row in rows {
        match &row.measured {
            Ok(m) => {
                let errors = row.predicted.errors_against(m);
                let cells: Vec<String> = errors
                    .iter()
                    .enumerate()
                    .map(|(i, (_, e))| {
                        if e.is_finite() {
                            sums[i] += e.abs();
                            counts[i] += 1;
                            format!("{:+.1}%", e * 100.0)
                        } else {
                            "-".into()
                        }
                    })
                    .collect();
                let _ = writeln!(
                    s,
                    "{:<22} {:>10.3} {:>10.3} {:>8} {:>9} {:>9} {:>9} {:>9}",
                    row.name,
                    row.predicted.request_throughput,
                    m.request_throughput,
                    cells[0],
                    cells[1],
                    cells[2],
                    cells[3],
                    cells[4]
                );
            }
            Err(e) => {
                let _ = writeln!(
                    s,
                    "{:<22} {:>10.3} {:>10}  measurement failed: {e}",
                    row.name, row.predicted.request_throughput, "-"
                );
            }
        }
    }
    let mean = |i: usize| {
        if counts[i] == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", 100.0 * sums[i] / counts[i] as f64)
        }
    };
    let _ = writeln!(
        s,
        "{:<22} {:>10} {:>10} {:>8} {:>9} {:>9} {:>9} {:>9}",
        "mean |error|",
        "",
        "",
        mean(0),
        mean(1),
        mean(2),
        mean(3),
        mean(4)
    );
    s
}

/// Also shows predicted and measured latencies (ms) per case, for the record.
pub fn render_figures(rows: &[ValidationRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<22} {:>19} {:>19} {:>19} {:>19}",
        "config (pred / meas)", "TTFT p50 ms", "TTFT p99 ms", "TPOT p50 ms", "TPOT p99 ms"
    );
    for row in rows {
        let Ok(m) = &row.measured else { continue };
        let p = &row.predicted;
        let pair = |a: f64, b: f64| format!("{a:.0} / {b:.0}");
        let pair1 = |a: f64, b: f64| format!("{a:.1} / {b:.1}");
        let _ = writeln!(
            s,
            "{:<22} {:>19} {:>19} {:>19} {:>19}",
            row.name,
            pair(p.ttft_p50_ms, m.ttft_p50_ms),
            pair(p.ttft_p99_ms, m.ttft_p99_ms),
            pair1(p.tpot_p50_ms, m.tpot_p50_ms),
            pair1(p.tpot_p99_ms, m.tpot_p99_ms)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(tput: f64, ttft50: f64, ttft99: f64, tpot50: f64, tpot99: f64) -> TrialMetrics {
        TrialMetrics {
            rate: 1.0,
            goodput: tput,
            request_throughput: tput,
            output_throughput: 100.0 * tput,
            ttft_p50_ms: ttft50,
            ttft_p99_ms: ttft99,
            tpot_p50_ms: tpot50,
            tpot_p99_ms: tpot99,
            e2el_p99_ms: 0.0,
            slo_attainment: 1.0,
            slo_met: true,
            requests: 10,
            failed: 0,
            duration_s: 10.0,
            load_tests: 1,
            kl: 0.0,
        }
    }

    #[test]
    fn the_table_shows_signed_errors_and_their_mean_magnitude() {
        let rows = vec![
            ValidationRow {
                name: "a".into(),
                predicted: metrics(1.1, 90.0, 220.0, 10.0, 20.0),
                measured: Ok(metrics(1.0, 100.0, 200.0, 10.0, 25.0)),
            },
            ValidationRow {
                name: "b".into(),
                predicted: metrics(0.7, 100.0, 200.0, 12.0, 20.0),
                measured: Ok(metrics(1.0, 100.0, 200.0, 10.0, 20.0)),
            },
            ValidationRow {
                name: "c".into(),
                predicted: metrics(1.0, 1.0, 1.0, 1.0, 1.0),
                measured: Err("engine: boom".into()),
            },
        ];
        let t = render_table(&rows);
        let line = |name: &str| t.lines().find(|l| l.starts_with(name)).unwrap().to_string();
        assert!(line("a ").contains("+10.0%") && line("a ").contains("-10.0%"), "{t}");
        assert!(line("a ").contains("-20.0%"), "{t}");
        assert!(line("b ").contains("-30.0%") && line("b ").contains("+20.0%"), "{t}");
        assert!(line("c ").contains("measurement failed: engine: boom"), "{t}");
        // Throughput: (10% + 30%) / 2; TTFT p50: (10% + 0) / 2; TPOT p99: (20% + 0) / 2.
        let mean = line("mean |error|");
        assert!(mean.contains("20.0%") && mean.contains("5.0%") && mean.contains("10.0%"), "{t}");
    }

    #[test]
    fn the_builtin_cases_are_valid_for_mini_and_fit_the_cores() {
        let mini = ModelConfig::preset("mixtral-mini").unwrap();
        let cases = cpu_cases(2);
        assert!(cases.len() >= 5);
        check_cases(&mini, &cases).unwrap();
        for c in &cases {
            let p = c.config.parallel;
            assert!(p.ranks_per_replica() * p.dp * c.config.threads <= 2, "{}", c.name);
        }
    }
}
