//! Load generator, vLLM-compatible metrics, SLO/goodput, sweeps and the suite runner.
//!
//! Not built yet: see ARCHITECTURE.md for what lands here and in which issue.
