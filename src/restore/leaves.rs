//! Restore's leaf steps: files, symlinks, FIFOs and devices on a thread pool (step 3), then
//! hard links (step 4). Each is compared with what is already in the target, written under a
//! temporary name in its destination directory and renamed into place.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use rustix::fs::{FileType, Stat};

use super::data::{self, WriteFailure};
use super::plan::{Item, Role};
use super::{fsops, lossy, Overwrite, Run, BIG_FILE, RUN_LEAVES};
use crate::entry::Kind;
use crate::repo::keys::Location;

/// A leaf in the order files are written: sort key (class, pack, offset), item index, and where
/// its first chunk is (see [`Run::leaves`]).
type Ordered = ((u8, u64, u64), usize, Option<Location>);

/// One worker's open directory. Leaves are handed out in pack order, which mostly follows the
/// directories they were backed up from, so consecutive leaves usually share a directory and one
/// `openat2` serves them all. The descriptor was opened by [`fsops::open_beneath`], like every
/// other, and restore never replaces a planned directory while leaves are written, so it stays
/// the directory at that path.
#[derive(Default)]
struct DirCache {
    rel: Vec<u8>,
    fd: Option<OwnedFd>,
}

impl DirCache {
    /// The directory `rel` (target-relative), opened beneath `root` unless it already is.
    fn open(&mut self, root: &OwnedFd, rel: &[u8]) -> std::io::Result<BorrowedFd<'_>> {
        if self.fd.is_none() || self.rel != rel {
            self.fd = None;
            self.fd = Some(fsops::open_beneath(root, rel)?);
            self.rel.clear();
            self.rel.extend_from_slice(rel);
        }
        Ok(self.fd.as_ref().unwrap().as_fd())
    }
}

/// What is at a path in the target compared with the snapshot.
enum State {
    Missing,
    Same(Stat),
    Differs(Stat),
    /// A hard link whose path still holds the inode its group's first path had before this run
    /// replaced it (see [`Run::shared`]): identical content, re-linked under every mode.
    Relink(Stat),
}

