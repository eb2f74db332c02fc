//! The simulator: a discrete-event run of a workload through the engine's own scheduler, with
//! step times from the [`StepModel`] instead of forward passes.
//!
//! Events are arrivals (the workload's plan, open or closed loop), step ends (one per `dp`
//! replica in flight), dynamic-batching wake-ups and SLO deadlines. Each replica is a
//! [`dyno_engine::scheduler::Scheduler`] — the same type and code the engine steps — and
//! requests go to the replica with the fewest waiting, as the engine's `EngineHandle` routes
//! them. A step's sampled tokens appear when it ends. Every request becomes the same
//! [`RequestRecord`] a real load test produces, so [`LoadReport::from_records`], the reports
//! and the store apply unchanged.
//!
//! What is *not* simulated: HTTP and SSE costs (a token is "read" when its step ends), EOS
//! (load tests ask for `ignore_eos`: every request generates its planned tokens), and
//! engine-side randomness in step times.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use dyno_engine::ModelConfig;
use dyno_engine::config::EngineConfig;
use dyno_engine::scheduler::{AddError, Scheduler, SchedulerConfig, Step};
use dyno_harness::client::SloDeadline;
use dyno_harness::metrics::{LoadReport, SummaryOptions};
use dyno_harness::record::{ErrorKind, RequestRecord};
use dyno_workloads::{LoadOverrides, Pacing, Plan, Workload, WorkloadError};

use crate::step_model::{StepModel, StepShape};

/// How long a step takes: the [`StepModel`], or a stand-in in tests.
pub trait StepCost {
    /// Seconds of one step of `shape`.
    fn step_seconds(&self, shape: &StepShape) -> f64;
}

impl StepCost for StepModel {
    fn step_seconds(&self, shape: &StepShape) -> f64 {
        self.seconds(shape)
    }
}

/// Every step takes the same time (queueing-theory checks).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ConstantStep(pub f64);

impl StepCost for ConstantStep {
    fn step_seconds(&self, _: &StepShape) -> f64 {
        self.0
    }
}

/// How a simulated run behaves beyond its plan.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SimOptions {
    /// Abandon requests that can no longer meet these bounds, as the measured evaluator's
    /// client does (`Client::with_slo_deadline`).
    pub slo_deadline: Option<SloDeadline>,
    /// Keep every step's shape in [`SimOutcome::step_log`].
    pub log_steps: bool,
}

/// What a simulated run produced.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SimOutcome {
    /// One record per request sent, in plan order.
    pub records: Vec<RequestRecord>,
    /// Engine steps that computed something, over all replicas.
    pub steps: u64,
    /// Sequences preempted (KV blocks ran out), over all replicas.
    pub preemptions: u64,
    /// Simulated seconds from the first send to the last event.
    pub simulated_s: f64,
    /// With [`SimOptions::log_steps`]: (replica, shape) of every step, in start order.
    pub step_log: Vec<(usize, StepShape)>,
}

/// One request's progress.
#[derive(Debug, Clone)]
struct Request {
    replica: usize,
    prompt: usize,
    output: usize,
    generated: usize,
    /// When its tokens appeared, as steps of its replica (see [`TokenRuns`]).
    token_steps: TokenRuns,
    record: RequestRecord,
    done: bool,
}

/// The steps of one replica at which a request's tokens appeared, as runs `(first, count)`
/// of consecutive entries of [`Replica::step_ends`].
///
/// A running sequence samples at every step of its replica, so one run usually holds all of
/// its tokens. The records' token times are written from the runs once, at the end: written
/// as they happen they were a store to a different cold buffer per token, a quarter of a long
/// run's time.
#[derive(Debug, Clone, Default)]
struct TokenRuns {
    current: Option<(usize, usize)>,
    earlier: Vec<(usize, usize)>,
}

impl TokenRuns {
    /// A token appeared at the replica's step `step` (steps only ever increase).
    fn push(&mut self, step: usize) {
        match &mut self.current {
            Some((first, count)) if *first + *count == step => *count += 1,
            current => {
                if let Some(run) = current.replace((step, 1)) {
                    self.earlier.push(run);
                }
            }
        }
    }

