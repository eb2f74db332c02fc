//! Metrics and report against hand-computed values. Expected numbers are literals computed
//! once with NumPy 2.4 (`np.percentile` linear, `np.mean`, `np.median`, `np.std`) on the same
//! samples; see the comments next to each.

use dyno_harness::{
    Distribution, ErrorKind, Histograms, JsonReport, LoadReport, RequestRecord, SummaryOptions,
    percentile, render_table,
};
use dyno_workloads::Slo;

/// Equal within 1e-9 relative (float noise of `t1 − t0` on literal times).
#[track_caller]
fn close(actual: f64, expected: f64) {
    let tol = 1e-9 * expected.abs().max(1.0);
    assert!((actual - expected).abs() <= tol, "got {actual}, expected {expected}");
}

#[track_caller]
fn close_dist(d: &Distribution, mean: f64, median: f64, std: f64, p99: f64, count: usize) {
    close(d.mean, mean);
    close(d.median, median);
    close(d.p50, median);
    close(d.std, std);
    close(d.p99, p99);
    assert_eq!(d.count, count);
}

#[test]
fn percentiles_match_numpy_linear() {
    // np.percentile([15, 20, 35, 40, 50], p)
    let xs = [15.0, 20.0, 35.0, 40.0, 50.0];
    for (p, want) in [
        (0.0, 15.0),
        (10.0, 17.0),
        (25.0, 20.0),
        (40.0, 29.0),
        (50.0, 35.0),
        (90.0, 46.0),
        (95.0, 48.0),
        (99.0, 49.6),
        (99.9, 49.96),
        (100.0, 50.0),
    ] {
        close(percentile(&xs, p), want);
    }

    // Even count, given unsorted: np.percentile([3.5, 1.0, 7.25, 2.0, 10.0, 4.0], p)
    let d = Distribution::from_samples(&[3.5, 1.0, 7.25, 2.0, 10.0, 4.0]);
    close(d.mean, 4.625);
    close(d.median, 3.75);
    close(d.std, 3.094854600784987);
    close(d.p90, 8.625);
    close(d.p95, 9.3125);
    close(d.p99, 9.8625);
    close(d.p999, 9.98625);
    close(d.min, 1.0);
    close(d.max, 10.0);
    assert_eq!(d.count, 6);
    let mut sorted = [3.5, 1.0, 7.25, 2.0, 10.0, 4.0];
    sorted.sort_by(f64::total_cmp);
    close(percentile(&sorted, 10.0), 1.5);
    close(percentile(&sorted, 25.0), 2.375);
    close(percentile(&sorted, 40.0), 3.5);

    // Single sample: every statistic is the sample, std 0.
    let d = Distribution::from_samples(&[42.0]);
    for v in [d.mean, d.median, d.p50, d.p90, d.p95, d.p99, d.p999, d.min, d.max] {
        assert_eq!(v, 42.0);
    }
    assert_eq!(d.std, 0.0);

    // np.percentile(np.arange(1, 12) / 10, p)
    let xs: Vec<f64> = (1..=11).map(|i| i as f64 / 10.0).collect();
    let d = Distribution::from_samples(&xs);
    close(d.mean, 0.6);
    close(d.std, 0.31622776601683794);
    close(d.p90, 1.0);
    close(d.p95, 1.05);
    close(d.p99, 1.09);
    close(d.p999, 1.099);

    // Empty: zeros (vLLM's `np.mean(xs or 0)`); non-finite samples dropped.
    assert_eq!(Distribution::from_samples(&[]), Distribution::default());
    let d = Distribution::from_samples(&[f64::NAN, 2.0, f64::INFINITY]);
    assert_eq!((d.count, d.mean, d.p99), (1, 2.0, 2.0));
}