impl Run<'_> {
    /// Step 3: files, symlinks, FIFOs, devices, on a thread pool. Big files go first, so none
    /// runs alone at the end; the others in the order their first chunk sits in the packs, so
    /// a cold repository is read sequentially rather than at random, and files sharing a first
    /// chunk are handed out together while it is cached.
    pub(super) fn leaves(&self) {
        let t0 = Instant::now();
        // Each leaf with where its first chunk is, kept so it is not looked up again to read it.
        let mut keyed: Vec<Ordered> = (0..self.items.len())
            .filter(|&i| self.items[i].role == Role::Leaf)
            .map(|i| {
                let e = &self.items[i].entry;
                let loc = match e.chunks.first() {
                    Some(c) if e.kind == Kind::File => self.chunks.location(&c.id),
                    _ => None,
                };
                let key = match loc {
                    _ if e.kind == Kind::File && e.size >= BIG_FILE => (0, u64::MAX - e.size, 0),
                    Some(l) => (1, l.pack.0, l.offset),
                    None => (2, 0, 0),
                };
                (key, i, loc)
            })
            .collect();
        keyed.sort_unstable_by_key(|&(key, i, _)| (key, i));
        // Handed out in runs of consecutive leaves of one directory (a big file alone), so
        // workers mostly write into different directories: two creating names in the same one
        // wait for each other on its lock. Capped, so one huge directory is still shared.
        let mut runs: Vec<std::ops::Range<usize>> = Vec::new();
        for (k, &((class, _, _), i, _)) in keyed.iter().enumerate() {
            let parent = self.items[i].parent;
            match runs.last_mut() {
                Some(r)
                    if class != 0
                        && r.len() < RUN_LEAVES
                        && self.items[keyed[r.start].1].parent == parent
                        && keyed[r.start].0 .0 != 0 =>
                {
                    r.end = k + 1
                }
                _ => runs.push(k..k + 1),
            }
        }
        let order: Vec<(usize, Option<Location>)> =
            keyed.into_iter().map(|(_, i, loc)| (i, loc)).collect();
        log::debug!(
            "Ordered {} leaves in {} runs in {:?}",
            order.len(),
            runs.len(),
            t0.elapsed()
        );
        let threads = match self.opts.threads {
            0 => std::thread::available_parallelism()
                .map(|n| n.get() * 2)
                .unwrap_or(4)
                .max(4),
            n => n,
        };
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads.min(runs.len().max(1)) {
                s.spawn(|| {
                    let mut dirs = DirCache::default();
                    loop {
                        let k = next.fetch_add(1, Ordering::Relaxed);
                        let Some(run) = runs.get(k) else { break };
                        for &(i, first) in &order[run.clone()] {
                            self.leaf(i, first, &mut dirs);
                        }
                    }
                });
            }
        });
    }

    /// Step 4: hard links to each group's first path.
    pub(super) fn links(&self) {
        let mut dirs = DirCache::default();
        for i in 0..self.items.len() {
            if let Role::Link(_) = self.items[i].role {
                self.leaf(i, None, &mut dirs);
            }
        }
    }

    /// Restores leaf `i`; `first` is where its first chunk is, when already looked up.
    fn leaf(&self, i: usize, first: Option<Location>, dirs: &mut DirCache) {
        let it = &self.items[i];
        self.progress.entry_seen();
        let r = self.leaf_inner(i, it, first, dirs);
        if it.role == Role::Leaf && it.entry.kind == Kind::File {
            self.chunks.release(&it.entry);
            self.progress.file_restored(it.entry.size);
        }
        if let Err(msg) = r {
            self.problem(&it.rel, msg);
        }
    }

    fn leaf_inner(
        &self,
        i: usize,
        it: &Item,
        first: Option<Location>,
        dirs: &mut DirCache,
    ) -> Result<(), String> {
        let (blocked, absent) = self.parent_state(it);
        if blocked {
            return Ok(());
        }
        let e = &it.entry;
        if e.kind == Kind::Socket
            || (!self.is_root && matches!(e.kind, Kind::CharDev | Kind::BlockDev))
        {
            log::info!("{}: {} not restored", lossy(&it.rel), e.kind.name());
            self.action(&it.rel, "skip");
            self.stats.lock().unwrap().specials_skipped += 1;
            return Ok(());
        }
        if let Role::Link(l) = it.role {
            if !self.opts.dry_run && !self.done[l].load(Ordering::Relaxed) {
                return Err(format!(
                    "Not restored: hard link to {}, which was not restored",
                    lossy(&self.items[l].rel)
                ));
            }
        }
        let dir = if absent {
            None
        } else {
            Some(
                dirs.open(self.root.as_ref().unwrap(), it.dir())
                    .map_err(|e| format!("Opening its directory: {e}"))?,
            )
        };
        let name = it.name();
        let state = match dir {
            None => State::Missing,
            Some(_) if self.in_fresh_dir(it) => State::Missing,
            Some(d) => self
                .state(d, name, it)
                .map_err(|e| format!("Checking the existing path: {e}"))?,
        };
        let existing = match state {
            // An identical path stays when its metadata can be set through a descriptor that
            // proves it has one name (a regular file, see `refresh`), or is already right.
            // Otherwise — other names, perhaps outside the target, or a symlink or node whose
            // metadata could only be set by name — it is replaced under every mode (its content
            // is the snapshot's, nothing is lost), which leaves the old inode untouched.
            State::Same(st)
                if self.opts.overwrite != Overwrite::Always
                    && (refreshable(it, &st)
                        || self
                            .meta_matches(dir.unwrap(), name, it, &st)
                            .map_err(|e| format!("Checking the existing path: {e}"))?) =>
            {
                self.action(&it.rel, "unchanged");
                if !self.opts.dry_run {
                    if refreshable(it, &st) {
                        self.refresh(dir.unwrap(), name, &it.entry)
                            .map_err(|e| format!("Setting metadata: {e}"))?;
                    }
                    self.done[i].store(true, Ordering::Relaxed);
                }
                self.counts.unchanged.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            State::Differs(st) if self.opts.overwrite == Overwrite::Never => {
                self.conflict(it, &st);
                return Ok(());
            }
            State::Missing => None,
            State::Same(st) => {
                if st.st_nlink > 1 && it.role == Role::Leaf {
                    self.shared[i].store(st.st_ino, Ordering::Relaxed);
                }
                Some(st)
            }
            State::Differs(st) | State::Relink(st) => Some(st),
        };
        let verb = match (&it.role, existing.is_some()) {
            (_, true) => "replace",
            (Role::Link(_), false) => "link",
            _ => "create",
        };
        self.action(&it.rel, verb);
        if self.opts.dry_run {
            self.count(it, existing.is_some(), 0, false);
            return Ok(());
        }
        let d = dir.unwrap();
        let tmp = self.temp_name();
        let r = self
            .write_new(d, &tmp, it, first)
            .and_then(|(bytes, verified)| {
                if existing.is_some_and(|st| fsops::file_type(&st) == FileType::Directory) {
                    fsops::remove_all(d, name)
                        .map_err(|e| format!("Removing the directory in the way: {e}"))?;
                }
                fsops::rename_at(d, &tmp, name).map_err(|e| format!("Renaming into place: {e}"))?;
                Ok((bytes, verified))
            });
        match r {
            Ok((bytes, verified)) => {
                self.done[i].store(true, Ordering::Relaxed);
                self.count(it, existing.is_some(), bytes, verified);
                Ok(())
            }
            Err(msg) => {
                let _ = fsops::unlink_at(d, &tmp, false);
                Err(msg)
            }
        }
    }

    fn count(&self, it: &Item, replaced: bool, bytes: u64, verified: bool) {
        let c = &self.counts;
        let add = |n: &AtomicU64, v: u64| {
            if v > 0 {
                n.fetch_add(v, Ordering::Relaxed);
            }
        };
        add(
            match (it.role, it.entry.kind) {
                (Role::Link(_), _) => &c.hardlinks,
                (_, Kind::File) => &c.files,
                (_, Kind::Symlink) => &c.symlinks,
                _ => &c.specials,
            },
            1,
        );
        add(&c.replaced, replaced as u64);
        add(&c.written_bytes, bytes);
        add(&c.verified_files, verified as u64);
        add(
            &c.owners_skipped,
            (!self.is_root && it.role == Role::Leaf) as u64,
        );
    }

    /// Compares what is at `name` with the snapshot entry (see docs/SEMANTICS.md).
    fn state(&self, dir: BorrowedFd<'_>, name: &[u8], it: &Item) -> std::io::Result<State> {
        let Some(st) = fsops::stat_at(dir, name)? else {
            return Ok(State::Missing);
        };
        let e = &it.entry;
        let fmt = fsops::file_type(&st);
        let same = match (it.role, e.kind) {
            (Role::Link(l), _) => {
                let leader = &self.items[l];
                fsops::open_beneath(self.root.as_ref().unwrap(), leader.dir())
                    .and_then(|ld| fsops::stat_at(ld.as_fd(), leader.name()))
                    .ok()
                    .flatten()
                    .is_some_and(|ls| ls.st_ino == st.st_ino && ls.st_dev == st.st_dev)
            }
            (_, Kind::File) => {
                fmt == FileType::RegularFile
                    && st.st_size as u64 == e.size
                    && fsops::mtime_ns(&st) == e.mtime_ns
                    && data::matches(&fsops::open_file(dir, name)?, e, self.chunks.repo())?
            }
            (_, Kind::Symlink) => {
                fmt == FileType::Symlink && fsops::readlink_at(dir, name)? == e.target
            }
            (_, Kind::Fifo) => fmt == FileType::Fifo,
            (_, Kind::CharDev) => fmt == FileType::CharacterDevice && st.st_rdev == e.rdev,
            (_, Kind::BlockDev) => fmt == FileType::BlockDevice && st.st_rdev == e.rdev,
            _ => false,
        };
        // Checked first: in a dry run the group's first path was not really replaced, so the
        // link still shares its inode, and would be re-linked.
        let relink = match it.role {
            Role::Link(l) => self.shared[l].load(Ordering::Relaxed) == st.st_ino,
            _ => false,
        };
        Ok(if relink {
            State::Relink(st)
        } else if same {
            State::Same(st)
        } else {
            State::Differs(st)
        })
    }

    /// Creates the object for `it` at the temporary name `tmp` in `dir`, with its metadata.
    /// Returns the content bytes written and whether `--verify` checked them.
    fn write_new(
        &self,
        dir: BorrowedFd<'_>,
        tmp: &[u8],
        it: &Item,
        first: Option<Location>,
    ) -> Result<(u64, bool), String> {
        let e = &it.entry;
        let io = |what: &str| {
            let what = what.to_string();
            move |err: std::io::Error| format!("{what}: {err}")
        };
        match (it.role, e.kind) {
            (Role::Link(l), _) => {
                let leader = &self.items[l];
                let ld = fsops::open_beneath(self.root.as_ref().unwrap(), leader.dir())
                    .map_err(io("Opening the hard link's directory"))?;
                fsops::link_at(ld.as_fd(), leader.name(), dir, tmp)
                    .map_err(io("Making the hard link"))?;
                Ok((0, false))
            }
            (_, Kind::File) => {
                // A new file in a clean directory whose owner is already right is created with
                // its permission bits: only set-id/sticky bits, or bits the umask took, need a
                // chmod, and it can have no xattrs yet. Any other file is created 0600 and gets
                // chown, chmod and exactly the snapshot's xattrs (`meta_fd`).
                let fast = self.in_clean_dir(it) && (!self.is_root || (e.uid, e.gid) == self.owner);
                let mode = if fast { e.mode & 0o777 } else { 0o600 };
                let f =
                    fsops::create_file(dir, tmp, mode).map_err(io("Creating a temporary file"))?;
                let bytes =
                    data::write_content(&f, e, first, &self.chunks).map_err(|w| match w {
                        WriteFailure::Repo(err) => err.to_string(),
                        WriteFailure::Io(err) => format!("Writing: {err}"),
                    })?;
                let verified = if self.opts.verify {
                    if !data::matches(&f, e, self.chunks.repo())
                        .map_err(io("Reading back (--verify)"))?
                    {
                        return Err(
                            "Verification failed: the written file differs from the snapshot"
                                .into(),
                        );
                    }
                    true
                } else {
                    false
                };
                if fast {
                    self.meta_new_fd(&f, e).map_err(io("Setting metadata"))?;
                } else {
                    self.meta_fd(f.as_fd(), e, Some(&f))
                        .map_err(io("Setting metadata"))?;
                }
                if self.opts.fsync {
                    f.sync_all().map_err(io("fsync"))?;
                }
                Ok((bytes, verified))
            }
            (_, Kind::Symlink) => {
                fsops::symlink_at(&e.target, dir, tmp).map_err(io("Creating the symlink"))?;
                if !e.xattrs.is_empty() {
                    log::info!(
                        "{}: extended attributes of a symlink not restored",
                        lossy(&it.rel)
                    );
                }
                self.meta_at(dir, tmp, e, false)
                    .map_err(io("Setting metadata"))?;
                Ok((0, false))
            }
            (_, kind) => {
                let fmt = match kind {
                    Kind::Fifo => FileType::Fifo,
                    Kind::CharDev => FileType::CharacterDevice,
                    _ => FileType::BlockDevice,
                };
                fsops::mknod_at(dir, tmp, fmt, e.mode & 0o777, e.rdev)
                    .map_err(io("Creating the node"))?;
                self.meta_at(dir, tmp, e, true)
                    .map_err(io("Setting metadata"))?;
                Ok((0, false))
            }
        }
    }
}

/// Whether an identical path `it` (stat `st`) may get its metadata in place: a regular file with
/// one name (see [`Run::refresh`]); anything else is left as it is or replaced.
fn refreshable(it: &Item, st: &Stat) -> bool {
    it.role == Role::Leaf
        && it.entry.kind == Kind::File
        && fsops::file_type(st) == FileType::RegularFile
        && st.st_nlink <= 1
}
