//! forget, consolidate, prune and `backup --max-chain`: a model test (random histories, every
//! kept snapshot's view compared with what was backed up), retention decisions pinned by golden
//! files in three time zones, and crash tests that abort the real binary between steps.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use proptest::prelude::*;
use strata::backup::{self, BackupOptions};
use strata::entry::Kind;
use strata::forget::{self, ForgetOptions};
use strata::id::SnapshotId;
use strata::layers::View;
use strata::prune::{self, PruneOptions};
use strata::repo::{CreateOptions, Repo};
use strata::retention::Policy;
use strata::snapshot::BackupKind;

use crate::common::fixture::{capture, from_view, set_mtime, Tree};
use crate::common::{backup as cli_backup, bin, new_repo, snapshot_list, strata, strata_ok};

/// Paths the model writes; "d1" is both a file and a directory at different times.
const PATHS: &[&str] = &[
    "f0", "f1", "d0/f0", "d0/f1", "d0/e/f0", "d0/e/f1", "d1", "d1/f0", "d1/g/f0", "d1/f1",
];

#[derive(Clone, Debug)]
enum Op {
    Write(usize, u8),
    Delete(usize),
    Backup(Option<BackupKind>),
    ForgetIds(Vec<usize>),
    ForgetKeepLast(u32),
    Consolidate(usize),
    Prune(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..PATHS.len(), any::<u8>()).prop_map(|(p, s)| Op::Write(p, s)),
        3 => (0..PATHS.len()).prop_map(Op::Delete),
        // Directory <-> file flips make opaque directories and whiteouts over subtrees.
        3 => prop_oneof![
            Just(Op::Delete(6)),
            Just(Op::Write(6, 9)),
            Just(Op::Write(8, 5)),
            Just(Op::Write(9, 4)),
        ],
        4 => prop_oneof![
            Just(None),
            Just(Some(BackupKind::Full)),
            Just(Some(BackupKind::Incremental)),
            Just(Some(BackupKind::Differential)),
        ]
        .prop_map(Op::Backup),
        3 => prop::collection::vec(0..16usize, 1..3).prop_map(Op::ForgetIds),
        1 => (1..4u32).prop_map(Op::ForgetKeepLast),
        1 => (0..16usize).prop_map(Op::Consolidate),
        1 => prop_oneof![Just(0u8), Just(80), Just(100)].prop_map(Op::Prune),
    ]
}

struct Model {
    src: PathBuf,
    repo: Arc<Repo>,
    /// Snapshot → the tree captured when it was backed up.
    expect: BTreeMap<SnapshotId, Tree>,
    clock: i64,
}

impl Model {
    fn write(&mut self, path: &str, seed: u8) {
        let p = self.src.join(path);
        // Make the parents directories, replacing files in the way.
        let mut cur = self.src.clone();
        for comp in Path::new(path).parent().unwrap().components() {
            cur = cur.join(comp);
            if cur.is_file() {
                fs::remove_file(&cur).unwrap();
            }
            if !cur.exists() {
                fs::create_dir(&cur).unwrap();
            }
        }
        if p.is_dir() {
            fs::remove_dir_all(&p).unwrap();
        }
        let len = 1 + seed as usize * 7;
        fs::write(&p, vec![seed; len]).unwrap();
        // A unique mtime: change detection must never see two versions as one.
        self.clock += 1;
        set_mtime(&p, 1_800_000_000 + self.clock, 0);
    }

    fn delete(&mut self, path: &str) {
        let p = self.src.join(path);
        if p.is_dir() {
            fs::remove_dir_all(&p).unwrap();
        } else if p.exists() {
            fs::remove_file(&p).unwrap();
        }
    }

    fn ids(&self) -> Vec<SnapshotId> {
        self.repo
            .snapshots()
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect()
    }

    fn pick(&self, i: usize) -> Option<SnapshotId> {
        let ids = self.ids();
        (!ids.is_empty()).then(|| ids[i % ids.len()])
    }

