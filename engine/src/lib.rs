//! dyno-engine: the reference engine, a Mixtral-style mixture-of-experts transformer run
//! with quantized weights, a paged KV cache, a pure scheduler state machine and parallel
//! layouts, served over an OpenAI-compatible HTTP API. See ARCHITECTURE.md for the map.

pub mod api;
pub mod config;
pub mod error;
pub mod model_config;
pub mod server;
pub mod tokenizer;
pub mod weights;

pub use config::EngineConfig;
pub use error::{ConfigError, EngineError};
pub use model_config::{ModelConfig, WeightFormat};
