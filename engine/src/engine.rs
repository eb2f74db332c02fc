//! The engine: a model, its KV cache and the scheduler, stepped together.
//!
//! [`Engine`] is the synchronous core: `add` requests, call `step(now)` until idle. It owns the
//! token ids of every sequence; the [`Scheduler`] owns which tokens run when and the KV block
//! tables. One step is: ask the scheduler for a batch, run one forward pass over it, sample a
//! token for every chunk that reached the end of its sequence, tell the scheduler what
//! finished. [`EngineHandle`] runs `dp` engines on their own threads behind the
//! [`Backend`] interface the HTTP server uses.

use crate::api::{Backend, EngineMetrics, Event, FinishReason, GenerateRequest, SubmitError};
use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::model::{ForwardOutput, Model, SeqChunk};
use crate::model_config::ModelConfig;
use crate::parallel::{Executor, MultiRank, SingleRank, lock};
use crate::sampler::Sampler;
use crate::scheduler::{AddError, Scheduler, SchedulerConfig, SeqId, Step};
use crate::tokenizer::EOS;
use crate::weights::TensorSource;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};

/// One sequence as the engine knows it.
#[derive(Debug)]
struct Sequence {
    /// Prompt followed by generated tokens.
    tokens: Vec<u32>,
    prompt_len: usize,
    max_tokens: usize,
    min_tokens: usize,
    ignore_eos: bool,
    sampler: Sampler,
    /// Where events go; `None` for callers that read [`StepReport`] instead.
    events: Option<UnboundedSender<Event>>,
    /// Whether the scheduler has run any of it yet (it left the waiting queue).
    started: bool,
}

impl Sequence {
    fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }
}

/// What one [`Engine::step`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepReport {
    /// Tokens run through the model.
    pub tokens_computed: usize,
    /// Sequences in the batch.
    pub batch_size: usize,
    /// `(sequence, token)` for every token sampled, in batch order.
    pub sampled: Vec<(SeqId, u32)>,
    /// Sequences that ended, with why.
    pub finished: Vec<(SeqId, FinishReason)>,
    /// Nothing could run; call again at this engine time (dynamic batching's delay).
    pub wake_at: Option<f64>,
    /// Wall time of the forward pass and sampling.
    pub seconds: f64,
    /// Bytes of weights the forward pass streamed.
    pub weight_bytes: u64,
    /// Bytes of KV cache it read.
    pub kv_bytes: u64,
}

/// The synchronous engine of one replica.
#[derive(Debug)]
pub struct Engine {
    model: ModelConfig,
    exec: Box<dyn Executor>,
    scheduler: Scheduler,
    seqs: HashMap<SeqId, Sequence>,
    next_id: SeqId,
    max_tokens_cap: usize,
    metrics: EngineMetrics,
    /// Sequences that left the waiting state: started running, or removed before starting.
    left_waiting_total: u64,
}

impl Engine {
    /// Loads `model` from `source` and sizes the KV cache and scheduler from `config`.
    pub fn new(
        model: &ModelConfig,
        source: &dyn TensorSource,
        config: &EngineConfig,
    ) -> Result<Self, EngineError> {
        config.validate_for(model, "engine config")?;
        if config.parallel.ranks_per_replica() > 1 {
            let exec = MultiRank::start(model, source, config, config.kv_blocks(model))?;
            return Ok(Self::with_executor(model.clone(), Box::new(exec), config));
        }
        let loaded = Model::load(model, source, config)?;
        Ok(Self::from_model(Arc::new(loaded), config))
    }

    /// A single-rank engine around an already loaded model (replicas share its weights).
    pub fn from_model(model: Arc<Model>, config: &EngineConfig) -> Self {
        let cfg = model.config().clone();
        let exec =
            SingleRank::new(model, config.kv_block_size, config.kv_blocks(&cfg), config.threads);
        Self::with_executor(cfg, Box::new(exec), config)
    }