    /// Appends the tokens' times, in order, from the replica's step end times.
    fn write_times(&self, step_ends: &[f64], out: &mut Vec<f64>) {
        for &(first, count) in self.earlier.iter().chain(&self.current) {
            out.extend_from_slice(&step_ends[first..first + count]);
        }
    }
}

/// One `dp` replica: its scheduler and the step in flight.
struct Replica {
    scheduler: Scheduler,
    in_flight: Option<(Step, f64)>,
    wake_at: Option<f64>,
    /// When each of its steps ended, in order.
    step_ends: Vec<f64>,
}

/// A time-ordered event key: seconds as ordered bits (times are finite and ≥ 0).
fn key(t: f64) -> Reverse<(u64, usize)> {
    Reverse((t.max(0.0).to_bits(), 0))
}

/// The earliest pending event of each kind.
#[derive(Debug, Clone, Copy)]
struct Next {
    arrival: Option<f64>,
    step_end: Option<(f64, usize)>,
    wake: Option<f64>,
    deadline: Option<f64>,
}

impl Next {
    fn earliest(&self) -> Option<f64> {
        [self.arrival, self.step_end.map(|s| s.0), self.wake, self.deadline]
            .into_iter()
            .flatten()
            .min_by(f64::total_cmp)
    }
}

#[allow(clippy::too_many_arguments)]
fn next_events(
    plan: &Plan,
    closed: Option<usize>,
    total: usize,
    sent: usize,
    next_open: usize,
    free_slots: &BinaryHeap<Reverse<(u64, usize)>>,
    replicas: &[Replica],
    deadlines: &BinaryHeap<Reverse<(u64, usize)>>,
) -> Next {
    let arrival = match closed {
        None => plan.arrivals_s.get(next_open).copied(),
        Some(_) => free_slots
            .peek()
            .filter(|_| sent < total)
            .map(|Reverse((bits, _))| f64::from_bits(*bits))
            .filter(|&t| plan.duration_s.is_none_or(|d| t < d)),
    };
    let step_end = replicas
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.in_flight.as_ref().map(|(_, end)| (*end, i)))
        .min_by(|a, b| a.0.total_cmp(&b.0));
    let wake = replicas
        .iter()
        .filter(|r| r.in_flight.is_none())
        .filter_map(|r| r.wake_at)
        .min_by(f64::total_cmp);
    let deadline = deadlines.peek().map(|Reverse((bits, _))| f64::from_bits(*bits));
    Next { arrival, step_end, wake, deadline }
}

/// How many requests `plan` sends (unbounded for a closed loop without a request limit), and
/// its closed-loop concurrency.
fn plan_size(plan: &Plan) -> (usize, Option<usize>) {
    match plan.pacing {
        Pacing::Open => (plan.arrivals_s.len(), None),
        Pacing::Closed { concurrency } => {
            (plan.max_requests.unwrap_or(usize::MAX), Some(concurrency))
        }
    }
}

/// Requests from this many on are prepared ahead on a second thread (below it, a thread
/// costs more than it saves).
const PREPARE_AHEAD_FROM: usize = 4096;

/// Requests per message from the preparing thread (a message per request would cost a
/// thread wake-up each), and messages that may wait.
const PREPARED_BATCH: usize = 512;
const PREPARED_QUEUE: usize = 4;

/// One request as the event loop needs it: prompt tokens, output tokens, and an empty buffer
/// for its token times with room for all of them.
type PreparedRequest = (usize, usize, Vec<f64>);

/// Where the event loop takes the next request from.
///
/// A long run writes one time per generated token into fresh memory (160 MB for 100k chat
/// requests); faulting those pages in cost the event loop a third of its time. Prepared
/// ahead, the buffers are allocated and touched on a second thread, in plan order, and the
/// lengths are sampled there too. The results are the same either way.
enum RequestSource<'a> {
    /// Lengths and buffers made when the request arrives.
    Inline(&'a Plan),
    /// From the preparing thread in plan order (inline once it is gone): the batch being
    /// used, reversed so that `pop` gives the next.
    Ahead(&'a Plan, Receiver<Vec<PreparedRequest>>, Vec<PreparedRequest>),
}

impl RequestSource<'_> {
    /// Request `index` (called with 0, 1, 2, … in order).
    fn next(&mut self, index: usize) -> PreparedRequest {
        if let RequestSource::Ahead(_, rx, batch) = self {
            if batch.is_empty()
                && let Ok(mut next) = rx.recv()
            {
                next.reverse();
                *batch = next;
            }
            if let Some(prepared) = batch.pop() {
                return prepared;
            }
        }
        let (RequestSource::Inline(plan) | RequestSource::Ahead(plan, ..)) = self;
        let (prompt, output) = plan.lengths(index);
        (prompt, output, Vec::with_capacity(output))
    }
}

