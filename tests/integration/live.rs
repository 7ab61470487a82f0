//! The live repository: a running `strata mount` holds no lock, every other command works beside
//! it exactly as on a repository nobody mounted, new snapshots appear in the mount promptly,
//! forgotten ones stay readable for whoever has them open (leases), commands wait for each other
//! instead of failing, and a mount killed with SIGKILL leaves nothing that blocks anyone.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::mount::{fuse_available, run, snapshot_names, with_timeout, Mount};
use crate::common::{backup, bin, files_under, new_repo, pseudo_random, strata, strata_ok};

const BODY_TIMEOUT: Duration = Duration::from_secs(300);
/// How soon a committed snapshot must be visible in the mount. The design target is 1 s (the
/// watcher looks every 100 ms); the deadline leaves room for a loaded test machine, and the
/// measured delay is printed.
const VISIBLE_WITHIN: Duration = Duration::from_secs(3);

/// Polls `cond` until it holds or `limit` passes; returns how long it took.
fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if cond() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Output with what legitimately differs between two runs removed: wall times and the given
/// paths (restore targets).
fn normalized(out: &Output, paths: &[&Path]) -> (Option<i32>, String, String) {
    let clean = |b: &[u8]| {
        let mut s = String::from_utf8_lossy(b).into_owned();
        for p in paths {
            s = s.replace(&*p.to_string_lossy(), "<path>");
        }
        let mut o = String::new();
        for word in s.split_inclusive(|c: char| c.is_whitespace() || c == ',') {
            let w = word.trim_end_matches(|c: char| c.is_whitespace() || c == ',');
            let is_time = w.contains('.') && w.chars().all(|c| c.is_ascii_digit() || c == '.');
            if is_time {
                o.push_str(&word.replacen(w, "T", 1));
            } else {
                o.push_str(word);
            }
        }
        // JSON wall times.
        let mut r = String::new();
        let mut rest = o.as_str();
        while let Some(i) = rest.find("\"elapsed_ms\":") {
            let (head, tail) = rest.split_at(i + "\"elapsed_ms\":".len());
            r.push_str(head);
            r.push('T');
            rest = tail.trim_start_matches(|c: char| c.is_ascii_digit());
        }
        r.push_str(rest);
        r
    };
    (out.status.code(), clean(&out.stdout), clean(&out.stderr))
}

/// Copies a repository directory as another, unmounted repository (without the mount's own
/// files and the lock).
fn copy_repo(from: &Path, to: &Path) {
    let out = run(Command::new("cp").arg("-a").arg(from).arg(to), BODY_TIMEOUT);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = fs::remove_dir_all(to.join("readers"));
    let _ = fs::remove_file(to.join("lock"));
}

/// Waits until `name` is listed in the mount's `snapshots/`, `changes/`, `latest` points at it
/// and `changes/<name>/` lists what it changed.
fn wait_visible(m: &Mount, name: &str, changed: &str) -> Duration {
    let d = within(VISIBLE_WITHIN, || {
        let listed = fs::read_dir(m.path.join("snapshots"))
            .map(|rd| rd.flatten().any(|e| e.file_name() == name))
            .unwrap_or(false);
        let latest = fs::read_link(m.path.join("latest"))
            .is_ok_and(|t| t == Path::new("snapshots").join(name));
        listed && latest && m.path.join("changes").join(name).join(changed).exists()
    });
    let d = d.unwrap_or_else(|| panic!("{name} not visible within {VISIBLE_WITHIN:?}"));
    eprintln!(
        "snapshot {name} visible in the mount {} ms after its backup returned",
        d.as_millis()
    );
    d
}

