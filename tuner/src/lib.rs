//! Search space, strategies, hardware profiles, simulator and config emitter.
//!
//! Not built yet: see ARCHITECTURE.md for what lands here and in which issue.
