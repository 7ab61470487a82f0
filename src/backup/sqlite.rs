//! Transaction-consistent copies of live SQLite databases. A database file read while its
//! application writes is torn (pages from before and after a transaction), and its committed
//! transactions may still sit in its `-wal` file. So a regular file that starts with SQLite's
//! header is copied through SQLite's online backup API — under SQLite's own locking, while
//! writers keep writing — into a private temporary directory, converted out of WAL mode (the
//! copy then opens with `immutable=1` and no `-wal`), and that copy is stored in the database's
//! place, with the original's metadata. Its `-wal`, `-shm` and `-journal` companions are not
//! stored: next to a consistent copy, a stale `-wal` would be replayed into it when restored.
//!
//! Change detection: a copy's entry records, in place of a ctime (which strata uses for nothing
//! but change detection), a stamp of the database's and its `-wal`'s metadata taken before the
//! copy began ([`stamp`]). A later backup skips the database while that stamp still matches,
//! since in WAL mode a commit moves only the `-wal`'s timestamps, not the database's.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::anomaly::NewData;
use super::pipeline::{Batcher, PackMsg};
use super::reader::{chunk_stream, FileJob};
use super::Shared;
use crate::chunker::{ChunkError, Chunker};
use crate::entry::{Entry, Kind};
use crate::error::{Error, Result};
use crate::fsmeta::{self, entry_from_meta};
use crate::layers::join;

/// The first 16 bytes of every SQLite 3 database file.
pub(super) const HEADER: &[u8; 16] = b"SQLite format 3\0";

/// The files SQLite keeps next to a database `X`: `X-journal` (rollback journal), `X-shm` and
/// `X-wal` (write-ahead log), in the byte order a directory listing is sorted in.
pub(super) const COMPANIONS: [&[u8]; 3] = [b"-journal", b"-shm", b"-wal"];

/// How long a copy waits for a lock on the source (a writer in rollback-journal mode holds its
/// exclusive lock while it commits) before the database is read as a plain file instead.
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Which databases may be copied: all but those `--no-sqlite-copy` names.
pub(super) struct Policy {
    off: globset::GlobSet,
}

impl Policy {
    /// `patterns` are `--no-sqlite-copy` globs, matched as `--exclude` matches.
    pub(super) fn new(patterns: &[String]) -> Result<Policy> {
        Ok(Policy {
            off: super::build_excludes(patterns).map_err(|e| match e {
                Error::InvalidArgument(m) => {
                    Error::InvalidArgument(m.replace("--exclude", "--no-sqlite-copy"))
                }
                other => other,
            })?,
        })
    }

    /// Whether the file at `rel` (relative to the source root) may be copied: neither its path,
    /// its name, nor any directory above it (by path or name) matches a `--no-sqlite-copy` glob,
    /// just as an excluded directory excludes everything under it.
    pub(super) fn allows(&self, rel: &[u8]) -> bool {
        if self.off.is_empty() {
            return true;
        }
        let mut start = 0;
        for (i, _) in rel.iter().enumerate().filter(|(_, b)| **b == b'/') {
            if super::is_excluded(&self.off, &rel[..i], &rel[start..i]) {
                return false;
            }
            start = i + 1;
        }
        !super::is_excluded(&self.off, rel, &rel[start..])
    }
}

/// The path of `db`'s companion with `suffix` (one of [`COMPANIONS`]).
pub(super) fn companion(db: &Path, suffix: &[u8]) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(std::ffi::OsStr::from_bytes(suffix));
    PathBuf::from(p)
}

/// The `-wal` file next to `db` as lstat sees it, if there is one.
pub(super) fn wal_state(db: &Path) -> Option<Entry> {
    fs::symlink_metadata(companion(db, b"-wal"))
        .ok()
        .map(|m| entry_from_meta(&m))
}

