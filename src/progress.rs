//! Progress reporting. The library counts what it does through this trait; the CLI draws a
//! progress bar or streams JSON lines, tests count calls. Implementations must be cheap: they are
//! called once per file.

use std::sync::Arc;

/// Receives progress events from long-running commands. Every method has a no-op default.
pub trait Progress: Send + Sync {
    /// The walker examined one path (file, directory, link, ...).
    fn entry_seen(&self) {}
    /// A file's content was read and chunked.
    fn file_read(&self, _bytes: u64) {}
    /// New chunk data was handed to the pack writer (plaintext bytes).
    fn new_data(&self, _bytes: u64) {}
    /// `check`/`repair` finished reading this many bytes of pack data (verified records or
    /// scanned packs), or `prune` copied them, towards a total announced by
    /// [`Progress::verify_total`].
    fn data_checked(&self, _bytes: u64) {}
    /// The total bytes `check`/`repair` are about to read (or `prune` to copy), so a display can
    /// show a fraction.
    fn verify_total(&self, _bytes: u64) {}
    /// A command of several stages (`prune`) began the one named; counts towards a total start
    /// again from zero.
    fn phase(&self, _label: &'static str) {}
    /// A restore is about to write this many entries, with this many bytes of file content.
    fn restore_total(&self, _entries: u64, _bytes: u64) {}
    /// A restore finished one regular file of this size (written, found identical, or failed).
    fn file_restored(&self, _bytes: u64) {}
}

/// Reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}

/// A shareable progress receiver, defaulting to [`NoProgress`]; lives in options structs.
#[derive(Clone)]
pub struct ProgressHandle(pub Arc<dyn Progress>);

impl Default for ProgressHandle {
    fn default() -> Self {
        ProgressHandle(Arc::new(NoProgress))
    }
}

impl std::fmt::Debug for ProgressHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHandle")
    }
}