    /// An engine running its forward passes on `exec`.
    pub fn with_executor(cfg: ModelConfig, exec: Box<dyn Executor>, config: &EngineConfig) -> Self {
        let num_blocks = config.kv_blocks(&cfg);
        let scheduler = Scheduler::new(SchedulerConfig {
            policy: config.batch,
            block_size: config.kv_block_size,
            num_blocks,
            max_waiting: config.max_waiting,
            max_context: cfg.max_context,
        });
        let metrics = EngineMetrics::new(num_blocks);
        Self {
            model: cfg.clone(),
            exec,
            scheduler,
            seqs: HashMap::new(),
            next_id: 0,
            max_tokens_cap: cfg.max_context,
            metrics,
            left_waiting_total: 0,
        }
    }

    /// The model's shape.
    pub fn model(&self) -> &ModelConfig {
        &self.model
    }

    /// Queues `req` at engine time `now`; its events go to `events` when given.
    pub fn add(
        &mut self,
        req: GenerateRequest,
        events: Option<UnboundedSender<Event>>,
        now: f64,
    ) -> Result<SeqId, SubmitError> {
        let cfg = &self.model;
        check_request(&req, cfg)?;
        let id = self.next_id;
        self.next_id += 1;
        self.scheduler.add(id, req.prompt.len(), now).map_err(|e| match e {
            AddError::QueueFull { limit } => SubmitError::QueueFull { limit, retry_after_s: 1 },
            other => SubmitError::Invalid { field: "prompt", reason: other.to_string() },
        })?;
        let seed = req.seed.unwrap_or(id);
        self.seqs.insert(
            id,
            Sequence {
                prompt_len: req.prompt.len(),
                tokens: req.prompt,
                max_tokens: req.max_tokens.min(self.max_tokens_cap),
                min_tokens: req.min_tokens,
                ignore_eos: req.ignore_eos,
                sampler: Sampler::new(req.temperature, seed),
                events,
                started: false,
            },
        );
        self.refresh_gauges();
        Ok(id)
    }

    /// Drops sequence `id` wherever it is, freeing its KV blocks; its events (if any) end
    /// with `Finished { Abort }`. Returns whether it existed.
    pub fn abort(&mut self, id: SeqId) -> bool {
        let Some(seq) = self.seqs.remove(&id) else { return false };
        self.scheduler.abort(id);
        if !seq.started {
            self.left_waiting_total += 1;
        }
        if let Some(tx) = &seq.events {
            let _ = tx.send(Event::Finished {
                reason: FinishReason::Abort,
                prompt_tokens: seq.prompt_len,
                completion_tokens: seq.generated(),
            });
        }
        self.metrics.requests_aborted_total += 1;
        self.refresh_gauges();
        true
    }

    /// Aborts every sequence whose client stopped listening (its event receiver was dropped).
    pub fn abort_disconnected(&mut self) -> usize {
        let gone: Vec<SeqId> = self
            .seqs
            .iter()
            .filter(|(_, s)| s.events.as_ref().is_some_and(|tx| tx.is_closed()))
            .map(|(&id, _)| id)
            .collect();
        for &id in &gone {
            self.abort(id);
        }
        gone.len()
    }

    /// Whether anything waits or runs.
    pub fn has_work(&self) -> bool {
        !self.seqs.is_empty()
    }

    /// Sequences that left the waiting state since the engine started (began running, or
    /// were aborted before they did).
    pub fn left_waiting_total(&self) -> u64 {
        self.left_waiting_total
    }

