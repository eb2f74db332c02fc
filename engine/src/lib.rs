//! dyno-engine: the reference engine, a Mixtral-style mixture-of-experts transformer run
//! with quantized weights, a paged KV cache, a pure scheduler state machine and parallel
//! layouts, served over an OpenAI-compatible HTTP API. See ARCHITECTURE.md for the map.

pub mod api;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod error;
pub mod kv;
pub mod linear;
pub mod model;
pub mod model_config;
pub mod parallel;
pub mod quality;
pub mod sampler;
pub mod scheduler;
pub mod server;
pub mod tokenizer;
pub mod weights;

pub use config::EngineConfig;
pub use error::{ConfigError, EngineError};
pub use model_config::{ModelConfig, WeightFormat};
