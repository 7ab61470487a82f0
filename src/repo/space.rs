//! Free space kept for the index. sled 0.34 does not survive a full disk: once its log writer has
//! met "No space left on device", operations that need a new page fail, an iterator yields that
//! error forever (a backup's cleanup looped on it with memory growing without bound), and a
//! process killed in that state can leave a log that later reads as corrupt. So strata never lets
//! sled meet a full disk: every write it
//! starts (pack records, index batches, the snapshot commit, removals) first takes its size from
//! a [`Space`], which asks the file system (`statvfs`) and refuses with [`Error::NoSpace`] when
//! the write would cut into a reserve. What the reserve covers:
//!
//! - sled's own lag: log buffers written after the call that filled them returned, and the
//!   segment tail its next open zeroes ([`SLED_SEGMENT`] each);
//! - the pack writer's buffer, written after the record was counted;
//! - the index's recovery snapshot, rewritten at every open, which grows with the index (one
//!   sixteenth of the database file).
//!
//! Reads never take space, and nothing here stops sled from opening a repository whose disk is
//! already full: it opens in the reserve that strata left.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// sled's log segment (its default `segment_size`).
pub const SLED_SEGMENT: u64 = 512 << 10;
/// The pack writer's buffer (see `DirBackend::create`).
const PACK_BUFFER: u64 = 1 << 20;
/// The fixed part of the reserve: four log segments in flight or zeroed, and the pack buffer.
const RESERVE_BASE: u64 = 4 * SLED_SEGMENT + PACK_BUFFER;
/// Bytes counted between two `statvfs` calls; the reserve check adds it as a margin, so that
/// writes between two checks never reach the reserve.
const CHECK_STEP: u64 = 256 << 10;
/// How many bytes of sled's log one byte of key or value costs at most, as estimated for a batch
/// (log fragments, then the page rewritten whole): measured 4–5× on backups of small files.
pub const INDEX_AMPLIFICATION: u64 = 6;
/// Bytes of sled's log per batch item beyond its key and value.
const PER_ITEM: u64 = 32;

/// The free-space guard of one open repository (see the module documentation).
pub struct Space {
    dir: PathBuf,
    reserve: u64,
    /// Bytes taken since the last `statvfs`; starts at [`CHECK_STEP`] so the first write asks.
    unchecked: AtomicU64,
}

impl Space {
    /// The guard of the repository at `repo` whose index database is `index_db` (the file; its
    /// size sets part of the reserve).
    pub fn new(repo: &Path, index_db: &Path) -> Space {
        let db_len = std::fs::metadata(index_db).map(|m| m.len()).unwrap_or(0);
        Space {
            dir: repo.to_path_buf(),
            reserve: RESERVE_BASE + db_len / 16,
            unchecked: AtomicU64::new(CHECK_STEP),
        }
    }

    /// Bytes this guard keeps free.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// Takes `bytes` for a write about to start (`what` names it in the error). Asks the file
    /// system once `CHECK_STEP` bytes have been taken since it last asked; fails, writing
    /// nothing, when what is free would not cover them, the margin and the reserve.
    pub fn take(&self, what: &'static str, bytes: u64) -> Result<()> {
        let pending = self.unchecked.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if pending < CHECK_STEP {
            return Ok(());
        }
        self.unchecked.store(0, Ordering::Relaxed);
        self.ensure(what, pending + CHECK_STEP)
            // After a refusal, every write asks again.
            .inspect_err(|_| self.unchecked.store(CHECK_STEP, Ordering::Relaxed))
    }

    /// Asks the file system now whether `bytes` more (and the reserve) are free.
    pub fn ensure(&self, what: &'static str, bytes: u64) -> Result<()> {
        let free = crate::fsio::free_bytes(&self.dir)?;
        let needed = self.reserve + bytes;
        if free < needed {
            log::debug!("Refusing {what}: {free} bytes free, {needed} needed");
            return Err(Error::NoSpace {
                path: self.dir.clone(),
                what,
                free,
                needed,
            });
        }
        Ok(())
    }
}

/// Estimated log bytes of a sled batch of `items` keys and values totalling `bytes`.
pub fn index_cost(items: usize, bytes: usize) -> u64 {
    (bytes as u64 + items as u64 * PER_ITEM) * INDEX_AMPLIFICATION
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space(reserve: u64) -> (tempfile::TempDir, Space) {
        let t = tempfile::tempdir().unwrap();
        let s = Space {
            dir: t.path().to_path_buf(),
            reserve,
            unchecked: AtomicU64::new(CHECK_STEP),
        };
        (t, s)
    }

    #[test]
    fn a_write_that_would_cut_into_the_reserve_is_refused_before_it_starts() {
        let (_t, s) = space(u64::MAX / 4);
        match s.take("writing a pack", 10) {
            Err(Error::NoSpace { what, needed, .. }) => {
                assert_eq!(what, "writing a pack");
                assert!(needed >= u64::MAX / 4);
            }
            other => panic!("not refused: {other:?}"),
        }
        // Refused once, every later write asks again (none slips through between checks).
        assert!(s.take("writing the index", 1).is_err());
        let msg = s.take("writing the index", 1).unwrap_err().to_string();
        assert!(msg.contains("No space left on device"), "{msg}");
    }

    #[test]
    fn writes_ask_the_file_system_once_per_step() {
        let (_t, s) = space(0);
        s.take("writing a pack", 1).unwrap();
        assert_eq!(
            s.unchecked.load(Ordering::Relaxed),
            0,
            "the first write asks"
        );
        s.take("writing a pack", CHECK_STEP / 2).unwrap();
        assert_eq!(s.unchecked.load(Ordering::Relaxed), CHECK_STEP / 2);
        s.take("writing a pack", CHECK_STEP / 2).unwrap();
        assert_eq!(
            s.unchecked.load(Ordering::Relaxed),
            0,
            "a step taken: asked"
        );
    }
}
