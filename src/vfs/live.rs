//! A live view: the copy of the index it reads, replaced by newer copies as the repository
//! changes ([`Vfs::refresh`]); the kernel's references to its inodes ([`Vfs::hold`],
//! [`Vfs::forget`]), which free the inode table as the kernel lets go and decide what is leased;
//! and what the kernel must be told when the listings change ([`Stale`]).
//!
//! **Leases** (see `crate::lease` for the protocol). A snapshot is in use while the kernel holds
//! any of its inodes (an open file, a working directory, a cached entry). Before the first of
//! them is handed out the keeper writes the lease (every layer of every in-use snapshot's chain),
//! then the view checks that no `forget` or `prune` started since its copy was taken; if one did,
//! it takes a new copy first (waiting for the remover to finish) and refuses a snapshot that is
//! gone. A lease that shrinks is rewritten lazily ([`Vfs::tick`]): a lease held a little too
//! long only delays reclaiming space.

use std::sync::atomic::{AtomicBool, Ordering};

use super::*;

/// What keeps a live view current and its snapshots leased: the mount's reader of the
/// repository (`crate::mount`, over `crate::lease`).
pub trait Keeper: Send + Sync {
    /// Records `ids` (every layer the view reads for the snapshots the kernel holds) where
    /// `forget` and `prune` look, replacing what was recorded.
    fn lease(&self, ids: &BTreeSet<SnapshotId>) -> crate::Result<()>;
    /// Whether the index was committed to since copy `copy` was taken.
    fn committed_since(&self, copy: u64) -> bool;
    /// Whether a `forget` or `prune` started since copy `copy` was taken.
    fn removing_since(&self, copy: u64) -> bool;
    /// A new copy of the index: its number and the repository over it. Waits while another
    /// process holds the repository.
    fn fresh(&self) -> crate::Result<(u64, Arc<Repo>)>;
}

/// What the kernel may remember that is no longer so, after the view moved to a newer copy:
/// the FUSE adapter turns it into invalidation notices.
#[derive(Debug, Default)]
pub struct Stale {
    /// `(directory inode, name)`: entries that no longer lead where they did, deepest first.
    pub entries: Vec<(u64, Vec<u8>)>,
    /// Inodes whose attributes (size, time) may have changed: the top-level directories.
    pub attrs: Vec<u64>,
    /// Symlinks whose target changed (`latest`, `sources/<source>/latest`).
    pub links: Vec<u64>,
}

impl Stale {
    /// Whether there is nothing to tell.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.attrs.is_empty() && self.links.is_empty()
    }

    pub(super) fn append(&mut self, mut other: Stale) {
        self.entries.append(&mut other.entries);
        self.attrs.append(&mut other.attrs);
        self.links.append(&mut other.links);
    }
}

/// The live view's bookkeeping.
#[derive(Default)]
pub(super) struct LiveState {
    /// Per snapshot, how many of its inodes the kernel holds.
    in_use: Mutex<HashMap<SnapshotId, u64>>,
    /// Serializes computing and writing the lease.
    leasing: Mutex<()>,
    /// A snapshot left use since the lease was written.
    lease_shrank: AtomicBool,
    /// Serializes taking new copies.
    refreshing: Mutex<()>,
    /// Notices not yet given to the kernel.
    pub(super) stale: Mutex<Stale>,
    /// When the entries of forgotten snapshots were last invalidated again.
    reinvalidated: Mutex<Option<std::time::Instant>>,
    /// Whether the kernel may hold anything of a forgotten snapshot: only then do attributes
    /// need a look at the snapshot list ([`Vfs::attr_of`] marks such content fleeting).
    pub(super) forgotten_held: AtomicBool,
}

/// How often the kernel is asked again to drop what it holds of forgotten snapshots.
const REINVALIDATE: std::time::Duration = std::time::Duration::from_secs(2);

/// How often a caller retries a lookup whose inode was freed between finding and holding it.
const HOLD_TRIES: usize = 8;