/// The change-detection stamp of a database whose lstat is `db` and whose `-wal` is `wal`:
/// what a copy's entry stores as its ctime. Any commit moves the database's ctime or size, or
/// the `-wal`'s size, mtime or inode, and so the stamp. Not the `-wal`'s ctime: SQLite running
/// as root chowns the `-wal` to the database's owner each time it opens it, readers (and these
/// copies) included, which moves its ctime without a change.
pub(super) fn stamp(db: &Entry, wal: Option<&Entry>) -> i64 {
    let mut h = blake3::Hasher::new();
    h.update(b"strata sqlite copy stamp 1");
    h.update(&db.ctime_ns.to_le_bytes());
    h.update(&db.size.to_le_bytes());
    match wal {
        Some(w) => {
            h.update(&[1]);
            for v in [w.size, w.mtime_ns as u64, w.ino] {
                h.update(&v.to_le_bytes());
            }
        }
        None => {
            h.update(&[0]);
        }
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&h.finalize().as_bytes()[..8]);
    i64::from_le_bytes(b)
}

/// Whether a database stored as a copy (`old`) need not be copied again: its lstat `new` keeps
/// the mtime, inode, owner and mode, and its stamp (with the `-wal` next to `path`) is the one
/// the copy recorded. Sizes are not compared directly: the copy's size is its own.
pub(super) fn copy_unchanged(old: &Entry, new: &Entry, path: &Path) -> bool {
    old.kind == Kind::File
        && new.kind == Kind::File
        && old.mtime_ns == new.mtime_ns
        && old.ino == new.ino
        && old.mode == new.mode
        && old.uid == new.uid
        && old.gid == new.gid
        && old.nlink == new.nlink
        && old.ctime_ns == stamp(new, wal_state(path).as_ref())
}

/// A reader that fails with [`StartsWithHeader`] when what it passes on begins with SQLite's
/// header (when `active`): the backup's reader learns that a file is a database from the data it
/// reads anyway, without another open or read of every file. It then closes the file before any
/// SQLite connection opens it: closing a descriptor drops every POSIX lock this process holds on
/// the file, SQLite's included.
pub(super) struct Sniff<R> {
    inner: R,
    head: Vec<u8>,
    active: bool,
}

impl<R: Read> Sniff<R> {
    pub(super) fn new(inner: R, active: bool) -> Sniff<R> {
        Sniff {
            inner,
            head: Vec::new(),
            active,
        }
    }
}

impl<R: Read> Read for Sniff<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if self.active {
            let want = HEADER.len() - self.head.len();
            self.head.extend_from_slice(&buf[..n.min(want)]);
            if self.head.len() == HEADER.len() || n == 0 {
                self.active = false;
                if self.head == HEADER {
                    return Err(std::io::Error::other(StartsWithHeader));
                }
            }
        }
        Ok(n)
    }
}

/// What [`Sniff`] fails with.
#[derive(Debug)]
pub(super) struct StartsWithHeader;

impl std::fmt::Display for StartsWithHeader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a SQLite database")
    }
}

impl std::error::Error for StartsWithHeader {}

/// Whether `e` is [`Sniff`]'s finding.
pub(super) fn is_header(e: &std::io::Error) -> bool {
    e.get_ref()
        .is_some_and(|inner| inner.downcast_ref::<StartsWithHeader>().is_some())
}

/// Makes the copies, one at a time, in a private temporary directory (mode 0700 in `TMPDIR`, by
/// default `/tmp`), made when the first database is found. When `TMPDIR` lies inside the tree
/// backed up, it is made at once instead, so that the walk knows to skip it. Copies are
/// serialized so that the temporary space needed is that of the largest database.
pub(super) struct Copier {
    dir: OnceLock<std::result::Result<tempfile::TempDir, String>>,
    turn: Mutex<()>,
    next: AtomicU64,
    lock_wait: Duration,
}

/// A finished copy, removed (with any file SQLite left beside it) when dropped.
pub(super) struct Copy {
    pub(super) path: PathBuf,
    pub(super) size: u64,
}

impl Drop for Copy {
    fn drop(&mut self) {
        remove_with_companions(&self.path);
    }
}