#[test]
fn live_commands_beside_a_mount_match_an_unmounted_copy() {
    if !fuse_available() {
        return;
    }
    with_timeout(BODY_TIMEOUT, || {
        let (t, a) = new_repo();
        let src = t.path().join("src");
        fs::create_dir_all(src.join("d")).unwrap();
        fs::write(src.join("d/f"), b"one").unwrap();
        fs::write(src.join("g"), pseudo_random(300_000, 1)).unwrap();
        let m = Mount::start(&a, &[]);
        assert!(m.ready_line.starts_with("Mounted 0 snapshots"));

        // Backups of every kind while mounted: each succeeds and shows up.
        let steps: [(&str, &str, &[u8]); 3] = [
            ("full", "g", b""),
            ("incremental", "h", b"two"),
            ("differential", "i", b"three"),
        ];
        for (kind, file, data) in steps {
            if !data.is_empty() {
                fs::write(src.join(file), data).unwrap();
            }
            let out = strata(&a, &["backup", "--kind", kind, src.to_str().unwrap()]);
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let name = snapshot_names(&a).pop().unwrap();
            wait_visible(&m, &name, file);
        }
        assert_eq!(
            fs::read(m.path.join("latest/i")).unwrap(),
            b"three",
            "read through the mount"
        );

        let b = t.path().join("copy");
        copy_repo(&a, &b);
        let names = snapshot_names(&a);
        let first = names[0].rsplit('-').next().unwrap().to_string();
        let (ra, rb) = (t.path().join("restore-a"), t.path().join("restore-b"));
        let restore_a = ["restore", "latest", "--target", ra.to_str().unwrap()];
        let restore_b = ["restore", "latest", "--target", rb.to_str().unwrap()];
        let same = |what: &str, out_a: Output, out_b: Output| {
            let (x, y) = (
                normalized(&out_a, &[&ra, &a]),
                normalized(&out_b, &[&rb, &b]),
            );
            assert_eq!(x, y, "{what}: mounted repository vs unmounted copy");
        };
        let both = |args: &[&str]| (strata(&a, args), strata(&b, args));
        let plain: &[&[&str]] = &[
            &["snapshots"],
            &["snapshots", "--json"],
            &["ls", "-R", "latest"],
            &["ls", "-l", "latest", "d"],
            &["cat", "latest", "g"],
            &["log", "h"],
            &["find", "*"],
            &["diff", &first, "latest"],
            &["check"],
            &["check", "--json"],
            &["check", "--read-data"],
            &["repair", "--dry-run"],
        ];
        for args in plain {
            let (x, y) = both(args);
            same(&args.join(" "), x, y);
        }
        same("restore", strata(&a, &restore_a), strata(&b, &restore_b));
        assert_eq!(files_under(&ra), files_under(&rb));
        assert_eq!(files_under(&ra), files_under(&src));

        // What changes the repository: the same on both, and the mount follows.
        let (x, y) = both(&["consolidate", "latest"]);
        same("consolidate", x, y);
        let (x, y) = both(&["forget", "--keep-last", "2", "--prune"]);
        same("forget --prune", x, y);
        let (x, y) = both(&["prune"]);
        same("prune", x, y);
        let (x, y) = both(&["snapshots", "--json"]);
        same("snapshots after", x, y);
        let mut left = snapshot_names(&a);
        assert_eq!(left.len(), 2);
        let newest = left[1].clone();
        left.sort();
        within(VISIBLE_WITHIN, || {
            let mut listed: Vec<String> = fs::read_dir(m.path.join("snapshots"))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            listed.sort();
            listed == left
        })
        .expect("the forgotten snapshots leave the mount's listing");
        assert!(
            m.path.join("kinds/full").join(&newest).exists(),
            "consolidated: listed as a full"
        );
        assert_eq!(fs::read(m.path.join("latest/h")).unwrap(), b"two");
    });
}

