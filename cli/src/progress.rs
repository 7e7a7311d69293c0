//! The live progress bar: drawn on stderr only when it is a terminal.

use std::io::IsTerminal;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ferry_engine::Progress;
use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct ProgressView {
    bar: Option<ProgressBar>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ProgressView {
    pub fn start(progress: Arc<Progress>) -> Self {
        if !std::io::stderr().is_terminal() {
            return ProgressView {
                bar: None,
                task: None,
            };
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} files {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        let b = bar.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let started = std::time::Instant::now();
            loop {
                tick.tick().await;
                let t = progress.totals();
                let done = t.copied + t.skipped + t.failed + t.resumed;
                b.set_length(t.listed.max(done));
                b.set_position(done);
                let rate = t.copied_bytes as f64 / started.elapsed().as_secs_f64().max(0.001);
                let listing = if progress.listing_done.load(Ordering::Relaxed) {
                    ""
                } else {
                    " (listing...)"
                };
                b.set_message(format!(
                    "{} copied, {} skipped, {} failed, {} at {}/s{listing}",
                    t.copied,
                    t.skipped,
                    t.failed,
                    HumanBytes(t.copied_bytes),
                    HumanBytes(rate as u64)
                ));
            }
        });
        ProgressView {
            bar: Some(bar),
            task: Some(task),
        }
    }

    pub fn finish(self) {
        if let Some(t) = self.task {
            t.abort();
        }
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
