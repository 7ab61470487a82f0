//! Keeping the CPUs awake while the mount is busy.
//!
//! Every FUSE request is two wake-ups: the kernel wakes the daemon thread waiting on `/dev/fuse`,
//! and the reply wakes the caller. When the CPU a thread is woken on has halted in the meantime,
//! the wake-up waits for it to leave the halt state — on a virtual machine an exit to the
//! hypervisor. Measured on the 2-vCPU benchmark VM, one `getxattr` through the mount (which
//! `ls -l` makes twice per file) took 116 µs, against 15 µs when caller and daemon share a CPU and
//! 32 µs when the CPUs were kept from halting; `ls -lR` of a 100k-file snapshot took 25 s against
//! 10 s.
//!
//! So, while requests keep arriving and for [`WINDOW`] after the last one, one thread per CPU
//! spins at the lowest scheduling class (`SCHED_IDLE`: it runs only when nothing else wants that
//! CPU and yields at once when something does). Between bursts the threads sleep. The cost is CPU
//! time that would otherwise be idle, during activity only; `strata mount --no-busy-poll` turns it
//! off.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long the CPUs are kept awake after the last request.
pub const WINDOW: Duration = Duration::from_millis(2);

/// The keepers of a mount; [`Awake::touch`] on every request.
pub struct Awake {
    inner: Arc<Inner>,
}

struct Inner {
    start: Instant,
    /// Nanoseconds since `start` of the latest request.
    last: AtomicU64,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    stop: AtomicBool,
}

impl Inner {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn busy(&self) -> bool {
        self.now().saturating_sub(self.last.load(Ordering::SeqCst)) < WINDOW.as_nanos() as u64
    }
}

impl Awake {
    /// Starts one keeper per CPU this process may run on.
    pub fn start() -> Awake {
        let now = Instant::now();
        let inner = Arc::new(Inner {
            // Set back so that "no request yet" (`last` = 0) is outside the window.
            start: now.checked_sub(WINDOW * 2).unwrap_or(now),
            last: AtomicU64::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        for cpu in allowed_cpus() {
            let inner = inner.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("strata-awake-{cpu}"))
                .spawn(move || keep(&inner, cpu));
            if let Err(e) = spawned {
                log::debug!("No keeper for CPU {cpu}: {e}");
            }
        }
        Awake { inner }
    }

    /// Records a request; wakes sleeping keepers at the start of a burst.
    pub fn touch(&self) {
        let i = &self.inner;
        i.last.store(i.now(), Ordering::SeqCst);
        if i.sleepers.load(Ordering::SeqCst) > 0 {
            let _g = i.lock.lock().unwrap_or_else(|e| e.into_inner());
            i.wake.notify_all();
        }
    }
}

impl Drop for Awake {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        let _g = self.inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.inner.wake.notify_all();
    }
}

/// The CPUs in this process's affinity mask.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// A keeper: pinned to `cpu`, lowest class, spinning while the mount is busy.
fn keep(inner: &Inner, cpu: usize) {
    // SAFETY: plain syscalls on this thread with valid, initialized arguments.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            log::debug!("Keeper not pinned to CPU {cpu}");
            return;
        }
        let param = libc::sched_param { sched_priority: 0 };
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            // At normal priority the spinning would compete with real work: no keeper then.
            log::debug!("Keeper for CPU {cpu} cannot use SCHED_IDLE");
            return;
        }
    }
    while !inner.stop.load(Ordering::Relaxed) {
        if inner.busy() {
            for _ in 0..256 {
                std::hint::spin_loop();
            }
            continue;
        }
        let g = inner.lock.lock().unwrap_or_else(|e| e.into_inner());
        inner.sleepers.fetch_add(1, Ordering::SeqCst);
        if !inner.busy() && !inner.stop.load(Ordering::Relaxed) {
            let _ = inner.wake.wait_timeout(g, Duration::from_secs(1));
        }
        inner.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_only_within_the_window_after_a_touch() {
        let a = Awake::start();
        assert!(!a.inner.busy(), "idle before any request");
        a.touch();
        assert!(a.inner.busy());
        std::thread::sleep(WINDOW * 3);
        assert!(!a.inner.busy(), "idle again after the window");
    }
}