#[test]
fn live_new_snapshots_appear_everywhere_in_the_mount() {
    if !fuse_available() {
        return;
    }
    with_timeout(BODY_TIMEOUT, || {
        let (t, repo) = new_repo();
        let src = t.path().join("src");
        fs::create_dir(&src).unwrap();
        fs::write(src.join("a"), b"a1").unwrap();
        backup(&repo, &src, &[]);
        let m = Mount::start(&repo, &[]);
        // Cache what a new snapshot changes: the listings, `latest` and its target.
        assert_eq!(fs::read(m.path.join("latest/a")).unwrap(), b"a1");
        let source = fs::read_dir(m.path.join("sources"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name();
        let src_latest = m.path.join("sources").join(&source).join("latest");
        let versions = m.path.join("versions").join(&source).join("a");
        assert_eq!(fs::read_dir(&versions).unwrap().count(), 1);

        fs::write(src.join("a"), b"a2 changed").unwrap();
        fs::write(src.join("b"), b"new").unwrap();
        backup(&repo, &src, &["--tag", "nightly"]);
        let name = snapshot_names(&repo).pop().unwrap();
        let d = wait_visible(&m, &name, "b");
        assert!(d < VISIBLE_WITHIN);
        assert_eq!(fs::read(m.path.join("latest/a")).unwrap(), b"a2 changed");
        assert_eq!(fs::read(src_latest.join("b")).unwrap(), b"new");
        assert!(m.path.join("kinds/incremental").join(&name).exists());
        assert!(m.path.join("tags/nightly").join(&name).exists());
        assert_eq!(fs::read_dir(&versions).unwrap().count(), 2, "versions/ too");
    });
}

/// Bytes of pack files under `repo`.
fn pack_bytes(repo: &Path) -> u64 {
    fn walk(p: &Path) -> u64 {
        fs::read_dir(p)
            .map(|rd| {
                rd.flatten()
                    .map(|e| {
                        let m = e.metadata().unwrap();
                        if m.is_dir() {
                            walk(&e.path())
                        } else {
                            m.len()
                        }
                    })
                    .sum()
            })
            .unwrap_or(0)
    }
    walk(&repo.join("packs"))
}

/// Whether any running mount leases snapshot `id`.
fn leased(repo: &Path, id: &str) -> bool {
    fs::read_dir(repo.join("readers"))
        .map(|rd| {
            rd.flatten().any(|e| {
                fs::read_to_string(e.path().join("lease")).is_ok_and(|t| t.lines().any(|l| l == id))
            })
        })
        .unwrap_or(false)
}

#[test]
fn live_a_reader_keeps_a_forgotten_snapshot_until_it_closes() {
    if !fuse_available() {
        return;
    }
    with_timeout(BODY_TIMEOUT, || {
        let (t, repo) = new_repo();
        let src = t.path().join("src");
        fs::create_dir(&src).unwrap();
        let big = pseudo_random(100 << 20, 22);
        fs::write(src.join("big"), &big).unwrap();
        fs::write(src.join("small"), b"stays").unwrap();
        let doomed = backup(&repo, &src, &[]);
        fs::remove_file(src.join("big")).unwrap();
        backup(&repo, &src, &["--kind", "full"]);
        let name = snapshot_names(&repo)[0].clone();
        let m = Mount::start(&repo, &[]);
        let path = m.path.join("snapshots").join(&name).join("big");
        let mut f = fs::File::open(&path).unwrap();
        let mut got = vec![0u8; 8 << 20];
        f.read_exact(&mut got).unwrap();
        assert!(leased(&repo, &doomed), "an open file leases its snapshot");

        let before = pack_bytes(&repo);
        let out = strata_ok(&repo, &["forget", &doomed, "--prune"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("remove"), "{text}");
        within(VISIBLE_WITHIN, || {
            !m.path.join("snapshots").join(&name).exists()
        })
        .expect("the forgotten snapshot leaves the listing");
        assert!(
            pack_bytes(&repo) + (1 << 20) > before,
            "its data is kept while read"
        );
        let mut rest = Vec::new();
        f.read_to_end(&mut rest).unwrap();
        got.extend_from_slice(&rest);
        assert!(got == big, "every byte right after forget --prune");
        let out = strata_ok(&repo, &["check", "--read-data"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("No problems found"));
        drop(f);

        // Closed: the lease ends, and the next prune takes the space back.
        within(Duration::from_secs(10), || !leased(&repo, &doomed))
            .expect("the lease ends once the file is closed");
        strata_ok(&repo, &["prune"]);
        let after = pack_bytes(&repo);
        assert!(
            after + (90 << 20) < before,
            "space reclaimed: {before} -> {after}"
        );
        assert_eq!(fs::read(m.path.join("latest/small")).unwrap(), b"stays");
        let out = strata_ok(&repo, &["check", "--read-data"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("No problems found"));
    });
}

#[test]
fn live_two_simultaneous_backups_both_succeed() {
    with_timeout(BODY_TIMEOUT, || {
        let (t, repo) = new_repo();
        let srcs: Vec<PathBuf> = (0..2).map(|i| t.path().join(format!("src{i}"))).collect();
        for (i, s) in srcs.iter().enumerate() {
            fs::create_dir_all(s.join("sub")).unwrap();
            for j in 0..50 {
                fs::write(
                    s.join(format!("sub/f{j}")),
                    pseudo_random(40_000, (i * 100 + j) as u64),
                )
                .unwrap();
            }
        }
        let children: Vec<_> = srcs
            .iter()
            .map(|s| {
                Command::new(bin())
                    .arg("--repo")
                    .arg(&repo)
                    .args(["backup", "--json"])
                    .arg(s)
                    .env_remove("STRATA_REPO")
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut ids = Vec::new();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            ids.push(v["id"].as_str().unwrap().to_string());
        }
        for (id, s) in ids.iter().zip(&srcs) {
            let target = t.path().join(format!("restored-{id}"));
            strata_ok(
                &repo,
                &["restore", id, "--target", target.to_str().unwrap()],
            );
            assert_eq!(files_under(&target), files_under(s));
        }
        strata_ok(&repo, &["check", "--read-data"]);
    });
}

#[test]
fn live_a_killed_mount_blocks_nothing() {
    if !fuse_available() {
        return;
    }
    with_timeout(BODY_TIMEOUT, || {
        let (t, repo) = new_repo();
        let src = t.path().join("src");
        fs::create_dir(&src).unwrap();
        for j in 0..20 {
            fs::write(src.join(format!("f{j}")), pseudo_random(1 << 20, j)).unwrap();
        }
        backup(&repo, &src, &[]);
        let mut m = Mount::start(&repo, &[]);
        let mut held = fs::File::open(m.path.join("latest/f0")).unwrap();
        let mut buf = [0u8; 4096];
        held.read_exact(&mut buf).unwrap();
        fs::write(src.join("f1"), pseudo_random(8 << 20, 99)).unwrap();
        // A backup runs while the mount dies: the mount may be taking a copy of the index.
        let running = Command::new(bin())
            .arg("--repo")
            .arg(&repo)
            .args(["backup"])
            .arg(&src)
            .env_remove("STRATA_REPO")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(m.pid() as i32, libc::SIGKILL) };
        m.wait_exit(Duration::from_secs(10));
        drop(held);
        let out = running.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        drop(m);

        let out = strata_ok(&repo, &["--lock-wait", "0", "check", "--read-data"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("No problems found"));
        fs::write(src.join("after"), b"after").unwrap();
        backup(&repo, &src, &[]);
        strata_ok(
            &repo,
            &["--lock-wait", "0", "forget", "--keep-last", "1", "--prune"],
        );
        let readers: Vec<_> = fs::read_dir(repo.join("readers"))
            .unwrap()
            .flatten()
            .filter(|e| e.path().is_dir())
            .collect();
        assert!(readers.is_empty(), "the dead mount's directory is gone");
        let m = Mount::start(&repo, &[]);
        assert_eq!(fs::read(m.path.join("latest/after")).unwrap(), b"after");
    });
}

/// Python that sits in a directory of the mount (its working directory), reads part of a
/// listing, says `half`, waits for a line on stdin, then reads the rest of the same listing and
/// every listed file by relative name: prints `names unique`, then `sha256sum` lines.
const HELD_DIRECTORY: &str = r#"
import hashlib, os, sys
os.chdir(sys.argv[1])
it = os.scandir(".")
names = [next(it).name for _ in range(int(sys.argv[2]))]
print("half", flush=True)
sys.stdin.readline()
names += [e.name for e in it]
print(len(names), len(set(names)))
for n in sorted(names):
    with open(n, "rb") as f:
        print(hashlib.sha256(f.read()).hexdigest() + "  " + n)
"#;

#[test]
fn live_a_listing_and_a_working_directory_survive_refresh_and_forget() {
    if !fuse_available() {
        return;
    }
    with_timeout(BODY_TIMEOUT, || {
        use std::io::{BufRead, BufReader, Write};
        let (t, repo) = new_repo();
        let src = t.path().join("src");
        let docs = src.join("docs");
        fs::create_dir_all(&docs).unwrap();
        const N: usize = 3000;
        for i in 0..N {
            fs::write(
                docs.join(format!("order-{i:05}.json")),
                pseudo_random(200 + i % 700, i as u64),
            )
            .unwrap();
        }
        let sums = run(
            Command::new("sh")
                .arg("-c")
                .arg("sha256sum -- *")
                .current_dir(&docs),
            BODY_TIMEOUT,
        );
        assert!(sums.status.success());
        let mut expected: Vec<String> = String::from_utf8(sums.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        expected.sort();
        let doomed = backup(&repo, &src, &[]);
        let m = Mount::start(&repo, &[]);
        let name = snapshot_names(&repo)[0].clone();

        let mut child = Command::new("python3")
            .arg("-c")
            .arg(HELD_DIRECTORY)
            .arg(m.path.join("snapshots").join(&name).join("docs"))
            .arg("700")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "half");

        // Another full backup with the directory rewritten: half its files gone, the rest
        // changed. The mount refreshes to it; then the first snapshot is forgotten and pruned.
        for i in 0..N {
            let p = docs.join(format!("order-{i:05}.json"));
            if i % 2 == 0 {
                fs::remove_file(p).unwrap();
            } else {
                fs::write(p, b"rewritten").unwrap();
            }
        }
        backup(&repo, &src, &["--kind", "full", "--no-anomaly-check"]);
        let newest = snapshot_names(&repo).pop().unwrap();
        within(VISIBLE_WITHIN, || {
            fs::read_link(m.path.join("latest"))
                .is_ok_and(|t| t == Path::new("snapshots").join(&newest))
        })
        .expect("the new snapshot becomes latest");
        strata_ok(&repo, &["forget", &doomed, "--prune"]);
        within(VISIBLE_WITHIN, || {
            !m.path.join("snapshots").join(&name).exists()
        })
        .expect("the forgotten snapshot leaves the listing");

        child.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
        let mut rest = String::new();
        out.read_to_string(&mut rest).unwrap();
        let status = child.wait().unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(status.success(), "{err}");
        let mut lines = rest.lines();
        assert_eq!(
            lines.next(),
            Some(format!("{N} {N}").as_str()),
            "the listing goes on where it was, every name once"
        );
        let mut got: Vec<String> = lines.map(str::to_string).collect();
        got.sort();
        let wrong: Vec<_> = got.iter().zip(&expected).filter(|(g, e)| g != e).collect();
        assert!(
            got.len() == expected.len() && wrong.is_empty(),
            "every file of the held directory reads its old bytes: {} of {} differ, first {:?}",
            wrong.len(),
            expected.len(),
            wrong.first()
        );

        // Everything let go: the lease ends and the repository checks clean after a prune.
        drop(out);
        within(Duration::from_secs(10), || !leased(&repo, &doomed))
            .expect("the lease ends once the directory is let go");
        strata_ok(&repo, &["prune"]);
        let out = strata_ok(&repo, &["check", "--read-data"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("No problems found"));
        assert_eq!(
            fs::read(m.path.join("latest/docs/order-00001.json")).unwrap(),
            b"rewritten"
        );
    });
}
