//! Looking up a streaming reader's chunks ahead of it.
//!
//! A chunk's pack location comes from the index, whose entries are keyed by chunk id: the chunks
//! of one file are spread over the whole index, and on a cold read nearly every lookup waits for
//! one of sled's pages to come from disk. Measured on the benchmark VM, reading the 1 GiB file
//! cold through the mount ran at 700–763 MB/s with those waits in the workers, and at 881–911
//! MB/s with the index's files already in the page cache: the workers sat blocked on index reads
//! for a fifth of the time.
//!
//! So once a reader streams (see `Vfs::after_read`), the chunks of the next stretch of the file
//! are handed to a few lookup threads, which wait for the index in parallel with each other and
//! with the workers, remember the locations ([`Locations`]) and ask the pack bytes into the page
//! cache. A worker reaching those chunks finds their locations in memory.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use super::cache::Current;
use super::lock;
use crate::id::{ChunkId, PackId};
use crate::repo::keys::Location;
use crate::repo::pack::RECORD_HEADER_LEN;
use crate::repo::Repo;

/// Locations remembered: a slot each, 72 bytes, so 2.25 MiB, covering 8 GiB of streaming with
/// 256 KiB chunks.
const SLOTS: usize = 32 << 10;
/// Lookup threads: index reads that wait for the disk in parallel.
const THREADS: usize = 4;
/// Jobs waiting at most; a reader further ahead than that gets no more lookups until they drain.
const QUEUE: usize = 64;
/// A window is split among the threads in parts of at least this many chunks.
const MIN_PART: usize = 4;

/// Chunk locations looked up ahead of streaming readers: a direct-mapped table (chunk ids are
/// uniformly distributed hashes), where a newer location takes an older one's slot. It is one
/// allocation, made when the first location arrives and fixed in size from then on, with no
/// per-entry allocation or recency list to maintain on the read path; a reader is at most a
/// few hundred chunks behind the lookups, so collisions within that distance are rare. A
/// location missing here (never looked up, or its slot taken) is simply looked up in the index.
#[derive(Default)]
pub struct Locations {
    slots: Mutex<Vec<Option<(ChunkId, Location)>>>,
}

fn slot(id: &ChunkId) -> usize {
    (u64::from_le_bytes(id.0[..8].try_into().expect("8 bytes")) % SLOTS as u64) as usize
}

impl Locations {
    /// The location of `id` if it was looked up ahead.
    pub fn get(&self, id: &ChunkId) -> Option<Location> {
        match lock(&self.slots).get(slot(id)) {
            Some(Some((k, l))) if k == id => Some(*l),
            _ => None,
        }
    }

    /// Forgets every location (the index they came from was replaced).
    pub fn clear(&self) {
        lock(&self.slots).clear();
    }

    fn put(&self, id: ChunkId, loc: Location) {
        let mut slots = lock(&self.slots);
        if slots.is_empty() {
            slots.resize(SLOTS, None);
        }
        slots[slot(&id)] = Some((id, loc));
    }

    /// How many locations are remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        lock(&self.slots).iter().filter(|s| s.is_some()).count()
    }
}

