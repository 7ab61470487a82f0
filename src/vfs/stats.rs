//! The mount's own counters, served as `.strata/stats` at the mount root (Prometheus text
//! format): requests and latency per FUSE operation, bytes served, EIO replies, directory
//! readahead, and the chunk cache's hits, misses and reads.
//!
//! The FUSE adapter records every request here ([`MountStats::request`], [`MountStats::done`]).
//! Recording is a few relaxed atomic additions and two clock reads per request: no lock, no
//! allocation, nothing shared but the counters themselves. Reading them is not a snapshot across
//! counters (a request may be counted in `requests_total` and not yet in its histogram); each
//! histogram's `_count` is the sum of its buckets, as the format requires.
//!
//! The file's content is rendered when the file is looked up (every `open` by path looks it up:
//! its entry is never cached) and stays fixed until the next lookup, so reads at any offset and
//! the size `stat` reports agree. A new content never has the length of the one before (a
//! blank line is added when it would), because the kernel drops a file's cached pages only when
//! its size changes: otherwise a reader could get the previous content from the page cache.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crate::metrics::families::{self as f, Def};
use crate::metrics::text::{render, Family, HistogramSeries, Labels, Sample};

/// The FUSE operations the adapter answers; `name()` is the `op` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Op {
    Lookup,
    Getattr,
    Readlink,
    Open,
    Read,
    Release,
    Opendir,
    Readdir,
    Readdirplus,
    Releasedir,
    Statfs,
    Getxattr,
    Listxattr,
    Access,
    Flush,
    Fsync,
    Setattr,
    Mknod,
    Mkdir,
    Unlink,
    Rmdir,
    Symlink,
    Rename,
    Link,
    Write,
    Create,
    Setxattr,
    Removexattr,
    Fallocate,
    CopyFileRange,
}

impl Op {
    /// Every operation, in the order the stats list them.
    pub const ALL: [Op; 30] = [
        Op::Lookup,
        Op::Getattr,
        Op::Readlink,
        Op::Open,
        Op::Read,
        Op::Release,
        Op::Opendir,
        Op::Readdir,
        Op::Readdirplus,
        Op::Releasedir,
        Op::Statfs,
        Op::Getxattr,
        Op::Listxattr,
        Op::Access,
        Op::Flush,
        Op::Fsync,
        Op::Setattr,
        Op::Mknod,
        Op::Mkdir,
        Op::Unlink,
        Op::Rmdir,
        Op::Symlink,
        Op::Rename,
        Op::Link,
        Op::Write,
        Op::Create,
        Op::Setxattr,
        Op::Removexattr,
        Op::Fallocate,
        Op::CopyFileRange,
    ];

    /// The `op` label: the FUSE operation's name.
    pub fn name(self) -> &'static str {
        match self {
            Op::Lookup => "lookup",
            Op::Getattr => "getattr",
            Op::Readlink => "readlink",
            Op::Open => "open",
            Op::Read => "read",
            Op::Release => "release",
            Op::Opendir => "opendir",
            Op::Readdir => "readdir",
            Op::Readdirplus => "readdirplus",
            Op::Releasedir => "releasedir",
            Op::Statfs => "statfs",
            Op::Getxattr => "getxattr",
            Op::Listxattr => "listxattr",
            Op::Access => "access",
            Op::Flush => "flush",
            Op::Fsync => "fsync",
            Op::Setattr => "setattr",
            Op::Mknod => "mknod",
            Op::Mkdir => "mkdir",
            Op::Unlink => "unlink",
            Op::Rmdir => "rmdir",
            Op::Symlink => "symlink",
            Op::Rename => "rename",
            Op::Link => "link",
            Op::Write => "write",
            Op::Create => "create",
            Op::Setxattr => "setxattr",
            Op::Removexattr => "removexattr",
            Op::Fallocate => "fallocate",
            Op::CopyFileRange => "copy_file_range",
        }
    }
}

const OPS: usize = Op::ALL.len();

