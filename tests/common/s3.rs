//! A real S3 protocol server for tests: `s3s-fs` on a free 127.0.0.1 port over a temp root, where
//! a bucket is a directory and an object a file (so tests can delete or alter objects directly).
//! The guard waits until the server answers, can stop and restart it on the same port and root
//! (a server that dies mid-backup), and kills it on drop.
//!
//! A repository in it is an [`S3Repo`]: its `s3://` address, the directory holding its objects,
//! and the environment a `strata` command needs (the AWS variables, and `XDG_CACHE_HOME`: one
//! per simulated machine, so two "hosts" keep separate caches of the same bucket).
//!
//! The tests skip when `s3s-fs` is not installed, and the skip is a failure when
//! `STRATA_REQUIRE_S3=1` (set in `.ci/run`).

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::mount::Mount;

/// How long the server may take to answer after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
const ACCESS_KEY: &str = "test";
const SECRET_KEY: &str = "testsecret";

/// The `s3s-fs` binary: on `PATH`, else where `.ci/run` installs it.
fn server_binary() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("s3s-fs"))
            .find(|c| c.is_file())
    });
    on_path.or_else(|| {
        let p = PathBuf::from("/usr/local/bin/s3s-fs");
        p.is_file().then_some(p)
    })
}

/// A running (or stopped) `s3s-fs`.
pub struct S3Server {
    bin: PathBuf,
    port: u16,
    root: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    _dir: tempfile::TempDir,
}

