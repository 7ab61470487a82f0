//! A one-line progress display on stderr for long commands, drawn only when stderr is a terminal
//! (so logs and pipes never see carriage returns).

use std::io::IsTerminal;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::progress::Progress;

use super::output::human_size;

#[derive(Default)]
struct Counts {
    entries: AtomicU64,
    files: AtomicU64,
    read_bytes: AtomicU64,
    new_bytes: AtomicU64,
    done: AtomicBool,
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
}

/// Draws backup progress until dropped.
pub struct StatusLine {
    counts: Arc<Counts>,
    painter: Option<std::thread::JoinHandle<()>>,
}

impl StatusLine {
    /// Starts drawing if stderr is a terminal; otherwise only counts.
    pub fn start() -> StatusLine {
        let counts = Arc::new(Counts::default());
        let tty = std::io::stderr().is_terminal();
        let painter = tty.then(|| {
            let c = counts.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                while !c.done.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(250));
                    let secs = start.elapsed().as_secs_f64().max(0.001);
                    let read = c.read_bytes.load(Ordering::Relaxed);
                    let _ = write!(
                        std::io::stderr(),
                        "\r\x1b[K{} paths, {} files read, {} ({}/s), {} new",
                        c.entries.load(Ordering::Relaxed),
                        c.files.load(Ordering::Relaxed),
                        human_size(read),
                        human_size((read as f64 / secs) as u64),
                        human_size(c.new_bytes.load(Ordering::Relaxed)),
                    );
                }
                let _ = write!(std::io::stderr(), "\r\x1b[K");
            })
        });
        StatusLine { counts, painter }
    }

    /// The receiver to hand to the library.
    pub fn progress(&self) -> crate::progress::ProgressHandle {
        crate::progress::ProgressHandle(self.counts.clone())
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.counts.done.store(true, Ordering::Relaxed);
        if let Some(p) = self.painter.take() {
            let _ = p.join();
        }
    }
}
