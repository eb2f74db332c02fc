//! Errors of the engine: bad configuration, bad checkpoints, rejected requests.

use thiserror::Error;

/// A configuration value that cannot be used: where it came from (a file, a flag), the field
/// and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{origin}: {}{reason}", if field.is_empty() { String::new() } else { format!("`{field}`: ") })]
pub struct ConfigError {
    /// The file or flag the value came from.
    pub origin: String,
    /// The field, as written in YAML (empty when the whole file is at fault).
    pub field: String,
    /// What is wrong, with the value.
    pub reason: String,
}

impl ConfigError {
    /// Builds a configuration error.
    pub fn new(origin: impl std::fmt::Display, field: &str, reason: impl Into<String>) -> Self {
        Self { origin: origin.to_string(), field: field.to_string(), reason: reason.into() }
    }
}

/// Anything that can go wrong building or running the engine.
#[derive(Debug, Error)]
pub enum EngineError {
    /// Invalid model or engine configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A kernel rejected its operands or parameters (a bug in the engine, or bad kernel params).
    #[error(transparent)]
    Kernel(#[from] dyno_kernels::KernelError),
    /// A checkpoint that cannot be loaded: the file, the tensor and why.
    #[error("{path}: {reason}")]
    Checkpoint {
        /// The file (or directory) involved.
        path: String,
        /// What is wrong, naming the tensor.
        reason: String,
    },
}
