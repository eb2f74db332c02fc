//! Tuning [`AttentionParams`] (the `br × bc` tiles) for one attention shape on this machine.
//!
//! The search is the shared one ([`super::search::search`]): the defaults first, then seeded
//! random samples and neighbourhood moves over `br ∈ {1, 2, 4, …, 64}` (prefill only; decode
//! has no query tiles) × `bc ∈ {8, 16, …, 512}` at a fixed thread count, keeping only params that
//! pass [`AttentionParams::validate`] and dropping tile sizes past the first that covers the
//! shape (they all behave alike). Every new candidate first passes a correctness gate: its
//! output on the shape (or, for big shapes, on a smaller proxy that still crosses its tile
//! boundaries) must match [`prefill_reference`] / [`decode_reference`] within
//! `tolerance · (1 + |reference|)` per element; one that does not is recorded as rejected and
//! not timed.
//!
//! Measures: prefill in GFLOP/s, counting `4 · head_dim · group` flops per visible
//! (causal) query–key pair; decode in GB/s of K and V read (each context row once). Cache
//! records store the median time, the GFLOP/s of both kinds (the ranking key) and, for decode,
//! the GB/s.

use super::cache::KernelCache;
use super::search::{self, SearchKey, SearchSpace, Tally, Verdict, compare, nearest};
use super::timing::{TimingOptions, time_calls};
use super::{SplitMix64, TuneError, TuneTarget};
use crate::attention::{
    AttentionParams, PagedKv, SeqKv, decode, decode_reference, prefill, prefill_reference,
};
use crate::error::KernelError;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

/// Kernel name in cache records for [`AttentionKind::Prefill`].
pub const PREFILL_KERNEL: &str = "attention_prefill_f32";

/// Kernel name in cache records for [`AttentionKind::Decode`].
pub const DECODE_KERNEL: &str = "attention_decode_f32";

/// Block size of the paged KV cache when a shape does not name one.
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// Query tokens per prefill tile to try.
pub const BR_SET: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

/// Keys per tile to try.
pub const BC_SET: [usize; 7] = [8, 16, 32, 64, 128, 256, 512];

/// Which attention kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttentionKind {
    /// Causal prefill of `q_len` new tokens per sequence ([`prefill`]).
    Prefill,
    /// One new token per sequence against its whole context ([`decode`]).
    Decode,
}

/// An attention problem for one KV-head group, as tuned.
///
/// Every sequence holds `context` tokens of K/V in a paged cache of `block_size`-token blocks.
/// Prefill: each sequence's last `q_len` tokens are the queries (so `q_start = context − q_len`;
/// `q_len < context` is chunked prefill). Decode: `q_len` is 1 and the query attends to all
/// `context` keys. Each query token brings `group` heads of `head_dim` elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AttentionShape {
    /// Prefill or decode.
    pub kind: AttentionKind,
    /// Sequences (decode: the batch; prefill: sequences run one after the other).
    pub seqs: usize,
    /// Tokens of context (keys) per sequence, the queries' own included.
    pub context: usize,
    /// Query tokens per sequence (1 for decode).
    pub q_len: usize,
    /// Query heads per KV head (`G`).
    pub group: usize,
    /// Elements per head vector.
    pub head_dim: usize,
    /// Tokens per KV-cache block.
    pub block_size: usize,
}

impl AttentionShape {
    /// Prefill of `q_len` tokens of one sequence ending at `context` tokens, block size 16.
    pub fn prefill(q_len: usize, context: usize, group: usize, head_dim: usize) -> Self {
        let (kind, seqs, block_size) = (AttentionKind::Prefill, 1, DEFAULT_BLOCK_SIZE);
        Self { kind, seqs, context, q_len, group, head_dim, block_size }
    }

    /// Decode of `seqs` sequences of `context` tokens each, block size 16.
    pub fn decode(seqs: usize, context: usize, group: usize, head_dim: usize) -> Self {
        let (kind, q_len, block_size) = (AttentionKind::Decode, 1, DEFAULT_BLOCK_SIZE);
        Self { kind, seqs, context, q_len, group, head_dim, block_size }
    }

    /// The same shape with another KV block size.
    pub fn with_block_size(self, block_size: usize) -> Self {
        Self { block_size, ..self }
    }

    /// Checks the shape: every size at least 1, `q_len ≤ context`, `q_len = 1` for decode.
    pub fn check(&self) -> Result<(), String> {
        for (name, v) in [
            ("seqs", self.seqs),
            ("ctx", self.context),
            ("q", self.q_len),
            ("g", self.group),
            ("d", self.head_dim),
            ("bs", self.block_size),
        ] {
            if v == 0 {
                return Err(format!("{name} must be at least 1"));
            }
        }
        if self.kind == AttentionKind::Decode && self.q_len != 1 {
            return Err(format!("decode has one query token per sequence, not q={}", self.q_len));
        }
        if self.q_len > self.context {
            return Err(format!(
                "q={} exceeds ctx={}: the context includes the queries' own tokens",
                self.q_len, self.context
            ));
        }
        Ok(())
    }

