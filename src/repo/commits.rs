//! The commit marker: how an index that lost the end of its log is told from an older one.
//! The database counts its flushes (tree `commits`, see [`super::keys::TREE_COMMITS`]) and the
//! file `index/commits` repeats the count after each completed flush; a database that has flushed
//! fewer commits than the file recorded for the same instance lost writes it had made durable
//! (sled alone would read it as an older state).

use std::fs;
use std::path::{Path, PathBuf};

use super::keys;
use super::store::MetaStore;
use super::INDEX_DIR;
use crate::error::{Error, Result};

/// The commit marker file inside the index directory.
pub(super) const COMMITS_FILE: &str = "commits";

/// The commit marker of an open database.
pub(super) struct Commits {
    tree: sled::Tree,
    instance: Option<[u8; 16]>,
    count: u64,
    /// Where the marker file goes; `None` for a database that is not (or not yet) the
    /// repository's index (see `Repo::open_with_db`).
    marker: Option<PathBuf>,
}

impl Commits {
    /// Reads this database's commit count and compares it with the marker file in `path`'s index
    /// directory: a database that has flushed fewer commits than the marker recorded for the same
    /// instance has lost the end of its log, and is reported damaged rather than read as an older
    /// state. A missing or unreadable marker, or one of another instance (a rebuilt index), proves
    /// nothing and is ignored. `own_index`: `tree` is `path`'s index, so its flushes update the
    /// marker.
    pub(super) fn check(path: &Path, tree: sled::Tree, own_index: bool) -> Result<Commits> {
        let instance: Option<[u8; 16]> = tree
            .get(keys::COMMITS_INSTANCE)?
            .and_then(|v| v.as_ref().try_into().ok());
        let count = tree
            .get(keys::COMMITS_COUNT)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        let marker = path.join(INDEX_DIR).join(COMMITS_FILE);
        if let (Some(inst), Ok(text)) = (instance, fs::read_to_string(&marker)) {
            let mut it = text.split_whitespace();
            let (m_inst, m_count) = (it.next(), it.next().and_then(|n| n.parse::<u64>().ok()));
            if m_inst == Some(hex16(&inst).as_str()) {
                if let Some(m) = m_count.filter(|&m| m > count) {
                    return Err(Error::IndexDamaged {
                        path: path.to_path_buf(),
                        detail: format!(
                            "it has {count} of the {m} commits flushed to it: the end of its log is lost"
                        ),
                    });
                }
            }
        }
        Ok(Commits {
            tree,
            instance,
            count,
            marker: own_index.then_some(marker),
        })
    }

    /// Flushes `store`, counting the commit in the database and then in the marker file, so the
    /// file never counts a commit the database has not made durable.
    pub(super) fn flush(&mut self, store: &dyn MetaStore) -> Result<()> {
        let Some(marker) = self.marker.clone() else {
            return store.flush();
        };
        let instance = match self.instance {
            Some(i) => i,
            None => {
                let i = new_instance();
                self.tree.insert(keys::COMMITS_INSTANCE, &i)?;
                self.instance = Some(i);
                i
            }
        };
        self.tree
            .insert(keys::COMMITS_COUNT, &(self.count + 1).to_be_bytes())?;
        store.flush()?;
        self.count += 1;
        // A marker that is not written only weakens the next open's check.
        let text = format!("{} {}\n", hex16(&instance), self.count);
        let tmp = marker.with_extension("tmp");
        if let Err(e) = fs::write(&tmp, text).and_then(|_| fs::rename(&tmp, &marker)) {
            log::debug!(
                "Could not write the commit marker {}: {e}",
                marker.display()
            );
        }
        Ok(())
    }
}

/// Counts a change made to the database `db` of the repository at `path` outside a handle (a
/// repository in a bucket replaying commits from other machines), as [`Commits::flush`] would:
/// `db` must be flushed by the caller before the marker matters. Readers watching the marker
/// (a mount) take it as a commit.
pub(crate) fn count_external(path: &Path, db: &sled::Db) -> Result<()> {
    let tree = db.open_tree(keys::TREE_COMMITS)?;
    let c = Commits::check(path, tree, true)?;
    let instance = match c.instance {
        Some(i) => i,
        None => {
            let i = new_instance();
            c.tree.insert(keys::COMMITS_INSTANCE, &i)?;
            i
        }
    };
    c.tree
        .insert(keys::COMMITS_COUNT, &(c.count + 1).to_be_bytes())?;
    db.flush()?;
    let marker = path.join(INDEX_DIR).join(COMMITS_FILE);
    let text = format!("{} {}\n", hex16(&instance), c.count + 1);
    let tmp = marker.with_extension("tmp");
    if let Err(e) = fs::write(&tmp, text).and_then(|_| fs::rename(&tmp, &marker)) {
        log::debug!(
            "Could not write the commit marker {}: {e}",
            marker.display()
        );
    }
    Ok(())
}

/// 16 bytes that differ between databases: a hash of the time, the process and a counter.
pub(super) fn new_instance() -> [u8; 16] {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    h.update(&crate::time::now_ns().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(
        &N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_le_bytes(),
    );
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize().as_bytes()[..16]);
    out
}

fn hex16(b: &[u8; 16]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