/// A streamed success: sent on schedule unless `sent` differs from `intended`.
#[allow(clippy::too_many_arguments)]
fn ok(
    index: usize,
    warmup: bool,
    intended: f64,
    sent: f64,
    events: &[f64],
    completed: f64,
    prompt: usize,
    out: usize,
) -> RequestRecord {
    RequestRecord {
        index,
        warmup,
        intended_s: intended,
        sent_s: sent,
        first_byte_s: events.first().copied(),
        choice_events_s: events.to_vec(),
        first_content_s: events.first().copied(),
        completed_s: completed,
        prompt_tokens: prompt,
        usage_prompt_tokens: Some(prompt),
        output_tokens: Some(out),
        max_tokens: 16,
        status: Some(200),
        error: None,
        error_detail: None,
    }
}

#[allow(clippy::too_many_arguments)]
fn failed(
    index: usize,
    intended: f64,
    sent: f64,
    events: &[f64],
    completed: f64,
    prompt: usize,
    kind: ErrorKind,
    detail: Option<&str>,
) -> RequestRecord {
    RequestRecord {
        index,
        intended_s: intended,
        sent_s: sent,
        choice_events_s: events.to_vec(),
        completed_s: completed,
        prompt_tokens: prompt,
        max_tokens: 16,
        error: Some(kind),
        error_detail: detail.map(str::to_string),
        ..Default::default()
    }
}

/// One warm-up, four successes (A: 4 tokens, B: 2, C: 1 token, D: sent 0.3 s late) and three
/// failures (5xx, a timeout after a first token, a connect failure sent 0.2 s late), given
/// out of plan order.
fn records() -> Vec<RequestRecord> {
    vec![
        failed(6, 3.5, 3.5, &[3.9], 5.5, 60, ErrorKind::Timeout, None),
        ok(0, true, 0.0, 0.0, &[0.5, 1.0], 1.0, 5, 2),
        ok(1, false, 1.0, 1.0, &[1.2, 1.3, 1.5, 1.6], 1.61, 10, 4),
        ok(3, false, 2.0, 2.0, &[2.4], 2.45, 30, 1),
        ok(2, false, 1.5, 1.5, &[1.6, 1.8], 1.8, 20, 2),
        ok(4, false, 2.5, 2.8, &[2.9, 3.0, 3.2], 3.2, 40, 3),
        failed(5, 3.0, 3.0, &[], 3.05, 50, ErrorKind::Http5xx, Some("500 Internal Server Error")),
        failed(7, 4.0, 4.2, &[], 4.21, 70, ErrorKind::Connect, Some("connection refused")),
    ]
}

/// TTFT 0.45 s, TPOT 0.18 s, E2EL 0.5 s. Per request: A fails E2EL (0.6), B fails TPOT (0.2),
/// C passes (1 token: no TPOT), D passes → 2 good. p99: TTFT 0.394, TPOT 0.199 > 0.18 → not met.
fn slo() -> Slo {
    Slo { ttft_p99_ms: Some(450.0), tpot_p99_ms: Some(180.0), e2el_p99_ms: Some(500.0) }
}

