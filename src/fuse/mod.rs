//! The thin fuser adapter: one method per FUSE operation, each translating arguments, calling
//! [`crate::vfs::Vfs`] and replying. It knows fuser; the vfs does not.
//!
//! - Inode encoding: FUSE node ids are the vfs inode numbers unchanged (1 is the root); they are
//!   also what `st_ino` shows. The generation is always 0 (inodes are never reused).
//! - Threads: fuser's session loop is single-threaded, so slow operations (lookup, opendir,
//!   read) are handed to a small worker pool that replies from its thread. A request that
//!   panics is answered `EIO`; its worker lives on.
//! - References: every `lookup` reply and `readdirplus` entry is counted ([`Vfs::hold`]) and
//!   `forget` gives them back, so the inode table shrinks as the kernel lets go and the
//!   snapshots it holds are leased ([`crate::vfs::Keeper`]).
//! - Errors: [`errno`] is the one exhaustive table from vfs errors to errnos. Every write-type
//!   operation replies `EROFS`.
//! - Caching: snapshot content never changes, so it gets a one-day entry/attr TTL, kept page cache
//!   (`FOPEN_KEEP_CACHE`), cached directory listings (`FOPEN_CACHE_DIR`) and negative lookups;
//!   the top-level lists get one second, `.strata/stats` none. Files are opened without a round
//!   trip (zero-message opens: `open` answers `ENOSYS` once the kernel supports it) and `flush`
//!   is never needed.
//! - Counters: every request is counted and timed into the vfs's [`MountStats`] (relaxed
//!   atomics only), which `.strata/stats` shows.

mod awake;
mod dirs;
mod live;
mod push;
mod session;

pub use session::{detach, spawn_mount, tune_readahead, MountOptions};

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::consts::{
    FOPEN_CACHE_DIR, FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, FUSE_CACHE_SYMLINKS, FUSE_DO_READDIRPLUS,
    FUSE_NO_OPEN_SUPPORT, FUSE_PARALLEL_DIROPS, FUSE_POSIX_ACL,
};
use fuser::{
    FileAttr, FileType, Filesystem, KernelConfig, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow,
};
use libc::c_int;

use crate::vfs::{Attr, FileKind, MountStats, Op, Timer, Vfs, VfsError, XattrReply, STATS_INO};
pub use live::invalidate;

/// TTL of snapshot content (immutable).
pub const TTL_CONTENT: Duration = Duration::from_secs(86_400);
/// TTL of the top-level lists (may change when the snapshot list is refreshed).
pub const TTL_LISTS: Duration = Duration::from_secs(1);

/// The errno for each vfs error. Exhaustive on purpose: a new error variant must be placed here.
pub fn errno(e: &VfsError) -> c_int {
    match e {
        VfsError::NotFound => libc::ENOENT,
        VfsError::NotADirectory => libc::ENOTDIR,
        VfsError::IsADirectory => libc::EISDIR,
        VfsError::InvalidKind => libc::EINVAL,
        VfsError::NoXattr => libc::ENODATA,
        VfsError::Range => libc::ERANGE,
        VfsError::ReadOnly => libc::EROFS,
        VfsError::Corrupt { .. } => libc::EIO,
        VfsError::Repo { .. } => libc::EIO,
    }
}

/// Logs a failed request and counts an `EIO` reply; returns the errno.
fn log_err(stats: &MountStats, op: &str, e: &VfsError) -> c_int {
    match e {
        VfsError::Corrupt { .. } | VfsError::Repo { .. } => log::error!("{op}: {e}"),
        _ => log::debug!("{op}: {e}"),
    }
    let n = errno(e);
    if n == libc::EIO {
        stats.eio();
    }
    n
}

fn system_time(ns: i64) -> SystemTime {
    if ns >= 0 {
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    } else {
        UNIX_EPOCH - Duration::from_nanos(ns.unsigned_abs())
    }
}

/// Linux `dev_t` (as stored) → the kernel's 32-bit `new_encode_dev` form that FUSE carries.
fn fuse_rdev(rdev: u64) -> u32 {
    let major = libc::major(rdev) as u32;
    let minor = libc::minor(rdev) as u32;
    (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::File => FileType::RegularFile,
        FileKind::Dir => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDev => FileType::CharDevice,
        FileKind::BlockDev => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
    }
}