impl Vfs {
    /// Brings the view up to date. With a keeper: when the index changed since the copy the view
    /// reads, takes a new copy (waiting while another process holds the repository) and moves to
    /// it. Without: reads the snapshot list of the handle it was opened over again. Inodes the
    /// kernel holds keep their meaning; new snapshots become visible, forgotten ones leave the
    /// listings; what the kernel must forget is queued for [`Vfs::take_stale`].
    pub fn refresh(&self) -> crate::Result<()> {
        let Some(keeper) = &self.keeper else {
            let gen = self.gen();
            return self.install(gen.copy, gen.repo.clone());
        };
        let _one = lock(&self.live.refreshing);
        let copy = self.gen().copy;
        if !keeper.committed_since(copy) && !keeper.removing_since(copy) {
            return Ok(());
        }
        let (copy, repo) = keeper.fresh()?;
        self.install(copy, repo)
    }

    /// Whether the index may have changed since the copy the view reads (always `false` without
    /// a keeper).
    pub fn outdated(&self) -> bool {
        self.keeper.as_ref().is_some_and(|k| {
            let copy = self.gen().copy;
            k.committed_since(copy) || k.removing_since(copy)
        })
    }

    /// What the kernel should be told since the last call.
    pub fn take_stale(&self) -> Stale {
        std::mem::take(&mut *lock(&self.live.stale))
    }

    /// Moves the view to `repo` (copy number `copy`): a new snapshot list; per-snapshot state
    /// carried over where still valid; `changes/` nodes of rewritten layers unhooked; what the
    /// kernel must forget queued.
    pub(super) fn install(&self, copy: u64, repo: Arc<Repo>) -> crate::Result<()> {
        let all = repo.snapshots()?;
        let filtered = all
            .into_iter()
            .filter(|s| self.opts.sources.is_empty() || self.opts.sources.contains(&s.source))
            .collect();
        let new = Arc::new(Gen {
            copy,
            repo,
            snaps: Arc::new(SnapList::build(filtered)),
        });
        let old = std::mem::replace(
            &mut *self.gen.write().unwrap_or_else(|e| e.into_inner()),
            new.clone(),
        );
        if !Arc::ptr_eq(&old.repo, &new.repo) {
            self.cache.set_repo(new.repo.clone());
        }
        let in_use: HashSet<SnapshotId> = lock(&self.live.in_use).keys().copied().collect();
        let (removed, rewritten) = self.carry_states(&old.snaps, &new, &in_use);
        let added = new.snaps.list.len() + removed.len() != old.snaps.list.len();
        if removed.is_empty() && rewritten.is_empty() && !added {
            return Ok(());
        }
        // A history lists versions of every snapshot of its source, not only the newest.
        self.histories.clear();
        let mut stale = Stale::default();
        for id in &rewritten {
            stale.append(self.unhook_changes(&old.snaps, &new.snaps, id));
        }
        let held: HashSet<SnapshotId> = removed
            .iter()
            .filter(|id| in_use.contains(id))
            .copied()
            .collect();
        stale.append(self.held_entries(&held));
        if !held.is_empty() {
            self.live.forgotten_held.store(true, Ordering::Relaxed);
        }
        for id in &removed {
            stale.append(self.links_to(&old.snaps, id));
        }
        self.free_unheld(&removed);
        stale.append(self.gone_groups(&old.snaps, &new.snaps));
        stale.attrs.extend([
            ROOT_INO,
            SNAPSHOTS_INO,
            SOURCES_INO,
            TAGS_INO,
            KINDS_INO,
            CHANGES_INO,
            VERSIONS_INO,
        ]);
        stale.links.push(LATEST_INO);
        {
            let t = self.inodes.read().unwrap_or_else(|e| e.into_inner());
            for src in new.snaps.sources.keys().chain(old.snaps.sources.keys()) {
                if let Some(ino) = t.get(&Key::Virtual(VKey::SourceLatest(src.clone()))) {
                    stale.links.push(ino);
                }
                if let Some(ino) = t.get(&Key::Virtual(VKey::Source(src.clone()))) {
                    stale.attrs.push(ino);
                }
            }
        }
        if old.copy != new.copy {
            log::info!(
                "Now reading copy {} of the index: {} snapshots ({} gone, {} rewritten)",
                new.copy,
                new.snaps.list.len(),
                removed.len(),
                rewritten.len()
            );
        }
        lock(&self.live.stale).append(stale);
        Ok(())
    }

