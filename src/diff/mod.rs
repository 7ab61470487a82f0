//! The diff command: what differs between two snapshots, or between a snapshot and a live
//! directory — added, removed, modified (content or metadata only, naming the fields) and type
//! changed paths, streamed in path order to a callback, with totals.
//!
//! Cost. Two snapshots of one chain share every layer below their common ancestor layer, so a
//! path none of the layers *above* it holds resolves to the same entry in both views. When such a
//! common layer exists (B's parent is A, a differential vs its full, two siblings…), the walk
//! visits only the directories those layers touch (`LayerChanges::dirs`) and their ancestors, and
//! in each only the names those layers hold (`LayerChanges::under`), resolving each in both
//! views: cost ∝ the size of the layers in between, not of the tree. A directory that one of those
//! layers deleted or recreated (whiteout, opaque) may have lost children without a whiteout for
//! each, so its subtree is compared in full. Views with no common layer (two different fulls) are
//! compared by a merge of sorted listings of both trees (cost ∝ tree size). A live directory is
//! always a full merge walk.
//!
//! Equality of file content is equality of chunk lists (ids and offsets): data is never read from
//! the repository. For `--live` (in `diff/live.rs`), a file whose size and mtime match the snapshot
//! is taken as unchanged without being read, unless `content` is set; otherwise it is read and
//! chunked with the backup's chunker and blake3.
//!
//! Compared fields: type, content (files), size, symlink target, device number, permission bits,
//! owner (uid, gid), mtime and extended attributes. Not compared: ctime, atime, inode numbers and
//! link counts (they change without any visible difference), and directory sizes
//! (filesystem-specific).
//!
//! Must not: print, read chunk data from the repository, or hold a whole tree in memory.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::entry::{Entry, Kind};
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::layers::{join, LayerChanges, View};
use crate::repo::Repo;

mod live;

pub use live::diff_live;

/// How a path differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Only in the new side.
    Added,
    /// Only in the old side.
    Removed,
    /// Same type on both sides, some compared field differs (see [`DiffItem::fields`]).
    Modified,
    /// Present on both sides with different types (file ↔ directory ↔ symlink …).
    TypeChanged,
}

impl Change {
    /// Lowercase name used in `--json` output.
    pub fn name(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Modified => "modified",
            Change::TypeChanged => "type_changed",
        }
    }
}

/// One compared property of an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    /// File content (chunk lists differ).
    Content,
    /// Apparent size.
    Size,
    /// Symlink target.
    Target,
    /// Device number.
    Rdev,
    /// Permission bits.
    Mode,
    /// uid or gid.
    Owner,
    /// Modification time.
    Mtime,
    /// Extended attributes (names or values).
    Xattrs,
}

impl Field {
    /// Lowercase name used in output.
    pub fn name(self) -> &'static str {
        match self {
            Field::Content => "content",
            Field::Size => "size",
            Field::Target => "target",
            Field::Rdev => "rdev",
            Field::Mode => "mode",
            Field::Owner => "owner",
            Field::Mtime => "mtime",
            Field::Xattrs => "xattrs",
        }
    }

    /// Whether a change of this field is a change of the data itself (rather than metadata).
    pub fn is_content(self) -> bool {
        matches!(self, Field::Content | Field::Target | Field::Rdev)
    }
}

/// One differing path.
#[derive(Clone, Debug)]
pub struct DiffItem {
    /// Path relative to the snapshot root (empty = the root itself).
    pub path: Vec<u8>,
    /// What kind of difference.
    pub change: Change,
    /// The old side's entry (absent for `Added`).
    pub old: Option<Entry>,
    /// The new side's entry (absent for `Removed`).
    pub new: Option<Entry>,
    /// For `Modified`: the fields that differ, content fields first.
    pub fields: Vec<Field>,
}

impl DiffItem {
    /// An `Added` (entry on the new side) or `Removed` (entry on the old side) item; shared by the
    /// snapshot walk and the live walk.
    pub(crate) fn one_sided(path: &[u8], e: Entry, change: Change) -> DiffItem {
        let (old, new) = match change {
            Change::Added => (None, Some(e)),
            _ => (Some(e), None),
        };
        DiffItem {
            path: path.to_vec(),
            change,
            old,
            new,
            fields: Vec::new(),
        }
    }

