//! The load generator measures what a server really does: against the null server with
//! injected TTFT 50 ms and ITL 10 ms, the reported medians of TTFT, ITL, TPOT and E2EL are
//! within 2 ms of the truth and the achieved arrival rate is within 2% of the requested one
//! over 200 requests. Alone in its test binary so no other test shares the two cores.

use dyno_harness::null_server::{NullServer, NullServerConfig};
use dyno_harness::{Client, LoadReport, RunOptions, SummaryOptions, TargetSpec, run_plan};
use dyno_workloads::{LoadOverrides, Workload};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

const TTFT_S: f64 = 0.050;
const ITL_S: f64 = 0.010;
const TOKENS: usize = 16;
const RATE: f64 = 40.0;

#[test]
fn medians_and_rate_match_the_injected_truth() {
    // The server spins the last millisecond before each event (tokio's timer alone is up to
    // ~2 ms late), on a thread and core of its own.
    let config = NullServerConfig { spin_us: 1000, ..NullServerConfig::new(50.0, 10.0) };
    let server = NullServer::run_on_own_thread(config, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("null server starts");
    let workload = Workload::from_yaml(
        &format!(
            "seed: 3\nlengths:\n  prompt: {{ dist: fixed, value: 32 }}\n  output: {{ dist: fixed, value: {TOKENS} }}\n\
             arrival: {{ process: constant, rate: {RATE} }}\nrequests: 200\n"
        ),
        "accuracy.yaml",
        Path::new("."),
    )
    .expect("workload parses");
    let plan = workload.plan(&LoadOverrides::default()).expect("plan");
    let target =
        TargetSpec { base_url: server.base_url(), model: "null".into(), token_prompts: true };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    let records = runtime.block_on(async {
        let client = Client::new(target, 64, Duration::from_secs(30)).expect("client");
        run_plan(&client, &plan, &RunOptions::default()).await
    });
    let report = LoadReport::from_records(&records, &workload.slo, &SummaryOptions::default());

    assert_eq!(report.completed, 200, "failures: {:?}", report.failures);
    assert_eq!(report.total_output_tokens, 200 * TOKENS);
    let truth = [
        ("TTFT", report.ttft.median, TTFT_S),
        ("ITL", report.itl.median, ITL_S),
        ("TPOT", report.tpot.median, ITL_S),
        ("E2EL", report.e2el.median, TTFT_S + (TOKENS - 1) as f64 * ITL_S),
    ];
    for (name, measured, expected) in truth {
        assert!(
            (measured - expected).abs() <= 0.002,
            "median {name} {:.3} ms, injected {:.3} ms",
            measured * 1e3,
            expected * 1e3
        );
    }
    let achieved = report.co.achieved_rate.expect("200 sends give a rate");
    assert!(
        (achieved - RATE).abs() <= 0.02 * RATE,
        "achieved {achieved:.3} req/s, requested {RATE}"
    );
}
