//! Request-stream specifications (YAML presets) and deterministic generators.
//!
//! Not built yet: see ARCHITECTURE.md for what lands here and in which issue.
