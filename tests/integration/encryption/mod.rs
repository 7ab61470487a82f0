//! Encrypted repositories (`init --encrypt`): every command and the mount work on them, nothing
//! of the source can be found in the repository directory, unlocking fails clearly and writes
//! nothing, and damage is an error (EIO through the mount), never wrong bytes. The damage, crash
//! and round-trip cases run on both kinds of repository, in their own modules. [`key_cache`]:
//! keeping the unlocked key between commands (`--key-cache`).

mod key_cache;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use strata::layers::View;

use crate::common::fixture::{self, assert_same, from_view};
use crate::common::mount::{fuse_available, snapshot_names, with_timeout, Mount};
use crate::common::{
    backup, bin, encrypted, init, open, pseudo_random, snapshot_ids, strata, strata_ok,
};

const NEEDLES: &[&str] = &[
    "needle-content-7f3a",
    "needle-name-b8e1",
    "needle-dir-c4d2",
    "needle-src-a9f0",
    "needle-tag-d7e3",
    "needle-doc-e5b6",
];

/// A source holding every needle: in file content (a text file, small JSON documents that train
/// the compression dictionary, random data stored raw), names, a directory name, its own path.
fn needle_source(t: &Path) -> (PathBuf, Vec<u8>) {
    let src = t.join("needle-src-a9f0");
    let dir = src.join("needle-dir-c4d2");
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("needle-name-b8e1.txt"),
        "needle-content-7f3a\n".repeat(50),
    )
    .unwrap();
    for i in 0..150 {
        fs::write(
            dir.join(format!("order-{i}.json")),
            format!(
                "{{\"order\": {i}, \"note\": \"needle-doc-e5b6\", \"lines\": [{}]}}\n",
                "1, 2, 3, ".repeat(10 + i % 7)
            ),
        )
        .unwrap();
    }
    let random = pseudo_random(300_000, 5);
    fs::write(src.join("random.bin"), &random).unwrap();
    (src, random[150_000..150_048].to_vec())
}

/// Every file under `dir`, recursively (sled's own files included).
fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The needles found in any file or file name of `repo`, with where.
fn needles_in(repo: &Path, extra: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for p in all_files(repo) {
        let data = fs::read(&p).unwrap();
        let name = p.to_string_lossy().into_owned();
        for n in NEEDLES.iter().map(|n| n.as_bytes()).chain([extra]) {
            let hit = data.windows(n.len()).any(|w| w == n)
                || name.as_bytes().windows(n.len()).any(|w| w == n);
            if hit {
                found.push(format!("{} in {name}", String::from_utf8_lossy(n)));
            }
        }
    }
    found
}

/// Backs the needle source up twice and runs the commands that write files of their own.
fn exercise(repo: &Path, src: &Path, scratch: &Path) {
    init(repo);
    backup(repo, src, &["--tag", "needle-tag-d7e3"]);
    fs::write(src.join("later.txt"), "needle-content-7f3a").unwrap();
    backup(repo, src, &["--tag", "needle-tag-d7e3"]);
    strata_ok(repo, &["check", "--read-data"]);
    strata_ok(
        repo,
        &["cat", "latest", "needle-dir-c4d2/needle-name-b8e1.txt"],
    );
    strata_ok(repo, &["ls", "-R", "latest"]);
    let out = scratch.join("restored");
    strata_ok(
        repo,
        &["restore", "latest", "--target", out.to_str().unwrap()],
    );
    strata_ok(repo, &["repair"]);
}