fn remove_with_companions(path: &Path) {
    let _ = fs::remove_file(path);
    for suffix in COMPANIONS {
        let _ = fs::remove_file(companion(path, suffix));
    }
}

impl Copier {
    /// A copier for a backup of `source` (absolute, symlinks resolved).
    pub(super) fn new(source: &Path) -> Copier {
        let c = Copier {
            dir: OnceLock::new(),
            turn: Mutex::new(()),
            next: AtomicU64::new(0),
            lock_wait: lock_wait(),
        };
        let tmp = std::env::temp_dir();
        if fs::canonicalize(&tmp).is_ok_and(|t| t.starts_with(source)) {
            let _ = c.dir();
        }
        c
    }

    /// The temporary directory, made on first use.
    fn dir(&self) -> std::result::Result<&Path, String> {
        let made = self.dir.get_or_init(|| {
            tempfile::Builder::new()
                .prefix("strata-sqlite-")
                .permissions(fs::Permissions::from_mode(0o700))
                .tempdir()
                .map_err(|e| format!("no temporary directory for its copy: {e}"))
        });
        match made {
            Ok(d) => Ok(d.path()),
            Err(e) => Err(e.clone()),
        }
    }

    /// (device, inode) of the temporary directory if it exists yet, which a backup of a tree
    /// holding it skips.
    pub(super) fn dir_id(&self) -> Option<(u64, u64)> {
        let dir = self.dir.get()?.as_ref().ok()?;
        fs::metadata(dir.path()).ok().map(|m| (m.dev(), m.ino()))
    }

    /// Waits for the copier: held from the stamp before a copy until the copy is stored.
    pub(super) fn turn(&self) -> MutexGuard<'_, ()> {
        self.turn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Copies the database at `src` with SQLite's online backup API (one step, so the copy is
    /// one read transaction: every transaction committed before it began, none half) and
    /// converts the copy to rollback-journal mode. Returns why not when it cannot.
    pub(super) fn copy(&self, src: &Path) -> std::result::Result<Copy, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let mut copy = Copy {
            path: self.dir()?.join(format!("copy-{n}.sqlite")),
            size: 0,
        };
        copy_into(src, &copy.path, self.lock_wait)?;
        copy.size = check_copy(&copy.path)?;
        Ok(copy)
    }
}

/// [`LOCK_WAIT`]; tests shorten it with `STRATA_TEST_SQLITE_LOCK_WAIT_MS` (test-hooks builds).
fn lock_wait() -> Duration {
    #[cfg(feature = "test-hooks")]
    if let Some(ms) = std::env::var("STRATA_TEST_SQLITE_LOCK_WAIT_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Duration::from_millis(ms);
    }
    LOCK_WAIT
}

fn copy_into(src: &Path, dst: &Path, lock_wait: Duration) -> std::result::Result<(), String> {
    let locked = format!("it stayed locked for {} s", lock_wait.as_secs_f64());
    let sql = |e: rusqlite::Error| match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            locked.clone()
        }
        _ => e.to_string(),
    };
    // The source's header is read inside the copy's read transaction, through a descriptor
    // opened first so that it is closed last, after the connection, on every path: closing a
    // descriptor of the file drops every lock this process holds on it, SQLite's included.
    let raw = File::open(src).map_err(|e| format!("reading its header: {e}"))?;
    // Read-write when the file allows it (SQLite falls back to read-only otherwise), like any
    // client of the database: a read-only connection cannot always open a WAL database.
    let source = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    source.busy_timeout(lock_wait).map_err(sql)?;
    // One read transaction, opened here, which the backup step then uses.
    source
        .execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")
        .map_err(sql)?;
    let mut header = [0u8; 100];
    raw.read_exact_at(&mut header, 0)
        .map_err(|e| format!("reading its header: {e}"))?;
    let mut dest = Connection::open(dst).map_err(sql)?;
    // The copy is a temporary file read once: it is never flushed to disk.
    dest.execute_batch("PRAGMA synchronous=OFF;").map_err(sql)?;
    {
        let backup = Backup::new(&source, &mut dest).map_err(sql)?;
        let deadline = Instant::now() + lock_wait;
        loop {
            match backup.step(-1).map_err(sql)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                StepResult::Busy | StepResult::Locked => return Err(locked),
                _ => {}
            }
        }
    }
    source.execute_batch("COMMIT").map_err(sql)?;
    source.close().map_err(|(_, e)| e.to_string())?;
    drop(raw);
    // The copy's header still says WAL when the source is in WAL mode; in rollback mode it
    // opens read-only and immutable without any file beside it.
    let mode: String = dest
        .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get(0))
        .map_err(sql)?;
    if !mode.eq_ignore_ascii_case("delete") {
        return Err(format!("its copy stayed in journal mode {mode}"));
    }
    dest.close().map_err(|(_, e)| e.to_string())?;
    if header[18] == 1 && header[19] == 1 {
        keep_source_counters(dst, &header).map_err(|e| format!("writing its copy: {e}"))?;
    }
    Ok(())
}

