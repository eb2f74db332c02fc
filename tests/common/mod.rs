//! Helpers shared by the end-to-end tests (each test file uses the ones it needs).
#![allow(dead_code)]

use std::path::Path;

/// A results database directory for this test process, so no test writes `dyno.sqlite` into
/// the repository.
pub fn test_db_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("tempdir")).path()
}

/// Everything stored in the results database at `path`, newest run first.
pub fn stored_runs(path: &Path) -> Vec<dyno_results::store::RunRecord> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
    runtime.block_on(async {
        let store = dyno_results::Store::open(path.to_str().expect("utf-8")).await.expect("open");
        let mut out = Vec::new();
        for run in store.runs(1000).await.expect("runs") {
            out.push(store.run_record(run.id).await.expect("record"));
        }
        store.close().await;
        out
    })
}
