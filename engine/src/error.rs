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

/// Reads a YAML file's text, naming the file when it cannot be read.
pub(crate) fn read_yaml_file(path: &std::path::Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|e| ConfigError::new(path.display(), "", e.to_string()))
}

/// Parses YAML into `T`; `origin` (the file) prefixes serde's message, which names the field
/// and position.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    origin: &str,
) -> Result<T, ConfigError> {
    serde_yaml::from_str(text).map_err(|e| ConfigError::new(origin, "", e.to_string()))
}
