//! One stream — standard input, or the standard output of a command such as `pg_dump -Fc` — as
//! the one file of a source. It is cut by the same content-defined chunker as any file, so a
//! dump deduplicates against the previous one, and stored as a regular file (mode 0644, owned by
//! the caller, modified now) at the root of a snapshot whose source is `--source-name`. Kinds
//! and parents work as for a directory: an incremental replaces the file of its parent, and
//! hides any other name the parent had.
//!
//! A command is run without a shell, its standard error passed through as it comes. Only when
//! it exits with status 0 is the snapshot committed: a non-zero status or a signal (a dump
//! killed, or cut short) commits nothing, and the error names the command, how it ended and its
//! last line of standard error.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use super::anomaly::NewData;
use super::pipeline::{Batcher, LayerMsg, PackMsg, Threads, LAYER_BATCH};
use super::reader::chunk_stream;
use super::walker::WalkResult;
use super::Shared;
use crate::chunker::{ChunkError, Chunker};
use crate::entry::{Entry, Kind};
use crate::error::{Error, IoContext, Result};
use crate::layers::View;

/// Where a stream backup reads from.
pub enum StreamSource<'a> {
    /// This process's standard input.
    Stdin,
    /// The standard output of a program and its arguments (`argv[0]` first), run without a
    /// shell.
    Command(&'a [OsString]),
    /// Any reader, for programs that embed strata; it is read to its end.
    Reader(&'a mut dyn Read),
}

/// Where the stream goes in the new layer.
pub(super) struct StreamPlan<'a> {
    pub(super) name: &'a [u8],
    pub(super) parent: Option<&'a View>,
    pub(super) full: bool,
}

/// `name` as the file name of a stream: one path component.
pub(super) fn check_name(name: &str) -> Result<&[u8]> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(Error::InvalidArgument(format!(
            "--stdin-filename {name:?} must be a file name (one path component)"
        )));
    }
    Ok(name.as_bytes())
}

/// Reads the stream to its end into chunks, checks how it ended, and sends the layer's entries:
/// the root, the file, and whiteouts for whatever else the parent's root held. Returns the
/// outcome (an error commits nothing) and what a walk would have found.
pub(super) fn store(
    shared: &Shared,
    plan: &StreamPlan,
    source: StreamSource,
    threads: &Threads,
) -> (Result<()>, WalkResult) {
    let mut found = WalkResult::default();
    let mut pack = Batcher::new(threads.pack_tx.clone(), 256, 2 << 20);
    let r = read_and_emit(shared, plan, source, &mut pack, threads, &mut found);
    if r.is_err() {
        // Payloads that will never reach the writer give their bytes back.
        shared
            .payloads
            .give(pack.buf.iter().map(PackMsg::payload_len).sum());
    }
    (r, found)
}

fn read_and_emit(
    shared: &Shared,
    plan: &StreamPlan,
    source: StreamSource,
    pack: &mut Batcher<PackMsg>,
    threads: &Threads,
    found: &mut WalkResult,
) -> Result<()> {
    let mut input = Opened::open(source)?;
    let mut chunks = Vec::new();
    let mut new = NewData::default();
    let read = match chunk_stream(
        shared,
        pack,
        &mut Chunker::new(),
        &mut input,
        0,
        &mut chunks,
        &mut new,
    ) {
        Ok(n) => n,
        Err(e) => {
            let what = input.describe();
            input.abort();
            return Err(match e {
                ChunkError::Read(e) => Error::Io {
                    context: "Reading",
                    path: what.into(),
                    source: e,
                },
                ChunkError::Sink(e) => e,
            });
        }
    };
    pack.flush()?;
    input.finish()?;

    let now = crate::time::now_ns();
    let mut file = Entry::whiteout();
    file.kind = Kind::File;
    file.mode = 0o644;
    (file.uid, file.gid) = owner();
    file.size = read;
    file.mtime_ns = now;
    file.ctime_ns = now;
    file.nlink = 1;
    file.chunks = chunks;
    let mut root = file.clone();
    root.kind = Kind::Dir;
    root.mode = 0o755;
    root.size = 0;
    root.chunks = Vec::new();
    root.opaque = plan.parent.is_none();

    let mut entries = vec![(Vec::new(), root), (plan.name.to_vec(), file)];
    let mut was_file = false;
    if let Some(parent) = plan.parent {
        for kv in parent.children(b"")? {
            let (name, old) = kv?;
            if name != plan.name {
                entries.push((name, Entry::whiteout()));
                found.stats.deleted += 1;
            } else {
                was_file = old.kind == Kind::File;
            }
        }
    }
    let counters = &shared.counters;
    counters.files_read.fetch_add(1, Ordering::Relaxed);
    counters.changes.file(was_file, &new);
    counters.read_bytes.fetch_add(read, Ordering::Relaxed);
    shared.progress.0.file_read(read);
    found.stats.files = 1;
    found.stats.dirs = 1;
    found.stats.total_bytes = read;
    if !plan.full {
        found.touched.insert(Vec::new(), false);
    }
    let mut layer = Batcher::new(threads.layer_tx.clone(), LAYER_BATCH, usize::MAX);
    for (name, entry) in entries {
        counters.layer_entries.fetch_add(1, Ordering::Relaxed);
        // The root's own entry is keyed by the empty name in the empty directory.
        layer.push(
            LayerMsg {
                dir: Vec::new(),
                name,
                entry,
            },
            0,
        )?;
    }
    layer.flush()
}

