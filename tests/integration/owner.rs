//! Who may use a repository: its owner (and root). There is no daemon to ask, so the repository
//! directory's permissions are the access control: `init` (and a backup creating the default
//! repository) makes it mode 0700, as are `readers/` and `lookup/` inside it. Another user's
//! commands fail with a clear permission error and change nothing; a mount with
//! `--allow-other` still serves that user what the stored permissions allow.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::common::mount::{fuse_available, run, with_timeout, Mount};
use crate::common::{backup, bin, fixture, strata_ok};

const CMD_TIMEOUT: Duration = Duration::from_secs(120);
const USER: &str = "strata-other";

/// The uid and gid of a user the test creates (once per machine).
fn other_user() -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, USER]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .ok()
    };
    if id("-u").is_none() {
        let out = Command::new("useradd")
            .args(["--no-create-home", "--shell", "/usr/sbin/nologin", USER])
            .output()
            .expect("run useradd");
        // Another test may have created it meanwhile (exit 9: the user exists).
        assert!(
            out.status.success() || out.status.code() == Some(9),
            "useradd: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (id("-u").unwrap(), id("-g").unwrap())
}

/// A temporary directory the other user may enter and list (mode 0755).
fn reachable_tempdir() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    fs::set_permissions(t.path(), fs::Permissions::from_mode(0o755)).unwrap();
    t
}

/// `strata --repo REPO ARGS...` as `uid`/`gid`, without root's groups.
fn strata_as(uid: u32, gid: u32, repo: &Path, args: &[&str]) -> Output {
    run(
        Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--clear-groups")
            .arg(bin())
            .arg("--repo")
            .arg(repo)
            .args(args)
            .env_remove("STRATA_REPO")
            .env("HOME", "/nonexistent"),
        CMD_TIMEOUT,
    )
}

/// Every path under `dir` with its size, mode and mtime: what "nothing changed" compares.
fn state(dir: &Path) -> BTreeMap<PathBuf, (u64, u32, i64, i64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            out.insert(p, (m.len(), m.mode(), m.mtime(), m.mtime_nsec()));
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().mode() & 0o7777
}

#[test]
fn another_user_is_refused_and_changes_nothing() {
    if !fixture::is_root() {
        return;
    }
    let (uid, gid) = other_user();
    // The other user may reach the repository's parent; only the repository keeps it out.
    let t = reachable_tempdir();
    let repo = t.path().join("repo");
    strata_ok(&repo, &["init"]);
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f.txt"), b"owned by root\n").unwrap();
    fs::set_permissions(src.join("f.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    backup(&repo, &src, &[]);
    assert_eq!(mode(&repo), 0o700, "the repository directory");
    assert_eq!(mode(&repo.join("lookup")), 0o700, "lookup/");

    let before = state(&repo);
    for args in [
        &["snapshots"][..],
        &["snapshots", "--json"],
        &["cat", "latest", "f.txt"],
        &["ls", "latest"],
        &["backup", src.to_str().unwrap()],
        &["check"],
        &["forget", "--keep-last", "1", "--prune"],
    ] {
        let out = strata_as(uid, gid, &repo, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "strata {args:?}: {err}");
        assert!(
            err.contains("Permission denied") && err.contains(&*repo.to_string_lossy()),
            "strata {args:?} says why, naming the repository: {err}"
        );
        assert!(out.stdout.is_empty(), "strata {args:?}");
    }
    assert_eq!(state(&repo), before, "nothing in the repository changed");
}

#[test]
fn a_mount_for_other_users_still_serves_them_and_readers_are_private() {
    if !fuse_available() || !fixture::is_root() {
        return;
    }
    let (uid, gid) = other_user();
    with_timeout(Duration::from_secs(300), move || {
        let t = reachable_tempdir();
        let repo = t.path().join("repo");
        strata_ok(&repo, &["init"]);
        let src = t.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("f.txt"), b"for everyone\n").unwrap();
        fs::set_permissions(src.join("f.txt"), fs::Permissions::from_mode(0o644)).unwrap();
        backup(&repo, &src, &[]);
        let m = Mount::start(&repo, &["--allow-other"]);
        assert_eq!(mode(&repo.join("readers")), 0o700, "readers/");
        for e in fs::read_dir(repo.join("readers")).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                assert_eq!(mode(&p), 0o700, "{p:?}");
            }
        }
        // Mounted by root for everyone: the other user reads what the stored mode allows.
        let out = run(
            Command::new("setpriv")
                .arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .arg("cat")
                .arg(m.path.join("latest/f.txt")),
            CMD_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, b"for everyone\n");
        // ...but not the repository behind it.
        let out = strata_as(uid, gid, &repo, &["snapshots"]);
        assert_eq!(out.status.code(), Some(1));
        drop(m);
    });
}

#[test]
fn a_backup_reads_only_what_its_user_may_read() {
    if !fixture::is_root() {
        return;
    }
    let (uid, gid) = other_user();
    let t = reachable_tempdir();
    // The other user's own repository.
    let home = t.path().join("home");
    fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
    let repo = home.join("repo");
    let out = strata_as(uid, gid, &repo, &["init"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let private = |p: &Path| fs::set_permissions(p, fs::Permissions::from_mode(0o700)).unwrap();
    let public = |p: &Path, m: u32| fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
    // A source it cannot list at all: an error, no snapshot.
    let secret = t.path().join("secret");
    fs::create_dir(&secret).unwrap();
    fs::write(secret.join("key.txt"), b"root only\n").unwrap();
    private(&secret);
    let out = strata_as(uid, gid, &repo, &["backup", secret.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("Permission denied") && err.contains(&*secret.to_string_lossy()),
        "names the source and why: {err}"
    );
    let out = strata_as(uid, gid, &repo, &["snapshots", "--json"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");

    // A source with a private directory and a private file inside: what it may read is saved,
    // each refusal is a warning (exit 3), and nothing of what it may not read is stored.
    let mixed = t.path().join("mixed");
    fs::create_dir_all(mixed.join("private")).unwrap();
    fs::write(mixed.join("open.txt"), b"for all\n").unwrap();
    fs::write(mixed.join("closed.txt"), b"root's file\n").unwrap();
    fs::write(mixed.join("private/inner.txt"), b"root's dir\n").unwrap();
    public(&mixed, 0o755);
    public(&mixed.join("open.txt"), 0o644);
    public(&mixed.join("closed.txt"), 0o600);
    private(&mixed.join("private"));
    let out = strata_as(uid, gid, &repo, &["backup", mixed.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&*mixed.join("private").to_string_lossy())
            && err.contains(&*mixed.join("closed.txt").to_string_lossy()),
        "each refusal named: {err}"
    );
    let out = strata_as(uid, gid, &repo, &["cat", "latest", "open.txt"]);
    assert_eq!(out.stdout, b"for all\n");
    for p in ["closed.txt", "private/inner.txt"] {
        let out = strata_as(uid, gid, &repo, &["cat", "latest", p]);
        assert_ne!(out.status.code(), Some(0), "{p} was not stored");
        assert!(out.stdout.is_empty(), "{p}");
    }
    let out = strata_as(uid, gid, &repo, &["ls", "-R", "latest"]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(!listing.contains("inner.txt"), "{listing}");
}
