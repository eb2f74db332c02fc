//! The results store (SQLite or PostgreSQL), regression detection, and their meeting point.
//!
//! `store` keeps runs, series, histograms, studies and alerts in one database (sqlx: SQLite by
//! default, PostgreSQL by URL, one migration history); `detect` finds regressions in a
//! series (provisional check, E-divisive change points, alert states) as pure functions;
//! `analyze` runs detection over the stored series a run touched and moves their alerts on;
//! `summary` renders the result as the markdown a nightly job prints.

pub mod analyze;
pub mod detect;
pub mod store;
pub mod summary;

pub use store::{Store, StoreError};
