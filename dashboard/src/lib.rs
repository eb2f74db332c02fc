//! Web dashboard over the results store.
//!
//! Not built yet: see ARCHITECTURE.md for what lands here and in which issue.
