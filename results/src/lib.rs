//! The results store (SQLite or PostgreSQL) and regression detection.
//!
//! `store` keeps runs, series, histograms, studies and alerts in one database (sqlx: SQLite by
//! default, PostgreSQL by URL, one migration history); `detect` finds regressions in a
//! series (provisional check, E-divisive change points, alert states). Wiring them into
//! `dyno nightly`, `dyno alerts` and `dyno compare` is still to come (see ARCHITECTURE.md).

pub mod detect;
pub mod store;

pub use store::{Store, StoreError};
