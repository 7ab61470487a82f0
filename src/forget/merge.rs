//! Step 2 of a rewrite: copying into a kept layer what its view takes from the layers it will no
//! longer sit on. Every write here leaves each view as it was (see the crash-safety part of
//! [`super`]): entries go in only where they are identical to what the view shows, or where the
//! layer does not touch the directory yet (so no view reads them); directory flags come last.
//!
//! Views answer every question about what is visible ([`View`]: which layer provides a name,
//! where resolution of a directory stops); [`LayerChanges`] reads what one layer holds. What is
//! left here is writing: the layer's entries, its opaque marks and its `layerdirs` flags.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use super::index::layer_key;
use crate::entry::{Entry, Kind};
use crate::error::Result;
use crate::id::SnapshotId;
use crate::layers::{Delta, LayerChanges, View};
use crate::repo::store::{Batch, Space};
use crate::repo::{keys, Repo};

/// Entries collected for a layer before they are written in sorted batches.
const FLUSH_ENTRIES: usize = 4096;

/// What a step copied, and the whiteouts ([`layer_key`]s) to drop once the run has switched.
pub(super) type Copied = (u64, BTreeSet<Vec<u8>>);

/// Copies into `id`'s layer every entry its view shows that the layer lacks, so that the layer
/// alone is the whole view. Until the record says "full", the copies are either invisible (in
/// directories the layer does not touch) or identical to what the view showed. Returns the
/// number copied and the whiteouts to drop once it is a full.
pub(super) fn materialise(repo: &Arc<Repo>, id: &SnapshotId) -> Result<Copied> {
    let view = View::open(repo, id)?;
    let mut pending = Vec::new();
    let mut copied = 0;
    let mut add = |dir: &[u8], name: &[u8], e: &Entry, pending: &mut Vec<_>| -> Result<()> {
        let key = keys::entry_key(id, dir, name);
        if !repo.index().contains(Space::Layers, &key)? {
            pending.push((key, e.encode()));
            copied += 1;
            if pending.len() >= FLUSH_ENTRIES {
                repo.insert_layer_entries(pending)?;
            }
        }
        Ok(())
    };
    add(b"", b"", &view.root()?, &mut pending)?;
    for kv in view.walk(b"")? {
        let (path, e) = kv?;
        let (dir, name) = split_path(&path);
        add(dir, name, &e, &mut pending)?;
    }
    repo.insert_layer_entries(&mut pending)?;
    let mut drop = BTreeSet::new();
    for kv in LayerChanges::of(repo, id).all() {
        let (dir, name, d) = kv?;
        if matches!(d, Delta::Deleted) {
            drop.insert(layer_key(&dir, &name));
        }
    }
    Ok((copied, drop))
}

/// Copies into `id`'s layer the entries its view takes from the forgotten `segment`, and flags as
/// opaque the directories whose resolution stopped inside it. Returns the number copied and the
/// whiteouts that will hide nothing once the parent is `parent`.
pub(super) fn merge_segment(
    repo: &Arc<Repo>,
    id: &SnapshotId,
    segment: &[SnapshotId],
    parent: &SnapshotId,
) -> Result<Copied> {
    let view = View::open(repo, id)?;
    let mut dirs = DirCache::new(&view);
    let copies = segment_entries(repo, &view, &mut dirs, id, segment)?;
    let copied = copies.entries.len() as u64;
    let merged: HashSet<SnapshotId> = segment.iter().chain([id]).copied().collect();
    let mut flags: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
    for d in &copies.dirs {
        flags.insert(d.clone(), false);
    }
    for d in &copies.touched {
        if dirs.is_dir(d)? && merged.contains(&view.stop_layer(d)) {
            flags.insert(d.clone(), true);
        }
    }
    write_merged(repo, id, copies.entries, &flags)?;
    Ok((copied, redundant_whiteouts(repo, id, parent)?))
}

/// What a kept layer takes from the forgotten layers below it.
struct Copies {
    /// (key in the kept layer, encoded entry), each name once, from the layer that supplies it.
    entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// The directories those entries go into.
    dirs: BTreeSet<Vec<u8>>,
    /// Every directory the forgotten layers touch.
    touched: BTreeSet<Vec<u8>>,
}

