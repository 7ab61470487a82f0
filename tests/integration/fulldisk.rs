//! A full disk: a backup into a repository whose filesystem fills up, and a restore into a target
//! that fills up. Both run on a real, small tmpfs (so they need root, like the mount tests; with
//! `STRATA_REQUIRE_FUSE=1`, as in CI, a missing privilege is a failure rather than a skip). What
//! must hold: a clear error naming the cause, no panic, nothing committed half-way, earlier
//! snapshots intact, and the next run working once there is space again.

use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::mount::run_with_timeout;
use crate::common::scratchfs::ScratchFs;
use crate::common::{backup, files_under, pseudo_random, snapshot_ids, strata, strata_ok};

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
    let Some(small) = ScratchFs::tmpfs(24) else {
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
            // Large enough that removing it frees more than the reserve strata keeps for its
            // index (a few MiB here), so the next backup can run on the otherwise full disk.
            .filter(|p| fs::metadata(p).is_ok_and(|m| m.len() > 6 << 20))
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
    let Some(small) = ScratchFs::tmpfs(8) else {
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

/// Bytes available on the file system holding `p`.
fn free_bytes(p: &Path) -> u64 {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statvfs fills the zeroed struct we own from a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Fills the file system of `dir` with `dir/filler` until `free` bytes are left (never less).
fn fill_to(dir: &Path, free: u64) {
    let filler = dir.join("filler");
    let _ = fs::remove_file(&filler);
    let mut f = fs::File::create(&filler).unwrap();
    let block = vec![0x5au8; 64 << 10];
    loop {
        let have = free_bytes(dir);
        if have <= free {
            break;
        }
        let n = (have - free).min(block.len() as u64) as usize;
        if std::io::Write::write_all(&mut f, &block[..n]).is_err() {
            break;
        }
        f.sync_data().unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// `strata ARGS` that must end within two minutes and 4 GiB of address space: a full disk must
/// never hang a command (sled used to spin at 100% CPU with memory growing by hundreds of MB a
/// second, which without the limit would take the test machine down with it).
fn bounded(repo: &Path, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(crate::common::bin());
    cmd.arg("--repo")
        .arg(repo)
        .args(args)
        .env_remove("STRATA_REPO");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 4 << 30,
                rlim_max: 4 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    run_with_timeout(&mut cmd, Duration::from_secs(120))
        .unwrap_or_else(|| panic!("strata {args:?} did not end within 2 minutes on a full disk"))
}

/// One backup of `src` into a copy of the `baseline` repository on `small`, with `free` bytes left
/// on the disk; checks everything issue 16 asks of a full disk and returns the failing stage
/// (`None` when the backup fitted).
fn backup_with_free(
    small: &ScratchFs,
    baseline: &Path,
    first: &str,
    src: &Path,
    free: u64,
) -> Option<String> {
    let repo = small.path.join("repo");
    let _ = fs::remove_file(small.path.join("filler"));
    let _ = fs::remove_dir_all(&repo);
    copy_dir(baseline, &repo);
    fill_to(&small.path, free);
    let label = format!("{} with {free} bytes free", src.display());
    let out = bounded(&repo, &["backup", "--json", src.to_str().unwrap()]);
    let err = stderr(&out);
    assert!(!err.contains("panicked"), "{label}: {err}");
    // sled never met the full disk: it logs its I/O errors.
    assert!(!err.contains("hit error while writing"), "{label}: {err}");
    let stage = if out.status.success() {
        None
    } else {
        assert_clear_enospc(&out, &label);
        assert_eq!(out.status.code(), Some(1), "{label}: {err}");
        let stage = err
            .split(" while ")
            .nth(1)
            .and_then(|s| s.split(" in repository").next())
            .unwrap_or("")
            .to_string();
        Some(stage)
    };
    // On the still-full disk the repository opens and the earlier snapshot reads back.
    let out = bounded(&repo, &["snapshots", "--json"]);
    assert!(out.status.success(), "{label}: snapshots: {}", stderr(&out));
    let out = bounded(&repo, &["cat", first, "keep.txt"]);
    assert_eq!(out.stdout, b"committed before the disk filled", "{label}");
    // check finds no damage (leftovers of the failed backup are allowed: exit 3).
    let out = bounded(&repo, &["check"]);
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "{label}: check: {}{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    // With space again, the backup works.
    fs::remove_file(small.path.join("filler")).unwrap();
    if stage.is_some() {
        let out = bounded(&repo, &["backup", src.to_str().unwrap()]);
        assert!(out.status.success(), "{label}: retry: {}", stderr(&out));
    }
    let out = bounded(&repo, &["cat", "latest", "keep.txt"]);
    assert_eq!(out.stdout, b"committed before the disk filled", "{label}");
    let out = bounded(&repo, &["check"]);
    assert!(
        matches!(out.status.code(), Some(0) | Some(3)),
        "{label}: check after the retry: {}",
        stderr(&out)
    );
    stage
}

/// Issue 16: the disk filling up while a backup writes packs, while it writes the index (sled
/// spun at 100% CPU there, memory growing without bound, and left an index every later command
/// called corrupt), or at the snapshot commit. At every fill level the backup ends within a
/// bounded time with a clear "No space left on device", the repository opens on the full disk,
/// `check` finds no damage, and a retry with space succeeds.
#[test]
fn full_disk_at_every_stage_of_a_backup_fails_cleanly_and_recovers() {
    let Some(small) = ScratchFs::tmpfs(64) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    // The repro: a 10k-entry tree.
    let tree = t.path().join("tree");
    for d in 0..100 {
        fs::create_dir_all(tree.join(format!("d{d}"))).unwrap();
        for f in 0..100 {
            fs::write(
                tree.join(format!("d{d}/f{f}.txt")),
                format!("file {d}/{f} ").repeat(4),
            )
            .unwrap();
        }
    }
    fs::write(tree.join("keep.txt"), b"committed before the disk filled").unwrap();
    // Data that does not compress, for pack writes.
    let media = t.path().join("media");
    fs::create_dir_all(&media).unwrap();
    fs::write(media.join("keep.txt"), b"committed before the disk filled").unwrap();
    fs::write(media.join("video.bin"), pseudo_random(24 << 20, 5)).unwrap();
    let first_src = t.path().join("first");
    fs::create_dir_all(&first_src).unwrap();
    fs::write(
        first_src.join("keep.txt"),
        b"committed before the disk filled",
    )
    .unwrap();

    let repo = small.path.join("repo");
    strata_ok(&repo, &["init"]);
    let first = backup(&repo, &first_src, &[]);
    let baseline = t.path().join("baseline");
    copy_dir(&repo, &baseline);

    let mut stages = std::collections::BTreeSet::new();
    // The repro (about 300 KB free) and more: the index cannot take 10k entries.
    for free in [300 << 10, 1 << 20, 3 << 20, 5 << 20] {
        stages.extend(backup_with_free(&small, &baseline, &first, &tree, free));
    }
    // Packs cannot take 24 MB.
    for free in [2 << 20, 8 << 20, 16 << 20] {
        stages.extend(backup_with_free(&small, &baseline, &first, &media, free));
    }
    // Just below what the media backup needs, the packs fit and the commit does not: find the
    // smallest free space that works (to 128 KiB), then step down from it.
    let (mut lo, mut hi) = (16u64 << 20, 56u64 << 20);
    assert_eq!(
        backup_with_free(&small, &baseline, &first, &media, hi),
        None,
        "the media backup fits in {hi} bytes"
    );
    while hi - lo > 128 << 10 {
        let mid = (lo + hi) / 2;
        match backup_with_free(&small, &baseline, &first, &media, mid) {
            None => hi = mid,
            Some(s) => {
                stages.insert(s);
                lo = mid;
            }
        }
    }
    let mut free = hi;
    while !stages.contains("committing the snapshot") && free > hi - (2 << 20) {
        free -= 64 << 10;
        stages.extend(backup_with_free(&small, &baseline, &first, &media, free));
    }
    for want in [
        "writing a pack",
        "writing the index",
        "committing the snapshot",
    ] {
        assert!(
            stages.contains(want),
            "no fill level failed while {want}: {stages:?}"
        );
    }
}

/// Every file of every snapshot, as `strata ls -R --json` and `cat` show it.
fn contents(repo: &Path) -> std::collections::BTreeMap<String, Vec<(String, Vec<u8>)>> {
    let mut all = std::collections::BTreeMap::new();
    for id in snapshot_ids(repo) {
        let out = bounded(repo, &["ls", "-R", "--json", &id]);
        let mut files = Vec::new();
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let path = v["path"].as_str().unwrap().to_string();
            let data = match v["type"].as_str() {
                Some("file") if path.ends_with("keep.txt") || path.starts_with("new") => {
                    bounded(repo, &["cat", &id, &path]).stdout
                }
                t => t.unwrap_or("").as_bytes().to_vec(),
            };
            files.push((path, data));
        }
        all.insert(id, files);
    }
    all
}

/// Issue 16: a full disk in the middle of `forget` (which rewrites layers: here it materialises a
/// 10k-entry layer) ends it with a clear error, leaves every view intact and the repository
/// opening, `check` finds no damage, and once there is space the next command completes the
/// forget (or, when it failed before its first change, a rerun does it).
#[test]
fn full_disk_during_forget_fails_cleanly_and_the_next_command_completes_it() {
    let Some(small) = ScratchFs::tmpfs(64) else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    for d in 0..100 {
        fs::create_dir_all(src.join(format!("d{d}"))).unwrap();
        for f in 0..100 {
            fs::write(src.join(format!("d{d}/f{f}.txt")), format!("{d}/{f}")).unwrap();
        }
    }
    fs::write(src.join("keep.txt"), b"committed before the disk filled").unwrap();
    let repo = small.path.join("repo");
    strata_ok(&repo, &["init"]);
    let mut ids = vec![backup(&repo, &src, &["--kind", "full"])];
    for i in 0..3 {
        fs::write(src.join(format!("new{i}.txt")), format!("new {i}")).unwrap();
        fs::remove_file(src.join(format!("d{i}/f0.txt"))).unwrap();
        ids.push(backup(&repo, &src, &[]));
    }
    let before = contents(&repo);
    let baseline = t.path().join("baseline");
    copy_dir(&repo, &baseline);
    let mut failed = 0;
    for free in [1u64 << 20, 3 << 20, 5 << 20, 8 << 20, 14 << 20] {
        let label = format!("forget with {free} bytes free");
        let _ = fs::remove_file(small.path.join("filler"));
        fs::remove_dir_all(&repo).unwrap();
        copy_dir(&baseline, &repo);
        fill_to(&small.path, free);
        // Forgetting the full materialises the next snapshot (10k entries copied).
        let out = bounded(&repo, &["forget", &ids[0]]);
        if !out.status.success() {
            failed += 1;
            assert_clear_enospc(&out, &label);
            eprintln!("{label}: {}", stderr(&out).lines().last().unwrap_or(""));
        }
        assert!(!stderr(&out).contains("hit error while writing"), "{label}");
        // On the full disk: the views are intact and check finds no damage.
        let now = contents(&repo);
        for (id, files) in &now {
            assert_eq!(files, &before[id], "{label}: snapshot {id} changed");
        }
        let out = bounded(&repo, &["check", "--json"]);
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "{label}: check: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // With space, any command completes what was started; a forget that failed before its
        // first change is simply run again.
        fs::remove_file(small.path.join("filler")).unwrap();
        bounded(&repo, &["snapshots"]);
        if snapshot_ids(&repo).contains(&ids[0]) {
            let out = bounded(&repo, &["forget", &ids[0]]);
            assert!(out.status.success(), "{label}: rerun: {}", stderr(&out));
        }
        let mut want = before.clone();
        want.remove(&ids[0]);
        assert_eq!(contents(&repo), want, "{label}");
        bounded(&repo, &["prune"]);
        let out = bounded(&repo, &["check"]);
        assert_eq!(out.status.code(), Some(0), "{label}: {}", stderr(&out));
    }
    assert!(
        failed >= 2,
        "only {failed} fill levels made the forget fail"
    );
}
