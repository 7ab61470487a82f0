//! The CLI's progress display. A [`StatusLine`] counts every [`Progress`] event of one command
//! and, on a painter thread, shows them: an `indicatif` bar (files, bytes, rate, and the ETA where
//! the total is known) when stderr is a terminal; with `--progress` off a terminal, the same in a
//! plain line once a second, for logs; with `--progress=json`, one JSON object per line on
//! stderr, at most four a second, and a last one marked `done`. Nothing is drawn otherwise, so
//! pipes and logs never see a carriage return; `-q` turns every display off.
//!
//! The mode and the command's name are set once per process ([`configure`]), so that commands
//! only say what their line shows.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::progress::{Progress, ProgressHandle};

/// When to show progress (`--progress`); the variants are described in the option's help.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    // A bar when stderr is a terminal.
    Auto,
    // A bar on a terminal; elsewhere a plain line a second.
    Always,
    // No progress display.
    Never,
    // JSON lines on stderr, at most four a second, and a last one with "done": true.
    Json,
}

struct Setup {
    mode: ProgressMode,
    command: String,
}

static SETUP: OnceLock<Setup> = OnceLock::new();

/// Sets the display mode and the name of the running command, once per process.
pub fn configure(mode: ProgressMode, command: &str) {
    let _ = SETUP.set(Setup {
        mode,
        command: command.to_string(),
    });
}

fn mode() -> ProgressMode {
    SETUP.get().map_or(ProgressMode::Auto, |s| s.mode)
}

/// Whether a bar may be drawn on a terminal (for the log output to make room for it).
pub fn may_draw() -> bool {
    matches!(mode(), ProgressMode::Auto | ProgressMode::Always) && std::io::stderr().is_terminal()
}

/// The bar being drawn, if any, which log messages suspend ([`LogWriter`]).
static ACTIVE: Mutex<Option<ProgressBar>> = Mutex::new(None);

