//! The lookup files against the index they describe, on a real repository built with the
//! library: every path of every snapshot resolves to the same entry and the same bytes; opening
//! the index removes the catalog; a wrong location hint or a damaged table never yields wrong
//! bytes.

use super::*;
use std::collections::BTreeMap;
use std::fs;

use crate::layers::View;
use crate::open::Open;
use crate::repo::CreateOptions;
use crate::snapshot::BackupKind;
use crate::testutil::{pseudo_random, snap};

/// A repository with a full, an incremental and a differential over a tree that loses files,
/// changes files, deletes and recreates a directory, and holds a multi-chunk file.
fn fixture(t: &Path) -> (PathBuf, Vec<SnapshotId>) {
    let src = t.join("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("a/x"), b"x one").unwrap();
    fs::write(src.join("a/y"), b"y one").unwrap();
    fs::write(src.join("a/b/deep"), b"deep").unwrap();
    fs::write(src.join("d/old"), b"old child").unwrap();
    fs::write(src.join("big"), pseudo_random(3 << 20, 7)).unwrap();
    for i in 0..300 {
        fs::write(src.join(format!("a/n{i:04}")), format!("order {i}")).unwrap();
    }
    let repo_path = t.join("repo");
    let repo = Open::new(&repo_path)
        .create(&CreateOptions::default())
        .unwrap();
    let s1 = snap(&repo, &src, BackupKind::Full);
    fs::write(src.join("a/x"), b"x two").unwrap();
    fs::remove_file(src.join("a/y")).unwrap();
    fs::remove_dir_all(src.join("d")).unwrap();
    fs::create_dir(src.join("d")).unwrap();
    fs::write(src.join("d/new"), b"new child").unwrap();
    let mut big = pseudo_random(3 << 20, 7);
    big[1 << 20..(1 << 20) + 4096].fill(1);
    fs::write(src.join("big"), &big).unwrap();
    let s2 = snap(&repo, &src, BackupKind::Incremental);
    fs::write(src.join("a/b/deep"), b"deeper").unwrap();
    fs::create_dir(src.join("c")).unwrap();
    fs::write(src.join("c/z"), b"zed").unwrap();
    let s3 = snap(&repo, &src, BackupKind::Differential);
    (repo_path, vec![s1.id, s2.id, s3.id])
}

/// Opens the index, writes the lookup files (building tables up to `build_up_to` entries) and
/// closes it, as a command does at its end.
fn publish_and_close(repo_path: &Path, build_up_to: u64) {
    let repo = Open::new(repo_path).open().unwrap();
    publish(&repo, build_up_to, &[]).unwrap();
}

/// Every path of a view (recursively) with its entry and, for files, its bytes.
fn walk(repo: &Arc<Repo>, id: &SnapshotId) -> BTreeMap<Vec<u8>, (Entry, Vec<u8>)> {
    let view = View::open(repo, id).unwrap();
    let mut out = BTreeMap::new();
    let mut stack = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        for child in view.children(&dir).unwrap() {
            let (name, e) = child.unwrap();
            let p = crate::layers::join(&dir, &name);
            assert_eq!(view.lookup_once(&p).unwrap(), e);
            let mut bytes = Vec::new();
            if e.kind == crate::entry::Kind::Dir {
                stack.push(p.clone());
            } else if e.kind == crate::entry::Kind::File {
                crate::content::write_all_to(repo, &e, &mut bytes).unwrap();
            }
            out.insert(p, (e, bytes));
        }
    }
    out
}

#[test]
fn lookup_files_answer_exactly_what_the_index_answers() {
    let t = tempfile::tempdir().unwrap();
    let (repo_path, ids) = fixture(t.path());
    let repo = Open::new(&repo_path).open().unwrap();
    let expect: Vec<_> = ids.iter().map(|id| walk(&repo, id)).collect();
    let snapshots = repo.snapshots().unwrap();
    publish(&repo, BUILD_ALL, &[]).unwrap();
    drop(repo);

    let q = Arc::new(Open::new(&repo_path).lookup().unwrap().expect("a catalog"));
    assert_eq!(q.snapshots().unwrap(), snapshots);
    for (id, paths) in ids.iter().zip(&expect) {
        let view = View::open(&q, id).unwrap();
        assert!(view.root().unwrap().kind == crate::entry::Kind::Dir);
        for (p, (e, bytes)) in paths {
            let name = String::from_utf8_lossy(p);
            assert_eq!(&view.lookup(p).unwrap(), e, "{name}");
            assert_eq!(&view.lookup_once(p).unwrap(), e, "{name}");
            if e.kind == crate::entry::Kind::File {
                let mut got = Vec::new();
                crate::content::write_all_with(e, &mut got, &mut |c| q.read_chunk(c)).unwrap();
                assert_eq!(&got, bytes, "{}", String::from_utf8_lossy(p));
            }
        }
    }
    // Deleted paths stay deleted; the recreated directory does not show its old child.
    let last = View::open(&q, &ids[2]).unwrap();
    for gone in ["a/y", "d/old", "nope", "a/x/under-a-file"] {
        for r in [
            last.lookup(gone.as_bytes()),
            last.lookup_once(gone.as_bytes()),
        ] {
            assert!(r.unwrap_err().is_user_error(), "{gone}");
        }
    }
    assert!(View::open(&q, &ids[0]).unwrap().lookup(b"c/z").is_err());
    // Every chunk came from a recorded location: the index was never opened.
    assert!(q.fallback.get().is_none());
    assert!(repo_path.join(LOOKUP_DIR).join(CATALOG).exists());
}

