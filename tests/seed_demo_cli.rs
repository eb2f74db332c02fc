//! `dyno db seed-demo` as a user runs it, into a SQLite file in a temporary directory: a short
//! history whose planted changes become confirmed alerts (and whose outliers do not), decodable
//! histograms, a tuning study, the same history for the same seed, and a refusal to touch a
//! store that holds data.

use std::path::Path;
use std::process::{Command, Output};

use dyno_harness::Histograms;
use dyno_harness::demo::{
    FEATURE_BRANCH, FEATURE_RUNS, MAIN_BRANCH, MEASURES, STUDY_NAME, STUDY_TRIALS, planted_events,
    scenario_names,
};
use dyno_results::store::{AlertState, SeriesFilter, Store, TrialStatus};

const DAYS: usize = 60;

/// Runs `dyno` in `dir` (never the repository: nothing may land there).
fn dyno(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dyno"))
        .args(args)
        .current_dir(dir)
        .env_remove("DYNO_DB")
        .output()
        .expect("run dyno")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[track_caller]
fn ok(o: Output) -> Output {
    assert!(o.status.success(), "stdout:\n{}\nstderr:\n{}", text(&o.stdout), text(&o.stderr));
    o
}

fn block_on<T>(f: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime").block_on(f)
}

fn seed(dir: &Path, file: &str, seed: &str) -> Output {
    dyno(dir, &["db", "seed-demo", "--db", file, "--days", &DAYS.to_string(), "--seed", seed])
}

fn main_series(scenario: &str, measure: &str) -> SeriesFilter {
    SeriesFilter {
        scenario: scenario.into(),
        measure: measure.into(),
        branch: Some(MAIN_BRANCH.into()),
        ..SeriesFilter::default()
    }
}

#[test]
fn seeds_a_history_detection_agrees_with_then_refuses_to_seed_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = ok(seed(dir.path(), "demo.sqlite", "1"));
    let line = text(&out.stdout);
    assert!(line.contains(&format!("seeded {} runs, 40 series", DAYS + FEATURE_RUNS)), "{line}");

    let db = dir.path().join("demo.sqlite");
    let db = db.to_str().expect("utf-8 path");
    block_on(async {
        let store = Store::open(db).await.expect("open");
        let runs = store.runs(10_000).await.expect("runs");
        assert_eq!(runs.len(), DAYS + FEATURE_RUNS);
        assert_eq!(runs.iter().filter(|r| r.branch == FEATURE_BRANCH).count(), FEATURE_RUNS);
        assert!(runs.iter().all(|r| r.commit.sha.len() == 40));

        // 5 scenarios × 4 measures on main, one point a day, in commit order.
        let names: Vec<&str> = scenario_names().collect();
        assert_eq!(names.len(), 5);
        let mut commits = Vec::new();
        for s in &names {
            for m in MEASURES {
                let points = store.series(&main_series(s, m)).await.expect("series");
                assert_eq!(points.len(), DAYS, "{s} {m}");
                assert!(points.windows(2).all(|w| w[0].ordinal < w[1].ordinal));
                assert!(points.iter().all(|p| p.value.is_finite() && p.value > 0.0));
                commits = points.iter().map(|p| p.sha.clone()).collect();
                let feature =
                    SeriesFilter { branch: Some(FEATURE_BRANCH.into()), ..main_series(s, m) };
                assert_eq!(store.series(&feature).await.expect("series").len(), FEATURE_RUNS);
            }
        }

        // Each planted step is a confirmed alert at (or next to) its commit, in the right
        // direction; no outlier is.
        let confirmed = store.alerts(Some(AlertState::Confirmed)).await.expect("alerts");
        let index = |sha: &str| commits.iter().position(|c| c == sha);
        for e in planted_events(DAYS) {
            let at_event: Vec<_> = confirmed
                .iter()
                .filter(|a| {
                    a.info.series.scenario == e.scenario && a.info.series.branch == MAIN_BRANCH
                })
                .filter(|a| index(&a.info.commit).is_some_and(|i| i.abs_diff(e.day) <= 2))
                .collect();
            if e.step {
                let (measure, _) = e.effects[0];
                assert!(
                    at_event
                        .iter()
                        .any(|a| a.info.series.measure == measure
                            && a.info.regression == e.regression),
                    "no confirmed alert for {e:?}; confirmed: {:#?}",
                    confirmed
                        .iter()
                        .map(|a| (
                            &a.info.series.scenario,
                            &a.info.series.measure,
                            index(&a.info.commit),
                            a.info.change_pct
                        ))
                        .collect::<Vec<_>>()
                );
            } else {
                assert!(at_event.is_empty(), "outlier {e:?} confirmed: {at_event:#?}");
            }
        }
        // The steps are grouped by commit range, and triage left a history.
        assert!(confirmed.iter().all(|a| a.group.is_some()));
        let mut triaged = 0;
        for a in &confirmed {
            triaged += usize::from(!store.triage_history(a.id).await.expect("history").is_empty());
        }
        assert!(triaged >= 2, "{triaged} alerts triaged");

        // Histograms decode, one TTFT per request.
        let record = store.run_record(runs[0].id).await.expect("run record");
        assert_eq!(record.scenarios.len(), 5);
        for s in &record.scenarios {
            let parts: Vec<(&str, &[u8])> =
                s.histograms.iter().map(|h| (h.name.as_str(), h.data.as_slice())).collect();
            let h = Histograms::deserialize(&parts).expect("histograms");
            assert_eq!(h.ttft.len(), 200, "{}", s.scenario.name);
            assert!(h.itl.len() > h.ttft.len());
            let ttft_p99 = s.values.iter().find(|v| v.measure == "ttft_p99_ms").expect("ttft");
            let from_hist = h.ttft.value_at_quantile(0.99) as f64 / 1e3;
            assert!(
                (from_hist / ttft_p99.value - 1.0).abs() < 0.1,
                "{from_hist} vs {}",
                ttft_p99.value
            );
            assert_eq!(ttft_p99.samples.len(), 200);
        }

        // The study: its trials, measured, some predicted too, a few failed or infeasible.
        let study = store.study_by_name(STUDY_NAME).await.expect("study").expect("the demo study");
        let trials = store.trials(study.id).await.expect("trials");
        assert_eq!(trials.len(), STUDY_TRIALS);
        let completed: Vec<_> =
            trials.iter().filter(|t| t.status == TrialStatus::Completed).collect();
        assert!(completed.len() >= STUDY_TRIALS * 3 / 4, "{} completed", completed.len());
        assert!(
            completed.iter().all(|t| t.measured.as_ref().is_some_and(|m| m["goodput"].is_f64()))
        );
        assert!(completed.iter().any(|t| t.predicted.is_some()));
        assert!(trials.iter().any(|t| t.status != TrialStatus::Completed));
        store.close().await;
    });

    // A second seeding into the same store is refused, and writes nothing.
    let again = seed(dir.path(), "demo.sqlite", "2");
    assert!(!again.status.success());
    let err = text(&again.stderr);
    assert!(err.contains("already holds") && err.contains("demo.sqlite"), "{err}");
    block_on(async {
        let store = Store::open(db).await.expect("open");
        assert_eq!(store.runs(10_000).await.expect("runs").len(), DAYS + FEATURE_RUNS);
        assert_eq!(store.studies().await.expect("studies").len(), 1);
        store.close().await;
    });
}

