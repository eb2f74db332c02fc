//! The scheduler: a pure state machine that decides, at each engine step, which tokens of
//! which sequences get computed.
//!
//! No threads, no clocks, no model. Time comes in as an argument (`now`, seconds), sequences
//! are known only by id and token counts (the engine holds the token ids), and every decision
//! is deterministic: the same calls give the same steps. The engine drives it with real
//! forward passes; the tuner's simulator drives the same code with predicted step times.
//!
//! The loop a driver runs:
//!
//! ```
//! use dyno_engine::config::BatchPolicy;
//! use dyno_engine::scheduler::{Scheduler, SchedulerConfig};
//!
//! let mut s = Scheduler::new(SchedulerConfig {
//!     policy: BatchPolicy::Static { batch_size: 4 },
//!     block_size: 16,
//!     num_blocks: 64,
//!     max_waiting: 8,
//!     max_context: 1024,
//! });
//! s.add(7, 5, 0.0).unwrap();
//! let step = s.schedule(0.0);
//! assert_eq!((step.items[0].start, step.items[0].len, step.items[0].samples), (0, 5, true));
//! // ... run the forward pass over positions 0..5, sample one token, then:
//! s.complete(&step, &[]);
//! let step = s.schedule(0.1);
//! assert_eq!((step.items[0].start, step.items[0].len), (5, 1)); // a decode
//! s.complete(&step, &[7]); // the sequence ended
//! assert!(s.is_idle());
//! ```
//!
//! Each sequence has `total` tokens known (prompt + generated) and `computed` tokens whose
//! KV is cached. A [`StepItem`] computes positions `computed..computed + len`, and samples the
//! next token when it reaches `total`. When a step needs a KV block and none is free, the
//! most recently admitted running sequence is preempted by recompute: its blocks are freed,
//! and it goes back to the front of the waiting queue to prefill all its tokens again.

pub mod block;
#[cfg(test)]
mod tests;

use crate::config::{BatchPolicy, EngineConfig, Priority};
use crate::model_config::ModelConfig;
use block::BlockAllocator;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use thiserror::Error;

/// A sequence's id, chosen by the caller (unique among waiting and running sequences).
pub type SeqId = u64;

/// Where a live sequence sits in the scheduler's slab (internal; the driver names ids).
type Slot = usize;

/// What the scheduler needs to know: the batch policy, the KV pool and the limits.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerConfig {
    /// How sequences are batched.
    pub policy: BatchPolicy,
    /// Tokens per KV block (0 is treated as 1).
    pub block_size: usize,
    /// Blocks in the KV pool.
    pub num_blocks: usize,
    /// Waiting sequences beyond which [`Scheduler::add`] refuses new ones.
    pub max_waiting: usize,
    /// Longest sequence (prompt + generated) the engine serves. The scheduler caps it at the
    /// pool's capacity (see [`Scheduler::max_context`]); the engine must end sequences there,
    /// so a sequence alone in the pool always fits.
    pub max_context: usize,
}

impl SchedulerConfig {
    /// The scheduler configuration of an engine running `model`.
    pub fn from_engine(cfg: &EngineConfig, model: &ModelConfig) -> Self {
        Self {
            policy: cfg.batch,
            block_size: cfg.kv_block_size,
            num_blocks: cfg.kv_blocks(model),
            max_waiting: cfg.max_waiting,
            max_context: model.max_context,
        }
    }
}

/// Why [`Scheduler::add`] refused a sequence.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddError {
    /// The waiting queue is at its limit (the server answers 429).
    #[error("waiting queue is full: {limit} sequences already wait (max_waiting = {limit})")]
    QueueFull {
        /// The waiting-queue limit.
        limit: usize,
    },
    /// The prompt plus one generated token exceeds the context or the whole KV pool.
    #[error("sequence needs {tokens} tokens (prompt + 1 generated), over the limit of {limit}")]
    TooLong {
        /// Prompt tokens + 1.
        tokens: usize,
        /// The longest sequence that can be served: max_context, or the pool if smaller.
        limit: usize,
    },
    /// A sequence with this id is already waiting or running.
    #[error("sequence {0} is already waiting or running")]
    Duplicate(SeqId),
    /// The prompt has no tokens, so there is nothing to compute a next token from.
    #[error("sequence {0} has an empty prompt; at least 1 token is needed")]
    EmptyPrompt(SeqId),
}

