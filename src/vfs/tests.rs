//! Unit tests of the vfs without FUSE: pure helpers, and a real repository built with the library
//! and browsed through `Vfs` (layout, lookups, hard links, holes, `changes/`, errors).

use super::*;
use std::fs;
use std::path::Path;

use crate::backup::{backup, BackupOptions};
use crate::id::ChunkId;
use crate::repo::CreateOptions;
use crate::testutil::snap;

#[test]
fn component_encoding_is_one_safe_component() {
    assert_eq!(encode_component("/srv/data"), "%2Fsrv%2Fdata");
    assert_eq!(encode_component("100%"), "100%25");
    assert_eq!(encode_component("web"), "web");
    assert_eq!(encode_component(""), "%");
    assert_eq!(encode_component("."), "%2E");
    assert_eq!(encode_component(".."), "%2E%2E");
    assert!(!encode_component("a/b\0c").contains(['/', '\0']));
}

#[test]
fn xattr_size_semantics() {
    assert_eq!(
        xattr_reply(b"abc".to_vec(), 0).unwrap(),
        XattrReply::Size(3)
    );
    assert!(matches!(
        xattr_reply(b"abc".to_vec(), 2),
        Err(VfsError::Range)
    ));
    assert_eq!(
        xattr_reply(b"abc".to_vec(), 3).unwrap(),
        XattrReply::Data(b"abc".to_vec())
    );
    assert_eq!(xattr_reply(Vec::new(), 0).unwrap(), XattrReply::Size(0));
}

#[test]
fn entry_attr_blocks_reflect_stored_bytes() {
    let mut e = Entry::whiteout();
    e.kind = Kind::File;
    e.size = 10 << 20;
    e.mode = 0o4755;
    e.nlink = 1;
    e.chunks = vec![crate::entry::ChunkRef {
        id: ChunkId::of(b"x"),
        offset: 5 << 20,
        len: 1,
    }];
    let a = Vfs::entry_attr(9, &e);
    assert_eq!(a.blocks, 1);
    assert_eq!(a.size, 10 << 20);
    assert_eq!(a.perm, 0o4755);
    assert!(a.immutable);
}

fn lookup_path(vfs: &Vfs, path: &str) -> VfsResult<Attr> {
    let mut ino = ROOT_INO;
    let mut attr = vfs.getattr(ino)?;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        attr = vfs.lookup(ino, c.as_bytes())?;
        ino = attr.ino;
    }
    Ok(attr)
}

fn names(vfs: &Vfs, ino: u64) -> Vec<String> {
    vfs.readdir(ino)
        .unwrap()
        .into_iter()
        .map(|d| String::from_utf8(d.name).unwrap())
        .collect()
}

