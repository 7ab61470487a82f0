//! `strata check` against a damage matrix. A repository with full, incremental, differential and
//! incremental snapshots of the round-trip fixture is damaged one way per test; the expected bad
//! chunks and damaged (snapshot, path) pairs are computed here independently — from the index
//! (`Repo::chunk_location`), the pack bytes, and each snapshot's view walked in full — never with
//! check's own code. Every test also proves that what is not damaged still reads correctly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use strata::entry::Kind;
use strata::id::ChunkId;
use strata::layers::{join, View};
use strata::repo::Repo;

use crate::common::fixture::{self, assert_same, from_view, Tree};
use crate::common::mount::{fuse_available, snapshot_names, with_timeout, Mount};
use crate::common::{strata, strata_ok};
use std::time::Duration;

/// A scenario repository (each test damages its own).
pub struct Scenario {
    pub _t: tempfile::TempDir,
    pub repo: PathBuf,
    /// (snapshot id, reference capture), oldest first: full, incremental, differential, incremental.
    pub snaps: Vec<(String, Tree)>,
}

/// Builds the scenario: the fixture backed up as full, incremental, differential, incremental.
pub fn scenario() -> Scenario {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    let kinds: [&[&str]; 4] = [
        &[],
        &["--kind", "incremental"],
        &["--kind", "differential"],
        &["--kind", "incremental"],
    ];
    let snaps = fixture::history(&repo, &t.path().join("src"), 11, &kinds);
    Scenario { _t: t, repo, snaps }
}