    /// `check` is clean; every remaining snapshot shows exactly what was backed up, every chunk reads back
    /// verified, layer blobs are readable, depths match the chains, and layerdirs cover the
    /// directories each non-full layer holds entries in.
    fn verify(&self, step: &str) {
        // `check` (structure and every chunk re-hashed) finds nothing to report after any step.
        let opts = strata::check::CheckOptions {
            read_data: Some(100.0),
            seed: Some(1),
            ..Default::default()
        };
        let report = strata::check::check(&self.repo, &opts).unwrap();
        assert!(
            report.problems.is_empty() && report.damaged_files.is_empty(),
            "{step}: check reports {:?}",
            report.problems
        );
        let snaps = self.repo.snapshots().unwrap();
        assert_eq!(snaps.len(), self.expect.len(), "{step}: snapshot count");
        for s in &snaps {
            let want = self
                .expect
                .get(&s.id)
                .unwrap_or_else(|| panic!("{step}: unexpected snapshot {}", s.id));
            let view = View::open(&self.repo, &s.id).unwrap();
            let got = from_view(&self.repo, &view);
            crate::common::fixture::assert_same(&format!("{step}: {}", s.id.short()), want, &got);
            for b in &s.layer_blobs {
                self.repo.read_chunk(b).unwrap();
            }
            let mut depth = 1;
            let mut cur = s.clone();
            while let (Some(p), false) = (cur.parent, cur.kind == BackupKind::Full) {
                cur = self.repo.snapshot(&p).unwrap().expect("parent exists");
                depth += 1;
            }
            assert_eq!(s.depth, depth, "{step}: depth of {}", s.id.short());
            if s.kind != BackupKind::Full {
                let dirs = self.repo.layer_dirs(&s.id).unwrap();
                for e in view.own_layer() {
                    let (dir, _, _) = e.unwrap();
                    assert!(dirs.contains_key(&dir), "{step}: layerdirs miss a dir");
                }
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Write(p, s) => self.write(PATHS[*p], *s),
            Op::Delete(p) => self.delete(PATHS[*p]),
            Op::Backup(kind) => {
                let opts = BackupOptions {
                    kind: *kind,
                    threads: 2,
                    ..Default::default()
                };
                let out = backup::backup(&self.repo, &self.src, &opts).unwrap();
                self.expect.insert(out.snapshot.id, capture(&self.src));
            }
            Op::ForgetIds(picks) => {
                let ids: Vec<_> = picks.iter().filter_map(|&i| self.pick(i)).collect();
                let mut ids_sorted = ids.clone();
                ids_sorted.sort();
                ids_sorted.dedup();
                forget::rewrite(&self.repo, &ids_sorted, &[]).unwrap();
                for id in &ids_sorted {
                    self.expect.remove(id);
                }
            }
            Op::ForgetKeepLast(n) => {
                if self.expect.is_empty() {
                    return;
                }
                let opts = ForgetOptions {
                    policy: Some(Policy {
                        last: *n,
                        ..Default::default()
                    }),
                    source: None,
                };
                let plan = forget::plan(&self.repo, &[], &opts).unwrap();
                let gone: Vec<_> = plan
                    .iter()
                    .filter(|d| !d.keep)
                    .map(|d| d.snapshot.id)
                    .collect();
                assert_eq!(plan.len() - gone.len(), (*n as usize).min(plan.len()));
                forget::rewrite(&self.repo, &gone, &[]).unwrap();
                for id in &gone {
                    self.expect.remove(id);
                }
            }
            Op::Consolidate(i) => {
                if let Some(id) = self.pick(*i) {
                    strata::consolidate::consolidate(&self.repo, &id).unwrap();
                    let s = self.repo.snapshot(&id).unwrap().unwrap();
                    assert_eq!((s.kind, s.parent, s.depth), (BackupKind::Full, None, 1));
                }
            }
            Op::Prune(t) => {
                let opts = PruneOptions {
                    dry_run: false,
                    repack_threshold: *t,
                    ..Default::default()
                };
                prune::prune(&self.repo, &opts).unwrap();
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, max_shrink_iters: 200, ..ProptestConfig::default() })]

    #[test]
    fn model_forget_consolidate_prune_keep_every_view(ops in prop::collection::vec(op(), 1..50)) {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        fs::create_dir(&src).unwrap();
        let repo = strata::open::Open::new(t.path().join("repo")).create(&CreateOptions::default()).unwrap();
        let mut m = Model { src, repo, expect: BTreeMap::new(), clock: 0 };
        // Start from a populated tree, so that deletions and merges have something to hide.
        for p in [0, 1, 2, 3, 4, 5, 7, 8] {
            m.apply(&Op::Write(p, p as u8));
        }
        m.apply(&Op::Backup(Some(BackupKind::Full)));
        for (i, op) in ops.iter().enumerate() {
            m.apply(op);
            if !matches!(op, Op::Write(..) | Op::Delete(..)) {
                m.verify(&format!("step {i} {op:?}"));
            }
        }
        // A final full prune leaves nothing unreferenced, and every view still reads.
        m.apply(&Op::Prune(100));
        m.verify("final prune");
        // Whatever forget, consolidate and prune rewrote, the packs alone rebuild the same views.
        let Model { src, repo, expect, clock } = m;
        let path = repo.path().to_path_buf();
        drop(repo);
        fs::remove_dir_all(path.join("index")).unwrap();
        strata::repair::repair(&path, &strata::repair::RepairOptions::default()).unwrap();
        let repo = strata::open::Open::new(&path).open().unwrap();
        Model { src, repo, expect, clock }.verify("after repair from packs");
    }
}

/// The model test's hardest case, pinned: a directory deleted in B and recreated in C (opaque),
/// with B forgotten; a file added in B and deleted in C (a whiteout over nothing once B is gone).
#[test]
fn forget_merges_whiteouts_and_opaque_dirs() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let repo = strata::open::Open::new(t.path().join("repo"))
        .create(&CreateOptions::default())
        .unwrap();
    let mut m = Model {
        src,
        repo,
        expect: BTreeMap::new(),
        clock: 0,
    };
    m.apply(&Op::Write(7, 1)); // d1/f0
    m.apply(&Op::Write(0, 1)); // f0
    m.apply(&Op::Backup(Some(BackupKind::Full))); // A
    m.apply(&Op::Delete(6)); // d1 gone
    m.apply(&Op::Write(1, 2)); // f1 new
    m.apply(&Op::Backup(Some(BackupKind::Incremental))); // B
    m.apply(&Op::Write(8, 3)); // d1/g/f0: d1 back, without f0
    m.apply(&Op::Delete(1)); // f1 gone again
    m.apply(&Op::Backup(Some(BackupKind::Incremental))); // C
    let ids = m.ids();
    let stats = forget::rewrite(&m.repo, &[ids[1]], &[]).unwrap();
    m.expect.remove(&ids[1]);
    assert_eq!((stats.forgotten, stats.merged), (1, 1));
    assert!(stats.whiteouts_dropped >= 1, "{stats:?}");
    m.verify("after forgetting B");
    let c = m.repo.snapshot(&ids[2]).unwrap().unwrap();
    assert_eq!((c.parent, c.depth), (Some(ids[0]), 2));
    let view = View::open(&m.repo, &ids[2]).unwrap();
    assert!(view.lookup(b"d1/f0").is_err(), "old child must stay hidden");
    assert!(view.lookup(b"f1").is_err());
    // The whiteout of f1 hid nothing in A: it is gone from C's layer.
    assert!(!view
        .own_layer()
        .any(|e| e.unwrap().2.kind == Kind::Whiteout));
    // Forgetting the full A makes C a full of its own.
    forget::rewrite(&m.repo, &[ids[0]], &[]).unwrap();
    m.expect.remove(&ids[0]);
    m.verify("after forgetting A");
    let c = m.repo.snapshot(&ids[2]).unwrap().unwrap();
    assert_eq!((c.kind, c.parent, c.depth), (BackupKind::Full, None, 1));
}

