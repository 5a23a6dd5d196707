//! Progress: a bar on a terminal, a log line every few seconds otherwise
//! (cron and CI logs stay readable).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tracing::info;

/// A snapshot of progress: (phase, done, total, unit).
pub struct Tick {
    pub phase: String,
    pub done: u64,
    pub total: u64,
    pub unit: &'static str,
}

/// Reports progress until the returned handle is aborted.
pub fn spawn<F>(label: &'static str, enabled_bar: bool, mut read: F) -> Reporter
where
    F: FnMut() -> Tick + Send + 'static,
{
    let tty = enabled_bar && std::io::stderr().is_terminal();
    let bar = if tty {
        let b = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        b.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} {msg} (eta {eta})",
            )
            .expect("template"),
        );
        b.set_prefix(label);
        Some(b)
    } else {
        None
    };
    let bar2 = bar.clone();
    let handle = tokio::spawn(async move {
        let mut last_log = std::time::Instant::now();
        loop {
            tokio::time::sleep(Duration::from_millis(if tty { 200 } else { 1000 })).await;
            let t = read();
            match &bar2 {
                Some(b) => {
                    b.set_length(t.total.max(t.done));
                    b.set_position(t.done);
                    b.set_message(format!("{} {}", t.unit, t.phase));
                }
                None => {
                    if last_log.elapsed() >= Duration::from_secs(10) {
                        last_log = std::time::Instant::now();
                        info!(
                            "{label}: {} - {} of ~{} {}",
                            t.phase, t.done, t.total, t.unit
                        );
                    }
                }
            }
        }
    });
    Reporter { handle, bar }
}

/// A running progress reporter.
pub struct Reporter {
    handle: JoinHandle<()>,
    bar: Option<ProgressBar>,
}

impl Reporter {
    /// Stops reporting and clears the bar.
    pub fn finish(self) {
        self.handle.abort();
        if let Some(b) = self.bar {
            b.finish_and_clear();
        }
    }
}