/// The lookup threads of one mount; dropping this stops and joins them (so that nothing holds
/// the repository after the mount is gone).
pub struct Ahead {
    jobs: Option<crossbeam_channel::Sender<Vec<ChunkId>>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Ahead {
    /// Starts the lookup threads, remembering into `locations`.
    pub fn start(repo: Arc<Current>, locations: Arc<Locations>) -> Ahead {
        let (tx, rx) = crossbeam_channel::bounded::<Vec<ChunkId>>(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for i in 0..THREADS {
            let (rx, repo, locations) = (rx.clone(), repo.clone(), locations.clone());
            let stop = stop.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("strata-ahead-{i}"))
                .spawn(move || {
                    for ids in rx {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        look_up(&repo.get(), &locations, &ids);
                    }
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => log::warn!("No lookup thread: {e}"),
            }
        }
        Ahead {
            jobs: Some(tx),
            stop,
            threads,
        }
    }

    /// Looks up `ids` (the chunks of a stretch of a file, in file order) in the background and
    /// asks their pack bytes into the page cache. Advice only: dropped when the queue is full.
    pub fn request(&self, ids: Vec<ChunkId>) {
        let Some(jobs) = &self.jobs else { return };
        let part = ids.len().div_ceil(THREADS).max(MIN_PART);
        for p in ids.chunks(part) {
            if jobs.try_send(p.to_vec()).is_err() {
                log::debug!("Lookup queue full: {} chunks not looked up ahead", p.len());
                return;
            }
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.jobs.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// One job: look up what is not remembered yet, then advise the pack ranges of every chunk,
/// remembered or not (a file read again after the page cache let its packs go needs the advice
/// again), merging records that follow each other in a pack into one request.
fn look_up(repo: &Repo, locations: &Locations, ids: &[ChunkId]) {
    let packs = repo.packs();
    let mut run: Option<(PackId, u64, u64)> = None;
    for id in ids {
        let loc = match locations.get(id) {
            Some(l) => l,
            None => match repo.chunk_location(id) {
                Ok(l) => {
                    locations.put(*id, l);
                    l
                }
                Err(e) => {
                    // The worker reading the chunk will meet (and report) the same error.
                    log::debug!("Looking up chunk {id} ahead: {e}");
                    continue;
                }
            },
        };
        let len = RECORD_HEADER_LEN as u64 + loc.stored_len as u64;
        run = match run {
            Some((p, o, l)) if p == loc.pack && o + l == loc.offset => Some((p, o, l + len)),
            Some((p, o, l)) => {
                packs.will_need(p, o, l);
                Some((loc.pack, loc.offset, len))
            }
            None => Some((loc.pack, loc.offset, len)),
        };
    }
    if let Some((p, o, l)) = run {
        packs.will_need(p, o, l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn looks_up_in_the_background_and_lets_go_of_the_repository() {
        let (_t, repo, mut ids) = crate::testutil::repo_with_one_file(6 << 20, 3);
        assert!(ids.len() > MIN_PART, "{} chunks", ids.len());
        let unknown = ChunkId::of(b"not in the repository");
        ids.push(unknown);

        let locations = Arc::new(Locations::default());
        let ahead = Ahead::start(Arc::new(Current::new(repo.clone())), locations.clone());
        ahead.request(ids.clone());
        let deadline = Instant::now() + Duration::from_secs(20);
        while locations.len() < ids.len() - 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        for id in &ids[..ids.len() - 1] {
            assert_eq!(locations.get(id), Some(repo.chunk_location(id).unwrap()));
        }
        assert_eq!(
            locations.get(&unknown),
            None,
            "a failed lookup is not remembered"
        );

        drop(ahead);
        assert_eq!(
            Arc::strong_count(&repo),
            1,
            "the threads are gone with their handles"
        );
    }

    /// Pages of `path` in the page cache, and pages in all.
    fn resident(path: &std::path::Path) -> (usize, usize) {
        use std::os::unix::io::AsRawFd;
        let f = std::fs::File::open(path).unwrap();
        let len = f.metadata().unwrap().len() as usize;
        let pages = len.div_ceil(4096);
        let mut vec = vec![0u8; pages];
        // SAFETY: a read-only shared mapping of `len` bytes of an open file, unmapped below;
        // mincore writes one byte per page into `vec`, which has one byte per page.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            assert_eq!(libc::mincore(p, len, vec.as_mut_ptr()), 0);
            libc::munmap(p, len);
        }
        (vec.iter().filter(|b| *b & 1 == 1).count(), pages)
    }

    fn evict(path: &std::path::Path) {
        use std::os::unix::io::AsRawFd;
        let f = std::fs::File::open(path).unwrap();
        f.sync_all().unwrap();
        // SAFETY: advice on an open descriptor; it reads nothing from our memory.
        unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }

    /// A stretch read again (its chunks' locations already remembered, its pack pages gone from
    /// the page cache) is still asked into the page cache: the benchmark reads one file cold
    /// several times through one mount, and only the first read got the advice.
    #[test]
    fn remembered_chunks_are_still_advised() {
        let (t, repo, ids) = crate::testutil::repo_with_one_file(6 << 20, 9);
        let packs: Vec<std::path::PathBuf> = walk(&t.path().join("repo/packs"));
        let locations = Arc::new(Locations::default());
        let ahead = Ahead::start(Arc::new(Current::new(repo.clone())), locations.clone());
        for round in 0..2 {
            for p in &packs {
                evict(p);
            }
            let before: usize = packs.iter().map(|p| resident(p).0).sum();
            let all: usize = packs.iter().map(|p| resident(p).1).sum();
            if before * 2 > all {
                // The filesystem keeps everything in memory (tmpfs): nothing to observe.
                return;
            }
            ahead.request(ids.clone());
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut now = before;
            while now * 10 < all * 9 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
                now = packs.iter().map(|p| resident(p).0).sum();
            }
            assert!(
                now * 10 >= all * 9,
                "round {round}: {now} of {all} pages resident"
            );
        }
    }

    fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else if p.extension().is_some_and(|x| x == "pack") {
                out.push(p);
            }
        }
        out
    }
}