/// A directory deleted (A2) and recreated (B, opaque) and then changed (C): forgetting B must
/// leave C opaque at that directory, or A's old children would reappear through A2.
#[test]
fn forget_keeps_recreated_directories_opaque() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let repo = strata::open::Open::new(t.path().join("repo"))
        .create(&CreateOptions::default())
        .unwrap();
    let mut m = Model {
        src,
        repo,
        expect: BTreeMap::new(),
        clock: 0,
    };
    m.apply(&Op::Write(7, 1)); // d1/f0
    m.apply(&Op::Backup(Some(BackupKind::Full))); // A
    m.apply(&Op::Delete(6));
    m.apply(&Op::Backup(Some(BackupKind::Incremental))); // A2: d1 gone
    m.apply(&Op::Write(8, 2)); // d1/g/f0: d1 new, opaque
    m.apply(&Op::Backup(Some(BackupKind::Incremental))); // B
    fs::write(m.src.join("d1/f1"), b"c").unwrap();
    m.apply(&Op::Backup(Some(BackupKind::Incremental))); // C touches d1
    let ids = m.ids();
    forget::rewrite(&m.repo, &[ids[2]], &[]).unwrap();
    m.expect.remove(&ids[2]);
    m.verify("after forgetting B");
    assert!(m.repo.layer_dirs(&ids[3]).unwrap()[&b"d1"[..]]);
    forget::rewrite(&m.repo, &[ids[1]], &[]).unwrap();
    m.expect.remove(&ids[1]);
    m.verify("after forgetting A2");
}

