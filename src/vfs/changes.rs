//! The `changes/` tree's own pieces: a layer's own entries, the directories it shows only to
//! reach deeper changes, and its `.deleted` lists.

use super::*;

/// Directories of a layer that exist in `changes/` only to reach deeper changed entries.
pub(super) type Synth = HashMap<Vec<u8>, BTreeSet<Vec<u8>>>;

/// `.deleted` and `.deleted0` contents.
pub(super) type DeletedLists = (Arc<Vec<u8>>, Arc<Vec<u8>>);

impl Vfs {
    /// An entry of the snapshot's own layer (whiteouts count as absent).
    pub(super) fn own_entry(
        &self,
        snap: &SnapshotId,
        dir: &[u8],
        name: &[u8],
    ) -> VfsResult<Option<Entry>> {
        let err = || self.content_path(snap, true, &join(dir, name));
        let d = LayerChanges::of(&self.repo_of(snap), snap)
            .at(dir, name)
            .map_err(repo_err(err))?;
        Ok(d.and_then(Delta::entry))
    }

    pub(super) fn synth(&self, snap: &SnapshotId) -> VfsResult<Arc<Synth>> {
        let st = self.state(snap);
        if let Some(s) = st.synth.get() {
            return Ok(s.clone());
        }
        let dirs = LayerChanges::of(&st.gen.repo, snap)
            .dirs()
            .map_err(repo_err(|| self.content_path(snap, true, b"")))?;
        let mut synth = Synth::new();
        for d in dirs.keys() {
            if d.is_empty() {
                continue;
            }
            let mut parent = Vec::new();
            for c in d.split(|&b| b == b'/') {
                synth.entry(parent.clone()).or_default().insert(c.to_vec());
                parent = join(&parent, c);
            }
        }
        let _ = st.synth.set(Arc::new(synth));
        Ok(st.synth.get().cloned().expect("set above"))
    }

    /// `.deleted` (newline-terminated) and `.deleted0` (NUL-terminated) contents: every path the
    /// snapshot's own layer whites out, sorted by bytes.
    pub(super) fn deleted_lists(&self, snap: &SnapshotId) -> VfsResult<DeletedLists> {
        let st = self.state(snap);
        if let Some(d) = st.deleted.get() {
            return Ok(d.clone());
        }
        let view = self.view(snap)?;
        let err = || self.content_path(snap, true, b".deleted");
        let mut paths = Vec::new();
        if view.snapshot().kind != BackupKind::Full {
            for kv in view.changes().all() {
                let (dir, name, d) = kv.map_err(repo_err(err))?;
                if d == Delta::Deleted {
                    paths.push(join(&dir, &name));
                }
            }
        }
        paths.sort();
        let (mut lines, mut nuls) = (Vec::new(), Vec::new());
        for p in paths {
            lines.extend_from_slice(&p);
            lines.push(b'\n');
            nuls.extend_from_slice(&p);
            nuls.push(0);
        }
        let _ = st.deleted.set((Arc::new(lines), Arc::new(nuls)));
        Ok(st.deleted.get().cloned().expect("set above"))
    }
}

/// The children of a `changes/` directory `dir` in name order: what the layer itself sets
/// there (`own`, as [`LayerChanges::under`] yields it), and the directories it shows only to
/// reach deeper changes (`extra`), resolved in the snapshot's `view`. At the root, names the
/// generated `.deleted` lists take are left out.
pub(super) fn merge_extra<'a>(
    own: impl Iterator<Item = crate::Result<(Vec<u8>, Delta)>> + Send + 'a,
    extra: BTreeSet<Vec<u8>>,
    view: Option<Arc<View>>,
    dir: Vec<u8>,
    root: bool,
) -> impl Iterator<Item = crate::Result<(Vec<u8>, Entry)>> + Send + 'a {
    let mut own = own.peekable();
    let mut extra = extra.into_iter().peekable();
    std::iter::from_fn(move || loop {
        let take_own = match (own.peek(), extra.peek()) {
            (None, None) => return None,
            (Some(Err(_)), _) => true,
            (Some(Ok((n, _))), Some(x)) => n <= x,
            (Some(_), None) => true,
            (None, Some(_)) => false,
        };
        let (name, entry) = if take_own {
            let (name, d) = match own.next()? {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e)),
            };
            if extra.peek() == Some(&name) {
                extra.next();
            }
            match d {
                Delta::Set(e) => (name, e),
                Delta::Deleted => continue,
            }
        } else {
            let name = extra.next()?;
            let Some(view) = &view else { continue };
            match view.lookup(&join(&dir, &name)) {
                Ok(e) => (name, e),
                Err(Error::PathNotFound { .. }) | Err(Error::NotADirectory { .. }) => continue,
                Err(e) => return Some(Err(e)),
            }
        };
        if root && (name == b".deleted" || name == b".deleted0") {
            continue;
        }
        return Some(Ok((name, entry)));
    })
}
