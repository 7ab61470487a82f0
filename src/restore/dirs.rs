//! Restore's directory steps: creating the directories top-down (step 2), sweeping stale
//! temporary files and, with `--delete`, what the snapshot does not hold, and giving the
//! directories their metadata bottom-up once everything in them is written (step 5).

use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;

use rustix::fs::FileType;

use super::plan::{self, Item, Role};
use super::{fsops, Overwrite, Run, TEMP_PREFIX};

impl Run<'_> {
    /// Step 2: directories, top-down.
    pub(super) fn directories(&self) {
        for (i, it) in self.items.iter().enumerate() {
            if it.role != Role::Dir {
                continue;
            }
            self.progress.entry_seen();
            if it.rel.is_empty() {
                if self.root.is_some() {
                    self.absent[i].store(false, Ordering::Relaxed);
                    self.clean[i].store(self.root_clean, Ordering::Relaxed);
                    self.sweep(i, self.root());
                }
                continue;
            }
            let (blocked, absent) = self.parent_state(it);
            if blocked {
                self.blocked[i].store(true, Ordering::Relaxed);
                continue;
            }
            if absent {
                self.absent[i].store(true, Ordering::Relaxed);
                self.action(&it.rel, "create");
                self.stats.lock().unwrap().dirs += 1;
                continue;
            }
            if let Err(e) = self.directory(i, it) {
                self.blocked[i].store(true, Ordering::Relaxed);
                self.problem(&it.rel, format!("Restoring directory: {e}"));
            }
        }
    }

    fn directory(&self, i: usize, it: &Item) -> std::io::Result<()> {
        let dir = fsops::open_beneath(self.root.as_ref().unwrap(), it.dir())?;
        let d = dir.as_fd();
        let name = it.name();
        let existing = if self.in_fresh_dir(it) {
            None
        } else {
            fsops::stat_at(d, name)?
        };
        let replace = match existing {
            Some(st) if fsops::file_type(&st) == FileType::Directory => {
                let sub = fsops::open_dir_at(d, name)?;
                self.sweep(i, sub.as_fd());
                return Ok(());
            }
            Some(st) if self.opts.overwrite == Overwrite::Never => {
                self.conflict(it, &st);
                self.blocked[i].store(true, Ordering::Relaxed);
                return Ok(());
            }
            Some(_) => true,
            None => false,
        };
        self.action(&it.rel, if replace { "replace" } else { "create" });
        if self.opts.dry_run {
            self.absent[i].store(true, Ordering::Relaxed);
        } else {
            if replace {
                fsops::remove_all(d, name)?;
            }
            fsops::mkdir_at(d, name, 0o700)?;
            self.created[i].store(true, Ordering::Relaxed);
            self.clean[i].store(self.in_clean_dir(it), Ordering::Relaxed);
        }
        let mut s = self.stats.lock().unwrap();
        s.dirs += 1;
        s.replaced += replace as u64;
        Ok(())
    }

    /// In an existing directory: removes temporary files an interrupted restore left, and with
    /// `--delete` (and the directory wholly restored) what the snapshot does not hold there.
    fn sweep(&self, i: usize, dir: BorrowedFd<'_>) {
        let it = &self.items[i];
        let names = match fsops::read_names(dir) {
            Ok(n) => n,
            Err(e) => return self.problem(&it.rel, format!("Listing directory: {e}")),
        };
        let mut wanted: Option<std::collections::HashSet<&[u8]>> = None;
        for name in names {
            let path = crate::layers::join(&it.rel, &name);
            if name.starts_with(TEMP_PREFIX) {
                if !self.opts.dry_run {
                    match fsops::remove_all(dir, &name) {
                        Ok(_) => self.stats.lock().unwrap().stale_temp_removed += 1,
                        Err(e) => {
                            self.problem(&path, format!("Removing stale temporary file: {e}"))
                        }
                    }
                }
                continue;
            }
            if !(self.opts.delete && it.whole) {
                continue;
            }
            let wanted =
                wanted.get_or_insert_with(|| it.children.iter().map(|c| c.as_slice()).collect());
            if wanted.contains(name.as_slice()) || self.excludes.is_match(plan::lossy_path(&path)) {
                continue;
            }
            self.action(&path, "delete");
            if self.opts.dry_run {
                self.stats.lock().unwrap().deleted += 1;
                continue;
            }
            match fsops::remove_all(dir, &name) {
                Ok(n) => self.stats.lock().unwrap().deleted += n,
                Err(e) => self.problem(&path, format!("Deleting (--delete): {e}")),
            }
        }
    }

    /// Step 5: directories' metadata, deepest first: every restored directory, except
    /// pre-existing ones that are only on the way to a requested path (the target itself
    /// included, when paths were requested).
    pub(super) fn directory_metadata(&self) {
        if self.opts.dry_run {
            return;
        }
        for (i, it) in self.items.iter().enumerate().rev() {
            if it.role != Role::Dir || self.blocked[i].load(Ordering::Relaxed) {
                continue;
            }
            if it.ancestor && !self.created[i].load(Ordering::Relaxed) {
                continue;
            }
            let r = fsops::open_beneath(self.root.as_ref().unwrap(), &it.rel).and_then(|fd| {
                let f = std::fs::File::from(fd);
                self.meta_fd(f.as_fd(), &it.entry, Some(&f))
            });
            match r {
                Ok(()) => {
                    if !self.is_root {
                        self.stats.lock().unwrap().owners_skipped += 1;
                    }
                }
                Err(e) => self.problem(&it.rel, format!("Setting directory metadata: {e}")),
            }
        }
    }
}
