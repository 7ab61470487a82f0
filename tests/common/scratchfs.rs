//! Small real filesystems mounted for one test: a tmpfs of a few MiB (to fill a disk), or an ext4
//! image whose timestamps keep whole seconds (as ext3, FAT or some NFS servers do). Mounting needs
//! root, like the mount tests; with `STRATA_REQUIRE_FUSE=1`, as in CI, a missing privilege is a
//! failure rather than a skip.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// A filesystem mounted on a fresh directory; unmounted on drop.
pub struct ScratchFs {
    /// The mount point.
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl ScratchFs {
    /// A tmpfs of `mib` MiB, or `None` (the test skips) when it cannot be mounted.
    pub fn tmpfs(mib: u32) -> Option<ScratchFs> {
        Self::mount(|_, path| {
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                .arg(path)
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    /// A loop-mounted ext4 image of 32 MiB with 128-byte inodes: timestamps in whole seconds.
    pub fn whole_second_timestamps() -> Option<ScratchFs> {
        Self::mount(|dir, path| {
            let img = dir.join("img");
            fs::File::create(&img).unwrap().set_len(32 << 20).unwrap();
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-I", "128"])
                .arg(&img)
                .output()
                .is_ok_and(|o| o.status.success())
                && Command::new("mount")
                    .args(["-o", "loop"])
                    .arg(&img)
                    .arg(path)
                    .status()
                    .is_ok_and(|s| s.success())
        })
    }

    fn mount(how: impl FnOnce(&std::path::Path, &std::path::Path) -> bool) -> Option<ScratchFs> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fs");
        fs::create_dir(&path).unwrap();
        if !how(dir.path(), &path) {
            let why = "cannot mount a scratch filesystem (not root, or no loop devices?)";
            if std::env::var("STRATA_REQUIRE_FUSE").as_deref() == Ok("1") {
                panic!("test required (STRATA_REQUIRE_FUSE=1) but {why}");
            }
            eprintln!("Skipping: {why}");
            return None;
        }
        Some(ScratchFs { path, _dir: dir })
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}