    /// The kernel name in cache records: [`PREFILL_KERNEL`] or [`DECODE_KERNEL`].
    pub fn kernel_name(&self) -> &'static str {
        match self.kind {
            AttentionKind::Prefill => PREFILL_KERNEL,
            AttentionKind::Decode => DECODE_KERNEL,
        }
    }

    /// The shape as stored in cache records:
    /// `[seqs, context, q_len, group, head_dim, block_size]` (the kind is in the kernel name).
    pub fn dims(&self) -> Vec<usize> {
        vec![self.seqs, self.context, self.q_len, self.group, self.head_dim, self.block_size]
    }

    /// Absolute position of each sequence's first query token.
    pub fn q_start(&self) -> usize {
        self.context.saturating_sub(self.q_len)
    }

    /// Query–key pairs the causal mask lets through, over all sequences (one head).
    pub fn visible_pairs(&self) -> f64 {
        let (q, start) = (self.q_len as f64, self.q_start() as f64);
        self.seqs as f64 * (q * start + q * (q + 1.0) / 2.0)
    }

    /// Floating-point operations of one call: `4 · head_dim · group` per visible pair (a dot
    /// product for the score and a multiply-add of the value row).
    pub fn flops(&self) -> f64 {
        4.0 * self.head_dim as f64 * self.group as f64 * self.visible_pairs()
    }

    /// Bytes of K and V one decode call reads: every context row of every sequence, once.
    pub fn kv_bytes(&self) -> f64 {
        2.0 * self.seqs as f64 * self.context as f64 * self.head_dim as f64 * 4.0
    }

    /// The figure of merit at `median_s` seconds per call: GFLOP/s for prefill, GB/s of K+V read
    /// for decode (see [`AttentionShape::metric_unit`]).
    pub fn metric(&self, median_s: f64) -> f64 {
        match self.kind {
            AttentionKind::Prefill => self.flops() / median_s / 1e9,
            AttentionKind::Decode => self.kv_bytes() / median_s / 1e9,
        }
    }

    /// The unit of [`AttentionShape::metric`].
    pub fn metric_unit(&self) -> &'static str {
        match self.kind {
            AttentionKind::Prefill => "GFLOP/s",
            AttentionKind::Decode => "GB/s",
        }
    }

    /// Multiply-adds of the scores alone: how costly the reference is on this shape.
    fn macs(&self) -> f64 {
        self.visible_pairs() * (self.group * self.head_dim) as f64
    }
}

impl fmt::Display for AttentionShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            AttentionKind::Prefill if self.seqs == 1 => write!(f, "prefill,q={}", self.q_len)?,
            AttentionKind::Prefill => write!(f, "prefill,seqs={},q={}", self.seqs, self.q_len)?,
            AttentionKind::Decode => write!(f, "decode,seqs={}", self.seqs)?,
        }
        write!(
            f,
            ",ctx={},g={},d={},bs={}",
            self.context, self.group, self.head_dim, self.block_size
        )
    }
}

/// Why a string is not an [`AttentionShape`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{value}` is not an attention shape: {reason} (expected e.g. prefill,q=512,ctx=512,g=4,d=128 or decode,seqs=8,ctx=1024,g=4,d=128; optional bs=BLOCK_SIZE [16], seqs=N [1])"
)]
pub struct AttentionShapeParseError {
    /// The text given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for AttentionShape {
    type Err = AttentionShapeParseError;

    /// Parses `KIND,key=value,...`: KIND is `prefill` or `decode`; keys `q` (prefill query
    /// tokens, required for prefill), `ctx` (required), `g` (required), `d` (required), `seqs`
    /// (default 1) and `bs` (default 16).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| AttentionShapeParseError { value: s.to_string(), reason };
        let mut parts = s.split(',').map(str::trim);
        let kind = match parts.next().unwrap_or("") {
            "prefill" => AttentionKind::Prefill,
            "decode" => AttentionKind::Decode,
            other => {
                return Err(err(format!("the kind `{other}` is neither `prefill` nor `decode`")));
            }
        };
        const KEYS: [&str; 6] = ["seqs", "q", "ctx", "g", "d", "bs"];
        let mut vals: [Option<usize>; 6] = [None; 6];
        for part in parts {
            let Some((k, v)) = part.split_once('=') else {
                return Err(err(format!("`{part}` is not key=value")));
            };
            let (k, v) = (k.trim(), v.trim());
            let Some(i) = KEYS.iter().position(|&name| name == k) else {
                return Err(err(format!("unknown key `{k}` (known: {})", KEYS.join(", "))));
            };
            if vals[i].is_some() {
                return Err(err(format!("`{k}` is given twice")));
            }
            let n = v
                .parse::<usize>()
                .map_err(|_| err(format!("{k} = `{v}` is not a positive integer (in `{part}`)")))?;
            vals[i] = Some(n);
        }
        let [seqs, q, ctx, g, d, bs] = vals;
        let required =
            |v: Option<usize>, name: &str| v.ok_or_else(|| err(format!("`{name}=` is missing")));
        let (ctx, g, d) = (required(ctx, "ctx")?, required(g, "g")?, required(d, "d")?);
        let q_len = match kind {
            AttentionKind::Prefill => required(q, "q")?,
            AttentionKind::Decode => q.unwrap_or(1),
        };
        let shape = AttentionShape {
            kind,
            seqs: seqs.unwrap_or(1),
            context: ctx,
            q_len,
            group: g,
            head_dim: d,
            block_size: bs.unwrap_or(DEFAULT_BLOCK_SIZE),
        };
        shape.check().map_err(err)?;
        Ok(shape)
    }
}

