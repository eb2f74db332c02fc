//! `GET /metrics`: the engine's counters in the Prometheus text exposition format 0.0.4.
//!
//! Hand-written rather than through a client library: the engine keeps its own counters
//! ([`EngineMetrics`] is a snapshot), so all that is needed is the text rendering of a dozen
//! series, which is short and fully specified.

use std::fmt::Write;

use crate::api::{EngineMetrics, Histogram};

/// The `Content-Type` of the exposition format.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders a snapshot.
pub(crate) fn render(m: &EngineMetrics) -> String {
    let mut out = String::new();
    let gauges: [(&str, &str, usize); 4] = [
        ("dyno_requests_waiting", "Requests waiting to start.", m.waiting),
        ("dyno_requests_running", "Sequences in the running batch.", m.running),
        ("dyno_kv_blocks_used", "KV cache blocks holding tokens.", m.kv_blocks_used),
        ("dyno_kv_blocks_free", "KV cache blocks free.", m.kv_blocks_free),
    ];
    for (name, help, value) in gauges {
        series(&mut out, name, help, "gauge", value as u64);
    }
    let counters: [(&str, &str, u64); 5] = [
        (
            "dyno_preemptions_total",
            "Sequences preempted (to be recomputed) since start.",
            m.preemptions_total,
        ),
        (
            "dyno_prompt_tokens_total",
            "Prompt tokens computed since start, recomputation included.",
            m.prompt_tokens_total,
        ),
        ("dyno_generated_tokens_total", "Tokens generated since start.", m.generated_tokens_total),
        (
            "dyno_requests_finished_total",
            "Requests that finished (stop or length) since start.",
            m.requests_finished_total,
        ),
        (
            "dyno_requests_aborted_total",
            "Requests aborted (client gone or shutdown) since start.",
            m.requests_aborted_total,
        ),
    ];
    for (name, help, value) in counters {
        series(&mut out, name, help, "counter", value);
    }
    histogram(
        &mut out,
        "dyno_step_seconds",
        "Wall time of each engine step (forward pass and sampling), seconds.",
        &m.step_seconds,
    );
    out
}

fn series(out: &mut String, name: &str, help: &str, kind: &str, value: u64) {
    // Writing to a String cannot fail.
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n");
}

fn histogram(out: &mut String, name: &str, help: &str, h: &Histogram) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
    let mut cumulative = 0u64;
    for (i, bound) in h.bounds.iter().enumerate() {
        cumulative += h.counts.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {cumulative}", float(*bound));
    }
    // The +Inf bucket holds every observation: it equals `_count` by definition.
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum {}", float(h.sum));
    let _ = writeln!(out, "{name}_count {}", h.count);
}

/// A float as Prometheus reads it (`+Inf`, `-Inf`, `NaN` spelled its way).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_exposition_format() {
        let mut step = Histogram::new(vec![0.25, 0.5, 1.0]);
        for v in [0.125, 0.375, 0.375, 2.0] {
            step.observe(v);
        }
        let m = EngineMetrics {
            waiting: 1,
            running: 2,
            kv_blocks_used: 3,
            kv_blocks_free: 4,
            preemptions_total: 5,
            prompt_tokens_total: 6,
            generated_tokens_total: 7,
            requests_finished_total: 8,
            requests_aborted_total: 9,
            step_seconds: step,
        };
        let text = render(&m);
        let expected_tail = "\
# HELP dyno_step_seconds Wall time of each engine step (forward pass and sampling), seconds.
# TYPE dyno_step_seconds histogram
dyno_step_seconds_bucket{le=\"0.25\"} 1
dyno_step_seconds_bucket{le=\"0.5\"} 3
dyno_step_seconds_bucket{le=\"1\"} 3
dyno_step_seconds_bucket{le=\"+Inf\"} 4
dyno_step_seconds_sum 2.875
dyno_step_seconds_count 4
";
        assert!(text.ends_with(expected_tail), "{text}");
        assert!(text.starts_with(
            "# HELP dyno_requests_waiting Requests waiting to start.\n\
             # TYPE dyno_requests_waiting gauge\n\
             dyno_requests_waiting 1\n"
        ));
        for (name, kind, value) in [
            ("dyno_requests_running", "gauge", 2),
            ("dyno_kv_blocks_used", "gauge", 3),
            ("dyno_kv_blocks_free", "gauge", 4),
            ("dyno_preemptions_total", "counter", 5),
            ("dyno_prompt_tokens_total", "counter", 6),
            ("dyno_generated_tokens_total", "counter", 7),
            ("dyno_requests_finished_total", "counter", 8),
            ("dyno_requests_aborted_total", "counter", 9),
        ] {
            assert!(text.contains(&format!("# TYPE {name} {kind}\n{name} {value}\n")), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
        // Every line is a comment or `name{labels} value`, and each family has HELP and TYPE.
        assert_eq!(text.matches("# HELP ").count(), 10);
        assert_eq!(text.matches("# TYPE ").count(), 10);
        assert!(text.lines().all(|l| l.starts_with("# ") || l.split(' ').count() == 2));
    }

    #[test]
    fn floats_use_prometheus_spelling() {
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(float(0.0025), "0.0025");
        assert_eq!(float(10.0), "10");
    }
}
