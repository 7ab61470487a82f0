//! Damage in the bucket: a deleted pack object and an altered byte in another are found by
//! `check --read-data`, which names the affected files; reading an affected file fails (`cat`
//! exits 1 having written at most verified bytes, the mount answers EIO), never with wrong bytes;
//! unaffected files still read.

use std::path::{Path, PathBuf};

use crate::common::mount::{fuse_available, with_timeout};
use crate::common::pseudo_random;
use crate::common::s3::{S3Repo, S3Server};

const SIZE: usize = 300_000;

/// The pack object holding `needle`, and where.
fn find_in_packs(repo: &S3Repo, needle: &[u8]) -> (PathBuf, usize) {
    repo.objects_under("packs")
        .into_iter()
        .find_map(|p| {
            let data = std::fs::read(&p).unwrap();
            let at = data.windows(needle.len()).position(|w| w == needle)?;
            Some((p, at))
        })
        .expect("needle in no pack object")
}

/// `cat` of a damaged file fails, having written at most a prefix of the true content.
fn cat_fails(repo: &S3Repo, path: &str, truth: &[u8], label: &str) {
    let out = repo.run(&["cat", "latest", path]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{label}: cat {path}: {err}");
    assert!(!err.contains("panicked"), "{label}: {err}");
    assert!(
        out.stdout.len() < truth.len() && truth.starts_with(&out.stdout),
        "{label}: cat {path} wrote {} bytes that are not a prefix of the file",
        out.stdout.len()
    );
}

#[test]
fn deleted_and_altered_pack_objects_are_found_and_named() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let repo = server.repo("bucket", "damaged", &t.path().join("cache-a"));
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    repo.init();
    // One file per backup, so each sits in a pack of its own (random: stored raw, findable).
    let files: Vec<(&str, Vec<u8>)> = ["lost.bin", "altered.bin", "intact.bin"]
        .iter()
        .enumerate()
        .map(|(i, n)| (*n, pseudo_random(SIZE, 40 + i as u64)))
        .collect();
    for (name, data) in &files {
        std::fs::write(src.join(name), data).unwrap();
        repo.backup(&src, &[]);
    }
    let (lost_pack, _) = find_in_packs(&repo, &files[0].1[100_000..100_064]);
    let (altered_pack, at) = find_in_packs(&repo, &files[1].1[100_000..100_064]);
    let (intact_pack, _) = find_in_packs(&repo, &files[2].1[100_000..100_064]);
    assert!(lost_pack != altered_pack && altered_pack != intact_pack);
    std::fs::remove_file(&lost_pack).unwrap();
    let mut data = std::fs::read(&altered_pack).unwrap();
    data[at + 32] ^= 0x40;
    std::fs::write(&altered_pack, data).unwrap();

    // check --read-data, from this machine and from a new one: damage, both files named.
    let fresh = repo.host(&t.path().join("cache-b"));
    for (r, label) in [(&repo, "this machine"), (&fresh, "a new cache")] {
        let (code, text) = super::check_read_data(r);
        assert_eq!(code, Some(4), "{label}: {text}");
        assert!(
            text.contains("lost.bin") && text.contains("altered.bin"),
            "{label}: the damaged files are not named: {text}"
        );
        assert!(!text.contains("intact.bin"), "{label}: {text}");
    }

    for (r, label) in [(&repo, "this machine"), (&fresh, "a new cache")] {
        cat_fails(r, "lost.bin", &files[0].1, label);
        cat_fails(r, "altered.bin", &files[1].1, label);
        assert!(r.ok(&["cat", "latest", "intact.bin"]).stdout == files[2].1);
    }

    if !fuse_available() {
        return;
    }
    let third = repo.host(&t.path().join("cache-c"));
    let m = third.mount(&[]);
    let snap = m.path.join("latest");
    let truth: Vec<Vec<u8>> = files.iter().map(|f| f.1.clone()).collect();
    with_timeout(std::time::Duration::from_secs(120), move || {
        for name in ["lost.bin", "altered.bin"] {
            match std::fs::read(snap.join(name)) {
                Ok(_) => panic!("{name} read through the mount despite the damage"),
                Err(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO), "{name}: {e}"),
            }
        }
        assert!(std::fs::read(snap.join("intact.bin")).unwrap() == truth[2]);
        assert_metadata_still_reads(&snap);
    });
}

/// Listing and stat of damaged files still work: only their content is lost.
fn assert_metadata_still_reads(snap: &Path) {
    let mut names: Vec<String> = std::fs::read_dir(snap)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["altered.bin", "intact.bin", "lost.bin"]);
    assert_eq!(
        std::fs::metadata(snap.join("lost.bin")).unwrap().len(),
        SIZE as u64
    );
}

/// The log entries of the bucket, oldest first.
fn log_objects(repo: &S3Repo) -> Vec<PathBuf> {
    repo.objects_under("log")
}

#[test]
fn an_altered_log_object_is_a_clear_error_never_another_index() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let repo = server.repo("bucket", "log", &t.path().join("cache-a"));
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    repo.init();
    for i in 0..3u64 {
        std::fs::write(src.join(format!("f{i}")), pseudo_random(10_000, i)).unwrap();
        repo.backup(&src, &[]);
    }
    let logs = log_objects(&repo);
    // The second backup's commit: flip one byte of the compressed object.
    let victim = &logs[logs.len() - 2];
    let mut data = std::fs::read(victim).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    std::fs::write(victim, data).unwrap();
    let fresh = repo.host(&t.path().join("cache-b"));
    let out = fresh.run(&["snapshots"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(
        err.contains(name),
        "the error does not name the log entry: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

/// Three backups, then the second one's commit deleted from the bucket's log; returns the
/// repository, as the machine that made (and applied) them, and the temp dir.
fn a_commit_lost(server: &S3Server) -> (S3Repo, tempfile::TempDir) {
    let t = tempfile::tempdir().unwrap();
    let repo = server.repo("bucket", "lost-commit", &t.path().join("cache-a"));
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    repo.init();
    for i in 0..3u64 {
        std::fs::write(src.join(format!("f{i}")), pseudo_random(10_000, i)).unwrap();
        repo.backup(&src, &[]);
    }
    let logs = log_objects(&repo);
    std::fs::remove_file(&logs[logs.len() - 2]).unwrap();
    (repo, t)
}

#[test]
fn a_deleted_log_object_is_damage_on_a_new_machine() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let (repo, t) = a_commit_lost(&server);
    let fresh = repo.host(&t.path().join("cache-b"));
    let out = fresh.run(&["check"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(text.contains("missing_parent"), "{text}");
    // And prune refuses to delete what the lost commit's snapshot used.
    assert_eq!(fresh.run(&["prune"]).status.code(), Some(1));
}

#[test]
fn a_deleted_log_object_is_found_by_the_machine_that_applied_it() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let (repo, _t) = a_commit_lost(&server);
    let out = repo.run(&["check"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a commit lost from the bucket went unnoticed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