#[test]
fn opening_the_index_removes_the_catalog_until_the_next_publish() {
    let t = tempfile::tempdir().unwrap();
    let (repo_path, _) = fixture(t.path());
    let catalog = repo_path.join(LOOKUP_DIR).join(CATALOG);
    let repo = Open::new(&repo_path).open().unwrap();
    publish(&repo, BUILD_ALL, &[]).unwrap();
    assert!(catalog.exists());
    drop(repo);
    let repo = Open::new(&repo_path).open().unwrap();
    assert!(!catalog.exists(), "an open index leaves no catalog behind");
    // A new snapshot, then a publish: the catalog knows it, and no table is left over.
    let src = t.path().join("src");
    fs::write(src.join("a/x"), b"x three").unwrap();
    let s4 = snap(&repo, &src, BackupKind::Incremental);
    publish(&repo, BUILD_ALL, &[]).unwrap();
    let tables = fs::read_dir(repo_path.join(LOOKUP_DIR)).unwrap().count() - 1;
    assert_eq!(tables, 4);
    drop(repo);
    let q = Arc::new(Open::new(&repo_path).lookup().unwrap().unwrap());
    let latest = crate::snapshot::find_in(&q.snapshots().unwrap(), "latest", None).unwrap();
    assert_eq!(latest.id, s4.id);
    let e = View::open(&q, &s4.id).unwrap().lookup(b"a/x").unwrap();
    let mut got = Vec::new();
    crate::content::write_all_with(&e, &mut got, &mut |c| q.read_chunk(c)).unwrap();
    assert_eq!(got, b"x three");
    drop(q);
    // Taking the lock for anything else (repair, check) removes it too.
    let lock = Open::new(&repo_path).lock_without_index().unwrap();
    assert!(!catalog.exists());
    drop(lock);
    assert!(Open::new(&repo_path).lookup().unwrap().is_none());
}

#[test]
fn a_wrong_location_hint_reads_through_the_index_never_returns_other_bytes() {
    let t = tempfile::tempdir().unwrap();
    let (repo_path, ids) = fixture(t.path());
    publish_and_close(&repo_path, BUILD_ALL);
    let q = Arc::new(Open::new(&repo_path).lookup().unwrap().unwrap());
    let view = View::open(&q, &ids[2]).unwrap();
    let x = view.lookup(b"a/x").unwrap();
    let deep = view.lookup(b"a/b/deep").unwrap();
    drop(view);
    // Point a/x's chunk at a/b/deep's record: a valid record, but not the chunk asked for.
    let other = q.hints.lock().unwrap()[&deep.chunks[0].id];
    q.hints.lock().unwrap().insert(x.chunks[0].id, other);
    assert_eq!(q.read_chunk(&x.chunks[0].id).unwrap(), b"x two");
    assert!(q.fallback.get().is_some(), "the index answered");
    assert!(
        !repo_path.join(LOOKUP_DIR).join(CATALOG).exists(),
        "opening the index removed the catalog"
    );
    Arc::try_unwrap(q).ok().unwrap().finish();
    assert!(
        repo_path.join(LOOKUP_DIR).join(CATALOG).exists(),
        "finish wrote it again"
    );
}

#[test]
fn damaged_lookup_files_are_errors_not_answers() {
    let t = tempfile::tempdir().unwrap();
    let (repo_path, ids) = fixture(t.path());
    let repo = Open::new(&repo_path).open().unwrap();
    publish(&repo, BUILD_ALL, &[]).unwrap();
    let full = table_name(&repo.snapshot(&ids[0]).unwrap().unwrap());
    drop(repo);
    let dir = repo_path.join(LOOKUP_DIR);
    // A flipped byte in the full layer's first block.
    let p = dir.join(&full);
    let mut b = fs::read(&p).unwrap();
    b[40] ^= 0x20;
    fs::write(&p, &b).unwrap();
    let q = Arc::new(Open::new(&repo_path).lookup().unwrap().unwrap());
    let err = View::open(&q, &ids[2])
        .and_then(|v| v.lookup(b"a/b/deep"))
        .unwrap_err();
    assert!(!err.is_user_error(), "{err}");
    Arc::try_unwrap(q).ok().unwrap().discard();
    assert!(Open::new(&repo_path).lookup().unwrap().is_none());
    assert!(!p.exists(), "discard removed the tables");
    // A torn catalog is refused as a whole.
    publish_and_close(&repo_path, BUILD_ALL);
    let c = dir.join(CATALOG);
    let b = fs::read(&c).unwrap();
    fs::write(&c, &b[..b.len() - 5]).unwrap();
    assert!(Open::new(&repo_path).lookup().is_err());
}