#[test]
fn no_plaintext_needle_is_anywhere_in_an_encrypted_repository() {
    let t = tempfile::tempdir().unwrap();
    let (src, random) = needle_source(t.path());
    let repo = encrypted(&t.path().join("repo"));
    exercise(&repo, &src, t.path());
    let found = needles_in(&repo, &random);
    assert!(found.is_empty(), "plaintext in the repository: {found:?}");
    assert!(
        repo.join("index").join("db").exists() && repo.join("keys").is_dir(),
        "the search covered sled's files and the key files"
    );
    // The same search over a plain repository of the same source finds them: it has teeth.
    let plain = t.path().join("plain");
    exercise(&plain, &src, &t.path().join("p"));
    let found = needles_in(&plain, &random);
    for n in ["needle-name-b8e1", "needle-src-a9f0", "needle-tag-d7e3"] {
        assert!(found.iter().any(|f| f.starts_with(n)), "{n}: {found:?}");
    }
    assert!(found.iter().any(|f| f.contains("random")) || !found.is_empty());
}

#[test]
fn every_kind_of_backup_round_trips_through_an_encrypted_repository() {
    let t = tempfile::tempdir().unwrap();
    let repo = encrypted(&t.path().join("repo"));
    let kinds: [&[&str]; 4] = [
        &[],
        &["--kind", "incremental"],
        &["--kind", "differential"],
        &[],
    ];
    let expected = fixture::history(&repo, &t.path().join("src"), 11, &kinds);
    assert_eq!(
        fs::read_to_string(repo.join("STRATA"))
            .unwrap()
            .lines()
            .nth(1),
        Some("format 2")
    );
    let r = open(&repo).open().unwrap();
    assert!(r.crypt().is_some());
    for (i, (id, want)) in expected.iter().enumerate() {
        let view = View::open(&r, &id.parse().unwrap()).unwrap();
        assert_same(&format!("snapshot {i}"), want, &from_view(&r, &view));
    }
    drop(r);
    // Restored by the binary, the newest matches too.
    let target = t.path().join("restored");
    strata_ok(
        &repo,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    let got = fixture::capture(&target);
    let want = &expected.last().unwrap().1;
    assert_eq!(got.len(), want.len());
    assert_eq!(
        crate::common::files_under(&target),
        crate::common::files_under(&t.path().join("src"))
    );
}

#[test]
fn every_command_works_on_an_encrypted_repository() {
    let t = tempfile::tempdir().unwrap();
    let repo = encrypted(&t.path().join("repo"));
    let src = t.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("d/a.txt"), "first version\n").unwrap();
    fs::write(src.join("big.bin"), pseudo_random(3 << 20, 9)).unwrap();
    init(&repo);
    let first = backup(&repo, &src, &["--tag", "t1"]);
    fs::write(src.join("d/a.txt"), "second version\n").unwrap();
    fs::write(src.join("d/b.txt"), "new\n").unwrap();
    let second = backup(&repo, &src, &[]);
    assert_eq!(snapshot_ids(&repo), [first.clone(), second.clone()]);

    let ls = strata_ok(&repo, &["ls", "latest", "d"]);
    assert_eq!(String::from_utf8_lossy(&ls.stdout).lines().count(), 2);
    assert_eq!(
        strata_ok(&repo, &["cat", &first, "d/a.txt"]).stdout,
        b"first version\n"
    );
    assert_eq!(
        strata_ok(&repo, &["cat", "latest", "big.bin"]).stdout,
        pseudo_random(3 << 20, 9)
    );
    let find = strata_ok(&repo, &["find", "*.txt"]);
    assert!(String::from_utf8_lossy(&find.stdout).contains("d/b.txt"));
    let log = strata_ok(&repo, &["log", "--json", "d/a.txt"]);
    assert!(
        String::from_utf8_lossy(&log.stdout)
            .matches("modified")
            .count()
            >= 1,
        "{log:?}"
    );
    let diff = strata(&repo, &["diff", &first, &second]);
    assert_eq!(diff.status.code(), Some(1), "{diff:?}");
    assert!(String::from_utf8_lossy(&diff.stdout).contains("d/b.txt"));
    let live = strata(&repo, &["diff", "latest", "--live", src.to_str().unwrap()]);
    assert_eq!(live.status.code(), Some(0), "{live:?}");
    let live = strata(
        &repo,
        &[
            "diff",
            "latest",
            "--live",
            src.to_str().unwrap(),
            "--content",
        ],
    );
    assert_eq!(
        live.status.code(),
        Some(0),
        "keyed ids match the live files: {live:?}"
    );
    let target = t.path().join("out");
    strata_ok(
        &repo,
        &["restore", "latest", "--target", target.to_str().unwrap()],
    );
    assert_eq!(
        crate::common::files_under(&target),
        crate::common::files_under(&src)
    );
    // Restoring again over the same files finds them unchanged (hashed with the keyed ids).
    let again = strata_ok(
        &repo,
        &[
            "restore",
            "latest",
            "--target",
            target.to_str().unwrap(),
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(v["unchanged"].as_u64(), Some(3), "{v}");
    strata_ok(&repo, &["check", "--read-data"]);
    strata_ok(&repo, &["consolidate", "latest"]);
    strata_ok(&repo, &["forget", &first]);
    strata_ok(&repo, &["prune"]);
    assert_eq!(snapshot_ids(&repo), std::slice::from_ref(&second));
    // The index lost: repair rebuilds it from the sealed packs.
    fs::remove_dir_all(repo.join("index")).unwrap();
    let r = strata(&repo, &["repair"]);
    assert_eq!(
        r.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(snapshot_ids(&repo), std::slice::from_ref(&second));
    assert_eq!(
        strata_ok(&repo, &["cat", "latest", "d/a.txt"]).stdout,
        b"second version\n"
    );
    strata_ok(&repo, &["check", "--read-data"]);

    // Keys: add one, change its passphrase, remove the first.
    let pw2 = t.path().join("pw2");
    fs::write(&pw2, "second passphrase").unwrap();
    let fast = ["--kdf-memory", "256", "--kdf-iterations", "1"];
    let mut args = vec!["key", "add", "--new-password-file", pw2.to_str().unwrap()];
    args.extend(fast);
    strata_ok(&repo, &args);
    let as_second = |args: &[&str]| {
        Command::new(bin())
            .arg("--repo")
            .arg(&repo)
            .arg("--password-file")
            .arg(&pw2)
            .args(args)
            .output()
            .unwrap()
    };
    let list = as_second(&["key", "list", "--json"]);
    let keys: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    let keys = keys.as_array().unwrap().clone();
    assert_eq!(keys.len(), 2);
    let first_key = keys.iter().find(|k| k["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(as_second(&["snapshots"]).status.code(), Some(0));
    let removed = as_second(&["key", "remove", &first_key]);
    assert_eq!(removed.status.code(), Some(0), "{removed:?}");
    assert_eq!(strata(&repo, &["snapshots"]).status.code(), Some(5));
    // The last key is never removed: the one given is refused.
    let own = as_second(&["key", "list", "--json"]);
    let own: serde_json::Value = serde_json::from_slice(&own.stdout).unwrap();
    let own = own[0]["id"].as_str().unwrap().to_string();
    assert_eq!(as_second(&["key", "remove", &own]).status.code(), Some(1));
    fs::write(crate::common::passphrase_file(&repo), "third\n").unwrap();
    let pw3 = t.path().join("pw3");
    fs::write(&pw3, "third\n").unwrap();
    let mut args = vec![
        "key",
        "passwd",
        "--new-password-file",
        pw3.to_str().unwrap(),
    ];
    args.extend(fast);
    assert_eq!(as_second(&args).status.code(), Some(0));
    assert_eq!(as_second(&["snapshots"]).status.code(), Some(5));
    assert_eq!(
        strata_ok(&repo, &["cat", "latest", "d/b.txt"]).stdout,
        b"new\n"
    );

    if fuse_available() {
        let names = snapshot_names(&repo);
        let m = Mount::start(&repo, &[]);
        let mp = m.path.clone();
        with_timeout(Duration::from_secs(120), move || {
            let snap = mp.join("snapshots").join(&names[0]);
            assert_eq!(fs::read(snap.join("d/a.txt")).unwrap(), b"second version\n");
            assert_eq!(
                fs::read(mp.join("latest/big.bin")).unwrap(),
                pseudo_random(3 << 20, 9)
            );
            let mut listed: Vec<_> = fs::read_dir(mp.join("latest/d"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            listed.sort();
            assert_eq!(listed, ["a.txt", "b.txt"]);
        });
    }
}

/// Every file's bytes and modification time, and every directory's listing, under `dir`.
fn state(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, i64, i64)> {
    all_files(dir)
        .into_iter()
        .map(|p| {
            let m = fs::metadata(&p).unwrap();
            (
                p.clone(),
                (fs::read(&p).unwrap(), m.mtime(), m.mtime_nsec()),
            )
        })
        .collect()
}

fn run_with_passphrase(repo: &Path, pass: Option<&Path>, args: &[&str]) -> (Option<i32>, String) {
    let mut c = Command::new(bin());
    c.arg("--repo").arg(repo);
    if let Some(p) = pass {
        c.arg("--password-file").arg(p);
    }
    let out = c
        .args(args)
        .env_remove("STRATA_PASSWORD")
        .env_remove("STRATA_PASSWORD_FILE")
        .env_remove("STRATA_PASSWORD_COMMAND")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn unlocking_fails_clearly_and_writes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let repo = encrypted(&t.path().join("repo"));
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), "data").unwrap();
    init(&repo);
    backup(&repo, &src, &[]);
    let other = encrypted(&t.path().join("other"));
    fs::write(
        crate::common::passphrase_file(&other),
        "the other passphrase\n",
    )
    .unwrap();
    init(&other);
    let wrong = t.path().join("wrong");
    fs::write(&wrong, "not the passphrase").unwrap();
    let right = crate::common::passphrase_file(&repo);
    let src_arg = src.to_str().unwrap().to_string();
    let mountpoint = t.path().join("mnt");
    fs::create_dir(&mountpoint).unwrap();
    let mnt_arg = mountpoint.to_str().unwrap().to_string();
    let commands: Vec<Vec<&str>> = vec![
        vec!["snapshots"],
        vec!["backup", &src_arg],
        vec!["cat", "latest", "f"],
        vec!["check"],
        vec!["repair"],
        vec!["prune"],
        vec!["key", "list"],
        vec!["mount", &mnt_arg],
    ];
    let keys = repo.join("keys");
    let key = fs::read_dir(&keys).unwrap().next().unwrap().unwrap().path();
    let key_bytes = fs::read(&key).unwrap();
    let other_key = fs::read_dir(other.join("keys"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    type Setup = Box<dyn Fn()>;
    let restore_key = {
        let (key, key_bytes) = (key.clone(), key_bytes.clone());
        move || fs::write(&key, &key_bytes).unwrap()
    };
    let cases: Vec<(&str, Option<&Path>, Setup, &str)> = vec![
        (
            "wrong passphrase",
            Some(&wrong),
            Box::new(|| {}),
            "Wrong passphrase",
        ),
        ("no passphrase", None, Box::new(|| {}), "No passphrase"),
        (
            "truncated key file",
            Some(&right),
            Box::new({
                let (key, b) = (key.clone(), key_bytes.clone());
                move || fs::write(&key, &b[..100]).unwrap()
            }),
            "truncated or damaged",
        ),
        (
            "damaged key file",
            Some(&right),
            Box::new({
                let (key, mut b) = (key.clone(), key_bytes.clone());
                b[150] ^= 1;
                move || fs::write(&key, &b).unwrap()
            }),
            "checksum mismatch",
        ),
        (
            "key file of another repository",
            Some(&right),
            Box::new({
                let (key, o) = (key.clone(), other_key.clone());
                move || fs::copy(&o, &key).map(|_| ()).unwrap()
            }),
            "belongs to another repository",
        ),
        (
            "missing key file",
            Some(&right),
            Box::new({
                let key = key.clone();
                move || fs::remove_file(&key).unwrap()
            }),
            "has no key file",
        ),
    ];
    for (what, pass, setup, message) in &cases {
        setup();
        let before = state(&repo);
        for args in &commands {
            let (code, err) = run_with_passphrase(&repo, *pass, args);
            assert_eq!(code, Some(5), "{what}, {args:?}: {err}");
            assert!(err.contains(message), "{what}, {args:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
            assert_eq!(
                state(&repo),
                before,
                "{what}, {args:?} wrote to the repository"
            );
        }
        restore_key();
    }
    // The other repository's passphrase with its own key file copied in: still refused, since
    // a key file names its repository.
    fs::copy(&other_key, keys.join("0000000000000000")).unwrap();
    let (code, err) = run_with_passphrase(
        &repo,
        Some(&crate::common::passphrase_file(&other)),
        &["snapshots"],
    );
    assert_eq!(code, Some(5), "{err}");
    assert_eq!(
        run_with_passphrase(&repo, Some(&right), &["snapshots"]).0,
        Some(0)
    );
}

#[test]
fn a_marker_or_index_that_hides_the_encryption_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let repo = encrypted(&t.path().join("repo"));
    init(&repo);
    let marker = fs::read_to_string(repo.join("STRATA")).unwrap();
    // A lost marker: repair says what it was (the key files name the repository).
    fs::remove_file(repo.join("STRATA")).unwrap();
    let out = strata(&repo, &["repair"]);
    let err = String::from_utf8_lossy(&out.stderr);
    let id = marker
        .lines()
        .nth(2)
        .unwrap()
        .strip_prefix("repository ")
        .unwrap();
    assert!(
        err.contains(&format!(
            "printf 'strata repository\\nformat 2\\nrepository {id}\\n'"
        )),
        "{err}"
    );
    fs::write(repo.join("STRATA"), "strata repository\nformat 1\n").unwrap();
    let out = strata(&repo, &["snapshots"]);
    assert_eq!(out.status.code(), Some(5));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not say so"));
    fs::write(repo.join("STRATA"), &marker).unwrap();
    // A plain index put in the place of the sealed one: strata would write in the clear.
    let plain = t.path().join("plain");
    init(&plain);
    fs::remove_dir_all(repo.join("index")).unwrap();
    Command::new("cp")
        .arg("-a")
        .arg(plain.join("index"))
        .arg(repo.join("index"))
        .status()
        .unwrap();
    let out = strata(&repo, &["snapshots"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("its index is not"));
}

/// Flips one byte in the middle of the largest pack.
fn flip_middle_of_largest_pack(repo: &Path) {
    let biggest = all_files(&repo.join("packs"))
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut data = fs::read(&biggest).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    fs::write(&biggest, data).unwrap();
}

#[test]
fn a_flipped_byte_in_a_sealed_record_is_damage_and_eio_never_bytes() {
    let t = tempfile::tempdir().unwrap();
    let repo = encrypted(&t.path().join("repo"));
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let victim = pseudo_random(2 << 20, 4242);
    fs::write(src.join("victim.bin"), &victim).unwrap();
    init(&repo);
    backup(&repo, &src, &[]);
    fs::write(src.join("fine.txt"), b"still readable").unwrap();
    backup(&repo, &src, &[]);
    flip_middle_of_largest_pack(&repo);

    let out = strata(&repo, &["cat", "latest", "victim.bin"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is corrupt") && err.contains("authentication failed"),
        "{err}"
    );
    assert!(out.stdout.len() < victim.len() && victim.starts_with(&out.stdout));
    assert_eq!(
        strata_ok(&repo, &["cat", "latest", "fine.txt"]).stdout,
        b"still readable"
    );
    let check = strata(&repo, &["check", "--read-data"]);
    assert_eq!(check.status.code(), Some(4), "{check:?}");
    assert!(String::from_utf8_lossy(&check.stdout).contains("victim.bin"));
    if fuse_available() {
        let m = Mount::start(&repo, &[]);
        let mp = m.path.clone();
        with_timeout(Duration::from_secs(120), move || {
            let err = fs::read(mp.join("latest/victim.bin")).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
            assert_eq!(
                fs::read(mp.join("latest/fine.txt")).unwrap(),
                b"still readable"
            );
        });
    }
}

#[test]
fn cat_reads_the_sealed_lookup_files_without_the_index() {
    let t = tempfile::tempdir().unwrap();
    let repo = encrypted(&t.path().join("repo"));
    let src = t.path().join("src");
    fs::create_dir_all(src.join("orders")).unwrap();
    fs::write(src.join("orders/o1.json"), b"{\"v\":1}").unwrap();
    let big = pseudo_random(3 << 20, 11);
    fs::write(src.join("big.bin"), &big).unwrap();
    init(&repo);
    backup(&repo, &src, &[]);
    let catalog = fs::read(repo.join("lookup/catalog")).unwrap();
    assert_eq!(&catalog[8..12], &2u32.to_le_bytes(), "a sealed catalog");
    // With the index moved away, only the lookup files can answer.
    fs::rename(repo.join("index"), repo.join("index.away")).unwrap();
    assert_eq!(
        strata_ok(&repo, &["cat", "latest", "orders/o1.json"]).stdout,
        b"{\"v\":1}"
    );
    assert_eq!(strata_ok(&repo, &["cat", "latest", "big.bin"]).stdout, big);
    // The wrong passphrase opens neither them nor anything else.
    let wrong = t.path().join("wrong");
    fs::write(&wrong, "wrong").unwrap();
    let (code, _) = run_with_passphrase(&repo, Some(&wrong), &["cat", "latest", "big.bin"]);
    assert_eq!(code, Some(5));
    fs::rename(repo.join("index.away"), repo.join("index")).unwrap();
    // A damaged table falls back to the index, with the right bytes.
    for f in all_files(&repo.join("lookup")) {
        if f.extension().is_some_and(|e| e == "tbl") {
            let mut b = fs::read(&f).unwrap();
            b[20] ^= 1;
            fs::write(&f, b).unwrap();
        }
    }
    assert_eq!(
        strata_ok(&repo, &["cat", "latest", "orders/o1.json"]).stdout,
        b"{\"v\":1}"
    );
}

#[test]
fn damage_in_an_encrypted_repository_is_marked_without_names_and_repaired() {
    let t = tempfile::tempdir().unwrap();
    let repo = encrypted(&t.path().join("repo"));
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(
        src.join("victim-secret-name.bin"),
        pseudo_random(2 << 20, 7),
    )
    .unwrap();
    init(&repo);
    backup(&repo, &src, &[]);
    fs::write(src.join("other.txt"), b"other").unwrap();
    backup(&repo, &src, &[]);
    flip_middle_of_largest_pack(&repo);
    assert_eq!(
        strata(&repo, &["check", "--read-data"]).status.code(),
        Some(4)
    );
    let marker = fs::read_to_string(repo.join("damage")).unwrap();
    assert!(marker.contains("corrupt_record"), "{marker}");
    assert!(
        !marker.contains("victim"),
        "the marker names no path: {marker}"
    );
    let prune = strata(&repo, &["prune"]);
    assert_eq!(prune.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&prune.stderr).contains("--force-after-damage"));
    // Cut the damaged pack in half: repair rebuilds what the rest of the packs hold.
    let biggest = all_files(&repo.join("packs"))
        .into_iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let len = fs::metadata(&biggest).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&biggest)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let repair = strata(&repo, &["repair"]);
    assert_eq!(repair.status.code(), Some(4), "{repair:?}");
    assert_eq!(
        strata_ok(&repo, &["cat", "latest", "other.txt"]).stdout,
        b"other"
    );
    let cat = strata(&repo, &["cat", "latest", "victim-secret-name.bin"]);
    assert_eq!(cat.status.code(), Some(1));
    let marker = fs::read_to_string(repo.join("damage")).unwrap();
    assert!(!marker.contains("victim"), "{marker}");
}