/// Gives the copy of a rollback-journal database the source's change counter, schema cookie,
/// "version valid for" number and SQLite version number (header bytes 24..28, 40..44 and
/// 92..100), which the copy's own commit set: the copy is then the source byte for byte
/// whenever nobody wrote to it, and stores and compares as such. These fields only tell
/// connections whether their caches are current; a new connection reads them afresh.
fn keep_source_counters(dst: &Path, header: &[u8; 100]) -> std::io::Result<()> {
    let f = OpenOptions::new().write(true).open(dst)?;
    for (start, end) in [(24, 28), (40, 44), (92, 100)] {
        f.write_all_at(&header[start..end], start as u64)?;
    }
    Ok(())
}

/// Checks that the finished copy is a rollback-journal database with nothing beside it; returns
/// its size.
fn check_copy(path: &Path) -> std::result::Result<u64, String> {
    let mut head = [0u8; 20];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map_err(|e| format!("reading its copy: {e}"))?;
    if &head[..16] != HEADER || head[18] != 1 || head[19] != 1 {
        return Err("its copy is not a rollback-journal database".into());
    }
    if companion(path, b"-wal").exists() {
        return Err("its copy kept a -wal file".into());
    }
    fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| format!("reading its copy: {e}"))
}

/// Copies the database `job` names (its reader found SQLite's header) and stores the copy's
/// content; returns the entry to store in its place, or `None` when it cannot be copied (then a
/// warning names it, unless it is no regular file any more, and the caller reads it as a file).
pub(super) fn store_copy(
    shared: &Shared,
    pack: &mut Batcher<PackMsg>,
    chunker: &mut Chunker,
    job: &FileJob,
) -> Result<Option<Entry>> {
    let fallback = |why: &str| {
        shared.warn(format!(
            "SQLite database {} was not copied with SQLite's backup API ({why}); stored as read \
             from the file, which is inconsistent if it was written meanwhile",
            job.path.display()
        ));
        Ok(None)
    };
    let Some(copier) = &shared.sqlite else {
        return Ok(None);
    };
    let _turn = copier.turn();
    // The stamp is taken before the copy begins: whatever is committed after it moves the
    // stamp, so the next backup copies again.
    let started_ns = crate::time::clock_ns();
    let Ok(meta) = fs::symlink_metadata(&job.path) else {
        return Ok(None);
    };
    let db = entry_from_meta(&meta);
    if db.kind != Kind::File || db.nlink != 1 {
        return Ok(None);
    }
    let wal = wal_state(&job.path);
    let racy = fsmeta::racy(&db, started_ns)
        || wal
            .as_ref()
            .is_some_and(|w| w.mtime_ns + fsmeta::racy_window_ns(w) > started_ns);
    let copy = match copier.copy(&job.path) {
        Ok(c) => c,
        Err(why) => return fallback(&why),
    };
    let file = match File::open(&copy.path) {
        Ok(f) => f,
        Err(e) => return fallback(&format!("reading its copy: {e}")),
    };
    let mut chunks = Vec::new();
    let mut new = NewData::default();
    match chunk_stream(shared, pack, chunker, &file, 0, &mut chunks, &mut new) {
        Ok(n) => shared
            .counters
            .read_bytes
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed),
        Err(ChunkError::Read(e)) => return fallback(&format!("reading its copy: {e}")),
        Err(ChunkError::Sink(e)) => return Err(e),
    };
    let mut e = job.entry.clone();
    e.size = copy.size;
    e.mtime_ns = db.mtime_ns;
    e.mode = db.mode;
    e.uid = db.uid;
    e.gid = db.gid;
    e.ino = db.ino;
    e.nlink = db.nlink;
    let stamp = stamp(&db, wal.as_ref());
    // A commit in the same timestamp tick as the stamp might not move it: record a stamp no
    // database has, so the next backup copies again.
    e.ctime_ns = if racy { stamp.wrapping_add(1) } else { stamp };
    e.chunks = chunks;
    shared.counters.changes.file(job.was_file, &new);
    shared
        .sqlite_copies
        .lock()
        .unwrap()
        .push(join(&job.dir, &job.name));
    Ok(Some(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(db: &Path, script: &str) {
        let c = Connection::open(db).unwrap();
        c.execute_batch(script).unwrap();
    }

    #[test]
    fn policy_matches_paths_names_and_directories_above() {
        let p = Policy::new(&["cache".into(), "*.db".into(), "srv/app/x.sqlite".into()]).unwrap();
        assert!(p.allows(b"orders.sqlite"));
        assert!(!p.allows(b"a/b/c.db"));
        assert!(!p.allows(b"cache/orders.sqlite"));
        assert!(!p.allows(b"x/cache/y/orders.sqlite"));
        assert!(!p.allows(b"srv/app/x.sqlite"));
        assert!(p.allows(b"srv/app/y.sqlite"));
        assert!(Policy::new(&[]).unwrap().allows(b"anything"));
        assert!(!Policy::new(&["*".into()]).unwrap().allows(b"a/b"));
        let bad = Policy::new(&["[".into()]).err().unwrap().to_string();
        assert!(bad.contains("--no-sqlite-copy"), "{bad}");
    }

    #[test]
    fn stamp_moves_with_the_wal() {
        let mut db = Entry::whiteout();
        db.kind = Kind::File;
        db.ctime_ns = 5;
        db.size = 4096;
        let mut wal = db.clone();
        let a = stamp(&db, None);
        assert_ne!(a, stamp(&db, Some(&wal)));
        let b = stamp(&db, Some(&wal));
        wal.ctime_ns += 1;
        assert_eq!(
            b,
            stamp(&db, Some(&wal)),
            "a chown of the -wal is no change"
        );
        wal.mtime_ns += 1;
        assert_ne!(b, stamp(&db, Some(&wal)));
        db.size += 1;
        assert_ne!(a, stamp(&db, None));
    }

    #[test]
    fn copies_a_wal_database_into_rollback_mode_with_its_uncheckpointed_rows() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("orders.sqlite");
        // A connection that stays open keeps the WAL from being checkpointed on close.
        let writer = Connection::open(&db).unwrap();
        writer
            .execute_batch(
                "PRAGMA journal_mode=WAL; PRAGMA wal_autocheckpoint=0;
                 CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);",
            )
            .unwrap();
        assert!(companion(&db, b"-wal").metadata().unwrap().len() > 0);
        let copier = Copier::new(Path::new("/nonexistent"));
        let copy = copier.copy(&db).unwrap();
        assert_eq!(copy.size, fs::metadata(&copy.path).unwrap().len());
        let uri = format!("file:{}?immutable=1", copy.path.display());
        let c = Connection::open_with_flags(
            &uri,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap();
        let n: i64 = c
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 3);
        drop(c);
        let path = copy.path.clone();
        drop(copy);
        assert!(!path.exists(), "a copy is removed when dropped");
        drop(writer);
        let dir = copier.dir().unwrap().to_path_buf();
        let mode = fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "private");
        drop(copier);
        assert!(
            !dir.exists(),
            "the temporary directory goes with the copier"
        );
    }

    #[test]
    fn a_quiet_rollback_journal_database_is_copied_byte_for_byte() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("orders.sqlite");
        sql(
            &db,
            "PRAGMA page_size=1024; CREATE TABLE t(x, pad); CREATE INDEX tx ON t(x);
             CREATE TABLE u(y); DROP TABLE u;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 2000)
             INSERT INTO t SELECT i, randomblob(100) FROM n;
             DELETE FROM t WHERE x % 7 = 0;",
        );
        let before = fs::read(&db).unwrap();
        let copier = Copier::new(Path::new("/nonexistent"));
        let copy = copier.copy(&db).unwrap();
        assert_eq!(fs::read(&copy.path).unwrap(), before);
        assert_eq!(
            fs::read(&db).unwrap(),
            before,
            "the source is left as it was"
        );
        for suffix in COMPANIONS {
            assert!(!companion(&db, suffix).exists());
        }
    }

    #[test]
    fn a_locked_database_is_not_copied() {
        let d = tempfile::tempdir().unwrap();
        let db = d.path().join("orders.sqlite");
        sql(&db, "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
        let holder = Connection::open(&db).unwrap();
        holder.execute_batch("BEGIN EXCLUSIVE;").unwrap();
        let mut copier = Copier::new(Path::new("/nonexistent"));
        copier.lock_wait = Duration::from_millis(200);
        let err = copier.copy(&db).err().unwrap();
        assert_eq!(err, "it stayed locked for 0.2 s");
        holder.execute_batch("COMMIT;").unwrap();
        assert!(copier.copy(&db).is_ok());
    }

    #[test]
    fn the_temporary_directory_is_made_when_needed_or_when_the_source_holds_it() {
        let lazy = Copier::new(Path::new("/nonexistent"));
        assert!(lazy.dir_id().is_none(), "not made before the first copy");
        let tmp = fs::canonicalize(std::env::temp_dir()).unwrap();
        let eager = Copier::new(&tmp);
        let (dev, ino) = eager.dir_id().expect("made at once inside the source");
        let dir = eager.dir().unwrap();
        assert!(dir.starts_with(&tmp));
        let m = fs::metadata(dir).unwrap();
        assert_eq!((m.dev(), m.ino()), (dev, ino));
    }

    #[test]
    fn a_file_that_only_looks_like_a_database_is_not_copied() {
        let d = tempfile::tempdir().unwrap();
        let fake = d.path().join("fake.sqlite");
        let mut data = HEADER.to_vec();
        data.extend(std::iter::repeat_n(0xa5u8, 8192));
        fs::write(&fake, &data).unwrap();
        let err = Copier::new(Path::new("/nonexistent"))
            .copy(&fake)
            .err()
            .unwrap();
        assert!(!err.is_empty());
    }

    #[test]
    fn sniffing_finds_the_header_in_any_split_and_passes_everything_else() {
        let read_all = |data: &[u8], step: usize, active: bool| {
            let mut r = Sniff::new(std::io::BufReader::with_capacity(step, data), active);
            let mut out = Vec::new();
            r.read_to_end(&mut out).map(|_| out)
        };
        let mut db = HEADER.to_vec();
        db.extend_from_slice(b"page one");
        for step in [1, 3, 16, 4096] {
            assert!(is_header(&read_all(&db, step, true).err().unwrap()));
            assert_eq!(read_all(&db, step, false).unwrap(), db);
            let other = b"SQLite format 2\0 and more".to_vec();
            assert_eq!(read_all(&other, step, true).unwrap(), other);
            assert_eq!(read_all(b"SQLite", step, true).unwrap(), b"SQLite");
        }
        assert!(!is_header(&std::io::Error::other("other")));
    }
}
