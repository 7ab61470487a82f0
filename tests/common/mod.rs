//! Shared test helpers: running the real binary against a temp repository, and a seeded fixture
//! tree covering every fidelity case, with a reference capture to compare snapshots against.
#![allow(dead_code)]

pub mod fixture;
pub mod mount;
pub mod packs;
pub mod s3;
pub mod scratchfs;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `strata` binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_strata"))
}

/// The passphrase file of an encrypted test repository, `<repo>.passphrase` beside it. When it
/// exists, the helpers here pass it (`--password-file`) and [`init`] makes the repository
/// encrypted, so that one test body runs on either kind of repository.
pub fn passphrase_file(repo: &Path) -> PathBuf {
    repo.with_extension("passphrase")
}

/// Makes `repo` (not created yet) an encrypted test repository: writes its passphrase file.
pub fn encrypted(repo: &Path) -> PathBuf {
    std::fs::write(passphrase_file(repo), "test passphrase\n").unwrap();
    repo.to_path_buf()
}

/// The two kinds of repository. The damage, crash and round-trip cases run on both
/// ([`crate::on_both_kinds`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `strata init`.
    Plain,
    /// `strata init --encrypt`, its passphrase in a file beside it ([`encrypted`]).
    Encrypted,
}

impl Kind {
    /// Makes `repo` (not created yet) a test repository of this kind, for [`init`] and the
    /// helpers here: an encrypted one gets its passphrase file. Returns `repo`.
    pub fn prepare(self, repo: &Path) -> PathBuf {
        match self {
            Kind::Plain => repo.to_path_buf(),
            Kind::Encrypted => encrypted(repo),
        }
    }

    /// What a read says of a chunk whose stored bytes were changed: the plaintext's blake3 no
    /// longer matches its id, or the record's authentication tag fails.
    pub fn corruption_message(self) -> &'static str {
        match self {
            Kind::Plain => "blake3 mismatch",
            Kind::Encrypted => "authentication failed",
        }
    }
}

/// Defines, for each `name` given, the tests `name::plain` and `name::encrypted`, which run the
/// function `name(kind: Kind)` of the calling module on a repository of that kind.
#[macro_export]
macro_rules! on_both_kinds {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[test]
            fn plain() {
                super::$name($crate::common::Kind::Plain)
            }
            #[test]
            fn encrypted() {
                super::$name($crate::common::Kind::Encrypted)
            }
        }
    )+};
}

/// `--password-file FILE` for an encrypted test repository, nothing otherwise.
pub fn pass_args(repo: &Path) -> Vec<std::ffi::OsString> {
    let f = passphrase_file(repo);
    if f.exists() {
        vec!["--password-file".into(), f.into()]
    } else {
        Vec::new()
    }
}

/// `strata init`: encrypted (with a fast key derivation) when `repo` has a passphrase file.
pub fn init(repo: &Path) -> Output {
    if passphrase_file(repo).exists() {
        strata_ok(
            repo,
            &[
                "init",
                "--encrypt",
                "--kdf-memory",
                "256",
                "--kdf-iterations",
                "1",
            ],
        )
    } else {
        strata_ok(repo, &["init"])
    }
}

/// The library's opener for `repo`, with its passphrase when it is an encrypted test repository.
pub fn open(repo: &Path) -> strata::open::Open {
    let o = strata::open::Open::new(repo);
    match std::fs::read(passphrase_file(repo)) {
        Ok(mut p) => {
            p.pop();
            o.passphrase(strata::repo::crypt::keyfile::Passphrase::new(p))
        }
        Err(_) => o,
    }
}

/// `strata --repo REPO ARGS...`, run to completion.
pub fn strata(repo: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--repo")
        .arg(repo)
        .args(pass_args(repo))
        .args(args)
        .env_remove("STRATA_REPO")
        .output()
        .expect("run strata")
}

/// Like [`strata`], but panics with the command's stderr unless it exits 0.
pub fn strata_ok(repo: &Path, args: &[&str]) -> Output {
    let out = strata(repo, args);
    assert!(
        out.status.success(),
        "strata {args:?} failed ({:?}): {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Creates a repository in a fresh temp dir; returns (guard, repo path).
pub fn new_repo() -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let repo = t.path().join("repo");
    strata_ok(&repo, &["init"]);
    (t, repo)
}

/// Creates a repository of `kind` in a fresh temp dir; returns (guard, repo path).
pub fn new_repo_of(kind: Kind) -> (tempfile::TempDir, PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let repo = kind.prepare(&t.path().join("repo"));
    init(&repo);
    (t, repo)
}

/// Backs up `src` and returns the new snapshot id (full hex) parsed from `--json` output.
pub fn backup(repo: &Path, src: &Path, extra: &[&str]) -> String {
    let mut args = vec!["backup", "--json"];
    args.extend_from_slice(extra);
    let src = src.to_str().unwrap();
    args.push(src);
    let out = strata_ok(repo, &args);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("backup --json");
    v["id"].as_str().unwrap().to_string()
}

/// `strata snapshots --json`, parsed: one object per snapshot, oldest first.
pub fn snapshot_list(repo: &Path) -> Vec<serde_json::Value> {
    let out = strata_ok(repo, &["snapshots", "--json"]);
    match serde_json::from_slice(&out.stdout).expect("snapshots --json") {
        serde_json::Value::Array(v) => v,
        other => panic!("snapshots --json is not an array: {other}"),
    }
}

/// The full ids of the repository's snapshots, oldest first.
pub fn snapshot_ids(repo: &Path) -> Vec<String> {
    snapshot_list(repo)
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_string())
        .collect()
}

/// Every regular file under `dir`, by path relative to `dir`, with its content.
pub fn files_under(dir: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else if m.is_file() {
                let data = std::fs::read(&p).unwrap();
                out.insert(p.strip_prefix(dir).unwrap().to_path_buf(), data);
            }
        }
    }
    out
}

/// Deterministic pseudo-random bytes (xorshift), so fixtures are reproducible from a seed.
pub fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
    // splitmix-style seeding: distinct seeds give distinct streams (x must never be 0).
    let mut x = (seed.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// Every file of every snapshot, read through the binary (`ls -R --json`, then `cat`): snapshot id
/// → path → content (the entry type for what is not a regular file).
pub fn snapshot_contents(
    repo: &Path,
) -> std::collections::BTreeMap<String, std::collections::BTreeMap<String, Vec<u8>>> {
    let mut all = std::collections::BTreeMap::new();
    for s in snapshot_list(repo) {
        let id = s["id"].as_str().unwrap().to_string();
        let out = strata_ok(repo, &["ls", "-R", "--json", &id]);
        let mut files = std::collections::BTreeMap::new();
        for line in String::from_utf8(out.stdout).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let path = v["path"].as_str().unwrap().to_string();
            let data = if v["type"] == "file" {
                strata_ok(repo, &["cat", &id, &path]).stdout
            } else {
                v["type"].as_str().unwrap().as_bytes().to_vec()
            };
            files.insert(path, data);
        }
        all.insert(id, files);
    }
    all
}