#[test]
fn a_snapshot_without_a_table_is_left_to_the_index() {
    let t = tempfile::tempdir().unwrap();
    let (repo_path, ids) = fixture(t.path());
    publish_and_close(&repo_path, 0);
    let q = Arc::new(Open::new(&repo_path).lookup().unwrap().unwrap());
    let err = View::open(&q, &ids[1])
        .and_then(|v| v.lookup(b"a/x"))
        .unwrap_err();
    assert!(matches!(err, Error::LookupIncomplete(_)), "{err}");
    drop(q);
    publish_and_close(&repo_path, BUILD_ALL);
    let q = Arc::new(Open::new(&repo_path).lookup().unwrap().unwrap());
    let e = View::open(&q, &ids[1]).unwrap().lookup(b"a/x").unwrap();
    assert_eq!(q.read_chunk(&e.chunks[0].id).unwrap(), b"x two");
}

#[test]
fn a_seeded_index_answers_like_sled_and_follows_the_records_it_writes() {
    let t = tempfile::tempdir().unwrap();
    let (repo_path, ids) = fixture(t.path());
    // What sled answers.
    let (want, want_dirs, want_trees) = {
        let repo = Open::new(&repo_path).open().unwrap();
        let trees: Vec<_> = ids.iter().map(|id| walk(&repo, id)).collect();
        let dirs: Vec<_> = ids[1..]
            .iter()
            .map(|id| (*repo.layer_dirs(id).unwrap()).clone())
            .collect();
        let all = repo.snapshots().unwrap();
        publish(&repo, BUILD_ALL, &[]).unwrap();
        (all, dirs, trees)
    };
    let repo = Open::new(&repo_path).seeded(true).open().unwrap();
    assert!(repo.is_seeded(), "a published catalog seeds the index");
    assert!(
        !repo_path.join(LOOKUP_DIR).join(CATALOG).exists(),
        "opening the index removed the catalog"
    );
    let names = |v: &[Snapshot]| v.iter().map(|s| s.encode()).collect::<Vec<_>>();
    assert_eq!(names(&repo.snapshots().unwrap()), names(&want));
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(
            repo.snapshot(id).unwrap().unwrap().encode(),
            want[i].encode()
        );
        if i > 0 {
            assert_eq!(*repo.layer_dirs(id).unwrap(), want_dirs[i - 1]);
        }
        assert_eq!(walk(&repo, id), want_trees[i]);
    }
    // A new snapshot through the seeded index: the seed must not hide it.
    let src = t.path().join("src");
    fs::write(src.join("added"), b"after the seed").unwrap();
    let s4 = snap(&repo, &src, BackupKind::Incremental);
    assert!(
        repo.is_seeded(),
        "a record written through the seeded handle joins the seed"
    );
    let all = repo.snapshots().unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all.last().unwrap().id, s4.id);
    assert_eq!(repo.snapshot(&s4.id).unwrap().unwrap(), s4);
    drop(repo);
    // What sled holds is what the seed said.
    let repo = Open::new(&repo_path).open().unwrap();
    assert_eq!(names(&repo.snapshots().unwrap()), names(&all));
    drop(repo);
    // The catalog is gone: the next seeded open reads sled.
    fs::remove_file(repo_path.join(LOOKUP_DIR).join(CATALOG)).ok();

    // No catalog (the seeded open removed it): sled answers.
    let repo = Open::new(&repo_path).seeded(true).open().unwrap();
    assert!(!repo.is_seeded());
    assert_eq!(repo.snapshots().unwrap().len(), 4);
    publish(&repo, BUILD_ALL, &[]).unwrap();
    drop(repo);

    // A damaged catalog is not used, and does not stop the index from opening.
    let cat = repo_path.join(LOOKUP_DIR).join(CATALOG);
    let mut bytes = fs::read(&cat).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x55;
    fs::write(&cat, &bytes).unwrap();
    let repo = Open::new(&repo_path).seeded(true).open().unwrap();
    assert!(!repo.is_seeded());
    assert_eq!(repo.snapshots().unwrap().len(), 4);
}