/// Upper bounds of the latency buckets, in nanoseconds (10 µs to 10 s); one more bucket holds
/// everything above.
const BOUNDS_NS: [u64; 19] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];
const BUCKETS: usize = BOUNDS_NS.len() + 1;

/// One operation's counters.
#[derive(Default)]
struct OpStats {
    requests: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

/// A request being served: when it arrived, and which operation it is.
#[must_use = "hand it to MountStats::done once the request is answered"]
pub struct Timer {
    op: Op,
    start: Instant,
}

/// The counters the FUSE adapter records into.
pub struct MountStats {
    ops: [OpStats; OPS],
    read_bytes: AtomicU64,
    eio: AtomicU64,
    pushed_files: AtomicU64,
    pushed_bytes: AtomicU64,
    started_ns: i64,
}

impl Default for MountStats {
    fn default() -> Self {
        MountStats {
            ops: std::array::from_fn(|_| OpStats::default()),
            read_bytes: AtomicU64::new(0),
            eio: AtomicU64::new(0),
            pushed_files: AtomicU64::new(0),
            pushed_bytes: AtomicU64::new(0),
            started_ns: crate::time::clock_ns(),
        }
    }
}

impl MountStats {
    /// Counts a request of `op` as it arrives; [`MountStats::done`] records its latency.
    pub fn request(&self, op: Op) -> Timer {
        self.ops[op as usize]
            .requests
            .fetch_add(1, Ordering::Relaxed);
        Timer {
            op,
            start: Instant::now(),
        }
    }

