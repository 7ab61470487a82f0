//! Directory listings handed out a piece at a time ([`DirCursor`]): an open directory of a
//! snapshot is read from its layers as the kernel pages through it, so a directory of a million
//! entries never sits in memory whole, per handle or anywhere else.
//!
//! Positions: 0 is `.`, 1 is `..`, the children follow in listing order (snapshot content sorted
//! by name bytes; the top-level lists in their documented order). A cursor resumes where it
//! stopped; a seek anywhere else starts the listing again and skips to the position (what a
//! `seekdir` to a remembered `telldir` costs). Snapshot content never changes, so positions are
//! stable for the life of the mount; the top-level lists are fixed for a handle when its listing
//! starts, so one pass over them lists each name once even while snapshots come and go.
//!
//! What is held per open listing: for snapshot content, one pending entry per layer of the
//! directory's chain and the index's iterators (an encrypted repository's index reads a
//! directory's keys whole, about 250 bytes per entry, while it is listed); for the top-level and
//! `versions/` lists, their names.

use std::any::Any;

use super::*;

/// The (name, entry) pairs of a snapshot directory, in name order.
type EntryIter = Box<dyn Iterator<Item = crate::Result<(Vec<u8>, Entry)>> + Send>;

/// An iterator together with what it borrows from, so that it can outlive the call that made
/// it: an open directory keeps reading its layers between the kernel's requests.
struct Owned {
    /// Declared first: dropped before the owner it borrows from.
    iter: EntryIter,
    _owner: Box<dyn Any + Send + Sync>,
}

impl Owned {
    /// `make`'s iterator over `owner`, kept with it.
    fn new<O: Any + Send + Sync>(
        owner: Arc<O>,
        make: impl for<'a> FnOnce(
            &'a O,
        ) -> crate::Result<
            Box<dyn Iterator<Item = crate::Result<(Vec<u8>, Entry)>> + Send + 'a>,
        >,
    ) -> crate::Result<Owned> {
        let iter = make(&owner)?;
        // SAFETY: `iter` borrows only from `*owner`, which lives on the heap behind an `Arc` that
        // `Owned` holds: it does not move when `Owned` does, and it outlives `iter`, which is
        // dropped first (field order) and never handed out with the longer lifetime.
        let iter: EntryIter = unsafe { std::mem::transmute(iter) };
        Ok(Owned {
            iter,
            _owner: Box::new(owner),
        })
    }
}

/// Where the children of an open directory come from.
enum Children {
    /// Names fixed when the listing started, each looked up as it is handed out.
    Names { names: Vec<Vec<u8>>, next: usize },
    /// A `versions/` directory, listed whole when the listing starts (its names come from every
    /// snapshot of the source at once).
    Items { items: Vec<DirItem>, next: usize },
    /// A snapshot's (or a layer's) directory, read from the index as the listing goes.
    Stream {
        snap: SnapshotId,
        changes: bool,
        path: Vec<u8>,
        iter: Owned,
        /// `changes/<name>/` only: the generated lists, handed out first.
        first: Vec<Vec<u8>>,
    },
}

/// An open directory's place in its listing (see the module documentation).
pub struct DirCursor {
    ino: u64,
    /// Position of the next entry.
    pos: u64,
    /// `None` until the first child is asked for.
    children: Option<Children>,
}

impl DirCursor {
    /// The directory listed.
    pub fn ino(&self) -> u64 {
        self.ino
    }

    /// Position of the entry [`Vfs::dir_next`] returns next.
    pub fn pos(&self) -> u64 {
        self.pos
    }
}

impl Vfs {
    /// A cursor at the start of directory `ino`'s listing. Reads nothing yet.
    pub fn dir_cursor(&self, ino: u64) -> VfsResult<DirCursor> {
        let node = self.node(ino)?;
        if self.attr_of(ino, &node)?.kind != FileKind::Dir {
            return Err(VfsError::NotADirectory);
        }
        Ok(DirCursor {
            ino,
            pos: 0,
            children: None,
        })
    }

    /// Moves `c` to position `pos`: nothing to do when it is there; otherwise the listing starts
    /// again and skips to `pos`.
    pub fn dir_seek(&self, c: &mut DirCursor, pos: u64) -> VfsResult<()> {
        if c.pos == pos {
            return Ok(());
        }
        c.pos = 0;
        c.children = None;
        while c.pos < pos {
            if self.dir_next(c)?.is_none() {
                break;
            }
        }
        Ok(())
    }