/// One set of inputs for an attention shape: queries, a paged K/V pool with shuffled blocks,
/// and each sequence's block table.
#[derive(Debug, Clone)]
pub struct AttentionCase {
    /// The shape the buffers hold.
    pub shape: AttentionShape,
    /// Queries, `[seqs · q_len, group, head_dim]`.
    pub q: Vec<f32>,
    /// Key pool, `[blocks, block_size, head_dim]`.
    pub k: Vec<f32>,
    /// Value pool, laid out like `k`.
    pub v: Vec<f32>,
    /// Block table of each sequence.
    pub tables: Vec<Vec<u32>>,
}

impl AttentionCase {
    /// Random inputs in `[-1, 1)` from `seed`; the pool's blocks are handed to the sequences in
    /// a random order, as a real paged cache would after some churn.
    pub fn new(shape: AttentionShape, seed: u64) -> Self {
        let s = shape;
        let mut rng = SplitMix64::new(seed);
        let per_seq = s.context.div_ceil(s.block_size.max(1));
        let mut blocks: Vec<u32> = (0..(s.seqs * per_seq) as u32).collect();
        for i in (1..blocks.len()).rev() {
            blocks.swap(i, rng.below(i + 1));
        }
        let tables = blocks.chunks(per_seq.max(1)).map(<[u32]>::to_vec).collect();
        let mut fill = |len: usize| (0..len).map(|_| rng.unit_f32()).collect::<Vec<f32>>();
        let pool = blocks.len() * s.block_size * s.head_dim;
        let q = fill(s.seqs * s.q_len * s.group * s.head_dim);
        let (k, v) = (fill(pool), fill(pool));
        Self { shape, q, k, v, tables }
    }

    /// Elements of the output (as many as `q`).
    pub fn out_len(&self) -> usize {
        self.q.len()
    }

    fn bytes(&self) -> usize {
        (self.q.len() + self.k.len() + self.v.len()) * 4
    }

    /// Runs [`decode`] / [`prefill`] with `params` (`Some`) or the reference (`None`) into
    /// `out`.
    fn call(&self, out: &mut [f32], params: Option<&AttentionParams>) -> Result<(), KernelError> {
        let s = &self.shape;
        let kv = PagedKv { k: &self.k, v: &self.v, block_size: s.block_size, head_dim: s.head_dim };
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        fn seq(t: &[u32], context_len: usize) -> SeqKv<'_> {
            SeqKv { block_table: t, context_len }
        }
        match s.kind {
            AttentionKind::Decode => {
                let seqs: Vec<SeqKv> = self.tables.iter().map(|t| seq(t, s.context)).collect();
                match params {
                    Some(p) => decode(&self.q, &seqs, &kv, s.group, scale, out, p),
                    None => decode_reference(&self.q, &seqs, &kv, s.group, scale, out),
                }
            }
            AttentionKind::Prefill => {
                let row = (s.q_len * s.group * s.head_dim).max(1);
                let per_seq = self.q.chunks(row).zip(out.chunks_mut(row)).zip(&self.tables);
                for ((q, o), t) in per_seq {
                    let (sq, start, g) = (seq(t, s.context), s.q_start(), s.group);
                    match params {
                        Some(p) => prefill(q, start, &sq, &kv, g, scale, o, p)?,
                        None => prefill_reference(q, start, &sq, &kv, g, scale, o)?,
                    }
                }
                Ok(())
            }
        }
    }

    /// Our kernel with `params` on these inputs.
    pub fn run(&self, out: &mut [f32], params: &AttentionParams) -> Result<(), KernelError> {
        self.call(out, Some(params))
    }

    /// The reference on these inputs.
    pub fn reference(&self, out: &mut [f32]) -> Result<(), KernelError> {
        self.call(out, None)
    }
}