// ---- CLI: forget / consolidate / prune / --max-chain ----

fn history(repo: &Path, src: &Path, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        fs::create_dir_all(src.join(format!("dir{}", i % 3))).unwrap();
        fs::write(
            src.join(format!("dir{}/file{i}", i % 3)),
            crate::common::pseudo_random(3000 + i * 100, i as u64),
        )
        .unwrap();
        if i % 4 == 3 {
            let _ = fs::remove_file(src.join(format!("dir{}/file{}", (i - 2) % 3, i - 2)));
        }
        fs::write(src.join("changing"), format!("version {i}")).unwrap();
        set_mtime(&src.join("changing"), 1_800_000_000 + i as i64, 0);
        let kind = if i % 5 == 0 { "full" } else { "incremental" };
        ids.push(cli_backup(repo, src, &["--kind", kind]));
    }
    ids
}

#[test]
fn cli_forget_dry_run_changes_nothing_and_explains() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    history(&repo, &src, 6);
    let before = crate::common::snapshot_contents(&repo);
    let out = strata_ok(
        &repo,
        &["forget", "--keep-last", "2", "--dry-run", "--json"],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = v["decisions"].as_array().unwrap();
    assert_eq!(d.len(), 6);
    assert_eq!(d.iter().filter(|d| d["action"] == "keep").count(), 2);
    assert_eq!(d[0]["reasons"][0], "last snapshot");
    assert_eq!(d[5]["reasons"][0], "policy");
    assert!(v["stats"].is_null());
    assert_eq!(crate::common::snapshot_contents(&repo), before);
    let human = strata_ok(&repo, &["forget", "--keep-last", "2", "--dry-run"]);
    let text = String::from_utf8(human.stdout).unwrap();
    assert!(text.contains("keep") && text.contains("remove") && text.contains("last snapshot"));
    // Bad input: no policy, unknown snapshot, bad duration; nothing changes.
    assert!(!strata(&repo, &["forget"]).status.success());
    assert!(!strata(&repo, &["forget", "ffffffffffff"]).status.success());
    let bad = strata(&repo, &["forget", "--keep-within", "3x"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("duration"));
    assert_eq!(crate::common::snapshot_contents(&repo), before);
    let dry = strata_ok(&repo, &["prune", "--dry-run", "--json"]);
    let p: serde_json::Value = serde_json::from_slice(&dry.stdout).unwrap();
    assert_eq!(p["dry_run"], true);
    assert_eq!(crate::common::snapshot_contents(&repo), before);
}

#[test]
fn cli_forget_prune_consolidate_keep_views_and_reclaim_space() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let ids = history(&repo, &src, 12);
    let before = crate::common::snapshot_contents(&repo);
    let out = strata_ok(&repo, &["forget", "--keep-last", "3", "--prune", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stats"]["forgotten"], 9);
    assert!(v["prune"]["reclaimed_bytes"].as_u64().unwrap() > 0, "{v}");
    let after = crate::common::snapshot_contents(&repo);
    assert_eq!(after.len(), 3);
    for (id, files) in &after {
        assert_eq!(files, &before[id], "snapshot {id} changed");
    }
    for id in &ids[..9] {
        assert!(!after.contains_key(id));
    }
    // Nothing left to prune.
    let again = strata_ok(&repo, &["prune", "--repack-threshold", "100", "--json"]);
    let p: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    strata_ok(&repo, &["prune", "--json"]);
    assert_eq!(crate::common::snapshot_contents(&repo), after, "{p}");
    // Consolidate the newest: it becomes a full of depth 1, same content.
    let out = strata_ok(&repo, &["consolidate", "latest", "--json"]);
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(c["snapshot"]["kind"], "full");
    assert_eq!(c["snapshot"]["depth"], 1);
    assert!(c["snapshot"]["parent"].is_null());
    assert_eq!(crate::common::snapshot_contents(&repo), after);
}

#[test]
fn cli_policy_applies_per_source_and_source_limits_it() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    for i in 0..3 {
        fs::write(src.join("f"), format!("{i}")).unwrap();
        cli_backup(&repo, &src, &["--source-name", "a"]);
        cli_backup(&repo, &src, &["--source-name", "b"]);
    }
    // --source b: only b's snapshots are decided; a keeps all three.
    strata_ok(&repo, &["forget", "--keep-last", "1", "--source", "b"]);
    let sources: Vec<String> = snapshot_list(&repo)
        .iter()
        .map(|s| s["source"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(sources, ["a", "a", "a", "b"]);
    // Without --source, each source keeps its own newest.
    strata_ok(&repo, &["forget", "--keep-last", "1"]);
    let left = snapshot_list(&repo);
    assert_eq!(left.len(), 2);
    for s in &left {
        let id = s["id"].as_str().unwrap();
        assert_eq!(strata_ok(&repo, &["cat", id, "f"]).stdout, b"2");
    }
}

#[test]
fn backup_max_chain_consolidates_deep_snapshots() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let mut depths = Vec::new();
    for i in 0..7 {
        fs::write(src.join(format!("f{i}")), format!("{i}")).unwrap();
        let out = strata_ok(
            &repo,
            &[
                "backup",
                "--json",
                "--max-chain",
                "3",
                src.to_str().unwrap(),
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        depths.push(v["depth"].as_u64().unwrap());
    }
    assert_eq!(depths, [1, 2, 3, 1, 2, 3, 1]);
    for i in 0..7 {
        assert_eq!(
            strata_ok(&repo, &["cat", "latest", &format!("f{i}")]).stdout,
            format!("{i}").as_bytes()
        );
    }
}

// ---- Retention golden files ----

const DAY_NS: i64 = 86_400_000_000_000;

/// The golden calendar: two years of daily snapshots from 2024-01-01 (UTC) at hours that vary
/// (0–23, so some days are near midnight), plus a few extra snapshots on some days and tags.
fn golden_calendar() -> Vec<(i64, Vec<&'static str>)> {
    let start = 19_723 * DAY_NS; // 2024-01-01T00:00:00Z
    let mut out = Vec::new();
    for d in 0..731i64 {
        let hour = (d * 7) % 24;
        out.push((start + d * DAY_NS + hour * 3_600_000_000_000, vec![]));
        if d % 45 == 0 {
            out.push((
                start + d * DAY_NS + 23 * 3_600_000_000_000 + 59 * 60_000_000_000,
                vec!["release"],
            ));
        }
    }
    out
}

const POLICIES: &[&[&str]] = &[
    &[
        "--keep-daily",
        "7",
        "--keep-weekly",
        "5",
        "--keep-monthly",
        "12",
        "--keep-yearly",
        "3",
    ],
    &[
        "--keep-last",
        "3",
        "--keep-hourly",
        "5",
        "--keep-within",
        "1m2w",
    ],
    &["--keep-weekly", "3", "--keep-tag", "release"],
];

fn golden_repo() -> (tempfile::TempDir, PathBuf) {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    for (time, tags) in golden_calendar() {
        let mut cmd = Command::new(bin());
        cmd.args(["--repo", repo.to_str().unwrap(), "backup", "--kind", "full"]);
        cmd.args(["--source-name", "golden"]);
        for t in tags {
            cmd.args(["--tag", t]);
        }
        let out = cmd
            .arg(&src)
            .env("STRATA_TEST_NOW_NS", time.to_string())
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    (t, repo)
}

/// `forget --dry-run --json` rendered as one line per snapshot: time, action, reasons.
fn decisions(repo: &Path, policy: &[&str], tz: &str) -> String {
    let mut args = vec!["forget", "--dry-run", "--json"];
    args.extend_from_slice(policy);
    let out = Command::new(bin())
        .arg("--repo")
        .arg(repo)
        .args(&args)
        .env("TZ", tz)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut s = format!("# strata forget {}\n", policy.join(" "));
    for d in v["decisions"].as_array().unwrap() {
        s.push_str(&format!(
            "{} {} {}\n",
            d["snapshot"]["time"].as_str().unwrap(),
            d["action"].as_str().unwrap(),
            d["reasons"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    s
}

#[test]
fn retention_golden_files_in_three_time_zones() {
    let (_t, repo) = golden_repo();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    for (i, policy) in POLICIES.iter().enumerate() {
        let utc = decisions(&repo, policy, "UTC");
        let path = dir.join(format!("retention-{i}.txt"));
        if std::env::var_os("STRATA_BLESS").is_some() {
            fs::create_dir_all(&dir).unwrap();
            fs::write(&path, &utc).unwrap();
        }
        let want = fs::read_to_string(&path).expect("golden file (STRATA_BLESS=1 writes it)");
        assert_eq!(
            utc,
            want,
            "policy {policy:?} differs from {}",
            path.display()
        );
        for tz in ["America/New_York", "Asia/Kolkata"] {
            // Without the zone file glibc silently uses UTC and this would prove nothing.
            assert!(
                Path::new("/usr/share/zoneinfo").join(tz).exists(),
                "tzdata is not installed: TZ={tz} would silently mean UTC"
            );
            assert_eq!(decisions(&repo, policy, tz), want, "TZ={tz}");
        }
    }
}

// ---- Crash tests ----

/// Runs the binary with `STRATA_TEST_CRASH_AT=point`; it must die by SIGABRT there.
fn crash_at(repo: &Path, point: &str, args: &[&str]) {
    let out = Command::new(bin())
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env("STRATA_TEST_CRASH_AT", point)
        .output()
        .unwrap();
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGABRT),
        "{point}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kill_during_forget_and_prune_loses_nothing() {
    let points = [
        ("forget-after-layers", true),
        ("forget-after-pack", true),
        ("forget-after-switch", true),
        ("forget-after-remove", true),
        ("prune-after-pack", false),
        ("prune-after-index", false),
        ("prune-after-first-delete", false),
    ];
    for point in [
        "forget-after-layers",
        "forget-after-pack",
        "forget-after-switch",
    ] {
        // consolidate shares forget's rewriting and its crash points.
        let (t, repo) = new_repo();
        let src = t.path().join("src");
        fs::create_dir(&src).unwrap();
        history(&repo, &src, 5);
        let before = crate::common::snapshot_contents(&repo);
        crash_at(&repo, point, &["consolidate", "latest"]);
        assert_eq!(
            crate::common::snapshot_contents(&repo),
            before,
            "consolidate {point}"
        );
        strata_ok(&repo, &["consolidate", "latest"]);
        assert_eq!(
            crate::common::snapshot_contents(&repo),
            before,
            "consolidate {point}, rerun"
        );
        let last = snapshot_list(&repo).pop().unwrap();
        assert_eq!(
            (last["kind"].as_str(), last["depth"].as_u64()),
            (Some("full"), Some(1))
        );
    }
    for (point, is_forget) in points {
        let (t, repo) = new_repo();
        let src = t.path().join("src");
        fs::create_dir(&src).unwrap();
        history(&repo, &src, 8);
        let before = crate::common::snapshot_contents(&repo);
        let list = snapshot_list(&repo);
        // Snapshots 0 and 5 are fulls. Forgetting 1 and 2 merges both into 3; forgetting the
        // full 5 makes 6 a full.
        let victims: Vec<String> = [1, 2, 5]
            .iter()
            .map(|&i| list[i]["id"].as_str().unwrap().to_string())
            .collect();
        let mut forget_args = vec!["forget"];
        forget_args.extend(victims.iter().map(|s| s.as_str()));
        if is_forget {
            crash_at(&repo, point, &forget_args);
        } else {
            strata_ok(&repo, &forget_args);
            crash_at(&repo, point, &["prune", "--repack-threshold", "100"]);
        }
        // Every kept snapshot is intact after the crash.
        let after = crate::common::snapshot_contents(&repo);
        for (id, files) in &after {
            assert_eq!(files, &before[id], "{point}: snapshot {id} changed");
        }
        // Rerunning completes: the victims are gone, and a prune leaves a consistent repository.
        let remaining: Vec<&String> = victims.iter().filter(|v| after.contains_key(*v)).collect();
        if !remaining.is_empty() {
            let mut args = vec!["forget"];
            args.extend(remaining.iter().map(|s| s.as_str()));
            strata_ok(&repo, &args);
        }
        strata_ok(&repo, &["prune", "--repack-threshold", "100"]);
        let done = crate::common::snapshot_contents(&repo);
        assert_eq!(done.len(), before.len() - victims.len(), "{point}");
        for (id, files) in &done {
            assert_eq!(files, &before[id], "{point}: snapshot {id} after rerun");
        }
        // A second prune finds nothing to do.
        let out = strata_ok(&repo, &["prune", "--repack-threshold", "100", "--json"]);
        let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(p["records_removed"], 0, "{point}: {p}");
        assert_eq!(p["orphan_entries"], 0, "{point}: {p}");
    }
}
