//! Driving one load test: sends a [`Plan`]'s requests on schedule (open loop) or as slots
//! free up (closed loop) and collects a [`RequestRecord`] for each.
//!
//! Open loop never waits for the server: request `i` is due at its planned absolute time and
//! the sender sleeps until then, whatever earlier requests are doing, so a slow server shows
//! up as latency instead of silently lowering the offered load (coordinated omission). Only an
//! explicit `max_in_flight` cap may hold a request back; the hold then shows as schedule lag
//! and in the latencies measured from the intended send time.

use crate::client::{Client, RunClock};
use crate::metrics::percentile;
use crate::record::RequestRecord;
use dyno_workloads::{Pacing, Plan, PlannedRequest};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// How a plan is run.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Open loop: at most this many requests in flight (vLLM's `--max-concurrency`); a due
    /// request waits for a slot and the wait counts as schedule lag. `None`: no cap.
    pub max_in_flight: Option<usize>,
    /// Live counters for a progress display, updated as requests finish.
    pub live: Option<Arc<LiveStats>>,
    /// The run's time origin (request 0 of an open loop is due then); a moment after the call
    /// when `None`. Lets a caller line the run up with events on another clock.
    pub start: Option<std::time::Instant>,
}

/// Counters a progress display reads while a run goes on.
#[derive(Debug, Default)]
pub struct LiveStats {
    /// Requests sent so far.
    pub sent: AtomicUsize,
    /// Requests finished successfully.
    pub completed: AtomicUsize,
    /// Requests failed.
    pub failed: AtomicUsize,
    /// TTFTs of the successful measured requests so far, seconds.
    ttfts: Mutex<Vec<f64>>,
}

impl LiveStats {
    fn record(&self, rec: &RequestRecord) {
        if rec.ok() {
            self.completed.fetch_add(1, Ordering::Relaxed);
            if let (false, Some(t)) = (rec.warmup, rec.ttft_s()) {
                self.ttfts.lock().unwrap_or_else(|p| p.into_inner()).push(t);
            }
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The median and p99 TTFT so far, seconds (for display; the report recomputes them).
    pub fn ttft_p50_p99(&self) -> Option<(f64, f64)> {
        let mut t = self.ttfts.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if t.is_empty() {
            return None;
        }
        t.sort_by(f64::total_cmp);
        Some((percentile(&t, 50.0), percentile(&t, 99.0)))
    }
}

/// Sends every request of `plan` through `client` and returns their records in plan order.
/// Open-loop requests are generated before the clock starts, so generating them costs the
/// schedule nothing.
pub async fn run_plan(client: &Client, plan: &Plan, opts: &RunOptions) -> Vec<RequestRecord> {
    let mut records = match plan.pacing {
        Pacing::Open => run_open(client, plan, opts).await,
        Pacing::Closed { concurrency } => run_closed(client, plan, concurrency, opts).await,
    };
    records.sort_by_key(|r| r.index);
    records
}

async fn run_open(client: &Client, plan: &Plan, opts: &RunOptions) -> Vec<RequestRecord> {
    let requests: Vec<PlannedRequest> =
        (0..plan.arrivals_s.len()).map(|i| plan.request(i)).collect();
    let cap = opts.max_in_flight.map(|n| Arc::new(Semaphore::new(n.max(1))));
    // Start a little ahead so the first sends do not pay for setting up the loop.
    let clock = RunClock::starting_at(
        opts.start.unwrap_or_else(|| std::time::Instant::now() + Duration::from_millis(2)),
    );
    // One shared client: a task clones a pointer, not the client's strings.
    let shared = Arc::new(client.clone());
    let mut tasks = JoinSet::new();
    for (req, &at) in requests.into_iter().zip(&plan.arrivals_s) {
        tokio::time::sleep_until(clock.instant_at(at).into()).await;
        let permit = match &cap {
            Some(sem) => sem.clone().acquire_owned().await.ok(),
            None => None,
        };
        let (client, live) = (shared.clone(), opts.live.clone());
        if let Some(live) = &live {
            live.sent.fetch_add(1, Ordering::Relaxed);
        }
        tasks.spawn(async move {
            let rec = client.send(&req, at, &clock).await;
            drop(permit);
            if let Some(live) = live {
                live.record(&rec);
            }
            rec
        });
    }
    collect(tasks).await
}

async fn run_closed(
    client: &Client,
    plan: &Plan,
    concurrency: usize,
    opts: &RunOptions,
) -> Vec<RequestRecord> {
    let next = Arc::new(AtomicUsize::new(0));
    let plan = Arc::new(plan.clone());
    let clock = opts.start.map_or_else(RunClock::start_now, RunClock::starting_at);
    if let Some(start) = opts.start {
        tokio::time::sleep_until(start.into()).await;
    }
    let mut tasks = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let (client, plan, next, live) =
            (client.clone(), plan.clone(), next.clone(), opts.live.clone());
        tasks.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if plan.max_requests.is_some_and(|max| i >= max) {
                    break;
                }
                let now = clock.now_s();
                if plan.duration_s.is_some_and(|d| now >= d) && i >= plan.warmup_requests {
                    break;
                }
                let req = plan.request(i);
                if let Some(live) = &live {
                    live.sent.fetch_add(1, Ordering::Relaxed);
                }
                let rec = client.send(&req, clock.now_s(), &clock).await;
                if let Some(live) = &live {
                    live.record(&rec);
                }
                out.push(rec);
            }
            out
        });
    }
    collect(tasks).await.into_iter().flatten().collect()
}

/// Awaits every task; a task that panicked is a bug in the harness, so its panic goes on.
async fn collect<T: 'static>(mut tasks: JoinSet<T>) -> Vec<T> {
    let mut out = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(v) => out.push(v),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => {}
        }
    }
    out
}
