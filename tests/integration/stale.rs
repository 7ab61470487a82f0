//! Issue 16: a file whose content changes while its size and mtime stay the same must be read
//! again. Each in-place edit below keeps the inode, the size and the mtime (to the nanosecond) and
//! only moves the ctime; the incremental and differential snapshots taken after it must hold the
//! new content, read back through `cat`, `restore` and the mount.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::mount::{fuse_available, snapshot_names, with_timeout, Mount};
use crate::common::scratchfs::ScratchFs;
use crate::common::{backup, new_repo, pseudo_random, strata_ok};

const SIZE: usize = 300_000;

fn sh(script: &str, dir: &Path) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .status()
        .expect("run sh");
    assert!(st.success(), "{script} failed");
}

/// (name, how the file is rewritten in place). Each script runs in the work directory, where
/// `src/` is the backed-up tree and `ref/` holds reference files outside it.
const EDITS: &[(&str, &str)] = &[
    // Rewrite bytes in place without truncating, then put the old mtime back.
    (
        "rewrite_touch_r",
        "cp -p src/rewrite_touch_r ref/stamp && \
         dd if=ref/new_rewrite_touch_r of=src/rewrite_touch_r conv=notrunc status=none && \
         touch -r ref/stamp src/rewrite_touch_r",
    ),
    // `cp --preserve=timestamps` over an existing file writes into the same inode.
    (
        "cp_preserve",
        "touch -r src/cp_preserve ref/new_cp_preserve && \
         cp --preserve=timestamps ref/new_cp_preserve src/cp_preserve",
    ),
    // Truncate to zero, write the new content, restore the mtime.
    (
        "truncate_rewrite",
        "cp -p src/truncate_rewrite ref/stamp2 && \
         : > src/truncate_rewrite && \
         cat ref/new_truncate_rewrite >> src/truncate_rewrite && \
         touch -r ref/stamp2 src/truncate_rewrite",
    ),
    // rsync updating in place from a source with the same size and mtime; --ignore-times makes
    // rsync transfer although its own quick check would skip the file.
    (
        "rsync_inplace",
        "touch -r src/rsync_inplace ref/new_rsync_inplace && \
         mkdir -p ref/rs && cp -p ref/new_rsync_inplace ref/rs/rsync_inplace && \
         rsync --inplace --ignore-times -t ref/rs/rsync_inplace src/rsync_inplace",
    ),
    // tar extracting over an existing file, with the archived mtime equal to the old one.
    (
        "tar_extract",
        "mkdir -p ref/tar && cp ref/new_tar_extract ref/tar/tar_extract && \
         touch -r src/tar_extract ref/tar/tar_extract && \
         tar --format=posix -C ref/tar -cf ref/t.tar tar_extract && \
         tar -C src --overwrite -xf ref/t.tar tar_extract",
    ),
];

struct Edited {
    _t: tempfile::TempDir,
    repo: std::path::PathBuf,
    /// (name, content after the edit)
    files: Vec<(String, Vec<u8>)>,
}

/// A full backup, the in-place edits, then an incremental and a differential backup.
fn edited_repo(extra_backup_args: &[&str]) -> Edited {
    let (t, repo) = new_repo();
    let work = t.path().join("work");
    let src = work.join("src");
    fs::create_dir_all(&src).unwrap();
    fs::create_dir_all(work.join("ref")).unwrap();
    let mut files = Vec::new();
    for (i, (name, _)) in EDITS.iter().enumerate() {
        let old = pseudo_random(SIZE, 100 + i as u64);
        let mut new = old.clone();
        // A change in the middle of the file, same length.
        new[SIZE / 2..SIZE / 2 + 4096].copy_from_slice(&pseudo_random(4096, 900 + i as u64));
        fs::write(src.join(name), &old).unwrap();
        fs::write(work.join("ref").join(format!("new_{name}")), &new).unwrap();
        files.push((name.to_string(), new));
    }
    fs::write(src.join("untouched"), b"same as ever").unwrap();
    let mut args = vec!["--kind", "full"];
    args.extend_from_slice(extra_backup_args);
    backup(&repo, &src, &args);
    let before: Vec<fs::Metadata> = EDITS
        .iter()
        .map(|(n, _)| fs::metadata(src.join(n)).unwrap())
        .collect();
    // Let the clock move so the edits' ctimes differ from the backed-up ones on any filesystem.
    std::thread::sleep(Duration::from_millis(20));
    for (_, script) in EDITS {
        sh(script, &work);
    }
    for ((name, new), old_meta) in files.iter().zip(&before) {
        let m = fs::metadata(src.join(name)).unwrap();
        assert_eq!(
            fs::read(src.join(name)).unwrap(),
            *new,
            "{name}: edit applied"
        );
        assert_eq!(m.len(), old_meta.len(), "{name}: size kept");
        assert_eq!(
            (m.mtime(), m.mtime_nsec()),
            (old_meta.mtime(), old_meta.mtime_nsec()),
            "{name}: mtime kept"
        );
        assert_ne!(
            (m.ctime(), m.ctime_nsec()),
            (old_meta.ctime(), old_meta.ctime_nsec()),
            "{name}: ctime moved"
        );
    }
    for kind in ["incremental", "differential"] {
        let mut args = vec!["--kind", kind];
        args.extend_from_slice(extra_backup_args);
        backup(&repo, &src, &args);
    }
    Edited { _t: t, repo, files }
}