/// Writes log messages to stderr, clearing the progress bar for each and drawing it again after.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let bar = ACTIVE.lock().ok().and_then(|b| b.clone());
        match bar {
            Some(b) => b.suspend(|| std::io::stderr().write_all(buf))?,
            None => std::io::stderr().write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[derive(Default)]
struct Counts {
    entries: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
    new_bytes: AtomicU64,
    entries_total: AtomicU64,
    bytes_total: AtomicU64,
    /// A total was announced (a zero total is still a total).
    total_known: AtomicBool,
    phase: Mutex<Option<&'static str>>,
}

impl Progress for Counts {
    fn entry_seen(&self) {
        self.entries.fetch_add(1, Ordering::Relaxed);
    }
    fn file_read(&self, bytes: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    fn new_data(&self, bytes: u64) {
        self.new_bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    fn data_checked(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
    fn verify_total(&self, bytes: u64) {
        self.bytes_total.fetch_add(bytes, Ordering::Relaxed);
        self.total_known.store(true, Ordering::Relaxed);
    }
    fn phase(&self, label: &'static str) {
        if let Ok(mut p) = self.phase.lock() {
            *p = Some(label);
        }
        self.bytes.store(0, Ordering::Relaxed);
        self.bytes_total.store(0, Ordering::Relaxed);
        self.total_known.store(false, Ordering::Relaxed);
    }
    fn restore_total(&self, entries: u64, bytes: u64) {
        self.entries_total.store(entries, Ordering::Relaxed);
        self.bytes_total.store(bytes, Ordering::Relaxed);
        self.total_known.store(true, Ordering::Relaxed);
    }
    fn file_restored(&self, bytes: u64) {
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// What a display shows at one moment.
#[derive(Clone, Debug, PartialEq)]
struct Figures {
    phase: &'static str,
    entries: u64,
    entries_total: Option<u64>,
    files: u64,
    bytes: u64,
    bytes_total: Option<u64>,
    new_bytes: u64,
}

impl Counts {
    fn figures(&self, shape: Shape) -> Figures {
        let get = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let known = self.total_known.load(Ordering::Relaxed);
        let phase = self.phase.lock().ok().and_then(|p| *p);
        Figures {
            phase: phase.unwrap_or(shape.label()),
            entries: get(&self.entries),
            entries_total: (shape == Shape::Restore && known).then(|| get(&self.entries_total)),
            files: get(&self.files),
            bytes: get(&self.bytes),
            bytes_total: known.then(|| get(&self.bytes_total)),
            new_bytes: get(&self.new_bytes),
        }
    }
}

/// What a command's display shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Shape {
    /// Paths walked, files and bytes read, new data; no total.
    Backup,
    /// Bytes done out of a known total, after a label (`check`, `repair`).
    Data(&'static str),
    /// Entries and bytes restored out of the plan's totals.
    Restore,
    /// Stages, with bytes copied out of a total while packs are rewritten.
    Prune,
}

impl Shape {
    fn label(self) -> &'static str {
        match self {
            Shape::Backup => "Backing up",
            Shape::Data(label) => label,
            Shape::Restore => "Restoring",
            Shape::Prune => "Pruning",
        }
    }

    /// The text after the bar or spinner.
    fn message(self, f: &Figures, secs: f64) -> String {
        match self {
            Shape::Backup => format!(
                "{} paths, {} files, {} read ({}/s), {} new",
                f.entries,
                f.files,
                HumanBytes(f.bytes),
                HumanBytes((f.bytes as f64 / secs) as u64),
                HumanBytes(f.new_bytes),
            ),
            Shape::Restore => match f.entries_total {
                Some(t) => format!("{}/{t} entries", f.entries),
                None => format!("{} entries", f.entries),
            },
            Shape::Data(_) | Shape::Prune => String::new(),
        }
    }
}

/// One progress update of `--progress=json`: a stable interface, documented in README.md.
#[derive(Serialize)]
struct ProgressJson<'a> {
    /// The command (`backup`, `restore`, `check`, `repair`, `prune`).
    command: &'a str,
    /// What it is doing, in lower case (`backing up`, `verifying`, `rewriting packs`, …).
    phase: String,
    elapsed_ms: u64,
    /// Paths walked (backup) or entries restored.
    entries: u64,
    entries_total: Option<u64>,
    /// Files read (backup) or restored.
    files: u64,
    /// Bytes read, verified, copied or restored.
    bytes: u64,
    bytes_total: Option<u64>,
    /// New data stored (backup).
    new_bytes: u64,
    /// `bytes` over the elapsed time.
    bytes_per_second: u64,
    /// Seconds left at that rate, where the total is known.
    eta_seconds: Option<u64>,
    /// The last update: the command's work is over.
    done: bool,
}

impl ProgressJson<'_> {
    fn new<'a>(command: &'a str, f: &Figures, elapsed: Duration, done: bool) -> ProgressJson<'a> {
        let secs = elapsed.as_secs_f64().max(0.001);
        let rate = (f.bytes as f64 / secs) as u64;
        ProgressJson {
            command,
            phase: f.phase.to_lowercase(),
            elapsed_ms: elapsed.as_millis() as u64,
            entries: f.entries,
            entries_total: f.entries_total,
            files: f.files,
            bytes: f.bytes,
            bytes_total: f.bytes_total,
            new_bytes: f.new_bytes,
            bytes_per_second: rate,
            eta_seconds: f
                .bytes_total
                .filter(|_| rate > 0)
                .map(|t| t.saturating_sub(f.bytes) / rate),
            done,
        }
    }
}

/// Shows progress until dropped.
pub struct StatusLine {
    counts: Arc<Counts>,
    stop: Arc<AtomicBool>,
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

    /// A restore's progress: entries and bytes out of the plan's totals.
    pub fn restore() -> StatusLine {
        StatusLine::start(Shape::Restore)
    }

    /// A prune's stages, and the bytes copied while packs are rewritten.
    pub fn prune() -> StatusLine {
        StatusLine::start(Shape::Prune)
    }

    /// Starts the painter when something is to be shown; otherwise only counts.
    fn start(shape: Shape) -> StatusLine {
        let counts = Arc::new(Counts::default());
        let stop = Arc::new(AtomicBool::new(false));
        let target = match mode() {
            ProgressMode::Never => None,
            ProgressMode::Json => Some(Target::Json),
            _ if std::io::stderr().is_terminal() => Some(Target::Bar),
            ProgressMode::Always => Some(Target::Lines),
            ProgressMode::Auto => None,
        };
        let painter = target.map(|t| {
            let (c, s) = (counts.clone(), stop.clone());
            std::thread::spawn(move || paint(&c, &s, shape, t))
        });
        StatusLine {
            counts,
            stop,
            painter,
        }
    }

    /// The receiver to hand to the library.
    pub fn progress(&self) -> ProgressHandle {
        ProgressHandle(self.counts.clone())
    }
}

impl Drop for StatusLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(p) = self.painter.take() {
            p.thread().unpark();
            let _ = p.join();
        }
    }
}

