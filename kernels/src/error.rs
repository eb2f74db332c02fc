//! Errors shared by all kernels.

use thiserror::Error;

/// A tunable parameter that cannot be used, with the field, the value and why.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {kernel} parameter `{field}` = {value}: {reason}")]
pub struct ParamError {
    /// The kernel whose parameters these are (`gemm`, `attention`, ...).
    pub kernel: &'static str,
    /// The field name as it appears in YAML.
    pub field: &'static str,
    /// The offending value, formatted.
    pub value: String,
    /// Why it is rejected.
    pub reason: String,
}

impl ParamError {
    /// Builds a parameter error.
    pub fn new(
        kernel: &'static str,
        field: &'static str,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        Self { kernel, field, value: value.to_string(), reason: reason.into() }
    }
}

/// Anything a kernel call can fail with.
#[derive(Debug, Error)]
pub enum KernelError {
    /// Tunable parameters that are impossible or unsupported on this machine.
    #[error(transparent)]
    Param(#[from] ParamError),
    /// Operand shapes that do not agree (for example `a` is not `m × k`).
    #[error("shape mismatch in {kernel}: {detail}")]
    Shape {
        /// The kernel called.
        kernel: &'static str,
        /// What disagreed, with the sizes.
        detail: String,
    },
    /// An I/O failure, for example reading or writing a kernel cache file.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A malformed file (kernel cache, params YAML), naming the file and what is wrong.
    #[error("{path}: {reason}")]
    Format {
        /// The file involved.
        path: String,
        /// What is wrong, with the line or field.
        reason: String,
    },
}

impl KernelError {
    /// A shape mismatch in `kernel`.
    pub fn shape(kernel: &'static str, detail: impl Into<String>) -> Self {
        Self::Shape { kernel, detail: detail.into() }
    }
}