impl S3Server {
    /// Starts a server on a free port over a new temp root; `None` (the test skips) when `s3s-fs`
    /// is not installed, a panic instead when `STRATA_REQUIRE_S3=1`.
    pub fn start() -> Option<S3Server> {
        let Some(bin) = server_binary() else {
            if std::env::var("STRATA_REQUIRE_S3").as_deref() == Ok("1") {
                panic!("s3s-fs required (STRATA_REQUIRE_S3=1) but not installed");
            }
            eprintln!("Skipping object-storage test: s3s-fs not installed");
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut s = S3Server {
            bin,
            port,
            root,
            log: dir.path().join("s3s-fs.log"),
            child: None,
            _dir: dir,
        };
        s.restart();
        Some(s)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's root directory: one directory per bucket.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The server process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server at once (SIGKILL), as a crash would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server (again) on the same port and root and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .unwrap();
            let mut child = Command::new(&self.bin)
                .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
                .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                .arg(&self.root)
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("spawn s3s-fs");
            // Up when it accepts connections; a server that exits at once (the port not free
            // yet after a restart) is started again.
            loop {
                if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    self.child = Some(child);
                    return;
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "s3s-fs did not answer on port {} within {READY_TIMEOUT:?}:\n{}",
                        self.port,
                        self.log()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            assert!(
                Instant::now() < deadline,
                "s3s-fs keeps exiting on port {}:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// What the server printed.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A repository at `s3://BUCKET/PREFIX` (the bucket is created when missing), used from the
    /// machine whose cache home is `cache`.
    pub fn repo(&self, bucket: &str, prefix: &str, cache: &Path) -> S3Repo {
        let b = self.root.join(bucket);
        std::fs::create_dir_all(&b).unwrap();
        S3Repo {
            url: format!("s3://{bucket}/{prefix}"),
            objects: b.join(prefix),
            endpoint: self.endpoint(),
            cache_home: cache.to_path_buf(),
            password_file: None,
            env: Vec::new(),
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let log = self.log();
            if !log.is_empty() {
                eprintln!("--- s3s-fs log ---\n{log}");
            }
        }
    }
}

/// A repository in the test server's bucket, as one machine uses it.
#[derive(Clone, Debug)]
pub struct S3Repo {
    /// `s3://BUCKET/PREFIX`.
    pub url: String,
    /// The directory of its objects in the server's root (`ROOT/BUCKET/PREFIX`).
    pub objects: PathBuf,
    endpoint: String,
    /// This machine's `XDG_CACHE_HOME`.
    pub cache_home: PathBuf,
    /// The passphrase file of an encrypted repository.
    pub password_file: Option<PathBuf>,
    env: Vec<(String, String)>,
}

impl S3Repo {
    /// The same repository used from another machine: its own cache home.
    pub fn host(&self, cache_home: &Path) -> S3Repo {
        S3Repo {
            cache_home: cache_home.to_path_buf(),
            ..self.clone()
        }
    }

    /// The same repository, opened with the passphrase in `file`.
    pub fn with_password_file(mut self, file: &Path) -> S3Repo {
        self.password_file = Some(file.to_path_buf());
        self
    }

    /// The same repository, with an extra environment variable for every command.
    pub fn with_env(mut self, key: &str, value: &str) -> S3Repo {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The environment of a `strata` command on this repository.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
            ("AWS_ENDPOINT_URL", &self.endpoint),
            ("AWS_ALLOW_HTTP", "true"),
            ("AWS_REGION", "us-east-1"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        v.push((
            "XDG_CACHE_HOME".into(),
            self.cache_home.to_string_lossy().into_owned(),
        ));
        v.extend(self.env.iter().cloned());
        v
    }

    /// `strata --repo s3://... [--password-file F] ARGS`, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(super::bin());
        c.arg("--repo").arg(&self.url);
        if let Some(f) = &self.password_file {
            c.arg("--password-file").arg(f);
        }
        c.args(args)
            .env_remove("STRATA_REPO")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_PROFILE")
            .env_remove("STRATA_S3_RETRY_TIMEOUT")
            .envs(self.env());
        c
    }

    /// Runs `strata ARGS` on this repository to completion.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args)
            .stdin(Stdio::null())
            .output()
            .expect("run strata")
    }

    /// Like [`S3Repo::run`], panicking with the command's stderr unless it exits 0.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "strata {args:?} on {} failed ({:?}): {}",
            self.url,
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `strata init`, encrypted (with a fast key derivation) when a passphrase file is set.
    pub fn init(&self) -> Output {
        if self.password_file.is_some() {
            self.ok(&[
                "init",
                "--encrypt",
                "--kdf-memory",
                "256",
                "--kdf-iterations",
                "1",
            ])
        } else {
            self.ok(&["init"])
        }
    }

    /// Backs up `src` (with `extra` arguments); returns the new snapshot's id.
    pub fn backup(&self, src: &Path, extra: &[&str]) -> String {
        let mut args = vec!["backup", "--json"];
        args.extend_from_slice(extra);
        args.push(src.to_str().unwrap());
        let out = self.ok(&args);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("backup --json");
        v["id"].as_str().unwrap().to_string()
    }

    /// `strata snapshots --json`, parsed, oldest first.
    pub fn snapshot_list(&self) -> Vec<serde_json::Value> {
        let out = self.ok(&["snapshots", "--json"]);
        match serde_json::from_slice(&out.stdout).expect("snapshots --json") {
            serde_json::Value::Array(v) => v,
            other => panic!("snapshots --json is not an array: {other}"),
        }
    }

    /// The full ids of the repository's snapshots, oldest first.
    pub fn snapshot_ids(&self) -> Vec<String> {
        self.snapshot_list()
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect()
    }

    /// `strata restore SNAPSHOT --target TARGET`, which must succeed.
    pub fn restore(&self, snapshot: &str, target: &Path) {
        self.ok(&["restore", snapshot, "--target", target.to_str().unwrap()]);
    }

    /// This machine's cache directory of the repository (`$XDG_CACHE_HOME/strata/<id>`), once a
    /// command has made it.
    pub fn cache_dir(&self) -> PathBuf {
        let dirs: Vec<PathBuf> = std::fs::read_dir(self.cache_home.join("strata"))
            .expect("no cache made yet")
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(dirs.len(), 1, "one repository per cache home: {dirs:?}");
        dirs.into_iter().next().unwrap()
    }

    /// Every object whose name starts with `dir/` (a path under [`S3Repo::objects`]), sorted.
    pub fn objects_under(&self, dir: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![self.objects.join(dir)];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    }

    /// Mounts the repository with `extra` arguments and waits until the mount is live.
    pub fn mount(&self, extra: &[&str]) -> Mount {
        let mut args: Vec<&str> = Vec::new();
        if let Some(f) = &self.password_file {
            args.extend(["--password-file", f.to_str().unwrap()]);
        }
        args.extend_from_slice(extra);
        Mount::start_env(Path::new(&self.url), &args, &self.env())
    }
}