    /// Runs one step at engine time `now` (seconds on any monotonic clock).
    pub fn step(&mut self, now: f64) -> Result<StepReport, EngineError> {
        let begin = Instant::now();
        let step = self.scheduler.schedule(now);
        self.metrics.preemptions_total += step.preempted.len() as u64;
        if step.items.is_empty() {
            self.refresh_gauges();
            return Ok(StepReport { wake_at: step.wake_at, ..StepReport::default() });
        }
        let out = self.run_batch(&step)?;
        let logits = &out.logits;
        let vocab = self.model.vocab;
        let max_context = self.scheduler.max_context();
        let mut report = StepReport {
            tokens_computed: step.items.iter().map(|i| i.len).sum(),
            batch_size: step.items.len(),
            weight_bytes: out.weight_bytes,
            kv_bytes: out.kv_bytes,
            ..StepReport::default()
        };
        let mut sampled_row = 0;
        for item in &step.items {
            let Some(seq) = self.seqs.get_mut(&item.seq) else { continue };
            if !seq.started {
                seq.started = true;
                self.left_waiting_total += 1;
            }
            let prompt_part = seq.prompt_len.saturating_sub(item.start).min(item.len);
            self.metrics.prompt_tokens_total += prompt_part as u64;
            if !item.samples {
                continue;
            }
            let row = &logits[sampled_row * vocab..(sampled_row + 1) * vocab];
            sampled_row += 1;
            let banned = (seq.generated() < seq.min_tokens).then_some(EOS);
            let token = seq.sampler.sample(row, banned);
            seq.tokens.push(token);
            self.metrics.generated_tokens_total += 1;
            report.sampled.push((item.seq, token));
            if let Some(tx) = &seq.events {
                let _ = tx.send(Event::Token(token));
            }
            let reason = if token == EOS && !seq.ignore_eos {
                Some(FinishReason::Stop)
            } else if seq.generated() >= seq.max_tokens || seq.tokens.len() >= max_context {
                Some(FinishReason::Length)
            } else {
                None
            };
            if let Some(reason) = reason {
                report.finished.push((item.seq, reason));
            }
        }
        let finished: Vec<SeqId> = report.finished.iter().map(|f| f.0).collect();
        self.scheduler.complete(&step, &finished);
        for &(id, reason) in &report.finished {
            if let Some(seq) = self.seqs.remove(&id) {
                if let Some(tx) = &seq.events {
                    let _ = tx.send(Event::Finished {
                        reason,
                        prompt_tokens: seq.prompt_len,
                        completion_tokens: seq.generated(),
                    });
                }
                self.metrics.requests_finished_total += 1;
            }
        }
        report.seconds = begin.elapsed().as_secs_f64();
        self.metrics.step_seconds.observe(report.seconds);
        self.refresh_gauges();
        Ok(report)
    }

    /// The forward pass of one step (logits of the sampled chunks, in item order).
    fn run_batch(&mut self, step: &Step) -> Result<ForwardOutput, EngineError> {
        let mut chunks = Vec::with_capacity(step.items.len());
        for item in &step.items {
            let (Some(seq), Some(table)) =
                (self.seqs.get(&item.seq), self.scheduler.block_table(item.seq))
            else {
                return Err(EngineError::Config(crate::ConfigError::new(
                    "scheduler",
                    "items",
                    format!("step names sequence {} which the engine does not hold", item.seq),
                )));
            };
            chunks.push(SeqChunk {
                tokens: &seq.tokens[item.start..item.start + item.len],
                start: item.start,
                block_table: table,
                logits: item.samples,
            });
        }
        self.exec.forward(&chunks)
    }

    /// Counters and gauges now.
    pub fn metrics(&self) -> EngineMetrics {
        self.metrics.clone()
    }

    fn refresh_gauges(&mut self) {
        let s = self.scheduler.stats();
        self.metrics.waiting = s.waiting;
        self.metrics.running = s.running;
        self.metrics.kv_blocks_used = s.blocks_used;
        self.metrics.kv_blocks_free = s.blocks_free;
    }
}

/// Rejects requests the model cannot serve, naming the field.
fn check_request(req: &GenerateRequest, cfg: &ModelConfig) -> Result<(), SubmitError> {
    let invalid = |field, reason: String| Err(SubmitError::Invalid { field, reason });
    if req.prompt.is_empty() {
        return invalid("prompt", "the prompt is empty".into());
    }
    if let Some(&id) = req.prompt.iter().find(|&&id| id as usize >= cfg.vocab) {
        return invalid(
            "prompt",
            format!("token id {id} is outside the vocabulary ({})", cfg.vocab),
        );
    }
    if req.prompt.len() >= cfg.max_context {
        return invalid(
            "prompt",
            format!(
                "the prompt has {} tokens; the context of {} is {} (room for at least one output token is needed)",
                req.prompt.len(),
                cfg.name,
                cfg.max_context
            ),
        );
    }
    if req.max_tokens == 0 {
        return invalid("max_tokens", "max_tokens must be at least 1".into());
    }
    if req.min_tokens > req.max_tokens {
        return invalid(
            "min_tokens",
            format!("min_tokens = {} exceeds max_tokens = {}", req.min_tokens, req.max_tokens),
        );
    }
    if !(req.temperature.is_finite() && req.temperature >= 0.0) {
        return invalid("temperature", format!("temperature = {} must be ≥ 0", req.temperature));
    }
    Ok(())
}