/// Runs an attention candidate on one [`AttentionCase`] into `out`.
///
/// The seam between the search and the kernel: [`OurAttention`] in production, a deliberately
/// broken closure in tests of the correctness gate.
pub trait AttentionRunner {
    /// Computes the attention of `case` with `params` into `out` (`case.out_len()` elements).
    fn run(
        &self,
        case: &AttentionCase,
        out: &mut [f32],
        params: &AttentionParams,
    ) -> Result<(), KernelError>;
}

/// This crate's [`decode`] and [`prefill`].
#[derive(Debug, Clone, Copy, Default)]
pub struct OurAttention;

impl AttentionRunner for OurAttention {
    fn run(
        &self,
        case: &AttentionCase,
        out: &mut [f32],
        params: &AttentionParams,
    ) -> Result<(), KernelError> {
        case.run(out, params)
    }
}

impl<F> AttentionRunner for F
where
    F: Fn(&AttentionCase, &mut [f32], &AttentionParams) -> Result<(), KernelError>,
{
    fn run(
        &self,
        case: &AttentionCase,
        out: &mut [f32],
        params: &AttentionParams,
    ) -> Result<(), KernelError> {
        self(case, out, params)
    }
}

/// How to tune attention.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionTuneOptions {
    /// Candidates to consider at most, the defaults and cached ones included.
    pub budget: usize,
    /// Seed of the search (and of the random inputs).
    pub seed: u64,
    /// Threads every candidate runs with (the search covers `br` and `bc`).
    pub threads: usize,
    /// Timing of each measured candidate.
    pub timing: TimingOptions,
    /// The gate accepts `|out − reference| ≤ tolerance · (1 + |reference|)` per element.
    pub tolerance: f64,
    /// Shapes with at most this many score multiply-adds are gated on themselves; larger ones
    /// on a proxy shape.
    pub gate_max_macs: usize,
}

impl Default for AttentionTuneOptions {
    fn default() -> Self {
        Self {
            budget: 24,
            seed: 0,
            threads: crate::threads::available(),
            timing: TimingOptions::default(),
            tolerance: 1e-4,
            gate_max_macs: 1 << 24,
        }
    }
}

/// The outcome of [`tune_attention`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionTuneReport {
    /// Machine key the results belong to.
    pub machine: String,
    /// The shape tuned.
    pub shape: AttentionShape,
    /// The fastest valid params known for this shape, machine and thread count (this search or
    /// an earlier one in the cache).
    pub best: AttentionParams,
    /// Their median seconds per call.
    pub best_median_s: f64,
    /// Their [`AttentionShape::metric`] (GFLOP/s for prefill, GB/s for decode).
    pub best_metric: f64,
    /// The defaults (with the tuned thread count).
    pub default: AttentionParams,
    /// The defaults' median seconds per call (`None` if they were rejected).
    pub default_median_s: Option<f64>,
    /// The defaults' metric.
    pub default_metric: Option<f64>,
    /// `default_median_s / best_median_s`.
    pub speedup: Option<f64>,
    /// Candidates measured, cached and rejected.
    pub tally: Tally,
    /// Every candidate, in the order considered.
    pub candidates: Vec<search::CandidateOutcome<AttentionParams>>,
}

/// The tile sizes of `set` worth trying for a dimension: those below it and the first that
/// covers it (larger ones all behave alike).
fn useful(set: &[usize], dim: usize) -> Vec<usize> {
    let n = set.iter().position(|&v| v >= dim).map_or(set.len(), |i| i + 1);
    set[..n].to_vec()
}

/// The `br × bc` space for one shape at a fixed thread count.
#[derive(Debug, Clone)]
pub struct AttentionSpace {
    brs: Vec<usize>,
    bcs: Vec<usize>,
    threads: usize,
}

impl AttentionSpace {
    /// The space for `shape` at `threads` threads: decode keeps the default `br` (it has no
    /// query tiles).
    pub fn new(shape: &AttentionShape, threads: usize) -> Self {
        let brs = match shape.kind {
            AttentionKind::Prefill => useful(&BR_SET, shape.q_len),
            AttentionKind::Decode => vec![AttentionParams::default().br],
        };
        Self { brs, bcs: useful(&BC_SET, shape.context), threads: threads.max(1) }
    }

    fn make(&self, br: usize, bc: usize) -> AttentionParams {
        AttentionParams { br, bc, threads: self.threads }
    }

    /// Every valid point, br-major.
    pub fn points(&self) -> Vec<AttentionParams> {
        let all = self.brs.iter().flat_map(|&br| self.bcs.iter().map(move |&bc| (br, bc)));
        all.map(|(br, bc)| self.make(br, bc)).filter(|p| p.validate().is_ok()).collect()
    }
}

impl SearchSpace for AttentionSpace {
    type Params = AttentionParams;

    fn random(&self, rng: &mut SplitMix64) -> AttentionParams {
        let points = self.points();
        points.get(rng.below(points.len())).copied().unwrap_or_else(|| self.make(1, 8))
    }

