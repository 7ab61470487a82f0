//! The readers of a backup: worker threads that read the files the walk found changed, cut them
//! into chunks, and send new chunks to the pack writer and entries to the layer writer. A file
//! that changes while it is read is read again; one that cannot be read is skipped with a warning.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use crossbeam_channel::{Receiver, Sender};

use super::anomaly::NewData;
use super::pipeline::{store_chunk, Batcher, LayerMsg, PackMsg, LAYER_BATCH};
use super::sqlite::{self, Sniff};
use super::walker::Deferred;
use super::Shared;
use crate::chunker::{ChunkError, Chunker};
use crate::entry::{ChunkRef, Entry};
use crate::error::{Error, IoContext, Result};
use crate::fsmeta::{self, entry_from_meta};
use crate::layers::join;

/// How often a file that changes while read is read again before it is stored as read.
const HOT_RETRIES: usize = 3;

/// A file the walk found changed: where it goes in the layer, where to read it, its entry as
/// walked, and whether the parent view has it (then a file that cannot be read leaves a whiteout).
pub(super) struct FileJob {
    pub(super) dir: Vec<u8>,
    pub(super) name: Vec<u8>,
    pub(super) path: PathBuf,
    pub(super) entry: Entry,
    pub(super) existed: bool,
    /// The parent view has a regular file at this path (for the anomaly check's counts).
    pub(super) was_file: bool,
    /// `Some` when the file may be a SQLite database to copy (see `sqlite`), with the
    /// companion files found beside it, which are stored only if it is not copied.
    pub(super) sqlite: Option<Vec<Companion>>,
}

/// A `-journal`, `-shm` or `-wal` file beside a possible database, and whether it is unchanged
/// since the parent snapshot (then, should it be stored, the parent's version stands).
pub(super) struct Companion {
    pub(super) job: FileJob,
    pub(super) unchanged: bool,
}

enum ReadOutcome {
    Done,
    Vanished,
    /// It starts with SQLite's header (only looked for when asked); nothing was stored.
    Database,
}

fn open_noatime(path: &Path) -> std::io::Result<File> {
    let open = |flags| {
        OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | flags)
            .open(path)
    };
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        r => r,
    }
}

/// How far ahead of the chunker a big file is asked into the page cache, and in what steps.
const PREFETCH_AHEAD: u64 = 32 << 20;
const PREFETCH_STEP: u64 = 8 << 20;

/// A file reader that keeps asking the kernel (`POSIX_FADV_WILLNEED`) for the next
/// [`PREFETCH_AHEAD`] bytes, so the disk keeps reading while the chunker hashes: a big file is
/// otherwise read by one thread whose reads wait for the disk, then its hashing for the CPU.
struct Prefetch<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
    advised: u64,
}