#[test]
fn browse_a_repository_without_fuse() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::write(src.join("a/b/deep.txt"), b"deep").unwrap();
    fs::write(src.join("gone.txt"), b"bye").unwrap();
    fs::write(src.join("one"), b"linked").unwrap();
    fs::hard_link(src.join("one"), src.join("a/two")).unwrap();
    let f = fs::File::create(src.join("sparse")).unwrap();
    f.set_len(1 << 20).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, b"XY", 500_000).unwrap();
    drop(f);
    xattr::set(src.join("gone.txt"), "user.k", b"v").unwrap();
    let repo = crate::open::Open::new(t.path().join("repo"))
        .create(&CreateOptions::default())
        .unwrap();
    let s1 = snap(&repo, &src, BackupKind::Full);
    fs::write(src.join("a/b/deep.txt"), b"deeper").unwrap();
    fs::remove_file(src.join("gone.txt")).unwrap();
    let s2 = snap(&repo, &src, BackupKind::Incremental);
    let (n1, n2) = (snapshot_name(&s1), snapshot_name(&s2));

    let vfs = Vfs::open(repo.clone(), VfsOptions::default()).unwrap();
    assert_eq!(vfs.snapshot_names(), [n1.clone(), n2.clone()]);
    assert_eq!(
        names(&vfs, ROOT_INO),
        [
            ".",
            "..",
            ".strata",
            "latest",
            "snapshots",
            "changes",
            "sources",
            "tags",
            "kinds",
            "versions"
        ]
    );
    // Listing snapshots/ opens no view.
    let snaps = lookup_path(&vfs, "snapshots").unwrap();
    assert_eq!(names(&vfs, snaps.ino)[2..], [n1.clone(), n2.clone()]);
    assert!(lock(&vfs.states).values().all(|s| s.view.get().is_none()));
    let latest = lookup_path(&vfs, "latest").unwrap();
    assert_eq!(
        vfs.readlink(latest.ino).unwrap(),
        format!("snapshots/{n2}").as_bytes()
    );
    assert!(!latest.immutable);
    let kind = lookup_path(&vfs, &format!("kinds/incremental/{n2}")).unwrap();
    assert_eq!(
        vfs.readlink(kind.ino).unwrap(),
        format!("../../snapshots/{n2}").as_bytes()
    );
    assert!(matches!(
        lookup_path(&vfs, &format!("kinds/full/{n2}")),
        Err(VfsError::NotFound)
    ));

    // Content, hard links, holes, xattrs.
    let p1 = format!("snapshots/{n1}");
    let deep = lookup_path(&vfs, &format!("{p1}/a/b/deep.txt")).unwrap();
    assert_eq!(vfs.read(deep.ino, 0, 100).unwrap(), b"deep");
    assert_eq!(vfs.read(deep.ino, 2, 1).unwrap(), b"e");
    let one = lookup_path(&vfs, &format!("{p1}/one")).unwrap();
    let two = lookup_path(&vfs, &format!("{p1}/a/two")).unwrap();
    assert_eq!((one.ino, one.nlink), (two.ino, 2));
    let sparse = lookup_path(&vfs, &format!("{p1}/sparse")).unwrap();
    assert_eq!(sparse.size, 1 << 20);
    assert!(sparse.blocks < 64, "blocks {}", sparse.blocks);
    assert_eq!(vfs.read(sparse.ino, 499_999, 4).unwrap(), b"\0XY\0");
    assert_eq!(vfs.read(sparse.ino, (1 << 20) - 2, 10).unwrap(), [0, 0]);
    let gone = lookup_path(&vfs, &format!("{p1}/gone.txt")).unwrap();
    assert_eq!(vfs.getxattr(gone.ino, b"user.k").unwrap(), b"v");
    assert_eq!(vfs.listxattr(gone.ino).unwrap(), b"user.k\0");
    assert!(matches!(
        vfs.getxattr(gone.ino, b"user.x"),
        Err(VfsError::NoXattr)
    ));
    // Stable inodes; errors.
    assert_eq!(
        lookup_path(&vfs, &format!("{p1}/a/b/deep.txt"))
            .unwrap()
            .ino,
        deep.ino
    );
    assert!(matches!(
        lookup_path(&vfs, &format!("{p1}/one/x")),
        Err(VfsError::NotADirectory)
    ));
    assert!(matches!(
        vfs.open_file(deep.ino, true),
        Err(VfsError::ReadOnly)
    ));
    assert!(matches!(
        vfs.open_file(snaps.ino, false),
        Err(VfsError::IsADirectory)
    ));
    assert!(matches!(
        vfs.read(snaps.ino, 0, 1),
        Err(VfsError::IsADirectory)
    ));
    assert!(matches!(vfs.readlink(deep.ino), Err(VfsError::InvalidKind)));

    // The second snapshot and its layer.
    let p2 = format!("snapshots/{n2}");
    assert!(matches!(
        lookup_path(&vfs, &format!("{p2}/gone.txt")),
        Err(VfsError::NotFound)
    ));
    let deep2 = lookup_path(&vfs, &format!("{p2}/a/b/deep.txt")).unwrap();
    assert_ne!(deep2.ino, deep.ino);
    assert_eq!(vfs.read(deep2.ino, 0, 100).unwrap(), b"deeper");
    let c2 = lookup_path(&vfs, &format!("changes/{n2}")).unwrap();
    let mut shown = names(&vfs, c2.ino);
    shown.sort();
    assert_eq!(shown, [".", "..", ".deleted", ".deleted0", "a"]);
    let a = lookup_path(&vfs, &format!("changes/{n2}/a")).unwrap();
    assert_eq!(names(&vfs, a.ino), [".", "..", "b"], "a/two is unchanged");
    let del = lookup_path(&vfs, &format!("changes/{n2}/.deleted")).unwrap();
    assert_eq!(vfs.read(del.ino, 0, 100).unwrap(), b"gone.txt\n");
    let del0 = lookup_path(&vfs, &format!("changes/{n2}/.deleted0")).unwrap();
    assert_eq!(vfs.read(del0.ino, 0, 100).unwrap(), b"gone.txt\0");
    assert!(matches!(
        lookup_path(&vfs, &format!("changes/{n2}/one")),
        Err(VfsError::NotFound)
    ));
    // The full's layer is the whole tree, with nothing deleted.
    let d1 = lookup_path(&vfs, &format!("changes/{n1}/.deleted")).unwrap();
    assert_eq!(d1.size, 0);
    assert!(lookup_path(&vfs, &format!("changes/{n1}/a/two")).is_ok());
    let (hits, misses, _) = vfs.cache_stats();
    assert!(misses > 0 && hits + misses > 0);
}

