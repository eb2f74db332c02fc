//! Executing a forward pass on one rank or across several (tensor, expert and pipeline
//! parallel), behind one [`Executor`] interface the engine steps.
//!
//! Layout of one replica: `pp` pipeline stages, each a group of `tp · ep` ranks. Within a
//! group, rank `(t, e)` holds head slice `t` and expert-width slice `t` of the experts in
//! block `e`; attention runs on the `e = 0` ranks, and after attention and after the experts
//! the group sums its partial results with an all-reduce over shared memory ([`GroupComm`]).
//! Between stages the group's first rank sends the hidden states to every rank of the next
//! stage. A step's batch is cut into up to `pp` micro-batches so stages work on different
//! micro-batches at once. Every rank is an OS thread that owns its weights and its KV cache.

use crate::config::EngineConfig;
use crate::error::EngineError;
use crate::kv::KvCache;
use crate::model::{Collective, ForwardOutput, Model, SeqChunk, Shard, StageInput, StageOutput};
use crate::model_config::ModelConfig;
use crate::weights::TensorSource;
use std::ops::Range;
use std::sync::{Arc, Barrier, Mutex, mpsc};

/// Runs forward passes of one replica.
pub trait Executor: Send + std::fmt::Debug {
    /// Runs `chunks` (see [`Model::forward`]).
    fn forward(&mut self, chunks: &[SeqChunk]) -> Result<ForwardOutput, EngineError>;
}

/// The whole model on the calling thread.
#[derive(Debug)]
pub struct SingleRank {
    model: Arc<Model>,
    kv: KvCache,
    threads: usize,
}

impl SingleRank {
    /// `model` (shared between replicas) with its own KV cache; kernels use `threads`.
    pub fn new(model: Arc<Model>, block_size: usize, num_blocks: usize, threads: usize) -> Self {
        let kv = model.new_kv_cache(block_size, num_blocks);
        Self { model, kv, threads }
    }
}

impl Executor for SingleRank {
    fn forward(&mut self, chunks: &[SeqChunk]) -> Result<ForwardOutput, EngineError> {
        // The whole pass runs on a worker of the kernels' pool: each kernel's parallel loop
        // then starts from inside the pool instead of waking it from outside and blocking,
        // which costs tens of microseconds per call at batch 1.
        let (model, kv) = (&self.model, &mut self.kv);
        dyno_kernels::threads::run(self.threads, || model.forward(chunks, kv))
    }
}

/// An all-reduce among the ranks of one group, through shared memory: every rank deposits a
/// copy of its buffer, and after a barrier each sums all copies in rank order.
#[derive(Debug)]
pub struct GroupComm {
    slots: Mutex<Vec<Vec<f32>>>,
    barrier: Barrier,
    size: usize,
}

impl GroupComm {
    /// A group of `size` ranks.
    pub fn new(size: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: Mutex::new(vec![Vec::new(); size]),
            barrier: Barrier::new(size),
            size,
        })
    }
}

/// One rank's handle on its group.
#[derive(Debug, Clone)]
pub struct RankComm {
    group: Arc<GroupComm>,
    rank: usize,
}

impl Collective for RankComm {
    fn all_reduce(&self, buf: &mut [f32]) {
        let g = &self.group;
        if g.size == 1 {
            return;
        }
        lock(&g.slots)[self.rank] = buf.to_vec();
        g.barrier.wait();
        {
            let slots = lock(&g.slots);
            buf.copy_from_slice(&slots[0]);
            for other in &slots[1..] {
                for (b, &v) in buf.iter_mut().zip(other) {
                    *b += v;
                }
            }
        }
        // Nobody overwrites a slot until everyone has summed.
        g.barrier.wait();
    }
}

/// Locks `m`, taking over a poisoned lock: every value guarded here stays consistent between
/// writes (a panicking holder leaves the last complete value).
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A chunk as the rank threads receive it (owned).
#[derive(Debug, Clone)]
struct OwnedChunk {
    tokens: Vec<u32>,
    start: usize,
    block_table: Vec<u32>,
    logits: bool,
}

/// One forward pass for the ranks.
#[derive(Debug)]
struct Job {
    chunks: Vec<OwnedChunk>,
    micro_batches: Vec<Range<usize>>,
}

/// What a rank reports per micro-batch: bytes read, and (last stage, group leader) logits.
type RankReport = (usize, Result<(Option<Vec<f32>>, u64, u64), String>);

/// A replica spread over `pp · tp · ep` rank threads.
pub struct MultiRank {
    jobs: Vec<mpsc::Sender<Arc<Job>>>,
    reports: mpsc::Receiver<RankReport>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pp: usize,
    vocab: usize,
}

impl std::fmt::Debug for MultiRank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MultiRank").field("ranks", &self.jobs.len()).field("pp", &self.pp).finish()
    }
}