#[test]
fn hand_built_records_summarize_to_hand_computed_values() {
    let r = LoadReport::from_records(&records(), &slo(), &SummaryOptions::default());

    assert_eq!(r.warmup_requests, 1);
    assert_eq!(r.measured_requests, 7);
    assert_eq!(r.completed, 4);
    assert_eq!(r.failed, 3);
    assert_eq!(r.missing_usage, 0);
    let kinds: Vec<(ErrorKind, usize)> = r.failures.iter().map(|(&k, &n)| (k, n)).collect();
    assert_eq!(
        kinds,
        vec![
            (ErrorKind::Connect, 1),
            (ErrorKind::Http4xx, 0),
            (ErrorKind::Http5xx, 1),
            (ErrorKind::MalformedSse, 0),
            (ErrorKind::Truncated, 0),
            (ErrorKind::Timeout, 1),
            (ErrorKind::Other, 0),
        ]
    );

    // First measured intended send 1.0 → last completion 5.5 (the timeout).
    close(r.duration_s, 4.5);
    assert_eq!(r.total_input_tokens, 100); // 10 + 20 + 30 + 40
    assert_eq!(r.total_output_tokens, 10); // 4 + 2 + 1 + 3
    close(r.request_throughput, 4.0 / 4.5);
    close(r.output_throughput, 10.0 / 4.5);
    close(r.total_token_throughput, 110.0 / 4.5);
    assert_eq!(r.good_requests, Some(2));
    close(r.request_goodput.unwrap_or(f64::NAN), 2.0 / 4.5);
    assert_eq!(r.slo_met, Some(false));

    // TTFT [0.2, 0.1, 0.4, 0.1]
    close_dist(&r.ttft, 0.2, 0.15, 0.12247448713915882, 0.394, 4);
    close(r.ttft.p90, 0.34);
    close(r.ttft.p999, 0.3994);
    close(r.ttft.min, 0.1);
    close(r.ttft.max, 0.4);
    // TPOT [0.4/3, 0.2, 0.15] (C has one token: none)
    close_dist(&r.tpot, 0.16111111111111111, 0.15, 0.028327886186626525, 0.199, 3);
    // ITL pooled [0.1, 0.2, 0.1, 0.2, 0.1, 0.2]
    close_dist(&r.itl, 0.15, 0.15, 0.05, 0.2, 6);
    // E2EL [0.6, 0.3, 0.4, 0.4]
    close_dist(&r.e2el, 0.425, 0.4, 0.10897247358851685, 0.594, 4);
    close(r.e2el.p90, 0.54);

    // From the intended send: D's 0.3 s lag adds to its TTFT (0.4) and E2EL (0.7).
    close_dist(&r.co.ttft, 0.275, 0.3, 0.12990381056766572, 0.4, 4);
    close_dist(&r.co.e2el, 0.5, 0.5, 0.15811388300841904, 0.697, 4);
    // Lag over all 7 measured: [0, 0, 0, 0.3, 0, 0, 0.2]
    close_dist(&r.co.lag, 0.07142857142857143, 0.0, 0.11605769149479941, 0.294, 7);
    close(r.co.lag.max, 0.3);
    // Intended: 7 requests over 1.0..4.0 → 6/3; sent: over 1.0..4.2 → 6/3.2.
    close(r.co.intended_rate.unwrap_or(f64::NAN), 2.0);
    close(r.co.achieved_rate.unwrap_or(f64::NAN), 1.875);

    // p99 lag 294 ms > 10 ms: invalid.
    assert!(!r.valid);
    let reason = r.invalid_reason.as_deref().unwrap_or("");
    assert!(reason.contains("behind its schedule"), "{reason}");

    // Per-request lists in plan order.
    assert_eq!(r.input_lens, vec![10, 20, 30, 40, 50, 60, 70]);
    assert_eq!(r.output_lens, vec![4, 2, 1, 3, 0, 0, 0]);
    assert_eq!(r.ttfts.len(), 4);
    for (got, want) in r.ttfts.iter().zip([0.2, 0.1, 0.4, 0.1]) {
        close(*got, want);
    }
    assert_eq!(r.itls.iter().map(Vec::len).collect::<Vec<_>>(), vec![3, 1, 0, 2]);
    assert_eq!(
        r.errors,
        vec!["", "", "", "", "500 Internal Server Error", "timeout", "connection refused"]
    );
}