    /// `br` or `bc` one step up or down (after snapping both into the space).
    fn neighbour(&self, p: &AttentionParams, rng: &mut SplitMix64) -> AttentionParams {
        let mut idx = [nearest(&self.brs, p.br), nearest(&self.bcs, p.bc)];
        let axes = [&self.brs, &self.bcs];
        let which = if self.brs.len() > 1 { rng.below(2) } else { 1 };
        let last = axes[which].len().saturating_sub(1);
        let i = idx[which];
        idx[which] = if rng.below(2) == 0 { i.saturating_sub(1) } else { (i + 1).min(last) };
        let q = self.make(self.brs[idx[0]], self.bcs[idx[1]]);
        if q.validate().is_ok() { q } else { self.random(rng) }
    }
}

/// The shape the correctness gate runs `params` on: the shape itself when its scores take at
/// most `max_macs` multiply-adds, otherwise a smaller one that still spans more than one query
/// tile and one key tile (and, for decode, enough context for the split-and-merge path).
pub fn gate_shape(
    shape: &AttentionShape,
    params: &AttentionParams,
    max_macs: usize,
) -> AttentionShape {
    if shape.macs() <= max_macs as f64 {
        return *shape;
    }
    match shape.kind {
        AttentionKind::Prefill => {
            let q_len = shape.q_len.min(2 * params.br + 1);
            let context = shape.context.min(q_len + params.bc + 1);
            AttentionShape { seqs: 1, q_len, context, ..*shape }
        }
        AttentionKind::Decode => {
            let context = shape.context.min(2 * params.bc.max(256) + 17);
            AttentionShape { seqs: shape.seqs.min(3), context, ..*shape }
        }
    }
}

/// Gate inputs and reference outputs per gate shape.
type GateRefs = HashMap<AttentionShape, (AttentionCase, Vec<f32>)>;

/// Runs `params` on `gs` and compares with the reference: `Ok(max_abs_err)` when within
/// tolerance, `Err((max_abs_err, reason))` otherwise.
fn gate(
    runner: &dyn AttentionRunner,
    params: &AttentionParams,
    gs: AttentionShape,
    tolerance: f64,
    refs: &mut GateRefs,
    seed: u64,
) -> Result<f64, (Option<f64>, String)> {
    if let Err(e) = params.validate() {
        return Err((None, e.to_string()));
    }
    let entry = match refs.entry(gs) {
        std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::hash_map::Entry::Vacant(v) => {
            let case = AttentionCase::new(gs, seed ^ 0xA77E);
            let mut want = vec![0.0; case.out_len()];
            case.reference(&mut want)
                .map_err(|e| (None, format!("reference failed on {gs}: {e}")))?;
            v.insert((case, want))
        }
    };
    let (case, want) = (&entry.0, &entry.1);
    let mut got = vec![f32::NAN; case.out_len()];
    if let Err(e) = runner.run(case, &mut got, params) {
        return Err((None, format!("kernel failed on {gs}: {e}")));
    }
    let (max_err, ok) = compare(&got, want, |w| tolerance * (1.0 + w.abs()));
    if ok {
        Ok(max_err)
    } else {
        Err((
            Some(max_err),
            format!(
                "differs from the attention reference on {gs}: max |Δ| = {max_err:.3e} beyond {tolerance:.0e}·(1+|ref|)"
            ),
        ))
    }
}

/// Input sets for timing one attention shape: as many [`AttentionCase`]s as fit in
/// `rotate_bytes` (1 to 8), rotated so a repeat does not find the previous one's K/V in cache.
struct Operands {
    cases: Vec<AttentionCase>,
    out: Vec<f32>,
}

impl Operands {
    fn new(shape: AttentionShape, rotate_bytes: usize, seed: u64) -> Self {
        let first = AttentionCase::new(shape, seed);
        let count = (rotate_bytes / first.bytes().max(1)).clamp(1, 8);
        let out = vec![0.0; first.out_len()];
        let mut cases = vec![first];
        cases.extend((1..count as u64).map(|i| AttentionCase::new(shape, seed.wrapping_add(i))));
        Self { cases, out }
    }
}

/// The search key of `shape` on `machine`.
fn key<'a>(machine: &'a str, shape: &AttentionShape) -> SearchKey<'a> {
    SearchKey { machine, kernel: shape.kernel_name(), dims: shape.dims() }
}

/// The fastest cached params for `shape` on `machine` at `threads` threads, with their median
/// seconds per call.
pub fn cached_best(
    cache: &KernelCache,
    machine: &str,
    shape: &AttentionShape,
    threads: usize,
) -> Option<(AttentionParams, f64)> {
    let (p, rec) = search::cached_best(cache, &key(machine, shape), usable_at(threads))?;
    Some((p, rec.median_s?))
}

