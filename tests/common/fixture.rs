//! A generated source tree with every fidelity case the backup must keep, plus a reference capture
//! (taken with lstat and plain reads) that snapshot views are compared against.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use strata::entry::Kind;
use strata::layers::{join, View};

use super::pseudo_random;

/// What one path looked like at capture time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefEntry {
    pub kind: Kind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i64,
    pub rdev: u64,
    pub target: Vec<u8>,
    pub content: Option<[u8; 32]>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Smallest path of the hard-link group, for files with nlink > 1.
    pub link_group: Option<Vec<u8>>,
}

/// Path (relative, bytes) → entry; the root is "".
pub type Tree = BTreeMap<Vec<u8>, RefEntry>;

/// Sets mtime (and atime) of `p` itself with nanoseconds.
pub fn set_mtime(p: &Path, sec: i64, nsec: i64) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
        libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec,
        },
    ];
    // SAFETY: valid C string and timespec array.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(rc, 0, "utimensat {}", p.display());
}

fn lchown(p: &Path, uid: u32, gid: u32) {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    unsafe { libc::lchown(c.as_ptr(), uid, gid) };
}

/// Whether this process can create device nodes and chown (root).
pub fn is_root() -> bool {
    // SAFETY: no arguments.
    unsafe { libc::geteuid() == 0 }
}