/// Waits until no process holds the repository lock or the database's file lock. A child that a
/// parallel test forks while this process holds them keeps copies of the descriptors (and so the
/// locks) until it execs; under load that window can make the next command find the repository
/// "in use". Called around every in-process open.
pub fn wait_unlocked(repo: &Path) {
    use std::os::unix::io::AsRawFd;
    for f in [repo.join("lock"), repo.join("index").join("db")] {
        let Ok(file) = std::fs::OpenOptions::new().read(true).write(true).open(&f) else {
            continue;
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        // SAFETY: flock on a valid, owned descriptor.
        while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "{} stays locked",
                f.display()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Closing the descriptor releases the probe's lock.
    }
}

/// Runs `f` on the repository opened in this process, waiting for the locks before and after.
pub fn with_repo<T>(repo: &Path, f: impl FnOnce(&Arc<Repo>) -> T) -> T {
    wait_unlocked(repo);
    let r = strata::open::Open::new(repo).open().unwrap();
    let out = f(&r);
    drop(r);
    wait_unlocked(repo);
    out
}

/// Every regular file of every snapshot with its chunk ids, walked through the view.
pub fn file_chunks(repo: &Path) -> BTreeMap<(String, Vec<u8>), Vec<ChunkId>> {
    with_repo(repo, file_chunks_in)
}

fn file_chunks_in(r: &Arc<Repo>) -> BTreeMap<(String, Vec<u8>), Vec<ChunkId>> {
    let mut out = BTreeMap::new();
    for s in r.snapshots().unwrap() {
        let view = View::open(r, &s.id).unwrap();
        let mut stack = vec![Vec::new()];
        while let Some(dir) = stack.pop() {
            for kv in view.children(&dir).unwrap() {
                let (name, e) = kv.unwrap();
                let p = join(&dir, &name);
                match e.kind {
                    Kind::Dir => stack.push(p),
                    Kind::File => {
                        out.insert(
                            (s.id.to_string(), p),
                            e.chunks.iter().map(|c| c.id).collect(),
                        );
                    }
                    _ => {}
                }
            }
        }
    }
    out
}

/// (snapshot, path) of the files using any of `bad`.
pub fn expected_damage(
    files: &BTreeMap<(String, Vec<u8>), Vec<ChunkId>>,
    bad: &BTreeSet<ChunkId>,
) -> BTreeSet<(String, Vec<u8>)> {
    files
        .iter()
        .filter(|(_, cs)| cs.iter().any(|c| bad.contains(c)))
        .map(|(k, _)| k.clone())
        .collect()
}

/// The chunks of `path` in snapshot `i`.
pub fn chunks_of(
    files: &BTreeMap<(String, Vec<u8>), Vec<ChunkId>>,
    s: &Scenario,
    i: usize,
    path: &str,
) -> Vec<ChunkId> {
    files[&(s.snaps[i].0.clone(), path.as_bytes().to_vec())].clone()
}

/// Records of a pack as (type, offset, id, stored length), parsed here from the format spec.
pub fn pack_records(pack: &Path) -> Vec<(u8, u64, ChunkId, u64)> {
    let data = std::fs::read(pack).unwrap();
    let mut out = Vec::new();
    let mut off = 16usize;
    while off + 56 <= data.len() {
        assert_eq!(&data[off..off + 4], b"SREC");
        let stored = u32::from_le_bytes(data[off + 12..off + 16].try_into().unwrap()) as u64;
        let id = ChunkId(data[off + 16..off + 48].try_into().unwrap());
        out.push((data[off + 4], off as u64, id, stored));
        off += 56 + stored as usize;
    }
    out
}

/// Path of pack `n` (as the index names it).
pub fn pack_path(repo: &Path, n: u64) -> PathBuf {
    repo.join("packs")
        .join(format!("{:02x}", n & 0xff))
        .join(format!("{n:016x}.pack"))
}

/// (pack, offset, stored length) of an indexed record.
pub fn location(repo: &Path, id: &ChunkId) -> (u64, u64, u64) {
    with_repo(repo, |r| {
        let l = r.chunk_location(id).unwrap();
        (l.pack.0, l.offset, l.stored_len as u64)
    })
}

/// Every index entry (id → pack).
pub fn index(repo: &Path) -> BTreeMap<ChunkId, (u64, u64, u64)> {
    wait_unlocked(repo);
    let db = sled::open(repo.join("index")).unwrap();
    let t = db.open_tree("chunks").unwrap();
    let out = t
        .iter()
        .map(|kv| {
            let (k, v) = kv.unwrap();
            let n = |i: usize| u64::from_be_bytes(v[i..i + 8].try_into().unwrap());
            let stored = u32::from_be_bytes(v[16..20].try_into().unwrap()) as u64;
            (
                ChunkId(k.as_ref().try_into().unwrap()),
                (n(0), n(8), stored),
            )
        })
        .collect();
    drop((t, db));
    wait_unlocked(repo);
    out
}

/// Flips one byte at `at` in `file`.
pub fn flip(file: &Path, at: u64) {
    let mut d = std::fs::read(file).unwrap();
    d[at as usize] ^= 0x55;
    std::fs::write(file, d).unwrap();
}

/// Parsed `check --json` output and exit code.
pub struct Checked {
    pub code: i32,
    pub json: serde_json::Value,
}

impl Checked {
    pub fn damaged_files(&self) -> BTreeSet<(String, Vec<u8>)> {
        self.json["damaged_files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                (
                    f["snapshot"].as_str().unwrap().to_string(),
                    f["path"].as_str().unwrap().as_bytes().to_vec(),
                )
            })
            .collect()
    }

    pub fn bad_chunks(&self) -> BTreeSet<ChunkId> {
        strings(&self.json["bad_chunks"])
            .iter()
            .map(|s| s.parse().unwrap())
            .collect()
    }

    pub fn kinds(&self) -> BTreeSet<String> {
        self.json["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["kind"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn damaged_snapshots(&self) -> BTreeSet<String> {
        strings(&self.json["damaged_snapshots"])
    }

    /// Snapshots named by problems of `kind`.
    pub fn snapshots_with(&self, kind: &str) -> BTreeSet<String> {
        self.json["problems"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["kind"] == kind)
            .filter_map(|p| p["snapshot"].as_str().map(str::to_string))
            .collect()
    }
}