#[test]
fn validity_goodput_and_slo_variants() {
    let recs = records();
    // A looser lag bound makes the same run valid.
    let loose = SummaryOptions { max_lag_s: 0.5 };
    let r = LoadReport::from_records(&recs, &Slo::default(), &loose);
    assert!(r.valid);
    assert_eq!(r.invalid_reason, None);
    // No SLO: no goodput, no verdict.
    assert_eq!(r.request_goodput, None);
    assert_eq!(r.good_requests, None);
    assert_eq!(r.slo_met, None);

    // Everyone good and every p99 within bounds.
    let all = Slo { ttft_p99_ms: Some(500.0), tpot_p99_ms: Some(250.0), e2el_p99_ms: Some(650.0) };
    let r = LoadReport::from_records(&recs, &all, &loose);
    assert_eq!(r.good_requests, Some(4));
    close(r.request_goodput.unwrap_or(f64::NAN), 4.0 / 4.5);
    assert_eq!(r.slo_met, Some(true));

    // TPOT only, 140 ms: A (133) and C (one token, no TPOT) pass; B (200), D (150) fail.
    let tpot = Slo { tpot_p99_ms: Some(140.0), ..Slo::default() };
    let r = LoadReport::from_records(&recs, &tpot, &loose);
    assert_eq!(r.good_requests, Some(2));
    assert_eq!(r.slo_met, Some(false));

    // Only warm-up: nothing measured, invalid, zeros, and an SLO cannot be met.
    let warm: Vec<RequestRecord> = recs.into_iter().filter(|r| r.warmup).collect();
    let r = LoadReport::from_records(&warm, &all, &loose);
    assert_eq!((r.warmup_requests, r.measured_requests), (1, 0));
    assert!(!r.valid);
    assert_eq!(r.duration_s, 0.0);
    assert_eq!(r.request_throughput, 0.0);
    assert_eq!(r.slo_met, Some(false));
    assert_eq!(r.co.intended_rate, None);
}

#[test]
fn missing_usage_counts_zero_tokens() {
    let mut rec = ok(0, false, 0.0, 0.0, &[0.1, 0.2], 0.2, 8, 2);
    rec.output_tokens = None;
    let r = LoadReport::from_records(&[rec], &Slo::default(), &SummaryOptions::default());
    assert_eq!(r.missing_usage, 1);
    assert_eq!(r.total_output_tokens, 0);
    assert_eq!(r.tpot.count, 0);
    assert_eq!(r.itl.count, 1);
}

/// vLLM's top-level keys of `vllm bench serve --save-result` that dyno reproduces.
const VLLM_KEYS: &[&str] = &[
    "duration",
    "completed",
    "failed",
    "total_input_tokens",
    "total_output_tokens",
    "request_throughput",
    "request_goodput",
    "output_throughput",
    "total_token_throughput",
    "input_lens",
    "output_lens",
    "ttfts",
    "itls",
    "errors",
];

#[test]
fn json_has_vllm_keys_and_round_trips() {
    let r = LoadReport::from_records(&records(), &slo(), &SummaryOptions::default());
    let json = JsonReport::new(&r).with_environment(serde_json::json!({"gpu": "none"}));
    let text = json.to_json_pretty().expect("serialize");
    let v: serde_json::Value = serde_json::from_str(&text).expect("parse");
    let obj = v.as_object().expect("object");
    let mut keys: Vec<String> = VLLM_KEYS.iter().map(|k| k.to_string()).collect();
    for m in ["ttft", "tpot", "itl", "e2el"] {
        for s in ["mean", "median", "std", "p50", "p90", "p95", "p99", "p99.9"] {
            keys.push(format!("{s}_{m}_ms"));
        }
    }
    for k in &keys {
        assert!(obj.contains_key(k), "missing top-level key {k}");
    }
    assert_eq!(obj.len(), keys.len() + 1, "only vLLM keys plus `dyno`");

    close(v["mean_ttft_ms"].as_f64().unwrap_or(f64::NAN), 200.0);
    close(v["median_e2el_ms"].as_f64().unwrap_or(f64::NAN), 400.0);
    close(v["p99.9_ttft_ms"].as_f64().unwrap_or(f64::NAN), 399.4);
    close(v["request_goodput"].as_f64().unwrap_or(f64::NAN), 2.0 / 4.5);
    assert_eq!(v["errors"][5], "timeout");
    assert_eq!(v["dyno"]["failures"]["http_5xx"], 1);
    assert_eq!(v["dyno"]["failures"]["other"], 0);
    assert_eq!(v["dyno"]["valid"], false);
    assert_eq!(v["dyno"]["warmup_requests"], 1);
    assert_eq!(v["dyno"]["slo_met"], false);
    assert_eq!(v["dyno"]["environment"]["gpu"], "none");
    close(v["dyno"]["e2el_intended_ms"]["p99"].as_f64().unwrap_or(f64::NAN), 697.0);
    close(v["dyno"]["lag_ms"]["max"].as_f64().unwrap_or(f64::NAN), 300.0);

    let back: JsonReport = serde_json::from_str(&text).expect("deserialize");
    assert_eq!(back, json);

    // The in-memory report round-trips too, all but its raw latency samples, which the store
    // keeps per measure instead of in the JSON.
    let stored = serde_json::to_string(&r).expect("serialize report");
    let back: LoadReport = serde_json::from_str(&stored).expect("deserialize report");
    assert!(back.samples.ttft.is_empty() && !r.samples.ttft.is_empty());
    assert_eq!(back, LoadReport { samples: Default::default(), ..r.clone() });

    // Without an SLO the goodput is null; the environment defaults to null.
    let r = LoadReport::from_records(&records(), &Slo::default(), &SummaryOptions::default());
    let v = serde_json::to_value(JsonReport::new(&r)).expect("to_value");
    assert!(v["request_goodput"].is_null());
    assert!(v["dyno"]["environment"].is_null());
}