/// The caller's effective user and group, which own a stream's file.
fn owner() -> (u32, u32) {
    (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    )
}

/// A stream being read.
enum Opened<'a> {
    Stdin(std::io::StdinLock<'static>),
    Reader(&'a mut dyn Read),
    Command(Running),
}

impl Read for Opened<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Opened::Stdin(r) => r.read(buf),
            Opened::Reader(r) => r.read(buf),
            Opened::Command(c) => c.stdout.as_mut().map_or(Ok(0), |o| o.read(buf)),
        }
    }
}

impl<'a> Opened<'a> {
    fn open(source: StreamSource<'a>) -> Result<Opened<'a>> {
        Ok(match source {
            StreamSource::Stdin => Opened::Stdin(std::io::stdin().lock()),
            StreamSource::Reader(r) => Opened::Reader(r),
            StreamSource::Command(argv) => Opened::Command(Running::spawn(argv)?),
        })
    }

    fn describe(&self) -> String {
        match self {
            Opened::Stdin(_) => "standard input".into(),
            Opened::Reader(_) => "the stream".into(),
            Opened::Command(c) => format!("the output of `{}`", c.shown),
        }
    }

    /// Once the stream has ended: an error unless it ended as it should.
    fn finish(self) -> Result<()> {
        match self {
            Opened::Command(c) => c.finish(),
            _ => Ok(()),
        }
    }

    /// After a failure of the backup itself: a command is stopped.
    fn abort(self) {
        if let Opened::Command(c) = self {
            c.abort();
        }
    }
}

/// A running command whose standard output is the stream.
struct Running {
    child: Child,
    stdout: Option<ChildStdout>,
    /// Passes the command's standard error through and returns its last bytes.
    stderr: Option<JoinHandle<Vec<u8>>>,
    /// The command line, for messages.
    shown: String,
}

/// Bytes of a command's standard error kept for the error message.
const STDERR_TAIL: usize = 4096;

impl Running {
    fn spawn(argv: &[OsString]) -> Result<Running> {
        let Some((program, args)) = argv.split_first() else {
            return Err(Error::InvalidArgument(
                "--stdin-from-command needs the command after --".into(),
            ));
        };
        let shown = argv
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::CommandFailed {
                command: shown.clone(),
                status: format!("could not be started ({e})"),
                detail: String::new(),
            })?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take().map(|mut err| {
            std::thread::spawn(move || {
                let mut tail = Vec::new();
                let mut buf = [0u8; 8192];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let _ = std::io::stderr().write_all(&buf[..n]);
                    tail.extend_from_slice(&buf[..n]);
                    if tail.len() > 2 * STDERR_TAIL {
                        tail.drain(..tail.len() - STDERR_TAIL);
                    }
                }
                tail
            })
        });
        Ok(Running {
            child,
            stdout,
            stderr,
            shown,
        })
    }

    fn finish(mut self) -> Result<()> {
        drop(self.stdout.take());
        let status = self.child.wait().ctx("Waiting for", &self.shown)?;
        let tail = self.stderr.take().and_then(|h| h.join().ok());
        if status.success() {
            return Ok(());
        }
        let last = tail.as_deref().map(String::from_utf8_lossy).and_then(|t| {
            t.lines()
                .rev()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .map(str::to_string)
        });
        Err(Error::CommandFailed {
            command: self.shown,
            status: crate::hooks::describe(status),
            detail: last
                .map(|l| format!("; its standard error ended with: {l}"))
                .unwrap_or_default(),
        })
    }

    fn abort(mut self) {
        drop(self.stdout.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(h) = self.stderr.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_names_are_one_component() {
        assert_eq!(check_name("shop.dump").unwrap(), b"shop.dump");
        for bad in ["", ".", "..", "a/b", "/x", "a\0b"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_failing_command_reports_its_status_and_last_error_line() {
        let argv: Vec<OsString> = [
            "sh",
            "-c",
            "echo partial; echo 'first' >&2; echo 'dump: no' >&2; exit 3",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let mut r = Running::spawn(&argv).unwrap();
        let mut out = Vec::new();
        r.stdout.as_mut().unwrap().read_to_end(&mut out).unwrap();
        assert_eq!(out, b"partial\n");
        let msg = r.finish().err().unwrap().to_string();
        assert!(msg.contains("`sh -c echo partial;"), "{msg}");
        assert!(msg.contains("exited with status 3"), "{msg}");
        assert!(
            msg.ends_with("its standard error ended with: dump: no"),
            "{msg}"
        );
        let missing: Vec<OsString> = vec!["/nonexistent/dumper".into()];
        let msg = Running::spawn(&missing).err().unwrap().to_string();
        assert!(msg.contains("could not be started"), "{msg}");
    }
}
