//! Search space, strategies, hardware profiles, simulator and config emitter.

pub mod constraints;
pub mod space;
pub mod strategy;
