//! Crash safety: a backup killed with SIGKILL at any moment leaves a repository whose listed
//! snapshots are complete and readable, and where the next backup works; a `forget` or
//! `consolidate` killed at any step is reported by `check` as interrupted (not damage) and
//! completed by the next command. Every case runs on a plain and on an encrypted repository
//! (`name::plain`, `name::encrypted`).

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{backup, bin, new_repo_of, pass_args, pseudo_random, strata, strata_ok, Kind};
use crate::on_both_kinds;

on_both_kinds!(
    kill_9_during_backup_leaves_a_consistent_repository,
    kill_inside_forget_and_consolidate_is_completed_by_the_next_command,
);

fn kill_9_during_backup_leaves_a_consistent_repository(kind: Kind) {
    let (t, repo) = new_repo_of(kind);
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("first.txt"), b"committed before the crashes").unwrap();
    let first = backup(&repo, &src, &[]);
    for i in 0..60u64 {
        std::fs::write(src.join(format!("data-{i}.bin")), pseudo_random(1 << 20, i)).unwrap();
    }
    let mut killed = 0;
    for delay_ms in [5u64, 30, 80, 150, 300, 600] {
        let mut child = Command::new(bin())
            .args(["--repo", repo.to_str().unwrap()])
            .args(pass_args(&repo))
            .args(["backup", "--kind", "full"])
            .arg(&src)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.signal() == Some(9) {
            killed += 1;
        }
        // After every kill: only complete snapshots are listed, and they read back.
        let out = strata_ok(&repo, &["snapshots", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for s in list.as_array().unwrap() {
            let id = s["id"].as_str().unwrap();
            assert_eq!(
                strata_ok(&repo, &["cat", id, "first.txt"]).stdout,
                b"committed before the crashes"
            );
            if s["files"].as_u64().unwrap() > 1 {
                assert_eq!(
                    strata_ok(&repo, &["cat", id, "data-59.bin"]).stdout,
                    pseudo_random(1 << 20, 59)
                );
            }
        }
    }
    assert!(
        killed >= 3,
        "only {killed} backups were killed mid-way; make the data larger"
    );
    // The next backup works and sees everything.
    let id = backup(&repo, &src, &[]);
    assert_ne!(id, first);
    assert_eq!(
        strata_ok(&repo, &["cat", "latest", "data-7.bin"]).stdout,
        pseudo_random(1 << 20, 7)
    );
    // No unfinished pack survives a successful backup.
    let leftovers = walk_count(&repo.join("packs"), "tmp");
    assert_eq!(leftovers, 0);
    // A killed backup may leave finished packs or layer entries nothing commits: leftovers
    // (exit 3, "no damage"), never damage; prune removes them.
    let check = strata(&repo, &["check", "--read-data"]);
    let text = String::from_utf8_lossy(&check.stdout);
    match check.status.code() {
        Some(0) => {}
        Some(3) => assert!(text.contains("No damage"), "{text}"),
        other => panic!("check after the kills: {other:?}\n{text}"),
    }
    strata_ok(&repo, &["prune"]);
    strata_ok(&repo, &["check", "--read-data"]);
}

fn walk_count(dir: &std::path::Path, ext: &str) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            n += walk_count(&p, ext);
        } else if p.extension().is_some_and(|e| e == ext) {
            n += 1;
        }
    }
    n
}

