//! Issue 16: what a command prints. A closed stdout (`strata backup … | true`) is never a panic and
//! never changes what the command did or its exit code; the backup summary agrees with the
//! snapshot's content when part of the tree cannot be read.

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::{backup, bin, files_under, new_repo, snapshot_ids, strata, strata_ok};

/// Runs `strata --repo REPO ARGS` with stdout a pipe whose reading end is already closed, so every
/// write gets EPIPE. Returns (exit code, stderr).
fn with_closed_stdout(repo: &Path, args: &[&str]) -> (Option<i32>, String) {
    let mut fds = [0; 2];
    // SAFETY: pipe() fills two descriptors this function then owns.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: both descriptors were just created and are owned by nobody else.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read_end);
    let out = Command::new(bin())
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env_remove("STRATA_REPO")
        .stdout(Stdio::from(write_end))
        .stderr(Stdio::piped())
        .output()
        .expect("run strata");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn closed_stdout_is_never_a_panic_issue_16() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/a.txt"), b"alpha").unwrap();
    let s = src.to_str().unwrap();

    // Backups commit whether or not anyone reads their summary.
    let (code, err) = with_closed_stdout(&repo, &["backup", s]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    fs::write(src.join("d/b.txt"), b"beta").unwrap();
    let (code, err) = with_closed_stdout(&repo, &["backup", "--json", s]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let ids = snapshot_ids(&repo);
    assert_eq!(ids.len(), 2, "both backups committed");
    let out = strata_ok(&repo, &["cat", &ids[1], "d/b.txt"]);
    assert_eq!(out.stdout, b"beta");

    let other = t.path().join("other");
    let cases: Vec<Vec<&str>> = vec![
        vec!["init"],
        vec!["snapshots"],
        vec!["snapshots", "--json"],
        vec!["ls", "-l", "latest", "d"],
        vec!["ls", "--json", "latest", "d"],
        vec!["cat", "latest", "d/a.txt"],
        vec!["find", "*.txt"],
        vec!["log", "d/a.txt"],
        vec!["diff", &ids[0], &ids[1]],
        vec!["check"],
        vec!["check", "--json"],
        vec!["forget", "--keep-last", "5", "--dry-run"],
        vec!["prune", "--dry-run"],
        vec!["prune", "--json"],
        vec!["consolidate", &ids[1]],
    ];
    for args in cases {
        let target = if args == ["init"] { &other } else { &repo };
        let open = strata(target, &args);
        if args == ["init"] {
            // The open run created it; a second init of the same path would fail, so start over.
            fs::remove_dir_all(&other).unwrap();
        }
        let (code, err) = with_closed_stdout(target, &args);
        assert!(!err.contains("panicked"), "strata {args:?}: {err}");
        assert_eq!(
            code,
            open.status.code(),
            "strata {args:?} with stdout closed exits as with it open: {err}"
        );
    }
    // The init run with stdout closed created a working repository.
    strata_ok(&other, &["snapshots"]);
}

/// `strata --repo REPO ARGS` run as the unprivileged user 65534 (root reads every directory).
fn strata_as_nobody(repo: &Path, args: &[&str]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env_remove("STRATA_REPO")
        .output()
        .expect("run setpriv")
}

/// Backs up `src` as user 65534 and returns the `--json` summary (warnings allowed).
fn backup_as_nobody(repo: &Path, src: &Path, kind: &str) -> serde_json::Value {
    let out = strata_as_nobody(
        repo,
        &["backup", "--json", "--kind", kind, src.to_str().unwrap()],
    );
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "backup --kind {kind}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("backup --json")
}

/// (regular files, their bytes) of a snapshot, counted in a restore of it.
fn restored_totals(repo: &Path, id: &str, target: &Path) -> (u64, u64) {
    strata_ok(repo, &["restore", "--target", target.to_str().unwrap(), id]);
    let files = files_under(target);
    (
        files.len() as u64,
        files.values().map(|d| d.len() as u64).sum(),
    )
}

/// A directory or file that cannot be read is left out of the snapshot (the parent snapshot's
/// version does not show through as if it were current), and the summary's counts describe what
/// the snapshot holds.
#[test]
fn unreadable_paths_are_absent_and_counts_agree_issue_16() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("Skipping: needs root to run the backup as another user");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let repo = t.path().join("repo");
    let src = t.path().join("src");
    fs::create_dir_all(src.join("open")).unwrap();
    fs::create_dir_all(src.join("closed/sub")).unwrap();
    fs::write(src.join("open/a.txt"), b"12345").unwrap();
    fs::write(src.join("closed/b.txt"), b"1234567").unwrap();
    fs::write(src.join("closed/sub/c.txt"), b"123").unwrap();
    fs::write(src.join("secret.txt"), b"hello world").unwrap();
    let st = Command::new("chown")
        .args(["-R", "65534:65534"])
        .arg(t.path())
        .status()
        .unwrap();
    assert!(st.success());
    let out = strata_as_nobody(&repo, &["init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let full = backup_as_nobody(&repo, &src, "full");
    assert_eq!(
        (full["files"].as_u64(), full["size"].as_u64()),
        (Some(4), Some(26))
    );

    fs::set_permissions(src.join("closed"), fs::Permissions::from_mode(0o000)).unwrap();
    fs::set_permissions(src.join("secret.txt"), fs::Permissions::from_mode(0o000)).unwrap();
    for (i, kind) in ["incremental", "differential", "full"].iter().enumerate() {
        let v = backup_as_nobody(&repo, &src, kind);
        let id = v["id"].as_str().unwrap();
        let warnings = v["warnings"].to_string();
        assert!(warnings.contains("closed"), "{kind}: {warnings}");
        assert!(warnings.contains("secret.txt"), "{kind}: {warnings}");
        let got = restored_totals(&repo, id, &t.path().join(format!("r{i}")));
        assert_eq!(got, (1, 5), "{kind}: only open/a.txt could be read");
        assert_eq!(
            (v["files"].as_u64(), v["size"].as_u64()),
            (Some(got.0), Some(got.1)),
            "{kind}: the summary agrees with the snapshot: {v}"
        );
        let listed = strata_ok(&repo, &["ls", id, "closed"]);
        assert!(listed.stdout.is_empty(), "{kind}: closed/ shows nothing");
    }
    // The earlier snapshot still has everything.
    let first = &snapshot_ids(&repo)[0];
    let got = restored_totals(&repo, first, &t.path().join("r-first"));
    assert_eq!(got, (4, 26));
}

/// `ls -R` lists each directory whole, then the directories in it (name order, depth first), one
/// path per line; an incremental's deletions, additions and type changes show as in its view.
#[test]
fn ls_recursive_lists_each_directory_then_its_subdirectories() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    for d in ["b/c", "b/d", "e"] {
        fs::create_dir_all(src.join(d)).unwrap();
    }
    for f in ["a.txt", "b/x", "b/c/deep", "e/y", "z.txt"] {
        fs::write(src.join(f), f.as_bytes()).unwrap();
    }
    let first = backup(&repo, &src, &[]);
    let ls = |args: &[&str]| String::from_utf8(strata_ok(&repo, args).stdout).unwrap();
    assert_eq!(
        ls(&["ls", "-R", &first]),
        "a.txt\nb\ne\nz.txt\nb/c\nb/d\nb/x\nb/c/deep\ne/y\n"
    );

    // The incremental deletes a file and a whole directory, adds files and directories, and
    // turns a file into a directory.
    fs::remove_file(src.join("b/x")).unwrap();
    fs::remove_dir_all(src.join("e")).unwrap();
    fs::write(src.join("b/c/new"), b"new").unwrap();
    fs::create_dir_all(src.join("b/aa")).unwrap();
    fs::write(src.join("b/aa/file"), b"file").unwrap();
    fs::create_dir_all(src.join("f")).unwrap();
    fs::write(src.join("f/g.txt"), b"g").unwrap();
    fs::remove_file(src.join("z.txt")).unwrap();
    fs::create_dir_all(src.join("z.txt")).unwrap();
    fs::write(src.join("z.txt/inner"), b"inner").unwrap();
    let second = backup(&repo, &src, &["--kind", "incremental"]);
    assert_eq!(
        ls(&["ls", "-R", &second]),
        "a.txt\nb\nf\nz.txt\nb/aa\nb/c\nb/d\nb/aa/file\nb/c/deep\nb/c/new\nf/g.txt\nz.txt/inner\n"
    );
    assert_eq!(
        ls(&["ls", "-R", &second, "b"]),
        "b/aa\nb/c\nb/d\nb/aa/file\nb/c/deep\nb/c/new\n"
    );
    assert_eq!(ls(&["ls", &second, "b"]), "b/aa\nb/c\nb/d\n");
    assert_eq!(ls(&["ls", "-R", &second, "b/c/new"]), "b/c/new\n");
    assert_eq!(ls(&["ls", "-R", &second, "b/d"]), "");
    let json = ls(&["ls", "-R", "--json", &second]);
    let paths: Vec<String> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["path"].to_string())
        .collect();
    assert_eq!(paths.len(), 12, "{json}");
    assert_eq!(paths[4], "\"b/aa\"");
    // The full is unchanged by the incremental.
    assert_eq!(
        ls(&["ls", "-R", &first]),
        "a.txt\nb\ne\nz.txt\nb/c\nb/d\nb/x\nb/c/deep\ne/y\n"
    );
}