/// Commands from the handle to a replica's thread.
enum Command {
    Submit(GenerateRequest, UnboundedSender<Event>),
    AbortAll,
}

/// One replica as the handle sees it.
struct Replica {
    commands: mpsc::Sender<Command>,
    /// Requests ever submitted to this replica.
    submitted: AtomicU64,
    /// Requests that left its waiting queue (started, aborted or refused), published by the
    /// replica's thread; `submitted - left` is what waits, across the channel.
    left: Arc<AtomicU64>,
    metrics: Arc<Mutex<EngineMetrics>>,
}

impl Replica {
    fn pending(&self) -> u64 {
        self.submitted.load(Ordering::SeqCst).saturating_sub(self.left.load(Ordering::SeqCst))
    }
}

/// `dp` engines on their own threads behind one [`Backend`]: requests go to the replica with
/// the fewest pending, events come back on channels, metrics are summed.
pub struct EngineHandle {
    name: String,
    max_context: usize,
    max_waiting: usize,
    replicas: Vec<Replica>,
    accepting: AtomicBool,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl EngineHandle {
    /// Starts `config` on a model's weights: those of the safetensors checkpoint directory
    /// `checkpoint` (whose `config.json` then replaces `model`), or deterministic random
    /// weights from `config.seed`. Returns the engine and the model it runs.
    pub fn start_with_weights(
        model: &ModelConfig,
        config: &EngineConfig,
        checkpoint: Option<&std::path::Path>,
    ) -> Result<(Self, ModelConfig), EngineError> {
        match checkpoint {
            Some(dir) => {
                let c = crate::checkpoint::SafetensorsCheckpoint::open(dir)?;
                let model = c.model_config().clone();
                config.validate_for(&model, "engine config")?;
                Ok((Self::start(&model, &c, config)?, model))
            }
            None => {
                let random = crate::weights::RandomWeights { seed: config.seed };
                Ok((Self::start(model, &random, config)?, model.clone()))
            }
        }
    }

    /// Loads the model once and starts `config.parallel.dp` replicas.
    pub fn start(
        model: &ModelConfig,
        source: &dyn TensorSource,
        config: &EngineConfig,
    ) -> Result<Self, EngineError> {
        config.validate_for(model, "engine config")?;
        let dp = config.parallel.dp;
        let shared = if config.parallel.ranks_per_replica() == 1 {
            Some(Arc::new(Model::load(model, source, config)?))
        } else {
            None
        };
        let mut replicas = Vec::with_capacity(dp);
        let mut threads = Vec::with_capacity(dp);
        for r in 0..dp {
            let engine = match &shared {
                Some(m) => Engine::from_model(m.clone(), config),
                None => Engine::new(model, source, config)?,
            };
            let (tx, rx) = mpsc::channel();
            let left = Arc::new(AtomicU64::new(0));
            let metrics = Arc::new(Mutex::new(engine.metrics()));
            let (l, m) = (left.clone(), metrics.clone());
            let thread = std::thread::Builder::new()
                .name(format!("dyno-engine-{r}"))
                .spawn(move || replica_loop(engine, rx, l, m))
                .map_err(|e| {
                    EngineError::Config(crate::ConfigError::new(
                        "engine",
                        "parallel.dp",
                        format!("cannot start replica thread {r}: {e}"),
                    ))
                })?;
            replicas.push(Replica { commands: tx, submitted: AtomicU64::new(0), left, metrics });
            threads.push(thread);
        }
        Ok(Self {
            name: model.name.clone(),
            max_context: model.max_context,
            max_waiting: config.max_waiting,
            replicas,
            accepting: AtomicBool::new(true),
            threads: Mutex::new(threads),
        })
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        for r in &self.replicas {
            let _ = r.commands.send(Command::AbortAll);
        }
        self.replicas.clear();
        if let Ok(mut threads) = self.threads.lock() {
            for t in threads.drain(..) {
                let _ = t.join();
            }
        }
    }
}

impl Backend for EngineHandle {
    fn model_name(&self) -> &str {
        &self.name
    }

