use super::*;
use crate::repo::store::Space;
use crate::snapshot::BackupKind;
use crate::testutil::snap;

/// A full and two incrementals on it, oldest first.
fn chain_of_three() -> (tempfile::TempDir, Arc<Repo>, Vec<SnapshotId>) {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/a"), b"one").unwrap();
    let repo = crate::open::Open::new(t.path().join("repo"))
        .create(&Default::default())
        .unwrap();
    let mut ids = vec![snap(&repo, &src, BackupKind::Full).id];
    std::fs::write(src.join("d/b"), b"two").unwrap();
    ids.push(snap(&repo, &src, BackupKind::Incremental).id);
    std::fs::write(src.join("d/c"), b"three").unwrap();
    ids.push(snap(&repo, &src, BackupKind::Incremental).id);
    (t, repo, ids)
}

fn kinds(r: &CheckReport) -> Vec<(ProblemKind, Option<SnapshotId>)> {
    let mut v: Vec<_> = r.problems.iter().map(|p| (p.kind, p.snapshot)).collect();
    v.sort();
    v
}

#[test]
fn a_clean_chain_has_no_problems() {
    let (_t, repo, _) = chain_of_three();
    let r = check(&repo, &CheckOptions::default()).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.stats.snapshots, 3);
}

#[test]
fn a_parentless_incremental_breaks_its_chain_and_every_chain_through_it() {
    let (_t, repo, ids) = chain_of_three();
    let mut rec = repo.snapshot(&ids[1]).unwrap().unwrap();
    rec.parent = None;
    repo.index()
        .insert(Space::Records, &rec.id.0, &rec.encode())
        .unwrap();
    repo.clear_layer_caches();
    let r = check(&repo, &CheckOptions::default()).unwrap();
    let mut want = vec![
        (ProblemKind::BrokenChain, Some(ids[1])),
        (ProblemKind::BrokenChain, Some(ids[2])),
        (ProblemKind::SnapshotRecordMismatch, Some(ids[1])),
    ];
    want.sort();
    assert_eq!(kinds(&r), want, "{:?}", r.problems);
    let broken = |s: SnapshotId| {
        format!(
            "Snapshot {s}: its chain ends in incremental {}, which is not a full layer",
            ids[1]
        )
    };
    for s in [ids[1], ids[2]] {
        assert!(
            r.problems.iter().any(|p| p.message == broken(s)),
            "{:?}",
            r.problems
        );
    }
    assert_eq!(r.damaged_snapshots, [ids[1], ids[2]]);
    assert!(r.damaged());
}