    /// The request `t` was answered.
    pub fn done(&self, t: Timer) {
        let ns = t.start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        let s = &self.ops[t.op as usize];
        let i = BOUNDS_NS.partition_point(|&b| b < ns);
        s.buckets[i].fetch_add(1, Ordering::Relaxed);
        s.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// A read request returned `bytes`.
    pub fn served(&self, bytes: usize) {
        self.read_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// A request was answered `EIO`.
    pub fn eio(&self) {
        self.eio.fetch_add(1, Ordering::Relaxed);
    }

    /// Directory readahead handed a file of `bytes` to the kernel.
    pub fn pushed(&self, bytes: u64) {
        self.pushed_files.fetch_add(1, Ordering::Relaxed);
        self.pushed_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Requests of `op` so far.
    pub fn requests(&self, op: Op) -> u64 {
        self.ops[op as usize].requests.load(Ordering::Relaxed)
    }
}

/// What the stats file says besides the adapter's counters: the vfs's own figures.
pub(super) struct VfsFigures {
    pub(super) cache_hits: u64,
    pub(super) cache_misses: u64,
    pub(super) chunk_reads: u64,
    pub(super) chunk_read_bytes: u64,
    pub(super) cache_bytes: u64,
    pub(super) cache_limit: u64,
    pub(super) inodes: u64,
    pub(super) snapshots: u64,
}

fn family(d: &Def, samples: Vec<Sample>) -> Family {
    Family {
        name: d.name.into(),
        help: d.help.into(),
        kind: d.kind,
        samples,
    }
}

fn one(d: &Def, v: f64) -> Family {
    family(d, vec![Sample::new(d.name, &[], v)])
}

/// The text of `.strata/stats`.
pub(super) fn render_stats(s: &MountStats, v: &VfsFigures) -> Vec<u8> {
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
    let op_label = |op: Op| -> Labels { vec![("op".into(), op.name().into())] };
    let requests = Op::ALL
        .iter()
        .map(|&op| Sample {
            name: f::MOUNT_REQUESTS.name.into(),
            labels: op_label(op),
            value: load(&s.ops[op as usize].requests),
        })
        .collect();
    let bounds: Vec<f64> = BOUNDS_NS.iter().map(|&b| b as f64 / 1e9).collect();
    let mut latency = Vec::new();
    for op in Op::ALL {
        let o = &s.ops[op as usize];
        let counts: Vec<u64> = o
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        if counts.iter().all(|&c| c == 0) {
            continue;
        }
        latency.extend(
            HistogramSeries {
                labels: op_label(op),
                bounds: &bounds,
                counts,
                sum: load(&o.sum_ns) / 1e9,
            }
            .samples(f::MOUNT_LATENCY.name),
        );
    }
    let families = [
        family(&f::MOUNT_REQUESTS, requests),
        family(&f::MOUNT_LATENCY, latency),
        one(&f::MOUNT_READ_BYTES, load(&s.read_bytes)),
        one(&f::MOUNT_EIO, load(&s.eio)),
        one(&f::MOUNT_CACHE_HITS, v.cache_hits as f64),
        one(&f::MOUNT_CACHE_MISSES, v.cache_misses as f64),
        one(&f::MOUNT_CHUNK_READS, v.chunk_reads as f64),
        one(&f::MOUNT_CHUNK_READ_BYTES, v.chunk_read_bytes as f64),
        one(&f::MOUNT_CACHE_BYTES, v.cache_bytes as f64),
        one(&f::MOUNT_CACHE_LIMIT, v.cache_limit as f64),
        one(&f::MOUNT_PUSHED_FILES, load(&s.pushed_files)),
        one(&f::MOUNT_PUSHED_BYTES, load(&s.pushed_bytes)),
        one(&f::MOUNT_INODES, v.inodes as f64),
        one(&f::MOUNT_SNAPSHOTS, v.snapshots as f64),
        one(&f::MOUNT_START_TIME, s.started_ns as f64 / 1e9),
    ];
    render(&families).into_bytes()
}

/// One rendering of the stats file, fixed from a lookup to the next.
#[derive(Clone, Debug)]
pub struct StatsContent {
    /// The text.
    pub data: Arc<Vec<u8>>,
    /// When it was rendered (its mtime), ns since the epoch.
    pub time_ns: i64,
}

impl StatsContent {
    /// `data` rendered now, made one byte longer if it is as long as `previous` (see the module
    /// documentation: a size change is what makes the kernel drop the cached pages).
    pub(super) fn new(mut data: Vec<u8>, previous: Option<&StatsContent>) -> StatsContent {
        if previous.is_some_and(|p| p.data.len() == data.len()) {
            data.push(b'\n');
        }
        StatsContent {
            data: Arc::new(data),
            time_ns: crate::time::clock_ns(),
        }
    }
}

impl super::Vfs {
    /// The counters the FUSE adapter records into.
    pub fn stats(&self) -> &MountStats {
        &self.stats
    }

    /// The current content of `.strata/stats` (rendered now if it never was).
    pub fn stats_content(&self) -> StatsContent {
        if let Some(c) = super::lock(&self.stats_content).as_ref() {
            return c.clone();
        }
        self.refresh_stats()
    }

    /// Renders `.strata/stats` anew and makes it the current content.
    pub fn refresh_stats(&self) -> StatsContent {
        let (cache_hits, cache_misses, cache_bytes) = self.cache.stats();
        let (chunk_reads, chunk_read_bytes) = self.cache.reads();
        let figures = VfsFigures {
            cache_hits,
            cache_misses,
            chunk_reads,
            chunk_read_bytes,
            cache_bytes,
            cache_limit: self.cache.capacity(),
            inodes: self
                .inodes
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .nodes
                .len() as u64,
            snapshots: self.snapshot_count() as u64,
        };
        let data = render_stats(&self.stats, &figures);
        let mut current = super::lock(&self.stats_content);
        let c = StatsContent::new(data, current.as_ref());
        *current = Some(c.clone());
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_land_in_their_buckets() {
        let s = MountStats::default();
        for _ in 0..3 {
            let t = s.request(Op::Read);
            s.done(t);
        }
        let t = s.request(Op::Lookup);
        s.done(Timer {
            start: t.start - std::time::Duration::from_millis(30),
            ..t
        });
        s.served(4096);
        s.eio();
        assert_eq!(s.requests(Op::Read), 3);
        let v = VfsFigures {
            cache_hits: 1,
            cache_misses: 2,
            chunk_reads: 2,
            chunk_read_bytes: 100,
            cache_bytes: 50,
            cache_limit: 1 << 20,
            inodes: 10,
            snapshots: 2,
        };
        let text = String::from_utf8(render_stats(&s, &v)).unwrap();
        assert!(text.contains("strata_mount_requests_total{op=\"read\"} 3\n"));
        assert!(text.contains("strata_mount_requests_total{op=\"mkdir\"} 0\n"));
        assert!(text.contains("strata_mount_request_duration_seconds_count{op=\"read\"} 3\n"));
        assert!(text.contains(
            "strata_mount_request_duration_seconds_bucket{op=\"lookup\",le=\"0.025\"} 0\n"
        ));
        assert!(text.contains(
            "strata_mount_request_duration_seconds_bucket{op=\"lookup\",le=\"0.05\"} 1\n"
        ));
        assert!(
            !text.contains("duration_seconds_count{op=\"mkdir\"}"),
            "no histogram for operations never requested"
        );
        assert!(text.contains("strata_mount_read_bytes_total 4096\n"));
        assert!(text.contains("strata_mount_eio_total 1\n"));
        assert!(text.contains("strata_mount_chunk_cache_misses_total 2\n"));
        let parsed = crate::metrics::text::parse(&text);
        assert!(parsed.skipped.is_empty());
        let a = StatsContent::new(b"abc".to_vec(), None);
        let b = StatsContent::new(b"xyz".to_vec(), Some(&a));
        assert_eq!(&b.data[..], b"xyz\n", "never the length of the one before");
        let c = StatsContent::new(b"abc".to_vec(), Some(&b));
        assert_eq!(&c.data[..], b"abc");
    }

    #[test]
    fn the_stats_file_sits_in_the_root_and_renders_at_each_lookup() {
        use crate::vfs::{FileKind, Vfs, VfsError, VfsOptions, ROOT_INO, STATS_INO};
        let (_t, repo, ids) = crate::testutil::repo_with_one_file(3 << 20, 9);
        let vfs = Vfs::open(repo, VfsOptions::default()).unwrap();
        let dir = vfs.lookup(ROOT_INO, b".strata").unwrap();
        assert_eq!((dir.kind, dir.perm), (FileKind::Dir, 0o555));
        let names: Vec<_> = vfs
            .readdir(dir.ino)
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, [&b"."[..], b"..", b"stats"]);
        let f = vfs.lookup(dir.ino, b"stats").unwrap();
        assert_eq!((f.ino, f.kind, f.perm), (STATS_INO, FileKind::File, 0o444));
        let first = vfs.read(STATS_INO, 0, 1 << 20).unwrap();
        assert_eq!(first.len() as u64, f.size, "the size is the content's");
        assert_eq!(vfs.read(STATS_INO, 10, 5).unwrap(), first[10..15]);
        // Reading a snapshot's file reads its chunks; the next lookup shows it.
        let snaps = vfs.lookup(ROOT_INO, b"snapshots").unwrap();
        let name = vfs.snapshot_names().pop().unwrap();
        let root = vfs.lookup(snaps.ino, name.as_bytes()).unwrap();
        assert!(matches!(
            vfs.lookup(root.ino, b".strata"),
            Err(VfsError::NotFound)
        ));
        let file = vfs.lookup(root.ino, b"f").unwrap();
        vfs.read(file.ino, 0, 3 << 20).unwrap();
        assert_eq!(
            vfs.read(STATS_INO, 0, 1 << 20).unwrap(),
            first,
            "fixed until the next lookup"
        );
        let again = vfs.lookup(dir.ino, b"stats").unwrap();
        assert_ne!(again.size, f.size, "a new content never keeps the old size");
        assert_eq!(vfs.getattr(STATS_INO).unwrap().size, again.size);
        let text = String::from_utf8(vfs.read(STATS_INO, 0, 1 << 20).unwrap()).unwrap();
        let reads = format!("strata_mount_chunk_reads_total {}\n", ids.len());
        assert!(text.contains(&reads), "{text}");
        assert!(text.contains("strata_mount_snapshots 1\n"));
        assert!(matches!(
            vfs.open_file(STATS_INO, true),
            Err(VfsError::ReadOnly)
        ));
        vfs.open_file(STATS_INO, false).unwrap();
    }
}