    /// For `Modified`: whether only metadata changed (the data is identical).
    pub fn metadata_only(&self) -> bool {
        self.change == Change::Modified && !self.fields.iter().any(|f| f.is_content())
    }
}

/// How the two sides were compared (reported so the cost is visible).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    /// Only the listed layers (those the views do not share) were walked.
    Layers(Vec<SnapshotId>),
    /// Both trees were walked (no common layer).
    FullWalk,
    /// The snapshot was compared with a live directory.
    Live,
}

/// Totals of one diff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffSummary {
    /// Paths only in the new side.
    pub added: u64,
    /// Paths only in the old side.
    pub removed: u64,
    /// Paths whose data changed (file content, symlink target, device number).
    pub content_modified: u64,
    /// Paths whose metadata changed but whose data is identical.
    pub metadata_modified: u64,
    /// Paths whose type changed.
    pub type_changed: u64,
    /// Paths resolved on both sides: the work the diff did.
    pub paths_examined: u64,
    /// Files read and chunked (live diff only).
    pub files_read: u64,
    /// How the sides were compared.
    pub method: Method,
}

impl DiffSummary {
    fn new(method: Method) -> DiffSummary {
        DiffSummary {
            added: 0,
            removed: 0,
            content_modified: 0,
            metadata_modified: 0,
            type_changed: 0,
            paths_examined: 0,
            files_read: 0,
            method,
        }
    }

    /// Counts one differing path under its kind of change.
    fn count(&mut self, item: &DiffItem) {
        match item.change {
            Change::Added => self.added += 1,
            Change::Removed => self.removed += 1,
            Change::TypeChanged => self.type_changed += 1,
            Change::Modified if item.metadata_only() => self.metadata_modified += 1,
            Change::Modified => self.content_modified += 1,
        }
    }

    /// Number of differing paths.
    pub fn total(&self) -> u64 {
        self.added
            + self.removed
            + self.content_modified
            + self.metadata_modified
            + self.type_changed
    }
}

/// What to compare. The `strata diff` options are these fields (clap), so the CLI fills them
/// directly; `help` is the CLI's wording, the doc comments the library's.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct DiffOptions {
    /// Only this subtree (relative path; empty or `None` = everything).
    // `::std::vec::Vec`: clap would take a plain `Vec<u8>` for a list of values.
    #[arg(
        value_parser = clap::builder::TypedValueParser::map(
            clap::builder::OsStringValueParser::new(),
            std::os::unix::ffi::OsStringExt::into_vec,
        ),
        help = "Only compare this subtree (relative to the snapshot root)"
    )]
    pub path: Option<::std::vec::Vec<u8>>,
    /// Live diff: read and hash every file whose size matches, even when its mtime, ctime and inode match too.
    #[arg(
        long,
        help = "With --live: read and hash every file of equal size, even when its size, mtime, \
                ctime and inode match"
    )]
    pub content: bool,
    /// Walk both trees even when the views share layers: the slow reference the layer walk is
    /// tested against.
    #[arg(skip)]
    pub full_walk: bool,
    /// Live diff: paths to leave out on both sides, as `backup --exclude` (without them, what a
    /// backup excluded shows up as added).
    #[arg(
        long = "exclude",
        value_name = "GLOB",
        help = "With --live: leave out paths matching GLOB on both sides, as `backup --exclude` \
                does (give the backup's patterns, or its excluded files show up as added); \
                repeatable"
    )]
    pub excludes: Vec<String>,
}

/// The fields (other than type) in which `old` and `new` differ; both must have the same kind.
/// File content is compared by chunk lists, never by reading data.
pub fn compare(old: &Entry, new: &Entry) -> Vec<Field> {
    let mut f = compare_meta(old, new);
    if old.kind == Kind::File && old.chunks != new.chunks {
        f.insert(0, Field::Content);
    }
    f
}