/// The entries `id`'s view takes from the layers of `segment`. Names the kept layer holds
/// itself, or that a newer forgotten layer supplies, are not copied.
fn segment_entries(
    repo: &Repo,
    view: &View,
    dirs: &mut DirCache,
    id: &SnapshotId,
    segment: &[SnapshotId],
) -> Result<Copies> {
    let mut copies = Copies {
        entries: Vec::new(),
        dirs: BTreeSet::new(),
        touched: BTreeSet::new(),
    };
    for x in segment {
        let changes = LayerChanges::of(repo, x);
        copies.touched.extend(changes.dirs()?.keys().cloned());
        for kv in changes.all() {
            let (dir, name, _) = kv?;
            if !dirs.is_dir(&dir)? {
                continue;
            }
            if let Some((from, e)) = view.provider(&dir, &name)? {
                if from == *x {
                    copies
                        .entries
                        .push((keys::entry_key(id, &dir, &name), e.encode()));
                    copies.dirs.insert(dir);
                }
            }
        }
    }
    Ok(copies)
}

/// Writes the merged layer: entries first (invisible where the layer does not touch the
/// directory yet), then the directory `flags` (opaque or not) that make them visible or close
/// the directory. A directory the layer already closes stays closed.
fn write_merged(
    repo: &Repo,
    id: &SnapshotId,
    mut entries: Vec<(Vec<u8>, Vec<u8>)>,
    flags: &BTreeMap<Vec<u8>, bool>,
) -> Result<()> {
    let own_dirs = LayerChanges::of(repo, id).dirs()?;
    repo.insert_layer_entries(&mut entries)?;
    let mut batch = Batch::default();
    for (d, opaque) in flags {
        let opaque = *opaque || own_dirs.get(d).copied().unwrap_or(false);
        if opaque {
            mark_opaque_entry(repo, id, d)?;
        }
        if own_dirs.get(d) != Some(&opaque) {
            batch.insert(Space::LayerDirs, keys::layerdir_key(id, d), [opaque as u8]);
        }
    }
    repo.index().apply(batch)?;
    repo.clear_layer_caches();
    Ok(())
}

/// Marks the merged layer's own entry of directory `dir` opaque. The layer closes `dir` (its
/// `layerdirs` flag), and that flag must stay derivable from the entries alone: `repair` rebuilds
/// `layerdirs` from them and `check` compares the two. A newer layer's metadata-only entry for a
/// directory that a forgotten layer recreated is the case this fixes.
fn mark_opaque_entry(repo: &Repo, layer: &SnapshotId, dir: &[u8]) -> Result<()> {
    if dir.is_empty() {
        return Ok(());
    }
    let (parent, name) = split_path(dir);
    if let Some(Delta::Set(mut e)) = LayerChanges::of(repo, layer).at(parent, name)? {
        if e.kind == Kind::Dir && !e.opaque {
            e.opaque = true;
            let key = keys::entry_key(layer, parent, name);
            repo.index().insert(Space::Layers, &key, &e.encode())?;
        }
    }
    Ok(())
}

/// The whiteouts of `id`'s layer that will hide nothing once its parent is `parent`: in a
/// directory the layer closes, or over a path the parent's view does not have.
fn redundant_whiteouts(
    repo: &Arc<Repo>,
    id: &SnapshotId,
    parent: &SnapshotId,
) -> Result<BTreeSet<Vec<u8>>> {
    let changes = LayerChanges::of(repo, id);
    let closes = changes.dirs()?;
    let below = View::open(repo, parent)?;
    let mut below_dirs = DirCache::new(&below);
    let mut drop = BTreeSet::new();
    for kv in changes.all() {
        let (dir, name, d) = kv?;
        if !matches!(d, Delta::Deleted) {
            continue;
        }
        let hides_nothing = closes.get(&dir) == Some(&true)
            || !below_dirs.is_dir(&dir)?
            || below.lookup_in(&dir, &name)?.is_none();
        if hides_nothing {
            drop.insert(layer_key(&dir, &name));
        }
    }
    Ok(drop)
}

/// Whether directories resolve to a directory in one view, each asked of the view once.
struct DirCache<'a> {
    view: &'a View,
    known: HashMap<Vec<u8>, bool>,
}

impl<'a> DirCache<'a> {
    fn new(view: &'a View) -> DirCache<'a> {
        DirCache {
            view,
            known: HashMap::new(),
        }
    }

    fn is_dir(&mut self, dir: &[u8]) -> Result<bool> {
        if let Some(&r) = self.known.get(dir) {
            return Ok(r);
        }
        let r = self.view.is_dir(dir)?;
        self.known.insert(dir.to_vec(), r);
        Ok(r)
    }
}

/// Splits a relative path into its directory and last name (`""` for a top-level name's
/// directory).
fn split_path(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&b""[..], path),
    }
}
