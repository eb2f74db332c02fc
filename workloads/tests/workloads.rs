//! Workload parsing, validation and generation.

use std::io::Write;
use std::path::Path;

use dyno_workloads::{
    Arrival, LoadLevel, LoadOverrides, Pacing, Plan, Suite, Workload, WorkloadError,
};

fn parse(yaml: &str) -> Result<Workload, WorkloadError> {
    Workload::from_yaml(yaml, "test.yaml", Path::new("."))
}

fn err(yaml: &str) -> String {
    match parse(yaml) {
        Ok(w) => panic!("expected an error, got {w:?}"),
        Err(e) => e.to_string(),
    }
}

const BASE: &str = "
seed: 3
lengths:
  prompt: { dist: uniform, min: 4, max: 64 }
  output: { dist: fixed, value: 8 }
arrival: { process: poisson, rate: 10.0 }
requests: 50
";

fn plan(w: &Workload) -> Plan {
    w.plan(&LoadOverrides::default()).expect("plan")
}

fn gaps(p: &Plan) -> Vec<f64> {
    p.arrivals_s.windows(2).map(|w| w[1] - w[0]).collect()
}

fn mean_cv(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, var.sqrt() / mean)
}

#[test]
fn same_seed_same_stream_different_seed_different() {
    let a = parse(BASE).unwrap();
    let (pa, pb) = (plan(&a), plan(&a));
    assert_eq!(pa.arrivals_s, pb.arrivals_s);
    let ra: Vec<_> = pa.requests().collect();
    let rb: Vec<_> = pb.requests().collect();
    assert_eq!(ra, rb);
    assert_eq!(ra.len(), 50);
    assert_eq!(pa.arrivals_s[0], 0.0);
    // Pure in the index: asking out of order gives the same request.
    assert_eq!(pa.request(17), ra[17]);

    let c = parse(&BASE.replace("seed: 3", "seed: 4")).unwrap();
    let pc = plan(&c);
    assert_ne!(pa.arrivals_s, pc.arrivals_s);
    assert_ne!(ra, pc.requests().collect::<Vec<_>>());
}

#[test]
fn requests_are_printable_and_in_range() {
    let p = plan(&parse(BASE).unwrap());
    for r in p.requests() {
        assert!((4..=64).contains(&r.prompt.len()), "{}", r.prompt.len());
        assert_eq!(r.output_tokens, 8);
        assert!(r.prompt.iter().all(|&t| (32..127).contains(&t)));
        assert_eq!(r.prompt_text().len(), r.prompt.len());
        assert!(!r.warmup);
        assert_eq!(r.prefix_group, None);
    }
}