/// Like [`compare`] without looking at file content.
fn compare_meta(old: &Entry, new: &Entry) -> Vec<Field> {
    let mut f = Vec::new();
    if matches!(old.kind, Kind::File | Kind::Symlink) && old.size != new.size {
        f.push(Field::Size);
    }
    if old.kind == Kind::Symlink && old.target != new.target {
        f.push(Field::Target);
    }
    if old.rdev != new.rdev {
        f.push(Field::Rdev);
    }
    if old.mode != new.mode {
        f.push(Field::Mode);
    }
    if old.uid != new.uid || old.gid != new.gid {
        f.push(Field::Owner);
    }
    if old.mtime_ns != new.mtime_ns {
        f.push(Field::Mtime);
    }
    if old.xattrs != new.xattrs {
        f.push(Field::Xattrs);
    }
    f.sort_by_key(|x| (!x.is_content(), *x));
    f
}

/// The sink every difference goes to, in path order.
pub type Sink<'s> = dyn FnMut(DiffItem) -> Result<()> + 's;

/// Compares snapshot views `a` (old) and `b` (new); calls `sink` for each difference.
pub fn diff_snapshots(
    a: &View,
    b: &View,
    opts: &DiffOptions,
    sink: &mut Sink<'_>,
) -> Result<DiffSummary> {
    let repo = a.repo().clone();
    let (chain_a, chain_b) = (a.chain(), b.chain());
    let in_b: HashSet<SnapshotId> = chain_b.iter().copied().collect();
    let common = chain_a.iter().position(|l| in_b.contains(l));
    let scope = match common {
        _ if opts.full_walk => Scope::Full,
        None => Scope::Full,
        Some(ia) => {
            let c = chain_a[ia];
            let ib = chain_b.iter().position(|l| *l == c).expect("common layer");
            let between: Vec<SnapshotId> = chain_a[..ia]
                .iter()
                .chain(chain_b[..ib].iter())
                .copied()
                .collect();
            Scope::layers(&repo, between)?
        }
    };
    let method = match &scope {
        Scope::Full => Method::FullWalk,
        Scope::Layers { layers, .. } => Method::Layers(layers.iter().map(|(id, _)| *id).collect()),
    };
    let mut w = Walker {
        a,
        b,
        repo: &repo,
        scope,
        sink,
        summary: DiffSummary::new(method),
    };
    let path = normalize(opts.path.as_deref())?;
    let ea = resolve(a, &path)?;
    let eb = resolve(b, &path)?;
    if ea.is_none() && eb.is_none() {
        return Err(Error::PathNotFound {
            snapshot: format!("{} or {}", a.snapshot().id.short(), b.snapshot().id.short()),
            path: String::from_utf8_lossy(&path).into_owned(),
        });
    }
    let full = w.recreated_above(&path)?;
    w.summary.paths_examined += 1;
    w.pair(&path, ea, eb, full)?;
    Ok(w.summary)
}

fn normalize(path: Option<&[u8]>) -> Result<Vec<u8>> {
    Ok(crate::layers::components(path.unwrap_or(b""))?.join(&b'/'))
}

