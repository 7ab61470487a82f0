//! A full disk: a backup into a repository whose filesystem fills up, and a restore into a target
//! that fills up. Both run on a real, small tmpfs (so they need root, like the mount tests; with
//! `STRATA_REQUIRE_FUSE=1`, as in CI, a missing privilege is a failure rather than a skip). What
//! must hold: a clear error naming the cause, no panic, nothing committed half-way, earlier
//! snapshots intact, and the next run working once there is space again.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use crate::common::{backup, files_under, pseudo_random, snapshot_ids, strata, strata_ok};

/// A tmpfs of `mib` MiB mounted on a fresh directory; unmounted on drop.
struct SmallFs {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl SmallFs {
    fn new(mib: u32) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs");
        fs::create_dir(&path).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let why = "cannot mount a tmpfs (not root?)";
            if std::env::var("STRATA_REQUIRE_FUSE").as_deref() == Ok("1") {
                panic!("full-disk tests required (STRATA_REQUIRE_FUSE=1) but {why}");
            }
            eprintln!("Skipping full-disk test: {why}");
            return None;
        }
        Some(SmallFs { _dir: dir, path })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_clear_enospc(out: &std::process::Output, what: &str) {
    let err = stderr(out);
    assert!(!out.status.success(), "{what} succeeded on a full disk");
    assert!(
        err.contains("No space left on device"),
        "{what}: the error does not say the disk is full: {err}"
    );
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
}

#[test]
fn backup_into_a_full_repository_fails_cleanly_and_recovers() {
    let Some(small) = SmallFs::new(24) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("orders")).unwrap();
    for i in 0..50 {
        fs::write(
            src.join(format!("orders/o-{i}.json")),
            format!("{{\"order\": {i}, \"status\": \"paid\"}}"),
        )
        .unwrap();
    }
    let repo = small.path.join("repo");
    strata_ok(&repo, &["init"]);
    let first = backup(&repo, &src, &[]);

    // 40 MB that does not compress cannot fit in what is left of 24 MiB.
    fs::write(src.join("media.bin"), pseudo_random(40 << 20, 7)).unwrap();
    let out = strata(&repo, &["backup", src.to_str().unwrap()]);
    assert_clear_enospc(&out, "backup");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // Nothing of the failed backup is visible; the first snapshot reads back.
    assert_eq!(snapshot_ids(&repo), vec![first.clone()]);
    let cat = strata_ok(&repo, &["cat", &first, "orders/o-7.json"]);
    assert_eq!(cat.stdout, fs::read(src.join("orders/o-7.json")).unwrap());
    let check = strata(&repo, &["check", "--read-data"]);
    assert!(
        matches!(check.status.code(), Some(0) | Some(3)),
        "check after the failed backup: {}{}",
        String::from_utf8_lossy(&check.stdout),
        stderr(&check)
    );

    // With space again (the big file gone, the failed backup's leftovers pruned) the next backup
    // works and holds the new state.
    fs::remove_file(src.join("media.bin")).unwrap();
    fs::write(src.join("orders/o-50.json"), b"{\"order\": 50}").unwrap();
    strata_ok(&repo, &["prune"]);
    let second = backup(&repo, &src, &[]);
    assert_eq!(snapshot_ids(&repo), vec![first.clone(), second.clone()]);
    // A backup killed part-way leaves an unfinished pack, and then the disk fills up: the
    // repository still opens and lists, and the next backup reclaims the leftover's space and
    // succeeds while the disk is otherwise still full.
    fs::write(src.join("media.bin"), pseudo_random(16 << 20, 9)).unwrap();
    let mut child = Command::new(crate::common::bin())
        .args([
            "--repo",
            repo.to_str().unwrap(),
            "backup",
            src.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let tmp_pack = || {
        fs::read_dir(repo.join("packs"))
            .unwrap()
            .flat_map(|d| fs::read_dir(d.unwrap().path()).unwrap())
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().ends_with(".pack.tmp"))
            .filter(|p| fs::metadata(p).is_ok_and(|m| m.len() > 2 << 20))
    };
    while tmp_pack().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no pack being written"
        );
        assert!(child.try_wait().unwrap().is_none(), "backup ended too soon");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(tmp_pack().is_some(), "the killed backup left its pack");
    let mut f = fs::File::create(small.path.join("filler")).unwrap();
    let chunk = pseudo_random(1 << 20, 3);
    while std::io::Write::write_all(&mut f, &chunk).is_ok() {}
    drop(f);
    let out = strata(&repo, &["snapshots", "--json"]);
    assert!(
        out.status.success(),
        "snapshots on a full disk: {}",
        stderr(&out)
    );
    assert_eq!(snapshot_ids(&repo), vec![first.clone(), second.clone()]);
    fs::remove_file(src.join("media.bin")).unwrap();
    fs::write(src.join("orders/o-51.json"), b"{\"order\": 51}").unwrap();
    let third = backup(&repo, &src, &[]);
    assert!(tmp_pack().is_none(), "the leftover pack was removed");
    assert_eq!(
        snapshot_ids(&repo),
        vec![first, second.clone(), third.clone()]
    );
    let cat = strata_ok(&repo, &["cat", &third, "orders/o-51.json"]);
    assert_eq!(cat.stdout, b"{\"order\": 51}");
    fs::remove_file(small.path.join("filler")).unwrap();

    let cat = strata_ok(&repo, &["cat", &second, "orders/o-50.json"]);
    assert_eq!(cat.stdout, b"{\"order\": 50}");
    let check = strata(&repo, &["check", "--read-data"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
}

#[test]
fn restore_into_a_full_target_leaves_no_partial_files() {
    let Some(small) = SmallFs::new(8) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("media")).unwrap();
    for i in 0..6 {
        fs::write(
            src.join(format!("media/m{i}.bin")),
            pseudo_random(3 << 20, i + 1),
        )
        .unwrap();
    }
    fs::write(src.join("readme.txt"), b"hello").unwrap();
    let repo = t.path().join("repo");
    strata_ok(&repo, &["init"]);
    let id = backup(&repo, &src, &[]);

    let target = small.path.join("restore");
    let out = strata(
        &repo,
        &["restore", &id, "--target", target.to_str().unwrap()],
    );
    assert_clear_enospc(&out, "restore");

    // Whatever landed under a real name is complete and correct; no temporary file is left.
    let landed = files_under(&target);
    assert!(
        landed.len() < 7,
        "18 MiB cannot all fit in 8 MiB: {:?}",
        landed.keys().collect::<Vec<_>>()
    );
    for (rel, data) in &landed {
        let name = rel.file_name().unwrap().to_string_lossy();
        assert!(
            !name.starts_with(".strata-tmp-"),
            "temporary file left: {rel:?}"
        );
        assert_eq!(
            data,
            &fs::read(src.join(rel)).unwrap(),
            "{rel:?} is under its real name but not complete"
        );
    }

    // Into a target with room, the same restore completes.
    let roomy = t.path().join("roomy");
    strata_ok(
        &repo,
        &["restore", &id, "--target", roomy.to_str().unwrap()],
    );
    assert_eq!(files_under(&roomy), files_under(&src));
}