#[test]
fn unknown_fields_name_the_field_and_file() {
    let e = err(&format!("{BASE}colour: red\n"));
    assert!(e.contains("test.yaml") && e.contains("colour"), "{e}");
    let e = err(&BASE.replace("value: 8", "value: 8, jitter: 2"));
    assert!(e.contains("test.yaml") && e.contains("jitter"), "{e}");
    let e = err(&BASE.replace("rate: 10.0", "rate: 10.0, burstiness: 2"));
    assert!(e.contains("burstiness"), "{e}");
    let e = err(&BASE.replace("rate: 10.0", "rate: fast"));
    assert!(e.contains("arrival.rate") && e.contains("line"), "{e}");
    let e = err(&BASE.replace("process: poisson, rate: 10.0", "process: gamma, rate: 1"));
    assert!(e.contains("arrival.burstiness"), "{e}");
    let e = err(&BASE.replace("min: 4, max: 64", "min: 4, max: 64, sigma: 1"));
    assert!(e.contains("`sigma` does not apply to `dist: uniform`"), "{e}");
    let e = err(&BASE.replace("process: poisson", "process: weibull"));
    assert!(e.contains("weibull"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("typo.yaml");
    std::fs::write(&path, format!("{BASE}warmup: {{ reqests: 3 }}\n")).unwrap();
    let e = Workload::from_file(&path).unwrap_err().to_string();
    assert!(e.contains("typo.yaml") && e.contains("reqests"), "{e}");
}

#[test]
fn invalid_values_name_field_value_and_reason() {
    let cases = [
        (BASE.replace("rate: 10.0", "rate: 0"), "arrival.rate", "> 0"),
        (BASE.replace("rate: 10.0", "rate: .inf"), "arrival.rate", "finite"),
        (BASE.replace("rate: 10.0", "rate: -1"), "arrival.rate", "-1"),
        (
            BASE.replace("process: poisson, rate: 10.0", "process: gamma, rate: 1, burstiness: 0"),
            "arrival.burstiness",
            "> 0",
        ),
        (
            BASE.replace("process: poisson, rate: 10.0", "process: closed, concurrency: 0"),
            "arrival.concurrency",
            "at least 1",
        ),
        (BASE.replace("min: 4, max: 64", "min: 65, max: 64"), "lengths.prompt.min", "65"),
        (BASE.replace("min: 4, max: 64", "min: 0, max: 64"), "lengths.prompt.min", "at least 1"),
        (BASE.replace("value: 8", "value: 0"), "lengths.output.value", "at least 1"),
        (BASE.replace("requests: 50", "requests: 0"), "requests", "at least 1"),
        (BASE.replace("requests: 50", "duration_s: -3"), "duration_s", "> 0"),
        (format!("{BASE}slo: {{ ttft_p99_ms: 0 }}\n"), "slo.ttft_p99_ms", "> 0"),
        (format!("{BASE}prefix: {{ length: 0 }}\n"), "prefix.length", "at least 1"),
        (
            BASE.replace(
                "dist: uniform, min: 4, max: 64",
                "dist: lognormal, median: 0, sigma: 1, max: 9",
            ),
            "lengths.prompt.median",
            "> 0",
        ),
        (
            BASE.replace(
                "dist: uniform, min: 4, max: 64",
                "dist: normal, mean: 10, std: -1, max: 9",
            ),
            "lengths.prompt.std",
            "≥ 0",
        ),
    ];
    for (yaml, field, reason) in cases {
        let e = err(&yaml);
        assert!(e.contains("test.yaml"), "{e}");
        assert!(e.contains(&format!("`{field}`")), "{field}: {e}");
        assert!(e.contains(reason), "{reason}: {e}");
    }
    let e = err(&BASE.replace("requests: 50", "requests: 5\nduration_s: 3"));
    assert!(e.contains("not both"), "{e}");
    let e = err(&BASE.replace("requests: 50", ""));
    assert!(e.contains("requests") && e.contains("duration_s"), "{e}");
    let e = err(&BASE.replace("process: poisson, rate: 10.0", "process: trace"));
    assert!(e.contains("lengths.trace"), "{e}");
}

#[test]
fn every_preset_loads_plans_and_fits_4096() {
    let names: Vec<_> = Workload::preset_names().collect();
    assert_eq!(names, ["chat", "rag", "summarize", "code", "burst", "decode-heavy"]);
    for name in names {
        let yaml = Workload::preset_yaml(name).unwrap();
        assert!(yaml.starts_with(&format!("# {name}:")), "{name} needs a leading comment");
        let w = Workload::preset(name).unwrap();
        assert_eq!(w.name, name);
        assert!(w.max_sequence_tokens() <= 4096, "{name}: {}", w.max_sequence_tokens());
        assert!(!w.slo.is_empty(), "{name}");
        let p = plan(&w);
        assert_eq!(p.warmup_requests, w.warmup.requests);
        let first: Vec<_> = (0..10).map(|i| p.request(i)).collect();
        assert!(first.iter().all(|r| r.prompt.len() + r.output_tokens <= 4096));
        assert!(first[0].warmup);
        assert_eq!(Workload::load(name).unwrap(), w);
    }
    assert!(
        matches!(Workload::preset("burst").unwrap().arrival, Arrival::Gamma { burstiness, .. } if burstiness < 1.0)
    );
    let e = Workload::preset("nope").unwrap_err().to_string();
    assert!(e.contains("nope") && e.contains("chat"), "{e}");
    let e = Workload::load("no/such/file.yaml").unwrap_err().to_string();
    assert!(e.contains("no/such/file.yaml"), "{e}");
}

#[test]
fn constant_arrivals_are_exact() {
    let w =
        parse(&BASE.replace("process: poisson, rate: 10.0", "process: constant, rate: 4")).unwrap();
    let p = plan(&w);
    assert_eq!(p.pacing, Pacing::Open);
    assert_eq!(p.arrivals_s.len(), 50);
    for (i, t) in p.arrivals_s.iter().enumerate() {
        assert_eq!(*t, i as f64 * 0.25, "{i}");
    }
}

#[test]
fn poisson_and_gamma_mean_gap_is_one_over_rate() {
    let n = 20_000;
    let over = LoadOverrides { requests: Some(n), ..Default::default() };
    let poisson = parse(&BASE.replace("rate: 10.0", "rate: 5")).unwrap();
    let (mean, cv) = mean_cv(&gaps(&poisson.plan(&over).unwrap()));
    assert!((mean * 5.0 - 1.0).abs() < 0.03, "poisson mean gap {mean}");
    assert!((cv - 1.0).abs() < 0.05, "poisson cv {cv}");

    let gamma = parse(
        &BASE.replace("process: poisson, rate: 10.0", "process: gamma, rate: 5, burstiness: 0.5"),
    )
    .unwrap();
    let (mean, cv) = mean_cv(&gaps(&gamma.plan(&over).unwrap()));
    assert!((mean * 5.0 - 1.0).abs() < 0.03, "gamma mean gap {mean}");
    // CV of gamma gaps is 1/sqrt(shape).
    assert!(cv > 1.0, "gamma burstiness 0.5 cv {cv}");
    assert!((cv - 2f64.sqrt()).abs() < 0.1, "gamma cv {cv}");

    let regular = parse(
        &BASE.replace("process: poisson, rate: 10.0", "process: gamma, rate: 5, burstiness: 4"),
    )
    .unwrap();
    let (mean, cv) = mean_cv(&gaps(&regular.plan(&over).unwrap()));
    assert!((mean * 5.0 - 1.0).abs() < 0.03, "gamma mean gap {mean}");
    assert!(cv < 1.0, "gamma burstiness 4 cv {cv}");
}

#[test]
fn duration_bounds_open_loop_and_warmup_comes_first() {
    let w = parse(
        &BASE
            .replace("process: poisson, rate: 10.0", "process: constant, rate: 2")
            .replace("requests: 50", "duration_s: 10\nwarmup: { requests: 3 }"),
    )
    .unwrap();
    let p = plan(&w);
    // 3 warm-up at 0, 0.5, 1.0, then measured from 1.5 while t < 11.5: 20 more.
    assert_eq!(p.arrivals_s.len(), 23);
    assert_eq!(p.warmup_requests, 3);
    assert_eq!(p.max_requests, Some(23));
    assert!(p.request(2).warmup && !p.request(3).warmup);
}

#[test]
fn prefix_groups_share_exact_prefixes() {
    let w = parse(&format!("{BASE}prefix: {{ length: 100, groups: 3 }}\n")).unwrap();
    let p = w.plan(&LoadOverrides { requests: Some(60), ..Default::default() }).unwrap();
    let reqs: Vec<_> = p.requests().collect();
    let mut prefixes: [Option<Vec<u32>>; 3] = Default::default();
    for r in &reqs {
        let g = r.prefix_group.expect("group");
        assert!(g < 3);
        assert!(r.prompt.len() >= 104);
        let pre = r.prompt[..100].to_vec();
        match &prefixes[g] {
            Some(seen) => assert_eq!(seen, &pre, "group {g}"),
            None => prefixes[g] = Some(pre),
        }
    }
    let all: Vec<_> = prefixes.iter().map(|p| p.clone().expect("every group used")).collect();
    assert_ne!(all[0], all[1]);
    assert_ne!(all[1], all[2]);
}

#[test]
fn overrides_replace_rate_concurrency_and_bounds() {
    let w = parse(&BASE.replace("process: poisson, rate: 10.0", "process: closed, concurrency: 2"))
        .unwrap();
    let p = plan(&w);
    assert_eq!(p.pacing, Pacing::Closed { concurrency: 2 });
    assert!(p.arrivals_s.is_empty());
    assert_eq!(p.max_requests, Some(50));

    // A closed workload at a rate becomes Poisson.
    let p = w
        .plan(&LoadOverrides { rate: Some(8.0), requests: Some(4000), ..Default::default() })
        .unwrap();
    assert_eq!(p.pacing, Pacing::Open);
    assert_eq!(p.arrivals_s.len(), 4000);
    let (mean, _) = mean_cv(&gaps(&p));
    assert!((mean * 8.0 - 1.0).abs() < 0.06, "{mean}");

    // Concurrency makes it closed loop; duration replaces the count.
    let open = parse(BASE).unwrap();
    let p = open
        .plan(&LoadOverrides { concurrency: Some(3), duration_s: Some(5.0), ..Default::default() })
        .unwrap();
    assert_eq!(p.pacing, Pacing::Closed { concurrency: 3 });
    assert_eq!((p.max_requests, p.duration_s), (None, Some(5.0)));

    // A constant workload keeps its process at the new rate; requests are the same.
    let c =
        parse(&BASE.replace("process: poisson, rate: 10.0", "process: constant, rate: 1")).unwrap();
    let p = c.plan(&LoadOverrides { rate: Some(10.0), ..Default::default() }).unwrap();
    assert!((p.arrivals_s[10] - 1.0).abs() < 1e-9);
    assert_eq!(p.request(5), plan(&c).request(5));

    let e = open.plan(&LoadOverrides { rate: Some(0.0), ..Default::default() }).unwrap_err();
    assert!(e.to_string().contains("rate"), "{e}");
    let e = open
        .plan(&LoadOverrides { rate: Some(1.0), concurrency: Some(1), ..Default::default() })
        .unwrap_err();
    assert!(e.to_string().contains("not both"), "{e}");
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    path
}

#[test]
fn trace_replay_follows_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "t.jsonl",
        "{\"timestamp\": 100.0, \"prompt_tokens\": 10, \"output_tokens\": 5}\n\
         {\"timestamp\": 101.0, \"prompt_tokens\": 20, \"output_tokens\": 6, \"model\": \"x\"}\n\
         \n\
         {\"timestamp\": 103.0, \"prompt_tokens\": 30, \"output_tokens\": 7}\n",
    );
    let wl = write(
        dir.path(),
        "replay.yaml",
        "lengths: { trace: t.jsonl }\narrival: { process: trace, speedup: 2 }\nrequests: 5\n",
    );
    let w = Workload::from_file(&wl).unwrap();
    assert_eq!(w.name, "replay");
    let p = plan(&w);
    assert_eq!(p.pacing, Pacing::Open);
    // (0, 1, 3), then wrapped one mean gap (1.5 s) later: 4.5, 5.5; halved by the speedup.
    let want = [0.0, 0.5, 1.5, 2.25, 2.75];
    for (t, w) in p.arrivals_s.iter().zip(want) {
        assert!((t - w).abs() < 1e-9, "{:?}", p.arrivals_s);
    }
    let lens: Vec<_> = p.requests().map(|r| (r.prompt.len(), r.output_tokens)).collect();
    assert_eq!(lens, [(10, 5), (20, 6), (30, 7), (10, 5), (20, 6)]);

    // A rate override scales the timestamps so the mean rate is the rate (natural: 2/3 per s).
    let p = w.plan(&LoadOverrides { rate: Some(2.0), ..Default::default() }).unwrap();
    assert!((p.arrivals_s[2] - 1.0).abs() < 1e-9, "{:?}", p.arrivals_s);

    // Trace lengths with another arrival process draw random rows.
    let wl = write(
        dir.path(),
        "lens.yaml",
        "lengths: { trace: t.jsonl, max: 25 }\narrival: { process: poisson, rate: 1 }\nrequests: 40\n",
    );
    let p = plan(&Workload::from_file(&wl).unwrap());
    assert!(p.requests().all(|r| [10, 20, 25].contains(&r.prompt.len())));

    // Replay without timestamps fails, naming the field.
    write(
        dir.path(),
        "nots.jsonl",
        "{\"prompt_tokens\": 10, \"output_tokens\": 5}\n{\"prompt_tokens\": 1, \"output_tokens\": 5}\n",
    );
    let wl = write(
        dir.path(),
        "bad.yaml",
        "lengths: { trace: nots.jsonl }\narrival: { process: trace }\nrequests: 5\n",
    );
    let e = Workload::from_file(&wl).unwrap_err().to_string();
    assert!(e.contains("bad.yaml") && e.contains("timestamp"), "{e}");

    // A broken row names the file and line.
    write(
        dir.path(),
        "broken.jsonl",
        "{\"timestamp\": 1, \"prompt_tokens\": 10, \"output_tokens\": 5}\n{\"timestamp\": 2, \"prompt_tokens\": \"ten\"}\n",
    );
    let wl = write(
        dir.path(),
        "broken.yaml",
        "lengths: { trace: broken.jsonl }\narrival: { process: trace }\nrequests: 5\n",
    );
    let e = Workload::from_file(&wl).unwrap_err().to_string();
    assert!(e.contains("broken.jsonl:2"), "{e}");

    // A missing file names the path.
    let wl = write(
        dir.path(),
        "missing.yaml",
        "lengths: { trace: nope.jsonl }\narrival: { process: trace }\nrequests: 5\n",
    );
    let e = Workload::from_file(&wl).unwrap_err().to_string();
    assert!(e.contains("nope.jsonl"), "{e}");
}

