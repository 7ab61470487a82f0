//! Crashes against a bucket: a backup killed with SIGKILL while it uploads, and a `prune` killed
//! at each of its steps (and at random moments), leave a repository whose listed snapshots are
//! complete on every machine, that checks clean with `--read-data`, and where the next backup
//! works.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use super::{assert_no_damage, assert_restore_equals, check_read_data, cp_a, flat_source};
use crate::common::pseudo_random;
use crate::common::s3::{S3Repo, S3Server};

/// The listed snapshots read back on `repo`: `first.txt` in every one, and the last big file in
/// those that hold the big files.
fn listed_snapshots_read_back(repo: &S3Repo, label: &str) {
    for s in repo.snapshot_list() {
        let id = s["id"].as_str().unwrap();
        assert_eq!(
            repo.ok(&["cat", id, "first.txt"]).stdout,
            b"committed before the crashes",
            "{label}: snapshot {id}"
        );
        if s["files"].as_u64().unwrap() > 1 {
            assert!(
                repo.ok(&["cat", id, "data-059.bin"]).stdout == pseudo_random(1 << 20, 1059),
                "{label}: data-059.bin of snapshot {id}"
            );
        }
    }
}

#[test]
fn kill_9_during_a_bucket_backup_leaves_nothing_a_snapshot_needs_missing() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let repo = server.repo("bucket", "crash", &t.path().join("cache"));
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("first.txt"), b"committed before the crashes").unwrap();
    repo.init();
    let first = repo.backup(&src, &[]);
    let first_copy = t.path().join("copy-first");
    cp_a(&src, &first_copy);
    flat_source(&src, "data", 60, 1 << 20, 1000);
    let mut killed = 0;
    for (i, delay_ms) in [5u64, 30, 80, 150, 300, 600, 1200, 2500]
        .into_iter()
        .enumerate()
    {
        let mut child = repo
            .command(&["backup", "--kind", "full", super::s(&src)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        if child.wait().unwrap().signal() == Some(9) {
            killed += 1;
        }
        // Only complete snapshots are listed, here and on a machine with a new cache.
        listed_snapshots_read_back(&repo, &format!("after kill {i}"));
        let other = repo.host(&t.path().join(format!("cache-{i}")));
        listed_snapshots_read_back(&other, &format!("after kill {i}, a new cache"));
    }
    assert!(
        killed >= 3,
        "only {killed} backups were killed mid-way; make the data larger"
    );

    // The next backup works; the repository checks clean, data included.
    let id = repo.backup(&src, &[]);
    assert_ne!(id, first);
    assert_no_damage(&repo, "after the kills");
    assert_eq!(
        std::fs::read_dir(repo.cache_dir().join("uploads"))
            .unwrap()
            .count(),
        0,
        "an unfinished pack survived a successful backup in the cache's spool"
    );
    // Every snapshot restores exactly, from a machine that never saw the repository.
    let fresh = repo.host(&t.path().join("cache-fresh"));
    for s in fresh.snapshot_list() {
        let id = s["id"].as_str().unwrap();
        let want = if s["files"].as_u64() == Some(1) {
            &first_copy
        } else {
            &src
        };
        assert_restore_equals(&fresh, id, want, t.path());
    }
    // Packs the killed backups uploaded without committing are garbage that prune removes, and
    // the locks of the killed processes go with the next exclusive command.
    let out = repo.ok(&["prune", "--json"]);
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    eprintln!(
        "prune after {killed} killed backups: {} pack(s) deleted",
        p["packs_deleted"]
    );
    assert_eq!(
        repo.objects_under("locks"),
        Vec::<std::path::PathBuf>::new()
    );
    let (code, text) = check_read_data(&fresh);
    assert_eq!(code, Some(0), "{text}");
    assert_restore_equals(&fresh, &id, &src, t.path());
}

/// A repository at `s3://bucket/PREFIX` with three snapshots whose forgetting leaves packs to
/// delete and packs to rewrite; returns (the kept snapshots with a copy of their source, the
/// one forgotten).
fn prune_scenario(
    server: &S3Server,
    prefix: &str,
    dir: &Path,
) -> (S3Repo, Vec<(String, std::path::PathBuf)>) {
    let repo = server.repo("bucket", prefix, &dir.join("cache"));
    let src = dir.join("src");
    repo.init();
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("first.txt"), b"kept throughout").unwrap();
    // Step 0: twelve files. Step 1: half of them gone, four new. Step 2: one changed.
    flat_source(&src, "f", 12, 512 << 10, 100);
    let forgotten = repo.backup(&src, &["--kind", "full"]);
    for i in 0..6 {
        std::fs::remove_file(src.join(format!("f-{i:03}.bin"))).unwrap();
    }
    flat_source(&src, "g", 4, 512 << 10, 200);
    let mut kept = Vec::new();
    kept.push((repo.backup(&src, &["--kind", "full"]), dir.join("copy-1")));
    cp_a(&src, &kept[0].1);
    std::fs::write(src.join("g-000.bin"), pseudo_random(300 << 10, 300)).unwrap();
    kept.push((repo.backup(&src, &[]), dir.join("copy-2")));
    cp_a(&src, &kept[1].1);
    repo.ok(&["forget", &forgotten]);
    (repo, kept)
}

