//! `strata repair`: rebuilding a lost index from the packs gives back exactly what the index held
//! (every snapshot's view equals its reference capture), twice in a row gives the same result, a
//! repair killed with SIGKILL can be rerun, and a directory without its marker is left alone.

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{backup, bin, files_under, new_repo, pseudo_random, strata, strata_ok};
use crate::integration::check::{
    assert_all_views, check, scenario, wait_unlocked, with_repo, Scenario,
};

type Dump = BTreeMap<&'static str, Vec<(Vec<u8>, Vec<u8>)>>;

/// The trees a rebuild restores, read with sled directly. Snapshot records are compared by key:
/// their stats come from the pack copy, written before the last pack's figures were known.
fn dump(repo: &Path) -> Dump {
    wait_unlocked(repo);
    let db = sled::open(repo.join("index")).unwrap();
    let mut out = Dump::new();
    for tree in ["chunks", "layers", "layerdirs", "snapshots", "meta"] {
        let t = db.open_tree(tree).unwrap();
        let rows = t
            .iter()
            .map(|kv| {
                let (k, v) = kv.unwrap();
                let v = if tree == "snapshots" {
                    Vec::new()
                } else {
                    v.to_vec()
                };
                (k.to_vec(), v)
            })
            .collect();
        out.insert(tree, rows);
    }
    drop(db);
    wait_unlocked(repo);
    out
}

