//! The session around the adapter: the `strata mount` options that shape it, mounting (the
//! kernel mount options, the worker pool, directory readahead's notifier), detaching, and the
//! kernel readahead of the live mount.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use fuser::MountOption;

use super::{push, StrataFs};
use crate::vfs::Vfs;

/// Options for [`spawn_mount`]. The `strata mount` options are these fields (clap), so the CLI
/// fills them directly; `help` is the CLI's wording, the doc comments the library's. The default
/// is the CLI's: busy polling off, directory readahead on.
#[derive(Clone, Debug, clap::Args)]
pub struct MountOptions {
    /// Let other users in (`allow_other`), with `default_permissions` and POSIX ACL support so
    /// stored modes and ACLs apply.
    #[arg(
        long,
        help = "Let other users access the mount (stored permissions and POSIX ACLs are then \
                enforced by the kernel; non-root users need `user_allow_other` in /etc/fuse.conf)"
    )]
    pub allow_other: bool,
    /// Worker threads for slow operations (0: 2 per CPU, at least 4).
    #[arg(
        long,
        default_value_t = 0,
        hide_default_value = true,
        help = "Worker threads serving reads [default: 2 per CPU, at least 4]"
    )]
    pub threads: usize,
    /// Keep the CPUs from halting while requests arrive (see the `awake` module). Off by
    /// default: a mount left running on a server must not spend CPU time of its own.
    #[arg(
        long = "busy-poll",
        overrides_with = "no_busy_poll",
        help = "Keep the CPUs awake while requests arrive: during activity and for 2 ms after \
                it, one lowest-priority (SCHED_IDLE) thread per CPU spins so that no CPU halts \
                between requests. Waking a halted CPU (a hypervisor exit on a VM) made each \
                round trip ~4x slower on the benchmark VM, so small-file and random reads gain \
                most; large (streaming) reads do not start it. It burns otherwise-idle CPU while \
                the mount is busy"
    )]
    pub busy_poll: bool,
    /// `--no-busy-poll` (the default) is accepted too, and cancels an earlier `--busy-poll`.
    #[arg(long = "no-busy-poll", hide = true, overrides_with = "busy_poll")]
    pub no_busy_poll: bool,
    /// Push a directory's small files into the page cache ahead of tree readers (see the `push` module).
    #[arg(
        long = "no-dir-readahead",
        action = clap::ArgAction::SetFalse,
        help = "Do not push a directory's small files into the page cache ahead of readers. By \
                default, when a file is read from its start, the next files of its directory (up \
                to 1 MiB each, in a window that grows while the reader keeps going) are handed \
                to the kernel, so that `diff -r`, `cp -r` or `grep -r` over many small files \
                make no round trip per file"
    )]
    pub dir_readahead: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            allow_other: false,
            threads: 0,
            busy_poll: false,
            no_busy_poll: false,
            dir_readahead: true,
        }
    }
}

/// Mounts `vfs` at `mountpoint` read-only and serves it from background threads until the
/// returned session is dropped. `on_destroy` is signalled if the session ends first.
pub fn spawn_mount(
    vfs: Arc<Vfs>,
    mountpoint: &Path,
    opts: &MountOptions,
    on_destroy: Option<crossbeam_channel::Sender<()>>,
) -> std::io::Result<fuser::BackgroundSession> {
    let threads = if opts.threads == 0 {
        std::thread::available_parallelism()
            .map_or(4, |n| n.get() * 2)
            .max(4)
    } else {
        opts.threads
    };
    let mut options = vec![
        MountOption::RO,
        MountOption::FSName("strata".into()),
        MountOption::Subtype("strata".into()),
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoAtime,
    ];
    if opts.allow_other {
        options.push(MountOption::AllowOther);
        options.push(MountOption::DefaultPermissions);
    }
    let pusher = opts
        .dir_readahead
        .then(|| Arc::new(push::Pusher::start(vfs.clone())));
    let fs = StrataFs::new(
        vfs,
        threads,
        opts.busy_poll,
        pusher.clone(),
        opts.allow_other,
        on_destroy,
    );
    let session = fuser::spawn_mount2(fs, mountpoint, &options)?;
    if let Some(p) = pusher {
        p.set_notifier(session.notifier());
    }
    Ok(session)
}

/// Detaches the mount at `mountpoint` from the filesystem tree (a lazy unmount): the mount
/// point is at once a plain directory again and no new path leads into the mount, while files
/// and directories already open in it stay usable for as long as the session keeps serving. The
/// kernel ends the session (its device then reads `ENODEV`) when the last of them is closed.
/// Root detaches with `umount2(MNT_DETACH)`; other users through `fusermount3 -u -z`.
pub fn detach(mountpoint: &Path) -> std::io::Result<()> {
    let c = std::ffi::CString::new(mountpoint.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: valid C string.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() != Some(libc::EPERM) {
        return Err(err);
    }
    let mut last = err;
    for bin in ["fusermount3", "fusermount"] {
        match std::process::Command::new(bin)
            .args(["-u", "-z", "-q", "--"])
            .arg(mountpoint)
            .stdin(std::process::Stdio::null())
            .output()
        {
            Ok(o) if o.status.success() => return Ok(()),
            Ok(o) => {
                last = std::io::Error::other(format!(
                    "{bin} -u -z: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Raises the kernel readahead of a live mount (its backing-device info) to `kb` KiB, so cold
/// sequential reads arrive as large requests. Needs root; failures are logged and ignored.
pub fn tune_readahead(mountpoint: &Path, kb: u32) {
    use std::os::unix::fs::MetadataExt;
    let dev = match std::fs::metadata(mountpoint) {
        Ok(m) => m.dev(),
        Err(e) => {
            log::debug!("Readahead not tuned: {e}");
            return;
        }
    };
    let p = format!(
        "/sys/class/bdi/{}:{}/read_ahead_kb",
        libc::major(dev),
        libc::minor(dev)
    );
    match std::fs::write(&p, kb.to_string()) {
        Ok(()) => log::info!("Readahead set to {kb} KiB ({p})"),
        Err(e) => log::debug!("Readahead not tuned ({p}): {e}"),
    }
}
