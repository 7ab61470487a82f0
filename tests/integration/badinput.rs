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
    let held = strata::repo::Repo::open(&repo).unwrap();
    fails_with(
        &strata(&repo, &["backup", src.to_str().unwrap()]),
        "in use by another strata process (pid",
    );
    drop(held);
    backup(&repo, &src, &[]);
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
