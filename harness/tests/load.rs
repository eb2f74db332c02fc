//! The load generator against scripted misbehaviour: a server stall shows in the
//! coordinated-omission view, and every kind of failure is counted while the run completes.

use dyno_harness::null_server::{Fault, FaultKind, NullServer, NullServerConfig, Stall};
use dyno_harness::{
    Client, ErrorKind, LoadReport, RequestRecord, RunOptions, SummaryOptions, TargetSpec, run_plan,
};
use dyno_workloads::{LoadOverrides, Workload};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

fn loopback() -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, 0))
}

fn workload(arrival: &str, requests: usize, output: usize) -> Workload {
    Workload::from_yaml(
        &format!(
            "seed: 5\nlengths:\n  prompt: {{ dist: fixed, value: 8 }}\n  output: {{ dist: fixed, value: {output} }}\n\
             arrival: {arrival}\nrequests: {requests}\n"
        ),
        "test.yaml",
        Path::new("."),
    )
    .expect("workload parses")
}

fn run(base_url: String, w: &Workload, opts: &RunOptions) -> (Vec<RequestRecord>, LoadReport) {
    let target = TargetSpec { base_url, model: "null".into(), token_prompts: true };
    let plan = w.plan(&LoadOverrides::default()).expect("plan");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let records = runtime.block_on(async {
        let client = Client::new(target, 16, Duration::from_secs(30)).expect("client");
        run_plan(&client, &plan, opts).await
    });
    let report = LoadReport::from_records(&records, &w.slo, &SummaryOptions::default());
    (records, report)
}

/// A 1 s stall while a capped open loop keeps its schedule: every request due during the
/// stall waits for it, which the latency from the intended send time shows even though
/// the same request's latency from its (late) actual send does not; the lag is reported and
/// the run is marked invalid.
#[test]
fn a_server_stall_shows_in_the_coordinated_omission_view() {
    let (stall_at, stall_for) = (0.5, 1.0);
    let before = Instant::now();
    let config = NullServerConfig {
        stall: Some(Stall { at_s: stall_at, for_s: stall_for }),
        ..NullServerConfig::new(2.0, 1.0)
    };
    let server = NullServer::run_on_own_thread(config, loopback()).expect("null server");
    // The stall window is measured from the server's start, somewhere in [before, start].
    let start = Instant::now();
    let offset = (start - before).as_secs_f64();
    let w = workload("{ process: constant, rate: 20 }", 50, 4);
    let opts = RunOptions { max_in_flight: Some(2), start: Some(start), ..RunOptions::default() };
    let (records, report) = run(server.base_url(), &w, &opts);

    assert_eq!(report.completed, 50, "{:?}", report.failures);
    // On the run's clock the stall ends no earlier than this.
    let stall_end = stall_at + stall_for - offset;
    let during: Vec<&RequestRecord> = records
        .iter()
        .filter(|r| r.intended_s >= stall_at + 0.01 && r.intended_s < stall_end - 0.01)
        .collect();
    assert!(during.len() >= 15, "{} requests scheduled during the stall", during.len());
    for r in &during {
        let first = r.choice_events_s[0];
        let from_intended = first - r.intended_s;
        assert!(
            first >= stall_end,
            "request {} (due {:.3}) got its first token at {first:.3}, inside the stall",
            r.index,
            r.intended_s
        );
        assert!(from_intended >= stall_end - r.intended_s);
    }
    // Requests held by the in-flight cap went out late: their plain TTFT misses the stall
    // that their TTFT from the intended time shows.
    let held: Vec<&&RequestRecord> = during.iter().filter(|r| r.lag_s() > 0.2).collect();
    assert!(!held.is_empty(), "the cap held some requests back");
    for r in &held {
        let plain = r.ttft_s().expect("succeeded");
        assert!(plain < r.choice_events_s[0] - r.intended_s);
    }
    assert!(report.co.lag.max >= 0.5, "max lag {:.3} s", report.co.lag.max);
    assert!(report.co.ttft.max >= stall_for - 0.1 - offset, "CO TTFT max {}", report.co.ttft.max);
    assert!(report.co.ttft.max > report.ttft.max);
    assert!(!report.valid, "a run that fell 0.5 s behind is not trusted");
    assert!(report.invalid_reason.as_deref().is_some_and(|r| r.contains("lag")));
}

/// One closed-loop run per fault: half the requests fail, each counted under its kind, and
/// the run still completes with the other half measured.
#[test]
fn every_failure_is_counted_by_kind_and_the_run_completes() {
    let cases = [
        (FaultKind::Status { code: 404 }, ErrorKind::Http4xx),
        (FaultKind::Status { code: 503 }, ErrorKind::Http5xx),
        (FaultKind::MalformedSse, ErrorKind::MalformedSse),
        (FaultKind::Truncate { after_events: 2 }, ErrorKind::Truncated),
    ];
    let w = workload("{ process: closed, concurrency: 1 }", 10, 4);
    for (kind, expected) in cases {
        let config = NullServerConfig {
            fault: Some(Fault { every: 2, kind }),
            ..NullServerConfig::new(0.0, 0.0)
        };
        let server = NullServer::run_on_own_thread(config, loopback()).expect("null server");
        let (records, report) = run(server.base_url(), &w, &RunOptions::default());
        assert_eq!(records.len(), 10);
        assert_eq!(report.failed, 5, "{expected:?}: {:?}", report.failures);
        assert_eq!(report.completed, 5);
        assert_eq!(report.failures.get(&expected), Some(&5), "{:?}", report.failures);
        assert_eq!(report.errors.iter().filter(|e| !e.is_empty()).count(), 5);
        assert_eq!(report.ttft.count, 5, "the successes are still measured");
    }
}

#[test]
fn connection_refused_is_counted_and_reported() {
    // A port that was free a moment ago and has no listener now.
    let port = std::net::TcpListener::bind(loopback()).expect("bind").local_addr().expect("addr");
    let w = workload("{ process: constant, rate: 200 }", 6, 4);
    let (records, report) = run(format!("http://{port}"), &w, &RunOptions::default());
    assert_eq!(records.len(), 6);
    assert_eq!(report.completed, 0);
    assert_eq!(report.failures.get(&ErrorKind::Connect), Some(&6), "{:?}", report.failures);
    assert!(records.iter().all(|r| r.status.is_none()));
}

#[test]
fn a_dropped_connection_is_a_failure_not_a_hang() {
    let config = NullServerConfig {
        fault: Some(Fault { every: 1, kind: FaultKind::DropConnection }),
        ..NullServerConfig::new(0.0, 0.0)
    };
    let server = NullServer::run_on_own_thread(config, loopback()).expect("null server");
    let w = workload("{ process: closed, concurrency: 2 }", 4, 4);
    let (_, report) = run(server.base_url(), &w, &RunOptions::default());
    assert_eq!(report.failed, 4, "{:?}", report.failures);
    // Closed before any response byte: no status, no stream to call truncated.
    assert_eq!(report.failures.get(&ErrorKind::Other), Some(&4), "{:?}", report.failures);
}