impl<'a> Prefetch<'a> {
    /// Reads `file` from `start` (where it must be positioned) to `end`. A range of at most one
    /// step is left to the kernel's own readahead: no extra call per small file.
    fn new(file: &'a File, start: u64, end: u64) -> Prefetch<'a> {
        let big = end - start > PREFETCH_STEP;
        Prefetch {
            file,
            pos: start,
            end,
            advised: if big { start } else { end },
        }
    }

    fn advise(&mut self) {
        while self.advised < self.end && self.advised < self.pos + PREFETCH_AHEAD {
            let len = PREFETCH_STEP.min(self.end - self.advised);
            crate::fsio::will_need(self.file, self.advised, len);
            self.advised += len;
        }
    }
}

impl Read for Prefetch<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.advise();
        let n = (&mut &*self.file).read(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Cuts everything `reader` yields into chunks placed from offset `start`, appends them to
/// `chunks`, sends the new ones to the pack writer and adds them to `new`; returns the bytes
/// read.
pub(super) fn chunk_stream(
    shared: &Shared,
    pack: &mut Batcher<PackMsg>,
    chunker: &mut Chunker,
    reader: impl Read,
    start: u64,
    chunks: &mut Vec<ChunkRef>,
    new: &mut NewData,
) -> std::result::Result<u64, ChunkError> {
    let mut read = 0u64;
    chunker.for_each(reader, |off, data| {
        let id = shared.repo.chunk_id(data);
        chunks.push(ChunkRef {
            id,
            offset: start + off,
            len: data.len() as u32,
        });
        read += data.len() as u64;
        if let Some(stored) = store_chunk(shared, pack, id, data)? {
            new.record(shared.level, data, stored);
        }
        Ok(())
    })?;
    Ok(read)
}

/// Reads one file into `job.entry.chunks`, retrying while it changes under us, and adds the new
/// data of every attempt to `new`; with `detect`, stops at a SQLite database's header instead.
fn read_file(
    shared: &Shared,
    pack: &mut Batcher<PackMsg>,
    chunker: &mut Chunker,
    job: &mut FileJob,
    detect: bool,
    new: &mut NewData,
) -> Result<ReadOutcome> {
    let mut waited_racy = false;
    let mut attempt = 0;
    loop {
        let started_ns = crate::time::clock_ns();
        let mut f = match open_noatime(&job.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ReadOutcome::Vanished),
            Err(e) => return Err(e).ctx("Opening", &job.path),
        };
        let before = f.metadata().ctx("Reading metadata of", &job.path)?;
        let mut chunks = Vec::new();
        let mut read = 0u64;
        for (start, end) in fsmeta::data_segments(&f, before.len()) {
            f.seek(SeekFrom::Start(start))
                .ctx("Seeking in", &job.path)?;
            let reader = Prefetch::new(&f, start, end).take(end - start);
            let reader = Sniff::new(reader, detect && start == 0);
            match chunk_stream(shared, pack, chunker, reader, start, &mut chunks, new) {
                Ok(n) => read += n,
                Err(ChunkError::Read(e)) if sqlite::is_header(&e) => {
                    return Ok(ReadOutcome::Database)
                }
                Err(ChunkError::Read(e)) => return Err(e).ctx("Reading", &job.path),
                Err(ChunkError::Sink(e)) => return Err(e),
            }
        }
        let after = f.metadata().ctx("Reading metadata of", &job.path)?;
        // ctime too: an in-place rewrite during the read that puts the mtime back moves it.
        let stable = before.len() == after.len()
            && before.mtime() == after.mtime()
            && before.mtime_nsec() == after.mtime_nsec()
            && before.ctime() == after.ctime()
            && before.ctime_nsec() == after.ctime_nsec()
            && read <= after.len();
        shared
            .counters
            .read_bytes
            .fetch_add(read, Ordering::Relaxed);
        let fresh = entry_from_meta(&before);
        let racy = fsmeta::racy(&fresh, started_ns);
        if stable && racy && !waited_racy {
            // A write in the same timestamp tick as the last change, after this read began,
            // would leave size, mtime and ctime as they are: wait the tick out and read again,
            // so what is stored is the content for this ctime.
            waited_racy = true;
            let wait_ns = (fresh.ctime_ns + fsmeta::racy_window_ns(&fresh))
                .saturating_sub(crate::time::clock_ns())
                .clamp(0, fsmeta::racy_window_ns(&fresh));
            std::thread::sleep(std::time::Duration::from_nanos(wait_ns as u64));
            log::debug!(
                "{} changed just before it was read; reading again",
                job.path.display()
            );
            continue;
        }
        if stable || attempt == HOT_RETRIES {
            if !stable {
                shared.warn(format!(
                    "File {} changed while it was read ({} attempts); stored as last read",
                    job.path.display(),
                    HOT_RETRIES + 1
                ));
            }
            let e = &mut job.entry;
            e.size = before.len();
            e.mtime_ns = fresh.mtime_ns;
            // Content that may not be the content of this ctime (read while the file changed,
            // or in its last timestamp tick) records a ctime no file has: the next backup reads
            // it again. ctime is used for nothing else.
            e.ctime_ns = if stable && !racy {
                fresh.ctime_ns
            } else {
                fresh.ctime_ns - 1
            };
            e.mode = fresh.mode;
            e.uid = fresh.uid;
            e.gid = fresh.gid;
            e.chunks = chunks;
            return Ok(ReadOutcome::Done);
        }
        attempt += 1;
        log::debug!("{} changed while read; reading again", job.path.display());
    }
}

pub(super) fn worker(
    shared: &Shared,
    jobs: Receiver<Vec<FileJob>>,
    pack_tx: Sender<Vec<PackMsg>>,
    layer_tx: Sender<Vec<LayerMsg>>,
) -> Result<()> {
    let mut chunker = Chunker::new();
    let mut pack = Batcher::new(pack_tx, 256, 2 << 20);
    let mut layer = Batcher::new(layer_tx, LAYER_BATCH, usize::MAX);
    let r = (|| {
        for batch in jobs {
            for job in batch {
                work_one(shared, &mut pack, &mut layer, &mut chunker, job)?;
            }
            // Entries may wait in a batch, chunks must not wait longer than their job batch: the
            // writer's dedup works on what it has received.
            pack.flush()?;
            layer.flush()?;
        }
        Ok(())
    })();
    // Payloads that will never reach the writer give their bytes back.
    shared
        .payloads
        .give(pack.buf.iter().map(PackMsg::payload_len).sum());
    r
}

/// Stores one changed file: a SQLite database as a consistent copy when it can be made (its
/// companions then stay out), anything else — or a database that cannot be copied, and then
/// its changed companions too — as read.
fn work_one(
    shared: &Shared,
    pack: &mut Batcher<PackMsg>,
    layer: &mut Batcher<LayerMsg>,
    chunker: &mut Chunker,
    mut job: FileJob,
) -> Result<()> {
    let companions = job.sqlite.take();
    let detect = companions.is_some();
    let companions = companions.unwrap_or_default();
    let Some(job) = read_one(shared, pack, layer, chunker, job, detect)? else {
        // Read as a file (or skipped): its companions are files like any other.
        for c in companions.into_iter().filter(|c| !c.unchanged) {
            read_one(shared, pack, layer, chunker, c.job, false)?;
        }
        return Ok(());
    };
    if let Some(entry) = sqlite::store_copy(shared, pack, chunker, &job)? {
        shared.counters.files_read.fetch_add(1, Ordering::Relaxed);
        shared.progress.0.file_read(entry.size);
        shared
            .counters
            .size_delta
            .fetch_add(entry.size as i64 - job.entry.size as i64, Ordering::Relaxed);
        push_entry(shared, layer, job.dir, job.name, entry)?;
        for c in companions {
            // Not in this snapshot: a stale -wal or -journal beside the copy would corrupt it.
            shared.counters.skipped(c.job.entry.size);
            if c.job.existed {
                shared
                    .counters
                    .reader_whiteouts
                    .fetch_add(1, Ordering::Relaxed);
                push_entry(shared, layer, c.job.dir, c.job.name, Entry::whiteout())?;
            }
        }
        return Ok(());
    }
    read_one(shared, pack, layer, chunker, job, false)?;
    for c in companions.into_iter().filter(|c| !c.unchanged) {
        read_one(shared, pack, layer, chunker, c.job, false)?;
    }
    Ok(())
}

fn push_entry(
    shared: &Shared,
    layer: &mut Batcher<LayerMsg>,
    dir: Vec<u8>,
    name: Vec<u8>,
    entry: Entry,
) -> Result<()> {
    shared
        .counters
        .layer_entries
        .fetch_add(1, Ordering::Relaxed);
    layer.push(LayerMsg { dir, name, entry }, 0)
}

/// Reads and stores one file as it is on disk; with `detect`, hands a SQLite database back
/// unread instead.
fn read_one(
    shared: &Shared,
    pack: &mut Batcher<PackMsg>,
    layer: &mut Batcher<LayerMsg>,
    chunker: &mut Chunker,
    mut job: FileJob,
    detect: bool,
) -> Result<Option<FileJob>> {
    let walked_size = job.entry.size;
    let mut new = NewData::default();
    let outcome = match read_file(shared, pack, chunker, &mut job, detect, &mut new) {
        Ok(o) => Some(o),
        Err(Error::Io {
            context,
            path,
            source,
        }) if !is_repo_path(shared, &path) => {
            shared.warn(format!("Skipped {}: {context}: {source}", path.display()));
            None
        }
        Err(e) => return Err(e),
    };
    let entry = match outcome {
        Some(ReadOutcome::Database) => return Ok(Some(job)),
        Some(ReadOutcome::Done) => {
            shared.counters.files_read.fetch_add(1, Ordering::Relaxed);
            shared.counters.changes.file(job.was_file, &new);
            shared.progress.0.file_read(job.entry.size);
            shared.counters.size_delta.fetch_add(
                job.entry.size as i64 - walked_size as i64,
                Ordering::Relaxed,
            );
            if job.entry.nlink > 1 {
                shared
                    .links
                    .lock()
                    .unwrap()
                    .insert(job.entry.ino, job.entry.clone());
            }
            job.entry
        }
        skipped => {
            if skipped.is_some() {
                shared.counters.files_read.fetch_add(1, Ordering::Relaxed);
                shared.progress.0.file_read(job.entry.size);
                if !job.existed {
                    shared.warn(format!(
                        "Skipped {}: vanished during backup",
                        job.path.display()
                    ));
                }
            }
            shared.counters.skipped(walked_size);
            if !job.existed {
                return Ok(None);
            }
            // Not in this snapshot: the parent's version must not show through as if current.
            shared
                .counters
                .reader_whiteouts
                .fetch_add(1, Ordering::Relaxed);
            Entry::whiteout()
        }
    };
    push_entry(shared, layer, job.dir, job.name, entry)?;
    Ok(None)
}

/// Stores the hard links after the first of their group with the content the first one got.
/// Called once the readers are done, so every first link that could be read has its entry.
pub(super) fn store_deferred_links(
    shared: &Shared,
    deferred: Vec<Deferred>,
    layer_tx: &Sender<Vec<LayerMsg>>,
) {
    let links = shared.links.lock().unwrap();
    for (dir, name, mut entry, existed) in deferred {
        match links.get(&entry.ino) {
            Some(first) => {
                shared
                    .counters
                    .size_delta
                    .fetch_add(first.size as i64 - entry.size as i64, Ordering::Relaxed);
                // One inode: the same content, and the same stat as read with it (a ctime
                // marked for rereading marks every link).
                entry.chunks = first.chunks.clone();
                entry.size = first.size;
                entry.mtime_ns = first.mtime_ns;
                entry.ctime_ns = first.ctime_ns;
                entry.mode = first.mode;
                entry.uid = first.uid;
                entry.gid = first.gid;
                shared.counters.changes.file(existed, &NewData::default());
                let _ = layer_tx.send(vec![LayerMsg { dir, name, entry }]);
            }
            None => {
                shared.warn(format!(
                    "Skipped hard link {}: its first link could not be read",
                    String::from_utf8_lossy(&join(&dir, &name))
                ));
                shared.counters.skipped(entry.size);
                if existed {
                    // The parent's version must not show through as if it were current.
                    shared
                        .counters
                        .reader_whiteouts
                        .fetch_add(1, Ordering::Relaxed);
                    let entry = Entry::whiteout();
                    let _ = layer_tx.send(vec![LayerMsg { dir, name, entry }]);
                }
            }
        }
    }
}

/// Errors on paths inside the repository are repository failures (disk full, ...), never skips.
fn is_repo_path(shared: &Shared, path: &Path) -> bool {
    path.starts_with(shared.repo.path())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn prefetching_reader_yields_exactly_the_file_and_advises_it_all() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("big");
        let data =
            crate::testutil::pseudo_random((PREFETCH_AHEAD + 3 * PREFETCH_STEP + 5) as usize, 3);
        fs::write(&p, &data).unwrap();
        let f = File::open(&p).unwrap();
        let start = 1000u64;
        let end = data.len() as u64 - 7;
        (&f).seek(SeekFrom::Start(start)).unwrap();
        let mut r = Prefetch::new(&f, start, end);
        assert_eq!(r.advised, start, "a big range is advised");
        let mut got = Vec::new();
        (&mut r).take(end - start).read_to_end(&mut got).unwrap();
        assert_eq!(got, &data[start as usize..end as usize]);
        assert_eq!(
            r.advised, end,
            "advice covered the whole range, and no further"
        );
        assert_eq!(r.pos, end);
    }
}
