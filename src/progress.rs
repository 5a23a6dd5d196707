//! Progress: a bar on a terminal, a log line every few seconds otherwise
//! (cron and CI logs stay readable). Every bar lives in one
//! [`MultiProgress`], and everything else written to stderr (log lines,
//! [`eprintln`]) goes through it: the bars are cleared, the line printed,
//! the bars drawn again below it, so a line never lands inside a bar and a
//! bar is never left behind, drawn twice.

use std::io::{IsTerminal, Write};
use std::sync::LazyLock;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::task::JoinHandle;
use tracing::info;

/// The bars on stderr (hidden when stderr is not a terminal).
static BARS: LazyLock<MultiProgress> =
    LazyLock::new(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));

/// Writes a line on stderr, above the bars.
pub fn eprintln(line: std::fmt::Arguments) {
    let line = format!("{line}\n");
    let _ = Stderr.write_all(line.as_bytes());
}

/// stderr for the log subscriber: each write (tracing writes an event in
/// one) is printed above the bars.
#[derive(Clone, Copy)]
pub struct Stderr;

impl Write for Stderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        BARS.suspend(|| std::io::stderr().lock().write_all(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Stderr {
    type Writer = Stderr;

    fn make_writer(&'a self) -> Self::Writer {
        Stderr
    }
}

/// A snapshot of progress: `done` of `total` `unit`, and what is going on.
pub struct Tick {
    pub phase: String,
    pub done: u64,
    pub total: u64,
    pub unit: &'static str,
}

/// Reports progress until [`Reporter::finish`].
pub fn spawn<F>(label: &'static str, enabled_bar: bool, mut read: F) -> Reporter
where
    F: FnMut() -> Tick + Send + 'static,
{
    let tty = enabled_bar && std::io::stderr().is_terminal();
    let bar = if tty {
        let b = BARS.add(ProgressBar::new(0));
        b.set_style(
            ProgressStyle::with_template(
                // The message last, cut to the terminal's width: a line
                // wider than the terminal is not drawn as it should be.
                "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} (eta {eta}) {wide_msg}",
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
                    b.set_message(format!("{}: {}", t.unit, t.phase));
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
            BARS.remove(&b);
        }
    }
}