pub fn strings(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

pub fn check(repo: &Path, extra: &[&str]) -> Checked {
    let mut args = vec!["check", "--json"];
    args.extend_from_slice(extra);
    let out = strata(repo, &args);
    let code = out.status.code().unwrap();
    assert!(
        code != 1,
        "check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Checked {
        code,
        json: serde_json::from_slice(&out.stdout).expect("check --json"),
    }
}

/// Reads every file of every snapshot through the library: files in `damaged` must fail with a
/// corruption error, every other file must read back exactly as captured.
pub fn assert_reads(s: &Scenario, damaged: &BTreeSet<(String, Vec<u8>)>, skip: &[&str]) {
    with_repo(&s.repo, |r| reads_in(r, s, damaged, skip))
}

fn reads_in(r: &Arc<Repo>, s: &Scenario, damaged: &BTreeSet<(String, Vec<u8>)>, skip: &[&str]) {
    for (id, want) in &s.snaps {
        if skip.contains(&id.as_str()) {
            continue;
        }
        let view = View::open(r, &id.parse().unwrap()).unwrap();
        for (path, w) in want.iter().filter(|(_, e)| e.kind == Kind::File) {
            let e = view.lookup(path).unwrap();
            let mut buf = Vec::new();
            let res = strata::content::write_all_to(r, &e, &mut buf);
            let label = format!("{} in {}", String::from_utf8_lossy(path), &id[..8]);
            if damaged.contains(&(id.clone(), path.clone())) {
                assert!(res.is_err(), "{label} read despite damage");
            } else {
                assert!(res.is_ok(), "{label}: {:?}", res.err());
                assert_eq!(
                    Some(*blake3::hash(&buf).as_bytes()),
                    w.content,
                    "{label} differs"
                );
            }
        }
    }
}

/// `strata cat` of an undamaged file of snapshot `i` gives exactly the captured content.
pub fn assert_cat_ok(s: &Scenario, i: usize, path: &str) {
    let out = strata_ok(&s.repo, &["cat", &s.snaps[i].0, path]);
    let want = s.snaps[i].1[path.as_bytes()].content;
    assert_eq!(
        Some(*blake3::hash(&out.stdout).as_bytes()),
        want,
        "cat {path}"
    );
}

/// Every snapshot's whole view equals its reference capture.
pub fn assert_all_views(repo: &Path, snaps: &[(String, Tree)]) {
    with_repo(repo, |r| {
        for (id, want) in snaps {
            let view = View::open(r, &id.parse().unwrap()).unwrap();
            assert_same(&id[..8], want, &from_view(r, &view));
        }
    })
}

/// Hash of every file under `dir` except the lock file (which holds the pid of its last user).
fn tree_hash(dir: &Path) -> BTreeMap<PathBuf, [u8; 32]> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() != "lock" {
                out.insert(
                    p.clone(),
                    *blake3::hash(&std::fs::read(&p).unwrap()).as_bytes(),
                );
            }
        }
    }
    out
}

