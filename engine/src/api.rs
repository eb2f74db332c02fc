//! What a front end (the HTTP server, a bench loop) sees of a running engine: submit a request,
//! receive its tokens as events, read metrics. Dropping the event receiver aborts the request
//! and frees its KV blocks at the engine's next step.

use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

/// One generation request, already tokenized and validated by the front end.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// Prompt token ids (non-empty).
    pub prompt: Vec<u32>,
    /// Tokens to generate at most (≥ 1).
    pub max_tokens: usize,
    /// Tokens to generate before EOS may end the sequence.
    pub min_tokens: usize,
    /// Keep generating past EOS until `max_tokens`.
    pub ignore_eos: bool,
    /// Sampling temperature; 0 is greedy.
    pub temperature: f32,
    /// Seed of this request's sampler; `None` draws one from the engine's counter (so
    /// unseeded requests still differ from each other, reproducibly per engine run).
    pub seed: Option<u64>,
}

/// Why a sequence ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced EOS.
    Stop,
    /// `max_tokens` (or the context limit) was reached.
    Length,
    /// The engine shut down before the sequence finished.
    Abort,
}

impl FinishReason {
    /// The OpenAI `finish_reason` string.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Abort => "abort",
        }
    }
}

/// What the engine sends about one request, in order: tokens, then exactly one `Finished`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A generated token id (EOS included when it ends the sequence, so clients can count it).
    Token(u32),
    /// The sequence ended.
    Finished {
        /// Why.
        reason: FinishReason,
        /// Prompt tokens.
        prompt_tokens: usize,
        /// Generated tokens.
        completion_tokens: usize,
    },
}

/// Why a request was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SubmitError {
    /// The waiting queue is at its limit; try again after about `retry_after_s` seconds.
    #[error("the waiting queue is full ({limit} requests); retry after {retry_after_s} s")]
    QueueFull {
        /// The configured limit.
        limit: usize,
        /// Suggested wait.
        retry_after_s: u64,
    },
    /// The request cannot be served by this model (the field and why).
    #[error("`{field}`: {reason}")]
    Invalid {
        /// The request field at fault.
        field: &'static str,
        /// What is wrong, with the value.
        reason: String,
    },
    /// The engine is shutting down and takes no new work.
    #[error("the engine is shutting down")]
    ShuttingDown,
}

/// A Prometheus-style histogram with fixed upper bounds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// Bucket upper bounds, ascending (the `+Inf` bucket is implicit).
    pub bounds: Vec<f64>,
    /// Observations per bucket (not cumulative), `bounds.len() + 1` entries.
    pub counts: Vec<u64>,
    /// Sum of observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram with these bounds.
    pub fn new(bounds: Vec<f64>) -> Self {
        let n = bounds.len() + 1;
        Self { bounds, counts: vec![0; n], sum: 0.0, count: 0 }
    }

    /// Step-time buckets in seconds: 1 ms to 10 s.
    pub fn step_time() -> Self {
        Self::new(vec![
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
    }

    /// Records one observation.
    pub fn observe(&mut self, v: f64) {
        let i = self.bounds.iter().position(|&b| v <= b).unwrap_or(self.bounds.len());
        self.counts[i] += 1;
        self.sum += v;
        self.count += 1;
    }
}

/// A snapshot of the engine's counters and gauges (summed over replicas).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EngineMetrics {
    /// Requests waiting to start.
    pub waiting: usize,
    /// Sequences in the running batch.
    pub running: usize,
    /// KV blocks holding tokens.
    pub kv_blocks_used: usize,
    /// KV blocks free.
    pub kv_blocks_free: usize,
    /// Sequences preempted (recomputed later) since start.
    pub preemptions_total: u64,
    /// Prompt tokens computed since start (recomputation after preemption included).
    pub prompt_tokens_total: u64,
    /// Tokens generated since start.
    pub generated_tokens_total: u64,
    /// Requests that finished (stop or length).
    pub requests_finished_total: u64,
    /// Requests aborted (client gone or shutdown).
    pub requests_aborted_total: u64,
    /// Wall time of each engine step (forward pass + sampling), seconds.
    pub step_seconds: Histogram,
}

impl EngineMetrics {
    /// Zero counters, nothing waiting or running, `kv_blocks_free` blocks free.
    pub fn new(kv_blocks_free: usize) -> Self {
        Self {
            waiting: 0,
            running: 0,
            kv_blocks_used: 0,
            kv_blocks_free,
            preemptions_total: 0,
            prompt_tokens_total: 0,
            generated_tokens_total: 0,
            requests_finished_total: 0,
            requests_aborted_total: 0,
            step_seconds: Histogram::step_time(),
        }
    }

    /// Adds `other` (another replica) into `self`: gauges and counters summed, histograms
    /// merged bucket by bucket (both use [`Histogram::step_time`] bounds).
    pub fn add(&mut self, other: &EngineMetrics) {
        self.waiting += other.waiting;
        self.running += other.running;
        self.kv_blocks_used += other.kv_blocks_used;
        self.kv_blocks_free += other.kv_blocks_free;
        self.preemptions_total += other.preemptions_total;
        self.prompt_tokens_total += other.prompt_tokens_total;
        self.generated_tokens_total += other.generated_tokens_total;
        self.requests_finished_total += other.requests_finished_total;
        self.requests_aborted_total += other.requests_aborted_total;
        let (h, o) = (&mut self.step_seconds, &other.step_seconds);
        for (a, b) in h.counts.iter_mut().zip(&o.counts) {
            *a += b;
        }
        h.sum += o.sum;
        h.count += o.count;
    }
}

/// An engine as a front end uses it. Implemented by [`crate::engine::EngineHandle`].
pub trait Backend: Send + Sync + 'static {
    /// The model's name, as `/v1/models` lists it.
    fn model_name(&self) -> &str;
    /// Longest sequence (prompt + output) the engine serves.
    fn max_context(&self) -> usize;
    /// Queues a request; its events arrive on the returned receiver. Dropping the receiver
    /// aborts the request.
    fn submit(&self, req: GenerateRequest) -> Result<UnboundedReceiver<Event>, SubmitError>;
    /// Current counters and gauges.
    fn metrics(&self) -> EngineMetrics;
    /// Refuses new work from now on; requests already accepted keep running.
    fn stop_accepting(&self);
    /// Aborts every request still queued or running (each receives `Finished { Abort }`).
    fn abort_all(&self);
}