/// fuser's attribute struct for a vfs attribute (atime = ctime = crtime = mtime).
pub fn file_attr(a: &Attr) -> FileAttr {
    let t = system_time(a.mtime_ns);
    FileAttr {
        ino: a.ino,
        size: a.size,
        blocks: a.blocks,
        atime: t,
        mtime: t,
        ctime: t,
        crtime: t,
        kind: file_type(a.kind),
        perm: a.perm as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: fuse_rdev(a.rdev),
        blksize: 128 * 1024,
        flags: 0,
    }
}

fn ttl(a: &Attr) -> Duration {
    if a.ino == STATS_INO || a.fleeting {
        // `.strata/stats`: every open looks it up again, and so gets a fresh rendering. A
        // forgotten snapshot: the kernel drops each entry at its last use.
        Duration::ZERO
    } else if a.immutable {
        TTL_CONTENT
    } else {
        TTL_LISTS
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// The fuser `Filesystem`.
pub struct StrataFs {
    vfs: Arc<Vfs>,
    jobs: crossbeam_channel::Sender<Job>,
    dirs: dirs::Handles,
    next_fh: AtomicU64,
    on_destroy: Option<crossbeam_channel::Sender<()>>,
    /// The kernel supports zero-message opens: answering a file `open` with `ENOSYS` makes it
    /// stop sending open and release for files (and keep their page cache, as FOPEN_KEEP_CACHE).
    no_open: bool,
    /// CPU keepers (see [`awake`]); `None` with `--no-busy-poll`.
    awake: Option<awake::Awake>,
    /// Directory readahead (see [`push`]); `None` with `--no-dir-readahead`.
    pusher: Option<Arc<push::Pusher>>,
    /// Other users may enter (`--allow-other`): the kernel must enforce stored POSIX ACLs as
    /// well as modes, so the mount announces ACL support or refuses to start serving.
    enforce_acls: bool,
    /// `.strata/stats` opened with a handle (a kernel that sends `open`): the content each
    /// handle reads, fixed for its life.
    stats_handles: StatsHandles,
}

type StatsHandles = Arc<Mutex<HashMap<u64, Arc<Vec<u8>>>>>;

fn lock_handles(h: &StatsHandles) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Vec<u8>>>> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

impl StrataFs {
    /// An adapter over `vfs` with `threads` workers; `on_destroy` is signalled when the session
    /// ends (e.g. after `fusermount3 -u`).
    pub fn new(
        vfs: Arc<Vfs>,
        threads: usize,
        busy_poll: bool,
        pusher: Option<Arc<push::Pusher>>,
        enforce_acls: bool,
        on_destroy: Option<crossbeam_channel::Sender<()>>,
    ) -> StrataFs {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("strata-fuse-{i}"))
                .spawn(move || {
                    for job in rx {
                        // A panic answers EIO for its request (fuser replies so for a reply
                        // dropped unsent) and keeps the worker: the pool never shrinks.
                        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                            log::error!("A FUSE request panicked; it was answered with EIO");
                        }
                    }
                })
                .expect("spawn worker thread");
        }
        StrataFs {
            vfs,
            jobs: tx,
            dirs: Arc::default(),
            next_fh: AtomicU64::new(1),
            on_destroy,
            no_open: false,
            awake: busy_poll.then(awake::Awake::start),
            pusher,
            enforce_acls,
            stats_handles: Arc::default(),
        }
    }

    /// Counts a request of `op` and starts its clock.
    fn begin(&self, op: Op) -> Timer {
        self.vfs.stats().request(op)
    }

    /// The request `t` was answered.
    fn end(&self, t: Timer) {
        self.vfs.stats().done(t)
    }

    /// Answers a write-type request of `op` (with `EROFS`), counted like any other.
    fn refuse(&self, op: Op, reply: impl FnOnce()) {
        let t = self.begin(op);
        reply();
        self.end(t);
    }

    /// Marks the mount busy (keeps the CPUs from halting between requests; see [`awake`]).
    fn touch(&self) {
        if let Some(a) = &self.awake {
            a.touch();
        }
    }

    fn spawn(&self, job: impl FnOnce(&Vfs) + Send + 'static) {
        let vfs = self.vfs.clone();
        let job: Job = Box::new(move || job(&vfs));
        if let Err(e) = self.jobs.send(job) {
            // Workers gone (shutting down): run inline rather than drop the reply.
            (e.into_inner())();
        }
    }
}