    /// Per-snapshot state after a move from `old` to `new`: a snapshot still there starts afresh
    /// in the new copy, keeping what cannot have changed (its root entry always, its own layer's
    /// lists when its record is the same); one gone but in use keeps its state and the copy it
    /// reads; the rest is dropped. Returns the snapshots gone and those whose record changed.
    fn carry_states(
        &self,
        old: &SnapList,
        new: &Arc<Gen>,
        in_use: &HashSet<SnapshotId>,
    ) -> (Vec<SnapshotId>, Vec<SnapshotId>) {
        let mut states = lock(&self.states);
        let mut carried = HashMap::with_capacity(states.len());
        for (id, st) in states.drain() {
            match new.snaps.by_id.get(&id) {
                Some(&i) => {
                    let same = old
                        .by_id
                        .get(&id)
                        .is_some_and(|&o| old.list[o].snap == new.snaps.list[i].snap);
                    let fresh = SnapState::new(new.clone());
                    if let Some(r) = st.root.get() {
                        let _ = fresh.root.set(r.clone());
                    }
                    if same {
                        if let Some(s) = st.synth.get() {
                            let _ = fresh.synth.set(s.clone());
                        }
                        if let Some(d) = st.deleted.get() {
                            let _ = fresh.deleted.set(d.clone());
                        }
                    }
                    carried.insert(id, Arc::new(fresh));
                }
                None if in_use.contains(&id) => {
                    carried.insert(id, st);
                }
                None => {}
            }
        }
        *states = carried;
        drop(states);
        let removed = old
            .list
            .iter()
            .filter(|s| !new.snaps.by_id.contains_key(&s.snap.id))
            .map(|s| s.snap.id)
            .collect();
        let rewritten = new
            .snaps
            .list
            .iter()
            .filter(|s| {
                old.by_id
                    .get(&s.snap.id)
                    .is_some_and(|&o| old.list[o].snap != s.snap)
            })
            .map(|s| s.snap.id)
            .collect();
        (removed, rewritten)
    }

    /// A snapshot's record changed (`forget` merged a layer into it, `consolidate` made it a
    /// full): its `changes/` tree is another one now. The nodes the kernel holds keep what they
    /// showed; lookups make new ones. Its `kinds/` link moves when its kind did.
    fn unhook_changes(&self, old: &SnapList, new: &SnapList, id: &SnapshotId) -> Stale {
        let mut stale = Stale::default();
        {
            let mut t = self.inodes.write().unwrap_or_else(|e| e.into_inner());
            let hooked: Vec<(u64, Key)> = t
                .nodes
                .iter()
                .filter(|(_, s)| s.node.in_changes() && s.node.snap() == Some(*id))
                .map(|(&ino, s)| (ino, s.node.key()))
                .collect();
            for (ino, key) in hooked {
                t.unkey(ino, &key);
            }
        }
        if let Some(&i) = new.by_id.get(id) {
            stale
                .entries
                .push((CHANGES_INO, new.list[i].name.as_bytes().to_vec()));
        }
        if let (Some(&o), Some(&i)) = (old.by_id.get(id), new.by_id.get(id)) {
            let (was, is) = (&old.list[o], &new.list[i]);
            if was.snap.kind != is.snap.kind {
                let t = self.inodes.read().unwrap_or_else(|e| e.into_inner());
                if let Some(k) = t.get(&Key::Virtual(VKey::Kind(was.snap.kind.name()))) {
                    stale.entries.push((k, was.name.as_bytes().to_vec()));
                }
            }
        }
        stale
    }

    /// Entries leading into forgotten snapshots `ids` that the kernel holds inodes of, deepest
    /// first, so that each is dropped as soon as its last user lets go (and `forget` then frees
    /// the inode, and the lease shrinks).
    fn held_entries(&self, ids: &HashSet<SnapshotId>) -> Stale {
        if ids.is_empty() {
            return Stale::default();
        }
        let t = self.inodes.read().unwrap_or_else(|e| e.into_inner());
        let mut held: Vec<(usize, u64, Vec<u8>)> = Vec::new();
        for slot in t.nodes.values() {
            if slot.refs.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let (parent, name, depth) = match &*slot.node {
                Node::Content {
                    snap, path, parent, ..
                } if ids.contains(snap) && !path.is_empty() => {
                    let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
                    let depth = path.iter().filter(|&&b| b == b'/').count() + 1;
                    (*parent, name.to_vec(), depth)
                }
                Node::Deleted {
                    snap, nul, parent, ..
                } if ids.contains(snap) => {
                    let name: &[u8] = if *nul { b".deleted0" } else { b".deleted" };
                    (*parent, name.to_vec(), 1)
                }
                _ => continue,
            };
            if matches!(t.node(parent).map(|n| &**n), Some(Node::Versions { .. })) {
                continue; // a version's name there is its time, not its path's last component
            }
            held.push((depth, parent, name));
        }
        held.sort_by_key(|h| std::cmp::Reverse(h.0));
        Stale {
            entries: held.into_iter().map(|(_, p, n)| (p, n)).collect(),
            ..Default::default()
        }
    }

