//! How strata tunes glibc's allocator for its workload: chunk-sized buffers (64 KiB-1 MiB)
//! handed between many threads, in processes (a backup, a mount) that run for a long time. Each
//! setting is measured; see the function docs. The tuning is process-wide, so the library offers
//! it and the program decides when: [`limit_malloc_arenas`] before any thread exists, the rest
//! once a long-running command has started. On other allocators these do nothing.

/// Caps glibc's malloc arenas at 2. Backups and mounts move chunk-sized buffers (64 KiB–1 MiB)
/// between many threads; with one arena per thread, each keeps freed buffers resident and RSS
/// drifts far above what is in use (measured on a 2.3 GB backup: 207–211 MB uncapped, 171–197 MB
/// capped, same wall time; the mount: 404 → 320 MB). Must run before any thread exists.
pub fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; the caller runs it before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Fixes glibc's mmap threshold at 128 KiB. glibc otherwise raises it to the largest buffer freed
/// so far (up to 32 MiB), after which chunk buffers (64 KiB-1 MiB) come from the heap, fragment it
/// and stay resident after they are freed; fixed, they are mapped and unmapped, and memory returns
/// to the system. The mount (256 MiB chunk cache): peak RSS 410 -> 371 MiB. A full backup of the
/// benchmark data, this setting alone, three runs each: 128-139 MB peak at 1x and 138-162 MB at 2x
/// (1.02-1.17x run by run), against 136-160 and 174-182 MB without; it costs about 1-3 s more
/// system time per 2.4 GB (page faults on fresh mappings).
pub fn return_freed_buffers() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; it takes the allocator's own lock.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

/// Returns freed heap pages to the kernel once a second. Buffers of assorted sizes (chunks of
/// 64 KiB-1 MiB, sled's pages) leave free holes inside the malloc heaps that glibc keeps resident,
/// so RSS drifts above what is live, further the longer the process runs: a backup of twice the
/// benchmark data peaked at 164 MB of live heap against 162 MB at 1x (heaptrack), but at 165-183
/// MB RSS against 153-157. With this: 143-149 MB at 1x, 158-183 at 2x (five runs each). The
/// mount's evicted chunk buffers leave the same holes. `malloc_trim` releases whole free pages
/// anywhere in the heaps (`MADV_DONTNEED`) and costs well under a millisecond per call here.
///
/// Starts at most one trimmer per process, however often it is called.
pub fn spawn_heap_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static STARTED: std::sync::Once = std::sync::Once::new();
        STARTED.call_once(spawn_trimmer_thread);
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn spawn_trimmer_thread() {
    std::thread::Builder::new()
        .name("strata-trim".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            if log::log_enabled!(log::Level::Debug) {
                // SAFETY: mallinfo2 only reads the allocator's counters.
                let mi = unsafe { libc::mallinfo2() };
                let rss = std::fs::read_to_string("/proc/self/statm")
                    .ok()
                    .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .map_or(0, |pages| pages * 4096);
                log::debug!(
                    "Memory: heap {} MB in use, {} MB free; {} MB mapped buffers; RSS {} MB",
                    mi.uordblks >> 20,
                    mi.fordblks >> 20,
                    mi.hblkhd >> 20,
                    rss >> 20
                );
            }
            // SAFETY: malloc_trim only returns free memory to the kernel; it is thread-safe.
            unsafe {
                libc::malloc_trim(0);
            }
        })
        .map(drop)
        .unwrap_or_else(|e| log::debug!("No heap trimmer: {e}"));
}

/// Everything a long-running command (backup, mount) wants: freed buffers returned to the system
/// promptly and the heap trimmed once a second. Call once the command's start-up is done.
pub fn tune_for_long_run() {
    return_freed_buffers();
    spawn_heap_trimmer();
}
