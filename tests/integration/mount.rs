//! `strata mount` against real FUSE: fidelity of every snapshot (Rust comparison with the
//! reference capture, plus `rsync -aHAXn --checksum -i` and `diff -r` as real processes), the
//! `changes/` view and `.deleted`, sqlite3 on a mounted database, concurrent readers, a corrupt
//! chunk, EROFS, refusals and signal handling.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::fixture::{self, Tree};
use crate::common::mount::{fuse_available, run, snapshot_names, with_timeout, Mount};
use crate::common::{backup, new_repo, pseudo_random, strata, strata_ok};

const BODY_TIMEOUT: Duration = Duration::from_secs(180);
const CMD_TIMEOUT: Duration = Duration::from_secs(60);

fn sqlite(args: &[&str]) -> String {
    let out = run(Command::new("sqlite3").args(args), CMD_TIMEOUT);
    assert!(
        out.status.success(),
        "sqlite3 {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn cp_a(from: &Path, to: &Path) {
    let out = run(Command::new("cp").arg("-a").arg(from).arg(to), CMD_TIMEOUT);
    assert!(
        out.status.success(),
        "cp -a: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The fixture, backed up as full → incremental → differential → incremental, with a reference
/// capture and a `cp -a` copy of the source at each backup.
struct Scenario {
    _t: tempfile::TempDir,
    repo: PathBuf,
    refs: Vec<PathBuf>,
    trees: Vec<Tree>,
    /// Parent index of each snapshot (None for the full).
    parents: Vec<Option<usize>>,
    names: Vec<String>,
}

fn scenario() -> Scenario {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fixture::build(&src, 7);
    fs::create_dir(src.join("db")).unwrap();
    let db = src.join("db/orders.sqlite");
    let db = db.to_str().unwrap();
    sqlite(&[
        db,
        "create table orders(id integer primary key, total real); \
         insert into orders(total) values (10.5),(99.0),(7.25);",
    ]);
    let mut refs = Vec::new();
    let mut trees = Vec::new();
    type Step = (&'static str, fn(&Path));
    let steps: [Step; 4] = [
        ("full", |_| {}),
        ("incremental", |s| {
            fixture::mutate1(s);
            let db = s.join("db/orders.sqlite");
            sqlite(&[
                db.to_str().unwrap(),
                "insert into orders(total) values (1.0),(2.0);",
            ]);
        }),
        ("differential", fixture::mutate2),
        ("incremental", fixture::mutate3),
    ];
    for (i, (kind, mutate)) in steps.iter().enumerate() {
        mutate(&src);
        trees.push(fixture::capture(&src));
        let r = t.path().join(format!("ref{i}"));
        cp_a(&src, &r);
        refs.push(r);
        backup(
            &repo,
            &src,
            &["--kind", kind, "--tag", &format!("step-{i}")],
        );
    }
    let names = snapshot_names(&repo);
    assert_eq!(names.len(), 4);
    Scenario {
        _t: t,
        repo,
        refs,
        trees,
        parents: vec![None, Some(0), Some(0), Some(2)],
        names,
    }
}

fn lossy(p: &[u8]) -> String {
    String::from_utf8_lossy(p).into_owned()
}

fn parent_of(p: &[u8]) -> &[u8] {
    p.iter()
        .rposition(|&b| b == b'/')
        .map_or(&b""[..], |i| &p[..i])
}

#[test]
fn mount_snapshots_are_faithful_and_changes_are_exact() {
    if !fuse_available() {
        return;
    }
    let s = scenario();
    let m = Mount::start(&s.repo, &[]);
    assert!(
        m.ready_line.contains("Mounted 4 snapshots"),
        "{}",
        m.ready_line
    );
    let mp = m.path.clone();
    with_timeout(BODY_TIMEOUT, move || check_scenario(&s, &mp));
}

fn check_scenario(s: &Scenario, mp: &Path) {
    // Top level.
    let mut top: Vec<String> = fs::read_dir(mp)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    assert_eq!(
        top,
        [
            ".strata",
            "changes",
            "kinds",
            "latest",
            "snapshots",
            "sources",
            "tags",
            "versions"
        ]
    );
    let mut listed: Vec<String> = fs::read_dir(mp.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    let mut want = s.names.clone();
    want.sort();
    assert_eq!(listed, want, "snapshots/ names map to `snapshots --json`");
    assert_eq!(
        fs::read_link(mp.join("latest")).unwrap(),
        Path::new("snapshots").join(&s.names[3])
    );
    let kinds = ["full", "incremental", "differential", "incremental"];
    for (i, name) in s.names.iter().enumerate() {
        let link = mp.join("kinds").join(kinds[i]).join(name);
        assert_eq!(
            fs::read_link(&link).unwrap(),
            Path::new("../../snapshots").join(name)
        );
        assert!(link.join("empty.txt").exists(), "kinds link resolves");
        let tag = mp.join("tags").join(format!("step-{i}")).join(name);
        assert!(fs::symlink_metadata(&tag).unwrap().file_type().is_symlink());
    }
    let sources: Vec<_> = fs::read_dir(mp.join("sources")).unwrap().collect();
    assert_eq!(sources.len(), 1);
    let src_dir = sources[0].as_ref().unwrap().path();
    assert!(!src_dir.file_name().unwrap().as_bytes().contains(&b'/'));
    assert_eq!(
        fs::read_link(src_dir.join("latest")).unwrap(),
        Path::new("../../snapshots").join(&s.names[3])
    );
    assert!(!mp.join("snapshots/no-such-snapshot").exists());

    for (i, name) in s.names.iter().enumerate() {
        let snap = mp.join("snapshots").join(name);
        // Every attribute, content, xattr, link group, through the kernel.
        fixture::assert_same(
            &format!("mounted {name}"),
            &s.trees[i],
            &fixture::capture(&snap),
        );
        // rsync as a real process: no differences at all.
        let out = run(
            Command::new("rsync")
                .args(["-aHAXn", "--checksum", "-i", "--delete"])
                .arg(format!("{}/", s.refs[i].display()))
                .arg(format!("{}/", snap.display())),
            CMD_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "rsync: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "",
            "rsync -i reports differences for {name}"
        );
        // diff -r as a real process (GNU diff cannot compare FIFOs or devices: excluded).
        let out = run(
            Command::new("diff")
                .args(["-r", "--no-dereference", "-x", "fifo", "-x", "null-dev"])
                .arg(&s.refs[i])
                .arg(&snap),
            CMD_TIMEOUT,
        );
        assert!(
            out.status.success(),
            "diff -r {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        check_metadata(&s.refs[i], &snap);
    }

    // sqlite3 on the mounted databases, as they were at backup time.
    for (i, want) in [(0, "3"), (1, "5"), (3, "5")] {
        let uri = format!(
            "file:{}/snapshots/{}/db/orders.sqlite?immutable=1",
            mp.display(),
            s.names[i]
        );
        assert_eq!(sqlite(&[&uri, "select count(*) from orders"]), want);
    }
    let uri = format!(
        "file:{}/snapshots/{}/db/orders.sqlite?immutable=1",
        mp.display(),
        s.names[1]
    );
    assert_eq!(sqlite(&[&uri, "select sum(total) from orders"]), "119.75");

    // changes/: exactly the layer.
    for i in 0..4 {
        check_changes(s, mp, i);
    }
}

/// Kernel-visible metadata the capture does not cover: inode sharing, nlink, blocks, times.
fn check_metadata(reference: &Path, snap: &Path) {
    let r = |p: &str| fs::symlink_metadata(reference.join(p)).unwrap();
    let g = |p: &str| fs::symlink_metadata(snap.join(p)).unwrap();
    if reference.join("orders/hard-b").exists() {
        let (a, b) = (g("hard-a"), g("orders/hard-b"));
        assert_eq!(a.ino(), b.ino(), "hard links share an inode");
        assert_eq!(a.nlink(), 2);
        assert_eq!(r("hard-a").nlink(), 2);
        assert_ne!(a.ino(), g("empty.txt").ino());
    } else {
        assert_eq!(g("hard-a").nlink(), 1);
    }
    let sparse = g("sparse.img");
    assert_eq!(sparse.size(), 8 << 20);
    assert!(
        sparse.blocks() >= 8 && sparse.blocks() < 1024,
        "blocks {}",
        sparse.blocks()
    );
    let f = fs::File::open(snap.join("sparse.img")).unwrap();
    let mut buf = vec![1u8; 8192];
    f.read_exact_at(&mut buf, (4 << 20) - 4096).unwrap();
    assert!(buf[..4096].iter().all(|&b| b == 0) && buf[4096..].iter().all(|&b| b == 0xab));
    for p in ["", "orders", "empty-dir", "link-to-order", "logs/app.log"] {
        let (a, b) = (r(p), g(p));
        assert_eq!(
            (a.mtime(), a.mtime_nsec()),
            (b.mtime(), b.mtime_nsec()),
            "mtime of {p:?}"
        );
        assert_eq!(a.mode(), b.mode(), "mode of {p:?}");
    }
    assert_eq!(g("empty.txt").mode() & 0o7777, 0o4755);
    if reference.join("null-dev").exists() {
        assert_eq!(g("null-dev").rdev(), r("null-dev").rdev());
    }
    let weird = snap.join(OsStr::from_bytes(b"bad\xffname"));
    assert_eq!(
        weird.exists(),
        reference.join(OsStr::from_bytes(b"bad\xffname")).exists()
    );
    // Inode numbers are stable for the life of the mount.
    assert_eq!(g("orders").ino(), g("orders").ino());
    // xattr size probe / ERANGE / ENODATA through the kernel.
    if let Some(v) =
        xattr::get(snap.join("orders/2026/11/20/order-1.json"), "user.checksum").unwrap()
    {
        assert!(!v.is_empty());
    }
    assert_eq!(xattr::get(snap.join("hard-a"), "user.nope").unwrap(), None);
}

/// The expected layer of snapshot `i` from the reference trees, checked against `changes/`.
fn check_changes(s: &Scenario, mp: &Path, i: usize) {
    let name = &s.names[i];
    let dir = mp.join("changes").join(name);
    let got: Tree = fixture::capture(&dir);
    let cur = &s.trees[i];
    let empty = Tree::new();
    let parent = s.parents[i].map_or(&empty, |p| &s.trees[p]);
    // Link groups compare by presence (nlink > 1), not by name: `changes/` may hold one link.
    let strip = |e: &fixture::RefEntry| {
        let mut e = e.clone();
        e.link_group = e.link_group.as_ref().map(|_| Vec::new());
        e
    };
    let changed: BTreeSet<Vec<u8>> = cur
        .iter()
        .filter(|(p, e)| !p.is_empty() && parent.get(*p).map(strip) != Some(strip(e)))
        .map(|(p, _)| p.clone())
        .collect();
    let deleted: BTreeSet<Vec<u8>> = parent
        .keys()
        .filter(|p| !p.is_empty() && !cur.contains_key(*p))
        .filter(|p| {
            let d = parent_of(p).to_vec();
            let is_dir = |t: &Tree| {
                t.get(&d)
                    .is_some_and(|e| e.kind == strata::entry::Kind::Dir)
            };
            is_dir(parent) && is_dir(cur)
        })
        .cloned()
        .collect();
    let shown: BTreeSet<Vec<u8>> = got
        .keys()
        .filter(|p| !p.is_empty() && p.as_slice() != b".deleted" && p.as_slice() != b".deleted0")
        .cloned()
        .collect();
    for p in &changed {
        assert!(
            shown.contains(p),
            "changes/{name}: changed {} not shown",
            lossy(p)
        );
        assert_eq!(
            strip(&got[p]),
            strip(&cur[p]),
            "changes/{name}: {}",
            lossy(p)
        );
    }
    let reach: Vec<&Vec<u8>> = changed.iter().chain(deleted.iter()).collect();
    for p in shown.difference(&changed) {
        let mut pre = p.clone();
        pre.push(b'/');
        assert!(
            reach.iter().any(|c| c.starts_with(&pre)),
            "changes/{name}: {} shown but unchanged and leads to no change",
            lossy(p)
        );
        assert_eq!(got[p].kind, strata::entry::Kind::Dir, "{}", lossy(p));
    }
    let listed = fs::read(dir.join(".deleted")).unwrap();
    let listed0 = fs::read(dir.join(".deleted0")).unwrap();
    let mut want = Vec::new();
    let mut want0 = Vec::new();
    for p in &deleted {
        want.extend_from_slice(p);
        want.push(b'\n');
        want0.extend_from_slice(p);
        want0.push(0);
    }
    assert_eq!(lossy(&listed), lossy(&want), "changes/{name}/.deleted");
    assert_eq!(listed0, want0, "changes/{name}/.deleted0");
    if i > 0 {
        assert!(
            !deleted.is_empty() && !changed.is_empty(),
            "scenario exercises changes"
        );
        assert!(
            shown.len() < cur.len() - 1,
            "changes/ is not the whole tree"
        );
    }
}

#[test]
fn mount_concurrent_readers_get_correct_bytes() {
    if !fuse_available() {
        return;
    }
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let files: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            (
                format!("f{i}.bin"),
                pseudo_random((3 << 20) + i * 12345, 100 + i as u64),
            )
        })
        .collect();
    for (n, d) in &files {
        fs::write(src.join(n), d).unwrap();
    }
    backup(&repo, &src, &[]);
    let name = snapshot_names(&repo).pop().unwrap();
    let snap2 = name.clone();
    // A small cache forces evictions and reloads while threads race.
    let m = Mount::start(&repo, &["--cache-size", "2M"]);
    let snap = m.path.join("snapshots").join(name);
    with_timeout(BODY_TIMEOUT, move || {
        let files = std::sync::Arc::new(files);
        let handles: Vec<_> = (0..12)
            .map(|t| {
                let files = files.clone();
                let snap = snap.clone();
                std::thread::spawn(move || {
                    // Threads share files pairwise and read at scattered offsets.
                    let (n, want) = &files[t % files.len()];
                    let f = fs::File::open(snap.join(n)).unwrap();
                    let mut x = t as u64 * 7919 + 1;
                    for _ in 0..200 {
                        x = x
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        let off = (x >> 20) as usize % want.len();
                        let len = ((x >> 8) as usize % 300_000).min(want.len() - off);
                        let mut buf = vec![0u8; len];
                        f.read_exact_at(&mut buf, off as u64).unwrap();
                        assert!(buf == want[off..off + len], "{n} at {off}+{len}");
                    }
                    assert!(fs::read(snap.join(n)).unwrap() == *want, "whole {n}");
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
    });
    // Separate processes too.
    let snap = m.path.join("snapshots").join(snap2);
    let kids: Vec<_> = (0..4)
        .map(|i| {
            Command::new("sha256sum")
                .arg(snap.join(format!("f{i}.bin")))
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, k) in kids.into_iter().enumerate() {
        let out = k.wait_with_output().unwrap();
        assert!(out.status.success());
        let sum = String::from_utf8(out.stdout).unwrap();
        let want = run(
            Command::new("sha256sum").arg(src.join(format!("f{i}.bin"))),
            CMD_TIMEOUT,
        );
        assert_eq!(
            sum.split(' ').next(),
            String::from_utf8(want.stdout).unwrap().split(' ').next()
        );
    }
}

/// Finds `needle` in any pack file and flips a byte there; returns the pack path.
fn corrupt_packs(repo: &Path, needle: &[u8]) -> PathBuf {
    let mut stack = vec![repo.join("packs")];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
                continue;
            }
            let mut data = fs::read(&p).unwrap();
            if let Some(pos) = data.windows(needle.len()).position(|w| w == needle) {
                data[pos + 10] ^= 0x55;
                fs::write(&p, data).unwrap();
                return p;
            }
        }
    }
    panic!("needle not found in any pack (stored compressed?)");
}

#[test]
fn mount_corrupt_chunk_gives_eio_for_that_file_only() {
    if !fuse_available() {
        return;
    }
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let victim = pseudo_random(1 << 20, 4242);
    fs::write(src.join("victim.bin"), &victim).unwrap();
    fs::write(src.join("fine.txt"), b"still readable").unwrap();
    let other = pseudo_random(2 << 20, 777);
    fs::write(src.join("other.bin"), &other).unwrap();
    backup(&repo, &src, &[]);
    fs::write(src.join("later.txt"), b"second snapshot").unwrap();
    backup(&repo, &src, &[]);
    corrupt_packs(&repo, &victim[100_000..100_064]);
    let names = snapshot_names(&repo);
    // Also the mount without its CPU keepers (the other tests run with them).
    let m = Mount::start(&repo, &["--no-busy-poll"]);
    let mp = m.path.clone();
    with_timeout(BODY_TIMEOUT, move || {
        for name in &names {
            let snap = mp.join("snapshots").join(name);
            let err = fs::read(snap.join("victim.bin")).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
            assert_eq!(fs::read(snap.join("fine.txt")).unwrap(), b"still readable");
            assert!(fs::read(snap.join("other.bin")).unwrap() == other);
            // Metadata of the damaged file is intact.
            assert_eq!(
                fs::metadata(snap.join("victim.bin")).unwrap().len(),
                1 << 20
            );
        }
        assert_eq!(
            fs::read(mp.join("latest/later.txt")).unwrap(),
            b"second snapshot"
        );
    });
    assert!(m.is_mounted(), "mount survives a corrupt chunk");
    let log = m.stderr();
    assert!(
        log.contains("victim.bin") && log.contains("Chunk "),
        "log: {log}"
    );
}

#[test]
fn mount_refuses_writes_with_erofs() {
    if !fuse_available() {
        return;
    }
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("d")).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    backup(&repo, &src, &[]);
    let m = Mount::start(&repo, &[]);
    let snap = m.path.join("latest");
    let mp = m.path.clone();
    with_timeout(BODY_TIMEOUT, move || {
        let erofs = |r: std::io::Result<()>, what: &str| {
            let e = r.expect_err(what);
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
        };
        erofs(fs::write(snap.join("new"), b"x"), "create");
        erofs(
            fs::OpenOptions::new()
                .write(true)
                .open(snap.join("f"))
                .map(|_| ()),
            "open for write",
        );
        erofs(fs::create_dir(snap.join("nd")), "mkdir");
        erofs(fs::remove_file(snap.join("f")), "unlink");
        erofs(fs::remove_dir(snap.join("d")), "rmdir");
        erofs(fs::rename(snap.join("f"), snap.join("g")), "rename");
        erofs(std::os::unix::fs::symlink("f", snap.join("l")), "symlink");
        erofs(fs::hard_link(snap.join("f"), snap.join("h")), "link");
        erofs(xattr::set(snap.join("f"), "user.x", b"1"), "setxattr");
        erofs(xattr::remove(snap.join("f"), "user.x"), "removexattr");
        erofs(
            fs::set_permissions(
                snap.join("f"),
                std::os::unix::fs::PermissionsExt::from_mode(0o777),
            ),
            "chmod",
        );
        erofs(fs::create_dir(mp.join("snapshots/x")), "mkdir at top");
        for tool in [
            ["touch", "f"],
            ["mkdir", "newdir"],
            ["rm", "f"],
            ["touch", "newfile"],
        ] {
            let out = run(Command::new(tool[0]).arg(snap.join(tool[1])), CMD_TIMEOUT);
            assert!(!out.status.success(), "{tool:?} succeeded");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("Read-only"),
                "{tool:?}"
            );
        }
        assert_eq!(fs::read(snap.join("f")).unwrap(), b"x");
    });
}

/// Issue 3: files are opened without a round trip to strata (ENOSYS to open, FUSE
/// zero-message opens) and flush is never sent; reads stay correct and write opens still fail.
#[test]
fn mount_zero_message_opens_issue_3() {
    if !fuse_available() {
        return;
    }
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir_all(&src).unwrap();
    for i in 0..20 {
        fs::write(src.join(format!("f{i}")), format!("content {i}")).unwrap();
    }
    backup(&repo, &src, &[]);
    let m = Mount::start(&repo, &[]);
    let snap = m.path.join("latest");
    with_timeout(BODY_TIMEOUT, move || {
        for _ in 0..3 {
            for i in 0..20 {
                let got = fs::read(snap.join(format!("f{i}"))).unwrap();
                assert_eq!(got, format!("content {i}").as_bytes());
            }
        }
        for (what, opts) in [
            ("write", fs::OpenOptions::new().write(true).clone()),
            ("append", fs::OpenOptions::new().append(true).clone()),
            (
                "truncate",
                fs::OpenOptions::new().write(true).truncate(true).clone(),
            ),
        ] {
            let e = opts.open(snap.join("f1")).expect_err(what);
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{what}: {e}");
        }
        assert_eq!(fs::read(snap.join("f1")).unwrap(), b"content 1");
    });
}

#[test]
fn mount_refusals_and_signals() {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join("f"), b"x").unwrap();
    backup(&repo, &src, &[]);
    let expect_refusal = |mp: &Path, msg: &str| {
        let out = strata(&repo, &["mount", mp.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{msg}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(msg), "want {msg:?} in {err:?}");
    };
    expect_refusal(&t.path().join("missing"), "does not exist");
    expect_refusal(&src, "not empty");
    let inside = repo.join("mnt");
    fs::create_dir(&inside).unwrap();
    expect_refusal(&inside, "inside the repository");
    fs::remove_dir(&inside).unwrap();
    expect_refusal(&src.join("f"), "not a directory");

    if !fuse_available() {
        return;
    }
    let mut m = Mount::start(&repo, &[]);
    // The repository is not held while mounted: a second mount and every command work.
    let other = Mount::start(&repo, &[]);
    assert!(other.path.join("latest/f").exists());
    drop(other);
    strata_ok(&repo, &["ls", "latest"]);
    // SIGTERM unmounts cleanly and exits 0.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(m.pid() as i32, libc::SIGTERM) };
    assert_eq!(
        m.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        m.stderr()
    );
    assert!(!m.is_mounted());
    // The repository is free again; an external `fusermount3 -u` also ends the process.
    strata_ok(&repo, &["ls", "latest"]);
    let mut m = Mount::start(&repo, &["--cache-size", "1G"]);
    assert!(m.path.join("latest/f").exists());
    let out = run(
        Command::new("fusermount3").arg("-u").arg(&m.path),
        CMD_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        m.wait_exit(Duration::from_secs(10)),
        Some(0),
        "{}",
        m.stderr()
    );
}

/// Whether every page of `path` is in the page cache (mmap + mincore; mapping faults nothing in).
fn fully_cached(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    if len == 0 {
        return true;
    }
    // SAFETY: a private read-only mapping of an open file, unmapped below; mincore writes one
    // byte per page into a vector of exactly that many bytes.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED, "mmap {}", path.display());
        let mut v = vec![0u8; len.div_ceil(4096)];
        let rc = libc::mincore(p, len, v.as_mut_ptr());
        libc::munmap(p, len);
        assert_eq!(rc, 0, "mincore {}", path.display());
        v.iter().all(|b| b & 1 == 1)
    }
}

#[test]
fn mount_dir_readahead_pushes_the_next_small_files() {
    if !fuse_available() {
        return;
    }
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    let dir = src.join("orders");
    fs::create_dir_all(&dir).unwrap();
    let name = |i: usize| format!("order-{i:03}.json");
    for i in 0..40 {
        fs::write(dir.join(name(i)), pseudo_random(3000 + i * 700, i as u64)).unwrap();
    }
    backup(&repo, &src, &[]);
    for (opts, pushed) in [(&[][..], true), (&["--no-dir-readahead"][..], false)] {
        let m = Mount::start(&repo, opts);
        let d = m.path.join("latest/orders");
        let src_dir = dir.clone();
        with_timeout(BODY_TIMEOUT, move || {
            // A tree reader lists first (the kernel then knows every inode), then reads.
            for e in fs::read_dir(&d).unwrap() {
                e.unwrap().metadata().unwrap();
            }
            assert!(!fully_cached(&d.join(name(1))), "nothing read yet");
            assert_eq!(
                fs::read(d.join(name(0))).unwrap(),
                fs::read(src_dir.join(name(0))).unwrap()
            );
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            let window = |d: &Path| (1..=8).all(|i| fully_cached(&d.join(name(i))));
            while pushed && !window(&d) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if !pushed {
                std::thread::sleep(Duration::from_millis(500));
            }
            assert_eq!(
                window(&d),
                pushed,
                "files 1-8 in the page cache (opts {opts:?})"
            );
            // The first window is bounded: the file after it is not there yet.
            assert!(!fully_cached(&d.join(name(9))), "file 9 pushed too early");
            // What was pushed (and everything else) reads back exactly.
            for i in 0..40 {
                assert_eq!(
                    fs::read(d.join(name(i))).unwrap(),
                    fs::read(src_dir.join(name(i))).unwrap(),
                    "{}",
                    name(i)
                );
            }
        });
    }
}

/// A repository whose one snapshot holds `big.bin`, `len` pseudo-random bytes; returns them too.
fn repo_with_big_file(len: usize, seed: u64) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    let data = pseudo_random(len, seed);
    fs::write(src.join("big.bin"), &data).unwrap();
    backup(&repo, &src, &[]);
    (t, repo, data)
}

/// The mount process exits 0 within a minute and leaves a clean mount point.
fn assert_exits_cleanly(m: &mut Mount) {
    assert_eq!(
        m.wait_exit(Duration::from_secs(60)),
        Some(0),
        "{}",
        m.stderr()
    );
    assert_clean_mount_point(m);
}

/// After the mount process ended: the mount point is a plain, empty, usable directory (a dead
/// mount would answer "Transport endpoint is not connected").
fn assert_clean_mount_point(m: &Mount) {
    assert!(!m.is_mounted(), "still mounted\n{}", m.stderr());
    let entries = fs::read_dir(&m.path)
        .unwrap_or_else(|e| panic!("mount point unusable: {e}\n{}", m.stderr()))
        .count();
    assert_eq!(entries, 0);
}

/// Issue 16: SIGTERM while a reader was busy made the reader fail with ENOTCONN mid-file and left
/// a dead mount. Now the mount is detached at once and the open file is served to its end.
#[test]
fn mount_sigterm_lets_a_busy_reader_finish_and_unmounts_cleanly() {
    if !fuse_available() {
        return;
    }
    let (_t, repo, want) = repo_with_big_file(64 << 20, 1616);
    let mut m = Mount::start(&repo, &[]);
    let file = m.path.join("latest/big.bin");
    let pid = m.pid() as i32;
    let got = with_timeout(BODY_TIMEOUT, move || {
        use std::io::Read;
        let mut f = fs::File::open(&file).unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        // A slow reader: the signal arrives after its first MiB, and it keeps going for longer
        // than the old 5 s shutdown wait.
        loop {
            let n = f.read(&mut buf).expect("read after SIGTERM");
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.len() == n {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        got
    });
    assert!(got == want, "content read across SIGTERM differs");
    assert_exits_cleanly(&mut m);
    // It ended because the file was closed, not because the grace period ran out.
    assert!(!m.stderr().contains("files still open"), "{}", m.stderr());
}

/// A reader that keeps a file open past the grace period cannot keep the process alive or leave
/// a dead mount: the mount point is clean when the process has exited.
#[test]
fn mount_reader_holding_a_file_past_the_grace_period_leaves_no_dead_mount() {
    if !fuse_available() {
        return;
    }
    let (_t, repo, want) = repo_with_big_file(16 << 20, 1617);
    let mut m = Mount::start(&repo, &["--grace", "1"]);
    let f = fs::File::open(m.path.join("latest/big.bin")).unwrap();
    let mut head = vec![0u8; 4096];
    f.read_exact_at(&mut head, 0).unwrap();
    assert_eq!(head, want[..4096]);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(m.pid() as i32, libc::SIGTERM) };
    assert_exits_cleanly(&mut m);
    assert!(m.stderr().contains("files still open"), "{}", m.stderr());
    // The held file now fails rather than returning anything wrong.
    let mut tail = vec![0u8; 4096];
    if f.read_exact_at(&mut tail, (12 << 20) as u64).is_ok() {
        assert_eq!(tail, want[12 << 20..(12 << 20) + 4096]);
    }
    drop(f);
}

/// Runs `cmd args` as uid/gid 65534 (not root, whom permission checks do not apply to).
fn as_nobody(cmd: &str, args: &[&Path]) -> std::process::Output {
    run(
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", cmd])
            .args(args),
        CMD_TIMEOUT,
    )
}

/// Issue 16: with `--allow-other`, a file or directory an ACL denies to a user
/// (`setfacl -m u:NAME:---`) was readable by that user through the mount (only the mode bits
/// were enforced). The kernel now enforces stored ACLs, denying and granting.
#[test]
fn mount_allow_other_enforces_posix_acls() {
    use std::os::unix::fs::PermissionsExt;
    if !fuse_available() || !fixture::is_root() {
        return;
    }
    let (t, repo) = new_repo();
    let src = t.path().join("src");
    fs::create_dir_all(src.join("private")).unwrap();
    for (name, mode) in [
        ("open.txt", 0o644),
        ("denied.txt", 0o644),
        ("private/inside.txt", 0o644),
        ("granted.txt", 0o600),
    ] {
        fs::write(src.join(name), name.as_bytes()).unwrap();
        fs::set_permissions(src.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    for (acl, path) in [
        ("u:65534:---", "denied.txt"),
        ("u:65534:---", "private"),
        ("u:65534:r--", "granted.txt"),
    ] {
        let out = run(
            Command::new("setfacl")
                .args(["-m", acl])
                .arg(src.join(path)),
            CMD_TIMEOUT,
        );
        assert!(out.status.success(), "setfacl: {out:?}");
    }
    backup(&repo, &src, &[]);
    let m = Mount::start(&repo, &["--allow-other"]);
    // The user must be able to reach the mount point.
    fs::set_permissions(m.path.parent().unwrap(), fs::Permissions::from_mode(0o755)).unwrap();
    let snap = m.path.join("latest");
    let ok = |p: &str| {
        let out = as_nobody("cat", &[&snap.join(p)]);
        assert!(out.status.success(), "{p}: {out:?}\n{}", m.stderr());
        assert_eq!(out.stdout, p.as_bytes());
    };
    let denied = |cmd: &str, p: &str| {
        let out = as_nobody(cmd, &[&snap.join(p)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("Permission denied"),
            "{cmd} {p} as a user the ACL denies: {out:?}"
        );
    };
    ok("open.txt");
    denied("cat", "denied.txt");
    denied("ls", "private");
    denied("cat", "private/inside.txt");
    ok("granted.txt"); // mode 0640 (mask r--), group root: only the ACL entry lets the user in
}