    /// Frees the nodes of forgotten snapshots that the kernel does not hold (made by listings
    /// and lookups of the view's own): nothing leads to them any more.
    fn free_unheld(&self, removed: &[SnapshotId]) {
        if removed.is_empty() {
            return;
        }
        let gone: HashSet<&SnapshotId> = removed.iter().collect();
        let mut t = self.inodes.write().unwrap_or_else(|e| e.into_inner());
        let unheld: Vec<u64> = t
            .nodes
            .iter()
            .filter(|(_, s)| {
                s.refs.load(Ordering::Acquire) == 0
                    && s.node.snap().is_some_and(|id| gone.contains(&id))
            })
            .map(|(&ino, _)| ino)
            .collect();
        for ino in unheld {
            t.remove(ino);
        }
    }

    /// Entries naming a forgotten snapshot in the top-level lists.
    fn links_to(&self, old: &SnapList, id: &SnapshotId) -> Stale {
        let mut stale = Stale::default();
        let Some(&i) = old.by_id.get(id) else {
            return stale;
        };
        let info = &old.list[i];
        let name = info.name.as_bytes().to_vec();
        stale.entries.push((SNAPSHOTS_INO, name.clone()));
        stale.entries.push((CHANGES_INO, name.clone()));
        let t = self.inodes.read().unwrap_or_else(|e| e.into_inner());
        let mut dirs = vec![
            VKey::Source(encode_component(&info.snap.source)),
            VKey::Kind(info.snap.kind.name()),
        ];
        dirs.extend(
            info.snap
                .tags
                .iter()
                .map(|t| VKey::Tag(encode_component(t))),
        );
        for d in dirs {
            if let Some(ino) = t.get(&Key::Virtual(d)) {
                stale.entries.push((ino, name.clone()));
            }
        }
        stale
    }

    /// Sources and tags no snapshot has any more.
    fn gone_groups(&self, old: &SnapList, new: &SnapList) -> Stale {
        let mut stale = Stale::default();
        for src in old.sources.keys().filter(|s| !new.sources.contains_key(*s)) {
            stale.entries.push((SOURCES_INO, src.as_bytes().to_vec()));
            stale.entries.push((VERSIONS_INO, src.as_bytes().to_vec()));
        }
        for tag in old.tags.keys().filter(|t| !new.tags.contains_key(*t)) {
            stale.entries.push((TAGS_INO, tag.as_bytes().to_vec()));
        }
        stale
    }

    // ----- the kernel's references -----

    /// The kernel now holds one more reference to each of `inos` (a `lookup` reply, a
    /// `readdirplus` entry; call before replying). Returns per inode whether it may be handed
    /// out: `false` when it was freed since the caller got its number (look the name up again)
    /// or its snapshot turned out to be forgotten (the name is gone).
    pub fn hold(&self, inos: &[u64]) -> Vec<bool> {
        let mut ok = vec![false; inos.len()];
        let mut entered = BTreeSet::new();
        {
            let t = self.inodes.read().unwrap_or_else(|e| e.into_inner());
            for (i, ino) in inos.iter().enumerate() {
                let Some(slot) = t.nodes.get(ino) else {
                    continue;
                };
                ok[i] = true;
                if slot.age.swap(names::RECENT, Ordering::Relaxed) == names::ASKED {
                    t.asked.fetch_sub(slot.node.weight(), Ordering::Relaxed);
                }
                if slot.refs.fetch_add(1, Ordering::AcqRel) == 0 {
                    if let Some(s) = slot.node.snap() {
                        let mut u = lock(&self.live.in_use);
                        let n = u.entry(s).or_insert(0);
                        *n += 1;
                        if *n == 1 {
                            entered.insert(s);
                        }
                    }
                }
            }
        }
        if entered.is_empty() || self.keeper.is_none() {
            return ok;
        }
        let refused = self.secure(&entered);
        if !refused.is_empty() {
            for (i, ino) in inos.iter().enumerate() {
                let snap = self.node(*ino).ok().and_then(|n| n.snap());
                if ok[i] && snap.is_some_and(|s| refused.contains(&s)) {
                    ok[i] = false;
                    self.forget(*ino, 1);
                }
            }
        }
        ok
    }