#[test]
fn table_has_sections_and_a_loud_invalid_line() {
    let r = LoadReport::from_records(&records(), &slo(), &SummaryOptions::default());
    let t = render_table(&r);
    println!("{t}");
    for needle in [
        "Serving Benchmark Result",
        "Successful requests:",
        "Benchmark duration (s):",
        "4.50",
        "Request goodput (req/s):",
        "Mean TTFT (ms):",
        "200.00",
        "P99 TPOT (ms):",
        "Median ITL (ms):",
        "Mean E2EL (ms):",
        "coordinated omission",
        "Achieved send rate (req/s):",
        "1.88",
        "http_5xx:",
        "INVALID RUN",
        "SLO met:",
    ] {
        assert!(t.contains(needle), "table lacks {needle:?}:\n{t}");
    }
    let valid =
        LoadReport::from_records(&records(), &Slo::default(), &SummaryOptions { max_lag_s: 0.5 });
    let t = render_table(&valid);
    assert!(!t.contains("INVALID"));
    assert!(!t.contains("goodput"));
}

#[test]
fn histograms_serialize_deserialize_and_merge() {
    let h = Histograms::from_records(&records()).expect("histograms");
    let counts = |h: &Histograms| {
        [
            h.ttft.len(),
            h.tpot.len(),
            h.itl.len(),
            h.e2el.len(),
            h.ttft_intended.len(),
            h.e2el_intended.len(),
        ]
    };
    assert_eq!(counts(&h), [4, 3, 6, 4, 4, 4]);
    assert_eq!(h.ttft.max(), h.ttft.highest_equivalent(400_000));
    assert_eq!(h.e2el_intended.max(), h.e2el_intended.highest_equivalent(700_000));

    for deflate in [false, true] {
        let parts = h.serialize(deflate).expect("serialize");
        assert_eq!(parts.len(), 6);
        let mut back = Histograms::deserialize(&parts).expect("deserialize");
        assert_eq!(counts(&back), counts(&h));
        assert_eq!(back.itl.mean(), h.itl.mean());
        back.merge(&h).expect("merge");
        assert_eq!(counts(&back), [8, 6, 12, 8, 8, 8]);
    }

    // Unknown and missing names are errors, not silent gaps.
    let mut parts = h.serialize(false).expect("serialize");
    let (_, bytes) = parts.pop().expect("six parts");
    assert!(Histograms::deserialize(&parts).is_err());
    parts.push(("nonsense", bytes));
    assert!(Histograms::deserialize(&parts).is_err());
}