/// Layers of stage `s` of `pp`: as even as possible, earlier stages taking the remainder.
fn stage_layers(layers: usize, pp: usize, s: usize) -> Range<usize> {
    let (base, extra) = (layers / pp, layers % pp);
    let start = s * base + s.min(extra);
    start..start + base + usize::from(s < extra)
}

impl MultiRank {
    /// Loads every rank's shard from `source` and starts the rank threads.
    pub fn start(
        model: &ModelConfig,
        source: &dyn TensorSource,
        config: &EngineConfig,
        num_blocks: usize,
    ) -> Result<Self, EngineError> {
        let p = config.parallel;
        let group = p.tp * p.ep;
        let (report_tx, reports) = mpsc::channel();
        let mut jobs = Vec::new();
        let mut threads = Vec::new();
        // Receivers of hidden states for each rank of the next stage, built stage by stage
        // from the last.
        let mut next_stage_inputs: Vec<mpsc::Sender<Result<Vec<f32>, String>>> = Vec::new();
        let mut ranks = Vec::new();
        for s in (0..p.pp).rev() {
            let comm = GroupComm::new(group);
            let mut inputs = Vec::new();
            for g in 0..group {
                let shard = Shard {
                    tp: p.tp,
                    tp_rank: g % p.tp,
                    ep: p.ep,
                    ep_rank: g / p.tp,
                    layers: stage_layers(model.layers, p.pp, s),
                    last_stage: s + 1 == p.pp,
                };
                let loaded = Model::load_shard(model, source, config, shard)?;
                let kv = loaded.new_kv_cache(config.kv_block_size, num_blocks);
                let (in_tx, in_rx) = mpsc::channel();
                inputs.push(in_tx);
                let rank = Rank {
                    model: loaded,
                    kv,
                    comm: RankComm { group: comm.clone(), rank: g },
                    input: (s > 0).then_some(in_rx),
                    next: if g == 0 { next_stage_inputs.clone() } else { Vec::new() },
                    reports: report_tx.clone(),
                    leader: g == 0,
                };
                ranks.push((s, g, rank));
            }
            next_stage_inputs = inputs;
        }
        for (s, g, rank) in ranks {
            let (job_tx, job_rx) = mpsc::channel::<Arc<Job>>();
            jobs.push(job_tx);
            let thread = std::thread::Builder::new()
                .name(format!("dyno-rank-s{s}-g{g}"))
                .spawn(move || rank.run(job_rx))
                .map_err(|e| {
                    EngineError::Config(crate::ConfigError::new(
                        "engine",
                        "parallel",
                        format!("cannot start rank thread: {e}"),
                    ))
                })?;
            threads.push(thread);
        }
        Ok(Self { jobs, reports, threads, pp: p.pp, vocab: model.vocab })
    }
}