#[test]
fn lost_index_is_rebuilt_exactly_and_repair_is_idempotent() {
    let s = scenario();
    let original = dump(&s.repo);
    std::fs::remove_dir_all(s.repo.join("index")).unwrap();

    let c = check(&s.repo, &[]);
    assert_eq!(c.code, 4);
    assert_eq!(c.kinds().into_iter().collect::<Vec<_>>(), ["index_missing"]);
    let out = strata(&s.repo, &["ls", "latest"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("strata repair"));
    assert!(
        !s.repo.join("index").exists(),
        "a read created an empty index"
    );

    // A dry run reports and changes nothing.
    let before = files_under(&s.repo);
    let out = strata(&s.repo, &["repair", "--dry-run", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["snapshots_restored"].as_array().unwrap().len(), 4);
    let mut after_dry = files_under(&s.repo);
    after_dry.remove(Path::new("lock"));
    let mut before_no_lock = before.clone();
    before_no_lock.remove(Path::new("lock"));
    assert_eq!(before_no_lock, after_dry);

    let out = strata(&s.repo, &["repair", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["after"]["clean"], true);
    assert!(r["moved_aside"].is_null());
    let rebuilt = dump(&s.repo);
    // Everything the index held comes back, byte for byte (compression level: the default,
    // which is what init used here).
    assert_eq!(rebuilt, original);
    assert_all_views(&s.repo, &s.snaps);
    assert_eq!(check(&s.repo, &["--read-data"]).code, 0);

    // Idempotent: a second repair rebuilds the same index and moves the first aside.
    let out = strata(&s.repo, &["repair", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let aside = r["moved_aside"].as_str().unwrap();
    assert!(aside.contains("index.damaged-"), "{aside}");
    assert!(Path::new(aside).is_dir());
    assert_eq!(dump(&s.repo), original);
    let want: Vec<String> = s.snaps.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(crate::common::snapshot_ids(&s.repo), want);

    // Backups continue after a rebuild, without reusing a pack number.
    let packs_before = files_under(&s.repo.join("packs"));
    let src = s._t.path().join("src");
    std::fs::write(src.join("after-repair.txt"), b"new data after the repair").unwrap();
    let id = backup(&s.repo, &src, &[]);
    let packs_after = files_under(&s.repo.join("packs"));
    for (p, bytes) in &packs_before {
        assert_eq!(packs_after.get(p), Some(bytes), "{} changed", p.display());
    }
    assert!(packs_after.len() > packs_before.len());
    assert_eq!(
        strata_ok(&s.repo, &["cat", &id, "after-repair.txt"]).stdout,
        b"new data after the repair"
    );
    assert_eq!(check(&s.repo, &["--read-data"]).code, 0);
}

#[test]
fn repair_without_marker_refuses_and_touches_nothing() {
    let (_t, repo) = new_repo();
    std::fs::remove_file(repo.join("STRATA")).unwrap();
    let before = files_under(&repo);
    let out = strata(&repo, &["repair"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no STRATA marker"), "{err}");
    assert_eq!(files_under(&repo), before);
}

#[test]
fn kill_9_during_repair_then_rerun_restores_everything() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    for i in 0..80u64 {
        std::fs::write(src.join(format!("data-{i}.bin")), pseudo_random(1 << 20, i)).unwrap();
    }
    for i in 0..2000u64 {
        let d = src.join(format!("small/{}", i % 40));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i}.txt")), format!("small file {i}")).unwrap();
    }
    let id = backup(&repo, &src, &[]);
    std::fs::remove_dir_all(repo.join("index")).unwrap();
    let mut killed = 0;
    for delay_ms in [3u64, 10, 25, 50, 100, 200, 400] {
        let mut child = Command::new(bin())
            .args(["--repo", repo.to_str().unwrap(), "repair", "--read-data"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        if child.wait().unwrap().signal() == Some(9) {
            killed += 1;
        }
    }
    assert!(killed >= 3, "only {killed} repairs were killed mid-way");
    let out = strata(&repo, &["repair", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!repo.join("index.rebuild").exists());
    assert_eq!(
        strata_ok(&repo, &["cat", &id, "data-79.bin"]).stdout,
        pseudo_random(1 << 20, 79)
    );
    assert_eq!(
        strata_ok(&repo, &["cat", &id, "small/7/f1207.txt"]).stdout,
        b"small file 1207"
    );
    let c = check(&repo, &["--read-data"]);
    assert_eq!(c.code, 0, "{}", c.json);
    assert_eq!(
        c.json["stats"]["layer_entries"].as_u64(),
        Some(1 + 80 + 1 + 40 + 2000)
    );
}

#[test]
fn dropping_a_corrupt_chunk_lets_a_rehash_backup_heal_old_snapshots() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let data = pseudo_random(300_000, 5);
    std::fs::write(src.join("a.bin"), &data).unwrap();
    let old = backup(&repo, &src, &[]);
    // Flip a payload byte of the (raw-stored, random) chunk.
    let pack = std::fs::read_dir(repo.join("packs"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .next()
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w == &data[1000..1064])
        .unwrap();
    bytes[at] ^= 1;
    std::fs::write(&pack, bytes).unwrap();

    let out = strata(&repo, &["repair", "--read-data"]);
    assert_eq!(out.status.code(), Some(4));
    assert_eq!(
        strata(&repo, &["cat", &old, "a.bin"]).status.code(),
        Some(1)
    );
    // Dedup no longer finds the chunk, so a rehash backup stores it again: the old snapshot heals.
    backup(&repo, &src, &["--rehash"]);
    assert_eq!(strata_ok(&repo, &["cat", &old, "a.bin"]).stdout, data);
    assert_eq!(check(&repo, &["--read-data"]).code, 0);
}

#[test]
fn rebuild_honours_forget_tombstones_and_the_last_written_snapshot_blob() {
    use strata::repo::pack::RecordType;
    use strata::repo::writer::PackWriter;
    let s = scenario();
    let (forgotten, rewritten) = (&s.snaps[3].0, &s.snaps[1].0);
    with_repo(&s.repo, |repo| {
        // What forget/consolidate write: a tombstone, and a newer copy of a snapshot record.
        let mut snap = repo.snapshot(&rewritten.parse().unwrap()).unwrap().unwrap();
        snap.tags = vec!["rewritten".into()];
        let mut w = PackWriter::new(repo.clone(), Default::default());
        let gone: strata::id::SnapshotId = forgotten.parse().unwrap();
        w.add_blob(RecordType::Forget, &gone.0).unwrap();
        w.add_blob(RecordType::Snapshot, &snap.encode()).unwrap();
        w.finish().unwrap();
    });
    // The live index still lists the forgotten snapshot: a leftover, not damage.
    let c = check(&s.repo, &[]);
    assert_eq!(c.code, 3, "{}", c.json);
    assert_eq!(
        c.snapshots_with("tombstoned_snapshot"),
        [forgotten.clone()].into()
    );
    // The index still holds the earlier record: an interrupted rewrite, not a forged record.
    assert_eq!(
        c.snapshots_with("stale_snapshot_record"),
        [rewritten.clone()].into()
    );

    std::fs::remove_dir_all(s.repo.join("index")).unwrap();
    let out = strata(&s.repo, &["repair", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["tombstoned"], 1);
    let list = crate::common::snapshot_list(&s.repo);
    let ids: Vec<&str> = list.iter().map(|v| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [&s.snaps[0].0, &s.snaps[1].0, &s.snaps[2].0]);
    assert_eq!(list[1]["tags"], serde_json::json!(["rewritten"]));
    assert_all_views(&s.repo, &s.snaps[..3]);
    // The forgotten snapshot's layer is not restored either: nothing dangles.
    assert_eq!(check(&s.repo, &[]).code, 0);
}

/// The newest pack file (the one the last backup finished).
fn last_pack(repo: &Path) -> std::path::PathBuf {
    files_under(&repo.join("packs"))
        .into_keys()
        .filter(|p| p.extension().is_some_and(|e| e == "pack"))
        .max_by_key(|p| p.file_name().unwrap().to_os_string())
        .map(|p| repo.join("packs").join(p))
        .unwrap()
}

/// Runs `repair --json`; returns (exit code, report).
fn repair_json(repo: &Path) -> (i32, serde_json::Value) {
    let out = strata(repo, &["repair", "--json"]);
    let code = out.status.code().unwrap();
    assert_ne!(code, 1, "{}", String::from_utf8_lossy(&out.stderr));
    (code, serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn repair_keeps_snapshot_whose_record_is_lost_and_prune_keeps_its_data() {
    use crate::integration::check::pack_records;
    let s = scenario();
    // Cutting 100 bytes off the last pack loses only its last record: the newest snapshot's blob.
    let path = last_pack(&s.repo);
    let (rtype, _, _, stored) = *pack_records(&path).last().unwrap();
    assert_eq!(rtype, 2, "the last record is a snapshot blob");
    assert!(56 + stored > 100);
    let size = std::fs::metadata(&path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(size - 100).unwrap();
    drop(f);

    // A dry run reads a copy of the old index: it reports the same, and changes nothing (but the
    // derived lookup files, which every opening of the index removes).
    let mut before = files_under(&s.repo);
    let out = strata(&s.repo, &["repair", "--dry-run", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["snapshots_dropped"], serde_json::json!([]), "{r}");
    assert_eq!(r["snapshots_written_back"][0]["id"], s.snaps[3].0, "{r}");
    let mut after = files_under(&s.repo);
    before.remove(Path::new("lock"));
    after.remove(Path::new("lock"));
    let changed: Vec<_> = before
        .keys()
        .chain(after.keys())
        .filter(|k| !k.starts_with("lookup") && before.get(*k) != after.get(*k))
        .collect();
    assert!(changed.is_empty(), "a dry run changed {changed:?}");

    // The old index still describes the snapshot and its layer blob is intact: it is kept.
    let (_, r) = repair_json(&s.repo);
    assert_eq!(r["snapshots_dropped"], serde_json::json!([]), "{r}");
    assert_eq!(r["snapshots_restored"].as_array().unwrap().len(), 4, "{r}");
    assert_eq!(r["snapshots_written_back"][0]["id"], s.snaps[3].0, "{r}");
    let want: Vec<String> = s.snaps.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(crate::common::snapshot_ids(&s.repo), want);
    assert_all_views(&s.repo, &s.snaps);
    assert_eq!(check(&s.repo, &["--read-data"]).code, 0);

    // Its record went back into the packs: a rebuild from the packs alone restores it too.
    std::fs::remove_dir_all(s.repo.join("index")).unwrap();
    let (_, r) = repair_json(&s.repo);
    assert_eq!(r["snapshots_dropped"], serde_json::json!([]), "{r}");
    assert_eq!(crate::common::snapshot_ids(&s.repo), want);
    assert_all_views(&s.repo, &s.snaps);

    // The repairs found a torn pack: prune waits for the user's word, then deletes nothing live.
    let out = strata(&s.repo, &["prune"]);
    assert_eq!(out.status.code(), Some(1));
    strata_ok(&s.repo, &["prune", "--force-after-damage"]);
    assert_all_views(&s.repo, &s.snaps);
    assert_eq!(check(&s.repo, &["--read-data"]).code, 0);
}

/// Flips a byte in the middle of the first incremental's layer blob (the old index still holds
/// that layer's entries).
fn damage_first_incremental_layer_blob(s: &Scenario) {
    use crate::integration::check::{flip, pack_records};
    let files = crate::integration::check::file_chunks(&s.repo);
    let probe =
        crate::integration::check::chunks_of(&files, s, 1, "orders/2026/11/22/order-4.json")[0];
    let (pack, _, _) = crate::integration::check::location(&s.repo, &probe);
    let path = crate::integration::check::pack_path(&s.repo, pack);
    let (_, off, _, stored) = *pack_records(&path)
        .iter()
        .find(|r| r.0 == 1)
        .expect("a layer blob in the incremental's pack");
    flip(&path, off + 56 + stored / 2);
}

#[test]
fn repair_rebuilds_snapshot_whose_layer_blob_is_damaged_from_the_old_index() {
    let s = scenario();
    damage_first_incremental_layer_blob(&s);

    let (code, r) = repair_json(&s.repo);
    assert_eq!(r["snapshots_dropped"], serde_json::json!([]), "{r}");
    assert_eq!(r["snapshots_written_back"][0]["id"], s.snaps[1].0, "{r}");
    assert_eq!(r["snapshots_written_back"].as_array().unwrap().len(), 1);
    assert_eq!(
        code, 3,
        "a damaged record is a warning once nothing is lost"
    );
    assert_all_views(&s.repo, &s.snaps);
    assert_eq!(check(&s.repo, &["--read-data"]).code, 0);

    // New layer blobs were written: the packs alone rebuild every snapshot.
    std::fs::remove_dir_all(s.repo.join("index")).unwrap();
    let (_, r) = repair_json(&s.repo);
    assert_eq!(r["snapshots_dropped"], serde_json::json!([]), "{r}");
    assert_all_views(&s.repo, &s.snaps);
}

#[test]
fn prune_refuses_after_repair_lost_a_snapshot_until_forced() {
    let s = scenario();
    damage_first_incremental_layer_blob(&s);
    // Without the old index the layer is truly gone: the snapshot is reported lost.
    std::fs::remove_dir_all(s.repo.join("index")).unwrap();
    let (code, r) = repair_json(&s.repo);
    assert_eq!(code, 4);
    assert_eq!(r["snapshots_dropped"][0]["id"], s.snaps[1].0);
    // What remains checks clean, yet prune must not act on it unasked.
    assert_eq!(check(&s.repo, &[]).code, 0);
    let before = files_under(&s.repo.join("packs"));
    let out = strata(&s.repo, &["prune"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--force-after-damage"), "{err}");
    assert!(err.contains(&s.snaps[1].0[..8]), "{err}");
    assert_eq!(files_under(&s.repo.join("packs")), before);
    // A dry run only reports.
    strata_ok(&s.repo, &["prune", "--dry-run"]);
    // The user's word: prune runs, and the acknowledged marker is gone.
    strata_ok(&s.repo, &["prune", "--force-after-damage"]);
    strata_ok(&s.repo, &["prune"]);
    let mut keep = s.snaps.clone();
    keep.remove(1);
    assert_all_views(&s.repo, &keep);
}
