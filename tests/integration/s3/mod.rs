//! Repositories in object storage, against a real S3 protocol server (`s3s-fs`, see
//! `tests/common/s3.rs`): the round trip against a local repository fed the same backups, mount
//! fidelity, caches rebuilt from the bucket, crashes, damage, the lifecycle commands, several
//! machines at once, and a server that dies. Each test starts its own server on a free port.

mod cache;
mod concurrency;
mod crash;
mod damage;
mod lifecycle;
mod mount;
mod requests;
mod roundtrip;
mod server;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::fixture::{self, assert_same, capture, Tree};
use crate::common::mount::run;
use crate::common::s3::S3Repo;

/// How long a helper process (rsync, diff, cp) may run.
const CMD_TIMEOUT: Duration = Duration::from_secs(120);

/// The first fake snapshot time of a history (2026-09-21), one day per step after it: the bucket
/// and the local repository then stamp the same backups with the same times.
const FAKE_NOW_NS: i64 = 1_790_000_000_000_000_000;
const DAY_NS: i64 = 86_400_000_000_000;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `cp -a FROM TO`: a reference copy of a source as it is now.
fn cp_a(from: &Path, to: &Path) {
    let out = run(Command::new("cp").arg("-a").arg(from).arg(to), CMD_TIMEOUT);
    assert!(
        out.status.success(),
        "cp -a: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `rsync -aHAXn --checksum -i --delete A/ B/`: empty when the trees are identical.
fn rsync_diff(a: &Path, b: &Path) -> String {
    let out = run(
        Command::new("rsync")
            .args(["-aHAXn", "--checksum", "-i", "--delete"])
            .arg(format!("{}/", a.display()))
            .arg(format!("{}/", b.display())),
        CMD_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "rsync: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `diff -r --no-dereference` of two trees (FIFOs and devices excluded: GNU diff cannot compare
/// them); panics with its output when they differ.
fn diff_r(a: &Path, b: &Path) {
    let out = run(
        Command::new("diff")
            .args(["-r", "--no-dereference", "-x", "fifo", "-x", "null-dev"])
            .arg(a)
            .arg(b),
        CMD_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "diff -r {} {}: {}{}",
        a.display(),
        b.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One backup of a history: its snapshot, the source's capture at that time and a `cp -a` copy.
struct Step {
    id: String,
    tree: Tree,
    copy: PathBuf,
}

/// The fixture (seed `seed`) in `src`, backed up into the bucket as full, incremental,
/// differential, incremental, incremental (the edits of `fixture::mutate1..3` before the 2nd to
/// 4th, nothing changed before the 5th), `steps` of them; each backup is stamped with a fake time
/// and, when `local` is given, also taken into that local repository with the same time. Both
/// repositories are created here.
fn history(
    repo: &S3Repo,
    local: Option<&Local>,
    src: &Path,
    copies: &Path,
    seed: u64,
    steps: usize,
) -> Vec<Step> {
    let kinds: [&[&str]; 5] = [
        &["--kind", "full"],
        &["--kind", "incremental"],
        &["--kind", "differential"],
        &[],
        &[],
    ];
    let mutations: [fn(&Path); 3] = [fixture::mutate1, fixture::mutate2, fixture::mutate3];
    std::fs::create_dir_all(src).unwrap();
    std::fs::create_dir_all(copies).unwrap();
    fixture::build(src, seed);
    repo.init();
    if let Some(l) = local {
        l.init();
    }
    let mut out = Vec::new();
    for (i, extra) in kinds.iter().take(steps).enumerate() {
        if let Some(m) = i.checked_sub(1).and_then(|j| mutations.get(j)) {
            m(src);
        }
        let now = (FAKE_NOW_NS + i as i64 * DAY_NS).to_string();
        let id = repo
            .clone()
            .with_env("STRATA_TEST_NOW_NS", &now)
            .backup(src, extra);
        if let Some(l) = local {
            l.backup(src, extra, &now);
        }
        let copy = copies.join(format!("step{i}"));
        cp_a(src, &copy);
        out.push(Step {
            id,
            tree: capture(src),
            copy,
        });
    }
    out
}

/// Restores every step's snapshot from `repo` into `under/<label>-<i>` and asserts each is the
/// source as it was (our capture, and rsync against the `cp -a` copy).
fn assert_restores(repo: &S3Repo, steps: &[Step], under: &Path, label: &str) {
    for (i, st) in steps.iter().enumerate() {
        let out = under.join(format!("{label}-{i}"));
        repo.restore(&st.id, &out);
        assert_same(
            &format!("{label}: restore of step {i}"),
            &st.tree,
            &capture(&out),
        );
        assert_eq!(
            rsync_diff(&st.copy, &out),
            "",
            "{label}: restore of step {i} differs from the source at its backup"
        );
        std::fs::remove_dir_all(&out).unwrap();
    }
}

/// A local repository run through the binary, beside a bucket repository.
struct Local {
    path: PathBuf,
    password_file: Option<PathBuf>,
}

impl Local {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(crate::common::bin());
        c.arg("--repo").arg(&self.path);
        if let Some(f) = &self.password_file {
            c.arg("--password-file").arg(f);
        }
        c.args(args).env_remove("STRATA_REPO");
        c
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.command(args).output().expect("run strata")
    }

    fn ok(&self, args: &[&str]) -> std::process::Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {args:?} on {} failed: {}",
            self.path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn init(&self) {
        if self.password_file.is_some() {
            self.ok(&[
                "init",
                "--encrypt",
                "--kdf-memory",
                "256",
                "--kdf-iterations",
                "1",
            ]);
        } else {
            self.ok(&["init"]);
        }
    }

    fn backup(&self, src: &Path, extra: &[&str], now_ns: &str) -> String {
        let mut args = vec!["backup", "--json"];
        args.extend_from_slice(extra);
        args.push(s(src));
        let out = self
            .command(&args)
            .env("STRATA_TEST_NOW_NS", now_ns)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "local backup: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["id"].as_str().unwrap().to_string()
    }
}

/// Files of a flat generated source: `name → content`, `n` files of `size` pseudo-random bytes
/// from seeds starting at `seed`, plus a small text file.
fn flat_source(dir: &Path, prefix: &str, n: u64, size: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join(format!("{prefix}-note.txt")),
        format!("{prefix} {seed}"),
    )
    .unwrap();
    for i in 0..n {
        std::fs::write(
            dir.join(format!("{prefix}-{i:03}.bin")),
            crate::common::pseudo_random(size, seed + i),
        )
        .unwrap();
    }
}

/// Restores snapshot `id` from `repo` into a new directory under `under` and asserts it equals
/// the directory `want` (rsync -c), returning nothing but panicking with rsync's list otherwise.
fn assert_restore_equals(repo: &S3Repo, id: &str, want: &Path, under: &Path) {
    let out = under.join(format!("restore-{}", &id[..8]));
    if out.exists() {
        std::fs::remove_dir_all(&out).unwrap();
    }
    repo.restore(id, &out);
    assert_eq!(
        rsync_diff(want, &out),
        "",
        "snapshot {id} restored from {} differs from {}",
        repo.url,
        want.display()
    );
    std::fs::remove_dir_all(&out).unwrap();
}

/// `check --read-data`: exit code and everything it printed.
fn check_read_data(repo: &S3Repo) -> (Option<i32>, String) {
    let out = repo.run(&["check", "--read-data"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// `check --read-data` after a crash or a failed command: no damage, and at most the leftovers a
/// prune removes (packs in the bucket that no index entry names: exit 3, `unindexed_pack` only),
/// as on disk.
fn assert_no_damage(repo: &S3Repo, label: &str) {
    let out = repo.run(&["check", "--read-data", "--json"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "{label}: check --json: {e}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let kinds: Vec<&str> = v["problems"]
        .as_array()
        .map(|a| a.iter().map(|p| p["kind"].as_str().unwrap_or("")).collect())
        .unwrap_or_default();
    let code = out.status.code();
    assert!(
        code == Some(0) || (code == Some(3) && kinds.iter().all(|k| *k == "unindexed_pack")),
        "{label}: check found more than leftovers ({code:?}): {text}"
    );
}