#[test]
fn clean_repository_checks_clean_and_check_is_read_only() {
    let s = scenario();
    let before = tree_hash(&s.repo);
    for extra in [
        &[][..],
        &["--read-data"],
        &["--read-data=30", "--seed", "7"],
    ] {
        let c = check(&s.repo, extra);
        assert_eq!(c.code, 0, "{extra:?}: {}", c.json);
        assert_eq!(c.json["clean"], true);
        assert!(c.damaged_files().is_empty());
    }
    let all = check(&s.repo, &["--read-data"]);
    let index_entries = all.json["stats"]["index_entries"].as_u64().unwrap();
    assert_eq!(
        all.json["stats"]["records_verified"].as_u64(),
        Some(index_entries)
    );
    assert_eq!(all.json["stats"]["snapshots"].as_u64(), Some(4));
    // The human form says so too.
    let out = strata_ok(&s.repo, &["check"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("No problems found"));
    assert_eq!(tree_hash(&s.repo), before, "check modified the repository");
}

#[test]
fn sampled_read_data_is_seeded() {
    let s = scenario();
    let a = check(&s.repo, &["--read-data=25", "--seed", "1"]);
    let b = check(&s.repo, &["--read-data=25", "--seed", "1"]);
    let all = check(&s.repo, &["--read-data"]);
    let n = |c: &Checked| c.json["stats"]["bytes_verified"].as_u64().unwrap();
    assert_eq!(n(&a), n(&b));
    assert!(n(&a) < n(&all));
    let bad = strata(&s.repo, &["check", "--read-data=0"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn deleted_index_entry_is_reported_with_its_files_and_repair_restores_it() {
    let s = scenario();
    let files = file_chunks(&s.repo);
    // order-2.json changed after the full: its old chunk is in the full's view only.
    let victim = chunks_of(&files, &s, 0, "orders/2026/11/20/order-2.json")[0];
    {
        wait_unlocked(&s.repo);
        let db = sled::open(s.repo.join("index")).unwrap();
        let removed = db.open_tree("chunks").unwrap().remove(victim.0).unwrap();
        assert!(removed.is_some());
        db.flush().unwrap();
    }
    wait_unlocked(&s.repo);
    let bad = BTreeSet::from([victim]);
    let want = expected_damage(&files, &bad);
    assert_eq!(want.len(), 1);
    let c = check(&s.repo, &[]);
    assert_eq!(c.code, 4, "{}", c.json);
    assert!(c.kinds().contains("missing_chunk"));
    assert_eq!(c.bad_chunks(), bad);
    assert_eq!(c.damaged_files(), want);
    assert_eq!(
        c.damaged_snapshots(),
        BTreeSet::from([s.snaps[0].0.clone()])
    );
    assert_reads(&s, &want, &[]);
    assert_cat_ok(&s, 0, "orders/2026/11/20/order-1.json");
    assert_cat_ok(&s, 1, "orders/2026/11/20/order-2.json");
    let out = strata(
        &s.repo,
        &["cat", &s.snaps[0].0, "orders/2026/11/20/order-2.json"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing"));

    // The record is still in its pack: repair indexes it again, and nothing is lost.
    let out = strata(&s.repo, &["repair"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(check(&s.repo, &["--read-data"]).code, 0);
    assert_all_views(&s.repo, &s.snaps);
}

#[test]
fn flipped_chunk_byte_is_found_by_read_data_in_the_views_that_show_it() {
    let s = scenario();
    let files = file_chunks(&s.repo);
    // A chunk of big.bin that the differential's insertion replaced: shown by the full and the
    // incremental on top of it, shadowed in the differential and the incremental after it.
    let old = chunks_of(&files, &s, 0, "media/big.bin");
    let new = chunks_of(&files, &s, 2, "media/big.bin");
    let victim = *old.iter().find(|c| !new.contains(c)).unwrap();
    let (pack, offset, stored) = location(&s.repo, &victim);
    flip(&pack_path(&s.repo, pack), offset + 56 + stored / 2);
    let bad = BTreeSet::from([victim]);
    let want = expected_damage(&files, &bad);
    let want_snaps: BTreeSet<String> = want.iter().map(|(s, _)| s.clone()).collect();
    assert_eq!(
        want_snaps,
        BTreeSet::from([s.snaps[0].0.clone(), s.snaps[1].0.clone()])
    );

    // Structure alone cannot see a payload flip (headers are intact): documented.
    assert_eq!(check(&s.repo, &[]).code, 0);
    let c = check(&s.repo, &["--read-data"]);
    assert_eq!(c.code, 4, "{}", c.json);
    assert_eq!(c.kinds(), BTreeSet::from(["corrupt_record".to_string()]));
    assert_eq!(c.bad_chunks(), bad);
    assert_eq!(c.damaged_files(), want);
    assert_eq!(c.damaged_snapshots(), want_snaps);
    assert_reads(&s, &want, &[]);
    assert_cat_ok(&s, 2, "media/big.bin");
    assert_cat_ok(&s, 0, "logs/app.log");
    assert_eq!(
        strata(&s.repo, &["cat", &s.snaps[1].0, "media/big.bin"])
            .status
            .code(),
        Some(1)
    );

    // repair --read-data drops the bad record; the files stay listed and fail to read.
    let out = strata(&s.repo, &["repair", "--read-data", "--json"]);
    assert_eq!(out.status.code(), Some(4));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["corrupt_records"][0]["id"], victim.to_string());
    let after = check(&s.repo, &[]);
    assert_eq!(after.kinds(), BTreeSet::from(["missing_chunk".to_string()]));
    assert_eq!(after.damaged_files(), want);
    assert_reads(&s, &want, &[]);
    let ls = strata_ok(&s.repo, &["ls", &s.snaps[0].0, "media"]);
    assert!(String::from_utf8_lossy(&ls.stdout).contains("big.bin"));

    // Through the mount: listed with its size, reads fail with EIO, other files read.
    if !fuse_available() {
        return;
    }
    let names = snapshot_names(&s.repo);
    let m = Mount::start(&s.repo, &[]);
    let mp = m.path.clone();
    with_timeout(Duration::from_secs(60), move || {
        let snap = mp.join("snapshots").join(&names[0]);
        let big = snap.join("media/big.bin");
        assert_eq!(std::fs::metadata(&big).unwrap().len(), 3 << 20);
        let err = std::fs::read(&big).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        assert_eq!(
            std::fs::read(snap.join("orders/2026/11/20/order-1.json")).unwrap(),
            br#"{"id":1,"total":10.5}"#
        );
        // The differential replaced big.bin: its view reads it.
        let newer = mp.join("snapshots").join(&names[2]).join("media/big.bin");
        assert_eq!(std::fs::read(newer).unwrap().len(), (3 << 20) + 22);
    });
}

#[test]
fn truncated_pack_reports_exactly_the_records_past_the_cut() {
    let s = scenario();
    let files = file_chunks(&s.repo);
    // The incremental's pack: its new chunks, then its layer blob and snapshot blob.
    let probe = chunks_of(&files, &s, 1, "orders/2026/11/22/order-4.json")[0];
    let (pack, _, _) = location(&s.repo, &probe);
    let path = pack_path(&s.repo, pack);
    let recs = pack_records(&path);
    let size = std::fs::metadata(&path).unwrap().len();
    let cut = size / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    let bad: BTreeSet<ChunkId> = recs
        .iter()
        .filter(|(_, off, _, stored)| off + 56 + stored > cut)
        .map(|r| r.2)
        .collect();
    assert!(!bad.is_empty());
    let layer_blob_lost = recs
        .iter()
        .any(|(t, off, _, stored)| *t == 1 && off + 56 + stored > cut);
    let want = expected_damage(&files, &bad);

    let c = check(&s.repo, &[]);
    assert_eq!(c.code, 4, "{}", c.json);
    assert!(c.kinds().contains("record_out_of_bounds"));
    assert_eq!(c.bad_chunks(), bad);
    assert_eq!(c.damaged_files(), want);
    if layer_blob_lost {
        assert_eq!(
            c.snapshots_with("missing_layer_blob"),
            BTreeSet::from([s.snaps[1].0.clone()])
        );
    }
    assert_reads(&s, &want, &[]);

    // Repair: the tail of the pack is dropped and reported; what remains is indexed. The
    // incremental's layer and record, lost with the tail, are still in the old index: it is kept,
    // its lost files reported.
    let out = strata(&s.repo, &["repair", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Lost file data is damage; a torn pack that held only what was recovered is a warning.
    let code = if want.is_empty() { 3 } else { 4 };
    assert_eq!(out.status.code(), Some(code), "{r}");
    assert_eq!(r["torn"][0]["pack"], format!("{pack:016x}"));
    assert_eq!(r["torn"][0]["resynced"], false);
    assert_eq!(r["snapshots_dropped"], serde_json::json!([]), "{r}");
    if layer_blob_lost {
        assert_eq!(r["snapshots_written_back"][0]["id"], s.snaps[1].0);
    }
    let after = check(&s.repo, &[]);
    assert_eq!(after.damaged_files(), want);
    assert_reads(&s, &want, &[]);
}

#[test]
fn deleted_pack_damages_its_files_and_repair_keeps_dependants_as_damaged() {
    let s = scenario();
    let files = file_chunks(&s.repo);
    // The differential's pack: the full and the first incremental do not need it; the last
    // incremental is built on the differential.
    let probe = chunks_of(&files, &s, 2, "doomed/reborn.txt")[0];
    let (pack, _, _) = location(&s.repo, &probe);
    let bad: BTreeSet<ChunkId> = index(&s.repo)
        .into_iter()
        .filter(|(_, (p, _, _))| *p == pack)
        .map(|(id, _)| id)
        .collect();
    std::fs::remove_file(pack_path(&s.repo, pack)).unwrap();
    let want = expected_damage(&files, &bad);
    assert!(want.contains(&(s.snaps[3].0.clone(), b"media/big.bin".to_vec())));

    let c = check(&s.repo, &[]);
    assert_eq!(c.code, 4, "{}", c.json);
    assert!(c.kinds().contains("missing_pack"));
    assert_eq!(c.bad_chunks(), bad);
    assert_eq!(c.damaged_files(), want);
    assert!(c
        .snapshots_with("missing_layer_blob")
        .contains(&s.snaps[2].0));
    assert_reads(&s, &want, &[]);
    // Undamaged snapshots are whole.
    assert_all_views(&s.repo, &s.snaps[..2]);
    assert_cat_ok(&s, 1, "media/big.bin");

    // The old index still holds the differential's layer and record: repair keeps it (its files
    // in the lost pack stay damaged) and writes them back into a new pack.
    let out = strata(&s.repo, &["repair", "--json"]);
    assert_eq!(out.status.code(), Some(4));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["snapshots_dropped"], serde_json::json!([]), "{r}");
    assert_eq!(r["snapshots_written_back"][0]["id"], s.snaps[2].0, "{r}");
    let after = check(&s.repo, &[]);
    assert_eq!(after.damaged_files(), want);
    assert_reads(&s, &want, &[]);
    assert_all_views(&s.repo, &s.snaps[..2]);

    // With that new pack and the index lost too, nothing describes the differential any more;
    // its dependant is kept and reported, since its view needs the parent.
    std::fs::remove_dir_all(s.repo.join("index")).unwrap();
    // The pack repair wrote them into is the newest.
    let newest = std::fs::read_dir(s.repo.join("packs"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .max_by_key(|p| p.file_name().unwrap().to_os_string())
        .unwrap();
    std::fs::remove_file(newest).unwrap();
    let out = strata(&s.repo, &["repair", "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(4), "{r}");
    assert_eq!(r["snapshots_restored"].as_array().unwrap().len(), 3, "{r}");
    let after = check(&s.repo, &[]);
    assert_eq!(
        after.snapshots_with("missing_parent"),
        BTreeSet::from([s.snaps[3].0.clone()])
    );
    assert!(after.damaged_snapshots().contains(&s.snaps[3].0));
    let out = strata(&s.repo, &["ls", &s.snaps[3].0]);
    assert_eq!(out.status.code(), Some(1));
    assert_all_views(&s.repo, &s.snaps[..2]);
}

#[test]
fn flipped_layer_blob_is_reported_and_only_its_snapshot_is_lost_to_a_rebuild() {
    let s = scenario();
    let files = file_chunks(&s.repo);
    let probe = chunks_of(&files, &s, 1, "orders/2026/11/22/order-4.json")[0];
    let (pack, _, _) = location(&s.repo, &probe);
    let path = pack_path(&s.repo, pack);
    let (_, off, blob, stored) = *pack_records(&path)
        .iter()
        .find(|r| r.0 == 1)
        .expect("a layer blob in the incremental's pack");
    flip(&path, off + 56 + stored / 2);

    let c = check(&s.repo, &[]);
    assert_eq!(c.code, 4, "{}", c.json);
    assert_eq!(c.bad_chunks(), BTreeSet::from([blob]));
    assert_eq!(
        c.snapshots_with("missing_layer_blob"),
        BTreeSet::from([s.snaps[1].0.clone()])
    );
    // The layer itself is intact in the index: no file is damaged, everything reads.
    assert!(c.damaged_files().is_empty());
    assert_all_views(&s.repo, &s.snaps);

    // Rebuilding from packs cannot restore that snapshot; the others come back whole.
    std::fs::remove_dir_all(s.repo.join("index")).unwrap();
    let out = strata(&s.repo, &["repair", "--json"]);
    assert_eq!(out.status.code(), Some(4));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["snapshots_dropped"].as_array().unwrap().len(), 1);
    assert_eq!(r["snapshots_dropped"][0]["id"], s.snaps[1].0);
    let mut keep = s.snaps.clone();
    keep.remove(1);
    assert_all_views(&s.repo, &keep);
}

#[test]
fn flipped_record_header_is_skipped_by_repair_which_resyncs_at_the_next_record() {
    let s = scenario();
    let files = file_chunks(&s.repo);
    // A chunk record in the middle of the full's pack, and the records after it.
    let probe = chunks_of(&files, &s, 0, "media/big.bin")[0];
    let (pack, _, _) = location(&s.repo, &probe);
    let path = pack_path(&s.repo, pack);
    let recs = pack_records(&path);
    let mid = recs.len() / 2;
    let (rtype, off, victim, stored) = recs[mid];
    assert_eq!(rtype, 0, "a chunk record");
    flip(&path, off + 20); // inside the id: the header checksum fails
    let bad = BTreeSet::from([victim]);
    let want = expected_damage(&files, &bad);
    assert!(!want.is_empty());

    let c = check(&s.repo, &[]);
    assert_eq!(c.code, 4);
    assert!(c.kinds().contains("bad_record_header"));
    assert_eq!(c.bad_chunks(), bad);
    assert_eq!(c.damaged_files(), want);

    std::fs::remove_dir_all(s.repo.join("index")).unwrap();
    let out = strata(&s.repo, &["repair", "--json"]);
    assert_eq!(out.status.code(), Some(4));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let torn = &r["torn"][0];
    assert_eq!(torn["offset"].as_u64(), Some(off));
    assert_eq!(torn["len"].as_u64(), Some(56 + stored));
    assert_eq!(torn["resynced"], true);
    // Every other record came back: only the files using the lost chunk are damaged.
    let after = check(&s.repo, &["--read-data"]);
    assert_eq!(after.bad_chunks(), bad);
    assert_eq!(after.damaged_files(), want);
    assert_eq!(r["snapshots_restored"].as_array().unwrap().len(), 4);
    assert_reads(&s, &want, &[]);
}

/// Rewrites snapshot `id`'s record in the index (not its pack copy) with `edit`.
fn edit_index_record(repo: &Path, id: &str, edit: impl FnOnce(&mut strata::snapshot::Snapshot)) {
    wait_unlocked(repo);
    // The lookup catalog caches records; a damaged index would not update it either.
    let _ = std::fs::remove_file(repo.join("lookup").join("catalog"));
    let db = sled::open(repo.join("index")).unwrap();
    let t = db.open_tree("snapshots").unwrap();
    let key: strata::id::SnapshotId = id.parse().unwrap();
    let mut s = strata::snapshot::Snapshot::decode(&t.get(key.0).unwrap().unwrap()).unwrap();
    edit(&mut s);
    t.insert(key.0, s.encode()).unwrap();
    db.flush().unwrap();
    drop((t, db));
    wait_unlocked(repo);
}

#[test]
fn check_compares_every_snapshot_record_with_its_pack_copy() {
    use strata::snapshot::BackupKind;
    let s = scenario();
    let ids: Vec<String> = s.snaps.iter().map(|(id, _)| id.clone()).collect();
    type Edit = Box<dyn Fn(&mut strata::snapshot::Snapshot)>;
    let first: strata::id::SnapshotId = ids[1].parse().unwrap();
    let edits: Vec<(usize, Edit)> = vec![
        // The last incremental's parent: another existing snapshot (a silently wrong tree).
        (3, Box::new(move |r| r.parent = Some(first))),
        // The differential becomes an incremental of the same parent.
        (2, Box::new(|r| r.kind = BackupKind::Incremental)),
        (0, Box::new(|r| r.tags.push("forged".into()))),
        (1, Box::new(|r| r.time_ns += 1)),
        (2, Box::new(|r| r.depth += 1)),
    ];
    for (i, edit) in edits {
        let mut original = None;
        edit_index_record(&s.repo, &ids[i], |r| {
            original = Some(r.clone());
            edit(r);
        });
        let c = check(&s.repo, &[]);
        assert_eq!(c.code, 4, "edit of snapshot {i}: {}", c.json);
        assert_eq!(
            c.snapshots_with("snapshot_record_mismatch"),
            BTreeSet::from([ids[i].clone()]),
            "{}",
            c.json
        );
        assert!(c.damaged_snapshots().contains(&ids[i]));
        let original = original.unwrap();
        edit_index_record(&s.repo, &ids[i], |r| *r = original);
    }
    assert_eq!(check(&s.repo, &[]).code, 0);

    // Repair takes the pack copy: the forged parent is undone and every view is right again.
    let first = ids[1].parse().unwrap();
    edit_index_record(&s.repo, &ids[3], |r| r.parent = Some(first));
    assert_eq!(strata(&s.repo, &["repair"]).status.code(), Some(0));
    assert_eq!(check(&s.repo, &[]).code, 0);
    assert_all_views(&s.repo, &s.snaps);
}

#[test]
fn check_verifies_every_pack_header_byte() {
    let s = scenario();
    let pack = std::fs::read_dir(s.repo.join("packs"))
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
        .map(|f| f.unwrap().path())
        .min()
        .unwrap();
    let name = pack.file_stem().unwrap().to_str().unwrap().to_string();
    // One byte each of the magic, the version and the reserved word.
    for at in [3, 9, 13] {
        flip(&pack, at);
        for args in [&[][..], &["--read-data"]] {
            let c = check(&s.repo, args);
            assert_eq!(c.code, 4, "byte {at}: {}", c.json);
            let bad: Vec<_> = c.json["problems"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| p["kind"] == "bad_pack_header")
                .map(|p| p["pack"].as_str().unwrap().to_string())
                .collect();
            assert_eq!(bad, vec![name.clone()], "byte {at}: {}", c.json);
        }
        flip(&pack, at);
        assert_eq!(check(&s.repo, &[]).code, 0);
    }
}