/// The preparing thread: requests `0..total` in order, in batches, until the event loop
/// hangs up.
fn prepare_requests(plan: &Plan, total: usize, tx: SyncSender<Vec<PreparedRequest>>) {
    let mut index = 0;
    while index < total {
        let end = total.min(index + PREPARED_BATCH);
        let batch = (index..end)
            .map(|i| {
                let (prompt, output) = plan.lengths(i);
                // Written, not `vec![0.0; n]`: calloc skips fresh pages and would leave the
                // faults to the event loop.
                let mut times = Vec::with_capacity(output);
                times.resize(output, 0.0);
                times.clear();
                (prompt, output, times)
            })
            .collect();
        if tx.send(batch).is_err() {
            return;
        }
        index = end;
    }
}

/// Runs `plan` through `dp` replicas of `config` serving `model`, timed by `step_model`.
pub fn simulate(
    plan: &Plan,
    model: &ModelConfig,
    config: &EngineConfig,
    step_cost: &impl StepCost,
    opts: &SimOptions,
) -> SimOutcome {
    let (total, _) = plan_size(plan);
    if total < PREPARE_AHEAD_FROM {
        return run_events(plan, model, config, step_cost, opts, RequestSource::Inline(plan));
    }
    std::thread::scope(|scope| {
        let (tx, rx) = sync_channel(PREPARED_QUEUE);
        scope.spawn(move || prepare_requests(plan, total, tx));
        // The loop drops the receiver when it returns, which ends the preparing thread.
        run_events(plan, model, config, step_cost, opts, RequestSource::Ahead(plan, rx, Vec::new()))
    })
}