impl Filesystem for StrataFs {
    fn init(&mut self, _req: &Request<'_>, config: &mut KernelConfig) -> Result<(), c_int> {
        // With FUSE_POSIX_ACL the kernel reads `system.posix_acl_access` (and `_default`) through
        // getxattr, which serves the stored values, and checks them as on any filesystem (it
        // also turns on default_permissions). Without it, a user an ACL denies could read what
        // the mode bits allow: a kernel that lacks it gets no mount at all (fail closed).
        if self.enforce_acls && config.add_capabilities(FUSE_POSIX_ACL).is_err() {
            log::error!(
                "This kernel cannot enforce POSIX ACLs on a FUSE mount (no FUSE_POSIX_ACL, Linux \
                 4.9+); --allow-other refused: the mount answers every access with an error"
            );
            return Err(libc::EPROTONOSUPPORT);
        }
        // Every listing carries attributes (no FUSE_READDIRPLUS_AUTO): with the adaptive mode
        // the kernel asks plain readdir for the pages after the first, and `ls -l` then looks
        // each of their names up, one round trip apiece.
        for cap in [
            FUSE_DO_READDIRPLUS,
            FUSE_PARALLEL_DIROPS,
            FUSE_CACHE_SYMLINKS,
        ] {
            if let Err(missing) = config.add_capabilities(cap) {
                log::debug!("Kernel lacks FUSE capability bits {missing:#x}");
            }
        }
        // Opening a snapshot file needs no state (reads go by inode), so with kernel support the
        // open/release round trips are skipped for every file after the first (see `open`).
        self.no_open = config.add_capabilities(FUSE_NO_OPEN_SUPPORT).is_ok();
        // As much readahead as the kernel allows; enough background requests to keep workers busy.
        if let Err(max) = config.set_max_readahead(u32::MAX) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn destroy(&mut self) {
        if let Some(tx) = self.on_destroy.take() {
            let _ = tx.send(());
        }
    }

    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        self.touch();
        let t = self.begin(Op::Lookup);
        let name = name.as_bytes().to_vec();
        self.spawn(move |vfs| {
            match vfs.lookup_held(parent, &name) {
                Ok(a) => reply.entry(&ttl(&a), &file_attr(&a), 0),
                Err(VfsError::NotFound) => match vfs.getattr(parent) {
                    // Negative entry (node id 0) cached like content: absent names stay absent.
                    Ok(p) if p.immutable => {
                        let mut attr = file_attr(&p);
                        attr.ino = 0;
                        reply.entry(&TTL_CONTENT, &attr, 0)
                    }
                    _ => reply.error(libc::ENOENT),
                },
                Err(e) => reply.error(log_err(vfs.stats(), "lookup", &e)),
            }
            vfs.stats().done(t);
        });
    }

    fn forget(&mut self, _req: &Request<'_>, ino: u64, nlookup: u64) {
        self.vfs.forget(ino, nlookup);
    }