    /// The entry at `c`'s position (interned, not held), advancing the cursor; `None` at the
    /// end. Top-level names that went away since the listing started are passed over.
    pub fn dir_next(&self, c: &mut DirCursor) -> VfsResult<Option<DirItem>> {
        let node = self.node(c.ino)?;
        let item = match c.pos {
            0 => Some(DirItem {
                name: b".".to_vec(),
                attr: self.attr_of(c.ino, &node)?,
            }),
            // A parent the kernel forgot may have been freed (its number is not reused): the
            // kernel takes nothing from this entry but a number.
            1 => Some(DirItem {
                name: b"..".to_vec(),
                attr: match self.getattr(self.parent_of(&node)) {
                    Ok(a) => a,
                    Err(_) => self.attr_of(c.ino, &node)?,
                },
            }),
            _ => {
                if c.children.is_none() {
                    c.children = Some(self.children_of(c.ino, &node)?);
                }
                let children = c.children.as_mut().expect("set above");
                self.next_child(c.ino, children)?
            }
        };
        if item.is_some() {
            c.pos += 1;
        }
        Ok(item)
    }

    fn next_child(&self, ino: u64, children: &mut Children) -> VfsResult<Option<DirItem>> {
        match children {
            Children::Names { names, next } => {
                while let Some(name) = names.get(*next) {
                    *next += 1;
                    // Children of the top-level lists can vanish on refresh.
                    match self.lookup(ino, name) {
                        Ok(attr) => {
                            return Ok(Some(DirItem {
                                name: name.clone(),
                                attr,
                            }))
                        }
                        Err(VfsError::NotFound) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(None)
            }
            Children::Items { items, next } => {
                let item = items.get(*next).cloned();
                *next += 1;
                Ok(item)
            }
            Children::Stream {
                snap,
                changes,
                path,
                iter,
                first,
            } => {
                if !first.is_empty() {
                    let name = first.remove(0);
                    let attr = self.lookup(ino, &name)?;
                    return Ok(Some(DirItem { name, attr }));
                }
                let Some(kv) = iter.iter.next() else {
                    return Ok(None);
                };
                let (name, e) = kv.map_err(repo_err(|| self.content_path(snap, *changes, path)))?;
                let cino = self.intern_content(*snap, *changes, join(path, &name), e, ino);
                let attr = self.getattr(cino)?;
                Ok(Some(DirItem { name, attr }))
            }
        }
    }

    /// Where directory `ino`'s children come from.
    fn children_of(&self, ino: u64, node: &Node) -> VfsResult<Children> {
        let names = match node {
            Node::Virtual(k) => self.virtual_names(k)?,
            Node::Content {
                snap,
                changes,
                path,
                entry,
                ..
            } => {
                if entry.kind != Kind::Dir {
                    return Err(VfsError::NotADirectory);
                }
                return self.content_children(snap, *changes, path);
            }
            Node::Deleted { .. } => return Err(VfsError::NotADirectory),
            Node::Versions { source, path, .. } => {
                let items = self.versions_readdir(ino, Vec::new(), source, path)?;
                return Ok(Children::Items { items, next: 0 });
            }
        };
        Ok(Children::Names { names, next: 0 })
    }

    fn content_children(
        &self,
        snap: &SnapshotId,
        changes: bool,
        path: &[u8],
    ) -> VfsResult<Children> {
        let err = || self.content_path(snap, changes, path);
        let dir = path.to_vec();
        let (iter, first) = if changes {
            let repo = self.repo_of(snap);
            let extra: BTreeSet<Vec<u8>> = self.synth(snap)?.get(path).cloned().unwrap_or_default();
            let view = if extra.is_empty() {
                None
            } else {
                Some(self.view(snap)?)
            };
            let id = *snap;
            let root = path.is_empty();
            let iter = Owned::new(repo, move |repo| {
                let own = LayerChanges::of(repo, &id).under(&dir);
                Ok(Box::new(changes::merge_extra(own, extra, view, dir, root)))
            })
            .map_err(repo_err(err))?;
            let first = if root {
                vec![b".deleted".to_vec(), b".deleted0".to_vec()]
            } else {
                Vec::new()
            };
            (iter, first)
        } else {
            let view = self.view(snap)?;
            let iter = Owned::new(view, move |v| Ok(Box::new(v.children(&dir)?)))
                .map_err(repo_err(err))?;
            (iter, Vec::new())
        };
        Ok(Children::Stream {
            snap: *snap,
            changes,
            path: path.to_vec(),
            iter,
            first,
        })
    }

    /// The names a top-level directory lists, in their documented order.
    fn virtual_names(&self, k: &VKey) -> VfsResult<Vec<Vec<u8>>> {
        let list = self.snap_list();
        let mut names: Vec<Vec<u8>> = Vec::new();
        match k {
            VKey::Root => {
                names.push(b".strata".to_vec());
                if !list.list.is_empty() {
                    names.push(b"latest".to_vec());
                }
                for n in [
                    "snapshots",
                    "changes",
                    "sources",
                    "tags",
                    "kinds",
                    "versions",
                ] {
                    names.push(n.as_bytes().to_vec());
                }
            }
            VKey::Snapshots | VKey::Changes => {
                names.extend(list.list.iter().map(|s| s.name.as_bytes().to_vec()))
            }
            VKey::Sources | VKey::Versions => {
                names.extend(list.sources.keys().map(|s| s.as_bytes().to_vec()))
            }
            VKey::Tags => names.extend(list.tags.keys().map(|s| s.as_bytes().to_vec())),
            VKey::Kinds => {
                for n in ["full", "incremental", "differential"] {
                    names.push(n.as_bytes().to_vec());
                }
            }
            VKey::Source(src) => {
                if let Some(v) = list.sources.get(src) {
                    names.push(b"latest".to_vec());
                    names.extend(v.iter().map(|&i| list.list[i].name.as_bytes().to_vec()));
                }
            }
            VKey::Tag(t) => {
                if let Some(v) = list.tags.get(t) {
                    names.extend(v.iter().map(|&i| list.list[i].name.as_bytes().to_vec()));
                }
            }
            VKey::Kind(kind) => names.extend(
                list.list
                    .iter()
                    .filter(|s| s.snap.kind.name() == *kind)
                    .map(|s| s.name.as_bytes().to_vec()),
            ),
            VKey::StrataDir => names.push(b"stats".to_vec()),
            VKey::Latest
            | VKey::SourceLatest(_)
            | VKey::SourceLink(..)
            | VKey::TagLink(..)
            | VKey::KindLink(..)
            | VKey::StatsFile => return Err(VfsError::NotADirectory),
        }
        Ok(names)
    }

    /// The whole listing of directory `ino`, `.` and `..` first, then children in listing order.
    /// Interns every child: for tests and small directories; the FUSE adapter pages through a
    /// [`DirCursor`] instead.
    pub fn readdir(&self, ino: u64) -> VfsResult<Vec<DirItem>> {
        let mut c = self.dir_cursor(ino)?;
        let mut out = Vec::new();
        while let Some(d) = self.dir_next(&mut c)? {
            out.push(d);
        }
        Ok(out)
    }

    /// The regular files of directory `dir` the kernel may know (interned: listed or looked up),
    /// in listing order, as (inode, size): what directory readahead may push. Interns nothing;
    /// `None` when there are more than `limit` entries.
    pub(super) fn known_files(&self, dir: u64, limit: usize) -> Option<Vec<(u64, u64)>> {
        let node = self.node(dir).ok()?;
        let Node::Content {
            snap,
            changes,
            path,
            entry,
            ..
        } = &*node
        else {
            return None;
        };
        if entry.kind != Kind::Dir {
            return None;
        }
        let Children::Stream { mut iter, .. } = self.content_children(snap, *changes, path).ok()?
        else {
            return None;
        };
        let mut out = Vec::new();
        for (n, kv) in iter.iter.by_ref().enumerate() {
            if n >= limit {
                return None;
            }
            let (name, e) = kv.ok()?;
            if e.kind != Kind::File {
                continue;
            }
            let key = names::content_key(*snap, *changes, join(path, &name), &e);
            let t = self.inodes.read().unwrap_or_else(|e| e.into_inner());
            if let Some(ino) = t.get(&key) {
                out.push((ino, e.size));
            }
        }
        Some(out)
    }
}