/// Which cached params count here: the requested thread count, valid on this machine.
fn usable_at(threads: usize) -> impl Fn(&AttentionParams) -> bool {
    move |p| p.threads == threads && p.validate().is_ok()
}

/// Tunes `runner` for `shape` on the machine `machine` (a [`crate::machine::MachineId::key`]),
/// reusing and extending `cache`.
pub fn tune_attention(
    shape: &AttentionShape,
    opts: &AttentionTuneOptions,
    runner: &dyn AttentionRunner,
    cache: &mut KernelCache,
    machine: &str,
) -> Result<AttentionTuneReport, TuneError> {
    shape.check().map_err(|why| KernelError::shape("tune_attention", why))?;
    let threads = opts.threads.max(1);
    let space = AttentionSpace::new(shape, threads);
    let default = AttentionParams { threads, ..AttentionParams::default() };
    let mut operands: Option<Operands> = None;
    let mut refs = GateRefs::new();

    let evaluate = |params: &AttentionParams| {
        let gs = gate_shape(shape, params, opts.gate_max_macs);
        Verdict::gated(gate(runner, params, gs, opts.tolerance, &mut refs, opts.seed), || {
            let ops = operands
                .get_or_insert_with(|| Operands::new(*shape, opts.timing.rotate_bytes, opts.seed));
            let n = ops.cases.len();
            let (cases, out) = (&ops.cases, &mut ops.out);
            let t = time_calls(&opts.timing, |i| runner.run(&cases[i % n], out, params))?;
            let kv_bytes = (shape.kind == AttentionKind::Decode).then(|| shape.kv_bytes());
            Ok((t, shape.flops(), kv_bytes))
        })
    };
    let tuned = search::search_and_confirm(
        &space,
        default,
        opts.budget,
        opts.seed,
        cache,
        &key(machine, shape),
        usable_at(threads),
        evaluate,
    )?;
    let outcomes = tuned.outcomes;
    let (best, best_median_s) = tuned.best.and_then(|(p, r)| Some((p, r.median_s?))).ok_or(
        TuneError::NoValidCandidate {
            target: TuneTarget::AttentionF32(*shape),
            tried: outcomes.len(),
        },
    )?;
    let default_median_s = tuned.default.and_then(|r| r.median_s);
    Ok(AttentionTuneReport {
        machine: machine.to_string(),
        shape: *shape,
        best,
        best_median_s,
        best_metric: shape.metric(best_median_s),
        default,
        default_median_s,
        default_metric: default_median_s.map(|t| shape.metric(t)),
        speedup: default_median_s.map(|d| d / best_median_s),
        tally: Tally::of(&outcomes),
        candidates: outcomes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tune::cache::RecordStatus;
    use std::cell::Cell;

    fn quick(budget: usize) -> AttentionTuneOptions {
        AttentionTuneOptions {
            budget,
            seed: 5,
            threads: 2,
            timing: TimingOptions {
                budget: std::time::Duration::ZERO,
                min_repeats: 2,
                max_repeats: 2,
                rotate_bytes: 1 << 16,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn shapes_parse_display_and_round_trip() {
        let p: AttentionShape = "prefill,q=512,ctx=512,g=4,d=128".parse().unwrap();
        assert_eq!(p, AttentionShape::prefill(512, 512, 4, 128));
        assert_eq!(p.block_size, 16);
        assert_eq!(p.kernel_name(), "attention_prefill_f32");
        assert_eq!(p.dims(), vec![1, 512, 512, 4, 128, 16]);
        let d: AttentionShape = " decode, seqs=8 ,ctx=1024,g=4,d=128,bs=32".parse().unwrap();
        assert_eq!(d, AttentionShape::decode(8, 1024, 4, 128).with_block_size(32));
        assert_eq!(d.kernel_name(), "attention_decode_f32");
        for s in [p, d, AttentionShape { seqs: 3, ..AttentionShape::prefill(5, 9, 2, 8) }] {
            assert_eq!(s.to_string().parse::<AttentionShape>(), Ok(s), "{s}");
        }
        assert_eq!(TuneTarget::AttentionF32(d).kernel_name(), DECODE_KERNEL);
    }

    #[test]
    fn bad_shapes_name_the_bad_part() {
        for (bad, why) in [
            ("", "neither"),
            ("encode,q=1,ctx=1,g=1,d=1", "`encode`"),
            ("prefill,q=4,ctx=8,g=1", "`d=` is missing"),
            ("prefill,ctx=8,g=1,d=4", "`q=` is missing"),
            ("prefill,q=4,ctx=8,g=x,d=4", "g = `x`"),
            ("prefill,q=4,ctx=8,g=1,d=4,zz=3", "unknown key `zz`"),
            ("prefill,q=4,ctx=8,g=1,d=4,q=5", "`q` is given twice"),
            ("prefill,q=4,ctx=8,g=1,d=4,bs", "`bs` is not key=value"),
            ("prefill,q=9,ctx=8,g=1,d=4", "q=9 exceeds ctx=8"),
            ("decode,seqs=0,ctx=8,g=1,d=4", "seqs must be at least 1"),
            ("decode,q=2,ctx=8,g=1,d=4", "not q=2"),
            ("decode,ctx=8,g=1,d=-4", "d = `-4`"),
        ] {
            let e = bad.parse::<AttentionShape>().unwrap_err();
            assert_eq!(e.value, bad);
            assert!(e.reason.contains(why), "{bad}: {}", e.reason);
            assert!(e.to_string().contains("is not an attention shape"), "{e}");
        }
    }

    #[test]
    fn metrics_count_the_causal_triangle_and_kv_bytes() {
        let p = AttentionShape::prefill(4, 6, 2, 8);
        // Queries at positions 2..6 see 3, 4, 5, 6 keys.
        assert_eq!(p.visible_pairs(), 18.0);
        assert_eq!(p.flops(), 4.0 * 8.0 * 2.0 * 18.0);
        let d = AttentionShape::decode(3, 10, 4, 8);
        assert_eq!(d.visible_pairs(), 30.0);
        assert_eq!(d.kv_bytes(), 2.0 * 3.0 * 10.0 * 8.0 * 4.0);
        assert_eq!(d.metric(1e-9), d.kv_bytes());
        assert_eq!(p.metric_unit(), "GFLOP/s");
        assert_eq!(d.metric_unit(), "GB/s");
    }

    #[test]
    fn space_is_valid_and_prunes_past_the_shape() {
        let s = AttentionSpace::new(&AttentionShape::prefill(20, 100, 4, 16), 3);
        assert_eq!(s.brs, vec![1, 2, 4, 8, 16, 32]);
        assert_eq!(s.bcs, vec![8, 16, 32, 64, 128]);
        assert_eq!(s.points().len(), 30);
        let d = AttentionSpace::new(&AttentionShape::decode(2, 5000, 4, 16), 3);
        assert_eq!(d.brs, vec![AttentionParams::default().br]);
        assert_eq!(d.bcs, BC_SET.to_vec());
        let mut rng = SplitMix64::new(1);
        for _ in 0..200 {
            let p = s.random(&mut rng);
            let q = s.neighbour(&p, &mut rng);
            for x in [p, q] {
                assert!(x.validate().is_ok() && x.threads == 3);
                assert!(s.brs.contains(&x.br) && s.bcs.contains(&x.bc));
            }
            assert_eq!(d.neighbour(&p, &mut rng).br, AttentionParams::default().br);
        }
    }

    #[test]
    fn gate_shape_shrinks_big_problems_but_crosses_tiles() {
        let p = AttentionParams { br: 8, bc: 64, threads: 1 };
        let big = AttentionShape::prefill(2048, 4096, 4, 128);
        let gs = gate_shape(&big, &p, 1 << 20);
        assert!(gs.q_len > p.br && gs.context > p.bc && gs.check().is_ok());
        assert!(gs.macs() < big.macs() / 100.0);
        let dec = gate_shape(&AttentionShape::decode(64, 8192, 4, 128), &p, 1 << 20);
        assert!(dec.context > 2 * 256 && dec.seqs <= 3);
        let small = AttentionShape::decode(2, 40, 2, 8);
        assert_eq!(gate_shape(&small, &p, 1 << 20), small);
    }

    #[test]
    fn our_kernels_match_the_reference_on_cases() {
        for shape in [
            AttentionShape { seqs: 2, ..AttentionShape::prefill(13, 29, 3, 8) }.with_block_size(4),
            AttentionShape::decode(3, 600, 2, 16).with_block_size(8),
        ] {
            let p = AttentionParams { br: 4, bc: 16, threads: 2 };
            let gs = gate_shape(&shape, &p, usize::MAX);
            let r = gate(&OurAttention, &p, gs, 1e-4, &mut GateRefs::new(), 1);
            assert!(r.is_ok(), "{shape}: {r:?}");
        }
    }

    #[test]
    fn search_is_reproducible_and_reuses_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.jsonl");
        let shape = AttentionShape::prefill(24, 40, 2, 8).with_block_size(8);
        let mut cache = KernelCache::load(&path).unwrap();
        let first = tune_attention(&shape, &quick(6), &OurAttention, &mut cache, "t").unwrap();
        assert_eq!(first.candidates[0].params, first.default);
        assert_eq!(first.tally, Tally { measured: 6, cached: 0, rejected: 0 });
        assert!(first.best.validate().is_ok() && first.speedup.is_some());
        for r in cache.records() {
            assert_eq!(r.kernel, PREFILL_KERNEL);
            assert_eq!(r.shape, shape.dims());
            assert!(r.median_s.is_some() && r.gflops.is_some() && r.gb_per_s.is_none());
        }

        // Same seed, fresh cache: the same exploration candidates in the same order. Only the
        // exploring half of the budget (the defaults, then seeded random points: 3 of 6) is
        // compared, since the local search that follows moves around whichever candidate
        // measured fastest, and timings vary from run to run.
        let mut other = KernelCache::load(dir.path().join("other.jsonl")).unwrap();
        let again = tune_attention(&shape, &quick(6), &OurAttention, &mut other, "t").unwrap();
        let params = |r: &AttentionTuneReport| -> Vec<AttentionParams> {
            r.candidates.iter().take(3).map(|c| c.params).collect()
        };
        let p1: Vec<AttentionParams> = params(&first);
        assert_eq!(p1, params(&again));
        let mut seeded = quick(6);
        seeded.seed = 99;
        let mut third = KernelCache::load(dir.path().join("third.jsonl")).unwrap();
        let diff = tune_attention(&shape, &seeded, &OurAttention, &mut third, "t").unwrap();
        assert_ne!(p1, params(&diff), "another seed explores elsewhere");

        // Reloaded cache: nothing runs, same candidates, same best.
        let mut reloaded = KernelCache::load(&path).unwrap();
        let calls = Cell::new(0usize);
        let counting = |c: &AttentionCase, o: &mut [f32], p: &AttentionParams| {
            calls.set(calls.get() + 1);
            OurAttention.run(c, o, p)
        };
        let second = tune_attention(&shape, &quick(6), &counting, &mut reloaded, "t").unwrap();
        assert_eq!(calls.get(), 0, "a cached candidate must not run");
        assert_eq!(second.tally, Tally { measured: 0, cached: 6, rejected: 0 });
        let all = |r: &AttentionTuneReport| -> Vec<AttentionParams> {
            r.candidates.iter().map(|c| c.params).collect()
        };
        assert_eq!(all(&first), all(&second));
        assert_eq!(second.best, first.best);
    }

    #[test]
    fn decode_records_store_bandwidth() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = KernelCache::load(dir.path().join("k.jsonl")).unwrap();
        let shape = AttentionShape::decode(2, 70, 2, 8);
        let r = tune_attention(&shape, &quick(3), &OurAttention, &mut cache, "t").unwrap();
        assert!(r.candidates.iter().all(|c| c.params.br == AttentionParams::default().br));
        assert!(cache.records().iter().all(|r| r.kernel == DECODE_KERNEL && r.gb_per_s.is_some()));
        assert!((r.best_metric - shape.metric(r.best_median_s)).abs() < 1e-9);
    }

    #[test]
    fn gate_rejects_a_wrong_kernel_without_timing_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = KernelCache::load(dir.path().join("k.jsonl")).unwrap();
        let shape = AttentionShape::prefill(30, 30, 2, 8);
        let default_bc = AttentionParams::default().bc;
        let calls = Cell::new(0usize);
        // Correct only at the default bc; every other candidate is off by a little.
        let broken = |c: &AttentionCase, o: &mut [f32], p: &AttentionParams| {
            calls.set(calls.get() + 1);
            OurAttention.run(c, o, p)?;
            if p.bc != default_bc {
                o[o.len() / 2] += 1e-2;
            }
            Ok(())
        };
        let r = tune_attention(&shape, &quick(5), &broken, &mut cache, "t").unwrap();
        assert_eq!(r.best.bc, default_bc);
        assert!(r.tally.rejected >= 1, "{r:?}");
        for c in r.candidates.iter().filter(|c| c.params.bc != default_bc) {
            assert_eq!(c.status, RecordStatus::Rejected);
            assert!(c.gflops.is_none() && c.median_s.is_none());
            assert!(c.note.as_deref().unwrap_or("").contains("attention reference"), "{c:?}");
        }
        // Search: each timed one costs 1 gate + 1 warm-up + 2 timed, each rejected one the gate.
        let timed = r.candidates.iter().filter(|c| c.status == RecordStatus::Ok).count();
        // Then the confirmation re-times the (only) timed one in every round.
        let confirmed = 4 * search::CONFIRM_ROUNDS * timed.min(search::CONFIRM_TOP);
        assert_eq!(calls.get(), 4 * timed + r.tally.rejected + confirmed);
        let rejected = cache.records().iter().filter(|r| r.status == RecordStatus::Rejected);
        assert_eq!(rejected.count(), r.tally.rejected);

        let mut cache2 = KernelCache::load(dir.path().join("k2.jsonl")).unwrap();
        let nan = |_: &AttentionCase, o: &mut [f32], _: &AttentionParams| {
            o.fill(f32::NAN);
            Ok(())
        };
        let e = tune_attention(&shape, &quick(3), &nan, &mut cache2, "t").unwrap_err();
        assert!(matches!(e, TuneError::NoValidCandidate { tried: 3, .. }), "{e}");
        assert!(e.to_string().contains("attention_prefill_f32"), "{e}");
    }
}
