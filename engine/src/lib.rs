//! The reference engine: a Mixtral-style mixture-of-experts transformer, paged KV cache, scheduler, parallel layouts and an OpenAI-compatible server.
//!
//! Not built yet: see ARCHITECTURE.md for what lands here and in which issue.
