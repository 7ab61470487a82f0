//! Human and JSON renderings of command results. JSON field names are a stable interface,
//! documented in README.md.

use crate::entry::Entry;
use crate::history;
use crate::Error;

/// Binary-prefixed human size, e.g. `1.5 GiB`.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// An error writing standard output, named as such.
pub(super) fn stdout_err(e: std::io::Error) -> Error {
    Error::Io {
        context: "Writing",
        path: "standard output".into(),
        source: e,
    }
}

/// True for a closed standard output, which is not an error.
pub(super) fn is_broken_pipe(e: &Error) -> bool {
    matches!(e, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::BrokenPipe)
}

/// The first 12 hex digits of a file's content hash, `-` for other entries.
pub(super) fn short_hash(e: &Entry) -> String {
    history::content_hash(e).map_or_else(|| "-".into(), |h| h[..12].to_string())
}