/// The event loop of [`simulate`].
fn run_events(
    plan: &Plan,
    model: &ModelConfig,
    config: &EngineConfig,
    step_cost: &impl StepCost,
    opts: &SimOptions,
    mut source: RequestSource<'_>,
) -> SimOutcome {
    let sched_cfg = SchedulerConfig::from_engine(config, model);
    let replicas_n = config.parallel.dp.max(1);
    let mut replicas: Vec<Replica> = (0..replicas_n)
        .map(|_| Replica {
            scheduler: Scheduler::new(sched_cfg.clone()),
            in_flight: None,
            wake_at: None,
            step_ends: Vec::new(),
        })
        .collect();
    let max_context = replicas[0].scheduler.max_context();

    let (total, closed) = plan_size(plan);
    let mut requests: Vec<Request> = Vec::with_capacity(total.min(1 << 20));
    // Closed loop: times at which a slot frees up and the next request goes out.
    let mut free_slots: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    if let Some(c) = closed {
        for _ in 0..c.min(total) {
            free_slots.push(key(0.0));
        }
    }
    let mut deadlines: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    let mut next_open = 0usize;
    let mut outcome = SimOutcome::default();
    let mut now = 0.0f64;
    let mut finished = Vec::new();

    loop {
        let mut next = next_events(
            plan,
            closed,
            total,
            requests.len(),
            next_open,
            &free_slots,
            &replicas,
            &deadlines,
        );
        // Events at the same instant are all handled before any replica starts a step, so a
        // burst of simultaneous arrivals is batched as the engine would batch it.
        if next.earliest().is_none_or(|t| t > now) {
            for (ri, replica) in replicas.iter_mut().enumerate() {
                if replica.in_flight.is_some() || replica.scheduler.is_idle() {
                    continue;
                }
                if replica.wake_at.is_some_and(|w| w > now) {
                    continue;
                }
                let step = replica.scheduler.schedule(now);
                outcome.preemptions += step.preempted.len() as u64;
                if step.is_empty() {
                    replica.wake_at = step.wake_at;
                    continue;
                }
                replica.wake_at = None;
                let shape = StepShape::of(&step);
                if opts.log_steps {
                    outcome.step_log.push((ri, shape));
                }
                let seconds = step_cost.step_seconds(&shape);
                outcome.steps += 1;
                replica.in_flight = Some((step, now + seconds.max(1e-9)));
            }
            next = next_events(
                plan,
                closed,
                total,
                requests.len(),
                next_open,
                &free_slots,
                &replicas,
                &deadlines,
            );
        }
        let Next { step_end, wake, deadline, .. } = next;
        let Some(t) = next.earliest() else { break };
        now = now.max(t);

        if deadline == Some(t) {
            let Some(Reverse((_, idx))) = deadlines.pop() else { break };
            let r = &mut requests[idx];
            if !r.done {
                r.done = true;
                r.record.error = Some(ErrorKind::Timeout);
                r.record.error_detail = Some("abandoned: can no longer meet the SLOs".into());
                r.record.completed_s = now;
                replicas[r.replica].scheduler.abort(idx as u64);
                if closed.is_some() {
                    free_slots.push(key(now));
                }
            }
        } else if step_end.map(|s| s.0) == Some(t) {
            let Some((_, i)) = step_end else { break };
            let Some((step, _)) = replicas[i].in_flight.take() else { break };
            finished.clear();
            let step_index = replicas[i].step_ends.len();
            replicas[i].step_ends.push(now);
            for item in step.items.iter().filter(|it| it.samples) {
                let r = &mut requests[item.seq as usize];
                if r.done {
                    continue;
                }
                r.generated += 1;
                r.token_steps.push(step_index);
                if r.generated == 1 {
                    r.record.first_byte_s = Some(now);
                    r.record.first_content_s = Some(now);
                }
                if r.generated >= r.output || r.prompt + r.generated >= max_context {
                    r.done = true;
                    r.record.completed_s = now;
                    r.record.output_tokens = Some(r.generated);
                    r.record.usage_prompt_tokens = Some(r.prompt);
                    r.record.status = Some(200);
                    finished.push(item.seq);
                    if closed.is_some() {
                        free_slots.push(key(now));
                    }
                }
            }
            replicas[i].scheduler.complete(&step, &finished);
        } else if wake == Some(t) {
            for r in replicas.iter_mut().filter(|r| r.wake_at == Some(t)) {
                r.wake_at = None;
            }
        } else {
            // An arrival: the next request of the plan goes to the least-waiting replica.
            let idx = requests.len();
            if closed.is_some() {
                free_slots.pop();
            } else {
                next_open += 1;
            }
            let (prompt, output, choice_events_s) = source.next(idx);
            let replica_i = (0..replicas.len())
                .min_by_key(|&i| replicas[i].scheduler.stats().waiting)
                .unwrap_or(0);
            let mut record = RequestRecord {
                index: idx,
                warmup: idx < plan.warmup_requests,
                intended_s: now,
                sent_s: now,
                first_byte_s: None,
                choice_events_s,
                first_content_s: None,
                completed_s: now,
                prompt_tokens: prompt,
                usage_prompt_tokens: None,
                output_tokens: None,
                max_tokens: output,
                status: None,
                error: None,
                error_detail: None,
            };
            let replica = &mut replicas[replica_i];
            let refused = if prompt >= max_context {
                Some(format!(
                    "prompt of {prompt} tokens leaves no room under max_context = {max_context}"
                ))
            } else {
                match replica.scheduler.add(idx as u64, prompt, now) {
                    Ok(()) => None,
                    Err(e @ AddError::QueueFull { .. }) => Some(format!("429: {e}")),
                    Err(e) => Some(format!("400: {e}")),
                }
            };
            let done = refused.is_some();
            if let Some(detail) = refused {
                record.status = Some(if detail.starts_with("429") { 429 } else { 400 });
                record.error = Some(ErrorKind::Http4xx);
                record.error_detail = Some(detail);
                if closed.is_some() {
                    free_slots.push(key(now));
                }
            } else {
                if let Some(d) = &opts.slo_deadline {
                    let at = now + d.for_output(output).as_secs_f64();
                    deadlines.push(Reverse((at.to_bits(), idx)));
                }
            }
            requests.push(Request {
                replica: replica_i,
                prompt,
                output,
                generated: 0,
                token_steps: TokenRuns::default(),
                record,
                done,
            });
        }
    }
    outcome.simulated_s = now;
    outcome.records = requests
        .into_iter()
        .map(|mut r| {
            r.token_steps
                .write_times(&replicas[r.replica].step_ends, &mut r.record.choice_events_s);
            if !r.done {
                // Nothing left to happen, yet the request never finished: the scheduler could
                // not serve it (a real client would see the stream stall).
                r.record.error = Some(ErrorKind::Truncated);
                r.record.error_detail = Some("the simulated engine never finished it".into());
                r.record.completed_s = now;
            }
            r.record
        })
        .collect();
    outcome
}

