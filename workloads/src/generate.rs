//! Deterministic generators: per-index random streams, length samplers, gap samplers and
//! prompt text.
//!
//! Every random draw comes from a fresh generator seeded by [`stream_rng`]`(seed, stream, i)`,
//! so request `i` (and the gap before arrival `i`) depends on the seed and `i` only, never on
//! what was drawn before. The generator is `Xoshiro256PlusPlus`, whose output is fixed by its
//! algorithm (unlike `StdRng`, which may change between `rand` versions).

use rand::rngs::Xoshiro256PlusPlus;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Exp, Gamma, LogNormal, Normal};

use crate::WorkloadError;
use crate::spec::{Arrival, LengthDist};

/// Independent random streams.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub(crate) enum Stream {
    /// The gap before arrival `i`.
    Arrivals = 1,
    /// Lengths of request `i` (and the trace row it takes).
    Lengths = 2,
    /// Which prefix group request `i` uses.
    PrefixChoice = 3,
    /// Text of prefix group `g`.
    PrefixText = 4,
    /// Text of request `i`'s own part of the prompt.
    PromptText = 5,
}

/// SplitMix64's finalizer: a bijective mix of 64 bits. Hand-written because it is the
/// seeding step itself (a few lines, fixed constants) and no kept crate exposes it.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A fresh generator for item `index` of `stream` under `seed`.
pub(crate) fn stream_rng(seed: u64, stream: Stream, index: u64) -> Xoshiro256PlusPlus {
    seeded_stream(seed, stream as u64, index)
}

/// A generator for item `index` of stream `stream` under `seed`, independent of every other
/// (seed, stream, index): what makes request `i` (or a tuner's proposal `i`) a pure function of
/// its seed and index, whatever was drawn before.
pub fn seeded_stream(seed: u64, stream: u64, index: u64) -> Xoshiro256PlusPlus {
    let s = splitmix64(splitmix64(seed ^ splitmix64(stream)) ^ index);
    Xoshiro256PlusPlus::seed_from_u64(s)
}

/// A length distribution ready to sample.
#[derive(Debug, Clone)]
pub(crate) enum LengthSampler {
    Fixed(usize),
    Uniform(u64, u64),
    Normal(Normal<f64>, usize, usize),
    LogNormal(LogNormal<f64>, usize, usize),
}

fn clamp_round(x: f64, min: usize, max: usize) -> usize {
    // `as` saturates (NaN → 0), and the clamp keeps the result in [min, max].
    (x.round() as usize).clamp(min, max)
}

impl LengthSampler {
    /// Builds the sampler for a checked distribution.
    pub(crate) fn new(dist: &LengthDist, field: &str) -> Result<Self, WorkloadError> {
        let bad = |e: &dyn std::fmt::Display| WorkloadError::Invalid(format!("`{field}`: {e}"));
        Ok(match *dist {
            LengthDist::Fixed { value } => LengthSampler::Fixed(value),
            LengthDist::Uniform { min, max } => LengthSampler::Uniform(min as u64, max as u64),
            LengthDist::Normal { mean, std, min, max } => {
                LengthSampler::Normal(Normal::new(mean, std).map_err(|e| bad(&e))?, min, max)
            }
            LengthDist::LogNormal { median, sigma, min, max } => LengthSampler::LogNormal(
                LogNormal::new(median.ln(), sigma).map_err(|e| bad(&e))?,
                min,
                max,
            ),
        })
    }

    pub(crate) fn sample(&self, rng: &mut Xoshiro256PlusPlus) -> usize {
        match *self {
            LengthSampler::Fixed(v) => v,
            LengthSampler::Uniform(min, max) => rng.random_range(min..=max) as usize,
            LengthSampler::Normal(d, min, max) => clamp_round(d.sample(rng), min, max),
            LengthSampler::LogNormal(d, min, max) => clamp_round(d.sample(rng), min, max),
        }
    }
}

/// Gaps between open-loop arrivals, in seconds.
#[derive(Debug, Clone)]
pub(crate) enum GapSampler {
    Exp(Exp<f64>),
    Gamma(Gamma<f64>),
    Constant(f64),
}

impl GapSampler {
    /// The sampler for an open-loop process (`None` for closed loop and trace replay).
    pub(crate) fn new(arrival: &Arrival) -> Result<Option<Self>, WorkloadError> {
        let bad = |e: &dyn std::fmt::Display| WorkloadError::Invalid(format!("`arrival`: {e}"));
        Ok(match *arrival {
            Arrival::Poisson { rate } => {
                Some(GapSampler::Exp(Exp::new(rate).map_err(|e| bad(&e))?))
            }
            Arrival::Gamma { rate, burstiness } => Some(GapSampler::Gamma(
                Gamma::new(burstiness, 1.0 / (rate * burstiness)).map_err(|e| bad(&e))?,
            )),
            Arrival::Constant { rate } => Some(GapSampler::Constant(1.0 / rate)),
            Arrival::Closed { .. } | Arrival::Trace { .. } => None,
        })
    }

    /// The gap before arrival `index` (≥ 1).
    pub(crate) fn gap(&self, seed: u64, index: usize) -> f64 {
        match self {
            GapSampler::Exp(d) => d.sample(&mut stream_rng(seed, Stream::Arrivals, index as u64)),
            GapSampler::Gamma(d) => d.sample(&mut stream_rng(seed, Stream::Arrivals, index as u64)),
            GapSampler::Constant(g) => *g,
        }
    }
}

/// Lower-case words of 1–9 letters separated by single spaces: printable ASCII ids that read
/// as text and tokenize byte by byte.
pub(crate) fn push_text(rng: &mut Xoshiro256PlusPlus, len: usize, out: &mut Vec<u32>) {
    let end = out.len() + len;
    while out.len() < end {
        let word = rng.random_range(1..=9u32);
        for _ in 0..word {
            if out.len() == end {
                return;
            }
            out.push(u32::from(b'a') + rng.random_range(0..26u32));
        }
        if out.len() < end {
            out.push(u32::from(b' '));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_and_indices_are_independent() {
        let a = stream_rng(1, Stream::Lengths, 0).next_u64();
        assert_eq!(a, stream_rng(1, Stream::Lengths, 0).next_u64());
        assert_ne!(a, stream_rng(1, Stream::Lengths, 1).next_u64());
        assert_ne!(a, stream_rng(1, Stream::PromptText, 0).next_u64());
        assert_ne!(a, stream_rng(2, Stream::Lengths, 0).next_u64());
    }

    #[test]
    fn text_has_the_asked_length_and_reads_as_words() {
        for len in [0, 1, 2, 9, 10, 257] {
            let mut out = vec![7];
            push_text(&mut stream_rng(0, Stream::PromptText, len as u64), len, &mut out);
            assert_eq!(out.len(), len + 1);
            assert!(out[1..].iter().all(|&t| t == 32 || (97..123).contains(&t)));
            assert!(!out.windows(2).any(|w| w == [32, 32]));
        }
    }

    #[test]
    fn length_samples_stay_in_bounds() {
        let d = LengthDist::LogNormal { median: 100.0, sigma: 2.0, min: 5, max: 300 };
        let s = LengthSampler::new(&d, "x").unwrap();
        let mut rng = stream_rng(0, Stream::Lengths, 0);
        let xs: Vec<_> = (0..2000).map(|_| s.sample(&mut rng)).collect();
        assert!(xs.iter().all(|x| (5..=300).contains(x)));
        assert!(xs.contains(&5) && xs.contains(&300));
    }
}