/// Builds the initial fixture under `root` (which must exist and be empty).
pub fn build(root: &Path, seed: u64) {
    let w = |rel: &str, data: &[u8]| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, data).unwrap();
    };
    w(
        "orders/2026/11/20/order-1.json",
        br#"{"id":1,"total":10.5}"#,
    );
    w(
        "orders/2026/11/20/order-2.json",
        br#"{"id":2,"total":99.0}"#,
    );
    w(
        "orders/2026/11/21/order-3.json",
        br#"{"id":3,"total":7.25}"#,
    );
    w("media/big.bin", &pseudo_random(3 << 20, seed));
    w(
        "logs/app.log",
        &b"2026-11-20 INFO order placed\n".repeat(20_000),
    );
    w("empty.txt", b"");
    w("doomed/inner/x.txt", b"will be deleted");
    w("typechange", b"a file that becomes a directory");
    w("dir2file/child.txt", b"a dir that becomes a file");
    w("rename-me.txt", b"renamed later");
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    // Sparse: 8 MiB apparent, 4 KiB of data in the middle.
    let sparse = fs::File::create(root.join("sparse.img")).unwrap();
    sparse.set_len(8 << 20).unwrap();
    use std::os::unix::fs::FileExt;
    sparse.write_all_at(&[0xab; 4096], 4 << 20).unwrap();
    drop(sparse);
    symlink("orders/2026/11/20/order-1.json", root.join("link-to-order")).unwrap();
    symlink("/nonexistent/dangling\u{1}target", root.join("dangling")).unwrap();
    w("hard-a", b"hard linked content");
    fs::hard_link(root.join("hard-a"), root.join("orders/hard-b")).unwrap();
    let fifo = CString::new(root.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C string.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o640) }, 0);
    if is_root() {
        let dev = CString::new(root.join("null-dev").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid C string.
        unsafe { libc::mknod(dev.as_ptr(), libc::S_IFCHR | 0o600, libc::makedev(1, 3)) };
        lchown(&root.join("orders/2026/11/21/order-3.json"), 1234, 5678);
        lchown(&root.join("dangling"), 4321, 8765);
    }
    let weird = root.join(OsStr::from_bytes(b"bad\xffname"));
    fs::write(&weird, b"not utf-8").unwrap();
    fs::write(root.join("new\nline"), b"newline in name").unwrap();
    fs::set_permissions(root.join("empty.txt"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(root.join("logs/app.log"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::set_permissions(root.join("empty-dir"), fs::Permissions::from_mode(0o1777)).unwrap();
    xattr::set(
        root.join("orders/2026/11/20/order-1.json"),
        "user.checksum",
        b"abc123",
    )
    .unwrap();
    xattr::set(
        root.join("orders/2026/11/20/order-1.json"),
        "user.empty",
        b"",
    )
    .unwrap();
    xattr::set(root.join("empty-dir"), "user.dir", b"\x00\xffbinary").unwrap();
    set_mtime(
        &root.join("orders/2026/11/20/order-2.json"),
        1_700_000_000,
        123_456_789,
    );
    set_mtime(&root.join("link-to-order"), 1_600_000_000, 987_654_321);
}

/// Content hash of a file (blake3).
fn hash_file(p: &Path) -> [u8; 32] {
    *blake3::hash(&fs::read(p).unwrap()).as_bytes()
}

/// Captures the tree under `root` as the reference for a snapshot taken now.
pub fn capture(root: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut inodes: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut stack = vec![Vec::new()];
    while let Some(rel) = stack.pop() {
        let abs = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(OsStr::from_bytes(&rel))
        };
        let m = fs::symlink_metadata(&abs).unwrap();
        let ft = m.file_type();
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_fifo() {
            Kind::Fifo
        } else if ft.is_char_device() {
            Kind::CharDev
        } else if ft.is_block_device() {
            Kind::BlockDev
        } else {
            Kind::Socket
        };
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = xattr::list(&abs)
            .unwrap()
            .map(|n| {
                let v = xattr::get(&abs, &n).unwrap().unwrap_or_default();
                (n.as_bytes().to_vec(), v)
            })
            .collect();
        xattrs.sort();
        let link_group = (kind == Kind::File && m.nlink() > 1)
            .then(|| inodes.entry(m.ino()).or_insert_with(|| rel.clone()).clone());
        tree.insert(
            rel.clone(),
            RefEntry {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                size: if matches!(kind, Kind::File | Kind::Symlink) {
                    m.size()
                } else {
                    0
                },
                mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                rdev: if matches!(kind, Kind::CharDev | Kind::BlockDev) {
                    m.rdev()
                } else {
                    0
                },
                target: if kind == Kind::Symlink {
                    fs::read_link(&abs).unwrap().as_os_str().as_bytes().to_vec()
                } else {
                    Vec::new()
                },
                content: (kind == Kind::File).then(|| hash_file(&abs)),
                xattrs,
                link_group,
            },
        );
        if kind == Kind::Dir {
            let mut names: Vec<Vec<u8>> = fs::read_dir(&abs)
                .unwrap()
                .map(|e| e.unwrap().file_name().as_bytes().to_vec())
                .collect();
            names.sort();
            for n in names.into_iter().rev() {
                stack.push(join(&rel, &n));
            }
        }
    }
    // Link groups are named by their smallest path so the name does not depend on walk order.
    canonical_groups(&mut tree);
    tree
}

fn canonical_groups(tree: &mut Tree) {
    let mut smallest: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (p, e) in tree.iter() {
        if let Some(g) = &e.link_group {
            let s = smallest.entry(g.clone()).or_insert_with(|| p.clone());
            if p < s {
                *s = p.clone();
            }
        }
    }
    for e in tree.values_mut() {
        if let Some(g) = &e.link_group {
            e.link_group = Some(smallest[g].clone());
        }
    }
}

/// Reconstructs the whole tree of a snapshot through the library's layer resolution, reading
/// every file's content (verified), in the same shape as [`capture`].
pub fn from_view(repo: &Arc<strata::repo::Repo>, view: &View) -> Tree {
    let mut tree = Tree::new();
    let mut groups: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut stack = vec![(Vec::new(), view.root().unwrap())];
    while let Some((rel, e)) = stack.pop() {
        let content = (e.kind == Kind::File).then(|| {
            let mut buf = Vec::new();
            strata::content::write_all_to(repo, &e, &mut buf).unwrap();
            assert_eq!(
                buf.len() as u64,
                e.size,
                "size of {}",
                String::from_utf8_lossy(&rel)
            );
            *blake3::hash(&buf).as_bytes()
        });
        let link_group = (e.kind == Kind::File && e.nlink > 1)
            .then(|| groups.entry(e.ino).or_insert_with(|| rel.clone()).clone());
        if e.kind == Kind::Dir {
            let children: Vec<_> = view.children(&rel).unwrap().map(|r| r.unwrap()).collect();
            for (n, c) in children.into_iter().rev() {
                stack.push((join(&rel, &n), c));
            }
        }
        tree.insert(
            rel,
            RefEntry {
                kind: e.kind,
                mode: e.mode,
                uid: e.uid,
                gid: e.gid,
                size: e.size,
                mtime_ns: e.mtime_ns,
                rdev: e.rdev,
                target: e.target.clone(),
                content,
                xattrs: e.xattrs.clone(),
                link_group,
            },
        );
    }
    canonical_groups(&mut tree);
    tree
}

/// Asserts two trees are equal, naming the first differing path.
pub fn assert_same(label: &str, want: &Tree, got: &Tree) {
    for (p, w) in want {
        match got.get(p) {
            None => panic!("{label}: {} missing", String::from_utf8_lossy(p)),
            Some(g) => assert_eq!(w, g, "{label}: {} differs", String::from_utf8_lossy(p)),
        }
    }
    for p in got.keys() {
        assert!(
            want.contains_key(p),
            "{label}: unexpected {}",
            String::from_utf8_lossy(p)
        );
    }
}

/// Mutation step 1: modify, delete, add, rename, file→dir, dir→file, metadata-only change.
pub fn mutate1(root: &Path) {
    fs::write(
        root.join("orders/2026/11/20/order-2.json"),
        br#"{"id":2,"total":100.0}"#,
    )
    .unwrap();
    fs::remove_dir_all(root.join("doomed")).unwrap();
    fs::write(
        root.join("orders/2026/11/22/order-4.json").tap_mkdir(),
        br#"{"id":4}"#,
    )
    .unwrap();
    fs::rename(root.join("rename-me.txt"), root.join("orders/renamed.txt")).unwrap();
    fs::remove_file(root.join("typechange")).unwrap();
    fs::create_dir(root.join("typechange")).unwrap();
    fs::write(root.join("typechange/inside"), b"now a dir").unwrap();
    fs::remove_dir_all(root.join("dir2file")).unwrap();
    fs::write(root.join("dir2file"), b"now a file").unwrap();
    fs::set_permissions(root.join("hard-a"), fs::Permissions::from_mode(0o600)).unwrap();
    let mut log = fs::OpenOptions::new()
        .append(true)
        .open(root.join("logs/app.log"))
        .unwrap();
    use std::io::Write;
    log.write_all(&b"2026-11-21 INFO order shipped\n".repeat(1000))
        .unwrap();
}

/// Mutation step 2: recreate a deleted directory with other content, delete a file in a dir the
/// previous layer touched, change xattrs, replace a symlink target.
pub fn mutate2(root: &Path) {
    fs::create_dir_all(root.join("doomed")).unwrap();
    fs::write(root.join("doomed/reborn.txt"), b"recreated").unwrap();
    fs::remove_file(root.join("orders/2026/11/22/order-4.json")).unwrap();
    xattr::set(
        root.join("orders/2026/11/20/order-1.json"),
        "user.checksum",
        b"changed",
    )
    .unwrap();
    xattr::remove(root.join("orders/2026/11/20/order-1.json"), "user.empty").unwrap();
    fs::remove_file(root.join("link-to-order")).unwrap();
    symlink("orders/renamed.txt", root.join("link-to-order")).unwrap();
    let big = root.join("media/big.bin");
    let mut data = fs::read(&big).unwrap();
    data.splice(1 << 20..1 << 20, b"inserted in the middle".iter().copied());
    fs::write(&big, data).unwrap();
}

/// Mutation step 3: more churn after the differential.
pub fn mutate3(root: &Path) {
    fs::remove_dir_all(root.join("typechange")).unwrap();
    fs::write(root.join("typechange"), b"a file again").unwrap();
    fs::write(
        root.join("orders/2026/11/22/order-4.json"),
        br#"{"id":4,"again":true}"#,
    )
    .unwrap();
    fs::remove_file(root.join("orders/hard-b")).unwrap();
    fs::remove_file(root.join(OsStr::from_bytes(b"bad\xffname"))).unwrap();
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for std::path::PathBuf {
    fn tap_mkdir(self) -> Self {
        fs::create_dir_all(self.parent().unwrap()).unwrap();
        self
    }
}

/// Builds the fixture in `src` (seed `seed`) and backs it up once per element of `kinds` (extra
/// `backup` arguments), applying `mutate1`..`mutate3` before the 2nd..4th backups; a fifth or
/// later backup sees no change. Returns (snapshot id, capture at backup time), oldest first.
pub fn history(repo: &Path, src: &Path, seed: u64, kinds: &[&[&str]]) -> Vec<(String, Tree)> {
    let mutations: [fn(&Path); 3] = [mutate1, mutate2, mutate3];
    std::fs::create_dir_all(src).unwrap();
    build(src, seed);
    crate::common::init(repo);
    let mut out = Vec::new();
    for (i, extra) in kinds.iter().enumerate() {
        if let Some(m) = i.checked_sub(1).and_then(|j| mutations.get(j)) {
            m(src);
        }
        out.push((crate::common::backup(repo, src, extra), capture(src)));
    }
    out
}
