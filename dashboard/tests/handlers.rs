//! The dashboard's handlers over a small seeded store, on SQLite and (when
//! `DYNO_TEST_POSTGRES_URL` is set) PostgreSQL: the data each page and API route returns,
//! escaping of text from the database, 404s for unknown ids, and triage that refuses
//! requests without the token (or the form's CSRF value) and then changes nothing.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use dyno_results::Store;
use dyno_results::store::*;
use serde_json::{Value, json};
use tower::ServiceExt;

const EVIL: &str = "<script>alert(1)</script>";
const TOKEN: &str = "s3cret";

/// A store of 12 nightly runs of two scenarios × two measures, a confirmed regression at the
/// 7th commit of `chat-f32` throughput, latency histograms, and a study of three trials.
struct Seeded {
    store: Store,
    runs: Vec<i64>,
    alert: i64,
    study: i64,
}

fn scenario(name: &str, model: &str) -> Scenario {
    Scenario {
        name: name.into(),
        model: model.into(),
        workload: "chat".into(),
        config_hash: format!("hash-{model}"),
        config: format!("weights: f32\n# {name}\n"),
    }
}

fn value(measure: &str, unit: &str, family: &str, lower: bool, v: f64) -> MetricValue {
    MetricValue {
        measure: measure.into(),
        unit: unit.into(),
        family: family.into(),
        lower_is_better: lower,
        value: v,
        lower: Some(v * 0.98),
        upper: Some(v * 1.02),
        n: 20,
        samples: (0..8).map(|i| v * (1.0 + 0.01 * f64::from(i - 4))).collect(),
    }
}

fn histogram(scale_us: u64) -> Histogram {
    let mut h = hdrhistogram::Histogram::<u64>::new(3).expect("histogram");
    for i in 1..=200u64 {
        h.record(scale_us * i).expect("record");
    }
    let mut data = Vec::new();
    hdrhistogram::serialization::Serializer::serialize(
        &mut hdrhistogram::serialization::V2Serializer::new(),
        &h,
        &mut data,
    )
    .expect("serialize");
    Histogram { name: "ttft".into(), data }
}

