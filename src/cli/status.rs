//! The one progress display of the CLI: a line on stderr, redrawn four times a second, drawn only
//! when stderr is a terminal (so logs and pipes never see carriage returns). It counts every
//! [`Progress`] event; what the line shows depends on the command.

use std::io::IsTerminal;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::progress::{Progress, ProgressHandle};

use super::output::human_size;

#[derive(Default)]
struct Counts {
    entries: AtomicU64,
    files: AtomicU64,
    read_bytes: AtomicU64,
    new_bytes: AtomicU64,
    checked_bytes: AtomicU64,
    total_bytes: AtomicU64,
    stop: AtomicBool,
}

impl Progress for Counts {
    fn entry_seen(&self) {
        self.entries.fetch_add(1, Ordering::Relaxed);
    }
    fn file_read(&self, bytes: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.read_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    fn new_data(&self, bytes: u64) {
        self.new_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    fn data_checked(&self, bytes: u64) {
        self.checked_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    fn verify_total(&self, bytes: u64) {
        self.total_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// What the line shows.
#[derive(Clone, Copy)]
enum Shape {
    /// Paths walked, files and bytes read, new data.
    Backup,
    /// Bytes done out of a known total, after a label (`check`, `repair`).
    Data(&'static str),
}

impl Shape {
    fn render(self, c: &Counts, secs: f64) -> String {
        let rate = |bytes: u64| human_size((bytes as f64 / secs) as u64);
        match self {
            Shape::Backup => {
                let read = c.read_bytes.load(Ordering::Relaxed);
                format!(
                    "{} paths, {} files read, {} ({}/s), {} new",
                    c.entries.load(Ordering::Relaxed),
                    c.files.load(Ordering::Relaxed),
                    human_size(read),
                    rate(read),
                    human_size(c.new_bytes.load(Ordering::Relaxed)),
                )
            }
            Shape::Data(label) => {
                let done = c.checked_bytes.load(Ordering::Relaxed);
                let total = c.total_bytes.load(Ordering::Relaxed);
                let pct = if total > 0 {
                    100.0 * done as f64 / total as f64
                } else {
                    0.0
                };
                format!(
                    "{label}: {} of {} ({pct:.0}%, {}/s)",
                    human_size(done),
                    human_size(total),
                    rate(done),
                )
            }
        }
    }
}

/// Draws progress until dropped.
pub struct StatusLine {
    counts: Arc<Counts>,
    painter: Option<std::thread::JoinHandle<()>>,
}

impl StatusLine {
    /// A backup's progress: paths walked, files and bytes read, new data.
    pub fn backup() -> StatusLine {
        StatusLine::start(Shape::Backup)
    }

    /// Bytes verified or scanned out of the total announced, after `label` (`check`, `repair`).
    pub fn data(label: &'static str) -> StatusLine {
        StatusLine::start(Shape::Data(label))
    }

    /// Starts drawing if stderr is a terminal; otherwise only counts.
    fn start(shape: Shape) -> StatusLine {
        let counts = Arc::new(Counts::default());
        let tty = std::io::stderr().is_terminal();
        let painter = tty.then(|| {
            let c = counts.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                while !c.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let secs = start.elapsed().as_secs_f64().max(0.001);
                    let _ = write!(std::io::stderr(), "\r\x1b[K{}", shape.render(&c, secs));
                }
                let _ = write!(std::io::stderr(), "\r\x1b[K");
            })
        });
        StatusLine { counts, painter }
    }

    /// The receiver to hand to the library.
    pub fn progress(&self) -> ProgressHandle {
        ProgressHandle(self.counts.clone())
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.counts.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.painter.take() {
            let _ = p.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_show_what_was_counted() {
        let c = Counts::default();
        c.entry_seen();
        c.file_read(2048);
        c.new_data(1024);
        c.verify_total(4096);
        c.data_checked(1024);
        assert_eq!(
            Shape::Backup.render(&c, 1.0),
            "1 paths, 1 files read, 2.0 KiB (2.0 KiB/s), 1.0 KiB new"
        );
        assert_eq!(
            Shape::Data("Verifying").render(&c, 2.0),
            "Verifying: 1.0 KiB of 4.0 KiB (25%, 512 B/s)"
        );
    }
}
