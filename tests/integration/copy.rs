//! `strata copy`: snapshots copied between real repositories, plain and encrypted in every
//! direction, restore bit-identically from the target (our capture and `rsync -c`), and the
//! target checks clean; chains come along, a second copy sends nothing, a copy after new backups
//! sends only their new chunks; a killed copy leaves the target consistent and a rerun completes
//! it; `repair` rebuilds copied snapshots from the packs; a prune of the source during a copy
//! cannot make it store wrong data.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::common::fixture::{self, assert_same, capture};
use crate::common::{
    backup, bin, encrypted, init, pass_args, passphrase_file, pseudo_random, snapshot_ids, strata,
    strata_ok,
};

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `strata --repo TARGET copy --from-repo SOURCE ARGS...` (passphrases from the repositories'
/// passphrase files, when they have one).
fn copy(target: &Path, source: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(bin());
    cmd.arg("--repo")
        .arg(target)
        .args(pass_args(target))
        .args(["copy", "--from-repo"])
        .arg(source);
    if passphrase_file(source).exists() {
        cmd.arg("--from-password-file").arg(passphrase_file(source));
    }
    cmd.args(args)
        .env_remove("STRATA_REPO")
        .output()
        .expect("run strata copy")
}

/// `copy --json`, which must succeed; its output parsed.
fn copy_json(target: &Path, source: &Path, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = copy(target, source, &all);
    assert!(
        out.status.success(),
        "copy {args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("copy --json")
}

/// The actions of a `copy --json`, by short id.
fn actions(v: &serde_json::Value) -> Vec<(String, String)> {
    v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["action"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// `strata check [--read-data]`: exit code and output.
fn check(repo: &Path, read_data: bool) -> (Option<i32>, String) {
    let mut args = vec!["check", "--json"];
    if read_data {
        args.push("--read-data");
    }
    let out = strata(repo, &args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn assert_clean(repo: &Path, label: &str) {
    let (code, text) = check(repo, true);
    assert_eq!(code, Some(0), "{label}: check --read-data: {text}");
}

/// Restores snapshot `id` of `repo` into a new directory under `scratch`; returns it.
fn restore(repo: &Path, id: &str, scratch: &Path) -> PathBuf {
    let out = scratch.join(format!("restore-{}", id.get(..8).unwrap_or(id)));
    let _ = std::fs::remove_dir_all(&out);
    strata_ok(repo, &["restore", id, "--target", s(&out)]);
    out
}

/// `rsync -a -c -n --itemize-changes`: no output means identical.
fn rsync_diff(want: &Path, got: &Path) -> String {
    let out = Command::new("rsync")
        .args(["-aHAXn", "--checksum", "--itemize-changes", "--delete"])
        .arg(format!("{}/", want.display()))
        .arg(format!("{}/", got.display()))
        .output()
        .expect("run rsync");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A source repository with the fixture's five-step history (full, incremental, differential,
/// incremental, full); returns the snapshots with their captures.
fn fixture_source(
    t: &Path,
    name: &str,
    encrypt: bool,
) -> (PathBuf, PathBuf, Vec<(String, fixture::Tree)>) {
    let repo = t.join(name);
    if encrypt {
        encrypted(&repo);
    }
    let src = t.join(format!("{name}-data"));
    let kinds: [&[&str]; 5] = [
        &["--kind", "full"],
        &["--kind", "incremental"],
        &["--kind", "differential"],
        &["--kind", "incremental"],
        &["--kind", "full"],
    ];
    let history = fixture::history(&repo, &src, 7, &kinds);
    (repo, src, history)
}

/// A new target repository, encrypted with its own passphrase when asked.
fn target(t: &Path, name: &str, encrypt: bool) -> PathBuf {
    let repo = t.join(name);
    if encrypt {
        std::fs::write(passphrase_file(&repo), format!("{name} passphrase\n")).unwrap();
    }
    init(&repo);
    repo
}

#[test]
fn copies_restore_identically_between_plain_and_encrypted_repositories() {
    let t = tempfile::tempdir().unwrap();
    for src_enc in [false, true] {
        let (source, src, history) = fixture_source(t.path(), &format!("src-{src_enc}"), src_enc);
        for dst_enc in [false, true] {
            let label = format!("{} → {}", enc(src_enc), enc(dst_enc));
            let dst = target(t.path(), &format!("dst-{src_enc}-{dst_enc}"), dst_enc);
            let v = copy_json(&dst, &source, &[]);
            assert_eq!(v["stats"]["snapshots_copied"], 5, "{label}: {v}");
            assert!(
                v["stats"]["verified_records"].as_u64().unwrap() > 0,
                "{label}"
            );
            assert_eq!(
                snapshot_ids(&dst),
                snapshot_ids(&source),
                "{label}: the same snapshots, same ids"
            );
            for (i, (id, want)) in history.iter().enumerate() {
                let out = restore(&dst, id, t.path());
                assert_same(&format!("{label}: snapshot {i}"), want, &capture(&out));
            }
            // The newest (a full of the unchanged tree) against the source tree itself.
            let out = restore(&dst, &history[4].0, t.path());
            assert_eq!(
                rsync_diff(&src, &out),
                "",
                "{label}: rsync sees differences"
            );
            assert_clean(&dst, &label);
            // An empty target: every chunk is read once and sent once.
            assert_eq!(v["stats"]["present_chunks"], 0, "{label}: {v}");
            assert_eq!(
                v["stats"]["read_chunks"], v["stats"]["new_chunks"],
                "{label}: {v}"
            );
        }
    }
}

fn enc(e: bool) -> &'static str {
    if e {
        "encrypted"
    } else {
        "plain"
    }
}

/// The `new_chunks` figure of the snapshot `backup --json` made.
fn backup_new_chunks(repo: &Path, src: &Path, extra: &[&str]) -> (String, u64) {
    let mut args = vec!["backup", "--json"];
    args.extend_from_slice(extra);
    args.push(s(src));
    let out = strata_ok(repo, &args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (
        v["id"].as_str().unwrap().to_string(),
        v["stats"]["new_chunks"].as_u64().unwrap(),
    )
}

#[test]
fn chains_come_along_a_second_copy_sends_nothing_and_new_backups_send_only_their_chunks() {
    let t = tempfile::tempdir().unwrap();
    for dst_enc in [false, true] {
        let source = t.path().join(format!("source-{dst_enc}"));
        init(&source);
        let src = t.path().join(format!("data-{dst_enc}"));
        std::fs::create_dir_all(&src).unwrap();
        for i in 0..6u64 {
            std::fs::write(src.join(format!("f{i}.bin")), pseudo_random(700_000, i)).unwrap();
        }
        let full = backup(&source, &src, &["--kind", "full"]);
        std::fs::write(src.join("a.bin"), pseudo_random(500_000, 100)).unwrap();
        let incr1 = backup(&source, &src, &["--kind", "incremental"]);
        std::fs::write(src.join("b.bin"), pseudo_random(500_000, 101)).unwrap();
        let diff = backup(&source, &src, &["--kind", "differential"]);
        std::fs::remove_file(src.join("f0.bin")).unwrap();
        std::fs::write(src.join("c.bin"), pseudo_random(500_000, 102)).unwrap();
        let incr2 = backup(&source, &src, &["--kind", "incremental"]);
        let dst = target(t.path(), &format!("target-{dst_enc}"), dst_enc);

        // A differential needs its full.
        let v = copy_json(&dst, &source, &["--dry-run", &diff[..8]]);
        let want = vec![
            (full.clone(), "ancestor".to_string()),
            (diff.clone(), "copied".to_string()),
        ];
        assert_eq!(actions(&v), want, "{v}");
        // `latest` is an incremental on a differential on the full: all three come, incr1 not.
        let v = copy_json(&dst, &source, &["latest"]);
        let want = vec![
            (full.clone(), "ancestor".to_string()),
            (diff.clone(), "ancestor".to_string()),
            (incr2.clone(), "copied".to_string()),
        ];
        assert_eq!(actions(&v), want, "{v}");
        assert_eq!(v["stats"]["snapshots_copied"], 3);
        assert_eq!(v["stats"]["ancestors_copied"], 2);
        assert_eq!(
            snapshot_ids(&dst),
            vec![full.clone(), diff.clone(), incr2.clone()]
        );
        let out = restore(&dst, &incr2, t.path());
        assert_eq!(rsync_diff(&src, &out), "");

        // Again: everything is present, nothing is sent.
        let v = copy_json(&dst, &source, &["latest"]);
        assert_eq!(actions(&v), vec![(incr2.clone(), "present".to_string())]);
        assert_eq!(v["stats"]["new_chunks"], 0, "{v}");
        assert_eq!(v["stats"]["snapshots_copied"], 0);

        // Every snapshot: only incr1 is missing, and its chunks are all in the target already
        // (diff holds a.bin too).
        let v = copy_json(&dst, &source, &[]);
        assert_eq!(v["stats"]["snapshots_copied"], 1, "{v}");
        assert_eq!(v["stats"]["snapshots_present"], 3, "{v}");
        assert_eq!(v["stats"]["new_chunks"], 0, "{v}");
        assert_eq!(snapshot_ids(&dst), snapshot_ids(&source));
        assert!(snapshot_ids(&dst).contains(&incr1));
        let v = copy_json(&dst, &source, &[]);
        assert_eq!(
            (
                v["stats"]["snapshots_copied"].as_u64(),
                v["stats"]["new_chunks"].as_u64()
            ),
            (Some(0), Some(0)),
            "a second copy of everything sends nothing: {v}"
        );

        // New backups: the copy sends exactly the chunks they added.
        std::fs::write(src.join("d.bin"), pseudo_random(900_000, 103)).unwrap();
        let (n1, new1) = backup_new_chunks(&source, &src, &[]);
        std::fs::write(src.join("e.bin"), pseudo_random(300_000, 104)).unwrap();
        let (n2, new2) = backup_new_chunks(&source, &src, &["--kind", "differential"]);
        assert!(new1 > 0 && new2 > 0);
        let dry = copy_json(&dst, &source, &["--dry-run"]);
        assert_eq!(dry["dry_run"], true);
        assert_eq!(
            dry["stats"]["new_chunks"].as_u64(),
            Some(new1 + new2),
            "{dry}"
        );
        assert_eq!(snapshot_ids(&dst).len(), 4, "a dry run writes nothing");
        let v = copy_json(&dst, &source, &[]);
        assert_eq!(v["stats"]["snapshots_copied"], 2, "{v}");
        assert_eq!(v["stats"]["new_chunks"].as_u64(), Some(new1 + new2), "{v}");
        assert_eq!(
            v["stats"]["read_chunks"].as_u64(),
            Some(new1 + new2),
            "only the new chunks were read from the source: {v}"
        );
        for id in [&n1, &n2] {
            let out = restore(&dst, id, t.path());
            let want = restore(&source, id, &t.path().join("from-source"));
            assert_eq!(rsync_diff(&want, &out), "", "snapshot {id}");
        }
        assert_clean(&dst, &format!("target encrypted: {dst_enc}"));
    }
}

#[test]
fn a_target_with_snapshots_of_its_own_keeps_them_and_dedups_against_them() {
    let t = tempfile::tempdir().unwrap();
    for dst_enc in [false, true] {
        let shared = pseudo_random(2_000_000, 7);
        let source = t.path().join(format!("laptop-{dst_enc}"));
        init(&source);
        let a = t.path().join(format!("a-{dst_enc}"));
        std::fs::create_dir_all(a.join("docs")).unwrap();
        std::fs::write(a.join("docs/shared.bin"), &shared).unwrap();
        std::fs::write(a.join("docs/own.bin"), pseudo_random(400_000, 8)).unwrap();
        // Enough small documents for a compression dictionary, which the target gets.
        for i in 0..150 {
            std::fs::write(
                a.join(format!("docs/order-{i}.json")),
                format!(
                    "{{\"id\":{i},\"customer\":\"c{}\",\"lines\":[{{\"sku\":\"s{i}\"}}]}}",
                    i % 7
                )
                .repeat(20),
            )
            .unwrap();
        }
        let copied = backup(&source, &a, &[]);

        let dst = target(t.path(), &format!("server-{dst_enc}"), dst_enc);
        let b = t.path().join(format!("b-{dst_enc}"));
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(b.join("same-content.bin"), &shared).unwrap();
        let own = backup(&dst, &b, &[]);

        let v = copy_json(&dst, &source, &[]);
        assert_eq!(v["stats"]["snapshots_copied"], 1);
        let present = v["stats"]["present_chunks"].as_u64().unwrap();
        assert!(
            present >= 2,
            "shared.bin's chunks were found in the target: {v}"
        );
        assert!(v["stats"]["present_bytes"].as_u64().unwrap() >= shared.len() as u64);
        assert_eq!(snapshot_ids(&dst).len(), 2);
        let out = restore(&dst, &copied, t.path());
        assert_eq!(rsync_diff(&a, &out), "");
        let out = restore(&dst, &own, t.path());
        assert_eq!(rsync_diff(&b, &out), "");
        assert_clean(&dst, &format!("target encrypted: {dst_enc}"));
    }
}

#[test]
fn repair_rebuilds_copied_snapshots_from_the_packs() {
    let t = tempfile::tempdir().unwrap();
    let (source, _src, history) = fixture_source(t.path(), "source", false);
    for dst_enc in [false, true] {
        let dst = target(t.path(), &format!("target-{dst_enc}"), dst_enc);
        copy_json(&dst, &source, &[]);
        std::fs::remove_dir_all(dst.join("index")).unwrap();
        let out = strata(&dst, &["repair", "--json"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert_eq!(snapshot_ids(&dst), snapshot_ids(&source));
        let (code, text) = check(&dst, false);
        assert_eq!(code, Some(0), "{text}");
        for (i, (id, want)) in history.iter().enumerate() {
            let out = restore(&dst, id, t.path());
            assert_same(&format!("repaired, snapshot {i}"), want, &capture(&out));
        }
    }
}

/// Problem kinds `check --json` reports, and whether any is damage (exit 4).
fn no_damage(repo: &Path, label: &str) {
    let (code, text) = check(repo, false);
    assert!(
        matches!(code, Some(0) | Some(3)),
        "{label}: check exit {code:?}: {text}"
    );
    if code == Some(3) {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for p in v["problems"].as_array().unwrap() {
            let kind = p["kind"].as_str().unwrap();
            assert!(
                ["dangling_layer", "dangling_layerdirs", "unindexed_pack"].contains(&kind),
                "{label}: {text}"
            );
        }
    }
}

#[test]
fn a_killed_copy_leaves_the_target_consistent_and_a_rerun_completes_it() {
    let t = tempfile::tempdir().unwrap();
    let source = t.path().join("source");
    init(&source);
    let src = t.path().join("data");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..40u64 {
        std::fs::write(src.join(format!("data-{i}.bin")), pseudo_random(1 << 20, i)).unwrap();
    }
    backup(&source, &src, &[]);
    for round in 0..3u64 {
        for i in 0..10u64 {
            let n = 100 + round * 10 + i;
            std::fs::write(src.join(format!("more-{n}.bin")), pseudo_random(1 << 20, n)).unwrap();
        }
        backup(&source, &src, &["--kind", "incremental"]);
    }
    let dst = target(t.path(), "target", true);

    // Deterministic kills: after the layer is in the index, and just before the commit.
    for point in ["copy-after-layer", "copy-before-commit"] {
        let mut cmd = Command::new(bin());
        let out = cmd
            .arg("--repo")
            .arg(&dst)
            .args(pass_args(&dst))
            .args(["copy", "--from-repo", s(&source)])
            .env("STRATA_TEST_CRASH_AT", point)
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{point}");
        no_damage(&dst, point);
    }
    // kill -9 at moments spread over the copy.
    let mut killed = 0;
    for delay_ms in [20u64, 150, 400, 900] {
        let mut child = Command::new(bin())
            .arg("--repo")
            .arg(&dst)
            .args(pass_args(&dst))
            .args(["copy", "--from-repo", s(&source)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = child.kill();
        if child.wait().unwrap().signal() == Some(9) {
            killed += 1;
        }
        let label = format!("killed after {delay_ms} ms");
        no_damage(&dst, &label);
        // What is listed is complete.
        for id in snapshot_ids(&dst) {
            let out = restore(&dst, &id, t.path());
            let want = restore(&source, &id, &t.path().join("want"));
            assert_eq!(rsync_diff(&want, &out), "", "{label}: snapshot {id}");
        }
    }
    assert!(killed >= 2, "only {killed} copies were killed mid-way");
    let v = copy_json(&dst, &source, &[]);
    assert_eq!(snapshot_ids(&dst), snapshot_ids(&source), "{v}");
    let out = restore(&dst, "latest", t.path());
    assert_eq!(rsync_diff(&src, &out), "");
    // A pack finished just before a kill, its records not yet indexed, is garbage for prune.
    no_damage(&dst, "after the rerun");
    strata_ok(&dst, &["prune"]);
    assert_clean(&dst, "after the rerun and a prune");
}

#[test]
fn a_snapshot_the_target_forgot_stays_forgotten_and_what_builds_on_it_comes_as_a_full() {
    let t = tempfile::tempdir().unwrap();
    let source = t.path().join("source");
    init(&source);
    let src = t.path().join("data");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"first").unwrap();
    let full = backup(&source, &src, &["--kind", "full"]);
    std::fs::write(src.join("b.txt"), b"second").unwrap();
    let incr = backup(&source, &src, &["--kind", "incremental"]);
    let dst = target(t.path(), "target", false);
    copy_json(&dst, &source, &[]);

    // The target's own retention forgets both; they are not copied back.
    strata_ok(&dst, &["forget", &full, &incr]);
    let v = copy_json(&dst, &source, &[]);
    assert_eq!(
        actions(&v),
        vec![
            (full.clone(), "forgotten".to_string()),
            (incr.clone(), "forgotten".to_string())
        ],
        "{v}"
    );
    assert!(snapshot_ids(&dst).is_empty());

    // A new incremental on the forgotten chain comes as a full holding its whole view.
    std::fs::write(src.join("c.txt"), b"third").unwrap();
    let next = backup(&source, &src, &["--kind", "incremental"]);
    let v = copy_json(&dst, &source, &[]);
    let copied: Vec<&serde_json::Value> = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] == "copied")
        .collect();
    assert_eq!(copied.len(), 1, "{v}");
    assert_eq!(copied[0]["id"], next.as_str());
    assert_eq!(copied[0]["as_full"], true);
    let list = crate::common::snapshot_list(&dst);
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0]["kind"].as_str(), list[0]["depth"].as_u64()),
        (Some("full"), Some(1))
    );
    let out = restore(&dst, &next, t.path());
    assert_eq!(rsync_diff(&src, &out), "");
    assert_clean(&dst, "as full");
    // Repair keeps it: its blob was written after the tombstone, and it is not named there.
    std::fs::remove_dir_all(dst.join("index")).unwrap();
    strata_ok(&dst, &["repair"]);
    assert_eq!(snapshot_ids(&dst), vec![next]);
}

#[test]
fn bad_input_fails_clearly() {
    let t = tempfile::tempdir().unwrap();
    let source = encrypted(&t.path().join("source"));
    init(&source);
    let src = t.path().join("data");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("x"), b"x").unwrap();
    backup(&source, &src, &[]);
    let dst = target(t.path(), "target", false);
    let err = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();

    let o = copy(&dst, &t.path().join("missing"), &[]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(
        err(&o).contains("no strata repository there"),
        "{}",
        err(&o)
    );

    // Wrong passphrase for the source: exit 5, nothing written to the target.
    let wrong = t.path().join("wrong");
    std::fs::write(&wrong, "not it\n").unwrap();
    let o = strata(
        &dst,
        &[
            "copy",
            "--from-repo",
            s(&source),
            "--from-password-file",
            s(&wrong),
        ],
    );
    assert_eq!(o.status.code(), Some(5), "{}", err(&o));
    assert!(err(&o).contains("Wrong passphrase"), "{}", err(&o));
    // No passphrase at all (standard input is not a terminal): exit 5, naming the options.
    let o = Command::new(bin())
        .args(["--repo", s(&dst), "copy", "--from-repo", s(&source)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5), "{}", err(&o));
    assert!(err(&o).contains("--from-password-file"), "{}", err(&o));
    // The environment works as the option does.
    let o = Command::new(bin())
        .args([
            "--repo",
            s(&dst),
            "copy",
            "--from-repo",
            s(&source),
            "--json",
        ])
        .env("STRATA_FROM_PASSWORD", "test passphrase")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", err(&o));

    let o = copy(&source, &source, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("same repository"), "{}", err(&o));
    // Also through another path to it.
    std::os::unix::fs::symlink(&source, t.path().join("alias")).unwrap();
    let o = copy(&source, &t.path().join("alias"), &[]);
    assert!(err(&o).contains("same repository"), "{}", err(&o));

    let o = copy(&dst, &source, &["nosuchsnapshot"]);
    assert_eq!(o.status.code(), Some(1), "{}", err(&o));
    assert!(err(&o).contains("No snapshot matches"), "{}", err(&o));

    let o = strata(&dst, &["copy"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("--from-repo"), "{}", err(&o));
}

#[test]
fn source_filter_progress_and_metrics() {
    let t = tempfile::tempdir().unwrap();
    let source = t.path().join("source");
    init(&source);
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    for d in [&a, &b] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("f"), pseudo_random(100_000, 1)).unwrap();
    }
    backup(&source, &a, &["--source-name", "alpha"]);
    let beta = backup(&source, &b, &["--source-name", "beta"]);
    let dst = target(t.path(), "target", false);
    let metrics = t.path().join("copy.prom");
    let out = copy(
        &dst,
        &source,
        &[
            "--source",
            "beta",
            "--progress=json",
            "--metrics-file",
            s(&metrics),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(snapshot_ids(&dst), vec![beta]);
    let progress = String::from_utf8_lossy(&out.stderr);
    let last: serde_json::Value =
        serde_json::from_str(progress.lines().last().expect("progress lines")).unwrap();
    assert_eq!(
        (last["command"].as_str(), last["done"].as_bool()),
        (Some("copy"), Some(true))
    );
    let m = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        m.contains("strata_last_run_success{command=\"copy\"} 1"),
        "{m}"
    );
}

/// Runs `forget … --prune` on the source when the copy starts copying: after the copy planned
/// and leased what it reads, before it reads any chunk.
struct PruneWhenCopying {
    args: Vec<String>,
    done: std::sync::atomic::AtomicBool,
}

impl strata::progress::Progress for PruneWhenCopying {
    fn phase(&self, label: &'static str) {
        if label != "Copying" || self.done.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        let out = Command::new(bin()).args(&self.args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn a_prune_of_the_source_during_a_copy_moves_chunks_but_never_changes_what_is_copied() {
    let t = tempfile::tempdir().unwrap();
    let source = t.path().join("source");
    init(&source);
    let data = t.path().join("data");
    std::fs::create_dir_all(data.join("keep")).unwrap();
    std::fs::create_dir_all(data.join("drop")).unwrap();
    for i in 0..8u64 {
        std::fs::write(data.join(format!("keep/{i}")), pseudo_random(300_000, i)).unwrap();
        std::fs::write(
            data.join(format!("drop/{i}")),
            pseudo_random(300_000, 50 + i),
        )
        .unwrap();
    }
    let first = backup(&source, &data, &["--kind", "full"]);
    std::fs::remove_dir_all(data.join("drop")).unwrap();
    // Its chunks live in the first backup's pack, half of which is dead once that is forgotten.
    let second = backup(&source, &data, &["--kind", "full"]);
    let packs_before = pack_names(&source);
    let dst = target(t.path(), "target", true);

    let hook = std::sync::Arc::new(PruneWhenCopying {
        // The copied snapshot itself is forgotten too: its lease keeps its layer and chunks.
        args: ["--repo", s(&source), "forget", &first, &second, "--prune"]
            .map(String::from)
            .to_vec(),
        done: Default::default(),
    });
    let mut from =
        strata::copy::Source::open(&source, &strata::passphrase::Sources::copy_source(None))
            .unwrap();
    let to = crate::common::open(&dst).open().unwrap();
    let opts = strata::copy::CopyOptions {
        snapshots: vec![second.clone()],
        progress: strata::progress::ProgressHandle(hook.clone()),
        ..Default::default()
    };
    let out = strata::copy::copy(&mut from, &to, &opts).unwrap();
    assert!(hook.done.load(std::sync::atomic::Ordering::SeqCst));
    assert_eq!(out.stats.snapshots_copied, 1);
    drop((to, from));

    let after = pack_names(&source);
    assert!(
        packs_before.iter().any(|p| !after.contains(p)),
        "the prune rewrote the pack the copy read: {packs_before:?} → {after:?}"
    );
    assert!(snapshot_ids(&source).is_empty());
    assert_eq!(snapshot_ids(&dst), vec![second.clone()]);
    let restored = restore(&dst, &second, t.path());
    assert_eq!(rsync_diff(&data, &restored), "");
    assert_clean(&dst, "copied while the source was pruned");
    // The copy is over: its lease is gone, and the next prune reclaims the forgotten layer.
    let p = strata_ok(&source, &["prune", "--json"]);
    let p: serde_json::Value = serde_json::from_slice(&p.stdout).unwrap();
    assert!(p["orphan_entries"].as_u64().unwrap() > 0, "{p}");
}

/// The pack files of a repository, by name.
fn pack_names(repo: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for d in std::fs::read_dir(repo.join("packs")).unwrap() {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            out.push(f.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    out
}