#[test]
fn in_place_edits_keeping_size_and_mtime_are_read_again_issue_16() {
    let e = edited_repo(&[]);
    let names = snapshot_names(&e.repo);
    assert_eq!(names.len(), 3);
    let ids = crate::common::snapshot_ids(&e.repo);
    for (snap, id) in names.iter().zip(&ids).skip(1) {
        // cat
        for (name, new) in &e.files {
            let out = strata_ok(&e.repo, &["cat", id, name]);
            assert!(out.stdout == *new, "cat {snap} {name}: stale content");
        }
        // restore
        let target = e._t.path().join(format!("restore-{id}"));
        strata_ok(
            &e.repo,
            &["restore", "--target", target.to_str().unwrap(), id],
        );
        for (name, new) in &e.files {
            assert!(
                fs::read(target.join(name)).unwrap() == *new,
                "restore {snap} {name}: stale content"
            );
        }
        assert_eq!(fs::read(target.join("untouched")).unwrap(), b"same as ever");
    }
    if !fuse_available() {
        return;
    }
    let m = Mount::start(&e.repo, &[]);
    let mp = m.path.clone();
    let files = e.files.clone();
    with_timeout(Duration::from_secs(60), move || {
        for snap in names.iter().skip(1) {
            for (name, new) in &files {
                let got = fs::read(mp.join("snapshots").join(snap).join(name)).unwrap();
                assert!(got == *new, "mount {snap} {name}: stale content");
            }
        }
    });
}

/// A ctime-only change (here a chmod and back) is enough to read the file again, and dedup keeps
/// that cheap: the file is read, nothing new is stored.
#[test]
fn ctime_only_change_rereads_and_dedups_issue_16() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("a"), pseudo_random(SIZE, 7)).unwrap();
    fs::write(src.join("b"), b"not touched").unwrap();
    backup(&repo, &src, &[]);
    std::thread::sleep(Duration::from_millis(20));
    sh("chmod 600 a && chmod 644 a", &src);
    // Past the timestamp tick of the chmod, so the read is not one that must be repeated.
    std::thread::sleep(Duration::from_millis(50));
    let out = strata_ok(&repo, &["backup", "--json", src.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stats"]["files_read"], 1, "{v}");
    assert_eq!(v["stats"]["read_bytes"], SIZE as u64, "{v}");
    assert_eq!(v["stats"]["new_bytes"], 0, "{v}");
    // Nothing changed at all: nothing is read.
    let out = strata_ok(&repo, &["backup", "--json", src.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["stats"]["files_read"], 0, "{v}");
}

/// Git's "racily clean" case: a file written, backed up, and written again within one timestamp
/// tick keeps its size, mtime and ctime. The backup must not store content that a later write in
/// the same tick can hide: the next backup must hold the last write.
#[test]
fn a_write_in_the_same_timestamp_tick_as_the_backup_is_not_lost_issue_16() {
    let Some(cfs) = ScratchFs::whole_second_timestamps() else {
        return;
    };
    let (_t, repo) = new_repo();
    let src = cfs.path.join("src");
    fs::create_dir(&src).unwrap();
    let f = src.join("orders.db");
    let (a, b, c) = (vec![b'A'; 8192], vec![b'B'; 8192], vec![b'C'; 8192]);
    fs::write(&f, &a).unwrap();
    backup(&repo, &src, &[]);
    // Start right after a second begins, so the write, the backup and the next write fit in it.
    let into_second = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    std::thread::sleep(Duration::from_nanos(
        (1_000_000_000 - into_second as u64) % 1_000_000_000 + 5_000_000,
    ));
    fs::write(&f, &b).unwrap();
    let second = backup(&repo, &src, &[]);
    fs::write(&f, &c).unwrap();
    assert_eq!(strata_ok(&repo, &["cat", &second, "orders.db"]).stdout, b);
    std::thread::sleep(Duration::from_millis(1100));
    backup(&repo, &src, &[]);
    assert!(
        strata_ok(&repo, &["cat", "latest", "orders.db"]).stdout == c,
        "the last write is lost: the backup kept the content of an earlier write in the same tick"
    );
}