/// One sequence's share of a step: positions `start..start + len` are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepItem {
    /// The sequence.
    pub seq: SeqId,
    /// First token position computed this step.
    pub start: usize,
    /// Tokens computed (a decode is 1).
    pub len: usize,
    /// Whether this chunk reaches the end of the sequence's known tokens, so its last
    /// position's logits produce the next token.
    pub samples: bool,
    /// Where the scheduler keeps the sequence: [`Scheduler::complete`] finds it without a
    /// lookup by id (and checks the id is still there).
    pub(crate) slot: Slot,
}

/// The work of one engine step.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Step {
    /// What to compute, one item per sequence, in no particular order.
    pub items: Vec<StepItem>,
    /// Sequences preempted while building this step: their KV blocks are gone and they will
    /// recompute all their tokens from position 0.
    pub preempted: Vec<SeqId>,
    /// When nothing could be scheduled but work waits (dynamic policy delay), the time at
    /// which [`Scheduler::schedule`] should be called again.
    pub wake_at: Option<f64>,
}

impl Step {
    /// Whether the step computes nothing.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Tokens computed in the step (prefill chunks + decodes).
    pub fn num_tokens(&self) -> usize {
        self.items.iter().map(|i| i.len).sum()
    }
}

/// Counters for metrics and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SchedulerStats {
    /// Sequences in the waiting queue (new and preempted).
    pub waiting: usize,
    /// Sequences admitted and not yet finished or preempted.
    pub running: usize,
    /// KV blocks owned by sequences.
    pub blocks_used: usize,
    /// KV blocks free.
    pub blocks_free: usize,
    /// Preemptions since the scheduler was created.
    pub preemptions_total: u64,
}

/// Where a sequence is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqState {
    /// In the waiting queue, owning no blocks.
    Waiting,
    /// Admitted: gets work at (almost) every step.
    Running,
}

/// A read-only view of one sequence's bookkeeping.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeqInfo {
    /// Prompt tokens.
    pub prompt_len: usize,
    /// Tokens known: prompt + generated.
    pub total: usize,
    /// Tokens whose KV is in the cache.
    pub computed: usize,
    /// When the sequence was added, in the caller's seconds.
    pub arrival: f64,
    /// Waiting or running.
    pub state: SeqState,
}

/// Internal per-sequence state.
#[derive(Debug, Clone)]
struct Seq {
    id: SeqId,
    prompt_len: usize,
    total: usize,
    computed: usize,
    arrival: f64,
    state: SeqState,
    blocks: Vec<u32>,
    /// The step (by [`Scheduler`]'s step counter) whose plan last gave this sequence an item:
    /// equal to the current counter while a step is built means "already has an item".
    planned_in: u64,
}

/// Hashes sequence ids with one multiply (Fx-style): ids are the scheduler's only keys and
/// nothing iterates the map, so a fast hash keeps lookups cheap (the simulator steps this
/// state machine millions of times) without making any decision order-dependent.
#[derive(Debug, Default, Clone, Copy)]
pub struct SeqIdHasher(u64);

impl Hasher for SeqIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
        }
    }

    fn write_u64(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Seq {
    /// Tokens known but not computed: at least 1 for every live sequence.
    fn remaining(&self) -> usize {
        self.total - self.computed
    }
}

/// The step being built.
#[derive(Debug, Default)]
struct Plan {
    items: Vec<StepItem>,
    preempted: Vec<SeqId>,
    tokens: usize,
}

impl Plan {
    /// An empty plan with room for `items` items (a step's buffer is allocated once).
    fn with_room(items: usize) -> Self {
        Self { items: Vec::with_capacity(items), ..Self::default() }
    }

    fn into_step(self) -> Step {
        Step { items: self.items, preempted: self.preempted, wake_at: None }
    }
}

/// Which running sequences a pass over the running set serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// One remaining token: a decode (or the 1-token tail of a prefill, the same work).
    Decodes,
    /// More than one remaining token: a prefill that continues (chunked or recomputing).
    Prefills,
}