/// Where the painter shows progress.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    /// An indicatif bar on the terminal, cleared at the end.
    Bar,
    /// Plain lines, one a second and a last one, for a log (`--progress` off a terminal).
    Lines,
    /// JSON lines.
    Json,
}

/// How often the painter looks at the counts, and how often it writes a JSON or plain line at
/// most (when something changed; the last line is always written).
const TICK: Duration = Duration::from_millis(100);
const JSON_EVERY: Duration = Duration::from_millis(250);
const LINE_EVERY: Duration = Duration::from_secs(1);

/// The painter thread: shows the counts every [`TICK`] until `stop`, then once more, finally.
fn paint(counts: &Counts, stop: &AtomicBool, shape: Shape, target: Target) {
    let start = Instant::now();
    let command = SETUP.get().map_or("", |s| s.command.as_str());
    let mut bar = (target == Target::Bar).then(Bar::new);
    let every = if target == Target::Json {
        JSON_EVERY
    } else {
        LINE_EVERY
    };
    let mut last: Option<(Figures, Instant)> = None;
    loop {
        let done = stop.load(Ordering::Relaxed);
        let f = counts.figures(shape);
        let elapsed = start.elapsed();
        if let Some(b) = &mut bar {
            b.show(shape, &f, elapsed);
        } else {
            let due = last
                .as_ref()
                .is_none_or(|(prev, at)| *prev != f && at.elapsed() >= every);
            // The last update always goes out as JSON (it says `done`); as a plain line only
            // when it says something new.
            let last_needed = done
                && (target == Target::Json || last.as_ref().is_none_or(|(prev, _)| *prev != f));
            if due || last_needed {
                let line = match target {
                    Target::Json => {
                        super::json::line(&ProgressJson::new(command, &f, elapsed, done))
                    }
                    _ => plain_line(shape, &f, elapsed),
                };
                let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
                last = Some((f, Instant::now()));
            }
        }
        if done {
            break;
        }
        std::thread::park_timeout(TICK);
    }
    if let Some(b) = bar {
        b.finish();
    }
}

/// One line of progress without terminal control: what the bar shows, in words.
fn plain_line(shape: Shape, f: &Figures, elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64().max(0.001);
    let rate = (f.bytes as f64 / secs) as u64;
    let mut line = format!("{} [{}]", f.phase, clock(elapsed));
    match f.bytes_total.filter(|&t| t > 0) {
        Some(t) => {
            let pct = 100.0 * f.bytes as f64 / t as f64;
            line.push_str(&format!(
                " {}/{} ({pct:.0}%, {}/s",
                HumanBytes(f.bytes),
                HumanBytes(t),
                HumanBytes(rate)
            ));
            if let Some(left) = t.saturating_sub(f.bytes).checked_div(rate) {
                line.push_str(&format!(", {} left", clock(Duration::from_secs(left))));
            }
            line.push(')');
        }
        None if shape != Shape::Backup => line.push_str(&format!(" {}", HumanBytes(f.bytes))),
        None => {}
    }
    let msg = shape.message(f, secs);
    if !msg.is_empty() {
        line.push(' ');
        line.push_str(&msg);
    }
    line
}