#[test]
fn the_same_seed_gives_the_same_history_and_too_few_days_writes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    ok(seed(dir.path(), "a.sqlite", "7"));
    ok(seed(dir.path(), "b.sqlite", "7"));
    let values = |file: &str| {
        let db = dir.path().join(file);
        block_on(async move {
            let store = Store::open(db.to_str().expect("utf-8")).await.expect("open");
            let mut all = Vec::new();
            for s in scenario_names() {
                for m in MEASURES {
                    let points = store.series(&main_series(s, m)).await.expect("series");
                    all.extend(
                        points.into_iter().map(|p| (p.sha, p.ordinal, p.value, p.lower_bound)),
                    );
                }
            }
            let alerts: Vec<_> = store
                .alerts(None)
                .await
                .expect("alerts")
                .into_iter()
                .map(|a| (a.info.commit, a.info.state, a.info.series.measure))
                .collect();
            store.close().await;
            (all, alerts)
        })
    };
    assert_eq!(values("a.sqlite"), values("b.sqlite"));

    let short = dyno(dir.path(), &["db", "seed-demo", "--db", "c.sqlite", "--days", "5"]);
    assert!(!short.status.success());
    assert!(text(&short.stderr).contains("--days 5"), "{}", text(&short.stderr));
    assert!(!dir.path().join("c.sqlite").exists());
}