    /// Snapshots just entered: leases them, then makes sure no remover missed the lease (see
    /// the module doc). Returns those that are gone.
    fn secure(&self, entered: &BTreeSet<SnapshotId>) -> HashSet<SnapshotId> {
        let Some(keeper) = &self.keeper else {
            return HashSet::new();
        };
        if let Err(e) = self.write_lease(keeper.as_ref()) {
            log::error!("Could not write the lease of this mount: {e}");
            return entered.iter().copied().collect();
        }
        if keeper.removing_since(self.gen().copy) {
            if let Err(e) = self.refresh() {
                log::error!("Could not read the repository after a forget or prune: {e}");
                return entered.iter().copied().collect();
            }
        }
        let gen = self.gen();
        entered
            .iter()
            .filter(|s| !gen.snaps.by_id.contains_key(s))
            .copied()
            .collect()
    }

    fn write_lease(&self, keeper: &dyn Keeper) -> crate::Result<()> {
        let _one = lock(&self.live.leasing);
        self.live.lease_shrank.store(false, Ordering::Relaxed);
        let in_use: Vec<SnapshotId> = lock(&self.live.in_use).keys().copied().collect();
        let mut ids = BTreeSet::new();
        // Chains share their older parts: each copy's walk stops at a layer already seen in it.
        let mut seen: HashSet<(u64, SnapshotId)> = HashSet::new();
        for id in in_use {
            self.chain_ids(&id, &mut seen, &mut ids);
        }
        keeper.lease(&ids)
    }

    /// Adds to `ids` the layers `id`'s view reads, in the copy its state reads, down its chain to
    /// the first layer `seen` in that copy. Layers without entries are left out: they hold
    /// nothing a remover could take.
    fn chain_ids(
        &self,
        id: &SnapshotId,
        seen: &mut HashSet<(u64, SnapshotId)>,
        ids: &mut BTreeSet<SnapshotId>,
    ) {
        let st = self.state(id);
        let list = &st.gen.snaps;
        let mut cur = *id;
        for _ in 0..=list.list.len() {
            if !seen.insert((st.gen.copy, cur)) {
                return;
            }
            let Some(&i) = list.by_id.get(&cur) else {
                ids.insert(cur);
                return;
            };
            let s = &list.list[i].snap;
            if s.ends_chain() || !s.layer_blobs.is_empty() {
                ids.insert(cur);
            }
            match s.parent {
                Some(p) if !s.ends_chain() => cur = p,
                _ => return,
            }
        }
    }

