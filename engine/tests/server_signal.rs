//! `shutdown_signal` resolves on SIGTERM. Its own test binary: the signal goes to the whole
//! process.

use std::time::Duration;

use dyno_engine::server::shutdown_signal;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::test]
async fn shutdown_signal_resolves_on_sigterm() {
    // Installing a listener first makes SIGTERM harmless to the test process from here on.
    let mut term = signal(SignalKind::terminate()).expect("install a SIGTERM handler");
    let waiting = tokio::spawn(shutdown_signal());
    // Let the spawned future install its own listeners (single-threaded runtime: it runs to
    // its first await before this task resumes).
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    let status = std::process::Command::new("kill")
        .args(["-TERM", &std::process::id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    term.recv().await.expect("our own listener saw SIGTERM");
    tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("shutdown_signal resolved")
        .expect("task ran to the end");
}
