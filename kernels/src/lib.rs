//! dyno-kernels: the compute kernels that dyno's reference engine runs and its tuner tunes.
//!
//! Every fast kernel has a plain reference version (the test oracle) and takes its tunable
//! parameters as data: a struct that serializes to YAML and is validated with a clear error,
//! never constants buried in code. SIMD paths are chosen at run time from the CPU's features
//! ([`isa::Isa`]), capped by the `DYNO_MAX_ISA` environment variable so every path can be
//! tested on a machine that has a wider one.
//!
//! Conventions shared by every kernel:
//! - matrices are row-major `f32` unless a type says otherwise;
//! - a linear layer's weight is `[n, k]` (out features × in features, Hugging Face layout), and
//!   `y = x · Wᵀ`;
//! - a `threads` parameter is the size of the rayon pool the kernel runs on ([`threads`]).

pub mod attention;
#[cfg(feature = "baselines")]
pub mod baselines;
pub mod bench;
pub mod dense;
pub mod error;
pub mod gemm;
pub mod isa;
pub mod machine;
pub mod memory;
pub mod ops;
pub mod quant;
pub mod threads;
pub mod tune;

pub use error::{KernelError, ParamError};
pub use isa::Isa;