#[test]
fn sharegpt_pairs_human_and_gpt_turns_in_bytes() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "sg.json",
        r#"[
          {"id": "a", "conversations": [{"from": "human", "value": "hello there"}, {"from": "gpt", "value": "hi"}]},
          {"id": "b", "conversations": [{"from": "human", "value": "only one turn"}]},
          {"id": "c", "conversations": [{"from": "system", "value": "x"}, {"from": "human", "value": "héllo"}, {"from": "gpt", "value": "a much longer answer than the limit"}]}
        ]"#,
    );
    let wl = write(
        dir.path(),
        "sg.yaml",
        "lengths: { sharegpt: sg.json, max: 20 }\narrival: { process: closed, concurrency: 2 }\nrequests: 50\n",
    );
    let w = Workload::from_file(&wl).unwrap();
    let p = plan(&w);
    let mut seen: Vec<_> = p.requests().map(|r| (r.prompt.len(), r.output_tokens)).collect();
    seen.sort();
    seen.dedup();
    // "héllo" is 6 UTF-8 bytes; the long answer is clamped to 20.
    assert_eq!(seen, [(6, 20), (11, 2)]);
    assert!(w.max_sequence_tokens() <= 26);

    write(dir.path(), "empty.json", r#"[{"conversations": [{"from": "human", "value": "x"}]}]"#);
    let wl = write(
        dir.path(),
        "e.yaml",
        "lengths: { sharegpt: empty.json }\narrival: { process: closed, concurrency: 2 }\nrequests: 5\n",
    );
    let e = Workload::from_file(&wl).unwrap_err().to_string();
    assert!(e.contains("empty.json"), "{e}");
}