/// The scheduler state machine; see the module documentation.
#[derive(Debug, Clone)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    /// `max_context` capped at the pool's capacity.
    max_context: usize,
    /// Every live sequence, at a slot; the queues below hold slots, so the scheduling loops
    /// index instead of looking ids up.
    slots: Vec<Option<Seq>>,
    /// Slots of sequences that left, for reuse.
    free_slots: Vec<Slot>,
    /// A live sequence's slot by id (for the driver's calls, which name ids).
    index: HashMap<SeqId, Slot, BuildHasherDefault<SeqIdHasher>>,
    /// FCFS; preempted sequences go to the front.
    waiting: VecDeque<Slot>,
    /// In admission order: the last is the most recently admitted (the preemption victim).
    running: Vec<Slot>,
    blocks: BlockAllocator,
    preemptions_total: u64,
    /// Calls of [`Scheduler::schedule`] so far: names the step being built.
    step_counter: u64,
}

impl Scheduler {
    /// An idle scheduler with an empty pool of `cfg.num_blocks` blocks.
    pub fn new(mut cfg: SchedulerConfig) -> Self {
        cfg.block_size = cfg.block_size.max(1);
        let blocks = BlockAllocator::new(cfg.num_blocks);
        let max_context = cfg.max_context.min(blocks.num_blocks().saturating_mul(cfg.block_size));
        Self {
            cfg,
            max_context,
            slots: Vec::new(),
            free_slots: Vec::new(),
            index: HashMap::default(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            blocks,
            preemptions_total: 0,
            step_counter: 0,
        }
    }

    /// The configuration it was built with (block size 0 reads as 1).
    pub fn config(&self) -> &SchedulerConfig {
        &self.cfg
    }

    /// The longest sequence served: the configured max_context, or the pool's capacity in
    /// tokens if smaller. The engine ends sequences that reach it.
    pub fn max_context(&self) -> usize {
        self.max_context
    }

    /// Queue a new sequence whose prompt has `prompt_len` tokens, arrived at `now`.
    pub fn add(&mut self, id: SeqId, prompt_len: usize, now: f64) -> Result<(), AddError> {
        if self.index.contains_key(&id) {
            return Err(AddError::Duplicate(id));
        }
        if prompt_len == 0 {
            return Err(AddError::EmptyPrompt(id));
        }
        let tokens = prompt_len.saturating_add(1);
        if tokens > self.max_context {
            return Err(AddError::TooLong { tokens, limit: self.max_context });
        }
        if self.waiting.len() >= self.cfg.max_waiting {
            return Err(AddError::QueueFull { limit: self.cfg.max_waiting });
        }
        let seq = Seq {
            id,
            prompt_len,
            total: prompt_len,
            computed: 0,
            arrival: now,
            state: SeqState::Waiting,
            blocks: Vec::new(),
            planned_in: 0,
        };
        let slot = match self.free_slots.pop() {
            Some(slot) => {
                self.slots[slot] = Some(seq);
                slot
            }
            None => {
                self.slots.push(Some(seq));
                self.slots.len() - 1
            }
        };
        self.index.insert(id, slot);
        self.waiting.push_back(slot);
        Ok(())
    }

    /// The next step's work. Allocates the KV blocks the step's items need (so block tables
    /// cover `start + len` tokens), preempting if needed.
    pub fn schedule(&mut self, now: f64) -> Step {
        self.step_counter += 1;
        match self.cfg.policy {
            BatchPolicy::Static { batch_size } => self.schedule_batch(batch_size, None, now),
            BatchPolicy::Dynamic { max_batch, max_queue_delay_ms } => {
                self.schedule_batch(max_batch, Some(max_queue_delay_ms / 1000.0), now)
            }
            BatchPolicy::Continuous {
                max_num_seqs,
                max_num_batched_tokens,
                prefill_chunk,
                priority,
            } => self.schedule_continuous(
                max_num_seqs.max(1),
                max_num_batched_tokens.max(1),
                prefill_chunk,
                priority,
            ),
        }
    }

    /// Called after the engine ran `step`: every item's tokens are now computed; items with
    /// `samples` appended one new (not yet computed) token to their sequence. `finished`
    /// lists sequences that ended (EOS / max tokens / context limit) this step: they leave,
    /// their blocks are freed.
    ///
    /// Items of sequences that were aborted (or otherwise changed) since the step was
    /// scheduled are ignored, as are unknown ids in `finished`.
    pub fn complete(&mut self, step: &Step, finished: &[SeqId]) {
        let block_size = self.cfg.block_size;
        for item in &step.items {
            let Some(Some(s)) = self.slots.get_mut(item.slot) else { continue };
            let end = item.start.saturating_add(item.len);
            let stale = s.id != item.seq
                || s.state != SeqState::Running
                || s.computed != item.start
                || end > s.total
                || end > s.blocks.len() * block_size
                || item.samples != (end == s.total);
            if stale {
                continue;
            }
            s.computed = end;
            if item.samples {
                s.total += 1;
            }
        }
        for &id in finished {
            self.remove(id);
        }
    }

    /// Remove a waiting or running sequence (client gone): frees its blocks. Returns whether
    /// it existed.
    pub fn abort(&mut self, id: SeqId) -> bool {
        self.remove(id)
    }

    /// The KV blocks of sequence `id`, in position order: block `i` holds positions
    /// `i * block_size..(i + 1) * block_size` (empty while it waits). `None` for an unknown id.
    pub fn block_table(&self, id: SeqId) -> Option<&[u32]> {
        self.by_id(id).map(|s| s.blocks.as_slice())
    }

    /// Counters: queue lengths, block usage, preemptions.
    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            waiting: self.waiting.len(),
            running: self.running.len(),
            blocks_used: self.blocks.num_used(),
            blocks_free: self.blocks.num_free(),
            preemptions_total: self.preemptions_total,
        }
    }

    /// Nothing waiting or running.
    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    /// One sequence's bookkeeping, or `None` for an unknown id.
    pub fn seq(&self, id: SeqId) -> Option<SeqInfo> {
        self.by_id(id).map(|s| SeqInfo {
            prompt_len: s.prompt_len,
            total: s.total,
            computed: s.computed,
            arrival: s.arrival,
            state: s.state,
        })
    }

    /// Waiting sequences, front (next admitted) first.
    pub fn waiting(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.waiting.iter().filter_map(|&slot| self.slots[slot].as_ref().map(|s| s.id))
    }

    /// Running sequences in admission order (the last is the next preemption victim).
    pub fn running(&self) -> impl Iterator<Item = SeqId> + '_ {
        self.running.iter().filter_map(|&slot| self.slots[slot].as_ref().map(|s| s.id))
    }

    /// A live sequence by id.
    fn by_id(&self, id: SeqId) -> Option<&Seq> {
        self.index.get(&id).and_then(|&slot| self.slots[slot].as_ref())
    }

    // ---- policies ----

    /// Static and dynamic batching: when nothing runs, admit up to `size` waiting sequences
    /// (for dynamic, once `size` wait or the oldest has waited `delay` seconds) and run them
    /// to completion; each step prefills whatever prompt is left and decodes the rest.
    fn schedule_batch(&mut self, size: usize, delay: Option<f64>, now: f64) -> Step {
        let size = size.max(1);
        let mut plan = Plan::with_room(size.min(self.running.len() + self.waiting.len()));
        if self.running.is_empty() {
            let Some(oldest) = self.waiting.front().and_then(|&slot| self.slots[slot].as_ref())
            else {
                return Step::default();
            };
            if let Some(delay) = delay {
                let deadline = oldest.arrival + delay;
                // `now >= deadline` rather than `now - arrival >= delay`: a caller that sleeps
                // until exactly `wake_at` must get its batch despite rounding.
                if self.waiting.len() < size && now < deadline {
                    return Step { wake_at: Some(deadline), ..Step::default() };
                }
            }
            // Admit FCFS while the whole prompt's blocks fit the pool; the first batch step
            // then needs no preemption.
            let mut free = self.blocks.num_free();
            while self.running.len() < size {
                let Some(need) = self.waiting.front().map(|&id| self.blocks_for(self.total(id)))
                else {
                    break;
                };
                if need > free {
                    break;
                }
                free -= need;
                self.admit_front();
            }
        }
        let mut i = 0;
        while i < self.running.len() {
            let id = self.running[i];
            let len = self.remaining(id);
            self.schedule_item(id, len, &mut plan);
            // A sequence that preempted itself was the last one running: the loop ends.
            if self.running.get(i) == Some(&id) {
                i += 1;
            }
        }
        plan.into_step()
    }

    /// Continuous batching: iteration-level, within the token budget and `max_seqs`.
    fn schedule_continuous(
        &mut self,
        max_seqs: usize,
        budget: usize,
        chunk: usize,
        priority: Priority,
    ) -> Step {
        let mut plan = Plan::with_room(max_seqs.min(self.running.len() + self.waiting.len()));
        // Without chunking, a prompt longer than the whole budget could never join a step
        // that has anything else in it: give it a step of its own when it reaches the front.
        if chunk == 0
            && let Some(&id) = self.waiting.front()
        {
            let total = self.total(id);
            if total > budget
                && self.running.len() < max_seqs
                && self.blocks_for(total) <= self.blocks.num_free()
            {
                self.admit_front();
                self.schedule_item(id, total, &mut plan);
                return plan.into_step();
            }
        }
        match priority {
            Priority::DecodeFirst => {
                // Preemption only removes running sequences, so no prefill left means none.
                if self.run_phase(Phase::Decodes, budget, chunk, &mut plan) > 0 {
                    self.run_phase(Phase::Prefills, budget, chunk, &mut plan);
                }
                if plan.preempted.is_empty() {
                    self.admit_phase(max_seqs, budget, chunk, 0, &mut plan);
                }
            }
            Priority::PrefillFirst => {
                self.run_phase(Phase::Prefills, budget, chunk, &mut plan);
                if plan.preempted.is_empty() {
                    // Keep the blocks this step's decodes need, so a new admission is not
                    // preempted by them in the same step.
                    let reserve = self.decode_block_reserve();
                    self.admit_phase(max_seqs, budget, chunk, reserve, &mut plan);
                }
                self.run_phase(Phase::Decodes, budget, chunk, &mut plan);
            }
        }
        plan.into_step()
    }

    /// Gives the running sequences of `phase`, oldest first, their tokens within the budget.
    /// Returns how many running sequences without an item belong to the other phase, so a
    /// caller can skip a pass that would find nothing (most steps are all decodes).
    fn run_phase(&mut self, phase: Phase, budget: usize, chunk: usize, plan: &mut Plan) -> usize {
        let mut others = 0;
        let mut i = 0;
        while i < self.running.len() {
            let id = self.running[i];
            let (remaining, planned) =
                self.slots[id].as_ref().map_or((0, true), |s| (s.remaining(), self.is_planned(s)));
            let wanted = match phase {
                Phase::Decodes => remaining == 1,
                Phase::Prefills => remaining > 1,
            };
            others += usize::from(!wanted && !planned);
            let left = budget.saturating_sub(plan.tokens);
            let len = if wanted && !planned { chunk_len(remaining, chunk, left) } else { 0 };
            if len > 0 {
                self.schedule_item(id, len, plan);
            }
            // A sequence that preempted itself was the last one running: the loop ends. One
            // that preempted later sequences keeps its index.
            if self.running.get(i) == Some(&id) {
                i += 1;
            }
        }
        others
    }

    /// Admits waiting sequences FCFS while they fit the sequence limit, the budget and the
    /// free blocks less `reserve`; the first that does not fit stops admission.
    fn admit_phase(
        &mut self,
        max_seqs: usize,
        budget: usize,
        chunk: usize,
        reserve: usize,
        plan: &mut Plan,
    ) {
        while self.running.len() < max_seqs {
            let Some(&id) = self.waiting.front() else { break };
            let len = chunk_len(self.total(id), chunk, budget.saturating_sub(plan.tokens));
            if len == 0 || self.blocks_for(len).saturating_add(reserve) > self.blocks.num_free() {
                break;
            }
            self.admit_front();
            if !self.schedule_item(id, len, plan) {
                break;
            }
        }
    }

    /// New blocks the running decodes without an item yet would take this step.
    fn decode_block_reserve(&self) -> usize {
        self.running
            .iter()
            .filter_map(|&slot| self.slots[slot].as_ref())
            .filter(|s| !self.is_planned(s))
            .filter(|s| s.remaining() == 1)
            .map(|s| self.blocks_for(s.total).saturating_sub(s.blocks.len()))
            .sum()
    }

    // ---- mechanics ----

    /// Adds an item computing `len` tokens of running sequence `id`, after giving it the
    /// blocks they need. Returns false (and adds nothing) if `id` had to preempt itself.
    #[inline(always)]
    fn schedule_item(&mut self, id: Slot, len: usize, plan: &mut Plan) -> bool {
        let block_size = self.cfg.block_size;
        let Some(s) = self.slots[id].as_ref() else { return false };
        let (start, total, seq) = (s.computed, s.total, s.id);
        let end = start + len;
        if s.blocks.len() * block_size < end && !self.grow(id, end, plan) {
            return false;
        }
        if let Some(s) = self.slots[id].as_mut() {
            s.planned_in = self.step_counter;
        }
        plan.items.push(StepItem { seq, start, len, samples: end == total, slot: id });
        plan.tokens += len;
        true
    }

    /// Whether the step being built already has an item for `s`.
    fn is_planned(&self, s: &Seq) -> bool {
        s.planned_in == self.step_counter
    }

    /// Extends `id`'s block table to cover `tokens` positions. While no block is free,
    /// preempts the most recently admitted running sequence; returns false if that was `id`.
    /// Out of line: most items need no new block.
    #[inline(never)]
    fn grow(&mut self, id: Slot, tokens: usize, plan: &mut Plan) -> bool {
        let need = self.blocks_for(tokens);
        loop {
            let Some(s) = self.slots[id].as_mut() else { return false };
            if s.blocks.len() >= need {
                return true;
            }
            if let Some(b) = self.blocks.allocate() {
                s.blocks.push(b);
                continue;
            }
            let Some(&victim) = self.running.last() else { return false };
            self.preempt_last(plan);
            if victim == id {
                return false;
            }
        }
    }

    /// Preempts the most recently admitted running sequence by recompute: frees its blocks,
    /// forgets its computed tokens, drops its item from the plan and puts it at the front
    /// of the waiting queue (regardless of the queue limit).
    fn preempt_last(&mut self, plan: &mut Plan) {
        let Some(victim) = self.running.pop() else { return };
        let Some(victim_id) = self.slots[victim].as_ref().map(|s| s.id) else { return };
        if let Some(pos) = plan.items.iter().position(|i| i.seq == victim_id) {
            let item = plan.items.remove(pos);
            plan.tokens -= item.len;
        }
        if let Some(s) = self.slots[victim].as_mut() {
            for b in s.blocks.drain(..).rev() {
                self.blocks.free(b);
            }
            s.computed = 0;
            s.state = SeqState::Waiting;
            s.planned_in = 0;
        }
        self.waiting.push_front(victim);
        plan.preempted.push(victim_id);
        self.preemptions_total += 1;
    }

    /// Moves the front of the waiting queue to the end of the running set.
    fn admit_front(&mut self) {
        let Some(id) = self.waiting.pop_front() else { return };
        let prompt_blocks = self.blocks_for(self.total(id));
        if let Some(s) = self.slots[id].as_mut() {
            debug_assert!(s.blocks.is_empty() && s.computed == 0);
            // Room for the whole prompt's table: decodes then grow it at most by doubling.
            s.blocks.reserve(prompt_blocks);
            s.state = SeqState::Running;
            self.running.push(id);
        }
    }

    /// Forgets sequence `id` wherever it is and frees its blocks.
    fn remove(&mut self, id: SeqId) -> bool {
        let Some(slot) = self.index.remove(&id) else { return false };
        let Some(mut s) = self.slots[slot].take() else { return false };
        match s.state {
            SeqState::Waiting => self.waiting.retain(|&w| w != slot),
            SeqState::Running => self.running.retain(|&r| r != slot),
        }
        self.free_slots.push(slot);
        for b in s.blocks.drain(..).rev() {
            self.blocks.free(b);
        }
        true
    }

    fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.cfg.block_size)
    }

    fn total(&self, slot: Slot) -> usize {
        self.slots[slot].as_ref().map_or(0, |s| s.total)
    }

    fn remaining(&self, slot: Slot) -> usize {
        self.slots[slot].as_ref().map_or(0, Seq::remaining)
    }
}

/// Tokens of a prefill with `remaining` tokens left that a step with `left` budget takes:
/// at most `chunk` (0 = the whole prompt, which must then fit entirely).
fn chunk_len(remaining: usize, chunk: usize, left: usize) -> usize {
    if chunk == 0 {
        if remaining <= left { remaining } else { 0 }
    } else {
        remaining.min(chunk).min(left)
    }
}