/// `hh:mm:ss`.
fn clock(d: Duration) -> String {
    let s = d.as_secs();
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// An indicatif bar that switches between a spinner (no total) and a bar (a total), and starts
/// again when a new stage begins.
struct Bar {
    bar: ProgressBar,
    /// The stage shown and whether as a bar.
    shown: Option<(&'static str, bool)>,
    message: String,
}

const SPINNER: &str = "{spinner} {prefix} [{elapsed_precise}] {msg}";
const BAR: &str = "{prefix} [{elapsed_precise}] [{wide_bar}] {bytes}/{total_bytes} \
                   ({bytes_per_sec}, {eta} left) {msg}";

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("=> ")
        .tick_chars("|/-\\ ")
}

impl Bar {
    fn new() -> Bar {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
        if let Ok(mut a) = ACTIVE.lock() {
            *a = Some(bar.clone());
        }
        Bar {
            bar,
            shown: None,
            message: String::new(),
        }
    }

    /// Updates the bar; each setter may draw, so only what changed is set.
    fn show(&mut self, shape: Shape, f: &Figures, elapsed: Duration) {
        let total = f.bytes_total.filter(|&t| t > 0);
        if let Some(t) = total.filter(|&t| self.bar.length() != Some(t)) {
            self.bar.set_length(t);
        }
        let now = (f.phase, total.is_some());
        if self.shown != Some(now) {
            if self.shown.is_some_and(|(p, _)| p != f.phase) {
                self.bar.reset();
            }
            self.bar.set_style(style(if now.1 { BAR } else { SPINNER }));
            self.bar.set_prefix(f.phase);
            self.shown = Some(now);
        }
        let message = shape.message(f, elapsed.as_secs_f64().max(0.001));
        if message != self.message {
            self.bar.set_message(message.clone());
            self.message = message;
        }
        self.bar.set_position(f.bytes);
        self.bar.tick();
    }

    fn finish(self) {
        if let Ok(mut a) = ACTIVE.lock() {
            *a = None;
        }
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_show_what_was_counted() {
        let c = Counts::default();
        c.entry_seen();
        c.file_read(2048);
        c.new_data(1024);
        let f = c.figures(Shape::Backup);
        assert_eq!(
            (f.entries, f.files, f.bytes, f.new_bytes),
            (1, 1, 2048, 1024)
        );
        assert_eq!(f.bytes_total, None);
        assert_eq!(
            Shape::Backup.message(&f, 1.0),
            "1 paths, 1 files, 2.00 KiB read (2.00 KiB/s), 1.00 KiB new"
        );
    }

    #[test]
    fn a_new_phase_starts_its_counts_again() {
        let c = Counts::default();
        c.phase("Rewriting packs");
        c.verify_total(4096);
        c.data_checked(1024);
        let f = c.figures(Shape::Prune);
        assert_eq!(
            (f.phase, f.bytes, f.bytes_total),
            ("Rewriting packs", 1024, Some(4096))
        );
        c.phase("Deleting packs");
        let f = c.figures(Shape::Prune);
        assert_eq!(
            (f.phase, f.bytes, f.bytes_total),
            ("Deleting packs", 0, None)
        );
    }

    #[test]
    fn json_has_rate_and_eta_where_the_total_is_known() {
        let c = Counts::default();
        c.restore_total(10, 4000);
        c.entry_seen();
        c.file_restored(1000);
        let f = c.figures(Shape::Restore);
        let j = ProgressJson::new("restore", &f, Duration::from_secs(2), false);
        let v: serde_json::Value = serde_json::from_str(&super::super::json::line(&j)).unwrap();
        assert_eq!(v["phase"], "restoring");
        assert_eq!(v["entries_total"], 10);
        assert_eq!(v["bytes_per_second"], 500);
        assert_eq!(v["eta_seconds"], 6);
        assert_eq!(v["done"], false);
        assert_eq!(Shape::Restore.message(&f, 1.0), "1/10 entries");
    }
}
