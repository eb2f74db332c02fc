//! Search space, strategies, hardware profiles, simulator and config emitter.

pub mod calibrate;
pub mod constraints;
pub mod emit;
pub mod evaluate;
pub mod hardware;
pub mod kernel_stage;
pub mod objective;
pub mod quality;
pub mod replay;
pub mod simulate;
pub mod space;
pub mod step_model;
pub mod strategy;
pub mod study;
pub mod validate;
