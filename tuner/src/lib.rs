//! Search space, strategies, hardware profiles, simulator and config emitter.

pub mod strategy;
