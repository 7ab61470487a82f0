//! Real FUSE mounts for tests: a guard that owns a temp mount point and the `strata mount` child
//! process, waits (with a deadline) until the mount is live, and on drop unmounts
//! (`fusermount3 -u`, then lazy `-uz`) with a bounded wait and kills the child. Test bodies run
//! under [`with_timeout`], so a stuck FUSE operation fails the test instead of hanging it.
//!
//! Mount tests skip only when FUSE is truly unavailable (/dev/fuse or fusermount3 missing), and
//! the skip is a failure when `STRATA_REQUIRE_FUSE=1`.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long a mount may take to become ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// Whether FUSE mounts can run here; panics instead of skipping when `STRATA_REQUIRE_FUSE=1`.
pub fn fuse_available() -> bool {
    let dev = Path::new("/dev/fuse").exists();
    let tool = Command::new("fusermount3")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if dev && tool {
        return true;
    }
    let why = if dev {
        "fusermount3 not installed"
    } else {
        "/dev/fuse absent"
    };
    if std::env::var("STRATA_REQUIRE_FUSE").as_deref() == Ok("1") {
        panic!("FUSE required (STRATA_REQUIRE_FUSE=1) but unavailable: {why}");
    }
    eprintln!("Skipping mount test: {why}");
    false
}

/// A live `strata mount` of a repository.
pub struct Mount {
    /// The mount point.
    pub path: PathBuf,
    /// The line the command printed when ready.
    pub ready_line: String,
    child: Option<Child>,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mount {
    /// Mounts `repo` on a fresh temp directory with `extra` arguments and waits until it is live.
    pub fn start(repo: &Path, extra: &[&str]) -> Mount {
        Mount::start_env(repo, extra, &[])
    }

    /// Like [`Mount::start`], with extra environment variables for the mount process.
    pub fn start_env(repo: &Path, extra: &[&str], env: &[(String, String)]) -> Mount {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mnt");
        std::fs::create_dir(&path).unwrap();
        let stderr_path = dir.path().join("mount.stderr");
        let mut child = Command::new(super::bin())
            .arg("--repo")
            .arg(repo)
            .args(super::pass_args(repo))
            .arg("mount")
            .arg(&path)
            .args(extra)
            .env_remove("STRATA_REPO")
            .env("RUST_LOG", "strata=info")
            .envs(env.iter().cloned())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("spawn strata mount");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut m = Mount {
            path,
            ready_line: String::new(),
            child: Some(child),
            stderr_path,
            _dir: dir,
        };
        match rx.recv_timeout(READY_TIMEOUT) {
            Ok(line) if line.starts_with("Mounted ") => m.ready_line = line,
            Ok(line) => panic!("strata mount did not start: {line:?}\n{}", m.stderr()),
            Err(_) => panic!(
                "strata mount not ready after {READY_TIMEOUT:?}\n{}",
                m.stderr()
            ),
        }
        // Live means: the mount point is now another filesystem and answers.
        let parent_dev = std::fs::metadata(m.path.parent().unwrap()).unwrap().dev();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if std::fs::metadata(&m.path).is_ok_and(|md| md.dev() != parent_dev) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "mount never became live\n{}",
                m.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    /// What the mount process logged so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// The mount process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits up to `timeout` for the mount process to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return st.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the mount point is still a mount.
    pub fn is_mounted(&self) -> bool {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let p = self.path.to_string_lossy().into_owned();
        mounts
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(p.as_str()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.is_mounted() {
            let ok = run_with_timeout(
                Command::new("fusermount3").arg("-u").arg(&self.path),
                Duration::from_secs(5),
            )
            .is_some_and(|o| o.status.success());
            if !ok {
                let _ = run_with_timeout(
                    Command::new("fusermount3").arg("-uz").arg(&self.path),
                    Duration::from_secs(5),
                );
            }
        }
        if self.wait_exit(Duration::from_secs(5)).is_none() {
            if let Some(c) = self.child.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- strata mount stderr ---\n{}", self.stderr());
        }
    }
}

/// Runs a command to completion, or kills it after `timeout` (returns `None` then).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Option<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Some(Output {
        status,
        stdout: t_out.join().unwrap_or_default(),
        stderr: t_err.join().unwrap_or_default(),
    })
}

/// Like [`run_with_timeout`], panicking on timeout.
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    let desc = format!("{cmd:?}");
    run_with_timeout(cmd, timeout).unwrap_or_else(|| panic!("{desc} timed out after {timeout:?}"))
}

/// Runs `body` on another thread and fails if it takes longer than `timeout` (the caller's
/// [`Mount`] guard then unmounts lazily, which unblocks any stuck operation).
pub fn with_timeout<T: Send + 'static>(
    timeout: Duration,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(body());
    });
    match rx.recv_timeout(timeout) {
        Ok(v) => {
            let _ = h.join();
            v
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!("body finished without sending"),
        },
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("test body timed out after {timeout:?}")
        }
    }
}

/// Directory names of `snapshots/` as `strata snapshots --json` implies them: `<time>-<short_id>`,
/// oldest first.
pub fn snapshot_names(repo: &Path) -> Vec<String> {
    let out = super::strata_ok(repo, &["snapshots", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("snapshots --json");
    let arr = v
        .as_array()
        .cloned()
        .or_else(|| v["snapshots"].as_array().cloned())
        .expect("a JSON array of snapshots");
    arr.iter()
        .map(|s| {
            format!(
                "{}-{}",
                s["time"].as_str().unwrap(),
                s["short_id"].as_str().unwrap()
            )
        })
        .collect()
}