#[test]
fn sources_are_encoded_and_filterable() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    fs::write(a.join("fa"), b"a").unwrap();
    fs::write(b.join("fb"), b"b").unwrap();
    let repo = crate::open::Open::new(t.path().join("repo"))
        .create(&CreateOptions::default())
        .unwrap();
    let run = |src: &Path, name: &str, tag: &str| {
        let opts = BackupOptions {
            source_name: Some(name.into()),
            tags: vec![tag.into()],
            threads: 2,
            ..BackupOptions::default()
        };
        snapshot_name(&backup(&repo, src, &opts).unwrap().snapshot)
    };
    let a1 = run(&a, "/srv/a", "daily");
    let b1 = run(&b, "web%1", "daily/x");
    let a2 = run(&a, "/srv/a", "weekly");

    let vfs = Vfs::open(repo.clone(), VfsOptions::default()).unwrap();
    let sources = lookup_path(&vfs, "sources").unwrap();
    assert_eq!(names(&vfs, sources.ino)[2..], ["%2Fsrv%2Fa", "web%251"]);
    let sa = lookup_path(&vfs, "sources/%2Fsrv%2Fa").unwrap();
    let mut listed = names(&vfs, sa.ino)[2..].to_vec();
    listed.sort();
    let mut want = vec!["latest".to_string(), a1.clone(), a2.clone()];
    want.sort();
    assert_eq!(listed, want);
    let l = lookup_path(&vfs, "sources/%2Fsrv%2Fa/latest").unwrap();
    assert_eq!(
        vfs.readlink(l.ino).unwrap(),
        format!("../../snapshots/{a2}").as_bytes()
    );
    let l = lookup_path(&vfs, "sources/web%251/latest").unwrap();
    assert_eq!(
        vfs.readlink(l.ino).unwrap(),
        format!("../../snapshots/{b1}").as_bytes()
    );
    let l = lookup_path(&vfs, "latest").unwrap();
    assert_eq!(
        vfs.readlink(l.ino).unwrap(),
        format!("snapshots/{a2}").as_bytes()
    );
    let tags = lookup_path(&vfs, "tags").unwrap();
    assert_eq!(names(&vfs, tags.ino)[2..], ["daily", "daily%2Fx", "weekly"]);
    let daily = lookup_path(&vfs, "tags/daily").unwrap();
    assert_eq!(names(&vfs, daily.ino)[2..], [a1.as_str()]);
    assert!(
        lookup_path(&vfs, &format!("tags/daily%2Fx/{b1}/fb")).is_err(),
        "links are not dirs"
    );
    // `..` of a link's directory leads back up.
    assert_eq!(vfs.lookup(daily.ino, b"..").unwrap().ino, tags.ino);

    let only_b = Vfs::open(
        repo.clone(),
        VfsOptions {
            sources: vec!["web%1".into()],
            ..VfsOptions::default()
        },
    )
    .unwrap();
    assert_eq!(only_b.snapshot_names(), [b1.as_str()]);
    assert!(lookup_path(&only_b, &format!("snapshots/{a1}")).is_err());
    // The vfs does not follow symlinks: `latest/fb` is a lookup inside a link.
    assert!(matches!(
        lookup_path(&only_b, "latest/fb"),
        Err(VfsError::NotADirectory)
    ));
    let fb = lookup_path(&only_b, &format!("snapshots/{b1}/fb")).unwrap();
    assert_eq!(only_b.read(fb.ino, 0, 10).unwrap(), b"b");
}

