//! Unit tests of the chain rule and the view API: chain, lookup, children, walk, and what
//! one layer changed.

use super::*;
use crate::testutil::snap;
use std::fs;

fn record(id: u8, kind: BackupKind, parent: Option<u8>) -> Snapshot {
    Snapshot {
        id: SnapshotId([id; 16]),
        time_ns: id as i64,
        host: "h".into(),
        source: "/src".into(),
        kind,
        parent: parent.map(|p| SnapshotId([p; 16])),
        depth: 1,
        tags: Vec::new(),
        stats: Default::default(),
        // Each layer holds entries (a layer without any is left out of views).
        layer_blobs: vec![crate::id::ChunkId([id; 32])],
    }
}

fn walk_chain(all: &[Snapshot], id: u8) -> std::result::Result<Vec<u8>, ChainBreak> {
    let by_id: HashMap<SnapshotId, &Snapshot> = all.iter().map(|s| (s.id, s)).collect();
    let s = by_id[&SnapshotId([id; 16])];
    chain_of(s, all.len(), |id| Ok(by_id.get(id).copied()))
        .map(|c| c.iter().map(|id| id.0[0]).collect())
}

#[test]
fn a_chain_ends_at_a_full_and_only_there() {
    use BackupKind::*;
    let all = [
        record(1, Full, None),
        record(2, Incremental, Some(1)),
        record(3, Differential, Some(1)),
        record(4, Incremental, Some(2)),
        // A full's parent field is not followed.
        record(5, Full, Some(4)),
        // A parentless incremental breaks its chain rather than standing in for a full.
        record(6, Incremental, None),
        record(7, Incremental, Some(6)),
        record(8, Incremental, Some(9)),
        record(10, Incremental, Some(11)),
        record(11, Incremental, Some(10)),
    ];
    assert_eq!(walk_chain(&all, 1), Ok(vec![1]));
    assert_eq!(walk_chain(&all, 4), Ok(vec![4, 2, 1]));
    assert_eq!(walk_chain(&all, 3), Ok(vec![3, 1]));
    assert_eq!(walk_chain(&all, 5), Ok(vec![5]));
    let no_full = ChainBreak::NoFull {
        end: SnapshotId([6; 16]),
        kind: Incremental,
    };
    assert_eq!(walk_chain(&all, 6), Err(no_full.clone()));
    assert_eq!(walk_chain(&all, 7), Err(no_full));
    assert_eq!(
        walk_chain(&all, 8),
        Err(ChainBreak::MissingParent {
            at: SnapshotId([8; 16]),
            parent: SnapshotId([9; 16]),
        })
    );
    assert_eq!(walk_chain(&all, 10), Err(ChainBreak::Loops));
    assert!(matches!(
        Error::from(ChainBreak::Loops),
        Error::CorruptMetadata(_)
    ));
}

/// Records only, no layers: enough to open (or refuse) views.
struct Records(HashMap<SnapshotId, Snapshot>);

impl LayerStore for Records {
    fn snapshot(&self, id: &SnapshotId) -> Result<Option<Snapshot>> {
        Ok(self.0.get(id).cloned())
    }
    fn layer_dirs(&self, _: &SnapshotId) -> Result<Arc<LayerDirs>> {
        Ok(Arc::default())
    }
    fn dir_layer(&self, _: &SnapshotId, _: &[u8]) -> Result<Option<DirLayer>> {
        Ok(None)
    }
    fn entry(&self, _: &SnapshotId, _: &[u8], _: &[u8]) -> Result<Option<Entry>> {
        Ok(None)
    }
}

#[test]
fn a_view_follows_the_same_chain_rule_as_check() {
    use BackupKind::*;
    let all = [
        record(1, Full, None),
        record(2, Incremental, Some(1)),
        record(6, Incremental, None),
        record(7, Differential, Some(6)),
        record(8, Incremental, Some(9)),
    ];
    let store = Arc::new(Records(all.iter().map(|s| (s.id, s.clone())).collect()));
    let open = |id: u8| View::open(&store, &SnapshotId([id; 16]));
    assert_eq!(
        open(2).unwrap().chain(),
        [SnapshotId([2; 16]), SnapshotId([1; 16])]
    );
    for id in [6, 7] {
        let Err(Error::CorruptMetadata(msg)) = open(id) else {
            panic!("a chain ending in a parentless incremental must not open");
        };
        assert!(msg.contains("not a full layer"), "{msg}");
    }
    assert!(matches!(open(8), Err(Error::MissingParent(..))));
}