    fn batch_forget(&mut self, _req: &Request<'_>, nodes: &[fuser::fuse_forget_one]) {
        for n in nodes {
            self.vfs.forget(n.nodeid, n.nlookup);
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, fh: Option<u64>, reply: ReplyAttr) {
        self.touch();
        let t = self.begin(Op::Getattr);
        match self.vfs.getattr(ino) {
            Ok(mut a) => {
                // `fstat` of an open `.strata/stats`: the size of what that handle reads.
                if let Some(d) = fh
                    .filter(|_| ino == STATS_INO)
                    .and_then(|fh| lock_handles(&self.stats_handles).get(&fh).cloned())
                {
                    a.size = d.len() as u64;
                    a.blocks = a.size.div_ceil(512);
                }
                reply.attr(&ttl(&a), &file_attr(&a))
            }
            Err(e) => reply.error(log_err(self.vfs.stats(), "getattr", &e)),
        }
        self.end(t);
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        self.touch();
        let t = self.begin(Op::Readlink);
        match self.vfs.readlink(ino) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(log_err(self.vfs.stats(), "readlink", &e)),
        }
        self.end(t);
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        self.touch();
        let t = self.begin(Op::Open);
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY
            || flags & (libc::O_TRUNC | libc::O_APPEND | libc::O_CREAT) != 0;
        match self.vfs.open_file(ino, write) {
            // The handle keeps the content the lookup before this open rendered (the size the
            // opener was told); direct I/O keeps it out of the page cache.
            Ok(()) if ino == STATS_INO => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                let data = self.vfs.stats_content().data;
                lock_handles(&self.stats_handles).insert(fh, data);
                reply.opened(fh, FOPEN_DIRECT_IO)
            }
            // ENOSYS to a valid open means "no open needed" to a kernel with zero-message opens;
            // from then on it opens files itself (write opens fail on the `ro` mount: EROFS).
            Ok(()) if self.no_open => reply.error(libc::ENOSYS),
            Ok(()) => reply.opened(0, FOPEN_KEEP_CACHE),
            Err(e) => reply.error(log_err(self.vfs.stats(), "open", &e)),
        }
        self.end(t);
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let t = self.begin(Op::Release);
        if ino == STATS_INO {
            lock_handles(&self.stats_handles).remove(&fh);
        }
        reply.ok();
        self.end(t);
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        // A large read is readahead of a streaming reader: busy enough to keep its CPU awake,
        // and CPU-bound, so that spinning keepers would only take cycles from it.
        if (size as usize) < crate::vfs::STREAM_REQUEST {
            self.touch();
        }
        let t = self.begin(Op::Read);
        if offset < 0 {
            reply.error(libc::EINVAL);
            self.end(t);
            return;
        }
        if ino == STATS_INO {
            if let Some(d) = lock_handles(&self.stats_handles).get(&fh).cloned() {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(d.len());
                let end = start.saturating_add(size as usize).min(d.len());
                reply.data(&d[start..end]);
                self.vfs.stats().served(end - start);
                self.end(t);
                return;
            }
        }
        let pusher = if offset == 0 {
            self.pusher.clone()
        } else {
            None
        };
        self.spawn(move |vfs| {
            // The reply is written from inside the vfs call: straight from the cached chunk
            // (or a reused per-thread buffer), without building a new Vec per request.
            let mut reply = Some(reply);
            let res = vfs.read_with(ino, offset as u64, size, |data| {
                if let Some(r) = reply.take() {
                    r.data(data);
                    vfs.stats().served(data.len());
                }
            });
            if let (Err(e), Some(r)) = (res, reply) {
                r.error(log_err(vfs.stats(), "read", &e))
            }
            vfs.stats().done(t);
            if let Some(p) = pusher {
                p.after_read(vfs, ino);
            }
        });
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        self.touch();
        let t = self.begin(Op::Opendir);
        // The listing is built on the first readdir, not here: when the kernel serves a cached
        // directory (FOPEN_CACHE_DIR) it never asks, and the work is skipped.
        match self.vfs.getattr(ino) {
            Ok(a) if a.kind == FileKind::Dir => {
                let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
                let flags = if a.immutable {
                    FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR
                } else {
                    0
                };
                match dirs::open(&self.vfs, &self.dirs, ino, fh) {
                    Ok(()) => reply.opened(fh, flags),
                    Err(e) => reply.error(log_err(self.vfs.stats(), "opendir", &e)),
                }
            }
            Ok(_) => reply.error(libc::ENOTDIR),
            Err(e) => reply.error(log_err(self.vfs.stats(), "opendir", &e)),
        }
        self.end(t);
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        self.touch();
        let t = self.begin(Op::Readdir);
        let dirs = self.dirs.clone();
        self.spawn(move |vfs| {
            match dirs::fill(vfs, &dirs, ino, fh, offset.max(0) as u64, &mut reply) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(log_err(vfs.stats(), "readdir", &e)),
            }
            vfs.stats().done(t);
        });
    }

    fn readdirplus(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.touch();
        let t = self.begin(Op::Readdirplus);
        let dirs = self.dirs.clone();
        self.spawn(move |vfs| {
            match dirs::fill_plus(vfs, &dirs, ino, fh, offset.max(0) as u64, &mut reply) {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(log_err(vfs.stats(), "readdirplus", &e)),
            }
            vfs.stats().done(t);
        });
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        let t = self.begin(Op::Releasedir);
        dirs::release(&self.dirs, fh);
        reply.ok();
        self.end(t);
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        let t = self.begin(Op::Statfs);
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
        self.end(t);
    }

    fn getxattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        name: &OsStr,
        size: u32,
        reply: ReplyXattr,
    ) {
        self.touch();
        let t = self.begin(Op::Getxattr);
        let r = self
            .vfs
            .getxattr(ino, name.as_bytes())
            .and_then(|v| crate::vfs::xattr_reply(v, size));
        reply_xattr(self.vfs.stats(), r, reply);
        self.end(t);
    }

    fn listxattr(&mut self, _req: &Request<'_>, ino: u64, size: u32, reply: ReplyXattr) {
        self.touch();
        let t = self.begin(Op::Listxattr);
        let r = self
            .vfs
            .listxattr(ino)
            .and_then(|v| crate::vfs::xattr_reply(v, size));
        reply_xattr(self.vfs.stats(), r, reply);
        self.end(t);
    }

    fn access(&mut self, _req: &Request<'_>, ino: u64, mask: i32, reply: ReplyEmpty) {
        self.touch();
        let t = self.begin(Op::Access);
        match self.vfs.getattr(ino) {
            Ok(_) if mask & libc::W_OK != 0 => reply.error(libc::EROFS),
            Ok(_) => reply.ok(),
            Err(e) => reply.error(log_err(self.vfs.stats(), "access", &e)),
        }
        self.end(t);
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lo: u64, reply: ReplyEmpty) {
        let t = self.begin(Op::Flush);
        // Nothing to flush on a read-only mount; ENOSYS tells the kernel to stop sending flush on
        // every close (it then treats flush as done).
        reply.error(libc::ENOSYS);
        self.end(t);
    }

    fn fsync(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _ds: bool, reply: ReplyEmpty) {
        let t = self.begin(Op::Fsync);
        reply.ok();
        self.end(t);
    }

    // ----- every write-type operation: EROFS -----

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        self.refuse(Op::Setattr, || reply.error(libc::EROFS));
    }

    fn mknod(
        &mut self,
        _req: &Request<'_>,
        _parent: u64,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        self.refuse(Op::Mknod, || reply.error(libc::EROFS));
    }

    fn mkdir(
        &mut self,
        _req: &Request<'_>,
        _parent: u64,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        self.refuse(Op::Mkdir, || reply.error(libc::EROFS));
    }

    fn unlink(&mut self, _req: &Request<'_>, _parent: u64, _name: &OsStr, reply: ReplyEmpty) {
        self.refuse(Op::Unlink, || reply.error(libc::EROFS));
    }

    fn rmdir(&mut self, _req: &Request<'_>, _parent: u64, _name: &OsStr, reply: ReplyEmpty) {
        self.refuse(Op::Rmdir, || reply.error(libc::EROFS));
    }

    fn symlink(
        &mut self,
        _req: &Request<'_>,
        _parent: u64,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        self.refuse(Op::Symlink, || reply.error(libc::EROFS));
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        _parent: u64,
        _name: &OsStr,
        _newparent: u64,
        _newname: &OsStr,
        _flags: u32,
        reply: ReplyEmpty,
    ) {
        self.refuse(Op::Rename, || reply.error(libc::EROFS));
    }

    fn link(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _newparent: u64,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.refuse(Op::Link, || reply.error(libc::EROFS));
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _offset: i64,
        _data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        self.refuse(Op::Write, || reply.error(libc::EROFS));
    }

    fn create(
        &mut self,
        _req: &Request<'_>,
        _parent: u64,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        self.refuse(Op::Create, || reply.error(libc::EROFS));
    }

    fn setxattr(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        self.refuse(Op::Setxattr, || reply.error(libc::EROFS));
    }

    fn removexattr(&mut self, _req: &Request<'_>, _ino: u64, _name: &OsStr, reply: ReplyEmpty) {
        self.refuse(Op::Removexattr, || reply.error(libc::EROFS));
    }

    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        _fh: u64,
        _offset: i64,
        _length: i64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        self.refuse(Op::Fallocate, || reply.error(libc::EROFS));
    }

    fn copy_file_range(
        &mut self,
        _req: &Request<'_>,
        _ino_in: u64,
        _fh_in: u64,
        _offset_in: i64,
        _ino_out: u64,
        _fh_out: u64,
        _offset_out: i64,
        _len: u64,
        _flags: u32,
        reply: ReplyWrite,
    ) {
        self.refuse(Op::CopyFileRange, || reply.error(libc::EROFS));
    }
}

fn reply_xattr(stats: &MountStats, r: Result<XattrReply, VfsError>, reply: ReplyXattr) {
    match r {
        Ok(XattrReply::Size(n)) => reply.size(n),
        Ok(XattrReply::Data(d)) => reply.data(&d),
        Err(e) => reply.error(log_err(stats, "xattr", &e)),
    }
}

#[cfg(test)]
mod tests;
