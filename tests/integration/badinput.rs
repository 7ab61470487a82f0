//! Bad input gets a clear one-line error, exit code 1, no panic, and changes nothing.

use crate::common::{backup, new_repo, strata};

fn fails_with(out: &std::process::Output, needle: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {err}");
    assert!(err.contains(needle), "expected {needle:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn missing_and_non_directory_sources() {
    let (t, repo) = new_repo();
    fails_with(
        &strata(&repo, &["backup", "/nonexistent/strata-src"]),
        "does not exist",
    );
    let file = t.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    fails_with(
        &strata(&repo, &["backup", file.to_str().unwrap()]),
        "is not a directory",
    );
    let out = strata(&repo, &["snapshots", "--json"]);
    assert_eq!(out.stdout, b"[]\n");
}

#[test]
fn missing_repository_and_not_a_repository() {
    let t = tempfile::tempdir().unwrap();
    fails_with(
        &strata(&t.path().join("nope"), &["snapshots"]),
        "No strata repository",
    );
    std::fs::write(t.path().join("some-file"), b"x").unwrap();
    fails_with(
        &strata(t.path(), &["snapshots"]),
        "is not a strata repository",
    );
    // An explicit --repo that does not exist is not created by backup (typos must not fork data).
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    fails_with(
        &strata(&t.path().join("typo"), &["backup", src.to_str().unwrap()]),
        "No strata repository",
    );
    assert!(!t.path().join("typo").exists());
}

#[test]
fn unwritable_repository_path() {
    let t = tempfile::tempdir().unwrap();
    let file = t.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    fails_with(
        &strata(&file.join("repo"), &["init"]),
        "Creating repository",
    );
}

#[test]
fn repository_of_a_future_format() {
    let (_t, repo) = new_repo();
    {
        let db = sled::open(repo.join("index")).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("format", &99u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    fails_with(&strata(&repo, &["snapshots"]), "format version 99");
}

#[test]
fn repository_in_use_names_the_holder() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    let held = strata::open::Open::new(&repo).open().unwrap();
    let started = std::time::Instant::now();
    let out = strata(
        &repo,
        &["--lock-wait", "2s", "backup", src.to_str().unwrap()],
    );
    fails_with(&out, "in use by another strata process (pid");
    let err = String::from_utf8_lossy(&out.stderr);
    let waiting = format!(
        "waiting for the repository lock held by pid {}",
        std::process::id()
    );
    assert_eq!(err.matches(&waiting).count(), 1, "said once: {err}");
    assert!(started.elapsed() >= std::time::Duration::from_secs(2));
    fails_with(
        &strata(&repo, &["--lock-wait", "0", "snapshots"]),
        "in use by another strata process (pid",
    );
    drop(held);
    backup(&repo, &src, &[]);
}

#[test]
fn a_command_waits_for_the_lock_and_then_runs() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let held = strata::open::Open::new(&repo).open().unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        drop(held);
    });
    let out = strata(&repo, &["backup", src.to_str().unwrap()]);
    release.join().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("waiting for the repository lock held by pid"),
        "{err}"
    );
    assert_eq!(crate::common::snapshot_ids(&repo).len(), 1);
    let out = strata(&repo, &["--lock-wait", "soon", "snapshots"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("Not a duration"));
}

#[test]
fn unknown_snapshot_and_path() {
    let (t, repo) = new_repo();
    fails_with(
        &strata(&repo, &["ls", "latest"]),
        "No snapshot matches \"latest\"",
    );
    let src = t.path().join("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("d/f"), b"x").unwrap();
    backup(&repo, &src, &[]);
    fails_with(
        &strata(&repo, &["cat", "latest", "d/missing"]),
        "No such file or directory in snapshot",
    );
    fails_with(
        &strata(&repo, &["cat", "latest", "d"]),
        "Not a regular file",
    );
    fails_with(
        &strata(&repo, &["cat", "latest", "d/f/g"]),
        "Not a directory",
    );
    fails_with(&strata(&repo, &["ls", "ffffffffff"]), "No snapshot matches");
    fails_with(
        &strata(&repo, &["ls", "latest", "../etc"]),
        "may not contain '..'",
    );
}

#[test]
fn default_repository_is_created_on_first_backup() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("f"), b"x").unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(crate::common::bin())
            .args(args)
            .env_remove("STRATA_REPO")
            .env("XDG_DATA_HOME", t.path().join("xdg"))
            .output()
            .unwrap()
    };
    assert!(run(&["backup", src.to_str().unwrap()]).status.success());
    assert!(t.path().join("xdg/strata/repo/STRATA").is_file());
    assert_eq!(run(&["cat", "latest", "f"]).stdout, b"x");
}

#[test]
fn repository_inside_the_source_is_not_backed_up_into_itself() {
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("data.txt"), b"data").unwrap();
    let repo = src.join("backups/repo");
    crate::common::strata_ok(&repo, &["init"]);
    backup(&repo, &src, &[]);
    backup(&repo, &src, &[]);
    let ls = crate::common::strata_ok(&repo, &["ls", "latest", "-R"]);
    let listing = String::from_utf8_lossy(&ls.stdout).into_owned();
    assert_eq!(listing, "backups\ndata.txt\n");
}

/// Issue 16: a truncated sled database made every command, `check` included, panic (exit 101).
/// Each must say the index is damaged and that `strata repair` rebuilds it (exit 1; `check` reports
/// it as damage, exit 4), and `repair` must rebuild it from the packs.
#[test]
fn truncated_index_says_run_repair_and_never_panics() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..3000 {
        std::fs::write(src.join(format!("f{i:04}.txt")), format!("file {i}")).unwrap();
    }
    let id = backup(&repo, &src, &[]);
    let good = t.path().join("good-index");
    copy_dir(&repo.join("index"), &good);
    let size = std::fs::metadata(good.join("db")).unwrap().len();
    for cut in [size / 2, size / 4, 4096] {
        std::fs::remove_dir_all(repo.join("index")).unwrap();
        copy_dir(&good, &repo.join("index"));
        let db = std::fs::OpenOptions::new()
            .write(true)
            .open(repo.join("index/db"))
            .unwrap();
        db.set_len(cut).unwrap();
        drop(db);
        // Without lookup files, `cat` must open the index too.
        let _ = std::fs::remove_dir_all(repo.join("lookup"));
        for cmd in [
            &["snapshots"][..],
            &["ls", "latest"],
            &["cat", &id, "f0007.txt"],
            &["backup", src.to_str().unwrap()],
            &["prune"],
        ] {
            fails_with(&strata(&repo, cmd), "run `strata repair`");
        }
        let out = strata(&repo, &["check"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "check, cut at {cut}: {text}");
        assert!(text.contains("index_damaged"), "cut at {cut}: {text}");
        assert!(text.contains("run `strata repair`"), "cut at {cut}: {text}");
        assert!(!text.contains("panicked"), "cut at {cut}: {text}");
        let out = strata(&repo, &["repair"]);
        assert!(
            matches!(out.status.code(), Some(0) | Some(3)),
            "repair, cut at {cut}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = crate::common::strata_ok(&repo, &["cat", &id, "f0007.txt"]);
        assert_eq!(out.stdout, b"file 7");
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}