    /// The kernel gave back `n` references to `ino` (FUSE `forget`). At none left the inode is
    /// freed (its number is never reused), and its snapshot may leave the lease.
    pub fn forget(&self, ino: u64, n: u64) {
        let freed = {
            let t = self.inodes.read().unwrap_or_else(|e| e.into_inner());
            let Some(slot) = t.nodes.get(&ino) else {
                return;
            };
            let before = slot
                .refs
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| {
                    Some(r.saturating_sub(n))
                })
                .unwrap_or(0);
            if before == 0 || before > n {
                return;
            }
            if let Some(s) = slot.node.snap() {
                let mut u = lock(&self.live.in_use);
                if let Some(c) = u.get_mut(&s) {
                    *c -= 1;
                    if *c == 0 {
                        u.remove(&s);
                        self.live.lease_shrank.store(true, Ordering::Relaxed);
                    }
                }
            }
            // The fixed top-level inodes stay: `.strata/stats` is known by its number.
            ino > STATS_INO
        };
        if freed {
            let mut t = self.inodes.write().unwrap_or_else(|e| e.into_inner());
            if t.nodes
                .get(&ino)
                .is_some_and(|s| s.refs.load(Ordering::Acquire) == 0)
            {
                t.remove(ino);
            }
        }
    }

    /// Looks `name` up in `parent` and holds the child for the kernel ([`Vfs::hold`]): what a
    /// FUSE `lookup` replies.
    pub fn lookup_held(&self, parent: u64, name: &[u8]) -> VfsResult<Attr> {
        for _ in 0..HOLD_TRIES {
            let attr = self.lookup(parent, name)?;
            if self.hold(&[attr.ino])[0] {
                return Ok(attr);
            }
        }
        Err(VfsError::NotFound)
    }

    /// How many inodes the table holds (the fixed top-level ones included).
    pub fn inode_count(&self) -> usize {
        self.inodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .nodes
            .len()
    }

    /// Asks the kernel again, every [`REINVALIDATE`], to drop what it holds of forgotten
    /// snapshots: entries it made after the first notice (a listing or lookup that was under
    /// way, names looked up in a working directory there before the view marked them
    /// short-lived) would otherwise stay cached, hold their directory and keep the lease for as
    /// long as the kernel has memory to spare. Entries in use stay until their users let go.
    fn let_go_of_forgotten(&self, gen: &Gen, in_use: &HashSet<SnapshotId>) {
        let gone: HashSet<SnapshotId> = in_use
            .iter()
            .filter(|id| !gen.snaps.by_id.contains_key(id))
            .copied()
            .collect();
        if gone.is_empty() {
            self.live.forgotten_held.store(false, Ordering::Relaxed);
            return;
        }
        {
            let mut last = lock(&self.live.reinvalidated);
            if last.is_some_and(|t| t.elapsed() < REINVALIDATE) {
                return;
            }
            *last = Some(std::time::Instant::now());
        }
        let stale = self.held_entries(&gone);
        lock(&self.live.stale).append(stale);
    }

    /// Housekeeping between requests: rewrites a lease that shrank, and drops the state of
    /// forgotten snapshots nobody uses any more (so that the copy of the index they were read
    /// from can go).
    pub fn tick(&self) {
        self.trim_table();
        if let Some(keeper) = &self.keeper {
            if self.live.lease_shrank.load(Ordering::Relaxed) {
                if let Err(e) = self.write_lease(keeper.as_ref()) {
                    log::warn!("Could not rewrite the lease of this mount: {e}");
                }
            }
        }
        let gen = self.gen();
        let in_use: HashSet<SnapshotId> = lock(&self.live.in_use).keys().copied().collect();
        self.let_go_of_forgotten(&gen, &in_use);
        let mut states = lock(&self.states);
        states.retain(|id, _| gen.snaps.by_id.contains_key(id) || in_use.contains(id));
        // A snapshot the kernel holds nothing of keeps only its root entry: its view (the chain,
        // the directories visited) is opened again when next needed, so that a walk over every
        // snapshot does not leave every view behind.
        for (id, st) in states.iter_mut() {
            if !in_use.contains(id)
                && (st.view.get().is_some()
                    || st.synth.get().is_some()
                    || st.deleted.get().is_some())
            {
                let fresh = SnapState::new(st.gen.clone());
                if let Some(r) = st.root.get() {
                    let _ = fresh.root.set(r.clone());
                }
                *st = Arc::new(fresh);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::open::Open;
    use crate::snapshot::{BackupKind, Snapshot};

    fn snap(path: &Path, src: &Path, kind: BackupKind) -> Snapshot {
        crate::ops::writing(path, |repo| Ok(crate::testutil::snap(repo, src, kind))).unwrap()
    }

    fn forget(path: &Path, id: SnapshotId, prune: bool) {
        crate::ops::writing(path, |repo| {
            crate::forget::rewrite(repo, &[id], &[])?;
            if prune {
                crate::prune::prune(repo, &Default::default())?;
            }
            Ok(())
        })
        .unwrap();
    }

    fn leased(path: &Path) -> HashSet<SnapshotId> {
        crate::lease::leased(path).unwrap()
    }

    #[test]
    fn held_snapshots_are_leased_survive_forget_and_are_freed_when_forgotten() {
        let t = tempfile::tempdir().unwrap();
        let (path, src) = (t.path().join("repo"), t.path().join("src"));
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f"), b"old").unwrap();
        drop(Open::new(&path).create(&Default::default()).unwrap());
        let s1 = snap(&path, &src, BackupKind::Full);
        let (vfs, _reader) = crate::mount::open_live(Open::new(&path), Default::default()).unwrap();

        let snaps = vfs.lookup_held(ROOT_INO, b"snapshots").unwrap().ino;
        let name1 = vfs.snapshot_names()[0].clone();
        let root1 = vfs.lookup_held(snaps, name1.as_bytes()).unwrap().ino;
        let f1 = vfs.lookup_held(root1, b"f").unwrap().ino;
        assert_eq!(leased(&path), HashSet::from([s1.id]));

        // A new snapshot: the view moves to a new copy and queues what went stale.
        fs::write(src.join("f"), b"new!").unwrap();
        let s2 = snap(&path, &src, BackupKind::Incremental);
        assert!(vfs.outdated());
        vfs.refresh().unwrap();
        assert!(!vfs.outdated());
        assert_eq!(vfs.snapshot_count(), 2);
        let stale = vfs.take_stale();
        assert!(stale.links.contains(&LATEST_INO));
        assert!(stale.entries.is_empty(), "nothing went away: {stale:?}");

        // Forgotten while held: gone from the lists, still read, its layer and data kept.
        let before = vfs.inode_count();
        forget(&path, s1.id, true);
        vfs.refresh().unwrap();
        assert_eq!(vfs.snapshot_names().len(), 1);
        assert!(matches!(
            vfs.lookup(snaps, name1.as_bytes()),
            Err(VfsError::NotFound)
        ));
        assert_eq!(vfs.read(f1, 0, 100).unwrap(), b"old");
        let stale = vfs.take_stale();
        let first = stale
            .entries
            .iter()
            .position(|e| *e == (root1, b"f".to_vec()));
        let root = stale
            .entries
            .iter()
            .position(|e| *e == (SNAPSHOTS_INO, name1.as_bytes().to_vec()));
        assert!(first.is_some() && root.is_some(), "{stale:?}");
        assert!(first < root, "deepest first");
        let a = vfs
            .lookup(root1, b"f")
            .expect("a held directory still looks up");
        assert!(
            a.fleeting && !a.immutable,
            "the kernel keeps no new entry of it"
        );
        assert!(!vfs.getattr(snaps).unwrap().fleeting);

        // Asked again while still held, so that entries made since go too; not more often
        // than every REINVALIDATE.
        vfs.tick();
        let again = vfs.take_stale();
        assert!(again.entries.contains(&(root1, b"f".to_vec())), "{again:?}");
        vfs.tick();
        assert!(vfs.take_stale().entries.is_empty());

        // The kernel lets go: inodes freed, the lease shrinks, a prune reclaims the layer.
        vfs.forget(f1, 1);
        vfs.forget(root1, 1);
        assert!(vfs.inode_count() < before);
        assert!(matches!(vfs.getattr(f1), Err(VfsError::NotFound)));
        vfs.tick();
        assert!(leased(&path).is_empty());
        let pruned =
            crate::ops::writing(&path, |repo| crate::prune::prune(repo, &Default::default()))
                .unwrap();
        assert!(pruned.orphan_entries > 0, "{pruned:?}");

        // A snapshot forgotten before the kernel ever held it is refused, not leased.
        let s3 = snap(&path, &src, BackupKind::Incremental);
        vfs.refresh().unwrap();
        let name3 = vfs.snapshot_names().pop().unwrap();
        let root3 = vfs.lookup(snaps, name3.as_bytes()).unwrap().ino;
        forget(&path, s3.id, false);
        assert_eq!(vfs.hold(&[root3]), vec![false]);
        vfs.tick();
        assert!(!leased(&path).contains(&s3.id));
        assert_eq!(vfs.snapshot_names().len(), 1);
        let _ = s2;
    }

    #[test]
    fn a_repair_keeps_the_layers_a_mount_leases() {
        let t = tempfile::tempdir().unwrap();
        let (path, src) = (t.path().join("repo"), t.path().join("src"));
        fs::create_dir(&src).unwrap();
        let old = crate::testutil::pseudo_random(3 << 20, 9);
        fs::write(src.join("f"), &old).unwrap();
        drop(Open::new(&path).create(&Default::default()).unwrap());
        let s1 = snap(&path, &src, BackupKind::Full);
        fs::write(src.join("f"), b"new").unwrap();
        snap(&path, &src, BackupKind::Full);
        let (vfs, _reader) = crate::mount::open_live(Open::new(&path), Default::default()).unwrap();
        let snaps = vfs.lookup_held(ROOT_INO, b"snapshots").unwrap().ino;
        let name1 = vfs.snapshot_names()[0].clone();
        let root1 = vfs.lookup_held(snaps, name1.as_bytes()).unwrap().ino;
        let f1 = vfs.lookup_held(root1, b"f").unwrap().ino;

        // Forgotten while the mount reads it, then the index rebuilt and pruned: the rebuilt
        // index keeps the leased layer (without a record), so the prune keeps its chunks.
        forget(&path, s1.id, false);
        let report = crate::repair::repair(&path, &Default::default()).unwrap();
        assert_eq!(report.leased_layers, vec![s1.id]);
        assert!(
            report.after.problems.is_empty(),
            "{:?}",
            report.after.problems
        );
        crate::ops::writing(&path, |repo| crate::prune::prune(repo, &Default::default())).unwrap();
        vfs.refresh().unwrap();
        let mut got = Vec::new();
        while got.len() < old.len() {
            let part = vfs.read(f1, got.len() as u64, 1 << 20).unwrap();
            assert!(!part.is_empty());
            got.extend_from_slice(&part);
        }
        assert!(got == old, "every byte of the forgotten snapshot's file");

        // Once the mount lets go, a prune reclaims it.
        vfs.forget(f1, 1);
        vfs.forget(root1, 1);
        vfs.tick();
        let pruned =
            crate::ops::writing(&path, |repo| crate::prune::prune(repo, &Default::default()))
                .unwrap();
        assert!(pruned.orphan_entries > 0, "{pruned:?}");
    }

    #[test]
    fn a_read_after_a_prune_moved_its_chunks_is_served_from_a_new_copy() {
        let t = tempfile::tempdir().unwrap();
        let (path, src) = (t.path().join("repo"), t.path().join("src"));
        fs::create_dir(&src).unwrap();
        let a = crate::testutil::pseudo_random(3 << 20, 5);
        fs::write(src.join("a"), &a).unwrap();
        fs::write(src.join("b"), crate::testutil::pseudo_random(3 << 20, 6)).unwrap();
        drop(Open::new(&path).create(&Default::default()).unwrap());
        let s1 = snap(&path, &src, BackupKind::Full);
        fs::remove_file(src.join("b")).unwrap();
        snap(&path, &src, BackupKind::Full);
        let (vfs, _reader) = crate::mount::open_live(Open::new(&path), Default::default()).unwrap();
        let snaps = vfs.lookup_held(ROOT_INO, b"snapshots").unwrap().ino;
        let name = vfs.snapshot_names()[1].clone();
        let root = vfs.lookup_held(snaps, name.as_bytes()).unwrap().ino;
        let f = vfs.lookup_held(root, b"a").unwrap().ino;

        // `b` becomes garbage in the pack that holds `a`: the prune rewrites it and deletes it.
        crate::ops::writing(&path, |repo| {
            crate::forget::rewrite(repo, &[s1.id], &[])?;
            let opts = crate::prune::PruneOptions {
                repack_threshold: 100,
                ..Default::default()
            };
            let stats = crate::prune::prune(repo, &opts)?;
            assert!(stats.packs_rewritten > 0, "{stats:?}");
            Ok(())
        })
        .unwrap();
        assert!(
            vfs.outdated(),
            "the view still reads the copy from before the prune"
        );
        let mut got = Vec::new();
        while got.len() < a.len() {
            let part = vfs.read(f, got.len() as u64, 1 << 20).unwrap();
            assert!(!part.is_empty());
            got.extend_from_slice(&part);
        }
        assert!(got == a, "the same bytes, from the chunks' new places");
        assert!(
            !vfs.outdated(),
            "the failed read moved the view to a new copy"
        );
    }
}
