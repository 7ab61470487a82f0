//! A server that dies: killed in the middle of a backup and restarted after two seconds, the
//! backup completes after retries or fails with a clear error, and the repository checks clean
//! either way; a server that stays down is a clear error within the retry time, never a hang.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{assert_no_damage, assert_restore_equals, check_read_data, cp_a, flat_source};
use crate::common::mount::run_with_timeout;
use crate::common::s3::{S3Repo, S3Server};

/// How long any one command may take here before the test calls it a hang.
const HANG: Duration = Duration::from_secs(240);

/// Starts a backup of `src`, kills the server once the backup is writing packs (one spooled in
/// the cache, or one in the bucket), restarts it after `down`, and returns the backup's (exit
/// code, stderr).
fn backup_across_a_restart(
    server: &mut S3Server,
    repo: &S3Repo,
    src: &std::path::Path,
    down: Duration,
) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let err_path = dir.path().join("stderr");
    let spool = repo.cache_dir().join("uploads");
    let packs_before = repo.objects_under("packs").len();
    let mut child = repo
        .command(&["backup", super::s(src)])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let writing = || {
        std::fs::read_dir(&spool).is_ok_and(|mut d| d.next().is_some())
            || repo.objects_under("packs").len() > packs_before
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !writing() {
        assert!(Instant::now() < deadline, "the backup never wrote a pack");
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the backup ended ({st}) before it wrote a pack; make the data larger");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    server.stop();
    let stopped = Instant::now();
    std::thread::sleep(down);
    server.restart();
    eprintln!("server down for {:?}", stopped.elapsed());
    let deadline = Instant::now() + HANG;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the backup hangs after the server came back");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code(),
        std::fs::read_to_string(&err_path).unwrap_or_default(),
    )
}

/// After a backup that ran across a restart: it completed and restores exactly, or it failed
/// naming the bucket; the repository checks clean and the next backup works.
fn after_the_restart(
    repo: &S3Repo,
    src: &std::path::Path,
    code: Option<i32>,
    err: &str,
    dir: &std::path::Path,
) {
    let ids_before = repo.snapshot_ids();
    match code {
        Some(0) => {
            let last = ids_before.last().unwrap();
            assert_restore_equals(repo, last, src, dir);
        }
        _ => {
            assert_eq!(code, Some(1), "{err}");
            assert!(
                err.contains(&repo.url),
                "the error does not name the bucket: {err}"
            );
            assert!(!err.contains("panicked"), "{err}");
        }
    }
    assert_no_damage(repo, "after the restart");
    repo.ok(&["prune"]);
    let (code, text) = check_read_data(repo);
    assert_eq!(code, Some(0), "after the restart and a prune: {text}");
    let id = repo.backup(src, &[]);
    let fresh = repo.host(&dir.join(format!("cache-fresh-{}", ids_before.len())));
    assert_restore_equals(&fresh, &id, src, dir);
    let (code, text) = check_read_data(&fresh);
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn server_killed_mid_backup_and_restarted() {
    let Some(mut server) = S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let repo = server.repo("bucket", "restarted", &t.path().join("cache"));
    let src = t.path().join("src");
    flat_source(&src, "data", 80, 1 << 20, 500);
    repo.init();
    // Down for 2 s with the default retry time (120 s): the retries cover the outage.
    let (code, err) = backup_across_a_restart(&mut server, &repo, &src, Duration::from_secs(2));
    eprintln!("backup across a 2 s outage: exit {code:?}\n{err}");
    after_the_restart(&repo, &src, code, &err, t.path());

    // Down for 6 s with retries for 2 s only: the backup fails, clearly (unless it needed the
    // server only before and after the outage).
    flat_source(&src, "more", 60, 1 << 20, 900);
    let impatient = repo.clone().with_env("STRATA_S3_RETRY_TIMEOUT", "2");
    let (code, err) =
        backup_across_a_restart(&mut server, &impatient, &src, Duration::from_secs(6));
    eprintln!("backup across a 6 s outage, 2 s of retries: exit {code:?}\n{err}");
    after_the_restart(&repo, &src, code, &err, t.path());
}

/// Runs `args` on `repo` (retries for 3 s) under a deadline; returns (exit code, stdout, stderr,
/// time taken).
fn timed(repo: &S3Repo, args: &[&str]) -> (Option<i32>, Vec<u8>, String, Duration) {
    let started = Instant::now();
    let out = run_with_timeout(
        &mut repo
            .clone()
            .with_env("STRATA_S3_RETRY_TIMEOUT", "3")
            .command(args),
        Duration::from_secs(90),
    )
    .unwrap_or_else(|| panic!("strata {args:?} hangs while the server is down"));
    (
        out.status.code(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

#[test]
fn a_server_that_is_down_is_a_clear_error_not_a_hang() {
    let Some(mut server) = S3Server::start() else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let repo = server.repo("bucket", "down", &t.path().join("cache"));
    let src = t.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a.txt"), b"before the outage").unwrap();
    repo.init();
    repo.backup(&src, &[]);
    let copy = t.path().join("copy");
    cp_a(&src, &copy);
    std::fs::write(src.join("b.txt"), b"during the outage").unwrap();
    server.stop();

    let fresh = repo.host(&t.path().join("cache-fresh"));
    let other = server.repo("bucket", "never-made", &t.path().join("cache-other"));
    let src_arg = super::s(&src).to_string();
    let cases: Vec<(&S3Repo, Vec<&str>)> = vec![
        (&repo, vec!["snapshots"]),
        (&repo, vec!["backup", &src_arg]),
        (&repo, vec!["ls", "latest"]),
        (&repo, vec!["check"]),
        (&repo, vec!["prune"]),
        (&fresh, vec!["snapshots"]),
        (&other, vec!["init"]),
    ];
    for (r, args) in &cases {
        let (code, _, err, took) = timed(r, args);
        eprintln!("{args:?} with the server down: exit {code:?} after {took:?}: {err}");
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&r.url),
            "{args:?}: the error does not name the bucket: {err}"
        );
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(took < Duration::from_secs(60), "{args:?} took {took:?}");
    }
    // `cat` may answer from this machine's cache, or fail clearly: never wrong bytes.
    let (code, out, err, _) = timed(&repo, &["cat", "latest", "a.txt"]);
    if code == Some(0) {
        assert_eq!(out, b"before the outage");
    } else {
        assert!(err.contains(&repo.url), "{err}");
    }

    // Back up: everything works again and nothing was lost.
    server.restart();
    assert_eq!(repo.snapshot_ids().len(), 1);
    let (code, text) = check_read_data(&repo);
    assert_eq!(code, Some(0), "{text}");
    let id = repo.backup(&src, &[]);
    assert_restore_equals(&fresh, &id, &src, t.path());
    let first = &repo.snapshot_ids()[0];
    assert_restore_equals(&fresh, first, &copy, t.path());
}