impl Drop for MultiRank {
    fn drop(&mut self) {
        self.jobs.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Executor for MultiRank {
    fn forward(&mut self, chunks: &[SeqChunk]) -> Result<ForwardOutput, EngineError> {
        let owned: Vec<OwnedChunk> = chunks
            .iter()
            .map(|c| OwnedChunk {
                tokens: c.tokens.to_vec(),
                start: c.start,
                block_table: c.block_table.to_vec(),
                logits: c.logits,
            })
            .collect();
        let micro_batches = split_micro_batches(chunks, self.pp);
        let mbs = micro_batches.len();
        let job = Arc::new(Job { chunks: owned, micro_batches });
        for tx in &self.jobs {
            tx.send(job.clone()).map_err(|_| rank_gone())?;
        }
        let mut logits: Vec<Option<Vec<f32>>> = vec![None; mbs];
        let (mut weight_bytes, mut kv_bytes) = (0, 0);
        let mut error = None;
        for _ in 0..self.jobs.len() * mbs {
            let (mb, report) = self.reports.recv().map_err(|_| rank_gone())?;
            match report {
                Ok((l, w, k)) => {
                    weight_bytes += w;
                    kv_bytes += k;
                    if l.is_some() {
                        logits[mb] = l;
                    }
                }
                Err(e) => error = Some(e),
            }
        }
        if let Some(e) = error {
            return Err(EngineError::Config(crate::ConfigError::new("request", "prompt", e)));
        }
        let mut all = Vec::new();
        for l in logits.into_iter().flatten() {
            all.extend(l);
        }
        debug_assert_eq!(all.len() % self.vocab, 0);
        Ok(ForwardOutput { logits: all, weight_bytes, kv_bytes })
    }
}

fn rank_gone() -> EngineError {
    EngineError::Config(crate::ConfigError::new("engine", "parallel", "a rank thread has stopped"))
}

/// Cuts the batch into up to `pp` contiguous micro-batches of about equal token counts.
fn split_micro_batches(chunks: &[SeqChunk], pp: usize) -> Vec<Range<usize>> {
    let n = chunks.len();
    let parts = pp.min(n).max(1);
    let total: usize = chunks.iter().map(|c| c.tokens.len()).sum();
    let mut out = Vec::with_capacity(parts);
    let (mut start, mut acc) = (0, 0);
    for (i, c) in chunks.iter().enumerate() {
        acc += c.tokens.len();
        let remaining_parts = parts - out.len();
        let remaining_chunks = n - i - 1;
        if remaining_parts > 1
            && (acc * parts >= total * (out.len() + 1) || remaining_chunks < remaining_parts)
        {
            out.push(start..i + 1);
            start = i + 1;
        }
    }
    out.push(start..n);
    out
}

/// One rank's thread state.
struct Rank {
    model: Model,
    kv: KvCache,
    comm: RankComm,
    /// Hidden states from the previous stage (`None` on the first stage).
    input: Option<mpsc::Receiver<Result<Vec<f32>, String>>>,
    /// Every rank of the next stage (group leader of a non-last stage only).
    next: Vec<mpsc::Sender<Result<Vec<f32>, String>>>,
    reports: mpsc::Sender<RankReport>,
    leader: bool,
}

impl Rank {
    fn run(mut self, jobs: mpsc::Receiver<Arc<Job>>) {
        while let Ok(job) = jobs.recv() {
            for (mb, range) in job.micro_batches.iter().enumerate() {
                let report = self.micro_batch(&job.chunks[range.clone()]);
                if self.reports.send((mb, report)).is_err() {
                    return;
                }
            }
        }
    }

    fn micro_batch(
        &mut self,
        chunks: &[OwnedChunk],
    ) -> Result<(Option<Vec<f32>>, u64, u64), String> {
        let views: Vec<SeqChunk> = chunks
            .iter()
            .map(|c| SeqChunk {
                tokens: &c.tokens,
                start: c.start,
                block_table: &c.block_table,
                logits: c.logits,
            })
            .collect();
        let tokens: Vec<u32> = chunks.iter().flat_map(|c| c.tokens.iter().copied()).collect();
        let input = match &self.input {
            None => StageInput::Tokens(&tokens),
            Some(rx) => match rx.recv() {
                Ok(Ok(x)) => StageInput::Hidden(x),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err("the previous pipeline stage stopped".into()),
            },
        };
        let result = self.model.forward_stage(&views, input, &mut self.kv, &self.comm);
        match result {
            Ok(StageOutput::Hidden { x, weight_bytes, kv_bytes }) => {
                for tx in &self.next {
                    let _ = tx.send(Ok(x.clone()));
                }
                Ok((None, weight_bytes, kv_bytes))
            }
            Ok(StageOutput::Logits(out)) => {
                Ok((self.leader.then_some(out.logits), out.weight_bytes, out.kv_bytes))
            }
            Err(e) => {
                for tx in &self.next {
                    let _ = tx.send(Err(e.to_string()));
                }
                Err(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_cover_every_layer_once() {
        for (layers, pp) in [(8, 1), (8, 3), (2, 2), (5, 4)] {
            let all: Vec<usize> = (0..pp).flat_map(|s| stage_layers(layers, pp, s)).collect();
            assert_eq!(all, (0..layers).collect::<Vec<_>>(), "{layers} layers, pp {pp}");
            assert!((0..pp).all(|s| !stage_layers(layers, pp, s).is_empty()));
        }
    }

    #[test]
    fn micro_batches_partition_the_chunks() {
        let toks = [vec![1u32; 5], vec![1; 1], vec![1; 1], vec![1; 9], vec![1; 2]];
        let chunks: Vec<SeqChunk> = toks
            .iter()
            .map(|t| SeqChunk { tokens: t, start: 0, block_table: &[], logits: true })
            .collect();
        for pp in 1..=7 {
            let mbs = split_micro_batches(&chunks, pp);
            assert_eq!(mbs.len(), pp.min(5));
            assert_eq!(mbs.first().map(|r| r.start), Some(0));
            assert_eq!(mbs.last().map(|r| r.end), Some(5));
            assert!(mbs.windows(2).all(|w| w[0].end == w[1].start && !w[0].is_empty()));
            assert!(mbs.iter().all(|r| !r.is_empty()), "pp {pp}: {mbs:?}");
        }
    }

    #[test]
    fn all_reduce_sums_in_rank_order_on_every_rank() {
        let group = GroupComm::new(3);
        let results: Vec<Vec<f32>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..3)
                .map(|r| {
                    let comm = RankComm { group: group.clone(), rank: r };
                    s.spawn(move || {
                        let mut buf = vec![r as f32 + 1.0, 10.0 * r as f32];
                        comm.all_reduce(&mut buf);
                        comm.all_reduce(&mut buf);
                        buf
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for r in results {
            assert_eq!(r, vec![18.0, 90.0]);
        }
    }
}