    fn max_context(&self) -> usize {
        self.max_context
    }

    fn submit(&self, req: GenerateRequest) -> Result<UnboundedReceiver<Event>, SubmitError> {
        if !self.accepting.load(Ordering::SeqCst) {
            return Err(SubmitError::ShuttingDown);
        }
        let replica =
            self.replicas.iter().min_by_key(|r| r.pending()).ok_or(SubmitError::ShuttingDown)?;
        // Reserve a waiting slot first so concurrent submits cannot overshoot the limit.
        let before = replica.submitted.fetch_add(1, Ordering::SeqCst);
        if before.saturating_sub(replica.left.load(Ordering::SeqCst)) >= self.max_waiting as u64 {
            replica.submitted.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::QueueFull { limit: self.max_waiting, retry_after_s: 1 });
        }
        let (tx, rx) = unbounded_channel();
        if replica.commands.send(Command::Submit(req, tx)).is_err() {
            replica.submitted.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::ShuttingDown);
        }
        Ok(rx)
    }

    fn metrics(&self) -> EngineMetrics {
        let mut total = EngineMetrics::new(0);
        for r in &self.replicas {
            total.add(&lock(&r.metrics));
        }
        total
    }

    fn stop_accepting(&self) {
        self.accepting.store(false, Ordering::SeqCst);
    }

    fn abort_all(&self) {
        for r in &self.replicas {
            let _ = r.commands.send(Command::AbortAll);
        }
    }
}

/// A replica's thread: take commands, step while there is work, publish metrics.
fn replica_loop(
    mut engine: Engine,
    commands: mpsc::Receiver<Command>,
    left: Arc<AtomicU64>,
    metrics: Arc<Mutex<EngineMetrics>>,
) {
    let epoch = Instant::now();
    let mut wake_at: Option<f64> = None;
    let mut refused = 0u64;
    loop {
        // Block for a command when idle (or until a dynamic-batching deadline), else poll.
        let first = if !engine.has_work() {
            match commands.recv() {
                Ok(c) => Some(c),
                Err(_) => return,
            }
        } else if let Some(at) = wake_at {
            // Dynamic batching holds requests until a deadline: sleep until it or a command.
            let wait = (at - epoch.elapsed().as_secs_f64()).max(0.0);
            match commands.recv_timeout(Duration::from_secs_f64(wait)) {
                Ok(c) => Some(c),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
        } else {
            None
        };
        let mut handle = |engine: &mut Engine, c: Command| match c {
            Command::Submit(req, tx) => {
                let now = epoch.elapsed().as_secs_f64();
                if let Err(e) = engine.add(req, Some(tx.clone()), now) {
                    refused += 1;
                    let _ = tx.send(Event::Finished {
                        reason: FinishReason::Abort,
                        prompt_tokens: 0,
                        completion_tokens: 0,
                    });
                    warn(&e.to_string());
                }
            }
            Command::AbortAll => {
                let ids: Vec<SeqId> = engine.seqs.keys().copied().collect();
                for id in ids {
                    engine.abort(id);
                }
            }
        };
        if let Some(c) = first {
            handle(&mut engine, c);
        }
        loop {
            match commands.try_recv() {
                Ok(c) => handle(&mut engine, c),
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => return,
            }
        }
        engine.abort_disconnected();
        wake_at = None;
        if engine.has_work() {
            match engine.step(epoch.elapsed().as_secs_f64()) {
                Ok(report) => wake_at = report.wake_at,
                Err(e) => {
                    warn(&format!("engine step failed, aborting its requests: {e}"));
                    let ids: Vec<SeqId> = engine.seqs.keys().copied().collect();
                    for id in ids {
                        engine.abort(id);
                    }
                }
            }
        }
        left.store(engine.left_waiting_total() + refused, Ordering::SeqCst);
        *lock(&metrics) = engine.metrics();
    }
}

/// Reports an engine-side problem that has no request to answer to.
fn warn(msg: &str) {
    eprintln!("dyno-engine: {msg}");
}
