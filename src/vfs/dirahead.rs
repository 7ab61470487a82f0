//! Directory readahead: which small files to hand to the kernel before anyone asks.
//!
//! Tools that read whole trees (`diff -r`, `cp -r`, `rsync`, `grep -r`) read a directory's
//! files one after another. Kernel readahead works within a file, so for a directory of small
//! order documents every file costs one synchronous FUSE round trip, and on a VM that round trip
//! (90 µs, measured) costs far more than decoding the file. The FUSE adapter can instead push a
//! file's bytes into the kernel page cache (`FUSE_NOTIFY_STORE`), after which reading it costs no
//! round trip at all.
//!
//! This module decides *what* to push: when a small file is read from its start, the next files
//! of the same directory, in listing order, in a window that starts small (a script reading one
//! file pays for a few neighbours only) and grows by 4× each time the reader comes back for a
//! file past the window. Files already pushed are never pushed again for the same directory
//! state, and a read inside the pushed window (the kernel dropped a page, or the reader skipped)
//! does not grow it.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;

use lru::LruCache;

/// Entries of the largest directory whose files are pushed: a bigger one is not listed into
/// memory for it (its readers just ask).
pub const MAX_LISTED: usize = 65_536;
/// Largest file pushed whole: bigger files get the kernel's own readahead.
pub const MAX_FILE: u64 = 1 << 20;
/// Files in the first window.
const FIRST_WINDOW: usize = 8;
/// Largest window, in files.
const MAX_WINDOW: usize = 1024;
/// Byte budget of a window: about 128 KiB per file, at most 32 MiB.
const BYTES_PER_FILE: u64 = 128 << 10;
const MAX_BYTES: u64 = 32 << 20;
/// Directories whose state is remembered; beyond this the least recently read one is dropped
/// (cheap to rebuild).
const MAX_DIRS: NonZeroUsize = NonZeroUsize::new(256).expect("nonzero");

/// The regular files of one directory, in listing order: (inode, size).
pub type Files = Arc<Vec<(u64, u64)>>;

struct DirState {
    files: Files,
    /// Position of each file in `files`: a huge flat directory must not cost a scan per read.
    index: HashMap<u64, usize>,
    /// Index one past the last file pushed.
    pushed_end: usize,
    /// Files in the last window (0: none yet).
    window: usize,
}

/// Per-directory readahead state.
pub struct DirAhead {
    dirs: LruCache<u64, DirState>,
}

impl Default for DirAhead {
    fn default() -> DirAhead {
        DirAhead {
            dirs: LruCache::new(MAX_DIRS),
        }
    }
}

impl DirAhead {
    /// Whether `parent` has state (its file list need not be built again).
    pub fn knows(&self, parent: u64) -> bool {
        self.dirs.contains(&parent)
    }

    /// Records `files` as the listing of `parent`.
    pub fn insert(&mut self, parent: u64, files: Files) {
        let index = files
            .iter()
            .enumerate()
            .map(|(i, &(f, _))| (f, i))
            .collect();
        self.dirs.put(
            parent,
            DirState {
                files,
                index,
                pushed_end: 0,
                window: 0,
            },
        );
    }

    /// The reader asked for file `ino` of `parent` from its start: the files to push next
    /// (possibly none). `parent` must have been [`insert`](Self::insert)ed.
    pub fn on_read(&mut self, parent: u64, ino: u64) -> Vec<(u64, u64)> {
        let Some(st) = self.dirs.get_mut(&parent) else {
            return Vec::new();
        };
        let Some(&i) = st.index.get(&ino) else {
            return Vec::new();
        };
        if i < st.pushed_end {
            // Inside the pushed window: the reader is not past what we gave it.
            return Vec::new();
        }
        let window = match st.window {
            0 => FIRST_WINDOW,
            w => (w * 4).min(MAX_WINDOW),
        };
        let budget = (window as u64 * BYTES_PER_FILE).min(MAX_BYTES);
        let mut out = Vec::new();
        let mut bytes = 0u64;
        let mut end = i + 1;
        for &(f, size) in &st.files[i + 1..] {
            if out.len() >= window {
                break;
            }
            if size == 0 || size > MAX_FILE {
                end += 1;
                continue;
            }
            if bytes + size > budget {
                break;
            }
            end += 1;
            bytes += size;
            out.push((f, size));
        }
        st.pushed_end = end;
        st.window = window;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(n: u64, size: u64) -> Files {
        Arc::new((1..=n).map(|i| (100 + i, size)).collect())
    }

    #[test]
    fn window_starts_small_and_grows_when_the_reader_passes_it() {
        let mut d = DirAhead::default();
        d.insert(1, dir(100, 1000));
        let w1 = d.on_read(1, 101);
        assert_eq!(
            w1.iter().map(|x| x.0).collect::<Vec<_>>(),
            (102..110).collect::<Vec<_>>()
        );
        // Reads inside the window (the kernel had no page) push nothing more.
        assert!(d.on_read(1, 105).is_empty());
        // The next file after the window: a 4x larger window after it.
        let w2 = d.on_read(1, 110);
        assert_eq!(w2.first().map(|x| x.0), Some(111));
        assert_eq!(w2.len(), 32);
        let w3 = d.on_read(1, 143);
        assert_eq!(w3.len(), 57, "clipped at the end of the directory");
        assert!(d.on_read(1, 200).is_empty());
    }

    #[test]
    fn skips_empty_and_large_files_and_respects_the_byte_budget() {
        let mut d = DirAhead::default();
        let files = vec![
            (1, 10),
            (2, 0),
            (3, MAX_FILE + 1),
            (4, 500 << 10),
            (5, 600 << 10),
            (6, 10),
        ];
        d.insert(9, Arc::new(files));
        // First window: 8 files, 1 MiB budget: 4 fits, 5 would exceed it.
        assert_eq!(d.on_read(9, 1), vec![(4, 500 << 10)]);
        // Unknown directory or file: nothing.
        assert!(d.on_read(8, 1).is_empty());
        assert!(d.on_read(9, 77).is_empty());
    }

    #[test]
    fn a_full_table_drops_the_least_recently_read_directory_only() {
        let mut d = DirAhead::default();
        for p in 0..MAX_DIRS.get() as u64 {
            d.insert(p, dir(2, 10));
        }
        // Directory 0 is read again, so 1 is now the oldest.
        assert!(!d.on_read(0, 101).is_empty());
        d.insert(999, dir(2, 10));
        assert!(d.knows(0) && d.knows(2) && d.knows(999));
        assert!(!d.knows(1));
    }
}