/// `check --json`: exit code and problem kinds.
fn check_kinds(repo: &std::path::Path) -> (Option<i32>, Vec<String>, String) {
    let out = crate::common::strata(repo, &["check", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let kinds = v["problems"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| p["kind"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    (out.status.code(), kinds, text)
}

/// A history whose layers hold whiteouts: a full, then incrementals that delete and add files.
fn history_with_whiteouts(repo: &std::path::Path, src: &std::path::Path) -> Vec<String> {
    std::fs::create_dir_all(src.join("d/e")).unwrap();
    let mut ids = Vec::new();
    for i in 0..6u64 {
        std::fs::write(src.join(format!("d/f{i}")), pseudo_random(2000, i)).unwrap();
        std::fs::write(src.join(format!("d/e/g{i}")), format!("g{i}")).unwrap();
        if i >= 2 {
            std::fs::remove_file(src.join(format!("d/f{}", i - 2))).unwrap();
            std::fs::remove_file(src.join(format!("d/e/g{}", i - 1))).unwrap();
        }
        std::fs::write(src.join("changing"), format!("version {i}")).unwrap();
        let kind = if i == 0 { "full" } else { "incremental" };
        ids.push(backup(repo, src, &["--kind", kind]));
    }
    ids
}

/// Issue 16: `forget` or `consolidate` killed anywhere — its cleanup included — left a permanent
/// false "Damage found" (exit 4, `layer_blob_mismatch`) that neither rerunning forget nor prune
/// cleared. Now `check` reports the interruption as such (exit 3, `interrupted_operation`, no
/// damage), the next command that opens the index completes it, and `check` is then clean, with
/// every kept snapshot unchanged.
fn kill_inside_forget_and_consolidate_is_completed_by_the_next_command(kind: Kind) {
    let points = [
        "forget-after-layers",
        "forget-after-pack",
        "forget-after-switch",
        "forget-after-remove",
        "forget-cleanup-after-layers",
        "forget-cleanup-before-done",
    ];
    for point in points {
        for op in ["forget", "consolidate"] {
            rewrite_killed_at(point, op, kind);
        }
    }
}

/// `op` (forget or consolidate) killed at crash point `point`, in a repository of `kind`:
/// reported as interrupted, completed by the next command, nothing lost.
fn rewrite_killed_at(point: &str, op: &str, kind: Kind) {
    let label = format!("{op} killed at {point}, {kind:?}");
    let t = tempfile::tempdir().unwrap();
    let repo = kind.prepare(&t.path().join("repo"));
    crate::common::init(&repo);
    let src = t.path().join("src");
    let ids = history_with_whiteouts(&repo, &src);
    let before = crate::common::snapshot_contents(&repo);
    // Forgetting the full and the next makes the third a full (its whiteouts dropped,
    // two layers deleted); consolidating the latest materialises it.
    let args: Vec<&str> = if op == "forget" {
        vec!["forget", &ids[0], &ids[1]]
    } else {
        vec!["consolidate", &ids[5]]
    };
    let out = Command::new(bin())
        .arg("--repo")
        .arg(&repo)
        .args(pass_args(&repo))
        .args(&args)
        .env("STRATA_TEST_CRASH_AT", point)
        .output()
        .unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{label}");

    let (code, kinds, text) = check_kinds(&repo);
    assert_eq!(code, Some(3), "{label}: {text}");
    assert!(
        kinds.contains(&"interrupted_operation".to_string()),
        "{label}: {text}"
    );
    assert!(text.contains("rerun `strata prune`"), "{label}: {text}");
    assert!(!text.contains("layer_blob_mismatch"), "{label}: {text}");

    // Any command completes it; then check finds at most a pack the killed run wrote
    // and nothing indexes (garbage for prune).
    strata_ok(&repo, &["snapshots"]);
    let (code, kinds, text) = check_kinds(&repo);
    assert!(
        code == Some(0) || (code == Some(3) && kinds.iter().all(|k| k == "unindexed_pack")),
        "{label}: {text}"
    );
    let mut want = before.clone();
    if op == "forget" {
        want.remove(&ids[0]);
        want.remove(&ids[1]);
    }
    assert_eq!(crate::common::snapshot_contents(&repo), want, "{label}");
    let last = crate::common::snapshot_list(&repo);
    let kinds: Vec<&str> = last.iter().map(|s| s["kind"].as_str().unwrap()).collect();
    if op == "forget" {
        assert_eq!(kinds[0], "full", "{label}");
    } else {
        assert_eq!(kinds[5], "full", "{label}");
    }
    // A prune afterwards finds no orphans: the cleanup was complete.
    let out = strata_ok(&repo, &["prune", "--json"]);
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["orphan_entries"], 0, "{label}: {p}");
    let (code, _, text) = check_kinds(&repo);
    assert_eq!(code, Some(0), "{label}: {text}");
}