/// A hasher under which every key collides, to exercise the path table's fallback.
#[derive(Default)]
struct Colliding;

impl std::hash::BuildHasher for Colliding {
    type Hasher = ConstHasher;
    fn build_hasher(&self) -> ConstHasher {
        ConstHasher
    }
}

struct ConstHasher;

impl std::hash::Hasher for ConstHasher {
    fn finish(&self) -> u64 {
        7
    }
    fn write(&mut self, _: &[u8]) {}
}

#[test]
fn inode_table_resolves_paths_whose_hashes_collide() {
    let mut t: Inodes<Colliding> = Inodes::new();
    let snap = SnapshotId([1; 16]);
    let file = |nlink| Entry {
        kind: Kind::File,
        nlink,
        ..Entry::whiteout()
    };
    let key = |p: &[u8], changes| Key::Path {
        snap,
        changes,
        path: p.to_vec(),
    };
    let content = |p: &[u8], changes, nlink| Node::Content {
        snap,
        changes,
        path: p.to_vec(),
        entry: file(nlink),
        parent: 1,
    };
    let a = t.insert(key(b"a", false), content(b"a", false, 1));
    let b = t.insert(key(b"b", false), content(b"b", false, 1));
    let ac = t.insert(key(b"a", true), content(b"a", true, 1));
    assert_eq!(t.get(&key(b"a", false)), Some(a));
    assert_eq!(t.get(&key(b"b", false)), Some(b));
    assert_eq!(t.get(&key(b"a", true)), Some(ac));
    assert_eq!(t.get(&key(b"c", false)), None);
    assert_eq!(t.paths.len(), 1, "all collided into one hash slot");
    // A hard-linked file is interned by source inode: a path key never resolves to it.
    let h = t.insert(
        Key::HardLink {
            snap,
            changes: false,
            src_ino: 9,
        },
        content(b"h", false, 2),
    );
    assert_eq!(t.get(&key(b"h", false)), None);
    assert_ne!(h, a);
}

/// A full backup of a directory holding `big.bin` = `data`; returns the repository and the
/// file's path in a mount.
fn backed_up_file(root: &Path, data: &[u8]) -> (Arc<Repo>, String) {
    let src = root.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("big.bin"), data).unwrap();
    let repo = crate::open::Open::new(root.join("repo"))
        .create(&CreateOptions::default())
        .unwrap();
    let name = snapshot_name(&snap(&repo, &src, BackupKind::Full));
    (repo, format!("snapshots/{name}/big.bin"))
}

