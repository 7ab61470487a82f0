//! Directory listings through a real mount: every listing carries attributes (readdirplus), and
//! those equal what `stat` says of each entry; what the kernel was given through them it gives
//! back (`forget`), so the inode table shrinks when the kernel drops its caches; a directory of
//! 50,000 entries is listed completely and exactly once, by `ls -f` and by `find`, read a page at
//! a time; `seekdir` to a `telldir` position lands on the same entry.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::mount::{fuse_available, run, with_timeout, Mount};
use crate::common::{backup, new_repo};

const BODY_TIMEOUT: Duration = Duration::from_secs(600);
const CMD_TIMEOUT: Duration = Duration::from_secs(300);

/// One gauge of the mount's `.strata/stats`.
fn gauge(mp: &Path, name: &str) -> f64 {
    let text = fs::read_to_string(mp.join(".strata/stats")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in the stats:\n{text}"))
}

fn drop_caches() -> bool {
    fs::write("/proc/sys/vm/drop_caches", "3").is_ok()
}

/// The entries of a `ls -l`-like walk: (path, mode, uid, gid, size, mtime, nlink, ino) from
/// `find -printf`, which takes them from `lstat`.
fn find_stat(dir: &Path) -> Vec<String> {
    let out = run(
        Command::new("find")
            .arg(dir)
            .args(["-printf", "%P %m %U %G %s %T@ %n %i %y\\n"]),
        CMD_TIMEOUT,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn readdirplus_attributes_equal_stat_and_are_given_back() {
    if !fuse_available() {
        return;
    }
    with_timeout(BODY_TIMEOUT, || {
        let (t, repo) = new_repo();
        let src = t.path().join("src");
        for d in 0..20 {
            let dir = src.join(format!("d{d:02}"));
            fs::create_dir_all(&dir).unwrap();
            for f in 0..50 {
                let p = dir.join(format!("f{f:03}"));
                fs::write(&p, vec![b'x'; f * 37 + d]).unwrap();
                fs::set_permissions(
                    &p,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600 + f as u32 % 0o77),
                )
                .unwrap();
            }
            std::os::unix::fs::symlink("f000", dir.join("link")).unwrap();
        }
        backup(&repo, &src, &[]);
        let m = Mount::start(&repo, &[]);
        let snap = m.path.join("latest/");

        // `ls -lR` lists with attributes: every entry's size, mode, owner, time and inode as
        // `stat` gives them, also after the kernel forgot and asked again.
        let out = run(Command::new("ls").arg("-lRn").arg(&snap), CMD_TIMEOUT);
        assert!(out.status.success());
        let listed = String::from_utf8(out.stdout).unwrap();
        assert_eq!(listed.lines().filter(|l| l.starts_with('-')).count(), 1000);
        let first = find_stat(&snap);
        assert_eq!(first.len(), 1 + 20 * 52, "{first:?}");
        for d in 0..20 {
            let dir = snap.join(format!("d{d:02}"));
            let mut names = BTreeSet::new();
            for e in fs::read_dir(&dir).unwrap() {
                let e = e.unwrap();
                let by_stat = fs::symlink_metadata(e.path()).unwrap();
                assert_eq!(e.ino(), by_stat.ino(), "{:?}", e.path());
                let src_meta =
                    fs::symlink_metadata(src.join(format!("d{d:02}")).join(e.file_name())).unwrap();
                assert_eq!(by_stat.len(), src_meta.len());
                assert_eq!(by_stat.mode(), src_meta.mode());
                assert_eq!(by_stat.mtime_nsec(), src_meta.mtime_nsec());
                names.insert(e.file_name());
            }
            assert_eq!(names.len(), 51);
        }
        let inodes_after_walk = gauge(&m.path, "strata_mount_inodes");
        assert!(inodes_after_walk > 1000.0, "{inodes_after_walk}");

        // The kernel drops its caches: every reference the listings gave it comes back, and the
        // table shrinks to about the fixed inodes and what is still in use.
        if drop_caches() {
            let mut now = inodes_after_walk;
            for _ in 0..100 {
                now = gauge(&m.path, "strata_mount_inodes");
                if now < 100.0 {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
                drop_caches();
            }
            assert!(
                now < 100.0,
                "inode table did not shrink: {inodes_after_walk} -> {now}"
            );
            // Listed again, the same attributes (new inode numbers).
            let again: Vec<String> = find_stat(&snap).into_iter().map(|l| drop_ino(&l)).collect();
            let first: Vec<String> = first.into_iter().map(|l| drop_ino(&l)).collect();
            assert_eq!(again, first);
        }
    });
}

/// A `find -printf` line without its inode number.
fn drop_ino(line: &str) -> String {
    let mut w: Vec<&str> = line.split(' ').collect();
    let n = w.len();
    w.remove(n - 2);
    w.join(" ")
}

#[test]
fn a_large_directory_is_listed_completely_once_and_seekdir_returns_to_telldir() {
    if !fuse_available() {
        return;
    }
    with_timeout(BODY_TIMEOUT, || {
        let (t, repo) = new_repo();
        let src = t.path().join("src");
        let big = src.join("big");
        fs::create_dir_all(&big).unwrap();
        const N: usize = 50_000;
        for i in 0..N {
            fs::write(big.join(format!("entry-{i:06}")), b"").unwrap();
        }
        backup(&repo, &src, &[]);
        // Another layer on top, so that the listing merges layers: one name deleted, one added.
        fs::remove_file(big.join("entry-000007")).unwrap();
        fs::write(big.join("entry-zzz"), b"new").unwrap();
        backup(&repo, &src, &[]);
        let m = Mount::start(&repo, &[]);
        let dir = m.path.join("latest/big");

        let out = run(Command::new("ls").arg("-f").arg(&dir), CMD_TIMEOUT);
        assert!(out.status.success());
        let names: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        assert_eq!(names.len(), N + 2, "ls -f: {N} entries, . and ..");
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(unique.len(), names.len(), "no entry twice");
        assert!(unique.contains("entry-zzz") && !unique.contains("entry-000007"));

        let out = run(
            Command::new("find")
                .arg(&dir)
                .args(["-mindepth", "1", "-printf", "%f\\n"]),
            CMD_TIMEOUT,
        );
        let found: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
        assert_eq!(found.len(), N);
        assert_eq!(found.iter().copied().collect::<BTreeSet<_>>().len(), N);

        // telldir/seekdir (Python's os.scandir has none; a small C-free check through
        // `ls -U` of two handles would not seek): read a while, remember, read on, seek back.
        let script = r#"
import ctypes, ctypes.util, sys
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
class Dirent(ctypes.Structure):
    _fields_ = [("d_ino", ctypes.c_ulong), ("d_off", ctypes.c_long),
                ("d_reclen", ctypes.c_ushort), ("d_type", ctypes.c_ubyte),
                ("d_name", ctypes.c_char * 256)]
libc.opendir.restype = ctypes.c_void_p
libc.readdir.restype = ctypes.POINTER(Dirent)
libc.readdir.argtypes = [ctypes.c_void_p]
libc.telldir.restype = ctypes.c_long
libc.telldir.argtypes = [ctypes.c_void_p]
libc.seekdir.argtypes = [ctypes.c_void_p, ctypes.c_long]
d = libc.opendir(sys.argv[1].encode())
def name():
    e = libc.readdir(d)
    return e.contents.d_name.decode() if e else None
for _ in range(int(sys.argv[2])):
    name()
pos = libc.telldir(d)
want = [name() for _ in range(5)]
for _ in range(int(sys.argv[3])):
    name()
libc.seekdir(d, pos)
got = [name() for _ in range(5)]
print("same" if got == want else "differ %r %r" % (want, got))
"#;
        for (skip, then) in [(3, 10), (1000, 20_000), (30_000, 5)] {
            let out = run(
                Command::new("python3")
                    .arg("-c")
                    .arg(script)
                    .arg(&dir)
                    .arg(skip.to_string())
                    .arg(then.to_string()),
                CMD_TIMEOUT,
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                "same",
                "seekdir after {skip}+{then}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        drop(t);
    });
}