async fn seed(store: Store) -> Seeded {
    let mut runs = Vec::new();
    for i in 0..12i64 {
        let info = RunInfo {
            commit: CommitInfo {
                sha: format!("{i:02}{}", "ab".repeat(19)),
                timestamp: Some(1_700_000_000 + i * 86_400),
                ordinal: Some(i + 1),
            },
            branch: "main".into(),
            trigger: "nightly".into(),
            environment: json!({"os": "linux", "note": EVIL}),
            idempotency_key: format!("run-{i}"),
            testbed: Testbed { spec: json!({"cpu_model": "Test CPU", "cores": 2}) },
        };
        let BeginRun::Started(run) = store.begin_run(&info).await.expect("begin") else {
            panic!("run {i} already recorded");
        };
        let tput = if i < 6 { 100.0 } else { 90.0 };
        for (s, scale) in
            [(scenario("chat-f32", "mixtral-mini"), 1000), (scenario(EVIL, "m"), 2000)]
        {
            let values = [
                value("output_throughput", "tok/s", "throughput", false, tput),
                value("ttft_p99_ms", "ms", "latency", true, 200.0 + i as f64),
            ];
            store
                .record_scenario_result(run, &s, &values, &[histogram(scale)])
                .await
                .expect("record");
        }
        store.finish_run(run, RunStatus::Completed).await.expect("finish");
        runs.push(run);
    }
    let alert = store
        .upsert_alert(&AlertInfo {
            series: SeriesKey {
                scenario: "chat-f32".into(),
                config_hash: "hash-mixtral-mini".into(),
                measure: "output_throughput".into(),
                unit: "tok/s".into(),
                family: "throughput".into(),
                lower_is_better: false,
                testbed: Testbed { spec: json!({"cpu_model": "Test CPU", "cores": 2}) }.hash(),
                branch: "main".into(),
            },
            commit: format!("06{}", "ab".repeat(19)),
            state: AlertState::Confirmed,
            regression: true,
            before: 100.0,
            after: 90.0,
            change_pct: -10.0,
            p_value: Some(1e-5),
        })
        .await
        .expect("alert");
    // An earlier flag on the same series that detection withdrew.
    store
        .upsert_alert(&AlertInfo {
            series: SeriesKey {
                scenario: "chat-f32".into(),
                config_hash: "hash-mixtral-mini".into(),
                measure: "ttft_p99_ms".into(),
                unit: "ms".into(),
                family: "latency".into(),
                lower_is_better: true,
                testbed: Testbed { spec: json!({"cpu_model": "Test CPU", "cores": 2}) }.hash(),
                branch: "main".into(),
            },
            commit: format!("03{}", "ab".repeat(19)),
            state: AlertState::Retracted,
            regression: true,
            before: 201.0,
            after: 203.0,
            change_pct: 1.0,
            p_value: None,
        })
        .await
        .expect("retracted alert");
    let study = store
        .create_study(&StudyInfo {
            name: "tune-chat".into(),
            scenario: None,
            objective: "maximize goodput".into(),
            search_space: json!({}),
        })
        .await
        .expect("study");
    for (k, (goodput, tput, ttft, tpot)) in
        [(1.0, 300.0, 900.0, 90.0), (1.5, 420.0, 800.0, 80.0), (1.2, 500.0, 1500.0, 120.0)]
            .into_iter()
            .enumerate()
    {
        let config = json!({"weights": "int8", "batch": {"max_num_seqs": 4 << k}});
        let predicted = json!({"output_throughput": tput * 1.1});
        let trial = store.begin_trial(study, &config, Some(&predicted)).await.expect("trial");
        let measured = json!({
            "goodput": goodput, "output_throughput": tput, "ttft_p99_ms": ttft,
            "tpot_p99_ms": tpot, "slo_met": true
        });
        store
            .finish_trial(
                trial.id,
                &TrialOutcome {
                    status: TrialStatus::Completed,
                    measured: Some(measured),
                    predicted: None,
                    error: None,
                    run: None,
                },
            )
            .await
            .expect("finish trial");
    }
    Seeded { store, runs, alert, study }
}

/// A response's status and body text.
async fn get(app: &Router, uri: &str) -> (StatusCode, String) {
    send(app, Request::get(uri).body(Body::empty()).expect("request")).await
}

async fn send(app: &Router, req: Request<Body>) -> (StatusCode, String) {
    let resp = app.clone().oneshot(req).await.expect("response");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn get_json(app: &Router, uri: &str) -> Value {
    let (status, body) = get(app, uri).await;
    assert_eq!(status, StatusCode::OK, "{uri}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{uri}: {e}: {body}"))
}