/// After a crashed prune: every kept snapshot restores exactly here and on a new machine; prune
/// runs again; the repository checks clean; the next backup works.
fn recovers_after_a_crashed_prune(
    repo: &S3Repo,
    kept: &[(String, std::path::PathBuf)],
    dir: &Path,
    label: &str,
) {
    let fresh = repo.host(&dir.join("cache-fresh"));
    for r in [repo, &fresh] {
        let ids = r.snapshot_ids();
        assert_eq!(
            ids,
            kept.iter().map(|k| k.0.clone()).collect::<Vec<_>>(),
            "{label}"
        );
        for (id, copy) in kept {
            assert_restore_equals(r, id, copy, dir);
        }
    }
    repo.ok(&["prune", "--repack-threshold", "100"]);
    let (code, text) = check_read_data(&fresh);
    assert_eq!(code, Some(0), "{label}: {text}");
    let src = dir.join("src");
    std::fs::write(src.join("after.txt"), b"after the crash").unwrap();
    let id = repo.backup(&src, &[]);
    assert_restore_equals(&fresh, &id, &src, dir);
    for (id, copy) in kept {
        assert_restore_equals(&fresh, id, copy, dir);
    }
    let (code, text) = check_read_data(repo);
    assert_eq!(code, Some(0), "{label}: {text}");
    // A second prune finds nothing to remove.
    let out = repo.ok(&["prune", "--repack-threshold", "100", "--json"]);
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["packs_deleted"], 0, "{label}: {p}");
}

#[test]
fn prune_on_a_bucket_killed_at_each_step_loses_nothing() {
    let Some(server) = S3Server::start() else {
        return;
    };
    for point in [
        "prune-after-pack",
        "prune-after-index",
        "prune-after-first-delete",
    ] {
        let t = tempfile::tempdir().unwrap();
        let (repo, kept) = prune_scenario(&server, point, t.path());
        let out = repo.clone().with_env("STRATA_TEST_CRASH_AT", point).run(&[
            "prune",
            "--repack-threshold",
            "100",
        ]);
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGABRT),
            "{point}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        recovers_after_a_crashed_prune(&repo, &kept, t.path(), point);
    }
}

#[test]
fn kill_9_during_a_bucket_prune_loses_nothing() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let mut killed = 0;
    for delay_ms in [20u64, 100, 300, 700] {
        let t = tempfile::tempdir().unwrap();
        let prefix = format!("kill-{delay_ms}");
        let (repo, kept) = prune_scenario(&server, &prefix, t.path());
        let mut child = repo
            .command(&["prune", "--repack-threshold", "100"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        if child.wait().unwrap().signal() == Some(9) {
            killed += 1;
        }
        recovers_after_a_crashed_prune(&repo, &kept, t.path(), &prefix);
    }
    assert!(killed >= 1, "no prune was killed mid-way");
}