/// Full {a/x, a/y, b/z, top}; incremental deletes `a/x` and `top`, replaces `b` by a new
/// directory (opaque) holding `w`; differential on the full adds `new`.
#[test]
fn a_view_resolves_chain_lookup_children_and_walk() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::create_dir_all(src.join("b")).unwrap();
    for f in ["a/x", "a/y", "b/z", "top"] {
        fs::write(src.join(f), f).unwrap();
    }
    let repo = crate::open::Open::new(t.path().join("repo"))
        .create(&Default::default())
        .unwrap();
    let full = snap(&repo, &src, BackupKind::Full);
    fs::remove_file(src.join("a/x")).unwrap();
    fs::remove_file(src.join("top")).unwrap();
    fs::remove_dir_all(src.join("b")).unwrap();
    let inc_a = snap(&repo, &src, BackupKind::Incremental);
    fs::create_dir(src.join("b")).unwrap();
    fs::write(src.join("b/w"), b"w").unwrap();
    let inc = snap(&repo, &src, BackupKind::Incremental);
    fs::write(src.join("new"), b"n").unwrap();
    let diff = snap(&repo, &src, BackupKind::Differential);

    let v = View::open(&repo, &inc.id).unwrap();
    assert_eq!(v.chain(), [inc.id, inc_a.id, full.id]);
    assert_eq!(v.lookup(b"a/y").unwrap().kind, Kind::File);
    assert!(matches!(v.lookup(b"a/x"), Err(Error::PathNotFound { .. })));
    assert!(matches!(v.lookup(b"b/z"), Err(Error::PathNotFound { .. })));
    assert!(matches!(
        v.lookup(b"a/y/q"),
        Err(Error::NotADirectory { .. })
    ));
    let names = |it: ListIter<'_>| -> Vec<Vec<u8>> { it.map(|kv| kv.unwrap().0).collect() };
    assert_eq!(names(v.children(b"").unwrap()), [&b"a"[..], b"b"]);
    assert_eq!(names(v.children(b"b").unwrap()), [b"w"]);
    let walked: Vec<Vec<u8>> = v.walk(b"").unwrap().map(|kv| kv.unwrap().0).collect();
    assert_eq!(walked, [&b"a"[..], b"a/y", b"b", b"b/w"]);
    assert_eq!(
        v.lookup_layer(b"b/w").unwrap().map(|(_, l)| l),
        Some(inc.id)
    );
    assert_eq!(
        v.lookup_layer(b"a/y").unwrap().map(|(_, l)| l),
        Some(full.id)
    );
    assert_eq!(v.stop_layer(b"b"), inc.id);
    assert_eq!(v.stop_layer(b"a"), full.id);

    // What each layer itself changed.
    let gone = LayerChanges::of(&repo, &inc_a.id);
    assert_eq!(gone.at(b"a", b"x").unwrap(), Some(Delta::Deleted));
    assert_eq!(gone.at(b"a", b"y").unwrap(), None);
    let deleted: Vec<Vec<u8>> = gone
        .all()
        .map(|kv| kv.unwrap())
        .filter(|(_, _, d)| *d == Delta::Deleted)
        .map(|(dir, name, _)| join(&dir, &name))
        .collect();
    // Key order: by directory, then name.
    assert_eq!(deleted, [&b"b"[..], b"top", b"a/x"]);
    let back = v.changes();
    let b = back.at(b"", b"b").unwrap().unwrap();
    assert!(b.hides_older() && b.as_entry().is_some_and(|e| e.opaque));
    let under: Vec<(Vec<u8>, bool)> = back
        .under(b"b")
        .map(|kv| kv.map(|(n, d)| (n, d.hides_older())).unwrap())
        .collect();
    assert_eq!(under, [(b"w".to_vec(), false)]);
    assert!(back.dirs().unwrap().get(&b"b"[..]) == Some(&true));

    let d = View::open(&repo, &diff.id).unwrap();
    assert_eq!(d.chain(), [diff.id, full.id]);
    let walked: Vec<Vec<u8>> = d.walk(b"").unwrap().map(|kv| kv.unwrap().0).collect();
    assert_eq!(walked, [&b"a"[..], b"a/y", b"b", b"b/w", b"new"]);
    let f = View::open(&repo, &full.id).unwrap();
    let walked: Vec<Vec<u8>> = f.walk(b"a").unwrap().map(|kv| kv.unwrap().0).collect();
    assert_eq!(walked, [&b"a/x"[..], b"a/y"]);
}