/// A fresh view (empty cache) of `repo` and the inode of `path` in it.
fn open_at(repo: &Arc<Repo>, path: &str) -> (Vfs, u64) {
    let vfs = Vfs::open(repo.clone(), VfsOptions::default()).unwrap();
    let ino = lookup_path(&vfs, path).unwrap().ino;
    (vfs, ino)
}

fn chunk_list(vfs: &Vfs, ino: u64) -> Vec<crate::entry::ChunkRef> {
    match &*vfs.node(ino).unwrap() {
        Node::Content { entry, .. } => entry.chunks.clone(),
        _ => panic!("not a file"),
    }
}

/// Large reads decode chunks they consume whole straight into the reply buffer, bypassing the
/// cache: the bytes must be the same as through the cache, and a corrupt chunk must still fail.
#[test]
fn large_reads_assemble_exact_bytes_and_verify_every_chunk() {
    let t = tempfile::tempdir().unwrap();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let data: Vec<u8> = (0..6 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    let (repo, path) = backed_up_file(t.path(), &data);
    let (vfs, ino) = open_at(&repo, &path);
    let chunks = chunk_list(&vfs, ino);
    assert!(chunks.len() >= 4, "{} chunks", chunks.len());
    let read = |off: u64, len: u32| vfs.read_with(ino, off, len, |d| d.to_vec());
    // Partial first and last chunks come through the cache, whole ones are appended directly.
    let (a, b) = (1000u64, data.len() as u64 - 1000);
    assert!(read(a, (b - a) as u32).unwrap() == data[a as usize..b as usize]);
    assert!(read(0, data.len() as u32).unwrap() == data);

    // Damage a middle chunk's payload on disk; a fresh view (empty cache) must refuse it.
    let victim = &chunks[chunks.len() / 2];
    let loc = repo.chunk_location(&victim.id).unwrap();
    let pack = t
        .path()
        .join("repo/packs")
        .join(format!("{:02x}", loc.pack.0 & 0xff))
        .join(format!("{}.pack", loc.pack));
    let mut bytes = fs::read(&pack).unwrap();
    bytes[(loc.offset + loc.stored_len as u64 / 2) as usize + 64] ^= 0x5A;
    fs::write(&pack, bytes).unwrap();
    let (vfs, ino) = open_at(&repo, &path);
    let read = |off: u64, len: u32| vfs.read_with(ino, off, len, |d| d.to_vec());
    assert!(matches!(
        read(0, data.len() as u32),
        Err(VfsError::Corrupt { .. } | VfsError::Repo { .. })
    ));
    let whole = read(victim.offset, victim.len);
    assert!(whole.is_err(), "the damaged chunk read whole");
    let first = &chunks[0];
    assert!(read(first.offset, first.len).unwrap() == data[..first.len as usize]);
}

/// Readahead-sized reads keep the chunks they only partly cover briefly (the cache stays small
/// however long the stream); small reads keep theirs in the LRU. Both return exact bytes.
#[test]
fn streaming_reads_keep_few_chunks_small_reads_keep_theirs() {
    let t = tempfile::tempdir().unwrap();
    let data = crate::testutil::pseudo_random(40 << 20, 11);
    let (repo, path) = backed_up_file(t.path(), &data);
    let (vfs, ino) = open_at(&repo, &path);
    // Readahead-sized requests at an odd start: most chunks straddle two requests.
    let step = STREAM_REQUEST as u32;
    let mut off = 12345u64;
    while off < data.len() as u64 {
        let got = vfs.read(ino, off, step).unwrap();
        let end = (off as usize + step as usize).min(data.len());
        assert!(got == data[off as usize..end], "bytes at {off}");
        off += step as u64;
    }
    // Kept in the LRU, every chunk straddling two requests would still be cached.
    let straddling: Vec<u64> = chunk_list(&vfs, ino)
        .iter()
        .filter(|c| {
            let (from, to) = (c.offset, c.offset + c.len as u64);
            (0..=data.len() as u64 / step as u64)
                .map(|k| 12345 + k * step as u64)
                .any(|b| from < b && b < to)
        })
        .map(|c| c.len as u64)
        .collect();
    let all: u64 = straddling.iter().sum();
    let ring_max = cache::STREAM_CHUNKS as u64 * (crate::chunker::MAX_SIZE as u64 + 4096);
    assert!(ring_max < all, "{} straddling chunks", straddling.len());
    let held = vfs.cache_stats().2;
    assert!(held <= ring_max, "a 40 MiB stream left {held} bytes cached");
    let (vfs, ino) = open_at(&repo, &path);
    let mut off = 0u64;
    while off < data.len() as u64 {
        assert!(vfs.read(ino, off, 4096).unwrap() == data[off as usize..off as usize + 4096]);
        off += 256 << 10;
    }
    let held = vfs.cache_stats().2;
    assert!(
        held >= 36 << 20,
        "4 KiB reads keep their chunks: {held} bytes"
    );
}

/// Once a reader streams, the locations of the file's coming chunks are looked up ahead, in the
/// background, and agree with the index.
#[test]
fn a_streaming_readers_coming_chunks_are_looked_up_ahead() {
    let t = tempfile::tempdir().unwrap();
    let data = crate::testutil::pseudo_random(24 << 20, 5);
    let (repo, path) = backed_up_file(t.path(), &data);
    let (vfs, ino) = open_at(&repo, &path);
    let chunks = chunk_list(&vfs, ino);
    let step = STREAM_REQUEST as u32;
    for k in 0..STREAMING_RUN as u64 {
        let off = k * step as u64;
        let got = vfs.read(ino, off, step).unwrap();
        assert!(got == data[off as usize..off as usize + step as usize]);
    }
    let past = STREAMING_RUN as u64 * step as u64;
    let coming: Vec<_> = chunks.iter().filter(|c| c.offset >= past).collect();
    assert!(coming.len() > 8, "{} coming chunks", coming.len());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let known = || {
        coming
            .iter()
            .filter(|c| vfs.cache.locations().get(&c.id).is_some())
            .count()
    };
    while known() < coming.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(known(), coming.len(), "all of the next 32 MiB");
    for c in &coming {
        let ahead = vfs.cache.locations().get(&c.id).unwrap();
        assert_eq!(ahead, repo.chunk_location(&c.id).unwrap());
    }
    // Reading on uses them and returns the same bytes.
    let rest = vfs
        .read(ino, past, (data.len() as u64 - past) as u32)
        .unwrap();
    assert!(rest == data[past as usize..]);
}

/// Sets a file's or directory's mtime to `secs` after the epoch.
fn set_mtime(p: &Path, secs: u64) {
    let when = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    fs::File::open(p).unwrap().set_modified(when).unwrap();
}

/// The mtime the vfs shows for a snapshot's root.
fn root_mtime(vfs: &Vfs, s: &crate::snapshot::Snapshot) -> i64 {
    lookup_path(vfs, &format!("snapshots/{}", snapshot_name(s)))
        .unwrap()
        .mtime_ns
}

/// Each snapshot of a chain shows its own root, whichever layer last changed it: resolving a
/// newer snapshot's root remembers it for the snapshots down to the layer that holds it, and no
/// further (the full backup below has a root of its own).
#[test]
fn every_snapshot_of_a_chain_shows_its_own_root() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::write(src.join("a/f"), b"0").unwrap();
    let set_root_mtime = |secs: u64| set_mtime(&src, secs);
    let repo = crate::open::Open::new(t.path().join("repo"))
        .create(&CreateOptions::default())
        .unwrap();
    set_root_mtime(1_000_000);
    let mut snaps = vec![snap(&repo, &src, BackupKind::Full)];
    fs::write(src.join("new"), b"n").unwrap();
    set_root_mtime(2_000_000);
    snaps.push(snap(&repo, &src, BackupKind::Incremental));
    // Backups that find nothing changed: their layers hold no root entry.
    for _ in 0..4 {
        snaps.push(snap(&repo, &src, BackupKind::Incremental));
    }
    let newest = snaps.last().unwrap();
    assert!(
        crate::layers::LayerChanges::of(&repo, &newest.id)
            .at(b"", b"")
            .unwrap()
            .is_none(),
        "the newest layer does not hold the root (the chain is searched)"
    );
    let vfs = Vfs::open(repo.clone(), VfsOptions::default()).unwrap();
    // Newest first: its lookup memoizes roots along the chain.
    for s in snaps[1..].iter().rev() {
        assert_eq!(
            root_mtime(&vfs, s),
            2_000_000_000_000_000,
            "{}",
            snapshot_name(s)
        );
    }
    assert_eq!(
        root_mtime(&vfs, &snaps[0]),
        1_000_000_000_000_000,
        "the full backup's own root"
    );
    let names = |p: &str| -> Vec<String> {
        let a = lookup_path(&vfs, p).unwrap();
        names(&vfs, a.ino)[2..].to_vec()
    };
    assert_eq!(
        names(&format!("snapshots/{}", snapshot_name(&snaps[0]))),
        ["a"]
    );
    assert_eq!(
        names(&format!("snapshots/{}", snapshot_name(newest))),
        ["a", "new"]
    );
}