/// Simulates `workload` at `overrides` and summarizes it as a load test would be.
pub fn simulate_load(
    workload: &Workload,
    overrides: &LoadOverrides,
    model: &ModelConfig,
    config: &EngineConfig,
    step_cost: &impl StepCost,
    opts: &SimOptions,
    summary: &SummaryOptions,
) -> Result<(LoadReport, SimOutcome), WorkloadError> {
    let plan = workload.plan(overrides)?;
    let outcome = simulate(&plan, model, config, step_cost, opts);
    let report = LoadReport::from_records(&outcome.records, &workload.slo, summary);
    Ok((report, outcome))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dyno_engine::config::BatchPolicy;
    use std::path::Path;

    #[test]
    fn token_runs_give_back_the_times_in_order() {
        let ends: Vec<f64> = (0..10).map(|i| i as f64 * 0.5).collect();
        let mut runs = TokenRuns::default();
        for step in [1, 2, 3, 6, 7, 9] {
            runs.push(step);
        }
        let mut times = vec![-1.0];
        runs.write_times(&ends, &mut times);
        assert_eq!(times, [-1.0, 0.5, 1.0, 1.5, 3.0, 3.5, 4.5]);
        assert_eq!(runs.earlier, [(1, 3), (6, 2)]);
    }

    /// Requests prepared ahead on a second thread and made inline give the same run.
    #[test]
    fn preparing_ahead_changes_nothing() {
        let yaml = "seed: 3\nlengths:\n  prompt: { dist: uniform, min: 1, max: 300 }\n  output: { dist: uniform, min: 1, max: 40 }\narrival: { process: poisson, rate: 30 }\nrequests: 6000\n";
        let w = Workload::from_yaml(yaml, "test", Path::new(".")).unwrap();
        let plan = w.plan(&LoadOverrides::default()).unwrap();
        assert!(plan.arrivals_s.len() >= PREPARE_AHEAD_FROM);
        let model = ModelConfig::preset("mixtral-tiny").unwrap();
        let mut cfg = EngineConfig {
            batch: BatchPolicy::Continuous {
                max_num_seqs: 16,
                max_num_batched_tokens: 256,
                prefill_chunk: 64,
                priority: dyno_engine::config::Priority::DecodeFirst,
            },
            max_waiting: 100_000,
            ..EngineConfig::default()
        };
        cfg.parallel.dp = 2;
        // A small pool, so that preemption splits some requests' tokens into several runs.
        cfg.kv_block_size = 16;
        cfg.kv_pool_blocks = Some(40);
        let opts = SimOptions::default();
        let step = ConstantStep(0.01);
        let ahead = simulate(&plan, &model, &cfg, &step, &opts);
        let inline = run_events(&plan, &model, &cfg, &step, &opts, RequestSource::Inline(&plan));
        assert!(ahead.preemptions > 0, "the pool should force preemptions");
        assert_eq!(ahead, inline);
        let tokens: usize = ahead.records.iter().map(|r| r.choice_events_s.len()).sum();
        let planned: usize = (0..plan.arrivals_s.len()).map(|i| plan.lengths(i).1).sum();
        assert!(ahead.records.iter().all(|r| r.ok()));
        assert_eq!(tokens, planned);
    }
}
