//! The results store (SQLite or PostgreSQL), regression detection, and what is built on them.
//!
//! `store` keeps runs, series, histograms, studies and alerts in one database (sqlx: SQLite by
//! default, PostgreSQL by URL, one migration history); `detect` finds regressions in a
//! series (provisional check, E-divisive change points, alert states) as pure functions;
//! `analyze` runs detection over the stored series a run touched and moves their alerts on;
//! `summary` renders that as the markdown a nightly job prints. `criterion` reads criterion's
//! saved estimates as scenario results (`dyno ingest criterion`), `compare` sets two runs side
//! by side with a Mann–Whitney test per measure (`dyno compare`), and `tables` renders runs
//! and alerts for the command line (`dyno db runs`, `dyno alerts`).

pub mod analyze;
pub mod compare;
pub mod criterion;
pub mod detect;
pub mod frontier;
pub mod store;
pub mod summary;
pub mod tables;

pub use store::{Store, StoreError};