/// With the layers' touched directories in memory (a mount seeded from the lookup catalog), a
/// snapshot's root is found past the layers that did not touch the root without reading them,
/// and is still the root of the right layer.
#[test]
fn roots_past_layers_that_did_not_touch_the_root() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("a")).unwrap();
    fs::write(src.join("a/f"), b"0").unwrap();
    let repo_path = t.path().join("repo");
    let repo = crate::open::Open::new(&repo_path)
        .create(&CreateOptions::default())
        .unwrap();
    set_mtime(&src.join("a"), 500_000);
    set_mtime(&src, 1_000_000);
    let mut snaps = vec![snap(&repo, &src, BackupKind::Full)];
    // Only a file below the root changes (no directory's times do): the layer touches `a`, not
    // the root.
    fs::write(src.join("a/f"), b"11").unwrap();
    snaps.push(snap(&repo, &src, BackupKind::Incremental));
    fs::write(src.join("new"), b"n").unwrap();
    set_mtime(&src, 2_000_000);
    snaps.push(snap(&repo, &src, BackupKind::Incremental));
    fs::write(src.join("a/f"), b"333").unwrap();
    snaps.push(snap(&repo, &src, BackupKind::Incremental));
    crate::lookup::publish(&repo, crate::lookup::BUILD_ALL, &[]).unwrap();
    drop(repo);

    let repo = crate::open::Open::new(&repo_path)
        .seeded(true)
        .open()
        .unwrap();
    assert!(repo.is_seeded());
    for s in [&snaps[1], &snaps[3]] {
        let dirs = repo.cached_layer_dirs(&s.id).expect("from the catalog");
        assert!(dirs.contains_key(b"a".as_slice()));
        assert!(
            !dirs.contains_key(b"".as_slice()),
            "the layer did not touch the root (so it is passed without a read)"
        );
    }
    let vfs = Vfs::open(repo.clone(), VfsOptions::default()).unwrap();
    let want = [1_000_000, 1_000_000, 2_000_000, 2_000_000];
    // Newest first and oldest first: memoized roots must not leak across layers either way.
    for s in snaps.iter().rev() {
        let i = snaps.iter().position(|x| x.id == s.id).unwrap();
        assert_eq!(root_mtime(&vfs, s), want[i] * 1_000_000_000, "snapshot {i}");
    }
    let vfs = Vfs::open(repo, VfsOptions::default()).unwrap();
    for (i, s) in snaps.iter().enumerate() {
        assert_eq!(root_mtime(&vfs, s), want[i] * 1_000_000_000, "snapshot {i}");
    }
}
