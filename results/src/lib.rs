//! The results store (SQLite or PostgreSQL), migrations and change-point detection.
//!
//! Not built yet: see ARCHITECTURE.md for what lands here and in which issue.

pub mod store;

pub use store::{Store, StoreError};