async fn pages_show_the_seeded_data(store: Store) {
    let s = seed(store).await;
    let app = dyno_dashboard::router(s.store.clone(), None);

    let overview = get_json(&app, "/api/overview").await;
    let rows = overview["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 4);
    let tput = rows
        .iter()
        .find(|r| r["key"]["scenario"] == "chat-f32" && r["key"]["measure"] == "output_throughput")
        .expect("chat-f32 throughput");
    assert_eq!(tput["latest"], 90.0);
    assert_eq!(tput["previous"], 90.0);
    // The segment since the confirmed change (commits 7..11) has mean 90.
    assert_eq!(tput["baseline"], 90.0);
    assert_eq!(tput["status"], "regressed");
    assert_eq!(tput["points"], 12);
    assert_eq!(tput["spark"].as_array().map(Vec::len), Some(12));
    let ttft = rows
        .iter()
        .find(|r| r["key"]["scenario"] == "chat-f32" && r["key"]["measure"] == "ttft_p99_ms")
        .expect("chat-f32 ttft");
    assert_eq!(ttft["status"], "ok");
    // 211 after 210; baseline = mean(200..=210) = 205.
    assert!((ttft["change_previous"].as_f64().expect("change") - 1.0 / 210.0).abs() < 1e-12);
    assert!((ttft["baseline"].as_f64().expect("baseline") - 205.0).abs() < 1e-12);
    assert_eq!(overview["hardware"][0][1], "Test CPU");

    let filtered = get_json(&app, "/api/overview?model=m").await;
    assert_eq!(filtered["rows"].as_array().map(Vec::len), Some(2));
    let searched = get_json(&app, "/api/overview?q=TTFT").await;
    assert_eq!(searched["rows"].as_array().map(Vec::len), Some(2));

    let (status, html) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(html.matches("class=\"series-row\"").count(), 4);
    assert!(html.contains("status-regressed") && html.contains("data-chart="));

    // The series page: 12 points linking to runs, the alert as a marker.
    let url = tput["url"].as_str().expect("url").to_string();
    let series = get_json(&app, &format!("/api{url}")).await;
    assert_eq!(series["points"].as_array().map(Vec::len), Some(12));
    assert_eq!(series["chart"]["markers"].as_array().map(Vec::len), Some(1));
    assert_eq!(series["chart"]["links"][0], format!("/runs/{}", s.runs[0]));
    let (status, html) = get(&app, &url).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(html.matches("class=\"run-link\"").count(), 12);

    // A run: config, environment, values and a CDF per scenario; its previous run.
    let last = s.runs[11];
    let run = get_json(&app, &format!("/api/runs/{last}")).await;
    assert_eq!(run["previous"], s.runs[10]);
    assert_eq!(run["scenarios"].as_array().map(Vec::len), Some(2));
    let cdf = &run["scenarios"][0]["cdf"]["series"][0];
    let xs = cdf["x"].as_array().expect("cdf x");
    // Values 1..=200 ms: the median is about 100 ms.
    let median = xs[50].as_f64().expect("x");
    assert!((median - 100.0).abs() < 1.0, "median {median}");
    let (status, html) = get(&app, &format!("/runs/{last}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("id=\"compare-previous\"") && html.contains("weights: f32"));

    // Compare: B / A per measure, with the samples' test.
    let cmp = get_json(&app, &format!("/api/compare?a={}&b={}", s.runs[0], last)).await;
    let line = cmp["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .find(|l| l["scenario"] == "chat-f32" && l["measure"] == "output_throughput")
        .expect("line")
        .clone();
    assert!((line["ratio"].as_f64().expect("ratio") - 0.9).abs() < 1e-12);
    assert_eq!(line["verdict"], "worse");
    assert!(line["p_value"].as_f64().is_some());
    let (status, html) = get(&app, &format!("/compare?a={}&b={}", s.runs[0], last)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.matches("class=\"compare-row").count() >= 4);

    // Alerts and the study.
    let alerts = get_json(&app, "/api/alerts").await;
    assert_eq!((alerts["total"].as_u64(), alerts["hidden_retracted"].as_u64()), (Some(1), Some(1)));
    let all = get_json(&app, "/api/alerts?state=all").await;
    assert_eq!((all["total"].as_u64(), all["hidden_retracted"].as_u64()), (Some(2), Some(0)));
    let (status, html) = get(&app, "/alerts").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(html.matches("class=\"alert-row").count(), 1);
    assert!(html.contains("href=\"/alerts?state=all\""));
    let study = get_json(&app, &format!("/api/studies/{}", s.study)).await;
    assert_eq!(study["best"], 1, "the second trial (numbers start at 0) has the best goodput");
    let pareto: Vec<bool> = study["trials"]
        .as_array()
        .expect("trials")
        .iter()
        .map(|t| t["pareto"].as_bool().unwrap_or(false))
        .collect();
    // The first trial is dominated by the second (more throughput, lower p99s); the second
    // and third trade throughput against latency.
    assert_eq!(pareto, [false, true, true]);
    assert_eq!(study["convergence"]["series"][0]["y"], json!([1.0, 1.5, 1.5]));
    assert!(study["predicted_vs_measured"].is_object());
    let (status, yaml) = get(&app, &format!("/studies/{}/best-config.yaml", s.study)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(yaml.contains("max_num_seqs: 8"), "{yaml}");
    let (status, html) = get(&app, "/studies").await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("tune-chat") && html.contains("class=\"study-link\""));
    let _ = s.alert;

    // The overview is cached by the store's content version: a new run shows at once.
    let info = RunInfo {
        commit: CommitInfo { sha: "f".repeat(40), timestamp: None, ordinal: Some(13) },
        branch: "main".into(),
        trigger: "nightly".into(),
        environment: json!({}),
        idempotency_key: "run-12".into(),
        testbed: Testbed { spec: json!({"cpu_model": "Test CPU", "cores": 2}) },
    };
    let BeginRun::Started(run) = s.store.begin_run(&info).await.expect("begin") else {
        panic!("already recorded");
    };
    let values = [value("output_throughput", "tok/s", "throughput", false, 80.0)];
    s.store
        .record_scenario_result(run, &scenario("chat-f32", "mixtral-mini"), &values, &[])
        .await
        .expect("record");
    let before = get_json(&app, "/api/overview?q=throughput&model=mixtral-mini").await;
    assert_eq!(before["rows"][0]["latest"], 90.0, "a running run has no points yet");
    s.store.finish_run(run, RunStatus::Completed).await.expect("finish");
    let after = get_json(&app, "/api/overview?q=throughput&model=mixtral-mini").await;
    assert_eq!(after["rows"][0]["latest"], 80.0);
    assert_eq!(after["rows"][0]["points"], 13);
}

async fn text_from_the_database_is_escaped(store: Store) {
    let s = seed(store).await;
    let app = dyno_dashboard::router(s.store.clone(), None);
    // askama writes numeric entities; either form shows the name as text.
    let escaped =
        ["&lt;script&gt;alert(1)&lt;/script&gt;", "&#60;script&#62;alert(1)&#60;/script&#62;"];
    let last = s.runs[11];
    for uri in
        ["/".to_string(), format!("/runs/{last}"), format!("/compare?a={}&b={last}", s.runs[0])]
    {
        let (status, html) = get(&app, &uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert!(!html.contains(EVIL), "{uri} has the raw script");
        assert!(escaped.iter().any(|e| html.contains(e)), "{uri} does not show the name as text");
    }
}

async fn unknown_ids_are_404(store: Store) {
    let s = seed(store).await;
    let app = dyno_dashboard::router(s.store.clone(), Some(TOKEN.into()));
    for uri in [
        "/runs/999999",
        "/runs/abc",
        "/alerts/999999",
        "/studies/999999",
        "/studies/999999/best-config.yaml",
        "/compare?a=1&b=999999",
        "/series?scenario=nope&config=x&measure=y&testbed=z&branch=main",
        "/no/such/page",
    ] {
        let (status, html) = get(&app, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}: {html}");
        assert!(html.contains("Not found"), "{uri}");
    }
    for uri in ["/api/runs/999999", "/api/alerts/x", "/api/studies/999999", "/api/nope"] {
        let (status, body) = get(&app, uri).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
        let v: Value = serde_json::from_str(&body).expect("json error");
        assert_eq!(v["status"], 404);
    }
}

fn triage_json(alert: i64, bearer: Option<&str>) -> Request<Body> {
    let mut req = Request::post(format!("/api/alerts/{alert}/triage"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(t) = bearer {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    req.body(Body::from(r#"{"action":"acknowledged","note":"on it"}"#)).expect("request")
}

fn triage_form(alert: i64, cookie: Option<&str>, csrf: &str, token: &str) -> Request<Body> {
    let mut req = Request::post(format!("/alerts/{alert}/triage"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(c) = cookie {
        req = req.header(header::COOKIE, format!("dyno_csrf={c}"));
    }
    let body = format!("action=fixed&note=seen+in+test&token={token}&csrf={csrf}");
    req.body(Body::from(body)).expect("request")
}

async fn triage_needs_the_token(store: Store) {
    let s = seed(store).await;
    let history = async || s.store.triage_history(s.alert).await.expect("history").len();

    // Read-only dashboard: refused outright.
    let read_only = dyno_dashboard::router(s.store.clone(), None);
    let (status, _) = send(&read_only, triage_json(s.alert, Some(TOKEN))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let app = dyno_dashboard::router(s.store.clone(), Some(TOKEN.into()));
    for bearer in [None, Some("wrong")] {
        let (status, _) = send(&app, triage_json(s.alert, bearer)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bearer:?}");
    }
    assert_eq!(history().await, 0, "refused requests changed nothing");

    // The form: the page sets the CSRF cookie and puts its value in the form.
    let resp = app
        .clone()
        .oneshot(Request::get(format!("/alerts/{}", s.alert)).body(Body::empty()).expect("req"))
        .await
        .expect("response");
    let cookie = resp
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .and_then(|kv| kv.strip_prefix("dyno_csrf="))
        .expect("csrf cookie")
        .to_string();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
    let html = String::from_utf8_lossy(&bytes);
    assert!(html.contains(&format!("name=\"csrf\" value=\"{cookie}\"")));

    let (status, _) = send(&app, triage_form(s.alert, None, &cookie, TOKEN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no cookie: CSRF fails");
    let (status, _) = send(&app, triage_form(s.alert, Some(&cookie), "0", TOKEN)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "mismatched CSRF value");
    let (status, body) = send(&app, triage_form(s.alert, Some(&cookie), &cookie, "wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("wrong token"));
    assert_eq!(history().await, 0, "refused forms changed nothing");

    let (status, body) = send(&app, triage_json(s.alert, Some(TOKEN))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let recorded: Value = serde_json::from_str(&body).expect("event");
    assert_eq!(
        (recorded["action"].as_str(), recorded["author"].as_str()),
        (Some("acknowledged"), Some("api"))
    );
    let overview = get_json(&app, "/api/overview?q=throughput&model=mixtral-mini").await;
    assert_eq!(overview["rows"][0]["status"], "regressed", "acknowledged is still regressed");

    let (status, _) = send(&app, triage_form(s.alert, Some(&cookie), &cookie, TOKEN)).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let events = s.store.triage_history(s.alert).await.expect("history");
    let steps: Vec<(&str, &str)> =
        events.iter().map(|e| (e.action.as_str(), e.note.as_str())).collect();
    assert_eq!(steps, [("acknowledged", "on it"), ("fixed", "seen in test")]);
    let (_, html) = get(&app, &format!("/alerts/{}", s.alert)).await;
    assert!(html.contains("seen in test"));
    // A fixed regression no longer marks its series.
    let overview = get_json(&app, "/api/overview?q=throughput&model=mixtral-mini").await;
    assert_eq!(overview["rows"][0]["status"], "ok");
}

/// Runs `$name(store)` on SQLite and, when configured, PostgreSQL (its own schema).
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test]
            async fn sqlite() {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}", dir.path().join("t.sqlite").display());
                super::$name(dyno_results::Store::open(&url).await.expect("open")).await;
            }

            #[tokio::test]
            async fn postgres() {
                let Ok(base) = std::env::var("DYNO_TEST_POSTGRES_URL") else {
                    eprintln!("skipped: DYNO_TEST_POSTGRES_URL is not set");
                    return;
                };
                let schema = concat!("dash_", stringify!($name));
                let pool = sqlx::PgPool::connect(&base).await.expect("connect");
                for sql in [
                    format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                    format!("CREATE SCHEMA {schema}"),
                ] {
                    sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.expect("schema");
                }
                pool.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                let url = format!("{base}{sep}options=-c%20search_path%3D{schema}");
                super::$name(dyno_results::Store::open(&url).await.expect("open")).await;
            }
        }
    };
}

both!(pages_show_the_seeded_data);
both!(text_from_the_database_is_escaped);
both!(unknown_ids_are_404);
both!(triage_needs_the_token);
