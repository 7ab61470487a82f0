//! Names and inodes: how sources, tags and snapshots are spelled in the mount, the keys and nodes
//! of the inode table (numbers are never reused), and the snapshot list the top-level
//! directories are built from.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use super::*;

/// Percent-encodes a source or tag name into one safe path component: `/` → `%2F`, `%` → `%25`,
/// NUL → `%00`; `.`, `..` and the empty name are encoded wholly (`%2E`, `%2E%2E`, `%`).
pub fn encode_component(name: &str) -> String {
    match name {
        "" => return "%".into(),
        "." => return "%2E".into(),
        ".." => return "%2E%2E".into(),
        _ => {}
    }
    let mut s = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '/' => s.push_str("%2F"),
            '%' => s.push_str("%25"),
            '\0' => s.push_str("%00"),
            c => s.push(c),
        }
    }
    s
}

/// The directory name of a snapshot: `<RFC 3339 UTC time>-<short id>`, e.g.
/// `2026-11-25T22:09:13Z-5a194037`.
pub fn snapshot_name(s: &Snapshot) -> String {
    format!("{}-{}", s.time_rfc3339(), s.id.short())
}

/// The synthetic top-level objects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum VKey {
    Root,
    Snapshots,
    Sources,
    Tags,
    Kinds,
    Changes,
    Latest,
    Source(String),
    SourceLatest(String),
    SourceLink(String, String),
    Tag(String),
    TagLink(String, String),
    /// Kind name as in `BackupKind::name`.
    Kind(&'static str),
    KindLink(&'static str, String),
    Versions,
    /// `.strata/`: the mount's own files.
    StrataDir,
    /// `.strata/stats`.
    StatsFile,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) enum Key {
    Virtual(VKey),
    Path {
        snap: SnapshotId,
        changes: bool,
        path: Vec<u8>,
    },
    HardLink {
        snap: SnapshotId,
        changes: bool,
        src_ino: u64,
    },
    Deleted {
        snap: SnapshotId,
        nul: bool,
    },
    /// A directory under `versions/` (encoded source, path).
    Versions(String, Vec<u8>),
}

/// The key a snapshot's entry at `path` is interned under: hard-linked files (a link count above
/// one) by source inode, so that every name of the group is one inode; everything else by path.
pub(super) fn content_key(snap: SnapshotId, changes: bool, path: Vec<u8>, entry: &Entry) -> Key {
    if entry.kind != Kind::Dir && entry.nlink > 1 {
        Key::HardLink {
            snap,
            changes,
            src_ino: entry.ino,
        }
    } else {
        Key::Path {
            snap,
            changes,
            path,
        }
    }
}

pub(super) enum Node {
    Virtual(VKey),
    Content {
        snap: SnapshotId,
        changes: bool,
        path: Vec<u8>,
        entry: Entry,
        parent: u64,
    },
    Deleted {
        snap: SnapshotId,
        nul: bool,
        data: Arc<Vec<u8>>,
        mtime_ns: i64,
        parent: u64,
    },
    /// `versions/<source>/<path>`: the path's children and its versions.
    Versions {
        source: String,
        path: Vec<u8>,
        parent: u64,
    },
}

impl Node {
    /// Whether this node is the one a `Key::Path` names (see [`Vfs::intern_content`]: hard-linked
    /// files are interned by source inode, never by path).
    pub(super) fn is_path(&self, key: &Key) -> bool {
        match (self, key) {
            (
                Node::Content {
                    snap,
                    changes,
                    path,
                    entry,
                    ..
                },
                Key::Path {
                    snap: ks,
                    changes: kc,
                    path: kp,
                },
            ) => {
                snap == ks
                    && changes == kc
                    && path == kp
                    && (entry.kind == Kind::Dir || entry.nlink <= 1)
            }
            _ => false,
        }
    }

    /// The key this node is interned under (the rule of [`Vfs::intern_content`]).
    pub(super) fn key(&self) -> Key {
        match self {
            Node::Virtual(k) => Key::Virtual(k.clone()),
            Node::Content {
                snap,
                changes,
                path,
                entry,
                ..
            } => content_key(*snap, *changes, path.clone(), entry),
            Node::Deleted { snap, nul, .. } => Key::Deleted {
                snap: *snap,
                nul: *nul,
            },
            Node::Versions { source, path, .. } => Key::Versions(source.clone(), path.clone()),
        }
    }

    /// The snapshot whose content this node shows (`None` for the synthetic directories and
    /// links, and for `versions/` directories, which show no content of their own).
    pub(super) fn snap(&self) -> Option<SnapshotId> {
        match self {
            Node::Content { snap, .. } | Node::Deleted { snap, .. } => Some(*snap),
            Node::Virtual(_) | Node::Versions { .. } => None,
        }
    }

    /// Whether this node shows `changes/` content (a layer that `forget` or `consolidate` can
    /// rewrite), rather than a snapshot's view (which never changes).
    pub(super) fn in_changes(&self) -> bool {
        matches!(
            self,
            Node::Content { changes: true, .. } | Node::Deleted { .. }
        )
    }
}

/// One inode: its node and the kernel's lookup count.
pub(super) struct Slot {
    pub(super) node: Arc<Node>,
    /// How many references the kernel holds: one per `lookup` reply and per `readdirplus`
    /// entry, minus what `forget` gives back. At zero the kernel has no use for the number.
    pub(super) refs: AtomicU64,
    /// Where the node stands in the table's trimming ([`IDLE`], [`RECENT`], [`ASKED`]).
    pub(super) age: AtomicU8,
}

/// Not handed to the kernel since the trimming last passed it.
pub(super) const IDLE: u8 = 0;
/// Handed to the kernel since (a lookup, a `readdirplus` entry): passed over once more.
pub(super) const RECENT: u8 = 1;
/// The kernel was asked to forget its entry; its bytes are counted as going.
pub(super) const ASKED: u8 = 2;

impl Node {
    /// Roughly the memory the node takes in the table, with its slot and keys: what the table's
    /// budget counts. The fixed part is what the mount's resident memory grew by per inode in a
    /// walk of 2 million entries (about 1.3 KB: the node, its entry, slot, hash-table entries,
    /// the allocator's share), not the sum of the structures' sizes (a quarter of it).
    pub(super) fn weight(&self) -> u64 {
        const FIXED: usize = 1024;
        let own = match self {
            Node::Content { path, entry, .. } => {
                path.len()
                    + entry.target.len()
                    + entry
                        .xattrs
                        .iter()
                        .map(|(n, v)| n.len() + v.len() + 48)
                        .sum::<usize>()
                    + entry.chunks.len() * std::mem::size_of::<crate::entry::ChunkRef>()
            }
            Node::Versions { source, path, .. } => source.len() + path.len(),
            Node::Deleted { .. } | Node::Virtual(_) => 64,
        };
        (FIXED + own) as u64
    }

    /// The directory and name under which the kernel knows this node, for asking it to forget
    /// the entry: `None` for the fixed and top-level objects, snapshot roots and version files
    /// (known under another name there).
    pub(super) fn entry_name(&self, t: &Inodes) -> Option<(u64, Vec<u8>)> {
        let (parent, path) = match self {
            Node::Content { parent, path, .. } | Node::Versions { parent, path, .. } => {
                (*parent, path.as_slice())
            }
            Node::Deleted { parent, nul, .. } => {
                let name: &[u8] = if *nul { b".deleted0" } else { b".deleted" };
                return Some((*parent, name.to_vec()));
            }
            Node::Virtual(_) => return None,
        };
        if path.is_empty() {
            return None;
        }
        if matches!(self, Node::Content { .. })
            && matches!(t.node(parent).map(|n| &**n), Some(Node::Versions { .. }))
        {
            return None;
        }
        let name = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
        Some((parent, name.to_vec()))
    }
}

pub(super) struct Inodes<S = std::collections::hash_map::RandomState> {
    /// Every inode in use, by number.
    pub(super) nodes: HashMap<u64, Slot>,
    /// The next number to hand out: numbers are never reused.
    next: u64,
    /// Inode of each `Key::Path`, by the key's hash; the node holds the key itself, so a hit is
    /// confirmed against it. Keeping only the hash saves a second copy of every path: about
    /// 110 bytes per entry, 11 MB for a listed 100k-file snapshot.
    pub(super) paths: HashMap<u64, u64>,
    /// Every other key, and the rare path whose hash another path already holds.
    pub(super) others: HashMap<Key, u64>,
    pub(super) hasher: S,
    /// Inode numbers, oldest first (some freed since): the order trimming passes them in.
    pub(super) order: VecDeque<u64>,
    /// [`Node::weight`] of every node.
    pub(super) bytes: u64,
    /// [`Node::weight`] of the nodes whose entries the kernel was asked to forget ([`ASKED`]).
    pub(super) asked: AtomicU64,
}

impl<S: BuildHasher + Default> Inodes<S> {
    pub(super) fn new() -> Inodes<S> {
        Inodes {
            nodes: HashMap::new(),
            next: 1,
            paths: HashMap::new(),
            others: HashMap::new(),
            hasher: S::default(),
            order: VecDeque::new(),
            bytes: 0,
            asked: AtomicU64::new(0),
        }
    }

    pub(super) fn get(&self, key: &Key) -> Option<u64> {
        if let Key::Path { .. } = key {
            let h = self.hasher.hash_one(key);
            if let Some(&ino) = self.paths.get(&h) {
                if self.nodes.get(&ino).is_some_and(|s| s.node.is_path(key)) {
                    return Some(ino);
                }
            }
        }
        self.others.get(key).copied()
    }

    /// The node of inode `ino`.
    pub(super) fn node(&self, ino: u64) -> Option<&Arc<Node>> {
        self.nodes.get(&ino).map(|s| &s.node)
    }

    /// Adds `node` under `key` (which must not be present); returns its inode.
    pub(super) fn insert(&mut self, key: Key, node: Node) -> u64 {
        let ino = self.next;
        self.next += 1;
        self.bytes += node.weight();
        self.order.push_back(ino);
        self.nodes.insert(
            ino,
            Slot {
                node: Arc::new(node),
                refs: AtomicU64::new(0),
                age: AtomicU8::new(RECENT),
            },
        );
        if let Key::Path { .. } = key {
            let h = self.hasher.hash_one(&key);
            if let std::collections::hash_map::Entry::Vacant(v) = self.paths.entry(h) {
                v.insert(ino);
                return ino;
            }
        }
        self.others.insert(key, ino);
        ino
    }

    /// Lets `key` lead to no inode, where it led to `ino`; the node stays (the kernel may hold
    /// it), and the next lookup of the key makes a new one.
    pub(super) fn unkey(&mut self, ino: u64, key: &Key) {
        if let Key::Path { .. } = key {
            let h = self.hasher.hash_one(key);
            if self.paths.get(&h) == Some(&ino) {
                self.paths.remove(&h);
                return;
            }
        }
        if self.others.get(key) == Some(&ino) {
            self.others.remove(key);
        }
    }

    /// Removes inode `ino` and its key; returns its node.
    pub(super) fn remove(&mut self, ino: u64) -> Option<Arc<Node>> {
        let slot = self.nodes.remove(&ino)?;
        let w = slot.node.weight();
        self.bytes -= w;
        if slot.age.load(Ordering::Relaxed) == ASKED {
            self.asked.fetch_sub(w, Ordering::Relaxed);
        }
        self.unkey(ino, &slot.node.key());
        Some(slot.node)
    }
}

pub(super) struct SnapInfo {
    pub(super) snap: Snapshot,
    pub(super) name: String,
}

/// The snapshot list and its indexes. Replaced as a whole (behind an `RwLock`) when refreshed.
pub(super) struct SnapList {
    /// Oldest first.
    pub(super) list: Vec<SnapInfo>,
    pub(super) by_name: HashMap<String, usize>,
    pub(super) by_id: HashMap<SnapshotId, usize>,
    /// Encoded source → indexes, oldest first.
    pub(super) sources: BTreeMap<String, Vec<usize>>,
    /// Encoded tag → indexes.
    pub(super) tags: BTreeMap<String, Vec<usize>>,
}

impl SnapList {
    pub(super) fn build(snaps: Vec<Snapshot>) -> SnapList {
        let mut l = SnapList {
            list: Vec::new(),
            by_name: HashMap::new(),
            by_id: HashMap::new(),
            sources: BTreeMap::new(),
            tags: BTreeMap::new(),
        };
        for s in snaps {
            let mut name = snapshot_name(&s);
            if l.by_name.contains_key(&name) {
                // Same second and same short id: fall back to the full id to stay unique.
                name = format!("{}-{}", s.time_rfc3339(), s.id);
            }
            let i = l.list.len();
            l.by_name.insert(name.clone(), i);
            l.by_id.insert(s.id, i);
            l.sources
                .entry(encode_component(&s.source))
                .or_default()
                .push(i);
            for t in &s.tags {
                let v = l.tags.entry(encode_component(t)).or_default();
                if v.last() != Some(&i) {
                    v.push(i);
                }
            }
            l.list.push(SnapInfo { snap: s, name });
        }
        l
    }

    pub(super) fn newest_time(&self) -> i64 {
        self.list.last().map_or(0, |s| s.snap.time_ns)
    }
}
