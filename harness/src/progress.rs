//! The live progress line of a load test: requests sent, completed and failed, the live
//! completion rate and the TTFT median and p99 so far. Drawn on stderr only when it is a
//! terminal, so logs and JSON on stdout stay clean.

use crate::runner::LiveStats;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// A progress display refreshing from [`LiveStats`] until dropped.
#[derive(Debug)]
pub struct Progress {
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    /// Starts a display for a run of `total` requests (unknown when `None`), labelled `label`.
    /// Must be called inside a tokio runtime.
    pub fn start(live: Arc<LiveStats>, total: Option<usize>, label: String) -> Self {
        let bar = match total {
            Some(n) => ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr()),
            None => ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
        };
        let template = if total.is_some() {
            "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg}"
        } else {
            "{prefix} [{elapsed_precise}] {pos} done {msg}"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_prefix(label);
        let shown = bar.clone();
        let started = Instant::now();
        let ticker = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                let done = live.completed.load(Ordering::Relaxed);
                let failed = live.failed.load(Ordering::Relaxed);
                let rate = (done + failed) as f64 / started.elapsed().as_secs_f64().max(1e-9);
                let ttft = live
                    .ttft_p50_p99()
                    .map(|(p50, p99)| {
                        format!("TTFT p50 {:.1} ms p99 {:.1} ms", p50 * 1e3, p99 * 1e3)
                    })
                    .unwrap_or_default();
                shown.set_position((done + failed) as u64);
                shown.set_message(format!("{done} ok, {failed} failed, {rate:.1} req/s {ttft}"));
            }
        });
        Self { bar, ticker: Some(ticker) }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.ticker.take() {
            t.abort();
        }
        self.bar.finish_and_clear();
    }
}