/// The entry at `path`, `None` when absent (or under a non-directory).
fn resolve(v: &View, path: &[u8]) -> Result<Option<Entry>> {
    match v.lookup(path) {
        Ok(e) => Ok(Some(e)),
        Err(Error::PathNotFound { .. }) | Err(Error::NotADirectory { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Which paths can differ.
enum Scope {
    /// Any: compare full listings.
    Full,
    /// Only what these layers hold.
    Layers {
        /// The layers the views do not share, with the directories each touched.
        layers: Vec<(SnapshotId, std::sync::Arc<crate::layers::LayerDirs>)>,
        /// Touched directories and all their ancestors → their children in this set.
        closure: HashMap<Vec<u8>, BTreeSet<Vec<u8>>>,
    },
}

impl Scope {
    fn layers(repo: &Repo, between: Vec<SnapshotId>) -> Result<Scope> {
        let mut layers = Vec::new();
        let mut closure: HashMap<Vec<u8>, BTreeSet<Vec<u8>>> = HashMap::new();
        for id in between {
            let dirs = LayerChanges::of(repo, &id).dirs()?;
            for d in dirs.keys() {
                closure.entry(d.clone()).or_default();
                let mut cur: &[u8] = d;
                while !cur.is_empty() {
                    let (parent, name) = match cur.iter().rposition(|&b| b == b'/') {
                        Some(i) => (&cur[..i], &cur[i + 1..]),
                        None => (&b""[..], cur),
                    };
                    let set = closure.entry(parent.to_vec()).or_default();
                    if !set.insert(name.to_vec()) {
                        break;
                    }
                    cur = parent;
                }
            }
            layers.push((id, dirs));
        }
        Ok(Scope::Layers { layers, closure })
    }
}

struct Walker<'v, 's, 'k> {
    a: &'v View,
    b: &'v View,
    repo: &'v Repo,
    scope: Scope,
    sink: &'k mut Sink<'s>,
    summary: DiffSummary,
}

impl Walker<'_, '_, '_> {
    /// Whether a layer in between deleted or recreated `path` or one of its ancestors (then the
    /// subtree must be compared in full).
    fn recreated_above(&self, path: &[u8]) -> Result<bool> {
        let Scope::Layers { layers, .. } = &self.scope else {
            return Ok(true);
        };
        let comps = crate::layers::components(path)?;
        let mut dir = Vec::new();
        for c in comps {
            for (id, dirs) in layers {
                if dirs.contains_key(&dir) {
                    let d = LayerChanges::of(self.repo, id).at(&dir, c)?;
                    if d.is_some_and(|d| d.hides_older()) {
                        return Ok(true);
                    }
                }
            }
            dir = join(&dir, c);
        }
        Ok(false)
    }

    fn emit(&mut self, item: DiffItem) -> Result<()> {
        self.summary.count(&item);
        (self.sink)(item)
    }

    /// Compares one path present on at least one side; `full` = compare its subtree in full.
    fn pair(
        &mut self,
        path: &[u8],
        ea: Option<Entry>,
        eb: Option<Entry>,
        full: bool,
    ) -> Result<()> {
        match (ea, eb) {
            (None, None) => Ok(()),
            (None, Some(b)) => self.one_side(path, b, Change::Added),
            (Some(a), None) => self.one_side(path, a, Change::Removed),
            (Some(a), Some(b)) if a.kind != b.kind => {
                let (a_dir, b_dir) = (a.kind == Kind::Dir, b.kind == Kind::Dir);
                self.emit(DiffItem {
                    path: path.to_vec(),
                    change: Change::TypeChanged,
                    old: Some(a),
                    new: Some(b),
                    fields: Vec::new(),
                })?;
                if a_dir {
                    self.subtree(path, Change::Removed)?;
                }
                if b_dir {
                    self.subtree(path, Change::Added)?;
                }
                Ok(())
            }
            (Some(a), Some(b)) => {
                let both_dirs = a.kind == Kind::Dir;
                let fields = compare(&a, &b);
                if !fields.is_empty() {
                    self.emit(DiffItem {
                        path: path.to_vec(),
                        change: Change::Modified,
                        old: Some(a),
                        new: Some(b),
                        fields,
                    })?;
                }
                if both_dirs {
                    let descend = full
                        || match &self.scope {
                            Scope::Full => true,
                            Scope::Layers { closure, .. } => closure.contains_key(path),
                        };
                    if descend {
                        self.dir(path, full)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn one_side(&mut self, path: &[u8], e: Entry, change: Change) -> Result<()> {
        let dir = e.kind == Kind::Dir;
        self.emit(DiffItem::one_sided(path, e, change))?;
        if dir {
            self.subtree(path, change)?;
        }
        Ok(())
    }

    /// Every descendant of `path` as added (from b) or removed (from a), depth first, sorted.
    fn subtree(&mut self, path: &[u8], change: Change) -> Result<()> {
        let view = if change == Change::Added {
            self.b
        } else {
            self.a
        };
        for kv in view.walk(path)? {
            let (p, e) = kv?;
            self.summary.paths_examined += 1;
            self.emit(DiffItem::one_sided(&p, e, change))?;
        }
        Ok(())
    }

    /// Compares the children of `dir`, a directory on both sides.
    fn dir(&mut self, dir: &[u8], full: bool) -> Result<()> {
        if full || matches!(self.scope, Scope::Full) {
            let la: Vec<_> = self.a.children(dir)?.collect::<Result<_>>()?;
            let lb: Vec<_> = self.b.children(dir)?.collect::<Result<_>>()?;
            for (name, (ea, eb)) in merge_sorted(la, lb) {
                self.summary.paths_examined += 1;
                self.pair(&join(dir, &name), ea, eb, true)?;
            }
            return Ok(());
        }
        // Names any layer in between holds under `dir`, and whether one deleted/recreated it.
        let mut names: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
        if let Scope::Layers { layers, closure } = &self.scope {
            for (id, dirs) in layers {
                if !dirs.contains_key(dir) {
                    continue;
                }
                for kv in LayerChanges::of(self.repo, id).under(dir) {
                    let (name, d) = kv?;
                    *names.entry(name).or_default() |= d.hides_older();
                }
            }
            for name in closure.get(dir).into_iter().flatten() {
                names.entry(name.clone()).or_default();
            }
        }
        for (name, recreated) in names {
            self.summary.paths_examined += 1;
            let ea = self.a.lookup_in(dir, &name)?;
            let eb = self.b.lookup_in(dir, &name)?;
            self.pair(&join(dir, &name), ea, eb, recreated)?;
        }
        Ok(())
    }
}

/// A name with what each side holds for it.
type Merged<A, B> = (Vec<u8>, (Option<A>, Option<B>));

/// Merges two name-sorted listings into (name, (left, right)).
fn merge_sorted<A, B>(a: Vec<(Vec<u8>, A)>, b: Vec<(Vec<u8>, B)>) -> Vec<Merged<A, B>> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let (mut ia, mut ib) = (a.into_iter().peekable(), b.into_iter().peekable());
    loop {
        let ord = match (ia.peek(), ib.peek()) {
            (None, None) => return out,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some((na, _)), Some((nb, _))) => na.cmp(nb),
        };
        match ord {
            std::cmp::Ordering::Less => {
                let (n, x) = ia.next().unwrap();
                out.push((n, (Some(x), None)));
            }
            std::cmp::Ordering::Greater => {
                let (n, y) = ib.next().unwrap();
                out.push((n, (None, Some(y))));
            }
            std::cmp::Ordering::Equal => {
                let (n, x) = ia.next().unwrap();
                let (_, y) = ib.next().unwrap();
                out.push((n, (Some(x), Some(y))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::ChunkRef;
    use crate::id::ChunkId;

    fn file(mtime: i64, chunk: &[u8]) -> Entry {
        let mut e = Entry::whiteout();
        e.kind = Kind::File;
        e.mode = 0o644;
        e.size = chunk.len() as u64;
        e.mtime_ns = mtime;
        e.chunks = vec![ChunkRef {
            id: ChunkId::of(chunk),
            offset: 0,
            len: chunk.len() as u32,
        }];
        e
    }

    #[test]
    fn compare_names_fields_content_first() {
        let a = file(1, b"abc");
        assert!(compare(&a, &a.clone()).is_empty());
        let mut b = file(2, b"abd");
        b.mode = 0o600;
        b.ctime_ns = 99; // not compared
        b.ino = 7; // not compared
        assert_eq!(
            compare(&a, &b),
            vec![Field::Content, Field::Mode, Field::Mtime]
        );
        let mut c = a.clone();
        c.uid = 5;
        c.xattrs = vec![(b"user.x".to_vec(), b"1".to_vec())];
        let item = DiffItem {
            path: b"f".to_vec(),
            change: Change::Modified,
            old: Some(a.clone()),
            new: Some(c.clone()),
            fields: compare(&a, &c),
        };
        assert_eq!(item.fields, vec![Field::Owner, Field::Xattrs]);
        assert!(item.metadata_only());
    }

    #[test]
    fn merge_sorted_pairs_names() {
        let a = vec![(b"a".to_vec(), 1), (b"c".to_vec(), 3)];
        let b = vec![(b"b".to_vec(), 20), (b"c".to_vec(), 30)];
        let m = merge_sorted(a, b);
        let names: Vec<_> = m.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(m[0].1, (Some(1), None));
        assert_eq!(m[1].1, (None, Some(20)));
        assert_eq!(m[2].1, (Some(3), Some(30)));
    }
}
