//! Kernel auto-tuning: candidate search, correctness gate, and the on-disk cache.
//!
//! - [`search`]: the loop every kernel shares (defaults first, then seeded random sampling and
//!   local neighbourhood search, cached candidates reused, new ones appended to the cache) over
//!   a kernel's [`search::SearchSpace`] and evaluator;
//! - [`cache`]: JSON-lines file of measurements keyed by machine, kernel, shape and params
//!   (like Kernel Tuner's cache files), reused instead of re-measuring;
//! - [`gemm`]: the GEMM parameter space (tiles × micro-kernels) and its evaluator, each
//!   candidate gated against [`crate::gemm::gemm_reference`];
//! - [`attention`]: attention shapes ([`AttentionShape`]: paged decode or causal prefill), the
//!   `br × bc` tile space and its evaluator, gated against the attention references, measured
//!   in GFLOP/s (prefill) or GB/s of K+V read (decode);
//! - [`timing`]: warm-up, rotated inputs, median of repeats within a time budget.
//!
//! [`TuneTarget`] names what can be tuned: a GEMM shape or an attention shape.

pub mod attention;
pub mod cache;
pub mod gemm;
pub mod search;
pub mod timing;

use crate::error::KernelError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

pub use attention::{
    AttentionKind, AttentionRunner, AttentionShape, AttentionShapeParseError, AttentionTuneOptions,
    AttentionTuneReport, OurAttention, tune_attention,
};
pub use cache::{CacheRecord, KernelCache, RecordStatus, default_cache_path};
pub use gemm::{GemmRunner, GemmTuneOptions, GemmTuneReport, OurGemm, tune_gemm};
pub use search::{CandidateOutcome, Tally};

/// A GEMM problem shape: `A` is m×k, `B` is k×n, `C` is m×n.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GemmShape {
    /// Rows of A and C.
    pub m: usize,
    /// Columns of B and C.
    pub n: usize,
    /// Columns of A, rows of B.
    pub k: usize,
}

impl GemmShape {
    /// A shape; every dimension must be at least 1 (see [`FromStr`] for checked parsing).
    pub fn new(m: usize, n: usize, k: usize) -> Self {
        Self { m, n, k }
    }

    /// Floating-point operations of one `C = A·B`: 2·m·n·k.
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// The shape as `[m, n, k]`, the form stored in cache records.
    pub fn dims(&self) -> Vec<usize> {
        vec![self.m, self.n, self.k]
    }
}

impl fmt::Display for GemmShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{},{},{}", self.m, self.n, self.k)
    }
}

/// Why a `m,n,k` string is not a shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{value}` is not a shape: {reason} (expected m,n,k with three positive integers, e.g. 1024,1024,1024)"
)]
pub struct ShapeParseError {
    /// The text given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for GemmShape {
    type Err = ShapeParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: String| ShapeParseError { value: s.to_string(), reason };
        let parts: Vec<&str> = s.split(',').map(str::trim).collect();
        if parts.len() != 3 {
            return Err(err(format!("it has {} numbers", parts.len())));
        }
        let mut dims = [0usize; 3];
        for ((dim, part), name) in dims.iter_mut().zip(&parts).zip(["m", "n", "k"]) {
            *dim = part
                .parse::<usize>()
                .map_err(|_| err(format!("{name} = `{part}` is not a positive integer")))?;
            if *dim == 0 {
                return Err(err(format!("{name} must be at least 1")));
            }
        }
        Ok(GemmShape::new(dims[0], dims[1], dims[2]))
    }
}

/// Something the tuner can tune: a kernel and the shape it runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kernel", rename_all = "snake_case")]
pub enum TuneTarget {
    /// f32 GEMM `C = A·B` on row-major operands.
    GemmF32(GemmShape),
    /// f32 attention of one KV-head group over paged KV: decode or causal prefill.
    AttentionF32(AttentionShape),
}

impl TuneTarget {
    /// The kernel name used in cache records and reports.
    pub fn kernel_name(&self) -> &'static str {
        match self {
            TuneTarget::GemmF32(_) => gemm::KERNEL_NAME,
            TuneTarget::AttentionF32(s) => s.kernel_name(),
        }
    }

    /// The shape as stored in cache records (see [`GemmShape::dims`] and
    /// [`AttentionShape::dims`] for the order).
    pub fn dims(&self) -> Vec<usize> {
        match self {
            TuneTarget::GemmF32(s) => s.dims(),
            TuneTarget::AttentionF32(s) => s.dims(),
        }
    }
}

impl fmt::Display for TuneTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TuneTarget::GemmF32(s) => write!(f, "{} {s}", self.kernel_name()),
            TuneTarget::AttentionF32(s) => write!(f, "{} {s}", self.kernel_name()),
        }
    }
}

/// Why tuning failed.
#[derive(Debug, thiserror::Error)]
pub enum TuneError {
    /// Reading or writing the cache, or a kernel call that failed outright.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Every candidate tried was rejected by the correctness gate.
    #[error(
        "no candidate for {target} passed the correctness gate ({tried} tried); is the kernel broken?"
    )]
    NoValidCandidate {
        /// The kernel and shape tuned.
        target: TuneTarget,
        /// Candidates tried.
        tried: usize,
    },
}

/// Builds a [`KernelError::Format`] for `path`.
pub(crate) fn format_error(path: &std::path::Path, reason: impl Into<String>) -> KernelError {
    KernelError::Format { path: path.display().to_string(), reason: reason.into() }
}

/// SplitMix64: a tiny seeded generator for reproducible searches and test inputs.
///
/// Hand-written on purpose: the candidate sequence for a given `--seed` must not change when a
/// dependency is upgraded, and `rand`'s `StdRng` documents that its stream is not stable across
/// versions.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform index in `0..n` (`n` ≥ 1; the tiny modulo bias is irrelevant here).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// A uniform `f32` in `[-1, 1)`.
    pub fn unit_f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_parse_and_reject_with_reasons() {
        assert_eq!("8, 4096,4096".parse::<GemmShape>(), Ok(GemmShape::new(8, 4096, 4096)));
        for bad in ["8,x,3", "0,1,1", "1,2", "1,2,3,4", "", "-1,2,3"] {
            let e = bad.parse::<GemmShape>().unwrap_err();
            assert_eq!(e.value, bad);
            assert!(e.to_string().contains(bad), "{e}");
        }
        assert!("8,x,3".parse::<GemmShape>().unwrap_err().reason.contains("n = `x`"));
        assert!("0,1,1".parse::<GemmShape>().unwrap_err().reason.contains("m must be"));
    }

    #[test]
    fn splitmix_is_reproducible() {
        let a: Vec<u64> = (0..4).scan(SplitMix64::new(7), |r, _| Some(r.next_u64())).collect();
        let b: Vec<u64> = (0..4).scan(SplitMix64::new(7), |r, _| Some(r.next_u64())).collect();
        assert_eq!(a, b);
        let mut r = SplitMix64::new(1);
        for _ in 0..1000 {
            let x = r.unit_f32();
            assert!((-1.0..1.0).contains(&x));
            assert!(r.below(3) < 3);
        }
    }
}
