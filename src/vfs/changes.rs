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