#[test]
fn nightly_suite_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("nightly.yaml");
    let suite = Suite::from_file(&path).unwrap();
    assert!(!suite.scenarios.is_empty() && suite.scenarios.len() <= 4);
    for s in &suite.scenarios {
        let w = s.load_workload().unwrap();
        let p = w.plan(&s.overrides()).unwrap();
        assert!(p.max_requests.unwrap_or(0) <= 60, "{}", s.name);
        assert!(matches!(s.model.as_str(), "mixtral-tiny" | "mixtral-mini"));
        if s.model == "mixtral-tiny" {
            assert!(w.max_sequence_tokens() <= 512);
        }
    }
    assert!(suite.scenarios.iter().any(|s| s.load_level() == LoadLevel::MaxRateUnderSlo));
    let k = suite.kernels.as_ref().unwrap();
    assert_eq!(k.gemm, [[1024, 1024, 1024], [8, 4096, 4096]]);
    assert_eq!(k.gemv, [[8192, 8192]]);
}

fn suite_err(dir: &Path, yaml: &str) -> String {
    let path = write(dir, "suite.yaml", yaml);
    match Suite::from_file(&path) {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn suite_validation() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write(d, "engine.yaml", "threads: 2\n");
    let ok = "scenarios:\n  - { name: a, model: m, workload: chat, rate: 1 }\n  - { name: b, model: m, config_file: engine.yaml, workload: chat, concurrency: 2, requests: 5 }\n";
    let s = Suite::from_file(&write(d, "suite.yaml", ok)).unwrap();
    assert_eq!(s.scenarios[0].load_level(), LoadLevel::Rate(1.0));
    assert_eq!(
        s.scenarios[1].overrides(),
        LoadOverrides { concurrency: Some(2), requests: Some(5), ..Default::default() }
    );
    assert!(
        matches!(s.scenarios[1].engine_source(), dyno_workloads::EngineSource::File(p) if p == d.join("engine.yaml"))
    );

    let e = suite_err(
        d,
        "scenarios:\n  - { name: a, model: m, workload: chat, rate: 1 }\n  - { name: a, model: m, workload: chat, rate: 2 }\n",
    );
    assert!(e.contains("suite.yaml") && e.contains("unique"), "{e}");
    let e = suite_err(
        d,
        "scenarios:\n  - { name: a, model: m, workload: chat, rate: 1, concurrency: 2 }\n",
    );
    assert!(e.contains("exactly one load level"), "{e}");
    let e = suite_err(d, "scenarios:\n  - { name: a, model: m, workload: chat }\n");
    assert!(e.contains("exactly one load level"), "{e}");
    let e = suite_err(
        d,
        "scenarios:\n  - { name: a, model: m, workload: chat, rate: 1, colour: red }\n",
    );
    assert!(e.contains("suite.yaml") && e.contains("colour"), "{e}");
    let e = suite_err(d, "scenarios:\n  - { name: a, model: m, workload: nope.yaml, rate: 1 }\n");
    assert!(e.contains("nope.yaml"), "{e}");
    let e = suite_err(d, "scenarios:\n  - { name: a, model: m, workload: chat, rate: 0 }\n");
    assert!(e.contains("scenarios[0].rate"), "{e}");
    let e =
        suite_err(d, "scenarios:\n  - { name: a, model: m, engine: 3, workload: chat, rate: 1 }\n");
    assert!(e.contains("mapping"), "{e}");
    let e = suite_err(
        d,
        "scenarios:\n  - { name: a, model: m, engine: {}, config_file: engine.yaml, workload: chat, rate: 1 }\n",
    );
    assert!(e.contains("not both"), "{e}");
    write(d, "noslo.yaml", BASE);
    let e = suite_err(
        d,
        "scenarios:\n  - { name: a, model: m, workload: noslo.yaml, max_rate_under_slo: true }\n",
    );
    assert!(e.contains("SLO"), "{e}");
    let e = suite_err(d, "kernels: { gemm: [[1, 0, 3]] }\n");
    assert!(e.contains("kernels.gemm[0]"), "{e}");
    let e = suite_err(d, "kernels: { gemm: [[1, 3]] }\n");
    assert!(e.contains("suite.yaml") && e.contains("3"), "{e}");
    let e = suite_err(d, "{}\n");
    assert!(e.contains("no `scenarios`"), "{e}");
}

#[test]
fn requests_and_arrivals_do_not_depend_on_the_bound() {
    let w = parse(BASE).unwrap();
    let short = w.plan(&LoadOverrides { requests: Some(10), ..Default::default() }).unwrap();
    let long = w.plan(&LoadOverrides { requests: Some(1000), ..Default::default() }).unwrap();
    assert_eq!(short.arrivals_s[..], long.arrivals_s[..10]);
    for i in 0..10 {
        assert_eq!(short.request(i), long.request(i));
    }
    // Adding warm-up shifts nothing: request i is request i, now flagged.
    let warm = parse(&format!("{BASE}warmup: {{ requests: 4 }}\n")).unwrap();
    let p = plan(&warm);
    assert_eq!(p.arrivals_s.len(), 54);
    assert_eq!(p.request(3).prompt, short.request(3).prompt);
    assert!(p.request(3).warmup && !p.request(4).warmup);
}

#[test]
fn presets_round_trip_through_yaml() {
    for name in Workload::preset_names() {
        let w = Workload::preset(name).unwrap();
        let yaml = serde_yaml::to_string(&w).unwrap();
        let back = Workload::from_yaml(&yaml, name, Path::new(".")).unwrap();
        assert_eq!(back, w, "{yaml}");
    }
}
